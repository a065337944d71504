"""chatd-client's Session: one user's chat, from HELLO to BYE and back again.

The client's state machine, between the Console (what the user types and
sees) and the ChatClientProtocol (frames to and from the server): it dials,
does the handshake (asking for a name or password on a terminal), sends
commands, keeps an idle connection alive, leaves with BYE and, with
``--reconnect``, dials again with backoff.  A script's lines go through
chatd.client.pipe; on a terminal chatd.client.inflight says which request a
reply answers, chatd.client.roomchat does rooms and chatd.client.resume
history and resume (protocol 1.2).  Given its reactor and ``connect``: tests
use a task.Clock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer, protocol, task
from twisted.python.failure import Failure

from chatd.client import commands, render
from chatd.client.connection import ChatClientProtocol, SessionFactory
from chatd.client.console import Console
from chatd.client.inflight import REQUEST_REFUSALS, InFlight
from chatd.client.pipe import PipeInput
from chatd.client.resume import Resume
from chatd.client.roomchat import RoomChat
from chatd.client.userinput import UserInput
from chatd.netutil import describe_failure
from chatd.wire import (
    ErrorCode,
    FrameType,
    join_fields,
    parse_error,
    split_fields,
    valid_name,
)

#: Seconds between keep-alive PINGs: well inside the server's 30 s default.
KEEPALIVE = 10.0
#: How long to wait for the server to close after BYE before hanging up.
BYE_TIMEOUT = 3.0
MAX_BACKOFF = 30.0
NAME_REFUSALS = {ErrorCode.NAME_TAKEN.name, ErrorCode.BAD_NAME.name}


class Session(UserInput):
    """One user's chat: connect, handshake, relay, keep alive, leave."""

    def __init__(
        self,
        reactor: Any,
        console: Console,
        connect: Callable[[protocol.Factory], defer.Deferred],
        address: str,
        name: str | None,
        password: bytes | None = None,
        tls: bool = False,
        reconnect: bool = False,
        keepalive: float = KEEPALIVE,
        resume: bool = False,
    ) -> None:
        self.reactor = reactor
        self.console = console
        console.session = self
        self._connect = connect
        self.address = address
        self.name = name
        self.password = password
        self.tls = tls
        self.reconnect = reconnect
        self.proto: ChatClientProtocol | None = None
        # idle connecting hello naming password active leaving done
        self.state = "idle"
        self.me: render.Person | None = None
        self.limit = 0
        self.queued: list[commands.Command] = []
        #: Pipe mode: input lines, numbered, sent at the server's pace.
        self.pipe = PipeInput(
            reactor,
            self._say,
            lambda text: commands.text_problem(text, self.limit),
            console,
        )
        #: Terminal mode: SAYs and WHISPERs whose reply may still come, in order.
        self.requests = InFlight()
        self.rooms = RoomChat(console, self._send, self.requests)
        #: With ``resume`` (a terminal or a pipe): 1.2 before HELLO,
        #: resumed after a drop.
        self.resume = Resume(self, resume)
        self.eof = False
        self.heard = False
        self.everActive = False
        self.retryable = True
        self.backoff = 1.0
        self.exitCode: int | None = None
        self.done: defer.Deferred = defer.Deferred()
        self._byeTimer: Any = None
        self._retryCall: Any = None
        self._lastSent = 0.0
        self.keepalive = task.LoopingCall(self._ping)
        self.keepalive.clock = reactor
        self.keepaliveInterval = keepalive

    # -- lifecycle -------------------------------------------------------

    def start(self) -> None:
        if self.name is None:
            self._askName()
        else:
            self._dial()

    def _askName(self) -> None:
        self.state = "naming"
        self.console.askName().addCallback(self._named)

    def _named(self, name: str) -> None:
        name = name.strip()
        if not valid_name(name.encode("ascii", "replace")):
            self.console.warn("a name is 1 to 32 ASCII letters, digits, _ or -")
            return self._askName()
        self.name = name
        if self.proto is not None and self.proto.transport.connected:
            self._hello()
        else:
            self._dial()

    def _askPassword(self) -> None:
        """AUTH_FAILED on a terminal: ask, then connect again (the server hung up)."""
        self.state = "password"
        self.console.ask("Password: ", secret=True).addCallback(self._passwordGiven)

    def _passwordGiven(self, password: str) -> None:
        self.password = password.encode("utf-8")
        self._hangUp()
        self._dial()

    def _hangUp(self) -> None:
        """Let go of the current connection; its loss is then no news."""
        proto, self.proto = self.proto, None
        if self.keepalive.running:
            self.keepalive.stop()
        if proto is not None:
            proto.transport.abortConnection()

    def _dial(self) -> None:
        self.state = "connecting"
        self.heard = False
        self.console.setPrompt("")
        self._connect(SessionFactory(self)).addErrback(self._connectFailed)

    def _connectFailed(self, reason: Failure) -> None:
        if self.state == "done":
            return
        self.console.warn(describe_failure(reason, self.address, self.tls, False))
        self._lost()

    def connected(self, proto: ChatClientProtocol) -> None:
        self.proto = proto
        if self.state == "done":
            proto.transport.abortConnection()
            return
        self.keepalive.start(self.keepaliveInterval, now=False)
        if not self.resume.connected():
            self._hello()

    def _hello(self) -> None:
        self.state = "hello"
        assert self.name is not None  # asked for before dialling
        payload = self.name.encode("ascii")
        if self.password is not None:
            payload = join_fields(payload, self.password)
        self._send(FrameType.HELLO, payload)

    def _send(self, ftype: FrameType, payload: bytes = b"") -> None:
        if self.proto is None:
            return  # gone: what was in flight is sent again or reported
        self._lastSent = self.reactor.seconds()
        self.proto.send(ftype, payload)

    def _say(self, text: str) -> None:
        self._send(FrameType.SAY, text.encode("utf-8"))

    def _ping(self) -> None:
        """Keep an idle connection alive (the server times out silent ones)."""
        if self.reactor.seconds() - self._lastSent >= self.keepaliveInterval * 0.5:
            self._send(FrameType.PING)

    def disconnected(self, proto: ChatClientProtocol, reason: Failure) -> None:
        if proto is not self.proto:
            return
        self.proto = None
        self.pipe.stop()
        self.resume.lost()
        self.rooms.lost()
        for whisper in self.requests.lost():
            self.console.warn(
                f"whisper to {whisper.name} not confirmed (connection lost)"
            )
        if self.keepalive.running:
            self.keepalive.stop()
        if self._byeTimer is not None and self._byeTimer.active():
            self._byeTimer.cancel()
        if self.state in ("leaving", "done"):
            return self._finish(0)
        if self.state in ("naming", "password"):
            return  # the answer reconnects
        self.console.warn(describe_failure(reason, self.address, self.tls, self.heard))
        self._lost()

    def _lost(self) -> None:
        """The connection is gone without us asking: resume, retry or give up."""
        delay = self.resume.retryDelay() if self.retryable else None
        if delay is None and self.reconnect and self.everActive and self.retryable:
            delay, self.backoff = self.backoff, min(self.backoff * 2, MAX_BACKOFF)
        if delay is None:
            return self._finish(1, "no connection to the server")
        self.console.warn(f"reconnecting in {delay:g} s")
        self.state = "idle"
        self._retryCall = self.reactor.callLater(delay, self._dial)

    def quit(self) -> None:
        """Leave cleanly: BYE, wait for the server to close, exit 0."""
        if self.state in ("leaving", "done"):
            return
        if self.proto is None or self.state not in ("hello", "active", "naming"):
            return self._finish(0)
        self.state = "leaving"
        self._send(FrameType.BYE)
        self._byeTimer = self.reactor.callLater(
            BYE_TIMEOUT, self.proto.transport.abortConnection
        )

    def shutdown(self) -> defer.Deferred | None:
        """The reactor is stopping (SIGTERM): leave cleanly before it does."""
        if self.state == "done":
            return None
        self.quit()
        return self.done

    def _finish(self, code: int, why: str = "the client was stopped first") -> None:
        if self.state == "done" and self.exitCode is not None:
            return
        self.state = "done"
        self.pipe.abandon(why)
        # A script learns from the status that not every line got through.
        self.exitCode = 1 if self.pipe.failed else code
        if self._retryCall is not None and self._retryCall.active():
            self._retryCall.cancel()
        if self.keepalive.running:
            self.keepalive.stop()
        if self.proto is not None:
            self.proto.transport.abortConnection()
        flushed = self.console.finish()
        # stdout may never drain (a consumer that stopped reading): go anyway.
        flushed.addTimeout(BYE_TIMEOUT, self.reactor)
        flushed.addBoth(lambda _: self.done.callback(None))

    # -- frames from the server ------------------------------------------

    def frameReceived(self, ftype: int, payload: bytes) -> None:
        self.heard = True
        if not self.resume.frame(ftype, payload):  # MARKs, repeats, history
            self.handle(ftype, payload)

    def handle(self, ftype: int, payload: bytes) -> None:
        """A frame to act on and show (a room's held ones come later)."""
        if ftype == FrameType.PING:
            return self._send(FrameType.PONG, payload)
        if ftype == FrameType.PONG:
            return self._pong(payload)
        if ftype == FrameType.WELCOME:
            return self._welcome(payload)
        if ftype == FrameType.ERROR:
            return self._error(payload)
        my_id = self.me.id if self.me is not None else None
        if self.rooms.frame(ftype, payload, my_id):
            return
        if ftype == FrameType.MESSAGE and my_id is not None:
            if payload.startswith(f"{my_id}.".encode()):
                self._acked()
        line = render.render_frame(ftype, payload, my_id, self.console.color)
        if line is not None:
            self.console.show(line)
        self._maybeDone()

    def _acked(self) -> None:
        """Our own MESSAGE copy: the oldest SAY in flight was delivered."""
        if not self.console.interactive:
            self.pipe.acked()
        else:
            self.requests.acked()

    def _pong(self, token: bytes) -> None:
        """The PING behind a WHISPER came back: no ERROR came for it, it arrived."""
        sent = self.requests.confirmed(token)
        if sent is None:
            return  # a keep-alive PING, or a whisper already reported as failed
        color = self.me.color if self.me is not None else None
        self.console.show(
            render.whisper_sent(sent.name, sent.text, color, self.console.color)
        )

    def _welcome(self, payload: bytes) -> None:
        try:
            name, user_id, color = split_fields(payload, 3)
            self.me = render.parse_person([user_id, color, name])
        except ValueError:
            self.console.warn("malformed WELCOME from the server")
            self.retryable = False
            return self._finish(1, "malformed WELCOME")
        self.limit = self.rooms.limit = commands.max_text(user_id, color, name)
        resumed = self.resume.welcomed()  # then SINCEs went first
        self._send(FrameType.READY)
        if resumed:
            self.resume.ready()
        self.rooms.active(resumed)
        self.state = "active"
        self.everActive = True
        self.backoff = 1.0
        self.console.setPrompt(self.rooms.book.prompt())
        queued, self.queued = self.queued, []
        for command in queued:
            self._submit(command)
        if not resumed or self.console.interactive:
            self.pipe.start()  # a script's lines wait for the replay's end
        self._maybeDone()

    def replayed(self) -> None:
        """A resume's replay is over: our own lines it brought back are
        delivered; a script's other lines go now, in order."""
        if not self.console.interactive:
            self.pipe.start()
            self._maybeDone()

    def _error(self, payload: bytes) -> None:
        code, text = parse_error(payload)
        if self.state in ("naming", "password"):
            return  # e.g. HANDSHAKE_TIMEOUT while the user types
        if self.resume.error(code, text) or self.rooms.error(code):
            return  # VERSION refused (1.1), BAD_TOKEN, HISTORY_GONE, ...
        if self.state == "hello" and code in NAME_REFUSALS:
            self.console.warn(f"{text} ({self.name!r} refused: {code})")
            if self.console.interactive and not self.eof:
                return self._askName()
            self.retryable = False
            return self._finish(1, f"name refused ({code})")
        if self.state == "hello" and code == ErrorCode.AUTH_FAILED.name:
            if self.console.interactive and not self.eof:
                what = (
                    "wrong password" if self.password is not None else "password needed"
                )
                self.console.warn(f"{text} ({what}; AUTH_FAILED)")
                return self._askPassword()
            self.retryable = False
        if code in REQUEST_REFUSALS and self._refused(code, text):
            return self._maybeDone()
        self.console.alert(
            render.render_frame(FrameType.ERROR, payload, None, self.console.color)
            or ""
        )
        self._maybeDone()

    def _refused(self, code: str, text: str) -> bool:
        """An ERROR answering our oldest SAY or WHISPER; True if it was handled."""
        if not self.console.interactive:
            return self.pipe.refused(code, text)
        whisper = self.requests.refused(code)
        if whisper is None:
            return False
        self.console.warn(
            f"whisper to {whisper.name} not delivered: {render.safe(text.encode())} "
            f"[{code}]"
        )
        return True
