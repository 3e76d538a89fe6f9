// The Node.js client's runner for the cross-client check (tests/cross/run.py).
//
//   node cross.js write SPEC PREFIX   insert each SPEC line's key (PREFIX + key) and value
//   node cross.js read                print every x:% key in the canonical form
//
// The server and login come from CROSS_HOST, CROSS_PORT, CROSS_USER, VELOCITY_PASSWORD, CROSS_TLS
// (1/0), CROSS_KNOWN_HOSTS, CROSS_ACCEPT_NEW (1/0); the TTL range a reader accepts from
// CROSS_TTL_MIN and CROSS_TTL_MAX. Every key and value goes through the client's own `?`
// binding: text entries of SPEC as strings, bytes entries as Buffers.
'use strict';

const fs = require('fs');
const path = require('path');
const velocity = require(path.join(__dirname, '..', '..', 'clients', 'node'));

const env = process.env;

function connect() {
  return velocity.connect({
    host: env.CROSS_HOST,
    port: Number(env.CROSS_PORT),
    user: env.CROSS_USER,
    password: env.VELOCITY_PASSWORD,
    tls: env.CROSS_TLS === '1',
    knownHosts: env.CROSS_KNOWN_HOSTS,
    acceptNewHost: env.CROSS_ACCEPT_NEW === '1',
  });
}

function decode(kind, hex) {
  const b = Buffer.from(hex, 'hex');
  if (kind !== 'text') return b;
  return new TextDecoder('utf-8', { fatal: true }).decode(b);
}

async function write(spec, prefix) {
  const lines = fs.readFileSync(spec, 'utf8').split('\n').filter((l) => l !== '');
  const db = await connect();
  try {
    for (const line of lines) {
      const [kk, kh, vk, vh, ttl] = line.split(' ');
      let key = decode(kk, kh);
      const value = decode(vk, vh);
      key = typeof key === 'string' ? prefix + key : Buffer.concat([Buffer.from(prefix, 'utf8'), key]);
      const r = ttl === '-'
        ? await db.execute('INSERT INTO kv (key, value) VALUES (?, ?)', [key, value])
        : await db.execute('INSERT INTO kv (key, value, ttl) VALUES (?, ?, ?)', [key, value, Number(ttl)]);
      if (r.affected !== 1) throw new Error(`INSERT of ${JSON.stringify(String(key))} affected ${r.affected} rows`);
    }
  } finally {
    await db.close();
  }
}

function token(v) {
  if (v === null) return 'null';
  if (typeof v === 'number' || typeof v === 'bigint') return `i:${v}`;
  if (Buffer.isBuffer(v)) return `b:${v.toString('hex')}`;
  throw new TypeError(`unexpected value ${typeof v}`);
}

async function read() {
  const lo = Number(env.CROSS_TTL_MIN);
  const hi = Number(env.CROSS_TTL_MAX);
  const ttlToken = (v) => {
    if (v === null) return '-';
    if (typeof v === 'number' || typeof v === 'bigint') return lo <= v && v <= hi ? 'ttl' : `ttl!${v}`;
    return token(v);
  };
  const line = ([k, v, t]) => `${token(k)} ${token(v)} ${ttlToken(t)}`;
  const byKey = (a, b) => Buffer.compare(a[0], b[0]);
  const out = [];
  const db = await connect();
  try {
    const count = (await db.execute('SELECT COUNT(*) FROM kv WHERE key LIKE ?', ['x:%'])).scalar();
    out.push(typeof count === 'number' || typeof count === 'bigint' ? `count ${count}` : `count ${token(count)}`);
    const scan = (await db.execute('SELECT key, value, ttl FROM kv WHERE key LIKE ?', ['x:%'])).rows.slice().sort(byKey);
    for (const r of scan) out.push(`scan ${line(r)}`);
    const keys = scan.map((r) => r[0]);
    for (const k of keys) {
      const rows = (await db.execute('SELECT key, value, ttl FROM kv WHERE key = ?', [k])).rows;
      if (rows.length !== 1) throw new Error(`point read of ${k.toString('hex')}: ${rows.length} rows`);
      out.push(`point ${line(rows[0])}`);
    }
    const marks = keys.map(() => '?').join(', ');
    const rows = (await db.execute(`SELECT key, value, ttl FROM kv WHERE key IN (${marks})`, keys)).rows.slice().sort(byKey);
    for (const r of rows) out.push(`in ${line(r)}`);
  } finally {
    await db.close();
  }
  // One write of the whole dump; exit only once it is flushed.
  await new Promise((resolve, reject) => process.stdout.write(out.map((l) => l + '\n').join(''), (e) => (e ? reject(e) : resolve())));
}

async function main() {
  const args = process.argv.slice(2);
  if (args[0] === 'write' && args.length === 3) await write(args[1], args[2]);
  else if (args[0] === 'read' && args.length === 1) await read();
  else throw new Error('usage: cross.js write SPEC PREFIX | cross.js read');
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : e);
  process.exit(1);
});
