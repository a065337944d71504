"""Rooms (protocol 1.2) on the page, in headless Chromium (tests/browser.py).

Two browser users and one TCP user are in the default room (``lobby``) and
in ``dev``: each room's lines stay in its own view, a room not shown gets
an unread mark, and ``dev``'s member list shows its three members.  A page
whose VERSION the server refuses chats on as 1.1; one that reconnects
enters its rooms again.

``CHATD_WEB_ROOMS_SCREENSHOT=docs/web-rooms.png`` also saves alice's view of
``dev`` for the docs.
"""

from __future__ import annotations

import os
from pathlib import Path

from twisted.internet import defer

from chatd.wire import FrameType as T
from tests.browser import BrowserCase
from tests.daemon import Daemon, FrameClient

DEV = '#rooms button[data-room="dev"]'
LOBBY = '#rooms button[data-room=""]'
MEMBERS = (
    "return [...document.querySelectorAll('#who .name')].map((e) => e.textContent)"
)

#: Run in the page before it connects: its VERSION asks for "1.1", which a
#: server answers with UNKNOWN_TYPE, as one that speaks only 1.1 would.
AS_IF_1_1 = """
const send = WebSocket.prototype.send;
WebSocket.prototype.send = function (data) {
  if (new DataView(data.buffer).getUint32(0) === 18) {
    data = data.slice();
    data[data.length - 1] = 0x31;
  }
  return send.call(this, data);
};
"""


@defer.inlineCallbacks
def expect(client: FrameClient, ftype: int, end: bytes = b""):  # type: ignore[no-untyped-def]
    """The payload of the next ``ftype`` frame ending with ``end`` that
    ``client`` gets (the frames before it skipped)."""
    while True:
        got, payload = yield client.next()
        if got == ftype and payload.endswith(end):
            return payload


class RoomBrowserTests(BrowserCase):
    @defer.inlineCallbacks
    def test_two_rooms_two_browsers_and_a_terminal(self):
        daemon = yield self.daemon()
        term, tentry = yield self.terminal(daemon.port)
        alice = yield self.browser()
        bob = yield self.browser(390, 844)  # phone-sized
        yield self.run_(alice.join, "alice")
        yield self.run_(bob.join, "bob")
        yield self.run_(alice.waitShown, "#room-name", "lobby")
        yield self.run_(alice.waitText, "#rooms", "lobby")

        # alice types /join; bob uses the field; each is then shown dev.
        yield self.run_(alice.say, "/join dev")
        yield self.run_(alice.waitShown, "#room-name", "dev")
        yield self.run_(bob.type, "#room", "dev")
        yield self.run_(bob.waitShown, "#room-name", "dev")
        term.send(T.ENTER, b"dev")
        self.assertEqual((yield expect(term, T.ROOM_JOIN)), b"dev." + tentry)

        # dev's member list: the three, in the order they entered, and its
        # count in the room list; the lobby's is the same three.
        for b in (alice, bob):
            yield self.run_(b.waitText, "#who", "term")
            members = yield self.run_(b.script, MEMBERS)
            self.assertEqual(members, ["alice", "bob", "term"])
            yield self.run_(b.waitShown, DEV + " .users", "3")
        yield self.run_(alice.waitShown, LOBBY + " .users", "3")

        # A dev line reaches both dev views; bob then shows the lobby.
        term.send(T.ROOM_SAY, b"dev.hello dev")
        for b in (alice, bob):
            yield self.run_(b.waitText, "#log", "hello dev")
        self.assertEqual((yield self.run_(alice.lines)), ["term: hello dev"])
        yield self.run_(bob.click, LOBBY)
        yield self.run_(bob.waitShown, "#room-name", "lobby")
        yield self.run_(bob.waitText, "#who", "term")
        self.assertEqual(
            (yield self.run_(bob.script, MEMBERS)), ["term", "alice", "bob"]
        )

        # dev, not shown to bob, gets an unread mark; the lobby shows none
        # of dev's lines.
        term.send(T.ROOM_SAY, b"dev.while you were away")
        yield self.run_(bob.waitShown, DEV + " .unread", "1 new")
        yield self.run_(alice.waitText, "#log", "while you were away")
        self.assertEqual((yield self.run_(bob.lines)), [])
        self.assertIsNone((yield self.run_(alice.shown, DEV + " .unread")))

        # A lobby line: in bob's lobby view; alice (on dev) gets the mark.
        term.send(T.SAY, b"lobby line")
        yield self.run_(bob.waitText, "#log", "lobby line")
        yield self.run_(alice.waitShown, LOBBY + " .unread", "1 new")
        self.assertNotIn("lobby line", (yield self.run_(alice.shown, "#log")))

        # What alice types goes to the room she is shown.
        yield self.run_(alice.say, "from alice in dev")
        payload = yield expect(term, T.ROOM_MESSAGE, b".alice.from alice in dev")
        self.assertTrue(payload.startswith(b"dev."), payload)
        yield self.run_(bob.waitShown, DEV + " .unread", "2 new")

        # bob goes back to dev: the mark is gone, the lines are there.
        yield self.run_(bob.click, DEV)
        yield self.run_(bob.waitShown, "#room-name", "dev")
        self.assertIsNone((yield self.run_(bob.shown, DEV + " .unread")))
        self.assertEqual(
            (yield self.run_(bob.lines)),
            [
                "term: hello dev",
                "term: while you were away",
                "alice: from alice in dev",
            ],
        )

        # The topic is shown for the room, to its members.
        term.send(T.TOPIC, b"dev.ship it")
        for b in (alice, bob):
            yield self.run_(b.waitShown, "#topic", "ship it")
        target = os.environ.get("CHATD_WEB_ROOMS_SCREENSHOT")
        if target:
            png = yield self.run_(alice.driver.get_screenshot_as_png)
            Path(target).write_bytes(png)
            png = yield self.run_(bob.driver.get_screenshot_as_png)
            Path(target).with_suffix(".phone.png").write_bytes(png)

        # alice leaves dev: she is shown the lobby, dev's members lose her.
        yield self.run_(alice.click, "#part")
        yield self.run_(alice.waitShown, "#room-name", "lobby")
        payload = yield expect(term, T.ROOM_LEAVE)
        self.assertTrue(payload.endswith(b".alice.part"), payload)
        yield self.run_(
            bob.until,
            "return !document.querySelector('#who').innerText.includes('alice')",
        )
        yield self.run_(alice.waitShown, DEV + " .users", "2")
        away = yield self.run_(
            alice.script, f"return document.querySelector('{DEV}').className"
        )
        self.assertEqual(away, "away")

        # The server restarts: bob's page reconnects and enters dev again.
        yield daemon.stop()
        again = Daemon(
            "--web", f"tcp:{self.web}:interface=127.0.0.1", "--stats-interval", "0"
        )
        self.addCleanup(again.stop)
        yield again.start()
        yield self.run_(bob.waitText, "#status", "reconnected as")
        yield self.run_(  # in dev again, not just shown it
            bob.until, f"return document.querySelector('{DEV}')?.className === ''"
        )
        yield self.run_(bob.waitShown, "#room-name", "dev")
        yield self.run_(bob.waitShown, DEV + " .users", "1")
        self.assertEqual((yield self.run_(bob.script, MEMBERS)), ["bob"])

    @defer.inlineCallbacks
    def test_a_1_1_server_no_rooms(self):
        daemon = yield self.daemon()
        term, _ = yield self.terminal(daemon.port)
        carol = yield self.browser()
        yield self.run_(carol.script, AS_IF_1_1)
        yield self.run_(carol.join, "carol")
        hidden = yield self.run_(  # the room list and the room's name, topic
            carol.script,
            "return [...document.querySelectorAll('.rooms-only')]"
            ".map((e) => e.offsetParent === null)",
        )
        self.assertEqual(hidden, [True, True])
        yield self.run_(carol.say, "/join dev")
        error = yield self.run_(carol.waitText, "#line-error", "1.2")
        self.assertEqual(error, "rooms need a chatd that speaks protocol 1.2")
        yield self.run_(carol.say, "as in 1.1")
        self.assertEqual(
            (yield expect(term, T.MESSAGE)).split(b".", 3)[3], b"as in 1.1"
        )
        yield self.run_(carol.waitText, "#log", "as in 1.1")
        self.assertEqual((yield self.run_(carol.lines, "error")), [])
