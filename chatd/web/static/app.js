// chatd in the browser: the frames of PROTOCOL.md 1.1, carried in binary
// WebSocket messages (one or more whole frames per message).
// Every piece of text from the server is put on the page with textContent,
// never as HTML.

const T = {
  ECHO: 1, HELLO: 2, WELCOME: 3, READY: 4, SAY: 5, MESSAGE: 6, JOIN: 7,
  LEAVE: 8, PING: 9, PONG: 10, ERROR: 11, WHO: 12, USERS: 13, WHISPER: 14,
  WHISPERED: 15, NOTICE: 16, BYE: 17,
};
const MAX_PAYLOAD = 1016;
const FATAL = new Set([
  "FRAME_TOO_LARGE", "AUTH_FAILED", "SERVER_FULL", "MAINTENANCE",
  "SLOW_CONSUMER", "IDLE_TIMEOUT", "HANDSHAKE_TIMEOUT", "SHUTDOWN", "KICKED",
]);
// After these the page does not reconnect on its own.
const FINAL = new Set(["AUTH_FAILED", "KICKED"]);
const PING_EVERY_MS = 10000; // well inside the server's idle timeout
const MAX_BACKOFF_S = 30;
const MAX_LOG_LINES = 2000;
const NAME_RE = /^[A-Za-z0-9_-]{1,32}$/;

const utf8 = new TextEncoder();
const text = new TextDecoder("utf-8"); // invalid bytes become U+FFFD

// -- frames ---------------------------------------------------------------

function frame(type, payload = "") {
  const body = typeof payload === "string" ? utf8.encode(payload) : payload;
  const out = new Uint8Array(8 + body.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, type);
  view.setUint32(4, body.length);
  out.set(body, 8);
  return out;
}

function* frames(buffer) {
  const view = new DataView(buffer);
  let offset = 0;
  while (buffer.byteLength - offset >= 8) {
    const type = view.getUint32(offset);
    const size = view.getUint32(offset + 4);
    if (offset + 8 + size > buffer.byteLength) return;
    yield [type, new Uint8Array(buffer, offset + 8, size)];
    offset += 8 + size;
  }
}

// The first n-1 dot-separated fields, and the rest as the last one.
function fields(payload, n) {
  const s = text.decode(payload);
  const out = [];
  let start = 0;
  for (let i = 0; i < n - 1; i++) {
    const dot = s.indexOf(".", start);
    if (dot < 0) break;
    out.push(s.slice(start, dot));
    start = dot + 1;
  }
  out.push(s.slice(start));
  return out;
}

function person(id, color, name) {
  return { id: Number(id), color: Number(color), name };
}

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

// -- the page -----------------------------------------------------------------

const $ = (id) => document.getElementById(id);
const ui = {
  status: $("status"), login: $("login"), name: $("name"),
  password: $("password"), nameError: $("name-error"), chat: $("chat"),
  log: $("log"), who: $("who"), count: $("count"), say: $("say"),
  line: $("line"), lineError: $("line-error"),
};

const state = {
  ws: null,
  wanted: null,       // { name, password } asked for
  me: null,           // { id, color, name } once WELCOMEd
  active: false,
  joined: false,      // has been in the room: a lost connection reconnects
  stopped: false,     // quit, kicked, or refused for good
  roster: new Map(),  // id -> person, in the order they became active
  usersPending: null, // entries of a USERS list being received
  showWho: false,     // print the next USERS list (asked for with /who)
  attempt: 0,
  retry: null,
  lastSent: 0,
};

function setStatus(message, lost = false) {
  ui.status.textContent = message;
  ui.status.classList.toggle("lost", lost);
}

function nameSpan(who) {
  const span = document.createElement("span");
  span.className = "name";
  span.style.color = cssColor(who.color);
  span.textContent = who.name;
  return span;
}

function addLine(kind, ...parts) {
  const atBottom =
    ui.log.parentElement.scrollHeight - ui.log.parentElement.scrollTop
    - ui.log.parentElement.clientHeight < 40;
  const li = document.createElement("li");
  li.className = kind;
  for (const part of parts) {
    li.append(typeof part === "string" ? document.createTextNode(part) : part);
  }
  ui.log.append(li);
  while (ui.log.childElementCount > MAX_LOG_LINES) ui.log.firstElementChild.remove();
  if (atBottom) li.scrollIntoView({ block: "end" });
  return li;
}

function isMe(who) {
  return state.me !== null && who.id === state.me.id;
}

function meTag() {
  const tag = document.createElement("span");
  tag.className = "me";
  tag.textContent = " (you)";
  return tag;
}

function renderRoster() {
  ui.who.replaceChildren();
  for (const who of state.roster.values()) {
    const li = document.createElement("li");
    li.append(nameSpan(who));
    if (isMe(who)) li.append(meTag());
    ui.who.append(li);
  }
  ui.count.textContent = String(state.roster.size);
}

// The longest SAY text this user may send (PROTOCOL.md: TOO_LONG).
function maxText() {
  const me = state.me;
  if (me === null) return 0;
  return MAX_PAYLOAD - utf8.encode(`${me.id}.${me.color}.${me.name}.`).length;
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

// -- frames from the server ---------------------------------------------------

function handle(type, payload) {
  switch (type) {
    case T.WELCOME: {
      const [name, id, color] = fields(payload, 3);
      state.me = person(id, color, name);
      send(T.READY);
      send(T.WHO);
      state.active = true;
      state.attempt = 0;
      const again = state.joined;
      state.joined = true;
      ui.login.hidden = true;
      ui.chat.hidden = false;
      ui.line.disabled = false;
      ui.nameError.textContent = "";
      setStatus(`${again ? "reconnected" : "connected"} as ${name}`);
      ui.line.focus();
      break;
    }
    case T.MESSAGE: {
      const [id, color, name, body] = fields(payload, 4);
      const who = person(id, color, name);
      const own = isMe(who);
      const parts = [nameSpan(who)];
      if (own) parts.push(meTag());
      parts.push(": ", body);
      addLine(own ? "message own" : "message", ...parts);
      break;
    }
    case T.WHISPERED: {
      const [id, color, name, body] = fields(payload, 4);
      addLine("whisper", "(private) ", nameSpan(person(id, color, name)), ": ", body);
      break;
    }
    case T.JOIN: {
      const who = person(...fields(payload, 3));
      state.roster.set(who.id, who);
      renderRoster();
      if (isMe(who)) addLine("event", "You joined as ", nameSpan(who), ".");
      else addLine("event", "→ ", nameSpan(who), " joined");
      break;
    }
    case T.LEAVE: {
      const [id, color, name, reason] = fields(payload, 4);
      const who = person(id, color, name);
      state.roster.delete(who.id);
      renderRoster();
      addLine("event", "← ", nameSpan(who), ` left (${reason})`);
      break;
    }
    case T.USERS: {
      if (state.usersPending === null) state.usersPending = [];
      if (payload.length > 0) {
        for (const entry of text.decode(payload).split("\n")) {
          const [id, color, name] = entry.split(".");
          state.usersPending.push(person(id, color, name));
        }
        break;
      }
      // The empty frame ends the list: it is who is here now; JOIN and
      // LEAVE that follow keep it current.
      state.roster = new Map(state.usersPending.map((who) => [who.id, who]));
      state.usersPending = null;
      renderRoster();
      if (state.showWho) {
        state.showWho = false;
        const parts = ["Here: "];
        for (const who of state.roster.values()) {
          if (parts.length > 1) parts.push(", ");
          parts.push(nameSpan(who));
        }
        addLine("notice", ...parts);
      }
      break;
    }
    case T.ERROR: {
      const [code, why] = fields(payload, 2);
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
      break;
    }
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

function byteLength(s) {
  return utf8.encode(s).length;
}

// What the line would send: [type, payload, local echo] or an error string.
function parseLine(line) {
  if (line.startsWith("//")) line = line.slice(1);
  else if (line.startsWith("/")) {
    const [command, ...rest] = line.slice(1).split(" ");
    switch (command.toLowerCase()) {
      case "msg":
      case "w": {
        const target = rest[0] ?? "";
        const body = rest.slice(1).join(" ");
        if (!NAME_RE.test(target) || body === "") return "usage: /msg NAME text";
        if (byteLength(body) > maxText()) {
          return `TOO_LONG: at most ${maxText()} bytes of text (${byteLength(body)} now)`;
        }
        return [T.WHISPER, `${target}.${body}`, target, body];
      }
      case "who":
        return [T.WHO, ""];
      case "quit":
        return [T.BYE, ""];
      case "help":
        return "commands: /msg NAME text, /who, /quit; //text says a line starting with /";
      default:
        return `unknown command /${command}; try /help`;
    }
  }
  if (byteLength(line) > maxText()) {
    return `TOO_LONG: at most ${maxText()} bytes (${byteLength(line)} now)`;
  }
  return [T.SAY, line];
}

ui.line.addEventListener("input", () => {
  const parsed = parseLine(ui.line.value);
  ui.lineError.textContent =
    typeof parsed === "string" && parsed.startsWith("TOO_LONG") ? parsed : "";
});

ui.say.addEventListener("submit", (event) => {
  event.preventDefault();
  const line = ui.line.value;
  if (line === "" || !state.active) return;
  const parsed = parseLine(line);
  if (typeof parsed === "string") {
    ui.lineError.textContent = parsed;
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
  } else if (type === T.WHO) {
    state.showWho = true;
  } else if (type === T.BYE) {
    state.stopped = true;
    setStatus("you left; reload the page to join again");
    addLine("event", "You left.");
  }
});

// Closing the tab is leaving, not losing the connection: others see "quit".
window.addEventListener("pagehide", () => {
  if (state.active) send(T.BYE);
});

setInterval(() => {
  if (state.active && Date.now() - state.lastSent >= PING_EVERY_MS) send(T.PING, "");
}, PING_EVERY_MS / 2);

setStatus("pick a name to join");
