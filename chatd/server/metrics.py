"""Prometheus metrics: a collector over the service's own counters.

The counters already exist (``factory.snapshot()``, the stats line); this
collector reads them at scrape time instead of keeping a second set, and
lives in its own registry so nothing of the client library's process
defaults leaks in or is shared between services in one process (tests).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)

from chatd import __version__
from chatd.server.backend import WORKER_COUNTERS, NodeStatus, WorkerEntry
from chatd.server.states import ServerState

if TYPE_CHECKING:
    from chatd.server.service import ChatService

#: snapshot key -> (metric name without _total, help).  Counters only.
COUNTERS = {
    "connections_total": ("chatd_connections_accepted", "TCP connections accepted (refused ones too)."),
    "frames_in": ("chatd_received_frames", "Frames received from clients."),
    "bytes_in": ("chatd_received_bytes", "Bytes received from clients."),
    "frames_out": ("chatd_sent_frames", "Frames sent to clients, broadcast copies included."),
    "bytes_out": ("chatd_sent_bytes", "Bytes sent to clients, broadcast copies included."),
    "messages": ("chatd_messages", "SAY messages broadcast."),
    "deliveries": (
        "chatd_deliveries",
        "Broadcast frames delivered (one per recipient; frames a reader paused"
        " by flow control catches up on later are not counted).",
    ),
}  # fmt: skip


class ChatCollector:
    """Reads the service at scrape time; see docs/operations.md for names."""

    def __init__(self, service: ChatService) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        service = self.service
        factory = service.factory
        snap = factory.snapshot()
        yield InfoMetricFamily(
            "chatd_build", "chatd version.", {"version": __version__}
        )
        states = GaugeMetricFamily(
            "chatd_state", "1 for the server's current state.", labels=["state"]
        )
        for state in ServerState:
            states.add_metric([state.value], float(state is service.state))
        yield states
        yield GaugeMetricFamily(
            "chatd_uptime_seconds", "Seconds since the service started.", service.uptime
        )
        yield GaugeMetricFamily(
            "chatd_connections", "TCP connections open now.", snap["connections"]
        )
        yield GaugeMetricFamily(
            "chatd_active_users", "Users past READY now.", snap["active_users"]
        )
        yield GaugeMetricFamily(
            "chatd_max_connections",
            "The --max-clients limit.",
            service.config.max_clients,
        )
        yield GaugeMetricFamily(
            "chatd_broadcast_held_bytes",
            "Bytes of broadcast kept for readers that are behind.",
            factory.fanout.heldBytes,
        )
        frontEnds = factory.frontEnds()
        for what, text in (
            ("connections", "Connections open now, per front end."),
            ("active_users", "Users past READY now, per front end."),
        ):
            family = GaugeMetricFamily(
                f"chatd_front_end_{what}", text, labels=["front_end"]
            )
            for name, counts in sorted(frontEnds.items()):
                family.add_metric([name], counts[what])
            yield family
        for key, (name, text) in COUNTERS.items():
            yield CounterMetricFamily(name, text, snap[key])
        errors = CounterMetricFamily(
            "chatd_errors", "ERROR frames sent, by code.", labels=["code"]
        )
        for code, count in snap["errors"].items():
            errors.add_metric([code], count)
        yield errors
        yield from roomMetrics(factory.hub.roomReport())
        report = factory.status()
        if report.workers is not None:  # --workers: per-worker families
            yield from workerMetrics(report.workers)
        if report.node is not None:  # --redis: this node's view of the cluster
            yield from clusterMetrics(report.node)


def roomMetrics(rooms: list[dict[str, Any]]) -> Iterator[Metric]:
    """Per 1.2 room (at most --max-rooms of them): members and events."""
    users = GaugeMetricFamily(
        "chatd_room_users", "Users in the room now.", labels=["room"]
    )
    events = CounterMetricFamily(
        "chatd_room_events",
        "Room events (messages, joins, leaves, topics) sequenced in the room; "
        "the default room's are the 1.1 counters.",
        labels=["room"],
    )
    for room in rooms:
        users.add_metric([room["name"]], room["users"])
        events.add_metric([room["name"]], room["events"])
    yield users
    yield events


def registry(service: ChatService) -> CollectorRegistry:
    """A registry of its own holding only this service's collector."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(ChatCollector(service))
    return reg


def _connections(entry: WorkerEntry) -> int:
    return entry.connections


def _users(entry: WorkerEntry) -> int:
    return entry.users


def _pid(entry: WorkerEntry) -> int | None:
    return entry.pid


def workerMetrics(table: tuple[WorkerEntry, ...]) -> Iterator[Metric]:
    """Per-worker gauges and counters (--workers), from the typed report."""
    gauges: tuple[tuple[str, str, Callable[[WorkerEntry], int | None]], ...] = (
        ("connections", "Client connections a worker serves now.", _connections),
        ("users", "Named users on a worker now.", _users),
        ("pid", "A worker's process id.", _pid),
    )
    for key, text, read in gauges:
        gauge = GaugeMetricFamily(f"chatd_worker_{key}", text, labels=["worker"])
        for entry in table:
            gauge.add_metric([str(entry.worker)], read(entry) or 0)
        yield gauge
    for key in WORKER_COUNTERS:
        counter = CounterMetricFamily(
            f"chatd_worker_{key}",
            f"The {key} counter of one running worker.",
            labels=["worker"],
        )
        for entry in table:
            counter.add_metric([str(entry.worker)], entry.counters[key])
        yield counter


def clusterMetrics(status: NodeStatus) -> Iterator[Metric]:
    """The node, its Redis link, stream lag and cluster-wide users (--redis)."""
    yield InfoMetricFamily(
        "chatd_cluster_node", "This node's name and Redis.",
        {"node": status.node, "redis": status.redis},
    )  # fmt: skip
    yield GaugeMetricFamily(
        "chatd_cluster_link_up", "1 while Redis answers.", status.link == "up"
    )
    yield GaugeMetricFamily(
        "chatd_cluster_stream_lag",
        "Events sequenced in the cluster this node has not delivered yet.",
        status.stream_lag,
    )
    yield GaugeMetricFamily(
        "chatd_cluster_users", "Active users on every node.", status.cluster_users
    )
    yield CounterMetricFamily(
        "chatd_cluster_gaps", "Gaps seen in the sequence.", status.gaps
    )
    yield CounterMetricFamily(
        "chatd_cluster_redis_commands", "Commands sent to Redis.",
        status.redis_commands,
    )  # fmt: skip
    yield CounterMetricFamily(
        "chatd_cluster_events_read", "Events read back from the stream.",
        status.events_read,
    )  # fmt: skip
