'use strict';
// Seed lists and reconnecting, against the real velocityd built from this repository: a seed
// that is a closed port, a server killed (SIGKILL) and restarted on its port mid-session, and a
// node lost for good with another seed taking over.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('fs');
const net = require('net');
const path = require('path');
const velocity = require('..');
const { Server, PASSWORD, withServer } = require('./helpers');

const freePort = () => new Promise((resolve) => {
  const s = net.createServer().listen(0, '127.0.0.1', () => {
    const { port } = s.address();
    s.close(() => resolve(port));
  });
});

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// SIGSTOP reaches each of the server's threads a moment after kill() returns, and a thread still
// running could answer what is sent meanwhile: wait until every one is stopped.
async function stopped(s) {
  s.proc.kill('SIGSTOP');
  const tasks = `/proc/${s.proc.pid}/task`;
  const state = (t) => {
    try {
      const stat = fs.readFileSync(path.join(tasks, t, 'stat'), 'utf8');
      return stat[stat.lastIndexOf(')') + 2];
    } catch {
      return 'T'; // a thread that has exited answers nothing
    }
  };
  for (const deadline = Date.now() + 10000; Date.now() < deadline; await sleep(2)) {
    if (fs.readdirSync(tasks).every((t) => 'Tt'.includes(state(t)))) return;
  }
  throw new Error('velocityd did not stop');
}

const killed = (s) => {
  const gone = new Promise((r) => s.proc.once('exit', r));
  s.proc.kill('SIGKILL');
  return gone;
};

const alice = (s, hosts, opts = {}) => velocity.connect({
  hosts, tls: s.tls, knownHosts: s.knownHosts, acceptNewHost: true, user: 'alice', password: PASSWORD, ...opts,
});

for (const mode of ['tls', 'plaintext']) {
  const extra = mode === 'tls' ? [] : ['--plaintext'];

  test(`the first seed is a closed port: the client connects to the second (${mode})`, () => withServer({ extra }, async (s) => {
    const closed = await freePort();
    const db = await alice(s, [`127.0.0.1:${closed}`, { host: '127.0.0.1', port: s.port }]);
    assert.equal(db.address, `127.0.0.1:${s.port}`);
    assert.equal((await db.execute("INSERT INTO kv (key, value) VALUES ('user:1', 'alice')")).affected, 1);
    assert.deepEqual((await db.execute("SELECT value FROM kv WHERE key = 'user:1'")).text(), [['alice']]);
    assert.equal((await db.execute('SHOW STATUS')).toObject().user.toString(), 'alice');
    await db.close();
    // Every seed closed: one error that names each.
    const other = await freePort();
    const err = await alice(s, [`127.0.0.1:${closed}`, `127.0.0.1:${other}`]).catch((e) => e);
    assert.ok(err instanceof velocity.Disconnected && err.errors.length === 2, String(err));
    assert.ok(err.message.includes(`127.0.0.1:${closed}`) && err.message.includes(`127.0.0.1:${other}`), err.message);
  }));
}

test('SIGKILL and a restart on the same port mid-session: the client reconnects', async () => {
  let s = await Server.start();
  const first = s;
  try {
    const { port, dataDir } = s;
    const db = await alice(s, [`127.0.0.1:${port}`], { retries: 30, retryBackoffMs: 20 });
    assert.equal((await db.execute("INSERT INTO kv (key, value) VALUES ('k', 'before')")).affected, 1);

    // Stopped first, so that what is sent next is in flight, unanswered, when the server dies.
    await stopped(s);
    const write = assert.rejects(db.execute("INSERT INTO kv (key, value) VALUES ('w', 'maybe')"),
      (e) => e instanceof velocity.OutcomeUnknown && e.code === 9 && e.cause instanceof velocity.Disconnected);
    const read = db.execute("SELECT value FROM kv WHERE key = 'k'");
    read.catch(() => {}); // awaited below, after the restart
    const counter = assert.rejects(db.incr('hits'), velocity.OutcomeUnknown);
    await sleep(50);
    await killed(s);
    await write;
    await counter;

    // The read keeps trying while nothing listens, and is answered once the server is back.
    await sleep(200);
    s = await Server.start({ port, dataDir });
    assert.deepEqual((await read).text(), [['before']]);
    assert.equal(db.closed, false);
    assert.equal(db.address, `127.0.0.1:${port}`);

    // And later statements run on the new connection: the acknowledged write survived the kill.
    assert.deepEqual((await db.execute("SELECT value FROM kv WHERE key = 'k'")).text(), [['before']]);
    assert.equal((await db.execute("INSERT INTO kv (key, value) VALUES ('k', 'after')")).affected, 1);
    assert.deepEqual((await db.execute("SELECT value FROM kv WHERE key = 'k'")).text(), [['after']]);

    // Killed again while idle: the next SELECT finds the connection gone, reconnects, and runs.
    await killed(s);
    s = await Server.start({ port, dataDir });
    assert.deepEqual((await db.execute("SELECT value FROM kv WHERE key = 'k'")).text(), [['after']]);
    await db.close();
  } finally {
    if (s !== first) await s.destroy();
    await first.destroy();
  }
});

test('a node lost for good: the next seed takes over', async () => {
  const a = await Server.start({ extra: ['--plaintext'] });
  const b = await Server.start({ extra: ['--plaintext'] });
  try {
    const hosts = [`127.0.0.1:${a.port}`, `127.0.0.1:${b.port}`];
    // Both servers' keys go in one known-hosts file.
    const db = await alice(a, hosts);
    assert.equal(db.address, hosts[0]);
    await db.execute("INSERT INTO kv (key, value) VALUES ('on', 'a')");
    await killed(a);
    // Another server, with its own data: the statement runs there.
    await assert.rejects(db.execute("SELECT value FROM kv WHERE key = 'on'"), velocity.KeyNotFound);
    assert.equal(db.address, hosts[1]);
    await db.execute("INSERT INTO kv (key, value) VALUES ('on', 'b')");
    assert.deepEqual((await db.execute("SELECT value FROM kv WHERE key = 'on'")).text(), [['b']]);
    await db.close();
  } finally {
    await a.destroy();
    await b.destroy();
  }
});
