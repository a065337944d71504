// The rooms the page knows of and what it shows of them: one log per room
// (only the shown room's is on the page), the room list with unread marks,
// the shown room's name, topic and members. Frames are app.js's business;
// every piece of text from the server is put on the page with textContent.
//
// With 1.2's numbers (MARK) each room also remembers which of its events the
// page has shown (so that a HISTORY answer or a resume's replay never shows
// one twice) and the last number it got live (what a resume's SINCE names).
// A numbered line carries its number (data-n), so that history is put
// before the live lines it precedes.

const MAX_LOG_LINES = 2000; // per room
const MAX_SEEN = 4000; // numbers remembered per room (older ones forgotten)

function remember(set, n) {
  set.add(n);
  if (set.size <= MAX_SEEN) return;
  let drop = set.size - MAX_SEEN + MAX_SEEN / 4;
  for (const old of set) {
    if (drop-- <= 0) break;
    set.delete(old);
  }
}

// The default room (1.1's room: MESSAGE, JOIN, LEAVE, WHO) has this key;
// its name is the first entry of LIST ("lobby" until one arrives).
export const DEFAULT = "";

// -- xterm-256 colour index to CSS (the terminal client's palette) ----------

const BASE16 = [
  "#000000", "#800000", "#008000", "#808000", "#000080", "#800080",
  "#008080", "#c0c0c0", "#808080", "#ff0000", "#00ff00", "#ffff00",
  "#0000ff", "#ff00ff", "#00ffff", "#ffffff",
];
const CUBE = [0, 95, 135, 175, 215, 255];

function cssColor(index) {
  const n = Number.isInteger(index) && index >= 0 && index <= 255 ? index : 7;
  if (n < 16) return BASE16[n];
  if (n < 232) {
    const c = n - 16;
    return `rgb(${CUBE[Math.floor(c / 36)]}, ${CUBE[Math.floor(c / 6) % 6]}, ${CUBE[c % 6]})`;
  }
  const g = 8 + 10 * (n - 232);
  return `rgb(${g}, ${g}, ${g})`;
}

export function nameSpan(who) {
  const span = document.createElement("span");
  span.className = "name";
  span.style.color = cssColor(who.color);
  span.textContent = who.name;
  return span;
}

export function meTag() {
  const tag = document.createElement("span");
  tag.className = "me";
  tag.textContent = " (you)";
  return tag;
}

export function topicLine(topic) {
  return topic === "" ? "The topic was cleared." : `Topic: ${topic}`;
}

function span(className, content) {
  const s = document.createElement("span");
  s.className = className;
  s.textContent = content;
  return s;
}

// -- rooms ---------------------------------------------------------------------

class Room {
  constructor(key, name, log) {
    this.key = key;
    this.name = name;         // the server's spelling
    this.joined = key === DEFAULT;
    this.members = new Map(); // id -> person, in the order they came
    this.users = null;        // the count of the last LIST
    this.topic = "";
    this.unread = 0;          // messages since it was last shown
    this.log = log ?? document.createElement("ol");
    this.seen = new Set();    // numbers (decimal strings) shown, this session
    this.prior = new Set();   // shown in an earlier session of the same server
    this.last = null;         // BigInt: the last number got live
    this.marked = null;       // the room's name as MARKs spell it
  }

  // Whether event number `n` (a decimal string; null: not numbered) is new
  // here; from now on it is not. `past`: it comes from a HISTORY answer.
  fresh(n, past = false) {
    if (n === null) return true;
    if (this.seen.has(n) || (past && this.prior.has(n))) return false;
    remember(this.seen, n);
    if (!past) {
      const value = BigInt(n);
      if (this.last === null || value > this.last) this.last = value;
    }
    return true;
  }

  // What the list shows as its user count: live for a room one is in.
  count() {
    return this.joined ? this.members.size : this.users;
  }
}

export class Rooms {
  constructor(ui, isMe) {
    this.ui = ui;
    this.pane = ui.log.parentElement; // scrolls; holds the shown room's log
    this.isMe = isMe;
    this.onPick = () => {};  // a room in the list was chosen
    this.defaultName = "lobby";
    this.main = new Room(DEFAULT, this.defaultName, ui.log);
    this.rooms = new Map([[DEFAULT, this.main]]);
    this.current = this.main;
    ui.rooms.addEventListener("click", (event) => {
      const button = event.target.closest("button[data-room]");
      if (button) this.onPick(this.rooms.get(button.dataset.room));
    });
  }

  keyOf(name) {
    const lower = name.toLowerCase();
    return lower === this.defaultName.toLowerCase() ? DEFAULT : lower;
  }

  find(name) {
    return this.rooms.get(this.keyOf(name));
  }

  // The room a frame names, made if the page did not know it yet.
  ensure(name) {
    let room = this.find(name);
    if (room === undefined) {
      room = new Room(this.keyOf(name), name);
      this.rooms.set(room.key, room);
    }
    return room;
  }

  show(room) {
    const log = this.pane;
    if (room !== this.current) {
      this.current.log.removeAttribute("id");
      this.current.log.removeAttribute("aria-live");
      room.log.id = "log";
      room.log.setAttribute("aria-live", "polite");
      log.replaceChildren(room.log);
      this.current = room;
    }
    room.unread = 0;
    log.scrollTop = log.scrollHeight;
    this.render();
  }

  // A line in `room`'s log (the shown room's if null).
  line(room, kind, ...parts) {
    return this.put(room, kind, parts, null, false);
  }

  // A line of history (a HISTORY answer): marked so, and put before the
  // lines of later numbers; it changes nothing else.
  past(room, n, kind, ...parts) {
    return this.put(room, kind, parts, n, true);
  }

  put(room, kind, parts, n, past) {
    room ??= this.current;
    const pane = this.pane;
    const shown = room === this.current;
    const atBottom = pane.scrollHeight - pane.scrollTop - pane.clientHeight < 40;
    const li = document.createElement("li");
    li.className = past ? `${kind} history` : kind;
    if (n !== null) li.dataset.n = n;
    for (const part of parts) {
      li.append(typeof part === "string" ? document.createTextNode(part) : part);
    }
    room.log.insertBefore(li, past ? this.later(room, BigInt(n)) : null);
    while (room.log.childElementCount > MAX_LOG_LINES) room.log.firstElementChild.remove();
    if (shown && atBottom) {
      if (past) pane.scrollTop = pane.scrollHeight;
      else li.scrollIntoView({ block: "end" });
    }
    return li;
  }

  // The first of the numbered lines at the end of `room`'s log whose
  // numbers are above `n` (null: none is).
  later(room, n) {
    let first = null;
    for (let li = room.log.lastElementChild; li !== null; li = li.previousElementSibling) {
      if (li.dataset.n === undefined) continue;
      if (BigInt(li.dataset.n) < n) break;
      first = li;
    }
    return first;
  }

  // MESSAGE or ROOM_MESSAGE; n: its number (null if none), past: history.
  message(room, who, body, n = null, past = false) {
    const own = this.isMe(who);
    const parts = [nameSpan(who)];
    if (own) parts.push(meTag());
    parts.push(": ", body);
    this.put(room, own ? "message own" : "message", parts, n, past);
    if (room !== this.current && !past) {
      room.unread += 1;
      this.renderList();
    }
  }

  // JOIN or ROOM_JOIN (spelled: the room's name as the server keeps it).
  entered(room, who, spelled, n = null) {
    room.members.set(who.id, who);
    if (!this.isMe(who)) {
      this.put(room, "event", ["→ ", nameSpan(who), " joined"], n, false);
    } else if (room === this.main) {
      this.put(room, "event", ["You joined as ", nameSpan(who), "."], n, false);
    } else {
      room.joined = true;
      room.name = spelled;
      this.put(room, "event", [`You joined ${spelled}.`], n, false);
    }
    this.render();
  }

  // LEAVE or ROOM_LEAVE; one's own is a PART.
  left(room, who, reason, n = null) {
    room.members.delete(who.id);
    if (this.isMe(who)) {
      room.joined = false;
      room.members.clear();
      this.put(room, "event", [`You left ${room.name}.`], n, false);
      if (room === this.current) this.show(this.main);
    } else {
      this.put(room, "event", ["← ", nameSpan(who), ` left (${reason})`], n, false);
    }
    this.render();
  }

  topicSet(room, topic, n = null) {
    room.topic = topic;
    this.put(room, "event", [topicLine(topic)], n, false);
    this.render();
  }

  // A new session (a fresh HELLO, not a resume): numbers start again.
  // `sameServer`: the numbers shown so far are still the server's (kept to
  // keep its history from showing them again); otherwise they mean nothing.
  renumber(sameServer) {
    for (const room of this.rooms.values()) {
      if (sameServer) {
        for (const n of room.seen) remember(room.prior, n);
      } else {
        room.prior = new Set();
        for (const li of room.log.querySelectorAll("li[data-n]")) delete li.dataset.n;
      }
      room.seen = new Set();
      room.last = null;
    }
  }

  // A LIST answer: [name, users, topic] entries, the default room first.
  listing(list) {
    const listed = new Map();
    list.forEach(([name, users, topic], i) => {
      if (i === 0) {
        this.defaultName = name;
        this.main.name = name;
      }
      const room = this.ensure(name);
      room.users = Number(users);
      room.topic = topic;
      listed.set(room.key, room);
    });
    // Rooms one is in stay even if the list missed them (a race); the
    // others are gone when the server no longer lists them.
    for (const room of this.rooms.values()) {
      if (room.joined && !listed.has(room.key)) listed.set(room.key, room);
    }
    listed.set(DEFAULT, this.main);
    this.rooms = listed;
    this.render();
  }

  // A new connection is in no room but the default one: the names of the
  // rooms it was in, to enter again.
  forget() {
    const names = [];
    for (const room of this.rooms.values()) {
      if (room === this.main || !room.joined) continue;
      names.push(room.name);
      room.joined = false;
      room.members.clear();
    }
    this.main.members.clear();
    this.render();
    return names;
  }

  render() {
    this.renderList();
    this.renderHead();
    this.renderMembers();
  }

  renderList() {
    this.ui.rooms.replaceChildren();
    for (const room of this.rooms.values()) {
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.room = room.key;
      button.title = room.joined ? `show ${room.name}` : `join ${room.name}`;
      if (!room.joined) button.classList.add("away");
      if (room === this.current) button.setAttribute("aria-current", "true");
      button.append(span("room", room.name));
      const count = room.count();
      if (count !== null) button.append(" ", span("users", String(count)));
      if (room.unread > 0) button.append(" ", span("unread", `${room.unread} new`));
      const li = document.createElement("li");
      li.append(button);
      this.ui.rooms.append(li);
    }
  }

  renderHead() {
    const room = this.current;
    this.ui.roomName.textContent = room.name;
    this.ui.topic.textContent = room.topic;
    this.ui.part.hidden = room === this.main;
  }

  renderMembers() {
    const room = this.current;
    this.ui.who.replaceChildren();
    for (const who of room.members.values()) {
      const li = document.createElement("li");
      li.append(nameSpan(who));
      if (this.isMe(who)) li.append(meTag());
      this.ui.who.append(li);
    }
    this.ui.count.textContent = String(room.members.size);
  }
}
