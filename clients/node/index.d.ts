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

export interface ConnectOptions {
  host?: string;
  /** Default 7411. */
  port?: number;
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
  /** Default 30000; 0 for none. */
  timeoutMs?: number;
  clientName?: string;
}

export type Statement = string | [string, Param[]];

export class Connection {
  serverInfo: ServerInfo;
  readonly fingerprint: string;
  closed: boolean;
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
export class UnknownServerError extends VelocityError {}
export class Disconnected extends VelocityError {
  reason: string;
}
export class TrustError extends VelocityError {}
export class UsageError extends VelocityError {}
export const CODES: Record<string, number>;
export const VERSION: string;
export const protocol: any;
