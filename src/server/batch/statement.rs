//! A statement of a logged-in session: the canonical point read and one-row INSERT of a local
//! key without a parse, else parsed (off the core when long) and planned; this shard's part
//! runs inline, the others' wait in the batch for their shards.

use super::{audit, done, done_fast, encode_outcome, outcome, Batch, Flow, KeyForm, Pending};
use crate::audit_record::Target;
use crate::error::WireError;
use crate::limits::STATEMENT_OFF_CORE_BYTES;
use crate::protocol::message::encode_error;
use crate::protocol::Value;
use crate::protocol::{
    encode_affected_response, encode_single_value_response, encode_value_response, single_value_response_len,
    ErrorCode,
};
use crate::server::audit::describe;
use crate::server::core::{Core, Started};
use crate::server::datadir::Role;
use crate::server::report::InfoKind;
use crate::server::session::Session;
use crate::shard::{merge, plan, shard_of_key, Change, Conflict, PutRow, ShardOp, ShardReply};
use crate::sql::{
    incr_one, insert_one, parse, point_select_key, Column, Filter, Projection, RetCol, Statement,
    StatementKind, TtlChange,
};
use std::time::Instant;

/// What a statement needs: a plan of shard operations, or a report from every core's
/// statistics (SHOW, which is about the server rather than the data).
pub enum Work {
    Plan(crate::shard::Plan),
    Report(InfoKind),
}

fn work(stmt: &Statement<'_>, shards: usize, max_payload: u32) -> Work {
    match plan(stmt, shards, max_payload) {
        Some(p) => Work::Plan(p),
        None => Work::Report(match stmt {
            Statement::ShowStatus => InfoKind::ShowStatus,
            Statement::ShowSlowlog { limit } => InfoKind::ShowSlowlog { limit: *limit },
            Statement::ResetSlowlog => InfoKind::ResetSlowlog,
            _ => InfoKind::ShowStats,
        }),
    }
}

/// A statement parsed and planned away from the core (`plan_statement`): its kind, what the
/// audit log says it touches, and its work; or why it does not parse.
pub type Planned = Result<(StatementKind, Option<String>, Work), String>;

/// Parse and plan a long statement: run on the blocking thread pool, so that a 1 MB INSERT's
/// parse (tens of milliseconds) does not stall the core's other connections. Its target is
/// described here whether or not the audit log is on: should the slow log need it, the core
/// would otherwise have to parse the statement again.
pub fn plan_statement(sql: Vec<u8>, shards: usize, max_payload: u32) -> Planned {
    let sql = std::str::from_utf8(&sql).map_err(|_| "SQL is not valid UTF-8".to_string())?;
    let stmt = parse(sql).map_err(|e| e.to_string())?;
    Ok((stmt.kind(), Some(describe(&stmt)), work(&stmt, shards, max_payload)))
}

/// Whether a COMMAND is long enough to be parsed off the core, and not one of the canonical
/// forms the core answers without a parse.
pub fn plan_off_core(payload: &[u8]) -> bool {
    payload.len() >= STATEMENT_OFF_CORE_BYTES
        && std::str::from_utf8(payload)
            .is_ok_and(|sql| point_select_key(sql).is_none() && insert_one(sql).is_none())
}

/// Run one statement of a logged-in session, or its plan made off the core (`planned`).
#[allow(clippy::too_many_arguments)]
pub(super) fn command(
    core: &Core,
    s: &Session,
    role: Role,
    payload: &[u8],
    batch: &mut Batch,
    now: u64,
    planned: Option<Planned>,
) -> Flow {
    let started = Instant::now();
    let (kind, target, work) = match planned {
        Some(Ok(p)) => p,
        Some(Err(e)) => return refuse(core, s, batch, "invalid", None, ErrorCode::InvalidCommand, &e),
        None => {
            let Ok(sql) = std::str::from_utf8(payload) else {
                return refuse(
                    core,
                    s,
                    batch,
                    "invalid",
                    None,
                    ErrorCode::InvalidCommand,
                    "SQL is not valid UTF-8",
                );
            };
            // A cluster node's statements all go through their ranges' Raft groups (node.rs),
            // none straight to the store.
            if core.node.is_none() {
                if let Some(flow) = fast_path(core, s, role, sql, batch, now) {
                    return flow;
                }
            }
            let stmt = match parse(sql) {
                Ok(stmt) => stmt,
                Err(e) => {
                    return refuse(core, s, batch, "invalid", None, ErrorCode::InvalidCommand, &e.to_string())
                }
            };
            if core.node.is_none() {
                if let Some(flow) = local_point_read(core, s, &stmt, payload, batch, now) {
                    return flow;
                }
            }
            let target = core.audit.borrow().enabled().then(|| describe(&stmt));
            (stmt.kind(), target, work(&stmt, core.shards, core.shared.config.max_payload))
        }
    };
    // SHOW SLOWLOG RESET reads nothing of the data, but it erases what other users' statements left.
    let writes = kind.is_write() || matches!(work, Work::Report(InfoKind::ResetSlowlog));
    if writes && role == Role::ReadOnly {
        let target = target.as_deref().map(Target::Text);
        return refuse(core, s, batch, kind.name(), target, ErrorCode::Unauthorized, READONLY);
    }
    match work {
        Work::Report(what) => {
            audit(
                core,
                s,
                s.user(),
                "command",
                kind.name(),
                target.as_deref().map(Target::Text),
                0,
                ErrorCode::Success,
                0,
            );
            batch.pending.push(Pending::Info { what, started });
            Flow::Continue
        }
        Work::Plan(p) => run_plan(core, s, s.user(), kind, target, payload, p, started, batch, now),
    }
}

const READONLY: &str = "this user's role is readonly";

/// Refuse a statement: audited, and answered with `code`.
#[allow(clippy::too_many_arguments)]
fn refuse(
    core: &Core,
    s: &Session,
    batch: &mut Batch,
    kind: &str,
    target: Option<Target<'_>>,
    code: ErrorCode,
    msg: &str,
) -> Flow {
    audit(core, s, s.user(), "command", kind, target, 0, code, 0);
    batch.error(code, msg);
    Flow::Continue
}

/// The hot paths: a canonical point read or one-row INSERT of a key of this core's shard,
/// answered without a parse or a plan. None: not one of them.
fn fast_path(core: &Core, s: &Session, role: Role, sql: &str, batch: &mut Batch, now: u64) -> Option<Flow> {
    let local = |key: &[u8]| shard_of_key(key, core.shards) == core.id;
    if let Some(key) = point_select_key(sql).filter(|k| local(k)) {
        local_point_get(core, s, key, sql.as_bytes(), batch, now);
        return Some(Flow::Continue);
    }
    if let Some((key, by)) = incr_one(sql).filter(|(k, _)| local(k)) {
        return Some(local_incr(core, s, role, key, by, sql.as_bytes(), batch, now));
    }
    let (key, value) = insert_one(sql).filter(|(k, _)| local(k))?;
    if role == Role::ReadOnly {
        return Some(refuse(
            core,
            s,
            batch,
            "insert",
            Some(Target::Keys(key)),
            ErrorCode::Unauthorized,
            READONLY,
        ));
    }
    let (written, group) = core.insert_logged(key, value, now);
    let code = if written {
        batch.after(group, true, |out| encode_affected_response(out, 1));
        ErrorCode::Success
    } else {
        let e = WireError::out_of_memory(0);
        batch.after(group, true, |out| encode_error(out, e.code, &e.message));
        e.code
    };
    let sql = sql.as_bytes();
    done_fast(core, s, StatementKind::Insert, (KeyForm::Insert, key), sql, code, written as u64, batch);
    Some(Flow::Continue)
}

/// A point read of this core's shard in another spelling than the canonical one (`sql`),
/// answered without a plan. None: it needs one.
fn local_point_read(
    core: &Core,
    s: &Session,
    stmt: &Statement<'_>,
    sql: &[u8],
    batch: &mut Batch,
    now: u64,
) -> Option<Flow> {
    let Statement::Select(sel) = stmt else { return None };
    let (Filter::Eq(key), Projection::Columns(cols), None) = (&sel.filter, &sel.projection, sel.limit) else {
        return None;
    };
    if cols.as_slice() != [Column::Value] || shard_of_key(key, core.shards) != core.id {
        return None;
    }
    local_point_get(core, s, key, sql, batch, now);
    Some(Flow::Continue)
}

/// Run the plan of statement `sql`: this shard's part inline (or its first slice), the others'
/// queued for the batch's messages; the reply now if it is ready, else pending in the batch.
#[allow(clippy::too_many_arguments)]
fn run_plan(
    core: &Core,
    s: &Session,
    user: &str,
    kind: StatementKind,
    target: Option<String>,
    sql: &[u8],
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
        if shard == core.id && core.node.is_none() {
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
            batch.queue_remote(shard, op, at, i);
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
            sql: batch.at.clone(),
            local_group,
            local_more,
        });
        return flow;
    } else {
        let replies = replies.into_iter().map(|r| r.expect("local reply")).collect();
        let res = merge(&p.merge, replies, cfg.max_payload);
        let (code, rows) = outcome(&res);
        done(core, s, user, kind, target.as_deref().map(Target::Text), sql, started, code, rows);
        batch.after(local_group, p.merge.is_write(), |out| encode_outcome(out, &res));
    }
    Flow::Continue
}

/// The canonical counter bump `sql` of a key of this shard, without a parse or a plan: the same
/// op as the plan's (`shard::apply`, so the same write path), its one value encoded directly.
#[allow(clippy::too_many_arguments)]
fn local_incr(
    core: &Core,
    s: &Session,
    role: Role,
    key: &[u8],
    by: i64,
    sql: &[u8],
    batch: &mut Batch,
    now: u64,
) -> Flow {
    if role == Role::ReadOnly {
        return refuse(core, s, batch, "insert", Some(Target::Bump(key)), ErrorCode::Unauthorized, READONLY);
    }
    let op = ShardOp::Put {
        rows: vec![PutRow { key: key.to_vec(), value: by.to_string().into_bytes(), ttl_s: None }],
        on_conflict: Conflict::Update { value: Change::Add(by), ttl: TtlChange::Keep },
        returning: Some(vec![RetCol::Value]),
    };
    let mut group = None;
    let code = match core.run_op_logged(&op, now, &mut group) {
        ShardReply::Returned { rows, .. } => match rows.first().and_then(|(_, cells)| cells.first()) {
            Some(Value::Bytes(v)) => {
                batch.after(group, true, |out| encode_value_response(out, "value", v, 1));
                ErrorCode::Success
            }
            other => unreachable!("a counter's reply {other:?}"),
        },
        reply @ (ShardReply::Invalid(_) | ShardReply::Full { .. }) => {
            let e = match reply {
                ShardReply::Invalid(why) => WireError::invalid(format!("{why}; nothing was changed")),
                _ => WireError::out_of_memory(0),
            };
            batch.after(group, true, |out| encode_error(out, e.code, &e.message));
            e.code
        }
        other => unreachable!("a counter's reply {other:?}"),
    };
    done_fast(core, s, StatementKind::Insert, (KeyForm::Bump, key), sql, code, 1, batch);
    Flow::Continue
}

/// A point read (`sql`) of this core's shard: the value goes straight from the store into the
/// reply.
fn local_point_get(core: &Core, s: &Session, key: &[u8], sql: &[u8], batch: &mut Batch, now: u64) {
    let store = core.store.borrow();
    // What the store shows may include a write not yet durable (a value, or a key's absence).
    let barrier = core.read_barrier_for(key);
    let max_payload = core.shared.config.max_payload;
    let code = match store.get(key, now) {
        // Written under a larger --max-payload than this run's: refused as any read of a result
        // too large for a frame is.
        Some(e) if single_value_response_len("value", e.value.len()) > max_payload as usize => {
            let err = WireError::too_large(single_value_response_len("value", e.value.len()), max_payload);
            batch.after(barrier, false, |out| encode_error(out, err.code, &err.message));
            err.code
        }
        Some(e) => {
            let v = e.value;
            batch.after(barrier, false, |out| encode_single_value_response(out, "value", v));
            ErrorCode::Success
        }
        None => {
            batch.after(barrier, false, |out| encode_error(out, ErrorCode::KeyNotFound, "key not found"));
            ErrorCode::KeyNotFound
        }
    };
    drop(store);
    let hit = code == ErrorCode::Success;
    done_fast(core, s, StatementKind::SelectPoint, (KeyForm::PointRead, key), sql, code, hit as u64, batch);
}
