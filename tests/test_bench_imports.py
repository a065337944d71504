"""chatd-bench stays a client: nothing in chatd/bench imports the server."""

from __future__ import annotations

import ast
from pathlib import Path

from twisted.trial import unittest

import chatd.bench

BENCH = Path(chatd.bench.__file__).parent
#: Packages chatd-bench must not import (see chatd/bench/__init__.py).
FORBIDDEN = ("chatd.server", "chatd.core", "chatd.cluster")


def imported(source: str, package: str) -> set[str]:
    """Every module a module of ``package`` imports, anywhere in it (in
    functions and ``if TYPE_CHECKING:`` too), relative imports resolved,
    ``from a import b`` counted as both ``a`` and ``a.b``."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def forbidden(names: set[str]) -> set[str]:
    return {n for n in names for f in FORBIDDEN if n == f or n.startswith(f + ".")}


class ImportTests(unittest.SynchronousTestCase):
    def test_bench_imports_no_server_code(self):
        files = sorted(BENCH.glob("*.py"))
        self.assertIn(BENCH / "load.py", files)  # the walk finds the package
        found = {
            f"{path.name}: {name}"
            for path in files
            for name in forbidden(imported(path.read_text(), "chatd.bench"))
        }
        self.assertEqual(found, set())

    def test_every_way_of_importing_is_caught(self):
        """The walker sees plain, from, relative, nested and guarded imports."""
        cases = {
            "import chatd.server.config": "chatd.server.config",
            "from chatd.core import stats": "chatd.core",
            "from chatd import cluster": "chatd.cluster",
            "from .. import core": "chatd.core",
            "from ..server.config import Options": "chatd.server.config",
            "def f():\n    import chatd.cluster.node": "chatd.cluster.node",
            "if TYPE_CHECKING:\n    from chatd.server import x": "chatd.server",
        }
        for source, name in cases.items():
            self.assertIn(name, forbidden(imported(source, "chatd.bench")), source)

    def test_allowed_imports_pass(self):
        source = (
            "import chatd.wire\nfrom chatd.netutil import hostport\n"
            "from . import checks\nfrom chatd.bench.serverish import x\n"
            "import chatd.servers_elsewhere"
        )
        self.assertEqual(forbidden(imported(source, "chatd.bench")), set())
