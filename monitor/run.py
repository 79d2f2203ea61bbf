"""attach_monitoring: compose the handlers on the user's engines in a fixed, documented order."""
from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

from monitor._checks import positive_int
from monitor.distributed import is_main_process, on_main_process
from monitor.handlers.best import BestTracker
from monitor.handlers.cadence import CheckpointCadence
from monitor.handlers.checkpoint import attach_best_checkpoint, last_checkpointer
from monitor.handlers.data import attach_data_order
from monitor.handlers.diagnosis import attach_live_diagnosis
from monitor.handlers.history import attach_history
from monitor.handlers.loss import attach_train_loss
from monitor.handlers.lr import LearningRates
from monitor.handlers.outputs import attach_throughput, attach_train_outputs
from monitor.handlers.plateau import LROnPlateau, attach_lr_on_plateau
from monitor.handlers.progress import attach_epoch_log, attach_progress_bar
from monitor.handlers.rng import RNGState, engine_state
from monitor.handlers.signals import attach_graceful_stop, attach_time_limit
from monitor.handlers.stopping import EarlyStopping
from monitor.handlers.tensorboard import attach_tensorboard
from monitor.handlers.validation import attach_validation
from monitor.layout import RunPaths
from monitor.lifecycle import Monitor
from monitor.lock import RunLock
from monitor.objective import Objective
from monitor.record import RunRecord, read_record
from monitor.resume import ResumePlan, apply_resume, plan_resume
from monitor.rundir import prepare_run_dir
from monitor.writer import OrderedWriter

__all__ = ["Monitor", "attach_monitoring", "RESERVED_KEYS"]

logger = logging.getLogger(__name__)

# Keys monitor adds to the last checkpoint (``checkpointer`` is Ignite's own, from include_self);
# ``to_save`` may not use them.
RESERVED_KEYS = (
    "trainer", "best", "early_stopping", "best_checkpoint", "train_loss", "history", "rng", "data_order",
    "train_outputs", "lr_on_plateau", "checkpointer",
)
# Reserved keys a checkpoint written before they existed may lack; a resume then goes on without them.
OPTIONAL_KEYS = ("data_order", "train_outputs", "lr_on_plateau")


def _check_to_save(to_save: Mapping[str, Any]) -> None:
    if not isinstance(to_save, Mapping) or "model" not in to_save:
        got = f"keys {sorted(map(str, to_save))}" if isinstance(to_save, Mapping) else type(to_save).__name__
        raise ValueError(f"Argument to_save should be a mapping with at least a 'model' entry, got {got}.")
    if not isinstance(to_save["model"], torch.nn.Module):
        got = type(to_save["model"]).__name__
        raise TypeError(f"Argument to_save['model'] should be a torch.nn.Module, got {got}.")
    for key, obj in to_save.items():
        if key in RESERVED_KEYS:
            raise ValueError(
                f"Argument to_save should not use the key {key!r}; monitor reserves {list(RESERVED_KEYS)}."
            )
        if not hasattr(obj, "state_dict") or not hasattr(obj, "load_state_dict"):
            raise TypeError(
                f"Argument to_save[{key!r}] should have state_dict/load_state_dict, got {type(obj).__name__}."
            )


def attach_monitoring(
    trainer: Engine,
    evaluator: Engine,
    val_loader: Iterable[Any],
    *,
    run_dir: str | Path,
    objective: Objective,
    to_save: Mapping[str, Any],
    patience: int | None = 10,
    baseline: float | None = None,
    target: float | None = None,
    divergence: float | None = None,
    n_saved: int = 3,
    restore_best: bool = True,
    log_every: int = 10,
    validate_on: Any = Events.EPOCH_COMPLETED,
    resume: bool = False,
    overwrite: bool = False,
    hparams: Mapping[str, Any] | None = None,
    seed: int | None = None,
    tqdm_kwargs: Mapping[str, Any] | None = None,
    background_writes: bool = True,
    checkpoint_every: Any = None,
    max_time: timedelta | float | None = None,
    lr_on_plateau: LROnPlateau | None = None,
) -> Monitor:
    """Wire validation, early stopping, best and last checkpoints, history, TensorBoard and progress.

    On ``evaluator`` ``COMPLETED``, in this order: best tracking, the ``history.csv`` row, the epoch
    log line, TensorBoard, the best checkpoint, early stopping. On ``trainer`` ``EPOCH_COMPLETED``, after
    validation: the last (resume) checkpoint and ``run.json``. Everything stays plain Ignite.

    Args:
        trainer, evaluator: the engines (e.g. from :func:`build_trainer` / :func:`build_evaluator`).
        val_loader: validation batches, run through ``evaluator`` on ``validate_on``.
        run_dir: folder of the run (``reports/<name>``); see ``reports/README.md``.
        objective: the metric and mode that define "better" everywhere.
        to_save: stateful objects for checkpoints; ``"model"`` is required; add ``"optimizer"``,
            ``"scheduler"``... The first optimizer found gives the ``lr`` column.
        patience: validations without improvement before stopping; ``None`` disables early stopping.
        baseline, target, divergence: see :class:`EarlyStopping`.
        n_saved: best checkpoints kept. Default 3.
        restore_best: load the best weights into the model when training ends. Default True.
        log_every: iterations between training-loss points (TensorBoard, NaN check); the progress bar
            redraws by time (at most every 0.5 s).
        validate_on: trainer event running validation. Default ``Events.EPOCH_COMPLETED``.
        resume: continue the run in ``run_dir`` from its last checkpoint (a new run if there is none).
        overwrite: replace a run already in ``run_dir``.
        hparams, seed: recorded in ``run.json``; the library never seeds.
        tqdm_kwargs: passed to the progress bar (``file=``, ``disable=``...).
        background_writes: write checkpoints and ``run.json`` on a background thread, in order
            (default). Training then waits only for a copy of the state (a 50M-parameter save
            blocks 0.49x a plain ``torch.save``), but that thread's Python work competes for the
            GIL: on epochs of a few tens of ms with a tiny model, ``False`` is 2-3 ms per epoch faster.

        checkpoint_every: when the last (resume) checkpoint is written: an Ignite event with its
            filters (``Events.ITERATION_COMPLETED(every=500)``, ``Events.EPOCH_COMPLETED``), a
            wall-clock interval (``timedelta`` or seconds), or ``None`` (default): a budget, every
            10 minutes of training and never more than 1% of the time spent saving. Best checkpoints
            are kept in memory and written with it. A run also saves when it ends, on SIGTERM/SIGINT
            and at ``max_time``. A resume continues exactly from the newest one, mid-epoch included.
        max_time: training time (``timedelta`` or seconds, summed over resumed segments) after which
            the run stops with a checkpoint, status ``interrupted``, stop reason ``time_limit``;
            ``resume=True`` with a larger ``max_time`` continues it. Default None.
        lr_on_plateau: an :class:`~monitor.LROnPlateau` (patience, factor, cooldown, min_lr) to cut the
            first optimizer's rates when the objective stops improving, by the same rule as early
            stopping and the best checkpoints; its state is in the last checkpoint. Default None.

    Returns:
        The :class:`Monitor` holding the attached handlers.

    Examples:
        .. code-block:: python

            run = attach_monitoring(trainer, evaluator, val_loader, run_dir="reports/mlp",
                                    objective=Objective("loss", mode="min"),
                                    to_save={"model": model, "optimizer": optimizer})
            with run:
                trainer.run(train_loader, max_epochs=1000)
    """
    if not isinstance(trainer, Engine) or not isinstance(evaluator, Engine):
        raise TypeError(
            f"Arguments trainer and evaluator should be ignite Engines, got {type(trainer).__name__} "
            f"and {type(evaluator).__name__}."
        )
    if not isinstance(objective, Objective):
        raise TypeError(f"Argument objective should be a monitor.Objective, got {objective!r}.")
    _check_to_save(to_save)
    # Each argument is checked once, before anything touches the disk: by the constructors of the
    # handlers that need no disk (built here), or here when only disk-bound handlers take it.
    positive_int("patience", patience, none_ok=True)
    positive_int("n_saved", n_saved)
    positive_int("log_every", log_every)
    cadence = CheckpointCadence(checkpoint_every, agree_every=log_every)
    max_time_s = _seconds("max_time", max_time)
    if lr_on_plateau is not None and not isinstance(lr_on_plateau, LROnPlateau):
        raise TypeError(f"Argument lr_on_plateau should be a monitor.LROnPlateau or None, got {lr_on_plateau!r}.")
    early_stopping = None if patience is None else EarlyStopping(
        objective, trainer, patience, baseline=baseline, target=target, divergence=divergence
    )
    best = BestTracker(objective, trainer, baseline=baseline)
    # Disk-free, so before the folder: the epoch's loss is checked first, then validation runs
    # (attach_validation refuses an empty loader here, not after a training epoch).
    train_loss = attach_train_loss(trainer, check_every=log_every)
    attach_validation(trainer, evaluator, val_loader, event=validate_on)
    lock = RunLock(run_dir)
    writer = OrderedWriter(background=background_writes, guard=lock.check)  # never into a folder taken over
    model = to_save["model"]
    first_optimizer = next((o for o in to_save.values() if isinstance(o, torch.optim.Optimizer)), None)
    if lr_on_plateau is not None and first_optimizer is None:
        raise ValueError(
            f"Argument lr_on_plateau needs an optimizer in to_save (its rates are the ones cut); got to_save keys "
            f"{sorted(to_save)}."
        )
    state_types = {key: type(obj).__name__ for key, obj in to_save.items()}
    config = {
        "objective": objective.to_dict(),
        "early_stopping": None if patience is None else
        {"patience": patience, "baseline": baseline, "target": target, "divergence": divergence},
        "n_saved": n_saved,
        "lr_on_plateau": None if lr_on_plateau is None else {
            "patience": lr_on_plateau.patience, "factor": lr_on_plateau.factor, "cooldown": lr_on_plateau.cooldown,
            "min_lr": lr_on_plateau.min_lr},
        "hparams": dict(hparams or {}),
        "seed": seed,
        "to_save": state_types,
    }

    # Rank 0 checks and locks the folder; its verdict (or error) reaches every rank.
    on_main_process(lambda: str(prepare_run_dir(run_dir, resume=resume, overwrite=overwrite, lock=lock).root))
    paths = RunPaths(run_dir)
    try:
        record = RunRecord(on_main_process(lambda: read_record(paths.root)))
        own = set(RESERVED_KEYS) - set(OPTIONAL_KEYS) - ({"early_stopping"} if early_stopping is None else set())
        plan = plan_resume(paths, objective=objective, record=record, required={*to_save, *own},
                           state_types=state_types) if resume else ResumePlan(resume=False)
        if plan.state is not None and not plan.is_finished:
            _log_changes(record.data, config)
        main = is_main_process()
        # The rate each step used (the lr column), whatever order the user's scheduler handlers run in.
        rates = None if first_optimizer is None else LearningRates(first_optimizer)
        # Before anything else at each epoch end and validation: is the folder still this run's?
        trainer.add_event_handler(Events.EPOCH_COMPLETED, lock.check)
        evaluator.add_event_handler(Events.STARTED, lock.check)
        # In this order: the evaluator's COMPLETED handlers run as attached (see ARCHITECTURE.md).
        best.attach(evaluator)
        train_outputs, throughput = attach_train_outputs(trainer), attach_throughput(trainer)
        history = attach_history(evaluator, trainer, best, paths.history, train_loss=train_loss, optimizer=rates,
                                 train_outputs=train_outputs, throughput=throughput)
        progress_bar = None
        if main and not plan.is_finished:  # the epoch lines are written around it
            progress_bar = attach_progress_bar(trainer, **dict(tqdm_kwargs or {}))
        live_diagnosis = None
        if main:
            attach_epoch_log(evaluator, trainer, history, bar=progress_bar)
            live_diagnosis = attach_live_diagnosis(evaluator, history)
        tensorboard = None
        if main and not plan.is_finished:
            tensorboard = attach_tensorboard(
                trainer, evaluator, paths.tensorboard, optimizer=rates, log_every=log_every,
                purge_step=plan.purge_step, row=lambda: history.last_row, best=best,
                hparams={**dict(hparams or {}), **({} if seed is None else {"seed": seed})},
            )
        best_checkpoint = attach_best_checkpoint(
            evaluator, trainer, best, {"model": model}, paths.checkpoints, n_saved=n_saved, writer=writer,
            name_by_iteration=not _once_per_epoch(validate_on), hold=True,
        )
        if early_stopping is not None:
            early_stopping.attach(evaluator)
        if lr_on_plateau is not None and first_optimizer is not None:
            attach_lr_on_plateau(evaluator, best, first_optimizer, lr_on_plateau)
        data_order = attach_data_order(trainer)
        objects: dict[str, Any] = {
            **to_save, "trainer": engine_state(trainer), "best": best, "best_checkpoint": best_checkpoint,
            "train_loss": train_loss, "history": history, "rng": RNGState(), "data_order": data_order,
            "train_outputs": train_outputs,
        }
        if early_stopping is not None:
            objects["early_stopping"] = early_stopping
        if lr_on_plateau is not None:
            objects["lr_on_plateau"] = lr_on_plateau
        scaler = getattr(trainer.state, "scaler", None)  # Ignite's AMP GradScaler (create_supervised_trainer)
        if scaler is not None and hasattr(scaler, "state_dict") and "scaler" not in to_save:
            objects["scaler"] = scaler
        last_checkpoint = last_checkpointer(trainer, objects, paths.checkpoints, writer=writer)
        apply_resume(plan, objects=objects, paths=paths, last_checkpoint=last_checkpoint)
        if max_time_s is not None and not plan.is_finished and history.elapsed_s >= max_time_s:
            raise ValueError(
                f"Argument max_time should be more than the {history.elapsed_s:.1f} s {str(paths.root)!r} has "
                f"trained already, got {max_time!r}; pass a larger max_time to continue it."
            )
        graceful_stop = None
        if not plan.is_finished:
            graceful_stop = attach_graceful_stop(trainer, agree_every=log_every)
            if max_time_s is not None:
                attach_time_limit(trainer, graceful_stop, clock=history, max_time_s=max_time_s)
        run = Monitor(
            trainer, paths=paths, objective=objective, config=config, record=record, lock=lock, writer=writer,
            plan=plan, best=best, history=history, train_loss=train_loss, best_checkpoint=best_checkpoint,
            last_checkpoint=last_checkpoint, early_stopping=early_stopping, tensorboard=tensorboard,
            progress_bar=progress_bar, graceful_stop=graceful_stop, restore_best=model if restore_best else None,
            learning_rates=rates, cadence=cadence, data_order=data_order, live_diagnosis=live_diagnosis,
        )
        run.attach(trainer)  # after the last checkpoint's handler: run.json follows the file it names
        return run
    except BaseException:
        lock.release()
        raise


def _once_per_epoch(event: Any) -> bool:
    """Whether a trainer event fires at most once per epoch, so that the epoch names a validation."""
    return getattr(event, "name", None) in ("EPOCH_COMPLETED", "EPOCH_STARTED", "COMPLETED", "STARTED")


def _log_changes(previous: Mapping[str, Any], config: Mapping[str, Any]) -> None:
    """Say at INFO which settings a resume changes; the new values apply from here on."""
    def flat(record: Mapping[str, Any]) -> dict[str, Any]:
        values = {"n_saved": record.get("n_saved"), "seed": record.get("seed")}
        values.update(record.get("early_stopping") or {})
        values.update({f"hparams.{k}": v for k, v in (record.get("hparams") or {}).items()})
        return values

    old, new = flat(previous), flat(config)
    for name in new:
        if name in old and old[name] != new[name]:
            logger.info("Resuming with %s changed from %r to %r; the new value applies from here on.",
                        name, old[name], new[name])


def _seconds(name: str, value: timedelta | float | None) -> float | None:
    """``value`` in seconds (a ``timedelta`` or a number > 0), or ``None``."""
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
        raise ValueError(
            f"Argument {name} should be a positive datetime.timedelta or number of seconds, got {value!r}."
        )
    return float(seconds)
