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
from ignite.engine import Engine, Events
from ignite.engine.deterministic import DeterministicEngine

from monitor.runtime.distributed import gather_json

__all__ = ["RNGState", "DeterministicEngineState", "capture_rng", "capture_rng_objects", "rng_state", "restore_rng",
           "engine_state"]


def capture_rng() -> dict[str, Any]:
    """This process's global RNG states (Python, NumPy, torch CPU and CUDA) as bytes and numbers."""
    return RNGState._own_state()


def restore_rng(state: Mapping[str, Any]) -> None:
    """Set this process's global RNGs to ``state`` (from :func:`capture_rng`)."""
    RNGState._restore(state)


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
        self._restore(ranks[rank] if ranks is not None and len(ranks) == world else state_dict)

    @staticmethod
    def _restore(own: Mapping[str, Any]) -> None:
        """Put back the generators ``own`` holds (an epoch's start may hold torch's alone)."""
        if "python" in own:
            python, _, numpy_state = _as_objects(own)
            random.setstate(python)
            numpy.random.set_state(numpy_state)
        torch.set_rng_state(torch.frombuffer(bytearray(own["torch"]), dtype=torch.uint8))
        if "cuda" in own and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([torch.frombuffer(bytearray(s), dtype=torch.uint8) for s in own["cuda"]])

    @staticmethod
    def _own_state() -> dict[str, Any]:
        return rng_state(capture_rng_objects())


def capture_rng_objects(*, torch_only: bool = False) -> tuple[Any, ...]:
    """This process's global RNG states as their libraries return them (copies, taken in a few
    microseconds); :func:`rng_state` turns them into :func:`capture_rng`'s form, which costs ten
    times more (Python's 625 numbers into bytes): for a state that is kept every epoch but written
    only with a checkpoint. ``torch_only``: torch's alone (CPU and CUDA), for what draws from nothing
    else (torch's samplers): Python's and NumPy's copies are most of the 50 microseconds."""
    on_gpu = torch.cuda.is_available() and torch.cuda.is_initialized()  # type: ignore[no-untyped-call]
    cuda = torch.cuda.get_rng_state_all() if on_gpu else None
    if torch_only:
        return None, None, torch.get_rng_state(), cuda
    return random.getstate(), numpy.random.get_state(legacy=True), torch.get_rng_state(), cuda


def rng_state(objects: tuple[Any, ...]) -> dict[str, Any]:
    """:func:`capture_rng`'s form (bytes and numbers) of :func:`capture_rng_objects`'s states."""
    python, numpy_state, cpu, cuda = objects
    # bytes, not lists of ints: a few objects to pickle instead of thousands (saved every epoch)
    state: dict[str, Any] = {"torch": cpu.numpy().tobytes()}
    if python is not None:
        version, internal, gauss = python
        state["python"] = [version, numpy.asarray(internal, dtype=numpy.uint32).tobytes(), gauss]
    if numpy_state is not None:
        kind, keys, pos, has_gauss, cached = numpy_state
        state["numpy"] = [kind, numpy.asarray(keys, dtype=numpy.uint32).tobytes(), int(pos), int(has_gauss),
                          float(cached)]
    if cuda is not None:
        state["cuda"] = [s.numpy().tobytes() for s in cuda]
    return state


def _as_objects(own: Mapping[str, Any]) -> list[Any]:
    """Python's, torch's and NumPy's states from :func:`capture_rng`'s bytes, as their own objects (in
    the order of Ignite's ``_get_rng_states``)."""
    version, internal, gauss = own["python"]
    kind, keys, pos, has_gauss, cached = own["numpy"]
    return [
        (version, tuple(int(i) for i in numpy.frombuffer(internal, dtype=numpy.uint32)), gauss),
        torch.frombuffer(bytearray(own["torch"]), dtype=torch.uint8),
        (kind, numpy.frombuffer(keys, dtype=numpy.uint32).copy(), pos, has_gauss, cached),
    ]


class DeterministicEngineState(Serializable):
    """An Ignite ``DeterministicEngine`` in the last checkpoint: its ``rng_states`` as bytes, and its seed.

    Ignite's ``DeterministicEngine`` replays the data order itself (it re-seeds the global RNGs from
    ``state.seed`` at each epoch and skips done batches as indices), but what it saves falls short
    of an exact resume here: its ``rng_states`` are Python, NumPy and torch objects, which
    ``torch.load(weights_only=True)`` (how monitor loads checkpoints safely) refuses; and
    ``state.seed`` is not saved at all but drawn anew from the global RNG at every ``STARTED``, so a
    resumed run, whose RNG was restored, draws another seed and other epoch orders. This stores the
    states as :func:`capture_rng` does (they are the global ones at saving time) and the seed, and
    puts the seed back after the engine drew its own on ``STARTED``.

    Examples:
        .. code-block:: python

            objects["trainer"] = engine_state(trainer)   # the trainer itself unless deterministic
    """

    def __init__(self, engine: DeterministicEngine) -> None:
        self.engine = engine
        self._seed: int | None = None  # loaded, to put back when the engine starts
        engine.add_event_handler(Events.STARTED, self._put_back_seed)  # after Ignite's own _init_run

    def _put_back_seed(self, _: Engine) -> None:
        if self._seed is not None:
            self.engine.state.seed, self._seed = self._seed, None

    def state_dict(self) -> OrderedDict[str, Any]:
        state = self.engine.state_dict()
        state["rng_states"] = capture_rng()
        seed = self._seed if self._seed is not None else getattr(self.engine.state, "seed", None)
        state["seed"] = None if seed is None else int(seed)  # a loaded seed not yet put back is the one
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        state = OrderedDict(state_dict)
        self._seed = state.pop("seed", None)
        if isinstance(state.get("rng_states"), Mapping):
            state["rng_states"] = _as_objects(state["rng_states"])
        self.engine.load_state_dict(state)


def engine_state(trainer: Engine) -> Engine | DeterministicEngineState:
    """What goes into the last checkpoint for ``trainer``: itself, or for an Ignite
    ``DeterministicEngine`` a :class:`DeterministicEngineState` (which registers on its ``STARTED``)."""
    return DeterministicEngineState(trainer) if isinstance(trainer, DeterministicEngine) else trainer


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
