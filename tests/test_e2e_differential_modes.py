"""A short run of bench/differential.py --modes: the same random scripts
against one process, ``--workers 2`` and two ``--redis`` nodes give the
same transcripts, up to the ids and colours each mode assigns.

The driver uses blocking sockets, so it runs in a thread while the reactor
keeps reading the daemons' output.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from twisted.internet import defer, threads
from twisted.trial import unittest

from tests.contract import MODES, skipReason

_path = Path(__file__).resolve().parent.parent / "bench" / "differential.py"
_spec = importlib.util.spec_from_file_location("differential", _path)
assert _spec is not None and _spec.loader is not None
differential = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(differential)

#: Scripts per run: enough to reach every frame kind many times (500 in
#: docs/benchmarks-notes.md, from the command line).
SCRIPTS = 15


class NormaliseTests(unittest.TestCase):
    """Only ids and colours are renamed; every other byte still counts."""

    def test_ids_and_colours_renamed_by_first_appearance(self) -> None:
        a = [[(3, b"bo.7.31"), (6, b"7.31.bo.hi"), (13, b"9.40.al\n7.31.bo")]]
        b = [[(3, b"bo.2.99"), (6, b"2.99.bo.hi"), (13, b"5.12.al\n2.99.bo")]]
        self.assertEqual(differential.normalise(a), differential.normalise(b))

    def test_anything_else_differs(self) -> None:
        a = [[(3, b"bo.7.31"), (6, b"7.31.bo.hi")]]
        for other in ([(3, b"bo.7.31"), (6, b"7.31.bo.ho")],
                      [(3, b"Bo.7.31"), (6, b"7.31.bo.hi")],
                      [(3, b"bo.7.31"), (6, b"7.32.bo.hi")],  # colour changed
                      [(3, b"bo.7.31"), (6, b"8.31.bo.hi")],  # another user
                      [(3, b"bo.7.31")]):  # fmt: skip
            self.assertNotEqual(
                differential.normalise(a), differential.normalise([other])
            )


class ModesTests(unittest.TestCase):
    timeout = 120

    def setUp(self) -> None:
        why = skipReason("redis")
        if why:
            raise unittest.SkipTest(why)

    @defer.inlineCallbacks
    def test_same_transcripts_in_every_mode(self):  # type: ignore[no-untyped-def]
        started = [
            MODES[mode](self, differential.OPTIONS).start()
            for mode in ("single", "workers", "redis")
        ]
        deployments = yield defer.gatherResults(started, consumeErrors=True)
        ports = [[d.port for d in dep.daemons] for dep in deployments]
        self.assertEqual([len(p) for p in ports], [1, 1, 2])
        lines: list[str] = []

        def run() -> dict[str, int]:
            targets = [
                differential.Target(dep.mode, p)
                for dep, p in zip(deployments, ports, strict=True)
            ]
            try:
                return differential.compare(
                    targets, range(1, 1 + SCRIPTS), lines.append
                )
            finally:
                for t in targets:
                    t.close()

        differ = yield threads.deferToThread(run)
        self.assertEqual(differ, {"workers": 0, "redis": 0}, "\n".join(lines))
