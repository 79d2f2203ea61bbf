"""Interactive charts of runs for the HTML page and notebooks: uPlot (``static/``, inlined), one file, no network.

Each chart overlays the runs (one colour each; hover shows every run's value at a point, a click on a
run in the legend hides it in every chart, a drag zooms, a double click zooms out). Above them: the
x axis (epoch, iteration or training time), the column of the extra chart (any history column), a
log scale and smoothing (an exponential moving average); where the runs' hyper-parameters differ,
a colour per value of one of them and a filter to the runs of one value. Events are marked where
they happened: the best validation, an early stop, a resume, a rollback (the range it undid
shaded), a learning-rate cut, a finding (labelled lines for up to 4 runs shown; past that a short
tick of the run's colour, so that 20 runs stay readable). Below, for runs whose hyper-parameters
differ (a sweep), each run's best value against each of them.
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
        if entry.get("epoch") is not None:  # "from": the epoch it went back to (the range undone is shaded)
            back = entry.get("rolled_back_to_epoch")
            events.append({"kind": "rollback", "epoch": int(entry["epoch"]),
                           "from": None if back is None else int(back), "label": f"rollback ({entry.get('reason')})"})
    if "lr" in run.history and len(run.history) > 1:
        rates = run.history[["epoch", "lr"]].dropna()
        for (_, before), (_, after) in zip(rates.iloc[:-1].iterrows(), rates.iloc[1:].iterrows(), strict=True):
            if after["lr"] < before["lr"] * 0.999:
                events.append({"kind": "lr", "epoch": int(after["epoch"]), "label": "lr cut"})
    for finding in run.findings:
        if finding.epoch is not None:
            events.append({"kind": "finding", "epoch": int(finding.epoch), "label": finding.kind})
    return events


def _hparams(run: Run) -> dict[str, Any]:
    """The run's hyper-parameters and seed, as JSON scalars (a list or a mapping as its JSON text)."""
    found = {"seed": run.record.get("seed")} if run.record.get("seed") is not None else {}
    found.update(run.record.get("hparams") or {})
    return {str(k): v if isinstance(v, (int, float, str, bool)) or v is None else json.dumps(v, sort_keys=True)
            for k, v in found.items()}


def chart_data(runs: list[Run]) -> dict[str, Any]:
    """What the charts draw, as JSON-ready data: each run's numeric history columns, its objective,
    best value, hyper-parameters and events; the columns any run has, the default charts (every
    objective's validation curve, the training loss, every ``lr*`` column), and the hyper-parameters
    whose value differs between runs (``varying``: what runs are grouped and filtered by, and the
    sweep view's axes).

    Examples:
        .. code-block:: python

            chart_data([load_run("reports/a")])["charts"]   # ["val_loss", "train_loss", "lr"]
    """
    data_runs: list[dict[str, Any]] = []
    columns: list[str] = []
    for run in runs:
        numeric = [c for c in run.history.columns if run.history[c].dtype.kind in "iuf"]  # not is_best, not text
        values = {c: [_number(v) for v in run.history[c].tolist()] for c in numeric}
        data_runs.append({"name": run.name, "status": run.status, "objective": run.objective_column,
                          "best": _number(run.best.get("value")), "mode": run.best.get("mode"),
                          "hparams": _hparams(run), "rows": values, "events": _events(run)})
        columns += [c for c in numeric if c not in columns and c not in _X_COLUMNS]
    objectives = list(dict.fromkeys(r["objective"] for r in data_runs if r["objective"] in columns))
    charts = [*objectives, *(["train_loss"] if "train_loss" in columns else []),
              *[c for c in columns if c == "lr" or c.startswith("lr_")]]
    names = list(dict.fromkeys(k for r in data_runs for k in r["hparams"]))
    varying = [k for k in names if len({json.dumps(r["hparams"].get(k)) for r in data_runs}) > 1]
    return {"runs": data_runs, "columns": columns, "charts": list(dict.fromkeys(charts)), "varying": varying}


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
.monitor-charts .sweep { display: inline-block; vertical-align: top; margin-right: 1.5em; }
"""

# The page's script: builds the controls and one uPlot per chart from the JSON block, redraws on a change.
_APP = r"""
function monitorCharts(id) {
  const root = document.getElementById(id);
  const D = JSON.parse(document.getElementById(id + '-data').textContent);
  const marks = {best: '#2a9d2a', stop: '#555', resume: '#1f6fd1', rollback: '#d62728', lr: '#9467bd',
                 finding: '#e69500'};
  const others = D.columns.filter(c => !D.charts.includes(c));
  const state = {x: 'epoch', extra: others.find(c => c.startsWith('val_')) || others.find(c => c.startsWith('train_'))
                 || others[0] || D.columns[0],
                 log: false, smooth: 0, hidden: new Set(), group: '', only: ''};
  // What was chosen survives the reloads of a page kept current (monitor html --watch).
  const key = 'monitor:' + location.pathname + '#' + id;
  try {
    const saved = JSON.parse(sessionStorage.getItem(key) || 'null');
    if (saved) Object.assign(state, saved, {hidden: new Set(saved.hidden),
                                            extra: D.columns.includes(saved.extra) ? saved.extra : state.extra,
                                            group: D.varying.includes(saved.group) ? saved.group : ''});
  } catch (e) { /* no storage (a sandboxed page): nothing kept */ }
  const save = () => { try { sessionStorage.setItem(key, JSON.stringify({...state, hidden: [...state.hidden]})); }
                       catch (e) { /* as above */ } };
  const show = v => v == null ? '-' : typeof v === 'number' ? String(+v.toPrecision(6)) : String(v);
  const order = vs => [...new Set(vs.map(show))].sort((a, b) => isNaN(a) || isNaN(b) ? a.localeCompare(b) : a - b);
  // A run's colour: its own, or with a group, its group's hue (lightness tells the runs of a group apart).
  function colors() {
    if (!state.group) return D.runs.map((_, i) => `hsl(${(i * 137.5) % 360}, 65%, 42%)`);
    const values = order(D.runs.map(r => r.hparams[state.group]));
    const seen = {};
    return D.runs.map(r => {
      const k = values.indexOf(show(r.hparams[state.group])); seen[k] = (seen[k] || 0) + 1;
      return `hsl(${(k * 360 / values.length + 10) % 360}, 70%, ${30 + ((seen[k] - 1) % 4) * 10}%)`;
    });
  }
  const kept = r => {
    if (!state.only) return true;
    const [k, v] = JSON.parse(state.only); return show(r.hparams[k]) === v;
  };
  const shown = r => !state.hidden.has(r.name) && kept(r);  // legend clicks and the filter together
  const controls = document.createElement('div');
  controls.className = 'controls';
  const select = (label, name, options, value) => `<label>${label} <select name="${name}">` +
    options.map(([v, text]) => `<option value="${v.replace(/"/g, '&quot;')}"${v === value ? ' selected' : ''}>` +
                 `${text.replace(/</g, '&lt;')}</option>`).join('') + '</select></label>';
  const plain = vs => vs.map(v => [v, v]);
  controls.innerHTML = select('x axis', 'x', plain(['epoch', 'iteration', 'elapsed_s']), state.x) +
    select('chart', 'extra', plain(D.columns), state.extra) +
    `<label><input type="checkbox" name="log"${state.log ? ' checked' : ''}> log scale</label>` +
    '<label>smoothing <input type="range" name="smooth" min="0" max="0.95" step="0.05" ' +
    `value="${state.smooth}"></label>` +
    (D.varying.length ? select('colour by', 'group', [['', 'run'], ...plain(D.varying)], state.group) +
      select('only', 'only', [['', 'all runs'], ...D.varying.flatMap(k => order(D.runs.map(r => r.hparams[k])).map(
        v => [JSON.stringify([k, v]), `${k} = ${v}`]))], state.only) : '');
  root.appendChild(controls);
  const area = document.createElement('div');
  root.appendChild(area);
  let plots = [], drawnColours = [];
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
  function eventsPlugin(colour) {
    const at = (r, epoch, last) => {
      const row = last ? r.rows.epoch.lastIndexOf(epoch) : r.rows.epoch.indexOf(epoch);
      return row < 0 ? null : (r.rows[state.x] || [])[row];
    };
    return {hooks: {draw: u => {
      const ctx = u.ctx; ctx.save(); ctx.lineWidth = 1; ctx.font = '10px sans-serif';
      const many = u.series.filter(s => s.show).length - 1 > 4;  // then a tick of the run's colour, unlabelled
      const left = u.bbox.left, right = u.bbox.left + u.bbox.width;
      D.runs.forEach((r, i) => {
        if (!u.series[i + 1].show) return;
        r.events.forEach(e => {
          const x = at(r, e.epoch, true);
          if (x == null) return;
          const px = u.valToPos(x, 'x', true);
          if (e.kind === 'rollback' && e.from != null && at(r, e.from, false) != null) {  // the range undone
            const from = Math.max(left, u.valToPos(at(r, e.from, false), 'x', true));
            ctx.fillStyle = 'rgba(214, 39, 40, 0.08)';
            ctx.fillRect(from, u.bbox.top, Math.min(px, right) - from, u.bbox.height);
          }
          if (px < left || px > right) return;
          ctx.strokeStyle = many ? colour[i] : marks[e.kind] || '#999';
          ctx.setLineDash(e.kind === 'best' || many ? [] : [4, 3]);
          ctx.beginPath(); ctx.moveTo(px, u.bbox.top);
          ctx.lineTo(px, u.bbox.top + (many ? 10 : u.bbox.height)); ctx.stroke();
          if (!many) { ctx.fillStyle = ctx.strokeStyle; ctx.fillText(e.label, px + 2, u.bbox.top + 10 + 10 * (i % 4)); }
        });
      });
      ctx.restore();
    }}};
  }
  const label = r => state.group ? `${r.name} (${state.group} = ${show(r.hparams[state.group])})` : r.name;
  function onSeries(u, i, opts) {
    if (i == null || opts.show == null) return;
    const name = D.runs[i - 1].name; opts.show ? state.hidden.delete(name) : state.hidden.add(name); save();
    plots.forEach(p => {
      if (p !== u && p.series[i] && p.series[i].show !== opts.show) p.setSeries(i, {show: opts.show});
    });
  }
  // The sweep view: each run's best value against a hyper-parameter (a category: its place in order).
  function sweep(name, width, colour) {
    const objective = D.runs[0].objective;
    const runs = D.runs.map((r, i) => [r, i]).filter(([r]) => r.objective === objective && r.best != null);
    const raw = runs.map(([r]) => r.hparams[name]);
    const numeric = raw.every(v => typeof v === 'number');
    const cats = numeric ? [] : order(raw);
    const xOf = v => numeric ? v : cats.indexOf(show(v));
    const xs = [...new Set(runs.map(([r]) => xOf(r.hparams[name])))].sort((a, b) => a - b);
    const wide = numeric && xs[0] > 0 && xs[xs.length - 1] / xs[0] >= 100;
    const box = document.createElement('div'); box.className = 'chart sweep'; box.dataset.column = name;
    box.innerHTML = `<h4>best ${objective} by ${name}</h4>`; area.appendChild(box);
    const opts = {width: Math.min(Math.max(320, width / 2 - 40), 640), height: 220,
      cursor: {sync: {key: id}, points: {size: 9}},
      scales: {x: {time: false, distr: wide ? 3 : 1, range: numeric ? (u, lo, hi) => wide ? [lo / 1.5, hi * 1.5] :
                   [lo - (hi - lo || 1) * 0.08, hi + (hi - lo || 1) * 0.08] : [-0.5, cats.length - 0.5]},
               y: {distr: state.log ? 3 : 1}},
      axes: [{label: name, ...(!numeric ? {incrs: [1], values: (u, ticks) => ticks.map(t => cats[t] ?? '')}
              : raw.every(Number.isInteger) ? {incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]} : {})}, {}],
      series: [{label: name}, ...D.runs.map((r, i) => ({label: label(r), stroke: colour[i], fill: colour[i],
        paths: () => null, points: {show: true, size: 8, fill: colour[i]},
        show: shown(r)}))],
      hooks: {setSeries: [onSeries]}};
    const plotted = new Set(runs.map(([r]) => r));
    const data = [xs, ...D.runs.map(r => xs.map(x => plotted.has(r) && xOf(r.hparams[name]) === x ? r.best : null))];
    plots.push(new uPlot(opts, data, box));
  }
  function draw() {
    plots.forEach(p => p.destroy()); plots = []; area.innerHTML = '';
    const width = Math.max(320, Math.min(root.clientWidth || 900, 1350));
    const colour = drawnColours = colors();
    for (const column of [...D.charts, state.extra]) {
      const box = document.createElement('div'); box.className = 'chart'; box.dataset.column = column;
      box.innerHTML = `<h4>${column}</h4>`; area.appendChild(box);
      const opts = {width, height: 260, plugins: [eventsPlugin(colour)], cursor: {sync: {key: id}},
        scales: {x: {time: false}, y: {distr: state.log ? 3 : 1}},
        axes: [{label: state.x}, {}],
        series: [{label: state.x}, ...D.runs.map((r, i) => ({label: label(r), stroke: colour[i], width: 1.5,
          spanGaps: true, show: shown(r), points: {size: 4}}))],
        hooks: {setSeries: [onSeries]}};
      plots.push(new uPlot(opts, series(column), box));
    }
    const curves = plots.length;
    if (D.runs.length > 1 && D.varying.length) {
      const head = document.createElement('h4'); head.className = 'sweep-title';
      head.textContent = 'Hyper-parameters against the best'; area.appendChild(head);
      D.varying.forEach(name => sweep(name, width, colour));
    }
    root.dataset.drawn = String(curves);
    root.dataset.sweep = String(plots.length - curves);
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
  root.monitor = {state, plots: () => plots, colours: () => drawnColours, draw};
  draw();
}
"""
