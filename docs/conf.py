"""Sphinx configuration of monitor's docs: the guides (Markdown, MyST) and the API from the docstrings.

    make docs          # docs/_build/html/index.html; warnings are errors
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from monitor.core.version import VERSION  # noqa: E402

project = "monitor"
author = "the monitor team"
release = version = VERSION

extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build"]
myst_heading_anchors = 3  # links to a section by its title: usage.md#settings-and-parts

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False

# Every reference to monitor's own objects must resolve (a broken one fails the build). Other libraries'
# objects are not documented here (intersphinx would need the network): their names are let through.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(torch|ignite|pandas|matplotlib|tqdm|tensorboardX|optuna|mlflow|numpy|collections|pathlib|typing"
               r"|datetime|logging|io|enum|os|types)(\..*)?"),
    (r"py:.*", r"(Engine|Path|Tensor|nn\.Module|Any|Callable|Iterable|Mapping|Sequence|IO|Events|Figure|Dataset"
               r"|CallableEventWithFilter|EventsList|State|Metric|Optimizer|DataLoader)"),
    (r"py:class", r"monitor\.runtime\.distributed\.T"),  # a TypeVar
    (r"py:.*", r"monitor\.(.*\.)?_\w+(\..*)?"),  # private names in signatures: not part of the API
]

html_theme = "furo"
html_title = f"monitor {VERSION}"


def _write_cli_help() -> None:
    """The `monitor` command's help, every subcommand's, for reference/cli.md: taken from the parser
    at each build, so the page cannot drift from the command."""
    import os

    os.environ["COLUMNS"] = "88"  # argparse wraps at the terminal's width; a page has none
    from monitor.review.cli import build_parser

    parser = build_parser()
    [commands] = [action for action in parser._actions if action.choices and action.dest == "command"]
    parts = [parser.format_help()] + [sub.format_help() for sub in commands.choices.values()]
    (ROOT / "docs" / "reference" / "cli-help.txt").write_text("\n".join(parts))


_write_cli_help()
