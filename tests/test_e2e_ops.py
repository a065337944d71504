"""End to end: what an operator does (docs/operations.md) against real twistd.

Maintenance, SIGHUP reload, the admin interface (/status, /metrics, kick,
tokens) and log rotation, each on a ``twistd -n chatd`` subprocess bound to
127.0.0.1.
"""

from __future__ import annotations

import json
import os
import signal
from io import BytesIO

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, reactor, task
from twisted.trial import unittest
from twisted.web.client import Agent, FileBodyProducer, readBody
from twisted.web.http_headers import Headers

from chatd.wire import FrameType as T
from tests.daemon import LOOPBACK, READY_LINE, TWISTD, Daemon, connect, run

TOKEN = b"s3cret-admin-token"


def waitLog(daemon: Daemon, text: str) -> defer.Deferred:
    """Fires once ``text`` appears in the daemon's output (now or later)."""
    if text in daemon.log:
        return defer.succeed(None)
    d: defer.Deferred = defer.Deferred()
    watch = daemon.watch
    original = watch.outReceived

    def received(data: bytes) -> None:
        original(data)
        if not d.called and text in daemon.log:
            watch.outReceived = watch.errReceived = original
            d.callback(None)

    watch.outReceived = watch.errReceived = received
    return d


def waitFile(path: str, text: bytes) -> defer.Deferred:
    """Fires once file ``path`` holds ``text``: twistd writes it, not a pipe
    we could watch, so look every 50 ms."""
    d: defer.Deferred = defer.Deferred()

    def look() -> None:
        try:
            with open(path, "rb") as f:
                found = text in f.read()
        except FileNotFoundError:
            found = False
        if found:
            loop.stop()

    loop = task.LoopingCall(look)
    loop.start(0.05).addCallback(lambda _: d.callback(None))
    d.addBoth(lambda r: (loop.stop() if loop.running else None, r)[1])
    return d


class OpsTestCase(unittest.TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.tmp = os.path.abspath(self.mktemp())
        os.makedirs(self.tmp)
        self.tokenFile = self.write("token", TOKEN + b"\n")
        self.agent = Agent(reactor)

    def write(self, name: str, data: bytes) -> str:
        path = os.path.join(self.tmp, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    @defer.inlineCallbacks
    def daemon(self, *options: str):
        daemon = Daemon(
            "--stats-interval",
            "0",
            "--admin",
            LOOPBACK,
            "--admin-token-file",
            self.tokenFile,
            *options,
        )
        self.addCleanup(daemon.stop)
        yield daemon.start()
        self.adminPort = daemon.adminPort
        return daemon

    @defer.inlineCallbacks
    def http(self, method: bytes, path: str, body: bytes | None = None, token=TOKEN):
        """(status code, body bytes) of one admin request."""
        headers = Headers()
        if token is not None:
            headers.addRawHeader(b"authorization", b"Bearer " + token)
        producer = None
        if body is not None:
            headers.addRawHeader(b"content-type", b"application/x-www-form-urlencoded")
            producer = FileBodyProducer(BytesIO(body))
        url = f"http://127.0.0.1:{self.adminPort}{path}".encode()
        response = yield self.agent.request(method, url, headers, producer)
        data = yield readBody(response)
        return response.code, data

    @defer.inlineCallbacks
    def json(self, method: bytes, path: str, body: bytes | None = None):
        code, data = yield self.http(method, path, body)
        return code, json.loads(data)

    @defer.inlineCallbacks
    def user(self, daemon: Daemon, name: bytes, password: bytes | None = None):
        """A client that is ACTIVE as ``name``, past its own JOIN."""
        client = yield connect(daemon.port)
        self.addCleanup(client.transport.abortConnection)
        client.send(T.HELLO, name if password is None else name + b"." + password)
        ftype, payload = yield client.next()
        self.assertEqual(ftype, T.WELCOME, payload)
        client.send(T.READY)
        self.assertEqual((yield client.next())[0], T.JOIN)
        return client

    @defer.inlineCallbacks
    def until(self, client, ftype: int):
        """The payload of the next ``ftype`` frame, skipping others (JOINs)."""
        while True:
            got, payload = yield client.next()
            if got == ftype:
                return payload


class MaintenanceTests(OpsTestCase):
    @defer.inlineCallbacks
    def test_maintenance_on_and_off(self):
        daemon = yield self.daemon()
        alice = yield self.user(daemon, b"alice")
        code, body = yield self.json(
            b"POST", "/maintenance", b"state=on&text=back+at+10"
        )
        self.assertEqual(
            (code, body["state"], body["notified"]), (200, "MAINTENANCE", 1)
        )
        self.assertEqual((yield alice.next()), (T.NOTICE, b"MAINTENANCE.back at 10"))
        alice.send(T.SAY, b"still chatting")
        ftype, payload = yield alice.next()
        self.assertEqual(ftype, T.MESSAGE)
        self.assertTrue(payload.endswith(b".alice.still chatting"))

        refused = yield connect(daemon.port)
        ftype, payload = yield refused.next()
        self.assertEqual(ftype, T.ERROR)
        self.assertTrue(payload.startswith(b"MAINTENANCE."))
        yield refused.closed

        code, body = yield self.json(b"POST", "/maintenance", b"off")
        self.assertEqual((code, body["state"]), (200, "ACTIVE"))
        ftype, payload = yield alice.next()
        self.assertEqual(ftype, T.NOTICE)
        self.assertTrue(payload.startswith(b"RESUMED."))
        yield self.user(daemon, b"bob")
        # The log comes through another pipe: wait for it, do not race it.
        yield waitLog(daemon, "state ACTIVE -> MAINTENANCE (back at 10)")
        yield waitLog(daemon, "state MAINTENANCE -> ACTIVE")

    @defer.inlineCallbacks
    def test_maintenance_twice_is_conflict(self):
        yield self.daemon()
        self.assertEqual((yield self.http(b"POST", "/maintenance", b"on"))[0], 200)
        code, body = yield self.json(b"POST", "/maintenance", b"on")
        self.assertEqual(code, 409)
        self.assertEqual(body["error"], "already in maintenance")

    @defer.inlineCallbacks
    def test_notice_text_checked(self):
        """A notice text that is too long or not one line is refused (400)."""
        yield self.daemon()
        for text in (b"x" * 1100, b"two%0Alines", b"esc%1B%5B2J"):
            code, body = yield self.json(
                b"POST", "/maintenance", b"state=on&text=" + text
            )
            self.assertEqual(code, 400, text)
            self.assertIn("one line", body["error"])
        self.assertEqual((yield self.http(b"POST", "/maintenance", b"on"))[0], 200)


class ReloadTests(OpsTestCase):
    @defer.inlineCallbacks
    def test_sighup_new_password(self):
        """After SIGHUP the new password counts for new logins; a user who
        logged in with the old one stays and chats."""
        passwordFile = self.write("password", b"old-pw\n")
        daemon = yield self.daemon("--password-file", passwordFile)
        alice = yield self.user(daemon, b"alice", b"old-pw")
        self.write("password", b"new-pw\n")
        daemon.signal(signal.SIGHUP)
        yield waitLog(daemon, "reloaded: password")

        stranger = yield connect(daemon.port)
        stranger.send(T.HELLO, b"mallory.old-pw")
        ftype, payload = yield stranger.next()
        self.assertEqual(ftype, T.ERROR)
        self.assertTrue(payload.startswith(b"AUTH_FAILED."))
        bob = yield self.user(daemon, b"bob", b"new-pw")
        self.assertTrue((yield alice.next())[1].endswith(b".bob"))  # JOIN
        alice.send(T.SAY, b"hi bob")
        self.assertTrue((yield self.until(bob, T.MESSAGE)).endswith(b".alice.hi bob"))
        self.assertIn("state ACTIVE -> REBOOTING (SIGHUP)", daemon.log)

    @defer.inlineCallbacks
    def test_bad_config_refused(self):
        """A bad env file is refused with a log line; the old config stays."""
        envFile = self.write("chatd.env", b"CHATD_MAX_CLIENTS=50\n")
        daemon = yield self.daemon("--env-file", envFile)
        self.write("chatd.env", b"CHATD_MAX_CLIENTS=many\n")
        code, body = yield self.json(b"POST", "/reload")
        self.assertEqual(code, 400)
        self.assertIn("CHATD_MAX_CLIENTS", body["error"])
        self.assertEqual(body["state"], "ACTIVE")
        yield waitLog(daemon, "new configuration refused, the old one stays")
        code, status = yield self.json(b"GET", "/status")
        self.assertEqual(status["limits"]["max_clients"], 50)

        self.write("chatd.env", b"CHATD_MAX_CLIENTS=60\n")
        code, body = yield self.json(b"POST", "/reload")
        self.assertEqual((code, body["changed"]), (200, ["max_clients"]))
        code, status = yield self.json(b"GET", "/status")
        self.assertEqual(status["limits"]["max_clients"], 60)


class StatusTests(OpsTestCase):
    @defer.inlineCallbacks
    def test_status_and_metrics_match(self):
        """3 users, 4 messages: /status and /metrics say so; kick removes one."""
        daemon = yield self.daemon()
        alice = yield self.user(daemon, b"alice")
        bob = yield self.user(daemon, b"bob")
        carol = yield self.user(daemon, b"carol")
        for text in (b"one", b"two", b"three", b"four"):
            alice.send(T.SAY, text)
        for client in (alice, bob, carol):
            got = 0
            while got < 4:
                got += (yield client.next())[0] == T.MESSAGE

        code, status = yield self.json(b"GET", "/status")
        self.assertEqual(code, 200)
        self.assertEqual(status["state"], "ACTIVE")
        self.assertEqual(
            [u["name"] for u in status["users"]], ["alice", "bob", "carol"]
        )
        self.assertEqual({u["backlog_bytes"] for u in status["users"]}, {0})
        self.assertTrue(
            all(u["peer"].startswith("127.0.0.1:") for u in status["users"])
        )
        self.assertEqual(status["counters"]["messages"], 4)
        self.assertEqual(status["counters"]["active_users"], 3)
        self.assertEqual(status["listeners"][0]["endpoint"], daemon.listen)

        code, text = yield self.http(b"GET", "/metrics", token=None)
        self.assertEqual(code, 200)
        samples = {
            s.name: s.value
            for family in text_string_to_metric_families(text.decode())
            for s in family.samples
            if not s.labels or s.labels.get("state") == "ACTIVE"
        }
        self.assertEqual(samples["chatd_active_users"], 3)
        self.assertEqual(samples["chatd_connections"], 3)
        self.assertEqual(samples["chatd_messages_total"], 4)
        self.assertEqual(samples["chatd_state"], 1)
        # 3 JOINs seen by 6 recipients in all, 4 messages by 3 each.
        self.assertEqual(samples["chatd_deliveries_total"], 6 + 12)

        code, body = yield self.json(b"POST", "/kick", b"name=carol")
        self.assertEqual((code, body), (200, {"kicked": "carol"}))
        ftype, payload = yield carol.next()
        self.assertEqual(ftype, T.ERROR)
        self.assertTrue(payload.startswith(b"KICKED."))
        yield carol.closed
        self.assertTrue((yield self.until(alice, T.LEAVE)).endswith(b".carol.kicked"))
        code, body = yield self.json(b"POST", "/kick", b"name=nobody")
        self.assertEqual(code, 404)


class TokenTests(OpsTestCase):
    @defer.inlineCallbacks
    def test_token(self):
        daemon = yield self.daemon()
        self.assertEqual((yield self.http(b"GET", "/status", token=None))[0], 401)
        self.assertEqual((yield self.http(b"GET", "/status", token=b"guess"))[0], 401)
        self.assertEqual((yield self.http(b"POST", "/reload", token=b"guess"))[0], 401)
        self.assertEqual((yield self.http(b"GET", "/status"))[0], 200)
        self.assertEqual((yield self.http(b"GET", "/metrics", token=None))[0], 200)
        yield waitLog(daemon, "refused GET /status from 127.0.0.1: missing token")
        yield waitLog(daemon, "refused POST /reload from 127.0.0.1: wrong token")
        self.assertNotIn("guess", daemon.log)

    @defer.inlineCallbacks
    def test_public_admin_needs_token(self):
        """--admin on every interface without a token: refused at start."""
        status, output = yield run(
            [*TWISTD[1:], "-n", "--pidfile=", "chatd", "--admin", "tcp:0"]
        )
        self.assertNotEqual(status, 0)
        self.assertIn("--admin-token-file", output)
        self.assertNotIn("Traceback", output)


class LogTests(unittest.TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_sigusr1_rotates(self):
        """With --logfile, SIGUSR1 moves the log to .1 and starts a new file."""
        tmp = os.path.abspath(self.mktemp())
        os.makedirs(tmp)
        logfile = os.path.join(tmp, "chatd.log")
        daemon = Daemon("--stats-interval", "0")
        daemon.args[daemon.args.index("--logfile=-")] = f"--logfile={logfile}"
        self.addCleanup(daemon.stop)
        daemon.start().addErrback(lambda f: None)  # no stdout log to watch
        yield waitFile(logfile, READY_LINE)
        daemon.signal(signal.SIGUSR1)
        yield waitFile(logfile + ".1", READY_LINE)
        client = yield connect(daemon.port)  # logs a line into the new file
        self.addCleanup(client.transport.abortConnection)
        yield waitFile(logfile, b"connect conn=1")
        with open(logfile, "rb") as f:
            self.assertNotIn(READY_LINE, f.read())
