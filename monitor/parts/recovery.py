"""Recovery: a run whose loss went non-finite, spiked or diverged goes back to a good state, its
learning rate cut, and trains on in the same ``trainer.run``.

What the teams training the largest models do by hand (PaLM, OPT, BLOOM: restart from a checkpoint
before the spike, skip the batches around it, lower the rate), done in the running process:

1. **Judge.** Every ``log_every`` steps and at each epoch's last (where monitor reads the loss
   anyway: no host sync and no work of its own per step; the losses are those ``TrainLoss`` reads),
   before monitor's NaN check could end the run, the steps since the last check: a non-finite loss,
   or a loss above ``spike`` times the *highest* of the last ``window`` steps (a fine-tuned start's
   hard batches reach 100x the median step but stay within a few times the highest). And at each
   validation, the diagnosis's divergence rule (:func:`monitor.diagnosis.diverging`) on the rows
   since the last rollback: a loss risen to 10x its lowest, an epoch's spike far above the others,
   a dead start. Under idist every rank's verdict is gathered: a NaN on one rank rolls every rank
   back, at the same iteration.
2. **Go back.** Good states are CPU copies of the model, the optimizers, the schedulers and the rest
   of ``to_save``, the epoch's loss sums and the parts, each taken only after the steps before it
   were judged: every ``keep_every`` iterations and at each epoch's start, or by default every so
   many steps that the copies take at most ``max_share`` (1%) of the time, at an epoch's start when
   one is due or the last validation was a new best, and after each validation within an epoch. A
   step's trouble goes back to the newest; if it comes back, to the state of the newest best
   validation (before the first, the run's start). A divergence goes back to the state of the
   newest best validation before its rise began (or to where the run, or the last rollback,
   started, for a run knocked out at once).
3. **Adjust**, in this order: every parameter group's rate (and a schedule's base, peak and floor
   rates: torch schedulers, Ignite's parameter schedulers on the trainer) times ``lr_factor`` (the
   n-th rollback in a row times ``lr_factor ** n``); optionally the optimizer's moments cleared
   (``reset_moments``).
4. **Go on.** The weights go back; the clock does not. The trainer's iteration and epoch and the
   data order go on: the batches since the good state are skipped (their positions still counted,
   so epochs keep their length and a resume stays exact), and the history keeps the rows of the
   abandoned stretch as they were validated (one row per validation: nothing is written twice, so
   nothing is purged), with the rollback in ``run.json`` and a red line on the curves.
5. **Give up** after ``max_attempts`` rollbacks in a row (a row ends with ``min_progress``
   trouble-free iterations, default one epoch): a non-finite loss then stops the run as before
   (``nonfinite_loss``), a spike or divergence with ``diverged``; the attempts are in ``run.json``.

Every rollback is a WARNING (rank 0) and an entry of ``run.json``'s ``recoveries`` (the iteration and
loss of the trouble, where it went back to, what was changed, the attempt), which ``monitor
report``, ``compare`` and the HTML page show, and the diagnosis reads (a trouble a rollback undid is
a note; the rows after it are judged again). Its state (the good copies not held in the checkpoint
itself, the recent losses, the attempts) is in the last checkpoint: a recovered run killed and
resumed ends as the uninterrupted one (with ``keep_every`` given; chosen from timings, the copies'
iterations can differ between two runs). Memory: up to three copies (the newest, the best
validation's, and the run's start during its first epochs). On a model sharded with FSDP2 each rank
copies and restores its own shards; those copies are not in the checkpoint (rank 0 writes its file),
so a resume goes on with copies taken from there on, and says so.

Examples:
    .. code-block:: python

        run = attach_monitoring(..., parts=[Recovery(lr_factor=0.5, max_attempts=3)])
"""
from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.handlers.param_scheduler import ParamScheduler

from monitor.core._checks import number_in, positive_int
from monitor.core._position import done_in_epoch, is_mid_epoch, run_iteration
from monitor.core.status import StopReason, parse_reason, reason_value
from monitor.diagnosis import diverging
from monitor.diagnosis.rules import RECOVERY_VALIDATIONS, as_good
from monitor.parts.base import Part, PartContext
from monitor.runtime.attached import attached_handlers
from monitor.runtime.distributed import gather_json
from monitor.runtime.sharded import is_sharded
from monitor.runtime.skip import highest, window_size
from monitor.runtime.skip import trouble as step_trouble
from monitor.store.history import TIMING_COLUMNS

__all__ = ["Recovery"]

logger = logging.getLogger(__name__)

# What a rollback does not restore: the trainer's position and the data order go on (the batches in
# between are skipped); what validations judged stays (a rollback past validations restores early
# stopping's count from the copy, the validated state's).
_NOT_RESTORED = ("trainer", "best", "early_stopping", "best_checkpoint", "history", "rng", "data_order", "checkpointer")
# The start of a stretch (the run's, a rollback's) is kept this long: a blow-up in its first epoch
# shows only at its 3rd validation (the diagnosis judges a spike against the median of the epochs').
_ORIGIN_EPOCHS = 4
_RATE_KEYS = ("lr", "initial_lr", "max_lr", "min_lr")  # a param group's rates (OneCycleLR keeps the last three)


def _cpu_copy(state: Any) -> Any:
    """A deep copy of a state dict with every tensor on the CPU (no storage shared with the original);
    a sharded tensor (FSDP2's DTensor) as this rank's shard of it (:class:`_LocalShard`)."""
    return _each_tensor(state, lambda t: _LocalShard.of(t) if _is_dtensor(t) else t.detach().to("cpu", copy=True))


def _restored(state: Any) -> Any:
    """A copy of a good state to load: its tensors copied again (the good state stays as it was), a
    rank's shard made the DTensor it was, on its device."""
    return _each_tensor(state, lambda t: t.restored() if isinstance(t, _LocalShard) else t.clone())


def _each_tensor(state: Any, leaf: Callable[[Any], Any]) -> Any:
    """``state`` with ``leaf`` applied to each tensor (and kept shard) in it, its containers made anew."""
    if isinstance(state, (torch.Tensor, _LocalShard)):
        return leaf(state)
    if isinstance(state, Mapping):
        return type(state)((k, _each_tensor(v, leaf)) for k, v in state.items()) if isinstance(
            state, OrderedDict) else {k: _each_tensor(v, leaf) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_each_tensor(v, leaf) for v in state)
    return state


def _cpu_scalar(loss: torch.Tensor) -> bool:
    """A loss read as a number at once (cheaper than stacking it with the others)."""
    return loss.is_cpu and loss.numel() == 1


def _is_dtensor(tensor: torch.Tensor) -> bool:
    if type(tensor) is torch.Tensor or not torch.distributed.is_available():
        return False
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)


@dataclass(frozen=True)
class _LocalShard:
    """This rank's shard of a DTensor, on the CPU, with what makes it the DTensor again. Each rank keeps
    and restores its own shards: no gather, nothing another rank holds."""

    local: torch.Tensor
    mesh: Any
    placements: tuple[Any, ...]
    shape: torch.Size
    stride: tuple[int, ...]

    @classmethod
    def of(cls, tensor: Any) -> _LocalShard:
        return cls(tensor.to_local().detach().to("cpu", copy=True), tensor.device_mesh, tuple(tensor.placements),
                   tensor.shape, tuple(tensor.stride()))

    def restored(self) -> Any:
        from torch.distributed.tensor import DTensor

        local = self.local.to(self.mesh.device_type, copy=True)
        return DTensor.from_local(local, self.mesh, self.placements, run_check=False, shape=self.shape,
                                  stride=self.stride)


def _schedules(obj: Any) -> Iterator[Any]:
    """The rate schedules in ``obj``: a torch scheduler, an Ignite parameter scheduler (and what it wraps
    or concatenates)."""
    if isinstance(obj, torch.optim.lr_scheduler.LRScheduler):
        yield obj
    elif isinstance(obj, ParamScheduler):
        yield obj
        for inner in (getattr(obj, "lr_scheduler", None), *getattr(obj, "schedulers", ())):
            if inner is not None:
                yield from _schedules(inner)


def _scale_schedule(schedule: Any, factor: float) -> None:
    """Multiply what a schedule computes the rate from by ``factor``."""
    if isinstance(schedule, torch.optim.lr_scheduler.LRScheduler):
        # Every bound torch schedules compute from: base_lrs (most), CyclicLR's max_lrs, ReduceLROnPlateau's
        # min_lrs (it has no base_lrs: a floor left above the cut rate would raise it back), and what
        # OneCycleLR keeps in the param groups.
        for name in ("base_lrs", "max_lrs", "min_lrs", "_last_lr"):
            values = getattr(schedule, name, None)
            if isinstance(values, list) and all(isinstance(v, (int, float)) for v in values):
                setattr(schedule, name, [v * factor for v in values])
        if isinstance(schedule, torch.optim.lr_scheduler.OneCycleLR):
            for group in schedule.optimizer.param_groups:
                for key in ("initial_lr", "max_lr", "min_lr"):
                    if isinstance(group.get(key), (int, float)):
                        group[key] *= factor
        return
    if getattr(schedule, "param_name", "lr") != "lr":
        return  # a schedule of another parameter (momentum...)
    for name in ("start_value", "end_value"):
        value = getattr(schedule, name, None)
        if isinstance(value, (int, float)):
            setattr(schedule, name, value * factor)
    values = getattr(schedule, "values", None)
    if isinstance(values, list) and all(isinstance(v, (int, float)) for v in values):  # PiecewiseLinear
        schedule.values = [v * factor for v in values]


class Recovery(Part):
    """A part that rolls a run back to a good state when the loss goes non-finite, spikes or diverges,
    cuts the rate, skips the batches in between, and trains on (see the module's docstring).

    Args:
        spike: a step's loss above this many times the highest of the last ``window`` steps is a
            spike; > 1. Default 10.
        window: steps the highest is taken over (>= 20). Default 100.
        lr_factor: every rate (and schedule) is multiplied by this at a rollback (the n-th in a row:
            by its n-th power), in (0, 1); ``None`` leaves the rates. Default 0.5.
        reset_moments: clear the optimizer's state (momentum, Adam's moments) at a rollback. Default False.
        max_attempts: rollbacks in a row before the run stops (>= 1). Default 3.
        min_progress: trouble-free iterations that end a row of attempts; default one epoch.
        keep_every: iterations between two good copies within an epoch (besides each epoch's start);
            default: chosen from the first copy's cost, so that copies take at most ``max_share``
            of the training time.
        max_share: the share of the training time the copies may take when ``keep_every`` is chosen.

    Examples:
        .. code-block:: python

            run = attach_monitoring(..., parts=[Recovery(spike=10, lr_factor=0.5)])
            with run:
                trainer.run(train_loader, max_epochs=100)
            run.record.data["recoveries"]     # what was rolled back, where to, what was changed
    """

    key = "recovery"

    def __init__(
        self,
        *,
        spike: float = 10.0,
        window: int = 100,
        lr_factor: float | None = 0.5,
        reset_moments: bool = False,
        max_attempts: int = 3,
        min_progress: int | None = None,
        keep_every: int | None = None,
        max_share: float = 0.01,
    ) -> None:
        self.spike = number_in("spike", spike, low=1.0)
        self.window = window_size(window)
        self.lr_factor = None if lr_factor is None else number_in("lr_factor", lr_factor, low=0.0, high=1.0)
        if not isinstance(reset_moments, bool):
            raise TypeError(f"Argument reset_moments should be True or False, got {reset_moments!r}.")
        self.reset_moments = reset_moments
        self.max_attempts = positive_int("max_attempts", max_attempts)
        self.min_progress = None if min_progress is None else positive_int("min_progress", min_progress)
        self.keep_every = None if keep_every is None else positive_int("keep_every", keep_every)
        self.max_share = number_in("max_share", max_share, low=0.0, high=1.0)
        self.stop_reason: StopReason | None = None
        self.recoveries: list[dict[str, Any]] = []  # one per rollback (and the one given up on)
        self.attempts = 0  # rollbacks in the current row
        self.cost_s = 0.0  # time spent keeping good copies (this process, this segment)
        self._context: PartContext | None = None
        self._trainer: Engine | None = None
        self._losses: deque[float] = deque(maxlen=self.window)  # the judged steps
        self._recent: list[Any] = []  # TrainLoss's list of each step's loss, drained at each judgement
        self._clean_from = 0  # the iteration the current trouble-free stretch began at
        self._rows: list[dict[str, Any]] = []  # the history rows since the last rollback (the divergence rule's)
        self._good: _Copy | None = None  # the newest good state
        self._anchor: _Copy | None = None  # the state right after the newest best validation
        self._origin: _Copy | None = None  # where the current stretch started (the run's start, or a rollback's)
        self._origin_epoch = 0  # the epoch the stretch started after (0: the run's start)
        self._chosen_every: int | None = None  # keep_every chosen from the cost (None: not yet)
        self._step_clock: tuple[float, int] | None = None  # (time, iteration) at the first check
        self._since = time.perf_counter()  # when this segment's training started
        self._watch: dict[str, float] | None = None  # after a rollback: the objective's level to come back to
        self._sharded = False  # an FSDP2 model: the copies are each rank's shards, not in the checkpoint

    # -- the part protocol ------------------------------------------------------------------------
    def check(self, context: PartContext) -> None:
        if self.lr_factor is not None and context.optimizer is None:
            raise ValueError(
                f"Argument lr_factor={self.lr_factor} of Recovery needs an optimizer in to_save (its rates are "
                f"the ones cut); got to_save keys {sorted(context.to_save_keys)}. Pass lr_factor=None to only "
                "roll back."
            )

    def attach(self, context: PartContext) -> None:
        self.check(context)
        self._context, self._trainer = context, context.trainer
        self._sharded = is_sharded(context.model)
        context.on_check(self._judge)
        context.trainer.add_event_handler(Events.STARTED, self._started)
        context.trainer.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        context.evaluator.add_event_handler(Events.COMPLETED, self._validated)

    def config(self) -> dict[str, Any]:
        return {"spike": self.spike, "window": self.window, "lr_factor": self.lr_factor,
                "reset_moments": self.reset_moments, "max_attempts": self.max_attempts,
                "min_progress": self.min_progress, "keep_every": self.keep_every, "max_share": self.max_share}

    def record(self) -> dict[str, Any]:
        """``run.json``'s ``recoveries``."""
        return {"recoveries": [dict(r) for r in self.recoveries]}

    # -- every step, every check ----------------------------------------------------------------
    def _bind(self) -> None:
        """Read the steps' losses from TrainLoss (which reads each step's loss anyway): no work of its own
        per step."""
        assert self._context is not None
        train_loss = self._context.objects.get("train_loss")
        if train_loss is not None and getattr(train_loss, "recent", None) is None:
            train_loss.recent = self._recent

    def _pending_losses(self) -> list[float | None]:
        """The unjudged steps' losses as numbers (one host read for those on a device; ``None`` for a
        step SkipStep left out)."""
        pending = self._recent
        on_device = [i for i, x in enumerate(pending) if isinstance(x, torch.Tensor) and not _cpu_scalar(x)]
        stacked = set(on_device)
        losses: list[float | None] = [None if x is None else math.nan if i in stacked else float(x)
                                      for i, x in enumerate(pending)]
        if on_device:
            with torch.no_grad():
                read = torch.stack([pending[i].reshape(()).float() for i in on_device]).tolist()
            for i, value in zip(on_device, read, strict=True):
                losses[i] = float(value)
        return losses

    def _judge(self, trainer: Engine) -> None:
        """Judge the steps since the last check; roll back on trouble, else keep a good copy when due."""
        losses = self._pending_losses()
        first = run_iteration(trainer.state) - len(losses) + 1  # every step's, in order, since the last judgement
        self._recent.clear()
        trouble: tuple[int, str, float] | None = None
        ceiling = highest(self._losses)
        for i, loss in enumerate(losses):
            reason = None if loss is None else step_trouble(loss, ceiling, self.spike)  # None: left out by SkipStep
            if reason is not None and loss is not None:
                trouble = (first + i, reason, loss)
                break
        if idist.get_world_size() > 1:  # every rank's verdict: the first trouble on any rank
            verdicts: list[list[Any]] = [v for v in gather_json(None if trouble is None else list(trouble))
                                         if v is not None]
            first_seen = min(verdicts, key=lambda v: int(v[0])) if verdicts else None
            trouble = None if first_seen is None else (int(first_seen[0]), str(first_seen[1]), float(first_seen[2]))
        self._losses.extend(x for x in (losses if trouble is None else losses[:max(0, trouble[0] - first)])
                            if x is not None)
        if trouble is not None:
            # The first rollback of a row goes to the newest good copy; if the trouble comes back, that copy
            # was judged against steps already going wrong: further back, to the state of the newest best
            # validation (or, before the first, to where the run started).
            target = self._good if not self.attempts else (self._anchor or self._origin or self._good)
            self._recover(trainer, *trouble, target=target)
            return
        state = trainer.state
        min_progress = self.min_progress or int(state.epoch_length or 0) or self.window
        if self.attempts and self._watch is None and run_iteration(state) - self._clean_from >= min_progress:
            self.attempts = 0  # progress made: a new row of attempts
        self._keep_if_due(trainer)

    # -- good copies --------------------------------------------------------------------------------
    def _restorable(self, *, validated: bool = False) -> dict[str, Any]:
        """What a rollback restores: all but the trainer's position and what a validation judged (and,
        for a rollback past validations, early stopping's count from the copy too)."""
        assert self._context is not None
        skip = set(_NOT_RESTORED) - ({"early_stopping"} if validated else set())
        return {k: obj for k, obj in self._objects().items() if k not in skip and obj is not self}

    def _objects(self) -> dict[str, Any]:
        """The last checkpoint's objects, with the user's own in place of the checkpoint's views of them (a
        sharded model and its optimizers themselves, not a shards folder's entries or their full state)."""
        assert self._context is not None
        own = self._context.to_save
        return {k: own.get(k, obj) for k, obj in self._context.objects.items()}

    def _copy(self, trainer: Engine) -> _Copy:
        start = time.perf_counter()
        copy = _Copy(run_iteration(trainer.state), trainer.state.epoch, {
            key: _cpu_copy(obj.state_dict()) for key, obj in self._restorable(validated=True).items()})
        self.cost_s += time.perf_counter() - start
        return copy

    def keep(self, trainer: Engine) -> None:
        """Keep a CPU copy of the current state as the newest good one."""
        before = self.cost_s
        self._good = self._copy(trainer)
        cost = self.cost_s - before
        if self._chosen_every is None and self.keep_every is None and self._step_clock is not None:
            t0, i0 = self._step_clock
            steps = run_iteration(trainer.state) - i0
            if steps > 0:  # every so many steps that the copies take at most max_share of the time
                step_s = (time.perf_counter() - t0 - cost) / steps
                steps_per_copy = max(1, math.ceil(cost / (self.max_share * max(step_s, 1e-9))))
                every = 2 ** math.ceil(math.log2(steps_per_copy))  # a power of 2: fewer distinct choices
                # Every rank keeps its copies at the same iterations (a copy gathers the loss sums of
                # every rank): the interval is agreed, the longest any rank asks for.
                self._chosen_every = _agreed(every, "MAX")

    def _keep_if_due(self, trainer: Engine) -> None:
        if self._step_clock is None:
            self._step_clock = (time.perf_counter(), run_iteration(trainer.state))
        every = self.keep_every or self._chosen_every
        good = self._good
        if good is None:  # a resume whose copies were not in the checkpoint (a sharded model): the first here
            self.keep(trainer)
            return
        if every is None and self._step_clock[1] < run_iteration(trainer.state):
            self.keep(trainer)  # the first check after a clocked stretch: the cost sets keep_every
            return
        if every is not None and run_iteration(trainer.state) - good.iteration >= every:
            self.keep(trainer)

    def _started(self, trainer: Engine) -> None:
        self._since = time.perf_counter()
        self._bind()
        for copy in (self._good, self._anchor, self._origin):
            if copy is not None and copy.state is None:  # saved as "the checkpoint's own state": taken anew
                copy.state = self._copy(trainer).state

    def _epoch_started(self, trainer: Engine) -> None:
        if done_in_epoch(trainer.state) != 0:
            return
        # The epoch's sums just cleared, the last epoch's steps were judged: a copy here, if one is due
        # (the first, or keep_every steps after the last; a tiny epoch does not get one each).
        assert self._context is not None
        best = self._context.best
        every, good = self._chosen_every, self._good
        after_best = best.best_iteration == run_iteration(trainer.state)
        due = (self.keep_every is not None or good is None or run_iteration(trainer.state) == 0 or every is None
               or run_iteration(trainer.state) - good.iteration >= every)
        if not due and after_best:  # what a divergence goes back to, if the copies are within budget on every rank
            within = self.cost_s <= self.max_share * (time.perf_counter() - self._since)
            due = bool(_agreed(int(within), "MIN"))
        if not due:
            return
        self.keep(trainer)
        assert self._good is not None
        if run_iteration(trainer.state) == 0:
            self._origin, self._origin_epoch = self._good, 0  # what a run that diverges at once goes back to
        elif after_best:
            self._anchor = self._good
        judged = trainer.state.epoch > self._origin_epoch + _ORIGIN_EPOCHS
        if judged and (best.best_epoch or 0) > self._origin_epoch + 1:
            self._origin = None  # the stretch's first epochs were judged, and a later best is to go back to

    def _validated(self, evaluator: Engine) -> None:
        trainer = self._trainer
        assert trainer is not None and self._context is not None
        history = self._context.objects.get("history")
        if history is not None and getattr(history, "last_row", None):
            self._rows.append({k: v for k, v in history.last_row.items() if k not in TIMING_COLUMNS})
            del self._rows[:-200]
        if trainer.should_terminate:
            return  # early stopping (or another handler) ended the run here
        objective = self._context.objective
        found = diverging(self._rows, objective_column=objective.column, mode=objective.mode)
        if found is not None:
            finding, rise = found
            healthy_until = int(self._rows[rise - 1]["iteration"]) if rise > 0 and self._rows else 0
            targets = [c for c in (self._anchor, self._origin) if c is not None and c.iteration <= healthy_until]
            target = max(targets, key=lambda c: c.iteration) if targets else None
            best = self._context.best
            if target is not None and target.iteration == 0 and best.best_epoch is not None and \
                    (best.best_iteration or 0) <= healthy_until:
                # Never back to the run's start while a validated state is better: the run goes on, and
                # early stopping and restore_best keep that state.
                _say("Recovery: divergence at epoch %d, but no kept copy is as good as the best validation "
                     "(epoch %d); not rolling back to the run's start.", finding.epoch or trainer.state.epoch,
                     best.best_epoch)
                self._rows = []
                return
            value = finding.evidence.get("value", finding.evidence.get("spike", math.nan))
            self._recover(trainer, int(finding.iteration or run_iteration(trainer.state)), "divergence",
                          float(value) if isinstance(value, (int, float)) else math.nan, target=target,
                          validated=True, epoch=finding.epoch, level_row=rise - 1 if rise > 0 else len(self._rows))
        elif self._watch is not None and not is_mid_epoch(trainer.state):
            self._came_back(trainer)
        elif is_mid_epoch(trainer.state) and not self._recent:
            self.keep(trainer)  # a validation within the epoch: no rollback goes back past its row

    # -- the rollback ---------------------------------------------------------------------------
    def _recover(self, trainer: Engine, iteration: int, reason: str, loss: float, *, target: _Copy | None,
                 validated: bool = False, epoch: int | None = None, level_row: int = -1) -> None:
        state = trainer.state
        entry: dict[str, Any] = {
            "iteration": iteration, "epoch": state.epoch if epoch is None else epoch, "reason": reason,
            "loss": loss if math.isfinite(loss) else str(loss), "detected_at": run_iteration(state),
            "attempt": self.attempts + 1,
        }
        if target is None or target.state is None or self.attempts >= self.max_attempts:
            entry.update(rolled_back_to=None, gave_up=True)
            self.recoveries.append(entry)
            why = "no good state before it" if target is None else f"after {self.attempts} rollbacks in a row"
            _say("Recovery: %s at iteration %d (loss %s), %s; giving up, the run stops.",
                 reason.replace("_", " "), iteration, _loss_text(loss), why)
            if reason != "nonfinite_loss":  # a non-finite loss is stopped by monitor's own check, right after
                # (out of attempts: a stop of Recovery's own; the best weights are restored at the end)
                self.stop_reason = StopReason.RECOVERY_FAILED if self.attempts else StopReason.DIVERGED
                trainer.terminate()
            return
        for key, obj in self._restorable(validated=validated).items():
            if key in target.state:
                obj.load_state_dict(_restored(target.state[key]))
        changes: dict[str, Any] = {}
        if self.lr_factor is not None:  # the n-th rollback in a row cuts by lr_factor ** n: 0.5, 0.25, 0.125
            changes["lr"] = self._cut_rates(trainer, self.lr_factor ** (self.attempts + 1))
        if self.reset_moments:
            for optimizer in self._optimizers():
                optimizer.state.clear()
            changes["moments"] = "reset"
        self.attempts += 1
        level = self._last_objective(level_row)
        if level is not None and math.isfinite(level):  # the objective must come back to where it was before
            self._watch = {"level": level, "left": RECOVERY_VALIDATIONS}
        entry.update(rolled_back_to=target.iteration, rolled_back_to_epoch=target.epoch,
                     skipped=[target.iteration + 1, run_iteration(state)], changes=changes)
        self.recoveries.append(entry)
        self._clean_from = run_iteration(state)
        self._recent.clear()
        _say("Recovery: %s at iteration %d (loss %s): rolled back to iteration %d, skipping the %d batches "
             "after it%s (attempt %d of %d).", reason.replace("_", " "), iteration, _loss_text(loss),
             target.iteration, run_iteration(state) - target.iteration,
             "" if "lr" not in changes else f"; lr {_rates(changes['lr'][0])} -> {_rates(changes['lr'][1])}",
             self.attempts, self.max_attempts)
        # The restored state with its new rates is the newest good one, and stands in for the copy it came
        # from: the next rollback to it goes on from the lower rate.
        self.keep(trainer)
        assert self._good is not None
        stand_in = _Copy(target.iteration, target.epoch, self._good.state)  # its weights are still target's
        if target is self._anchor:
            self._anchor = stand_in
        if target is self._origin or validated:
            self._origin, self._origin_epoch = stand_in, state.epoch  # a new stretch starts here
        if validated:
            self._rows = []  # the divergence is judged anew from here

    def _last_objective(self, row: int) -> float | None:
        """The objective of the last validation before the trouble (``self._rows[row]``; before any
        rollback of this row of attempts)."""
        assert self._context is not None
        if self._watch is not None:
            return float(self._watch["level"])  # a further attempt: still the level from before the first
        column = self._context.objective.column
        history = self._context.objects.get("history")
        rows = self._rows or [getattr(history, "last_row", None) or {}]
        value = rows[row].get(column) if -len(rows) <= row < len(rows) else None
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    def _came_back(self, trainer: Engine) -> None:
        """After a rollback: the objective back to its level from before the trouble within
        RECOVERY_VALIDATIONS validations, or another attempt (from the state of the best validation, at a
        further cut); out of attempts, the run stops (``recovery_failed``)."""
        assert self._context is not None and self._watch is not None
        objective = self._context.objective
        value = objective.value(self._context.evaluator.state.metrics)
        level = float(self._watch["level"])
        if math.isfinite(value) and as_good(value, level, objective.mode):
            self._watch = None
            return
        self._watch["left"] = int(self._watch["left"]) - 1
        if self._watch["left"] > 0:
            return
        self._watch["left"] = RECOVERY_VALIDATIONS
        _say("Recovery: %s is %s after %d validations, not back to %s from before the trouble.", objective.column,
             _loss_text(value), RECOVERY_VALIDATIONS, _loss_text(level))
        # back to the state of the best validation; never to the run's start while a validated best exists
        # (then, with no such copy kept, Recovery gives up: the run stops with the best weights)
        target = self._anchor or self._origin
        if target is not None and target.iteration == 0 and self._context.best.best_epoch is not None:
            target = None
        self._recover(trainer, run_iteration(trainer.state), "no_comeback", value, target=target, validated=True)

    def _optimizers(self) -> list[torch.optim.Optimizer]:
        assert self._context is not None
        return [o for o in self._objects().values() if isinstance(o, torch.optim.Optimizer)]

    def _cut_rates(self, trainer: Engine, factor: float) -> list[list[float]]:
        """Every param group's rates and every schedule's times ``factor``; the first optimizer's rates
        before and after."""
        optimizers = self._optimizers()
        before = [g["lr"] for g in optimizers[0].param_groups] if optimizers else []
        for optimizer in optimizers:
            for group in optimizer.param_groups:
                for name in _RATE_KEYS:
                    if isinstance(group.get(name), (int, float)):
                        group[name] = group[name] * factor
        assert self._context is not None
        handlers = list(attached_handlers(trainer))  # a schedule attached with an event filter included
        seen: list[Any] = []
        for obj in [*self._context.objects.values(), *handlers]:  # to_save's, and those on the trainer
            for schedule in _schedules(obj):
                if all(schedule is not s for s in seen):
                    seen.append(schedule)
                    _scale_schedule(schedule, factor)
        after = [g["lr"] for g in optimizers[0].param_groups] if optimizers else []
        return [before, after]

    # -- checkpoint --------------------------------------------------------------------------------
    def state_dict(self) -> OrderedDict[str, Any]:
        trainer = self._trainer
        here = None if trainer is None else run_iteration(trainer.state)
        own = {"losses": list(self._losses), "pending": self._pending_losses()}
        copies: list[_Copy] = []
        for copy in (self._good, self._anchor, self._origin):
            if copy is not None and all(copy is not c for c in copies):
                copies.append(copy)

        def index(copy: _Copy | None) -> int | None:
            return None if copy is None else next(i for i, c in enumerate(copies) if c is copy)

        def saved(copy: _Copy) -> dict[str, Any]:
            if copy is self._good and copy.iteration == here:  # this checkpoint's own state: a resume takes it anew
                return {"state": None}
            if self._sharded:  # each rank's shards: rank 0's file would keep only its own
                return {"state": None, "kept": False}
            return {"state": copy.state}

        state: OrderedDict[str, Any] = OrderedDict(
            attempts=self.attempts, recoveries=[dict(r) for r in self.recoveries],
            stop_reason=reason_value(self.stop_reason), clean_from=self._clean_from, chosen_every=self._chosen_every,
            rows=[dict(r) for r in self._rows],
            copies=[{"iteration": c.iteration, "epoch": c.epoch, **saved(c)} for c in copies],
            good=index(self._good), anchor=index(self._anchor), origin=index(self._origin),
            origin_epoch=self._origin_epoch, watch=None if self._watch is None else dict(self._watch), **own,
        )
        if idist.get_world_size() > 1:  # each rank judges its own share's losses
            state["ranks"] = gather_json(own)
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        ranks = state_dict.get("ranks")
        own = ranks[idist.get_rank()] if ranks is not None and len(ranks) == idist.get_world_size() else state_dict
        self.attempts = int(state_dict["attempts"])
        self.recoveries = [dict(r) for r in state_dict["recoveries"]]
        self.stop_reason = parse_reason(state_dict["stop_reason"])
        self._clean_from = int(state_dict["clean_from"])
        self._chosen_every = state_dict["chosen_every"]
        self._rows = [dict(r) for r in state_dict["rows"]]
        copies = [_Copy(int(c["iteration"]), int(c["epoch"]), c["state"]) if c.get("kept", True) else None
                  for c in state_dict["copies"]]

        def pick(i: int | None) -> _Copy | None:
            return None if i is None else copies[i]

        self._good, self._anchor, self._origin = (pick(state_dict[k]) for k in ("good", "anchor", "origin"))
        dropped = sorted({int(c["iteration"]) for c in state_dict["copies"] if not c.get("kept", True)})
        if dropped and idist.get_rank() == 0:
            which = f"copy of iteration {dropped[0]} was" if len(dropped) == 1 else \
                f"copies of iterations {', '.join(map(str, dropped))} were"
            first = "this resumed state" if self._good is not None else "at the next check of the loss"
            logger.info("Recovery: the good %s each rank's shards of the sharded model, not kept in the checkpoint; "
                        "a rollback after this resume goes back to copies taken from here on (the first: %s).",
                        which, first)
        self._origin_epoch = int(state_dict["origin_epoch"])
        watch = state_dict.get("watch")  # (None in a checkpoint of a version without it)
        self._watch = None if watch is None else {k: float(v) for k, v in watch.items()}
        self._losses = deque((float(x) for x in own["losses"]), maxlen=self.window)
        # the unjudged steps' losses, judged with the ones TrainLoss appends from here
        self._recent[:] = [None if x is None else float(x) for x in own["pending"]]


@dataclass
class _Copy:
    """A good state: the iteration and epoch it was taken at, and each object's state (CPU tensors);
    ``state`` is ``None`` right after a resume from a checkpoint of that very state, until training starts."""

    iteration: int
    epoch: int
    state: dict[str, Any] | None


def _agreed(value: int, op: str) -> int:
    """``value``, made the same on every rank (``op``: "MAX" or "MIN" of the ranks' values)."""
    if idist.get_world_size() == 1:
        return value
    return int(idist.all_reduce(value, op=op))


def _say(message: str, *args: Any) -> None:
    """A WARNING from rank 0 (every rank rolled back alike)."""
    if idist.get_rank() == 0:
        logger.warning(message, *args)


def _loss_text(loss: float) -> str:
    return f"{loss:.4g}" if math.isfinite(loss) else str(loss)


def _rates(rates: list[float]) -> str:
    return ", ".join(f"{r:.4g}" for r in rates)
