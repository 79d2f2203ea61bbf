"""Parts: what a run may add to monitor's own handlers (``attach_monitoring(parts=[...])``), each a
:class:`~monitor.parts.base.Part` with a key of its own in the checkpoint and ``run.json``."""
from monitor.parts.base import Part, PartContext
from monitor.parts.grad_norm import GradNorm, attach_grad_norm
from monitor.parts.plateau import LROnPlateau, attach_lr_on_plateau
from monitor.parts.recovery import Recovery
from monitor.parts.sweep import OptunaPruning
from monitor.parts.tracking import MLflow, Tracker

__all__ = ["GradNorm", "LROnPlateau", "MLflow", "OptunaPruning", "Part", "PartContext", "Recovery", "Tracker",
           "attach_grad_norm", "attach_lr_on_plateau"]
