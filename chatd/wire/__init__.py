"""chatd's wire format (docs/protocol.md), shared by server, client and bench.

:mod:`chatd.wire.codec` says how frames and their payloads look;
:mod:`chatd.wire.framer` cuts a byte stream into frames; :mod:`chatd.wire.runs`
handles runs of like frames at once.
"""

from chatd.wire import codec
from chatd.wire.codec import *  # noqa: F403  (the codec's __all__, once)
from chatd.wire.framer import FrameReceiver

__all__ = [*codec.__all__, "FrameReceiver"]
