'use strict';
// examples/quickstart.js against the real velocityd: where it connects comes from VELOCITY_HOST,
// VELOCITY_PORT, VELOCITY_USER and VELOCITY_PASSWORD, with the quick start's defaults, said aloud.
// It requires 'velocity-client' by name, as a project that installed the package does: here the
// package resolves itself (package.json "exports").

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('fs');
const path = require('path');
const { spawn } = require('child_process');
const { Server, velocityd, PASSWORD } = require('./helpers');

const EXAMPLE = path.join(__dirname, '..', 'examples', 'quickstart.js');

function runExample(s, env, args = [], input = '') {
  const home = path.join(s.dir, 'home');
  fs.mkdirSync(home, { recursive: true });
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('VELOCITY_')));
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [EXAMPLE, '--accept-new-host', ...args], { env: { ...base, HOME: home, ...env } });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => { stdout += d; });
    p.stderr.on('data', (d) => { stderr += d; });
    p.on('close', (status) => resolve({ status, stdout, stderr }));
    p.stdin.end(input);
  });
}

function checkRan(out, user) {
  assert.equal(out.status, 0, out.stderr);
  const lines = out.stdout.split('\n');
  assert.match(lines[0], new RegExp(`^connected to velocityd.* as ${user}, SHA256:`), out.stdout);
  for (const l of ['greeting = hello, world', 'pipelined 1000 inserts', '  example:0000 = value 0',
    'lock: first try won, second try lost', 'lock handed from worker-7 to worker-8: yes', 'visits = 1 then 3']) {
    assert.ok(lines.includes(l), `no ${JSON.stringify(l)} in\n${out.stdout}`);
  }
  assert.ok(lines.some((l) => l.startsWith('missing key: ') && l.endsWith('(wire code 4)')), out.stdout);
}

test('the example takes its server and user from the environment', async () => {
  const s = await Server.start();
  try {
    const out = await runExample(s, { VELOCITY_HOST: '127.0.0.1', VELOCITY_PORT: String(s.port), VELOCITY_USER: 'alice', VELOCITY_PASSWORD: PASSWORD });
    checkRan(out, 'alice');
    assert.ok(out.stdout.includes(`at 127.0.0.1:${s.port} as alice`), out.stdout);
    assert.ok(!out.stderr.includes('not set'), out.stderr);
    const db = await s.alice();
    assert.equal((await db.execute("SELECT COUNT(*) FROM kv WHERE key LIKE 'example:%'")).scalar(), 0);
    await db.close();
  } finally {
    await s.destroy();
  }
});

test('the example says which defaults it took, and asks for a missing password', async () => {
  const s = await Server.start();
  try {
    velocityd(['user', 'add', 'admin', '--password-stdin'], s.dataDir, "admin's password");
    await new Promise((r) => setTimeout(r, 1500)); // the server reloads its users within a second
    let out = await runExample(s, { VELOCITY_PORT: String(s.port), VELOCITY_PASSWORD: "admin's password" });
    checkRan(out, 'admin');
    assert.ok(out.stderr.includes("not set, so the quick start's defaults: VELOCITY_HOST=127.0.0.1, VELOCITY_USER=admin"), out.stderr);
    out = await runExample(s, { VELOCITY_PORT: String(s.port), VELOCITY_USER: 'alice' }, [], `${PASSWORD}\n`);
    checkRan(out, 'alice');
    assert.ok(out.stderr.includes("VELOCITY_PASSWORD is not set: asking for alice's password"), out.stderr);
    // Flags win over the environment.
    out = await runExample(s, { VELOCITY_PORT: '1', VELOCITY_USER: 'nobody', VELOCITY_PASSWORD: PASSWORD }, ['--port', String(s.port), '--user', 'alice']);
    checkRan(out, 'alice');
    out = await runExample(s, { VELOCITY_PORT: 'not-a-port', VELOCITY_PASSWORD: 'x' });
    assert.notEqual(out.status, 0);
    assert.ok(out.stderr.includes('VELOCITY_PORT is not a port number: not-a-port'), out.stderr);
  } finally {
    await s.destroy();
  }
});
