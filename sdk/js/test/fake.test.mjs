// The client against a scripted server (the ws package's server speaking
// the protocol through this package's own codec): what only a server that
// misbehaves on purpose can show: keepalive pings, dead-peer detection,
// the settings sent after every authentication, and recovery positions
// carried across a reconnect (the real gateway keeps no history yet).
import { test } from "node:test";
import assert from "node:assert/strict";
import WebSocket, { WebSocketServer } from "ws";
import { decode, encode, HELLO, DisconnectedError } from "../dist/index.js";
import { recorded } from "./helpers.mjs";

// fakeGateway accepts connections, sends the hello, answers the auth
// message with a Pong and every Ping with a Pong while not silent, and
// hands every other packet to onPacket(packet, reply, ws).
async function fakeGateway(onPacket = () => {}) {
  const wss = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  await new Promise((r) => wss.once("listening", r));
  const g = { url: `ws://127.0.0.1:${wss.address().port}/api/ws`, silent: false, auths: [], pings: 0, conns: [], wss };
  wss.on("connection", (ws) => {
    g.conns.push(ws);
    const reply = (...packets) => ws.send(encode(packets));
    ws.send(HELLO);
    let authed = false;
    ws.on("message", (data) => {
      const msg = new Uint8Array(data);
      if (!authed) {
        authed = true;
        g.auths.push(Buffer.from(msg).toString("hex"));
        const refusal = g.refuseAuth?.(g.auths.length); // [code, reason] closes instead
        if (refusal) return ws.close(...refusal);
        reply({ type: "Pong", millis: BigInt(Date.now()) });
        const drop = g.dropAfterAuth?.(g.auths.length); // [code, reason] closes right after
        if (drop) setTimeout(() => ws.close(...drop), 5);
        return;
      }
      for (const p of decode(msg, true)) {
        if (p.type !== "Ping") onPacket(p, reply, ws);
        else if (!g.silent) (g.pings++, reply({ type: "Pong", millis: 1n }));
      }
    });
  });
  g.close = () => new Promise((r) => (g.conns.forEach((c) => c.terminate()), wss.close(r)));
  return g;
}

test("keepalive pings; a silent server is dropped and the client reconnects", async () => {
  const settings = [];
  const g = await fakeGateway((p) => settings.push(p));
  const [c, r] = recorded(g.url, "a2V5", { pingInterval: 50, pongWait: 100, name: "n" });
  try {
    await c.connect();
    assert.deepEqual(g.auths, ["b6c400036b6579"]); // magic, version 0, "key"
    await r.waitFor("three keepalive pings", () => g.pings >= 3);
    g.silent = true; // answers nothing, closes nothing
    await r.waitFor("the drop", () => r.states.length >= 3);
    assert.match(r.states[2], /^disconnected\(closed: 1006 nothing from the server for \d+ ms\)$/);
    g.silent = false;
    await r.waitFor("the reconnect", () => r.states.at(-1) === "connected");
    assert.deepEqual(r.states.slice(3), ["connecting", "connected"]);
    // The settings went with each authentication.
    assert.equal(g.auths.length, 2);
    const want = { type: "Settings", settings: [{ id: "echo", value: 0 }, { id: "client_name", value: "n" }, { id: "batch_window", value: 0 }] };
    assert.deepEqual(settings, [want, want]);
  } finally {
    c.close();
    await g.close();
  }
});

test("recovery: publications move the position; a reconnect resubscribes from it and reports what was recovered", async () => {
  const subs = [];
  const g = await fakeGateway((p, reply) => {
    if (p.type !== "SubscribeFrom") return;
    subs.push(`${p.channel} ${p.epoch} ${p.offset}`);
    if (subs.length === 1) {
      reply({ type: "SubscribedFrom", channel: p.channel, epoch: 1n << 62n, offset: 7n, recovered: 1 });
      reply({ type: "Publication", channel: p.channel, offset: 8n, payload: Buffer.from("p8") });
      reply({ type: "Publication", channel: p.channel, offset: 9n, payload: Buffer.from("p9") });
    } else {
      reply({ type: "SubscribedFrom", channel: p.channel, epoch: 1n << 62n, offset: 12n, recovered: 0 });
    }
  });
  const [c, r] = recorded(g.url, "a2V5");
  try {
    await c.connect();
    const offsets = [];
    const sub = await c.subscribe("h", (payload, info) => (offsets.push(info.offset), r.handler(payload, info)), {
      since: { epoch: 5n, offset: 3 },
    });
    await r.waitFor("two publications", () => r.pubs.h?.length === 2);
    assert.deepEqual(offsets, [8, 9]);
    assert.deepEqual(sub.position, { epoch: 1n << 62n, offset: 9 });
    g.conns[0].close(1013, "try again later");
    await r.waitFor("the resubscription", () => r.subscribed.length === 2);
    assert.deepEqual(subs, ["h 5 3", `h ${1n << 62n} 9`]);
    assert.deepEqual(r.subscribed, [
      { channel: "h", resubscribed: false, epoch: 1n << 62n, offset: 7, recovered: true },
      { channel: "h", resubscribed: true, epoch: 1n << 62n, offset: 12, recovered: false },
    ]);
    assert.deepEqual(r.states, ["connecting", "connected", "disconnected(closed: 1013 try again later)", "connecting", "connected"]);
  } finally {
    c.close();
    await g.close();
  }
});

test("a refused resubscription is reported and the subscription is gone", async () => {
  let n = 0;
  const g = await fakeGateway((p, reply) => {
    if (p.type !== "Subscribe") return;
    if (n++ === 0) reply({ type: "Subscribed", channel: p.channel });
    else reply({ type: "Error", code: 403, text: "no more" });
  });
  const [c, r] = recorded(g.url, "a2V5");
  try {
    await c.connect();
    await c.subscribe("x", r.handler);
    g.conns[0].close(1001, "going away");
    await r.waitFor("the refused resubscription", () => r.subscribed.length === 2);
    assert.equal(r.subscribed[1].error.code, 403);
    assert.equal(r.subscribed[1].resubscribed, true);
    assert.equal(c.subscription("x"), undefined);
  } finally {
    c.close();
    await g.close();
  }
});

test("a malformed message from the server drops the connection; the client reconnects", async () => {
  const g = await fakeGateway((p, reply, ws) => {
    if (p.type === "Subscribe") ws.send(Uint8Array.from([0x03, 0x00, 0x01, 0x63, 0x07])); // Subscribed("c"), then id 07
  });
  const [c, r] = recorded(g.url, "a2V5");
  try {
    await c.connect();
    await assert.rejects(c.subscribe("c", r.handler), DisconnectedError);
    await r.waitFor("the reconnect", () => r.states.length === 5);
    assert.deepEqual(r.states, [
      "connecting", "connected", "disconnected(bad message from the server: unknown packet id at byte 4)", "connecting", "connected",
    ]);
  } finally {
    c.close();
    await g.close();
  }
});

test("a request whose connection drops before its answer rejects with DisconnectedError, as do requests while disconnected", async () => {
  const g = await fakeGateway((p, reply, ws) => {
    if (p.type === "Publish") ws.terminate(); // before the Ping after it is answered
  });
  const [c, r] = recorded(g.url, "a2V5", { minBackoff: 300, maxBackoff: 300 });
  try {
    await c.connect();
    await assert.rejects(c.publish("x", "lost?"), DisconnectedError);
    assert.equal(c.state, "disconnected");
    await assert.rejects(c.publish("x", "now"), DisconnectedError);
    await r.waitFor("the reconnect", () => c.state === "connected");
  } finally {
    c.close();
    await g.close();
  }
});

test("3001 mid-session (an expired key) stops the client; 1013 at a reconnect's authentication is retried", async () => {
  const g = await fakeGateway();
  // The second authentication is refused with 1013, the third accepted.
  g.refuseAuth = (n) => n === 2 && [1013, "revocations not loaded yet; try again later"];
  const [c, r] = recorded(g.url, "a2V5");
  try {
    await c.connect();
    g.conns[0].close(1001, "going away");
    await r.waitFor("the third connection", () => g.conns.length === 3 && c.state === "connected");
    g.conns[2].close(3001, "access key expired");
    const err = await c.wait();
    assert.equal(err.code, 3001);
    assert.deepEqual(r.states, [
      "connecting", "connected",
      "disconnected(closed: 1001 going away)", "connecting",
      "disconnected(closed: 1013 revocations not loaded yet; try again later)", "connecting", "connected",
      "closed(closed: 3001 access key expired)",
    ]);
  } finally {
    c.close();
    await g.close();
  }
});

test("a server that drops every connection at once is redialled with a growing back-off", async () => {
  // Every connection after the first is accepted, then closed with 1013
  // at once: each counts as a failed attempt, so in one second the client
  // makes a handful of attempts (20 ms doubling up to 1 s), not one every
  // minBackoff.
  const g = await fakeGateway();
  g.dropAfterAuth = (n) => n > 1 && [1013, "try again later"];
  const [c] = recorded(g.url, "a2V5", { minBackoff: 20, maxBackoff: 1000 });
  try {
    await c.connect();
    g.conns[0].close(1013, "try again later");
    await new Promise((r) => setTimeout(r, 1000));
    assert.ok(g.auths.length <= 12, `${g.auths.length} authentications in one second`);
    assert.ok(g.auths.length >= 3, `${g.auths.length} authentications in one second`);
  } finally {
    c.close();
    await g.close();
  }
});
