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
    panels += [c for c in columns if c == "lr" or c.startswith("lr_")]  # every param group's rate
    return panels


def _panel_columns(panel: str) -> tuple[str, ...]:
    """The history columns a panel draws: ``loss`` both losses, any other panel its own column."""
    return ("train_loss", "val_loss") if panel == "loss" else (panel,)


def _smoothed(values: Any, smooth: float) -> Any:
    """An exponential moving average of ``values`` (a pandas Series) with weight ``smooth`` on the past."""
    return values if not smooth else values.ewm(alpha=1 - smooth, ignore_na=True).mean()


def _check_choices(runs: Sequence[Run], columns: Sequence[str] | None, smooth: float, x: str | None) -> None:
    if columns is not None:
        known = sorted({str(c) for run in runs for c in run.history.columns} | {"loss"})
        unknown = [c for c in columns if c not in known]
        if isinstance(columns, str) or unknown:
            raise ValueError(f"Argument columns should name history columns of these runs ({', '.join(known)}), "
                             f"got {unknown or columns!r}.")
    if not (isinstance(smooth, (int, float)) and 0 <= smooth < 1):
        raise ValueError(f"Argument smooth should be a weight in [0, 1) (0: none), got {smooth!r}.")
    if x not in (None, "epoch", "iteration", "elapsed_s"):
        raise ValueError(f"Argument x should be 'epoch', 'iteration' or 'elapsed_s' (or None), got {x!r}.")


def _x_axis(run: Run, x: str | None = None) -> tuple[Any, str, Any]:
    """The x of each history row, its label, and the x of the best row: ``x``'s column if given, else
    epochs when a run validates once per epoch, else fractional epochs (iteration / epoch length), or
    iterations where the epoch length is unknown. A run validated every N iterations is then a curve,
    not a staircase."""
    history = run.history
    best = run.best_row()
    if x is not None and x in history:
        return history[x], x, best.get(x)
    if not len(history) or not history["epoch"].duplicated().any():
        return history["epoch"], "epoch", run.best.get("epoch")
    length = run.record.get("epoch_length")
    best_iteration = best.get("iteration")
    if length:
        return (history["iteration"] / length, "epoch (by iteration)",
                None if best_iteration is None else best_iteration / length)
    return history["iteration"], "iteration", best_iteration


def plot_runs(runs: Sequence[Run], path: str | Path | None = None, *, title: str | None = None,
              columns: Sequence[str] | None = None, log: bool = False, smooth: float = 0.0,
              x: str | None = None) -> Figure:
    """Plot the learning curves of ``runs`` (one colour each) and save to ``path`` if given.

    By default one panel for the losses (train dashed, validation solid), one per other validation
    metric, one per learning rate (``lr``, ``lr_1``...); ``columns`` names the panels instead (any
    history column, or ``"loss"`` for the losses together). ``log`` draws every panel on a log scale,
    ``smooth`` (in [0, 1)) an exponential moving average, ``x`` the x axis (``"epoch"``,
    ``"iteration"`` or ``"elapsed_s"``; default epochs, fractional where a run validates within
    epochs). A run is drawn, and its marks, only in the panels of columns it has. The best epoch is
    marked with a dashed line and a dot on the objective, the epoch where a run stopped early with a
    dotted line, each rollback of :class:`~monitor.Recovery` with a red dash-dot line.

    Examples:
        .. code-block:: python

            plot_runs([load_run("reports/a"), load_run("reports/b")], "curves.png")
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    runs = list(runs)
    _check_choices(runs, columns, smooth, x)
    panels = list(columns) if columns is not None else (_panels(runs) or ["loss"])
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
            xs, x_label, best_x = _x_axis(run, x)
            label = run.name if len(runs) > 1 else None
            if not any(c in history for c in _panel_columns(panel)):
                continue  # neither its curve nor its marks where it has no data
            labels.add(x_label)
            if panel == "loss":
                if "train_loss" in history:
                    ax.plot(xs, _smoothed(history["train_loss"], smooth), "--", color=colour, alpha=0.7,
                            label=f"{label} train" if label else "train")
                if "val_loss" in history:
                    ax.plot(xs, _smoothed(history["val_loss"], smooth), "-", color=colour,
                            label=f"{label} val" if label else "val")
            else:
                ax.plot(xs, _smoothed(history[panel], smooth), "-", color=colour, label=label)
            _mark_epochs(ax, run, panel, colour, best_x, xs.iloc[-1] if len(xs) else None, x)
        ax.set_title(panel)
        ax.set_xlabel(labels.pop() if len(labels) == 1 else "epoch (by iteration where validated within epochs)")
        drawn = [r.history[c] for r in runs for c in _panel_columns(panel) if c in r.history]
        if (log or panel.startswith("lr")) and drawn and all((v.dropna() > 0).all() for v in drawn):
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


def _mark_epochs(ax: object, run: Run, panel: str, colour: str, best_x: Any, last_x: Any, x: str | None) -> None:
    best = run.best
    column = best.get("metric")
    if best_x is not None:
        ax.axvline(best_x, color=colour, linestyle="--", linewidth=0.8, alpha=0.6)  # type: ignore[attr-defined]
        if column in run.history and (panel == column or (panel == "loss" and column == "val_loss")):
            ax.plot([best_x], [best.get("value")], "o", color=colour, markersize=6)  # type: ignore[attr-defined]
    if run.status in _STOPPED and last_x is not None:
        ax.axvline(last_x, color=colour, linestyle=":", linewidth=1.0)  # type: ignore[attr-defined]
    _, label, _ = _x_axis(run, x)
    length = run.record.get("epoch_length")
    for entry in rollbacks(run.record.get("recoveries")):  # where the trouble was: the epoch, or the fraction of it
        if label == "elapsed_s":
            continue  # the record has no time of a rollback
        if label == "epoch":
            at = entry.get("epoch")
        elif label == "iteration" or not length:
            at = entry.get("iteration")
        else:
            at = entry["iteration"] / length
        if at is not None:
            ax.axvline(at, color="red", linestyle="-.", linewidth=1.0, alpha=0.7)  # type: ignore[attr-defined]


def figure_png(figure: Figure) -> bytes:
    """The figure as PNG bytes (for embedding)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    return buffer.getvalue()
