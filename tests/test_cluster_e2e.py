"""End to end: real ``twistd chatd --redis`` nodes sharing one room through a
real redis-server (on a unix socket of the test's own): one order for users
on every node, WHO/WHISPER/NAME_TAKEN/kick across nodes, and the faults of
issue 12 (a node killed with -9, one stopped with SIGTERM, Redis away for a
while, a node that lost its lease)."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

from twisted.internet import defer, endpoints, protocol, reactor
from twisted.trial import unittest

from chatd.wire import FrameType as T
from chatd.wire import parse_error
from tests.daemon import Daemon, RawClient, activeUser, connect
from tests.redisserver import skipUnlessRedis, startRedis
from tests.test_client_tls import makeCertificates

ADMIN_LINE = re.compile(r"admin interface on http://127\.0\.0\.1:(\d+)/")
TTL = "3"


@skipUnlessRedis
class ClusterCase(unittest.TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def setUp(self):
        self.redis = yield startRedis(self)

    @defer.inlineCallbacks
    def node(self, name: str, *options: str, ttl: str = TTL):
        daemon = Daemon(
            "--stats-interval", "0",
            "--shutdown-grace", "3",
            "--redis", self.redis.url,
            "--node-name", name,
            "--node-ttl", ttl,
            *options,
        )  # fmt: skip
        self.addCleanup(daemon.stop)
        yield daemon.start()
        yield daemon.waitForLog(f"cluster: node {name} joined")
        return daemon

    def handshake(self, daemon: Daemon, name: str):  # type: ignore[no-untyped-def]
        """A user on ``daemon``, ACTIVE; fires with (client, its entry)."""
        return activeUser(self, daemon.port, name.encode())

    @defer.inlineCallbacks
    def assertNameTaken(self, daemon: Daemon, name: bytes):
        """A HELLO for ``name`` on ``daemon`` gets NAME_TAKEN."""
        taker = yield connect(daemon.port)
        self.addCleanup(lambda: taker.transport.abortConnection())
        taker.send(T.HELLO, name)
        ftype, payload = yield taker.next()
        self.assertEqual((ftype, parse_error(payload)[0]), (T.ERROR, "NAME_TAKEN"))

    @defer.inlineCallbacks
    def frames(self, client, n: int):
        got = []
        for _ in range(n):
            got.append((yield client.next()))
        return got

    @defer.inlineCallbacks
    def admin(self, daemon: Daemon, method: bytes, path: bytes, body: bytes = b""):
        """One HTTP/1.0 request to the admin port: (status, JSON answer)."""
        port = yield _adminPort(daemon)
        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        http = yield endpoint.connect(protocol.Factory.forProtocol(RawClient))
        http.transport.write(
            b"%s %s HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n%s"
            % (method, path, len(body), body)
        )
        raw = yield http.closed
        head, _, data = raw.partition(b"\r\n\r\n")
        if path == b"/metrics":
            return int(head.split()[1]), data.decode()
        return int(head.split()[1]), json.loads(data)


def _adminPort(daemon: Daemon) -> defer.Deferred:
    d = daemon.waitForLog("admin interface on")
    d.addCallback(lambda _: int(ADMIN_LINE.search(daemon.log).group(1)))
    return d


class ClusterChatTests(ClusterCase):
    @defer.inlineCallbacks
    def test_users_on_three_nodes_see_one_order(self):
        nodes = []
        for name in ("n1", "n2", "n3"):
            nodes.append((yield self.node(name)))
        a, ea = yield self.handshake(nodes[0], "alice")
        b, eb = yield self.handshake(nodes[1], "bob")
        c, ec = yield self.handshake(nodes[2], "carol")
        self.assertEqual((yield self.frames(a, 2)), [(T.JOIN, eb), (T.JOIN, ec)])
        self.assertEqual((yield self.frames(b, 1)), [(T.JOIN, ec)])
        for i in range(20):
            for client, who in ((a, b"a"), (b, b"b"), (c, b"c")):
                client.send(T.SAY, b"%s%d" % (who, i))
        seen = []
        for client in (a, b, c):
            seen.append((yield self.frames(client, 60)))
        self.assertEqual(seen[0], seen[1])
        self.assertEqual(seen[1], seen[2])
        texts = [p.rsplit(b".", 1)[1] for _, p in seen[0]]
        self.assertEqual(
            sorted(texts),
            sorted(b"%s%d" % (w, i) for w in (b"a", b"b", b"c") for i in range(20)),
        )
        # Each user's own messages keep their order.
        mine = [t for t in texts if t.startswith(b"a")]
        self.assertEqual(mine, [b"a%d" % i for i in range(20)])

    @defer.inlineCallbacks
    def test_who_whisper_name_taken_and_kick_across_nodes(self):
        n1 = yield self.node("n1", "--admin", "tcp:0:interface=127.0.0.1")
        n2 = yield self.node("n2")
        a, ea = yield self.handshake(n1, "alice")
        b, eb = yield self.handshake(n2, "bob")
        self.assertEqual((yield a.next()), (T.JOIN, eb))
        b.send(T.WHO)
        self.assertEqual(
            (yield self.frames(b, 2)), [(T.USERS, ea + b"\n" + eb), (T.USERS, b"")]
        )
        # The name is held cluster-wide, in any case.
        yield self.assertNameTaken(n1, b"BOB")
        # A whisper reaches the other node's user, and only that user.
        a.send(T.WHISPER, b"bob.psst")
        self.assertEqual((yield b.next()), (T.WHISPERED, ea + b".psst"))
        # The operator of n1 kicks bob, who is on n2.
        code, answer = yield self.admin(n1, b"POST", b"/kick", b"bob")
        self.assertEqual((code, answer), (200, {"kicked": "bob"}))
        ftype, payload = yield b.next()
        self.assertEqual((ftype, parse_error(payload)[0]), (T.ERROR, "KICKED"))
        self.assertEqual((yield a.next()), (T.LEAVE, eb + b".kicked"))
        code, status = yield self.admin(n1, b"GET", b"/status")
        cluster = status["cluster"]
        self.assertEqual(cluster["node"], "n1")
        self.assertEqual(cluster["link"], "up")
        self.assertEqual(cluster["cluster_users"], 1)
        self.assertEqual(cluster["stream_lag"], 0)
        code, metrics = yield self.admin(n1, b"GET", b"/metrics")
        self.assertEqual(code, 200)
        self.assertIn('chatd_cluster_node_info{node="n1"', metrics)
        self.assertIn("chatd_cluster_link_up 1.0", metrics)
        self.assertIn("chatd_cluster_users 1.0", metrics)
        self.assertIn("chatd_cluster_stream_lag 0.0", metrics)


class ClusterFaultTests(ClusterCase):
    timeout = 90

    @defer.inlineCallbacks
    def test_killed_node_users_leave_once(self):
        """kill -9: within its TTL one of the two survivors sequences LEAVE
        error for each of its users, once, and their names are free."""
        n1 = yield self.node("n1")
        n2 = yield self.node("n2")
        n3 = yield self.node("n3")
        w, ew = yield self.handshake(n2, "watcher")
        x, ex = yield self.handshake(n3, "other")
        self.assertEqual((yield w.next()), (T.JOIN, ex))
        v1, e1 = yield self.handshake(n1, "victim1")
        v2, e2 = yield self.handshake(n1, "victim2")
        for client in (w, x):
            self.assertEqual(
                (yield self.frames(client, 2)), [(T.JOIN, e1), (T.JOIN, e2)]
            )
        yield n1.signal(signal.SIGKILL)
        leaves = {(T.LEAVE, e1 + b".error"), (T.LEAVE, e2 + b".error")}
        for client in (w, x):
            self.assertEqual(set((yield self.frames(client, 2))), leaves)
        # Exactly once: the next thing either sees is this message.
        w.send(T.SAY, b"after")
        for client in (w, x):
            self.assertEqual((yield client.next()), (T.MESSAGE, ew + b".after"))
        again, _ = yield self.handshake(n2, "victim1")

    @defer.inlineCallbacks
    def test_sigterm_node(self):
        """SIGTERM: its users get ERROR SHUTDOWN, the others LEAVE shutdown."""
        n1 = yield self.node("n1")
        n2 = yield self.node("n2")
        w, ew = yield self.handshake(n2, "watcher")
        u, eu = yield self.handshake(n1, "user")
        self.assertEqual((yield w.next()), (T.JOIN, eu))
        ended = n1.signal(signal.SIGTERM)
        ftype, payload = yield u.next()
        self.assertEqual((ftype, parse_error(payload)[0]), (T.ERROR, "SHUTDOWN"))
        self.assertEqual((yield w.next()), (T.LEAVE, eu + b".shutdown"))
        self.assertEqual((yield ended), 143)
        self.assertIn("cluster: node n1 left", n1.log)

    @defer.inlineCallbacks
    def test_redis_away_for_a_while(self):
        """Redis stops: users stay, SAY/WHISPER/HELLO get UNAVAILABLE (HELLO
        stays in CONNECTED); Redis back: the nodes resume where they were."""
        # A TTL that outlasts the outage: the nodes keep their leases.
        n1 = yield self.node("n1", ttl="20")
        n2 = yield self.node("n2", ttl="20")
        a, ea = yield self.handshake(n1, "alice")
        b, eb = yield self.handshake(n2, "bob")
        self.assertEqual((yield a.next()), (T.JOIN, eb))
        yield self.redis.stop()
        yield defer.gatherResults(
            [n.waitForLog("cluster: Redis link down") for n in (n1, n2)]
        )
        a.send(T.SAY, b"lost")
        a.send(T.WHISPER, b"bob.lost")
        for _ in range(2):
            ftype, payload = yield a.next()
            self.assertEqual((ftype, parse_error(payload)[0]), (T.ERROR, "UNAVAILABLE"))
        newcomer = yield connect(n2.port)
        self.addCleanup(lambda: newcomer.transport.abortConnection())
        newcomer.send(T.HELLO, b"carol")
        ftype, payload = yield newcomer.next()
        self.assertEqual((ftype, parse_error(payload)[0]), (T.ERROR, "UNAVAILABLE"))
        yield self.redis.start()
        yield defer.gatherResults(
            [n.waitForLog("cluster: Redis link up") for n in (n1, n2)]
        )
        a.send(T.SAY, b"back")
        self.assertEqual((yield b.next()), (T.MESSAGE, ea + b".back"))
        self.assertEqual((yield a.next()), (T.MESSAGE, ea + b".back"))
        # The newcomer is still in CONNECTED and may try again.
        newcomer.send(T.HELLO, b"carol")
        ftype, payload = yield newcomer.next()
        self.assertEqual(ftype, T.WELCOME)

    @defer.inlineCallbacks
    def test_redis_restarted_empty(self):
        """Redis back with none of its state: both nodes register again with
        their users, who keep chatting in one order; WHO still lists them
        and their names stay taken."""
        n1 = yield self.node("n1", ttl="20")
        n2 = yield self.node("n2", ttl="20")
        a, ea = yield self.handshake(n1, "alice")
        b, eb = yield self.handshake(n2, "bob")
        self.assertEqual((yield a.next()), (T.JOIN, eb))
        yield self.redis.stop()
        self.redis.wipe()
        yield self.redis.start()
        yield defer.gatherResults(
            [
                n.waitForLog(f"cluster: node {name} registered again")
                for n, name in ((n1, "n1"), (n2, "n2"))
            ]
        )
        for i in range(5):
            a.send(T.SAY, b"a%d" % i)
            b.send(T.SAY, b"b%d" % i)
        seenA = yield self.frames(a, 10)
        seenB = yield self.frames(b, 10)
        self.assertEqual(seenA, seenB)
        self.assertEqual(
            sorted(p for _, p in seenA),
            sorted(
                [ea + b".a%d" % i for i in range(5)]
                + [eb + b".b%d" % i for i in range(5)]
            ),
        )
        b.send(T.WHO)
        self.assertEqual(
            (yield self.frames(b, 2)), [(T.USERS, ea + b"\n" + eb), (T.USERS, b"")]
        )
        yield self.assertNameTaken(n2, b"Alice")
        c, ec = yield self.handshake(n2, "carol")
        self.assertEqual((yield a.next()), (T.JOIN, ec))
        self.assertEqual(
            len({ea.split(b".")[0], eb.split(b".")[0], ec.split(b".")[0]}), 3
        )

    @defer.inlineCallbacks
    def test_a_second_node_under_a_live_name_refuses(self):
        """--node-name of a live node: the newcomer logs one line and ends;
        the live node keeps its lease and its users."""
        n1 = yield self.node("n1")
        u, eu = yield self.handshake(n1, "user")
        twin = Daemon(
            "--stats-interval", "0",
            "--redis", self.redis.url,
            "--node-name", "n1",
            "--node-ttl", TTL,
        )  # fmt: skip
        self.addCleanup(twin.stop)
        yield twin.start()
        yield twin.waitForLog("node name n1 is held by a live node")
        yield twin.watch.ended
        self.assertNotIn("cluster: node n1 joined", twin.log)
        self.assertNotIn("Traceback", twin.log)
        u.send(T.SAY, b"still here")
        self.assertEqual((yield u.next()), (T.MESSAGE, eu + b".still here"))
        self.assertNotIn("lost contact", n1.log)

    @defer.inlineCallbacks
    def test_node_that_lost_its_lease_cuts_its_users(self):
        """A node frozen past its TTL is reaped by the other; when it wakes it
        finds its lease gone and cuts its users with ERROR SHUTDOWN."""
        n1 = yield self.node("n1")
        n2 = yield self.node("n2")
        w, ew = yield self.handshake(n2, "watcher")
        u, eu = yield self.handshake(n1, "user")
        self.assertEqual((yield w.next()), (T.JOIN, eu))
        n1.process.signalProcess(signal.SIGSTOP)
        try:
            self.assertEqual((yield w.next()), (T.LEAVE, eu + b".error"))
        finally:
            n1.process.signalProcess(signal.SIGCONT)
        ftype, payload = yield u.next()
        self.assertEqual(
            (ftype, parse_error(payload)),
            (T.ERROR, ("SHUTDOWN", "lost contact with the cluster")),
        )
        yield n1.waitForLog("cluster: node n1 joined again")
        again, _ = yield self.handshake(n1, "user")


@skipUnlessRedis
class ClusterTLSTests(ClusterCase):
    """rediss://: TLS to Redis, with the server's certificate checked."""

    @defer.inlineCallbacks
    def setUp(self):
        directory = Path(self.mktemp()).absolute()
        directory.mkdir(parents=True)
        self.certs = makeCertificates(directory)
        files = (self.certs["good-cert"], self.certs["good-key"], self.certs["ca"])
        self.redis = yield startRedis(self, tuple(map(str, files)))
        self.url = f"rediss://localhost:{self.redis.tlsPort}/0"

    @defer.inlineCallbacks
    def tlsNode(self, name: str, ca: Path):
        daemon = Daemon(
            "--stats-interval", "0", "--redis", self.url, "--node-name", name,
            env={"SSL_CERT_FILE": str(ca)},
        )  # fmt: skip
        self.addCleanup(daemon.stop)
        yield daemon.start()
        return daemon

    @defer.inlineCallbacks
    def test_nodes_over_tls(self):
        n1 = yield self.tlsNode("n1", self.certs["ca"])
        n2 = yield self.tlsNode("n2", self.certs["ca"])
        yield n1.waitForLog("cluster: node n1 joined")
        yield n2.waitForLog("cluster: node n2 joined")
        a, ea = yield self.handshake(n1, "alice")
        b, eb = yield self.handshake(n2, "bob")
        self.assertEqual((yield a.next()), (T.JOIN, eb))
        b.send(T.SAY, b"over tls")
        self.assertEqual((yield a.next()), (T.MESSAGE, eb + b".over tls"))

    @defer.inlineCallbacks
    def test_untrusted_certificate_is_refused(self):
        """A Redis whose certificate another CA signed is never joined: the
        node stays out of the cluster and HELLO gets UNAVAILABLE."""
        n1 = yield self.tlsNode("n1", self.certs["other-ca"])
        yield n1.waitForLog("cluster: Redis link down")
        client = yield connect(n1.port)
        self.addCleanup(lambda: client.transport.abortConnection())
        client.send(T.HELLO, b"alice")
        ftype, payload = yield client.next()
        self.assertEqual((ftype, parse_error(payload)[0]), (T.ERROR, "UNAVAILABLE"))
        self.assertNotIn("cluster: node n1 joined", n1.log)
