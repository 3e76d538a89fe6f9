//! The Velocity wire protocol (profile §1–§4, §6): frames, messages, result sets and wire codes.
//!
//! Sans-I/O: callers hand in bytes and get back values, or hand in values and get bytes
//! appended to their buffer. An incomplete frame is a value (`Decoded::Incomplete`), not an error.

pub mod codes;
pub mod frame;
pub mod message;
pub mod result;
mod wire;
pub(crate) use wire::truncate_utf8;

pub use codes::{AuthStatus, ErrorCode};
pub use frame::{begin_frame, decode_frame, encode_frame, end_frame, peek_frame, Decoded, Frame, FrameError};
pub use message::{AuthRequest, Hello, Message, MessageType, PayloadError, Peer, ServerInfo};
pub use result::{ResultSet, ResultSetWriter, Value};

/// Bytes 0–3 of every frame: "VELO".
pub const MAGIC: [u8; 4] = *b"VELO";
/// The only protocol version this implementation speaks.
pub const VERSION: u8 = 1;

pub use message::encode_error;
pub use result::{
    encode_affected_response, encode_single_value_response, encode_value_response, single_value_response_len,
};
