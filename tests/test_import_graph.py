"""ganbench's modules import each other without circles (docs/design.md).

Every ``import`` and ``from ... import`` in every module counts as an edge, wherever it stands: a
function-level (lazy) import that hides a circle is still a circle. ``from pkg import name`` is an edge to
``pkg.name`` when that is a module, else to ``pkg``. The implicit import of a package's ``__init__`` by its
submodules is not an edge (a registry such as ganbench/archs/__init__.py imports its children by design).
"""
import ast
from pathlib import Path
from typing import Dict, List, Set

import ganbench

ROOT = Path(ganbench.__file__).resolve().parent


def module_files() -> Dict[str, Path]:
    files = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = ("ganbench",) + path.relative_to(ROOT).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def imported(name: str, path: Path, modules: Dict[str, Path]) -> Set[str]:
    """The ganbench modules that ``name`` (at ``path``) imports, lazy imports included."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([node.module] if node.module else []))
            for alias in node.names:
                if f"{base}.{alias.name}" in modules:
                    found.add(f"{base}.{alias.name}")
                elif base in modules:
                    found.add(base)
    found.discard(name)
    return found


def import_graph() -> Dict[str, Set[str]]:
    modules = module_files()
    return {name: imported(name, path, modules) for name, path in modules.items()}


def circles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circles():
    graph = import_graph()
    found = circles(graph)
    lines = [" <-> ".join(c) + "\n    " + "\n    ".join(f"{m} -> {', '.join(sorted(graph[m] & set(c)))}" for m in c)
             for c in found]
    assert not found, "import circles:\n" + "\n".join(lines)


def test_the_check_sees_a_circle_and_a_lazy_import(tmp_path):
    """The checker itself: a lazy import is an edge, and two modules importing each other are a circle."""
    lazy = tmp_path / "x.py"
    lazy.write_text("def f():\n    from ganbench import y\n")
    assert imported("ganbench.x", lazy, {"ganbench.x": lazy, "ganbench.y": tmp_path / "y.py"}) == {"ganbench.y"}
    graph = {"ganbench.x": {"ganbench.y"}, "ganbench.y": {"ganbench.x"}, "ganbench.z": {"ganbench.x"}}
    assert circles(graph) == [["ganbench.x", "ganbench.y"]]


def test_layout_packages_exist():
    """The layout docs/design.md describes: one run's life, the comparison of runs, many runs."""
    modules = module_files()
    for name in ("ganbench.run.start", "ganbench.run.loop", "ganbench.run.checkpoint", "ganbench.run.record",
                 "ganbench.report.cli", "ganbench.report.tables", "ganbench.sweep.search", "ganbench.sweep.slurm"):
        assert name in modules, name


def test_every_import_of_ganbench_resolves():
    """Each ``from ganbench... import name`` names a module, or a name its package defines: a lazy import left
    behind by a move fails here rather than when its function first runs."""
    import importlib

    modules = module_files()
    broken = []
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                broken += [f"{name}:{node.lineno} {a.name}" for a in node.names
                           if a.name.startswith("ganbench") and a.name not in modules]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(up + ([node.module] if node.module else []))
                if not base.startswith("ganbench"):
                    continue
                if base not in modules:
                    broken.append(f"{name}:{node.lineno} {base}")
                    continue
                target = importlib.import_module(base)
                broken += [f"{name}:{node.lineno} {base}.{a.name}" for a in node.names
                           if f"{base}.{a.name}" not in modules and not hasattr(target, a.name)]
    assert not broken, "imports that name no module or name:\n" + "\n".join(broken)
