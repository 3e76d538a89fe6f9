'use strict';
// The Velocity wire protocol, version 1 (profile sections 1, 3 and 4), without any I/O.
// FrameDecoder is fed bytes and hands out whole frames; an incomplete frame is `null`, not an
// error. The encode* functions build client frames; parse* read server payloads.

const zlib = require('zlib');
const { FrameError, ProtocolError } = require('./errors');

const MAGIC = Buffer.from('VELO');
const VERSION = 1;
const HEADER_BYTES = 10;
const FRAME_OVERHEAD_BYTES = 14;
const PREAUTH_PAYLOAD_BYTES_MAX = 4096;
// The largest max_payload a server may announce: a hostile server cannot make us buffer more.
const PAYLOAD_BYTES_CEILING = 64 << 20;
const PING_PAYLOAD_BYTES_MAX = 64;
const USERNAME_BYTES_MAX = 64;
const PASSWORD_BYTES_MAX = 128;
const CREDENTIAL_BYTES_MAX = 128;
const ARGON2_M_KIB_MAX = 1 << 20;
const ARGON2_T_MAX = 16;
const ARGON2_P_MAX = 16;

const T = {
  HELLO: 0x01, SERVER_INFO: 0x02, AUTH_REQUEST: 0x03, AUTH_RESPONSE: 0x04, DISCONNECT: 0x05,
  COMMAND: 0x10, RESPONSE: 0x11, ERROR: 0x12, PING: 0x20, PONG: 0x21, STATS: 0x22,
};
const KNOWN_TYPES = new Set(Object.values(T));
const METHOD_PASSWORD = 1;
const METHOD_API_KEY = 2;

let crcTable = null;
function crc32(buf) {
  if (typeof zlib.crc32 === 'function') return zlib.crc32(buf) >>> 0;
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let c = 0xffffffff;
  for (let i = 0; i < buf.length; i++) c = crcTable[(c ^ buf[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function encodeFrame(type, payload = Buffer.alloc(0)) {
  const out = Buffer.allocUnsafe(FRAME_OVERHEAD_BYTES + payload.length);
  MAGIC.copy(out, 0);
  out[4] = VERSION;
  out[5] = type;
  out.writeUInt32LE(payload.length, 6);
  payload.copy(out, HEADER_BYTES);
  out.writeUInt32LE(crc32(out.subarray(0, HEADER_BYTES + payload.length)), HEADER_BYTES + payload.length);
  return out;
}

class FrameDecoder {
  constructor(payloadBytesMax = PREAUTH_PAYLOAD_BYTES_MAX) {
    this.payloadBytesMax = payloadBytesMax;
    // Received chunks are joined only once a whole frame has arrived, so a large frame costs
    // one copy, not one per chunk.
    this.chunks = [];
    this.length = 0;
  }

  feed(data) {
    if (data.length) {
      this.chunks.push(data);
      this.length += data.length;
    }
  }

  buffered() {
    return this.length;
  }

  _head(n) {
    if (this.chunks.length > 1 && this.chunks[0].length < n) this.chunks = [Buffer.concat(this.chunks)];
    return this.chunks.length ? this.chunks[0] : Buffer.alloc(0);
  }

  /** [type, payload] of the next whole frame, or null; throws FrameError on a violation. */
  nextFrame() {
    const head = this._head(HEADER_BYTES);
    const seen = Math.min(head.length, 4);
    if (!head.subarray(0, seen).equals(MAGIC.subarray(0, seen))) {
      throw new FrameError('bad_magic', 'bad magic: not a Velocity server (is it TLS on one side only?)', true);
    }
    if (this.length < HEADER_BYTES) return null;
    if (head[4] !== VERSION) throw new FrameError('bad_version', `unsupported protocol version ${head[4]}`, true);
    const type = head[5];
    const length = head.readUInt32LE(6);
    if (length > this.payloadBytesMax) {
      throw new FrameError('too_long', `frame of ${length} bytes exceeds the limit of ${this.payloadBytesMax}`, true);
    }
    const total = FRAME_OVERHEAD_BYTES + length;
    if (this.length < total) return null;
    const buf = this._head(total);
    const bodyEnd = HEADER_BYTES + length;
    if (crc32(buf.subarray(0, bodyEnd)) !== buf.readUInt32LE(bodyEnd)) {
      throw new FrameError('bad_checksum', 'frame checksum mismatch', true);
    }
    const payload = buf.subarray(HEADER_BYTES, bodyEnd);
    if (buf.length === total) this.chunks.shift();
    else this.chunks[0] = buf.subarray(total);
    this.length -= total;
    if (!KNOWN_TYPES.has(type)) {
      throw new FrameError('unknown_type', `unknown frame type 0x${type.toString(16)}`, false);
    }
    return [type, payload];
  }
}

class Reader {
  constructor(data) {
    this.data = data;
    this.pos = 0;
  }
  take(n) {
    if (n > this.data.length - this.pos) throw new FrameError('malformed', 'payload is shorter than its fields', false);
    const out = this.data.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }
  u8() { return this.take(1)[0]; }
  u16() { return this.take(2).readUInt16LE(0); }
  u32() { return this.take(4).readUInt32LE(0); }
  u64() { return this.take(8).readBigUInt64LE(0); }
  i64() { return this.take(8).readBigInt64LE(0); }
  text(n) {
    try {
      return new TextDecoder('utf-8', { fatal: true }).decode(this.take(n));
    } catch (e) {
      if (e instanceof FrameError) throw e;
      throw new FrameError('malformed', 'text field is not UTF-8', false);
    }
  }
  str8() { return this.text(this.u8()); }
  str16() { return this.text(this.u16()); }
  end() {
    if (this.pos !== this.data.length) {
      throw new FrameError('malformed', `${this.data.length - this.pos} bytes after the last field`, false);
    }
  }
}

function str8(s, what) {
  const b = Buffer.from(s, 'utf8');
  if (b.length > 255) throw new ProtocolError(`${what} is longer than 255 bytes`);
  return Buffer.concat([Buffer.from([b.length]), b]);
}

function str16(s) {
  const b = Buffer.from(s, 'utf8').subarray(0, 65535);
  const len = Buffer.alloc(2);
  len.writeUInt16LE(b.length);
  return Buffer.concat([len, b]);
}

const encodeHello = (clientName, versions = [VERSION]) =>
  encodeFrame(T.HELLO, Buffer.concat([Buffer.from([versions.length, ...versions]), str8(clientName, 'client name')]));

function encodeAuthRequest(method, username, credential) {
  if (credential.length > 255) throw new ProtocolError('credential is longer than 255 bytes');
  return encodeFrame(
    T.AUTH_REQUEST,
    Buffer.concat([Buffer.from([method]), str8(username, 'user name'), Buffer.from([credential.length]), credential]),
  );
}

const encodeCommand = (sql) => encodeFrame(T.COMMAND, Buffer.from(sql, 'utf8'));
const encodePing = (data = Buffer.alloc(0)) => encodeFrame(T.PING, Buffer.from(data));
const encodeStats = () => encodeFrame(T.STATS);

function encodeDisconnect(code = 0, reason = 'bye') {
  const c = Buffer.alloc(2);
  c.writeUInt16LE(code);
  return encodeFrame(T.DISCONNECT, Buffer.concat([c, str16(reason)]));
}

/** `SHA256:<base64 without padding>`, as `velocityd fingerprint` prints it. */
const fingerprintString = (fp) => 'SHA256:' + Buffer.from(fp).toString('base64').replace(/=+$/, '');

function parseServerInfo(payload) {
  const r = new Reader(payload);
  const info = {
    version: r.u8(),
    server: r.str8(),
    fingerprint: Buffer.from(r.take(32)),
    authSalt: Buffer.from(r.take(16)),
    argon2MKib: r.u32(),
    argon2T: r.u32(),
    argon2P: r.u8(),
    maxPayload: r.u32(),
    shards: r.u16(),
    flags: r.u8(),
  };
  r.end();
  info.tls = (info.flags & 1) !== 0;
  info.fingerprintText = fingerprintString(info.fingerprint);
  return info;
}

/** ERROR, AUTH_RESPONSE and DISCONNECT share the layout `u16 code; str16 text`. */
function parseCodeMessage(payload) {
  const r = new Reader(payload);
  const out = [r.u16(), r.str16()];
  r.end();
  return out;
}

const SAFE_MAX = BigInt(Number.MAX_SAFE_INTEGER);
const SAFE_MIN = BigInt(Number.MIN_SAFE_INTEGER);
// An INT is a number when it fits one exactly, else a bigint.
const intValue = (v) => (v <= SAFE_MAX && v >= SAFE_MIN ? Number(v) : v);

/** A result set. `rows` holds arrays of Buffer, number (or bigint beyond 2^53) and null. */
class Result {
  constructor(columns, rows, affected) {
    this.columns = columns;
    this.rows = rows;
    this.affected = affected;
  }
  get length() { return this.rows.length; }
  [Symbol.iterator]() { return this.rows[Symbol.iterator](); }
  /** The rows with Buffers decoded as UTF-8. */
  text() { return this.rows.map((row) => row.map(textValue)); }
  /** The single value of a one-row, one-column result. */
  scalar() {
    if (this.rows.length !== 1 || this.columns.length !== 1) {
      throw new RangeError(`expected one value, got ${this.rows.length} rows of ${this.columns.length} columns`);
    }
    return this.rows[0][0];
  }
  /** {name: value} for two-column results such as SHOW STATS and SHOW STATUS. */
  toObject() {
    const o = {};
    for (const [k, v] of this.rows) o[textValue(k)] = v;
    return o;
  }
}

const textValue = (v) => (Buffer.isBuffer(v) ? v.toString('utf8') : v);

function parseResult(payload) {
  const r = new Reader(payload);
  const nCols = r.u16();
  const columns = [];
  for (let i = 0; i < nCols; i++) columns.push(r.str16());
  const nRows = r.u32();
  // Each value takes at least a byte: a count beyond the payload is refused before allocating.
  if ((nCols === 0 && nRows !== 0) || nRows * nCols > payload.length) {
    throw new FrameError('malformed', 'result set claims more values than its payload holds', false);
  }
  const rows = [];
  for (let i = 0; i < nRows; i++) {
    const row = [];
    for (let j = 0; j < nCols; j++) {
      const tag = r.u8();
      if (tag === 0) row.push(null);
      else if (tag === 1) row.push(Buffer.from(r.take(r.u32())));
      else if (tag === 2) row.push(intValue(r.i64()));
      else throw new FrameError('malformed', `unknown value tag ${tag}`, false);
    }
    rows.push(row);
  }
  const affected = Number(r.u64());
  r.end();
  return new Result(columns, rows, affected);
}

// Control characters and other invisibles go as hex so that a literal is always one visible token.
const PRINTABLE = /^[^\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}\p{Zl}\p{Zp}]*$/u;

/**
 * A SQL literal for `value` that parses back to exactly that value and can never change the shape
 * of the statement it is placed in: text quoted with `'` doubled, bytes that are not printable
 * UTF-8 as X'…', non-negative integers in decimal, null as NULL.
 */
function quote(value) {
  if (value === null || value === undefined) return 'NULL';
  if (typeof value === 'number' || typeof value === 'bigint') {
    if (typeof value === 'number' && !Number.isSafeInteger(value)) throw new TypeError(`cannot quote ${value}: not an integer`);
    if (value < 0) throw new RangeError('the dialect has unsigned integer literals only');
    return String(value);
  }
  let bytes;
  if (typeof value === 'string') bytes = Buffer.from(value, 'utf8');
  else if (value instanceof Uint8Array) bytes = Buffer.from(value);
  else throw new TypeError(`cannot quote a ${typeof value}`);
  let s = null;
  try {
    s = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    s = null;
  }
  if (s !== null && PRINTABLE.test(s)) return `'${s.replace(/'/g, "''")}'`;
  return `X'${bytes.toString('hex')}'`;
}

/** Replace each `?` outside a quoted literal with quote(param). */
function bind(sql, params) {
  let out = '';
  let used = 0;
  let inQuote = false;
  for (const ch of sql) {
    if (ch === "'") {
      inQuote = !inQuote;
      out += ch;
    } else if (ch === '?' && !inQuote) {
      if (used >= params.length) throw new RangeError('more ? placeholders than parameters');
      out += quote(params[used++]);
    } else {
      out += ch;
    }
  }
  if (used !== params.length) throw new RangeError(`${params.length} parameters for ${used} ? placeholders`);
  return out;
}

module.exports = {
  MAGIC, VERSION, HEADER_BYTES, FRAME_OVERHEAD_BYTES, PREAUTH_PAYLOAD_BYTES_MAX, PAYLOAD_BYTES_CEILING,
  PING_PAYLOAD_BYTES_MAX, USERNAME_BYTES_MAX, PASSWORD_BYTES_MAX, CREDENTIAL_BYTES_MAX,
  ARGON2_M_KIB_MAX, ARGON2_T_MAX, ARGON2_P_MAX, T, METHOD_PASSWORD, METHOD_API_KEY,
  crc32, encodeFrame, FrameDecoder, encodeHello, encodeAuthRequest, encodeCommand, encodePing, encodeStats,
  encodeDisconnect, parseServerInfo, parseCodeMessage, parseResult, Result, intValue, quote, bind, fingerprintString, textValue,
};
