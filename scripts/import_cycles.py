"""Fail when any two modules of modelyard import each other, directly or through others.

import-linter holds the layers; this holds what it does not: no loop anywhere, including
imports inside functions (grimp, import-linter's graph, reads every import statement).
Loops between packages count too: a package imports what its modules import.
"""

from __future__ import annotations

import sys

import grimp


def strongly_connected(nodes: set[str], edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative: the groups of nodes that reach each other."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(nodes):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    found.append(sorted(group))
    return found


def package_of(module: str, depth: int) -> str:
    return ".".join(module.split(".")[:depth])


def main() -> int:
    graph = grimp.build_graph("modelyard", exclude_type_checking_imports=True)  # annotations never run
    modules = set(graph.modules)
    loops: list[tuple[str, list[str]]] = []
    for depth in (None, 3, 2):  # modules; then rooms (modelyard.platform.services); then parts (modelyard.edge)
        edges: dict[str, set[str]] = {}
        nodes: set[str] = set()
        for importer in modules:
            a = importer if depth is None else package_of(importer, depth)
            nodes.add(a)
            for imported in graph.find_modules_directly_imported_by(importer):
                b = imported if depth is None else package_of(imported, depth)
                if a != b:
                    edges.setdefault(a, set()).add(b)
        what = "modules" if depth is None else f"packages at depth {depth}"
        loops += [(what, group) for group in strongly_connected(nodes, edges)]
    for what, group in loops:
        print(f"import loop between {what}: {' <-> '.join(group)}", file=sys.stderr)
    if not loops:
        print(f"no import loops among {len(modules)} modules of modelyard, their rooms or their parts")
    return 1 if loops else 0


if __name__ == "__main__":
    sys.exit(main())
