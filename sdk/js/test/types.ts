// Compiled (not run) by `npm run build`: the published declarations
// (dist/*.d.ts) fit the ways an application uses the package, with the
// browser's WebSocket and with the ws package's in Node.
import WebSocket from "ws";
import {
  GatewayClient, CloseError, ServerError, decode, encode,
  type Options, type Position, type PublicationInfo, type State, type SubscribedEvent,
} from "../dist/index.js";

export async function app(url: string, key: string): Promise<Position> {
  const node = new GatewayClient(url, { key, WebSocket, pingInterval: 5_000 });
  const browser = new GatewayClient(url, { key, WebSocket: globalThis.WebSocket, echo: true, name: "n", batchWindow: 10 });
  const off = node.on("state", (s: State, err?: Error) => void [s, err]);
  off();
  node.on("subscribed", (ev: SubscribedEvent) => void [ev.channel, ev.recovered, ev.epoch + 1n, ev.offset + 1, ev.error?.code]);
  node.on("error", (e: ServerError) => void e.text);
  try {
    await node.connect();
  } catch (e) {
    if (e instanceof CloseError && e.permanent) throw e;
  }
  const sub = await node.subscribe("room", (payload: Uint8Array, info: PublicationInfo) => void [payload[0], info.offset], {
    since: { epoch: 1n, offset: 2 },
  });
  await node.publish("room", "text");
  await node.publish("room", new Uint8Array([1]));
  await node.setSettings({ echo: true });
  await sub.unsubscribe();
  const [p] = decode(encode([{ type: "Ping" }]), true);
  void p.type;
  const o: Options = { key };
  void o;
  browser.close();
  return sub.position;
}
