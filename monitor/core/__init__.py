"""The concepts every layer shares, standard library only: what "better" means (Objective), how a run
ends (RunStatus, StopReason), where a trainer is within its epoch, argument checks, number formats."""
from monitor.core.objective import Objective
from monitor.core.status import RunStatus, StopReason

__all__ = ["Objective", "RunStatus", "StopReason"]
