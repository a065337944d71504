"""What every contract check needs: a fresh deployment of the test's mode
(tests/contract.py) and clients that speak the protocol, with the waits
that make checks exact across processes (a PING's PONG, a marker SAY)."""

from __future__ import annotations

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from chatd.wire import FrameType as T
from tests.contract import MODES, skipReason

#: How long to retry a name whose holder just went (a cluster frees it
#: through its backend, after the close): bounded, 50 ms apart.
RETRIES, RETRY_DELAY = 60, 0.05


class ContractHelpers:
    """A fresh deployment per test, and clients that speak the protocol;
    a subclass sets :attr:`mode`."""

    mode = "single"

    def setUp(self) -> None:
        reason = skipReason(self.mode)
        if reason is not None:
            raise unittest.SkipTest(reason)

    # -- helpers -------------------------------------------------------------

    @defer.inlineCallbacks
    def deploy(self, *options: str):  # type: ignore[no-untyped-def]
        """A fresh deployment of this mode, stopped when the test ends."""
        deployment = MODES[self.mode](self, list(options))
        yield deployment.start()
        self.deployment = deployment
        return deployment

    def cannot(self, check: str) -> None:
        reason = MODES[self.mode].cannot.get(check)
        if reason is not None:
            raise unittest.SkipTest(reason)

    @defer.inlineCallbacks
    def expect(self, client, ftype: int):  # type: ignore[no-untyped-def]
        """The next frame's payload; it must be of type ``ftype``."""
        got, payload = yield client.next()
        self.assertEqual((T(got).name, payload), (T(ftype).name, payload))  # type: ignore[attr-defined]
        return payload

    @defer.inlineCallbacks
    def expectError(self, client, code: str, closes: bool = False):  # type: ignore[no-untyped-def]
        """The next frame is ERROR ``code`` with a text; with ``closes``,
        the server then closes the connection."""
        payload = yield self.expect(client, T.ERROR)
        got, dot, text = payload.partition(b".")
        self.assertEqual(got.decode(), code, payload)  # type: ignore[attr-defined]
        self.assertTrue(dot and text, payload)  # type: ignore[attr-defined]
        if closes:
            yield client.closed
        return text

    @defer.inlineCallbacks
    def sync(self, client, tag: bytes = b"sync"):  # type: ignore[no-untyped-def]
        """PING and wait for its PONG: replies come in request order, so
        everything owed for earlier requests has arrived.  Fires with the
        frames that came before the PONG."""
        client.send(T.PING, tag)
        before = []
        while True:
            ftype, payload = yield client.next()
            if (ftype, payload) == (T.PONG, tag):
                return before
            before.append((ftype, payload))

    @defer.inlineCallbacks
    def named(self, name: bytes, server: int | None = None):  # type: ignore[no-untyped-def]
        """A client that got WELCOME for ``name``; fires with (client, entry)."""
        client = yield self.deployment.connect(server)
        client.send(T.HELLO, name)
        welcome = yield self.expect(client, T.WELCOME)
        sent, uid, color = welcome.split(b".")
        self.assertEqual(sent, name.partition(b".")[0])  # type: ignore[attr-defined]
        return client, b".".join((uid, color, sent))

    @defer.inlineCallbacks
    def users(self, *names: bytes):  # type: ignore[no-untyped-def]
        """ACTIVE users, in order; each earlier one has seen every later
        one's JOIN.  Fires with [(client, entry)]."""
        done: list = []
        for name in names:
            client, entry = yield self.named(name)
            client.send(T.READY)
            self.assertEqual((yield self.expect(client, T.JOIN)), entry)  # type: ignore[attr-defined]
            for other, _ in done:
                self.assertEqual((yield self.expect(other, T.JOIN)), entry)  # type: ignore[attr-defined]
            done.append((client, entry))
        return done

    @defer.inlineCallbacks
    def who(self, client):  # type: ignore[no-untyped-def]
        """WHO: the entries of every USERS frame up to the empty one."""
        client.send(T.WHO)
        entries, frames = [], 0
        while True:
            payload = yield self.expect(client, T.USERS)
            if not payload:
                return entries, frames
            frames += 1
            entries += payload.split(b"\n")

    @defer.inlineCallbacks
    def marker(self, sayer, entry: bytes, *watchers, text: bytes = b"marker"):  # type: ignore[no-untyped-def]
        """``sayer`` SAYs ``text``; every watcher's next broadcast frame must
        be that MESSAGE (the total order: nothing was owed to it before)."""
        sayer.send(T.SAY, text)
        for client in (sayer, *watchers):
            self.assertEqual(  # type: ignore[attr-defined]
                (yield self.expect(client, T.MESSAGE)), entry + b"." + text
            )

    @defer.inlineCallbacks
    def retryHello(self, name: bytes, server: int | None = None):  # type: ignore[no-untyped-def]
        """HELLO ``name`` until it is granted: a name whose holder just
        closed is free once the server has seen the close (in a cluster,
        once the backend has); fires with (client, entry)."""
        client = yield self.deployment.connect(server)
        for _ in range(RETRIES):
            client.send(T.HELLO, name)
            ftype, payload = yield client.next()
            if ftype == T.WELCOME:
                uid, color = payload.split(b".")[1:]
                return client, b".".join((uid, color, name))
            self.assertTrue(payload.startswith(b"NAME_TAKEN."), payload)  # type: ignore[attr-defined]
            yield task.deferLater(reactor, RETRY_DELAY, lambda: None)
        self.fail(f"{name!r} still taken")  # type: ignore[attr-defined]
