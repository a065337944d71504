// chatd's frames (docs/protocol.md: 1.1, and 1.2's rooms, history and
// resume) and the dot-separated fields inside their payloads. No DOM here.

export const T = {
  ECHO: 1, HELLO: 2, WELCOME: 3, READY: 4, SAY: 5, MESSAGE: 6, JOIN: 7,
  LEAVE: 8, PING: 9, PONG: 10, ERROR: 11, WHO: 12, USERS: 13, WHISPER: 14,
  WHISPERED: 15, NOTICE: 16, BYE: 17,
  // 1.2: only after the server has answered VERSION.
  VERSION: 18, ENTER: 19, PART: 20, ROOM_SAY: 21, ROOM_MESSAGE: 22,
  ROOM_JOIN: 23, ROOM_LEAVE: 24, LIST: 25, ROOMS: 26, ROOM_WHO: 27,
  TOPIC: 28, ROOM_TOPIC: 29,
  // 1.2's history and resume: only after the server has answered RESUMABLE
  // (or a RESUME).
  RESUMABLE: 30, TOKEN: 31, RESUME: 32, SINCE: 33, MARK: 34, HISTORY: 35,
};
export const MAX_PAYLOAD = 1016;
export const FATAL = new Set([
  "FRAME_TOO_LARGE", "AUTH_FAILED", "SERVER_FULL", "MAINTENANCE",
  "SLOW_CONSUMER", "IDLE_TIMEOUT", "HANDSHAKE_TIMEOUT", "SHUTDOWN", "KICKED",
]);
// After these the page does not reconnect on its own.
export const FINAL = new Set(["AUTH_FAILED", "KICKED"]);

const utf8 = new TextEncoder();
const text = new TextDecoder("utf-8"); // invalid bytes become U+FFFD

export function byteLength(s) {
  return utf8.encode(s).length;
}

export function frame(type, payload = "") {
  const body = typeof payload === "string" ? utf8.encode(payload) : payload;
  const out = new Uint8Array(8 + body.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, type);
  view.setUint32(4, body.length);
  out.set(body, 8);
  return out;
}

export function* frames(buffer) {
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

// The first n-1 dot-separated fields of s, and the rest as the last one.
export function split(s, n) {
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

export function fields(payload, n) {
  return split(text.decode(payload), n);
}

export function decode(payload) {
  return text.decode(payload);
}

// `room.number` (MARK, SINCE; HISTORY_GONE's text) or `room.count`
// (HISTORY): { room, n } with n a decimal string, or null if malformed.
export function numbered(s) {
  const dot = s.lastIndexOf(".");
  const n = s.slice(dot + 1);
  if (dot < 1 || !/^[0-9]{1,20}$/.test(n)) return null;
  return { room: s.slice(0, dot), n };
}

// The entries of a USERS or ROOMS frame (the empty frame, which ends the
// list, has none).
export function entries(payload) {
  return payload.length > 0 ? text.decode(payload).split("\n") : [];
}

export function person(id, color, name) {
  return { id: Number(id), color: Number(color), name };
}
