"""The package's shape: its public table, torch-free review, layers without cycles."""
import ast
import subprocess
import sys
from pathlib import Path

import monitor

PACKAGE = Path(monitor.__file__).parent
# Modules of the bottom layer: the standard library and each other only (the review stands on them).
BOTTOM = {"layout", "objective", "status", "history", "record", "_io", "_crash", "_checks", "_format", "manifest",
          "lock", "writer", "_position", "diagnosis"}


def test_every_public_name_resolves_from_the_static_table():
    assert monitor.__all__[0] == "__version__" and set(monitor.__all__[1:]) == set(monitor._EXPORTS)
    for name in monitor.__all__:
        assert getattr(monitor, name) is not None
    assert monitor.attach_monitoring.__module__ == "monitor.run"


def test_reviewing_runs_imports_neither_torch_nor_ignite():
    code = ("import sys, monitor, monitor.report, monitor.cli; from monitor import load_run, compare; "
            "print(sorted(m for m in ('torch', 'ignite', 'tensorboardX') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def module_imports(path, *, type_checking=True):
    """Top-level (not function-local) imports of the file at ``path``, as module names; with those
    under ``if TYPE_CHECKING:`` unless ``type_checking`` is False."""
    tree = ast.parse(path.read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, ast.If) and not type_checking:
            continue
        nodes = node.body if isinstance(node, ast.If) else [node]
        for inner in nodes:
            if isinstance(inner, ast.Import):
                names |= {a.name for a in inner.names}
            elif isinstance(inner, ast.ImportFrom) and inner.module:
                names.add(inner.module)
    return names


def test_bottom_layer_needs_only_the_standard_library():
    for name in BOTTOM:
        for imported in module_imports(PACKAGE / f"{name}.py", type_checking=False):
            root = imported.split(".")[0]
            if root == "monitor":
                assert imported.split(".")[1] in BOTTOM, f"{name} imports {imported}"
            else:
                assert root in sys.stdlib_module_names or root == "__future__", f"{name} imports {imported}"


def test_no_import_cycles():
    modules = {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): p
               for p in PACKAGE.rglob("*.py")}
    graph = {m: {i for i in module_imports(p) if i in modules and i != m and i != "monitor"} for m, p in modules.items()}

    def visit(module, path):
        for nxt in graph[module]:
            assert nxt not in path, " -> ".join([*path, nxt])
            visit(nxt, [*path, nxt])

    for module in graph:
        if module != "monitor":
            visit(module, [module])
