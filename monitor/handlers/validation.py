"""attach_validation: run the evaluator on the validation data from a trainer event."""
from __future__ import annotations

from collections.abc import Iterable, Sized
from typing import Any

from ignite.engine import Engine, Events

__all__ = ["attach_validation"]


def attach_validation(
    trainer: Engine, evaluator: Engine, val_loader: Iterable[Any], *, event: Any = Events.EPOCH_COMPLETED
) -> None:
    """Run ``evaluator`` on ``val_loader`` on ``trainer`` ``event`` (default: every epoch).

    ``event`` may carry an Ignite filter, e.g. ``Events.EPOCH_COMPLETED(every=5)``.

    Raises:
        TypeError: the engines are not Engines, or ``val_loader`` is not iterable.
        ValueError: the two engines are one, or ``val_loader`` is empty (where its length is known).
    """
    if not isinstance(trainer, Engine) or not isinstance(evaluator, Engine):
        raise TypeError(
            f"Arguments trainer and evaluator should be ignite Engines, got {type(trainer).__name__} "
            f"and {type(evaluator).__name__}."
        )
    if trainer is evaluator:
        raise ValueError("Arguments trainer and evaluator should be two different Engines, got the same one twice.")
    if val_loader is None or not hasattr(val_loader, "__iter__"):
        raise TypeError(f"Argument val_loader should be an iterable of batches, got {val_loader!r}.")
    # Ignite says "Input data has zero size" only when the evaluator first runs, after a training epoch.
    try:
        size = len(val_loader) if isinstance(val_loader, Sized) else None
    except TypeError:  # e.g. a DataLoader over an IterableDataset without __len__
        size = None
    if size == 0:
        raise ValueError(
            f"Argument val_loader should yield at least one batch, got an empty {type(val_loader).__name__} (len 0)."
        )
    trainer.add_event_handler(event, lambda _: evaluator.run(val_loader))
