"""Interactive charts of runs for the HTML page and notebooks: uPlot (``static/``, inlined), one file, no network.

Each chart overlays the runs (one colour each; hover shows every run's value at a point, a click on a
run in the legend hides it in every chart, a drag zooms, a double click zooms out). Above them: the
x axis (epoch, iteration or training time), the column of the extra chart (any history column), a
log scale and smoothing (an exponential moving average). Events are marked where they happened:
the best validation, an early stop, a resume, a rollback, a learning-rate cut, a finding (labelled
lines for up to 4 runs shown; past that a short tick of the run's colour, so that 20 runs stay
readable).
"""
from __future__ import annotations

import html
import json
import math
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from monitor.diagnosis import rollbacks

if TYPE_CHECKING:  # Run for annotations only: load.py imports the HTML page for Run._repr_html_
    from monitor.review.load import Run

__all__ = ["charts_html", "chart_data", "chart_assets"]

_X_COLUMNS = ("epoch", "iteration", "elapsed_s")
_STOPPED = {"early_stopped", "diverged", "interrupted", "failed"}


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _events(run: Run) -> list[dict[str, Any]]:
    """Where something happened, by epoch: the best, an early stop, resumes, rollbacks, rate cuts, findings."""
    events: list[dict[str, Any]] = []
    if run.best.get("epoch") is not None:
        events.append({"kind": "best", "epoch": int(run.best["epoch"]), "label": "best"})
    if run.status in _STOPPED and len(run.history):
        events.append({"kind": "stop", "epoch": int(run.history["epoch"].max()),
                       "label": str(run.stop_reason or run.status)})
    for segment in (run.record.get("segments") or [])[1:]:
        if segment.get("from_epoch") is not None:
            events.append({"kind": "resume", "epoch": int(segment["from_epoch"]), "label": "resumed"})
    for entry in rollbacks(run.record.get("recoveries")):
        if entry.get("epoch") is not None:
            events.append({"kind": "rollback", "epoch": int(entry["epoch"]),
                           "label": f"rollback ({entry.get('reason')})"})
    if "lr" in run.history and len(run.history) > 1:
        rates = run.history[["epoch", "lr"]].dropna()
        for (_, before), (_, after) in zip(rates.iloc[:-1].iterrows(), rates.iloc[1:].iterrows(), strict=True):
            if after["lr"] < before["lr"] * 0.999:
                events.append({"kind": "lr", "epoch": int(after["epoch"]), "label": "lr cut"})
    for finding in run.findings:
        if finding.epoch is not None:
            events.append({"kind": "finding", "epoch": int(finding.epoch), "label": finding.kind})
    return events


def chart_data(runs: list[Run]) -> dict[str, Any]:
    """What the charts draw, as JSON-ready data: each run's numeric history columns, its objective and
    its events; the columns any run has, and the default charts (every objective's validation curve,
    the training loss, every ``lr*`` column).

    Examples:
        .. code-block:: python

            chart_data([load_run("reports/a")])["charts"]   # ["val_loss", "train_loss", "lr"]
    """
    data_runs, columns = [], []
    for run in runs:
        numeric = [c for c in run.history.columns if run.history[c].dtype.kind in "iuf"]  # not is_best, not text
        values = {c: [_number(v) for v in run.history[c].tolist()] for c in numeric}
        data_runs.append({"name": run.name, "status": run.status, "objective": run.objective_column,
                          "rows": values, "events": _events(run)})
        columns += [c for c in numeric if c not in columns and c not in _X_COLUMNS]
    objectives = list(dict.fromkeys(r["objective"] for r in data_runs if r["objective"] in columns))
    charts = [*objectives, *(["train_loss"] if "train_loss" in columns else []),
              *[c for c in columns if c == "lr" or c.startswith("lr_")]]
    return {"runs": data_runs, "columns": columns, "charts": list(dict.fromkeys(charts))}


@cache
def chart_assets() -> str:
    """uPlot's script and style (``static/``), to inline once in a page."""
    static = resources.files("monitor.review") / "static"
    script = (static / "uPlot.iife.min.js").read_text(encoding="utf-8")
    style = (static / "uPlot.min.css").read_text(encoding="utf-8")
    return f"<style>{style}{_STYLE}</style><script>{script}</script><script>{_APP}</script>"


def charts_html(runs: list[Run], chart_id: str) -> str:
    """A block of interactive charts of ``runs`` (the assets of :func:`chart_assets` on the page)."""
    data = json.dumps(chart_data(runs), separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    ident = html.escape(chart_id)
    return (f'<div class="monitor-charts" id="{ident}"></div>'
            f'<script type="application/json" id="{ident}-data">{data}</script>'
            f"<script>monitorCharts({json.dumps(chart_id)});</script>")


_STYLE = """
.monitor-charts .controls { display: flex; flex-wrap: wrap; gap: 1em; align-items: center; margin: 0.5em 0; }
.monitor-charts .chart { margin: 0.6em 0 1.2em; }
.monitor-charts .chart h4 { margin: 0 0 0.2em; font-weight: 600; }
.monitor-charts .u-legend { font-size: 0.8em; text-align: left; }
"""

# The page's script: builds the controls and one uPlot per chart from the JSON block, redraws on a change.
_APP = r"""
function monitorCharts(id) {
  const root = document.getElementById(id);
  const D = JSON.parse(document.getElementById(id + '-data').textContent);
  const colors = D.runs.map((_, i) => `hsl(${(i * 137.5) % 360}, 65%, 42%)`);
  const marks = {best: '#2a9d2a', stop: '#555', resume: '#1f6fd1', rollback: '#d62728', lr: '#9467bd',
                 finding: '#e69500'};
  const others = D.columns.filter(c => !D.charts.includes(c));
  const state = {x: 'epoch', extra: others.find(c => c.startsWith('val_')) || others.find(c => c.startsWith('train_'))
                 || others[0] || D.columns[0],
                 log: false, smooth: 0, hidden: new Set()};
  // What was chosen survives the reloads of a page kept current (monitor html --watch).
  const key = 'monitor:' + location.pathname + '#' + id;
  try {
    const saved = JSON.parse(sessionStorage.getItem(key) || 'null');
    if (saved) Object.assign(state, saved, {hidden: new Set(saved.hidden),
                                            extra: D.columns.includes(saved.extra) ? saved.extra : state.extra});
  } catch (e) { /* no storage (a sandboxed page): nothing kept */ }
  const save = () => { try { sessionStorage.setItem(key, JSON.stringify({...state, hidden: [...state.hidden]})); }
                       catch (e) { /* as above */ } };
  const controls = document.createElement('div');
  controls.className = 'controls';
  const select = (label, name, options, value) => `<label>${label} <select name="${name}">` +
    options.map(o => `<option${o === value ? ' selected' : ''}>${o}</option>`).join('') + '</select></label>';
  controls.innerHTML = select('x axis', 'x', ['epoch', 'iteration', 'elapsed_s'], state.x) +
    select('chart', 'extra', D.columns, state.extra) +
    `<label><input type="checkbox" name="log"${state.log ? ' checked' : ''}> log scale</label>` +
    '<label>smoothing <input type="range" name="smooth" min="0" max="0.95" step="0.05" ' +
    `value="${state.smooth}"></label>`;
  root.appendChild(controls);
  const area = document.createElement('div');
  root.appendChild(area);
  let plots = [];
  function smooth(values) {
    if (!state.smooth) return values;
    let last = null;
    return values.map(v => v == null ? null : (last = last == null ? v : state.smooth * last + (1 - state.smooth) * v));
  }
  function series(column) {
    const xs = [...new Set(D.runs.flatMap(r => (r.rows[state.x] || []).filter((x, i) =>
      x != null && r.rows[column] && r.rows[column][i] != null)))].sort((a, b) => a - b);
    const ys = D.runs.map(r => {
      const at = new Map();
      const own = smooth(r.rows[column] || []);
      (r.rows[state.x] || []).forEach((x, i) => { if (x != null && own[i] != null) at.set(x, own[i]); });
      return xs.map(x => {
        const v = at.has(x) ? at.get(x) : null;
        return state.log && v != null && v <= 0 ? null : v;
      });
    });
    return [xs, ...ys];
  }
  function eventsPlugin() {
    return {hooks: {draw: u => {
      const ctx = u.ctx; ctx.save(); ctx.lineWidth = 1; ctx.font = '10px sans-serif';
      const many = u.series.filter(s => s.show).length - 1 > 4;  // then a tick of the run's colour, unlabelled
      D.runs.forEach((r, i) => {
        if (!u.series[i + 1].show) return;
        r.events.forEach(e => {
          const row = r.rows.epoch.lastIndexOf(e.epoch);
          const x = row < 0 ? null : (r.rows[state.x] || [])[row];
          if (x == null) return;
          const px = u.valToPos(x, 'x', true);
          if (px < u.bbox.left || px > u.bbox.left + u.bbox.width) return;
          ctx.strokeStyle = many ? colors[i] : marks[e.kind] || '#999';
          ctx.setLineDash(e.kind === 'best' || many ? [] : [4, 3]);
          ctx.beginPath(); ctx.moveTo(px, u.bbox.top);
          ctx.lineTo(px, u.bbox.top + (many ? 10 : u.bbox.height)); ctx.stroke();
          if (!many) { ctx.fillStyle = ctx.strokeStyle; ctx.fillText(e.label, px + 2, u.bbox.top + 10 + 10 * (i % 4)); }
        });
      });
      ctx.restore();
    }}};
  }
  function draw() {
    plots.forEach(p => p.destroy()); plots = []; area.innerHTML = '';
    const width = Math.max(320, Math.min(root.clientWidth || 900, 1350));
    for (const column of [...D.charts, state.extra]) {
      const box = document.createElement('div'); box.className = 'chart'; box.dataset.column = column;
      box.innerHTML = `<h4>${column}</h4>`; area.appendChild(box);
      const opts = {width, height: 260, plugins: [eventsPlugin()], cursor: {sync: {key: id}},
        scales: {x: {time: false}, y: {distr: state.log ? 3 : 1}},
        axes: [{label: state.x}, {}],
        series: [{label: state.x}, ...D.runs.map((r, i) => ({label: r.name, stroke: colors[i], width: 1.5,
          spanGaps: true, show: !state.hidden.has(r.name), points: {size: 4}}))],
        hooks: {setSeries: [(u, i, opts) => { if (i == null || opts.show == null) return;
          const name = D.runs[i - 1].name; opts.show ? state.hidden.delete(name) : state.hidden.add(name); save();
          plots.forEach(p => { if (p !== u && p.series[i].show !== opts.show) p.setSeries(i, {show: opts.show}); });
        }]}};
      plots.push(new uPlot(opts, series(column), box));
    }
    root.dataset.drawn = String(plots.length);
  }
  controls.addEventListener('change', e => {
    const t = e.target;
    if (t.name === 'log') state.log = t.checked; else if (t.name === 'smooth') state.smooth = +t.value;
    else state[t.name] = t.value;
    save(); draw();
  });
  controls.querySelector('[name=smooth]').addEventListener('input', e => {
    state.smooth = +e.target.value; save(); draw();
  });
  root.monitor = {state, plots: () => plots, draw};
  draw();
}
"""
