"""A small line editor for a terminal in raw mode.

The client owns the screen: when a message arrives while the user is
typing, it clears the input line, prints the message and redraws the prompt
with the partial input, so nothing is garbled.  That needs the keystrokes
one at a time (the tty is put in raw mode) and this editor, which turns
bytes into edits and complete lines.  It is pure: bytes in, events and
strings to write out, no I/O.

Everything on screen is measured in display columns (``wcwidth``), not
characters: a CJK character takes two columns and a combining accent none.
The input row never reaches the terminal's last column, so the terminal
never wraps it onto a second row that the next redraw would leave behind.
"""

from __future__ import annotations

import codecs
import enum

from wcwidth import wcwidth

CLEAR_LINE = "\r\x1b[K"

#: The final byte (and numeric parameter, for ``~``) of the escape sequences
#: the editor understands, xterm's and the VT220's spellings.
_CSI_KEYS = {
    "A": "up",
    "B": "down",
    "C": "right",
    "D": "left",
    "H": "home",
    "F": "end",
    "1~": "home",
    "7~": "home",
    "4~": "end",
    "8~": "end",
    "3~": "delete",
}
#: Control keys, emacs/readline style.
_CONTROL_KEYS = {
    "\x01": "home",  # Ctrl-A
    "\x05": "end",  # Ctrl-E
    "\x02": "left",  # Ctrl-B
    "\x06": "right",  # Ctrl-F
    "\x10": "up",  # Ctrl-P
    "\x0e": "down",  # Ctrl-N
    "\x0b": "kill",  # Ctrl-K
    "\x15": "kill-start",  # Ctrl-U
    "\x17": "kill-word",  # Ctrl-W
    "\x7f": "backspace",
    "\x08": "backspace",
}
HISTORY_SIZE = 500


class Key(enum.Enum):
    INTERRUPT = "interrupt"  # Ctrl-C
    EOF = "eof"  # Ctrl-D on an empty line


def char_width(char: str) -> int:
    """Columns ``char`` takes on screen (a TAB is shown as one space)."""
    if char == "\t":
        return 1
    return max(wcwidth(char), 0)


def text_width(text: str) -> int:
    return sum(char_width(c) for c in text)


class LineEditor:
    """Collect keystrokes into a line, with a cursor and a history.

    ``feed`` returns what happened: complete lines (str) and :class:`Key`
    events.  Left/Right, Home/End, Up/Down (history), Backspace, Delete,
    Ctrl-A/E/K/U/W work as in a shell; other escape sequences are swallowed.
    With ``secret`` set the input is not shown (a password) nor kept.
    """

    def __init__(self, prompt: str = "", width: int = 80) -> None:
        self.prompt = prompt
        self.width = width
        self.buffer = ""
        self.cursor = 0  # index into buffer
        self.secret = False
        self.history: list[str] = []
        self._historyAt = 0  # == len(history): the line being written
        self._draft = ""
        self._start = 0  # first shown character of prompt + buffer
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._escape: str | None = None  # the sequence so far, after ESC

    # -- input -----------------------------------------------------------

    def feed(self, data: bytes) -> list[str | Key]:
        events: list[str | Key] = []
        for char in self._decoder.decode(data):
            event = self._key(char)
            if event is not None:
                events.append(event)
        return events

    def _key(self, char: str) -> str | Key | None:
        if self._escape is not None:
            self._escapeChar(self._escape + char)
            return None
        if char in "\r\n":
            return self._enter()
        if char == "\x03":
            return Key.INTERRUPT
        if char == "\x04":
            if not self.buffer:
                return Key.EOF
            self._edit("delete")
        elif char == "\x1b":
            self._escape = ""
        elif char in _CONTROL_KEYS:
            self._edit(_CONTROL_KEYS[char])
        elif char == "\t" or char.isprintable():
            self.buffer = self.buffer[: self.cursor] + char + self.buffer[self.cursor :]
            self.cursor += 1
        return None

    def _escapeChar(self, sequence: str) -> None:
        """``sequence``: what followed ESC so far, the latest character last."""
        char = sequence[-1]
        if sequence in ("[", "O") or (
            sequence[:1] == "[" and not "\x40" <= char <= "\x7e"
        ):
            self._escape = sequence  # CSI/SS3 introducer or a parameter byte
            return
        self._escape = None
        if sequence[:1] in "[O" and len(sequence) > 1:
            key = _CSI_KEYS.get(sequence[1:])
            if key is not None:
                self._edit(key)
        # ESC + anything else (an Alt-key): ignored

    def _enter(self) -> str:
        line = self.buffer
        if line and not self.secret and (not self.history or self.history[-1] != line):
            self.history.append(line)
            del self.history[:-HISTORY_SIZE]
        self._historyAt = len(self.history)
        self.set("")
        return line

    def set(self, text: str) -> None:
        """Replace the input with ``text``, the cursor at its end."""
        self.buffer = text
        self.cursor = len(text)

    def _left(self, at: int) -> int:
        """Where the character before ``at`` (with its combining marks) starts."""
        at -= 1
        while at > 0 and char_width(self.buffer[at]) == 0:
            at -= 1
        return max(at, 0)

    def _right(self, at: int) -> int:
        """Just after the character at ``at`` and the combining marks on it."""
        at += 1
        while at < len(self.buffer) and char_width(self.buffer[at]) == 0:
            at += 1
        return min(at, len(self.buffer))

    def _edit(self, key: str) -> None:
        buf, at = self.buffer, self.cursor
        if key == "left" and at > 0:
            self.cursor = self._left(at)
        elif key == "right" and at < len(buf):
            self.cursor = self._right(at)
        elif key == "home":
            self.cursor = 0
        elif key == "end":
            self.cursor = len(buf)
        elif key == "backspace" and at > 0:
            start = self._left(at)
            self.buffer, self.cursor = buf[:start] + buf[at:], start
        elif key == "delete" and at < len(buf):
            self.buffer = buf[:at] + buf[self._right(at) :]
        elif key == "kill":
            self.buffer = buf[:at]
        elif key == "kill-start":
            self.buffer, self.cursor = buf[at:], 0
        elif key == "kill-word":  # the word before the cursor and the spaces after it
            head = buf[:at].rstrip(" ")
            head = head[: head.rfind(" ") + 1]
            self.buffer, self.cursor = head + buf[at:], len(head)
        elif key in ("up", "down") and not self.secret:
            self._recall(-1 if key == "up" else 1)

    def _recall(self, step: int) -> None:
        """Up/Down: an older or newer line from the history, or the draft."""
        at = self._historyAt + step
        if not 0 <= at <= len(self.history):
            return
        if self._historyAt == len(self.history):
            self._draft = self.buffer
        self._historyAt = at
        self.set(self.history[at] if at < len(self.history) else self._draft)

    # -- output ----------------------------------------------------------

    def redraw(self) -> str:
        """The prompt and input on one row, scrolled so the cursor is visible.

        Long input scrolls sideways (a ``<`` marks text cut off on the left);
        the row stays at least one column short of the terminal's width.
        """
        shown = "" if self.secret else self.buffer
        text = (self.prompt + shown).replace("\t", " ")
        widths = [char_width(c) for c in text]
        cursor = len(self.prompt) + (0 if self.secret else self.cursor)
        room = max(self.width - 1, 10)

        def cols(start: int, end: int) -> int:
            return (1 if start else 0) + sum(widths[start:end])

        start = 0 if cols(0, cursor) <= room else min(self._start, cursor)
        while start < cursor and cols(start, cursor) > room:
            start += 1
        while start > 0 and cols(start - 1, len(text)) <= room:
            start -= 1  # room to spare: show more of the left
        while 0 < start < cursor and widths[start] == 0:
            start += 1  # never begin on a combining mark
        self._start = start
        end, used = start, cols(start, start)
        while end < len(text) and used + widths[end] <= room:
            used += widths[end]
            end += 1
        out = CLEAR_LINE + ("<" if start else "") + text[start:end]
        back = used - cols(start, cursor)
        return out + (f"\x1b[{back}D" if back > 0 else "")

    def above(self, line: str) -> str:
        """Print ``line`` above the input line without disturbing the input."""
        return CLEAR_LINE + line + "\r\n" + self.redraw()
