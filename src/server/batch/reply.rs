//! A batch's replies: its requests to other shards sent and answered in rounds, every reply
//! encoded in request order, and written whenever CONN_OUT_BYTES_MAX of them have gathered.

use super::{audit, done, encode_outcome, encode_result, log_slow, outcome, Batch, Pending};
use crate::audit_record::Target;
use crate::error::WireError;
use crate::limits::CONN_OUT_BYTES_MAX;
use crate::protocol::message::encode_error;
use crate::protocol::ResultSet;
use crate::protocol::{ErrorCode, MessageType};
use crate::server::core::{Core, Unfinished};
use crate::server::mesh::{Handled, Rep, Req};
use crate::server::report::{self, InfoKind};
use crate::server::runtime::Slot;
use crate::server::session::Session;
use crate::server::transport::Transport;
use crate::server::wal::Group;
use crate::shard::{merge, Merge, ShardOp, ShardReply};
use crate::sql::StatementKind;
use std::rc::Rc;

/// Write `out` to the socket and empty it.
pub async fn write_out(core: &Core, stream: &mut Transport, out: &mut Vec<u8>) -> std::io::Result<()> {
    core.stats.borrow_mut().bytes_out += out.len() as u64;
    core.stats.borrow_mut().count_error_replies(out);
    stream.write_all(out).await?;
    out.clear();
    Ok(())
}

/// What a batch's replies need from outside: other shards' answers, the socket, and what each
/// outstanding reply turns into. The core in production (`CoreIo`); a fake mesh and a buffer in
/// the unit tests, so that the ordering and the rounds below are tested without a server.
pub(super) trait BatchIo {
    /// An asked shard's answer to come.
    type Ticket;
    /// Send `ops` to `shard`; None: it cannot be reached.
    async fn send(&mut self, shard: usize, ops: Vec<ShardOp>, now: u64) -> Option<Self::Ticket>;
    /// The replies to the first ops sent, in order, and the ops handed back unrun.
    async fn answer(&mut self, t: Self::Ticket) -> Option<(Vec<ShardReply>, Vec<ShardOp>)>;
    /// Write `out` to the client and empty it.
    async fn write(&mut self, out: &mut Vec<u8>) -> std::io::Result<()>;
    /// Encode into `out` the reply of an outstanding statement (not `Staged`), once it is ready.
    async fn resolve(&mut self, p: Pending, stage: &[u8], out: &mut Vec<u8>, now: u64);
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
    /// replies in place. Every shard is asked before any answer is awaited, so that they work
    /// at the same time.
    async fn ask<Io: BatchIo>(&mut self, io: &mut Io, batch: &mut Batch, now: u64, upto: usize) {
        let mut tickets = Vec::new();
        for shard in 0..self.rest.len() {
            let due = batch.remote_at[shard].get(self.answered[shard]).is_some_and(|&(pi, _)| pi <= upto);
            if !due || self.rest[shard].is_empty() {
                continue;
            }
            let ops = std::mem::take(&mut self.rest[shard]);
            tickets.push((shard, io.send(shard, ops, now).await));
        }
        for (shard, ticket) in tickets {
            // A shard not reached, or not answering, leaves its parts unanswered: their
            // statements fail, and nothing waits for it again.
            let Some(ticket) = ticket else { continue };
            let Some((replies, rest)) = io.answer(ticket).await else { continue };
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

    /// Whether pending `pi` still waits for a shard's reply that can still come.
    fn waits(&self, batch: &Batch, pi: usize) -> bool {
        (0..self.rest.len()).any(|s| {
            !self.rest[s].is_empty()
                && batch.remote_at[s].get(self.answered[s]).is_some_and(|&(p, _)| p <= pi)
        })
    }
}

/// Send the batch's remote operations, wait for their replies, and encode all replies in order,
/// writing to the socket whenever CONN_OUT_BYTES_MAX of them have gathered. `input` is the
/// connection's input that the batch's requests were read from.
pub async fn finish(
    core: &Rc<Core>,
    s: &Session,
    batch: Batch,
    input: &[u8],
    now: u64,
    stream: &mut Transport,
) -> std::io::Result<Vec<u8>> {
    drain(&mut CoreIo { core, s, stream, input }, batch, now).await
}

/// `finish` over any `BatchIo`: the replies in request order, whatever order they are ready in.
async fn drain<Io: BatchIo>(io: &mut Io, mut batch: Batch, now: u64) -> std::io::Result<Vec<u8>> {
    if batch.pending.is_empty() {
        return Ok(batch.out);
    }
    let shards = batch.remote.len();
    let mut remote = Remote { rest: std::mem::take(&mut batch.remote), answered: vec![0; shards] };
    remote.ask(io, &mut batch, now, usize::MAX).await;
    let mut out = std::mem::take(&mut batch.out);
    // Replies land in `batch.pending` by index; each is taken out as its turn comes.
    for pi in 0..batch.pending.len() {
        while remote.waits(&batch, pi) {
            // What is encoded goes out first, so that the next round's replies replace it.
            if !out.is_empty() {
                io.write(&mut out).await?;
            }
            remote.ask(io, &mut batch, now, pi).await;
        }
        match std::mem::replace(&mut batch.pending[pi], Pending::Staged(0..0)) {
            Pending::Staged(r) => out.extend_from_slice(&batch.stage[r]),
            p => io.resolve(p, &batch.stage, &mut out, now).await,
        }
        if out.len() >= CONN_OUT_BYTES_MAX {
            io.write(&mut out).await?;
        }
    }
    Ok(out)
}

/// A batch's I/O on a core: its mesh, its client's socket, its shard and statistics, and the
/// input its requests were read from.
struct CoreIo<'a> {
    core: &'a Rc<Core>,
    s: &'a Session,
    stream: &'a mut Transport,
    input: &'a [u8],
}

impl BatchIo for CoreIo<'_> {
    type Ticket = Rc<Slot<Rep>>;

    async fn send(&mut self, shard: usize, ops: Vec<ShardOp>, now: u64) -> Option<Self::Ticket> {
        if shard == self.core.id {
            // A cluster node's own shard: its ops wait for Raft like any other core's.
            let req =
                Req::Ops { id: 0, reply_to: shard, now_ms: now, ops, reply_bytes_max: CONN_OUT_BYTES_MAX };
            let slot = Slot::new();
            match self.core.handle(req) {
                Handled::Now(rep) => slot.put(rep),
                Handled::Later(f) => {
                    let s = slot.clone();
                    crate::server::runtime::spawn(async move { s.put(f.await) });
                }
            }
            return Some(slot);
        }
        let mesh = self.core.mesh.as_ref()?;
        mesh.send(shard, |id, reply_to| Req::Ops {
            id,
            reply_to,
            now_ms: now,
            ops,
            reply_bytes_max: CONN_OUT_BYTES_MAX,
        })
        .await
    }

    async fn answer(&mut self, t: Self::Ticket) -> Option<(Vec<ShardReply>, Vec<ShardOp>)> {
        match t.take().await {
            Rep::Ops { replies, rest } => Some((replies, rest)),
            Rep::Stats(_) | Rep::Slowlog(_) => None,
        }
    }

    async fn write(&mut self, out: &mut Vec<u8>) -> std::io::Result<()> {
        write_out(self.core, self.stream, out).await
    }

    async fn resolve(&mut self, p: Pending, stage: &[u8], out: &mut Vec<u8>, now: u64) {
        let (core, s) = (self.core, self.s);
        match p {
            Pending::Staged(r) => out.extend_from_slice(&stage[r]),
            Pending::Durable { reply, group, write } => {
                if group.wait().await {
                    out.extend_from_slice(&stage[reply]);
                } else {
                    let e = if write { WireError::storage() } else { WireError::storage_read() };
                    encode_error(out, e.code, &e.message);
                }
            }
            Pending::Merge { merge: m, replies, kind, started, target, sql, local_group, local_more } => {
                let res = merged(core, m, replies, local_group, local_more, now).await;
                let (code, rows) = outcome(&res);
                let sql = self.input.get(sql).unwrap_or_default();
                done(core, s, s.user(), kind, target.as_deref().map(Target::Text), sql, started, code, rows);
                encode_outcome(out, &res);
            }
            Pending::Info { what, started } => {
                let res = report::info(core, s, what).await;
                let latency_us = started.elapsed().as_micros() as u64;
                let (code, rows) = outcome(&res);
                core.stats.borrow_mut().record(StatementKind::Show, latency_us, code == ErrorCode::Success);
                if latency_us >= core.slowlog_threshold_us {
                    // What a SHOW touches is the server, not keys: no target, as in the audit log.
                    log_slow(
                        core,
                        s.user(),
                        StatementKind::Show,
                        Some(Target::Text("")),
                        &[],
                        rows,
                        latency_us,
                    );
                }
                match (what, &res) {
                    (InfoKind::StatsFrame, Ok(rs)) => {
                        audit(core, s, s.user(), "stats", "stats", None, rows, ErrorCode::Success, 0);
                        encode_result(out, MessageType::Stats, rs);
                    }
                    _ => encode_outcome(out, &res),
                }
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::{execute, plan, run_op};
    use crate::sql::parse;
    use crate::store::Store;
    use futures_lite::future::block_on;
    use std::time::Instant;

    const MAX_PAYLOAD: u32 = 1 << 20;

    #[derive(Debug, PartialEq)]
    enum Event {
        Sent { shard: usize, ops: usize },
        Wrote,
    }

    /// Other shards as a fake mesh: each runs the ops it is sent on its own store, answering at
    /// most `per_round` of them and handing back the rest, or (`unreachable`) never answering.
    struct Fake {
        stores: Vec<Store>,
        per_round: usize,
        unreachable: Option<usize>,
        events: Vec<Event>,
        written: Vec<u8>,
    }

    impl Fake {
        fn new(shards: usize, per_round: usize) -> Fake {
            let stores = (0..shards).map(|_| Store::new()).collect();
            Fake { stores, per_round, unreachable: None, events: Vec::new(), written: Vec::new() }
        }
    }

    impl BatchIo for Fake {
        type Ticket = (usize, Vec<ShardOp>);

        async fn send(&mut self, shard: usize, ops: Vec<ShardOp>, _now: u64) -> Option<Self::Ticket> {
            self.events.push(Event::Sent { shard, ops: ops.len() });
            (self.unreachable != Some(shard)).then_some((shard, ops))
        }

        async fn answer(
            &mut self,
            (shard, mut ops): Self::Ticket,
        ) -> Option<(Vec<ShardReply>, Vec<ShardOp>)> {
            let rest = ops.split_off(ops.len().min(self.per_round));
            Some((ops.iter().map(|op| run_op(&mut self.stores[shard], op, 0)).collect(), rest))
        }

        async fn write(&mut self, out: &mut Vec<u8>) -> std::io::Result<()> {
            self.events.push(Event::Wrote);
            self.written.append(out);
            Ok(())
        }

        async fn resolve(&mut self, p: Pending, _stage: &[u8], out: &mut Vec<u8>, _now: u64) {
            let Pending::Merge { merge: m, replies, .. } = p else { unreachable!("only merges here") };
            let res = match replies.into_iter().collect::<Option<Vec<_>>>() {
                Some(replies) => merge(&m, replies, MAX_PAYLOAD),
                None => Err(WireError::new(ErrorCode::ServerOverloaded, "a shard is not answering")),
            };
            encode_outcome(out, &res);
        }
    }

    /// Queue `sql` in `batch` as `run_plan` does for a core that owns none of its shards.
    fn queue(batch: &mut Batch, sql: &str, shards: usize) {
        let p = plan(&parse(sql).unwrap(), shards, MAX_PAYLOAD).unwrap();
        let at = batch.pending.len();
        let mut replies = Vec::new();
        for (part, (shard, op)) in p.parts.into_iter().enumerate() {
            batch.queue_remote(shard, op, at, part);
            replies.push(None);
        }
        batch.pending.push(Pending::Merge {
            merge: p.merge,
            replies,
            kind: StatementKind::SelectRange,
            started: Instant::now(),
            target: None,
            sql: 0..0,
            local_group: None,
            local_more: None,
        });
    }

    /// The replies the reference semantics give for `sqls` run one after another.
    fn expected(sqls: &[&str], shards: usize) -> Vec<u8> {
        let mut stores: Vec<Store> = (0..shards).map(|_| Store::new()).collect();
        let mut out = Vec::new();
        for sql in sqls {
            match sql.strip_prefix("error:") {
                Some(msg) => encode_error(&mut out, ErrorCode::InvalidCommand, msg),
                None => encode_outcome(&mut out, &execute(&parse(sql).unwrap(), &mut stores, 0, MAX_PAYLOAD)),
            }
        }
        out
    }

    /// Run `sqls` as one batch over `fake`; "error:…" is a reply ready at once (a refusal).
    fn run(fake: &mut Fake, sqls: &[&str]) -> Vec<u8> {
        let shards = fake.stores.len();
        let mut batch = Batch::new(Vec::new(), shards);
        for sql in sqls {
            match sql.strip_prefix("error:") {
                Some(msg) => batch.error(ErrorCode::InvalidCommand, msg),
                None => queue(&mut batch, sql, shards),
            }
        }
        let mut out = block_on(drain(fake, batch, 0)).unwrap();
        let mut all = std::mem::take(&mut fake.written);
        all.append(&mut out);
        all
    }

    const STATEMENTS: &[&str] = &[
        "error:refused before anything is outstanding",
        "INSERT INTO kv (key, value) VALUES ('a', '1'), ('b', '2'), ('c', '3'), ('user:1', 'x')",
        "SELECT key, value FROM kv WHERE key IN ('c', 'a', 'nope', 'user:1')",
        "error:refused while replies are outstanding",
        "DELETE FROM kv WHERE key = 'b'",
        "SELECT COUNT(*) FROM kv",
        "SELECT key FROM kv WHERE key >= 'b' ORDER BY key DESC",
        "UPDATE kv SET value = 'y' WHERE key = 'user:1'",
        "SELECT value FROM kv WHERE key = 'user:1'",
    ];

    #[test]
    fn replies_leave_in_request_order_and_each_shard_gets_one_message() {
        let shards = 3;
        let mut fake = Fake::new(shards, usize::MAX);
        assert_eq!(run(&mut fake, STATEMENTS), expected(STATEMENTS, shards));
        let sent: Vec<usize> = fake
            .events
            .iter()
            .filter_map(|e| if let Event::Sent { shard, .. } = e { Some(*shard) } else { None })
            .collect();
        assert_eq!(sent, vec![0, 1, 2], "one message per shard for the whole batch");
    }

    #[test]
    fn a_shard_answering_in_rounds_is_asked_again_after_what_is_ready_is_written() {
        let shards = 2;
        let mut fake = Fake::new(shards, 1);
        assert_eq!(run(&mut fake, STATEMENTS), expected(STATEMENTS, shards));
        let ops_sent: usize =
            fake.events.iter().map(|e| if let Event::Sent { ops, .. } = e { *ops } else { 0 }).sum();
        let rounds = fake.events.iter().filter(|e| matches!(e, Event::Sent { .. })).count();
        assert!(rounds > shards, "one reply a round takes several rounds: {:?}", fake.events);
        // Every op handed back is sent again: more sent than queued, never an op run twice (the
        // replies above would differ).
        assert!(ops_sent > rounds);
        // A round after the first comes after the replies ready before it are written.
        let first_wrote =
            fake.events.iter().position(|e| *e == Event::Wrote).expect("a write between rounds");
        assert!(fake.events[first_wrote + 1..].iter().any(|e| matches!(e, Event::Sent { .. })));
    }

    #[test]
    fn a_shard_that_cannot_be_reached_fails_its_statements_and_nothing_else() {
        let shards = 2;
        let mut fake = Fake::new(shards, usize::MAX);
        fake.unreachable = Some(1);
        let sqls = ["SELECT COUNT(*) FROM kv", "error:ready at once"];
        let got = run(&mut fake, &sqls);
        let mut want = Vec::new();
        encode_error(&mut want, ErrorCode::ServerOverloaded, "a shard is not answering");
        encode_error(&mut want, ErrorCode::InvalidCommand, "ready at once");
        assert_eq!(got, want);
    }

    #[test]
    fn output_past_the_bound_is_written_before_the_batch_ends() {
        let shards = 2;
        let mut fake = Fake::new(shards, usize::MAX);
        let value = "v".repeat(CONN_OUT_BYTES_MAX / 4);
        let insert = format!("INSERT INTO kv (key, value) VALUES ('a', '{value}'), ('b', '{value}')");
        let mut sqls = vec![insert.as_str()];
        sqls.extend(["SELECT key, value FROM kv"; 4]);
        sqls.push("SELECT COUNT(*) FROM kv");
        assert_eq!(run(&mut fake, &sqls), expected(&sqls, shards));
        let writes = fake.events.iter().filter(|e| **e == Event::Wrote).count();
        assert!(writes >= 1, "{} bytes of replies held until the end", 4 * CONN_OUT_BYTES_MAX / 2);
    }
}
