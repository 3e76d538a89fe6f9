'use strict';
// insertIfAbsent, cas and incr against the real velocityd: what each resolves to, what the server
// refuses, and that racing connections lose no update.

const test = require('node:test');
const assert = require('node:assert/strict');
const velocity = require('..');
const { PASSWORD, withServer } = require('./helpers');

const I64_MAX = (1n << 63n) - 1n;
const I64_MIN = -(1n << 63n);

const valueOf = async (db, key) => (await db.execute('SELECT value FROM kv WHERE key = ?', [key])).scalar();
const ttlOf = async (db, key) => (await db.execute('SELECT ttl FROM kv WHERE key = ?', [key])).scalar();

/** n connections to s, logged in with one Argon2id derivation. */
async function connections(s, n) {
  const first = await s.alice();
  const credential = await velocity.deriveCredential(first.serverInfo, 'alice', PASSWORD);
  const rest = await Promise.all(Array.from({ length: n - 1 }, () => s.connect({ user: 'alice', credential })));
  return [first, ...rest];
}

for (const mode of ['tls', 'plaintext']) {
  const extra = mode === 'tls' ? [] : ['--plaintext'];

  test(`insertIfAbsent (${mode})`, () => withServer({ cores: 2, extra }, async (s) => {
    const db = await s.alice();
    assert.equal(await db.insertIfAbsent('lock', 'worker-7'), true);
    assert.equal(await db.insertIfAbsent('lock', 'worker-8'), false);
    assert.deepEqual(await valueOf(db, 'lock'), Buffer.from('worker-7'));
    // With a TTL; a live key keeps its value and its TTL when the second try loses.
    const lease = Buffer.from([0x6c, 0xff]);
    assert.equal(await db.insertIfAbsent(lease, Buffer.from([0, 0x31]), 100), true);
    assert.equal(await db.insertIfAbsent(lease, 'two', 5n), false);
    assert.deepEqual(await valueOf(db, lease), Buffer.from([0, 0x31]));
    const ttl = await ttlOf(db, lease);
    assert.ok(ttl > 5 && ttl <= 100, String(ttl));
    // Quoting: hostile keys and values stay literals.
    const hostile = "'); DELETE FROM kv WHERE key LIKE '%";
    assert.equal(await db.insertIfAbsent(hostile, hostile), true);
    assert.equal((await valueOf(db, hostile)).toString(), hostile);
    assert.equal((await db.execute('SELECT COUNT(*) FROM kv')).scalar(), 3);
    // The server's own checks stay the server's: ttl = 0 is refused.
    await assert.rejects(db.insertIfAbsent('zero', 'v', 0), velocity.InvalidCommand);
    for (const bad of ['10', -1, 1.5, true]) {
      await assert.rejects(db.insertIfAbsent('k', 'v', bad), velocity.UsageError, String(bad));
    }
    await assert.rejects(db.insertIfAbsent(7, 'v'), velocity.UsageError);
    await assert.rejects(db.insertIfAbsent('k', null), velocity.UsageError);
    await db.close();
  }));

  test(`cas (${mode})`, () => withServer({ cores: 2, extra }, async (s) => {
    const db = await s.alice();
    assert.equal(await db.cas('missing', 'a', 'b'), false);
    await assert.rejects(valueOf(db, 'missing'), velocity.KeyNotFound);
    await db.execute("INSERT INTO kv (key, value, ttl) VALUES ('owner', 'worker-7', 100)");
    assert.equal(await db.cas('owner', 'worker-8', 'worker-9'), false);
    assert.equal((await valueOf(db, 'owner')).toString(), 'worker-7');
    assert.equal(await db.cas('owner', 'worker-7', 'worker-8'), true);
    assert.equal((await valueOf(db, 'owner')).toString(), 'worker-8');
    // The TTL is kept.
    const ttl = await ttlOf(db, 'owner');
    assert.ok(ttl > 0 && ttl <= 100, String(ttl));
    // Exact bytes: a prefix or a different byte does not match.
    assert.equal(await db.cas('owner', 'worker-', 'x'), false);
    await db.execute('INSERT INTO kv (key, value) VALUES (?, ?)', ['bin', Buffer.from([0, 0xff, 0x27])]);
    assert.equal(await db.cas('bin', Buffer.from([0, 0xfe, 0x27]), 'no'), false);
    assert.equal(await db.cas('bin', new Uint8Array([0, 0xff, 0x27]), "it's"), true);
    assert.equal((await valueOf(db, 'bin')).toString(), "it's");
    await assert.rejects(db.cas('bin', 1, 'x'), velocity.UsageError);
    await db.close();
  }));

  test(`incr (${mode})`, () => withServer({ cores: 2, extra }, async (s) => {
    const db = await s.alice();
    assert.equal(await db.incr('hits'), 1);
    assert.equal(await db.incr('hits'), 2);
    assert.equal(await db.incr('hits', 10), 12);
    assert.equal(await db.incr('hits', -20), -8);
    assert.equal(await db.incr('hits', 0n), -8);
    assert.equal((await valueOf(db, 'hits')).toString(), '-8');
    assert.equal(await db.incr('down', -5), -5);
    // A number while it is a safe integer, a bigint beyond (as INT values are given).
    assert.equal(await db.incr('big', Number.MAX_SAFE_INTEGER), Number.MAX_SAFE_INTEGER);
    assert.equal(await db.incr('big'), BigInt(Number.MAX_SAFE_INTEGER) + 1n);
    // The extremes of the step, both written without a sign in the statement.
    assert.equal(await db.incr('min', I64_MIN), I64_MIN);
    assert.equal(await db.incr('max', I64_MAX), I64_MAX);
    // Overflow is the server's INVALID_COMMAND, and changes nothing.
    await assert.rejects(db.incr('max'), (e) => e instanceof velocity.InvalidCommand && /overflow/.test(e.message));
    assert.equal((await valueOf(db, 'max')).toString(), String(I64_MAX));
    await assert.rejects(db.incr('min', -1), (e) => e instanceof velocity.InvalidCommand && /overflow/.test(e.message));
    assert.equal(await db.incr('max', -1), I64_MAX - 1n);
    // A value that is not an integer: refused, unchanged, TTL included.
    await db.execute("INSERT INTO kv (key, value, ttl) VALUES ('name', 'alice', 100)");
    await assert.rejects(db.incr('name'), (e) => e instanceof velocity.InvalidCommand && /not an integer/.test(e.message));
    assert.equal((await valueOf(db, 'name')).toString(), 'alice');
    const ttl = await ttlOf(db, 'name');
    assert.ok(ttl > 0 && ttl <= 100, String(ttl));
    // The connection is still in step after the errors.
    assert.equal(await db.incr('hits'), -7);
    // A step that is not a signed 64-bit integer never reaches the server.
    for (const bad of [I64_MAX + 1n, I64_MIN - 1n, 2 ** 53, 1.5, '1', true, null]) {
      await assert.rejects(db.incr('hits', bad), velocity.UsageError, String(bad));
    }
    assert.equal((await valueOf(db, 'hits')).toString(), '-7');
    await db.close();
  }));
}

test('8 connections racing incr on one key lose nothing', () => withServer({ cores: 2 }, async (s) => {
  const conns = await connections(s, 8);
  try {
    // Each connection runs its 500 increments one after another; the 8 run at once.
    const seen = await Promise.all(conns.map(async (db) => {
      const mine = [];
      for (let i = 0; i < 500; i++) mine.push(await db.incr('counter'));
      return mine;
    }));
    assert.equal((await valueOf(conns[0], 'counter')).toString(), '4000');
    // Every increment saw its own new value: 1 to 4000, each once.
    assert.deepEqual(seen.flat().sort((a, b) => a - b), Array.from({ length: 4000 }, (_, i) => i + 1));
  } finally {
    await Promise.all(conns.map((db) => db.close()));
  }
}));

test('8 connections racing a cas loop on one key lose nothing', () => withServer({ cores: 2 }, async (s) => {
  const conns = await connections(s, 8);
  try {
    await conns[0].execute("INSERT INTO kv (key, value) VALUES ('n', '0')");
    await Promise.all(conns.map(async (db) => {
      for (let i = 0; i < 200; i++) {
        for (;;) { // read, compare-and-set the next value, retry when another won
          const cur = (await valueOf(db, 'n')).toString();
          if (await db.cas('n', cur, String(Number(cur) + 1))) break;
        }
      }
    }));
    assert.equal((await valueOf(conns[0], 'n')).toString(), '1600');
  } finally {
    await Promise.all(conns.map((db) => db.close()));
  }
}));

test('concurrent incr calls pipelined on one connection are each applied once', () => withServer({}, async (s) => {
  const db = await s.alice();
  const got = await Promise.all(Array.from({ length: 1000 }, () => db.incr('c', -1)));
  assert.deepEqual(got.sort((a, b) => b - a), Array.from({ length: 1000 }, (_, i) => -(i + 1)));
  assert.equal(await db.incr('c', 0), -1000);
  await db.close();
}));
