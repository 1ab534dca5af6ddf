"""Fails when modules of skysort import each other in a cycle, and says where.

import-linter's layers keep each stage above the ones it reads; this checks what layers
cannot see: two modules of one package (or of one layer) that import each other, directly
or through others. A cycle "works" only because Python finds a half-initialised module, or
because one of the imports was moved into a function to hide it; either way the two
modules are one concept split in two, or share something that belongs in a third.

What counts as an import (grimp, which import-linter is built on, reads them all):

* every ``import`` the code writes, at module level or inside a function: an import
  placed in a function still makes one module need the other;
* not those under ``if TYPE_CHECKING:``: they never run, and an annotation that names a
  caller's class (``model: SkyModel``) is no dependency of the code;
* not the implicit import of a package's ``__init__`` when one of its submodules is
  imported: a package that re-exports its submodules would otherwise form a cycle with
  each submodule that imports a sibling, which Python resolves. A submodule that imports
  its own package explicitly (``from skysort.evaluation.plots import ...`` inside
  ``plots/run.py``) is counted, since the ``__init__`` imports it back.

Usage: ``python scripts/check_cycles.py`` (exit status 1 and the cycles on a failure).
"""

from __future__ import annotations

import sys
from collections import deque
from itertools import pairwise

import grimp

PACKAGE = "skysort"


def import_edges(graph: grimp.ImportGraph) -> dict[str, set[str]]:
    """Each module of the package -> the modules of the package it imports."""
    return {m: set(graph.find_modules_directly_imported_by(m)) - {m}
            for m in sorted(graph.modules)}


def strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """The groups of two or more modules that each reach all the others (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    sys.setrecursionlimit(max(1000, 4 * len(edges)))
    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(groups)


def shortest_cycle(edges: dict[str, set[str]], group: list[str]) -> list[str]:
    """One shortest cycle through the group's first module: ``[a, b, ..., a]``."""
    start = group[0]
    inside = set(group)
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for nxt in sorted(edges[node] & inside):
            if nxt == start:
                path = [node]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [*reversed(path), start]
            if nxt not in came_from:
                came_from[nxt] = node
                queue.append(nxt)
    raise AssertionError(f"{start} is in a cycle but reaches no way back")


def where(graph: grimp.ImportGraph, importer: str, imported: str) -> str:
    details = graph.get_import_details(importer=importer, imported=imported)
    return "; ".join(f"line {d['line_number']}: {d['line_contents']}" for d in details)


def main() -> int:
    graph = grimp.build_graph(PACKAGE, exclude_type_checking_imports=True, cache_dir=None)
    edges = import_edges(graph)
    groups = strongly_connected(edges)
    if not groups:
        print(f"no import cycles among the {len(edges)} modules of {PACKAGE}")
        return 0
    for group in groups:
        print(f"import cycle among {len(group)} modules: {', '.join(group)}")
        cycle = shortest_cycle(edges, group)
        for importer, imported in pairwise(cycle):
            print(f"  {importer} -> {imported}  ({where(graph, importer, imported)})")
    print(f"{len(groups)} import cycle(s): move what the modules share into a module both "
          "import, or merge them")
    return 1


if __name__ == "__main__":
    sys.exit(main())
