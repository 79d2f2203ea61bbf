"""Read-only review of runs: load them, summarise, compare, plot, render HTML."""
from monitor.report.events import read_scalars
from monitor.report.html import to_html
from monitor.report.load import Run, RunDirectoryError, load_run
from monitor.report.plots import plot_runs
from monitor.report.summary import compare

__all__ = ["Run", "RunDirectoryError", "compare", "load_run", "plot_runs", "read_scalars", "to_html"]
