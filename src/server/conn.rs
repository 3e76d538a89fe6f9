//! One client connection's socket loop: read what the client sent (bounded, with the
//! handshake, idle and per-frame deadlines), hand each read buffer's frames to a batch, write
//! the replies, and give the connection up to the parker when it idles. The session state
//! machine decides what the frames mean (`session`); the batch runs them (`batch`).

use super::admission::Slot;
use super::batch::{self, write_out, Batch, Flow};
use super::core::Core;
use super::runtime::{now_ms, race, sleep, spawn_blocking, Either};
use super::session::Session;
use super::transport::Transport;
use crate::limits::*;
use crate::protocol::{decode_frame, Decoded, ErrorCode, Message, MessageType};
use std::rc::Rc;
use std::time::{Duration, Instant};

pub struct Conn {
    core: Rc<Core>,
    session: Session,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    /// When the partial frame in `inbuf` began to arrive (the frame timeout runs from there).
    frame_started: Option<Instant>,
    /// This connection's login slot (admission.rs), held until it authenticates.
    slot: Option<Slot>,
}

/// How serving a connection ended. Returned once per connection task, so its size is no cost.
#[allow(clippy::large_enum_variant)]
pub enum Served {
    Closed,
    /// Idle: its session and socket, for the parker.
    Idle(Session, Transport),
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
    /// A connection of `session`: a new one holding a login slot, or one resumed from the parker.
    pub fn new(core: Rc<Core>, session: Session, slot: Option<Slot>) -> Conn {
        Conn { core, session, inbuf: Vec::new(), out: Vec::new(), frame_started: None, slot }
    }

    /// Whether the session may go on after a reload of the users and API keys (`Session::revoked`).
    fn revoked(&mut self) -> Option<&'static str> {
        let auth = self.core.auth.borrow().clone();
        self.session.revoked(&auth, self.core.auth_epoch.get())
    }

    fn payload_max(&self) -> u32 {
        self.session.payload_max(self.core.shared.config.max_payload)
    }

    /// Serve until the connection ends, or idles long enough to be parked.
    pub async fn serve(mut self, mut stream: Transport) -> Served {
        let _ = stream.tcp().set_nodelay(true);
        if self.session.peer.is_none() {
            self.session.peer = stream.tcp().peer_addr().ok();
        }
        loop {
            if let Some(why) = self.revoked() {
                tracing::info!(conn = self.session.id, user = self.session.user(), why, "session ended");
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
                ReadOutcome::Timeout if self.session.ready() => "idle timeout",
                ReadOutcome::Timeout => "handshake timeout",
                ReadOutcome::FrameTimeout => "frame not completed in time",
                ReadOutcome::Shutdown => "server shutting down",
                ReadOutcome::Park if matches!(stream, Transport::Plain(_)) => {
                    tracing::debug!(conn = self.session.id, "connection idle: parking it");
                    return Served::Idle(self.session, stream);
                }
                ReadOutcome::Park => continue,
            };
            let frame = Message::Disconnect { code: 0, reason: reason.into() }.to_frame();
            let _ = stream.write_all(&frame).await;
            break;
        }
        stream.close().await;
        tracing::debug!(conn = self.session.id, "connection closed");
        Served::Closed
    }

    fn has_frame(&self) -> bool {
        matches!(decode_frame(&self.inbuf, self.payload_max()), Ok(Decoded::Frame(_)) | Err(_))
    }

    /// What ends the wait for more bytes if nothing comes, and when: the earliest of the idle
    /// timeout (logged in) or what is left of the handshake timeout (not yet); what is left of
    /// the frame timeout for a frame begun (a deadline per frame, not per byte: trickling does
    /// not extend it); parking, for a logged-in plaintext connection with nothing buffered.
    fn deadline(&self, plain: bool) -> Option<(Duration, ReadOutcome)> {
        let cfg = &self.core.shared.config;
        let ready = self.session.ready();
        let mut deadline: Option<(Duration, ReadOutcome)> = None;
        let mut sooner = |t: Duration, o: ReadOutcome| {
            if deadline.as_ref().is_none_or(|(d, _)| t < *d) {
                deadline = Some((t, o));
            }
        };
        if !ready {
            sooner(
                Duration::from_millis(cfg.handshake_timeout_ms)
                    .saturating_sub(self.session.accepted.elapsed()),
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
        if ready && self.inbuf.is_empty() && plain {
            sooner(Duration::from_millis(CONN_PARK_AFTER_IDLE_MS), ReadOutcome::Park);
        }
        deadline
    }

    /// Read more bytes, unless a timeout or shutdown comes first.
    async fn read(&mut self, stream: &mut Transport) -> ReadOutcome {
        if self.core.shutdown.is_fired() {
            return ReadOutcome::Shutdown;
        }
        let ready = self.session.ready();
        let deadline = self.deadline(matches!(stream, Transport::Plain(_)));
        let shutdown = self.core.shutdown.clone();
        // A logged-in session also wakes when the users and keys change (revocation).
        let auth = ready.then(|| self.core.auth_changed.borrow().clone());
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
        let mut batch = Batch::new(std::mem::take(&mut self.out), shards);
        let batch_started = batch.started;
        let now = now_ms();
        if self.session.ready() {
            batch::prefetch_point_reads(&self.core, &self.inbuf, self.payload_max());
        }
        let mut pos = 0;
        let mut close = false;
        for _ in 0..CONN_BATCH_REQUESTS_MAX {
            let limit = self.payload_max();
            let (kind, payload) = match decode_frame(&self.inbuf[pos..], limit) {
                Ok(Decoded::Incomplete { .. }) => break,
                Err(e) => {
                    tracing::debug!(conn = self.session.id, error = %e, "framing error; closing");
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
            let planned = self.plan_if_long(kind, payload.clone()).await;
            let (core, input) = (&self.core, &self.inbuf);
            let flow =
                batch::handle_frame(core, &mut self.session, kind, input, payload, &mut batch, now, planned);
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
        if self.session.ready() {
            // Logged in: its login slot goes back to the core's admission.
            self.slot = None;
        }
        // The handled requests stay in the input until their replies are out: a statement that
        // turns out slow is described from its text for the slow log. A frame begun after them
        // is timed from now, as before they stayed (no clock read when there is none).
        let rest_since = (pos < self.inbuf.len()).then(Instant::now);
        let fast = batch.take_fast();
        self.out = batch::finish(&self.core, &self.session, batch, &self.inbuf, now, stream).await?;
        batch::fast_done(&self.core, &self.session, fast, &self.inbuf, batch_started);
        self.consumed(pos, rest_since);
        Ok(close)
    }

    /// A long statement is parsed and planned on the blocking pool meanwhile: the core's other
    /// connections run, and nothing of this one's runs before it. None: it runs on the core.
    async fn plan_if_long(&self, kind: u8, payload: std::ops::Range<usize>) -> Option<batch::Planned> {
        let sql = &self.inbuf[payload];
        if kind != MessageType::Command as u8 || !self.session.ready() || !batch::plan_off_core(sql) {
            return None;
        }
        let sql = sql.to_vec();
        let (shards, max_payload) = (self.core.shards, self.core.shared.config.max_payload);
        Some(spawn_blocking(move || batch::plan_statement(sql, shards, max_payload)).await)
    }

    /// The first `pos` bytes of the input were handled, the rest left at `rest_since`: drop them,
    /// and time the frame left waiting for the rest of its bytes from then.
    fn consumed(&mut self, pos: usize, rest_since: Option<Instant>) {
        self.inbuf.drain(..pos);
        if self.inbuf.is_empty() {
            self.frame_started = None;
            if self.inbuf.capacity() > 0 {
                // An idle connection holds no input buffer.
                self.inbuf = Vec::new();
            }
        } else if pos > 0 || self.frame_started.is_none() {
            self.frame_started = Some(rest_since.unwrap_or_else(Instant::now));
        }
    }
}
