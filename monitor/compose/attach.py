"""attach_monitoring: compose the handlers on the user's engines in a fixed, documented order."""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

from monitor.compose.monitor import Handlers, Monitor, RunFiles
from monitor.compose.resume import ResumePlan, apply_resume, plan_resume
from monitor.compose.rundir import prepare_run_dir, remove_if_empty
from monitor.compose.schedulers import check_torch_schedulers, engine_schedulers
from monitor.compose.settings import LEGACY_KEYWORDS, Checkpoints, Console, EarlyStopping, Record
from monitor.core.objective import Objective
from monitor.handlers.best import BestTracker
from monitor.handlers.cadence import CheckpointCadence
from monitor.handlers.checkpoint import attach_best_checkpoint, last_checkpoint_name, last_checkpointer
from monitor.handlers.console_log import ConsoleLog
from monitor.handlers.data import attach_data_order
from monitor.handlers.diagnosis import attach_live_diagnosis
from monitor.handlers.history import attach_history
from monitor.handlers.loss import TrainLoss, attach_train_loss
from monitor.handlers.lr import LearningRates
from monitor.handlers.model_check import attach_model_watch, check_model_is_stepped
from monitor.handlers.outputs import attach_throughput, attach_train_outputs
from monitor.handlers.progress import attach_epoch_log, attach_progress_bar
from monitor.handlers.rng import RNGState, engine_state
from monitor.handlers.signals import attach_graceful_stop, attach_time_limit
from monitor.handlers.step import StepWork
from monitor.handlers.stopping import EarlyStoppingHandler
from monitor.handlers.tensorboard import attach_tensorboard
from monitor.handlers.validation import attach_validation
from monitor.parts.base import Part, PartContext
from monitor.runtime.distributed import is_main_process, on_main_process
from monitor.runtime.shard_folders import shard_folder_objects, shard_folders_of
from monitor.runtime.sharded import full_state_objects
from monitor.store.layout import RunPaths, shards_of
from monitor.store.lock import RunLock
from monitor.store.record import RunRecord, read_record
from monitor.store.writer import OrderedWriter

__all__ = ["Monitor", "attach_monitoring", "RESERVED_KEYS"]

logger = logging.getLogger(__name__)

# Keys monitor adds to the last checkpoint (``checkpointer`` is Ignite's own, from include_self);
# ``to_save`` may not use them.
RESERVED_KEYS = (
    "trainer", "best", "early_stopping", "best_checkpoint", "train_loss", "history", "rng", "data_order",
    "train_outputs", "checkpointer",
)
# Keys of what the trainer's state holds and monitor keeps: to_save may hold the same object under
# its key (then it is the user's entry), never another one; a part may not take them.
TRAINER_KEYS = ("scaler", "skip_step")  # Ignite's AMP GradScaler; build_trainer(skip_step=...)
# Reserved keys a checkpoint written before they existed may lack; a resume then goes on without them.
# (A part's key is never required: a part new at a resume starts from its defaults.)
OPTIONAL_KEYS = ("data_order", "train_outputs")

_DEFAULT_EARLY_STOPPING = EarlyStopping()
_DEFAULT_CHECKPOINTS = Checkpoints()
_DEFAULT_CONSOLE = Console()
_DEFAULT_RECORD = Record()


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
    early_stopping: EarlyStopping | None = _DEFAULT_EARLY_STOPPING,
    checkpoints: Checkpoints = _DEFAULT_CHECKPOINTS,
    console: Console = _DEFAULT_CONSOLE,
    record: Record = _DEFAULT_RECORD,
    parts: Sequence[Part] = (),
    validate_on: Any = Events.EPOCH_COMPLETED,
    max_time: timedelta | float | None = None,
    resume: bool = False,
    overwrite: bool = False,
    **removed: Any,
) -> Monitor:
    """Wire validation, early stopping, best and last checkpoints, history, TensorBoard and progress.

    On ``evaluator`` ``COMPLETED``, in this order: best tracking, the ``history.csv`` row, the epoch
    log line, TensorBoard, the best checkpoint, early stopping, then the parts' handlers. After each
    training step, one handler runs the per-step work of every part (see
    :class:`~monitor.handlers.step.StepWork`). Everything stays plain Ignite.

    Args:
        trainer, evaluator: the engines (e.g. from :func:`build_trainer` / :func:`build_evaluator`).
        val_loader: validation batches, run through ``evaluator`` on ``validate_on``.
        run_dir: folder of the run (``reports/<name>``); see ``reports/README.md``.
        objective: the metric and mode that define "better" everywhere.
        to_save: stateful objects for checkpoints; ``"model"`` is required; add ``"optimizer"``,
            ``"scheduler"``... The first optimizer found gives the ``lr`` column.
        early_stopping: an :class:`~monitor.EarlyStopping` (patience, baseline, target, divergence), or
            ``None`` to train to ``max_epochs``. Default ``EarlyStopping(patience=10)``.
        checkpoints: a :class:`~monitor.Checkpoints` (best kept, when the last is written, restore
            the best weights at the end, background writes). Default ``Checkpoints()``.
        console: a :class:`~monitor.Console` (``log_every``, the progress bar's ``tqdm_kwargs``).
        record: a :class:`~monitor.Record` (``hparams``, ``seed``) for ``run.json``; the library never seeds.
        parts: optional parts (:class:`~monitor.LROnPlateau`, :class:`~monitor.GradNorm`, your own:
            see :class:`~monitor.Part`); each is in the last checkpoint under its ``key``.
        validate_on: trainer event running validation. Default ``Events.EPOCH_COMPLETED``.
        max_time: training time (``timedelta`` or seconds, summed over resumed segments) after which
            the run stops with a checkpoint, status ``interrupted``, stop reason ``time_limit``;
            ``resume=True`` with a larger ``max_time`` continues it. Default None.
        resume: continue the run in ``run_dir`` from its last checkpoint (a new run if there is none).
        overwrite: replace a run already in ``run_dir``.

    Returns:
        The :class:`~monitor.compose.Monitor` holding the attached handlers.

    Raises:
        TypeError: a flat keyword of the API before its settings objects (``patience=``...): the message
            names its replacement.

    Examples:
        .. code-block:: python

            run = attach_monitoring(trainer, evaluator, val_loader, run_dir="reports/mlp",
                                    objective=Objective("loss", mode="min"),
                                    to_save={"model": model, "optimizer": optimizer},
                                    early_stopping=EarlyStopping(patience=10))
            with run:
                trainer.run(train_loader, max_epochs=1000)
    """
    _check_arguments(trainer, evaluator, run_dir=run_dir, objective=objective, to_save=to_save, removed=removed,
                     flags={"resume": resume, "overwrite": overwrite},
                     settings={"early_stopping": early_stopping, "checkpoints": checkpoints, "console": console,
                               "record": record})
    wiring = _configure(trainer, evaluator, val_loader, run_dir=run_dir, objective=objective, to_save=to_save,
                        early_stopping=early_stopping, checkpoints=checkpoints, console=console, record=record,
                        parts=parts, validate_on=validate_on, max_time=max_time, resume=resume)
    created = is_main_process() and not os.path.exists(run_dir)  # removed again if attach fails (False: unreadable)
    # Rank 0 checks and locks the folder; its verdict (or error) reaches every rank.
    on_main_process(lambda: str(prepare_run_dir(run_dir, resume=resume, overwrite=overwrite, lock=wiring.lock).root))
    paths = RunPaths(run_dir)
    console_log = ConsoleLog()
    try:
        if not console.quiet and is_main_process():
            console_log.install()
        record_now, plan = _plan(wiring, paths, resume=resume)
        handlers, objects = _attach_handlers(wiring, paths, plan, console_log)
        _apply_resume(wiring, handlers, objects, paths, plan, max_time=max_time)
        run = Monitor(
            trainer, files=RunFiles(paths=paths, record=record_now, lock=wiring.lock, writer=wiring.writer,
                                    config=wiring.config),
            plan=plan, handlers=handlers, parts=wiring.parts,
            restore_best=wiring.model if checkpoints.restore_best else None,
        )
        late_schedulers = _keep_late_schedulers(trainer, evaluator, wiring.context.objects, handlers.last_checkpoint,
                                                plan)
        trainer.add_event_handler(Events.STARTED, late_schedulers)
        run.attach(trainer)  # after the last checkpoint's handler: run.json follows the file it names
        wiring.step.attach_last(trainer)  # after a validation within the epoch (if any): see StepWork
        return run
    except BaseException:
        wiring.lock.release()
        console_log.remove()
        if created:
            remove_if_empty(run_dir)
        raise


@dataclass
class _Wiring:
    """What :func:`attach_monitoring` builds before it touches the disk, for the steps after it."""

    trainer: Engine
    evaluator: Engine
    objective: Objective
    to_save: Mapping[str, Any]
    checkpointed: Mapping[str, Any]  # to_save as the checkpoints see it (a sharded model's full state)
    parts: list[Part]
    schedulers: dict[str, Any]  # Ignite's, found on the engines, under keys of their own
    trainer_objects: dict[str, Any]  # the trainer's GradScaler and SkipStep
    checkpoints: Checkpoints
    console: Console
    record: Record
    validate_on: Any
    cadence: CheckpointCadence
    max_time_s: float | None
    stopping: EarlyStoppingHandler | None
    best: BestTracker
    model: torch.nn.Module
    first_optimizer: torch.optim.Optimizer | None
    step: StepWork
    context: PartContext
    train_loss: TrainLoss
    lock: RunLock
    writer: OrderedWriter
    config: dict[str, Any]
    state_types: dict[str, str]


def _check_arguments(
    trainer: Any, evaluator: Any, *, run_dir: Any, objective: Any, to_save: Any, removed: Mapping[str, Any],
    flags: Mapping[str, Any], settings: Mapping[str, Any],
) -> None:
    """Refuse what attach_monitoring cannot work with, naming the value: the engines, the folder's name,
    the objective, ``to_save``, the flags, each setting's kind (each setting checked its values when it
    was made)."""
    _refuse_removed(removed)
    for name, flag in flags.items():
        if not isinstance(flag, bool):
            raise TypeError(f"Argument {name} should be True or False, got {flag!r}.")
    if not isinstance(run_dir, (str, Path)) or not str(run_dir):
        raise TypeError(f"Argument run_dir should be a folder (a str or pathlib.Path), got {run_dir!r}.")
    if not isinstance(trainer, Engine) or not isinstance(evaluator, Engine):
        raise TypeError(
            f"Arguments trainer and evaluator should be ignite Engines, got {type(trainer).__name__} "
            f"and {type(evaluator).__name__}."
        )
    if not isinstance(objective, Objective):
        raise TypeError(f"Argument objective should be a monitor.Objective, got {objective!r}.")
    _check_to_save(to_save)
    check_model_is_stepped(to_save)
    kinds = {"early_stopping": EarlyStopping, "checkpoints": Checkpoints, "console": Console, "record": Record}
    for name, value in settings.items():
        if not isinstance(value, kinds[name]) and not (name == "early_stopping" and value is None):
            extra = " or None" if name == "early_stopping" else ""
            raise TypeError(f"Argument {name} should be a monitor.{kinds[name].__name__}{extra}, got {value!r}.")


def _configure(
    trainer: Engine, evaluator: Engine, val_loader: Iterable[Any], *, run_dir: str | Path, objective: Objective,
    to_save: Mapping[str, Any], early_stopping: EarlyStopping | None, checkpoints: Checkpoints, console: Console,
    record: Record, parts: Sequence[Part], validate_on: Any, max_time: timedelta | float | None, resume: bool,
) -> _Wiring:
    """Everything that needs no disk, so before the folder: the parts checked, the schedulers found, the
    objective's trackers, the one step handler, the training loss's check (first at each step) and
    validation (an empty loader refused here, not after a training epoch), the lock, the writer and the
    configuration ``run.json`` records."""
    checked = _check_parts(parts, to_save)
    trainer_objects = _trainer_objects(trainer, to_save)
    state_types = {key: type(obj).__name__ for key, obj in to_save.items()}
    model = to_save["model"]
    first_optimizer = next((o for o in to_save.values() if isinstance(o, torch.optim.Optimizer)), None)
    checkpointed = full_state_objects(to_save)  # a sharded model's checkpoints hold its full state
    # Ignite's schedulers on the engines are kept under keys of their own; torch's must be in to_save.
    schedulers = engine_schedulers((trainer, evaluator), taken=to_save.values(),
                                   keys=[*to_save, *RESERVED_KEYS, *(part.key for part in checked)])
    check_torch_schedulers(to_save, kept=[*to_save.values(), *schedulers.values(),
                                          *(obj for part in checked for obj in vars(part).values())])
    log_every = console.log_every
    cadence = checkpoints.cadence(validate_on=validate_on)  # agreed every log_every steps: the step's
    max_time_s = _seconds("max_time", max_time)
    stopping = None if early_stopping is None else EarlyStoppingHandler(
        objective, trainer, early_stopping.patience, baseline=early_stopping.baseline, target=early_stopping.target,
        divergence=early_stopping.divergence,
    )
    best = BestTracker(objective, trainer, baseline=None if early_stopping is None else early_stopping.baseline)
    step = StepWork(log_every=log_every, last_apart=not _once_per_epoch(validate_on)).attach(trainer)
    context = PartContext(trainer=trainer, evaluator=evaluator, objective=objective, best=best, model=model,
                          optimizer=first_optimizer, step_work=step.first, to_save_keys=tuple(to_save),
                          to_save=dict(to_save), check_work=step.checks, run_dir=Path(run_dir), resume=resume)
    for part in checked:
        part.check(context)
    train_loss = attach_train_loss(trainer, step=step)  # checked every log_every steps: the step's
    attach_validation(trainer, evaluator, val_loader, event=validate_on)
    lock = RunLock(run_dir)
    writer = OrderedWriter(background=checkpoints.background_writes, guard=lock.check)  # never into a folder taken over
    state_types.update((key, type(obj).__name__) for key, obj in schedulers.items())
    config = {
        "objective": objective.to_dict(),
        "early_stopping": None if early_stopping is None else early_stopping.config(),
        "n_saved": checkpoints.n_saved,
        "lr_on_plateau": None,  # (run.json has always named it, here)
        "hparams": dict(record.hparams),
        "seed": record.seed,
        "to_save": state_types,
        **{part.key: dict(part.config()) for part in checked},  # the settings of each part
    }
    context.config = config
    return _Wiring(
        trainer=trainer, evaluator=evaluator, objective=objective, to_save=to_save, checkpointed=checkpointed,
        parts=checked,
        schedulers=schedulers, trainer_objects=trainer_objects, checkpoints=checkpoints,
        console=console, record=record, validate_on=validate_on, cadence=cadence, max_time_s=max_time_s,
        stopping=stopping, best=best, model=model, first_optimizer=first_optimizer, step=step, context=context,
        train_loss=train_loss, lock=lock, writer=writer, config=config, state_types=state_types,
    )


def _plan(wiring: _Wiring, paths: RunPaths, *, resume: bool) -> tuple[RunRecord, ResumePlan]:
    """The folder's record and what a resume continues from (reads only); the settings it changes, said."""
    run_record = RunRecord(on_main_process(lambda: read_record(paths.root)))
    own = set(RESERVED_KEYS) - set(OPTIONAL_KEYS) - ({"early_stopping"} if wiring.stopping is None else set())
    plan = plan_resume(paths, objective=wiring.objective, record=run_record, required={*wiring.to_save, *own},
                       state_types=wiring.state_types) if resume else ResumePlan(resume=False)
    if plan.state is not None and not plan.is_finished:
        _log_changes(run_record.data, wiring.config)
    return run_record, plan


def _attach_handlers(
    wiring: _Wiring, paths: RunPaths, plan: ResumePlan, console_log: ConsoleLog
) -> tuple[Handlers, dict[str, Any]]:
    """monitor's handlers on the engines, in their documented order (the evaluator's ``COMPLETED``
    handlers run as attached: see ARCHITECTURE.md), then the parts'; and the objects of the last
    checkpoint."""
    trainer, evaluator, best, step, w = wiring.trainer, wiring.evaluator, wiring.best, wiring.step, wiring
    main = is_main_process()
    # The rate each step used (the lr column), whatever order the user's scheduler handlers run in.
    rates = None if w.first_optimizer is None else LearningRates(w.first_optimizer, trainer=trainer)
    # Before anything else at each epoch end and validation: is the folder still this run's?
    trainer.add_event_handler(Events.EPOCH_COMPLETED, w.lock.check)
    evaluator.add_event_handler(Events.STARTED, w.lock.check)
    best.attach(evaluator)
    train_outputs = attach_train_outputs(trainer, step=step)
    throughput = attach_throughput(trainer, step=step)
    history = attach_history(evaluator, trainer, best, paths.history, train_loss=w.train_loss, optimizer=rates,
                             train_outputs=train_outputs, throughput=throughput,
                             columns=[part.columns for part in w.parts])
    quiet = w.console.quiet
    progress_bar = attach_progress_bar(trainer, **dict(w.console.tqdm_kwargs or {})) \
        if main and not plan.is_finished and not quiet else None  # the epoch lines are written around it
    live_diagnosis = None
    if main:
        attach_epoch_log(evaluator, trainer, history, bar=progress_bar)
        live_diagnosis = attach_live_diagnosis(evaluator, history)
    tensorboard = None
    if main and not plan.is_finished:
        hparams = {**dict(w.record.hparams), **({} if w.record.seed is None else {"seed": w.record.seed})}
        tensorboard = attach_tensorboard(trainer, evaluator, paths.tensorboard, optimizer=rates,
                                         purge_step=plan.purge_step,
                                         row=lambda: history.last_row, best=best, hparams=hparams, step=step,
                                         train_loss=w.train_loss)
    # a sharded model's best: its shards in a folder (shards="dcp"), or its full state in the file
    best_model = w.to_save["model"] if w.checkpoints.shards == "dcp" else w.checkpointed["model"]
    best_checkpoint = attach_best_checkpoint(
        evaluator, trainer, best, {"model": best_model}, paths.checkpoints, n_saved=w.checkpoints.n_saved,
        writer=w.writer, name_by_iteration=not _once_per_epoch(w.validate_on), hold=True,
    )
    # Without early stopping, a NaN objective still ends the run (Objective(on_nonfinite="stop")): the
    # handler with no patience, target or divergence stops for that alone (kept out of the checkpoint).
    stops = w.stopping or EarlyStoppingHandler(w.objective, trainer, None)
    stops.attach(evaluator)
    for part in w.parts:
        part.attach(w.context)
    attach_model_watch(trainer, w.model)
    data_order = attach_data_order(trainer)
    data_order.timer = throughput  # the batches it replays are timed as they are drawn
    objects: dict[str, Any] = {
        **_last_state(w, paths), **w.schedulers, "trainer": engine_state(trainer), "best": best,
        "best_checkpoint": best_checkpoint, "train_loss": w.train_loss, "history": history, "rng": RNGState(),
        "data_order": data_order, "train_outputs": train_outputs, **{part.key: part for part in w.parts},
        **({} if w.stopping is None else {"early_stopping": w.stopping}), **w.trainer_objects,
    }
    w.context.objects.update(objects)  # what a part may restore (Recovery's rollback)
    last_checkpoint = last_checkpointer(trainer, objects, paths.checkpoints, writer=w.writer)
    folders = shard_folders_of(objects)
    if folders is not None:  # a .pt names its shards folder: it is written once the folder is committed
        last_checkpoint.save_handler.before_write = folders.committed  # type: ignore[attr-defined]
    handlers = Handlers(
        objective=w.objective, best=best, history=history, train_loss=w.train_loss, best_checkpoint=best_checkpoint,
        last_checkpoint=last_checkpoint,
        cadence=w.cadence, step=step,
        early_stopping=stops, tensorboard=tensorboard, progress_bar=progress_bar, learning_rates=rates,
        data_order=data_order, live_diagnosis=live_diagnosis, console_log=console_log,
    )
    return handlers, objects


def _last_state(w: _Wiring, paths: RunPaths) -> Mapping[str, Any]:
    """``to_save`` as the last checkpoint holds it: a sharded model's in a shards folder of each rank's
    shards (``Checkpoints(shards="dcp")``) or as its full state (``"full"``)."""
    if w.checkpoints.shards == "full":
        return w.checkpointed
    trainer = w.trainer
    return shard_folder_objects(w.to_save, paths.checkpoints, lambda: shards_of(last_checkpoint_name(trainer.state)),
                                background=w.checkpoints.background_writes)


def _apply_resume(
    wiring: _Wiring, handlers: Handlers, objects: dict[str, Any], paths: RunPaths, plan: ResumePlan, *,
    max_time: Any,
) -> None:
    """The resumed state into every object; then, for a run that goes on, the graceful stop (signals)
    and the time limit."""
    apply_resume(plan, objects=objects, paths=paths, last_checkpoint=handlers.last_checkpoint)
    history, trainer, max_time_s = handlers.history, wiring.trainer, wiring.max_time_s
    if max_time_s is not None and not plan.is_finished and history.elapsed_s >= max_time_s:
        raise ValueError(
            f"Argument max_time should be more than the {history.elapsed_s:.1f} s {str(paths.root)!r} has "
            f"trained already, got {max_time!r}; pass a larger max_time to continue it."
        )
    if not plan.is_finished:
        handlers.graceful_stop = attach_graceful_stop(trainer, step=wiring.step)
        if max_time_s is not None:
            attach_time_limit(trainer, handlers.graceful_stop, clock=history, max_time_s=max_time_s, step=wiring.step)


def _keep_late_schedulers(
    trainer: Engine, evaluator: Engine, objects: dict[str, Any], last_checkpoint: Any, plan: ResumePlan
) -> Any:
    """A trainer ``STARTED`` handler: Ignite schedulers attached after ``attach_monitoring`` join the last
    checkpoint too (and get their state back at a resume), as if attached before."""
    def keep(_: Engine) -> None:
        late = engine_schedulers((trainer, evaluator), taken=objects.values(), keys=objects)
        for key, handler in late.items():
            objects[key] = last_checkpoint.to_save[key] = handler
            if plan.state is not None and key in plan.state:
                handler.load_state_dict(plan.state[key])
            logger.debug("Keeping %s (attached after attach_monitoring) in the last checkpoint as %r",
                         type(handler).__name__, key)
    return keep


def _refuse_removed(removed: Mapping[str, Any]) -> None:
    """A keyword attach_monitoring no longer takes: name where it went (or that it is unknown)."""
    for name in removed:
        if name in LEGACY_KEYWORDS:
            raise TypeError(
                f"attach_monitoring() no longer takes {name}=; pass {LEGACY_KEYWORDS[name]} instead "
                "(see docs/usage.md, 'Settings and parts')."
            )
        raise TypeError(f"attach_monitoring() got an unexpected keyword argument {name!r}.")


def _check_parts(parts: Sequence[Any], to_save: Mapping[str, Any]) -> list[Part]:
    """``parts`` as a list, each following the :class:`~monitor.parts.base.Part` protocol, under a key
    of its own."""
    if isinstance(parts, (str, bytes)) or not isinstance(parts, Sequence):
        raise TypeError(f"Argument parts should be a list of parts (e.g. [LROnPlateau()]), got {parts!r}.")
    keys: set[str] = set()
    for part in parts:
        if isinstance(part, type):  # the class, where an instance was meant: Recovery, not Recovery()
            raise TypeError(f"Argument parts should hold parts (instances), got the class {part.__name__}; pass "
                            f"{part.__name__}(...).")
        if not isinstance(part, Part):
            raise TypeError(f"Argument parts should hold parts (subclasses of monitor.Part, with a key and attach), "
                            f"got {part!r} ({type(part).__name__}).")
        if not isinstance(part.key, str) or not part.key.isidentifier():
            raise ValueError(f"Part {type(part).__name__} should set key to a name (its entry in the checkpoint and "
                             f"run.json, e.g. 'count_steps'), got {part.key!r}.")
        if part.key in (*RESERVED_KEYS, *TRAINER_KEYS) or part.key in to_save or part.key in keys:
            raise ValueError(
                f"Argument parts has a part whose key {part.key!r} is taken (by monitor, to_save or another part); "
                f"monitor reserves {[*RESERVED_KEYS, *TRAINER_KEYS]}."
            )
        keys.add(part.key)
    return list(parts)


def _trainer_objects(trainer: Engine, to_save: Mapping[str, Any]) -> dict[str, Any]:
    """What the trainer's state holds that the last checkpoint must keep (:data:`TRAINER_KEYS`): Ignite's
    AMP GradScaler (``create_supervised_trainer(scaler=...)``) and build_trainer's SkipStep, unless
    ``to_save`` holds the same object under that key; another object there would leave the trainer's
    own unsaved, and is refused."""
    kept = {}
    for key in TRAINER_KEYS:
        obj = getattr(trainer.state, key, None)
        if obj is None or not hasattr(obj, "state_dict"):
            continue
        if key in to_save and to_save[key] is not obj:
            raise ValueError(f"Argument to_save[{key!r}] is a {type(to_save[key]).__name__} that is not the trainer's "
                             f"(trainer.state.{key}, a {type(obj).__name__}), which monitor keeps under {key!r}: pass "
                             f"that object, or leave {key!r} out of to_save.")
        if key not in to_save:
            kept[key] = obj
    return kept


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
