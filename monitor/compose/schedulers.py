"""Schedulers monitor can see, so that none restarts silently at a resume.

- Ignite's parameter schedulers (``LRScheduler``, ``PiecewiseLinear``, ``ConcatScheduler``,
  ``ParamGroupScheduler``, ``ReduceLROnPlateauScheduler``...) attached to the trainer or the evaluator
  are found among the engines' handlers and kept in the last checkpoint under keys of their own
  (``param_scheduler``, ``param_scheduler_2``... in the order they were attached), unless ``to_save``
  holds them already.
- torch's own schedulers (``torch.optim.lr_scheduler.LRScheduler`` subclasses) leave a mark on the
  optimizer they step (torch wraps its ``step``); on an optimizer of ``to_save`` that mark makes
  attach look for them, and one that ``to_save`` does not hold (directly, or inside a scheduler it
  holds) is refused with the line to add: which object a script steps, and under which key it
  should be restored, only the user knows. torch's ``ReduceLROnPlateau`` leaves no such mark: it is
  not found, and must be put in ``to_save`` (docs/usage.md says so).
"""
from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
from ignite.engine import Engine
from ignite.handlers.param_scheduler import BaseParamScheduler, ParamGroupScheduler

from monitor.runtime.attached import attached_handlers

__all__ = ["engine_schedulers", "check_torch_schedulers", "KEY"]

KEY = "param_scheduler"


def engine_schedulers(engines: Iterable[Engine], taken: Iterable[Any], keys: Iterable[str]) -> dict[str, Any]:
    """Ignite parameter schedulers attached to ``engines`` and not in ``taken``, under new keys (not in ``keys``).

    Examples:
        .. code-block:: python

            engine_schedulers([trainer, evaluator], to_save.values(), to_save)   # {"param_scheduler": lr_handler}
    """
    seen = {id(obj) for obj in taken}
    used = set(keys)
    found: dict[str, Any] = {}
    for engine in engines:
        for handler in attached_handlers(engine):
            if isinstance(handler, (BaseParamScheduler, ParamGroupScheduler)) and id(handler) not in seen:
                seen.add(id(handler))
                n = 1
                key = KEY
                while key in used:
                    n += 1
                    key = f"{KEY}_{n}"
                used.add(key)
                found[key] = handler
    return found


def _contained(obj: Any) -> Iterator[Any]:
    """``obj`` and the schedulers it holds (SequentialLR's, ChainedScheduler's, Ignite's wrappers')."""
    yield obj
    for name in ("_schedulers", "schedulers", "lr_scheduler"):
        inner = getattr(obj, name, None)
        for child in inner if isinstance(inner, (list, tuple)) else [inner] if inner is not None else []:
            yield from _contained(child)


def check_torch_schedulers(to_save: Mapping[str, Any], kept: Iterable[Any]) -> None:
    """Refuse a torch scheduler stepping an optimizer of ``to_save`` that nothing in ``kept`` holds.

    Raises:
        ValueError: names each such scheduler and the line to add.
    """
    optimizers = [obj for obj in to_save.values() if isinstance(obj, torch.optim.Optimizer)]
    marked = [o for o in optimizers if hasattr(o.step, "_wrapped_by_lr_sched")]  # torch's mark: a scheduler exists
    if not marked:
        return
    covered = {id(inner) for obj in kept for inner in _contained(obj)}
    missing = [obj for obj in gc.get_objects()
               if issubclass(type(obj), torch.optim.lr_scheduler.LRScheduler) and id(obj) not in covered
               and any(getattr(obj, "optimizer", None) is o for o in marked)]
    if missing:
        names = ", ".join(sorted({type(obj).__name__ for obj in missing}))
        key = next(k for k, o in to_save.items() if any(getattr(s, "optimizer", None) is o for s in missing))
        raise ValueError(
            f"Argument to_save should hold the scheduler that steps to_save[{key!r}]: found a {names} that it "
            "lacks, so a resume would restart its schedule. Add it, e.g. to_save={..., 'scheduler': scheduler} "
            "(or attach it as an Ignite LRScheduler handler on the trainer before attach_monitoring: monitor keeps "
            "those by itself)."
        )
