//! The two error types: `WireError` is what a client sees (a stable code and a message that
//! reveals nothing internal); internal errors (I/O, configuration) carry detail for the logs
//! and are mapped to a wire code at the boundary.

use crate::protocol::ErrorCode;
use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireError {
    pub code: ErrorCode,
    pub message: String,
}

impl WireError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        WireError { code, message: message.into() }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidCommand, message)
    }

    pub fn not_found() -> Self {
        Self::new(ErrorCode::KeyNotFound, "key not found")
    }

    /// The write could not be made durable; it was not applied. The cause is in the server log.
    pub fn storage() -> Self {
        Self::new(ErrorCode::StorageError, "the write could not be made durable and was not applied")
    }

    /// A read that would have seen a write which then could not be made durable: it is not
    /// answered with what it saw, since that write was taken back.
    pub fn storage_read() -> Self {
        Self::new(
            ErrorCode::StorageError,
            "a write this read would have seen could not be made durable; the read was not answered: retry it",
        )
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for WireError {}
