// chatd in the browser: the frames of docs/protocol.md, carried in binary
// WebSocket messages (one or more whole frames per message). It asks for
// 1.2 (rooms, history and resume) and speaks 1.1 to a server that answers
// UNKNOWN_TYPE. Every piece of text from the server is put on the page with
// textContent, never as HTML.
//
// Resume: the page asks for RESUMABLE; the TOKEN is kept in `state.token`
// only (never stored, never logged). A connection lost otherwise than by
// /quit or a fatal ERROR is resumed (RESUME, a SINCE per room, READY) while
// the server's window lasts; the events missed are replayed, none twice.

import {
  FATAL, FINAL, T, decode, entries, fields, frame, frames, numbered, person, split,
} from "./wire.js";
import { Rooms, meTag, nameSpan, topicLine } from "./rooms.js";
import { NO_ROOMS, parseLine } from "./commands.js";

const PING_EVERY_MS = 10000; // well inside the server's idle timeout
const LIST_EVERY_MS = 30000; // the room list's user counts: this fresh
const MAX_BACKOFF_S = 30;
const MAX_ATTEMPTS = 15;     // reconnections in a row before giving up (~6 min)
const HISTORY_LINES = 20;    // asked for on entering a room

// -- the page -----------------------------------------------------------------

const $ = (id) => document.getElementById(id);
const ui = {
  status: $("status"), login: $("login"), name: $("name"),
  password: $("password"), nameError: $("name-error"), chat: $("chat"),
  log: $("log"), who: $("who"), count: $("count"), say: $("say"),
  line: $("line"), lineError: $("line-error"), rooms: $("rooms"),
  join: $("join"), room: $("room"), list: $("list"), roomName: $("room-name"),
  topic: $("topic"), part: $("part"),
};

const state = {
  ws: null,
  wanted: null,       // { name, password } asked for
  me: null,           // { id, color, name } once WELCOMEd
  active: false,
  joined: false,      // has been in the room: a lost connection reconnects
  stopped: false,     // quit, kicked, or refused for good
  asked: false,       // VERSION sent, not answered yet
  rooms12: false,     // the server answered VERSION: rooms are on
  usersPending: null, // entries of a USERS list being received
  whoAsked: [],       // { room, show } per WHO/ROOM_WHO sent, in order
  roomsPending: null, // entries of a ROOMS list being received
  showRooms: false,   // print the next ROOMS list (asked for with /rooms)
  showOnJoin: null,   // the key of a room to show once entered
  attempt: 0,
  retry: null,
  lastSent: 0,
  // 1.2's history and resume
  askedResume: false, // RESUMABLE sent, not answered yet
  numbers: false,     // this connection's events are numbered (MARK)
  window: 0,          // seconds the server keeps a dropped session
  token: null,        // resumes the session; in this variable only
  lostAt: null,       // when the connection was lost (Date.now())
  resuming: false,    // RESUME sent, WELCOME or BAD_TOKEN not yet got
  mark: null,         // { room, n } of the last MARK: numbers the next frame
  pastLeft: 0,        // frames of a HISTORY answer still to come
  replay: null,       // { ping, count } from a resume's READY to its PONG
};

function isMe(who) {
  return state.me !== null && who.id === state.me.id;
}

const rooms = new Rooms(ui, isMe);
const addLine = (kind, ...parts) => rooms.line(null, kind, ...parts);

function setStatus(message, lost = false) {
  ui.status.textContent = message;
  ui.status.classList.toggle("lost", lost);
}

// -- connection -----------------------------------------------------------------

function send(type, payload) {
  const ws = state.ws;
  if (ws === null || ws.readyState !== WebSocket.OPEN) return false;
  ws.send(frame(type, payload));
  state.lastSent = Date.now();
  return true;
}

function connect() {
  clearTimeout(state.retry);
  state.retry = null;
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${scheme}//${location.host}/ws`);
  ws.binaryType = "arraybuffer";
  state.ws = ws;
  setStatus(state.joined ? "reconnecting…" : "connecting…");
  ws.onopen = () => {
    if (ws !== state.ws) return;
    setStatus("connected");
    state.usersPending = state.roomsPending = null;
    state.whoAsked = [];
    state.numbers = false;
    state.mark = state.replay = null;
    state.pastLeft = 0;
    state.asked = send(T.VERSION, "1.2");
    if (resumable()) {
      state.resuming = send(T.RESUME, state.token);
    } else {
      state.token = null;
      fresh();
    }
  };
  ws.onmessage = (event) => {
    if (ws !== state.ws) return;
    if (!(event.data instanceof ArrayBuffer)) return;
    for (const [type, payload] of frames(event.data)) handle(type, payload);
  };
  ws.onclose = () => {
    if (ws !== state.ws) return;
    state.ws = null;
    lost();
  };
}

function hello() {
  const { name, password } = state.wanted;
  send(T.HELLO, password ? `${name}.${password}` : name);
}

// A new session: RESUMABLE (before HELLO), then HELLO.
function fresh() {
  state.resuming = false;
  state.askedResume = send(T.RESUMABLE);
  hello();
}

// Whether the session lost can be resumed: a token, and within the window.
function resumable() {
  return state.token !== null && state.joined && state.lostAt !== null
    && Date.now() - state.lostAt < state.window * 1000;
}

function lost() {
  state.active = false;
  state.resuming = false;
  ui.line.disabled = true;
  if (state.stopped) return;
  if (!state.joined) {
    // Still choosing a name: the next Join connects again.
    setStatus("not connected");
    ui.login.querySelector("button").disabled = false;
    return;
  }
  state.lostAt ??= Date.now();
  if (state.attempt >= MAX_ATTEMPTS) {
    setStatus("connection lost; reload the page to try again", true);
    addLine("error", `Connection lost; gave up after ${MAX_ATTEMPTS} attempts.`);
    return;
  }
  const delay = Math.min(MAX_BACKOFF_S, 2 ** state.attempt) * (0.5 + Math.random() / 2);
  state.attempt += 1;
  const seconds = Math.max(1, Math.round(delay));
  setStatus(`connection lost; reconnecting in ${seconds} s…`, true);
  addLine("event", `Connection lost; reconnecting in ${seconds} s.`);
  state.retry = setTimeout(connect, delay * 1000);
}

function showLogin(message) {
  ui.chat.hidden = true;
  ui.login.hidden = false;
  ui.login.querySelector("button").disabled = false;
  ui.nameError.textContent = message;
  ui.name.focus();
}

// Rooms on or off, as the server answered VERSION.
function speak12(on) {
  state.asked = false;
  state.rooms12 = on;
  ui.chat.classList.toggle("rooms", on);
  if (!on) rooms.show(rooms.main);
}

function askWho(room) {
  const sent = room === rooms.main ? send(T.WHO) : send(T.ROOM_WHO, room.name);
  if (sent) state.whoAsked.push({ room, show: false });
}

function askList() {
  if (state.active && state.rooms12) send(T.LIST);
}

// The room's last lines, on entering it (room: its name as the server
// spells it).
function askHistory(room) {
  if (state.numbers) send(T.HISTORY, `${room}.${HISTORY_LINES}`);
}

// The room named: shown if one is in it, else entered (and shown once in).
function joinRoom(name) {
  if (!state.rooms12) return NO_ROOMS;
  const room = rooms.find(name);
  if (room !== undefined && room.joined) {
    rooms.show(room);
    return "";
  }
  if (!send(T.ENTER, name)) return "not connected";
  state.showOnJoin = rooms.keyOf(name);
  return "";
}

// -- frames from the server ---------------------------------------------------

function handle(type, payload) {
  if (type === T.MARK) {
    state.mark = numbered(decode(payload));
    return;
  }
  // A MARK numbers the frame after it; the frames of a HISTORY answer are
  // history ("past"), each after its MARK.
  const mark = state.mark;
  state.mark = null;
  const past = state.pastLeft > 0;
  if (past) state.pastLeft -= 1;
  const n = mark === null ? null : mark.n;
  // Whether this frame of `room` is new here (not shown already); a live
  // one's number is what a resume names in SINCE.
  const fresh = (room) => {
    if (mark === null) return true;
    if (!room.fresh(n, past)) return false;
    if (!past) room.marked = mark.room;
    return true;
  };
  switch (type) {
    case T.VERSION:
      speak12(true);
      break;
    case T.RESUMABLE:
      state.askedResume = false;
      state.numbers = true;
      state.window = Number(decode(payload)) || 0;
      break;
    case T.TOKEN:
      state.token = decode(payload);
      break;
    case T.WELCOME:
      welcome(...fields(payload, 3));
      break;
    case T.HISTORY: {
      const answer = numbered(decode(payload));
      state.pastLeft = answer === null ? 0 : Number(answer.n);
      break;
    }
    case T.MESSAGE: {
      const [id, color, name, body] = fields(payload, 4);
      if (fresh(rooms.main)) message(rooms.main, person(id, color, name), body, n, past);
      break;
    }
    case T.ROOM_MESSAGE: {
      const [name, id, color, who, body] = fields(payload, 5);
      const room = rooms.ensure(name);
      if (fresh(room)) message(room, person(id, color, who), body, n, past);
      break;
    }
    case T.WHISPERED: {
      const [id, color, name, body] = fields(payload, 4);
      addLine("whisper", "(private) ", nameSpan(person(id, color, name)), ": ", body);
      break;
    }
    case T.JOIN: {
      const who = person(...fields(payload, 3));
      if (!fresh(rooms.main)) break;
      if (past) rooms.past(rooms.main, n, "event", "→ ", nameSpan(who), " joined");
      else joined(rooms.main, who, undefined, mark);
      break;
    }
    case T.ROOM_JOIN: {
      const [name, id, color, who] = fields(payload, 4);
      const room = rooms.ensure(name);
      if (!fresh(room)) break;
      const someone = person(id, color, who);
      if (past) rooms.past(room, n, "event", "→ ", nameSpan(someone), " joined");
      else joined(room, someone, name, mark);
      break;
    }
    case T.LEAVE: {
      const [id, color, name, reason] = fields(payload, 4);
      if (fresh(rooms.main)) gone(rooms.main, person(id, color, name), reason, n, past);
      break;
    }
    case T.ROOM_LEAVE: {
      const [name, id, color, who, reason] = fields(payload, 5);
      const room = rooms.find(name);
      if (room !== undefined && fresh(room)) {
        gone(room, person(id, color, who), reason, n, past);
      }
      break;
    }
    case T.ROOM_TOPIC: {
      const [name, topic] = fields(payload, 2);
      const room = rooms.ensure(name);
      if (!fresh(room)) break;
      if (past) rooms.past(room, n, "event", topicLine(topic));
      else rooms.topicSet(room, topic, n);
      break;
    }
    case T.USERS:
      users(payload);
      break;
    case T.ROOMS:
      listed(payload);
      break;
    case T.ERROR:
      failed(...fields(payload, 2));
      break;
    case T.NOTICE: {
      const [code, why] = fields(payload, 2);
      addLine("notice", `${code}: ${why}`);
      break;
    }
    case T.PING:
      send(T.PONG, payload);
      break;
    case T.PONG:
      if (state.replay !== null && decode(payload) === state.replay.ping) replayed();
      break;
    default:
      break; // ECHO and unknown types: nothing to show
  }
}

function welcome(name, id, color) {
  const before = state.me;
  state.me = person(id, color, name);
  if (state.resuming) {
    resumed();
  } else {
    if (before !== null) {
      // Ids only grow while a server runs: a smaller one is another run,
      // whose numbers have nothing to do with those shown so far.
      rooms.renumber(state.me.id > before.id);
    }
    send(T.READY);
    const again = rooms.forget();
    askWho(rooms.main);
    if (state.rooms12) {
      for (const room of again) send(T.ENTER, room); // as before the loss
    }
  }
  state.active = true;
  state.attempt = 0;
  state.lostAt = null;
  askList();
  const back = state.joined;
  state.joined = true;
  ui.login.hidden = true;
  ui.chat.hidden = false;
  ui.line.disabled = false;
  ui.nameError.textContent = "";
  setStatus(`${back ? "reconnected" : "connected"} as ${name}`);
  ui.line.focus();
}

// The session is back (WELCOME after RESUME): the user never left its
// rooms. Each room is replayed from the last number got in it; the PONG of
// the PING after READY comes after the replay.
function resumed() {
  state.resuming = false;
  state.numbers = true;
  const inRooms = [...rooms.rooms.values()].filter((room) => room.joined);
  for (const room of inRooms) {
    if (room.last !== null && room.marked !== null) {
      send(T.SINCE, `${room.marked}.${room.last}`);
    }
  }
  send(T.READY);
  state.replay = { ping: `resumed.${Date.now()}`, count: 0 };
  send(T.PING, state.replay.ping);
  for (const room of inRooms) askWho(room); // joins and leaves a replay lacked
}

function replayed() {
  const { count } = state.replay;
  state.replay = null;
  addLine("event", `reconnected, ${count} missed message${count === 1 ? "" : "s"} delivered`);
}

// MESSAGE or ROOM_MESSAGE, live or past.
function message(room, who, body, n, past) {
  rooms.message(room, who, body, n, past);
  if (!past && n !== null && state.replay !== null) state.replay.count += 1;
}

// JOIN or ROOM_JOIN (spelled: the room's name as the server keeps it).
function joined(room, who, spelled, mark) {
  rooms.entered(room, who, spelled, mark === null ? null : mark.n);
  if (!isMe(who)) return;
  // Entered: its last lines, from before one came (HISTORY's own numbers
  // tell which were shown already).
  if (mark !== null) askHistory(mark.room);
  if (room === rooms.main) return;
  askWho(room);
  askList();
  if (state.showOnJoin === room.key) {
    state.showOnJoin = null;
    rooms.show(room);
  }
}

// LEAVE or ROOM_LEAVE, live or past.
function gone(room, who, reason, n, past) {
  if (past) {
    rooms.past(room, n, "event", "← ", nameSpan(who), ` left (${reason})`);
    return;
  }
  rooms.left(room, who, reason, n);
  if (isMe(who)) askList();
}

function users(payload) {
  if (state.usersPending === null) state.usersPending = [];
  if (payload.length > 0) {
    for (const entry of entries(payload)) {
      state.usersPending.push(person(...entry.split(".")));
    }
    return;
  }
  // The empty frame ends the list: it is who is in the room now; the joins
  // and leaves that follow keep it current.
  const { room, show } = state.whoAsked.shift() ?? { room: rooms.main, show: false };
  room.members = new Map(state.usersPending.map((who) => [who.id, who]));
  state.usersPending = null;
  rooms.render();
  if (show) {
    const parts = ["Here: "];
    for (const who of room.members.values()) {
      if (parts.length > 1) parts.push(", ");
      parts.push(nameSpan(who));
    }
    rooms.line(room, "notice", ...parts);
  }
}

function listed(payload) {
  if (state.roomsPending === null) state.roomsPending = [];
  if (payload.length > 0) {
    for (const entry of entries(payload)) state.roomsPending.push(split(entry, 3));
    return;
  }
  const list = state.roomsPending;
  state.roomsPending = null;
  rooms.listing(list);
  if (state.showRooms) {
    state.showRooms = false;
    const names = list.map(([name, count, topic]) =>
      `${name} (${count})${topic === "" ? "" : ` ${topic}`}`);
    addLine("notice", `Rooms: ${names.join(", ")}`);
  }
}

function failed(code, why) {
  if (state.asked && code === "UNKNOWN_TYPE") {
    speak12(false); // a 1.1 server: no rooms, the rest as before
    return;
  }
  if (state.askedResume && code === "UNKNOWN_TYPE") {
    state.askedResume = false; // no history or resume: as before
    return;
  }
  if (state.resuming && (code === "BAD_TOKEN" || code === "UNKNOWN_TYPE")) {
    // The session is gone (its window ended, the server restarted): a new
    // one, with the same name.
    state.token = null;
    addLine("error", `${code}: could not resume; joining again as ${state.wanted.name}.`);
    fresh();
    return;
  }
  if (code === "HISTORY_GONE") {
    const gap = numbered(why);
    const name = gap === null ? why : gap.room;
    rooms.line(rooms.find(name) ?? null, "error", `some messages were lost in ${name}`);
    return;
  }
  if (FATAL.has(code)) state.token = null; // the server ended the session
  if (FINAL.has(code)) state.stopped = true;
  if (!state.active) {
    if (state.joined && code === "NAME_TAKEN") {
      // Our old connection may still hold the name: try again later.
      state.ws?.close();
      return;
    }
    if (state.joined && !FINAL.has(code) && FATAL.has(code)) {
      addLine("error", `${code}: ${why}`);
      return;
    }
    state.joined = false;
    showLogin(`${code}: ${why}`);
    return;
  }
  addLine("error", `${code}: ${why}`);
  if (FATAL.has(code)) {
    state.active = false;
    ui.line.disabled = true;
    if (FINAL.has(code)) setStatus(`disconnected: ${why}`, true);
  } else {
    ui.lineError.textContent = `${code}: ${why}`;
  }
}

// -- what the person does -----------------------------------------------------

ui.login.addEventListener("submit", (event) => {
  event.preventDefault();
  const name = ui.name.value.trim();
  // The server judges names (its BAD_NAME is shown); only what would change
  // the meaning of HELLO (a dot starts the password) is refused here.
  if (name === "" || name.includes(".")) {
    ui.nameError.textContent = "BAD_NAME: 1 to 32 letters, digits, _ or -";
    ui.name.focus();
    return;
  }
  ui.nameError.textContent = "";
  state.wanted = { name, password: ui.password.value };
  state.stopped = false;
  if (state.ws !== null && state.ws.readyState === WebSocket.OPEN) hello();
  else if (state.ws === null) connect();
});

// What a typed line means here and now.
const parse = (line) =>
  parseLine(line, { me: state.me, rooms, rooms12: state.rooms12, join: joinRoom });

ui.line.addEventListener("input", () => {
  const parsed = parse(ui.line.value);
  ui.lineError.textContent =
    typeof parsed === "string" && parsed.startsWith("TOO_LONG") ? parsed : "";
});

ui.say.addEventListener("submit", (event) => {
  event.preventDefault();
  const line = ui.line.value;
  if (line === "" || !state.active) return;
  const parsed = parse(line);
  const error = typeof parsed === "function" ? parsed() : parsed;
  if (typeof error === "string") {
    ui.lineError.textContent = error;
    if (error === "") ui.line.value = "";
    return;
  }
  const [type, payload, target, body] = parsed;
  if (!send(type, payload)) {
    ui.lineError.textContent = "not connected";
    return;
  }
  ui.lineError.textContent = "";
  ui.line.value = "";
  if (type === T.WHISPER) {
    addLine("whisper", `(private to ${target}) `, nameSpan(state.me), meTag(), ": ", body);
  } else if (type === T.WHO || type === T.ROOM_WHO) {
    state.whoAsked.push({ room: rooms.current, show: true });
  } else if (type === T.LIST) {
    state.showRooms = true;
  } else if (type === T.BYE) {
    state.stopped = true;
    setStatus("you left; reload the page to join again");
    addLine("event", "You left.");
  }
});

rooms.onPick = (room) => {
  const error = joinRoom(room.name);
  ui.lineError.textContent = error;
  if (error === "" && room.joined) ui.line.focus();
};

ui.join.addEventListener("submit", (event) => {
  event.preventDefault();
  const name = ui.room.value.trim();
  if (name === "" || !state.active) return;
  const error = joinRoom(name);
  ui.lineError.textContent = error;
  if (error === "") ui.room.value = "";
});

ui.list.addEventListener("click", askList);

ui.part.addEventListener("click", () => {
  if (rooms.current !== rooms.main) send(T.PART, rooms.current.name);
});

// Closing the tab is leaving, not losing the connection: others see "quit".
window.addEventListener("pagehide", () => {
  if (state.active) send(T.BYE);
});

setInterval(() => {
  if (state.active && Date.now() - state.lastSent >= PING_EVERY_MS) send(T.PING, "");
}, PING_EVERY_MS / 2);

setInterval(askList, LIST_EVERY_MS);

setStatus("pick a name to join");
