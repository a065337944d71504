"""The pieces of --workers without processes: the dispatcher's choice, the
link's framing, the worker's remote sequencer and roster against main's
authority, and what main does when a worker dies or falls behind."""

from __future__ import annotations

from twisted.internet import task
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from chatd.cluster import link
from chatd.cluster.authority import Authority
from chatd.cluster.dispatch import Dispatcher
from chatd.cluster.handle import WorkerHandle
from chatd.cluster.main import MainBackend, mainFactory
from chatd.cluster.remote import LinkLost, RemoteRoster, RemoteSequencer
from chatd.core.events import Join, Kick, Leave, Message
from chatd.core.roster import User
from chatd.server.config import Config
from chatd.server.factory import ChatFactory
from chatd.wire import LeaveReason
from chatd.wire.eventframes import frameOf


class Slot:
    def __init__(self, name: str) -> None:
        self.name = name
        self.clients = 0
        self.accepting = True

    def __repr__(self) -> str:
        return self.name


class DispatcherTests(unittest.SynchronousTestCase):
    def setUp(self) -> None:
        self.spawned: list[Slot] = []
        self.dispatcher: Dispatcher[Slot] = Dispatcher(3, 2, self.spawn)

    def spawn(self) -> Slot:
        slot = Slot(f"w{len(self.spawned) + 1}")
        self.spawned.append(slot)
        return slot

    def pick(self) -> Slot | None:
        slot = self.dispatcher.choose()
        if slot is not None:
            slot.clients += 1
        return slot

    def test_least_recently_selected_with_room(self) -> None:
        """Clients fill the first worker's room only when the others are
        newer; with two running, they alternate."""
        first = self.spawn()
        self.dispatcher.add(first)
        self.assertIs(self.pick(), first)
        self.assertIs(self.pick(), first)
        second = self.pick()  # first is full: a new worker
        self.assertEqual(self.spawned, [first, second])
        first.clients = second.clients = 0
        self.assertEqual(
            [self.pick() for _ in range(4)], [first, second, first, second]
        )

    def test_full_when_every_worker_is_full(self) -> None:
        picks = [self.pick() for _ in range(6)]
        self.assertEqual(len(self.spawned), 3)
        self.assertEqual(
            sorted(p.name for p in picks), ["w1", "w1", "w2", "w2", "w3", "w3"]
        )
        self.assertIsNone(self.dispatcher.choose())
        picks[0].clients -= 1
        self.assertIs(self.pick(), picks[0])

    def test_not_accepting_is_skipped_but_counted(self) -> None:
        """A worker on its way out takes no one, and still counts toward N."""
        w1 = self.pick()
        assert w1 is not None
        w1.accepting = False
        picks = [self.pick() for _ in range(4)]
        self.assertEqual([p.name for p in picks], ["w2", "w2", "w3", "w3"])  # type: ignore[union-attr]
        self.assertIsNone(self.dispatcher.choose())
        self.dispatcher.remove(w1)
        self.assertEqual(self.pick().name, "w4")  # type: ignore[union-attr]


class FakeWorker:
    """What the authority sends one worker, as its link would carry it."""

    def __init__(self) -> None:
        self.batches: list[tuple[list[int], bytes]] = []

    def sendBatch(self, own: list[int], blob: bytes) -> None:
        self.batches.append(link.parseBatch(link.batchPayload(own, blob)))


class Sink:
    def __init__(self) -> None:
        self.events: list = []

    def deliver(self, event) -> None:  # type: ignore[no-untyped-def]
        self.events.append((type(event).__name__, event.seq, frameOf(event)))


class OrderTests(unittest.SynchronousTestCase):
    """Two workers' remote sequencers and main's authority, wired by hand."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.authority = Authority(self.clock.callLater)
        self.links = [FakeWorker(), FakeWorker()]
        self.authority.workers = self.links  # type: ignore[assignment]
        self.sent: list[list[tuple[int, bytes]]] = [[], []]
        self.remotes = [
            RemoteSequencer(lambda k, p, i=i: self.sent[i].append((k, p)))
            for i in range(2)
        ]
        self.sinks = [Sink(), Sink()]
        for remote, sink in zip(self.remotes, self.sinks, strict=True):
            remote.subscribe(sink)

    def carry(self) -> None:
        """Main reads both links, ends its turn, the workers read theirs."""
        from chatd.wire.eventcodec import decodeEvent

        for i, sent in enumerate(self.sent):
            for kind, payload in sent:
                self.assertEqual(kind, link.SUBMIT)
                self.authority.submit(decodeEvent(payload), self.links[i])  # type: ignore[arg-type]
            sent.clear()
        self.clock.advance(0)
        for remote, worker in zip(self.remotes, self.links, strict=True):
            for own, blob in worker.batches:
                remote.batchReceived(own, blob)
            worker.batches.clear()

    def test_own_events_wait_for_the_order(self) -> None:
        alice, bob = User(1, 33, b"alice"), User(2, 37, b"bob")
        seqs: list[int] = []
        self.remotes[0].submit(Message(alice, b"one")).addCallback(seqs.append)
        self.remotes[1].submit(Message(bob, b"two")).addCallback(seqs.append)
        self.remotes[0].submit(Message(alice, b"three")).addCallback(seqs.append)
        self.assertEqual(self.sinks[0].events, [])  # nothing delivered early
        self.assertEqual(seqs, [])
        self.carry()
        self.assertEqual(self.sinks[0].events, self.sinks[1].events)
        self.assertEqual(
            [f[-3:] for _, _, f in self.sinks[0].events], [b"one", b"ree", b"two"]
        )
        self.assertEqual([s for _, s, _ in self.sinks[0].events], [1, 2, 3])
        self.assertEqual(seqs, [1, 2, 3])

    def test_one_batch_per_turn(self) -> None:
        alice = User(1, 33, b"alice")
        for n in range(5):
            self.authority.submit(Message(alice, b"%d" % n))
        self.assertEqual(self.links[0].batches, [])
        self.clock.advance(0)
        self.assertEqual(len(self.links[0].batches), 1)
        self.assertEqual(self.links[0].batches, self.links[1].batches)

    def test_lost_link_fails_what_waits_and_what_comes(self) -> None:
        remote = self.remotes[0]
        waiting = remote.submit(Message(User(1, 33, b"a"), b"x"))
        remote.linkLost("the main process is gone")
        self.failureResultOf(waiting, LinkLost)
        self.failureResultOf(remote.submit(Message(User(1, 33, b"a"), b"y")), LinkLost)

    def test_room_messages_only_to_workers_with_members(self) -> None:
        """1.2: a ROOM_MESSAGE reaches the workers serving a member of its
        room when it was sequenced; joins, leaves and the rest reach all."""
        from chatd.core.roomevents import RoomJoin, RoomLeave, RoomMessage
        from chatd.wire import LeaveReason

        ann, bob = User(1, 33, b"ann"), User(2, 37, b"bob")
        self.remotes[0].submit(RoomJoin(b"dev", ann))
        self.remotes[0].submit(RoomMessage(b"dev", ann, b"only worker 0"))
        self.remotes[1].submit(Message(bob, b"everyone"))
        self.carry()
        kinds = [[name for name, _, _ in sink.events] for sink in self.sinks]
        self.assertEqual(kinds[0], ["RoomJoin", "RoomMessage", "Message"])
        self.assertEqual(kinds[1], ["RoomJoin", "Message"])
        self.remotes[1].submit(RoomJoin(b"DEV", bob))
        self.carry()
        self.remotes[0].submit(RoomMessage(b"dev", ann, b"both"))
        self.remotes[0].submit(RoomLeave(b"dev", ann, LeaveReason.PART))
        self.remotes[1].submit(Leave(bob, LeaveReason.QUIT))
        self.carry()
        self.remotes[0].submit(RoomMessage(b"dev", ann, b"nobody left"))
        self.carry()
        self.assertEqual(
            [f[-4:] for name, _, f in self.sinks[1].events if name == "RoomMessage"],
            [b"both"],
        )
        self.assertEqual(self.authority.routing.routes, {})

    def test_sequence_number_for_nothing_is_a_link_error(self) -> None:
        with self.assertRaises(link.LinkError):
            self.remotes[0].batchReceived([7], b"")


class RosterTests(unittest.SynchronousTestCase):
    def setUp(self) -> None:
        self.sent: list[tuple[int, bytes]] = []
        self.roster = RemoteRoster(lambda k, p: self.sent.append((k, p)))

    def answer(self, status: int, entry: bytes = b"") -> None:
        kind, payload = self.sent.pop()
        self.assertEqual(kind, link.CLAIM)
        (req,) = link.U32.unpack_from(payload)
        self.roster.answered(link.NAMED_HEAD.pack(req, status) + entry)

    def test_granted_taken_exhausted(self) -> None:
        d = self.roster.claim(b"alice")
        self.assertNoResult(d)
        self.answer(link.GRANTED, b"7.33.alice")
        user = self.successResultOf(d)
        self.assertEqual((user.id, user.color, user.name), (7, 33, b"alice"))
        d = self.roster.claim(b"alice")
        self.answer(link.TAKEN)
        self.assertIsNone(self.successResultOf(d))
        d = self.roster.claim(b"zed")
        self.answer(link.EXHAUSTED)
        self.failureResultOf(d, OverflowError)

    def test_release_and_lost_link(self) -> None:
        self.roster.release(User(9, 33, b"x"))
        self.assertEqual(self.sent, [(link.RELEASE, link.U32.pack(9))])
        d = self.roster.claim(b"bob")
        self.roster.linkLost("gone")
        self.failureResultOf(d, LinkLost)
        self.failureResultOf(self.roster.claim(b"bob"), LinkLost)

    def test_answer_to_nothing_is_a_link_error(self) -> None:
        with self.assertRaises(link.LinkError):
            self.roster.answered(link.NAMED_HEAD.pack(5, link.TAKEN))


class Recorder(link.Link):
    def __init__(self) -> None:
        self.messages: list[tuple[int, bytes]] = []

    def messageReceived(self, kind: int, payload: bytes) -> None:
        self.messages.append((kind, payload))


class LinkFramingTests(unittest.SynchronousTestCase):
    def test_messages_survive_any_split(self) -> None:
        sender = Recorder()
        transport = StringTransport()
        sender.makeConnection(transport)
        sender.send(link.SUBMIT, b"abc")
        sender.send(link.DONE, link.U32.pack(3))
        data = transport.value()
        receiver = Recorder()
        receiver.makeConnection(StringTransport())
        for i in range(len(data)):
            receiver.dataReceived(data[i : i + 1])
        self.assertEqual(
            receiver.messages, [(link.SUBMIT, b"abc"), (link.DONE, link.U32.pack(3))]
        )

    def test_oversized_or_empty_message_breaks_the_link(self) -> None:
        for data in (link.U32.pack(link.Link.MAX_LENGTH + 1), link.U32.pack(0)):
            receiver = Recorder()
            transport = StringTransport()
            receiver.makeConnection(transport)
            receiver.dataReceived(data)
            self.assertTrue(receiver.broken)
            self.assertTrue(transport.disconnecting)
            self.assertEqual(receiver.messages, [])

    def test_config_travels_without_pickle(self) -> None:
        config = Config(password=b"pw", idle_timeout=7.0, rate_limit=2.5)
        back = link.configFrom(link.configPayload(config))
        self.assertEqual(
            (back.password, back.idle_timeout, back.rate_limit), (b"pw", 7.0, 2.5)
        )
        with self.assertRaises(link.LinkError):
            link.configFrom(b'{"password": null, "evil": 1}')

    def test_config_carries_the_login_back_off(self) -> None:
        """A worker checks passwords: it gets the back-off and the addresses
        it spares, as the single process has them (issue 18)."""
        from chatd.server.admission import parseNetworks

        config = Config(
            auth_backoff=0.5,
            auth_backoff_max=4.0,
            limit_exempt=parseNetworks("127.0.0.0/8,::1"),
        )
        back = link.configFrom(link.configPayload(config))
        self.assertEqual((back.auth_backoff, back.auth_backoff_max), (0.5, 4.0))
        self.assertIn("127.0.0.1", back.limit_exempt)
        self.assertNotIn("10.0.0.1", back.limit_exempt)

    def test_login_verdict_round_trip(self) -> None:
        payload = link.loginPayload("2001:db8::/64", 3, 2.0)
        self.assertEqual(link.parseLogin(payload), ("2001:db8::/64", 3, 2.0))
        with self.assertRaises(link.LinkError):
            link.parseLogin(b"\0")


class FakeLink:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    def sendString(self, data: bytes) -> None:
        self.messages.append(data)


class MainBase(unittest.SynchronousTestCase):
    """The cluster factory with hand-made worker handles (no processes)."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        config = Config(workers=3, max_clients_per_worker=2)
        self.factory = mainFactory(config, self.clock)
        backend = self.factory.backend
        assert isinstance(backend, MainBackend)
        self.cluster = backend
        self.handles = []
        for k in (1, 2):
            handle = WorkerHandle(self.cluster, k)
            handle.link = FakeLink()  # type: ignore[assignment]
            self.cluster.authority.workers.append(handle)
            self.cluster.supervisor.dispatcher.add(handle)
            self.handles.append(handle)

    def claim(self, handle: WorkerHandle, name: bytes) -> User:
        self.cluster.workerMessage(handle, link.CLAIM, link.U32.pack(1) + name)
        reply = handle.link.messages.pop()  # type: ignore[union-attr]
        self.assertEqual(reply[0], link.NAMED)
        self.assertEqual(reply[5], link.GRANTED)
        user = self.cluster.names.users[int(reply[6:].split(b".")[0])]
        self.cluster.authority.submit(Join(user), handle)
        return user

    def batchesTo(self, handle: WorkerHandle) -> list:
        from chatd.wire.eventcodec import decodeBatch

        events = []
        for message in handle.link.messages:  # type: ignore[union-attr]
            if message[0] == link.BATCH:
                events += decodeBatch(link.parseBatch(message[1:])[1])
        return events


class MainTests(MainBase):
    def test_login_verdict_reaches_the_other_workers(self) -> None:
        """One worker's AUTH_FAILED lock is told to every other worker, kept
        by main, and told to a worker that starts later (issue 18)."""
        verdict = link.loginPayload("10.0.0.1", 1, 0.5)
        self.cluster.workerMessage(self.handles[0], link.LOGIN, verdict)
        self.assertEqual(self.handles[0].link.messages, [])  # type: ignore[union-attr]
        self.assertEqual(
            self.handles[1].link.messages,  # type: ignore[union-attr]
            [bytes([link.LOGIN]) + verdict],
        )
        self.clock.advance(0.25)
        [later] = self.cluster.logins()
        self.assertEqual(link.parseLogin(later), ("10.0.0.1", 1, 0.25))
        trusted = link.loginPayload("10.0.0.1", 0, 0)
        self.cluster.workerMessage(self.handles[1], link.LOGIN, trusted)
        self.assertEqual(self.cluster.logins(), [])
        self.assertEqual(
            self.handles[0].link.messages,  # type: ignore[union-attr]
            [bytes([link.LOGIN]) + trusted],
        )

    def test_names_unique_across_workers(self) -> None:
        self.claim(self.handles[0], b"alice")
        self.cluster.workerMessage(
            self.handles[1], link.CLAIM, link.U32.pack(4) + b"ALICE"
        )
        self.assertEqual(
            self.handles[1].link.messages[-1],  # type: ignore[union-attr]
            bytes([link.NAMED]) + link.NAMED_HEAD.pack(4, link.TAKEN),
        )

    def test_dead_worker_users_leave_and_names_free(self) -> None:
        alice = self.claim(self.handles[0], b"alice")
        self.claim(self.handles[1], b"bob")
        self.clock.advance(0)
        self.handles[1].link.messages.clear()  # type: ignore[union-attr]
        self.handles[0].gone("killed by signal 9")
        self.clock.advance(0)
        leaves = [e for e in self.batchesTo(self.handles[1]) if isinstance(e, Leave)]
        self.assertEqual(
            [(e.user.id, e.reason) for e in leaves], [(alice.id, LeaveReason.ERROR)]
        )
        self.assertNotIn(self.handles[0], self.cluster.authority.workers)
        self.assertEqual([u.name for u in self.factory.hub.replica.active], [b"bob"])
        self.claim(self.handles[1], b"alice")  # free again

    def test_kick_reaches_every_worker(self) -> None:
        self.claim(self.handles[0], b"alice")
        self.clock.advance(0)
        self.assertTrue(self.factory.kick("ALICE"))
        self.clock.advance(0)
        for handle in self.handles:
            kicks = [e for e in self.batchesTo(handle) if isinstance(e, Kick)]
            self.assertEqual([k.target.name for k in kicks], [b"alice"])  # type: ignore[union-attr]

    def test_worker_that_falls_behind_is_cut_off(self) -> None:
        """Past LINK_BACKLOGS x --max-backlog held for a paused link, the worker's users are
        LEAVE slow and it gets no more batches."""
        from chatd.cluster import handle

        self.patch(handle, "LINK_BACKLOGS", 1)
        self.factory.config = Config(max_backlog=65536)
        slow, other = self.handles
        alice = self.claim(slow, b"alice")
        self.clock.advance(0)
        slow.pauseProducing()
        for _ in range(100):
            self.cluster.authority.submit(Message(alice, b"x" * 900))
            self.clock.advance(0)
        self.assertTrue(slow.slow)
        self.assertFalse(slow.accepting)
        leaves = [e for e in self.batchesTo(other) if isinstance(e, Leave)]
        self.assertEqual(
            [(e.user.id, e.reason) for e in leaves], [(alice.id, LeaveReason.SLOW)]
        )
        # The batch that cut it off still reached the others, as every one
        # after: nothing is lost for them (the cut used to drop the slow
        # worker from the list being walked, so the next one missed it).
        said = [e.text for e in self.batchesTo(other) if isinstance(e, Message)]
        self.assertEqual(said, [b"x" * 900] * 100)
        before = len(slow.link.messages)  # type: ignore[union-attr]
        self.cluster.authority.submit(Message(alice, b"late"))
        self.clock.advance(0)
        self.assertEqual(len(slow.link.messages), before)  # type: ignore[union-attr]
        self.clock.advance(100)  # the kill timer: no process, nothing to do


def daemonDefaults(config: Config) -> Config:
    """``config`` with the daemon's abuse-limit defaults (the in-process
    Config leaves them off), and room for 100 clients per worker."""
    from dataclasses import replace

    from chatd.server.admission import DEFAULT_EXEMPT, parseNetworks

    return replace(
        config,
        max_clients_per_worker=100,
        max_per_ip=20,
        connect_rate=5.0,
        connect_burst=20,
        limit_exempt=parseNetworks(DEFAULT_EXEMPT),
    )


class LifecycleTests(MainBase):
    """Idle exit, reload, /status, admission counted across workers."""

    def admit(self) -> tuple[int, WorkerHandle]:
        """A client admitted and handed over: its conn number and worker."""
        conn = 100 + len(self.cluster.placement.clients)
        self.assertIsNone(
            self.cluster.placement.admit(conn, "127.0.0.1", f"127.0.0.1:{conn}")
        )
        return conn, self.cluster.placement.clients[conn][0]

    def done(self, conn: int) -> None:
        handle = self.cluster.placement.clients[conn][0]
        self.cluster.workerMessage(handle, link.DONE, link.U32.pack(conn))

    def test_min_workers_stay_while_idle(self) -> None:
        from dataclasses import replace

        self.factory.applyConfig(replace(self.factory.config, min_workers=2))
        conns = [self.admit() for _ in range(2)]
        self.assertEqual({w for _, w in conns}, set(self.handles))  # spread
        for conn, _ in conns:
            self.done(conn)
        self.clock.advance(self.factory.config.worker_idle_exit)
        self.assertEqual([h.retiring for h in self.handles], [False, False])

    def test_idle_worker_exits_but_never_the_last(self) -> None:
        conn, first = self.admit()
        self.done(conn)
        self.assertEqual(first.clients, 0)
        self.clock.advance(self.factory.config.worker_idle_exit)
        self.assertTrue(first.retiring)
        self.assertEqual(first.link.messages[-1], bytes([link.STOP]))  # type: ignore[union-attr]
        # The other one is now the last that accepts: it stays.
        conn, second = self.admit()
        self.assertIsNot(second, first)
        self.done(conn)
        self.clock.advance(self.factory.config.worker_idle_exit)
        self.assertFalse(second.retiring)

    def test_a_new_client_cancels_the_idle_exit(self) -> None:
        conn, first = self.admit()
        self.done(conn)
        self.clock.advance(1)
        self.assertIsNot(self.admit()[1], first)
        self.assertIs(self.admit()[1], first)
        self.clock.advance(self.factory.config.worker_idle_exit)
        self.assertFalse(first.retiring)

    def test_limits_count_across_workers(self) -> None:
        from dataclasses import replace

        from chatd.wire import ErrorCode

        self.factory.applyConfig(
            replace(self.factory.config, max_clients=3, max_per_ip=0)
        )
        for _ in range(3):
            self.admit()
        refusal = self.cluster.placement.admit(300, "10.0.0.2", "10.0.0.2:1")
        self.assertEqual(
            refusal, (ErrorCode.SERVER_FULL, "server is full (max-clients 3)")
        )
        self.assertEqual(sorted(h.clients for h in self.handles), [1, 2])

    def test_loopback_exempt_as_in_one_process(self) -> None:
        """Issue 18: with the defaults (--max-per-ip 20, --limit-exempt
        127.0.0.0/8,::1) the 21st connection from 127.0.0.1 is let in, as
        the single process lets it in; another address gets the single
        process's refusal, in its words."""

        from chatd.wire import ErrorCode

        self.factory.applyConfig(daemonDefaults(self.factory.config))
        for _ in range(25):
            self.admit()
        self.assertEqual(len(self.cluster.placement.clients), 25)
        for k in range(20):
            self.assertIsNone(
                self.cluster.placement.admit(200 + k, "192.0.2.7", "192.0.2.7:1")
            )
        code, text = self.cluster.placement.admit(300, "192.0.2.7", "192.0.2.7:2")
        self.assertEqual(code, ErrorCode.SERVER_FULL)
        self.assertIn("max-per-ip 20", text)

    def test_connect_rate_applies_to_other_addresses(self) -> None:
        from dataclasses import replace

        self.factory.applyConfig(
            replace(daemonDefaults(self.factory.config), max_per_ip=0)
        )
        refusals = [
            self.cluster.placement.admit(400 + k, "192.0.2.8", "192.0.2.8:1")
            for k in range(21)
        ]
        self.assertEqual(refusals[:20], [None] * 20)
        self.assertIn("connect-rate", refusals[20][1])  # type: ignore[index]

    def test_reload_reaches_every_worker(self) -> None:
        from dataclasses import replace

        self.factory.applyConfig(replace(self.factory.config, rate_limit=3.0))
        for handle in self.handles:
            message = handle.link.messages[-1]  # type: ignore[union-attr]
            self.assertEqual(message[0], link.CONFIG)
            self.assertEqual(link.configFrom(message[1:]).rate_limit, 3.0)

    def test_status_adds_up_workers(self) -> None:
        import json

        for handle, n in zip(self.handles, (3, 4), strict=True):
            handle.pid = 1000 + handle.index
            stats = {"messages": n, "deliveries": 10 * n, "errors": {"NAME_TAKEN": 1}}
            self.cluster.workerMessage(handle, link.STATS, json.dumps(stats).encode())
        conn, handle = self.admit()
        snap = self.factory.snapshot()
        self.assertEqual((snap["messages"], snap["deliveries"]), (7, 70))
        self.assertEqual(snap["errors"], {"NAME_TAKEN": 2})
        self.assertEqual(snap["workers"], 2)
        self.assertEqual(snap["connections"], 1)
        self.assertIn("1=1001", snap["worker_pids"])
        self.assertIn(f"{handle.index}=1", snap["worker_clients"])
        # A worker that is gone still counts: the totals never go down.
        self.handles[0].gone("exited with status 0")
        snap = self.factory.snapshot()
        self.assertEqual((snap["messages"], snap["deliveries"]), (7, 70))
        self.assertEqual(snap["errors"], {"NAME_TAKEN": 2})
        self.assertEqual(snap["workers"], 1)


class ReportTests(MainBase):
    """Admin's /status and /metrics read the main backend's typed report."""

    def test_status_and_metrics_show_workers_and_their_users(self) -> None:
        import json

        from prometheus_client import generate_latest

        from chatd.server.admin import status
        from chatd.server.metrics import registry
        from chatd.server.service import ChatService

        service = ChatService(
            self.factory.config, self.clock, handleSignals=False, factory=self.factory
        )
        alice = self.claim(self.handles[0], b"alice")
        details = {"id": alice.id, "state": "ACTIVE", "peer": "127.0.0.1:5"}
        stats = {"messages": 2, "users": [{**details, "since": 0, "backlog_bytes": 0}]}
        self.handles[0].pid = 4242
        self.cluster.workerMessage(
            self.handles[0], link.STATS, json.dumps(stats).encode()
        )
        report = status(service)
        self.assertEqual(
            [(w["worker"], w["pid"], w["users"]) for w in report["workers"]],
            [(2, None, 0), (1, 4242, 1)],
        )
        self.assertEqual(report["workers"][1]["counters"]["messages"], 2)
        [user] = report["users"]
        self.assertEqual(
            (user["name"], user["worker"], user["state"], user["peer"]),
            ("alice", 1, "ACTIVE", "127.0.0.1:5"),
        )
        self.assertIsNone(report["cluster"])
        text = generate_latest(registry(service)).decode()
        self.assertIn('chatd_worker_pid{worker="1"} 4242.0', text)
        self.assertIn('chatd_worker_messages_total{worker="1"} 2.0', text)


class RedisReportTests(unittest.SynchronousTestCase):
    """A --redis node's status reaches /status and /metrics typed."""

    def test_node_status_in_status_and_metrics(self) -> None:
        from prometheus_client import generate_latest

        from chatd.cluster.redisnode import RedisBackend
        from chatd.server.admin import status
        from chatd.server.metrics import registry
        from chatd.server.service import ChatService

        given = {
            "node": "n1", "redis": "127.0.0.1:6379", "link": "up",
            "registered": True, "last_seq": 7, "stream_lag": 1,
            "cluster_users": 3, "gaps": 0, "redis_resets": 0, "redis_commands": 12,
            "events_read": 40,
        }  # fmt: skip

        class Node:
            started: list[object] = []

            def seams(self) -> dict:
                return {"sequencer": None, "roster": None}

            def start(self, factory: object) -> None:
                self.started.append(factory)

            def status(self) -> dict:
                return given

        clock = task.Clock()
        factory = ChatFactory(Config(), clock, backend=RedisBackend(Node()))  # type: ignore[arg-type]
        service = ChatService(Config(), clock, handleSignals=False, factory=factory)
        self.assertEqual(status(service)["cluster"], given)
        factory.backend.start()
        self.assertEqual(Node.started, [factory])
        text = generate_latest(registry(service)).decode()
        self.assertIn("chatd_cluster_link_up 1.0", text)
        self.assertIn("chatd_cluster_redis_commands_total 12.0", text)
        self.assertIn("chatd_cluster_events_read_total 40.0", text)


class StartTests(unittest.SynchronousTestCase):
    def test_proxy_listener_refused_in_one_line(self) -> None:
        from chatd.cluster.main import mainFactory
        from chatd.server.errors import StartupError

        config = Config(workers=2, listen=("tcp:0", "ssl:0", "haproxy:tcp:0"))
        with self.assertRaises(StartupError) as caught:
            mainFactory(config, task.Clock())
        self.assertIn("haproxy:tcp:0 yet", str(caught.exception))
        self.assertNotIn("ssl:0", str(caught.exception))
        self.assertNotIn("\n", str(caught.exception))

    def test_one_worker_imports_nothing(self) -> None:
        """--workers 1 (the default) is today's single process."""
        import subprocess
        import sys

        code = (
            "import sys; from chatd.server.config import Config; "
            "from chatd.server.service import ChatService; "
            "ChatService(Config(), handleSignals=False); "
            "print(any(m.startswith('chatd.cluster') for m in sys.modules))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True
        )
        self.assertEqual(out.stdout.strip(), "False", out.stderr)

    def test_workers_option(self) -> None:
        import os

        from twisted.python import usage

        from chatd.server.config import build

        self.assertEqual(build({"workers": "auto"}, {}).workers, os.cpu_count() or 1)
        self.assertEqual(build({}, {"CHATD_WORKERS": "3"}).workers, 3)
        for bad in ("0", "two", "-1"):
            with self.assertRaises(usage.UsageError) as caught:
                build({"workers": bad}, {})
            self.assertEqual(
                str(caught.exception),
                f"--workers: must be a whole number of at least 1, or auto, not {bad!r}",
            )

    def test_min_workers_option(self) -> None:
        from twisted.python import usage

        from chatd.server.config import build

        config = build({"workers": "3", "min-workers": "2"}, {})
        self.assertEqual((config.workers, config.min_workers), (3, 2))
        with self.assertRaises(usage.UsageError) as caught:
            build({"workers": "2", "min-workers": "3"}, {})
        self.assertEqual(
            str(caught.exception), "--min-workers: at most --workers (2), not 3"
        )


class CrashLoopTests(MainBase):
    def test_workers_dying_at_start_stop_new_starts_for_a_while(self) -> None:
        """Three workers that die young: no fourth is started (no fork
        loop); new clients get SERVER_FULL saying why, until the window
        has passed."""
        from chatd.cluster import supervisor
        from chatd.wire import ErrorCode

        started: list[int] = []

        def spawnProcess(*args: object, **kwargs: object) -> object:
            started.append(1)
            raise OSError("no fork in a unit test")

        self.clock.spawnProcess = spawnProcess  # type: ignore[attr-defined]
        young = [WorkerHandle(self.cluster, k) for k in (7, 8, 9)]
        for handle in young:
            self.cluster.supervisor.dispatcher.add(handle)
            handle.gone("exited with status 1")
        for handle in self.handles:  # the others are full
            handle.clients = 2
        refusal = self.cluster.placement.admit(1, "127.0.0.1", "127.0.0.1:1")
        self.assertEqual(refusal, (ErrorCode.SERVER_FULL, "no worker can start"))
        self.assertEqual(started, [])
        self.clock.advance(supervisor.FAILED_WINDOW)
        # Tried again; a worker that cannot even be started is refused too.
        refusal = self.cluster.placement.admit(2, "127.0.0.1", "127.0.0.1:2")
        self.assertEqual(refusal, (ErrorCode.SERVER_FULL, "no worker can start"))
        self.assertEqual(started, [1])
        self.assertEqual(self.factory.perAddress.counts, {})


class WorkerSideTests(unittest.SynchronousTestCase):
    """A worker's end of the link over an in-memory transport."""

    def setUp(self) -> None:
        from chatd.cluster.worker import Worker, WorkerLink

        self.clock = task.Clock()
        self.worker = Worker(self.clock, 4)
        self.link = self.worker.link = WorkerLink(self.worker)
        self.transport = StringTransport()
        self.link.makeConnection(self.transport)
        self.main = Recorder()  # main's end, reading what the worker wrote
        self.main.makeConnection(StringTransport())

    def fromMain(self, kind: int, payload: bytes = b"") -> None:
        message = bytes([kind]) + payload
        self.link.dataReceived(link.U32.pack(len(message)) + message)

    def toMain(self) -> list[tuple[int, bytes]]:
        self.main.dataReceived(self.transport.value())
        self.transport.clear()
        messages, self.main.messages = self.main.messages, []
        return messages

    def test_config_then_batches_then_stats(self) -> None:
        self.fromMain(link.CONFIG, link.configPayload(Config(idle_timeout=9.0)))
        factory = self.worker.factory
        assert factory is not None
        self.assertEqual(factory.config.idle_timeout, 9.0)
        sink = Sink()
        self.worker.backend.remoteSequencer.subscribe(sink)
        alice = User(1, 33, b"alice")
        from chatd.wire.eventcodec import encodeBatch

        join = Join(alice)
        join.seq = 5
        self.fromMain(link.BATCH, link.batchPayload([], encodeBatch([join])))
        self.assertEqual(sink.events, [("Join", 5, frameOf(join))])
        self.assertEqual([u.name for u in factory.hub.replica.active], [b"alice"])
        self.clock.advance(1.0)
        [(kind, payload)] = self.toMain()
        self.assertEqual(kind, link.STATS)
        self.assertIn(b'"active_users":0', payload)

    def test_login_back_off_is_shared(self) -> None:
        """A wrong password here locks the address and tells main; main's
        word from another worker locks it here; a right password (after the
        lock) trusts it again, and main is told that too."""
        from chatd.server.admission import parseNetworks

        config = Config(auth_backoff=0.5, limit_exempt=parseNetworks("none"))
        self.fromMain(link.CONFIG, link.configPayload(config))
        factory = self.worker.factory
        assert factory is not None
        guard = factory.hub.logins
        assert guard is not None

        class Conn:
            host, peer = "10.0.0.7", "10.0.0.7:4000"

        self.assertEqual(guard.failed(Conn()), 0.5)
        self.assertEqual(
            self.loginsToMain(), [(link.LOGIN, link.loginPayload("10.0.0.7", 1, 0.5))]
        )
        self.clock.advance(0.5)
        self.assertIsNone(guard.locked(Conn()))
        self.fromMain(link.LOGIN, link.loginPayload("10.0.0.7", 2, 1.0))
        self.assertIn("password not checked", guard.locked(Conn()) or "")
        self.assertEqual(guard.failed(Conn()), 2.0)  # the third in a row
        self.loginsToMain()
        self.clock.advance(2.0)
        guard.succeeded(Conn())
        self.assertEqual(
            self.loginsToMain(), [(link.LOGIN, link.loginPayload("10.0.0.7", 0, 0))]
        )
        guard.succeeded(Conn())  # nothing to tell this time
        self.assertEqual(self.loginsToMain(), [])

    def loginsToMain(self) -> list[tuple[int, bytes]]:
        return [m for m in self.toMain() if m[0] == link.LOGIN]

    def test_a_bad_message_breaks_the_link_in_one_line(self) -> None:
        self.fromMain(link.ADOPT, link.ADOPT_HEAD.pack(1, 0, 0, 7777))
        self.assertTrue(self.link.broken)
        self.assertTrue(self.transport.disconnecting)
        self.fromMain(ord("?"))  # nothing more is read

    def test_link_lost_before_config_exits(self) -> None:
        stopped: list[bool] = []
        self.clock.stop = lambda: stopped.append(True)  # type: ignore[attr-defined]
        self.clock.running = True  # type: ignore[attr-defined]
        self.link.connectionLost(None)
        self.assertEqual(stopped, [True])

    def test_a_socket_that_cannot_be_served_is_given_back(self) -> None:
        """A TLS connection with no TLS settings: closed, ADOPTED and DONE,
        so main counts its slot free again."""
        import os
        import socket

        self.fromMain(link.CONFIG, link.configPayload(Config()))
        self.toMain()
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        self.link.fileDescriptorReceived(os.dup(theirs.fileno()))
        theirs.close()
        self.fromMain(link.ADOPT, link.ADOPT_HEAD.pack(9, 2, 1, 7778))
        self.assertEqual(
            self.toMain(),
            [(link.ADOPTED, link.U32.pack(9)), (link.DONE, link.U32.pack(9))],
        )
        self.assertEqual(ours.recv(10), b"")  # the worker kept no copy


class AdmissionInEveryModeTests(unittest.SynchronousTestCase):
    """Issue 19: admission is one object built from the config in every
    mode, so no mode can skip a limit (the loopback bug of issue 18)."""

    def factories(self, config: Config) -> dict[str, ChatFactory]:
        from chatd.cluster.redisnode import redisFactory
        from chatd.cluster.worker import workerFactory

        class Link:
            connected = True

            def send(self, kind: int, payload: bytes = b"") -> None:
                pass

        clock = task.Clock()
        return {
            "local": ChatFactory(config, clock),
            "workers main": mainFactory(config, clock),
            "worker process": workerFactory(config, clock, Link()),  # type: ignore[arg-type]
            "redis node": redisFactory(config, clock),
        }

    def test_same_admission_from_the_same_config(self) -> None:
        from dataclasses import replace

        from chatd.server.admission import Admission
        from chatd.wire import ErrorCode

        config = replace(
            daemonDefaults(Config(workers=2, redis="redis://127.0.0.1:1/0")),
            max_per_ip=2,
        )
        refusals = {}
        for mode, factory in self.factories(config).items():
            admission = factory.admission
            self.assertIs(type(admission), Admission, mode)
            self.assertIs(admission.config, config, mode)
            self.assertEqual(admission.perAddress.limit, 2, mode)
            answers = [
                admission.admit("192.0.2.9", "192.0.2.9:1", None, 0) for _ in range(3)
            ]
            self.assertEqual(answers[:2], [None, None], mode)
            # loopback is exempt everywhere, as in one process
            self.assertEqual(
                [admission.admit("127.0.0.1", "x", None, 0) for _ in range(5)],
                [None] * 5,
                mode,
            )
            refusals[mode] = answers[2]
        expected = (
            ErrorCode.SERVER_FULL,
            "too many connections from 192.0.2.9 at once (max-per-ip 2)",
        )
        self.assertEqual(refusals, dict.fromkeys(refusals, expected))
