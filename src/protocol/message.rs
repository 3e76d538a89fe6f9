//! Typed messages (profile §3). Each frame type has one variant; `decode` needs to know who sent
//! the frame, because STATS means a request from a client and a result set from a server, and a
//! type that a side never receives is a protocol error there.

use super::codes::{AuthStatus, ErrorCode};
use super::frame::{begin_frame, end_frame};
use super::result::ResultSet;
use super::wire::{put_bytes8, put_str16, put_str8, Reader};
use crate::limits::{CREDENTIAL_BYTES_MAX, PING_PAYLOAD_BYTES_MAX, USERNAME_BYTES_MAX};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum MessageType {
    Hello = 0x01,
    ServerInfo = 0x02,
    AuthRequest = 0x03,
    AuthResponse = 0x04,
    Disconnect = 0x05,
    Command = 0x10,
    Response = 0x11,
    Error = 0x12,
    Ping = 0x20,
    Pong = 0x21,
    Stats = 0x22,
}

impl MessageType {
    pub fn from_u8(b: u8) -> Option<MessageType> {
        use MessageType::*;
        Some(match b {
            0x01 => Hello,
            0x02 => ServerInfo,
            0x03 => AuthRequest,
            0x04 => AuthResponse,
            0x05 => Disconnect,
            0x10 => Command,
            0x11 => Response,
            0x12 => Error,
            0x20 => Ping,
            0x21 => Pong,
            0x22 => Stats,
            _ => return None,
        })
    }

    /// Whether `sender` may send this type.
    pub fn sent_by(self, sender: Peer) -> bool {
        use MessageType::*;
        match self {
            Disconnect | Stats => true,
            Hello | AuthRequest | Command | Ping => sender == Peer::Client,
            ServerInfo | AuthResponse | Response | Error | Pong => sender == Peer::Server,
        }
    }
}

/// Which end of the connection sent a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    Client,
    Server,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    pub versions: Vec<u8>,
    pub client: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerInfo {
    pub version: u8,
    pub server: String,
    pub fingerprint: [u8; 32],
    pub auth_salt: [u8; 16],
    pub argon2_m_kib: u32,
    pub argon2_t: u32,
    pub argon2_p: u8,
    pub max_payload: u32,
    pub shards: u16,
    pub flags: u8,
}

impl ServerInfo {
    pub const FLAG_TLS: u8 = 0x01;
    pub const FLAG_AUTH_REQUIRED: u8 = 0x02;
}

/// AUTH_REQUEST. The credential is raw bytes: the 32-byte Argon2id output for method 1, the
/// API key's bytes for method 2.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthRequest {
    pub method: u8,
    pub username: String,
    pub credential: Vec<u8>,
}

impl AuthRequest {
    pub const METHOD_PASSWORD: u8 = 1;
    pub const METHOD_API_KEY: u8 = 2;
}

// The credential is a password equivalent: never print it.
impl fmt::Debug for AuthRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthRequest")
            .field("method", &self.method)
            .field("username", &self.username)
            .field("credential", &format_args!("<{} bytes>", self.credential.len()))
            .finish()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Hello(Hello),
    ServerInfo(ServerInfo),
    AuthRequest(AuthRequest),
    AuthResponse {
        status: u16,
        message: String,
    },
    Disconnect {
        code: u16,
        reason: String,
    },
    /// One SQL statement.
    Command(String),
    Response(ResultSet),
    Error {
        code: u16,
        message: String,
    },
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    /// STATS from a client: a request with an empty payload.
    StatsRequest,
    /// STATS from a server: a result set of (name, value) rows.
    StatsReply(ResultSet),
}

/// Why a frame's payload is not a valid message. None of these break framing, so the
/// connection stays open after the ERROR (profile §1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayloadError {
    UnknownType(u8),
    /// A known type that this side never receives (e.g. RESPONSE sent to a server).
    WrongDirection(u8),
    Malformed {
        kind: u8,
        reason: &'static str,
    },
}

impl fmt::Display for PayloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PayloadError::UnknownType(t) => write!(f, "unknown message type 0x{t:02x}"),
            PayloadError::WrongDirection(t) => {
                write!(f, "message type 0x{t:02x} is not accepted in this direction")
            }
            PayloadError::Malformed { kind, reason } => {
                write!(f, "malformed payload of type 0x{kind:02x}: {reason}")
            }
        }
    }
}

impl std::error::Error for PayloadError {}

impl Message {
    pub fn kind(&self) -> MessageType {
        match self {
            Message::Hello(_) => MessageType::Hello,
            Message::ServerInfo(_) => MessageType::ServerInfo,
            Message::AuthRequest(_) => MessageType::AuthRequest,
            Message::AuthResponse { .. } => MessageType::AuthResponse,
            Message::Disconnect { .. } => MessageType::Disconnect,
            Message::Command(_) => MessageType::Command,
            Message::Response(_) => MessageType::Response,
            Message::Error { .. } => MessageType::Error,
            Message::Ping(_) => MessageType::Ping,
            Message::Pong(_) => MessageType::Pong,
            Message::StatsRequest | Message::StatsReply(_) => MessageType::Stats,
        }
    }

    pub fn error(code: ErrorCode, message: impl Into<String>) -> Message {
        Message::Error { code: code as u16, message: message.into() }
    }

    pub fn auth_response(status: AuthStatus, message: impl Into<String>) -> Message {
        Message::AuthResponse { status: status as u16, message: message.into() }
    }

    /// Decode the payload of a frame of type `kind` that `sender` sent.
    pub fn decode(kind: u8, payload: &[u8], sender: Peer) -> Result<Message, PayloadError> {
        let t = MessageType::from_u8(kind).ok_or(PayloadError::UnknownType(kind))?;
        if !t.sent_by(sender) {
            return Err(PayloadError::WrongDirection(kind));
        }
        let malformed = |reason| PayloadError::Malformed { kind, reason };
        let mut r = Reader::new(payload);
        let msg = match t {
            MessageType::Hello => {
                let n = r.u8("version count").map_err(malformed)? as usize;
                let versions = r.take(n, "versions").map_err(malformed)?.to_vec();
                let client = r.str8("client name").map_err(malformed)?.to_owned();
                Message::Hello(Hello { versions, client })
            }
            MessageType::ServerInfo => {
                let si = (|| {
                    Ok::<_, &'static str>(ServerInfo {
                        version: r.u8("version")?,
                        server: r.str8("server")?.to_owned(),
                        fingerprint: r.take(32, "fingerprint")?.try_into().unwrap(),
                        auth_salt: r.take(16, "auth_salt")?.try_into().unwrap(),
                        argon2_m_kib: r.u32("argon2_m_kib")?,
                        argon2_t: r.u32("argon2_t")?,
                        argon2_p: r.u8("argon2_p")?,
                        max_payload: r.u32("max_payload")?,
                        shards: r.u16("shards")?,
                        flags: r.u8("flags")?,
                    })
                })()
                .map_err(malformed)?;
                Message::ServerInfo(si)
            }
            MessageType::AuthRequest => {
                let method = r.u8("method").map_err(malformed)?;
                let username = r.str8("username").map_err(malformed)?;
                if username.len() > USERNAME_BYTES_MAX {
                    return Err(malformed("username longer than 64 bytes"));
                }
                let credential = r.bytes8("credential").map_err(malformed)?;
                if credential.len() > CREDENTIAL_BYTES_MAX {
                    return Err(malformed("credential longer than 128 bytes"));
                }
                Message::AuthRequest(AuthRequest {
                    method,
                    username: username.to_owned(),
                    credential: credential.to_vec(),
                })
            }
            MessageType::AuthResponse => {
                let status = r.u16("status").map_err(malformed)?;
                let message = r.str16("message").map_err(malformed)?.to_owned();
                Message::AuthResponse { status, message }
            }
            MessageType::Disconnect => {
                let code = r.u16("code").map_err(malformed)?;
                let reason = r.str16("reason").map_err(malformed)?.to_owned();
                Message::Disconnect { code, reason }
            }
            MessageType::Command => {
                let sql = std::str::from_utf8(payload).map_err(|_| malformed("SQL is not UTF-8"))?;
                return Ok(Message::Command(sql.to_owned()));
            }
            MessageType::Response => {
                return ResultSet::decode(payload).map(Message::Response).map_err(malformed)
            }
            MessageType::Error => {
                let code = r.u16("code").map_err(malformed)?;
                let message = r.str16("message").map_err(malformed)?.to_owned();
                Message::Error { code, message }
            }
            MessageType::Ping | MessageType::Pong => {
                if payload.len() > PING_PAYLOAD_BYTES_MAX {
                    return Err(malformed("PING payload longer than 64 bytes"));
                }
                return Ok(if t == MessageType::Ping {
                    Message::Ping(payload.to_vec())
                } else {
                    Message::Pong(payload.to_vec())
                });
            }
            MessageType::Stats => {
                return match sender {
                    Peer::Client if payload.is_empty() => Ok(Message::StatsRequest),
                    Peer::Client => Err(malformed("STATS request must be empty")),
                    Peer::Server => ResultSet::decode(payload).map(Message::StatsReply).map_err(malformed),
                }
            }
        };
        r.finish("trailing bytes").map_err(malformed)?;
        Ok(msg)
    }

    /// Append this message as one whole frame.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = begin_frame(out, self.kind() as u8);
        match self {
            Message::Hello(h) => {
                put_bytes8(out, &h.versions);
                put_str8(out, &h.client);
            }
            Message::ServerInfo(s) => {
                out.push(s.version);
                put_str8(out, &s.server);
                out.extend_from_slice(&s.fingerprint);
                out.extend_from_slice(&s.auth_salt);
                out.extend_from_slice(&s.argon2_m_kib.to_le_bytes());
                out.extend_from_slice(&s.argon2_t.to_le_bytes());
                out.push(s.argon2_p);
                out.extend_from_slice(&s.max_payload.to_le_bytes());
                out.extend_from_slice(&s.shards.to_le_bytes());
                out.push(s.flags);
            }
            Message::AuthRequest(a) => {
                out.push(a.method);
                put_str8(out, &a.username);
                put_bytes8(out, &a.credential);
            }
            Message::AuthResponse { status: code, message }
            | Message::Disconnect { code, reason: message }
            | Message::Error { code, message } => {
                out.extend_from_slice(&code.to_le_bytes());
                put_str16(out, message);
            }
            Message::Command(sql) => out.extend_from_slice(sql.as_bytes()),
            Message::Response(rs) | Message::StatsReply(rs) => rs.encode(out),
            Message::Ping(b) | Message::Pong(b) => out.extend_from_slice(b),
            Message::StatsRequest => {}
        }
        end_frame(out, start);
    }

    pub fn to_frame(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }
}

/// Append an ERROR frame without building a `Message` (the server's common error path).
pub fn encode_error(out: &mut Vec<u8>, code: ErrorCode, message: &str) {
    let start = begin_frame(out, MessageType::Error as u8);
    out.extend_from_slice(&(code as u16).to_le_bytes());
    put_str16(out, message);
    end_frame(out, start);
}
