"""Faults of the scaled modes with clients that misbehave as real ones do.

A client pipelining hundreds of SAYs while a worker is killed (kill -9),
or while Redis goes away and comes back: every request gets exactly one
answer, in request order, and everyone who reads sees the same messages
in the same order, none lost and none twice.  (The slow reader on a worker
and on a node, and the client that disconnects while its HELLO waits for
Redis, are contract checks in every mode: tests/test_contract.py.)
"""

from __future__ import annotations

import os
import signal

from twisted.internet import defer
from twisted.trial import unittest

from chatd.wire import FrameType as T
from chatd.wire import encode
from tests.test_contract import ContractHelpers


class WorkerKilledTests(ContractHelpers, unittest.TestCase):
    mode = "workers"

    @defer.inlineCallbacks
    def test_pipelining_while_a_worker_is_killed(self):
        """alice pipelines 300 SAYs; the other worker is killed meanwhile:
        alice gets all 300 of her MESSAGEs once and in order, carol (on
        alice's worker) the same sequence, and both see LEAVE error for
        the killed worker's users; a newcomer gets in afterwards."""
        deployment = yield self.deploy("--rate-limit", "0")
        active = yield self.users(b"alice", b"bob", b"carol", b"dave")
        (alice, aentry), (bob, bentry), (carol, _), (dave, dentry) = active
        status = yield deployment.status()
        worker = {u["name"]: u["worker"] for u in status["users"]}
        self.assertEqual(worker["alice"], worker["carol"])
        self.assertNotEqual(worker["alice"], worker["bob"])
        pid = {w["worker"]: w["pid"] for w in status["workers"]}[worker["bob"]]

        alice.sendRaw(b"".join(encode(T.SAY, b"m%d" % k) for k in range(300)))
        os.kill(pid, signal.SIGKILL)  # a worker of the daemon we started
        yield defer.gatherResults([bob.closed, dave.closed])

        seen = []
        for client in (alice, carol):
            messages, leaves = [], []
            while len(messages) < 300 or len(leaves) < 2:
                ftype, payload = yield client.next()
                if ftype == T.MESSAGE:
                    messages.append(payload)
                else:
                    self.assertEqual(ftype, T.LEAVE, payload)
                    leaves.append(payload)
            self.assertEqual(messages, [aentry + b".m%d" % k for k in range(300)])
            self.assertEqual(
                sorted(leaves), sorted([bentry + b".error", dentry + b".error"])
            )
            seen.append(messages)
        self.assertEqual(seen[0], seen[1])
        yield self.users(b"newcomer")


class RedisRestartTests(ContractHelpers, unittest.TestCase):
    mode = "redis"

    @defer.inlineCallbacks
    def pairs(self, client, entry: bytes, first: int, n: int):  # type: ignore[no-untyped-def]
        """SAY k and PING k for k in first..first+n, in one write; fires with
        {k: "sent" or "unavailable"} and the MESSAGEs seen on the way."""
        client.sendRaw(
            b"".join(
                encode(T.SAY, b"m%d" % k) + encode(T.PING, b"%d" % k)
                for k in range(first, first + n)
            )
        )
        answers, messages = {}, []
        for k in range(first, first + n):
            answer = None
            while True:
                ftype, payload = yield client.next()
                if (ftype, payload) == (T.PONG, b"%d" % k):
                    break
                if ftype == T.MESSAGE:
                    messages.append(payload)
                    if payload == entry + b".m%d" % k:
                        self.assertIsNone(answer, k)
                        answer = "sent"
                    continue
                self.assertEqual(ftype, T.ERROR, payload)
                self.assertTrue(payload.startswith(b"UNAVAILABLE."), payload)
                self.assertIsNone(answer, k)
                answer = "unavailable"
            self.assertIsNotNone(answer, k)  # exactly one answer each
            answers[k] = answer
        return answers, messages

    @defer.inlineCallbacks
    def test_pipelining_through_a_redis_restart(self):
        """alice (node A) pipelines SAY+PING pairs before Redis stops,
        while it is down and after it is back: each SAY gets its MESSAGE or
        UNAVAILABLE, once, in request order; bob (node B) sees exactly
        alice's MESSAGEs, in her order; after Redis is back everything is
        delivered.  (Redis is stopped between bursts: a batch in flight at
        the very moment Redis dies is in doubt, docs/cluster.md.)"""
        deployment = yield self.deploy("--rate-limit", "0", "--node-ttl", "20")
        [(alice, aentry), (bob, _)] = yield self.users(b"alice", b"bob")
        redis = deployment.redis
        answers, messages = yield self.pairs(alice, aentry, 0, 100)
        self.assertEqual(set(answers.values()), {"sent"})
        yield redis.stop()
        yield defer.gatherResults(
            [d.waitForLog("cluster: Redis link down") for d in deployment.daemons]
        )
        during, more = yield self.pairs(alice, aentry, 100, 20)
        self.assertEqual(set(during.values()), {"unavailable"})
        yield redis.start()
        yield defer.gatherResults(
            [d.waitForLog("cluster: Redis link up") for d in deployment.daemons]
        )
        after, last = yield self.pairs(alice, aentry, 120, 50)
        self.assertEqual(set(after.values()), {"sent"})
        messages += more + last
        self.assertEqual(len(set(messages)), len(messages))  # none twice
        sent = [
            k for k, a in sorted({**answers, **during, **after}.items()) if a == "sent"
        ]
        self.assertEqual(messages, [aentry + b".m%d" % k for k in sent])
        got = []
        while len(got) < len(messages):
            ftype, payload = yield bob.next()
            self.assertEqual(ftype, T.MESSAGE, payload)
            got.append(payload)
        self.assertEqual(got, messages)

    @defer.inlineCallbacks
    def test_unavailable_then_back(self):
        """While Redis is unreachable HELLO, SAY and WHISPER get UNAVAILABLE
        (not fatal; HELLO stays in CONNECTED); once back, all work."""
        deployment = yield self.deploy("--node-ttl", "20")
        [(alice, aentry), (bob, _)] = yield self.users(b"alice", b"bob")
        yield deployment.redis.stop()
        yield defer.gatherResults(
            [d.waitForLog("cluster: Redis link down") for d in deployment.daemons]
        )
        newcomer = yield deployment.connect(1)
        newcomer.sendRaw(encode(T.HELLO, b"carol") + encode(T.SAY, b"early"))
        yield self.expectError(newcomer, "UNAVAILABLE")
        yield self.expectError(newcomer, "NOT_READY")
        alice.sendRaw(encode(T.SAY, b"lost") + encode(T.WHISPER, b"bob.lost"))
        yield self.expectError(alice, "UNAVAILABLE")
        yield self.expectError(alice, "UNAVAILABLE")
        yield deployment.redis.start()
        yield defer.gatherResults(
            [d.waitForLog("cluster: Redis link up") for d in deployment.daemons]
        )
        yield self.marker(alice, aentry, bob, text=b"back")
        newcomer.send(T.HELLO, b"carol")
        yield self.expect(newcomer, T.WELCOME)
