'use strict';
// Exceptions. Every error the server sends carries its stable wire code (profile section 6);
// one class per code, so callers can test `err instanceof velocity.KeyNotFound` or `err.code`.

class VelocityError extends Error {
  constructor(message, code = null) {
    super(message);
    this.name = this.constructor.name;
    this.code = code;
  }
}

const CODES = {
  InvalidCredentials: 0x0001,
  RateLimited: 0x0002,
  InvalidCommand: 0x0003,
  KeyNotFound: 0x0004,
  StorageError: 0x0005,
  ProtocolError: 0x0006,
  ServerOverloaded: 0x0007,
  Unauthorized: 0x0008,
  // Extension (cluster mode): the write reached the cluster but no one can say whether it was
  // applied. The client raises it too, for a write whose connection died after it was sent.
  OutcomeUnknown: 0x0009,
};

const classes = {};
const byCode = new Map();
for (const [name, code] of Object.entries(CODES)) {
  // A named class per code whose instances carry the code by default.
  const cls = {
    [name]: class extends VelocityError {
      constructor(message, c = code) {
        super(message, c);
      }
    },
  }[name];
  classes[name] = cls;
  byCode.set(code, cls);
}

/** An ERROR with a code this client does not know (from a newer server). */
class UnknownServerError extends VelocityError {}

/** The server sent DISCONNECT or closed the connection. */
class Disconnected extends VelocityError {
  constructor(message, code = null, reason = '') {
    super(message, code);
    this.reason = reason;
  }
}

/** The server's identity could not be trusted: unknown host, changed or mismatched key. */
class TrustError extends VelocityError {}

/** The caller's input cannot be sent (too long, unsupported parameter type). */
class UsageError extends VelocityError {}

/** A framing violation; `kind` as the shared vectors name it, `fatal` when the connection must close. */
class FrameError extends classes.ProtocolError {
  constructor(kind, message, fatal) {
    super(message);
    this.kind = kind;
    this.fatal = fatal;
  }
}

function errorFor(code, message) {
  const cls = byCode.get(code);
  return cls ? new cls(message, code) : new UnknownServerError(`server error 0x${code.toString(16).padStart(4, '0')}: ${message}`, code);
}

module.exports = {
  VelocityError,
  ...classes,
  UnknownServerError,
  Disconnected,
  TrustError,
  UsageError,
  FrameError,
  errorFor,
  CODES,
};
