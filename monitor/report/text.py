"""The text of ``monitor report``: a run in a few aligned lines. Knows runs only by what they show."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from monitor._format import format_value

__all__ = ["summary_text", "format_value"]


class _RunView(Protocol):
    """What :func:`summary_text` reads of a :class:`~monitor.report.Run`."""

    path: Path
    record: dict[str, Any]
    history: Any  # pandas.DataFrame

    @property
    def name(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def stop_reason(self) -> str | None: ...
    @property
    def epochs(self) -> int: ...
    @property
    def best(self) -> dict[str, Any]: ...
    def best_row(self) -> dict[str, Any]: ...


def summary_text(run: _RunView) -> str:
    """The run in a few aligned lines (what ``monitor report`` prints)."""
    best = run.best
    checkpoint = best.get("checkpoint")
    value = format_value(best.get("value"))
    lines = [
        ("run", f"{run.name}  ({run.path})"),
        ("status", f"{run.status}  stop reason: {run.stop_reason or '-'}"),
        ("epochs", f"{run.epochs}  ({run.record.get('elapsed_s') or 0:.1f} s)"),
        ("best", f"{best.get('metric')}={value} ({best.get('mode')}) at epoch {best.get('epoch')}"),
        ("checkpoint", str(checkpoint.relative_to(run.path)) if checkpoint else "-"),
    ]
    if run.status == "crashed":
        lines.append(("note", "run.json says running, but its process is gone: resume it to continue"))
    if run.record.get("error"):
        lines.append(("error", str(run.record["error"])))
    at_best = {k: v for k, v in run.best_row().items() if k.startswith("val_") or k == "train_loss"}
    if at_best:
        lines.append(("at best", "  ".join(f"{k}={format_value(v)}" for k, v in at_best.items())))
    return "\n".join(f"{label:<11} {text}" for label, text in lines)
