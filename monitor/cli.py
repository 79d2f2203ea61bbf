"""The ``monitor`` command (also ``python -m monitor``). The only module that prints."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from monitor.history import History
from monitor.record import read_record
from monitor.rundir import RunPaths

__all__ = ["main"]


def _fmt(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def report(run_dir: Path) -> str:
    """A short text summary of one run, read from ``run.json`` and ``history.csv``."""
    paths = RunPaths(run_dir)
    if not paths.root.is_dir():
        raise FileNotFoundError(f"{str(run_dir)!r}: no such run directory")
    record = read_record(paths.root)
    if record is None:
        raise FileNotFoundError(f"{str(run_dir)!r}: not a run directory (no run.json)")
    best = record.get("best") or {}
    lines = [
        f"run         {record.get('name', paths.root.name)}  ({paths.root})",
        f"status      {record.get('status')}  stop reason: {record.get('stop_reason') or '-'}",
        f"epochs      {record.get('epochs_completed')}  ({record.get('elapsed_s', 0):.1f} s)",
        f"best        {best.get('metric')}={_fmt(best.get('value'))} ({best.get('mode')}) at epoch {best.get('epoch')}",
        f"checkpoint  {best.get('checkpoint') or '-'}",
    ]
    if record.get("error"):
        lines.append(f"error       {record['error']}")
    rows = History(paths.history).read_rows() if paths.history.exists() else []
    best_rows = [r for r in rows if r.get("epoch") == best.get("epoch")]
    if best_rows:
        metrics = {k: v for k, v in best_rows[0].items() if k.startswith("val_") or k == "train_loss"}
        lines.append("at best     " + "  ".join(f"{k}={_fmt(v)}" for k, v in metrics.items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="monitor", description="Review monitored training runs.")
    commands = parser.add_subparsers(dest="command", required=True)
    report_parser = commands.add_parser("report", help="summarise a run directory")
    report_parser.add_argument("run_dir", type=Path)
    args = parser.parse_args(argv)
    try:
        print(report(args.run_dir))
    except (FileNotFoundError, ValueError) as e:
        print(f"monitor: {e}", file=sys.stderr)
        return 2
    return 0
