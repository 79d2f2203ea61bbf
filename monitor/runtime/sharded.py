"""Models sharded with FSDP2 (``torch.distributed.fsdp.fully_shard``) in monitor's checkpoints.

A sharded model's ``state_dict()`` holds each rank's shards (DTensors): saved by rank 0 alone it
would keep rank 0's shard of every parameter, and Ignite's ``Checkpoint`` and monitor's copy for the
background writer cannot read a DTensor's storage. The checkpoints of a sharded run hold the full
state instead, gathered with PyTorch's own ``torch.distributed.checkpoint.state_dict``
(``full_state_dict=True``, on rank 0's CPU): one ``.pt`` file as for an unsharded run, with its
checksum and manifest, that an unsharded model of the same architecture loads with
``load_state_dict`` and that a resume on any number of processes shards again
(``set_model_state_dict``). What that costs: every save gathers the whole model and optimizer state
into rank 0's memory. By default the checkpoints are folders of each rank's shards instead
(:mod:`monitor.runtime.shard_folders`); they are such files with ``Checkpoints(shards="full")``.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["is_sharded", "FullStateModel", "FullStateOptimizer", "full_state_objects", "model_optimizers"]


def is_sharded(module: Any) -> bool:
    """Whether ``module`` is an ``nn.Module`` with FSDP2-sharded parameters (DTensors)."""
    if not isinstance(module, nn.Module):
        return False
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in module.parameters())


def _options(*, cpu_offload: bool = False) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=cpu_offload)


class FullStateModel:
    """A sharded model as a checkpoint sees it: ``state_dict()`` is the full state on rank 0's CPU (``{}``
    on the other ranks, which write nothing), ``load_state_dict`` takes a full state on every rank.

    Examples:
        .. code-block:: python

            saved = FullStateModel(model).state_dict()    # on every rank (a collective); rank 0 holds it all
            FullStateModel(model).load_state_dict(saved)  # every rank keeps its own shard of it
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def state_dict(self) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        return get_model_state_dict(self.model, options=_options(cpu_offload=True))

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        from torch.distributed.checkpoint.state_dict import set_model_state_dict

        set_model_state_dict(self.model, dict(state_dict), options=_options())


class FullStateOptimizer:
    """A sharded model's optimizer as a checkpoint sees it: its full state keyed by parameter names (not
    positions), so that another number of processes loads it.

    Examples:
        .. code-block:: python

            saved = FullStateOptimizer(model, optimizer).state_dict()
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.model, self.optimizer = model, optimizer

    def state_dict(self) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        return get_optimizer_state_dict(self.model, self.optimizer, options=_options(cpu_offload=True))

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

        set_optimizer_state_dict(self.model, self.optimizer, dict(state_dict), options=_options())


def model_optimizers(to_save: Mapping[str, Any]) -> dict[str, torch.optim.Optimizer]:
    """The optimizers of ``to_save`` that step ``to_save["model"]``'s parameters, by key."""
    own = {id(p) for p in to_save["model"].parameters()}
    return {key: obj for key, obj in to_save.items() if isinstance(obj, torch.optim.Optimizer) and any(
        id(p) in own for group in obj.param_groups for p in group["params"])}


def full_state_objects(to_save: Mapping[str, Any]) -> dict[str, Any]:
    """``to_save`` with a sharded ``"model"`` and the optimizers of its parameters seen through
    :class:`FullStateModel` and :class:`FullStateOptimizer`; as it is for an unsharded model."""
    model = to_save["model"]
    if not is_sharded(model):
        return dict(to_save)
    optimizers = model_optimizers(to_save)
    objects: dict[str, Any] = {}
    for key, obj in to_save.items():
        if obj is model:
            objects[key] = FullStateModel(model)
        elif key in optimizers:
            objects[key] = FullStateOptimizer(model, obj)
        else:
            objects[key] = obj
    return objects
