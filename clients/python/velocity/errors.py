"""Exceptions. Every error the server sends carries its stable wire code (profile section 6);
there is one class per code so that callers can ``except velocity.KeyNotFound``."""

from __future__ import annotations

from typing import Dict, Optional, Type


class VelocityError(Exception):
    """Base class. ``code`` is the wire code, or ``None`` for errors raised by the client itself."""

    code: Optional[int] = None

    def __init__(self, message: str, code: Optional[int] = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message


class InvalidCredentials(VelocityError):
    code = 0x0001


class RateLimited(VelocityError):
    code = 0x0002


class InvalidCommand(VelocityError):
    code = 0x0003


class KeyNotFound(VelocityError):
    code = 0x0004


class StorageError(VelocityError):
    code = 0x0005


class ProtocolError(VelocityError):
    """The server reported a framing violation, or sent one (the connection is then closed)."""

    code = 0x0006


class ServerOverloaded(VelocityError):
    code = 0x0007


class Unauthorized(VelocityError):
    code = 0x0008


class OutcomeUnknown(VelocityError):
    """A write that may or may not have been applied: a cluster node says so (OUTCOME_UNKNOWN,
    its leader failed or timed out midway), or the connection was lost after the write was sent.
    It is not a failure: read the key to find out, or repeat the write if doing it twice is
    harmless. The client never repeats it by itself."""

    code = 0x0009


class UnknownServerError(VelocityError):
    """An ERROR with a code this client does not know (from a newer server)."""


class Disconnected(VelocityError):
    """The server sent DISCONNECT (shutdown, idle timeout, too many failed logins), or closed."""

    def __init__(self, message: str, code: Optional[int] = None, reason: str = "") -> None:
        super().__init__(message, code)
        self.reason = reason


class TrustError(VelocityError):
    """The server's identity could not be trusted: unknown host, changed or mismatched key."""


class UsageError(VelocityError, ValueError):
    """The caller's input cannot be sent (too long, unsupported parameter type)."""


ERRORS_BY_CODE: Dict[int, Type[VelocityError]] = {
    cls.code: cls  # type: ignore[misc]
    for cls in (
        InvalidCredentials,
        RateLimited,
        InvalidCommand,
        KeyNotFound,
        StorageError,
        ProtocolError,
        ServerOverloaded,
        Unauthorized,
        OutcomeUnknown,
    )
}

CODE_NAMES: Dict[int, str] = {
    0x0001: "INVALID_CREDENTIALS",
    0x0002: "RATE_LIMITED",
    0x0003: "INVALID_COMMAND",
    0x0004: "KEY_NOT_FOUND",
    0x0005: "STORAGE_ERROR",
    0x0006: "PROTOCOL_ERROR",
    0x0007: "SERVER_OVERLOADED",
    0x0008: "UNAUTHORIZED",
    0x0009: "OUTCOME_UNKNOWN",
}


def error_for(code: int, message: str) -> VelocityError:
    """The exception for an ERROR frame (or a failed AUTH_RESPONSE)."""
    cls = ERRORS_BY_CODE.get(code)
    if cls is None:
        return UnknownServerError(f"server error 0x{code:04x}: {message}", code)
    return cls(message, code)
