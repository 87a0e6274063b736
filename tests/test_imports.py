"""fedcore's import graph, read from the sources with ``ast`` (nothing is imported).

Every module of the one ``fedcore`` namespace (fedcore/, and kernels/, transport/, csrc/ mapped to
fedcore.kernels, fedcore.transport, fedcore.csrc) is parsed; its imports of fedcore modules become
edges, relative ones resolved. An edge is ``top`` (runs at import time: module level, class bodies,
try/if blocks), ``late`` (inside a function or method body), ``typing`` (under ``if TYPE_CHECKING:``,
never run) or ``main`` (under ``if __name__ == "__main__":``, run only when the file is the script,
as the module ``__main__``: a fresh module, so what it imports never re-enters the module itself).
``typing`` and ``main`` edges do not make cycles; every kind counts for layering. Checked:

* algorithms never imports runtime or cli, at any level;
* no import cycle, late edges included: a late import is not a way to hide a cycle;
* no late import closes a cycle (the same fact, listed per late import so the one to move is named);
* the layer table below: a module may import its own layer and the layers listed before it only.

``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else to ``pkg``. Importing
``a.b.c`` also runs the ``__init__`` of ``a.b`` (and of ``a``), so an import also gives edges to the
target's enclosing packages, except those enclosing the importer itself (already being imported when
the importer runs: a sibling import never re-enters its own package).
"""

from __future__ import annotations

import ast
import functools
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOT = "fedcore"

# source folder -> the package it is (pyproject.toml's package-dir)
SOURCE_ROOTS: dict[str, Path] = {
    "fedcore": REPO / "fedcore",
    "fedcore.kernels": REPO / "kernels",
    "fedcore.transport": REPO / "transport",
    "fedcore.csrc": REPO / "csrc",
}

# Layers, most basic first. A module may import modules of its own layer and of layers before it,
# never of a later one. A name covers the module and everything under it. Sub-packages not in the
# intended order are placed where they belong:
#  * fedcore.csrc holds the CUDA sources fedcore.kernels builds (package data, no Python imports): kernels' layer;
#  * fedcore.configs (the packaged TOMLs, before they moved into fedcore.config): config's layer;
#  * fedcore.aggregate and fedcore.accounting are small helpers at codec's level.
# The root package fedcore (fedcore/__init__.py) is in no layer, see ``test_root_package_imports_nothing_eagerly``.
# A module in none of these fails ``test_every_module_has_a_layer``: place a new sub-package here.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("fedcore.kernels", "fedcore.csrc"),
    ("fedcore.config", "fedcore.configs"),
    ("fedcore.model",),
    ("fedcore.data",),
    ("fedcore.lora", "fedcore.fisher", "fedcore.evaluation"),
    ("fedcore.codec", "fedcore.aggregate", "fedcore.accounting"),
    ("fedcore.transport",),
    ("fedcore.privacy",),
    ("fedcore.algorithms",),
    ("fedcore.runtime",),
    ("fedcore.integrations",),
    ("fedcore.cli",),
)

# (a): what algorithms must never import
ALGORITHMS = "fedcore.algorithms"
ABOVE_ALGORITHMS = ("fedcore.runtime", "fedcore.cli")


@dataclass(frozen=True)
class Module:
    source: str
    is_package: bool
    path: str = ""  # for messages


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    kind: str  # "top", "late", "typing" or "main"
    line: int
    via: str = ""  # the module actually named, when dst is a package that import runs

    def __str__(self) -> str:
        how = f"{self.kind} import at line {self.line}"
        if self.via:
            how += f", via {self.via}"
        return f"{self.src} -> {self.dst} ({how})"


@dataclass(frozen=True)
class Graph:
    modules: Mapping[str, Module]
    edges: tuple[Edge, ...]
    unresolved: tuple[str, ...]  # fedcore imports naming no module found


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


# ---------------------------------------------------------------------------------------------
# reading the sources


def source_modules() -> dict[str, Module]:
    """Every .py file under the source roots, by its fedcore.* module name."""
    found: dict[str, Module] = {}
    for prefix, root in SOURCE_ROOTS.items():
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(root).with_suffix("").parts
            is_package = rel[-1] == "__init__"
            if is_package:
                rel = rel[:-1]
            name = ".".join((prefix, *rel))
            found[name] = Module(path.read_text(encoding="utf-8"), is_package, str(path.relative_to(REPO)))
    return found


def modules_from_sources(sources: Mapping[str, str]) -> dict[str, Module]:
    """Synthetic modules (name -> source): a name that encloses another is a package."""
    return {
        name: Module(text, any(other.startswith(name + ".") for other in sources), f"<{name}>")
        for name, text in sources.items()
    }


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _is_main_guard(test: ast.expr) -> bool:
    return (
        isinstance(test, ast.Compare)
        and isinstance(test.left, ast.Name)
        and test.left.id == "__name__"
        and len(test.ops) == 1
        and isinstance(test.ops[0], ast.Eq)
        and isinstance(test.comparators[0], ast.Constant)
        and test.comparators[0].value == "__main__"
    )


def _import_nodes(node: ast.AST, kind: str = "top") -> Iterator[tuple[ast.Import | ast.ImportFrom, str]]:
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node, kind
        return
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) and kind == "top":
        kind = "late"
    guard = isinstance(node, ast.If) and (
        "typing" if _is_type_checking(node.test) else "main" if kind == "top" and _is_main_guard(node.test) else None
    )
    if guard:
        assert isinstance(node, ast.If)
        for stmt in node.body:
            yield from _import_nodes(stmt, guard)
        for stmt in node.orelse:
            yield from _import_nodes(stmt, kind)
        return
    for child in ast.iter_child_nodes(node):
        yield from _import_nodes(child, kind)


def _targets(name: str, module: Module, node: ast.Import | ast.ImportFrom, known: Mapping[str, Module]):
    """(module named, or None if unresolved; the import as written) for each name one import binds."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            if within(alias.name, ROOT):
                yield (alias.name if alias.name in known else None), f"import {alias.name}"
        return
    if node.level:
        package = name if module.is_package else name.rpartition(".")[0]
        parts = package.split(".")
        if node.level - 1 >= len(parts):
            yield None, f"from {'.' * node.level}{node.module or ''} import ... (beyond the top package)"
            return
        base = ".".join(parts[: len(parts) - (node.level - 1)] + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    if not within(base, ROOT):
        return
    for alias in node.names:
        written = f"from {'.' * node.level}{node.module or ''} import {alias.name}"
        sub = f"{base}.{alias.name}"
        if alias.name != "*" and sub in known:
            yield sub, written
        else:
            yield (base if base in known else None), written


def build_graph(modules: Mapping[str, Module]) -> Graph:
    edges: list[Edge] = []
    unresolved: list[str] = []
    for name, module in modules.items():
        tree = ast.parse(module.source, filename=module.path)
        for node, kind in _import_nodes(tree):
            for target, written in _targets(name, module, node, modules):
                if target is None:
                    unresolved.append(f"{module.path}:{node.lineno}: {written}")
                    continue
                if target != name:
                    edges.append(Edge(name, target, kind, node.lineno))
                # the enclosing packages that import runs (not the importer's own: they are running)
                parts = target.split(".")
                for i in range(len(parts) - 1, 0, -1):
                    package = ".".join(parts[:i])
                    if not within(name, package) and package in modules:
                        edges.append(Edge(name, package, kind, node.lineno, via=target))
    # one edge per (src, dst, kind, line, via): `from x import a, b` names x twice
    return Graph(dict(modules), tuple(dict.fromkeys(edges)), tuple(dict.fromkeys(unresolved)))


@functools.cache
def fedcore_graph() -> Graph:
    return build_graph(source_modules())


# ---------------------------------------------------------------------------------------------
# the checks, as functions of a graph (so the self-test can run them on synthetic sources)


def runtime_edges(graph: Graph) -> dict[str, list[Edge]]:
    """Edges that can re-enter an importer (top-level and late), by src: one per (src, dst), the
    first top-level one if any (so a cycle is shown by its eager imports where it has them)."""
    out: dict[str, dict[str, Edge]] = {}
    for edge in graph.edges:
        if edge.kind in ("top", "late"):
            by_dst = out.setdefault(edge.src, {})
            if edge.dst not in by_dst or (by_dst[edge.dst].kind == "late" and edge.kind == "top"):
                by_dst[edge.dst] = edge
    return {src: list(by_dst.values()) for src, by_dst in out.items()}


def shortest_path(adj: Mapping[str, list[Edge]], start: str, goal: str, allowed: set[str] | None = None):
    """The shortest edge path start ->* goal (breadth first), or None."""
    back: dict[str, Edge | None] = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for edge in adj.get(node, ()):
            if allowed is not None and edge.dst not in allowed:
                continue
            if edge.dst == goal:
                path = [edge]
                cur = back[node]
                while cur is not None:
                    path.append(cur)
                    cur = back[cur.src]
                return path[::-1]
            if edge.dst not in back:
                back[edge.dst] = edge
                queue.append(edge.dst)
    return None


def strongly_connected(adj: Mapping[str, list[Edge]], nodes: list[str]) -> list[list[str]]:
    """Tarjan's components of more than one module, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    comps: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for edge in adj.get(v, ()):
            w = edge.dst
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    for v in nodes:
        if v not in index:
            visit(v)
    return sorted(comps)


def format_path(path: list[Edge]) -> str:
    hops = [path[0].src]
    for edge in path:
        tag = f"{edge.kind}:{edge.line}" + (f" via {edge.via}" if edge.via else "")
        hops.append(f"-[{tag}]-> {edge.dst}")
    return " ".join(hops)


def find_cycles(graph: Graph) -> list[str]:
    """One shortest cycle per strongly connected component (top-level and late edges)."""
    adj = runtime_edges(graph)
    found = []
    for comp in strongly_connected(adj, sorted(graph.modules)):
        members = set(comp)
        start = comp[0]
        path = shortest_path(adj, start, start, members)
        assert path is not None
        found.append(f"cycle among {len(comp)} modules {comp}: {format_path(path)}")
    return found


def late_imports_closing_cycles(graph: Graph) -> list[str]:
    """Late imports u -> v where v imports its way back to u: each hides a cycle."""
    adj = runtime_edges(graph)
    found = []
    for edge in graph.edges:
        if edge.kind != "late":
            continue
        back = shortest_path(adj, edge.dst, edge.src)
        if back is not None:
            found.append(f"{edge} closes the cycle: {format_path([edge, *back])}")
    return sorted(set(found))


def algorithms_importing_above(graph: Graph) -> list[str]:
    return sorted(
        str(edge)
        for edge in graph.edges
        if within(edge.src, ALGORITHMS) and any(within(edge.dst, above) for above in ABOVE_ALGORITHMS)
    )


def layer_of(name: str) -> int | None:
    best: tuple[int, int] | None = None  # (prefix length, layer)
    for i, names in enumerate(LAYERS):
        for prefix in names:
            if within(name, prefix) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), i)
    return None if best is None else best[1]


def layer_name(i: int) -> str:
    return "|".join(LAYERS[i])


def layering_violations(graph: Graph, layer: int | None = None) -> list[str]:
    """Edges (any kind) from a module to a later layer; only those from ``layer`` when given.

    Edges into the root package (``from fedcore import __version__``) are fine from anywhere, and
    the root's own imports are checked by ``test_root_package_imports_nothing_eagerly``."""
    found = []
    for edge in graph.edges:
        if edge.src == ROOT or edge.dst == ROOT:
            continue
        src, dst = layer_of(edge.src), layer_of(edge.dst)
        if src is None or dst is None or (layer is not None and src != layer):
            continue  # modules without a layer fail test_every_module_has_a_layer
        if dst > src:
            found.append(f"{edge}: layer {layer_name(src)} imports the later layer {layer_name(dst)}")
    return sorted(found)


def _report(found: list[str]) -> str:
    return f"{len(found)} found:\n  " + "\n  ".join(found)


# ---------------------------------------------------------------------------------------------
# fedcore itself


def test_sources_are_found_and_parsed():
    graph = fedcore_graph()
    for name in ("fedcore", "fedcore.kernels", "fedcore.codec.base", "fedcore.transport.wire", "fedcore.cli"):
        assert name in graph.modules
    assert len(graph.edges) > 100  # the walker sees fedcore's imports (and so cannot pass vacuously)


def test_every_fedcore_import_resolves():
    # an import naming no module found means a moved module or a source folder the walker misses
    assert not fedcore_graph().unresolved, _report(list(fedcore_graph().unresolved))


def test_every_module_has_a_layer():
    missing = sorted(name for name in fedcore_graph().modules if name != ROOT and layer_of(name) is None)
    assert not missing, f"modules in no layer (add their package to LAYERS): {missing}"


def test_root_package_imports_nothing_eagerly():
    # fedcore/__init__.py runs before every fedcore module (a parent package is imported first), so
    # a top-level fedcore import there would make every module depend on that one, and on what it
    # imports: a cycle through everything. Today it imports only os (to extend __path__ in a bare
    # checkout). It is in no layer: other modules may read ``fedcore.__version__``, and a lazy
    # re-export (a PEP 562 ``__getattr__``, a late import) could name any layer, like the cli; such
    # late imports would still count as edges for the cycle checks.
    eager = [str(e) for e in fedcore_graph().edges if e.src == ROOT and e.kind != "late"]
    assert not eager, _report(eager)


def test_algorithms_never_import_runtime_or_cli():
    found = algorithms_importing_above(fedcore_graph())
    assert not found, _report(found)


def test_no_import_cycles():
    found = find_cycles(fedcore_graph())
    assert not found, _report(found)


def test_no_late_import_hides_a_cycle():
    found = late_imports_closing_cycles(fedcore_graph())
    assert not found, _report(found)


@pytest.mark.parametrize("layer", range(len(LAYERS)), ids=[layer_name(i) for i in range(len(LAYERS))])
def test_layering(layer):
    found = layering_violations(fedcore_graph(), layer)
    assert not found, _report(found)


# ---------------------------------------------------------------------------------------------
# the checker on synthetic sources: it finds what it is for, and nothing in clean code

SYNTHETIC = {
    "fedcore": "",
    "fedcore.kernels": "from .ops import op\n",
    "fedcore.kernels.ops": "def op():\n    return 1\n",
    "fedcore.model": "from . import parts\n",
    "fedcore.model.parts": "from fedcore.kernels import op\n",
    "fedcore.codec": "from .base import Codec\n",
    # the cycle codec.base -> transport.wire -> codec.base hidden by a late import
    "fedcore.codec.base": (
        "import torch\n\nclass Codec:\n    def check(self):\n        from fedcore.transport.wire import DTYPES\n"
        "        return DTYPES\n"
    ),
    "fedcore.transport": "",
    "fedcore.transport.wire": "from ..codec.base import Codec\nDTYPES = {}\n",
    "fedcore.algorithms": "",
    "fedcore.algorithms.bcd": "",
    # algorithms -> runtime (late), and back: a second hidden cycle
    "fedcore.algorithms.bcd.runner": "def run():\n    from fedcore.runtime import launch\n    return launch\n",
    "fedcore.runtime": "",
    "fedcore.runtime.launch": "from fedcore.algorithms.bcd.runner import run\n",
    # a script's `__main__` block importing a module that imports this one: not a cycle (it runs as __main__)
    "fedcore.runtime.spawn": 'def spawn():\n    pass\n\nif __name__ == "__main__":\n    from .entry import main\n',
    "fedcore.runtime.entry": "from .spawn import spawn\n",
    # a typing-only import of a later layer: no cycle, but a layering violation
    "fedcore.data": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from fedcore.lora import x\n",
    "fedcore.lora": "from fedcore.data import y\n",
}


def test_checker_finds_a_cycle_hidden_by_a_late_import_and_algorithms_importing_runtime():
    graph = build_graph(modules_from_sources(SYNTHETIC))
    assert not graph.unresolved, graph.unresolved

    cycles = find_cycles(graph)
    assert len(cycles) == 2, cycles
    hidden = next(c for c in cycles if "fedcore.codec.base" in c)
    assert "fedcore.transport.wire" in hidden and "late:5" in hidden and "top:1" in hidden
    assert any("fedcore.runtime.launch" in c and "fedcore.algorithms.bcd.runner" in c for c in cycles)

    late = late_imports_closing_cycles(graph)
    assert len(late) == 2, late
    assert any(c.startswith("fedcore.codec.base -> fedcore.transport.wire (late import at line 5)") for c in late)
    assert any(c.startswith("fedcore.algorithms.bcd.runner -> fedcore.runtime.launch (late") for c in late)

    above = algorithms_importing_above(graph)
    # `from fedcore.runtime import launch` names the module fedcore.runtime.launch (and runs fedcore.runtime)
    assert above == sorted(
        [
            "fedcore.algorithms.bcd.runner -> fedcore.runtime (late import at line 2, via fedcore.runtime.launch)",
            "fedcore.algorithms.bcd.runner -> fedcore.runtime.launch (late import at line 2)",
        ]
    ), above

    # every edge into a later layer, whatever its kind: the typing-only data -> lora (no cycle: it never
    # runs), the late codec.base -> transport.wire, the late algorithms -> runtime
    layering = {tuple(v.split(" (")[0].split(" -> ")) for v in layering_violations(graph)}
    assert layering == {
        ("fedcore.data", "fedcore.lora"),
        ("fedcore.codec.base", "fedcore.transport.wire"),
        ("fedcore.codec.base", "fedcore.transport"),
        ("fedcore.algorithms.bcd.runner", "fedcore.runtime.launch"),
        ("fedcore.algorithms.bcd.runner", "fedcore.runtime"),
    }, layering
    assert layering_violations(graph, layer_of("fedcore.kernels")) == []
    assert len(layering_violations(graph, layer_of("fedcore.data"))) == 1


def test_checker_resolves_relative_and_package_imports():
    edges = {(e.src, e.dst, e.kind, e.via) for e in build_graph(modules_from_sources(SYNTHETIC)).edges}
    assert ("fedcore.kernels", "fedcore.kernels.ops", "top", "") in edges  # `from .ops import` in a package
    assert ("fedcore.model", "fedcore.model.parts", "top", "") in edges  # `from . import parts`: the module
    assert ("fedcore.model.parts", "fedcore.kernels", "top", "") in edges  # a name from a package: the package
    assert ("fedcore.transport.wire", "fedcore.codec.base", "top", "") in edges  # `from ..codec.base import`
    assert ("fedcore.transport.wire", "fedcore.codec", "top", "fedcore.codec.base") in edges  # runs its package
    assert ("fedcore.runtime.spawn", "fedcore.runtime.entry", "main", "") in edges  # under `if __name__ == ...`
    assert ("fedcore.data", "fedcore.lora", "typing", "") in edges
    # a module never gets an edge to its own enclosing packages (they are already being imported)
    assert not any(dst in ("fedcore", "fedcore.transport") for src, dst, *_ in edges if src == "fedcore.transport.wire")


def test_checker_is_quiet_on_clean_sources():
    clean = {
        name: text
        for name, text in SYNTHETIC.items()
        if name not in ("fedcore.codec.base", "fedcore.algorithms.bcd.runner", "fedcore.data")
    }
    clean["fedcore.codec.base"] = "def check():\n    from fedcore.kernels import op\n    return op\n"
    clean["fedcore.algorithms.bcd.runner"] = "from ...codec import Codec\n\ndef run():\n    return Codec\n"
    clean["fedcore.data"] = ""
    graph = build_graph(modules_from_sources(clean))
    assert not graph.unresolved
    assert find_cycles(graph) == []
    assert late_imports_closing_cycles(graph) == []
    assert algorithms_importing_above(graph) == []
    assert layering_violations(graph) == []


def test_checker_reports_unresolved_imports():
    graph = build_graph(modules_from_sources({"fedcore": "", "fedcore.a": "from fedcore.gone import x\n"}))
    assert graph.unresolved == ("<fedcore.a>:1: from fedcore.gone import x",)
