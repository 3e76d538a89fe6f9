'use strict';
// Velocity: the reference Node.js client.
//
//   const velocity = require('velocity-client');
//   const db = await velocity.connect({ port: 7411, user: 'alice', password: '…', acceptNewHost: true });
//   // or, for a cluster: velocity.connect({ hosts: ['10.0.0.1:7411', '10.0.0.2:7411'], user: 'alice', … })
//   await db.execute('INSERT INTO kv (key, value) VALUES (?, ?)', ['user:1', 'alice']);
//   (await db.execute('SELECT value FROM kv WHERE key = ?', ['user:1'])).scalar(); // <Buffer 61 6c 69 63 65>
//   await db.close();

const errors = require('./lib/errors');
const protocol = require('./lib/protocol');
const client = require('./lib/client');

module.exports = {
  connect: client.connect,
  Connection: client.Connection,
  deriveCredential: client.deriveCredential,
  Result: protocol.Result,
  quote: protocol.quote,
  bind: protocol.bind,
  fingerprintString: protocol.fingerprintString,
  protocol,
  VelocityError: errors.VelocityError,
  InvalidCredentials: errors.InvalidCredentials,
  RateLimited: errors.RateLimited,
  InvalidCommand: errors.InvalidCommand,
  KeyNotFound: errors.KeyNotFound,
  StorageError: errors.StorageError,
  ProtocolError: errors.ProtocolError,
  ServerOverloaded: errors.ServerOverloaded,
  Unauthorized: errors.Unauthorized,
  OutcomeUnknown: errors.OutcomeUnknown,
  UnknownServerError: errors.UnknownServerError,
  Disconnected: errors.Disconnected,
  TrustError: errors.TrustError,
  UsageError: errors.UsageError,
  CODES: errors.CODES,
  VERSION: client.VERSION,
};
