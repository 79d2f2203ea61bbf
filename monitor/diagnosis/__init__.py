"""What went wrong in training, from the history rows alone (pure Python): :func:`diagnose` and its
:class:`~monitor.diagnosis.rules.Finding`; the rules and their thresholds are in :mod:`monitor.diagnosis.rules`."""
from monitor.diagnosis.rules import LEVELS, Finding, by_level, diagnose, diverging, rollbacks, steps_after

__all__ = ["Finding", "LEVELS", "by_level", "diagnose", "diverging", "rollbacks", "steps_after"]
