// Recovery (PROTOCOL.md §5.1) against real gateway processes on Redis
// (started by test/sdkjs_e2e_test.go): the client's gateway is killed with
// -9, another node publishes while it is down, and it is restarted on the
// same addresses. The client reconnects by itself, resubscribes from its
// last position and is replayed exactly what it missed, before the
// SubscribedFrom that says recovered, in the same epoch.
import { test } from "node:test";
import assert from "node:assert/strict";
import { env, needsGateway, recorded, control } from "./helpers.mjs";

test("recover: publications missed while the gateway was down are replayed, recovered true", { skip: needsGateway }, async () => {
  const ch = "h:ts";
  const [c, r] = recorded(env.history.ws, env.history.key);
  const got = []; // "offset:payload", in the order the handler saw them
  const seenAtSubscribed = []; // how many publications the handler had at each subscribed event
  c.on("subscribed", () => seenAtSubscribed.push(got.length));
  await c.connect();
  try {
    const handler = (payload, info) => {
      got.push(`${info.offset}:${Buffer.from(payload).toString()}`);
      r.handler(payload, info);
    };
    const sub = await c.subscribe(ch, handler, { recover: true });
    await r.waitFor("subscribed", () => r.subscribed.length === 1);
    const epoch = r.subscribed[0].epoch;
    assert.notEqual(epoch, 0n);
    assert.deepEqual(r.subscribed[0], { channel: ch, resubscribed: false, epoch, offset: 0, recovered: true });
    // A session receives its own publications on a recovering subscription.
    await c.publish(ch, "1");
    await r.waitFor("the first publication", () => got.length === 1);
    assert.deepEqual({ epoch: sub.epoch, offset: sub.offset }, { epoch, offset: 1 });

    const states = r.states.length;
    const answer = await control("history-kill");
    for (const [i, a] of answer.split(" ").entries()) {
      assert.deepEqual(JSON.parse(a), { channel: ch, bytes: 1, epoch: epoch.toString(), offset: i + 2 });
    }
    await r.waitFor("resubscribed", () => r.subscribed.length === 2, 10000);
    assert.match(r.states[states], /^disconnected\(closed: 1006/);
    assert.deepEqual(r.subscribed[1], { channel: ch, resubscribed: true, epoch, offset: 4, recovered: true });
    // The replay came before the SubscribedFrom that ends it.
    assert.deepEqual(seenAtSubscribed, [0, 4]);
    assert.deepEqual(got, ["1:1", "2:2", "3:3", "4:4"]);

    await c.publish(ch, "5");
    await r.waitFor("the publication after the recovery", () => got.length === 5);
    assert.deepEqual(got, ["1:1", "2:2", "3:3", "4:4", "5:5"]);
    assert.deepEqual({ epoch: sub.epoch, offset: sub.offset }, { epoch, offset: 5 });
  } finally {
    c.close();
  }
});
