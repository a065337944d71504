"""A minimal line editor for a terminal in raw mode.

The client owns the screen: when a message arrives while the user is
typing, it clears the input line, prints the message and redraws the prompt
with the partial input, so nothing is garbled.  That needs the keystrokes
one at a time (the tty is put in raw mode) and this small editor, which
turns bytes into edits and complete lines.  It is pure: bytes in, events
and strings to write out, no I/O.
"""

from __future__ import annotations

import codecs
import enum

CLEAR_LINE = "\r\x1b[K"


class Key(enum.Enum):
    INTERRUPT = "interrupt"  # Ctrl-C
    EOF = "eof"  # Ctrl-D on an empty line


class LineEditor:
    """Collect keystrokes into a line: printable text, Backspace, Ctrl-U, Ctrl-W.

    ``feed`` returns what happened: complete lines (str) and :class:`Key`
    events.  Escape sequences (arrow keys and the like) are swallowed.
    """

    def __init__(self, prompt: str = "", width: int = 80) -> None:
        self.prompt = prompt
        self.width = width
        self.buffer = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._escape = ""  # "" | "esc" | "csi": inside an escape sequence

    def feed(self, data: bytes) -> list[str | Key]:
        events: list[str | Key] = []
        for char in self._decoder.decode(data):
            event = self._key(char)
            if event is not None:
                events.append(event)
        return events

    def _key(self, char: str) -> str | Key | None:
        if self._escape == "esc":
            self._escape = "csi" if char in "[O" else ""
            return None
        if self._escape == "csi":
            if "\x40" <= char <= "\x7e":  # the final byte of a CSI sequence
                self._escape = ""
            return None
        if char in "\r\n":
            line, self.buffer = self.buffer, ""
            return line
        if char == "\x03":
            return Key.INTERRUPT
        if char == "\x04":
            return Key.EOF if not self.buffer else None
        if char in "\x7f\x08":
            self.buffer = self.buffer[:-1]
        elif char == "\x15":  # Ctrl-U
            self.buffer = ""
        elif char == "\x17":  # Ctrl-W: the last word and the spaces after it
            self.buffer = self.buffer.rstrip(" ")
            self.buffer = self.buffer[: self.buffer.rfind(" ") + 1]
        elif char == "\x1b":
            self._escape = "esc"
        elif char == "\t" or char.isprintable():
            self.buffer += char
        return None

    def redraw(self) -> str:
        """The prompt and input, scrolled so the cursor stays on one screen row."""
        shown = self.prompt + self.buffer
        room = max(self.width - 1, 10)
        if len(shown) > room:
            shown = "<" + shown[-(room - 1) :]
        return CLEAR_LINE + shown

    def above(self, line: str) -> str:
        """Print ``line`` above the input line without disturbing the input."""
        return CLEAR_LINE + line + "\r\n" + self.redraw()
