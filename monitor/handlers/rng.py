"""RNGState: the random generators' state, saved in the last checkpoint so a resume replays them."""
from __future__ import annotations

import base64
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
    """Python's, NumPy's and torch's (CPU and CUDA) global RNG states as bytes and numbers.

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
            state["ranks"] = [_from_json(s) for s in gather_json(_to_json(own))]
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        super().load_state_dict(state_dict)
        ranks = state_dict.get("ranks")
        rank, world = idist.get_rank(), idist.get_world_size()
        own = ranks[rank] if ranks is not None and len(ranks) == world else state_dict
        version, internal, gauss = own["python"]
        random.setstate((version, tuple(int(i) for i in numpy.frombuffer(internal, dtype=numpy.uint32)), gauss))
        kind, keys, pos, has_gauss, cached = own["numpy"]
        numpy.random.set_state((kind, numpy.frombuffer(keys, dtype=numpy.uint32).copy(), pos, has_gauss, cached))
        torch.set_rng_state(torch.frombuffer(bytearray(own["torch"]), dtype=torch.uint8))
        if "cuda" in own and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([torch.frombuffer(bytearray(s), dtype=torch.uint8) for s in own["cuda"]])

    @staticmethod
    def _own_state() -> dict[str, Any]:
        version, internal, gauss = random.getstate()
        kind, keys, pos, has_gauss, cached = numpy.random.get_state(legacy=True)
        # bytes, not lists of ints: a few objects to pickle instead of thousands (saved every epoch)
        state: dict[str, Any] = dict(
            python=[version, numpy.asarray(internal, dtype=numpy.uint32).tobytes(), gauss],
            numpy=[kind, numpy.asarray(keys, dtype=numpy.uint32).tobytes(), int(pos), int(has_gauss), float(cached)],
            torch=torch.get_rng_state().numpy().tobytes(),
        )
        if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
            state["cuda"] = [s.numpy().tobytes() for s in torch.cuda.get_rng_state_all()]
        return state


def _to_json(state: dict[str, Any]) -> Any:
    """bytes -> base64 text, for the JSON gather across ranks."""
    if isinstance(state, bytes):
        return {"b64": base64.b64encode(state).decode()}
    if isinstance(state, dict):
        return {k: _to_json(v) for k, v in state.items()}
    if isinstance(state, list):
        return [_to_json(v) for v in state]
    return state


def _from_json(state: Any) -> Any:
    if isinstance(state, dict) and set(state) == {"b64"}:
        return base64.b64decode(state["b64"])
    if isinstance(state, dict):
        return {k: _from_json(v) for k, v in state.items()}
    if isinstance(state, list):
        return [_from_json(v) for v in state]
    return state
