'use strict';
// The promise-based connection: connect, check the server's identity, log in, run statements.
// Every request is written at once and its promise settles when its reply arrives, in order:
// concurrent execute() calls on one connection are pipelined by construction.

const crypto = require('crypto');
const net = require('net');
const tls = require('tls');
const p = require('./protocol');
const trust = require('./trust');
const {
  VelocityError, ProtocolError, Disconnected, TrustError, UsageError, errorFor,
} = require('./errors');

const VERSION = '0.1.0';
const CLIENT_NAME = `velocity-node/${VERSION}`;
const DEFAULT_PORT = 7411;

/** The 32-byte method-1 credential: Argon2id(password, SHA-256(auth_salt ‖ user)[:16]). */
async function deriveCredential(info, user, password) {
  const { argon2id } = require('hash-wasm');
  if (Buffer.byteLength(user) > p.USERNAME_BYTES_MAX) throw new UsageError(`user name is longer than ${p.USERNAME_BYTES_MAX} bytes`);
  if (Buffer.byteLength(password) > p.PASSWORD_BYTES_MAX) throw new UsageError(`password is longer than ${p.PASSWORD_BYTES_MAX} bytes`);
  if (!(info.argon2MKib > 0 && info.argon2MKib <= p.ARGON2_M_KIB_MAX && info.argon2T > 0 && info.argon2T <= p.ARGON2_T_MAX &&
        info.argon2P > 0 && info.argon2P <= p.ARGON2_P_MAX)) {
    throw new ProtocolError(`server asks for Argon2id parameters outside the client's bounds: m=${info.argon2MKib} KiB, t=${info.argon2T}, p=${info.argon2P}`);
  }
  const salt = crypto.createHash('sha256').update(info.authSalt).update(user, 'utf8').digest().subarray(0, 16);
  const out = await argon2id({
    password: Buffer.from(password, 'utf8'),
    salt,
    parallelism: info.argon2P,
    iterations: info.argon2T,
    memorySize: info.argon2MKib,
    hashLength: 32,
    outputType: 'binary',
  });
  return Buffer.from(out);
}

/** SHA-256 of the certificate's SubjectPublicKeyInfo (the profile's fingerprint). */
function spkiSha256(certDer) {
  const spki = new crypto.X509Certificate(certDer).publicKey.export({ type: 'spki', format: 'der' });
  return crypto.createHash('sha256').update(spki).digest();
}

function replyToResult(type, payload) {
  if (type === p.T.RESPONSE || type === p.T.STATS) return p.parseResult(payload);
  if (type === p.T.ERROR) {
    const [code, message] = p.parseCodeMessage(payload);
    return errorFor(code, message);
  }
  if (type === p.T.PONG) return Buffer.from(payload);
  throw new ProtocolError(`unexpected frame type 0x${type.toString(16)} in reply to a request`);
}

// -- conditional writes and counters (docs/protocol.md, "Conditional writes and counters") ------
// Statement builders for the helpers below. Keys and values enter a statement only through
// p.quote() ('…' with ' doubled, or X'hex'); integers are checked here first.

const I64_MIN = -(1n << 63n);
const I64_MAX = (1n << 63n) - 1n;

function literal(v, what) {
  if (typeof v !== 'string' && !(v instanceof Uint8Array)) {
    throw new UsageError(`${what} must be a string or a Buffer/Uint8Array, not ${v === null ? 'null' : typeof v}`);
  }
  return p.quote(v);
}

function insertIfAbsentSql(key, value, ttl) {
  const k = literal(key, 'key');
  const v = literal(value, 'value');
  if (ttl == null) return `INSERT INTO kv (key, value) VALUES (${k}, ${v}) ON CONFLICT DO NOTHING`;
  if (!((typeof ttl === 'number' && Number.isSafeInteger(ttl)) || typeof ttl === 'bigint') || ttl < 0) {
    throw new UsageError(`ttl must be null/undefined or whole seconds (an integer >= 0), not ${String(ttl)}`);
  }
  return `INSERT INTO kv (key, value, ttl) VALUES (${k}, ${v}, ${p.quote(ttl)}) ON CONFLICT DO NOTHING`;
}

function casSql(key, expected, newValue) {
  return `UPDATE kv SET value = ${literal(newValue, 'new value')} WHERE key = ${literal(key, 'key')} AND value = ${literal(expected, 'expected value')}`;
}

function incrSql(key, by) {
  if (typeof by === 'number') {
    if (!Number.isSafeInteger(by)) throw new UsageError(`by must be an integer (a bigint beyond 2^53), not ${by}`);
    by = BigInt(by);
  } else if (typeof by !== 'bigint') {
    throw new UsageError(`by must be an integer (number or bigint), not ${by === null ? 'null' : typeof by}`);
  }
  if (by < I64_MIN || by > I64_MAX) throw new UsageError(`by must fit a signed 64-bit integer (${I64_MIN} to ${I64_MAX}), not ${by}`);
  // The dialect's integers have no sign: a negative step is written `value - |by|`.
  const op = by < 0n ? '-' : '+';
  const abs = by < 0n ? -by : by;
  return `INSERT INTO kv (key, value) VALUES (${literal(key, 'key')}, ${p.quote(String(by))}) ON CONFLICT (key) DO UPDATE SET value = value ${op} ${p.quote(abs)} RETURNING value`;
}

const COUNTER = /^-?(0|[1-9][0-9]*)$/;

/** The new value from incrSql's RETURNING row (decimal text), as the client gives INT values. */
function counterValue(r) {
  if (r.rows.length !== 1 || r.columns.length !== 1) {
    throw new ProtocolError(`a counter returned ${r.rows.length} rows of ${r.columns.length} columns, not one value`);
  }
  let v = r.rows[0][0];
  if (typeof v === 'number') return v;
  if (Buffer.isBuffer(v) && COUNTER.test(v.toString('latin1'))) v = BigInt(v.toString('latin1'));
  if (typeof v !== 'bigint' || v < I64_MIN || v > I64_MAX) {
    throw new ProtocolError(`a counter returned ${Buffer.isBuffer(v) ? JSON.stringify(v.toString('latin1')) : String(v)}, not a signed 64-bit integer`);
  }
  return p.intValue(v);
}

class Connection {
  constructor(socket, timeoutMs) {
    this.socket = socket;
    this.decoder = new p.FrameDecoder(p.PREAUTH_PAYLOAD_BYTES_MAX);
    this.serverInfo = null;
    this.pending = []; // FIFO of {resolve, reject} for requests sent and not yet answered
    this.closed = false;
    this.failure = null;
    this.timeoutMs = timeoutMs;
    socket.on('data', (d) => this._onData(d));
    socket.on('error', (e) => this._fail(new Disconnected(`connection lost: ${e.message}`)));
    socket.on('close', () => this._fail(new Disconnected('the server closed the connection')));
    if (timeoutMs) {
      socket.setTimeout(timeoutMs, () => {
        if (this.pending.length) this._fail(new VelocityError(`timed out after ${timeoutMs} ms waiting for the server`));
      });
    }
  }

  _onData(data) {
    this.decoder.feed(data);
    for (;;) {
      let frame;
      try {
        frame = this.decoder.nextFrame();
      } catch (e) {
        if (e.fatal) {
          this._fail(e);
          return;
        }
        // An unknown frame type: its boundary is intact, so it answers the oldest request.
        const w = this.pending.shift();
        if (w) w.reject(e);
        continue;
      }
      if (frame === null) return;
      const [type, payload] = frame;
      if (type === p.T.DISCONNECT) {
        let reason = '';
        let code = null;
        try {
          [code, reason] = p.parseCodeMessage(payload);
        } catch {
          /* a malformed DISCONNECT still ends the connection */
        }
        this._fail(new Disconnected(`server disconnected: ${reason}`, code, reason));
        return;
      }
      const w = this.pending.shift();
      if (!w) {
        this._fail(new ProtocolError(`unsolicited frame type 0x${type.toString(16)}`));
        return;
      }
      w.resolve([type, payload]);
    }
  }

  _fail(err) {
    if (!this.failure) this.failure = err;
    this.closed = true;
    const waiting = this.pending;
    this.pending = [];
    for (const w of waiting) w.reject(this.failure);
    this.socket.destroy();
  }

  /** Send a frame; resolves to the raw [type, payload] of its reply. */
  _request(frame) {
    if (this.closed) return Promise.reject(this.failure || new Disconnected('the connection is closed'));
    return new Promise((resolve, reject) => {
      this.pending.push({ resolve, reject });
      this.socket.write(frame);
    });
  }

  _command(sql, params) {
    if (params != null) sql = p.bind(sql, params);
    const data = Buffer.from(sql, 'utf8');
    if (data.length > this.serverInfo.maxPayload) {
      throw new UsageError(`statement is ${data.length} bytes; the server accepts ${this.serverInfo.maxPayload}`);
    }
    return p.encodeFrame(p.T.COMMAND, data);
  }

  /**
   * Run one statement. `?` placeholders outside quoted literals are replaced by `params`, each
   * quoted so that it cannot change the statement. Rejects with the error class of the wire code.
   */
  async execute(sql, params) {
    const r = replyToResult(...(await this._request(this._command(sql, params))));
    if (r instanceof VelocityError) throw r;
    return r;
  }

  // -- conditional writes and counters ----------------------------------------------------------

  /**
   * Write `key` only if it is absent (or expired). Resolves to true when inserted, false when a
   * live key was left as it was (value and TTL). `ttl` in whole seconds, or null for no expiry.
   */
  async insertIfAbsent(key, value, ttl = null) {
    return (await this.execute(insertIfAbsentSql(key, value, ttl))).affected === 1;
  }

  /**
   * Compare-and-set: replace the value with `newValue` only if `key` is live and holds exactly
   * `expected`. True when it did (the key keeps its TTL), false otherwise (a missing key included).
   */
  async cas(key, expected, newValue) {
    return (await this.execute(casSql(key, expected, newValue))).affected === 1;
  }

  /**
   * Add `by` (default 1; a number that is a safe integer, or a bigint, in the signed 64-bit
   * range; negative counts down) to the counter at `key`, in one round trip; an absent key counts
   * from 0. Resolves to the new value as the client gives INT values: a number, or a bigint beyond
   * 2^53. A value that is not an integer, or a sum that overflows, rejects with InvalidCommand
   * and changes nothing; a `by` out of range rejects with UsageError.
   */
  async incr(key, by = 1) {
    return counterValue(await this.execute(incrSql(key, by)));
  }

  /**
   * Send many statements at once (corked into few writes) and collect the replies in order. Each
   * statement is SQL or [sql, params]. By default the first error rejects after every reply has
   * arrived (the connection stays usable); with {raiseOnError: false} errors stand in the array.
   */
  async pipeline(statements, { raiseOnError = true } = {}) {
    const frames = statements.map((s) => (typeof s === 'string' ? this._command(s) : this._command(s[0], s[1])));
    this.socket.cork();
    const replies = frames.map((f) => this._request(f));
    process.nextTick(() => this.socket.uncork());
    const results = (await Promise.all(replies)).map(([type, payload]) => replyToResult(type, payload));
    if (raiseOnError) {
      const err = results.find((r) => r instanceof VelocityError);
      if (err) throw err;
    }
    return results;
  }

  async ping(data = Buffer.alloc(0)) {
    if (data.length > p.PING_PAYLOAD_BYTES_MAX) throw new UsageError(`PING carries at most ${p.PING_PAYLOAD_BYTES_MAX} bytes`);
    const r = replyToResult(...(await this._request(p.encodePing(data))));
    if (r instanceof VelocityError) throw r;
    if (!Buffer.isBuffer(r)) throw new ProtocolError('PING answered with a result set');
    return r;
  }

  /** The STATS frame: server counters and latency percentiles as (name, value) rows. */
  async stats() {
    const r = replyToResult(...(await this._request(p.encodeStats())));
    if (r instanceof VelocityError) throw r;
    return r;
  }

  /** Send a pre-built frame and return its reply: a Result, a Buffer (PONG) or the error. */
  async sendRaw(frame) {
    try {
      return replyToResult(...(await this._request(frame)));
    } catch (e) {
      if (e instanceof VelocityError) return e;
      throw e;
    }
  }

  get fingerprint() {
    return this.serverInfo.fingerprintText;
  }

  /** Say DISCONNECT and close. */
  async close() {
    if (this.closed) return;
    this.closed = true;
    this.failure = new Disconnected('the connection is closed');
    await new Promise((resolve) => {
      this.socket.end(p.encodeDisconnect(0, 'bye'), resolve);
      this.socket.once('close', resolve);
    });
    this.socket.destroy();
  }

  // `await using db = await velocity.connect(…)` where supported.
  async [Symbol.asyncDispose || Symbol.for('Symbol.asyncDispose')]() {
    await this.close();
  }
}

function openSocket(host, port, useTls, timeoutMs) {
  return new Promise((resolve, reject) => {
    let sock;
    const timer = timeoutMs ? setTimeout(() => {
      sock.destroy();
      reject(new Disconnected(`cannot connect to ${host}:${port}: timed out after ${timeoutMs} ms`));
    }, timeoutMs) : null;
    const done = (err) => {
      if (timer) clearTimeout(timer);
      if (err) reject(err);
      else resolve(sock);
    };
    const onError = (e) => {
      const hint = useTls && !(e instanceof Disconnected)
        ? ` (TLS handshake failed; if the server was started with --plaintext, connect with tls: false)` : '';
      done(new (useTls ? ProtocolError : Disconnected)(`cannot connect to ${host}:${port}: ${e.message}${hint}`));
    };
    if (useTls) {
      sock = tls.connect({
        host, port, rejectUnauthorized: false, minVersion: 'TLSv1.3',
        servername: net.isIP(host) ? undefined : host,
      }, () => done(null));
    } else {
      sock = net.connect({ host, port }, () => done(null));
    }
    sock.setNoDelay(true);
    sock.once('error', onError);
    // Once connected, errors are the connection's to report.
    sock.once(useTls ? 'secureConnect' : 'connect', () => sock.removeListener('error', onError));
  });
}

/**
 * Connect to a Velocity server, check its identity and log in. Options: host, port, user and
 * password (or a credential from deriveCredential), or apiKey; tls (default true), knownHosts,
 * acceptNewHost (boolean or async (label, fingerprint) => boolean), fingerprint ('SHA256:…'),
 * timeoutMs (default 30000), clientName.
 */
async function connect(opts = {}) {
  const host = opts.host || '127.0.0.1';
  const port = opts.port || DEFAULT_PORT;
  const useTls = opts.tls !== false;
  const timeoutMs = opts.timeoutMs === undefined ? 30000 : opts.timeoutMs;
  const sock = await openSocket(host, port, useTls, timeoutMs);
  const conn = new Connection(sock, timeoutMs);
  try {
    let certDer = null;
    if (useTls) {
      certDer = sock.getPeerCertificate(false).raw;
      if (!certDer) throw new TrustError('the server presented no certificate');
    }
    let type;
    let payload;
    try {
      [type, payload] = await conn._request(p.encodeHello(opts.clientName || CLIENT_NAME));
    } catch (e) {
      if (!useTls && e.kind === 'bad_magic') {
        throw new ProtocolError(`${e.message}; if the server uses TLS (the default), connect with tls: true`);
      }
      throw e;
    }
    if (type !== p.T.SERVER_INFO) {
      const r = replyToResult(type, payload);
      throw r instanceof VelocityError ? r : new ProtocolError('expected SERVER_INFO');
    }
    const info = p.parseServerInfo(payload);
    if (info.version !== p.VERSION) throw new ProtocolError(`server chose unsupported protocol version ${info.version}`);
    if (certDer && !spkiSha256(certDer).equals(info.fingerprint)) {
      throw new TrustError("SERVER_INFO's fingerprint is not the key that the TLS handshake presented: possible man-in-the-middle; refused");
    }
    await trust.check(trust.hostLabel(host, port), info.fingerprintText, {
      knownHosts: opts.knownHosts, acceptNewHost: opts.acceptNewHost, pinned: opts.fingerprint,
    });
    if (info.maxPayload > p.PAYLOAD_BYTES_CEILING) throw new ProtocolError(`server announces max_payload ${info.maxPayload}, beyond the protocol's ceiling`);
    conn.serverInfo = info;
    let frame = null;
    if (opts.apiKey != null) {
      const key = Buffer.from(opts.apiKey, 'utf8');
      if (key.length > p.CREDENTIAL_BYTES_MAX) throw new UsageError(`API key is longer than ${p.CREDENTIAL_BYTES_MAX} bytes`);
      frame = p.encodeAuthRequest(p.METHOD_API_KEY, '', key);
    } else if (opts.user != null) {
      let cred = opts.credential;
      if (cred == null) {
        if (opts.password == null) throw new UsageError('give a password, a derived credential or an API key');
        cred = await deriveCredential(info, opts.user, opts.password);
      }
      frame = p.encodeAuthRequest(p.METHOD_PASSWORD, opts.user, Buffer.from(cred));
    }
    if (frame) {
      [type, payload] = await conn._request(frame);
      if (type !== p.T.AUTH_RESPONSE) {
        const r = replyToResult(type, payload);
        throw r instanceof VelocityError ? r : new ProtocolError('expected AUTH_RESPONSE');
      }
      const [status, message] = p.parseCodeMessage(payload);
      if (status !== 0) throw errorFor(status, message);
      conn.decoder.payloadBytesMax = info.maxPayload;
    }
    return conn;
  } catch (e) {
    sock.destroy();
    throw e;
  }
}

module.exports = { connect, Connection, deriveCredential, spkiSha256, CLIENT_NAME, DEFAULT_PORT, VERSION };
