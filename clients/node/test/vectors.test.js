'use strict';
// The language-neutral vectors in tests/vectors/frames.json, byte for byte.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('fs');
const path = require('path');
const crypto = require('crypto');
const velocity = require('..');
const p = require('../lib/protocol');
const { errorFor, FrameError } = require('../lib/errors');

const V = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', '..', 'tests', 'vectors', 'frames.json'), 'utf8'));
const hex = (h) => Buffer.from(h, 'hex');
const value = (v) => ('null' in v ? null : 'int' in v ? v.int : hex(v.bytes_hex));

function encodeClient(f) {
  const m = f.message;
  switch (f.type) {
    case 'PING': return p.encodePing(hex(m.payload_hex));
    case 'HELLO': return p.encodeHello(m.client, m.versions);
    case 'COMMAND': return p.encodeCommand(m.sql);
    case 'AUTH_REQUEST': return p.encodeAuthRequest(m.method, m.username, hex(m.credential_hex));
    case 'DISCONNECT': return p.encodeDisconnect(m.code, m.reason);
    case 'STATS': return p.encodeStats();
    default: throw new Error(f.type);
  }
}

for (const f of V.frames.filter((x) => x.direction === 'client')) {
  test(`encode: ${f.name}`, () => assert.equal(encodeClient(f).toString('hex'), f.hex));
}

for (const f of V.frames.filter((x) => x.direction === 'server')) {
  test(`decode: ${f.name}`, () => {
    const d = new p.FrameDecoder(1 << 20);
    d.feed(hex(f.hex));
    const [type, payload] = d.nextFrame();
    assert.equal(type, p.T[f.type]);
    assert.equal(d.buffered(), 0);
    const m = f.message;
    if (f.type === 'RESPONSE' || f.type === 'STATS') {
      const r = p.parseResult(payload);
      assert.deepEqual(r.columns, m.columns);
      assert.deepEqual(r.rows, m.rows.map((row) => row.map(value)));
      assert.equal(r.affected, m.affected);
    } else if (f.type === 'ERROR') {
      assert.deepEqual(p.parseCodeMessage(payload), [m.code, m.message]);
      const e = errorFor(m.code, m.message);
      assert.equal(e.code, m.code);
      assert.ok(e instanceof velocity.VelocityError);
    } else if (f.type === 'AUTH_RESPONSE') {
      assert.deepEqual(p.parseCodeMessage(payload), [m.status, m.message]);
    } else if (f.type === 'DISCONNECT') {
      assert.deepEqual(p.parseCodeMessage(payload), [m.code, m.reason]);
    } else if (f.type === 'PONG') {
      assert.equal(payload.toString('hex'), m.payload_hex);
    } else if (f.type === 'SERVER_INFO') {
      const i = p.parseServerInfo(payload);
      assert.deepEqual(
        [i.version, i.server, i.fingerprint.toString('hex'), i.authSalt.toString('hex'), i.argon2MKib, i.argon2T, i.argon2P, i.maxPayload, i.shards, i.flags],
        [m.version, m.server, m.fingerprint_hex, m.auth_salt_hex, m.argon2_m_kib, m.argon2_t, m.argon2_p, m.max_payload, m.shards, m.flags],
      );
    } else {
      throw new Error(f.type);
    }
  });
}

test('frames split at every byte are incomplete, not errors', () => {
  for (const f of V.frames) {
    const raw = hex(f.hex);
    const d = new p.FrameDecoder(1 << 20);
    for (let i = 0; i < raw.length - 1; i++) {
      d.feed(raw.subarray(i, i + 1));
      assert.equal(d.nextFrame(), null, `${f.name} at ${i}`);
    }
    d.feed(raw.subarray(raw.length - 1));
    assert.notEqual(d.nextFrame(), null);
  }
});

for (const f of V.incomplete) {
  test(`incomplete: ${f.name}`, () => {
    const d = new p.FrameDecoder();
    d.feed(hex(f.hex));
    assert.equal(d.nextFrame(), null);
  });
}

// Framing violations are the same on either side; payload rules for frames a client never
// receives are the server's concern.
for (const f of V.invalid.filter((x) => ['bad_magic', 'bad_version', 'too_long', 'bad_checksum', 'unknown_type'].includes(x.error))) {
  test(`invalid: ${f.name}`, () => {
    const d = new p.FrameDecoder(f.limit);
    d.feed(hex(f.hex));
    assert.throws(() => d.nextFrame(), (e) => e instanceof FrameError && e.kind === f.error && e.fatal === f.close && e.code === 6);
  });
}

test('truncated and oversized result sets are malformed', () => {
  const payload = hex(V.frames[4].hex).subarray(10, -4);
  assert.deepEqual(p.parseResult(payload).scalar(), Buffer.from('alice'));
  for (let cut = 0; cut < payload.length; cut++) assert.throws(() => p.parseResult(payload.subarray(0, cut)), FrameError);
  assert.throws(() => p.parseResult(hex('01000100' + '76' + 'ffffffff')), FrameError);
});

test('credential vector', async () => {
  const c = V.credential;
  const info = { authSalt: hex(c.auth_salt_hex), argon2MKib: c.argon2_m_kib, argon2T: c.argon2_t, argon2P: c.argon2_p };
  const cred = await velocity.deriveCredential(info, c.username, c.password);
  assert.equal(cred.toString('hex'), c.credential_hex);
  assert.equal(crypto.createHash('sha256').update(cred).digest('hex'), c.stored_hex);
});

test('hostile Argon2id parameters are refused', async () => {
  const info = { authSalt: Buffer.alloc(16), argon2MKib: 1 << 30, argon2T: 2, argon2P: 1 };
  await assert.rejects(velocity.deriveCredential(info, 'alice', 'pw'), velocity.ProtocolError);
});

test('quote and bind', () => {
  assert.equal(velocity.quote("it's"), "'it''s'");
  assert.equal(velocity.quote(Buffer.from([0, 255])), "X'00ff'");
  assert.equal(velocity.quote('line\nbreak'), `X'${Buffer.from('line\nbreak').toString('hex')}'`);
  assert.equal(velocity.quote(42), '42');
  assert.equal(velocity.quote(null), 'NULL');
  assert.equal(velocity.bind("SELECT value FROM kv WHERE key = ? AND key <> '?'", ["a'b"]), "SELECT value FROM kv WHERE key = 'a''b' AND key <> '?'");
  assert.throws(() => velocity.bind('SELECT ?', []), RangeError);
  assert.throws(() => velocity.bind('SELECT ?', [1, 2]), RangeError);
  assert.throws(() => velocity.quote(1.5), TypeError);
  assert.throws(() => velocity.quote(-1), RangeError);
});

test('fingerprint string matches the Rust format', () => {
  assert.equal(velocity.fingerprintString(Buffer.alloc(32)), `SHA256:${'A'.repeat(43)}`);
});
