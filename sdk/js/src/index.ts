/**
 * @wsgateway/client: the client of the wsgateway native protocol
 * (PROTOCOL.md) for browsers and Node.js 20+.
 *
 *     const c = new GatewayClient("wss://host/api/ws", { key });
 *     await c.connect();
 *     await c.subscribe("room", (payload, info) => { ... });
 *     await c.publish("room", "hello");
 *     c.close();
 */
export {
  GatewayClient,
  Subscription,
  DEFAULT_CONNECT_TIMEOUT,
  DEFAULT_MAX_BACKOFF,
  DEFAULT_MIN_BACKOFF,
  DEFAULT_PING_INTERVAL,
  DEFAULT_PONG_WAIT,
} from "./client.js";
export type {
  Events,
  Handler,
  Options,
  Position,
  PublicationInfo,
  Settings,
  State,
  SubscribeOptions,
  SubscribedEvent,
  WebSocketConstructor,
  WebSocketLike,
} from "./client.js";
export { CloseError, ClosedError, DisconnectedError, ServerError } from "./errors.js";
export { decode, encode, encodeAuth, parseAuth, DecodeError, HELLO, MAX_KEY_LEN, MAX_STRING_LEN, VERSION } from "./codec.js";
export type { ClientPacket, Packet, ServerPacket, Setting } from "./codec.js";
