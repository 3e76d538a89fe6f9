'use strict';
// End to end against the real velocityd built from this repository, over TLS and plain TCP.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('fs');
const path = require('path');
const { spawnSync } = require('child_process');
const velocity = require('..');
const p = require('../lib/protocol');
const { Server, velocityd, bin, tmpDir, PASSWORD, RO_PASSWORD, withServer } = require('./helpers');

const buf = (s) => Buffer.from(s);

// A connection's slot is returned when the server has seen it close, a moment after the client
// closed it: a connection opened at once may still find the server full. Wait for the slot.
async function admitted(s) {
  const deadline = Date.now() + 10000;
  for (;;) {
    try {
      return await s.alice();
    } catch (e) {
      if (!(e instanceof velocity.ServerOverloaded) || Date.now() > deadline) throw e;
      await new Promise((res) => setTimeout(res, 20));
    }
  }
}

for (const mode of ['tls', 'plaintext']) {
  const extra = mode === 'tls' ? [] : ['--plaintext'];

  test(`seed examples in order (${mode})`, () => withServer({ cores: 2, extra }, async (s) => {
    const db = await s.alice();
    await assert.rejects(db.execute("SELECT value FROM kv WHERE key = 'user:1';"), (e) => e instanceof velocity.KeyNotFound && e.code === 4);
    assert.equal((await db.execute("INSERT INTO kv (key, value) VALUES ('user:1', 'alice');")).affected, 1);
    assert.deepEqual((await db.execute("SELECT value FROM kv WHERE key = 'user:1';")).scalar(), buf('alice'));
    assert.equal((await db.execute("UPDATE kv SET value = 'alice_updated' WHERE key = 'user:1';")).affected, 1);
    assert.deepEqual((await db.execute("SELECT value FROM kv WHERE key = 'user:1';")).text(), [['alice_updated']]);
    assert.equal((await db.execute("DELETE FROM kv WHERE key = 'user:1';")).affected, 1);
    assert.equal((await db.execute("DELETE FROM kv WHERE key = 'user:1';")).affected, 0);
    await assert.rejects(db.execute("UPDATE kv SET value = 'x' WHERE key = 'user:1';"), velocity.KeyNotFound);
    const batch = "INSERT INTO kv (key, value) VALUES \n  ('user:1', 'alice'),\n  ('user:2', 'bob'),\n  ('user:3', 'charlie');";
    assert.equal((await db.execute(batch)).affected, 3);
    const like = await db.execute("SELECT key, value FROM kv WHERE key LIKE 'user:%' LIMIT 100;");
    assert.deepEqual(like.columns, ['key', 'value']);
    assert.deepEqual(like.text(), [['user:1', 'alice'], ['user:2', 'bob'], ['user:3', 'charlie']]);
    const range = await db.execute("SELECT key, value FROM kv WHERE key >= 'user:1' AND key <= 'user:9';");
    assert.deepEqual(range.rows, like.rows);
    const count = await db.execute('SELECT COUNT(*) FROM kv;');
    assert.deepEqual([count.columns, count.rows], [['count'], [[3]]]);
    assert.equal((await db.execute('SHOW STATS;')).toObject().keys, 3);
    const status = (await db.execute('SHOW STATUS;')).toObject();
    assert.equal(status.shards, 2);
    assert.equal(status.tls.toString(), mode === 'tls' ? 'TLS 1.3' : 'off');
    assert.equal(status.user.toString(), 'alice');
    assert.equal(db.serverInfo.tls, mode === 'tls');
    assert.deepEqual(await db.ping(buf('hi')), buf('hi'));
    assert.deepEqual((await db.stats()).columns, ['name', 'value']);
    await db.close();
  }));

  test(`pipelining 10,000 statements (${mode})`, () => withServer({ cores: 2, extra }, async (s) => {
    const db = await s.alice();
    const keys = Array.from({ length: 10000 }, (_, i) => `k${String(i).padStart(5, '0')}`);
    const ins = await db.pipeline(keys.map((k, i) => ['INSERT INTO kv (key, value) VALUES (?, ?)', [k, `v${i}`]]));
    assert.equal(ins.length, 10000);
    assert.ok(ins.every((r) => r.affected === 1));
    const sel = await db.pipeline([...keys.map((k) => ['SELECT value FROM kv WHERE key = ?', [k]]), "SELECT value FROM kv WHERE key = 'missing'"], { raiseOnError: false });
    assert.deepEqual(sel.slice(0, -1).map((r) => r.scalar().toString()), keys.map((_, i) => `v${i}`));
    assert.ok(sel[sel.length - 1] instanceof velocity.KeyNotFound);
    // Concurrent execute() calls are pipelined too, and settle in order.
    const concurrent = await Promise.all(keys.slice(0, 1000).map((k) => db.execute('SELECT value FROM kv WHERE key = ?', [k])));
    assert.equal(concurrent[999].scalar().toString(), 'v999');
    // The first error rejects after every reply has arrived: the connection stays in step.
    await assert.rejects(db.pipeline(['SELECT nonsense', 'SELECT COUNT(*) FROM kv']), velocity.InvalidCommand);
    assert.equal((await db.execute('SELECT COUNT(*) FROM kv')).scalar(), 10000);
    await db.close();
  }));

  test(`user data cannot escape its literal (${mode})`, () => withServer({ extra }, async (s) => {
    const hostile = ["'; DELETE FROM kv; --", "it's", '\u0000\u00ff binary', '\n\t', 'ключ ✓', '%_\\', '?', 'x'];
    const db = await s.alice();
    await db.execute("INSERT INTO kv (key, value) VALUES ('keep', 'me')");
    for (const h of hostile) {
      await db.execute('INSERT INTO kv (key, value) VALUES (?, ?)', [h, h]);
      assert.deepEqual((await db.execute('SELECT value FROM kv WHERE key = ?', [h])).text(), [[h]]);
      const raw = Buffer.concat([buf(h), Buffer.from([0xfe])]);
      await db.execute(`INSERT INTO kv (key, value) VALUES (${velocity.quote(raw)}, ${velocity.quote(raw)})`);
      assert.deepEqual((await db.execute('SELECT value FROM kv WHERE key = ?', [raw])).scalar(), raw);
    }
    assert.deepEqual((await db.execute("SELECT value FROM kv WHERE key = 'keep'")).scalar(), buf('me'));
    assert.equal((await db.execute('SELECT COUNT(*) FROM kv')).scalar(), 1 + 2 * hostile.length);
    await db.close();
  }));
}

test('every error code the client can provoke', () => withServer({ extra: ['--plaintext', '--rate-limit-conn', '5:5', '--max-connections', '3'] }, async (s) => {
  await assert.rejects(s.connect({ user: 'alice', password: 'wrong' }), (e) => e instanceof velocity.InvalidCredentials && e.code === 1);
  let db = await s.alice();
  await assert.rejects(db.execute('SELECT value FORM kv'), (e) => e instanceof velocity.InvalidCommand && e.code === 3 && /FORM/.test(e.message));
  await assert.rejects(db.execute("UPDATE kv SET value = 'x' WHERE key = 'absent'"), (e) => e instanceof velocity.KeyNotFound && e.code === 4);
  // An unknown frame type is answered with PROTOCOL_ERROR and the connection stays open.
  const r = await db.sendRaw(p.encodeFrame(0x7f, Buffer.alloc(0)));
  assert.ok(r instanceof velocity.ProtocolError && r.code === 6, String(r));
  assert.deepEqual(await db.ping(buf('still here')), buf('still here'));
  const out = await db.pipeline(Array(20).fill('SELECT COUNT(*) FROM kv'), { raiseOnError: false });
  assert.ok(out.some((x) => x instanceof velocity.RateLimited && x.code === 2));
  await db.close();
  const ro = await s.connect({ user: 'reader', password: RO_PASSWORD });
  await assert.rejects(ro.execute("INSERT INTO kv (key, value) VALUES ('a', 'b')"), (e) => e instanceof velocity.Unauthorized && e.code === 8);
  await ro.close();
  const anon = await s.connect();
  await assert.rejects(anon.execute('SELECT COUNT(*) FROM kv'), velocity.Unauthorized);
  await anon.close();
  const held = [await admitted(s), await admitted(s), await admitted(s)];
  await assert.rejects(s.alice(), (e) => e instanceof velocity.ServerOverloaded && e.code === 7);
  await Promise.all(held.map((c) => c.close()));
  // A framing violation: PROTOCOL_ERROR, then the server closes.
  db = await admitted(s);
  assert.ok((await db.sendRaw(Buffer.concat([buf('VELX'), Buffer.alloc(10)]))) instanceof velocity.ProtocolError);
  await assert.rejects(db.ping(), velocity.Disconnected);
}));

test('STORAGE_ERROR when the disk is full', () => withServer({ extra: ['--plaintext', '--audit', 'off'], fsizeBytes: 24 * 1024 }, async (s) => {
  const db = await s.alice();
  let refused = -1;
  for (let i = 0; i < 1000 && refused < 0; i++) {
    try {
      await db.execute('INSERT INTO kv (key, value) VALUES (?, ?)', [`k${i}`, 'v'.repeat(200)]);
    } catch (e) {
      assert.ok(e instanceof velocity.StorageError && e.code === 5, String(e));
      refused = i;
    }
  }
  assert.ok(refused > 0);
  assert.equal((await db.execute('SELECT COUNT(*) FROM kv')).scalar(), refused);
  await assert.rejects(db.execute('SELECT value FROM kv WHERE key = ?', [`k${refused}`]), velocity.KeyNotFound);
  await db.close();
}));

test('API key login', () => withServer({ extra: ['--login-fail-threshold', '0'] }, async (s) => {
  const key = velocityd(['apikey', 'create', '--user', 'alice'], s.dataDir).trim();
  let db;
  for (let i = 0; i < 50 && !db; i++) {
    try {
      db = await s.connect({ apiKey: key });
    } catch (e) {
      if (!(e instanceof velocity.InvalidCredentials)) throw e;
      await new Promise((res) => setTimeout(res, 100)); // the server reloads keys within a second
    }
  }
  assert.equal((await db.execute('SHOW STATUS')).toObject().user.toString(), 'alice');
  await db.close();
  await assert.rejects(s.connect({ apiKey: 'vk_00000000_nope' }), velocity.InvalidCredentials);
}));

test('trust on first use, pinning and a changed key', async () => {
  const dir = tmpDir();
  const kh = path.join(dir, 'kh', 'known_hosts');
  let s = await Server.start();
  try {
    await assert.rejects(s.connect({ knownHosts: kh, acceptNewHost: false }), (e) => e instanceof velocity.TrustError && /unknown server/.test(e.message));
    assert.ok(!fs.existsSync(kh));
    const asked = [];
    await assert.rejects(s.connect({ knownHosts: kh, acceptNewHost: async (h, fp) => { asked.push([h, fp]); return false; } }), velocity.TrustError);
    assert.equal(asked[0][0], `127.0.0.1:${s.port}`);
    assert.ok(asked[0][1].startsWith('SHA256:'));
    const db = await s.connect({ knownHosts: kh, acceptNewHost: true, user: 'alice', password: PASSWORD });
    const fp = db.fingerprint;
    await db.close();
    const line = fs.readFileSync(kh, 'utf8');
    assert.equal(line, `127.0.0.1:${s.port} ${fp}\n`);
    assert.equal(velocityd(['fingerprint'], s.dataDir).trim(), fp);
    await (await s.connect({ knownHosts: kh, acceptNewHost: false })).close();
    await (await s.connect({ knownHosts: path.join(dir, 'other'), fingerprint: fp })).close();
    await assert.rejects(s.connect({ knownHosts: path.join(dir, 'other'), fingerprint: `SHA256:${'A'.repeat(43)}` }), /pinned/);
    // The Rust CLI trusts the file the Node client wrote.
    const cli = spawnSync(bin('velocity-cli'), ['--port', String(s.port), '-u', 'alice', '--password-stdin', '--known-hosts', kh, '-c', 'SHOW STATUS'], { input: PASSWORD, encoding: 'utf8' });
    assert.equal(cli.status, 0, cli.stderr);
    // Another server (another identity key) on the same port: refused loudly, even when new
    // hosts are accepted; the file is left alone.
    const { port } = s;
    await s.destroy();
    s = await Server.start({ port });
    await assert.rejects(s.connect({ knownHosts: kh, acceptNewHost: true }), (e) => e instanceof velocity.TrustError && /HAS CHANGED/.test(e.message) && e.message.includes(fp));
    assert.equal(fs.readFileSync(kh, 'utf8'), line);
  } finally {
    await s.destroy();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('TLS and plaintext mismatches give clear errors', async () => {
  const t = await Server.start();
  const pl = await Server.start({ extra: ['--plaintext'] });
  try {
    await assert.rejects(t.connect({ tls: false }), (e) => e instanceof velocity.ProtocolError && /tls: true/.test(e.message));
    await assert.rejects(pl.connect({ tls: true }), (e) => e instanceof velocity.ProtocolError && /tls: false/.test(e.message));
  } finally {
    await t.destroy();
    await pl.destroy();
  }
});
