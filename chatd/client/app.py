"""chatd-client: chat through a chatd server from a terminal or a script.

One reactor runs both sides: :class:`ChatClientProtocol` speaks the wire
protocol (chatd.wire) to the server, :class:`Console` is the StandardIO
protocol for the keyboard and screen, and :class:`Session` joins them: the
handshake, commands, keep-alive PINGs, leaving cleanly and reconnecting.

On a terminal the tty is put in raw mode and a small line editor keeps the
user's partial input intact while messages arrive.  With stdin not a
terminal, the client is a filter: lines in are SAYs, messages out are plain
lines, and at end of input it waits for its own messages to come back
before it says BYE, so ``printf 'hi\\n' | chatd-client --name bot`` works.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import termios
from collections.abc import Callable

from twisted.internet import defer, error, protocol, task
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from chatd.client import commands, render
from chatd.client.lineedit import CLEAR_LINE, Key, LineEditor
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
SAY_REFUSALS = {"BAD_TEXT", "TOO_LONG", "RATE_LIMITED", "NOT_READY"}
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


@implementer(IHalfCloseableProtocol)
class Console(protocol.Protocol):
    """stdin and stdout (via StandardIO): an editor on a tty, lines on a pipe."""

    session: Session

    def __init__(self, interactive: bool, color: bool) -> None:
        self.interactive = interactive
        self.color = color
        self.editor = LineEditor() if interactive else None
        self._partial = b""
        self._nameWanted: defer.Deferred | None = None
        self.closed: defer.Deferred = defer.Deferred()

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
            elif self._nameWanted is not None:
                d, self._nameWanted = self._nameWanted, None
                d.callback(event)
            else:
                self.session.typed(event)
        if self.transport is not None:
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

    # -- output ----------------------------------------------------------

    def _write(self, text: str) -> None:
        if self.transport is not None and not self.transport.disconnecting:
            self.transport.write(text.encode("utf-8", "replace"))

    def show(self, line: str) -> None:
        """A line of the conversation."""
        if self.editor is None:
            self._write(line + "\n")
        else:
            self.editor.width = _terminal_width()
            self._write(self.editor.above(line))

    def warn(self, text: str) -> None:
        """A problem or a status line: stderr in a script, on screen otherwise."""
        if self.editor is None:
            sys.stderr.write(f"chatd-client: {text}\n")
            sys.stderr.flush()
        else:
            self.show(render.warning(text, self.color))

    def alert(self, line: str) -> None:
        """A rendered server ERROR: stderr in a script, on screen otherwise."""
        if self.editor is None:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
        else:
            self.show(line)

    def setPrompt(self, prompt: str) -> None:
        if self.editor is not None:
            self.editor.prompt = prompt
            self._write(self.editor.redraw())

    def askName(self) -> defer.Deferred:
        """Fires with the name the user types (interactive only)."""
        self._nameWanted = defer.Deferred()
        self.setPrompt("Your name: ")
        return self._nameWanted

    def finish(self) -> defer.Deferred:
        """Flush what is left to write and let go of stdin/stdout."""
        if self.editor is not None:
            self.editor.prompt = ""
            self._write(CLEAR_LINE)
        if self.transport is not None and not self.closed.called:
            self.transport.loseConnection()
        return self.closed


def _terminal_width() -> int:
    try:
        return os.get_terminal_size(1).columns or 80
    except OSError:
        return 80


class Session:
    """One user's chat: connect, handshake, relay, keep alive, leave."""

    def __init__(
        self,
        reactor: object,
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
        self.state = "idle"  # idle connecting hello naming active leaving done
        self.me: render.Person | None = None
        self.limit = 0
        self.queued: list[str] = []
        self.pending = 0  # own SAYs whose MESSAGE copy has not come back
        self.eof = False
        self.heard = False
        self.everActive = False
        self.retryable = True
        self.backoff = 1.0
        self.users: list[bytes] = []
        self.exitCode: int | None = None
        self.done: defer.Deferred = defer.Deferred()
        self._byeTimer = None
        self._retryCall = None
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

    def _dial(self) -> None:
        self.state = "connecting"
        self.heard = False
        self.console.setPrompt("")
        factory = protocol.Factory.forProtocol(lambda: ChatClientProtocol(self))
        self._connect(factory).addErrback(self._connectFailed)

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
        payload = self.name.encode("ascii")
        if self.password is not None:
            payload = join_fields(payload, self.password)
        self._send(FrameType.HELLO, payload)

    def _send(self, ftype: FrameType, payload: bytes = b"") -> None:
        self._lastSent = self.reactor.seconds()
        self.proto.send(ftype, payload)

    def _ping(self) -> None:
        """Keep an idle connection alive (the server times out silent ones)."""
        if self.reactor.seconds() - self._lastSent >= self.keepaliveInterval * 0.5:
            self._send(FrameType.PING)

    def disconnected(self, proto: ChatClientProtocol, reason: Failure) -> None:
        if proto is not self.proto:
            return
        self.proto = None
        if self.keepalive.running:
            self.keepalive.stop()
        if self._byeTimer is not None and self._byeTimer.active():
            self._byeTimer.cancel()
        if self.state in ("leaving", "done"):
            return self._finish(0)
        if self.state == "naming":
            return  # a new name reconnects
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
            self._finish(1)

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

    def _finish(self, code: int) -> None:
        if self.state == "done" and self.exitCode is not None:
            return
        self.state = "done"
        self.exitCode = code
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

    # -- input from the user ---------------------------------------------

    def typed(self, line: str) -> None:
        if self.state == "done":
            return
        if not self.console.interactive:
            if line:
                self._submit(commands.Say(line))
            return
        command = commands.parse_command(line)
        if command is not None:
            self._submit(command)

    def endOfInput(self) -> None:
        self.eof = True
        if not self.console.interactive:
            self._maybeDone()
        else:
            self.quit()

    def _maybeDone(self) -> None:
        """A script's input ended: leave once its messages have come back."""
        if self.eof and self.state == "active" and not self.queued and not self.pending:
            self.quit()
        elif self.eof and self.state == "naming":
            self._finish(1)

    def _submit(self, command: commands.Command) -> None:
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
                return self.console.warn(problem)
            self.pending += 1
            return self._send(FrameType.SAY, command.text.encode("utf-8"))
        if isinstance(command, commands.Whisper):
            room = min(self.limit, MAX_PAYLOAD - len(command.name) - 1)
            problem = commands.check_text(command.text, room)
            if problem:
                return self.console.warn(problem)
            self._send(FrameType.WHISPER, join_fields(command.name, command.text))
            me = self.me
            self.console.show(
                render.whisper_sent(
                    command.name, command.text, me.color, self.console.color
                )
            )

    # -- frames from the server ------------------------------------------

    def frameReceived(self, ftype: int, payload: bytes) -> None:
        self.heard = True
        color = self.console.color
        if ftype == FrameType.PING:
            return self._send(FrameType.PONG, payload)
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
        if ftype == FrameType.MESSAGE and self.pending and my_id is not None:
            if payload.startswith(f"{my_id}.".encode()):
                self.pending -= 1
        line = render.render_frame(ftype, payload, my_id, color)
        if line is not None:
            self.console.show(line)
        self._maybeDone()

    def _welcome(self, payload: bytes) -> None:
        try:
            name, user_id, color = split_fields(payload, 3)
            self.me = render.parse_person([user_id, color, name])
        except ValueError:
            self.console.warn("malformed WELCOME from the server")
            self.retryable = False
            return self._finish(1)
        self.limit = commands.max_text(user_id, color, name)
        self._send(FrameType.READY)
        self.state = "active"
        self.everActive = True
        self.backoff = 1.0
        self.console.setPrompt("> ")
        queued, self.queued = self.queued, []
        for command in queued:
            self._submit(command)
        self._maybeDone()

    def _error(self, payload: bytes) -> None:
        code, text = parse_error(payload)
        if self.state == "naming":
            return  # e.g. HANDSHAKE_TIMEOUT while the user picks a name
        if self.state == "hello" and code in NAME_REFUSALS:
            self.console.warn(f"{text} ({self.name!r} refused: {code})")
            if self.console.interactive and not self.eof:
                return self._askName()
            self.retryable = False
            return self._finish(1)
        if code == ErrorCode.AUTH_FAILED.name:
            self.retryable = False
        if code in SAY_REFUSALS and self.pending:
            self.pending -= 1
        self.console.alert(
            render.render_frame(FrameType.ERROR, payload, None, self.console.color)
        )
        self._maybeDone()


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


def _connector(reactor: object, settings: dict) -> Callable:
    """A function connecting a factory to the server (TLS-wrapped with --tls)."""
    from twisted.internet import ssl
    from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS

    host = settings["host"]
    endpoint = HostnameEndpoint(reactor, host, settings["port"])
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


def _stop(_: object, reactor: object) -> None:
    try:
        reactor.stop()
    except error.ReactorNotRunning:  # already stopping (SIGTERM)
        pass


def run(settings: dict) -> int:
    """Run the chat in the reactor until the session ends; the exit status."""
    from twisted.internet import reactor
    from twisted.internet.stdio import StandardIO

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
