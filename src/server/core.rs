//! What one executor owns: its shard's store, its statistics, its end of the mesh, and the
//! shared read-only configuration. Shard state sits in `RefCell`s that are borrowed only between
//! awaits, never across one.

use super::audit::AuditLog;
use super::auth::AuthDb;
use super::config::Config;
use super::mesh::{Handled, Mesh, Rep, Req};
use super::park::Parker;
use super::runtime::{now_ms, yield_now, LocalSignal};
use super::session::{RateLimits, Session};
use super::wal::{later, Group, Mode, Wal};
use crate::durability::Recorder;
use crate::limits::{SLICE_ENTRIES, SLICE_WRITES};
use crate::security::ratelimit::LoginThrottle;
use crate::shard::{apply, apply_slice, put_row, NoLog, ShardOp, ShardReply, Sliced};
use crate::slowlog::{SlowEntry, SlowRing};
use crate::stats::ShardStats;
use crate::store::Store;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Read-only after start, plus a few counters that every core may bump. Never shard data.
pub struct Shared {
    pub config: Config,
    pub auth_salt: [u8; 16],
    pub fingerprint: [u8; 32],
    /// TLS 1.3 configuration; `None` with `--plaintext`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub started: Instant,
    pub connections: AtomicUsize,
    pub max_connections: usize,
    pub shutdown: AtomicBool,
    /// Cores still serving connections during shutdown.
    pub draining: AtomicUsize,
    pub next_conn_id: AtomicU64,
    /// `--max-memory`'s share for each store (memory.rs).
    pub memory: super::memory::MemoryBudget,
}

pub struct Core {
    pub id: usize,
    pub shards: usize,
    pub store: RefCell<Store>,
    pub stats: RefCell<ShardStats>,
    pub shared: Arc<Shared>,
    pub mesh: Option<Rc<Mesh>>,
    pub shutdown: Rc<LocalSignal>,
    pub conns: Cell<usize>,
    pub auth: RefCell<Rc<AuthDb>>,
    /// Bumped at each reload of `auth`: a session checked against an older one is checked again.
    pub auth_epoch: Cell<u64>,
    /// Fired (and replaced) at each reload, waking idle sessions to be checked.
    pub auth_changed: RefCell<Rc<LocalSignal>>,
    pub throttle: RefCell<LoginThrottle>,
    /// Each user's rate limit and this core's share of the server's.
    pub limits: RefCell<RateLimits>,
    /// What SERVER_INFO tells a client.
    pub server_info: crate::protocol::ServerInfo,
    pub audit: RefCell<AuditLog>,
    /// Connections being told why they were not admitted (bounded: REFUSALS_IN_FLIGHT_MAX).
    pub refusing: Cell<usize>,
    /// Login slots of this core's connections that have not authenticated yet.
    pub admission: Rc<super::admission::Admission>,
    /// This shard's write-ahead log; None with `--durability none`.
    pub wal: Option<Rc<Wal>>,
    /// Idle plaintext connections waiting as session state (park.rs).
    pub parker: Parker<Session>,
    /// The statements of this core's connections that reached `slowlog_threshold_us`.
    pub slowlog: RefCell<SlowRing>,
    /// `--slowlog-threshold-us`, here so that the check is one load and one comparison.
    pub slowlog_threshold_us: u64,
    /// A cluster node's request path: its replicas on this core (node.rs, a layer above,
    /// which is why this is a trait).
    pub node: Option<Rc<dyn Replicated>>,
}

/// How a cluster node runs a connection's ops for this core's shard: through their ranges' Raft
/// groups rather than straight on the store.
pub trait Replicated {
    fn execute(
        self: Rc<Self>,
        core: Rc<Core>,
        ops: Vec<ShardOp>,
        now_ms: u64,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Vec<ShardReply>>>>;

    /// The core's snapshot begins (the log has just been rotated): the replicas' state goes
    /// into the new log, so that the snapshot and that log alone hold everything. False: not
    /// now (a snapshot from a leader is going into the store), the snapshot is given up.
    fn checkpoint(&self, wal: &super::wal::Wal) -> Result<bool, String>;

    /// Whether a checkpoint now would be refused: the core's snapshot waits without rotating
    /// the log for nothing.
    fn checkpoint_put_off(&self) -> bool;

    /// A planned stop: hand the leadership of this core's ranges to other replicas first, so
    /// that its clients' writes move on at once rather than after an election timeout.
    fn hand_over(self: Rc<Self>) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>;

    /// This node's id and the Raft state of this core's replicas (SHOW STATUS).
    fn ranges_status(&self) -> (u64, Vec<crate::cluster::replicas::RangeStatus>);
}

/// The first part of a statement's op on this shard: all of it, or the state of one that runs
/// in slices.
pub enum Started {
    Done(ShardReply),
    /// Boxed: rare, and large beside a reply.
    More(Box<Unfinished>),
}

/// An op that runs in slices, between them: the op, how far it got, and the log groups of the
/// slices written so far.
pub struct Unfinished {
    op: ShardOp,
    sliced: Sliced,
    groups: Vec<Rc<Group>>,
}

/// A batch of another core's ops being run (Core::run_some).
struct OpsRun {
    replies: Vec<ShardReply>,
    ops: std::vec::IntoIter<ShardOp>,
    held: usize,
    group: Option<Rc<Group>>,
    now_ms: u64,
    reply_bytes_max: usize,
}

enum Ran {
    Done(Vec<ShardReply>, Vec<ShardOp>, Option<Rc<Group>>),
    Sliced(OpsRun, Box<Unfinished>),
}

impl super::wal::Host for Core {
    fn store(&self) -> &RefCell<Store> {
        &self.store
    }

    fn shutdown(&self) -> &Rc<LocalSignal> {
        &self.shutdown
    }

    fn checkpoint(&self, wal: &super::wal::Wal) -> Result<bool, String> {
        self.node.as_ref().map_or(Ok(true), |n| n.checkpoint(wal))
    }

    fn checkpoint_put_off(&self) -> bool {
        self.node.as_ref().is_some_and(|n| n.checkpoint_put_off())
    }
}

impl Core {
    /// Run ops on this shard, in order, until their replies hold `reply_bytes_max`: the read
    /// that finds that much held, and every op after it, come back unrun, for the sender to ask
    /// again once it has passed on what it holds (so at most one reply beyond the bound, and at
    /// least one op, runs). Writes go to the log; with `--durability sync` the group to wait for
    /// before answering (writes' and reads' alike) comes back too. Stops at an op that needs more
    /// than one slice, for `run_all` to go on with.
    fn run_some(&self, mut run: OpsRun) -> Ran {
        while let Some(op) = run.ops.next() {
            if !op.is_write() && !run.replies.is_empty() && run.held >= run.reply_bytes_max {
                let rest = std::iter::once(op).chain(run.ops).collect();
                return Ran::Done(run.replies, rest, run.group);
            }
            match self.start_op(op, run.now_ms, &mut run.group) {
                Started::Done(reply) => {
                    run.held += reply.held_bytes();
                    run.replies.push(reply);
                }
                Started::More(rest) => return Ran::Sliced(run, rest),
            }
        }
        Ran::Done(run.replies, Vec::new(), run.group)
    }

    /// `run_some`, going on through ops that run in slices, letting the core's other work in
    /// between.
    async fn run_all(self: Rc<Self>, mut ran: Ran) -> (Vec<ShardReply>, Vec<ShardOp>, Option<Rc<Group>>) {
        loop {
            match ran {
                Ran::Done(replies, rest, group) => return (replies, rest, group),
                Ran::Sliced(mut run, rest) => {
                    let (reply, group) = self.finish_op(rest, run.now_ms).await;
                    if group.is_some() {
                        // Appended later than any group before it, so it settles last.
                        run.group = group;
                    }
                    run.held += reply.held_bytes();
                    run.replies.push(reply);
                    ran = self.run_some(run);
                }
            }
        }
    }

    /// All of `op` if it is short; else its first slice, and the state to go on with in
    /// `finish_op`.
    pub fn start_op(&self, op: ShardOp, now_ms: u64, group: &mut Option<Rc<Group>>) -> Started {
        if !Sliced::needed(&op, SLICE_ENTRIES) {
            return Started::Done(self.run_op_logged(&op, now_ms, group));
        }
        let mut sliced = Sliced::default();
        let mut groups = Vec::new();
        match self.slice(&op, &mut sliced, now_ms, &mut groups) {
            Some(reply) if groups.len() <= 1 => {
                // A write that changed nothing (a DO NOTHING, a range with no keys) still saw the
                // store: it waits as a read does.
                if let Some(g) = groups.pop().or_else(|| self.read_barrier()) {
                    *group = Some(g);
                }
                Started::Done(reply)
            }
            Some(_) => unreachable!("one slice appends one record"),
            None => Started::More(Box::new(Unfinished { op, sliced, groups })),
        }
    }

    /// The rest of a long op, a slice at a time, yielding to the core's other tasks whenever the
    /// executor asks for it. Its reply, and the group the reply must wait for.
    pub async fn finish_op(&self, rest: Box<Unfinished>, now_ms: u64) -> (ShardReply, Option<Rc<Group>>) {
        let Unfinished { op, mut sliced, mut groups } = *rest;
        let reply = loop {
            // Let the executor poll its sockets and run what they woke: a client of this core
            // waits for one slice, not for the preemption timer.
            yield_now().await;
            if let Some(r) = self.slice(&op, &mut sliced, now_ms, &mut groups) {
                break r;
            }
        };
        if !op.is_write() {
            return (reply, self.read_barrier());
        }
        // Each slice's record may be in a group of its own: all must be durable, the last one
        // is the caller's to wait for.
        let last = groups.pop().or_else(|| self.read_barrier());
        for g in groups {
            if !g.wait().await {
                return (ShardReply::StorageError, last);
            }
        }
        (reply, last)
    }

    /// One slice of `op` (at most SLICE_ENTRIES entries looked at, or SLICE_WRITES rows written); a write's
    /// record is logged, its group (sync mode) added to `groups`. The reply after the last.
    fn slice(
        &self,
        op: &ShardOp,
        sliced: &mut Sliced,
        now_ms: u64,
        groups: &mut Vec<Rc<Group>>,
    ) -> Option<ShardReply> {
        if !op.is_write() {
            return sliced.read_step(op, &self.store.borrow(), now_ms, SLICE_ENTRIES);
        }
        let mut store = self.store.borrow_mut();
        let (visits, writes) = (SLICE_ENTRIES, SLICE_WRITES);
        let Some(wal) = &self.wal else {
            return apply_slice(&mut store, op, sliced, now_ms, visits, writes, &mut NoLog);
        };
        let sync = wal.mode == Mode::Sync;
        let (reply, g, appended) = wal.log(|redo, undo| {
            let mut log = Recorder { redo, undo: sync.then_some(undo), now_ms };
            apply_slice(&mut store, op, sliced, now_ms, visits, writes, &mut log)
        });
        if appended && sync && groups.last().is_none_or(|last| !Rc::ptr_eq(last, &g)) {
            groups.push(g);
        }
        reply
    }

    /// With `--durability sync`, the group a reply must wait for when it shows the store as it
    /// is now: writes not yet durable are visible in the store, and a reader must not be told of
    /// one that a crash or a failed sync could still take back (as Redis with `appendfsync
    /// always` holds replies until the fsync of the writes they may have observed).
    pub fn read_barrier(&self) -> Option<Rc<Group>> {
        self.wal.as_ref().filter(|w| w.mode == Mode::Sync).and_then(|w| w.unsettled())
    }

    /// `read_barrier` for a read of one key: only writes to keys that share its bucket.
    pub fn read_barrier_for(&self, key: &[u8]) -> Option<Rc<Group>> {
        self.wal.as_ref().filter(|w| w.mode == Mode::Sync).and_then(|w| w.unsettled_for(key))
    }

    /// The barrier of a read op (or of a write that changed nothing): per key for point and
    /// IN-list ops, the shard's for ranges.
    fn barrier_of(&self, op: &ShardOp) -> Option<Rc<Group>> {
        match op {
            ShardOp::Get { key } | ShardOp::Update { key, .. } => self.read_barrier_for(key),
            // Groups settle in order: the newest of the keys' is the one to wait for, and the
            // shard's newest is never older; take it if any key has one.
            ShardOp::MultiGet { keys, .. } | ShardOp::Delete { keys, .. } => {
                keys.iter().any(|k| self.read_barrier_for(k).is_some()).then(|| self.read_barrier()).flatten()
            }
            _ => self.read_barrier(),
        }
    }

    /// One op; the group its reply must wait for (a write's own, or a read's barrier) is left in
    /// `group`.
    pub fn run_op_logged(&self, op: &ShardOp, now_ms: u64, group: &mut Option<Rc<Group>>) -> ShardReply {
        let mut store = self.store.borrow_mut();
        if !op.is_write() {
            if let Some(g) = self.barrier_of(op) {
                // A key's barrier may be older than what this reply waits for already.
                *group = Some(later(group.take(), g));
            }
            return apply(&mut store, op, now_ms, &mut NoLog);
        }
        let Some(wal) = self.wal.as_ref() else {
            return apply(&mut store, op, now_ms, &mut NoLog);
        };
        let sync = wal.mode == Mode::Sync;
        let (reply, g, appended) = wal.log(|redo, undo| {
            apply(&mut store, op, now_ms, &mut Recorder { redo, undo: sync.then_some(undo), now_ms })
        });
        if appended && sync {
            *group = Some(g);
        } else if let Some(b) = self.barrier_of(op) {
            // It changed nothing (a failed compare-and-set, a missing key) on what the store
            // shows: what it tells is a read's, and waits as one does.
            *group = Some(later(group.take(), b));
        }
        reply
    }

    /// The one-row INSERT fast path, logged: the record is built straight into the log buffer.
    /// Whether it was written (not refused by the memory limit), and the group to wait for.
    pub fn insert_logged(&self, key: &[u8], value: &[u8], now_ms: u64) -> (bool, Option<Rc<Group>>) {
        let mut store = self.store.borrow_mut();
        let Some(wal) = &self.wal else {
            return (put_row(&mut store, key, value, now_ms, &mut NoLog), None);
        };
        let sync = wal.mode == Mode::Sync;
        let (written, g, appended) = wal.log(|redo, undo| {
            put_row(
                &mut store,
                key,
                value,
                now_ms,
                &mut Recorder { redo, undo: sync.then_some(undo), now_ms },
            )
        });
        // A refused write that evicted keys first still waits for their deletes' record.
        (written, (sync && appended).then_some(g))
    }

    /// This core's statistics with its store's figures filled in.
    pub fn stats_snapshot(&self) -> ShardStats {
        let mut s = self.stats.borrow().clone();
        let store = self.store.borrow();
        s.set_store(&store, now_ms());
        s.connections = self.conns.get() as u64;
        s.connections_parked = self.parker.len() as u64;
        s.audit_dropped = self.audit.borrow().dropped.get();
        if let Some(n) = &self.node {
            // A cluster core's store has no limit of its own: its writes are checked against
            // its share before they are proposed (`NodeCore::room_for`).
            s.memory_limit_bytes = self.shared.memory.shard_limit().map_or(0, |l| l.bytes_max as u64);
            let (id, ranges) = n.ranges_status();
            s.cluster_node = Some(id);
            s.ranges = ranges;
        }
        if let Some(w) = &self.wal {
            s.log_bytes = w.log_bytes();
            s.snapshot_bytes = w.snapshot_bytes.get();
            s.last_snapshot_ms = w.last_snapshot_ms.get();
            s.storage_errors = w.storage_errors.get();
            s.snapshots = w.snapshots.get();
            s.syncs = w.syncs.get();
            s.sync_us = w.sync_us.get();
            s.io_stalled_ms = w.io_stalled_ms(now_ms());
        }
        s
    }

    /// Serve a request from another core: at once, or (when an op runs in slices, or its reply
    /// waits for a log group: a write's own, or what a read may have seen) in a task. If the
    /// group fails, its writes were taken back: no reply tells of them.
    pub fn handle(self: &Rc<Self>, req: Req) -> Handled {
        match req {
            Req::Ops { now_ms, ops, .. } if self.node.is_some() => {
                let run = self.node.clone().expect("a cluster node").execute(self.clone(), ops, now_ms);
                Handled::Later(Box::pin(async move { Rep::Ops { replies: run.await, rest: Vec::new() } }))
            }
            Req::Ops { now_ms, ops, reply_bytes_max, .. } => {
                let run = OpsRun {
                    replies: Vec::with_capacity(ops.len()),
                    ops: ops.into_iter(),
                    held: 0,
                    group: None,
                    now_ms,
                    reply_bytes_max,
                };
                let ran = match self.run_some(run) {
                    Ran::Done(replies, rest, None) => return Handled::Now(Rep::Ops { replies, rest }),
                    ran => ran,
                };
                let core = self.clone();
                Handled::Later(Box::pin(async move {
                    let (mut replies, rest, group) = core.run_all(ran).await;
                    if let Some(g) = group {
                        if !g.wait().await {
                            replies.iter_mut().for_each(|r| *r = ShardReply::StorageError);
                        }
                    }
                    Rep::Ops { replies, rest }
                }))
            }
            Req::Stats { .. } => Handled::Now(Rep::Stats(Box::new(self.stats_snapshot()))),
            Req::Slowlog { reset, .. } => Handled::Now(Rep::Slowlog(self.slowlog_entries(reset))),
        }
    }

    /// This core's slow log, oldest first; `reset`: emptied.
    fn slowlog_entries(&self, reset: bool) -> Vec<SlowEntry> {
        let mut ring = self.slowlog.borrow_mut();
        if reset {
            ring.take()
        } else {
            ring.entries()
        }
    }

    /// Every core's slow log (`reset`: each emptied), this one's first, in shard order.
    pub async fn collect_slowlog(&self, reset: bool) -> Vec<Vec<SlowEntry>> {
        let mut all = vec![Vec::new(); self.shards];
        all[self.id] = self.slowlog_entries(reset);
        if let Some(mesh) = &self.mesh {
            let mut slots = Vec::new();
            for s in (0..self.shards).filter(|s| *s != self.id) {
                if let Some(slot) = mesh.send(s, |id, reply_to| Req::Slowlog { id, reply_to, reset }).await {
                    slots.push((s, slot));
                }
            }
            for (s, slot) in slots {
                if let Rep::Slowlog(entries) = slot.take().await {
                    all[s] = entries;
                }
            }
        }
        all
    }

    /// Every core's statistics, this one's first, in shard order.
    pub async fn collect_stats(&self) -> Vec<ShardStats> {
        let mut all = vec![None; self.shards];
        all[self.id] = Some(self.stats_snapshot());
        if let Some(mesh) = &self.mesh {
            let mut slots = Vec::new();
            for s in (0..self.shards).filter(|s| *s != self.id) {
                if let Some(slot) = mesh.send(s, |id, reply_to| Req::Stats { id, reply_to }).await {
                    slots.push((s, slot));
                }
            }
            for (s, slot) in slots {
                if let Rep::Stats(st) = slot.take().await {
                    all[s] = Some(*st);
                }
            }
        }
        all.into_iter().map(Option::unwrap_or_default).collect()
    }

    pub fn shutting_down(&self) -> bool {
        self.shared.shutdown.load(Ordering::Relaxed)
    }
}
