#!/usr/bin/env node
// Connect, write, read back, pipeline, write conditionally, count, handle a missing key.
//
//   VELOCITY_PASSWORD=… node examples/quickstart.js [--plaintext] [--accept-new-host]
//
// Where and as whom it connects comes from the environment, as for velocity-cli:
// VELOCITY_HOST (default 127.0.0.1), VELOCITY_PORT (7411), VELOCITY_USER (admin) and
// VELOCITY_PASSWORD (asked for when unset): the defaults are what scripts/quickstart.sh sets up.
// --host, --port and --user override them. Copied into a project that has run
// `npm install velocity-client` (or the packed tarball), it runs as it is.

'use strict';
const velocity = require('velocity-client');

// The quick start's server and user (scripts/quickstart.sh).
const DEFAULTS = { VELOCITY_HOST: '127.0.0.1', VELOCITY_PORT: '7411', VELOCITY_USER: 'admin' };

function arg(name) {
  const i = process.argv.indexOf(`--${name}`);
  return i < 0 ? undefined : process.argv[i + 1];
}

/** The password, read from the terminal without echo, or the first line of standard input. */
function askPassword(prompt) {
  const readline = require('readline');
  return new Promise((resolve) => {
    const tty = process.stdin.isTTY;
    const rl = readline.createInterface({ input: process.stdin, output: tty ? process.stderr : undefined, terminal: tty });
    if (tty) {
      process.stderr.write(prompt);
      rl._writeToOutput = () => {}; // no echo
    }
    let answered = false;
    rl.once('line', (line) => { answered = true; rl.close(); if (tty) process.stderr.write('\n'); resolve(line); });
    rl.once('close', () => { if (!answered) resolve(''); });
  });
}

async function settings() {
  const defaulted = [];
  const pick = (given, name) => {
    if (given !== undefined) return given;
    if (process.env[name]) return process.env[name];
    defaulted.push(`${name}=${DEFAULTS[name]}`);
    return DEFAULTS[name];
  };
  const host = pick(arg('host'), 'VELOCITY_HOST');
  const portText = pick(arg('port'), 'VELOCITY_PORT');
  const port = Number(portText);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`VELOCITY_PORT is not a port number: ${portText}`);
  const user = pick(arg('user'), 'VELOCITY_USER');
  if (defaulted.length) console.error(`not set, so the quick start's defaults: ${defaulted.join(', ')}`);
  let password = process.env.VELOCITY_PASSWORD;
  if (!password) {
    console.error(`VELOCITY_PASSWORD is not set: asking for ${user}'s password (scripts/quickstart.sh printed admin's)`);
    password = await askPassword(`password for ${user}: `);
  }
  return { host, port, user, password };
}

async function main() {
  const { host, port, user, password } = await settings();
  const db = await velocity.connect({
    host,
    port,
    user,
    password,
    tls: !process.argv.includes('--plaintext'),
    acceptNewHost: process.argv.includes('--accept-new-host'),
  });
  try {
    console.log(`connected to ${db.serverInfo.server} at ${host}:${port} as ${user}, ${db.fingerprint}`);
    await db.execute('INSERT INTO kv (key, value, ttl) VALUES (?, ?, ?)', ['greeting', 'hello, world', 60]);
    const r = await db.execute('SELECT value FROM kv WHERE key = ?', ['greeting']);
    console.log('greeting =', r.scalar().toString());

    const keys = Array.from({ length: 1000 }, (_, i) => `example:${String(i).padStart(4, '0')}`);
    const done = await db.pipeline(keys.map((k, i) => ['INSERT INTO kv (key, value) VALUES (?, ?)', [k, `value ${i}`]]));
    console.log('pipelined', done.length, 'inserts');
    for (const [key, value] of (await db.execute("SELECT key, value FROM kv WHERE key LIKE 'example:%' LIMIT 3")).text()) {
      console.log(' ', key, '=', value);
    }

    // Conditional writes and a counter, one round trip each (docs/protocol.md).
    const first = await db.insertIfAbsent('example:lock', 'worker-7', 30); // true: the key was absent
    const second = await db.insertIfAbsent('example:lock', 'worker-8'); // false: worker-7 holds it
    console.log(`lock: first try ${first ? 'won' : 'lost'}, second try ${second ? 'won' : 'lost'}`);
    const handed = await db.cas('example:lock', 'worker-7', 'worker-8'); // true: it held worker-7
    console.log(`lock handed from worker-7 to worker-8: ${handed ? 'yes' : 'no'}`);
    console.log('visits =', await db.incr('example:visits'), 'then', await db.incr('example:visits', 2)); // 1 then 3

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
