"""Composition: attach_monitoring and its settings (EarlyStopping, Checkpoints, Console, Record), the
optional parts, Monitor (start, end, why it ended, run.json), and the resume plan."""
