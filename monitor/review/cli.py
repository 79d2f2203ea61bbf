"""The ``monitor`` command (also ``python -m monitor``): report, compare, plot, html, export.

The only module that prints.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from monitor.review import RunDirectoryError, compare, load_run, plot_runs, to_html
from monitor.review.export import export_best
from monitor.review.text import format_value
from monitor.store._io import atomic_write_text
from monitor.store.layout import RunPaths

if TYPE_CHECKING:
    import pandas

    from monitor.review.load import Run

__all__ = ["main"]

FORMATS = ("text", "csv", "markdown", "json")


def _expand(patterns: list[str]) -> list[Path]:
    """Run folders from arguments; globs the shell left unexpanded are expanded here. Plain files
    (``reports/README.md`` in ``reports/*``) are skipped with a note; a folder that is not a run is
    searched for runs (a sweep's ``runs/sweep/trial_3``), in name order."""
    paths: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        for match in map(Path, matches):
            if match.is_file():
                print(f"monitor: skipping {str(match)!r} (a file, not a run directory)", file=sys.stderr)
            elif match.is_dir() and not RunPaths(match).record.exists():
                inside = _runs_under(match)
                paths.extend(inside or [match])  # none inside: it is reported as not a run
            else:
                paths.append(match)
    if not paths:
        raise RunDirectoryError(f"{' '.join(patterns)!r}: no run directory matches")
    return paths


def _runs_under(folder: Path) -> list[Path]:
    """The run folders (those with a ``run.json``) anywhere under ``folder``, not looking inside a run."""
    found = []
    for root, dirs, files in os.walk(folder):
        if RunPaths(root).record.name in files:
            found.append(Path(root))
            dirs.clear()
        dirs.sort()
    return sorted(found)


def _load_runs(patterns: list[str]) -> list[Run]:
    """The runs named by ``patterns``; one that cannot be read is skipped with a line on stderr, unless
    none can (then its error is raised)."""
    runs, errors = [], []
    for path in _expand(patterns):
        try:
            runs.append(load_run(path))
        except RunDirectoryError as e:
            errors.append(e)
    if not runs:
        raise errors[0]
    for error in errors:
        print(f"monitor: skipping {error}", file=sys.stderr)
    return runs


def _render(frame: pandas.DataFrame, fmt: str) -> str:
    if fmt == "csv":
        return str(frame.to_csv(index=False)).rstrip("\n")
    if fmt == "json":
        return json.dumps(json.loads(frame.to_json(orient="records")), indent=2)
    cells = [[format_value(v) for v in row] for row in frame.itertuples(index=False)]
    header = [str(c) for c in frame.columns]
    if fmt == "markdown":
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    numeric = [frame[c].dtype.kind in "iuf" for c in frame.columns]
    def line(values: list[str]) -> str:
        cells = (v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric, strict=True))
        return "  ".join(cells).rstrip()

    return "\n".join([line(header)] + [line(r) for r in cells])


def _report(args: argparse.Namespace) -> str:
    runs = _load_runs(args.run_dirs)
    if args.format == "text":
        return "\n\n".join(run.summary() for run in runs)
    return _render(compare(runs), args.format)


def _compare(args: argparse.Namespace) -> str:
    table = compare(_load_runs(args.run_dirs))
    if args.format == "text":
        table = table.drop(columns="path")
    return _render(table, args.format)


def _plot(args: argparse.Namespace) -> str:
    runs = _load_runs(args.run_dirs)
    columns = None if args.columns is None else [c.strip() for c in args.columns.split(",") if c.strip()]
    plot_runs(runs, args.output, columns=columns, log=args.log, smooth=args.smooth, x=args.x)
    return f"wrote {args.output}"


def _html(args: argparse.Namespace) -> str:
    if args.watch is not None:
        return watch_html(args.run_dirs, Path(args.output), title=args.title, every_s=args.watch)
    runs = _load_runs(args.run_dirs)
    atomic_write_text(Path(args.output), to_html(runs, title=args.title))
    return f"wrote {args.output}"


def _export(args: argparse.Namespace) -> str:
    run = load_run(args.run_dir)
    path = export_best(run, args.output)
    best = run.best
    return (f"wrote {path}: the model's state_dict at epoch {best.get('epoch')} ({best.get('metric')} "
            f"{format_value(best.get('value'))}), {path.stat().st_size / 1e6:.1f} MB; load it with "
            f"model.load_state_dict(torch.load({str(path)!r}))")


def _stamps(runs: list[Run]) -> list[float]:
    """When each run's record and history last changed (what a new page would show)."""
    paths = [path for run in runs for path in (RunPaths(run.path).record, RunPaths(run.path).history)]
    return [path.stat().st_mtime if path.exists() else 0.0 for path in paths]


def watch_html(patterns: list[str], output: Path, *, title: str, every_s: float,
               say: Callable[[str], None] = print) -> str:
    """Write the page, then again each time a run's record or history changes (checked every ``every_s``),
    until no run is live: the page reloads itself meanwhile, and says at the end that the runs ended.

    Examples:
        .. code-block:: bash

            monitor html --watch 5 reports/mlp -o mlp.html     # open mlp.html: it follows the run
    """
    if not every_s > 0:
        raise ValueError(f"--watch should be a positive number of seconds, got {every_s!r}")
    seen: list[float] | None = None
    while True:
        runs = _load_runs(patterns)
        stamps = _stamps(runs)
        live = any(run.is_live for run in runs)
        if stamps != seen or not live:
            atomic_write_text(output, to_html(runs, title=title, refresh_s=every_s))  # a reload never reads half
            seen = stamps
            say(f"wrote {output} ({'live' if live else 'the runs have ended'})")
        if not live:
            return f"wrote {output}: the runs have ended"
        time.sleep(every_s)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="monitor", description="Review monitored training runs.")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, func, help_text in (
        ("report", _report, "summarise runs"),
        ("compare", _compare, "compare runs in one table, best first"),
    ):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders (globs work)")
        sub.add_argument("--format", choices=FORMATS, default="text")
        sub.set_defaults(func=func)
    plot = commands.add_parser("plot", help="plot learning curves to a PNG")
    plot.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    plot.add_argument("-o", "--output", required=True, help="image file, e.g. curves.png")
    plot.add_argument("--columns", default=None, help="the panels: history columns, comma-separated ('loss': "
                                                       "train and validation together); default: the losses, "
                                                       "each validation metric, each learning rate")
    plot.add_argument("--log", action="store_true", help="a log scale in every panel")
    plot.add_argument("--smooth", type=float, default=0.0, help="an exponential moving average's weight on the "
                                                                 "past, in [0, 1); default 0 (none)")
    plot.add_argument("--x", choices=("epoch", "iteration", "elapsed_s"), default=None, help="the x axis")
    plot.set_defaults(func=_plot)
    page = commands.add_parser("html", help="one self-contained HTML report")
    page.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    page.add_argument("-o", "--output", required=True, help="HTML file, e.g. report.html")
    page.add_argument("--title", default="monitor report")
    page.add_argument("--watch", type=float, default=None, metavar="SECONDS",
                      help="keep the page current while a run trains: rewrite it as the runs change, checked "
                           "every SECONDS; the page reloads itself meanwhile; stop once no run is live")
    page.set_defaults(func=_html)
    export = commands.add_parser("export", help="the best model as one plain state_dict file")
    export.add_argument("run_dir", metavar="RUN_DIR")
    export.add_argument("-o", "--output", required=True, help="the file to write, e.g. best.pt")
    export.set_defaults(func=_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        print(args.func(args))
    except (RunDirectoryError, OSError, ValueError) as e:
        print(f"monitor: {e}", file=sys.stderr)
        return 2
    return 0
