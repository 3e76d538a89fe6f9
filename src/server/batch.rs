//! A batch: the requests of one read buffer, run in order. Statements for this core's shard run
//! inline (the canonical point read and one-row INSERT without a parse); the others' parts
//! are gathered per shard into one mesh message each; the replies are encoded in request order
//! and written once per batch, or whenever CONN_OUT_BYTES_MAX of them have gathered.

use super::audit::{describe, describe_key, lit};
use super::core::{Core, Started, Unfinished};
use super::datadir::{RateLimit, Role};
use super::mesh::{Rep, Req};
use super::report::{self, InfoKind};
use super::session::{Env, LoginEvent, Phase, Session, Step};
use super::transport::Transport;
use super::wal::Group;
use crate::error::WireError;
use crate::limits::*;
use crate::protocol::message::encode_error;
use crate::protocol::{
    begin_frame, encode_affected_response, encode_single_value_response, end_frame, peek_frame, Decoded,
    ErrorCode, MessageType, ResultSet,
};
use crate::security::ratelimit::TokenBucket;
use crate::shard::{merge, plan, shard_of_key, Merge, ShardOp, ShardReply};
use crate::sql::{
    hot_key, insert_one, parse, point_select_key, Column, Filter, Projection, Statement, StatementKind,
};
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
    /// Fast-path statements of this batch (kind, succeeded), recorded when the batch's replies
    /// are ready with the batch's time: their replies leave together, so that is their latency,
    /// and it costs two clock reads a batch instead of two a request.
    fast: Vec<(StatementKind, bool)>,
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
            started: Instant::now(),
            user_limit: None,
        }
    }

    /// The fast-path statements run, for the statistics once the replies are out.
    pub fn take_fast(&mut self) -> Vec<(StatementKind, bool)> {
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

/// Handle one frame of a session: its control frames through the session's state machine,
/// its statements here.
#[allow(clippy::too_many_arguments)]
pub fn handle_frame(
    core: &Core,
    s: &mut Session,
    kind: u8,
    payload: &[u8],
    batch: &mut Batch,
    now: u64,
    planned: Option<Planned>,
) -> Flow {
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
/// another (a fifth of the server's time at 50 connections x pipeline 16 GET was the two misses
/// of each lookup; `cargo bench --bench core -- "16 gets"`: 2.1x faster at 1M keys).
pub fn prefetch_point_reads(core: &Core, inbuf: &[u8], payload_max: u32) {
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

fn refuse_rate_limited(core: &Core, s: &Session, user: &str, event: &str, why: &str, batch: &mut Batch) {
    core.stats.borrow_mut().rate_limited += 1;
    audit(core, s, user, event, "", None, 0, ErrorCode::RateLimited, 0);
    batch.error(ErrorCode::RateLimited, &format!("rate limited by {why}; the request was not executed"));
}

/// A statement parsed and planned away from the core (`plan_statement`): its kind, what the
/// audit log says it touches, and its plan; or why it does not parse.
pub type Planned = Result<(StatementKind, Option<String>, crate::shard::Plan), String>;

/// Parse and plan a long statement: run on the blocking thread pool, so that a 1 MB INSERT's
/// parse (tens of milliseconds) does not stall the core's other connections.
pub fn plan_statement(sql: Vec<u8>, shards: usize, max_payload: u32, audit: bool) -> Planned {
    let sql = std::str::from_utf8(&sql).map_err(|_| "SQL is not valid UTF-8".to_string())?;
    let stmt = parse(sql).map_err(|e| e.to_string())?;
    Ok((stmt.kind(), audit.then(|| describe(&stmt)), plan(&stmt, shards, max_payload)))
}

/// Whether a COMMAND is long enough to be parsed off the core, and not one of the canonical
/// forms the core answers without a parse.
pub fn plan_off_core(payload: &[u8]) -> bool {
    payload.len() >= STATEMENT_OFF_CORE_BYTES
        && std::str::from_utf8(payload)
            .is_ok_and(|sql| point_select_key(sql).is_none() && insert_one(sql).is_none())
}

#[allow(clippy::too_many_arguments)]
fn command(
    core: &Core,
    s: &Session,
    role: Role,
    payload: &[u8],
    batch: &mut Batch,
    now: u64,
    planned: Option<Planned>,
) -> Flow {
    let user = s.user();
    if let Some(planned) = planned {
        let started = Instant::now();
        let (kind, target, p) = match planned {
            Ok(p) => p,
            Err(e) => {
                audit(core, s, user, "command", "invalid", None, 0, ErrorCode::InvalidCommand, 0);
                batch.error(ErrorCode::InvalidCommand, &e);
                return Flow::Continue;
            }
        };
        if kind.is_write() && role == Role::ReadOnly {
            audit(core, s, user, "command", kind.name(), target.as_deref(), 0, ErrorCode::Unauthorized, 0);
            batch.error(ErrorCode::Unauthorized, "this user's role is readonly");
            return Flow::Continue;
        }
        return run_plan(core, s, user, kind, target, p, started, batch, now);
    }
    let Ok(sql) = std::str::from_utf8(payload) else {
        audit(core, s, user, "command", "invalid", None, 0, ErrorCode::InvalidCommand, 0);
        batch.error(ErrorCode::InvalidCommand, "SQL is not valid UTF-8");
        return Flow::Continue;
    };
    // The hot path: a canonical point read of this core's shard, answered without a parse or
    // a plan.
    if let Some(key) = point_select_key(sql) {
        if shard_of_key(key, core.shards) == core.id {
            let target = core.audit.borrow().enabled().then(|| describe_key(key));
            local_point_get(core, s, user, key, target.as_deref(), batch, now);
            return Flow::Continue;
        }
    }
    // And a canonical one-row INSERT of a local key.
    if let Some((key, value)) = insert_one(sql) {
        if shard_of_key(key, core.shards) == core.id {
            if role == Role::ReadOnly {
                audit(
                    core,
                    s,
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
            done_fast(core, s, user, StatementKind::Insert, target.as_deref(), ErrorCode::Success, 1, batch);
            return Flow::Continue;
        }
    }
    let started = Instant::now();
    let stmt = match parse(sql) {
        Ok(s) => s,
        Err(e) => {
            audit(core, s, user, "command", "invalid", None, 0, ErrorCode::InvalidCommand, 0);
            batch.error(ErrorCode::InvalidCommand, &e.to_string());
            return Flow::Continue;
        }
    };
    let kind = stmt.kind();
    let target = core.audit.borrow().enabled().then(|| describe(&stmt));
    if kind.is_write() && role == Role::ReadOnly {
        audit(core, s, user, "command", kind.name(), target.as_deref(), 0, ErrorCode::Unauthorized, 0);
        batch.error(ErrorCode::Unauthorized, "this user's role is readonly");
        return Flow::Continue;
    }
    let cfg = &core.shared.config;
    match &stmt {
        Statement::ShowStats | Statement::ShowStatus => {
            let what =
                if matches!(stmt, Statement::ShowStats) { InfoKind::ShowStats } else { InfoKind::ShowStatus };
            audit(core, s, user, "command", kind.name(), None, 0, ErrorCode::Success, 0);
            batch.pending.push(Pending::Info { what, started });
            return Flow::Continue;
        }
        // A point read of this core's shard in another spelling: still no plan.
        Statement::Select(sel) if sel.limit.is_none() => {
            if let (Filter::Eq(key), Projection::Columns(cols)) = (&sel.filter, &sel.projection) {
                if cols.as_slice() == [Column::Value] && shard_of_key(key, core.shards) == core.id {
                    local_point_get(core, s, user, key, target.as_deref(), batch, now);
                    return Flow::Continue;
                }
            }
        }
        _ => {}
    }
    let p = plan(&stmt, core.shards, cfg.max_payload);
    run_plan(core, s, user, kind, target, p, started, batch, now)
}

/// Run a statement's plan: this shard's part inline (or its first slice), the others' queued
/// for the batch's messages; the reply now if it is ready, else pending in the batch.
#[allow(clippy::too_many_arguments)]
fn run_plan(
    core: &Core,
    s: &Session,
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
                Started::More(rest) => {
                    replies.push(None);
                    local_more = Some((i, rest));
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
        done(core, s, user, kind, target.as_deref(), started, code, rows);
        batch.after(local_group, p.merge.is_write(), |out| encode_outcome(out, &res));
    }
    Flow::Continue
}

/// A point read of this core's shard: the value goes straight from the store into the reply.
#[allow(clippy::too_many_arguments)]
fn local_point_get(
    core: &Core,
    s: &Session,
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
    done_fast(core, s, user, StatementKind::SelectPoint, target, code, hit as u64, batch);
}

/// `done` for a fast-path statement: with the audit log off, its statistics wait for the end of
/// the batch (see `Batch::fast`).
#[allow(clippy::too_many_arguments)]
fn done_fast(
    core: &Core,
    s: &Session,
    user: &str,
    kind: StatementKind,
    target: Option<&str>,
    code: ErrorCode,
    rows: u64,
    batch: &mut Batch,
) {
    if core.audit.borrow().enabled() {
        done(core, s, user, kind, target, batch.started, code, rows);
    } else {
        batch.fast.push((kind, code == ErrorCode::Success));
    }
}

/// Statistics and audit for a finished statement.
#[allow(clippy::too_many_arguments)]
fn done(
    core: &Core,
    s: &Session,
    user: &str,
    kind: StatementKind,
    target: Option<&str>,
    started: Instant,
    code: ErrorCode,
    rows: u64,
) {
    let latency_us = started.elapsed().as_micros() as u64;
    core.stats.borrow_mut().record(kind, latency_us, code == ErrorCode::Success);
    audit(core, s, user, "command", kind.name(), target, rows, code, latency_us);
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
    target: Option<&str>,
    rows: u64,
    code: ErrorCode,
    latency_us: u64,
) {
    let log = core.audit.borrow();
    if log.enabled() {
        log.line(core.id, s.id, s.peer, user, event, kind, target, rows, code, latency_us);
    }
}

fn encode_outcome(out: &mut Vec<u8>, res: &Result<ResultSet, WireError>) {
    match res {
        Ok(rs) => encode_result(out, MessageType::Response, rs),
        Err(e) => encode_error(out, e.code, &e.message),
    }
}

/// Write `out` to the socket and empty it.
pub async fn write_out(core: &Core, stream: &mut Transport, out: &mut Vec<u8>) -> std::io::Result<()> {
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
pub async fn finish(
    core: &Rc<Core>,
    s: &Session,
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
                if let Some((i, rest)) = local_more {
                    // The rest of this shard's part, in slices: the core's other connections
                    // are served in between.
                    let (reply, group) = core.finish_op(rest, now).await;
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
                done(core, s, s.user(), kind, target.as_deref(), started, code, rows);
                encode_outcome(&mut out, &res);
            }
            Pending::Info { what, started } => {
                let rs = report::info(core, s, what).await;
                core.stats.borrow_mut().record(
                    StatementKind::Show,
                    started.elapsed().as_micros() as u64,
                    true,
                );
                if matches!(what, InfoKind::StatsFrame) {
                    audit(
                        core,
                        s,
                        s.user(),
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
