// Types for velocity-client, the reference Node.js client of the Velocity key-value database.

/// <reference types="node" />

/** A value of a result set: bytes, an integer (bigint beyond 2^53) or SQL NULL. */
export type Value = Buffer | number | bigint | null;
/** A statement parameter, quoted so that it cannot change the statement. */
export type Param = string | Uint8Array | number | bigint | null | undefined;
/** A key or value for the helpers (insertIfAbsent, cas, incr): text (UTF-8) or bytes. */
export type Bytes = string | Uint8Array;

export interface ServerInfo {
  version: number;
  server: string;
  fingerprint: Buffer;
  /** `SHA256:<base64>`, as `velocityd fingerprint` prints it. */
  fingerprintText: string;
  authSalt: Buffer;
  argon2MKib: number;
  argon2T: number;
  argon2P: number;
  maxPayload: number;
  shards: number;
  flags: number;
  tls: boolean;
}

export class Result implements Iterable<Value[]> {
  columns: string[];
  rows: Value[][];
  affected: number;
  readonly length: number;
  [Symbol.iterator](): Iterator<Value[]>;
  /** The rows with Buffers decoded as UTF-8. */
  text(): Array<Array<string | number | bigint | null>>;
  /** The single value of a one-row, one-column result. */
  scalar(): Value;
  /** {name: value} for two-column results (SHOW STATS, SHOW STATUS). */
  toObject(): Record<string, Value>;
}

/**
 * A seed: 'host:port', 'host' (the `port` option's port, default 7411), '[v6]:port', or an object
 * whose `fingerprint` pins that node's key (instead of the `fingerprint` option).
 */
export type Seed = string | { host?: string; port?: number; fingerprint?: string };

export interface ConnectOptions {
  /** The one server to connect to (default 127.0.0.1); not with `hosts`. */
  host?: string;
  /** Default 7411; with `hosts`, the port of the seeds that name none. */
  port?: number;
  /**
   * Seeds, tried in order until one answers (a comma-separated string too): the nodes of a
   * cluster. With it, `reconnect` defaults to true.
   */
  hosts?: Seed[] | string;
  /**
   * After the connection to its node fails (error, close, DISCONNECT, timeout), reconnect to the
   * next seed that answers on the next request, logging in as before; reads (SELECT, SHOW, PING,
   * STATS) are then sent again, and a write that was sent rejects with OutcomeUnknown. Default:
   * true with `hosts`, false with `host`/`port` (a failure closes the connection, as ever).
   */
  reconnect?: boolean;
  /**
   * Times a request is sent again after SERVER_OVERLOADED (unless a write's message says it was
   * partly applied), a lost connection (reads only) or no seed answering (a request not yet sent).
   * Default 3 with `reconnect`, else 0.
   */
  retries?: number;
  /** Wait before the first retry, doubled for each next one, at most 2000. Default 100. */
  retryBackoffMs?: number;
  user?: string;
  password?: string;
  /** A credential from deriveCredential, so that many connections cost one Argon2id. */
  credential?: Uint8Array;
  apiKey?: string;
  /** TLS 1.3 (default true); false for a server started with --plaintext. */
  tls?: boolean;
  /** Default ~/.velocity/known_hosts (the Rust and Python clients' format). */
  knownHosts?: string;
  /** Record a server seen for the first time; or a function that asks. */
  acceptNewHost?: boolean | ((hostLabel: string, fingerprint: string) => boolean | Promise<boolean>);
  /** Accept exactly this server key ('SHA256:…'). */
  fingerprint?: string;
  /**
   * Default 30000; 0 for none. Per seed when connecting; a request unanswered for this long fails
   * the connection (and, with `reconnect`, moves to the next seed).
   */
  timeoutMs?: number;
  clientName?: string;
}

export type Statement = string | [string, Param[]];

export class Connection {
  /** The server parameters of the node the connection is on (they change with a reconnect). */
  readonly serverInfo: ServerInfo;
  readonly fingerprint: string;
  /** `host:port` of the node the connection is on, or was last on. */
  readonly address: string;
  /** True after close(), or after a failure that is not followed by a reconnect. */
  readonly closed: boolean;
  execute(sql: string, params?: Param[]): Promise<Result>;
  pipeline(statements: Statement[], options?: { raiseOnError?: true }): Promise<Result[]>;
  pipeline(statements: Statement[], options: { raiseOnError: false }): Promise<Array<Result | VelocityError>>;
  ping(data?: Uint8Array): Promise<Buffer>;
  stats(): Promise<Result>;
  /**
   * Write `key` only if it is absent or expired (INSERT … ON CONFLICT DO NOTHING): true when
   * inserted, false when a live key was left as it was. `ttl` in whole seconds; null: no expiry.
   */
  insertIfAbsent(key: Bytes, value: Bytes, ttl?: number | bigint | null): Promise<boolean>;
  /**
   * Compare-and-set (UPDATE … WHERE key = k AND value = expected): true when `key` held exactly
   * `expected` and now holds `newValue` (its TTL kept); false otherwise, a missing key included.
   */
  cas(key: Bytes, expected: Bytes, newValue: Bytes): Promise<boolean>;
  /**
   * Add `by` (default 1; a safe-integer number or a bigint in the signed 64-bit range) to the
   * counter at `key`, which starts at 0, and resolve to its new value: a number, or a bigint
   * beyond 2^53 (as INT values are given). InvalidCommand when the value is not an integer or the
   * sum overflows (nothing changes); UsageError for a `by` out of range.
   */
  incr(key: Bytes, by?: number | bigint): Promise<number | bigint>;
  sendRaw(frame: Buffer): Promise<Result | Buffer | VelocityError>;
  close(): Promise<void>;
}

export function connect(options?: ConnectOptions): Promise<Connection>;
export function deriveCredential(info: ServerInfo, user: string, password: string): Promise<Buffer>;
export function quote(value: Param): string;
export function bind(sql: string, params: Param[]): string;
export function fingerprintString(fingerprint: Uint8Array): string;

export class VelocityError extends Error {
  /** The wire code (profile section 6), or null for errors raised by the client itself. */
  code: number | null;
}
export class InvalidCredentials extends VelocityError {}
export class RateLimited extends VelocityError {}
export class InvalidCommand extends VelocityError {}
export class KeyNotFound extends VelocityError {}
export class StorageError extends VelocityError {}
export class ProtocolError extends VelocityError {}
export class ServerOverloaded extends VelocityError {}
export class Unauthorized extends VelocityError {}
/**
 * OUTCOME_UNKNOWN (0x0009, cluster mode): the write reached the cluster but may or may not have
 * been applied. Also raised by the client, with the same code and the connection's error as
 * `cause`, for a write whose connection was lost after it was sent. Read the key to find out.
 */
export class OutcomeUnknown extends VelocityError {}
export class UnknownServerError extends VelocityError {}
export class Disconnected extends VelocityError {
  reason: string;
  /** When several seeds were tried and none answered: each one's error, in the order tried. */
  errors?: VelocityError[];
}
export class TrustError extends VelocityError {}
export class UsageError extends VelocityError {}
export const CODES: Record<string, number>;
export const VERSION: string;
export const protocol: any;
