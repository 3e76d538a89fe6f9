//! The two error types: `WireError` is what a client sees (a stable code and a message that
//! reveals nothing internal); `Error` is what happened inside, and where, for the logs and for
//! `main` (which prints it once): it never reaches a client.

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

    /// A result that would not fit in one frame of `max_payload` bytes.
    pub fn too_large(bytes: usize, max_payload: u32) -> Self {
        Self::invalid(format!(
            "result too large ({bytes} bytes; max_payload is {max_payload}): add LIMIT and page with WHERE key > 'last key'"
        ))
    }

    /// The write could not be made durable; it was not applied. The cause is in the server log.
    pub fn storage() -> Self {
        Self::new(ErrorCode::StorageError, "the write could not be made durable and was not applied")
    }

    /// A write refused by the memory limit (`--max-memory`): no room, and eviction could not
    /// make it. SERVER_OVERLOADED, as a resource of the server's is exhausted; `written` rows of
    /// the statement (on shards that had room, or in slices before the limit) were applied.
    pub fn out_of_memory(written: u64) -> Self {
        let applied = if written == 0 {
            "nothing was changed".to_string()
        } else {
            format!("{written} of its rows were written before it")
        };
        Self::new(
            ErrorCode::ServerOverloaded,
            format!("out of memory: the write needs more than the memory limit (--max-memory) leaves, and eviction could not make room; {applied}"),
        )
    }

    /// A read that would have seen a write which then could not be made durable: it is not
    /// answered with what it saw, since that write was taken back.
    /// A cluster node's write that reached its range's leader and was not heard of again: it
    /// may have been applied or not (OUTCOME_UNKNOWN, an extension: docs/protocol.md). A client
    /// must not take it for a failure; reading the key tells.
    pub fn outcome_unknown() -> Self {
        Self::new(
            ErrorCode::OutcomeUnknown,
            "the write reached the cluster but its outcome is unknown (a leader failed or timed out midway): it may or may not have been applied",
        )
    }

    /// A cluster node could not run a statement now and changed nothing (no leader for a
    /// range, or it moved): SERVER_OVERLOADED, retry.
    pub fn unavailable(why: &str, write: bool) -> Self {
        let what = if write { "nothing was changed" } else { "the read was not answered" };
        Self::new(ErrorCode::ServerOverloaded, format!("{why}; {what}: retry"))
    }

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

/// What went wrong inside the server: what, and where. For the logs and for `main`; a client
/// sees at most a `WireError`.
#[derive(Debug)]
pub enum Error {
    /// The command line asks for what cannot be.
    Config(String),
    /// Another process holds what this one needs: the data directory, or the listen address.
    Busy(String),
    /// The data directory cannot be used as it is: damaged or unreadable files, a layout this
    /// version does not know, a missing or wrong encryption key.
    Data(String),
    /// A core could not come up (its log, audit log, users, or epoll set).
    Core { shard: usize, what: String },
    /// The executors could not be started or ended badly.
    Runtime(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(m) | Error::Busy(m) | Error::Data(m) | Error::Runtime(m) => f.write_str(m),
            Error::Core { shard, what } => write!(f, "core {shard}: {what}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<Error> for String {
    fn from(e: Error) -> String {
        e.to_string()
    }
}
