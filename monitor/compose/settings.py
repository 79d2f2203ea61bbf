"""The settings of attach_monitoring, one small validated object per concern.

Each object checks its own arguments when it is made (the messages name the argument, what is
accepted and the value), so a bad value fails at the line that wrote it, before any folder exists.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from monitor.core._checks import optional_number, positive_int
from monitor.handlers.cadence import CheckpointCadence

__all__ = ["EarlyStopping", "Checkpoints", "Console", "Record", "LEGACY_KEYWORDS"]


@dataclass(frozen=True)
class EarlyStopping:
    """When training stops before ``max_epochs``, judged by the run's :class:`~monitor.Objective`.

    Args:
        patience: validations without improvement before stopping (>= 1), or ``None`` to stop only
            at ``target`` or ``divergence``. Default 10.
        baseline: a value the metric must beat before anything counts as an improvement (for the
            best checkpoints too). Default None.
        target: stop as soon as the metric is at least this good. Default None.
        divergence: stop as soon as the metric is worse than this. Default None.

    Examples:
        .. code-block:: python

            attach_monitoring(..., early_stopping=EarlyStopping(patience=10, baseline=0.7))
            attach_monitoring(..., early_stopping=None)      # train to max_epochs
    """

    patience: int | None = 10
    baseline: float | None = None
    target: float | None = None
    divergence: float | None = None

    def __post_init__(self) -> None:
        positive_int("patience", self.patience, none_ok=True)
        for name in ("baseline", "target", "divergence"):
            optional_number(name, getattr(self, name))

    def config(self) -> dict[str, Any]:
        """What ``run.json`` records of it."""
        return {"patience": self.patience, "baseline": self.baseline, "target": self.target,
                "divergence": self.divergence}


@dataclass(frozen=True)
class Checkpoints:
    """The best checkpoints kept and when the last (resume) checkpoint is written.

    Args:
        n_saved: best checkpoints kept. Default 3.
        every: when the last checkpoint is written: an Ignite event with its filters
            (``Events.ITERATION_COMPLETED(every=500)``), a wall-clock interval (``timedelta`` or
            seconds), or ``None`` (default): a budget, at each validation and within long epochs every
            10 minutes of training, but never more than 1% of the time spent saving (an expensive save
            stretches the interval, said once at INFO). A run also saves when it ends, on
            SIGTERM/SIGINT and at ``max_time``; a resume continues exactly from the newest one,
            mid-epoch included.
        restore_best: load the best weights into the model when training ends. Default True.
        background_writes: write checkpoints and ``run.json`` on a background thread, in order
            (default); training then waits only for a copy of the state (a sharded model's shards:
            ``torch.distributed.checkpoint.async_save``, at most one save in flight).
        shards: for a model sharded with FSDP2, how the checkpoints keep it: ``"dcp"`` (default),
            folders of PyTorch's distributed checkpoint in which each process writes its own shards
            (the last checkpoint's model and optimizers, each best checkpoint's model: no process
            holds the full state; ``run_dir`` must be on storage every process sees; ``monitor
            export`` makes one plain ``state_dict`` of the best), or ``"full"``, the full state
            gathered on rank 0 and written there (it must fit rank 0's memory).

    Examples:
        .. code-block:: python

            attach_monitoring(..., checkpoints=Checkpoints(n_saved=1, every=timedelta(minutes=5)))
    """

    n_saved: int = 3
    every: Any = None
    restore_best: bool = True
    background_writes: bool = True
    shards: str = "dcp"

    def __post_init__(self) -> None:
        positive_int("n_saved", self.n_saved)
        self.cadence()  # checks every
        if self.shards not in ("dcp", "full"):
            raise ValueError(f"Argument shards should be 'dcp' or 'full', got {self.shards!r}.")
        for name in ("restore_best", "background_writes"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"Argument {name} should be True or False, got {getattr(self, name)!r}.")

    def cadence(self, *, validate_on: Any = None) -> CheckpointCadence:
        """A new :class:`~monitor.handlers.cadence.CheckpointCadence` for ``every`` (the budget saves
        after each ``validate_on``; the ranks agree at the cadence of the step it joins)."""
        return CheckpointCadence(self.every, validate_on=validate_on)


@dataclass(frozen=True)
class Console:
    """What the terminal shows, and how often the training loss is looked at.

    Args:
        log_every: iterations between training-loss points (TensorBoard ``train/loss``, the NaN
            check, and under idist the agreement on a stop request). Default 10. The progress bar
            redraws by time (at most every 0.5 s) and only on a terminal or in a notebook.
        tqdm_kwargs: passed to the progress bar (``file=``, ``disable=``...). Default None.
        quiet: ``True`` turns monitor's console off: no progress bar, and no console handler of its
            own. By default (``False``), when the process has configured no logging, monitor's INFO
            lines (the table of validations, the stop line) and warnings go to ``sys.stderr`` and
            Ignite's "Engine run" lines stay quiet; configured logging always wins. Either way the
            lines are logged (logger ``monitor``) for handlers the user sets up.

    Examples:
        .. code-block:: python

            attach_monitoring(..., console=Console(log_every=50, tqdm_kwargs={"file": sys.stderr}))
            attach_monitoring(..., console=Console(quiet=True))     # nothing on the console
    """

    log_every: int = 10
    tqdm_kwargs: Mapping[str, Any] | None = None
    quiet: bool = False

    def __post_init__(self) -> None:
        positive_int("log_every", self.log_every)
        if not isinstance(self.quiet, bool):
            raise TypeError(f"Argument quiet should be True or False, got {self.quiet!r}.")
        if self.tqdm_kwargs is not None and not isinstance(self.tqdm_kwargs, Mapping):
            raise TypeError(f"Argument tqdm_kwargs should be a mapping or None, got {self.tqdm_kwargs!r}.")


@dataclass(frozen=True)
class Record:
    """What ``run.json`` (and TensorBoard's HParams) records about the run beyond its results.

    Args:
        hparams: the hyper-parameters, as plain values. Default none.
        seed: the seed the script used (the library never seeds). Default None.

    Examples:
        .. code-block:: python

            attach_monitoring(..., record=Record(hparams={"lr": 0.01, "hidden": 100}, seed=0))
    """

    hparams: Mapping[str, Any] = field(default_factory=dict)
    seed: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.hparams, Mapping):
            raise TypeError(f"Argument hparams should be a mapping of names to values, got {self.hparams!r}.")
        for name, value in self.hparams.items():
            try:
                json.dumps(value)
            except (TypeError, ValueError):
                raise TypeError(
                    f"Argument hparams should hold plain values (numbers, strings, lists; run.json is JSON), got "
                    f"{name!r}: {value!r} ({type(value).__name__}); pass e.g. float(...) or str(...)."
                ) from None
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise TypeError(f"Argument seed should be an int or None, got {self.seed!r}.")


# The flat keywords attach_monitoring had before its settings objects, and where each one went.
LEGACY_KEYWORDS = {
    "patience": "early_stopping=EarlyStopping(patience=...)",
    "baseline": "early_stopping=EarlyStopping(baseline=...)",
    "target": "early_stopping=EarlyStopping(target=...)",
    "divergence": "early_stopping=EarlyStopping(divergence=...)",
    "n_saved": "checkpoints=Checkpoints(n_saved=...)",
    "restore_best": "checkpoints=Checkpoints(restore_best=...)",
    "background_writes": "checkpoints=Checkpoints(background_writes=...)",
    "checkpoint_every": "checkpoints=Checkpoints(every=...)",
    "log_every": "console=Console(log_every=...)",
    "tqdm_kwargs": "console=Console(tqdm_kwargs=...)",
    "hparams": "record=Record(hparams=...)",
    "seed": "record=Record(seed=...)",
    "lr_on_plateau": "parts=[LROnPlateau(...)]",
}
