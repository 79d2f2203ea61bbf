"""The package's shape: its public table, torch-free review, layers without cycles."""
import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

import monitor

PACKAGE = Path(monitor.__file__).parent
# Each folder is a layer; a module imports from its own folder and from the folders listed here only
# (imports point down). The first three need nothing but the standard library: the review stands on them.
LAYERS = {
    "core": set(),
    "store": {"core"},
    "diagnosis": {"core", "store"},
    "runtime": {"core", "store"},
    "handlers": {"core", "store", "diagnosis", "runtime"},
    "parts": {"core", "store", "diagnosis", "runtime", "handlers"},
    "compose": {"core", "store", "diagnosis", "runtime", "handlers", "parts"},
    "review": {"core", "store", "diagnosis"},
}
STDLIB_ONLY = {"core", "store", "diagnosis"}


def test_every_public_name_resolves_from_the_static_table():
    assert monitor.__all__[0] == "__version__" and set(monitor.__all__[1:]) == set(monitor._EXPORTS)
    for name in monitor.__all__:
        assert getattr(monitor, name) is not None
    assert monitor.attach_monitoring.__module__ == "monitor.compose.attach"


def test_a_name_that_left_the_top_level_says_where_it_went():
    assert len(monitor.__all__) <= 22  # what a run needs; the rest in its layer
    for name, home in monitor._MOVED.items():
        with pytest.raises(AttributeError, match=f"monitor.{name} has moved: use {re.escape(home)}"):
            getattr(monitor, name)
        if " " not in home:  # the new home has it
            assert getattr(importlib.import_module(home), name) is not None


def test_reviewing_runs_imports_neither_torch_nor_ignite():
    code = ("import sys, monitor, monitor.review, monitor.review.cli; from monitor import load_run, compare; "
            "print(sorted(m for m in ('torch', 'ignite', 'tensorboardX') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _is_type_checking(node):
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def module_imports(path, *, type_checking=True):
    """Every import of the file at ``path`` (top-level and function-local), as module names; with those
    under ``if TYPE_CHECKING:`` unless ``type_checking`` is False."""
    names = set()

    def visit(node):
        if _is_type_checking(node) and not type_checking:
            for inner in node.orelse:
                visit(inner)
            return
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return names


def test_every_module_lives_in_a_layer_folder():
    loose = sorted(p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    assert loose == [], f"modules outside the layer folders: {loose}"
    assert sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__") == sorted(LAYERS)


def test_imports_point_down_the_layers():
    for layer, below in LAYERS.items():
        for path in (PACKAGE / layer).rglob("*.py"):
            for imported in module_imports(path, type_checking=False):
                root, _, rest = imported.partition(".")
                if root == "monitor":
                    folder = rest.split(".")[0]
                    assert folder == layer or folder in below, f"{layer}/{path.name} imports {imported}"
                elif layer in STDLIB_ONLY:
                    assert root in sys.stdlib_module_names or root == "__future__", f"{layer}/{path.name} imports {imported}"


def test_no_import_cycles():
    modules = {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): p
               for p in PACKAGE.rglob("*.py")}
    graph = {m: {i for i in module_imports(p, type_checking=False) if i in modules and i != m and i != "monitor"}
             for m, p in modules.items()}

    def visit(module, path):
        for nxt in graph[module]:
            assert nxt not in path, " -> ".join([*path, nxt])
            visit(nxt, [*path, nxt])

    for module in graph:
        if module != "monitor":
            visit(module, [module])


def test_no_function_body_in_the_package_is_over_70_lines():
    long = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                body = node.body[1:] if ast.get_docstring(node) is not None and len(node.body) > 1 else node.body
                lines = node.end_lineno - body[0].lineno + 1
                if lines > 70:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({lines} lines)")
    assert long == [], "split these into steps of one screen: " + "; ".join(long)

