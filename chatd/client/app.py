"""chatd-client: chat through a chatd server from a terminal or a script.

One reactor runs both sides: :class:`ChatClientProtocol` speaks the wire
protocol (chatd.wire) to the server, :class:`Console` is the StandardIO
protocol for the keyboard and screen, and :class:`Session` joins them: the
handshake, commands, keep-alive PINGs, leaving cleanly and reconnecting.

On a terminal the tty is put in raw mode and a small line editor keeps the
user's partial input intact while messages arrive.  With stdin not a
terminal, the client is a filter: lines in are SAYs (sent at the server's
pace by chatd.client.pacing, each refused one reported by line number),
messages out are plain lines, and at end of input it waits until every line
was delivered or refused before it says BYE, so
``printf 'hi\\n' | chatd-client --name bot`` works; the exit status says
whether all of them got through.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import termios
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

from twisted.internet import defer, error, protocol, task
from twisted.internet.interfaces import (
    IAddress,
    IHalfCloseableProtocol,
    IStreamClientEndpoint,
)
from twisted.python.failure import Failure
from zope.interface import implementer

from chatd import __version__
from chatd.client import commands, render
from chatd.client.lineedit import CLEAR_LINE, Key, LineEditor
from chatd.client.pacing import Pacer
from chatd.netutil import describe_failure
from chatd.secretfile import readPassword
from chatd.wire import (
    MAX_PAYLOAD,
    ErrorCode,
    FrameReceiver,
    FrameType,
    encode,
    join_fields,
    parse_error,
    split_fields,
    valid_name,
)

DEFAULT_SERVER = "localhost:7777"
DEFAULT_PORT = 7777
#: Seconds between keep-alive PINGs: well inside the server's 30 s default.
KEEPALIVE = 10.0
#: How long to wait for the server to close after BYE before hanging up.
BYE_TIMEOUT = 3.0
MAX_BACKOFF = 30.0
#: ERROR codes that answer a SAY (so its MESSAGE copy will not come).
SAY_REFUSALS = {"BAD_TEXT", "TOO_LONG", "RATE_LIMITED", "NOT_READY", "UNAVAILABLE"}
#: ... and those that answer a SAY or a WHISPER.
REQUEST_REFUSALS = SAY_REFUSALS | {ErrorCode.NO_SUCH_USER.name}
#: Pipe mode stops reading stdin with this many lines waiting, and reads on
#: once the backlog is down to INPUT_LOW (``tail -f`` of a busy file).
INPUT_HIGH = 1000
INPUT_LOW = 100
NAME_REFUSALS = {ErrorCode.NAME_TAKEN.name, ErrorCode.BAD_NAME.name}


class UsageError(Exception):
    """Bad command line or input file: one line on stderr, exit status 2."""


def parse_address(text: str) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address."""
    text = text.strip()
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise UsageError(f"bad server address {text!r}")
        port = rest[1:] if rest else ""
    elif text.count(":") > 1:  # a bare IPv6 address, no port
        host, port = text, ""
    else:
        host, _, port = text.partition(":")
    if not host:
        raise UsageError(f"bad server address {text!r}: no host")
    if not port:
        return host, DEFAULT_PORT
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise UsageError(f"bad port {port!r} in {text!r}: must be 1 to 65535")
    return host, int(port)


class ChatClientProtocol(FrameReceiver):
    """Frames to and from the server; all decisions are the Session's."""

    transport: Any  # a TCP or TLS transport: abortConnection, connected

    def __init__(self, session: Session) -> None:
        self.session = session

    def connectionMade(self) -> None:
        self.session.connected(self)

    def send(self, ftype: FrameType, payload: bytes = b"") -> None:
        self.transport.write(encode(ftype, payload))

    def frameReceived(self, ftype: int, payload: bytes) -> None:
        self.session.frameReceived(ftype, payload)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.session.disconnected(self, reason)


def _terminal_width() -> int:
    try:
        return os.get_terminal_size(1).columns or 80
    except OSError:
        return 80


class _SessionFactory(protocol.ClientFactory):
    """Builds the one protocol of a connection attempt for ``session``."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def buildProtocol(self, addr: IAddress | None) -> protocol.Protocol:
        return ChatClientProtocol(self.session)


@implementer(IHalfCloseableProtocol)
class Console(protocol.Protocol):
    """stdin and stdout (via StandardIO): an editor on a tty, lines on a pipe."""

    session: Session
    transport: Any  # StandardIO: also a producer (pauseProducing) with .disconnecting

    def __init__(
        self,
        interactive: bool,
        color: bool,
        terminalWidth: Callable[[], int] | None = None,
        errors: TextIO | None = None,
    ) -> None:
        self.interactive = interactive
        self.color = color
        self.terminalWidth = terminalWidth or _terminal_width
        self.errors = errors
        self.editor = LineEditor() if interactive else None
        self._partial = b""
        self._wanted: defer.Deferred | None = None
        self.closed: defer.Deferred = defer.Deferred()

    def connectionMade(self) -> None:
        if self.editor is not None:
            self.editor.width = self.terminalWidth()

    # -- input -----------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self.editor is None:
            *lines, self._partial = (self._partial + data).split(b"\n")
            for line in lines:
                self.session.typed(line.rstrip(b"\r").decode("utf-8", "replace"))
            return
        for event in self.editor.feed(data):
            if event is Key.INTERRUPT or event is Key.EOF:
                self.session.quit()
            elif self._wanted is not None:
                d, self._wanted = self._wanted, None
                self.editor.secret = False
                d.callback(event)
            else:
                self.session.typed(event)
        self._write(self.editor.redraw())

    def readConnectionLost(self) -> None:
        if self._partial:
            line, self._partial = self._partial, b""
            self.session.typed(line.rstrip(b"\r").decode("utf-8", "replace"))
        self.session.endOfInput()

    def writeConnectionLost(self) -> None:
        """Nobody reads our output any more (a closed pipe): leave."""
        self.session.quit()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        if not self.closed.called:
            self.closed.callback(None)

    def pauseInput(self) -> None:
        """Stop reading stdin (a script is far ahead of the server)."""
        if self.transport is not None:
            self.transport.pauseProducing()

    def resumeInput(self) -> None:
        if self.transport is not None:
            self.transport.resumeProducing()

    # -- output ----------------------------------------------------------

    def _write(self, text: str) -> None:
        if self.transport is not None and not self.transport.disconnecting:
            self.transport.write(text.encode("utf-8", "replace"))

    def show(self, line: str) -> None:
        """A line of the conversation."""
        if self.editor is None:
            self._write(line + "\n")
        else:
            self._write(self.editor.above(line))

    def resized(self) -> None:
        """The terminal changed size (SIGWINCH): fit the input row to it."""
        if self.editor is not None:
            self.editor.width = self.terminalWidth()
            self._write(self.editor.redraw())

    def warn(self, text: str) -> None:
        """A problem or a status line: stderr in a script, on screen otherwise."""
        if self.editor is None:
            self._stderr(f"chatd-client: {text}")
        else:
            self.show(render.warning(text, self.color))

    def alert(self, line: str) -> None:
        """A rendered server ERROR: stderr in a script, on screen otherwise."""
        if self.editor is None:
            self._stderr(line)
        else:
            self.show(line)

    def _stderr(self, line: str) -> None:
        """One line to stderr; a closed stderr must not stop the session."""
        errors = self.errors or sys.stderr
        try:
            errors.write(line + "\n")
            errors.flush()
        except (OSError, ValueError):  # a broken pipe, a closed file
            pass

    def setPrompt(self, prompt: str) -> None:
        if self.editor is not None:
            self.editor.prompt = prompt
            self._write(self.editor.redraw())

    def restore(self, text: str) -> None:
        """Put a line the user typed back in the editor (to shorten or fix it)."""
        if self.editor is not None and not self.editor.buffer:
            self.editor.set(text)
            self._write(self.editor.redraw())

    def ask(self, prompt: str, secret: bool = False) -> defer.Deferred:
        """Fires with the next line the user types (interactive only)."""
        self._wanted = defer.Deferred()
        if self.editor is not None:
            self.editor.secret = secret
        self.setPrompt(prompt)
        return self._wanted

    def askName(self) -> defer.Deferred:
        """Fires with the name the user types (interactive only)."""
        return self.ask("Your name: ")

    def finish(self) -> defer.Deferred:
        """Flush what is left to write and let go of stdin/stdout."""
        if self.editor is not None:
            self.editor.prompt = ""
            self._write(CLEAR_LINE)
        if self.transport is not None and not self.closed.called:
            self.transport.loseConnection()
        return self.closed


@dataclass
class _SentWhisper:
    """A WHISPER awaiting the PONG of the PING sent right behind it."""

    name: str
    text: str
    token: bytes


#: Stands for a SAY sent from the terminal, in the queue of requests.
_SAY = "say"


class Session:
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
        self.pacer = Pacer(
            reactor,
            self._say,
            self._lineFailed,
            lambda text: commands.text_problem(text, self.limit),
            warn=console.warn,
        )
        self.lineno = 0
        self.inputPaused = False
        #: Terminal mode: SAYs and WHISPERs whose reply may still come, in order.
        self.requests: deque[str | _SentWhisper] = deque()
        self._tokens = 0
        self.eof = False
        self.heard = False
        self.everActive = False
        self.retryable = True
        self.backoff = 1.0
        self.users: list[bytes] = []
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
        self._connect(_SessionFactory(self)).addErrback(self._connectFailed)

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
        self.pacer.stop()
        self._unconfirmed("connection lost")
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
        """The connection is gone without us asking: retry or give up."""
        if self.reconnect and self.everActive and self.retryable:
            delay, self.backoff = self.backoff, min(self.backoff * 2, MAX_BACKOFF)
            self.console.warn(f"reconnecting in {delay:g} s")
            self.state = "idle"
            self._retryCall = self.reactor.callLater(delay, self._dial)
        else:
            self._finish(1, "no connection to the server")

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
        lost = self.pacer.abandon()
        if lost:
            self._reportLost(lost, why)
        # A script learns from the status that not every line got through.
        self.exitCode = 1 if self.pacer.failed else code
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

    def _reportLost(self, lost: list[tuple[int, str]], why: str) -> None:
        numbers = [n for n, _ in lost]
        if len(numbers) == 1:
            self.console.warn(f"line {numbers[0]} not sent: {why}")
        else:
            self.console.warn(
                f"{len(numbers)} lines not sent (lines {numbers[0]} to "
                f"{numbers[-1]}): {why}"
            )

    # -- input from the user ---------------------------------------------

    def typed(self, line: str) -> None:
        if self.state == "done":
            return
        if not self.console.interactive:
            self.lineno += 1
            if line:
                self.pacer.add(self.lineno, line)
                self._flow()
            return
        command = commands.parse_command(line)
        if command is not None:
            self._submit(command, line)

    def _flow(self) -> None:
        """Read stdin only while the backlog of lines is not too long."""
        backlog = self.pacer.backlog
        if not self.inputPaused and backlog >= INPUT_HIGH:
            self.inputPaused = True
            self.console.pauseInput()
        elif self.inputPaused and backlog <= INPUT_LOW:
            self.inputPaused = False
            self.console.resumeInput()

    def _lineFailed(self, lineno: int, code: str, reason: str) -> None:
        self.console.warn(f"line {lineno} not sent: {code} ({reason})")

    def endOfInput(self) -> None:
        self.eof = True
        if not self.console.interactive:
            self._maybeDone()
        else:
            self.quit()

    def _maybeDone(self) -> None:
        """A script's input ended: leave once its lines are all delivered or refused."""
        if self.eof and self.state == "active" and self.pacer.idle:
            self.quit()
        elif self.eof and self.state == "naming":
            self._finish(1)

    def _submit(self, command: commands.Command, line: str = "") -> None:
        if isinstance(command, commands.Quit):
            return self.quit()
        if isinstance(command, commands.Help):
            return self.console.show(render.dim(commands.HELP, self.console.color))
        if isinstance(command, commands.Invalid):
            return self.console.warn(command.reason)
        if self.state != "active":
            self.queued.append(command)
            return
        if isinstance(command, commands.Who):
            return self._send(FrameType.WHO)
        if isinstance(command, commands.Say):
            problem = commands.check_text(command.text, self.limit)
            if problem:
                self.console.restore(line)
                return self.console.warn(problem)
            self.requests.append(_SAY)
            return self._say(command.text)
        if isinstance(command, commands.Whisper):
            room = min(self.limit, MAX_PAYLOAD - len(command.name) - 1)
            problem = commands.check_text(command.text, room)
            if problem:
                self.console.restore(line)
                return self.console.warn(problem)
            # Shown once the PING right behind it comes back without an ERROR
            # before it (replies come in request order): then it was delivered.
            self._tokens += 1
            sent = _SentWhisper(command.name, command.text, b"w%d" % self._tokens)
            self.requests.append(sent)
            self._send(FrameType.WHISPER, join_fields(command.name, command.text))
            self._send(FrameType.PING, sent.token)

    def _unconfirmed(self, why: str) -> None:
        """The connection is gone: whispers not yet confirmed may not have arrived."""
        for request in self.requests:
            if isinstance(request, _SentWhisper):
                self.console.warn(f"whisper to {request.name} not confirmed ({why})")
        self.requests.clear()

    # -- frames from the server ------------------------------------------

    def frameReceived(self, ftype: int, payload: bytes) -> None:
        self.heard = True
        color = self.console.color
        if ftype == FrameType.PING:
            return self._send(FrameType.PONG, payload)
        if ftype == FrameType.PONG:
            return self._pong(payload)
        if ftype == FrameType.WELCOME:
            return self._welcome(payload)
        if ftype == FrameType.USERS:
            if payload:
                self.users.extend(payload.split(b"\n"))
                return
            users, self.users = self.users, []
            return self.console.show(render.users_line(users, color))
        if ftype == FrameType.ERROR:
            return self._error(payload)
        my_id = self.me.id if self.me is not None else None
        if ftype == FrameType.MESSAGE and my_id is not None:
            if payload.startswith(f"{my_id}.".encode()):
                self._acked()
        line = render.render_frame(ftype, payload, my_id, color)
        if line is not None:
            self.console.show(line)
        self._maybeDone()

    def _acked(self) -> None:
        """Our own MESSAGE copy: the oldest SAY in flight was delivered."""
        if not self.console.interactive:
            self.pacer.acked()
            self._flow()
        elif self.requests and self.requests[0] == _SAY:
            self.requests.popleft()

    def _pong(self, token: bytes) -> None:
        """The PING behind a WHISPER came back: no ERROR came for it, it arrived."""
        sent = next(
            (
                r
                for r in self.requests
                if isinstance(r, _SentWhisper) and r.token == token
            ),
            None,
        )
        if sent is None:
            return  # a keep-alive PING, or a whisper already reported as failed
        self.requests.remove(sent)
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
        self.limit = commands.max_text(user_id, color, name)
        self._send(FrameType.READY)
        self.state = "active"
        self.everActive = True
        self.backoff = 1.0
        self.console.setPrompt("> ")
        queued, self.queued = self.queued, []
        for command in queued:
            self._submit(command)
        self.pacer.start()
        self._flow()
        self._maybeDone()

    def _error(self, payload: bytes) -> None:
        code, text = parse_error(payload)
        if self.state in ("naming", "password"):
            return  # e.g. HANDSHAKE_TIMEOUT while the user types
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
            if code in SAY_REFUSALS and self.pacer.inFlight:
                self.pacer.refused(code, text)
                self._flow()
                return True
            return False
        if not self.requests:
            return False
        request = self.requests[0]
        if code == ErrorCode.NO_SUCH_USER.name:  # only ever answers a WHISPER
            request = next(
                (r for r in self.requests if isinstance(r, _SentWhisper)), request
            )
        self.requests.remove(request)
        if isinstance(request, _SentWhisper):
            self.console.warn(
                f"whisper to {request.name} not delivered: {render.safe(text.encode())} "
                f"[{code}]"
            )
            return True
        return False


# -- command line ------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="chatd-client",
        description="Chat through a chatd server. On a terminal: type to chat, "
        "/help for commands. On a pipe: each input line is said, messages are "
        "printed one per line.",
    )
    p.add_argument(
        "server",
        nargs="?",
        help=f"HOST[:PORT] or [IPv6]:PORT (default: $CHATD_SERVER or {DEFAULT_SERVER})",
    )
    p.add_argument("--name", help="your chat name (asked for on a terminal if absent)")
    p.add_argument(
        "--password-file", help="file whose first line is the server password"
    )
    p.add_argument(
        "--tls", action="store_true", help="connect with TLS, verifying the server"
    )
    p.add_argument(
        "--ca", metavar="FILE", help="trust this CA certificate (PEM) for --tls"
    )
    p.add_argument(
        "--reconnect",
        action="store_true",
        help="reconnect with backoff when the connection is lost",
    )
    p.add_argument("--no-color", action="store_true", help="no ANSI colours")
    p.add_argument("--version", action="version", version=f"chatd-client {__version__}")
    p.add_argument("--keepalive", type=float, default=KEEPALIVE, help=argparse.SUPPRESS)
    return p  # fmt: skip


def _loadTrust(ca: str | None) -> object:
    """The trust root for --tls: the --ca certificate, else the system's CAs."""
    from OpenSSL import crypto
    from twisted.internet import ssl

    if ca is None:
        return ssl.platformTrust()
    try:
        with open(ca, "rb") as f:
            return ssl.Certificate.loadPEM(f.read())
    except OSError as e:
        raise UsageError(f"--ca: cannot read {ca}: {e.strerror}") from None
    except (crypto.Error, ValueError):
        raise UsageError(f"--ca: {ca} holds no PEM certificate") from None


def _connector(reactor: Any, settings: dict) -> Callable:
    """A function connecting a factory to the server (TLS-wrapped with --tls)."""
    from twisted.internet import ssl
    from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS

    host = settings["host"]
    endpoint: IStreamClientEndpoint = HostnameEndpoint(reactor, host, settings["port"])
    if settings["trust"] is not None:
        options = ssl.optionsForClientTLS(host, trustRoot=settings["trust"])
        endpoint = wrapClientTLS(options, endpoint)
    return endpoint.connect


def _setup(argv: list[str]) -> dict:
    args = _parser().parse_args(argv)
    server = args.server or os.environ.get("CHATD_SERVER") or DEFAULT_SERVER
    host, port = parse_address(server)
    interactive = os.isatty(0)
    if args.name is not None and not valid_name(args.name.encode("ascii", "replace")):
        raise UsageError(
            f"--name: {args.name!r} is not a name (1 to 32 ASCII letters, digits, _ or -)"
        )
    if args.name is None and not interactive:
        raise UsageError("--name is required when stdin is not a terminal")
    if args.ca is not None and not args.tls:
        raise UsageError("--ca needs --tls")
    if not args.keepalive > 0:
        raise UsageError("--keepalive must be a positive number of seconds")
    password = None
    if args.password_file is not None:
        try:
            password = readPassword(args.password_file)
        except ValueError as e:
            raise UsageError(f"--password-file: {e}") from None
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    color = (
        interactive
        and os.isatty(1)
        and not args.no_color
        and "NO_COLOR" not in os.environ
        and os.environ.get("TERM") != "dumb"
    )
    return dict(
        host=host,
        port=port,
        address=address,
        name=args.name,
        password=password,
        tls=args.tls,
        trust=_loadTrust(args.ca) if args.tls else None,
        reconnect=args.reconnect,
        keepalive=args.keepalive,
        interactive=interactive,
        color=color,
    )


class RawTerminal:
    """Put the tty on stdin in raw mode (no echo, keys one by one) and back."""

    def __init__(self, fd: int = 0) -> None:
        self.fd = fd
        self.saved = termios.tcgetattr(fd)

    def __enter__(self) -> RawTerminal:
        mode = termios.tcgetattr(self.fd)
        mode[0] &= ~(termios.IXON | termios.ICRNL)
        mode[3] &= ~(termios.ECHO | termios.ICANON | termios.ISIG | termios.IEXTEN)
        mode[6][termios.VMIN] = 1
        mode[6][termios.VTIME] = 0
        termios.tcsetattr(self.fd, termios.TCSAFLUSH, mode)
        return self

    def __exit__(self, *exc: object) -> None:
        termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)


def _stop(_: object, reactor: Any) -> None:
    try:
        reactor.stop()
    except error.ReactorNotRunning:  # already stopping (SIGTERM)
        pass


def run(settings: dict) -> int:
    """Run the chat in the reactor until the session ends; the exit status."""
    from twisted.internet import reactor as _reactor
    from twisted.internet.stdio import StandardIO

    reactor: Any = _reactor
    connect = _connector(reactor, settings)
    console = Console(settings["interactive"], settings["color"])
    session = Session(
        reactor,
        console,
        connect,
        settings["address"],
        settings["name"],
        password=settings["password"],
        tls=settings["tls"],
        reconnect=settings["reconnect"],
        keepalive=settings["keepalive"],
    )
    session.done.addBoth(_stop, reactor)
    reactor.addSystemEventTrigger("before", "shutdown", session.shutdown)

    def started() -> None:
        signal.signal(signal.SIGINT, lambda *_: reactor.callFromThread(session.quit))
        if settings["interactive"]:
            signal.signal(
                signal.SIGWINCH, lambda *_: reactor.callFromThread(console.resized)
            )
        StandardIO(console)
        session.start()

    reactor.callWhenRunning(started)
    reactor.run()
    return 1 if session.exitCode is None else session.exitCode


def main(argv: list[str] | None = None) -> None:
    """Console entry point: ``chatd-client [HOST[:PORT]] [--name NAME] ...``."""
    try:
        settings = _setup(sys.argv[1:] if argv is None else argv)
    except UsageError as e:
        sys.stderr.write(f"chatd-client: {e} (see --help)\n")
        sys.exit(2)
    if settings["interactive"]:
        with RawTerminal(0):
            try:
                code = run(settings)
            finally:
                for fd in (0, 1):
                    os.set_blocking(fd, True)
        sys.stdout.write("\n" if code == 0 else "")
    else:
        code = run(settings)
    sys.exit(code)


if __name__ == "__main__":
    main()
