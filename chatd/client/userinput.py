"""What the user types, as requests: chatd-client's input half.

Part of :class:`chatd.client.session.Session` (a mixin, for the size of one
module): a terminal's lines are parsed into commands, checked (a text the
server would refuse is said so here and put back on the input line), queued
until the session is active, and sent; a script's lines go to
:mod:`chatd.client.pipe`, which paces them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chatd.client import commands, render
from chatd.wire import MAX_PAYLOAD, FrameType, join_fields

if TYPE_CHECKING:
    from chatd.client.console import Console
    from chatd.client.inflight import InFlight
    from chatd.client.pipe import PipeInput
    from chatd.client.roomchat import RoomChat


class UserInput:
    """Input for Session (its state, console, pipe, rooms, requests)."""

    state: str
    console: Console
    pipe: PipeInput
    rooms: RoomChat
    requests: InFlight
    queued: list[commands.Command]
    limit: int
    eof: bool

    if TYPE_CHECKING:

        def quit(self) -> None: ...
        def _finish(self, code: int, why: str = ...) -> None: ...
        def _send(self, ftype: FrameType, payload: bytes = b"") -> None: ...
        def _say(self, text: str) -> None: ...

    def typed(self, line: str) -> None:
        if self.state == "done":
            return
        if not self.console.interactive:
            return self.pipe.line(line)
        command = commands.parse_command(line)
        if command is not None:
            self._submit(command, line)

    def endOfInput(self) -> None:
        self.eof = True
        if not self.console.interactive:
            self._maybeDone()
        else:
            self.quit()

    def _maybeDone(self) -> None:
        """A script's input ended: leave once its lines are all delivered or refused."""
        if self.eof and self.state == "active" and self.pipe.idle:
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
        if self.rooms.submit(command, line):
            return
        if isinstance(command, commands.Who):
            return self._send(FrameType.WHO)
        if isinstance(command, commands.Say):
            problem = commands.check_text(command.text, self.limit)
            if problem:
                self.console.restore(line)
                return self.console.warn(problem)
            self.requests.said()
            return self._say(command.text)
        if isinstance(command, commands.Whisper):
            room = min(self.limit, MAX_PAYLOAD - len(command.name) - 1)
            problem = commands.check_text(command.text, room)
            if problem:
                self.console.restore(line)
                return self.console.warn(problem)
            # Shown once the PING right behind it comes back without an ERROR
            # before it (replies come in request order): then it was delivered.
            sent = self.requests.whispered(command.name, command.text)
            self._send(FrameType.WHISPER, join_fields(command.name, command.text))
            self._send(FrameType.PING, sent.token)
