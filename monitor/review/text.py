"""The text of ``monitor report``: a run in a few aligned lines. Knows runs only by what they show."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from monitor.core._format import format_value
from monitor.diagnosis import by_level, rollbacks

__all__ = ["summary_text", "format_value", "stop_reason_text"]


class _RunView(Protocol):
    """What :func:`summary_text` reads of a :class:`~monitor.review.Run`."""

    path: Path
    record: dict[str, Any]
    history: Any  # pandas.DataFrame

    @property
    def name(self) -> str: ...
    @property
    def damage(self) -> list[str]: ...
    @property
    def status(self) -> str: ...
    @property
    def stop_reason(self) -> str | None: ...
    @property
    def epochs(self) -> int: ...
    @property
    def best(self) -> dict[str, Any]: ...
    def best_row(self) -> dict[str, Any]: ...
    @property
    def findings(self) -> list[Any]: ...


def stop_reason_text(record: dict[str, Any], status: str | None = None) -> str:
    """Why the run stopped, in words, from its ``run.json`` (``status``: the review's, e.g. ``crashed``).

    Examples:
        >>> stop_reason_text({"stop_reason": "patience_exhausted", "early_stopping": {"patience": 10},
        ...                   "best": {"metric": "val_loss"}})
        'no improvement of val_loss in 10 validations (early stopping)'
    """
    metric = (record.get("best") or {}).get("metric") or "the objective"
    stopping = record.get("early_stopping") or {}
    status = status or record.get("status")
    texts = {
        "patience_exhausted": f"no improvement of {metric} in {stopping.get('patience')} validations (early stopping)",
        "target_reached": f"{metric} reached the target {stopping.get('target')}",
        "diverged": f"{metric} got worse than the divergence limit {stopping.get('divergence')}",
        "nonfinite_metric": f"{metric} was NaN or infinite",
        "nonfinite_loss": "the training loss was NaN or infinite",
        "max_epochs": f"it trained all {record.get('max_epochs')} epochs",
        "interrupted": "it was interrupted (SIGTERM or Ctrl-C); resume it to continue",
        "time_limit": "it reached its time limit (max_time); resume it with a larger one to continue",
        "failed": f"it failed: {record.get('error') or 'an error'}",
        "terminated": "a handler outside monitor called trainer.terminate()",
        "pruned": f"the Optuna pruner ended the trial ({metric} not good enough beside the other trials' "
                  "at the same epoch)",
    }
    if any(isinstance(e, dict) and e.get("gave_up") for e in record.get("recoveries") or ()):
        tried = len(rollbacks(record.get("recoveries")))
        texts["diverged"] = f"the training loss blew up again after {tried} rollbacks, and Recovery gave up"
        texts["recovery_failed"] = (f"Recovery rolled back {tried} times and the trouble came back, or {metric} did "
                                    "not come back to its level from before it; the best weights were kept")
        texts["nonfinite_loss"] = (f"the training loss was NaN or infinite again after {tried} rollbacks "
                                   "(Recovery gave up)")
    reason = record.get("stop_reason")
    if reason in texts:
        return texts[reason]
    if status == "crashed":
        return "its process is gone (killed, or its machine lost) while running; resume it to continue"
    return "it is still running" if status == "running" else "-"


def summary_text(run: _RunView) -> str:
    """The run in a few aligned lines (what ``monitor report`` prints)."""
    best = run.best
    checkpoint = best.get("checkpoint")
    value = format_value(best.get("value"))
    lines = [
        ("run", f"{run.name}  ({run.path})"),
        ("status", f"{run.status}  stop reason: {run.stop_reason or '-'}"),
        ("why", stop_reason_text(run.record, run.status)),
        ("epochs", f"{run.epochs}  ({run.record.get('elapsed_s') or 0:.1f} s)"),
        ("best", f"{best.get('metric')}={value} ({best.get('mode')}) at epoch {best.get('epoch')}"
                 if best.get("value") is not None else f"no best value of {best.get('metric')} ({best.get('mode')})"),
        ("checkpoint", str(checkpoint.relative_to(run.path)) if checkpoint else "-"),
    ]
    if run.status == "crashed":
        lines.append(("note", "run.json says running, but its process is gone: resume it to continue"))
    if run.record.get("error"):
        lines.append(("error", str(run.record["error"])))
    lines += [("damaged", damage) for damage in run.damage]
    at_best = {k: v for k, v in run.best_row().items() if k.startswith("val_") or k == "train_loss"}
    if at_best:
        lines.append(("at best", "  ".join(f"{k}={format_value(v)}" for k, v in at_best.items())))
    problems, notes = by_level(run.findings)
    lines.append(("findings", "none" if not problems else problems[0].message()))
    lines += [("", finding.message()) for finding in problems[1:]]
    lines += [("notes" if k == 0 else "", note.message()) for k, note in enumerate(notes)]
    return "\n".join(f"{label:<11} {text}" for label, text in lines)
