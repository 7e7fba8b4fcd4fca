"""The house: arrows point down only (DESIGN.md).

Walks every ``import`` in ``llnbench/`` with ``ast`` (module level, inside functions and under
``TYPE_CHECKING`` alike: a reader sees them all) and fails on

- an import cycle of any length (two files of one folder importing each other included), and
- an import that runs up the layer order written below, or sideways between two peers.

Each failure names the import and its file:line.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "llnbench"

# The layer order, top to bottom: a reviewed fact, not a habit. A unit is a subpackage of
# llnbench (``jobs``) or a top-level module (``cli``); "" is ``llnbench/__init__.py`` (the
# version). A module may import its own unit and any unit of a lower layer; units that share a
# layer are peers and import neither each other nor anything above.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("__main__",),  # python -m llnbench
    ("cli",),  # Typer: options → overrides, user errors → one line
    ("command_help",),  # each command's --help body, read from conf/
    ("jobs",),  # one function per command; no Typer or Hydra below cli
    # what the jobs measure and print: analyze's instruments and modes, report's tables
    ("analysis", "reporting"),
    ("bench",),  # timing/memory cells over models and train steps; scale tables
    # model sits above train: loading a run reads train.checkpoint; train takes the model it is
    # given (jobs build it) and never imports model/
    ("model",),
    ("train",),  # loop, fine-tuning, checkpoints; reads data/'s batches and task table
    ("data",),  # corpora, GLUE/LRA tasks, tokenizer, caches
    ("tracking", "runs", "progress", "stopping"),  # run bookkeeping: metrics, dirs, bars, signals
    # typed config (from_dict; Hydra only inside functions), the shared schema, the parity kit
    # for outside mechanisms, torch.compile and device helpers
    ("config", "schema", "testing", "compiling", "devices"),
    ("attention",),  # the mechanisms and their registry: no model, no data
    ("console", "files"),  # utilities everything may use: the console, writes that fail in one line
    ("errors", ""),  # the error types (files raises PathError, an LlnbenchError)
)

# Edges known to be wrong, skipped by both checks below (test_known_edges_still_exist insists
# that each still exists). Empty is the goal; nothing belongs here without a reviewed reason.
KNOWN_EDGES: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Edge:
    source: str  # importing module, dotted
    target: str  # imported module, dotted
    path: Path
    line: int

    def where(self) -> str:
        return f"{self.path}:{self.line}: {self.source} imports {self.target}"


def module_names(root: Path) -> dict[str, Path]:
    """Dotted name → file of every module under the package folder ``root``."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = [root.name, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _imported(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """Candidate dotted names an import node brings in (most specific first for ``from``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:  # relative: resolve against the importing module's package
        package = module.split(".") if is_package else module.split(".")[:-1]
        base = package[: len(package) - node.level + 1]
        origin = ".".join(base + ([node.module] if node.module else []))
    else:
        origin = node.module or ""
    return [origin, *(f"{origin}.{alias.name}" for alias in node.names)]


def import_edges(root: Path) -> list[Edge]:
    """Every import of one module of ``root`` by another, with its file and line."""
    names = module_names(root)
    edges = []
    for module, path in names.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            candidates = _imported(node, module, path.name == "__init__.py")
            if isinstance(node, ast.ImportFrom):
                # ``from pkg import sub`` imports the submodule; ``from pkg import name`` the package
                subs = [c for c in candidates[1:] if c in names]
                targets = subs or [c for c in candidates[:1] if c in names]
            else:
                targets = [c for c in candidates if c in names]
            for target in targets:
                if target != module:
                    edges.append(Edge(module, target, path.relative_to(root.parent), node.lineno))
    return edges


def unit_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer_index(layers: Iterable[tuple[str, ...]]) -> dict[str, int]:
    return {unit: i for i, units in enumerate(layers) for unit in units}


def unlisted_units(names: Iterable[str], layers) -> list[str]:
    index = layer_index(layers)
    return sorted({unit_of(m) for m in names} - index.keys())


def upward_imports(edges: list[Edge], layers) -> list[str]:
    """Imports from a unit to a higher one, or to a peer of the same layer."""
    index = layer_index(layers)
    bad = []
    for e in edges:
        src, dst = unit_of(e.source), unit_of(e.target)
        if src == dst or src not in index or dst not in index:
            continue
        if index[dst] < index[src]:
            bad.append(f"{e.where()} (runs up: {src or 'llnbench'} is below {dst or 'llnbench'})")
        elif index[dst] == index[src]:
            bad.append(f"{e.where()} (peers {src!r} and {dst!r} share a layer)")
    return bad


def import_cycles(edges: list[Edge]) -> list[str]:
    """Each cycle (a strongly connected set of modules), with the imports that close it."""
    graph: dict[str, list[Edge]] = {}
    for e in edges:
        graph.setdefault(e.source, []).append(e)
    # Tarjan's strongly connected components, iterative (no recursion limit on deep chains)
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for start in sorted(graph):
        if start in order:
            continue
        work = [(start, iter(graph.get(start, [])))]
        order[start] = low[start] = len(order)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for e in children:
                if e.target not in order:
                    order[e.target] = low[e.target] = len(order)
                    stack.append(e.target)
                    on_stack.add(e.target)
                    work.append((e.target, iter(graph.get(e.target, []))))
                    break
                if e.target in on_stack:
                    low[node] = min(low[node], order[e.target])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == order[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(sorted(component))
    messages = []
    for component in components:
        members = set(component)
        inside = [e.where() for e in edges if e.source in members and e.target in members]
        messages.append(f"cycle {' ↔ '.join(component)}:\n    " + "\n    ".join(sorted(inside)))
    return messages


def _without_known(edges: list[Edge]) -> list[Edge]:
    return [e for e in edges if (e.source, e.target) not in KNOWN_EDGES]


@pytest.fixture(scope="module")
def edges() -> list[Edge]:
    return import_edges(PACKAGE)


def test_every_unit_has_a_layer():
    missing = unlisted_units(module_names(PACKAGE), LAYERS)
    assert not missing, f"add these units of llnbench/ to LAYERS in {__file__}: {missing}"


def test_no_import_cycle(edges):
    cycles = import_cycles(_without_known(edges))
    assert not cycles, "import cycles in llnbench/:\n" + "\n".join(cycles)


def test_imports_point_down(edges):
    bad = upward_imports(_without_known(edges), LAYERS)
    assert not bad, "imports against the layer order (LAYERS in tests/test_imports.py):\n" + (
        "\n".join(bad)
    )


def test_known_edges_still_exist(edges):
    """An allowlisted edge that is gone must leave the allowlist (it would hide its return)."""
    present = {(e.source, e.target) for e in edges}
    stale = [f"{a} → {b}" for a, b in KNOWN_EDGES if (a, b) not in present]
    assert not stale, f"remove from KNOWN_EDGES (fixed): {stale}"


def _plant(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


def test_checker_finds_a_three_module_cycle_and_names_file_and_line(tmp_path):
    pkg = _plant(tmp_path, {
        "__init__.py": "",
        "low/__init__.py": "",
        "low/a.py": "from pkg.low import b\n",
        "low/b.py": "import os\n\ndef f():\n    from pkg.low.c import g\n",
        "low/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import x\n",
    })  # fmt: skip
    cycles = import_cycles(import_edges(pkg))
    assert len(cycles) == 1
    assert "pkg.low.a ↔ pkg.low.b ↔ pkg.low.c" in cycles[0]
    assert "pkg/low/b.py:4: pkg.low.b imports pkg.low.c" in cycles[0]
    assert "pkg/low/c.py:3: pkg.low.c imports pkg.low.a" in cycles[0]


def test_checker_finds_upward_and_peer_imports(tmp_path):
    pkg = _plant(tmp_path, {
        "__init__.py": "",
        "top.py": "from pkg import low\n",  # down: fine
        "low.py": "import pkg.top\n",  # up
        "peer.py": "from pkg.low import thing\n",  # sideways
    })  # fmt: skip
    bad = upward_imports(import_edges(pkg), (("top",), ("low", "peer"), ("",)))
    assert len(bad) == 2
    assert any("pkg/low.py:1: pkg.low imports pkg.top (runs up" in b for b in bad)
    assert any("pkg.peer imports pkg.low (peers" in b for b in bad)
    assert len(import_cycles(import_edges(pkg))) == 1  # top ↔ low is also a cycle
