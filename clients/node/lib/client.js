'use strict';
// The promise-based connection: connect, check the server's identity, log in, run statements.
// Every request is written at once and its promise settles when its reply arrives, in order:
// concurrent execute() calls on one connection are pipelined by construction.
//
// A Connection sits on one Link (one socket to one node) at a time. Given several seeds it dials
// them in order; with reconnect on, a failed Link is replaced by a fresh one to the next seed
// that answers, and requests whose repetition cannot change the outcome (reads, or anything the
// server refused with SERVER_OVERLOADED having changed nothing) are sent again on it.

const crypto = require('crypto');
const net = require('net');
const tls = require('tls');
const p = require('./protocol');
const trust = require('./trust');
const {
  VelocityError, ProtocolError, Disconnected, TrustError, UsageError, ServerOverloaded, OutcomeUnknown, errorFor, CODES,
} = require('./errors');

const VERSION = '0.1.0';
const CLIENT_NAME = `velocity-node/${VERSION}`;
const DEFAULT_PORT = 7411;
const DEFAULT_RETRIES = 3;
const DEFAULT_RETRY_BACKOFF_MS = 100;
// Caps the doubling, so that a large `retries` keeps trying at a steady pace instead of sleeping
// for minutes between tries.
const RETRY_BACKOFF_MAX_MS = 2000;

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

// -- which requests may be sent twice ------------------------------------------------------------

const WORD = /[A-Za-z_][A-Za-z0-9_]*/y;

/**
 * True when the statement's first keyword is SELECT or SHOW, skipping blanks and comments as the
 * server's lexer does (space, tab, CR, LF; `--` to the end of the line; block comments, which
 * nest). Such a statement changes nothing (SHOW SLOWLOG RESET empties a log, which twice does
 * as well), so it may be sent again after a lost connection. Anything else, or anything this
 * cannot read (an unterminated comment), counts as a write.
 */
function isRead(sql) {
  const n = sql.length;
  let i = 0;
  for (;;) {
    while (i < n && (sql[i] === ' ' || sql[i] === '\t' || sql[i] === '\r' || sql[i] === '\n')) i++;
    if (sql.startsWith('--', i)) {
      const nl = sql.indexOf('\n', i);
      if (nl < 0) return false;
      i = nl + 1;
    } else if (sql.startsWith('/*', i)) {
      let depth = 0;
      for (;;) {
        if (i + 1 >= n) return false;
        if (sql[i] === '/' && sql[i + 1] === '*') {
          depth++;
          i += 2;
        } else if (sql[i] === '*' && sql[i + 1] === '/') {
          depth--;
          i += 2;
          if (depth === 0) break;
        } else {
          i++;
        }
      }
    } else {
      break;
    }
  }
  WORD.lastIndex = i;
  const m = WORD.exec(sql);
  return m !== null && /^(select|show)$/i.test(m[0]);
}

// SERVER_OVERLOADED is "not now, nothing changed" (a cluster without a leader, a full server),
// except two writes' cases: the memory limit's refusal of a multi-shard write says how many rows
// went in before it, and a shard that stopped answering may have applied its part. Sending those
// again could apply a part twice (a counter bumped twice).
const PARTLY_APPLIED = /of its rows were written|a shard is not answering/;


/**
 * Failures of one address that another address (or the same one, a moment later) may not have:
 * it did not answer, was full, or did not speak the protocol. Not: an untrusted key, refused
 * credentials, a throttled login, bad input — those would be the same on every node, and trying
 * a password on every node would only spread the failed-login count.
 */
const tryElsewhere = (e) => e instanceof Disconnected || e instanceof ServerOverloaded ||
  e instanceof ProtocolError || (e instanceof VelocityError && e.constructor === VelocityError);

// A DISCONNECT for a removed user or a revoked key (or too many failed logins) would only be
// repeated by logging in again elsewhere: the session is over.
const sessionOver = (e) => e instanceof Disconnected &&
  (e.code === CODES.Unauthorized || e.code === CODES.InvalidCredentials);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// -- one socket to one node ---------------------------------------------------------------------

class Link {
  constructor(socket, timeoutMs, label = '') {
    this.socket = socket;
    this.label = label;
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
      // Refused, unreachable or unresolvable: nothing answered, so it is no TLS matter (and a
      // seed list moves on to the next address).
      const unreached = e.syscall === 'connect' || e.syscall === 'getaddrinfo';
      const hint = useTls && !unreached && !(e instanceof Disconnected)
        ? ` (TLS handshake failed; if the server was started with --plaintext, connect with tls: false)` : '';
      done(new (useTls && !unreached ? ProtocolError : Disconnected)(`cannot connect to ${host}:${port}: ${e.message}${hint}`));
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

/** Open a socket to one seed, check its identity and log in: a Link ready for statements. */
async function handshake(opts, seed, credentials) {
  const { host, port } = seed;
  const useTls = opts.tls !== false;
  const timeoutMs = opts.timeoutMs === undefined ? 30000 : opts.timeoutMs;
  const label = trust.hostLabel(host, port);
  const sock = await openSocket(host, port, useTls, timeoutMs);
  const conn = new Link(sock, timeoutMs, label);
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
    await trust.check(label, info.fingerprintText, {
      knownHosts: opts.knownHosts, acceptNewHost: opts.acceptNewHost, pinned: seed.fingerprint ?? opts.fingerprint,
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
        // The salt is per data directory, so nodes may differ; a reconnect to a node seen
        // before costs no second Argon2id.
        const salt = info.authSalt.toString('hex');
        cred = credentials.get(salt);
        if (cred == null) {
          cred = await deriveCredential(info, opts.user, opts.password);
          credentials.set(salt, cred);
        }
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

/**
 * Try the seeds once each, in order from `start` (wrapping round), and resolve to the first
 * Link that logs in, with the seed's index. An error that another node would repeat is thrown at
 * once; when every seed fails, a single seed's own error, or a Disconnected that lists them all.
 */
async function dial(opts, seeds, start, credentials) {
  const errors = [];
  for (let i = 0; i < seeds.length; i++) {
    const at = (start + i) % seeds.length;
    try {
      return { link: await handshake(opts, seeds[at], credentials), at };
    } catch (e) {
      if (!tryElsewhere(e)) throw e;
      errors.push([seeds[at], e]);
    }
  }
  if (errors.length === 1) throw errors[0][1];
  const lines = errors.map(([seed, e]) => {
    const label = trust.hostLabel(seed.host, seed.port);
    return e.message.includes(label) ? e.message : `${label}: ${e.message}`;
  });
  const err = new Disconnected(`no seed answered (${seeds.length} tried): ${lines.join('; ')}`);
  err.errors = errors.map(([, e]) => e);
  throw err;
}

function parsePort(v, what) {
  const n = typeof v === 'string' && /^[0-9]+$/.test(v) ? Number(v) : v;
  if (!Number.isInteger(n) || n < 1 || n > 65535) throw new UsageError(`${what}: the port must be 1 to 65535, not ${JSON.stringify(v)}`);
  return n;
}

/**
 * One seed from 'host', 'host:port', '[v6]:port' (a bare IPv6 address takes the default port)
 * or {host, port, fingerprint}.
 */
function parseSeed(s, defaultPort) {
  if (typeof s === 'string') {
    const v6 = /^\[([^\]]+)\](?::([^:]*))?$/.exec(s);
    if (v6) return { host: v6[1], port: v6[2] === undefined ? defaultPort : parsePort(v6[2], s) };
    const colon = s.indexOf(':');
    if (colon >= 0 && colon !== s.lastIndexOf(':')) return { host: s, port: defaultPort };
    if (s === '' || colon === 0) throw new UsageError(`seed ${JSON.stringify(s)} names no host`);
    if (colon < 0) return { host: s, port: defaultPort };
    return { host: s.slice(0, colon), port: parsePort(s.slice(colon + 1), s) };
  }
  if (s && typeof s === 'object') {
    return {
      host: s.host || '127.0.0.1',
      port: s.port == null ? defaultPort : parsePort(s.port, JSON.stringify(s)),
      fingerprint: s.fingerprint,
    };
  }
  throw new UsageError(`a seed is 'host:port' or {host, port}, not ${s === null ? 'null' : typeof s}`);
}

/** The seed list of connect()'s options: `hosts`, else the one `host` and `port`. */
function seedList(opts) {
  if (opts.hosts == null) return [{ host: opts.host || '127.0.0.1', port: opts.port || DEFAULT_PORT }];
  const defaultPort = opts.port == null ? DEFAULT_PORT : parsePort(opts.port, 'port');
  if (opts.host != null) throw new UsageError('give hosts (a seed list) or host, not both; port is the default port of the seeds');
  const hosts = typeof opts.hosts === 'string' ? opts.hosts.split(',').map((h) => h.trim()) : opts.hosts;
  if (!Array.isArray(hosts) || hosts.length === 0) throw new UsageError('hosts must name at least one seed');
  return hosts.map((h) => parseSeed(h, defaultPort));
}

function count(v, fallback, what) {
  if (v === undefined) return fallback;
  if (!Number.isSafeInteger(v) || v < 0) throw new UsageError(`${what} must be a whole number >= 0, not ${String(v)}`);
  return v;
}

class Connection {
  /** Made by connect(): the first Link, the seed it reached, and how to dial again. */
  constructor(link, at, session) {
    this._link = link;
    this._at = at;
    this._session = session;
    this._relinking = null; // the dial in progress, shared by every request that waits for it
    this._closing = false;
  }

  get serverInfo() {
    return this._link.serverInfo;
  }

  get fingerprint() {
    return this._link.serverInfo.fingerprintText;
  }

  /** `host:port` of the node the connection is on (or was last on). */
  get address() {
    return this._link.label;
  }

  get closed() {
    return this._closing || (this._link.closed && !this._mayRedial(this._link.failure));
  }

  _mayRedial(failure) {
    return this._session.reconnect && !this._closing && !sessionOver(failure);
  }

  /**
   * The Link to send on: the current one while it lives (synchronously, so that requests made in
   * one tick are written in that order and a pipeline's cork covers them), else a promise of a
   * new one from the next seeds (the failed one last).
   */
  _linkNow() {
    const link = this._link;
    if (!link.closed) return link;
    if (!this._mayRedial(link.failure)) return Promise.reject(link.failure || new Disconnected('the connection is closed'));
    if (!this._relinking) {
      const { seeds, dial } = this._session;
      this._relinking = dial((this._at + 1) % seeds.length)
        .then(({ link: fresh, at }) => {
          if (this._closing) {
            fresh.socket.destroy();
            throw new Disconnected('the connection is closed');
          }
          this._link = fresh;
          this._at = at;
          return fresh;
        })
        .finally(() => {
          this._relinking = null;
        });
    }
    return this._relinking;
  }

  _backoff(attempt) {
    return sleep(Math.min(this._session.retryBackoffMs * 2 ** attempt, RETRY_BACKOFF_MAX_MS));
  }

  /**
   * Send one request and settle with its reply: a Result, a PONG's Buffer, or the server's error
   * as a value. `repeatable`: sending it twice cannot change the outcome (a read, a PING, STATS).
   * Rejects only for the connection: lost, or no seed answered, within the retries; a write lost
   * after it was sent rejects with OutcomeUnknown.
   */
  async _call(frame, repeatable) {
    const { retries } = this._session;
    for (let attempt = 0; ; attempt++) {
      let link = this._linkNow();
      if (!(link instanceof Link)) {
        try {
          link = await link;
        } catch (e) {
          // Nothing was sent: trying again is safe for a write too.
          if (attempt < retries && this._mayRedial(e) && tryElsewhere(e)) {
            await this._backoff(attempt);
            continue;
          }
          throw e;
        }
        if (link.closed) continue; // died before this was sent on it: dial again
      }
      let reply;
      try {
        reply = await link._request(frame);
      } catch (e) {
        const lost = link.closed && e === link.failure && this._mayRedial(e);
        if (!lost) throw e;
        if (!repeatable) {
          const err = new OutcomeUnknown(`the connection to ${link.label} was lost after the write was sent (${e.message}): it may or may not have been applied, so it was not sent again`);
          err.cause = e;
          throw err;
        }
        if (attempt < retries) {
          await this._backoff(attempt);
          continue;
        }
        throw e;
      }
      const r = replyToResult(...reply);
      if (attempt < retries && r instanceof ServerOverloaded && (repeatable || !PARTLY_APPLIED.test(r.message))) {
        await this._backoff(attempt);
        continue;
      }
      return r;
    }
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
    const r = await this._call(this._command(sql, params), isRead(sql));
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
    const calls = statements.map((s) => (typeof s === 'string' ? [s] : s)).map(([sql, params]) => [this._command(sql, params), isRead(sql)]);
    // On a live link the calls write at once, inside the cork. On a dead one they wait for the
    // same dial and write in their order when it is done.
    const { socket } = this._link;
    socket.cork();
    const replies = calls.map(([f, repeatable]) => this._call(f, repeatable));
    process.nextTick(() => socket.uncork());
    // Each statement is retried or given up on by itself; wait for all of them, so that none is
    // still in flight when this settles.
    const settled = await Promise.allSettled(replies);
    const lost = settled.find((o) => o.status === 'rejected' && !(o.reason instanceof OutcomeUnknown));
    if (lost) throw lost.reason;
    const results = settled.map((o) => (o.status === 'fulfilled' ? o.value : o.reason));
    if (raiseOnError) {
      const err = results.find((r) => r instanceof VelocityError);
      if (err) throw err;
    }
    return results;
  }

  async ping(data = Buffer.alloc(0)) {
    if (data.length > p.PING_PAYLOAD_BYTES_MAX) throw new UsageError(`PING carries at most ${p.PING_PAYLOAD_BYTES_MAX} bytes`);
    const r = await this._call(p.encodePing(data), true);
    if (r instanceof VelocityError) throw r;
    if (!Buffer.isBuffer(r)) throw new ProtocolError('PING answered with a result set');
    return r;
  }

  /** The STATS frame: server counters and latency percentiles as (name, value) rows. */
  async stats() {
    const r = await this._call(p.encodeStats(), true);
    if (r instanceof VelocityError) throw r;
    return r;
  }

  /**
   * Send a pre-built frame and return its reply: a Result, a Buffer (PONG) or the error. Sent
   * once: what a raw frame does is the caller's to know, so it is never repeated.
   */
  async sendRaw(frame) {
    try {
      const link = await this._linkNow();
      return replyToResult(...(await link._request(frame)));
    } catch (e) {
      if (e instanceof VelocityError) return e;
      throw e;
    }
  }

  /** Say DISCONNECT and close; no reconnect after this. */
  async close() {
    if (this._closing) return;
    this._closing = true;
    await this._link.close();
  }

  // `await using db = await velocity.connect(…)` where supported.
  async [Symbol.asyncDispose || Symbol.for('Symbol.asyncDispose')]() {
    await this.close();
  }
}

/**
 * Connect to a Velocity server, check its identity and log in. Options: host, port, or hosts (a
 * list of seeds: 'host:port' or {host, port, fingerprint}, tried in order); user and password (or
 * a credential from deriveCredential), or apiKey; tls (default true), knownHosts, acceptNewHost
 * (boolean or async (label, fingerprint) => boolean), fingerprint ('SHA256:…'), timeoutMs
 * (default 30000), clientName; reconnect (default: true with hosts), retries (default 3 with
 * reconnect, else 0) and retryBackoffMs (default 100, doubling per retry, at most 2000).
 */
async function connect(opts = {}) {
  const seeds = seedList(opts);
  const reconnect = opts.reconnect === undefined ? opts.hosts != null : Boolean(opts.reconnect);
  const session = {
    seeds,
    reconnect,
    retries: count(opts.retries, reconnect ? DEFAULT_RETRIES : 0, 'retries'),
    retryBackoffMs: count(opts.retryBackoffMs, DEFAULT_RETRY_BACKOFF_MS, 'retryBackoffMs'),
  };
  // Kept in this closure, not on the connection, so that the password is not in what
  // console.log shows of it; it is needed to log in again after a reconnect.
  const credentials = new Map();
  session.dial = (start) => dial(opts, seeds, start, credentials);
  const { link, at } = await session.dial(0);
  return new Connection(link, at, session);
}

module.exports = {
  connect, Connection, deriveCredential, spkiSha256, isRead, parseSeed, seedList, CLIENT_NAME, DEFAULT_PORT, VERSION,
};
