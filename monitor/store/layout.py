"""The run directory's layout: every name in it, and the parser of checkpoint filenames.

The layout is a contract (``reports/README.md``): ``monitor report``, the review API and users' own
scripts read it. This module is its one owner; everyone else asks it. Pure Python, no torch.

Examples:
    >>> RunPaths("reports/mlp").history.as_posix()
    'reports/mlp/history.csv'
    >>> parse_checkpoint_name("best_epoch=7_val_loss=0.3812.pt")
    CheckpointName(kind='best', epoch=7, score_name='val_loss', score=0.3812, iteration=None)
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "RECORD_NAME",
    "HISTORY_NAME",
    "CHECKPOINTS_DIR",
    "TENSORBOARD_DIR",
    "MANIFEST_NAME",
    "LOCK_NAME",
    "TEMP_PREFIX",
    "DAMAGED_SUFFIX",
    "BEST_PREFIX",
    "LAST_PREFIX",
    "BEST_PATTERN",
    "BEST_WRITE_PATTERN",
    "best_named",
    "score_text",
    "LAST_PATTERN",
    "CheckpointName",
    "RunPaths",
    "parse_checkpoint_name",
    "best_step",
    "checkpoint_files",
    "last_checkpoints",
    "SHARDS_SUFFIX",
    "shards_of",
    "checkpoint_of",
]

RECORD_NAME = "run.json"
HISTORY_NAME = "history.csv"
CHECKPOINTS_DIR = "checkpoints"
TENSORBOARD_DIR = "tb"
MANIFEST_NAME = "manifest.json"  # inside CHECKPOINTS_DIR
LOCK_NAME = ".lock"
TEMP_PREFIX = ".tmp-"  # a write in progress; removed at the next start if a kill left it
DAMAGED_SUFFIX = ".damaged"  # a checkpoint a resume found damaged, kept for inspection
# A sharded model's part of a last checkpoint: a folder of torch.distributed.checkpoint (each rank's
# shards, its metadata, a manifest), named as the ``.pt`` file that refers to it and commits it.
SHARDS_SUFFIX = ".shards"

BEST_PREFIX = "best"
LAST_PREFIX = "last"
# Ignite Checkpoint filename patterns; the parser below is derived from them, so they cannot disagree.
# ``global_step`` is the epoch, or ``<epoch>_iteration=<iteration>`` (see ``best_step``) for best files
# of runs that validate more than once per epoch.
BEST_PATTERN = "{filename_prefix}_epoch={global_step}_{score_name}={score}.{ext}"
LAST_PATTERN = "{filename_prefix}_epoch={global_step}.{ext}"
_EXT = "pt"


def _pattern_regex(pattern: str, prefix: str) -> re.Pattern[str]:
    fields = {
        "filename_prefix": re.escape(prefix),
        "global_step": r"(?P<epoch>\d+)(?:_iteration=(?P<iteration>\d+))?",
        "score_name": r"(?P<score_name>[^=]+)",
        "score": r"(?P<score>[^=]+?)",
        "ext": re.escape(_EXT),
    }
    parts = re.split(r"\{(\w+)\}", pattern)  # literal, field, literal, field, ...
    regex = "".join(re.escape(p) if i % 2 == 0 else fields[p] for i, p in enumerate(parts))
    return re.compile(f"^{regex}$")


_PARSERS = {
    BEST_PREFIX: _pattern_regex(BEST_PATTERN, BEST_PREFIX),
    LAST_PREFIX: _pattern_regex(LAST_PATTERN, LAST_PREFIX),
}


# What Ignite's Checkpoint is given to write a best file: its ``global_step`` carries the whole name
# after ``epoch=`` (``best_named``), since Ignite would write the score it ranks by (the negated value of
# a "min" objective, to 4 decimals) where the name should show the value itself.
BEST_WRITE_PATTERN = "{filename_prefix}_epoch={global_step}.{ext}"


def score_text(value: float) -> str:
    """A value as a filename shows it: 4 decimals, or 4 significant digits where those would hide it
    (``0.4735``, ``-2.3564``, ``1.2346e-05``)."""
    if value != 0 and not 1e-3 <= abs(value) < 1e6:
        return f"{value:.4e}"
    return f"{value:.4f}"


def best_named(epoch: int, iteration: int | None, column: str, value: float) -> str:
    """The ``global_step`` given to :data:`BEST_WRITE_PATTERN`, so that the file is named as
    :data:`BEST_PATTERN` reads: ``best_epoch=27_val_nll=-2.3564.pt``."""
    return f"{best_step(epoch, iteration)}_{column}={score_text(value)}"


def best_step(epoch: int, iteration: int | None = None) -> str:
    """The ``global_step`` of a best file's name: ``"7"``, or ``"7_iteration=450"`` when validation runs
    more than once per epoch (two bests in one epoch whose scores round alike keep distinct files)."""
    return str(epoch) if iteration is None else f"{epoch}_iteration={iteration}"


@dataclass(frozen=True)
class CheckpointName:
    """What a checkpoint's filename says: ``kind`` (``"best"`` or ``"last"``), ``epoch``, for a best
    file the ``score_name`` and ``score``, and ``iteration`` where the name carries it."""

    kind: str
    epoch: int
    score_name: str | None = None
    score: float | None = None
    iteration: int | None = None


def parse_checkpoint_name(name: str) -> CheckpointName | None:
    """Parse ``best_epoch=7_val_loss=0.3812.pt`` (or, from earlier versions, ``best_epoch=7_neg_val_loss=-0.3812.pt``)
    or ``last_epoch=7.pt``; ``None`` for other names."""
    for kind, regex in _PARSERS.items():
        match = regex.match(name)
        if match is None:
            continue
        groups = match.groupdict()
        score = groups.get("score")
        try:
            value = None if score is None else float(score)
        except ValueError:
            return None
        iteration = groups.get("iteration")
        return CheckpointName(
            kind, int(groups["epoch"]), groups.get("score_name"), value, None if iteration is None else int(iteration)
        )
    return None


def checkpoint_files(folder: str | Path, kind: str) -> list[Path]:
    """The ``kind`` (``"best"``/``"last"``) checkpoints in ``folder``, in no particular order."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        parsed = parse_checkpoint_name(path.name)
        if parsed is not None and parsed.kind == kind:
            found.append(path)
    return found


def last_checkpoints(folder: str | Path) -> list[Path]:
    """Last checkpoints in ``folder``, the most trained first: by epoch, then by iteration within it
    (``last_epoch=4_iteration=170.pt`` is within epoch 4, before ``last_epoch=4.pt``, its end)."""

    def progress(path: Path) -> tuple[int, float]:
        name = parse_checkpoint_name(path.name)
        assert name is not None
        return name.epoch, math.inf if name.iteration is None else name.iteration

    return sorted(checkpoint_files(folder, LAST_PREFIX), key=progress, reverse=True)


class RunPaths:
    """Where each part of a run lives inside ``run_dir`` (see ``reports/README.md``).

    Examples:
        >>> paths = RunPaths("reports/mlp")
        >>> [p.as_posix() for p in (paths.record, paths.checkpoints, paths.tensorboard)]
        ['reports/mlp/run.json', 'reports/mlp/checkpoints', 'reports/mlp/tb']
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.root = Path(run_dir)
        self.record = self.root / RECORD_NAME
        self.history = self.root / HISTORY_NAME
        self.checkpoints = self.root / CHECKPOINTS_DIR
        self.tensorboard = self.root / TENSORBOARD_DIR
        self.lock = self.root / LOCK_NAME
        self.manifest = self.checkpoints / MANIFEST_NAME

    def holds_a_run(self) -> bool:
        """Whether anything a run writes is there already."""
        return self.record.exists() or self.history.exists() or self.checkpoints.exists()


def shards_of(checkpoint_name: str) -> str:
    """The name of the shards folder of the last checkpoint ``checkpoint_name``.

    Examples:
        >>> shards_of("last_epoch=2_iteration=100.pt")
        'last_epoch=2_iteration=100.shards'
    """
    return checkpoint_name.removesuffix("." + _EXT) + SHARDS_SUFFIX


def checkpoint_of(shards_name: str) -> str:
    """The name of the last checkpoint that refers to (and commits) the shards folder ``shards_name``.

    Examples:
        >>> checkpoint_of("last_epoch=2_iteration=100.shards")
        'last_epoch=2_iteration=100.pt'
    """
    return shards_name.removesuffix(SHARDS_SUFFIX) + "." + _EXT
