"""GradNorm: the gradients' norm after each step, as columns of the history (a part: off unless asked for)."""
from __future__ import annotations

from collections.abc import Mapping

import torch
from ignite.engine import Engine, Events

from monitor.parts.base import Part, PartContext

__all__ = ["GradNorm", "attach_grad_norm"]


class GradNorm(Part):
    """A part that adds ``"grad_norm"`` (the L2 norm of all of the model's gradients after the step)
    and ``"grad_norm_first"`` (that of the first parameter tensor, the input layer's: where gradients
    vanish first) to the trainer's output mapping, so that they become the ``train_grad_norm`` and
    ``train_grad_norm_first`` columns (their epoch means), and ``train_grad_norm_max`` (the epoch's
    highest step: where a norm blows up for a few steps).

    Computed on the device (``torch.linalg.vector_norm`` of the per-tensor norms), with no host sync;
    it costs one pass over the gradients per iteration, so it is off unless asked for. Ignite's
    ``create_supervised_trainer`` (and ``build_trainer``) clears gradients at the start of a step, so
    after the step they are this step's.

    Args:
        model: whose gradients; default ``to_save["model"]`` (as a part of attach_monitoring).

    Examples:
        .. code-block:: python

            run = attach_monitoring(..., parts=[GradNorm()])  # history gets train_grad_norm
    """

    key = "grad_norm"

    def __init__(self, model: torch.nn.Module | None = None) -> None:
        if model is not None and not isinstance(model, torch.nn.Module):
            raise TypeError(f"Argument model should be a torch.nn.Module, got {type(model).__name__}.")
        self.model = model
        self._parameters: list[torch.nn.Parameter] = []
        if model is not None:
            self.bind(model)

    def attach(self, context: PartContext) -> None:
        self.bind(self.model or context.model)
        context.on_step(self)

    def bind(self, model: torch.nn.Module) -> GradNorm:
        self._parameters = [p for p in model.parameters() if p.requires_grad]
        return self

    def __call__(self, engine: Engine) -> None:
        grads = [p.grad.detach() for p in self._parameters if p.grad is not None]
        if not grads or not isinstance(engine.state.output, Mapping):
            return
        norms = torch.stack([torch.linalg.vector_norm(g) for g in grads])
        engine.state.output = {**engine.state.output, "grad_norm": torch.linalg.vector_norm(norms),
                               "grad_norm_first": norms[0]}



def attach_grad_norm(trainer: Engine, model: torch.nn.Module) -> GradNorm:
    """:class:`~monitor.GradNorm` on ``trainer``'s ``ITERATION_COMPLETED``, for engines wired by hand: attach it
    before the handlers that read the output (as a part of attach_monitoring it is placed right).

    Examples:
        .. code-block:: python

            attach_grad_norm(trainer, model)          # on the *trainer*
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"Argument model should be a torch.nn.Module, got {type(model).__name__}.")
    norm = GradNorm(model)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, norm)
    return norm
