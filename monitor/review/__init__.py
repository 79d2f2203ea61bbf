"""Read-only review of runs (pandas, matplotlib; no torch, no Ignite): load them, summarise, compare,
plot, render HTML, read TensorBoard files, export the best model, and the `monitor` command (cli)."""
from monitor.review.events import read_scalars
from monitor.review.export import export_best
from monitor.review.html import to_html
from monitor.review.load import Run, RunDirectoryError, load_run
from monitor.review.plots import plot_runs
from monitor.review.summary import compare

__all__ = ["Run", "RunDirectoryError", "compare", "export_best", "load_run", "plot_runs", "read_scalars", "to_html"]
