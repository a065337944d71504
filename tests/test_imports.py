"""The import graph of the ``chatd`` package: no circles, layers one way.

Read with ``ast`` from the sources (nothing is imported): every ``import``
and ``from ... import`` of a chatd module, relative ones resolved, the lazy
ones inside functions included (they run too).  Imports under
``if TYPE_CHECKING:`` are left out of the circle check: they never run, and
a type-only cycle is harmless (the issue says so); the layer check counts
them, as a layer must not even name what is above it.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterator

from twisted.trial import unittest

import chatd

ROOT = os.path.dirname(os.path.abspath(chatd.__file__))

Graph = dict[str, set[str]]


def moduleFiles() -> Iterator[tuple[str, str]]:
    """(dotted name, path) of every module of the chatd package."""
    base = os.path.dirname(ROOT)
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            parts = os.path.relpath(path, base)[: -len(".py")].split(os.sep)
            if parts[-1] == "__init__":
                parts.pop()
            yield ".".join(parts), path


def _isTypeChecking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST, typing: bool) -> Iterator[tuple[ast.AST, bool]]:
    """Every node under ``node``, with whether it is type-checking only."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _isTypeChecking(child.test):
            for inner in child.body:
                yield inner, True
                yield from _walk(inner, True)
            for inner in child.orelse:
                yield inner, typing
                yield from _walk(inner, typing)
            continue
        yield child, typing
        yield from _walk(child, typing)


def imports(module: str, path: str, modules: set[str]) -> Iterator[tuple[str, bool]]:
    """(imported chatd module, type-only?) for every import in ``path``."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    for node, typing in _walk(tree, False):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:
                    yield alias.name, typing
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                if f"{base}.{alias.name}" in modules:  # a submodule
                    yield f"{base}.{alias.name}", typing
                elif base in modules:
                    yield base, typing


def importGraph(typeOnly: bool = False) -> Graph:
    """Module -> the chatd modules it imports (type-only ones if asked)."""
    files = dict(moduleFiles())
    modules = set(files)
    graph: Graph = {m: set() for m in files}
    for module, path in files.items():
        for target, typing in imports(module, path, modules):
            if target != module and (typeOnly or not typing):
                graph[module].add(target)
    return graph


def circles(graph: Graph) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan),
    each as one circle through it, sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    groups: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(_circleThrough(graph, set(g)) for g in groups)


def _circleThrough(graph: Graph, group: set[str]) -> list[str]:
    """One path a -> ... -> a inside ``group``, for the failure message."""
    start = min(group)
    paths = {start: [start]}
    todo = [start]
    while todo:
        v = todo.pop(0)
        for w in sorted(graph[v] & group):
            if w == start:
                return paths[v] + [start]
            if w not in paths:
                paths[w] = paths[v] + [w]
                todo.append(w)
    raise AssertionError(f"no circle through {group}")  # pragma: no cover


class CircleTests(unittest.SynchronousTestCase):
    def test_no_import_circles(self) -> None:
        found = circles(importGraph())
        self.assertEqual(
            found, [], "import circles:\n" + "\n".join(" -> ".join(c) for c in found)
        )

    def test_the_walk_sees_the_package(self) -> None:
        """The graph is real: the service, the tap and a worker are in it
        with the imports they have (relative and lazy ones resolved)."""
        graph = importGraph()
        self.assertIn("chatd.server.factory", graph["chatd.server.service"])
        self.assertIn("chatd.cluster.main", graph["chatd.server.tap"])  # lazy
        self.assertIn("chatd.cluster.link", graph["chatd.cluster.worker"])
        self.assertGreater(len(graph), 40)

    def test_a_circle_is_found_and_printed(self) -> None:
        graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
        self.assertEqual(circles(graph), [["a", "b", "c", "a"]])
        self.assertEqual(circles({"a": {"b"}, "b": set()}), [])


class LayerTests(unittest.SynchronousTestCase):
    """Dependencies point one way: core (its words in core.rules) <- wire
    (chatd frames) <- server <- front ends.  The core knows no wire format:
    not even in a type hint does it name chatd.wire."""

    ABOVE_CORE = (
        "chatd.wire",
        "chatd.irc",
        "chatd.server",
        "chatd.cluster",
        "chatd.web",
        "chatd.client",
        "chatd.bench",
    )

    def test_core_imports_nothing_above_it(self) -> None:
        graph = importGraph(typeOnly=True)
        wrong = sorted(
            f"{module} -> {target}"
            for module, targets in graph.items()
            if module.startswith("chatd.core")
            for target in targets
            if target.startswith(self.ABOVE_CORE)
        )
        self.assertEqual(wrong, [])

    def test_the_service_imports_no_mode_and_no_site(self) -> None:
        """The service is given its factory and sites (chatd.server.tap
        composes them): it imports neither the cluster, nor admin, nor web."""
        graph = importGraph(typeOnly=True)
        for module in (
            "chatd.server.service",
            "chatd.server.reload",
            "chatd.server.shutdown",
            "chatd.server.factory",
        ):
            wrong = sorted(
                t
                for t in graph[module]
                if t.startswith(("chatd.cluster", "chatd.web", "chatd.server.admin"))
            )
            self.assertEqual(wrong, [], module)

    #: chatd-client's parts without a reactor, a socket or a tty.
    CLIENT_PURE = (
        "chatd.client.commands",
        "chatd.client.render",
        "chatd.client.lineedit",
        "chatd.client.pacing",
        "chatd.client.inflight",
    )

    def test_the_client_points_one_way(self) -> None:
        """chatd-client: app (the command line) -> session -> console,
        connection, pipe -> the pure parts.  Only __main__ imports app; the
        pure parts name no other part of the client; below the session, the
        Session is named in type hints only (it is whom they call)."""
        typed = importGraph(typeOnly=True)
        run = importGraph()
        wrong = []
        for module, targets in typed.items():
            if not module.startswith("chatd.client."):
                continue
            client = {t for t in targets if t.startswith("chatd.client.")}
            if module != "chatd.client.__main__" and "chatd.client.app" in client:
                wrong.append(f"{module} -> chatd.client.app")
            if module in self.CLIENT_PURE:
                wrong += [f"{module} -> {t}" for t in client - set(self.CLIENT_PURE)]
            if module != "chatd.client.app" and "chatd.client.session" in run[module]:
                wrong.append(f"{module} -> chatd.client.session (at run time)")
        self.assertEqual(sorted(set(wrong)), [])
