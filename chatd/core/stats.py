"""Counters an operator reads in the periodic stats line (and later /status)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Stats:
    connectionsTotal: int = 0
    framesIn: int = 0
    bytesIn: int = 0
    framesOut: int = 0
    bytesOut: int = 0
    messages: int = 0
    errors: Counter = field(default_factory=Counter)

    def snapshot(
        self, connections: int, active: int, deliveries: int, broadcastBytes: int
    ) -> dict:
        """Every counter, with the broadcast figures the fan-out keeps."""
        return {
            "connections": connections,
            "connections_total": self.connectionsTotal,
            "active_users": active,
            "frames_in": self.framesIn,
            "bytes_in": self.bytesIn,
            "frames_out": self.framesOut + deliveries,
            "bytes_out": self.bytesOut + broadcastBytes,
            "messages": self.messages,
            "deliveries": deliveries,
            "errors": dict(sorted(self.errors.items())),
        }
