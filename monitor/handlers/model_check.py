"""Whether the model monitor saves is the model the trainer trains."""
from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from ignite.engine import Engine, Events

__all__ = ["check_model_is_stepped", "attach_model_watch"]

logger = logging.getLogger(__name__)


def check_model_is_stepped(to_save: Mapping[str, Any]) -> None:
    """Refuse a ``to_save["model"]`` that no optimizer of ``to_save`` steps: every checkpoint would hold
    an untrained copy.

    Raises:
        ValueError: names the optimizer, and what to pass.
    """
    model = to_save["model"]
    mine = {id(p) for p in model.parameters()}
    for key, obj in to_save.items():
        if isinstance(obj, torch.optim.Optimizer) and mine:
            stepped = {id(p) for group in obj.param_groups for p in group["params"]}
            if not mine & stepped:
                raise ValueError(
                    f"Argument to_save['model'] should be the model to_save[{key!r}] steps, got a "
                    f"{type(model).__name__} none of whose {len(mine)} parameters it holds: every checkpoint would "
                    "keep an untrained model. Pass the model the trainer trains.")


def attach_model_watch(trainer: Engine, model: torch.nn.Module) -> None:
    """At the end of the first epoch of each start, warn if none of ``model``'s parameters changed (a
    trainer of the user's own that trains another model). Reads each parameter's version counter: no copy."""
    versions: dict[str, list[int]] = {}

    def started(_: Engine) -> None:
        versions["start"] = [p._version for p in model.parameters()]

    def epoch_completed(engine: Engine) -> None:
        start = versions.pop("start", None)
        if start is not None and start == [p._version for p in model.parameters()] and start:
            logger.warning(
                "None of the parameters of to_save['model'] (%s) changed in epoch %d: is it the model the trainer "
                "trains? Every checkpoint holds this model.", type(model).__name__, engine.state.epoch)

    trainer.add_event_handler(Events.STARTED, started)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, epoch_completed)
