"""Parts: what a run may add to monitor's own handlers (``attach_monitoring(parts=[...])``), each a
:class:`~monitor.parts.base.Part` with a key of its own in the checkpoint and ``run.json``."""
