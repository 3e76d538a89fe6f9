"""Velocity: the reference Python client.

    import velocity

    with velocity.connect("127.0.0.1", 7411, user="alice", password="…", accept_new_host=True) as db:
        db.execute("INSERT INTO kv (key, value) VALUES (?, ?)", ["user:1", "alice"])
        print(db.execute("SELECT value FROM kv WHERE key = ?", ["user:1"]).scalar())  # b'alice'
"""

from .client import Connection, Pipeline, connect, derive_credential, __version__
from .errors import (
    Disconnected,
    InvalidCommand,
    InvalidCredentials,
    KeyNotFound,
    OutcomeUnknown,
    ProtocolError,
    RateLimited,
    ServerOverloaded,
    StorageError,
    TrustError,
    Unauthorized,
    UnknownServerError,
    UsageError,
    VelocityError,
)
from .protocol import Result, ServerInfo, bind, fingerprint_string, quote, text

__all__ = [
    "connect",
    "Connection",
    "Pipeline",
    "Result",
    "ServerInfo",
    "derive_credential",
    "quote",
    "bind",
    "text",
    "fingerprint_string",
    "VelocityError",
    "InvalidCredentials",
    "RateLimited",
    "InvalidCommand",
    "KeyNotFound",
    "StorageError",
    "ProtocolError",
    "ServerOverloaded",
    "Unauthorized",
    "OutcomeUnknown",
    "UnknownServerError",
    "Disconnected",
    "TrustError",
    "UsageError",
    "__version__",
]
