"""Learning curves with matplotlib (Agg canvas, no display, no pyplot global state)."""
from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monitor.diagnosis import rollbacks

if TYPE_CHECKING:  # Run for annotations only: load.py imports the HTML page for Run._repr_html_
    from matplotlib.figure import Figure

    from monitor.review.load import Run

__all__ = ["plot_runs", "figure_png"]

_STOPPED = {"early_stopped", "diverged", "interrupted", "failed"}


def _panels(runs: Sequence[Run]) -> list[str]:
    """``loss`` (train and validation), each other validation metric, then ``lr`` if logged."""
    columns: list[str] = []
    for run in runs:
        columns += [c for c in run.history.columns if c not in columns]
    panels = ["loss"] if {"train_loss", "val_loss"} & set(columns) else []
    panels += [c for c in columns if c.startswith("val_") and c != "val_loss"]
    if "lr" in columns:
        panels.append("lr")
    return panels


def _x_axis(run: Run) -> tuple[Any, str, Any]:
    """The x of each history row, its label, and the x of the best row: epochs when a run validates
    once per epoch, else fractional epochs (iteration / epoch length), or iterations where the epoch
    length is unknown. A run validated every N iterations is then a curve, not a staircase."""
    history = run.history
    best = run.best_row()
    if not len(history) or not history["epoch"].duplicated().any():
        return history["epoch"], "epoch", run.best.get("epoch")
    length = run.record.get("epoch_length")
    best_iteration = best.get("iteration")
    if length:
        return (history["iteration"] / length, "epoch (by iteration)",
                None if best_iteration is None else best_iteration / length)
    return history["iteration"], "iteration", best_iteration


def plot_runs(runs: Sequence[Run], path: str | Path | None = None, *, title: str | None = None) -> Figure:
    """Plot the learning curves of ``runs`` (one colour each) and save to ``path`` if given.

    One panel for the losses (train dashed, validation solid), one per other validation metric, one
    for the learning rate; the best epoch is marked with a dashed line and a dot on the objective,
    the epoch where a run stopped early with a dotted line, each rollback of :class:`~monitor.Recovery`
    with a red dash-dot line.

    Examples:
        .. code-block:: python

            plot_runs([load_run("reports/a"), load_run("reports/b")], "curves.png")
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    runs = list(runs)
    panels = _panels(runs) or ["loss"]
    cols = min(2, len(panels))
    rows = math.ceil(len(panels) / cols)
    figure = Figure(figsize=(6.5 * cols, 3.6 * rows), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, cols, squeeze=False).ravel()
    colours = [f"C{i % 10}" for i in range(len(runs))]
    for ax, panel in zip(axes, panels, strict=False):
        labels = set()
        for run, colour in zip(runs, colours, strict=True):
            history = run.history
            x, x_label, best_x = _x_axis(run)
            labels.add(x_label)
            label = run.name if len(runs) > 1 else None
            if panel == "loss":
                if "train_loss" in history:
                    ax.plot(x, history["train_loss"], "--", color=colour, alpha=0.7,
                            label=f"{label} train" if label else "train")
                if "val_loss" in history:
                    ax.plot(x, history["val_loss"], "-", color=colour,
                            label=f"{label} val" if label else "val")
            elif panel in history:
                ax.plot(x, history[panel], "-", color=colour, label=label)
            _mark_epochs(ax, run, panel, colour, best_x, x.iloc[-1] if len(x) else None)
        ax.set_title(panel)
        ax.set_xlabel(labels.pop() if len(labels) == 1 else "epoch (by iteration where validated within epochs)")
        if panel == "lr" and all((r.history["lr"] > 0).all() for r in runs if "lr" in r.history):
            ax.set_yscale("log")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
    from matplotlib.lines import Line2D

    axes[0].legend(
        handles=[*axes[0].get_legend_handles_labels()[0],
                 Line2D([], [], color="grey", linestyle="--", linewidth=0.8, label="best epoch"),
                 Line2D([], [], color="grey", linestyle=":", linewidth=1.0, label="stopped"),
                 *([Line2D([], [], color="red", linestyle="-.", linewidth=1.0, label="rolled back")]
                   if any(rollbacks(r.record.get("recoveries")) for r in runs) else [])],
        fontsize="small",
    )
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    if title:
        figure.suptitle(title)
    if path is not None:
        figure.savefig(path, dpi=100)
    return figure


def _mark_epochs(ax: object, run: Run, panel: str, colour: str, best_x: Any, last_x: Any) -> None:
    best = run.best
    column = best.get("metric")
    if best_x is not None:
        ax.axvline(best_x, color=colour, linestyle="--", linewidth=0.8, alpha=0.6)  # type: ignore[attr-defined]
        if column in run.history and (panel == column or (panel == "loss" and column == "val_loss")):
            ax.plot([best_x], [best.get("value")], "o", color=colour, markersize=6)  # type: ignore[attr-defined]
    if run.status in _STOPPED and last_x is not None:
        ax.axvline(last_x, color=colour, linestyle=":", linewidth=1.0)  # type: ignore[attr-defined]
    _, label, _ = _x_axis(run)
    length = run.record.get("epoch_length")
    for entry in rollbacks(run.record.get("recoveries")):  # where the trouble was: the epoch, or the fraction of it
        if label == "epoch":
            x = entry.get("epoch")
        elif label == "iteration" or not length:
            x = entry.get("iteration")
        else:
            x = entry["iteration"] / length
        if x is not None:
            ax.axvline(x, color="red", linestyle="-.", linewidth=1.0, alpha=0.7)  # type: ignore[attr-defined]


def figure_png(figure: Figure) -> bytes:
    """The figure as PNG bytes (for embedding)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    return buffer.getvalue()
