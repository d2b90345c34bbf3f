// Helpers of the integration tests: the gateway the Go test started
// (test/sdkjs_e2e_test.go passes it in SDKJS_E2E), clients that record
// what they report, and waiting for a condition.
import WebSocket from "ws";
import { GatewayClient } from "../dist/index.js";

/** What the Go test passed, or undefined when run without it. */
export const env = process.env.SDKJS_E2E ? JSON.parse(process.env.SDKJS_E2E) : undefined;
/** The skip option of a test that needs the Go test's gateway. */
export const needsGateway = env ? false : "needs a gateway: run through test/sdkjs_e2e_test.go (go test -run SDKJS ./test/)";

/** A client with a recorder: its states, publications per channel, subscribed events and unsolicited errors. */
export function recorded(url, key, opts = {}) {
  const c = new GatewayClient(url, { key, WebSocket, minBackoff: 20, maxBackoff: 200, ...opts });
  const r = { states: [], pubs: {}, subscribed: [], errors: [], pokes: new Set() };
  const poke = () => r.pokes.forEach((fn) => fn());
  c.on("state", (s, err) => (r.states.push(err ? `${s}(${err.message})` : s), poke()));
  c.on("subscribed", (ev) => (r.subscribed.push(ev), poke()));
  c.on("error", (e) => (r.errors.push(e), poke()));
  r.handler = (payload, info) => {
    (r.pubs[info.channel] ??= []).push(Buffer.from(payload).toString("latin1"));
    poke();
  };
  r.waitFor = (what, cond, ms = 5000) =>
    new Promise((resolve, reject) => {
      const check = () => {
        if (!cond()) return;
        done();
        resolve();
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`waiting for ${what}: states ${JSON.stringify(r.states)}, publications ${JSON.stringify(r.pubs)}, subscribed ${JSON.stringify(r.subscribed, big)}`));
      }, ms);
      // Conditions on what the client does not report are polled too.
      const poll = setInterval(check, 20);
      const done = () => (clearTimeout(timer), clearInterval(poll), r.pokes.delete(check));
      r.pokes.add(check);
      check();
    });
  return [c, r];
}

function big(_k, v) {
  return typeof v === "bigint" ? `${v}n` : v;
}

/** Asks the Go test to act (revoke a key, restart the gateway process). */
export async function control(action) {
  const resp = await fetch(`${env.control}/${action}`, { method: "POST" });
  const body = await resp.text();
  if (resp.status !== 200) throw new Error(`control ${action}: ${resp.status} ${body}`);
  return body;
}
