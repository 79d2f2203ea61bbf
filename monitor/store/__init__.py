"""The run folder's format, standard library only: its names (layout), run.json (record), history.csv
(history), checksums (manifest), the one-writer lock, ordered background writes, atomic files."""
from monitor.store.history import History

__all__ = ["History"]
