"""chatd-client's screen and keyboard: the StandardIO protocol and the raw tty.

:class:`Console` is the protocol StandardIO runs on stdin and stdout.  On a
terminal it drives a :class:`~chatd.client.lineedit.LineEditor`, so the
user's partial input stays whole while messages arrive above it; on a pipe it
reads lines and prints them.  Either way it hands what was typed to the
:class:`~chatd.client.session.Session` and shows what the session tells it
to.  :class:`RawTerminal` puts the tty in the raw mode the editor needs, and
back.  Kept apart from the session so its state machine never touches a
file descriptor, and tests drive it on in-memory transports.
"""

from __future__ import annotations

import os
import sys
import termios
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

from twisted.internet import defer, protocol
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from chatd.client import render
from chatd.client.lineedit import CLEAR_LINE, Key, LineEditor

if TYPE_CHECKING:
    from chatd.client.session import Session


def _terminal_width() -> int:
    try:
        return os.get_terminal_size(1).columns or 80
    except OSError:
        return 80


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
