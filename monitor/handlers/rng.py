"""RNGState: the random generators' state, saved in the last checkpoint so a resume replays them."""
from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import ignite.distributed as idist
import numpy
import torch
from ignite.base.mixins import Serializable

from monitor.distributed import gather_json

__all__ = ["RNGState"]


class RNGState(Serializable):
    """Python's, NumPy's and torch's (CPU and CUDA) global RNG states as plain lists.

    The library never seeds anything; it only carries the state across a resume so that data
    shuffling and dropout continue exactly as in an uninterrupted run.

    Examples:
        .. code-block:: python

            to_save["rng"] = RNGState()   # into the last checkpoint; restored by Checkpoint.load_objects
    """

    _state_dict_all_req_keys = ("python", "numpy", "torch")

    def state_dict(self) -> OrderedDict[str, Any]:
        own = self._own_state()
        state = OrderedDict(own)
        if idist.get_world_size() > 1:  # every rank's generators (dropout differs per rank)
            state["ranks"] = gather_json(own)
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        super().load_state_dict(state_dict)
        ranks = state_dict.get("ranks")
        rank, world = idist.get_rank(), idist.get_world_size()
        own = ranks[rank] if ranks is not None and len(ranks) == world else state_dict
        version, internal, gauss = own["python"]
        random.setstate((version, tuple(internal), gauss))
        kind, keys, pos, has_gauss, cached = own["numpy"]
        numpy.random.set_state((kind, numpy.array(keys, dtype=numpy.uint32), pos, has_gauss, cached))
        torch.set_rng_state(torch.tensor(own["torch"], dtype=torch.uint8))
        if "cuda" in own and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in own["cuda"]])

    @staticmethod
    def _own_state() -> dict[str, Any]:
        version, internal, gauss = random.getstate()
        kind, keys, pos, has_gauss, cached = numpy.random.get_state(legacy=True)
        state: dict[str, Any] = dict(
            python=[version, list(internal), gauss],
            numpy=[kind, numpy.asarray(keys).tolist(), int(pos), int(has_gauss), float(cached)],
            torch=torch.get_rng_state().tolist(),
        )
        if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
            state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
        return state
