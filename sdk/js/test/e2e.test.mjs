// The client against a real gateway node (started by
// test/sdkjs_e2e_test.go): authentication, subscribe and publish between
// two clients, settings, Error packets as refusals of the request that
// caused them, unsubscribe, close, and revocation (3004) that stops the
// client for good.
import { test } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { GatewayClient, CloseError, ClosedError, ServerError } from "../dist/index.js";
import { env, needsGateway, recorded, control } from "./helpers.mjs";

const refused = (code, text) => (e) => {
  assert.ok(e instanceof ServerError, `${e} is not a ServerError`);
  assert.deepEqual({ code: e.code, text: e.text }, { code, text });
  return true;
};

test("a refused key: connect rejects with 3001 and its reason; the client is closed", { skip: needsGateway }, async () => {
  const [c, r] = recorded(env.ws, env.keys.bad);
  await assert.rejects(c.connect(), (e) => {
    assert.ok(e instanceof CloseError, `${e}`);
    assert.deepEqual({ code: e.code, reason: e.reason, permanent: e.permanent }, { code: 3001, reason: "invalid access key", permanent: true });
    return true;
  });
  assert.equal(c.state, "closed");
  assert.deepEqual(r.states, ["connecting", "closed(closed: 3001 invalid access key)"]);
  assert.ok((await c.wait()) instanceof CloseError);
  await assert.rejects(c.publish("room", "x"), CloseError);
});

test("subscribe, publish, settings, refusals, unsubscribe and close", { skip: needsGateway }, async () => {
  const [alice, ra] = recorded(env.ws, env.keys.alice);
  const [bob, rb] = recorded(env.ws, env.keys.bob, { name: "bob's client" });
  await alice.connect();
  await bob.connect();
  try {
    const sub = await bob.subscribe("room", rb.handler);
    assert.equal(sub.channel, "room");
    assert.deepEqual(rb.subscribed, [{ channel: "room", resubscribed: false, epoch: 0n, offset: 0, recovered: true }]);
    await assert.rejects(bob.subscribe("room", rb.handler), /already subscribed: "room"/);

    // Strings go as UTF-8, bytes as they are (every byte value).
    const all = Uint8Array.from({ length: 256 }, (_, i) => i);
    await alice.publish("room", "m0");
    await alice.publish("room", "café");
    await alice.publish("room", all);
    await rb.waitFor("three publications", () => rb.pubs.room?.length === 3);
    assert.deepEqual(rb.pubs.room, ["m0", Buffer.from("café").toString("latin1"), Buffer.from(all).toString("latin1")]);

    // Refusals come back from the call that caused them, and the session
    // goes on.
    await assert.rejects(alice.publish("server:news", "x"), refused(403, `publish "server:news": server: channels are read-only for clients`));
    await assert.rejects(alice.subscribe("user:bob", ra.handler), refused(403, `subscribe "user:bob": personal channel of another subject`));
    await assert.rejects(alice.setSettings({ batchWindow: 2000 }), refused(400, "setting batch window: 2000 ms is outside 0..1000"));
    await assert.rejects(alice.subscribe("room", ra.handler, { recover: true }), refused(400, `subscribe from "room": channel keeps no history`));
    await assert.rejects(
      alice.subscribe("room", ra.handler, { since: { epoch: 0n, offset: 5 } }),
      refused(400, `subscribe from "room": bad position (epoch 0, offset 5)`),
    );
    assert.equal(alice.subscription("room"), undefined);
    await assert.rejects(alice.publish("x".repeat(32768), "x"), RangeError);
    // Requests in flight together: each gets its own answer.
    const answers = await Promise.allSettled([
      alice.publish("room", "n1"),
      alice.publish("server:x", "n"),
      alice.publish("room", "n2"),
      alice.subscribe("user:bob:inbox", ra.handler),
      alice.publish("room", "n3"),
    ]);
    assert.deepEqual(answers.map((a) => a.status), ["fulfilled", "rejected", "fulfilled", "rejected", "fulfilled"]);
    assert.equal(answers[1].reason.code, 403);
    assert.equal(answers[3].reason.text, `subscribe "user:bob:inbox": personal channel of another subject`);
    await rb.waitFor("n1..n3", () => rb.pubs.room.length === 6);
    assert.deepEqual(rb.pubs.room.slice(3), ["n1", "n2", "n3"]);
    assert.deepEqual(ra.errors, []);

    // Echo: alice sees her own publish once she asks for it.
    await alice.subscribe("echo-room", ra.handler);
    await alice.publish("echo-room", "unseen");
    await alice.setSettings({ echo: true });
    await alice.publish("echo-room", "mine");
    await ra.waitFor("the echo", () => ra.pubs["echo-room"]?.length === 1);
    assert.deepEqual(ra.pubs["echo-room"], ["mine"]);

    // Unsubscribe: nothing more arrives; a later publish on another
    // channel proves the first did not.
    await sub.unsubscribe();
    await bob.subscribe("marker", rb.handler);
    await alice.publish("room", "after");
    await alice.publish("marker", "m");
    await rb.waitFor("the marker", () => rb.pubs.marker?.length === 1);
    assert.equal(rb.pubs.room.length, 6);
    assert.equal(bob.subscription("room"), undefined);

    // Close: the state ends closed, requests reject with ClosedError.
    bob.close();
    assert.ok((await bob.wait()) instanceof ClosedError);
    await assert.rejects(bob.publish("room", "x"), ClosedError);
    assert.deepEqual(rb.states, ["connecting", "connected", "closed"]);
    assert.deepEqual(ra.states, ["connecting", "connected"]);
  } finally {
    alice.close();
    bob.close();
  }
});

test("revocation: 3004 stops the client for good, with the reason", { skip: needsGateway }, async () => {
  const [c, r] = recorded(env.ws, env.keys.carol);
  await c.connect();
  try {
    await c.subscribe("news", r.handler);
    await control("revoke-carol");
    const err = await c.wait();
    assert.ok(err instanceof CloseError, `${err}`);
    assert.deepEqual({ code: err.code, reason: err.reason }, { code: 3004, reason: "access key revoked" });
    assert.deepEqual(r.states, ["connecting", "connected", "closed(closed: 3004 access key revoked)"]);
    await assert.rejects(c.publish("news", "x"), (e) => e === err);
  } finally {
    c.close();
  }
});

test("keepalive: with pings inside the server's ping timeout (1 s here) the session outlives several", { skip: needsGateway }, async () => {
  const [c, r] = recorded(env.keepalive.ws, env.keepalive.key, { pingInterval: 200 });
  await c.connect();
  try {
    await new Promise((resolve) => setTimeout(resolve, 2500));
    assert.equal(c.state, "connected");
    assert.deepEqual(r.states, ["connecting", "connected"], "the session dropped");
  } finally {
    c.close();
  }
});

test("without a global WebSocket the constructor says what to pass", () => {
  const saved = Object.getOwnPropertyDescriptor(globalThis, "WebSocket");
  delete globalThis.WebSocket; // Node 22 has one, Node 20 not
  try {
    assert.throws(() => new GatewayClient("ws://127.0.0.1:1/api/ws", { key: "AAAA" }), /options\.WebSocket/);
  } finally {
    if (saved) Object.defineProperty(globalThis, "WebSocket", saved);
  }
  assert.throws(() => new GatewayClient("ws://127.0.0.1:1/api/ws", { key: "", WebSocket }), /key of 0 bytes/);
  assert.throws(() => new GatewayClient("ws://127.0.0.1:1/api/ws", { key: "!!", WebSocket }), /not base64/);
});
