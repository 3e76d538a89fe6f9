#!/usr/bin/env node
// Connect, write, read back, pipeline, handle a missing key.
//
//   VELOCITY_PASSWORD=… node examples/quickstart.js --port 7411 --user alice [--plaintext] [--accept-new-host]

'use strict';
const velocity = require('..');

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i < 0 ? fallback : process.argv[i + 1];
}

async function main() {
  const db = await velocity.connect({
    host: arg('host', '127.0.0.1'),
    port: Number(arg('port', 7411)),
    user: arg('user', 'alice'),
    password: process.env.VELOCITY_PASSWORD,
    tls: !process.argv.includes('--plaintext'),
    acceptNewHost: process.argv.includes('--accept-new-host'),
  });
  try {
    console.log('connected to', db.serverInfo.server, db.fingerprint);
    await db.execute('INSERT INTO kv (key, value, ttl) VALUES (?, ?, ?)', ['greeting', 'hello, world', 60]);
    const r = await db.execute('SELECT value FROM kv WHERE key = ?', ['greeting']);
    console.log('greeting =', r.scalar().toString());

    const keys = Array.from({ length: 1000 }, (_, i) => `example:${String(i).padStart(4, '0')}`);
    const done = await db.pipeline(keys.map((k, i) => ['INSERT INTO kv (key, value) VALUES (?, ?)', [k, `value ${i}`]]));
    console.log('pipelined', done.length, 'inserts');
    for (const [key, value] of (await db.execute("SELECT key, value FROM kv WHERE key LIKE 'example:%' LIMIT 3")).text()) {
      console.log(' ', key, '=', value);
    }

    try {
      await db.execute("SELECT value FROM kv WHERE key = 'no such key'");
    } catch (e) {
      if (!(e instanceof velocity.KeyNotFound)) throw e;
      console.log(`missing key: ${e.message} (wire code ${e.code})`);
    }
    await db.execute("DELETE FROM kv WHERE key LIKE 'example:%'");
  } finally {
    await db.close();
  }
}

main().catch((e) => {
  console.error(e.message);
  process.exit(1);
});
