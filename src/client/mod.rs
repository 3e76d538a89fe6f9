//! The blocking Rust client: connect, handshake, derive the credential (Argon2id with the
//! server's parameters), run statements one at a time or pipelined, and read typed results.

pub mod build;
pub mod seeds;
pub mod trust;

use crate::error::WireError;
use crate::limits::{FRAME_OVERHEAD_BYTES, PREAUTH_PAYLOAD_BYTES_MAX};
use crate::protocol::{
    decode_frame, AuthRequest, AuthStatus, Decoded, ErrorCode, Hello, Message, Peer, ResultSet, ServerInfo,
    VERSION,
};
use crate::security::{derive_credential, Argon2Params};
use std::fmt;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

#[derive(Debug)]
pub enum ClientError {
    Io(std::io::Error),
    /// The server broke the protocol, or sent something this client cannot use.
    Protocol(String),
    /// The server answered a request with ERROR.
    Server(WireError),
    /// Login refused.
    Auth {
        status: u16,
        message: String,
    },
    /// The server said DISCONNECT.
    Disconnected {
        code: u16,
        reason: String,
    },
    /// The caller's input cannot be sent (too long, bad parameters).
    Usage(String),
    /// The server's identity could not be trusted (fingerprint mismatch, unknown or changed host).
    Trust(String),
    /// A write whose connection was lost after it was sent (`seeds::SeedClient`): it may or may
    /// not have been applied. `code()` says OUTCOME_UNKNOWN, as the server's own does.
    OutcomeUnknown(String),
}

impl ClientError {
    /// The wire code, when the server sent one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server(e) => Some(e.code),
            ClientError::Auth { status, .. } => ErrorCode::from_u16(*status),
            ClientError::OutcomeUnknown(_) => Some(ErrorCode::OutcomeUnknown),
            _ => None,
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Io(e) => write!(f, "I/O error: {e}"),
            ClientError::Protocol(m) => write!(f, "protocol error: {m}"),
            ClientError::Server(e) => write!(f, "{e}"),
            ClientError::Auth { message, .. } => write!(f, "login failed: {message}"),
            ClientError::Disconnected { reason, .. } => write!(f, "server disconnected: {reason}"),
            ClientError::Usage(m) => write!(f, "{m}"),
            ClientError::Trust(m) => write!(f, "server identity not trusted: {m}"),
            ClientError::OutcomeUnknown(m) => write!(f, "outcome unknown: {m}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<std::io::Error> for ClientError {
    fn from(e: std::io::Error) -> Self {
        ClientError::Io(e)
    }
}

pub type Result<T> = std::result::Result<T, ClientError>;

#[derive(Clone)]
pub enum Credentials {
    Password {
        user: String,
        password: String,
    },
    /// A credential derived earlier with [`derive`], so many connections cost one Argon2id.
    Derived {
        user: String,
        credential: [u8; 32],
    },
    ApiKey(String),
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Password { user, .. } | Credentials::Derived { user, .. } => {
                write!(f, "user {user}")
            }
            Credentials::ApiKey(_) => write!(f, "API key"),
        }
    }
}

/// Derive the method-1 credential for a server's SERVER_INFO.
pub fn derive(info: &ServerInfo, user: &str, password: &str) -> Result<[u8; 32]> {
    let params = Argon2Params { m_kib: info.argon2_m_kib, t: info.argon2_t, p: info.argon2_p };
    derive_credential(password, user, &info.auth_salt, params).map_err(ClientError::Usage)
}

/// The socket, in the clear or through TLS 1.3.
enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(t) => t,
            Stream::Tls(s) => &s.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(t) => t.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(t) => t.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(t) => t.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// Where and how to connect. TLS with trust on first use unless told otherwise.
pub struct ConnectOptions {
    pub host: String,
    pub port: u16,
    /// TLS 1.3 (default); false for a server started with `--plaintext`.
    pub tls: bool,
    pub trust: trust::Trust,
    pub timeout: Option<Duration>,
    /// Local address to connect from (e.g. one of several loopback addresses).
    pub source: Option<std::net::IpAddr>,
}

impl ConnectOptions {
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        ConnectOptions {
            host: host.into(),
            port,
            tls: true,
            trust: trust::Trust::default(),
            timeout: None,
            source: None,
        }
    }

    /// `host:port` as recorded in the known-hosts file.
    pub fn host_label(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

pub struct Client {
    stream: Stream,
    rbuf: Vec<u8>,
    rpos: usize,
    wbuf: Vec<u8>,
    info: ServerInfo,
    /// Replies not yet read for requests already sent.
    in_flight: usize,
}

/// A reply to one pipelined request.
pub type Reply = std::result::Result<ResultSet, WireError>;

impl Client {
    /// Connect, perform HELLO and check the server's identity: the caller sees SERVER_INFO
    /// before authenticating.
    pub fn open(opts: &ConnectOptions) -> Result<Client> {
        let tcp = match opts.source {
            None => TcpStream::connect((opts.host.as_str(), opts.port))?,
            Some(ip) => {
                use std::net::ToSocketAddrs;
                let to = (opts.host.as_str(), opts.port)
                    .to_socket_addrs()?
                    .next()
                    .ok_or_else(|| ClientError::Usage(format!("cannot resolve {}", opts.host)))?;
                let sock =
                    socket2::Socket::new(socket2::Domain::for_address(to), socket2::Type::STREAM, None)?;
                sock.bind(&std::net::SocketAddr::new(ip, 0).into())?;
                sock.connect(&to.into())?;
                sock.into()
            }
        };
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(opts.timeout)?;
        tcp.set_write_timeout(opts.timeout)?;
        let (stream, verifier) = if opts.tls {
            let (cfg, verifier) = crate::security::tls::client_config();
            let conn = rustls::ClientConnection::new(cfg, crate::security::tls::server_name(&opts.host))
                .map_err(|e| ClientError::Protocol(format!("TLS: {e}")))?;
            (Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp))), Some(verifier))
        } else {
            (Stream::Plain(tcp), None)
        };
        let mut c = Client {
            stream,
            rbuf: Vec::new(),
            rpos: 0,
            wbuf: Vec::new(),
            info: ServerInfo {
                version: 0,
                server: String::new(),
                fingerprint: [0; 32],
                auth_salt: [0; 16],
                argon2_m_kib: 0,
                argon2_t: 0,
                argon2_p: 0,
                max_payload: PREAUTH_PAYLOAD_BYTES_MAX,
                shards: 0,
                flags: 0,
            },
            in_flight: 0,
        };
        let hello = Message::Hello(Hello {
            versions: vec![VERSION],
            client: concat!("velocity-rs/", env!("CARGO_PKG_VERSION")).into(),
        });
        c.send_message(&hello).map_err(|e| tls_hint(e, opts.tls))?;
        let info = match c.read_message(PREAUTH_PAYLOAD_BYTES_MAX).map_err(|e| tls_hint(e, opts.tls))? {
            Message::ServerInfo(info) => info,
            other => return Err(unexpected(other)),
        };
        if info.version != VERSION {
            return Err(ClientError::Protocol(format!("server chose unsupported version {}", info.version)));
        }
        if let Some(v) = verifier {
            let seen = *v.seen.lock().expect("verifier lock");
            if seen != Some(info.fingerprint) {
                return Err(ClientError::Trust(
                    "SERVER_INFO's fingerprint is not the key that the TLS handshake presented: \
                     possible man-in-the-middle; refused"
                        .into(),
                ));
            }
        }
        trust::check(&opts.trust, &opts.host_label(), &info.fingerprint).map_err(ClientError::Trust)?;
        c.info = info;
        Ok(c)
    }

    /// Connect, check the server's identity and log in.
    pub fn connect(opts: &ConnectOptions, creds: &Credentials) -> Result<Client> {
        let mut c = Self::open(opts)?;
        c.authenticate(creds)?;
        Ok(c)
    }

    pub fn server_info(&self) -> &ServerInfo {
        &self.info
    }

    pub fn set_timeout(&self, t: Option<Duration>) -> Result<()> {
        self.stream.tcp().set_read_timeout(t)?;
        self.stream.tcp().set_write_timeout(t)?;
        Ok(())
    }

    pub fn authenticate(&mut self, creds: &Credentials) -> Result<()> {
        let req = match creds {
            Credentials::Password { user, password } => AuthRequest {
                method: AuthRequest::METHOD_PASSWORD,
                username: user.clone(),
                credential: derive(&self.info, user, password)?.to_vec(),
            },
            Credentials::Derived { user, credential } => AuthRequest {
                method: AuthRequest::METHOD_PASSWORD,
                username: user.clone(),
                credential: credential.to_vec(),
            },
            Credentials::ApiKey(k) => AuthRequest {
                method: AuthRequest::METHOD_API_KEY,
                username: String::new(),
                credential: k.as_bytes().to_vec(),
            },
        };
        self.send_message(&Message::AuthRequest(req))?;
        match self.read_message(PREAUTH_PAYLOAD_BYTES_MAX)? {
            Message::AuthResponse { status, .. } if status == AuthStatus::Success as u16 => Ok(()),
            Message::AuthResponse { status, message } => Err(ClientError::Auth { status, message }),
            other => Err(unexpected(other)),
        }
    }

    /// Run one statement and wait for its result.
    pub fn execute(&mut self, sql: &str) -> Result<ResultSet> {
        if self.in_flight > 0 {
            return Err(ClientError::Usage("read the pipelined replies before executing".into()));
        }
        self.send(sql)?;
        self.flush()?;
        self.recv()?.map_err(ClientError::Server)
    }

    /// Insert `key` only if it is absent: true when it was inserted (`build::insert_if_absent`).
    pub fn insert_if_absent(&mut self, key: &[u8], value: &[u8], ttl_s: Option<u64>) -> Result<bool> {
        Ok(self.execute(&build::insert_if_absent(key, value, ttl_s))?.affected == 1)
    }

    /// Compare-and-set: true when `key` held `expected` and now holds `new` (`build::cas`).
    pub fn cas(&mut self, key: &[u8], expected: &[u8], new: &[u8]) -> Result<bool> {
        Ok(self.execute(&build::cas(key, expected, new))?.affected == 1)
    }

    /// Add `by` to the counter at `key` (absent: from 0); its new value (`build::incr`). A value
    /// that is not an integer, or an overflow, is the server's INVALID_COMMAND.
    pub fn incr(&mut self, key: &[u8], by: i64) -> Result<i64> {
        let rs = self.execute(&build::incr(key, by))?;
        match rs.rows.first().and_then(|r| r.first()) {
            Some(crate::protocol::Value::Bytes(b)) => std::str::from_utf8(b)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| ClientError::Usage(format!("the counter's value {b:?} is not an integer"))),
            other => Err(ClientError::Usage(format!("a counter answered {other:?}"))),
        }
    }

    /// Queue a statement without waiting (pipelining); call `flush` then `recv` for each.
    pub fn send(&mut self, sql: &str) -> Result<()> {
        if sql.len() > self.info.max_payload as usize {
            return Err(ClientError::Usage(format!(
                "statement is {} bytes; the server accepts {}",
                sql.len(),
                self.info.max_payload
            )));
        }
        let start = crate::protocol::begin_frame(&mut self.wbuf, crate::protocol::MessageType::Command as u8);
        self.wbuf.extend_from_slice(sql.as_bytes());
        crate::protocol::end_frame(&mut self.wbuf, start);
        self.in_flight += 1;
        if self.wbuf.len() >= 64 << 10 {
            self.flush()?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> Result<()> {
        if !self.wbuf.is_empty() {
            self.stream.write_all(&self.wbuf)?;
            self.wbuf.clear();
        }
        Ok(())
    }

    /// The next reply, in request order.
    pub fn recv(&mut self) -> Result<Reply> {
        self.flush()?;
        let m = self.read_message(self.info.max_payload)?;
        self.in_flight = self.in_flight.saturating_sub(1);
        match m {
            Message::Response(rs) | Message::StatsReply(rs) => Ok(Ok(rs)),
            Message::Error { code, message } => match ErrorCode::from_u16(code) {
                Some(code) => Ok(Err(WireError { code, message })),
                None => Err(ClientError::Protocol(format!("unknown error code {code}: {message}"))),
            },
            other => Err(unexpected(other)),
        }
    }

    /// Send every statement, then read every reply: one round trip for the lot.
    pub fn pipeline<S: AsRef<str>>(&mut self, statements: &[S]) -> Result<Vec<Reply>> {
        for s in statements {
            self.send(s.as_ref())?;
        }
        self.flush()?;
        statements.iter().map(|_| self.recv()).collect()
    }

    pub fn ping(&mut self, payload: &[u8]) -> Result<Vec<u8>> {
        self.send_message(&Message::Ping(payload.to_vec()))?;
        match self.read_message(self.info.max_payload)? {
            Message::Pong(b) => Ok(b),
            other => Err(unexpected(other)),
        }
    }

    /// The STATS frame's (name, value) result set.
    pub fn stats(&mut self) -> Result<ResultSet> {
        self.send_message(&Message::StatsRequest)?;
        match self.read_message(self.info.max_payload)? {
            Message::StatsReply(rs) => Ok(rs),
            Message::Error { code, message } => Err(ClientError::Server(WireError {
                code: ErrorCode::from_u16(code).unwrap_or(ErrorCode::ProtocolError),
                message,
            })),
            other => Err(unexpected(other)),
        }
    }

    /// Say goodbye.
    pub fn close(mut self) -> Result<()> {
        self.send_message(&Message::Disconnect { code: 0, reason: "client closing".into() })
    }

    pub fn send_message(&mut self, m: &Message) -> Result<()> {
        self.flush()?;
        m.encode(&mut self.wbuf);
        self.flush()
    }

    /// Raw bytes, for tests of the server's framing rules.
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.flush()?;
        self.stream.write_all(bytes)?;
        Ok(())
    }

    /// The next frame from the server, whatever it is. DISCONNECT becomes an error.
    pub fn read_message(&mut self, payload_max: u32) -> Result<Message> {
        loop {
            match decode_frame(&self.rbuf[self.rpos..], payload_max.max(PREAUTH_PAYLOAD_BYTES_MAX)) {
                Ok(Decoded::Frame(f)) => {
                    let m = Message::decode(f.kind, f.payload, Peer::Server)
                        .map_err(|e| ClientError::Protocol(e.to_string()));
                    self.rpos += f.consumed;
                    if self.rpos == self.rbuf.len() {
                        self.rbuf.clear();
                        self.rpos = 0;
                    }
                    return match m? {
                        Message::Disconnect { code, reason } => {
                            Err(ClientError::Disconnected { code, reason })
                        }
                        m => Ok(m),
                    };
                }
                Ok(Decoded::Incomplete { needed }) => {
                    if self.rpos > 0 {
                        self.rbuf.drain(..self.rpos);
                        self.rpos = 0;
                    }
                    let len = self.rbuf.len();
                    let want = needed.max(64 << 10).min(payload_max as usize + FRAME_OVERHEAD_BYTES);
                    self.rbuf.resize(len + want.max(needed), 0);
                    let n = self.stream.read(&mut self.rbuf[len..]);
                    let n = match n {
                        Ok(n) => n,
                        // A signal, or a stop and continue of this process with a read timeout
                        // set (the kernel ends such a read with EINTR): nothing was read.
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                            self.rbuf.truncate(len);
                            continue;
                        }
                        Err(e) => {
                            self.rbuf.truncate(len);
                            return Err(e.into());
                        }
                    };
                    self.rbuf.truncate(len + n);
                    if n == 0 {
                        return Err(ClientError::Io(std::io::ErrorKind::UnexpectedEof.into()));
                    }
                }
                Err(e) => {
                    let first = self.rbuf.get(self.rpos).copied();
                    return Err(ClientError::Protocol(match first {
                        // A TLS record (alert or handshake) where a frame should be.
                        Some(0x15 | 0x16) => {
                            "the server answered with TLS: connect with TLS (without --plaintext)".into()
                        }
                        _ => e.to_string(),
                    }));
                }
            }
        }
    }
}

/// A TLS client talking to a plaintext server sees rustls fail on the first bytes; say why.
fn tls_hint(e: ClientError, tls: bool) -> ClientError {
    match e {
        ClientError::Io(io) if tls && io.kind() == std::io::ErrorKind::InvalidData => ClientError::Protocol(format!(
            "TLS handshake failed ({io}): is the server running with --plaintext? Then connect with --plaintext"
        )),
        e => e,
    }
}

fn unexpected(m: Message) -> ClientError {
    match m {
        Message::Error { code, message } => ClientError::Server(WireError {
            code: ErrorCode::from_u16(code).unwrap_or(ErrorCode::ProtocolError),
            message,
        }),
        other => ClientError::Protocol(format!("unexpected {:?} frame", other.kind())),
    }
}
