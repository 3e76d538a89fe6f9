'use strict';
// OUTCOME_UNKNOWN, which statements count as reads, seed lists, and what is sent again after
// SERVER_OVERLOADED or a lost connection. The retry rules run against a scripted server in this
// process, so that each case (a reply withheld, a connection cut between two requests) is exact.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('fs');
const net = require('net');
const path = require('path');
const crypto = require('crypto');
const velocity = require('..');
const p = require('../lib/protocol');
const { errorFor } = require('../lib/errors');
const { isRead, parseSeed, seedList } = require('../lib/client');
const { tmpDir } = require('./helpers');

test('OUTCOME_UNKNOWN (0x0009) has its class', () => {
  assert.equal(velocity.CODES.OutcomeUnknown, 0x0009);
  const e = errorFor(9, 'the write reached the cluster but its outcome is unknown');
  assert.ok(e instanceof velocity.OutcomeUnknown);
  assert.ok(e instanceof velocity.VelocityError);
  assert.ok(!(e instanceof velocity.ServerOverloaded));
  assert.equal(e.code, 9);
  assert.equal(e.name, 'OutcomeUnknown');
  assert.equal(new velocity.OutcomeUnknown('made by the client').code, 9);
  // Codes beyond the table are still not guessed at.
  assert.ok(errorFor(10, 'x') instanceof velocity.UnknownServerError);
});

test('reads are SELECT and SHOW, after blanks and comments', () => {
  const reads = [
    'SELECT value FROM kv WHERE key = 1', 'select count(*) from kv', 'sElEcT 1', 'SHOW STATS', 'show status;',
    '  \t\r\n SELECT 1', '-- a comment\nSELECT 1', '/* c */SELECT 1', '/* a /* nested */ still */ SHOW SLOWLOG',
    '--\n--x\n  /**/ select', 'SELECT/**/value FROM kv', 'SHOW;',
  ];
  const writes = [
    "INSERT INTO kv (key, value) VALUES ('a', 'b')", "UPDATE kv SET value = 'x' WHERE key = 'a'", "DELETE FROM kv WHERE key = 'a'",
    "insert into kv (key, value) values ('select', 'show')", '', '   ', '-- SELECT 1', '/* SELECT 1 */', '/* unterminated SELECT 1',
    '/* a /* b */ SELECT 1', 'SELECTED', 'SHOWS', 'SELECT_1', '(SELECT 1)', '\fSELECT 1', '\u00a0SELECT 1', ';SELECT 1',
    "-- SELECT\nINSERT INTO kv (key, value) VALUES ('a', 'b')", "WITH x AS (SELECT 1) DELETE FROM kv",
  ];
  for (const sql of reads) assert.equal(isRead(sql), true, JSON.stringify(sql));
  for (const sql of writes) assert.equal(isRead(sql), false, JSON.stringify(sql));
});

test('seed lists', () => {
  assert.deepEqual(parseSeed('10.0.0.1:7412', 7411), { host: '10.0.0.1', port: 7412 });
  assert.deepEqual(parseSeed('db.example', 7411), { host: 'db.example', port: 7411 });
  assert.deepEqual(parseSeed('[::1]:7413', 7411), { host: '::1', port: 7413 });
  assert.deepEqual(parseSeed('::1', 7411), { host: '::1', port: 7411 });
  assert.deepEqual(parseSeed({ host: 'h', port: 9, fingerprint: 'SHA256:x' }, 7411), { host: 'h', port: 9, fingerprint: 'SHA256:x' });
  assert.deepEqual(seedList({ hosts: ['a:1', 'b'], port: 7500 }), [{ host: 'a', port: 1 }, { host: 'b', port: 7500 }]);
  assert.deepEqual(seedList({ hosts: 'a:1, b:2' }), [{ host: 'a', port: 1 }, { host: 'b', port: 2 }]);
  // Without hosts, host and port mean what they always meant.
  assert.deepEqual(seedList({}), [{ host: '127.0.0.1', port: 7411 }]);
  assert.deepEqual(seedList({ host: 'h', port: 5 }), [{ host: 'h', port: 5 }]);
  for (const bad of [{ hosts: [] }, { hosts: ['a:0'] }, { hosts: ['a:x'] }, { hosts: [':7411'] }, { hosts: [null] }, { hosts: ['a'], host: 'b' }]) {
    assert.throws(() => seedList(bad), velocity.UsageError, JSON.stringify(bad));
  }
});

// -- a scripted server ----------------------------------------------------------------------------

const affected = (n) => {
  const b = Buffer.alloc(14);
  b.writeBigUInt64LE(BigInt(n), 6);
  return p.encodeFrame(p.T.RESPONSE, b);
};
const value = (v) => {
  const name = Buffer.from('value');
  const data = Buffer.from(v);
  const b = Buffer.alloc(2 + 2 + name.length + 4 + 1 + 4 + data.length + 8);
  let o = b.writeUInt16LE(1, 0);
  o = b.writeUInt16LE(name.length, o);
  o += name.copy(b, o);
  o = b.writeUInt32LE(1, o);
  o = b.writeUInt8(1, o);
  o = b.writeUInt32LE(data.length, o);
  data.copy(b, o);
  return p.encodeFrame(p.T.RESPONSE, b);
};
const codeMessage = (type, code, message) => {
  const m = Buffer.from(message);
  const b = Buffer.alloc(4 + m.length);
  b.writeUInt16LE(code, 0);
  b.writeUInt16LE(m.length, 2);
  m.copy(b, 4);
  return p.encodeFrame(type, b);
};
const error = (code, message) => codeMessage(p.T.ERROR, code, message);

function serverInfo() {
  const name = Buffer.from('fake/0');
  const b = Buffer.alloc(66 + name.length);
  let o = b.writeUInt8(1, 0);
  o = b.writeUInt8(name.length, o);
  o += name.copy(b, o);
  o += crypto.randomBytes(32).copy(b, o); // fingerprint
  o += 16; // auth salt
  o = b.writeUInt32LE(19456, o);
  o = b.writeUInt32LE(2, o);
  o = b.writeUInt8(1, o);
  o = b.writeUInt32LE(1 << 20, o);
  o = b.writeUInt16LE(1, o);
  b.writeUInt8(0x02, o);
  return p.encodeFrame(p.T.SERVER_INFO, b);
}

/**
 * A plaintext server that logs nobody in (the client connects anonymously) and answers each
 * COMMAND with what `script(sql, n)` returns, n counting this server's commands from 1: a frame,
 * 'cut' (destroy the connection) or null (no reply, for now).
 */
async function scripted(script) {
  const info = serverInfo();
  const s = { commands: [], sockets: new Set() };
  s.server = net.createServer((sock) => {
    s.sockets.add(sock);
    sock.on('close', () => s.sockets.delete(sock));
    sock.on('error', () => {});
    const d = new p.FrameDecoder(1 << 20);
    sock.on('data', (chunk) => {
      d.feed(chunk);
      for (let f = d.nextFrame(); f !== null && !sock.destroyed; f = d.nextFrame()) {
        const [type, payload] = f;
        if (type === p.T.HELLO) sock.write(info);
        else if (type === p.T.PING) sock.write(p.encodeFrame(p.T.PONG, payload));
        else if (type === p.T.DISCONNECT) sock.end();
        else if (type === p.T.COMMAND) {
          const sql = payload.toString();
          s.commands.push(sql);
          const out = script(sql, s.commands.length, sock);
          if (out === 'cut') sock.destroy();
          else if (out) sock.write(out);
        }
      }
    });
  });
  await new Promise((r) => s.server.listen(0, '127.0.0.1', r));
  s.port = s.server.address().port;
  s.address = `127.0.0.1:${s.port}`;
  s.close = () => {
    for (const sock of s.sockets) sock.destroy();
    return new Promise((r) => s.server.close(r));
  };
  return s;
}

const dir = tmpDir();
test.after(() => fs.rmSync(dir, { recursive: true, force: true }));
const knownHosts = () => path.join(dir, crypto.randomBytes(6).toString('hex'));
const open = (hosts, opts = {}) => velocity.connect({
  hosts: hosts.map((s) => s.address), tls: false, knownHosts: knownHosts(), acceptNewHost: true, retryBackoffMs: 1, ...opts,
});

const INSERT = "INSERT INTO kv (key, value) VALUES ('k', 'v')";
const SELECT = "SELECT value FROM kv WHERE key = 'k'";
const OVERLOADED = 'no leader for this range now; nothing was changed: retry';

test('SERVER_OVERLOADED is retried, reads and writes, a few times', async () => {
  const s = await scripted((sql, n) => (n % 3 !== 0 ? error(7, OVERLOADED) : sql.startsWith('INSERT') ? affected(1) : value('v')));
  try {
    const db = await open([s]);
    assert.equal((await db.execute(INSERT)).affected, 1);
    assert.deepEqual((await db.execute(SELECT)).text(), [['v']]);
    assert.equal(s.commands.length, 6);
    await db.close();
  } finally {
    await s.close();
  }
  const always = await scripted(() => error(7, OVERLOADED));
  try {
    const db = await open([always], { retries: 2 });
    await assert.rejects(db.execute(INSERT), (e) => e instanceof velocity.ServerOverloaded && e.message === OVERLOADED);
    assert.equal(always.commands.length, 3); // the first try and 2 retries
    await db.close();
  } finally {
    await always.close();
  }
});

test('a write the server may have partly applied is not sent again', async () => {
  const messages = [
    'out of memory: the write needs more than the memory limit (--max-memory) leaves, and eviction could not make room; 2 of its rows were written before it',
    'a shard is not answering',
  ];
  const s = await scripted((sql, n) => error(7, messages[(n - 1) % 2]));
  try {
    const db = await open([s]);
    for (const m of messages) await assert.rejects(db.execute(INSERT), (e) => e instanceof velocity.ServerOverloaded && e.message === m);
    assert.equal(s.commands.length, 2);
    // A read changes nothing, so it is retried whatever the message.
    s.commands.length = 0;
    await assert.rejects(db.execute(SELECT), velocity.ServerOverloaded);
    assert.equal(s.commands.length, 4);
    await db.close();
  } finally {
    await s.close();
  }
});

test("the server's OUTCOME_UNKNOWN is passed on, not retried", async () => {
  const s = await scripted(() => error(9, 'the write reached the cluster but its outcome is unknown'));
  try {
    const db = await open([s]);
    await assert.rejects(db.incr('hits'), (e) => e instanceof velocity.OutcomeUnknown && e.code === 9 && /outcome is unknown/.test(e.message));
    assert.equal(s.commands.length, 1);
    await db.close();
  } finally {
    await s.close();
  }
});

test('a lost connection: reads go to the next seed, sent writes are OutcomeUnknown', async () => {
  // a answers its first command and withholds the rest until the fifth, on which it cuts the
  // connection: the second to fifth were sent and never answered.
  const a = await scripted((sql, n) => (n === 1 ? value('from a') : n === 5 ? 'cut' : null));
  const b = await scripted((sql) => (/^(SELECT|SHOW)/.test(sql) ? value('from b') : affected(1)));
  try {
    const db = await open([a, b]);
    assert.equal(db.address, a.address);
    const out = await db.pipeline([SELECT, INSERT, SELECT, "UPDATE kv SET value = 'w' WHERE key = 'k'", 'SHOW STATUS'], { raiseOnError: false });
    assert.deepEqual(out[0].text(), [['from a']]); // answered before the cut: kept
    assert.ok(out[1] instanceof velocity.OutcomeUnknown && out[1].code === 9, String(out[1]));
    assert.ok(out[1].cause instanceof velocity.Disconnected);
    assert.match(out[1].message, new RegExp(`${a.address}.*may or may not have been applied`));
    assert.deepEqual(out[2].text(), [['from b']]);
    assert.ok(out[3] instanceof velocity.OutcomeUnknown);
    assert.deepEqual(out[4].text(), [['from b']]);
    assert.equal(db.address, b.address);
    assert.deepEqual(a.commands.slice(1), [INSERT, SELECT, "UPDATE kv SET value = 'w' WHERE key = 'k'", 'SHOW STATUS']);
    assert.deepEqual(b.commands, [SELECT, 'SHOW STATUS']); // never the writes
    await db.close();
  } finally {
    await a.close();
    await b.close();
  }
});

test('execute after a lost connection: a write not yet sent goes to the next seed', async () => {
  const a = await scripted(() => value('from a'));
  const b = await scripted(() => affected(1));
  try {
    const db = await open([a, b]);
    await db.execute(SELECT);
    for (const sock of a.sockets) sock.destroy();
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(db.closed, false);
    assert.equal((await db.execute(INSERT)).affected, 1);
    assert.deepEqual(b.commands, [INSERT]);
    // Concurrent requests issued while disconnected wait for the same dial and keep their order.
    for (const sock of b.sockets) sock.destroy();
    await new Promise((r) => setTimeout(r, 50));
    await Promise.all(['1', '2', '3'].map((k) => db.execute(`INSERT INTO kv (key, value) VALUES ('${k}', 'v')`)));
    assert.deepEqual(a.commands.slice(1), ['1', '2', '3'].map((k) => `INSERT INTO kv (key, value) VALUES ('${k}', 'v')`));
    await db.close();
    assert.equal(db.closed, true);
    await assert.rejects(db.execute(SELECT), velocity.Disconnected);
  } finally {
    await a.close();
    await b.close();
  }
});

test('retries are bounded when no seed answers', async () => {
  const a = await scripted((sql, n) => (n === 1 ? value('x') : 'cut'));
  try {
    const db = await open([a], { retries: 2 });
    await db.execute(SELECT);
    await a.close();
    const t = Date.now();
    await assert.rejects(db.execute(SELECT), (e) => e instanceof velocity.Disconnected && /cannot connect/.test(e.message));
    assert.ok(Date.now() - t < 5000);
    // Not sent, so a write gets the connection's error, not OutcomeUnknown.
    await assert.rejects(db.execute(INSERT), (e) => e instanceof velocity.Disconnected);
    await db.close();
  } finally {
    await a.close().catch(() => {});
  }
});

test('several seeds none of which answers: one error naming each', async () => {
  const ports = [];
  for (let i = 0; i < 2; i++) {
    const s = await scripted(() => null);
    ports.push(s.port);
    await s.close();
  }
  const err = await velocity.connect({ hosts: ports.map((x) => `127.0.0.1:${x}`), knownHosts: knownHosts() }).catch((e) => e);
  assert.ok(err instanceof velocity.Disconnected, String(err));
  assert.equal(err.errors.length, 2);
  for (const x of ports) assert.ok(err.message.includes(`127.0.0.1:${x}`), err.message);
  // Refused, over TLS too: a Disconnected, with no hint about TLS (nothing was there to speak it).
  assert.ok(err.errors.every((e) => e instanceof velocity.Disconnected && !/TLS/.test(e.message)), err.message);
});

test('a single host and port: no reconnect, no retry, as before', async () => {
  let cut = true;
  const s = await scripted((sql, n) => (n === 1 ? error(7, OVERLOADED) : cut ? 'cut' : value('v')));
  try {
    const db = await velocity.connect({ port: s.port, tls: false, knownHosts: knownHosts(), acceptNewHost: true });
    await assert.rejects(db.execute(INSERT), velocity.ServerOverloaded);
    await assert.rejects(db.execute(INSERT), (e) => e instanceof velocity.Disconnected && !(e instanceof velocity.OutcomeUnknown));
    cut = false;
    await assert.rejects(db.execute(SELECT), velocity.Disconnected);
    assert.equal(db.closed, true);
    assert.equal(s.commands.length, 2);
    // reconnect: true gives a single host the seed list's behaviour.
    cut = true;
    const again = await velocity.connect({ port: s.port, tls: false, knownHosts: knownHosts(), acceptNewHost: true, reconnect: true, retryBackoffMs: 1 });
    await assert.rejects(again.execute(INSERT), velocity.OutcomeUnknown);
    cut = false;
    assert.deepEqual((await again.execute(SELECT)).text(), [['v']]);
    await again.close();
  } finally {
    await s.close();
  }
});

test('a DISCONNECT that ends the session is not followed by a reconnect', async () => {
  const s = await scripted((sql, n, sock) => {
    sock.write(codeMessage(p.T.DISCONNECT, 8, 'user removed'));
    sock.end();
    return null;
  });
  try {
    const db = await open([s]);
    await assert.rejects(db.execute(SELECT), (e) => e instanceof velocity.Disconnected && e.code === 8);
    assert.equal(db.closed, true);
    await assert.rejects(db.ping(), (e) => e instanceof velocity.Disconnected && e.code === 8);
    assert.equal(s.commands.length, 1);
  } finally {
    await s.close();
  }
});
