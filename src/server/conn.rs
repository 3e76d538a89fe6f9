//! One client connection: the handshake of profile §2, then pipelined requests processed a read
//! buffer at a time. Requests for this core's shard run inline; the rest are batched per shard
//! into one mesh message each; replies are written in request order, once per batch.

use super::audit::put_json_str;
use super::core::{now_ms, Core, Started};
use super::datadir::{RateLimit, Role};
use super::mesh::{Rep, Req};
use super::runtime::{race, sleep, spawn_blocking, Either};
use super::stats::ShardStats;
use super::transport::Transport;
use super::wal::{Group, Mode};
use crate::error::WireError;
use crate::limits::*;
use crate::protocol::message::encode_error;
use crate::protocol::{
    begin_frame, decode_frame, encode_affected_response, encode_single_value_response, end_frame, peek_frame,
    AuthRequest, AuthStatus, Decoded, ErrorCode, Message, MessageType, Peer, ResultSet, ServerInfo, Value,
    VERSION,
};
use crate::security::ratelimit::{Login, TokenBucket};
use crate::security::{stored_hash, verify_credential};
use crate::shard::{merge, plan, shard_of_key, Merge, ShardOp, ShardReply, Sliced};
use crate::sql::quote_literal;
use crate::sql::{
    hot_key, insert_one, parse, point_select_key, Column, Filter, Projection, Statement, StatementKind,
};
use std::net::SocketAddr;
use std::ops::Range;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

enum Phase {
    AwaitHello,
    AwaitAuth {
        tries: u32,
    },
    /// Logged in; `bucket` is this connection's rate limit, if one is set. `key` is the
    /// SHA-256 of the API key it logged in with (None: a password): what must still be there
    /// for the session to go on.
    Ready {
        user: Rc<str>,
        role: Role,
        bucket: Option<TokenBucket>,
        key: Option<[u8; 32]>,
    },
}

/// Who is on the other end, for the audit log and login throttling.
struct Ctx {
    id: u64,
    peer: Option<SocketAddr>,
}

impl Phase {
    fn user(&self) -> &str {
        match self {
            Phase::Ready { user, .. } => user,
            _ => "",
        }
    }
}

enum Pending {
    /// An encoded reply waiting in the stage buffer for earlier replies.
    Staged(Range<usize>),
    /// An encoded reply sent once `group` is on disk (else STORAGE_ERROR): a write's own group,
    /// or for a read the newest group it may have seen.
    Durable {
        reply: Range<usize>,
        group: Rc<Group>,
        write: bool,
    },
    Merge {
        merge: Merge,
        replies: Vec<Option<ShardReply>>,
        kind: StatementKind,
        started: Instant,
        /// What the audit log says the statement touched (only when the log is on).
        target: Option<String>,
        /// The log group of this statement's writes to the local shard.
        local_group: Option<Rc<Group>>,
        /// This shard's part when it runs in slices: its index among the parts, and its state.
        local_more: Option<(usize, ShardOp, Sliced, Vec<Rc<Group>>)>,
    },
    Info {
        what: InfoKind,
        started: Instant,
    },
}

#[derive(Clone, Copy)]
enum InfoKind {
    ShowStats,
    ShowStatus,
    StatsFrame,
}

/// The replies of one read buffer's requests.
struct Batch {
    out: Vec<u8>,
    stage: Vec<u8>,
    pending: Vec<Pending>,
    /// Operations for each remote shard, and for each the (pending, part) it answers.
    remote: Vec<Vec<ShardOp>>,
    remote_at: Vec<Vec<(usize, usize)>>,
    /// Bytes of local replies held in `pending` for merging: with `out` and `stage`, what the
    /// batch holds against CONN_OUT_BYTES_MAX.
    held_bytes: usize,
    /// Fast-path statements of this batch (kind, succeeded), recorded when the batch's replies
    /// are ready with the batch's time: their replies leave together, so that is their latency,
    /// and it costs two clock reads a batch instead of two a request.
    fast: Vec<(StatementKind, bool)>,
    /// When the batch's bytes were read.
    started: Instant,
    /// The user's own rate limit, looked up once a batch rather than once a request.
    user_limit: Option<Option<RateLimit>>,
}

impl Batch {
    fn blocked(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Reply bytes held: a batch stops taking requests at CONN_OUT_BYTES_MAX.
    fn held(&self) -> usize {
        self.out.len() + self.stage.len() + self.held_bytes
    }

    /// Encode a reply now, straight into the output when nothing before it is outstanding.
    fn ready(&mut self, encode: impl FnOnce(&mut Vec<u8>)) {
        if self.blocked() {
            let start = self.stage.len();
            encode(&mut self.stage);
            self.pending.push(Pending::Staged(start..self.stage.len()));
        } else {
            encode(&mut self.out);
        }
    }

    fn error(&mut self, code: ErrorCode, msg: &str) {
        self.ready(|out| encode_error(out, code, msg));
    }

    /// A reply to hold until `group` is durable; `None`: ready now.
    fn after(&mut self, group: Option<Rc<Group>>, write: bool, encode: impl FnOnce(&mut Vec<u8>)) {
        match group {
            None => self.ready(encode),
            Some(group) => {
                let start = self.stage.len();
                encode(&mut self.stage);
                self.pending.push(Pending::Durable { reply: start..self.stage.len(), group, write });
            }
        }
    }
}

fn encode_result(out: &mut Vec<u8>, kind: MessageType, rs: &ResultSet) {
    let start = begin_frame(out, kind as u8);
    rs.encode(out);
    end_frame(out, start);
}

enum Flow {
    Continue,
    /// Take no more requests this batch: a statement is still running (in slices).
    EndBatch,
    Close,
}

pub struct Conn {
    core: Rc<Core>,
    ctx: Ctx,
    phase: Phase,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    accepted: Instant,
    /// The users-and-keys reload (Core::auth_epoch) this session was last checked against.
    auth_epoch: u64,
    /// When the partial frame in `inbuf` began to arrive (the frame timeout runs from there).
    frame_started: Option<Instant>,
    /// This connection's login slot (admission.rs), held until it authenticates.
    slot: Option<super::admission::Slot>,
}

enum ReadOutcome {
    Data,
    Closed,
    Timeout,
    Shutdown,
    /// Idle long enough to give up the task (park.rs).
    Park,
    /// The users or API keys were reloaded: the session is checked again.
    AuthChanged,
    /// A frame begun was not completed within the frame timeout.
    FrameTimeout,
}

impl Conn {
    pub fn new(core: Rc<Core>, id: u64, peer: Option<SocketAddr>, slot: super::admission::Slot) -> Conn {
        Conn {
            ctx: Ctx { id, peer },
            phase: Phase::AwaitHello,
            inbuf: Vec::new(),
            out: Vec::new(),
            accepted: Instant::now(),
            auth_epoch: 0,
            frame_started: None,
            slot: Some(slot),
            core,
        }
    }

    /// Whether the session may go on after a reload of the users and API keys: None, with its
    /// role brought up to date (it applies from the next request); or why it must end (its user
    /// was removed, or its API key revoked).
    pub fn revoked(&mut self) -> Option<&'static str> {
        let epoch = self.core.auth_epoch.get();
        if self.auth_epoch == epoch {
            return None;
        }
        self.auth_epoch = epoch;
        let Phase::Ready { user, role, key, .. } = &mut self.phase else { return None };
        let db = self.core.auth.borrow().clone();
        if let Some(k) = key {
            if db.api_keys.get(k).map(String::as_str) != Some(&**user) {
                return Some("API key revoked");
            }
        }
        match db.users.get(&**user) {
            Some(u) => {
                *role = u.role;
                None
            }
            None => Some("user removed"),
        }
    }

    fn payload_max(&self) -> u32 {
        match self.phase {
            Phase::Ready { .. } => self.core.shared.config.max_payload,
            _ => PREAUTH_PAYLOAD_BYTES_MAX,
        }
    }

    /// Serve until the connection ends (true) or is parked (false).
    pub async fn serve(mut self, mut stream: Transport) -> bool {
        let _ = stream.tcp().set_nodelay(true);
        if self.ctx.peer.is_none() {
            self.ctx.peer = stream.tcp().peer_addr().ok();
        }
        loop {
            if let Some(why) = self.revoked() {
                tracing::info!(conn = self.ctx.id, user = self.phase.user(), why, "session ended");
                let frame = Message::Disconnect { code: ErrorCode::Unauthorized as u16, reason: why.into() }
                    .to_frame();
                let _ = stream.write_all(&frame).await;
                break;
            }
            let Ok(close) = self.process(&mut stream).await else { break };
            if !self.out.is_empty() {
                if write_out(&self.core, &mut stream, &mut self.out).await.is_err() {
                    break;
                }
                // Going idle, or holding a large buffer: give it back.
                if self.inbuf.is_empty() || self.out.capacity() > CONN_OUT_BYTES_MAX {
                    self.out = Vec::new();
                }
            }
            if close {
                break;
            }
            if self.has_frame() {
                continue; // the batch stopped at a bound; more frames are already here
            }
            let reason = match self.read(&mut stream).await {
                ReadOutcome::Data | ReadOutcome::AuthChanged => continue,
                ReadOutcome::Closed => break,
                ReadOutcome::Timeout if matches!(self.phase, Phase::Ready { .. }) => "idle timeout",
                ReadOutcome::Timeout => "handshake timeout",
                ReadOutcome::FrameTimeout => "frame not completed in time",
                ReadOutcome::Shutdown => "server shutting down",
                ReadOutcome::Park => match self.park(stream) {
                    Ok(()) => return false,
                    Err(s) => {
                        stream = s;
                        continue;
                    }
                },
            };
            let frame = Message::Disconnect { code: 0, reason: reason.into() }.to_frame();
            let _ = stream.write_all(&frame).await;
            break;
        }
        stream.close().await;
        tracing::debug!(conn = self.ctx.id, "connection closed");
        true
    }

    /// Hand this idle connection's session and socket to the core's parker. The socket's
    /// descriptor is duplicated before glommio's stream (and its state) is dropped.
    fn park(&mut self, stream: Transport) -> Result<(), Transport> {
        use std::os::fd::AsRawFd;
        let Transport::Plain(tcp) = &stream else { return Err(stream) };
        // SAFETY: dup of a descriptor we hold open.
        let fd = unsafe { libc::dup(tcp.as_raw_fd()) };
        if fd < 0 {
            return Err(stream);
        }
        let parked = Conn {
            core: self.core.clone(),
            ctx: Ctx { id: self.ctx.id, peer: self.ctx.peer },
            phase: std::mem::replace(&mut self.phase, Phase::AwaitHello),
            inbuf: Vec::new(),
            out: Vec::new(),
            accepted: self.accepted,
            auth_epoch: self.auth_epoch,
            frame_started: None,
            slot: None,
        };
        let idle = Duration::from_millis(CONN_PARK_AFTER_IDLE_MS);
        let since = Instant::now().checked_sub(idle).unwrap_or_else(Instant::now);
        match self.core.parker.park(parked, fd, since) {
            Ok(()) => {
                drop(stream);
                tracing::debug!(conn = self.ctx.id, "connection parked");
                Ok(())
            }
            Err((back, fd)) => {
                // SAFETY: closing our duplicate.
                unsafe { libc::close(fd) };
                self.phase = back.phase;
                Err(stream)
            }
        }
    }

    fn has_frame(&self) -> bool {
        matches!(decode_frame(&self.inbuf, self.payload_max()), Ok(Decoded::Frame(_)) | Err(_))
    }

    /// Read more bytes, unless a timeout or shutdown comes first.
    async fn read(&mut self, stream: &mut Transport) -> ReadOutcome {
        if self.core.shutdown.is_fired() {
            return ReadOutcome::Shutdown;
        }
        let cfg = &self.core.shared.config;
        let ready = matches!(self.phase, Phase::Ready { .. });
        // The earliest of: the idle timeout (logged in) or what is left of the handshake timeout
        // (not yet); what is left of the frame timeout for a frame begun (a deadline per frame,
        // not per byte: trickling does not extend it); parking, for a logged-in plaintext
        // connection with nothing buffered.
        let mut deadline: Option<(Duration, ReadOutcome)> = None;
        let mut sooner = |t: Duration, o: ReadOutcome| {
            if deadline.as_ref().is_none_or(|(d, _)| t < *d) {
                deadline = Some((t, o));
            }
        };
        if !ready {
            sooner(
                Duration::from_millis(cfg.handshake_timeout_ms).saturating_sub(self.accepted.elapsed()),
                ReadOutcome::Timeout,
            );
        } else if cfg.idle_timeout_s > 0 {
            sooner(Duration::from_secs(cfg.idle_timeout_s), ReadOutcome::Timeout);
        }
        if let (true, Some(t0)) = (ready, self.frame_started) {
            sooner(
                Duration::from_millis(cfg.frame_timeout_ms).saturating_sub(t0.elapsed()),
                ReadOutcome::FrameTimeout,
            );
        }
        if ready && self.inbuf.is_empty() && matches!(stream, Transport::Plain(_)) {
            sooner(Duration::from_millis(CONN_PARK_AFTER_IDLE_MS), ReadOutcome::Park);
        }
        let shutdown = self.core.shutdown.clone();
        // A logged-in session also wakes when the users and keys change (revocation).
        let auth = matches!(self.phase, Phase::Ready { .. }).then(|| self.core.auth_changed.borrow().clone());
        let stop = async move {
            let ended = async {
                match auth {
                    Some(a) => match race(shutdown.wait(), a.wait()).await {
                        Either::Left(_) => ReadOutcome::Shutdown,
                        Either::Right(_) => ReadOutcome::AuthChanged,
                    },
                    None => {
                        shutdown.wait().await;
                        ReadOutcome::Shutdown
                    }
                }
            };
            match deadline {
                Some((t, outcome)) => match race(sleep(t), ended).await {
                    Either::Left(_) => outcome,
                    Either::Right(o) => o,
                },
                None => ended.await,
            }
        };
        let mut stop = std::pin::pin!(stop);
        if self.inbuf.is_empty() {
            // Between requests: wait holding only a small buffer; most un-pipelined requests fit.
            let mut first = [0u8; CONN_FIRST_READ_BYTES];
            match race(stream.first_bytes(&mut first), stop.as_mut()).await {
                // Plain bytes: process them now (a full read follows only if a frame is cut).
                Either::Left(Ok(Some(n))) if n > 0 => {
                    if n < first.len() {
                        self.inbuf.extend_from_slice(&first[..n]);
                    } else {
                        // Pipelined requests: take what else has arrived, without waiting.
                        self.inbuf.reserve(n + CONN_READ_CHUNK_BYTES);
                        self.inbuf.extend_from_slice(&first[..n]);
                        stream.read_ready(&mut self.inbuf, CONN_READ_CHUNK_BYTES);
                    }
                    self.core.stats.borrow_mut().bytes_in += self.inbuf.len() as u64;
                    return ReadOutcome::Data;
                }
                // TLS: rustls has bytes; read its plaintext below.
                Either::Left(Ok(Some(_))) => {}
                Either::Left(_) => return ReadOutcome::Closed,
                Either::Right(o) => return o,
            }
        }
        let len = self.inbuf.len();
        self.inbuf.resize(len + CONN_READ_CHUNK_BYTES, 0);
        let buf = &mut self.inbuf[len..];
        let outcome = match race(stream.read(buf), stop).await {
            Either::Left(Ok(0)) | Either::Left(Err(_)) => ReadOutcome::Closed,
            Either::Left(Ok(n)) => {
                self.inbuf.truncate(len + n);
                self.core.stats.borrow_mut().bytes_in += n as u64;
                return ReadOutcome::Data;
            }
            Either::Right(o) => o,
        };
        self.inbuf.truncate(len);
        outcome
    }

    /// Handle every complete frame in the input (up to the batch bounds); true to close. An
    /// error: the socket failed while the batch's replies were being written.
    async fn process(&mut self, stream: &mut Transport) -> std::io::Result<bool> {
        let shards = self.core.shards;
        let mut batch = Batch {
            out: std::mem::take(&mut self.out),
            stage: Vec::new(),
            pending: Vec::new(),
            remote: vec![Vec::new(); shards],
            remote_at: vec![Vec::new(); shards],
            held_bytes: 0,
            fast: Vec::new(),
            started: Instant::now(),
            user_limit: None,
        };
        let batch_started = batch.started;
        let now = now_ms();
        if matches!(self.phase, Phase::Ready { .. }) {
            prefetch_point_reads(&self.core, &self.inbuf, self.payload_max());
        }
        let mut pos = 0;
        let mut close = false;
        for _ in 0..CONN_BATCH_REQUESTS_MAX {
            let limit = self.payload_max();
            let (kind, payload) = match decode_frame(&self.inbuf[pos..], limit) {
                Ok(Decoded::Incomplete { .. }) => break,
                Err(e) => {
                    tracing::debug!(conn = self.ctx.id, error = %e, "framing error; closing");
                    batch.error(ErrorCode::ProtocolError, &e.to_string());
                    close = true;
                    break;
                }
                Ok(Decoded::Frame(f)) => {
                    let start = pos + FRAME_HEADER_BYTES;
                    pos += f.consumed;
                    (f.kind, start..start + f.payload.len())
                }
            };
            // A long statement is parsed and planned on the blocking pool meanwhile: the core's
            // other connections run, and nothing of this one's runs before it.
            let planned = if kind == MessageType::Command as u8
                && matches!(self.phase, Phase::Ready { .. })
                && plan_off_core(&self.inbuf[payload.clone()])
            {
                let sql = self.inbuf[payload.clone()].to_vec();
                let (shards, max_payload) = (self.core.shards, self.core.shared.config.max_payload);
                let audit = self.core.audit.borrow().enabled();
                Some(spawn_blocking(move || plan_statement(sql, shards, max_payload, audit)).await)
            } else {
                None
            };
            let payload = &self.inbuf[payload];
            let flow =
                handle_frame(&self.core, &self.ctx, &mut self.phase, kind, payload, &mut batch, now, planned);
            match flow {
                Flow::Continue => {}
                Flow::EndBatch => break,
                Flow::Close => {
                    close = true;
                    break;
                }
            }
            // The rest waits in the input (unread from the socket beyond it) until these
            // replies are written: a client that never reads holds no more than this.
            if batch.held() >= CONN_OUT_BYTES_MAX {
                break;
            }
        }
        self.inbuf.drain(..pos);
        if self.inbuf.is_empty() {
            self.frame_started = None;
            if self.inbuf.capacity() > 0 {
                // An idle connection holds no input buffer.
                self.inbuf = Vec::new();
            }
        } else if pos > 0 || self.frame_started.is_none() {
            self.frame_started = Some(Instant::now());
        }
        if matches!(self.phase, Phase::Ready { .. }) {
            // Logged in: its login slot goes back to the core's admission.
            self.slot = None;
        }
        let fast = std::mem::take(&mut batch.fast);
        self.out = finish(&self.core, &self.ctx, &self.phase, batch, now, stream).await?;
        if !fast.is_empty() {
            let latency_us = batch_started.elapsed().as_micros() as u64;
            let mut stats = self.core.stats.borrow_mut();
            for (kind, ok) in fast {
                stats.record(kind, latency_us, ok);
            }
        }
        Ok(close)
    }
}

/// Look ahead over the batch's pipelined point reads and one-row writes of this shard and
/// prefetch their entries, so that their cache misses overlap instead of coming one after
/// another (a fifth of the server's time at 50 connections x pipeline 16 GET was the two misses
/// of each lookup; `cargo bench --bench core -- "16 gets"`: 2.1x faster at 1M keys).
fn prefetch_point_reads(core: &Core, inbuf: &[u8], payload_max: u32) {
    let store = core.store.borrow();
    let mut pos = 0;
    for i in 0..CONN_BATCH_REQUESTS_MAX {
        let Ok(Decoded::Frame(f)) = peek_frame(&inbuf[pos..], payload_max) else { break };
        if i == 0 && f.consumed == inbuf.len() {
            return; // a lone request: nothing to overlap with
        }
        pos += f.consumed;
        if f.kind != MessageType::Command as u8 {
            continue;
        }
        if let Some(key) = hot_key(f.payload) {
            if shard_of_key(key, core.shards) == core.id {
                store.prefetch(key);
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn handle_frame(
    core: &Core,
    ctx: &Ctx,
    phase: &mut Phase,
    kind: u8,
    payload: &[u8],
    batch: &mut Batch,
    now: u64,
    planned: Option<Planned>,
) -> Flow {
    if kind == MessageType::Command as u8 {
        return match phase {
            Phase::Ready { user, role, bucket, .. } => {
                if let Err(why) = admit(core, user, bucket, &mut batch.user_limit) {
                    refuse_rate_limited(core, ctx, user, "command", why, batch);
                    return Flow::Continue;
                }
                let role = *role;
                command(core, ctx, phase, role, payload, batch, now, planned)
            }
            Phase::AwaitHello => {
                batch.error(ErrorCode::ProtocolError, "expected HELLO");
                Flow::Close
            }
            Phase::AwaitAuth { .. } => {
                batch.error(ErrorCode::Unauthorized, "not authenticated");
                Flow::Continue
            }
        };
    }
    let msg = match Message::decode(kind, payload, Peer::Client) {
        Ok(m) => m,
        Err(e) => {
            batch.error(ErrorCode::ProtocolError, &e.to_string());
            // Before HELLO nothing but HELLO and PING is accepted (profile §2).
            return if matches!(phase, Phase::AwaitHello) { Flow::Close } else { Flow::Continue };
        }
    };
    match (&*phase, msg) {
        (_, Message::Ping(b)) => batch.ready(|out| Message::Pong(b).encode(out)),
        (_, Message::Disconnect { .. }) => return Flow::Close,
        (Phase::AwaitHello, Message::Hello(h)) => {
            if !h.versions.contains(&VERSION) {
                batch.error(ErrorCode::ProtocolError, "no common protocol version (this server speaks 1)");
                return Flow::Close;
            }
            let cfg = &core.shared.config;
            let info = ServerInfo {
                version: VERSION,
                server: concat!("velocityd/", env!("CARGO_PKG_VERSION")).into(),
                fingerprint: core.shared.fingerprint,
                auth_salt: core.shared.auth_salt,
                argon2_m_kib: super::datadir::ARGON2.m_kib,
                argon2_t: super::datadir::ARGON2.t,
                argon2_p: super::datadir::ARGON2.p,
                max_payload: cfg.max_payload,
                shards: core.shards as u16,
                flags: ServerInfo::FLAG_AUTH_REQUIRED
                    | if core.shared.tls.is_some() { ServerInfo::FLAG_TLS } else { 0 },
            };
            batch.ready(|out| Message::ServerInfo(info).encode(out));
            *phase = Phase::AwaitAuth { tries: 0 };
        }
        (Phase::AwaitHello, _) => {
            batch.error(ErrorCode::ProtocolError, "expected HELLO");
            return Flow::Close;
        }
        (Phase::AwaitAuth { tries }, Message::AuthRequest(a)) => {
            let tries = *tries + 1;
            let method = if a.method == AuthRequest::METHOD_API_KEY { "api_key" } else { "password" };
            let ip = ctx.peer.map(|p| p.ip());
            let now_i = Instant::now();
            let who = if a.method == AuthRequest::METHOD_API_KEY {
                Login::ApiKey(&a.credential)
            } else {
                Login::User(&a.username)
            };
            let throttled = ip.and_then(|ip| core.throttle.borrow_mut().check(ip, who, now_i));
            let outcome = match throttled {
                Some(r) => Err((
                    AuthStatus::RateLimited,
                    format!(
                        "too many failed logins {}from your address; retry in {} s",
                        if r.whole_address { "" } else { "for this user " },
                        r.retry_in.as_millis().div_ceil(1000).max(1)
                    ),
                )),
                None => authenticate(core, &a)
                    .ok_or((AuthStatus::InvalidCredentials, "invalid credentials".to_string())),
            };
            match outcome {
                Ok((user, role)) => {
                    if let Some(ip) = ip {
                        core.throttle.borrow_mut().succeeded(ip, who);
                    }
                    audit_login(core, ctx, &user, method, ErrorCode::Success);
                    let msg = format!("authenticated as {user}");
                    batch.ready(|out| Message::auth_response(AuthStatus::Success, msg).encode(out));
                    let bucket = core
                        .shared
                        .config
                        .rate_limit_conn
                        .map(|r| TokenBucket::new(r.ops_per_s, r.burst, now_i));
                    let key = (a.method == AuthRequest::METHOD_API_KEY).then(|| stored_hash(&a.credential));
                    *phase = Phase::Ready { user, role, bucket, key };
                }
                Err((status, msg)) => {
                    {
                        let mut st = core.stats.borrow_mut();
                        st.failed_logins += 1;
                        st.login_throttled += (status == AuthStatus::RateLimited) as u64;
                    }
                    if status == AuthStatus::InvalidCredentials {
                        if let Some(ip) = ip {
                            core.throttle.borrow_mut().failed(ip, who, now_i);
                        }
                    }
                    let code = if status == AuthStatus::RateLimited {
                        ErrorCode::RateLimited
                    } else {
                        ErrorCode::InvalidCredentials
                    };
                    let name = if method == "api_key" { "(api key)" } else { a.username.as_str() };
                    audit_login(core, ctx, name, method, code);
                    batch.ready(|out| Message::auth_response(status, msg).encode(out));
                    if tries >= AUTH_TRIES_MAX {
                        batch.ready(|out| {
                            Message::Disconnect {
                                code: ErrorCode::InvalidCredentials as u16,
                                reason: "too many failed logins".into(),
                            }
                            .encode(out)
                        });
                        return Flow::Close;
                    }
                    *phase = Phase::AwaitAuth { tries };
                }
            }
        }
        (Phase::AwaitAuth { .. }, Message::StatsRequest) => {
            batch.error(ErrorCode::Unauthorized, "not authenticated")
        }
        (Phase::Ready { user, .. }, Message::StatsRequest) => {
            let user = user.clone();
            let Phase::Ready { bucket, .. } = phase else { unreachable!() };
            match admit(core, &user, bucket, &mut batch.user_limit) {
                Ok(()) => {
                    batch.pending.push(Pending::Info { what: InfoKind::StatsFrame, started: Instant::now() })
                }
                Err(why) => refuse_rate_limited(core, ctx, &user, "stats", why, batch),
            }
        }
        (_, m) => batch.error(ErrorCode::ProtocolError, &format!("unexpected {:?} frame here", m.kind())),
    }
    Flow::Continue
}

/// Method 1 (password credential) or 2 (API key). A password is compared even for an unknown
/// user, so timing does not tell which user names exist.
fn authenticate(core: &Core, a: &AuthRequest) -> Option<(Rc<str>, Role)> {
    let db = core.auth.borrow().clone();
    let user = match a.method {
        AuthRequest::METHOD_PASSWORD => {
            let user = db.users.get(&a.username);
            let stored = user.map_or([0u8; 32], |u| u.stored);
            let ok = verify_credential(&a.credential, &stored);
            user.filter(|_| ok)?
        }
        AuthRequest::METHOD_API_KEY if a.username.is_empty() => db.api_key_user(&a.credential)?,
        _ => return None,
    };
    Some((db.names.get(&user.name)?.clone(), user.role))
}

/// Whether the rate limits let one more request of `user` run now; if so it is counted against
/// every limit. A refused request is not executed and uses up nothing.
fn admit(
    core: &Core,
    user: &str,
    conn_bucket: &mut Option<TokenBucket>,
    user_limit: &mut Option<Option<RateLimit>>,
) -> Result<(), &'static str> {
    let cfg = &core.shared.config;
    let user_limit =
        *user_limit.get_or_insert_with(|| core.auth.borrow().users.get(user).and_then(|u| u.rate_limit));
    if conn_bucket.is_none() && user_limit.is_none() && cfg.rate_limit_global.is_none() {
        return Ok(());
    }
    let now = Instant::now();
    if let Some(b) = conn_bucket.as_mut() {
        if !b.has_token(now) {
            return Err("this connection's rate limit");
        }
    }
    let mut users = core.user_buckets.borrow_mut();
    let mut ub = user_limit
        .map(|r| users.entry(user.to_owned()).or_insert_with(|| TokenBucket::new(r.ops_per_s, r.burst, now)));
    if let Some(b) = ub.as_mut() {
        if !b.has_token(now) {
            return Err("this user's rate limit");
        }
    }
    let mut global = core.global_bucket.borrow_mut();
    if let Some(g) = global.as_mut() {
        if !g.has_token(now) {
            return Err("the server's rate limit");
        }
    }
    if let Some(b) = conn_bucket.as_mut() {
        b.take();
    }
    if let Some(b) = ub {
        b.take();
    }
    if let Some(g) = global.as_mut() {
        g.take();
    }
    Ok(())
}

fn refuse_rate_limited(core: &Core, ctx: &Ctx, user: &str, event: &str, why: &str, batch: &mut Batch) {
    core.stats.borrow_mut().rate_limited += 1;
    audit(core, ctx, user, event, "", None, 0, ErrorCode::RateLimited, 0);
    batch.error(ErrorCode::RateLimited, &format!("rate limited by {why}; the request was not executed"));
}

/// A statement parsed and planned away from the core (`plan_statement`): its kind, what the
/// audit log says it touches, and its plan; or why it does not parse.
type Planned = Result<(StatementKind, Option<String>, crate::shard::Plan), String>;

/// Parse and plan a long statement: run on the blocking thread pool, so that a 1 MB INSERT's
/// parse (tens of milliseconds) does not stall the core's other connections.
fn plan_statement(sql: Vec<u8>, shards: usize, max_payload: u32, audit: bool) -> Planned {
    let sql = std::str::from_utf8(&sql).map_err(|_| "SQL is not valid UTF-8".to_string())?;
    let stmt = parse(sql).map_err(|e| e.to_string())?;
    Ok((stmt.kind(), audit.then(|| describe(&stmt)), plan(&stmt, shards, max_payload)))
}

/// Whether a COMMAND is long enough to be parsed off the core, and not one of the canonical
/// forms the core answers without a parse.
fn plan_off_core(payload: &[u8]) -> bool {
    payload.len() >= STATEMENT_OFF_CORE_BYTES
        && std::str::from_utf8(payload)
            .is_ok_and(|sql| point_select_key(sql).is_none() && insert_one(sql).is_none())
}

#[allow(clippy::too_many_arguments)]
fn command(
    core: &Core,
    ctx: &Ctx,
    phase: &Phase,
    role: Role,
    payload: &[u8],
    batch: &mut Batch,
    now: u64,
    planned: Option<Planned>,
) -> Flow {
    let user = phase.user();
    if let Some(planned) = planned {
        let started = Instant::now();
        let (kind, target, p) = match planned {
            Ok(p) => p,
            Err(e) => {
                audit(core, ctx, user, "command", "invalid", None, 0, ErrorCode::InvalidCommand, 0);
                batch.error(ErrorCode::InvalidCommand, &e);
                return Flow::Continue;
            }
        };
        if kind.is_write() && role == Role::ReadOnly {
            audit(core, ctx, user, "command", kind.name(), target.as_deref(), 0, ErrorCode::Unauthorized, 0);
            batch.error(ErrorCode::Unauthorized, "this user's role is readonly");
            return Flow::Continue;
        }
        return run_plan(core, ctx, user, kind, target, p, started, batch, now);
    }
    let Ok(sql) = std::str::from_utf8(payload) else {
        audit(core, ctx, user, "command", "invalid", None, 0, ErrorCode::InvalidCommand, 0);
        batch.error(ErrorCode::InvalidCommand, "SQL is not valid UTF-8");
        return Flow::Continue;
    };
    // The hot path: a canonical point read of this core's shard, answered without a parse or
    // a plan.
    if let Some(key) = point_select_key(sql) {
        if shard_of_key(key, core.shards) == core.id {
            let target = core.audit.borrow().enabled().then(|| describe_key(key));
            local_point_get(core, ctx, user, key, target.as_deref(), batch, now);
            return Flow::Continue;
        }
    }
    // And a canonical one-row INSERT of a local key.
    if let Some((key, value)) = insert_one(sql) {
        if shard_of_key(key, core.shards) == core.id {
            if role == Role::ReadOnly {
                audit(
                    core,
                    ctx,
                    user,
                    "command",
                    "insert",
                    Some(&describe_key(key)),
                    0,
                    ErrorCode::Unauthorized,
                    0,
                );
                batch.error(ErrorCode::Unauthorized, "this user's role is readonly");
                return Flow::Continue;
            }
            let group = core.insert_logged(key, value, now);
            batch.after(group, true, |out| encode_affected_response(out, 1));
            let target = core.audit.borrow().enabled().then(|| format!("keys {}", lit(key)));
            done_fast(
                core,
                ctx,
                user,
                StatementKind::Insert,
                target.as_deref(),
                ErrorCode::Success,
                1,
                batch,
            );
            return Flow::Continue;
        }
    }
    let started = Instant::now();
    let stmt = match parse(sql) {
        Ok(s) => s,
        Err(e) => {
            audit(core, ctx, user, "command", "invalid", None, 0, ErrorCode::InvalidCommand, 0);
            batch.error(ErrorCode::InvalidCommand, &e.to_string());
            return Flow::Continue;
        }
    };
    let kind = stmt.kind();
    let target = core.audit.borrow().enabled().then(|| describe(&stmt));
    if kind.is_write() && role == Role::ReadOnly {
        audit(core, ctx, user, "command", kind.name(), target.as_deref(), 0, ErrorCode::Unauthorized, 0);
        batch.error(ErrorCode::Unauthorized, "this user's role is readonly");
        return Flow::Continue;
    }
    let cfg = &core.shared.config;
    match &stmt {
        Statement::ShowStats | Statement::ShowStatus => {
            let what =
                if matches!(stmt, Statement::ShowStats) { InfoKind::ShowStats } else { InfoKind::ShowStatus };
            audit(core, ctx, user, "command", kind.name(), None, 0, ErrorCode::Success, 0);
            batch.pending.push(Pending::Info { what, started });
            return Flow::Continue;
        }
        // A point read of this core's shard in another spelling: still no plan.
        Statement::Select(sel) if sel.limit.is_none() => {
            if let (Filter::Eq(key), Projection::Columns(cols)) = (&sel.filter, &sel.projection) {
                if cols.as_slice() == [Column::Value] && shard_of_key(key, core.shards) == core.id {
                    local_point_get(core, ctx, user, key, target.as_deref(), batch, now);
                    return Flow::Continue;
                }
            }
        }
        _ => {}
    }
    let p = plan(&stmt, core.shards, cfg.max_payload);
    run_plan(core, ctx, user, kind, target, p, started, batch, now)
}

/// Run a statement's plan: this shard's part inline (or its first slice), the others' queued
/// for the batch's messages; the reply now if it is ready, else pending in the batch.
#[allow(clippy::too_many_arguments)]
fn run_plan(
    core: &Core,
    ctx: &Ctx,
    user: &str,
    kind: StatementKind,
    target: Option<String>,
    p: crate::shard::Plan,
    started: Instant,
    batch: &mut Batch,
    now: u64,
) -> Flow {
    let cfg = &core.shared.config;
    let mut replies: Vec<Option<ShardReply>> = Vec::with_capacity(p.parts.len());
    let mut remote = false;
    let mut local_group = None;
    let at = batch.pending.len();
    let mut local_bytes = 0;
    let mut local_more = None;
    for (i, (shard, op)) in p.parts.into_iter().enumerate() {
        if shard == core.id {
            match core.start_op(op, now, &mut local_group) {
                Started::Done(r) => {
                    local_bytes += r.held_bytes();
                    replies.push(Some(r));
                }
                Started::More(op, sliced, groups) => {
                    replies.push(None);
                    local_more = Some((i, op, sliced, groups));
                }
            }
        } else {
            replies.push(None);
            batch.remote[shard].push(op);
            batch.remote_at[shard].push((at, i));
            remote = true;
        }
    }
    if remote || local_more.is_some() {
        // A part still running in slices ends the batch here: nothing after it may run first.
        let flow = if local_more.is_some() { Flow::EndBatch } else { Flow::Continue };
        batch.held_bytes += local_bytes;
        batch.pending.push(Pending::Merge {
            merge: p.merge,
            replies,
            kind,
            started,
            target,
            local_group,
            local_more,
        });
        return flow;
    } else {
        let replies = replies.into_iter().map(|r| r.expect("local reply")).collect();
        let res = merge(&p.merge, replies, cfg.max_payload);
        let (code, rows) = outcome(&res);
        done(core, ctx, user, kind, target.as_deref(), started, code, rows);
        batch.after(local_group, p.merge.is_write(), |out| encode_outcome(out, &res));
    }
    Flow::Continue
}

/// A point read of this core's shard: the value goes straight from the store into the reply.
#[allow(clippy::too_many_arguments)]
fn local_point_get(
    core: &Core,
    ctx: &Ctx,
    user: &str,
    key: &[u8],
    target: Option<&str>,
    batch: &mut Batch,
    now: u64,
) {
    let store = core.store.borrow();
    // What the store shows may include a write not yet durable (a value, or a key's absence).
    let barrier = core.read_barrier_for(key);
    let hit = match store.get(key, now) {
        Some(e) => {
            let v = e.value;
            batch.after(barrier, false, |out| encode_single_value_response(out, "value", v));
            true
        }
        None => {
            batch.after(barrier, false, |out| encode_error(out, ErrorCode::KeyNotFound, "key not found"));
            false
        }
    };
    drop(store);
    let code = if hit { ErrorCode::Success } else { ErrorCode::KeyNotFound };
    done_fast(core, ctx, user, StatementKind::SelectPoint, target, code, hit as u64, batch);
}

/// `done` for a fast-path statement: with the audit log off, its statistics wait for the end of
/// the batch (see `Batch::fast`).
#[allow(clippy::too_many_arguments)]
fn done_fast(
    core: &Core,
    ctx: &Ctx,
    user: &str,
    kind: StatementKind,
    target: Option<&str>,
    code: ErrorCode,
    rows: u64,
    batch: &mut Batch,
) {
    if core.audit.borrow().enabled() {
        done(core, ctx, user, kind, target, batch.started, code, rows);
    } else {
        batch.fast.push((kind, code == ErrorCode::Success));
    }
}

/// Statistics and audit for a finished statement.
#[allow(clippy::too_many_arguments)]
fn done(
    core: &Core,
    ctx: &Ctx,
    user: &str,
    kind: StatementKind,
    target: Option<&str>,
    started: Instant,
    code: ErrorCode,
    rows: u64,
) {
    let latency_us = started.elapsed().as_micros() as u64;
    core.stats.borrow_mut().record(kind, latency_us, code == ErrorCode::Success);
    audit(core, ctx, user, "command", kind.name(), target, rows, code, latency_us);
}

/// The code and row count an audit line and the statistics record for a result.
fn outcome(res: &Result<ResultSet, WireError>) -> (ErrorCode, u64) {
    match res {
        Ok(rs) if rs.columns.is_empty() => (ErrorCode::Success, rs.affected),
        Ok(rs) => (ErrorCode::Success, rs.rows.len() as u64),
        Err(e) => (e.code, 0),
    }
}

/// One audit line, if the audit log is on.
#[allow(clippy::too_many_arguments)]
fn audit(
    core: &Core,
    ctx: &Ctx,
    user: &str,
    event: &str,
    kind: &str,
    target: Option<&str>,
    rows: u64,
    code: ErrorCode,
    latency_us: u64,
) {
    let log = core.audit.borrow();
    if !log.enabled() {
        return;
    }
    log.record(|b| {
        use std::io::Write;
        let _ = write!(b, "{{\"ts_ms\":{},\"shard\":{},\"conn\":{},\"peer\":\"", now_ms(), core.id, ctx.id);
        if let Some(p) = ctx.peer {
            let _ = write!(b, "{p}");
        }
        b.extend_from_slice(b"\",\"user\":");
        put_json_str(b, user);
        let _ = write!(b, ",\"event\":\"{event}\",\"kind\":\"{kind}\",\"target\":");
        put_json_str(b, target.unwrap_or(""));
        let _ = write!(b, ",\"rows\":{rows},\"code\":\"{}\",\"latency_us\":{latency_us}}}", code.name());
    });
}

fn audit_login(core: &Core, ctx: &Ctx, user: &str, method: &str, code: ErrorCode) {
    audit(core, ctx, user, "login", method, None, 0, code, 0);
}

/// A key as the audit log shows it: an SQL literal of at most 128 of its bytes.
fn lit(k: &[u8]) -> String {
    let mut q = quote_literal(&k[..k.len().min(128)]);
    if k.len() > 128 {
        q.push('…');
    }
    q
}

fn describe_key(k: &[u8]) -> String {
    format!("key = {}", lit(k))
}

/// What a statement touches, for the audit log: keys and key ranges as SQL literals (cut to
/// 128 bytes each), never a value.
fn describe(stmt: &Statement<'_>) -> String {
    fn keys<'k>(ks: impl Iterator<Item = &'k [u8]>, n: usize) -> String {
        let shown: Vec<String> = ks.take(8).map(lit).collect();
        let more = if n > shown.len() { format!(", … ({n} keys)") } else { String::new() };
        format!("{}{more}", shown.join(", "))
    }
    fn filter(f: &Filter<'_>) -> String {
        let b = |b: &std::ops::Bound<Vec<u8>>, open: bool| match b {
            std::ops::Bound::Included(k) => {
                format!("{}{}", if open { "[" } else { "" }, lit(k)) + if open { "" } else { "]" }
            }
            std::ops::Bound::Excluded(k) => {
                format!("{}{}", if open { "(" } else { "" }, lit(k)) + if open { "" } else { ")" }
            }
            std::ops::Bound::Unbounded => (if open { "(-∞" } else { "+∞)" }).to_string(),
        };
        match f {
            Filter::All => "all keys".into(),
            Filter::Eq(k) => describe_key(k),
            Filter::In(ks) => format!("key IN ({})", keys(ks.iter().map(|k| &**k), ks.len())),
            Filter::Like(p) => format!("key LIKE, prefix {}", lit(p.prefix())),
            Filter::Range { lower, upper } => format!("key in {}, {}", b(lower, true), b(upper, false)),
        }
    }
    match stmt {
        Statement::Select(s) => filter(&s.filter),
        Statement::Delete(f) => filter(f),
        Statement::Insert(i) => format!("keys {}", keys(i.rows().map(|r| &*r.key), i.len())),
        Statement::Update(u) => describe_key(&u.key),
        Statement::ShowStats | Statement::ShowStatus => String::new(),
    }
}

fn encode_outcome(out: &mut Vec<u8>, res: &Result<ResultSet, WireError>) {
    match res {
        Ok(rs) => encode_result(out, MessageType::Response, rs),
        Err(e) => encode_error(out, e.code, &e.message),
    }
}

/// Write `out` to the socket and empty it.
async fn write_out(core: &Core, stream: &mut Transport, out: &mut Vec<u8>) -> std::io::Result<()> {
    core.stats.borrow_mut().bytes_out += out.len() as u64;
    stream.write_all(out).await?;
    out.clear();
    Ok(())
}

/// The batch's operations for other shards, sent and answered in rounds: a shard answers until
/// its replies hold CONN_OUT_BYTES_MAX and hands back the rest, which goes again once the
/// replies before it have been written.
struct Remote {
    /// Per shard: ops not yet answered, and how many of its ops are answered.
    rest: Vec<Vec<ShardOp>>,
    answered: Vec<usize>,
}

impl Remote {
    /// Send every shard's unanswered ops that `upto` (a pending index) depends on, and put the
    /// replies in place.
    async fn ask(&mut self, core: &Core, batch: &mut Batch, now: u64, upto: usize) {
        let Some(mesh) = &core.mesh else { return };
        let mut slots = Vec::new();
        for shard in 0..core.shards {
            let due = batch.remote_at[shard].get(self.answered[shard]).is_some_and(|&(pi, _)| pi <= upto);
            if !due || self.rest[shard].is_empty() {
                continue;
            }
            let ops = std::mem::take(&mut self.rest[shard]);
            let slot = mesh
                .send(shard, |id, reply_to| Req::Ops {
                    id,
                    reply_to,
                    now_ms: now,
                    ops,
                    reply_bytes_max: CONN_OUT_BYTES_MAX,
                })
                .await;
            slots.push((shard, slot));
        }
        for (shard, slot) in slots {
            let Some(slot) = slot else { continue };
            if let Rep::Ops { replies, rest } = slot.take().await {
                let from = self.answered[shard];
                for (r, &(pi, part)) in replies.into_iter().zip(&batch.remote_at[shard][from..]) {
                    if let Pending::Merge { replies, .. } = &mut batch.pending[pi] {
                        replies[part] = Some(r);
                    }
                    self.answered[shard] += 1;
                }
                self.rest[shard] = rest;
            }
        }
    }

    /// Whether pending `pi` still waits for a shard's reply that can still come.
    fn waits(&self, batch: &Batch, pi: usize) -> bool {
        (0..self.rest.len()).any(|s| {
            !self.rest[s].is_empty()
                && batch.remote_at[s].get(self.answered[s]).is_some_and(|&(p, _)| p <= pi)
        })
    }
}

/// Send the batch's remote operations, wait for their replies, and encode all replies in order,
/// writing to the socket whenever CONN_OUT_BYTES_MAX of them have gathered.
async fn finish(
    core: &Rc<Core>,
    ctx: &Ctx,
    phase: &Phase,
    mut batch: Batch,
    now: u64,
    stream: &mut Transport,
) -> std::io::Result<Vec<u8>> {
    if batch.pending.is_empty() {
        return Ok(batch.out);
    }
    let max_payload = core.shared.config.max_payload;
    let mut remote = Remote { rest: std::mem::take(&mut batch.remote), answered: vec![0; core.shards] };
    remote.ask(core, &mut batch, now, usize::MAX).await;
    let mut out = std::mem::take(&mut batch.out);
    // Replies land in `batch.pending` by index; each is taken out as its turn comes.
    for pi in 0..batch.pending.len() {
        while remote.waits(&batch, pi) {
            // What is encoded goes out first, so that the next round's replies replace it.
            if !out.is_empty() {
                write_out(core, stream, &mut out).await?;
            }
            remote.ask(core, &mut batch, now, pi).await;
        }
        let p = std::mem::replace(&mut batch.pending[pi], Pending::Staged(0..0));
        match p {
            Pending::Staged(r) => out.extend_from_slice(&batch.stage[r]),
            Pending::Durable { reply, group, write } => {
                if group.wait().await {
                    out.extend_from_slice(&batch.stage[reply]);
                } else {
                    let e = if write { WireError::storage() } else { WireError::storage_read() };
                    encode_error(&mut out, e.code, &e.message);
                }
            }
            Pending::Merge { merge: m, mut replies, kind, started, target, mut local_group, local_more } => {
                if let Some((i, op, sliced, groups)) = local_more {
                    // The rest of this shard's part, in slices: the core's other connections
                    // are served in between.
                    let (reply, group) = core.finish_op(op, sliced, groups, now).await;
                    replies[i] = Some(reply);
                    if group.is_some() {
                        local_group = group;
                    }
                }
                let durable = match local_group {
                    Some(g) => g.wait().await,
                    None => true,
                };
                let res = match replies.into_iter().collect::<Option<Vec<_>>>() {
                    _ if !durable && m.is_write() => Err(WireError::storage()),
                    _ if !durable => Err(WireError::storage_read()),
                    Some(replies) => merge(&m, replies, max_payload),
                    None => Err(WireError::new(ErrorCode::ServerOverloaded, "a shard is not answering")),
                };
                let (code, rows) = outcome(&res);
                done(core, ctx, phase.user(), kind, target.as_deref(), started, code, rows);
                encode_outcome(&mut out, &res);
            }
            Pending::Info { what, started } => {
                let rs = info(core, phase, what).await;
                core.stats.borrow_mut().record(
                    StatementKind::Show,
                    started.elapsed().as_micros() as u64,
                    true,
                );
                if matches!(what, InfoKind::StatsFrame) {
                    audit(
                        core,
                        ctx,
                        phase.user(),
                        "stats",
                        "stats",
                        None,
                        rs.rows.len() as u64,
                        ErrorCode::Success,
                        0,
                    );
                }
                let kind = if matches!(what, InfoKind::StatsFrame) {
                    MessageType::Stats
                } else {
                    MessageType::Response
                };
                encode_result(&mut out, kind, &rs);
            }
        }
        if out.len() >= CONN_OUT_BYTES_MAX {
            write_out(core, stream, &mut out).await?;
        }
    }
    Ok(out)
}

fn durability_text(cfg: &super::Config) -> String {
    match cfg.durability {
        None => "none (in memory only)".into(),
        Some(Mode::Sync) => "sync (acknowledged after fdatasync; group commit)".into(),
        Some(Mode::Periodic { interval_ms }) => format!("periodic (fdatasync every {interval_ms} ms)"),
    }
}

async fn info(core: &Rc<Core>, phase: &Phase, what: InfoKind) -> ResultSet {
    let all = core.collect_stats().await;
    let int = |v: u64| Value::Int(v as i64);
    let text = |s: &str| Value::Bytes(s.as_bytes().to_vec());
    let rows = match what {
        InfoKind::ShowStats | InfoKind::StatsFrame => {
            let mut total = all[0].clone();
            for s in &all[1..] {
                total.merge(s);
            }
            total.rows()
        }
        InfoKind::ShowStatus => {
            let cfg = &core.shared.config;
            let (user, role) = match phase {
                Phase::Ready { user, role, .. } => (&**user, role.name()),
                _ => ("", ""),
            };
            let mut rows = vec![
                ("version".to_string(), text(env!("CARGO_PKG_VERSION"))),
                ("protocol_version".into(), int(VERSION as u64)),
                ("uptime_s".into(), int(core.shared.started.elapsed().as_secs())),
                ("shards".into(), int(core.shards as u64)),
                ("connections".into(), int(core.shared.connections.load(Ordering::Relaxed) as u64)),
                ("max_connections".into(), int(core.shared.max_connections as u64)),
                ("max_payload".into(), int(cfg.max_payload as u64)),
                ("durability".into(), text(&durability_text(cfg))),
                (
                    "encryption_at_rest".into(),
                    text(if cfg.encryption_key.is_some() { "AES-256-GCM" } else { "off" }),
                ),
                ("tls".into(), text(if core.shared.tls.is_some() { "TLS 1.3" } else { "off" })),
                ("user".into(), text(user)),
                ("role".into(), text(role)),
            ];
            if cfg.durability.is_some() {
                let total = |f: fn(&ShardStats) -> u64| all.iter().map(f).sum::<u64>();
                rows.push(("wal_log_bytes".into(), int(total(|s| s.log_bytes))));
                rows.push(("wal_snapshot_bytes".into(), int(total(|s| s.snapshot_bytes))));
                let last = all.iter().map(|s| s.last_snapshot_ms).max().unwrap_or(0);
                rows.push(("wal_last_snapshot_unix_ms".into(), int(last)));
                rows.push(("wal_last_snapshot_age_s".into(), int(now_ms().saturating_sub(last) / 1000)));
                rows.push(("storage_errors".into(), int(total(|s| s.storage_errors))));
            }
            for (i, s) in all.iter().enumerate() {
                rows.push((format!("shard_{i}_keys"), int(s.keys)));
                rows.push((format!("shard_{i}_connections"), int(s.connections)));
                if cfg.durability.is_some() {
                    rows.push((format!("shard_{i}_wal_log_bytes"), int(s.log_bytes)));
                    rows.push((format!("shard_{i}_wal_snapshot_bytes"), int(s.snapshot_bytes)));
                }
            }
            rows
        }
    };
    crate::shard::plan::name_value_result(rows)
}
