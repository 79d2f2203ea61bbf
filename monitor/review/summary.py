"""Summaries and comparisons of runs, as data first (pandas), text second."""
from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from monitor.diagnosis import by_level, rollbacks
from monitor.review.text import format_value, summary_text

if TYPE_CHECKING:  # Run for annotations only: load.py imports the HTML page for Run._repr_html_
    import pandas

    from monitor.review.load import Run

__all__ = ["compare", "format_value", "summary_text", "summary_record"]


def summary_record(run: Run) -> dict[str, Any]:
    """One run as a flat dict: the row :func:`compare` makes for it."""
    best = run.best
    row: dict[str, Any] = {
        "name": run.name,
        "seed": run.record.get("seed"),
        "status": run.status,
        "stop_reason": run.stop_reason,
        "epochs": run.epochs,
        "best_epoch": best.get("epoch"),
        "objective": f"{best.get('metric')} ({best.get('mode')})",
        "best_value": best.get("value"),
    }
    at_best = run.best_row()
    for key, value in at_best.items():
        if (key.startswith("val_") and key != best.get("metric")) or key == "train_loss":
            row[f"{key}@best"] = value
    problems, notes = by_level(run.findings)
    row["findings"] = ", ".join(dict.fromkeys(f.kind for f in problems)) or "-"
    row["notes"] = ", ".join(dict.fromkeys(f.kind for f in notes)) or "-"
    row["rollbacks"] = len(rollbacks(run.record.get("recoveries")))
    row["wall_s"] = run.record.get("elapsed_s")
    if "epoch_s" in run.history.columns and len(run.history):
        row["s_per_epoch"] = float(run.history["epoch_s"].median())
    for key, value in (run.record.get("hparams") or {}).items():
        row[f"hp_{key}"] = value if isinstance(value, (int, float, str, bool)) or value is None else str(value)
    row["path"] = str(run.path)
    return row


def compare(runs: Iterable[Run]) -> pandas.DataFrame:
    """One row per run, ranked by its objective (best first); runs with different objectives are
    ranked within their own objective.

    Equal best values share a rank, and the next rank skips as many (``1, 2, 2, 4``).

    Columns: ``rank, name, seed, status, stop_reason, epochs, best_epoch, objective, best_value``, the other
    validation metrics and train loss at the best epoch (``val_accuracy@best`` ...), ``findings``
    (the kinds of problem :func:`~monitor.diagnosis.diagnose` found), ``notes`` (the kinds it noted), ``rollbacks``
    (:class:`~monitor.Recovery`'s, in ``run.json``'s ``recoveries``), ``wall_s``,
    ``s_per_epoch``, hyper-parameters (``hp_lr`` ...), ``path``.

    Examples:
        .. code-block:: python

            table = compare(load_run(p) for p in Path("reports").iterdir() if (p / "run.json").exists())
            table.head()
    """
    import pandas

    runs = list(runs)
    rows = [summary_record(run) for run in runs]
    frame = pandas.DataFrame(rows)
    if frame.empty:
        return frame
    modes = [run.best.get("mode") for run in runs]
    # Sort key: within an objective, higher is better after flipping "min" objectives.
    frame["_key"] = [
        (-v if m == "min" else v) if isinstance(v, (int, float)) and not math.isnan(v) else -math.inf
        for v, m in zip(frame["best_value"], modes, strict=True)
    ]
    frame = frame.sort_values(["objective", "_key"], ascending=[True, False], kind="stable")
    frame.insert(0, "rank", frame.groupby("objective")["_key"].rank(method="min", ascending=False).astype(int))
    return frame.drop(columns="_key").reset_index(drop=True)
