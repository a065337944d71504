// What a line typed in the chat means: text for the shown room, or a slash
// command. `page` is { me, rooms, rooms12, join(name) }; nothing is sent here.

import { MAX_PAYLOAD, T, byteLength } from "./wire.js";
import { DEFAULT } from "./rooms.js";

const NAME_RE = /^[A-Za-z0-9_-]{1,32}$/;
export const NO_ROOMS = "rooms need a chatd that speaks protocol 1.2";

// The longest text `me` may say in `room` (docs/protocol.md: TOO_LONG).
function maxText(me, room) {
  if (me === null) return 0;
  const prefix = room.key === DEFAULT ? "" : `${room.name}.`;
  return MAX_PAYLOAD - byteLength(`${prefix}${me.id}.${me.color}.${me.name}.`);
}

const HELP =
  "commands: /msg NAME text, /who, /join ROOM, /part [ROOM], /topic text, "
  + "/rooms, /quit; //text says a line starting with /";

// A slash command: [type, payload, ...] to send, a function to run here
// (it returns an error or ""), or an error string.
function command(name, rest, page) {
  const room = page.rooms.current;
  switch (name) {
    case "msg":
    case "w": {
      const target = rest[0] ?? "";
      const body = rest.slice(1).join(" ");
      if (!NAME_RE.test(target) || body === "") return "usage: /msg NAME text";
      const most = maxText(page.me, page.rooms.main);
      if (byteLength(body) > most) {
        return `TOO_LONG: at most ${most} bytes of text (${byteLength(body)} now)`;
      }
      return [T.WHISPER, `${target}.${body}`, target, body];
    }
    case "who":
      return room.key === DEFAULT ? [T.WHO, ""] : [T.ROOM_WHO, room.name];
    case "quit":
      return [T.BYE, ""];
    case "help":
      return HELP;
    default:
      break;
  }
  if (!["join", "j", "part", "leave", "topic", "rooms", "list"].includes(name)) {
    return `unknown command /${name}; try /help`;
  }
  if (!page.rooms12) return NO_ROOMS;
  switch (name) {
    case "join":
    case "j":
      return rest[0] ? () => page.join(rest[0]) : "usage: /join ROOM";
    case "part":
    case "leave": {
      const which = rest[0] ?? room.name;
      if (page.rooms.keyOf(which) === DEFAULT) {
        return "the default room cannot be left; /quit leaves the server";
      }
      return [T.PART, which];
    }
    case "topic":
      return [T.TOPIC, `${room.name}.${rest.join(" ")}`];
    default:
      return [T.LIST, ""];
  }
}

// What the line would send: [type, payload, target, body] or an error string.
export function parseLine(line, page) {
  if (line.startsWith("//")) line = line.slice(1);
  else if (line.startsWith("/")) {
    const [name, ...rest] = line.slice(1).split(" ");
    return command(name.toLowerCase(), rest, page);
  }
  const room = page.rooms.current;
  const most = maxText(page.me, room);
  if (byteLength(line) > most) return `TOO_LONG: at most ${most} bytes (${byteLength(line)} now)`;
  return room.key === DEFAULT ? [T.SAY, line] : [T.ROOM_SAY, `${room.name}.${line}`];
}

