"""End to end: ``twistd chatd --workers 3 --max-clients-per-worker 2`` (issue 11).

Which worker serves a user is read from the main process's log (workers'
lines are tagged ``worker=K``); worker pids from its ``started`` lines.
Every wait is on a frame, a log line or a process exit; the only poll is
for the pids of orphaned workers, bounded in time.
"""

from __future__ import annotations

import json
import os
import re
import signal

from twisted.internet import defer, endpoints, protocol, reactor, task
from twisted.trial import unittest

from chatd.wire import FrameType as T
from tests.daemon import HEADER, Daemon, RawClient, activeUser, connect

OPTIONS = (
    "--workers",
    "3",
    "--max-clients-per-worker",
    "2",
    "--stats-interval",
    "0",
    "--rate-limit",
    "0",
    "--shutdown-grace",
    "3",
    "--worker-idle-exit",
    "600",
)
STARTED = re.compile(r"worker=(\d+) started: pid (\d+)")
ADMIN = re.compile(r"admin interface on http://127\.0\.0\.1:(\d+)/")


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


@defer.inlineCallbacks
def allGone(pids: list[int], within: float = 15.0):
    """Fires with the pids still running after ``within`` seconds (or none)."""
    waited = 0.0
    while any(alive(p) for p in pids) and waited < within:
        yield task.deferLater(reactor, 0.05, lambda: None)
        waited += 0.05
    return [p for p in pids if alive(p)]


def post(port: int, path: str, body: str) -> defer.Deferred:
    """POST a form to the admin interface; fires with the raw response."""
    return request(port, "POST", path, body)


@defer.inlineCallbacks
def request(port: int, method: str, path: str, body: str = ""):
    """One request to the admin interface; fires with the raw response."""
    endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    client = yield endpoint.connect(protocol.Factory.forProtocol(RawClient))
    data = body.encode()
    client.transport.write(
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(data)}\r\n\r\n".encode()
        + data
    )
    response = yield client.closed
    return response


class WorkersCase(unittest.TestCase):
    """A twistd with workers per test (``options()``), and the helpers."""

    timeout = 60

    def options(self) -> list[str]:
        return [*OPTIONS, "--admin", "tcp:0:interface=127.0.0.1"]

    @defer.inlineCallbacks
    def setUp(self):
        self.daemon = Daemon(*self.options())
        self.addCleanup(self.daemon.stop)
        yield self.daemon.start()
        self.addCleanup(self.reap)

    @defer.inlineCallbacks
    def reap(self):
        """No test leaves a worker behind, whatever happened to main."""
        yield self.daemon.stop()
        left = yield allGone(self.workerPids())
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        self.assertEqual(left, [], "workers outlived the main process")

    def workerPids(self) -> list[int]:
        return [int(m.group(2)) for m in STARTED.finditer(self.daemon.log)]

    def workerPid(self, k: int) -> int:
        return dict((int(a), int(b)) for a, b in STARTED.findall(self.daemon.log))[k]

    @defer.inlineCallbacks
    def join(self, name: str):
        """``name`` handshakes; fires with (client, JOIN entry, worker number)."""
        client, entry = yield activeUser(self, self.daemon.port, name.encode())
        uid = entry.split(b".")[0]
        line = f"id={uid.decode()} name={name}\n"
        yield self.daemon.waitForLog(line)
        match = re.search(
            r"worker=(\d+) hello conn=\d+ " + re.escape(line), self.daemon.log
        )
        self.assertIsNotNone(match)
        return client, entry, int(match.group(1))

    @defer.inlineCallbacks
    def allShutDown(self, clients):
        """Each client's next ERROR is SHUTDOWN, then its connection closes."""
        for client, _, _ in clients:
            while True:
                ftype, payload = yield client.next()
                if ftype == T.ERROR:
                    break
            self.assertTrue(payload.startswith(b"SHUTDOWN."), payload)
            yield client.closed

    @defer.inlineCallbacks
    def frames(self, client, n: int):
        got = []
        for _ in range(n):
            got.append((yield client.next()))
        return got


class WorkersTests(WorkersCase):
    @defer.inlineCallbacks
    def test_spread_one_order_and_full(self):
        """Six users land two per worker; every user sees one identical order
        of MESSAGEs sent at once from every worker; the seventh client gets
        SERVER_FULL."""
        users = []
        for i in range(6):
            users.append((yield self.join(f"u{i}")))
        workers = sorted(w for _, _, w in users)
        self.assertEqual(workers, [1, 1, 2, 2, 3, 3])
        for i, (client, _, _) in enumerate(users):
            joins = yield self.frames(client, 5 - i)
            self.assertEqual(joins, [(T.JOIN, e) for _, e, _ in users[i + 1 :]])
        for n in range(5):
            for i, (client, _, _) in enumerate(users):
                client.send(T.SAY, f"m{n} from u{i}".encode())
        seen = []
        for client, _, _ in users:
            seen.append((yield self.frames(client, 30)))
        for other in seen[1:]:
            self.assertEqual(other, seen[0])
        self.assertEqual(
            sorted(p.rsplit(b".", 1)[1] for _, p in seen[0]),
            sorted(f"m{n} from u{i}".encode() for n in range(5) for i in range(6)),
        )

        full = yield connect(self.daemon.port)
        ftype, payload = yield full.next()
        self.assertEqual(ftype, T.ERROR)
        self.assertTrue(payload.startswith(b"SERVER_FULL."), payload)
        yield full.closed

    @defer.inlineCallbacks
    def test_who_whisper_name_taken_kick_notice_across_workers(self):
        a, ea, wa = yield self.join("alice")
        b, eb, wb = yield self.join("bob")
        c, ec, wc = yield self.join("carol")
        self.assertEqual((wa, wb), (1, 1))
        self.assertEqual(wc, 2)
        yield self.frames(a, 2)
        yield self.frames(b, 1)

        c.send(T.WHO)
        self.assertEqual(
            (yield self.frames(c, 2)),
            [(T.USERS, b"\n".join((ea, eb, ec))), (T.USERS, b"")],
        )
        c.send(T.WHISPER, b"ALICE.psst")
        self.assertEqual((yield a.next()), (T.WHISPERED, ec + b".psst"))

        taken = yield connect(self.daemon.port)
        self.addCleanup(lambda: taken.transport.abortConnection())
        taken.send(T.HELLO, b"Bob")
        ftype, payload = yield taken.next()
        self.assertEqual(ftype, T.ERROR)
        self.assertTrue(payload.startswith(b"NAME_TAKEN."), payload)

        yield self.daemon.waitForLog("admin interface on")
        port = int(ADMIN.search(self.daemon.log).group(1))
        response = yield post(port, "/kick", "name=alice")
        self.assertIn(b"200 OK", response)
        ftype, payload = yield a.next()
        self.assertEqual(ftype, T.ERROR)
        self.assertTrue(payload.startswith(b"KICKED."), payload)
        for client in (b, c):
            self.assertEqual((yield client.next()), (T.LEAVE, ea + b".kicked"))

        response = yield request(port, "GET", "/status")
        status = json.loads(response.split(b"\r\n\r\n", 1)[1])
        self.assertEqual(status["limits"]["workers"], 3)
        self.assertEqual(status["limits"]["max_clients_per_worker"], 2)
        counters = status["counters"]
        self.assertEqual((counters["workers"], counters["active_users"]), (2, 2))
        self.assertEqual(
            counters["worker_pids"], f"1={self.workerPid(1)},2={self.workerPid(2)}"
        )
        self.assertRegex(counters["worker_clients"], r"^1=\d+,2=\d+$")

        response = yield post(port, "/maintenance", "state=on&text=soon")
        self.assertIn(b"200 OK", response)
        for client in (b, c):
            self.assertEqual((yield client.next()), (T.NOTICE, b"MAINTENANCE.soon"))

    @defer.inlineCallbacks
    def status(self, port: int, until=lambda status: True, within: float = 10.0):
        """GET /status until ``until(status)`` holds (the workers report their
        users' connections every second), bounded in time."""
        waited = 0.0
        while True:
            response = yield request(port, "GET", "/status")
            status = json.loads(response.split(b"\r\n\r\n", 1)[1])
            if until(status) or waited >= within:
                return status
            yield task.deferLater(reactor, 0.1, lambda: None)
            waited += 0.1

    @defer.inlineCallbacks
    def test_status_metrics_and_stop_line_count_workers_users(self):
        """/status lists the users of every worker (which worker, peer, since,
        backlog) and one entry per worker; /metrics has per-worker labels;
        the stop line counts the workers' connections."""
        clients = []
        for name in ("alice", "bob", "carol"):
            clients.append((yield self.join(name)))
        self.assertEqual([w for _, _, w in clients], [1, 1, 2])
        port = self.daemon.adminPort
        status = yield self.status(
            port, lambda s: all(u["peer"] for u in s["users"]) and s["users"]
        )
        users = status["users"]
        self.assertEqual(
            [(u["id"], u["name"], u["worker"], u["state"]) for u in users],
            [
                (int(entry.split(b".")[0]), name, worker, "active")
                for (_, entry, worker), name in zip(
                    clients, ("alice", "bob", "carol"), strict=True
                )
            ],
        )
        for user in users:
            self.assertRegex(user["peer"], r"^127\.0\.0\.1:\d+$")
            self.assertRegex(user["connected_since"], r"^\d{4}-\d\d-\d\dT")
            self.assertEqual(user["backlog_bytes"], 0)
        workers = status["workers"]
        self.assertEqual(
            [(w["worker"], w["pid"], w["users"], w["connections"]) for w in workers],
            [(1, self.workerPid(1), 2, 2), (2, self.workerPid(2), 1, 1)],
        )
        self.assertIn("deliveries", workers[0]["counters"])

        response = yield request(port, "GET", "/metrics")
        self.assertIn(b'chatd_worker_users{worker="1"} 2.0', response)
        self.assertIn(b'chatd_worker_connections{worker="2"} 1.0', response)
        self.assertIn(b'chatd_worker_deliveries_total{worker="1"}', response)

        status = self.daemon.signal(signal.SIGTERM)
        yield self.allShutDown(clients)
        yield status
        self.assertIn("stopped: 3 connections closed", self.daemon.log)

    @defer.inlineCallbacks
    def test_pipelined_handshake_and_who(self):
        """HELLO, READY and WHO in one write, as a single process answers
        them: WELCOME, our own JOIN, then USERS listing us too."""
        a, ea, _ = yield self.join("alice")
        b = yield connect(self.daemon.port)
        self.addCleanup(lambda: b.transport.abortConnection())
        b.transport.write(
            HEADER.pack(T.HELLO, 3) + b"bob" + HEADER.pack(T.READY, 0)
            + HEADER.pack(T.WHO, 0) + HEADER.pack(T.ECHO, 2) + b"hi"
        )  # fmt: skip
        frames = yield self.frames(b, 5)
        self.assertEqual(frames[0][0], T.WELCOME)
        eb = b"%s.%s.bob" % tuple(frames[0][1].split(b".")[1:])
        self.assertEqual(
            frames[1:],
            [(T.JOIN, eb), (T.USERS, ea + b"\n" + eb), (T.USERS, b""), (T.ECHO, b"hi")],
        )

    @defer.inlineCallbacks
    def test_own_message_before_later_replies(self):
        """SAY, ECHO, SAY, SAY, ECHO in one write to a worker whose order is
        kept in main: the sender gets each MESSAGE before the ECHO of a
        later request, as one process answers; a user of another worker
        gets the same MESSAGEs in the same order."""
        a, ea, wa = yield self.join("alice")
        yield self.join("bob")
        c, ec, wc = yield self.join("carol")
        self.assertNotEqual(wa, wc)
        yield self.frames(a, 2)
        c.transport.write(
            HEADER.pack(T.SAY, 3) + b"one" + HEADER.pack(T.ECHO, 2) + b"e1"
            + HEADER.pack(T.SAY, 3) + b"two" + HEADER.pack(T.SAY, 5) + b"three"
            + HEADER.pack(T.ECHO, 2) + b"e2"
        )  # fmt: skip
        got = yield self.frames(c, 5)
        self.assertEqual(
            [(t, p if t == T.ECHO else p.rsplit(b".", 1)[1]) for t, p in got],
            [
                (T.MESSAGE, b"one"),
                (T.ECHO, b"e1"),
                (T.MESSAGE, b"two"),
                (T.MESSAGE, b"three"),
                (T.ECHO, b"e2"),
            ],
        )
        self.assertEqual(
            (yield self.frames(a, 3)), [f for f in got if f[0] == T.MESSAGE]
        )

    @defer.inlineCallbacks
    def test_kill_worker(self):
        """kill -9 of a worker: the others see LEAVE error for its users,
        their names are free again, and new clients are still served."""
        a, ea, _ = yield self.join("alice")
        b, eb, _ = yield self.join("bob")
        c, ec, wc = yield self.join("carol")
        self.assertEqual(wc, 2)
        yield self.frames(a, 2)
        yield self.frames(b, 1)
        os.kill(self.workerPid(1), signal.SIGKILL)
        self.assertEqual(
            (yield self.frames(c, 2)),
            [(T.LEAVE, ea + b".error"), (T.LEAVE, eb + b".error")],
        )
        yield a.closed
        yield b.closed
        yield self.daemon.waitForLog(
            f"worker=1 pid {self.workerPid(1)} killed by signal 9"
        )
        again, entry, _ = yield self.join("alice")
        self.assertEqual((yield c.next()), (T.JOIN, entry))

    @defer.inlineCallbacks
    def test_kill_main_leaves_no_process(self):
        """kill -9 of main: every worker sends ERROR SHUTDOWN and exits."""
        clients = []
        for name in ("alice", "bob", "carol"):
            clients.append((yield self.join(name)))
        self.assertEqual({w for _, _, w in clients}, {1, 2})
        pids = self.workerPids()
        self.assertEqual(len(pids), 2)
        status = yield self.daemon.signal(signal.SIGKILL)
        self.assertEqual(status, 128 + signal.SIGKILL)
        yield self.allShutDown(clients)
        self.assertEqual((yield allGone(pids)), [])

    @defer.inlineCallbacks
    def test_sigterm_stops_every_worker(self):
        clients = []
        for name in ("alice", "bob", "carol"):
            clients.append((yield self.join(name)))
        pids = self.workerPids()
        status = self.daemon.signal(signal.SIGTERM)
        yield self.allShutDown(clients)
        self.assertEqual((yield status), 128 + signal.SIGTERM)
        self.assertEqual((yield allGone(pids)), [])
        self.assertIn("state STOPPING -> STOPPED", self.daemon.log)


class WorkersLifecycleTests(WorkersCase):
    """One client per worker: idle exit, reload, a worker cut off."""

    def options(self) -> list[str]:
        self.envFile = os.path.abspath(self.mktemp())
        with open(self.envFile, "w") as f:
            f.write("CHATD_RATE_LIMIT=0\n")
        return [
            *("--workers", "3", "--max-clients-per-worker", "1"),
            *("--stats-interval", "0", "--worker-idle-exit", "0.2"),
            *("--env-file", self.envFile),
        ]

    @defer.inlineCallbacks
    def test_idle_worker_exits_the_last_stays(self):
        a, ea, wa = yield self.join("alice")
        b, eb, wb = yield self.join("bob")
        self.assertEqual((wa, wb), (1, 2))
        b.send(T.BYE)
        yield b.closed
        yield self.daemon.waitForLog(
            f"worker=2 pid {self.workerPid(2)} exited with status 0"
        )
        self.assertIn("worker=2 idle for 0.2s: exiting", self.daemon.log)
        self.assertEqual((yield a.next()), (T.JOIN, eb))
        self.assertEqual((yield a.next()), (T.LEAVE, eb + b".quit"))
        a.send(T.SAY, b"still here")
        self.assertEqual((yield a.next()), (T.MESSAGE, ea + b".still here"))
        self.assertNotIn("worker=1 idle", self.daemon.log)

    @defer.inlineCallbacks
    def test_sighup_reload_reaches_workers(self):
        yield self.join("alice")
        with open(self.envFile, "w") as f:
            f.write("CHATD_RATE_LIMIT=0.01\nCHATD_RATE_BURST=1\n")
        self.daemon.signal(signal.SIGHUP)
        yield self.daemon.waitForLog("reloaded: rate_limit, rate_burst")
        b, eb, wb = yield self.join("bob")
        self.assertEqual(wb, 2)
        b.send(T.SAY, b"one")
        b.send(T.SAY, b"two")
        # The ERROR may come first: the MESSAGE takes the trip through main.
        got = sorted((yield self.frames(b, 2)))
        self.assertEqual(got[0], (T.MESSAGE, eb + b".one"))
        self.assertEqual(got[1][0], T.ERROR)
        self.assertTrue(got[1][1].startswith(b"RATE_LIMITED."), got)

    @defer.inlineCallbacks
    def test_worker_cut_off_sends_slow_consumer(self):
        """The signal main sends a worker that falls behind: its clients get
        SLOW_CONSUMER, the others LEAVE slow."""
        a, ea, _ = yield self.join("alice")
        b, eb, _ = yield self.join("bob")
        yield a.next()
        os.kill(self.workerPid(2), signal.SIGUSR1)
        ftype, payload = yield b.next()
        self.assertEqual(ftype, T.ERROR)
        self.assertTrue(payload.startswith(b"SLOW_CONSUMER."), payload)
        self.assertEqual((yield a.next()), (T.LEAVE, eb + b".slow"))


class WorkersTLSTests(WorkersCase):
    """An ssl: listener: main hands over the TCP connection before TLS
    begins, the worker wraps it."""

    def options(self) -> list[str]:
        from pathlib import Path

        from tests.test_client_tls import makeCertificates

        directory = Path(self.mktemp()).resolve()
        directory.mkdir()
        self.certs = makeCertificates(directory)
        tls = (
            "ssl:0:interface=127.0.0.1:"
            f"privateKey={self.certs['good-key']}:certKey={self.certs['good-cert']}"
        )
        return ["--listen", tls, "--workers", "2", "--max-clients-per-worker", "1"]

    @property
    def tlsPort(self) -> int:
        """Bound to port 0: the port file lists the ports in --listen order."""
        return self.daemon.ports()[-1]

    @defer.inlineCallbacks
    def test_tls_and_plain_users_on_two_workers(self):
        from twisted.internet import ssl

        from tests.daemon import FrameClient

        plain = yield connect(self.daemon.port)
        self.addCleanup(lambda: plain.transport.abortConnection())
        plain.send(T.HELLO, b"plain")
        plain.send(T.READY)
        yield self.frames(plain, 2)
        ca = ssl.Certificate.loadPEM(self.certs["ca"].read_bytes())
        endpoint = endpoints.wrapClientTLS(
            ssl.optionsForClientTLS("localhost", trustRoot=ca),
            endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", self.tlsPort),
        )
        secure = yield endpoint.connect(protocol.Factory.forProtocol(FrameClient))
        self.addCleanup(lambda: secure.transport.abortConnection())
        secure.send(T.HELLO, b"secure")
        ftype, payload = yield secure.next()
        self.assertEqual((ftype, payload), (T.WELCOME, b"secure.2.40"))
        secure.send(T.READY)
        self.assertEqual((yield secure.next()), (T.JOIN, b"2.40.secure"))
        secure.send(T.SAY, b"over tls")
        self.assertEqual((yield secure.next()), (T.MESSAGE, b"2.40.secure.over tls"))
        self.assertEqual(
            (yield self.frames(plain, 2)),
            [(T.JOIN, b"2.40.secure"), (T.MESSAGE, b"2.40.secure.over tls")],
        )
        yield self.daemon.waitForLog("worker=2 hello conn=1 id=2 name=secure")


class SlowWorkerTests(WorkersCase):
    """A worker that stops reading its link (SIGSTOP) while one user floods:
    main holds at most 32 x --max-backlog (2 MiB here) for it, then cuts it
    off."""

    def options(self) -> list[str]:
        return [
            *("--workers", "2", "--max-clients-per-worker", "1"),
            *("--max-backlog", "64KiB", "--stats-interval", "0"),
            *("--rate-limit", "0"),
        ]

    @defer.inlineCallbacks
    def test_worker_that_stops_reading_is_cut_off(self):
        a, ea, _ = yield self.join("alice")
        b, eb, wb = yield self.join("bob")
        self.assertEqual(wb, 2)
        self.assertEqual((yield a.next()), (T.JOIN, eb))
        os.kill(self.workerPid(2), signal.SIGSTOP)
        # Closed loop: alice keeps 100 messages in flight (her own copies are
        # the acknowledgements), so worker 1 never falls far behind.
        say = HEADER.pack(T.SAY, 1000) + b"x" * 1000
        a.transport.write(say * 100)
        for _ in range(10_000):
            frame = yield a.next()
            if frame[0] != T.MESSAGE:
                break
            a.transport.write(say)
        self.assertEqual(frame, (T.LEAVE, eb + b".slow"))
        yield self.daemon.waitForLog("worker=2 pid")
        self.assertIn(
            f"worker=2 pid {self.workerPid(2)} cannot keep up", self.daemon.log
        )
        self.assertNotIn("worker=1 pid", self.daemon.log)
        while True:  # bob: what his worker had, then SLOW_CONSUMER
            ftype, payload = yield b.next()
            if ftype != T.MESSAGE:
                break
        self.assertEqual(ftype, T.ERROR)
        self.assertTrue(payload.startswith(b"SLOW_CONSUMER."), payload)
        yield b.closed
        yield self.daemon.waitForLog(
            f"worker=2 pid {self.workerPid(2)} exited with status 0"
        )
        # New clients are still served (by worker 1's room or a new worker).
        c, _, wc = yield self.join("carol")
        self.assertEqual(wc, 3)
