"""Composition: attach_monitoring and its settings (EarlyStopping, Checkpoints, Console, Record), the
optional parts, Monitor (start, end, why it ended, run.json), and the resume plan."""
from monitor.compose.attach import attach_monitoring
from monitor.compose.monitor import Monitor
from monitor.compose.settings import Checkpoints, Console, EarlyStopping, Record

__all__ = ["Checkpoints", "Console", "EarlyStopping", "Monitor", "Record", "attach_monitoring"]
