"""One self-contained HTML page (plots embedded) reviewing one or more runs."""
from __future__ import annotations

import base64
import html
from collections.abc import Sequence

from monitor.report.load import Run
from monitor.report.plots import figure_png, plot_runs
from monitor.report.summary import compare

__all__ = ["to_html"]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th { background: #f3f3f3; }
td:nth-child(2), td:nth-child(3) { text-align: left; }
pre { background: #f7f7f7; padding: 0.8em; }
img { max-width: 100%; }
"""


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def to_html(runs: Sequence[Run], *, title: str = "monitor report") -> str:
    """The comparison table, the runs' curves overlaid, then each run's summary and curves.

    Examples:
        .. code-block:: python

            Path("report.html").write_text(to_html([load_run("reports/a"), load_run("reports/b")]))
    """
    runs = list(runs)
    table = compare(runs).drop(columns="path")
    parts = [
        "<!DOCTYPE html>",
        f'<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>',
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<h2>Runs</h2>",
        table.to_html(index=False, na_rep="-", float_format=lambda v: f"{v:.6g}", classes="runs", border=0),
    ]
    if len(runs) > 1:
        parts += ["<h2>All runs</h2>", _img(figure_png(plot_runs(runs)), "learning curves of all runs")]
    for run in runs:
        parts += [
            f"<h2>{html.escape(run.name)}</h2>",
            f"<pre>{html.escape(run.summary())}</pre>",
            _img(figure_png(plot_runs([run], title=run.name)), f"learning curves of {run.name}"),
        ]
    parts.append("</body></html>")
    return "\n".join(parts)
