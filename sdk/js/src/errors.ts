/**
 * A close the server (or the transport) reported: its WebSocket close code
 * and reason (PROTOCOL.md §8). 1006 is a connection that ended without a
 * close frame (refused, reset, or dropped by the client's dead-peer check).
 */
export class CloseError extends Error {
  constructor(readonly code: number, readonly reason: string) {
    super(`closed: ${code} ${reason}`.trim());
    this.name = "CloseError";
  }
  /**
   * Whether the code says not to reconnect with the same key: 3001
   * unauthorized, 3002 version mismatch, 3004 revoked.
   */
  get permanent(): boolean {
    return this.code === 3001 || this.code === 3002 || this.code === 3004;
  }
}

/** An Error packet: the server refused a request (PROTOCOL.md §7). */
export class ServerError extends Error {
  constructor(readonly code: number, readonly text: string) {
    super(`refused: ${code} ${text}`);
    this.name = "ServerError";
  }
}

/**
 * A request made while the client has no connection (it is reconnecting),
 * or whose connection dropped before the server answered: a publish may
 * then have been delivered or not. Requests are not queued.
 */
export class DisconnectedError extends Error {
  constructor() {
    super("disconnected");
    this.name = "DisconnectedError";
  }
}

/** A request after close(). */
export class ClosedError extends Error {
  constructor() {
    super("closed");
    this.name = "ClosedError";
  }
}
