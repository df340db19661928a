"""The package's import graph: no cycles, and no layer imports a higher one.

Every import counts: at module level, inside functions, and the string arguments of
``__import__`` / ``importlib.import_module``. The graph is built with ``ast``, without
importing anything.

Layers, bottom to top (a module may import its own layer's or lower layers' modules):

0. ``checks``, ``config``, ``numerics``: validation, configuration, numerical helpers;
1. ``camera``, ``morphable``, ``render``, ``losses``, ``io``: the geometry, the face model, the
   renderer, the losses and file formats (checkpoints included);
2. ``viz``: figures of renders and meshes;
3. ``data``, ``models``, ``fitting``: SynthFaces suites, networks (and their registry), 3DMM fitting;
4. ``metrics``, ``train``: evaluation protocols, training loop and recipes;
5. ``reproduce``, ``bench``, ``apps``: the papers' tables, benchmarks, applications;
6. ``cli``, ``eval_cli``, ``teach``, ``notebooks``, ``book_timings``, ``book_checks``: command lines and book tooling.

Only the top layer may import a computed module name (``teach`` runs a reader's exercises,
which name their own imports). The root ``facelab/__init__.py`` is the lazy namespace of all sub-packages (it imports
them by name on attribute access only) and is left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "facelab"
LAYERS = (
    ("checks", "config", "numerics"),
    ("camera", "morphable", "render", "losses", "io"),
    ("viz",),
    ("data", "models", "fitting"),
    ("metrics", "train"),
    ("reproduce", "bench", "apps"),
    ("cli", "eval_cli", "teach", "notebooks", "book_timings", "book_checks"),
)
LAYER_OF = {name: level for level, names in enumerate(LAYERS) for name in names}
DYNAMIC_IMPORTERS = ("__import__", "import_module")
ROOT = "facelab"


def module_files(package_dir: Path = PACKAGE_DIR) -> dict[str, Path]:
    """``{"facelab.train.stages": path, "facelab.train": path/__init__.py, ...}`` (the root left out)."""
    found = {}
    for path in package_dir.rglob("*.py"):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    found.pop(ROOT, None)
    return found


def _imported_names(node: ast.AST, package: str) -> list[str]:
    """The dotted names one ``ast`` node imports (``from a import b`` gives ``a.b``; the
    nearest existing module is chosen later)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join(anchor + ([base] if base else []))
        return [f"{base}.{alias.name}" for alias in node.names]
    if isinstance(node, ast.Call) and node.args:
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        if name in DYNAMIC_IMPORTERS:
            arg = node.args[0]
            if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
                return ["<dynamic>"]
            return [arg.value]
    return []


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest module of ``modules`` that ``name`` names or lies in (``a.b.func`` -> ``a.b``)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(modules: dict[str, Path] | None = None) -> dict[str, dict[str, int]]:
    """``{module: {imported facelab module: line}}`` over every import of every module."""
    modules = modules if modules is not None else module_files()
    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: dict[str, int] = {}
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            for target in _imported_names(node, package):
                if target == "<dynamic>":
                    if top_package(name) in LAYERS[-1]:
                        continue  # book tooling imports the modules a reader's exercise names
                    raise AssertionError(f"{path}:{node.lineno}: a dynamic import of a computed name cannot be checked")
                if target == ROOT or not target.startswith(ROOT + "."):
                    continue
                resolved = _resolve(target, modules)
                if resolved and resolved != name:
                    edges.setdefault(resolved, node.lineno)
        graph[name] = edges
    return graph


def top_package(module: str) -> str:
    """``facelab.train.stages`` -> ``train``."""
    return module.split(".")[1]


def upward_imports(graph: dict[str, dict[str, int]]) -> list[str]:
    """``"a (layer i) line N imports b (layer j > i)"`` for each import of a higher layer."""
    found = []
    for module, edges in sorted(graph.items()):
        for target, line in sorted(edges.items()):
            here, there = LAYER_OF[top_package(module)], LAYER_OF[top_package(target)]
            if there > here:
                found.append(f"{module} (layer {here}) line {line} imports {target} (layer {there})")
    return found


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph.get(node, {}):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def package_graph(graph: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """The module graph collapsed to top-level sub-packages (self-edges dropped)."""
    collapsed: dict[str, dict[str, int]] = {}
    for module, edges in graph.items():
        here = top_package(module)
        for target, line in edges.items():
            if top_package(target) != here:
                collapsed.setdefault(here, {}).setdefault(top_package(target), line)
        collapsed.setdefault(here, {})
    return collapsed


@pytest.fixture(scope="module")
def graph():
    return import_graph()


def test_every_subpackage_has_a_layer(graph):
    unknown = sorted({top_package(m) for m in graph} - set(LAYER_OF))
    assert not unknown, f"add {unknown} to LAYERS in {Path(__file__).name}"


def test_no_upward_import(graph):
    assert upward_imports(graph) == []


def test_no_module_cycle(graph):
    assert cycles(graph) == []


def test_no_package_cycle(graph):
    assert cycles(package_graph(graph)) == []


def test_the_checks_catch_an_upward_import_and_a_cycle(tmp_path):
    """A made-up package: metrics imports reproduce inside a function, and two modules import each other."""
    pkg = tmp_path / ROOT
    for sub in ("metrics", "reproduce", "train"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "metrics" / "score.py").write_text("def f():\n    from facelab.reproduce.table import g\n")
    (pkg / "reproduce" / "table.py").write_text("import facelab.metrics.score\n")
    (pkg / "train" / "a.py").write_text("from . import b\n")
    (pkg / "train" / "b.py").write_text("__import__('facelab.train.a')\n")
    toy = import_graph(module_files(pkg))
    assert upward_imports(toy) == ["facelab.metrics.score (layer 4) line 2 imports facelab.reproduce.table (layer 5)"]
    assert sorted(cycles(toy)) == [["facelab.metrics.score", "facelab.reproduce.table"],
                                   ["facelab.train.a", "facelab.train.b"]]
    assert cycles(package_graph(toy)) == [["metrics", "reproduce"]]
