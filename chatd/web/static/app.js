// chatd in the browser: the frames of docs/protocol.md, carried in binary
// WebSocket messages (one or more whole frames per message). It asks for
// 1.2 (rooms) and speaks 1.1 to a server that answers UNKNOWN_TYPE.
// Every piece of text from the server is put on the page with textContent,
// never as HTML.

import { FATAL, FINAL, T, entries, fields, frame, frames, person, split } from "./wire.js";
import { Rooms, meTag, nameSpan } from "./rooms.js";
import { NO_ROOMS, parseLine } from "./commands.js";

const PING_EVERY_MS = 10000; // well inside the server's idle timeout
const LIST_EVERY_MS = 30000; // the room list's user counts: this fresh
const MAX_BACKOFF_S = 30;

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
    state.asked = send(T.VERSION, "1.2");
    hello();
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

function lost() {
  state.active = false;
  ui.line.disabled = true;
  if (state.stopped) return;
  if (!state.joined) {
    // Still choosing a name: the next Join connects again.
    setStatus("not connected");
    ui.login.querySelector("button").disabled = false;
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
  switch (type) {
    case T.VERSION:
      speak12(true);
      break;
    case T.WELCOME: {
      const [name, id, color] = fields(payload, 3);
      state.me = person(id, color, name);
      send(T.READY);
      const again = rooms.forget();
      askWho(rooms.main);
      state.active = true;
      state.attempt = 0;
      if (state.rooms12) {
        for (const room of again) send(T.ENTER, room); // as before the loss
        askList();
      }
      const back = state.joined;
      state.joined = true;
      ui.login.hidden = true;
      ui.chat.hidden = false;
      ui.line.disabled = false;
      ui.nameError.textContent = "";
      setStatus(`${back ? "reconnected" : "connected"} as ${name}`);
      ui.line.focus();
      break;
    }
    case T.MESSAGE: {
      const [id, color, name, body] = fields(payload, 4);
      rooms.message(rooms.main, person(id, color, name), body);
      break;
    }
    case T.ROOM_MESSAGE: {
      const [room, id, color, name, body] = fields(payload, 5);
      rooms.message(rooms.ensure(room), person(id, color, name), body);
      break;
    }
    case T.WHISPERED: {
      const [id, color, name, body] = fields(payload, 4);
      addLine("whisper", "(private) ", nameSpan(person(id, color, name)), ": ", body);
      break;
    }
    case T.JOIN:
      joined(rooms.main, person(...fields(payload, 3)));
      break;
    case T.ROOM_JOIN: {
      const [room, id, color, name] = fields(payload, 4);
      joined(rooms.ensure(room), person(id, color, name), room);
      break;
    }
    case T.LEAVE: {
      const [id, color, name, reason] = fields(payload, 4);
      left(rooms.main, person(id, color, name), reason);
      break;
    }
    case T.ROOM_LEAVE: {
      const [room, id, color, name, reason] = fields(payload, 5);
      const known = rooms.find(room);
      if (known !== undefined) left(known, person(id, color, name), reason);
      break;
    }
    case T.ROOM_TOPIC: {
      const [name, topic] = fields(payload, 2);
      rooms.topicSet(rooms.ensure(name), topic);
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
    default:
      break; // ECHO, PONG and unknown types: nothing to show
  }
}

// JOIN or ROOM_JOIN (spelled: the room's name as the server keeps it).
function joined(room, who, spelled) {
  rooms.entered(room, who, spelled);
  if (!isMe(who) || room === rooms.main) return;
  askWho(room);
  askList();
  if (state.showOnJoin === room.key) {
    state.showOnJoin = null;
    rooms.show(room);
  }
}

function left(room, who, reason) {
  rooms.left(room, who, reason);
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
