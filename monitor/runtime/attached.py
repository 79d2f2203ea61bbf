"""What is attached to an Ignite engine: its handlers, as the user passed them."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ignite.engine import Engine

__all__ = ["attached_handlers"]


def attached_handlers(engine: Engine) -> Iterator[Any]:
    """Every handler on ``engine``, once per event it is on; one attached with an event filter
    (``Events.ITERATION_COMPLETED(every=2)``) is the user's object, not Ignite's wrapper around it.

    Examples:
        .. code-block:: python

            schedulers = [h for h in attached_handlers(trainer) if isinstance(h, ParamScheduler)]
    """
    # Ignite keeps them in a private mapping (it has no public listing); a filtered event's wrapper holds
    # a weak reference to the handler in ``_parent``.
    for handlers in engine._event_handlers.values():
        for handler, _, _ in handlers:
            parent = getattr(handler, "_parent", None)
            yield parent() if parent is not None else handler
