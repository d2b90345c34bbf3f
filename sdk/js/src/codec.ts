// The packet codec of the native protocol (PROTOCOL.md §2 and §4): every
// server-bound and client-bound packet, both ways, with the error texts and
// offsets of the Go codec (package packet), so the shared test vectors
// (testdata/packets.json) hold for both.
//
// Numbers of type long are bigint here, exact over the whole int64 range.

/** The server's first message after the upgrade: `6d 73`. */
export const HELLO = new Uint8Array([0x6d, 0x73]);
/** The only protocol version. */
export const VERSION = 0;
/** The longest access key (its length byte is signed). */
export const MAX_KEY_LEN = 127;
/** The longest `string` value in bytes. */
export const MAX_STRING_LEN = 32767;

/** A server-bound packet (client → server). */
export type ClientPacket =
  | { type: "Ping" }
  | { type: "Settings"; settings: Setting[] }
  | { type: "Subscribe"; channel: string }
  | { type: "Unsubscribe"; channel: string }
  | { type: "Publish"; channel: string; payload: Uint8Array }
  | { type: "SubscribeFrom"; channel: string; epoch: bigint; offset: bigint };

/** One entry of a Settings packet (PROTOCOL.md §6). */
export type Setting =
  | { id: "echo"; value: number }
  | { id: "client_name"; value: string }
  | { id: "batch_window"; value: number };

/** A client-bound packet (server → client). */
export type ServerPacket =
  | { type: "Pong"; millis: bigint }
  | { type: "Message"; channel: string; payload: Uint8Array }
  | { type: "Error"; code: number; text: string }
  | { type: "Subscribed"; channel: string }
  | { type: "Publication"; channel: string; offset: bigint; payload: Uint8Array }
  | { type: "SubscribedFrom"; channel: string; epoch: bigint; offset: bigint; recovered: number };

export type Packet = ClientPacket | ServerPacket;

/**
 * A malformed message. `message` is the Go codec's error text ("packet
 * truncated", "unknown packet id", "unknown setting id", "negative
 * length", "invalid utf-8"); `offset` is the byte at fault as the Go
 * decoder reports it; `packets` are the packets decoded before it.
 */
export class DecodeError extends Error {
  constructor(message: string, readonly offset: number, readonly packets: Packet[]) {
    super(message);
  }
}

const utf8 = new TextEncoder();
// fatal: a string that is not valid UTF-8 is malformed, as in Go.
const strict = new TextDecoder("utf-8", { fatal: true });

const setIds = { echo: 1, client_name: 2, batch_window: 3 } as const;
const clientIds = { Ping: 0, Settings: 1, Subscribe: 2, Unsubscribe: 3, Publish: 4, SubscribeFrom: 5 } as const;
const serverIds = { Pong: 0, Message: 1, Error: 2, Subscribed: 3, Publication: 4, SubscribedFrom: 5 } as const;

/** A growing byte buffer for encoders. */
class Writer {
  b = new Uint8Array(64);
  n = 0;
  room(k: number): DataView {
    if (this.n + k > this.b.length) {
      const b = new Uint8Array(Math.max(this.b.length * 2, this.n + k));
      b.set(this.b.subarray(0, this.n));
      this.b = b;
    }
    const v = new DataView(this.b.buffer, this.n, k);
    this.n += k;
    return v;
  }
  u8(v: number) {
    this.room(1).setUint8(0, v);
  }
  i16(v: number) {
    this.room(2).setInt16(0, v);
  }
  i64(v: bigint) {
    this.room(8).setBigInt64(0, BigInt.asIntN(64, v));
  }
  raw(b: Uint8Array) {
    this.room(b.length);
    this.b.set(b, this.n - b.length);
  }
  str(s: string) {
    const b = utf8.encode(s);
    if (b.length > MAX_STRING_LEN) throw new RangeError(`string of ${b.length} bytes, at most ${MAX_STRING_LEN}`);
    this.i16(b.length);
    this.raw(b);
  }
  bytes(b: Uint8Array) {
    this.room(4).setUint32(0, b.length);
    this.raw(b);
  }
}

/**
 * Encodes packets (of either direction) into one message. It checks only
 * what the wire cannot express (a string over 32767 bytes throws a
 * RangeError), not the server's value ranges.
 */
export function encode(packets: readonly Packet[]): Uint8Array {
  const w = new Writer();
  for (const p of packets) {
    switch (p.type) {
      case "Ping":
      case "Settings":
      case "Subscribe":
      case "Unsubscribe":
      case "Publish":
      case "SubscribeFrom":
        w.u8(clientIds[p.type]);
        break;
      default:
        w.u8(serverIds[p.type]);
    }
    switch (p.type) {
      case "Settings":
        for (const s of p.settings) {
          w.u8(setIds[s.id]);
          if (s.id === "client_name") w.str(s.value);
          else if (s.id === "echo") w.u8(s.value);
          else w.i16(s.value);
        }
        w.u8(0xff);
        break;
      case "Pong":
        w.i64(p.millis);
        break;
      case "Error":
        w.i16(p.code);
        w.str(p.text);
        break;
      case "Subscribe":
      case "Unsubscribe":
      case "Subscribed":
        w.str(p.channel);
        break;
      case "Publish":
      case "Message":
        w.str(p.channel);
        w.bytes(p.payload);
        break;
      case "Publication":
        w.str(p.channel);
        w.i64(p.offset);
        w.bytes(p.payload);
        break;
      case "SubscribeFrom":
      case "SubscribedFrom":
        w.str(p.channel);
        w.i64(p.epoch);
        w.i64(p.offset);
        if (p.type === "SubscribedFrom") w.u8(p.recovered);
    }
  }
  return w.b.slice(0, w.n);
}

/**
 * Encodes the auth message (PROTOCOL.md §3): magic, version, key length,
 * key. Like the Go codec it does not check the key's length.
 */
export function encodeAuth(key: Uint8Array, version = VERSION): Uint8Array {
  const b = new Uint8Array(4 + key.length);
  b.set([0xb6, 0xc4, version, key.length & 0xff]);
  b.set(key, 4);
  return b;
}

/** Error texts of the Go codec. */
const TRUNCATED = "packet truncated";
const NEGATIVE = "negative length";

/** Reads wire values; on error pos is at the value at fault, as in Go. */
class Reader {
  pos = 0;
  v: DataView;
  constructor(readonly b: Uint8Array) {
    this.v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  }
  take(n: number): number {
    if (n > this.b.length - this.pos) throw TRUNCATED;
    const at = this.pos;
    this.pos += n;
    return at;
  }
  u8(): number {
    return this.b[this.take(1)];
  }
  i16(): number {
    return this.v.getInt16(this.take(2));
  }
  i64(): bigint {
    return this.v.getBigInt64(this.take(8));
  }
  // body reads a length prefix of size 2 or 4 and what follows; on error
  // pos goes back to the prefix.
  body(size: 2 | 4): Uint8Array {
    const start = this.pos;
    try {
      const at = this.take(size);
      const n = size === 2 ? this.v.getInt16(at) : this.v.getInt32(at);
      if (n < 0) throw NEGATIVE;
      const from = this.take(n);
      return this.b.slice(from, from + n);
    } catch (e) {
      this.pos = start;
      throw e;
    }
  }
  str(): string {
    const start = this.pos;
    const b = this.body(2);
    try {
      return strict.decode(b);
    } catch {
      this.pos = start;
      throw "invalid utf-8";
    }
  }
  bytes(): Uint8Array {
    return this.body(4);
  }
}

/**
 * Decodes one message of packets: client-bound ones (what a client
 * receives) or, with toServer, server-bound ones. Payloads are copies.
 * Throws a DecodeError for a malformed message.
 */
export function decode(msg: Uint8Array, toServer?: false): ServerPacket[];
export function decode(msg: Uint8Array, toServer: true): ClientPacket[];
export function decode(msg: Uint8Array, toServer = false): Packet[] {
  const r = new Reader(msg);
  const out: Packet[] = [];
  try {
    while (r.pos < msg.length) out.push(toServer ? readClient(r) : readServer(r));
  } catch (e) {
    if (typeof e !== "string") throw e;
    throw new DecodeError(e, r.pos, out);
  }
  return out;
}

function readServer(r: Reader): ServerPacket {
  switch (r.u8()) {
    case 0:
      return { type: "Pong", millis: r.i64() };
    case 1:
      return { type: "Message", channel: r.str(), payload: r.bytes() };
    case 2:
      return { type: "Error", code: r.i16(), text: r.str() };
    case 3:
      return { type: "Subscribed", channel: r.str() };
    case 4:
      return { type: "Publication", channel: r.str(), offset: r.i64(), payload: r.bytes() };
    case 5:
      return { type: "SubscribedFrom", channel: r.str(), epoch: r.i64(), offset: r.i64(), recovered: r.u8() };
  }
  r.pos--;
  throw "unknown packet id";
}

function readClient(r: Reader): ClientPacket {
  switch (r.u8()) {
    case 0:
      return { type: "Ping" };
    case 1: {
      const settings: Setting[] = [];
      for (;;) {
        const id = r.u8(); // no terminator: truncated at the end
        if (id === 0xff) return { type: "Settings", settings };
        if (id === 1) settings.push({ id: "echo", value: (r.u8() << 24) >> 24 });
        else if (id === 2) settings.push({ id: "client_name", value: r.str() });
        else if (id === 3) settings.push({ id: "batch_window", value: r.i16() });
        else {
          r.pos--;
          throw "unknown setting id";
        }
      }
    }
    case 2:
      return { type: "Subscribe", channel: r.str() };
    case 3:
      return { type: "Unsubscribe", channel: r.str() };
    case 4:
      return { type: "Publish", channel: r.str(), payload: r.bytes() };
    case 5:
      return { type: "SubscribeFrom", channel: r.str(), epoch: r.i64(), offset: r.i64() };
  }
  r.pos--;
  throw "unknown packet id";
}

/**
 * Checks an auth message as the server does (PROTOCOL.md §3) and returns
 * its key, or throws an Error with the Go codec's text.
 */
export function parseAuth(msg: Uint8Array): Uint8Array {
  let err = "";
  const n = (msg[3] << 24) >> 24;
  if (msg.length < 2 || msg[0] !== 0xb6 || msg[1] !== 0xc4) err = "bad auth magic";
  else if (msg.length < 3) err = "auth message truncated";
  else if (msg[2] !== VERSION) err = "unsupported protocol version";
  else if (msg.length < 4) err = "auth message truncated";
  else if (n <= 0) err = "bad key length";
  else if (msg.length < 4 + n) err = "auth message truncated";
  else if (msg.length > 4 + n) err = "trailing bytes after key";
  if (err) throw new Error(err);
  return msg.slice(4);
}
