//! A batch: the requests of one read buffer, run in order. Statements for this core's shard run
//! inline (the canonical point read and one-row INSERT without a parse); the others' parts
//! are gathered per shard into one mesh message each; the replies are encoded in request order
//! and written once per batch, or whenever CONN_OUT_BYTES_MAX of them have gathered. Each
//! finished statement is counted in the core's statistics, audited, and put in the core's slow
//! log if its latency reached the threshold.

mod reply;
mod statement;

pub use reply::{finish, write_out};
use statement::command;
pub use statement::{plan_off_core, plan_statement, Planned};

use super::audit::describe_text;
use super::core::{Core, Unfinished};
use super::datadir::RateLimit;
use super::report::InfoKind;
use super::runtime::{now_ms, now_us};
use super::session::{Env, LoginEvent, Phase, Session, Step};
use super::wal::Group;
use crate::audit_record::{Record, Target};
use crate::error::WireError;
use crate::limits::*;
use crate::protocol::message::encode_error;
use crate::protocol::{begin_frame, end_frame, peek_frame, Decoded, ErrorCode, MessageType, ResultSet};
use crate::security::ratelimit::TokenBucket;
use crate::shard::{shard_of_key, Merge, ShardOp, ShardReply};
use crate::slowlog::SlowEntry;
use crate::sql::{hot_key, StatementKind};
use std::ops::Range;
use std::rc::Rc;
use std::time::Instant;

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
        /// Where the statement lies in the connection's input (`Batch::at`).
        sql: Range<usize>,
        /// The log group of this statement's writes to the local shard.
        local_group: Option<Rc<Group>>,
        /// This shard's part when it runs in slices: its index among the parts, and its state.
        local_more: Option<(usize, Box<Unfinished>)>,
    },
    Info {
        what: InfoKind,
        started: Instant,
    },
}

/// The replies of one read buffer's requests.
pub struct Batch {
    out: Vec<u8>,
    stage: Vec<u8>,
    pending: Vec<Pending>,
    /// Operations for each remote shard, and for each the (pending, part) it answers.
    remote: Vec<Vec<ShardOp>>,
    remote_at: Vec<Vec<(usize, usize)>>,
    /// Bytes of local replies held in `pending` for merging: with `out` and `stage`, what the
    /// batch holds against CONN_OUT_BYTES_MAX.
    held_bytes: usize,
    /// Fast-path statements of this batch, recorded when the batch's replies are ready with the
    /// batch's time: their replies leave together, so that is their latency, and it costs two
    /// clock reads a batch instead of two a request.
    fast: Vec<FastDone>,
    /// Where the request being handled lies in the connection's input, which keeps it until the
    /// batch's replies are out: a statement found slow then is described from its text.
    at: Range<usize>,
    /// When the batch's bytes were read.
    pub started: Instant,
    /// The user's own rate limit, looked up once a batch rather than once a request.
    user_limit: Option<Option<RateLimit>>,
}

impl Batch {
    pub fn new(out: Vec<u8>, shards: usize) -> Batch {
        Batch {
            out,
            stage: Vec::new(),
            pending: Vec::new(),
            remote: vec![Vec::new(); shards],
            remote_at: vec![Vec::new(); shards],
            held_bytes: 0,
            fast: Vec::new(),
            at: 0..0,
            started: Instant::now(),
            user_limit: None,
        }
    }

    /// The fast-path statements run, for `fast_done` once the replies are out.
    pub fn take_fast(&mut self) -> Vec<FastDone> {
        std::mem::take(&mut self.fast)
    }

    fn blocked(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Reply bytes held: a batch stops taking requests at CONN_OUT_BYTES_MAX.
    pub fn held(&self) -> usize {
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

    pub fn error(&mut self, code: ErrorCode, msg: &str) {
        self.ready(|out| encode_error(out, code, msg));
    }

    /// Queue part `part` of the statement at pending index `at` for `shard`: sent with the
    /// batch's other ops for that shard in one message.
    fn queue_remote(&mut self, shard: usize, op: ShardOp, at: usize, part: usize) {
        self.remote[shard].push(op);
        self.remote_at[shard].push((at, part));
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

pub enum Flow {
    Continue,
    /// Take no more requests this batch: a statement is still running (in slices).
    EndBatch,
    Close,
}

/// Handle one frame of a session, whose payload is `input[at]`: its control frames through the
/// session's state machine, its statements here. `input` must hold the frame until the
/// batch is finished (`finish`, `fast_done`).
#[allow(clippy::too_many_arguments)]
pub fn handle_frame(
    core: &Core,
    s: &mut Session,
    kind: u8,
    input: &[u8],
    at: Range<usize>,
    batch: &mut Batch,
    now: u64,
    planned: Option<Planned>,
) -> Flow {
    let payload = &input[at.clone()];
    batch.at = at;
    // The hot path first: a logged-in session's statement needs nothing of the state machine.
    if let (true, Phase::Ready { user, role, bucket, .. }) =
        (kind == MessageType::Command as u8, &mut s.phase)
    {
        let (user, role) = (user.clone(), *role);
        if let Err(why) = admit(core, &user, bucket, &mut batch.user_limit) {
            refuse_rate_limited(core, s, &user, "command", why, batch);
            return Flow::Continue;
        }
        return command(core, s, role, payload, batch, now, planned);
    }
    let step = {
        let auth = core.auth.borrow().clone();
        let mut throttle = core.throttle.borrow_mut();
        let mut env = Env {
            auth: &auth,
            throttle: &mut throttle,
            server_info: &core.server_info,
            rate_limit_conn: core.shared.config.rate_limit_conn,
            now: Instant::now(),
        };
        s.on_frame(kind, payload, &mut env)
    };
    match step {
        // Only a logged-in session's, which took the hot path above.
        Step::Command => unreachable!("a COMMAND of a session not logged in"),
        Step::Stats => {
            let Phase::Ready { user, bucket, .. } = &mut s.phase else { unreachable!("STATS before login") };
            let user = user.clone();
            match admit(core, &user, bucket, &mut batch.user_limit) {
                Ok(()) => {
                    batch.pending.push(Pending::Info { what: InfoKind::StatsFrame, started: Instant::now() })
                }
                Err(why) => refuse_rate_limited(core, s, &user, "stats", why, batch),
            }
            Flow::Continue
        }
        Step::Reply { replies, close, login } => {
            if let Some(l) = login {
                record_login(core, s, &l);
            }
            for m in replies {
                batch.ready(|out| m.encode(out));
            }
            if close {
                Flow::Close
            } else {
                Flow::Continue
            }
        }
    }
}

fn record_login(core: &Core, s: &Session, l: &LoginEvent) {
    if l.code != ErrorCode::Success {
        let mut st = core.stats.borrow_mut();
        st.failed_logins += 1;
        st.login_throttled += (l.code == ErrorCode::RateLimited) as u64;
    }
    audit(core, s, &l.user, "login", l.method, None, 0, l.code, 0);
}

/// Whether the rate limits let one more request of `user` run now (`RateLimits::admit`); the
/// user's own limit is looked up once a batch.
fn admit(
    core: &Core,
    user: &str,
    conn_bucket: &mut Option<TokenBucket>,
    user_limit: &mut Option<Option<RateLimit>>,
) -> Result<(), &'static str> {
    let user_limit =
        *user_limit.get_or_insert_with(|| core.auth.borrow().users.get(user).and_then(|u| u.rate_limit));
    let mut limits = core.limits.borrow_mut();
    if conn_bucket.is_none() && user_limit.is_none() && !limits.server_wide() {
        return Ok(()); // no clock read when no limit is set
    }
    limits.admit(conn_bucket, user, user_limit, Instant::now())
}

/// Look ahead over the batch's pipelined point reads and one-row writes of this shard and
/// prefetch their entries, so that their cache misses overlap instead of coming one after
/// another (a fifth of the server's time at 50 connections x pipeline 16 GET was the misses of
/// each lookup; `cargo bench --bench core -- "16 gets"` at 1M keys: 9.7 µs one by one, 1.5 µs
/// looked ahead).
pub fn prefetch_point_reads(core: &Core, inbuf: &[u8], payload_max: u32) {
    /// Keys hashed before their probes start: enough for the misses of one wave to overlap.
    const WAVE: usize = 32;
    let store = core.store.borrow();
    let mut hashes = [0u64; WAVE];
    let (mut pos, mut frames) = (0, 0);
    loop {
        // Parse and hash (the input only, in cache), then probe: each probe's loads may miss,
        // and a probe that waits behind a parse keeps the next one from starting.
        let mut n = 0;
        let mut more = true;
        while n < WAVE {
            let f = match peek_frame(&inbuf[pos..], payload_max) {
                Ok(Decoded::Frame(f)) if frames < CONN_BATCH_REQUESTS_MAX => f,
                _ => {
                    more = false;
                    break;
                }
            };
            if frames == 0 && f.consumed == inbuf.len() {
                return; // a lone request: nothing to overlap with
            }
            frames += 1;
            pos += f.consumed;
            if f.kind != MessageType::Command as u8 {
                continue;
            }
            if let Some(key) = hot_key(f.payload) {
                if shard_of_key(key, core.shards) == core.id {
                    hashes[n] = store.key_hash(key);
                    n += 1;
                }
            }
        }
        for &h in &hashes[..n] {
            store.prefetch(h);
        }
        if !more {
            return;
        }
    }
}

fn refuse_rate_limited(core: &Core, s: &Session, user: &str, event: &str, why: &str, batch: &mut Batch) {
    core.stats.borrow_mut().rate_limited += 1;
    audit(core, s, user, event, "", None, 0, ErrorCode::RateLimited, 0);
    batch.error(ErrorCode::RateLimited, &format!("rate limited by {why}; the request was not executed"));
}

/// A fast-path statement of a batch, waiting for the batch's latency (`fast_done`); 20 bytes,
/// one per pipelined request.
pub struct FastDone {
    kind: StatementKind,
    code: ErrorCode,
    /// 0 or 1: a point read's hit, a write's row.
    rows: u8,
    /// How the audit log names its key.
    form: KeyForm,
    /// Where it and its key lie in the connection's input (which is far smaller than 4 GiB).
    at: u32,
    len: u32,
    key_at: u32,
    key_len: u32,
}
const _: () = assert!(std::mem::size_of::<FastDone>() <= 24);

/// The target of a fast-path statement, which is its one key.
#[derive(Clone, Copy)]
pub enum KeyForm {
    PointRead,
    Insert,
    Bump,
}

impl KeyForm {
    fn target(self, key: &[u8]) -> Target<'_> {
        match self {
            KeyForm::PointRead => Target::Key(key),
            KeyForm::Insert => Target::Keys(key),
            KeyForm::Bump => Target::Bump(key),
        }
    }
}

/// `done` for a fast-path statement `sql` of key `key`: its statistics and audit record wait
/// for the end of the batch (see `Batch::fast`), one clock read for all of them. A key that is
/// not in the statement's text (one spelled with escapes, unquoted for the store) is done now.
#[allow(clippy::too_many_arguments)]
fn done_fast(
    core: &Core,
    s: &Session,
    kind: StatementKind,
    (form, key): (KeyForm, &[u8]),
    sql: &[u8],
    code: ErrorCode,
    rows: u64,
    batch: &mut Batch,
) {
    let key_in_sql =
        (key.as_ptr() as usize).checked_sub(sql.as_ptr() as usize).filter(|o| o + key.len() <= sql.len());
    let Some(key_off) = key_in_sql else {
        return done(core, s, s.user(), kind, Some(form.target(key)), sql, batch.started, code, rows);
    };
    let (at, len) = (batch.at.start as u32, batch.at.len() as u32);
    let (key_at, key_len) = (at + key_off as u32, key.len() as u32);
    batch.fast.push(FastDone { kind, code, rows: rows.min(1) as u8, form, at, len, key_at, key_len });
}

/// The batch's fast-path statements are answered: each is recorded with the batch's latency,
/// and if that reached the slow log's threshold, the first SLOWLOG_BATCH_FAST_MAX are logged.
/// `input` is the connection's input that the batch was read from.
pub fn fast_done(core: &Core, s: &Session, fast: Vec<FastDone>, input: &[u8], started: Instant) {
    if fast.is_empty() {
        return;
    }
    let latency_us = started.elapsed().as_micros() as u64;
    let mut stats = core.stats.borrow_mut();
    for f in &fast {
        stats.record(f.kind, latency_us, f.code == ErrorCode::Success);
    }
    drop(stats);
    let log = core.audit.borrow();
    if log.enabled() {
        let (shard, conn, peer, user, ts_ms) = (core.id as u16, s.id, s.peer, s.user(), now_ms());
        for f in &fast {
            let key = input.get(f.key_at as usize..(f.key_at + f.key_len) as usize).unwrap_or_default();
            log.record(&Record {
                ts_ms,
                shard,
                conn,
                peer,
                user,
                event: "command",
                kind: f.kind.name(),
                target: Some(f.form.target(key)),
                rows: f.rows as u64,
                code: f.code,
                latency_us,
            });
        }
    }
    drop(log);
    if latency_us >= core.slowlog_threshold_us {
        for f in fast.iter().take(SLOWLOG_BATCH_FAST_MAX) {
            let sql = input.get(f.at as usize..(f.at + f.len) as usize).unwrap_or_default();
            log_slow(core, s.user(), f.kind, None, sql, f.rows as u64, latency_us);
        }
    }
}

/// Statistics, audit and slow log for a finished statement `sql`.
#[allow(clippy::too_many_arguments)]
fn done(
    core: &Core,
    s: &Session,
    user: &str,
    kind: StatementKind,
    target: Option<Target<'_>>,
    sql: &[u8],
    started: Instant,
    code: ErrorCode,
    rows: u64,
) {
    let latency_us = started.elapsed().as_micros() as u64;
    core.stats.borrow_mut().record(kind, latency_us, code == ErrorCode::Success);
    if latency_us >= core.slowlog_threshold_us {
        log_slow(core, user, kind, target, sql, rows, latency_us);
    }
    audit(core, s, user, "command", kind.name(), target, rows, code, latency_us);
}

/// Put a statement in this core's slow log. `target` is what the audit log says it touched,
/// when the audit log is on; otherwise it is described now from its text `sql`, so that a
/// statement that is not slow is never described for the slow log's sake. No long parse runs
/// here: a statement long enough to be parsed off the core comes with its target, and the
/// canonical forms (which may carry a large value) are read without the parser.
#[cold]
#[inline(never)]
fn log_slow(
    core: &Core,
    user: &str,
    kind: StatementKind,
    target: Option<Target<'_>>,
    sql: &[u8],
    rows: u64,
    duration_us: u64,
) {
    let target = match target {
        Some(t) => t.text(),
        None => describe_text(sql),
    };
    core.slowlog.borrow_mut().push(SlowEntry {
        time_unix_us: now_us(),
        duration_us,
        user: user.to_owned(),
        kind,
        target,
        rows,
        shard: core.id,
        seq: 0,
    });
}

/// The code and row count an audit line and the statistics record for a result.
fn outcome(res: &Result<ResultSet, WireError>) -> (ErrorCode, u64) {
    match res {
        Ok(rs) if rs.columns.is_empty() => (ErrorCode::Success, rs.affected),
        Ok(rs) => (ErrorCode::Success, rs.rows.len() as u64),
        Err(e) => (e.code, 0),
    }
}

/// One audit line of this session, if the audit log is on.
#[allow(clippy::too_many_arguments)]
fn audit(
    core: &Core,
    s: &Session,
    user: &str,
    event: &str,
    kind: &str,
    target: Option<Target<'_>>,
    rows: u64,
    code: ErrorCode,
    latency_us: u64,
) {
    let log = core.audit.borrow();
    if log.enabled() {
        let shard = core.id as u16;
        let (conn, peer, ts_ms) = (s.id, s.peer, now_ms());
        log.record(&Record { ts_ms, shard, conn, peer, user, event, kind, target, rows, code, latency_us });
    }
}

fn encode_outcome(out: &mut Vec<u8>, res: &Result<ResultSet, WireError>) {
    match res {
        Ok(rs) => encode_result(out, MessageType::Response, rs),
        Err(e) => encode_error(out, e.code, &e.message),
    }
}
