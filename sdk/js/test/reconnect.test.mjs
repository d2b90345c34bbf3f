// Reconnects against a real gateway process (started by
// test/sdkjs_e2e_test.go on fixed addresses): killed with -9, then
// stopped with SIGTERM (1001), each time restarted by the Go test when
// asked through its control endpoint. The client reconnects by itself,
// resubscribes and receives what is published after.
import { test } from "node:test";
import assert from "node:assert/strict";
import { DisconnectedError } from "../dist/index.js";
import { env, needsGateway, recorded, control } from "./helpers.mjs";

test("reconnect after kill -9 and after SIGTERM, resubscribed", { skip: needsGateway }, async () => {
  const [c, r] = recorded(env.proc.ws, env.proc.keys.dave);
  await c.connect();
  try {
    await c.subscribe("live", r.handler);
    for (const [round, how] of ["kill", "term"].entries()) {
      const states = r.states.length;
      const restarted = control(`restart-${how}`);
      await r.waitFor("disconnected", () => r.states.length > states);
      // While disconnected requests fail at once; they are not queued.
      if (c.state !== "connected") await assert.rejects(c.publish("live", "lost"), DisconnectedError);
      await restarted;
      await r.waitFor("resubscribed", () => r.subscribed.length === round + 2);
      assert.deepEqual(r.subscribed[round + 1], { channel: "live", resubscribed: true, epoch: 0n, offset: 0, recovered: true });
      const [pub] = recorded(env.proc.ws, env.proc.keys.erin);
      await pub.connect();
      await pub.publish("live", `after restart ${round}`);
      pub.close();
      await r.waitFor("the publish after the restart", () => r.pubs.live?.length === round + 1);
    }
    assert.deepEqual(r.pubs.live, ["after restart 0", "after restart 1"]);
    assert.equal(c.state, "connected");
    // kill -9 ends the connection without a close frame (1006); SIGTERM
    // closes it with 1001.
    const drops = r.states.filter((s) => s.startsWith("disconnected("));
    assert.match(drops[0], /^disconnected\(closed: 1006/);
    assert.ok(drops.some((s) => s.startsWith("disconnected(closed: 1001")), `no 1001 among ${drops}`);
  } finally {
    c.close();
  }
});
