"""RNGState: the random generators' state, saved in the last checkpoint so a resume replays them."""
from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import numpy
import torch
from ignite.base.mixins import Serializable

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
        version, internal, gauss = random.getstate()
        kind, keys, pos, has_gauss, cached = numpy.random.get_state(legacy=True)
        state = OrderedDict(
            python=[version, list(internal), gauss],
            numpy=[kind, numpy.asarray(keys).tolist(), int(pos), int(has_gauss), float(cached)],
            torch=torch.get_rng_state().tolist(),
        )
        if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
            state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        super().load_state_dict(state_dict)
        version, internal, gauss = state_dict["python"]
        random.setstate((version, tuple(internal), gauss))
        kind, keys, pos, has_gauss, cached = state_dict["numpy"]
        numpy.random.set_state((kind, numpy.array(keys, dtype=numpy.uint32), pos, has_gauss, cached))
        torch.set_rng_state(torch.tensor(state_dict["torch"], dtype=torch.uint8))
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state_dict["cuda"]])
