"""End to end: the limits that protect everyone from one client."""

from __future__ import annotations

import re
import signal
import socket

from twisted.internet import defer, reactor, task
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import deferLater
from twisted.trial import unittest
from zope.interface import implementer

from chatd.wire import HEADER
from chatd.wire import FrameType as T
from tests.daemon import (
    Daemon,
    FrameClient,
    HalfCloseClient,
    activeUser,
    connect,
    sayUntilLeave,
)


@implementer(IPushProducer)
class Flood:
    """Writes ``block`` to a transport as fast as the transport takes it, at
    most ``limit`` times: Twisted's own flow control (it pauses and resumes
    its producer) says when, so nothing polls."""

    def __init__(self, transport, block: bytes, limit: int) -> None:
        self.transport = transport
        self.block = block
        self.left = limit
        self.paused = False
        transport.registerProducer(self, True)
        self.resumeProducing()

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        while self.left and not self.paused and self.transport.connected:
            self.left -= 1
            self.transport.write(self.block)

    def stopProducing(self) -> None:
        self.left = 0


@defer.inlineCallbacks
def connNumber(daemon, client):
    """The daemon's number for ``client``'s connection, from its log."""
    peer = f"peer=127.0.0.1:{client.transport.getHost().port} "
    yield daemon.waitForLog(peer)
    return int(re.search(r"conn=(\d+) " + re.escape(peer), daemon.log).group(1))


@defer.inlineCallbacks
def active(case, daemon, name, kind=FrameClient):
    """A client of ``kind`` that is ACTIVE as ``name``, closed after ``case``."""
    client, _ = yield activeUser(case, daemon.port, name, kind)
    return client


class LimitTests(unittest.TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def daemon(self, *options):
        daemon = Daemon("--stats-interval", "0", *options)
        self.addCleanup(daemon.stop)
        yield daemon.start()
        return daemon

    def active(self, daemon, name):
        return active(self, daemon, name.encode())

    @defer.inlineCallbacks
    def test_slow_consumer_cut_off(self):
        """A user that never reads is cut off with LEAVE slow; the others go on."""
        daemon = yield self.daemon("--max-backlog", "64KiB", "--rate-limit", "0")
        talker = yield self.active(daemon, "talker")
        sleeper = yield self.active(daemon, "sleeper")
        self.assertEqual((yield talker.next())[0], T.JOIN)
        sleeper.transport.pauseProducing()  # stop reading its socket
        left = yield sayUntilLeave(talker)
        self.assertEqual(left.rsplit(b".", 1)[1], b"slow")
        self.assertIn(b".sleeper.", left)
        talker.send(T.ECHO, b"still here")
        self.assertEqual((yield talker.next()), (T.ECHO, b"still here"))
        self.assertIn("reason=slow", daemon.log)

    @defer.inlineCallbacks
    def test_rate_limit(self):
        """Beyond --rate-burst at once: RATE_LIMITED, not delivered, still open."""
        daemon = yield self.daemon("--rate-limit", "0.5", "--rate-burst", "2")
        client = yield self.active(daemon, "fast")
        for text in (b"one", b"two", b"three"):
            client.send(T.SAY, text)
        client.send(T.ECHO, b"e")
        frames = []
        for _ in range(4):
            frames.append((yield client.next()))
        self.assertEqual(frames[0], (T.MESSAGE, frames[0][1]))
        self.assertTrue(frames[0][1].endswith(b".one"))
        self.assertTrue(frames[1][1].endswith(b".two"))
        self.assertEqual(frames[2][0], T.ERROR)
        self.assertTrue(frames[2][1].startswith(b"RATE_LIMITED."))
        self.assertEqual(frames[3], (T.ECHO, b"e"))

    @defer.inlineCallbacks
    def test_max_per_ip(self):
        """The connection over --max-per-ip gets SERVER_FULL saying why."""
        daemon = yield self.daemon("--max-per-ip", "2", "--limit-exempt", "none")
        for _ in range(2):
            client = yield connect(daemon.port)
            self.addCleanup(client.transport.abortConnection)
            client.send(T.ECHO, b"ok")
            self.assertEqual((yield client.next()), (T.ECHO, b"ok"))
        third = yield connect(daemon.port)
        ftype, payload = yield third.next()
        self.assertEqual(ftype, T.ERROR)
        self.assertTrue(
            payload.startswith(b"SERVER_FULL.too many connections from 127.0.0.1")
        )
        yield third.closed


class DescriptorTests(unittest.TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_out_of_descriptors(self):
        """At the descriptor limit: one log line per burst, users keep chatting,
        and new connections are accepted again once descriptors free up."""
        daemon = Daemon("--stats-interval", "0", maxFiles=40)
        self.addCleanup(daemon.stop)
        yield daemon.start()
        self.assertIn("open files limit: 40 (hard 40)", daemon.log)
        user = yield connect(daemon.port)
        self.addCleanup(user.transport.abortConnection)
        flood = []
        for _ in range(60):
            client = yield connect(daemon.port)
            flood.append(client)
        yield daemon.waitForLog("accept failures over:")
        self.assertEqual(daemon.log.count("accept failing: out of file descriptors"), 1)
        user.send(T.ECHO, b"still served")
        self.assertEqual((yield user.next()), (T.ECHO, b"still served"))
        for client in flood:
            client.transport.abortConnection()
        yield defer.DeferredList([c.closed for c in flood])
        for _attempt in range(50):  # the server frees them on its next turns
            late = yield connect(daemon.port)
            late.send(T.ECHO, b"again")
            try:
                frame = yield late.next()
            except Exception:
                yield deferLater(reactor, 0.05, lambda: None)
                continue
            self.assertEqual(frame, (T.ECHO, b"again"))
            late.transport.loseConnection()
            break
        else:
            self.fail("no connection accepted after descriptors were freed")


def peakRss(pid: int) -> int:
    """The process's peak resident set size (VmHWM), in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


class MemoryBoundTests(unittest.TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_non_readers_cannot_grow_memory(self):
        """Clients that flood ECHO and never read hold at most the documented
        bound each (docs/limits.md): max_backlog + 64 KiB in + 64 KiB out.

        The kernel's socket buffers absorb several MiB per connection before
        the daemon holds anything, so each client writes 1 MiB a step until
        the daemon cuts it off as a slow consumer (at most 48 MiB each).
        """
        backlog = 64 * 1024
        count = 8
        daemon = Daemon("--stats-interval", "0", "--max-backlog", str(backlog))
        self.addCleanup(daemon.stop)
        yield daemon.start()
        pid = daemon.process.pid
        before = peakRss(pid)
        clients = []
        for _ in range(count):
            client = yield connect(daemon.port)
            client.transport.pauseProducing()  # never read
            clients.append(client)
            self.addCleanup(client.transport.abortConnection)
        block = (b"\x00\x00\x00\x01\x00\x00\x03\xf8" + b"z" * 1016) * 1024  # 1 MiB
        cuts = []
        for client in clients:
            number = yield connNumber(daemon, client)
            cuts.append(daemon.waitForLog(f"error conn={number} code=SLOW_CONSUMER"))
            Flood(client.transport, block, 48)  # bounded: at most 48 MiB each
        yield defer.DeferredList(cuts)
        self.assertEqual(daemon.log.count("code=SLOW_CONSUMER"), count)
        grown = peakRss(pid) - before
        bound = count * (backlog + 2 * 64 * 1024 + 1024) + 8 * 2**20  # + slack
        self.assertLess(grown, bound, f"grew {grown} bytes")


class FairnessTests(unittest.TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_flooder_does_not_starve_others(self):
        """While one connection pipelines 300,000 ECHOs, another connection's
        ECHO is answered long before the flood is (64 frames per turn each)."""
        daemon = Daemon("--stats-interval", "0")
        self.addCleanup(daemon.stop)
        yield daemon.start()
        flooder = yield connect(daemon.port)
        probe = yield connect(daemon.port)
        self.addCleanup(flooder.transport.abortConnection)
        self.addCleanup(probe.transport.abortConnection)
        flood = 300_000
        flooder.transport.write(b"\x00\x00\x00\x01\x00\x00\x00\x00" * flood)
        yield flooder.next()  # the flood is being served
        probe.send(T.ECHO, b"me too")
        self.assertEqual((yield probe.next()), (T.ECHO, b"me too"))
        served = len(flooder.frames)
        self.assertLess(served, flood // 2, "the probe waited for the flood")


class LingeringCloseTests(unittest.TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_final_error_survives_unread_input(self):
        """A client cut off while it is still sending gets its ERROR, then EOF.

        It floods ECHO without reading until the daemon cuts it off as a slow
        consumer, sends 1 MiB more, and only then reads.  Had the daemon
        closed its socket with that input unread, the kernel would have reset
        the connection and dropped the replies it still held, the ERROR
        with them.
        """
        daemon = Daemon("--stats-interval", "0", "--max-backlog", "64KiB")
        self.addCleanup(daemon.stop)
        yield daemon.start()
        client = yield connect(daemon.port)
        self.addCleanup(client.transport.abortConnection)
        client.transport.pauseProducing()  # not reading
        block = (b"\x00\x00\x00\x01\x00\x00\x03\xf8" + b"z" * 1016) * 1024  # 1 MiB
        cut = daemon.waitForLog("code=SLOW_CONSUMER")
        flood = Flood(client.transport, block, 48)  # bounded: at most 48 MiB
        yield cut
        flood.stopProducing()
        client.transport.write(block)  # still sending when the daemon closes
        yield deferLater(reactor, 0.2, lambda: None)
        client.transport.resumeProducing()
        yield client.closed
        self.assertEqual(client.frames[-1][0], T.ERROR)
        self.assertTrue(client.frames[-1][1].startswith(b"SLOW_CONSUMER."))
        # The replies it had not started to receive were dropped, not sent.
        self.assertIn("bytes not yet sent dropped", daemon.log)
        self.assertEqual({t for t, _ in client.frames[:-1]}, {T.ECHO})

    @defer.inlineCallbacks
    def test_slot_free_once_everything_is_sent(self):
        """A user who left no longer counts against --max-clients once the
        daemon has sent it everything, though its socket is still open."""
        daemon = Daemon("--stats-interval", "0", "--max-clients", "1")
        self.addCleanup(daemon.stop)
        yield daemon.start()
        first = yield active(self, daemon, b"first", HalfCloseClient)
        first.send(T.BYE)
        yield first.ended  # the daemon's FIN; our socket stays open
        self.assertTrue(first.transport.connected)
        second = yield active(self, daemon, b"second", HalfCloseClient)
        second.send(T.ECHO, b"in")
        self.assertEqual((yield second.next()), (T.ECHO, b"in"))

    @defer.inlineCallbacks
    def test_half_close_still_answered(self):
        """A client that shuts its sending side gets the replies to what it
        sent, then the daemon's FIN; the others see it leave (reason error).

        It reads nothing until the daemon has seen its end of stream, so
        more replies are queued in the daemon then than the kernel holds.
        """
        daemon = Daemon("--stats-interval", "0", "--max-backlog", "64MiB")
        self.addCleanup(daemon.stop)
        yield daemon.start()
        alice = yield active(self, daemon, b"alice", HalfCloseClient)
        bob = yield active(self, daemon, b"bob", HalfCloseClient)
        self.assertEqual((yield alice.next())[0], T.JOIN)  # bob's
        alice.transport.pauseProducing()
        alice.send(T.SAY, b"last words")
        echoes = [b"%05d" % i + b"e" * 995 for i in range(16000)]  # 16 MB
        for payload in echoes:
            alice.send(T.ECHO, payload)
        alice.transport.loseWriteConnection()
        yield daemon.waitForLog("name=alice reason=error")
        alice.transport.resumeProducing()
        # The FIN; a reset would be a failure, so also wake on the close.
        yield defer.DeferredList([alice.ended, alice.closed], fireOnOneCallback=True)
        got = alice.frames  # all of it: the FIN came after it
        self.assertEqual(got[0][0], T.MESSAGE)
        self.assertEqual(got[1:], [(T.ECHO, p) for p in echoes])
        said = yield bob.next()
        self.assertTrue(said[1].endswith(b".last words"))
        ftype, payload = yield bob.next()
        self.assertEqual((ftype, payload.rsplit(b".", 1)[1]), (T.LEAVE, b"error"))

    @defer.inlineCallbacks
    def test_shutdown_prompt_when_clients_keep_sockets_open(self):
        """SIGTERM: clients that read their ERROR SHUTDOWN but never close
        their sockets do not hold the daemon until the grace period ends."""
        daemon = Daemon("--stats-interval", "0", "--shutdown-grace", "1")
        self.addCleanup(daemon.stop)
        yield daemon.start()
        clients = []
        for name in (b"k1", b"k2", b"k3"):
            clients.append((yield active(self, daemon, name, HalfCloseClient)))
        left = yield active(self, daemon, b"k4", HalfCloseClient)
        left.send(T.BYE)  # lingering already when the stop begins
        yield left.ended
        status = daemon.signal(signal.SIGTERM)
        for client in clients:
            yield client.ended
            self.assertEqual(client.frames[-1][0], T.ERROR)
            self.assertTrue(client.frames[-1][1].startswith(b"SHUTDOWN."))
        self.assertEqual((yield status), 128 + signal.SIGTERM)
        self.assertNotIn("shutdown grace over", daemon.log)

    @defer.inlineCallbacks
    def test_slow_reader_still_gets_final_error(self):
        """A client with a small receive buffer that sends a bad frame and
        keeps sending for 3 s before it reads gets everything, the ERROR last:
        the daemon lingers until the client has acknowledged it all."""
        daemon = Daemon("--stats-interval", "0")
        self.addCleanup(daemon.stop)
        yield daemon.start()
        client = yield connect(daemon.port)
        self.addCleanup(client.transport.abortConnection)
        client.transport.socket.setsockopt(
            socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024
        )
        client.transport.pauseProducing()
        for i in range(700):
            client.send(T.ECHO, b"%04d" % i + b"x" * 1012)
        client.transport.write(HEADER.pack(T.ECHO, 5000))  # fatal
        pinger = task.LoopingCall(client.send, T.PING, b"p")
        pinger.start(0.05)
        yield daemon.waitForLog("code=FRAME_TOO_LARGE")  # the close begins
        # No Deferred stands for "the client is still not reading": real time
        # must pass, longer than any fixed linger would have allowed.
        yield deferLater(reactor, 3.0, lambda: None)
        pinger.stop()
        client.transport.resumeProducing()
        yield client.closed
        self.assertEqual(len(client.frames), 701)
        self.assertEqual(client.frames[-1][0], T.ERROR)
        self.assertTrue(client.frames[-1][1].startswith(b"FRAME_TOO_LARGE."))
