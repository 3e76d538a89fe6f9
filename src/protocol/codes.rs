//! Stable wire codes (profile §6). These numbers are the public contract: they reveal nothing
//! about the server's internals, which go to the logs instead.

use std::fmt;

/// ERROR and DISCONNECT codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    Success = 0x0000,
    InvalidCredentials = 0x0001,
    RateLimited = 0x0002,
    InvalidCommand = 0x0003,
    KeyNotFound = 0x0004,
    StorageError = 0x0005,
    ProtocolError = 0x0006,
    ServerOverloaded = 0x0007,
    Unauthorized = 0x0008,
    /// An extension (docs/protocol.md): a cluster node's write whose outcome it never learned.
    OutcomeUnknown = 0x0009,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 10] = [
        ErrorCode::Success,
        ErrorCode::InvalidCredentials,
        ErrorCode::RateLimited,
        ErrorCode::InvalidCommand,
        ErrorCode::KeyNotFound,
        ErrorCode::StorageError,
        ErrorCode::ProtocolError,
        ErrorCode::ServerOverloaded,
        ErrorCode::Unauthorized,
        ErrorCode::OutcomeUnknown,
    ];

    pub fn from_u16(code: u16) -> Option<ErrorCode> {
        Self::ALL.iter().copied().find(|c| *c as u16 == code)
    }

    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::Success => "SUCCESS",
            ErrorCode::InvalidCredentials => "INVALID_CREDENTIALS",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::InvalidCommand => "INVALID_COMMAND",
            ErrorCode::KeyNotFound => "KEY_NOT_FOUND",
            ErrorCode::StorageError => "STORAGE_ERROR",
            ErrorCode::ProtocolError => "PROTOCOL_ERROR",
            ErrorCode::ServerOverloaded => "SERVER_OVERLOADED",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::OutcomeUnknown => "OUTCOME_UNKNOWN",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// AUTH_RESPONSE status (profile §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum AuthStatus {
    Success = 0x0000,
    InvalidCredentials = 0x0001,
    RateLimited = 0x0002,
}

impl AuthStatus {
    pub fn from_u16(code: u16) -> Option<AuthStatus> {
        match code {
            0 => Some(AuthStatus::Success),
            1 => Some(AuthStatus::InvalidCredentials),
            2 => Some(AuthStatus::RateLimited),
            _ => None,
        }
    }
}
