// The codec against the shared test vectors (testdata/packets.json at the
// repository's root), as packet/vectors_test.go checks the Go codec: every
// message decodes to its packets, every packet encodes back to the same
// bytes, every malformed message fails with the same error at the same
// offset after the same number of packets.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { decode, encode, encodeAuth, parseAuth, DecodeError, HELLO } from "../dist/index.js";

const vectors = JSON.parse(readFileSync(new URL("../../../testdata/packets.json", import.meta.url), "utf8"));
const bytes = (h) => Uint8Array.from(Buffer.from(h, "hex"));
const hex = (b) => Buffer.from(b).toString("hex");

// toVector writes a decoded packet as the vectors file does: longs as
// decimal strings, payloads as hex.
function toVector(p) {
  const v = {};
  for (const [k, x] of Object.entries(p)) v[k] = typeof x === "bigint" ? x.toString() : x instanceof Uint8Array ? hex(x) : x;
  return v;
}

// fromVector is the inverse, for the encoder.
function fromVector(v) {
  const p = { ...v };
  for (const k of ["epoch", "offset", "millis"]) if (k in p) p[k] = BigInt(p[k]);
  if ("payload" in p) p.payload = bytes(p.payload);
  return p;
}

test("hello", () => assert.equal(hex(HELLO), vectors.hello));

test("auth", () => {
  for (const a of vectors.auth) {
    const msg = bytes(a.hex);
    if (a.error) {
      assert.throws(() => parseAuth(msg), { message: a.error }, a.name);
      continue;
    }
    assert.equal(Buffer.from(parseAuth(msg)).toString(), a.key, a.name);
    assert.equal(hex(encodeAuth(new TextEncoder().encode(a.key))), a.hex, a.name);
  }
});

for (const [dir, toServer] of [["server_bound", true], ["client_bound", false]]) {
  test(`${dir}: decode and encode`, () => {
    assert.ok(vectors[dir].length > 0);
    for (const m of vectors[dir]) {
      const got = decode(bytes(m.hex), toServer).map(toVector);
      assert.deepEqual(got, m.packets, m.name);
      assert.equal(hex(encode(m.packets.map(fromVector))), m.hex, m.name);
    }
  });

  test(`${dir}: malformed`, () => {
    assert.ok(vectors[`${dir}_malformed`].length > 0);
    for (const m of vectors[`${dir}_malformed`]) {
      let err;
      try {
        decode(bytes(m.hex), toServer);
      } catch (e) {
        err = e;
      }
      assert.ok(err instanceof DecodeError, `${m.name}: decoded without an error`);
      assert.deepEqual(
        { error: err.message, offset: err.offset, packets_before: err.packets.length },
        { error: m.error, offset: m.offset, packets_before: m.packets_before },
        m.name,
      );
    }
  });
}

test("every packet type has a vector", () => {
  const types = new Set();
  for (const dir of ["server_bound", "client_bound"]) for (const m of vectors[dir]) for (const p of m.packets) types.add(p.type);
  assert.deepEqual([...types].sort(), [
    "Error", "Message", "Ping", "Pong", "Publication", "Publish", "Settings",
    "Subscribe", "SubscribeFrom", "Subscribed", "SubscribedFrom", "Unsubscribe",
  ]);
});

test("the encoder refuses a string the wire cannot carry", () => {
  assert.throws(() => encode([{ type: "Subscribe", channel: "x".repeat(32768) }]), RangeError);
  assert.equal(encode([{ type: "Subscribe", channel: "x".repeat(32767) }]).length, 3 + 32767);
});
