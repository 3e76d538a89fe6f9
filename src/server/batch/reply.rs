//! A batch's replies: its requests to other shards sent and answered in rounds, every reply
//! encoded in request order, and written whenever CONN_OUT_BYTES_MAX of them have gathered.

use super::{audit, done, encode_outcome, encode_result, outcome, Batch, Pending};
use crate::error::WireError;
use crate::limits::CONN_OUT_BYTES_MAX;
use crate::protocol::message::encode_error;
use crate::protocol::ResultSet;
use crate::protocol::{ErrorCode, MessageType};
use crate::server::core::{Core, Unfinished};
use crate::server::mesh::{Rep, Req};
use crate::server::report::{self, InfoKind};
use crate::server::session::Session;
use crate::server::transport::Transport;
use crate::server::wal::Group;
use crate::shard::{merge, Merge, ShardOp, ShardReply};
use crate::sql::StatementKind;
use std::rc::Rc;

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
            Pending::Merge { merge: m, replies, kind, started, target, local_group, local_more } => {
                let res = merged(core, m, replies, local_group, local_more, now).await;
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
                let kind = if matches!(what, InfoKind::StatsFrame) {
                    let rows = rs.rows.len() as u64;
                    audit(core, s, s.user(), "stats", "stats", None, rows, ErrorCode::Success, 0);
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

/// A statement's result from its parts: this shard's rest run first if it runs in slices, its
/// writes (or what its reads saw) durable, the other shards' replies in.
async fn merged(
    core: &Core,
    m: Merge,
    mut replies: Vec<Option<ShardReply>>,
    mut local_group: Option<Rc<Group>>,
    local_more: Option<(usize, Box<Unfinished>)>,
    now: u64,
) -> Result<ResultSet, WireError> {
    if let Some((i, rest)) = local_more {
        // The rest of this shard's part, in slices: the core's other connections are served
        // in between.
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
    match replies.into_iter().collect::<Option<Vec<_>>>() {
        _ if !durable && m.is_write() => Err(WireError::storage()),
        _ if !durable => Err(WireError::storage_read()),
        Some(replies) => merge(&m, replies, core.shared.config.max_payload),
        None => Err(WireError::new(ErrorCode::ServerOverloaded, "a shard is not answering")),
    }
}
