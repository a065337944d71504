"""``--port-file``: every listening address, for whoever started chatd on port 0.

Written whole or not at all (a temporary file renamed over it), rewritten
when a reload changes the listeners or the path, removed on stop.
"""

from __future__ import annotations

import os

from twisted.logger import Logger

from chatd.server.errors import describeError

log = Logger(namespace="chatd")


class PortFile:
    """The file last written, so that it can be moved or removed."""

    def __init__(self) -> None:
        self.path: str | None = None

    def write(self, path: str | None, lines: list[str]) -> None:
        """``lines`` (``chat tcp 127.0.0.1:40123``...) to ``path``; a
        changed path removes the old file, None writes nothing."""
        if self.path and self.path != path:
            self.remove()
        if not path:
            return
        try:
            with open(path + ".tmp", "w", encoding="utf-8") as f:
                f.writelines(lines)
            os.replace(path + ".tmp", path)  # readers never see half a file
        except OSError as e:
            log.error(
                "--port-file: cannot write {path}: {why}",
                path=path,
                why=describeError(e),
            )
            return
        self.path = path

    def remove(self) -> None:
        if self.path:
            try:
                os.unlink(self.path)
            except OSError:
                pass  # gone already, or we lost the right to remove it
            self.path = None
