"""The versions a run records: what it ran on."""
from __future__ import annotations

import ignite
import torch

from monitor.core.version import VERSION

__all__ = ["library_versions"]


def library_versions() -> dict[str, str]:
    """torch's, Ignite's and monitor's versions, for ``run.json`` (the record adds Python's and the platform).

    Examples:
        .. code-block:: python

            library_versions()   # {"torch": "2.13.0", "ignite": "0.5.5", "monitor": "0.2.0"}
    """
    return {"torch": torch.__version__, "ignite": ignite.__version__, "monitor": VERSION}
