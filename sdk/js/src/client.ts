import { decode, encode, encodeAuth, DecodeError, MAX_KEY_LEN, type ClientPacket, type Setting } from "./codec.js";
import { CloseError, ClosedError, DisconnectedError, ServerError } from "./errors.js";

/** How often the client pings when Options.pingInterval is 0 or absent: well inside the server's 30 s ping timeout. */

// STABLE_CONNECTION_MS is how long a connection must stay up (or
// maxBackoff, if shorter) for the back-off to start again from minBackoff.
const STABLE_CONNECTION_MS = 10_000;

export const DEFAULT_PING_INTERVAL = 20_000;
/** How long past a ping interval the client waits for any message before it takes the connection for dead, when Options.pongWait is 0 or absent. */
export const DEFAULT_PONG_WAIT = 10_000;
/** The bounds of the reconnect wait when Options.minBackoff and maxBackoff are 0 or absent. */
export const DEFAULT_MIN_BACKOFF = 100;
export const DEFAULT_MAX_BACKOFF = 30_000;
/** How long a connection may take from the dial to the end of authentication when Options.connectTimeout is 0 or absent. */
export const DEFAULT_CONNECT_TIMEOUT = 10_000;

/**
 * Where the client stands: "idle" before connect(); "connecting" while it
 * dials and authenticates (the first time or again); "connected" once
 * authenticated; "disconnected" while it waits to reconnect; "closed" after
 * close() or a refused key, for good.
 */
export type State = "idle" | "connecting" | "connected" | "disconnected" | "closed";

/**
 * What the client needs of a WebSocket: the browser's, or the ws package's
 * in Node. The handlers are typed as methods so that sockets whose events
 * carry more (the DOM's MessageEvent, ws's) are accepted.
 */
export interface WebSocketLike {
  binaryType: string;
  /** The client sends ArrayBuffers, which every WebSocket takes. */
  send(data: ArrayBuffer): void;
  close(code?: number, reason?: string): void;
  onmessage: Bivariant<{ data: unknown }> | null;
  onclose: Bivariant<{ code: number; reason: string }> | null;
  onerror: Bivariant<unknown> | null;
}

/** A handler type checked bivariantly, as methods are. */
type Bivariant<E> = { f(ev: E): void }["f"];

export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** Options of a GatewayClient. Durations are milliseconds. */
export interface Options {
  /** The access key as `gateway key issue` prints it (base64, either alphabet, padded or not); required. */
  key: string;
  /** The WebSocket constructor; absent means globalThis.WebSocket (browsers, Node 22+). In Node 20 pass the ws package's. */
  WebSocket?: WebSocketConstructor;
  /** The session's settings (PROTOCOL.md §6), applied after every authentication; absent means the server's defaults (no echo, no name, no batch window). */
  echo?: boolean;
  name?: string;
  batchWindow?: number;
  /** How often the client pings; 0 or absent means DEFAULT_PING_INTERVAL. */
  pingInterval?: number;
  /** How long past pingInterval the client waits for any message before it drops the connection; 0 or absent means DEFAULT_PONG_WAIT. */
  pongWait?: number;
  /** Bounds of the reconnect wait; 0 or absent means DEFAULT_MIN_BACKOFF and DEFAULT_MAX_BACKOFF. */
  minBackoff?: number;
  maxBackoff?: number;
  /** Bounds a connection's dial and authentication; 0 or absent means DEFAULT_CONNECT_TIMEOUT. */
  connectTimeout?: number;
  /** Makes a drop final (state "closed"); absent means reconnect. */
  noReconnect?: boolean;
}

/** A session's settings (PROTOCOL.md §6); batchWindow in milliseconds (0..1000). */
export interface Settings {
  echo?: boolean;
  name?: string;
  batchWindow?: number;
}

/** What a handler learns besides the payload. */
export interface PublicationInfo {
  channel: string;
  /** The publication's place in the channel's history (1, 2, ... within an epoch); 0 on a subscription without recovery. */
  offset: number;
}

export type Handler = (payload: Uint8Array, info: PublicationInfo) => void;

/** A position in a channel's history. Epochs use all of int64 (bigint); offsets count publications and stay below 2^53 (number). */
export interface Position {
  epoch: bigint;
  offset: number;
}

export interface SubscribeOptions {
  /** Subscribe with SubscribeFrom (PROTOCOL.md §5.1), on a channel that keeps history: a resubscription after a reconnect asks for everything after the last publication received. */
  recover?: boolean;
  /** The position to start from (one saved by an earlier run); implies recover. */
  since?: Position;
}

/** Tells 'subscribed' listeners that a subscription is live (again), or that its resubscription was refused. */
export interface SubscribedEvent {
  channel: string;
  /** After a reconnect, not the first subscribe. */
  resubscribed: boolean;
  /** With recovery: the position the client now has; the next publication is offset + 1. */
  epoch: bigint;
  offset: number;
  /** With recovery, whether every publication after the last position was replayed; false means some were lost: resynchronise from your own source of truth. Always true without recovery. */
  recovered: boolean;
  /** Set when a resubscription was refused; the subscription is gone. */
  error?: ServerError;
}

export interface Events {
  state: (state: State, error?: Error) => void;
  /** An Error packet that answers no request of this client. */
  error: (error: ServerError) => void;
  subscribed: (event: SubscribedEvent) => void;
}

/** One channel the client receives. */
export class Subscription {
  /** The last position received (recovery). */
  epoch = 0n;
  offset = 0;
  /** @internal Resolvers of subscribe() calls waiting for Subscribed. */
  waiting: { resolve: () => void; reject: (e: Error) => void }[] = [];
  /** @internal */
  resubscribed = false;
  /** @internal */
  constructor(
    private readonly client: GatewayClient,
    readonly channel: string,
    readonly handler: Handler,
    readonly recover: boolean,
  ) {}
  /** The last position received on a recovering subscription ({0n, 0} before any). */
  get position(): Position {
    return { epoch: this.epoch, offset: this.offset };
  }
  /** Stops the subscription (client.unsubscribe). */
  unsubscribe(): Promise<void> {
    return this.client.unsubscribe(this.channel);
  }
  /** @internal The subscribe request: with recovery, from the last position. */
  packet(): ClientPacket {
    const channel = this.channel;
    return this.recover
      ? { type: "SubscribeFrom", channel, epoch: this.epoch, offset: BigInt(this.offset) }
      : { type: "Subscribe", channel };
  }
}

/** A request awaiting the Pong of the Ping sent after it. */
interface Waiter {
  resolve: () => void;
  reject: (e: Error) => void;
  err?: ServerError;
}

/** One connection of the client. */
interface Link {
  ws: WebSocketLike;
  waiters: Waiter[];
  lastRead: number;
  /** The keepalive interval and the dead-peer check. */
  timers: ReturnType<typeof setTimeout>[];
  /** Why it ended. */
  err?: Error;
  /** Ends it for err: fails the dial, or drops the installed connection. */
  fail?: (err: Error) => void;
}

const PING: ClientPacket = { type: "Ping" };
const HELLO = "109,115"; // 6d 73, as Uint8Array.join writes it

/**
 * A session with the gateway's native protocol that survives reconnects.
 *
 * The protocol has no request ids: the client appends a Ping to every
 * request, and the server answers a message's packets in order, so an
 * Error that arrives before that Ping's Pong is the request's refusal (a
 * ServerError) and the Pong says it was accepted.
 */
export class GatewayClient {
  private readonly key: Uint8Array;
  private readonly WS: WebSocketConstructor;
  private readonly o: Required<Omit<Options, "WebSocket" | "key" | "echo" | "name" | "batchWindow">>;
  private settings: Settings;
  private st: State = "idle";
  private link?: Link;
  private subs = new Map<string, Subscription>();
  private listeners: { [K in keyof Events]?: Events[K][] } = {};
  private attempt = 0;
  private upSince = Date.now(); // when the current connection was made
  private retryTimer?: ReturnType<typeof setTimeout>;
  private abortDial?: (e: Error) => void;
  private closeErr?: Error;
  private whenClosed: Promise<Error>;
  private closed!: (e: Error) => void;

  constructor(
    readonly url: string,
    options: Options,
  ) {
    this.key = decodeKey(options.key);
    const WS = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!WS) throw new TypeError("no global WebSocket: pass one as options.WebSocket (the ws package in Node 20)");
    this.WS = WS;
    const minBackoff = options.minBackoff || DEFAULT_MIN_BACKOFF;
    this.o = {
      pingInterval: options.pingInterval || DEFAULT_PING_INTERVAL,
      pongWait: options.pongWait || DEFAULT_PONG_WAIT,
      minBackoff,
      maxBackoff: Math.max(options.maxBackoff || DEFAULT_MAX_BACKOFF, minBackoff),
      connectTimeout: options.connectTimeout || DEFAULT_CONNECT_TIMEOUT,
      noReconnect: !!options.noReconnect,
    };
    this.settings = { echo: options.echo, name: options.name, batchWindow: options.batchWindow };
    this.whenClosed = new Promise((resolve) => (this.closed = resolve));
  }

  /** The client's state now. */
  get state(): State {
    return this.st;
  }

  /** Adds a listener; returns a function that removes it. Listeners run in the order the server sent what they report. */
  on<K extends keyof Events>(event: K, fn: Events[K]): () => void {
    const list = (this.listeners[event] ??= []) as Events[K][];
    list.push(fn);
    return () => list.splice(list.indexOf(fn) >>> 0, 1);
  }

  /**
   * Connects and authenticates: resolves once the server's first Pong
   * arrived (and the settings were applied), or rejects with why not (a
   * CloseError carries the server's close code and reason, e.g. 3001 for
   * a refused key; the client is then closed). From then on the client
   * keeps the session up until close().
   */
  async connect(): Promise<void> {
    if (this.st !== "idle") throw new Error("connect: already called");
    this.setState("connecting");
    try {
      await this.dial();
    } catch (e) {
      this.finish(e as Error);
      throw e;
    }
  }

  /** Resolves when the client is closed for good, with why: a ClosedError after close(), a CloseError for a refused key. */
  wait(): Promise<Error> {
    return this.whenClosed;
  }

  /** Ends the session with 1000 and stops reconnecting; later requests reject with a ClosedError. */
  close(): void {
    if (this.st === "closed") return;
    const err = new ClosedError();
    this.abortDial?.(err);
    if (this.link) this.unlink(this.link, err);
    this.finish(err);
  }

  /** Publishes payload (a string is sent as UTF-8) on channel; resolves once the server took it, rejects with its refusal (ServerError 403, 503, ...). */
  publish(channel: string, payload: Uint8Array | string): Promise<void> {
    if (typeof payload === "string") payload = new TextEncoder().encode(payload);
    return this.request({ type: "Publish", channel, payload });
  }

  /** Applies settings now and after every reconnect (all three: absent ones go back to the defaults). On a refusal (ServerError 400) nothing changes. */
  async setSettings(s: Settings): Promise<void> {
    await this.request(settingsPacket(s));
    this.settings = { ...s };
  }

  /**
   * Subscribes to channel and resolves once the subscription is live
   * (Subscribed, or SubscribedFrom with recovery), or rejects with the
   * server's refusal (ServerError). handler receives the channel's
   * publications; a handler that throws does not stop the client (the
   * exception is rethrown outside it).
   */
  async subscribe(channel: string, handler: Handler, opts: SubscribeOptions = {}): Promise<Subscription> {
    if (this.subs.has(channel)) throw new Error(`already subscribed: ${JSON.stringify(channel)}`);
    const s = new Subscription(this, channel, handler, !!(opts.recover || opts.since));
    if (opts.since) {
      s.epoch = BigInt(opts.since.epoch);
      s.offset = opts.since.offset;
    }
    const live = new Promise<void>((resolve, reject) => s.waiting.push({ resolve, reject }));
    live.catch(() => {}); // a refusal below rejects the call instead
    this.subs.set(channel, s);
    try {
      await this.request(s.packet());
    } catch (e) {
      this.forget(s, e as Error);
      throw e;
    }
    await live;
    return s;
  }

  /** Stops receiving channel: nothing of it is delivered after this call. */
  async unsubscribe(channel: string): Promise<void> {
    const s = this.subs.get(channel);
    if (s) this.forget(s, new Error(`unsubscribed: ${JSON.stringify(channel)}`));
    try {
      await this.request({ type: "Unsubscribe", channel });
    } catch (e) {
      // Disconnected: the next connection will not subscribe it.
      if (!(e instanceof DisconnectedError)) throw e;
    }
  }

  /** The subscription of channel, if any. */
  subscription(channel: string): Subscription | undefined {
    return this.subs.get(channel);
  }

  // request sends p with a Ping after it and waits for the answer.
  private request(p: ClientPacket): Promise<void> {
    const l = this.link;
    if (!l) return Promise.reject(this.st === "closed" ? this.closeErr : new DisconnectedError());
    let msg;
    try {
      msg = encode([p, PING]); // a string over 32767 bytes throws
    } catch (e) {
      return Promise.reject(e);
    }
    return send(l, msg);
  }

  // dial connects, authenticates and applies the settings, then installs
  // the connection. It rejects with why it failed.
  private dial(): Promise<void> {
    return new Promise((resolve, reject) => {
      let ws: WebSocketLike;
      try {
        ws = new this.WS(this.url);
      } catch (e) {
        return reject(e);
      }
      ws.binaryType = "arraybuffer";
      const l: Link = { ws, waiters: [], lastRead: 0, timers: [] };
      let step = 0; // 0: hello awaited; 1: auth Pong; 2: settings; 3: installed
      const fail = (err: Error, gone = false) => {
        if (step > 2) return;
        step = 4;
        this.abortDial = undefined;
        clearTimeout(timer);
        detach(l, err, gone);
        reject(err);
      };
      const done = () => {
        if (step > 2) return;
        step = 3;
        this.abortDial = undefined;
        clearTimeout(timer);
        this.install(l);
        resolve();
      };
      this.abortDial = fail;
      l.fail = (err) => (step < 3 ? fail(err) : this.drop(l, err));
      const timer = setTimeout(
        () => fail(new CloseError(1006, `no authentication within ${this.o.connectTimeout} ms`)),
        this.o.connectTimeout,
      );
      ws.onerror = () => {}; // onclose follows with the code
      ws.onclose = (ev) => {
        const err = new CloseError(ev.code, ev.reason);
        if (step < 3) fail(err, true);
        else this.drop(l, err, true);
      };
      ws.onmessage = (ev) => {
        l.lastRead = Date.now();
        if (typeof ev.data === "string") return l.fail!(new Error("the server sent a text message"));
        const msg = new Uint8Array(ev.data as ArrayBuffer);
        if (step === 0) {
          if (msg.join() !== HELLO) return fail(new Error(`not the native protocol: hello ${hex(msg)}`));
          step = 1;
          ws.send(whole(encodeAuth(this.key)));
        } else if (step === 1) {
          let first;
          try {
            first = decode(msg)[0];
          } catch {}
          if (first?.type !== "Pong") return fail(new Error(`expected the Pong of authentication, got ${hex(msg)}`));
          step = 2;
          const s = this.settings;
          if (!s.echo && !s.name && !s.batchWindow) return done();
          send(l, encode([settingsPacket(s), PING])).then(done, (e) => fail(e instanceof ServerError ? e : l.err ?? e));
        } else this.handle(l, msg);
      };
    });
  }

  // install makes l the client's connection: state connected, keepalive
  // pings and the dead-peer check.
  private install(l: Link) {
    this.link = l;
    this.setState("connected");
    const { pingInterval, pongWait } = this.o;
    l.timers[0] = setInterval(() => send(l, encode([PING])).catch(() => {}), pingInterval);
    const check = () => {
      const silent = Date.now() - l.lastRead;
      if (silent >= pingInterval + pongWait) {
        this.drop(l, new CloseError(1006, `nothing from the server for ${silent} ms`));
      } else l.timers[1] = setTimeout(check, pingInterval + pongWait - silent);
    };
    check();
  }

  // handle runs the packets of one message from the server.
  private handle(l: Link, msg: Uint8Array) {
    let packets;
    try {
      packets = decode(msg);
    } catch (e) {
      const d = e as DecodeError;
      return l.fail!(new Error(`bad message from the server: ${d.message} at byte ${d.offset}`));
    }
    for (const p of packets) {
      if (l.err) return; // dropped or closed by a handler
      switch (p.type) {
        case "Pong":
          this.answered(l);
          break;
        case "Error":
          this.answered(l, new ServerError(p.code, p.text));
          break;
        case "Message":
          this.deliver(p.channel, p.payload, 0);
          break;
        case "Publication":
          this.deliver(p.channel, p.payload, Number(p.offset));
          break;
        case "Subscribed":
          this.subscribed(p.channel, false, 0n, 0, false);
          break;
        case "SubscribedFrom":
          this.subscribed(p.channel, true, p.epoch, Number(p.offset), p.recovered === 1);
      }
    }
  }

  // answered records a Pong (no se) or an Error for the oldest request
  // waiting: an Error marks it refused, its Pong then settles it. An Error
  // with no request waiting, or after the request's own Error, goes to the
  // 'error' listeners.
  private answered(l: Link, se?: ServerError) {
    const w = l.waiters[0];
    if (!w || (se && w.err)) {
      if (se) this.emit("error", se);
    } else if (se) w.err = se;
    else {
      l.waiters.shift();
      if (w.err) w.reject(w.err);
      else w.resolve();
    }
  }

  private deliver(channel: string, payload: Uint8Array, offset: number) {
    const s = this.subs.get(channel);
    if (!s) return;
    if (offset > 0) {
      // Had already: offsets only rise after a SubscribedFrom, so this is a
      // second replay of the same publications (a subscribe and a
      // reconnect's resubscribe both sent the subscription).
      if (offset <= s.offset) return;
      s.offset = offset;
    }
    call(s.handler, payload, { channel, offset });
  }

  private subscribed(channel: string, from: boolean, epoch: bigint, offset: number, recovered: boolean) {
    const s = this.subs.get(channel);
    if (!s) return;
    if (from) {
      s.epoch = epoch;
      s.offset = offset;
    }
    for (const w of s.waiting.splice(0)) w.resolve();
    this.emit("subscribed", { channel, resubscribed: s.resubscribed, epoch, offset, recovered: recovered || !from });
  }

  private forget(s: Subscription, why: Error) {
    if (this.subs.get(s.channel) === s) this.subs.delete(s.channel);
    for (const w of s.waiting.splice(0)) w.reject(why);
  }

  // unlink detaches l from the client and fails its requests.
  private unlink(l: Link, err: Error, gone = false) {
    if (this.link === l) this.link = undefined;
    detach(l, err, gone);
  }

  // drop ends the installed connection l for err (gone: the socket is
  // already closed) and reconnects, unless err says not to.
  private drop(l: Link, err: Error, gone = false) {
    if (this.link !== l) return;
    // A connection that stayed up starts the back-off small again; one the
    // server dropped at once (1013, a slow consumer) counts as a failed
    // attempt, so a server shedding load is not redialled every minBackoff.
    if (Date.now() - this.upSince >= Math.min(this.o.maxBackoff, STABLE_CONNECTION_MS)) this.attempt = 0;
    this.unlink(l, err, gone);
    if (this.o.noReconnect || (err instanceof CloseError && err.permanent)) return this.finish(err);
    this.setState("disconnected", err);
    this.retry();
  }

  // retry dials again after a random wait up to
  // min(maxBackoff, minBackoff·2^attempt) (full jitter), then resubscribes
  // every subscription.
  private retry() {
    const { minBackoff, maxBackoff } = this.o;
    const ceiling = Math.min(maxBackoff, minBackoff * 2 ** Math.min(this.attempt++, 30));
    this.retryTimer = setTimeout(
      async () => {
        this.setState("connecting");
        try {
          await this.dial();
        } catch (e) {
          if (this.st === "closed") return;
          const err = e as Error;
          if (err instanceof CloseError && err.permanent) return this.finish(err);
          this.setState("disconnected", err);
          return this.retry();
        }
        this.upSince = Date.now();
        for (const s of this.subs.values()) {
          s.resubscribed = true;
          this.request(s.packet()).catch((e) => {
            if (!(e instanceof ServerError)) return; // dropped again: the next connection resubscribes
            this.forget(s, e);
            this.emit("subscribed", { channel: s.channel, resubscribed: true, epoch: 0n, offset: 0, recovered: false, error: e });
          });
        }
      },
      Math.random() * ceiling + 1,
    );
  }

  // finish makes the client closed for err, for good.
  private finish(err: Error) {
    if (this.st === "closed") return;
    clearTimeout(this.retryTimer);
    this.closeErr ??= err;
    for (const s of this.subs.values()) for (const w of s.waiting.splice(0)) w.reject(this.closeErr);
    this.setState("closed", this.closeErr instanceof ClosedError ? undefined : this.closeErr);
    this.closed(this.closeErr);
  }

  private setState(s: State, err?: Error) {
    if (this.st === s || this.st === "closed") return;
    this.st = s;
    this.emit("state", s, err);
  }

  private emit<K extends keyof Events>(event: K, ...args: Parameters<Events[K]>) {
    for (const fn of this.listeners[event] ?? []) call(fn as (...a: unknown[]) => void, ...args);
  }
}

// send writes msg on l and registers the waiter its trailing Ping's Pong
// will settle.
function send(l: Link, msg: Uint8Array): Promise<void> {
  return new Promise((resolve, reject) => {
    l.waiters.push({ resolve, reject });
    try {
      l.ws.send(whole(msg));
    } catch (e) {
      l.ws.close(); // onclose fails the waiters
    }
  });
}

// whole is msg as an ArrayBuffer of its own (encode and encodeAuth
// return messages that own their buffer, so no copy is made).
function whole(msg: Uint8Array): ArrayBuffer {
  return (msg.byteLength === msg.buffer.byteLength ? msg : msg.slice()).buffer as ArrayBuffer;
}

// detach silences l's socket and closes it unless gone (1000 after
// close(), at once otherwise: a dead peer answers no close frame), stops
// its timers and fails its requests: with their Error if one arrived,
// else with a DisconnectedError (a ClosedError after close()).
function detach(l: Link, err: Error, gone: boolean) {
  l.err = err;
  const ws = l.ws as WebSocketLike & { terminate?: () => void };
  ws.onmessage = ws.onclose = null;
  l.timers.forEach(clearTimeout);
  const bye = err instanceof ClosedError;
  if (!gone) {
    if (bye) ws.close(1000, "bye");
    else if (ws.terminate) ws.terminate();
    else ws.close();
  }
  const fallback = bye ? err : new DisconnectedError();
  for (const w of l.waiters.splice(0)) w.reject(w.err ?? fallback);
}

// call runs a listener or handler; what it throws is rethrown outside the
// client, so one bad callback cannot break the session.
function call<A extends unknown[]>(fn: (...a: A) => void, ...args: A) {
  try {
    fn(...args);
  } catch (e) {
    setTimeout(() => {
      throw e;
    });
  }
}

function settingsPacket(s: Settings): ClientPacket {
  const settings: Setting[] = [
    { id: "echo", value: s.echo ? 1 : 0 },
    { id: "client_name", value: s.name ?? "" },
    { id: "batch_window", value: s.batchWindow ?? 0 },
  ];
  return { type: "Settings", settings };
}

function hex(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join(" ");
}

// decodeKey decodes a key's text form: base64, URL or standard alphabet,
// padded or not.
function decodeKey(text: string): Uint8Array {
  let bin: string;
  try {
    bin = atob(text.trim().replace(/-/g, "+").replace(/_/g, "/").replace(/=+$/, ""));
  } catch {
    throw new TypeError("key: not base64");
  }
  if (!bin.length || bin.length > MAX_KEY_LEN) throw new TypeError(`key of ${bin.length} bytes, want 1..${MAX_KEY_LEN}`);
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}
