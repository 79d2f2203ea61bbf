"""One self-contained HTML page (interactive charts inlined) reviewing one or more runs."""
from __future__ import annotations

import html
import json
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from monitor.diagnosis import Finding, by_level
from monitor.review.charts import chart_assets, charts_html
from monitor.review.summary import compare
from monitor.review.text import format_value, stop_reason_text

if TYPE_CHECKING:  # Run for annotations only: load.py imports the HTML page for Run._repr_html_
    from monitor.review.load import Run

__all__ = ["to_html", "run_section"]

# The page stays within 1400 px: wide tables scroll inside their own box, long names wrap.
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; padding: 0 1em; max-width: 1400px; color: #222; }
h1 { margin-bottom: 0.2em; }
h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.5em; text-align: right; vertical-align: top; }
th { background: #f3f3f3; }
.runs th { max-width: 7em; }
td.text, th.text { text-align: left; }
.runs td:nth-child(2), .runs td:nth-child(4), .runs td:nth-child(5) { text-align: left; }
.grid { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); gap: 1.2em; }
@media (max-width: 900px) { .grid { grid-template-columns: minmax(0, 1fr); } }
.why { font-size: 1.05em; margin: 0.4em 0 0.8em; }
.status { font-weight: 600; padding: 0.05em 0.4em; border-radius: 0.3em; background: #eee; }
.status.completed, .status.early_stopped { background: #dff0d8; }
.status.failed, .status.diverged, .status.crashed { background: #f8d7da; }
.status.interrupted, .status.running { background: #fff3cd; }
img { max-width: 100%; height: auto; }
.findings { background: #fff8e1; border-left: 4px solid #f0ad4e; padding: 0.2em 1em; }
.findings.ok { background: #eef7ee; border-left-color: #5cb85c; }
.findings.note { background: #eef4fb; border-left-color: #5b9bd5; }
"""


def _text(value: Any) -> str:
    if isinstance(value, dict):  # "patience 10, target 0.9": the settings that are set
        return ", ".join(f"{k} {_text(v)}" for k, v in value.items() if v is not None) or "-"
    if isinstance(value, list):
        return json.dumps(value)
    return format_value(value)


def _key_values(title: str, rows: Iterable[tuple[str, Any]]) -> str:
    cells = "".join(
        f'<tr><th class="text">{html.escape(k)}</th><td class="text">{html.escape(_text(v))}</td></tr>'
        for k, v in rows
    )
    return f'<div><h3>{html.escape(title)}</h3><div class="scroll"><table>{cells}</table></div></div>'


def _configuration(record: dict[str, Any]) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    objective = record.get("objective") or {}
    if objective:
        rows.append(("objective", f"{objective.get('metric')} ({objective.get('mode')}), threshold "
                                  f"{objective.get('threshold')} {objective.get('threshold_mode')}, warm-up "
                                  f"{objective.get('warmup')}"))
    for key in ("early_stopping", "lr_on_plateau", "recovery", "n_saved", "max_epochs", "epoch_length", "seed"):
        if record.get(key) is not None:
            rows.append((key.replace("_", " "), record[key]))
    rows += [(f"hparam {k}", v) for k, v in (record.get("hparams") or {}).items()]
    rows += [(f"to_save {k}", v) for k, v in (record.get("to_save") or {}).items()]
    rows += [(f"version {k}", v) for k, v in (record.get("versions") or {}).items()]
    return rows


def _segments(record: dict[str, Any]) -> str:
    segments = record.get("segments") or []
    head = "".join(f"<th>{h}</th>" for h in ("#", "started", "from epoch", "ended", "status"))
    body = "".join(
        f"<tr><td>{i}</td><td class='text'>{html.escape(str(s.get('started', '-')))}</td>"
        f"<td>{html.escape(str(s.get('from_epoch', '-')))}</td>"
        f"<td class='text'>{html.escape(str(s.get('ended') or '-'))}</td>"
        f"<td class='text'>{html.escape(str(s.get('status', '-')))}</td></tr>"
        for i, s in enumerate(segments, start=1)
    )
    note = "one per start or resume"
    return (f'<div><h3>Segments ({len(segments)}, {note})</h3><div class="scroll"><table><tr>{head}</tr>'
            f"{body}</table></div></div>")


def _breakable_headers(table: str) -> str:
    """Let long column names wrap at ``_`` and ``@`` only (``val_accuracy@best``), not inside words."""
    head, sep, body = table.partition("</thead>")
    return head.replace("_", "_<wbr>").replace("@", "<wbr>@") + sep + body


def _findings(run: Run) -> str:
    problems, notes = by_level(run.findings)

    def items(findings: list[Finding]) -> str:
        return "".join(
            f"<li><b>{html.escape(f.kind)}</b> from epoch {f.epoch}: "
            f"{html.escape(', '.join(f'{k} {_text(v)}' for k, v in f.evidence.items()))}. "
            f"<i>{html.escape(f.advice)}</i></li>" for f in findings
        )
    shown = (f"<div class='findings'><h3>What went wrong</h3><ul>{items(problems)}</ul></div>" if problems else
             "<p class='findings ok'>No training problem found.</p>")
    if notes:
        shown += f"<div class='findings note'><h3>Notes</h3><ul>{items(notes)}</ul></div>"
    return shown


def run_section(run: Run, *, curves: bool = True, chart_id: str | None = None) -> str:
    """One run: its status and why it stopped, in words; its summary; its configuration and segments;
    its interactive curves (the page holds :func:`~monitor.review.charts.chart_assets` once). The part
    of :func:`to_html` for one run; ``Run._repr_html_`` shows it in notebooks, with the assets."""
    status = html.escape(run.status)
    parts = [
        f"<section><h2>{html.escape(run.name)} <span class='status {status}'>{status}</span></h2>",
        f"<p class='why'>Stopped because {html.escape(stop_reason_text(run.record, run.status))}.</p>",
        _findings(run),
        f"<div class='scroll'><pre>{html.escape(run.summary())}</pre></div>",
        "<div class='grid'>",
        _key_values("Configuration", _configuration(run.record)),
        _segments(run.record),
        "</div>",
    ]
    if curves:
        parts += ["<h3>Curves</h3>", charts_html([run], chart_id or f"run-{uuid.uuid4().hex[:8]}")]
    parts.append("</section>")
    return "\n".join(parts)


def _refresh(refresh_s: float | None, runs: Sequence[Run]) -> str:
    if refresh_s is None or not any(run.is_live for run in runs):
        return ""
    return f'<meta http-equiv="refresh" content="{max(1, round(refresh_s))}">'


def _live_line(runs: Sequence[Run], refresh_s: float | None) -> str:
    """Under ``--watch``: whether a run is still training (the page then reloads), or that they ended."""
    if refresh_s is None:
        return ""
    written = datetime.now().strftime("%H:%M:%S")
    live = [run.name for run in runs if run.is_live]
    said = (f"Live: {', '.join(live)} still training; written at {written}, this page reloads every "
            f"{max(1, round(refresh_s))} s." if live else f"The runs have ended (page written at {written}).")
    return f"<p class='live'>{html.escape(said)}</p>"


def to_html(runs: Sequence[Run], *, title: str = "monitor report", refresh_s: float | None = None) -> str:
    """The comparison table, the runs' curves overlaid, then a section per run: why it stopped, its
    summary, configuration, segments and curves. One self-contained file (the charts' script and
    data inlined: it opens from ``file://`` with no network), within 1400 px (wide tables scroll in
    their own box). With ``refresh_s`` (``monitor html --watch``) the page says whether a run is still
    training, and while one is, reloads itself that often, keeping what was chosen in its charts.

    Examples:
        .. code-block:: python

            Path("report.html").write_text(to_html([load_run("reports/a"), load_run("reports/b")]))
    """
    runs = list(runs)
    table = compare(runs).drop(columns="path")
    for column in table.select_dtypes(include=["object", "str"]).columns:  # no value (no seed) as the text shows it
        table[column] = table[column].astype(object).where(table[column].notna(), "-")
    parts = [
        "<!DOCTYPE html>",
        f'<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">'
        f"<title>{html.escape(title)}</title>{_refresh(refresh_s, runs)}<style>{_STYLE}</style>{chart_assets()}"
        "</head><body>",
        f"<h1>{html.escape(title)}</h1>",
        _live_line(runs, refresh_s),
        f"<p>{len(runs)} run{'s' if len(runs) != 1 else ''}, ranked by objective (ties share a rank).</p>",
        "<h2>Runs</h2>",
        '<div class="scroll">',
        _breakable_headers(
            table.to_html(index=False, na_rep="-", float_format=lambda v: f"{v:.6g}", classes="runs", border=0)
        ),
        "</div>",
    ]
    if len(runs) > 1:
        parts += ["<h2>All runs</h2>", charts_html(runs, "all-runs")]
    parts += [run_section(run, chart_id=f"run-{k}") for k, run in enumerate(runs, start=1)]
    parts.append("</body></html>")
    return "\n".join(parts)
