//! A cluster node's part of each core (docs/cluster.md): the core's Raft replicas
//! (`cluster::replicas`), driven by a tick and a ready loop; their log writes go to the core's
//! own write-ahead log as Raft records, in its group commit; the messages that must wait for
//! durability leave once their group is durable; and the node-to-node links: core `c` takes
//! its peers' messages on the node's peer port + `c`, and sends each replica's messages
//! straight to the core driving that range on the other node. Both ends of a link present the
//! node's TLS identity and accept only a key pinned in the cluster file. What a peer asks on a
//! link (a forwarded write or request, a probe) is answered on that same connection, so when it
//! breaks the asker knows at once which answers it will never hear.

use super::core::{Core, Replicated, Started};
use super::duplex::Duplex;
use super::runtime::{self, race, sleep, Either, LocalSignal, Slot, TcpStream};
use super::transport::Transport;
use super::wal::{Group, Wal};
use crate::cluster::command::{
    decode_entries, decode_entry, decode_outcome, decode_request, encode_batch, encode_entry, encode_outcome,
    encode_request, Outcome,
};
use crate::cluster::dump::RangeDump;
use crate::cluster::log::{encode_dropped, encode_records, rebuild_with, GroupLog, Installed};
use crate::cluster::membership::Membership;
use crate::cluster::ranges::RangeMap;
use crate::cluster::replicas::{Apply, Batch, ProposalId, ProposeError, ReadId, Replicas};
use crate::cluster::swap::RowSwap;
use crate::cluster::wire::{self, Envelope, Frame};
use crate::cluster::{NodeId, RangeId};
use crate::limits::{
    CLUSTER_BATCH_BYTES_MAX, CLUSTER_FORWARDS_IN_FLIGHT_MAX, CLUSTER_INIT_PROBE_MS,
    CLUSTER_REQUEST_TIMEOUT_MS, FORWARDED_READ_BYTES_MAX, FORWARDED_REQUEST_TIMEOUT_MS, HANDSHAKE_TIMEOUT_MS,
    LEADER_HANDOVER_MS, LEARNER_CAUGHT_UP_ENTRIES, PEER_ANSWER_SMALL_BYTES, PEER_CONNECTIONS_MAX,
    PEER_QUEUE_BYTES_MAX, PEER_RECONNECT_MS, RAFT_MESSAGE_BYTES_MAX, RAFT_SNAPSHOT_BYTES_MAX, RAFT_TICK_MS,
    READ_INDEX_RETRY_TICKS, REPLICA_PROBE_TICKS, SLICE_ENTRIES, SLICE_WRITES, SNAPSHOT_PIECE_BYTES,
    WAL_RECORD_BYTES_MAX,
};
use crate::shard::{apply, NoLog, ShardOp, ShardReply};
use crate::store::{KeyRange, Store};
use raft::eraftpb::MessageType;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;

/// The cluster file in a node's data directory (`velocityd cluster init` writes it).
pub fn cluster_file(data_dir: &Path) -> PathBuf {
    data_dir.join("cluster")
}

/// A cluster node's membership and the TLS settings for its links. Each core holds its own
/// copy, which a membership change replaces ([`NodeCore::adopt`]); the places, and so the
/// range map, never change.
#[derive(Clone)]
pub struct Cluster {
    pub membership: Membership,
    pub this: NodeId,
    /// The place this node holds (`Member::slot`): the ranges it has replicas of.
    pub slot: NodeId,
    pub map: RangeMap,
    /// Over the places the cluster was made with: each range's first membership.
    pub origin_map: RangeMap,
    pub server_tls: Arc<rustls::ServerConfig>,
    links_tls: HashMap<NodeId, Arc<rustls::ClientConfig>>,
    cert_pem: String,
    key_pem: String,
}

impl Cluster {
    /// The node's cluster settings when its data directory holds a cluster file (None: a single
    /// node). Refused: a file that does not name this node by its key, or a node started with
    /// other `--cores` than the file says (its peers send each range's messages to the core the
    /// file implies).
    pub fn load(
        data_dir: &Path,
        cert_pem: &str,
        key_pem: &str,
        fingerprint: &[u8; 32],
        cores: usize,
    ) -> Result<Option<Cluster>, String> {
        let path = cluster_file(data_dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let membership = Membership::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let this = membership.this.ok_or_else(|| format!("{}: no `self` line", path.display()))?;
        let me = membership.member(this).expect("parse checks `self`");
        if &me.fingerprint != fingerprint {
            return Err(format!(
                "{}: node {this}'s fingerprint is {}, but this data directory's key is {}",
                path.display(),
                crate::security::tls::fingerprint_string(&me.fingerprint),
                crate::security::tls::fingerprint_string(fingerprint)
            ));
        }
        if me.cores != cores {
            return Err(format!(
                "{}: node {this} has cores={} in the cluster file; start it with --cores {}",
                path.display(),
                me.cores,
                me.cores
            ));
        }
        Cluster::build(membership, cert_pem, key_pem).map(Some)
    }

    /// The settings for `membership` (which names this node in `self`), presenting this key.
    fn build(membership: Membership, cert_pem: &str, key_pem: &str) -> Result<Cluster, String> {
        let this = membership.this.ok_or("the membership names no `self`")?;
        let slot = membership.member(this).ok_or("the membership does not name this node")?.slot;
        let allowed = membership.members.iter().map(|m| m.fingerprint).collect();
        let server_tls = crate::security::tls::peer_server_config(cert_pem, key_pem, allowed)?;
        let mut links_tls = HashMap::new();
        for m in membership.members.iter().filter(|m| m.id != this) {
            links_tls
                .insert(m.id, crate::security::tls::peer_client_config(cert_pem, key_pem, m.fingerprint)?);
        }
        let map = membership.range_map()?;
        let origin_map = membership.origin_map()?;
        Ok(Cluster {
            membership,
            this,
            slot,
            map,
            origin_map,
            server_tls,
            links_tls,
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
        })
    }

    /// The ranges core `core` of this node drives a replica of.
    pub fn ranges_of_core(&self, core: usize, cores: usize) -> Vec<RangeId> {
        self.map.ranges_of(self.slot).into_iter().filter(|r| self.map.core_of(*r, cores) == core).collect()
    }

    /// The nodes range `r`'s replicas are to be on: those holding its places now.
    pub fn target(&self, r: RangeId) -> Vec<NodeId> {
        self.map.replicas(r).iter().filter_map(|slot| self.membership.in_slot(*slot)).map(|m| m.id).collect()
    }

    /// A new replica's log for range `r`: the membership every replica of the range started
    /// from (the origin places'), so a replica made later replays the range's log from where
    /// the first ones did.
    pub fn new_log(&self, r: RangeId) -> GroupLog {
        GroupLog::new(&self.origin_map.replicas(r))
    }

    /// Each of core `core`'s replicas, rebuilt from the Raft records its log holds (new ones
    /// for ranges the membership places here that it has none of; a range it was placed on
    /// and has not left yet comes back from its records), the snapshots installed since the
    /// core's last snapshot, whose rows its store is to take, and the ranges it dropped, whose
    /// rows go ([`NodeCore::restore`]).
    pub fn recover_logs(
        &self,
        core: usize,
        cores: usize,
        records: &[Vec<u8>],
    ) -> Result<RecoveredLogs, String> {
        let mut logs: BTreeMap<RangeId, GroupLog> =
            self.ranges_of_core(core, cores).into_iter().map(|r| (r, self.new_log(r))).collect();
        let fresh = |r: RangeId| (self.map.core_of(r, cores) == core).then(|| self.new_log(r));
        let (installed, dropped) = rebuild_with(&mut logs, records.iter().map(|r| &r[..]), &fresh)
            .map_err(|e| format!("core {core}: {e}"))?;
        Ok((logs.into_iter().collect(), installed, dropped))
    }
}

/// A core's replicas' logs as its disk holds them, the snapshots installed since its last
/// snapshot, and the ranges it dropped since.
pub type RecoveredLogs = (Vec<(RangeId, GroupLog)>, Vec<Installed>, Vec<RangeId>);

/// A wake-up for any number of waiters: each takes the current signal before it looks for
/// work, and a notification fires that signal and puts a fresh one in its place, so one that
/// comes between a waiter's look and its wait is never lost. (Renewing the signal per waiter,
/// as this once did, lost the wake-up of every waiter but the last to renew: a follower's read
/// waiting for its apply could sleep until its deadline.)
#[derive(Default)]
struct Notify(RefCell<Rc<LocalSignal>>);

impl Notify {
    fn current(&self) -> Rc<LocalSignal> {
        self.0.borrow().clone()
    }

    fn notify(&self) {
        let fired = std::mem::take(&mut *self.0.borrow_mut());
        fired.fire();
    }
}

/// What a queued frame's loss must be told to.
#[derive(Clone, Copy)]
enum Tag {
    None,
    /// A forwarded write: its asker is told it was not applied.
    Forward(u64),
}

type Queued = (Vec<u8>, Tag);

/// A snapshot on its way to a peer: its rows' pieces, then its message.
struct Outgoing {
    range: RangeId,
    to: NodeId,
    pieces: VecDeque<Vec<u8>>,
    message: Vec<u8>,
}

/// Messages on their way to one core of a peer node.
#[derive(Default)]
struct Link {
    queue: RefCell<VecDeque<Queued>>,
    /// At most one snapshot at a time, a piece between each drain of the queue.
    snapshot: RefCell<Option<Outgoing>>,
    queued_bytes: Cell<usize>,
    kick: Notify,
    dropped: Cell<u64>,
    up: Cell<bool>,
    /// The last attempt to connect failed: the peer is down or cut off.
    down: Cell<bool>,
    /// Forwarded requests written (or being written) on the current connection (ids, some
    /// answered since): their answers come back on it, so when it breaks, those not answered
    /// yet never will be, and are told so at once.
    sent: RefCell<Vec<u64>>,
    /// Why the current connection's reader stopped (the peer closed it, or sent what it
    /// should not): the writer ends the connection at its next turn.
    broken: Cell<Option<&'static str>>,
}

/// Answers to what a peer asked on one connection it opened, written back on it in order.
#[derive(Default)]
struct Answers {
    queue: RefCell<VecDeque<Vec<u8>>>,
    bytes: Cell<usize>,
    kick: Notify,
    /// The connection is gone: answers for it are dropped (its peer already failed them).
    closed: Cell<bool>,
}

impl Answers {
    /// Queue `frame`; false when the connection is gone, or when PEER_QUEUE_BYTES_MAX is queued
    /// already and the frame is longer than PEER_ANSWER_SMALL_BYTES (a peer not reading). Past
    /// twice that, even small ones are not queued: the connection is closed instead (its
    /// writer ends, then its reader), and its peer fails what it waited for on it.
    fn push(&self, frame: Vec<u8>) -> bool {
        if self.closed.get()
            || (frame.len() > PEER_ANSWER_SMALL_BYTES
                && self.bytes.get() + frame.len() > PEER_QUEUE_BYTES_MAX)
        {
            return false;
        }
        if self.bytes.get() + frame.len() > 2 * PEER_QUEUE_BYTES_MAX {
            self.closed.set(true);
            self.kick.notify();
            return false;
        }
        self.bytes.set(self.bytes.get() + frame.len());
        self.queue.borrow_mut().push_back(frame);
        self.kick.notify();
        true
    }
}

/// One range's part of a write once sent: where its outcome lands (and, forwarded, its forward id
/// and the leader it went to), or the outcome already known.
struct Part {
    range: RangeId,
    deadline_ms: u64,
    sent: Result<Sent, Outcome>,
}

/// Where a sent part's outcome lands, and for a forwarded one its id and the leader it went to.
type Sent = (Rc<Slot<Outcome>>, Option<(u64, NodeId)>);

/// A read waiting for its read-index (None: its range could not be asked); weak, so that a read
/// that gave up is gone.
type ReadWaiter = Weak<Slot<Option<u64>>>;

/// Ops for one range's next entry.
#[derive(Default)]
struct Pending {
    entries: Vec<Vec<u8>>,
    waiters: Vec<Waiter>,
    bytes: usize,
}

/// A request sent to a node that holds `ranges` (`send_request`): its id and where its outcome
/// lands (None: too many on their way to that node).
struct RemotePart {
    to: NodeId,
    ranges: Vec<RangeId>,
    sent: Option<(u64, Rc<Slot<Outcome>>)>,
}

/// A read-index request on its way: its range, the leader and term it was asked under, the
/// tick it was asked at, and the reads that wait for it (weak: a read that gave up is gone).
struct AskedRead {
    range: RangeId,
    under: (NodeId, u64),
    tick: u64,
    waiters: Vec<ReadWaiter>,
}

/// Who waits for a proposal this core made: a request of one of its connections, or a write
/// another node forwarded (answered on the connection it came on).
enum Waiter {
    Local(Rc<Slot<Outcome>>),
    Forwarded { to: Rc<Answers>, id: u64 },
}

/// A control request that carries a cluster file to adopt (`velocityd cluster change`).
const ADOPT: &[u8] = b"adopt\n";
/// The same, to be checked only (`NodeCore::prepare`).
const CHECK: &[u8] = b"check\n";

/// One core's part of a cluster node.
pub struct NodeCore {
    /// This core's copy, replaced when the node adopts a membership change.
    cluster: RefCell<Rc<Cluster>>,
    core: usize,
    replicas: RefCell<Replicas>,
    links: RefCell<HashMap<(NodeId, usize), Rc<Link>>>,
    ready_kick: Notify,
    /// Cycles whose log writes are on their way to the disk, in order, with the group to wait
    /// for (None: nothing was written).
    persisting: RefCell<VecDeque<(u64, Option<Rc<Group>>)>>,
    persist_kick: Notify,
    inbound: Cell<usize>,
    /// Who waits for each op of a proposal, in the entry's order.
    proposals: RefCell<HashMap<ProposalId, Vec<Waiter>>>,
    /// Per range this replica leads, the ops taken since the last cycle, proposed together as
    /// one entry when the cycle runs (or when they reach CLUSTER_BATCH_BYTES_MAX), and who
    /// waits for each.
    batching: RefCell<BTreeMap<RangeId, Pending>>,
    /// Reads waiting for the next cycle to ask their range for a read-index: every read that
    /// arrived before the request is sent shares its answer (one heartbeat round for all).
    queued_reads: RefCell<BTreeMap<RangeId, Vec<ReadWaiter>>>,
    /// Reads asked for, by the id `Replicas::read` gave.
    reads: RefCell<HashMap<ReadId, AskedRead>>,
    /// Fired after each cycle, each tick and each link going up or down: what requests wait on
    /// (a range's applied index, which is what this core's store holds since a cycle applies
    /// its entries before anything else runs on the core; a leader known and reachable).
    changed: Notify,
    /// Writes forwarded to a leader on another node, waiting for its outcome.
    forwards: RefCell<HashMap<u64, Rc<Slot<Outcome>>>>,
    next_forward: Cell<u64>,
    /// Ranges a peer said this core's replica was removed from, to drop in the next cycle.
    gone: RefCell<Vec<RangeId>>,
    ticks: Cell<u64>,
    /// Ranges this core gave up (moved to other nodes): never taken back under this node's id,
    /// which could let a replica rebuilt from the range's first membership stand, with a
    /// stale log, in a membership its old self was in. Kept in every checkpoint.
    gave_up: RefCell<std::collections::BTreeSet<RangeId>>,
    /// Requests other nodes have this core run, under way.
    serving: Cell<usize>,
    /// A membership change being adopted (its file being written): one at a time.
    adopting: Cell<bool>,
    /// The ready loop has ended (a log write failed): no Raft message leaves this core now, so
    /// no leadership can be handed over.
    ready_ended: Cell<bool>,
    /// Snapshots for followers being copied, per range; its copy goes when the replica does
    /// (dropped, or taking a snapshot itself).
    dumps: RefCell<BTreeMap<RangeId, RangeDump>>,
    /// Snapshots from leaders whose rows are going into the store a slice at a time, per
    /// range: false once the replica is dropped meanwhile (its rows then go with it).
    swapping: RefCell<BTreeMap<RangeId, Rc<Cell<bool>>>>,
}

impl NodeCore {
    pub fn new(
        cluster: &Cluster,
        core: usize,
        logs: Vec<(RangeId, GroupLog)>,
        gave_up: Vec<RangeId>,
    ) -> Result<NodeCore, String> {
        let fresh: Vec<RangeId> = logs
            .iter()
            .filter(|(_, l)| l.hard_state().term == 0 && l.held().is_empty())
            .map(|(r, _)| *r)
            .collect();
        let mut replicas = Replicas::new(cluster.this, logs, None)?;
        // A new cluster: the first replica of each range stands at once, so that leaders come
        // up spread over the nodes (RangeMap::replicas) instead of waiting out a timeout. (Not
        // a node that took another's place: it is no voter until the leader makes it one.)
        for r in fresh {
            if cluster.origin_map.replicas(r).first() == Some(&cluster.this) {
                replicas.campaign(r)?;
            }
        }
        Ok(NodeCore {
            cluster: RefCell::new(Rc::new(cluster.clone())),
            core,
            replicas: RefCell::new(replicas),
            links: RefCell::new(HashMap::new()),
            ready_kick: Notify::default(),
            persisting: RefCell::new(VecDeque::new()),
            persist_kick: Notify::default(),
            inbound: Cell::new(0),
            proposals: RefCell::new(HashMap::new()),
            batching: RefCell::new(BTreeMap::new()),
            queued_reads: RefCell::new(BTreeMap::new()),
            reads: RefCell::new(HashMap::new()),
            changed: Notify::default(),
            forwards: RefCell::new(HashMap::new()),
            next_forward: Cell::new(1),
            gone: RefCell::new(Vec::new()),
            ticks: Cell::new(0),
            serving: Cell::new(0),
            ready_ended: Cell::new(false),
            adopting: Cell::new(false),
            dumps: RefCell::new(BTreeMap::new()),
            swapping: RefCell::new(BTreeMap::new()),
            gave_up: RefCell::new(gave_up.into_iter().collect()),
        })
    }

    pub fn cluster(&self) -> Rc<Cluster> {
        self.cluster.borrow().clone()
    }

    /// The link to core `peer_core` of node `to`, started on first use.
    fn link(self: &Rc<Self>, core: &Rc<Core>, to: NodeId, peer_core: usize) -> Rc<Link> {
        let key = (to, peer_core);
        if let Some(l) = self.links.borrow().get(&key) {
            return l.clone();
        }
        let l = Rc::new(Link::default());
        self.links.borrow_mut().insert(key, l.clone());
        runtime::spawn(run_link(core.clone(), self.clone(), key, l.clone()));
        l
    }

    /// Queue a frame on a link; false (dropped) when it holds PEER_QUEUE_BYTES_MAX already.
    fn enqueue(&self, link: &Link, frame: Vec<u8>, tag: Tag) -> bool {
        // A frame the peer would refuse as too long (and close the connection over) is not sent.
        if link.queued_bytes.get() + frame.len() > PEER_QUEUE_BYTES_MAX
            || frame.len() > 4 + RAFT_MESSAGE_BYTES_MAX
        {
            link.dropped.set(link.dropped.get() + 1);
            return false;
        }
        link.queued_bytes.set(link.queued_bytes.get() + frame.len());
        link.queue.borrow_mut().push_back((frame, tag));
        link.kick.notify();
        true
    }

    /// Queue `env` for the core that drives its range on its node; dropped (Raft sends again)
    /// when that link is full. A snapshot's rows go apart, in pieces, ahead of its message.
    fn send(self: &Rc<Self>, core: &Rc<Core>, mut env: Envelope) {
        let to = env.msg.to;
        let cluster = self.cluster();
        let Some(member) = cluster.membership.member(to) else { return };
        let link = self.link(core, to, cluster.map.core_of(env.range, member.cores));
        if env.msg.get_msg_type() == MessageType::MsgSnapshot {
            let rows = std::mem::take(&mut env.msg.mut_snapshot().data);
            if link.snapshot.borrow().is_some() {
                // One at a time: Raft sends this one again once it hears how the other went.
                self.replicas.borrow_mut().report_snapshot(env.range, to, false);
                return;
            }
            let mut message = Vec::new();
            wire::encode(&env, &mut message);
            let pieces = wire::encode_snapshot_rows(env.range, &rows, SNAPSHOT_PIECE_BYTES).into();
            *link.snapshot.borrow_mut() = Some(Outgoing { range: env.range, to, pieces, message });
            link.kick.notify();
            return;
        }
        let mut frame = Vec::new();
        wire::encode(&env, &mut frame);
        self.enqueue(&link, frame, Tag::None);
    }

    /// The store takes the rows of the snapshots installed since the core's last snapshot
    /// (start-up: the committed entries after each are applied again on top, by Raft).
    pub fn restore(
        &self,
        core: &Core,
        installed: Vec<Installed>,
        dropped: Vec<RangeId>,
    ) -> Result<(), String> {
        let map = &self.cluster().map;
        for range in dropped {
            clear_rows(&mut core.store.borrow_mut(), map, range, runtime::now_ms());
        }
        for i in installed {
            let n = RowSwap::new(i.range, map, &i.rows)
                .map_err(|e| format!("range {}: the snapshot installed at {}: {e}", i.range, i.index))?
                .run(&mut core.store.borrow_mut(), map, runtime::now_ms());
            tracing::info!(
                shard = core.id,
                range = i.range,
                index = i.index,
                rows = n,
                "installed snapshot restored"
            );
        }
        Ok(())
    }

    /// Begin each snapshot raft-rs asked for and is not being made: the range's rows at its
    /// applied index now, copied a slice at a time (`dump_snapshot`).
    fn offer_snapshots(self: &Rc<Self>, core: &Rc<Core>) {
        let wanted = self.replicas.borrow().wanted_snapshots();
        for range in wanted {
            if self.dumps.borrow().contains_key(&range) {
                continue;
            }
            let point = self.replicas.borrow().snapshot_point(range);
            match point {
                Ok((index, term, conf)) => {
                    let dump = RangeDump::new(range, index, term, conf, runtime::now_ms());
                    self.dumps.borrow_mut().insert(range, dump);
                    runtime::spawn(dump_snapshot(core.clone(), self.clone(), range));
                }
                Err(e) => tracing::warn!(shard = core.id, range, error = %e, "cannot make a snapshot"),
            }
        }
    }

    /// Tell the peer that forwarded write or request `id` on connection `to` what became of it.
    fn answer_forward(&self, to: &Answers, id: u64, o: &Outcome) {
        let mut body = Vec::new();
        encode_outcome(id, o, &mut body);
        if body.len() > FORWARDED_READ_BYTES_MAX {
            // One frame carries it: rows too many for that are refused as a result over
            // max_payload is; a write's RETURNING rows, applied, cannot be told.
            let o = match o {
                Outcome::Applied(ShardReply::Rows(_) | ShardReply::Entry(_)) => {
                    Outcome::Applied(ShardReply::TooLarge)
                }
                _ => Outcome::Unknown,
            };
            body.clear();
            encode_outcome(id, &o, &mut body);
        }
        let mut frame = Vec::new();
        wire::encode_special(wire::OUTCOME_RANGE, &body, &mut frame);
        if !to.push(frame) && !to.closed.get() {
            // A peer this far behind reading its answers hears this one's outcome as unknown.
            body.clear();
            encode_outcome(id, &Outcome::Unknown, &mut body);
            let mut frame = Vec::new();
            wire::encode_special(wire::OUTCOME_RANGE, &body, &mut frame);
            to.push(frame);
        }
    }

    /// Settle proposal `id` with `o`.
    fn settle(&self, id: ProposalId, o: Outcome) {
        let waiters = self.proposals.borrow_mut().remove(&id);
        for w in waiters.into_iter().flatten() {
            self.tell(w, o.clone());
        }
    }

    /// Settle each op of proposal `id` with its own outcome (a batch applied).
    fn settle_each(&self, id: ProposalId, outcomes: Vec<Outcome>) {
        let waiters = self.proposals.borrow_mut().remove(&id).unwrap_or_default();
        let mut outcomes = outcomes.into_iter();
        for w in waiters {
            // As many outcomes as ops, since the entry is the one this core built.
            self.tell(w, outcomes.next().unwrap_or(Outcome::Unknown));
        }
    }

    fn tell(&self, w: Waiter, o: Outcome) {
        match w {
            Waiter::Local(slot) => slot.put(o),
            Waiter::Forwarded { to, id } => self.answer_forward(&to, id, &o),
        }
    }

    /// Whether this replica leads `range` (a leader knows itself as the leader).
    fn leads(&self, range: RangeId) -> bool {
        self.replicas.borrow().leader(range) == Some(Some(self.cluster().this))
    }

    /// Add an op to the batch of `range`, which this replica leads; a batch that would outgrow
    /// CLUSTER_BATCH_BYTES_MAX is proposed first.
    fn batch(&self, range: RangeId, entry: Vec<u8>, waiter: Waiter) {
        let full = self
            .batching
            .borrow()
            .get(&range)
            .is_some_and(|p| p.bytes + entry.len() > CLUSTER_BATCH_BYTES_MAX);
        if full {
            self.propose_batch(range);
        }
        let mut batching = self.batching.borrow_mut();
        let p = batching.entry(range).or_default();
        p.bytes += entry.len();
        p.entries.push(entry);
        p.waiters.push(waiter);
        drop(batching);
        self.ready_kick.notify();
    }

    /// Propose every range's batch (the ready loop, before each cycle).
    fn propose_batches(&self) {
        let ranges: Vec<RangeId> = self.batching.borrow().keys().copied().collect();
        for range in ranges {
            self.propose_batch(range);
        }
    }

    fn propose_batch(&self, range: RangeId) {
        let Some(Pending { mut entries, waiters, .. }) = self.batching.borrow_mut().remove(&range) else {
            return;
        };
        let data = if entries.len() == 1 { entries.pop().expect("one") } else { encode_batch(&entries) };
        let proposed = self.replicas.borrow_mut().propose(range, data);
        match proposed {
            Ok(id) => {
                self.proposals.borrow_mut().insert(id, waiters);
            }
            // The leadership moved since the ops were taken: none of them was proposed.
            Err(e) => {
                let o = Outcome::NotApplied(format!("range {range}'s leader could not take it: {e:?}"));
                for w in waiters {
                    self.tell(w, o.clone());
                }
            }
        }
    }

    /// Run one connection's ops for this core's shard: writes through their ranges' Raft
    /// groups, reads after a read-index round. A run of consecutive writes is proposed in
    /// order (each range's log keeps it) before any of them is waited for, and a run of reads
    /// asks together; a read after a write waits for it, so a connection reads its own writes.
    async fn execute_all(self: Rc<Self>, core: Rc<Core>, ops: Vec<ShardOp>, now_ms: u64) -> Vec<ShardReply> {
        let mut replies = Vec::with_capacity(ops.len());
        let mut ops = ops.into_iter().peekable();
        while let Some(first) = ops.next() {
            let write = first.is_write();
            let mut run = vec![first];
            while let Some(op) = ops.next_if(|op| op.is_write() == write) {
                run.push(op);
            }
            if write {
                let mut begun = Vec::with_capacity(run.len());
                for op in run {
                    if matches!(op, ShardOp::DeleteRange { .. }) {
                        // It reads the store first: the writes before it are done by then.
                        for b in begun.drain(..) {
                            replies.push(self.end_write(b).await);
                        }
                        replies.push(self.delete_range(&core, op, now_ms).await);
                    } else {
                        begun.push(self.begin_write(&core, op, now_ms).await);
                    }
                }
                for b in begun {
                    replies.push(self.end_write(b).await);
                }
            } else {
                replies.extend(self.read_all(&core, run, now_ms).await);
            }
        }
        replies
    }

    /// A write: each range's part proposed (or forwarded to its leader) in turn, the replies
    /// put back together as the store would have answered the whole.
    async fn begin_write(
        self: &Rc<Self>,
        core: &Rc<Core>,
        op: ShardOp,
        now_ms: u64,
    ) -> Result<Vec<(Vec<usize>, Part)>, ShardReply> {
        if !self.room_for(core, &op, now_ms) {
            return Err(ShardReply::Full { affected: 0 });
        }
        let map = &self.cluster().map;
        let parts: Vec<(RangeId, Vec<usize>, ShardOp)> = match op {
            ShardOp::Update { ref key, .. } => vec![(map.range_of_key(key), vec![0], op)],
            ShardOp::Put { rows, on_conflict, returning } => by_range(map, rows, |r| &r.key)
                .map(|(range, idx, rows)| {
                    let op =
                        ShardOp::Put { rows, on_conflict: on_conflict.clone(), returning: returning.clone() };
                    (range, idx, op)
                })
                .collect(),
            ShardOp::Delete { keys, expect, returning } => by_range(map, keys, |k| k)
                .map(|(range, idx, keys)| {
                    let op = ShardOp::Delete { keys, expect: expect.clone(), returning: returning.clone() };
                    (range, idx, op)
                })
                .collect(),
            other => return Err(ShardReply::Invalid(format!("not a point write: {other:?}"))),
        };
        let mut sent = Vec::with_capacity(parts.len());
        for (range, idx, op) in parts {
            let entry = encode_entry(now_ms, &op).expect("point writes are entries");
            sent.push((idx, self.begin_range(core, range, entry).await));
        }
        Ok(sent)
    }

    /// Whether this core's store has room for `op` under its share of --max-memory. A cluster
    /// core's store has no limit of its own (an entry is applied on every replica, whatever its
    /// memory): a write is refused before it is proposed, here and on the node a forwarded one
    /// reaches, as a single node's noeviction refuses it.
    fn room_for(&self, core: &Core, op: &ShardOp, now_ms: u64) -> bool {
        core.shared
            .memory
            .shard_limit()
            .is_none_or(|l| crate::shard::ops::fits(&core.store.borrow(), op, l.bytes_max, now_ms))
    }

    /// A write's reply, from the parts `begin_write` sent.
    async fn end_write(&self, begun: Result<Vec<(Vec<usize>, Part)>, ShardReply>) -> ShardReply {
        let sent = match begun {
            Err(reply) => return reply,
            Ok(sent) => sent,
        };
        let mut outcomes = Vec::with_capacity(sent.len());
        for (idx, part) in sent {
            outcomes.push((idx, self.end_range(part).await));
        }
        combine(outcomes)
    }

    /// Whether the link this core would forward `range`'s requests to node `to` over is
    /// known to be down.
    fn unreachable(&self, to: NodeId, range: RangeId) -> bool {
        let cluster = self.cluster();
        let Some(m) = cluster.membership.member(to) else { return true };
        let key = (to, cluster.map.core_of(range, m.cores));
        self.links.borrow().get(&key).is_some_and(|l| l.down.get())
    }

    /// Wait (until `deadline_ms`) for `range` to have a leader this core can reach: through an
    /// election, a request waits rather than fails. Err: none in time, or not a range here.
    async fn reachable_leader(&self, range: RangeId, deadline_ms: u64) -> Result<NodeId, String> {
        loop {
            let woken = self.changed.current();
            let leader = self.replicas.borrow().leader(range);
            match leader {
                None => return Err(format!("this core holds no replica of range {range}")),
                Some(Some(l)) if l == self.cluster().this || !self.unreachable(l, range) => return Ok(l),
                Some(_) => {}
            }
            let left = deadline_ms.saturating_sub(runtime::now_ms());
            if left == 0 {
                return Err(format!(
                    "range {range} had no reachable leader for {CLUSTER_REQUEST_TIMEOUT_MS} ms"
                ));
            }
            let _ = race(woken.wait(), sleep(Duration::from_millis(left))).await;
        }
    }

    /// Propose `entry` to `range` here if this replica leads it, else forward it to the leader
    /// (after waiting out an election): what `end_range` waits on.
    async fn begin_range(self: &Rc<Self>, core: &Rc<Core>, range: RangeId, entry: Vec<u8>) -> Part {
        let deadline_ms = runtime::now_ms() + CLUSTER_REQUEST_TIMEOUT_MS;
        let done = |o| Part { range, deadline_ms, sent: Err(o) };
        if !self.holds(range) {
            // No replica here (more nodes than replicas): a node of the range takes it to the
            // range's leader.
            let Some((to, _)) = self.holder_of(range) else {
                return done(Outcome::NotApplied(format!("no node of range {range} is known")));
            };
            return match self.forward(core, to, range, &entry) {
                Some((id, slot)) => Part { range, deadline_ms, sent: Ok((slot, Some((id, to)))) },
                None => done(Outcome::NotApplied(format!("too many writes on their way to node {to}"))),
            };
        }
        if let Err(why) = self.reachable_leader(range, deadline_ms).await {
            return done(Outcome::NotApplied(why));
        }
        if self.leads(range) {
            let slot = Slot::new();
            self.batch(range, entry, Waiter::Local(slot.clone()));
            return Part { range, deadline_ms, sent: Ok((slot, None)) };
        }
        let proposed = self.replicas.borrow_mut().propose(range, entry.clone());
        match proposed {
            Ok(id) => {
                let slot = Slot::new();
                self.proposals.borrow_mut().insert(id, vec![Waiter::Local(slot.clone())]);
                self.ready_kick.notify();
                Part { range, deadline_ms, sent: Ok((slot, None)) }
            }
            Err(ProposeError::NotLeader { leader: Some(l) }) if l != self.cluster().this => {
                match self.forward(core, l, range, &entry) {
                    Some((id, slot)) => Part { range, deadline_ms, sent: Ok((slot, Some((id, l)))) },
                    None => done(Outcome::NotApplied(format!(
                        "too many writes on their way to node {l}, range {range}'s leader"
                    ))),
                }
            }
            Err(ProposeError::NotLeader { .. }) => done(Outcome::NotApplied(format!(
                "range {range} has no leader now (an election is under way)"
            ))),
            Err(ProposeError::UnknownRange(_)) => {
                done(Outcome::NotApplied(format!("this core holds no replica of range {range}")))
            }
            Err(ProposeError::Refused(why)) => {
                done(Outcome::NotApplied(format!("range {range}'s leader refused it: {why}")))
            }
        }
    }

    /// The outcome of a part `begin_range` sent.
    async fn end_range(&self, part: Part) -> Outcome {
        let Part { range, deadline_ms, sent } = part;
        let (slot, forwarded) = match sent {
            Err(o) => return o,
            Ok(s) => s,
        };
        // The answer, or (a forwarded write) word that the leader it went to leads no more: its
        // fate is then unknown here, and the client hears so now rather than at the deadline.
        let answer = async {
            // A part proposed here hears its fate from this core: nothing else to watch.
            if forwarded.is_none() {
                return slot.take().await;
            }
            loop {
                let woken = self.changed.current();
                if let Some((_, to)) = forwarded {
                    // Known only where a replica is: a node without one waits for the answer.
                    let leader = self.replicas.borrow().leader(range);
                    if leader.is_some() && leader != Some(Some(to)) {
                        return Outcome::Unknown;
                    }
                }
                if let Either::Left(o) = race(slot.take(), woken.wait()).await {
                    return o;
                }
            }
        };
        let left = deadline_ms.saturating_sub(runtime::now_ms()).max(1);
        let o = match race(answer, sleep(Duration::from_millis(left))).await {
            Either::Left(o) => o,
            Either::Right(()) => Outcome::Unknown,
        };
        if let Some((id, _)) = forwarded {
            self.forwards.borrow_mut().remove(&id);
        }
        o
    }

    /// Send a write to `range`'s leader on node `leader`: its id and where its outcome will
    /// land; None when too many are on their way, or the link is full.
    fn forward(
        self: &Rc<Self>,
        core: &Rc<Core>,
        leader: NodeId,
        range: RangeId,
        entry: &[u8],
    ) -> Option<(u64, Rc<Slot<Outcome>>)> {
        let cluster = self.cluster();
        let member = cluster.membership.member(leader)?;
        let mut tail = Vec::with_capacity(4 + entry.len());
        tail.extend_from_slice(&range.to_le_bytes());
        tail.extend_from_slice(entry);
        let peer_core = cluster.map.core_of(range, member.cores);
        self.send_forward(core, leader, peer_core, wire::FORWARD_RANGE, &tail)
    }

    /// Send a `kind` frame of `id | tail` to core `peer_core` of node `to`, whose answer is an
    /// outcome frame on the same connection: its id and where the outcome will land; None when
    /// too many are on their way, or the link is full.
    fn send_forward(
        self: &Rc<Self>,
        core: &Rc<Core>,
        to: NodeId,
        peer_core: usize,
        kind: RangeId,
        tail: &[u8],
    ) -> Option<(u64, Rc<Slot<Outcome>>)> {
        if self.forwards.borrow().len() >= CLUSTER_FORWARDS_IN_FLIGHT_MAX {
            return None;
        }
        let id = self.next_forward.get();
        self.next_forward.set(id + 1);
        let mut body = Vec::with_capacity(8 + tail.len());
        body.extend_from_slice(&id.to_le_bytes());
        body.extend_from_slice(tail);
        let mut frame = Vec::new();
        wire::encode_special(kind, &body, &mut frame);
        let link = self.link(core, to, peer_core);
        if !self.enqueue(&link, frame, Tag::Forward(id)) {
            return None;
        }
        let slot = Slot::new();
        self.forwards.borrow_mut().insert(id, slot.clone());
        Some((id, slot))
    }

    /// Whether this core drives a replica of `range`.
    fn holds(&self, range: RangeId) -> bool {
        self.replicas.borrow().leader(range).is_some()
    }

    /// The node and core to have serve `range` when this node holds no replica of it: the first
    /// of the range's nodes whose link is not known to be down.
    fn holder_of(&self, range: RangeId) -> Option<(NodeId, usize)> {
        self.holder_other_than(range, &[])
    }

    /// As `holder_of`, among the range's nodes not in `tried`.
    fn holder_other_than(&self, range: RangeId, tried: &[NodeId]) -> Option<(NodeId, usize)> {
        let cluster = self.cluster();
        let nodes: Vec<NodeId> = cluster.target(range).into_iter().filter(|n| !tried.contains(n)).collect();
        let to = nodes.iter().copied().find(|n| !self.unreachable(*n, range)).or(nodes.first().copied())?;
        Some((to, cluster.map.core_of(range, cluster.membership.member(to)?.cores)))
    }

    /// Send `request` for `ranges` to nodes that hold them (not those in `tried`), one request
    /// per node and core: what each waits on, and a range no such node holds.
    fn send_request(
        self: &Rc<Self>,
        core: &Rc<Core>,
        ranges: &[RangeId],
        request: &[u8],
        tried: &[NodeId],
    ) -> (Vec<RemotePart>, Option<RangeId>) {
        let mut by_holder: BTreeMap<(NodeId, usize), Vec<RangeId>> = BTreeMap::new();
        let mut missing = None;
        for r in ranges {
            match self.holder_other_than(*r, tried) {
                Some(h) => by_holder.entry(h).or_default().push(*r),
                None => missing = Some(*r),
            }
        }
        let mut parts = Vec::with_capacity(by_holder.len());
        for ((to, peer_core), ranges) in by_holder {
            let mut tail = Vec::with_capacity(4 + 4 * ranges.len() + request.len());
            tail.extend_from_slice(&(ranges.len() as u32).to_le_bytes());
            ranges.iter().for_each(|r| tail.extend_from_slice(&r.to_le_bytes()));
            tail.extend_from_slice(request);
            let sent = self.send_forward(core, to, peer_core, wire::REQUEST_RANGE, &tail);
            parts.push(RemotePart { to, ranges, sent });
        }
        (parts, missing)
    }

    /// Parts of an op for ranges this node holds no replica of, each run by a node that holds
    /// its ranges (`take_request`): their replies, in order. A part's ranges are grouped by the
    /// node and core that serve them, one request each; their replies are joined (`join`).
    async fn run_remote(
        self: &Rc<Self>,
        core: &Rc<Core>,
        parts: Vec<(Vec<RangeId>, ShardOp)>,
        now_ms: u64,
    ) -> Vec<ShardReply> {
        let started_ms = runtime::now_ms();
        let mut sent = Vec::with_capacity(parts.len());
        for (ranges, mut op) in parts {
            if let ShardOp::Scan { bytes_max, .. } | ShardOp::MultiGet { bytes_max, .. } = &mut op {
                *bytes_max = (*bytes_max).min(FORWARDED_READ_BYTES_MAX);
            }
            let request = encode_request(now_ms, &op).expect("reads and range deletes are requests");
            let (waits, missing) = self.send_request(core, &ranges, &request, &[]);
            sent.push((op, request, waits, missing));
        }
        let mut replies = Vec::with_capacity(sent.len());
        for (op, request, waits, missing) in sent {
            let mut got = Vec::with_capacity(waits.len());
            let no_node = |r: RangeId| ShardReply::Unavailable(format!("no node of range {r} is known"));
            got.extend(missing.map(no_node));
            // The answer comes on the connection the request went on, or that connection
            // breaks and the request is failed at once (`Link::sent`): the deadline bounds a
            // serving node that is stalled, and lets a long range DELETE finish.
            let deadline_ms = started_ms
                + if op.is_write() { FORWARDED_REQUEST_TIMEOUT_MS } else { CLUSTER_REQUEST_TIMEOUT_MS };
            let mut waits: VecDeque<RemotePart> = waits.into();
            let mut tried = Vec::new();
            while let Some(part) = waits.pop_front() {
                let Some((id, slot)) = part.sent else {
                    got.push(ShardReply::Unavailable(format!(
                        "too many requests on their way to node {}",
                        part.to
                    )));
                    continue;
                };
                let left = deadline_ms.saturating_sub(runtime::now_ms()).max(1);
                let (o, timed_out) = match race(slot.take(), sleep(Duration::from_millis(left))).await {
                    Either::Left(o) => (o, false),
                    Either::Right(()) => (Outcome::Unknown, true),
                };
                self.forwards.borrow_mut().remove(&id);
                let failed = match o {
                    Outcome::Applied(reply) => {
                        got.push(reply);
                        continue;
                    }
                    Outcome::Unknown if op.is_write() => {
                        got.push(ShardReply::OutcomeUnknown);
                        continue;
                    }
                    Outcome::NotApplied(why) => why,
                    Outcome::Unknown if timed_out => {
                        format!("node {} did not answer within {CLUSTER_REQUEST_TIMEOUT_MS} ms", part.to)
                    }
                    Outcome::Unknown => format!("node {}'s connection broke before it answered", part.to),
                };
                // Refused, or its node went down (its link broke, or is down): a read is as good
                // asked of another node of its ranges, each node once. A DELETE is not sent
                // twice (its first may have deleted), nor a read that a stalled node held.
                if op.is_write() || timed_out {
                    got.push(ShardReply::Unavailable(failed));
                    continue;
                }
                tried.push(part.to);
                let (more, missing) = self.send_request(core, &part.ranges, &request, &tried);
                waits.extend(more);
                if let Some(r) = missing {
                    got.push(ShardReply::Unavailable(format!(
                        "range {r}: {failed}, and no other node of it is left"
                    )));
                }
            }
            replies.push(join(&op, got));
        }
        replies
    }

    /// An op another node (holding no replica of these ranges) has this core run: answered
    /// once done, in a task of its own, as the node's own request would be (a read confirmed by
    /// a read-index round; a range DELETE through the ranges' Raft groups), seeing only the
    /// keys of those ranges.
    fn take_request(self: &Rc<Self>, core: &Rc<Core>, to: &Rc<Answers>, body: &[u8]) {
        let Some((head, rest)) = body.split_first_chunk::<12>() else { return };
        let id = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
        let n = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes")) as usize;
        let parsed = (|| {
            let cut = n.checked_mul(4).filter(|b| *b <= rest.len()).ok_or("ranges cut short")?;
            let ranges: Vec<RangeId> = rest[..cut]
                .chunks_exact(4)
                .map(|c| RangeId::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect();
            let (now_ms, op) = decode_request(&rest[cut..])?;
            Ok::<_, String>((ranges, now_ms, op))
        })();
        let (ranges, now_ms, mut op) = match parsed {
            Ok(p) => p,
            Err(e) => return self.answer_forward(to, id, &Outcome::NotApplied(e)),
        };
        if let Some(r) = ranges.iter().find(|r| !self.holds(**r)) {
            let why = format!("node {} holds no replica of range {r}", self.cluster().this);
            return self.answer_forward(to, id, &Outcome::NotApplied(why));
        }
        let map = self.cluster().map.clone();
        let keys: &[Vec<u8>] = match &op {
            ShardOp::Get { key } => std::slice::from_ref(key),
            ShardOp::MultiGet { keys, .. } => keys,
            _ => &[],
        };
        if keys.iter().any(|k| !ranges.contains(&map.range_of_key(k))) {
            let why = "a key outside the ranges the request names".to_string();
            return self.answer_forward(to, id, &Outcome::NotApplied(why));
        }
        if let ShardOp::Scan { bytes_max, .. } | ShardOp::MultiGet { bytes_max, .. } = &mut op {
            *bytes_max = (*bytes_max).min(FORWARDED_READ_BYTES_MAX);
        }
        if self.serving.get() >= CLUSTER_FORWARDS_IN_FLIGHT_MAX {
            let why = format!("node {} is serving too many requests for other nodes", self.cluster().this);
            return self.answer_forward(to, id, &Outcome::NotApplied(why));
        }
        self.serving.set(self.serving.get() + 1);
        let (node, core, to) = (self.clone(), core.clone(), to.clone());
        runtime::spawn(async move {
            let within =
                || crate::shard::ops::Sliced::within(ranges.iter().map(|r| map.tokens(*r)).collect());
            let reply = match op {
                ShardOp::DeleteRange { .. } => node.delete_in(&core, op, now_ms, &ranges, within()).await,
                _ => match node.confirm(&ranges).await {
                    Err(why) => ShardReply::Unavailable(why),
                    Ok(()) => match op {
                        ShardOp::Scan { .. } | ShardOp::Count { .. } => {
                            read_sliced(&core, &op, now_ms, within()).await
                        }
                        op => node.run_here(&core, op, now_ms).await,
                    },
                },
            };
            node.serving.set(node.serving.get() - 1);
            node.answer_forward(&to, id, &Outcome::Applied(reply));
        });
    }

    /// A read on this core's store, as a single node runs it.
    async fn run_here(&self, core: &Rc<Core>, op: ShardOp, now_ms: u64) -> ShardReply {
        let mut group = None;
        match core.start_op(op, now_ms, &mut group) {
            Started::Done(r) => r,
            Started::More(rest) => core.finish_op(rest, now_ms).await.0,
        }
    }

    /// A write another node forwarded here: proposed if this replica leads its range, else
    /// answered as not applied (the sender's node retries with the leader it then knows).
    fn take_forward(self: &Rc<Self>, core: &Rc<Core>, to: &Rc<Answers>, body: &[u8]) {
        let Some((head, entry)) = body.split_first_chunk::<12>() else { return };
        let id = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
        let range = RangeId::from_le_bytes(head[8..12].try_into().expect("4 bytes"));
        match decode_entry(entry) {
            Err(e) => return self.answer_forward(to, id, &Outcome::NotApplied(e)),
            Ok((at_ms, op)) if !self.room_for(core, &op, at_ms) => {
                return self.answer_forward(to, id, &Outcome::Applied(ShardReply::Full { affected: 0 }));
            }
            Ok(_) => {}
        }
        let waiter = Waiter::Forwarded { to: to.clone(), id };
        if self.leads(range) {
            return self.batch(range, entry.to_vec(), waiter);
        }
        let proposed = self.replicas.borrow_mut().propose(range, entry.to_vec());
        match proposed {
            Ok(p) => {
                self.proposals.borrow_mut().insert(p, vec![waiter]);
                self.ready_kick.notify();
            }
            // Not the leader (any more): taken on to the one this node knows, as its own write
            // would be (a node with no replica of the range sent it to any of its nodes); with
            // no leader known here, refused at once (the sender tells its client to retry).
            Err(ProposeError::NotLeader { leader: Some(l) }) if l != self.cluster().this => {
                let (node, core, entry, to) = (self.clone(), core.clone(), entry.to_vec(), to.clone());
                runtime::spawn(async move {
                    let part = node.begin_range(&core, range, entry).await;
                    let o = node.end_range(part).await;
                    node.answer_forward(&to, id, &o);
                });
            }
            Err(e) => {
                let o = Outcome::NotApplied(format!("node {} could not take it: {e:?}", self.cluster().this));
                self.answer_forward(to, id, &o);
            }
        }
    }

    /// A read, served from this core's store once every range it touches has applied what a
    /// read-index round confirmed (Raft thesis 6.4): linearizable on any replica.
    /// A run of reads shares one confirmation: every one of them was sent before it began, so
    /// the index it confirms serves them all.
    ///
    /// Ranges this node holds no replica of (a cluster with more nodes than replicas) are read
    /// from a node that holds them (`run_remote`), and joined with what this core holds.
    async fn read_all(self: &Rc<Self>, core: &Rc<Core>, ops: Vec<ShardOp>, now_ms: u64) -> Vec<ShardReply> {
        let map = &self.cluster().map;
        let mut ranges: Vec<RangeId> = Vec::new();
        for op in &ops {
            match op {
                ShardOp::Get { key } => ranges.push(map.range_of_key(key)),
                ShardOp::MultiGet { keys, .. } => ranges.extend(keys.iter().map(|k| map.range_of_key(k))),
                _ => ranges.extend(self.core_ranges(core)),
            }
        }
        ranges.sort_unstable();
        ranges.dedup();
        let (served, elsewhere): (Vec<RangeId>, Vec<RangeId>) =
            ranges.into_iter().partition(|r| self.serves(*r));
        if let Err(why) = self.confirm(&served).await {
            return ops.iter().map(|_| ShardReply::Unavailable(why.clone())).collect();
        }
        let mut replies = Vec::with_capacity(ops.len());
        for op in ops {
            if elsewhere.is_empty() {
                replies.push(self.run_here(core, op, now_ms).await);
                continue;
            }
            let (here, remote) = self.split(core, op);
            let mut parts = Vec::new();
            if let Some(op) = here {
                parts.push(match (&op, self.served_only(core)) {
                    (ShardOp::Scan { .. } | ShardOp::Count { .. }, Some(sliced)) => {
                        read_sliced(core, &op, now_ms, sliced).await
                    }
                    _ => self.run_here(core, op, now_ms).await,
                });
            }
            let joined = remote.first().map(|(_, op)| op.clone());
            parts.extend(self.run_remote(core, remote, now_ms).await);
            replies.push(match joined {
                Some(op) => join(&op, parts),
                None => parts.pop().expect("a part here"),
            });
        }
        replies
    }

    /// `op` as the part this core serves (None: nothing of it is here) and the parts for
    /// ranges it holds no replica of, with their ranges.
    #[allow(clippy::type_complexity)]
    fn split(&self, core: &Core, op: ShardOp) -> (Option<ShardOp>, Vec<(Vec<RangeId>, ShardOp)>) {
        let cluster = self.cluster();
        let map = &cluster.map;
        match op {
            ShardOp::Get { ref key } => {
                let r = map.range_of_key(key);
                if self.serves(r) {
                    (Some(op), vec![])
                } else {
                    (None, vec![(vec![r], op)])
                }
            }
            ShardOp::MultiGet { keys, cols, bytes_max } => {
                let (mut here, mut elsewhere) = (Vec::new(), BTreeMap::<RangeId, Vec<Vec<u8>>>::new());
                for k in keys {
                    let r = map.range_of_key(&k);
                    if self.serves(r) {
                        here.push(k);
                    } else {
                        elsewhere.entry(r).or_default().push(k);
                    }
                }
                let remote = elsewhere
                    .into_iter()
                    .map(|(r, keys)| (vec![r], ShardOp::MultiGet { keys, cols, bytes_max }))
                    .collect();
                ((!here.is_empty()).then_some(ShardOp::MultiGet { keys: here, cols, bytes_max }), remote)
            }
            // Scan, Count, DeleteRange: this core's store holds the ranges it has replicas of
            // (those it is leaving are not read here: `served_only`); the rest of its share
            // of the tokens is elsewhere.
            op => {
                let elsewhere: Vec<RangeId> =
                    self.core_ranges(core).into_iter().filter(|r| !self.serves(*r)).collect();
                let remote = if elsewhere.is_empty() { vec![] } else { vec![(elsewhere, op.clone())] };
                (Some(op), remote)
            }
        }
    }

    /// The range moved to other nodes (this node's place no longer holds it) and its
    /// membership no longer names this node: its replica and rows go (the caller logs
    /// `encode_dropped`, so a restart makes no replica of it).
    fn drop_replica(self: &Rc<Self>, core: &Rc<Core>, range: RangeId, why: &str) {
        let lost = self.replicas.borrow_mut().remove(range);
        for id in lost {
            self.settle(id, Outcome::Unknown);
        }
        self.gave_up.borrow_mut().insert(range);
        self.dumps.borrow_mut().remove(&range);
        if let Some(live) = self.swapping.borrow_mut().remove(&range) {
            live.set(false);
        }
        tracing::info!(shard = core.id, range, why, "replica dropped: the range moved to other nodes");
        runtime::spawn(clear_dropped(core.clone(), self.clone(), range));
        self.changed.notify();
    }

    /// Ask a node of each range this core holds a replica of but the membership placed
    /// elsewhere whether the replica was removed: a removed replica may never hear the entry
    /// that removed it (its leader stops sending once it applied it).
    fn probe(self: &Rc<Self>, core: &Rc<Core>) {
        let leaving: Vec<RangeId> = self
            .replicas
            .borrow()
            .status()
            .into_iter()
            .filter(|s| !s.is_leader && !self.serves(s.range))
            .map(|s| s.range)
            .collect();
        let cluster = self.cluster();
        for range in leaving {
            // Each of the range's nodes: only its leader can tell.
            for to in cluster.target(range) {
                let Some(m) = cluster.membership.member(to) else { continue };
                let mut frame = Vec::new();
                wire::encode_special(wire::PROBE_RANGE, &range.to_le_bytes(), &mut frame);
                let link = self.link(core, to, cluster.map.core_of(range, m.cores));
                self.enqueue(&link, frame, Tag::None);
            }
        }
    }

    /// A peer's probe for `range`: answered "gone" when this replica leads the range and knows
    /// the peer's removal committed (`Replicas::has_removed`). (Any other replica's applied
    /// membership may be older than the peer's addition.)
    fn take_probe(&self, to: &Answers, from: NodeId, body: &[u8]) {
        let Some(range) = body.first_chunk::<4>() else { return };
        let range = RangeId::from_le_bytes(*range);
        if !self.replicas.borrow().has_removed(range, from) {
            return;
        }
        let mut frame = Vec::new();
        wire::encode_special(wire::GONE_RANGE, &range.to_le_bytes(), &mut frame);
        to.push(frame);
    }

    /// Whether this core serves `range` from its own store: it holds a replica and the
    /// membership places the range on this node. A replica of a range that moved elsewhere
    /// stays until it learns it was removed (`Apply::Membership`, or a peer's word: `probe`),
    /// taking no part in reads meanwhile: it hears no more of the range's writes.
    fn serves(&self, range: RangeId) -> bool {
        // This node's place is the range's (the target is the places' nodes).
        self.holds(range) && {
            let cluster = self.cluster();
            cluster.map.places(range, cluster.slot)
        }
    }

    /// Slices that see only the ranges this core serves, when its store holds rows of a range
    /// it is leaving; None when what the store holds is all served.
    fn served_only(&self, core: &Core) -> Option<crate::shard::ops::Sliced> {
        let ranges = self.core_ranges(core);
        if ranges.iter().all(|r| self.serves(*r) || !self.holds(*r)) {
            return None;
        }
        let map = self.cluster().map.clone();
        Some(crate::shard::ops::Sliced::within(
            ranges.into_iter().filter(|r| self.serves(*r)).map(|r| map.tokens(r)).collect(),
        ))
    }

    /// The ranges whose rows this core's store holds.
    fn core_ranges(&self, core: &Core) -> Vec<RangeId> {
        let map = &self.cluster().map;
        (0..map.ranges()).filter(|r| map.core_of(*r, core.shards) == self.core).collect()
    }

    /// A range DELETE: the keys it matches in this core's store, once every range here has
    /// applied what a read-index round confirmed, deleted by name through their ranges' Raft
    /// groups, a slice at a time (each slice's keys of one range one entry). As on a single
    /// node it is not atomic: a row written while it runs may stay or go. Slices applied and
    /// then one that failed, or whose outcome is unknown, make the whole OUTCOME_UNKNOWN.
    ///
    /// This core's ranges that this node holds no replica of are deleted by a node that holds
    /// them (`run_remote`); the counts add up, and one part's unknown outcome is the whole's.
    async fn delete_range(self: &Rc<Self>, core: &Rc<Core>, op: ShardOp, now_ms: u64) -> ShardReply {
        let (here, remote) = self.split(core, op.clone());
        let served: Vec<RangeId> = self.core_ranges(core).into_iter().filter(|r| self.serves(*r)).collect();
        let mut parts = Vec::new();
        if let Some(op) = here {
            let sliced = self.served_only(core).unwrap_or_default();
            parts.push(self.delete_in(core, op, now_ms, &served, sliced).await);
        }
        parts.extend(self.run_remote(core, remote, now_ms).await);
        join(&op, parts)
    }

    /// A range DELETE of the keys `sliced` sees of `ranges` (all held here).
    async fn delete_in(
        self: &Rc<Self>,
        core: &Rc<Core>,
        op: ShardOp,
        now_ms: u64,
        ranges: &[RangeId],
        mut sliced: crate::shard::ops::Sliced,
    ) -> ShardReply {
        if let Err(why) = self.confirm(ranges).await {
            return ShardReply::Unavailable(why);
        }
        let mut affected = 0;
        loop {
            let (keys, last) =
                sliced.next_doomed(&op, &core.store.borrow(), runtime::now_ms(), SLICE_ENTRIES, SLICE_WRITES);
            if !keys.is_empty() {
                let delete = ShardOp::Delete { keys, expect: None, returning: None };
                let begun = self.begin_write(core, delete, now_ms).await;
                match self.end_write(begun).await {
                    ShardReply::Affected(n) => affected += n,
                    _ if affected > 0 => return ShardReply::OutcomeUnknown,
                    other => return other,
                }
            }
            if last {
                return ShardReply::Affected(affected);
            }
            // The bounded pause: other requests on this core run between slices.
            runtime::yield_now().await;
        }
    }

    /// Wait until every one of `ranges` has applied what a read-index round confirmed: what
    /// this core's store holds is then at least every write acknowledged before the call.
    async fn confirm(&self, ranges: &[RangeId]) -> Result<(), String> {
        let deadline = runtime::now_ms() + CLUSTER_REQUEST_TIMEOUT_MS;
        let mut waits = Vec::with_capacity(ranges.len());
        for &range in ranges {
            self.reachable_leader(range, deadline).await?;
            let slot = Slot::new();
            self.queued_reads.borrow_mut().entry(range).or_default().push(Rc::downgrade(&slot));
            waits.push((range, slot));
        }
        self.ready_kick.notify();
        let confirmed = async {
            let mut indexes = Vec::with_capacity(waits.len());
            for (range, slot) in &waits {
                match slot.take().await {
                    Some(i) => indexes.push((*range, i)),
                    None => return Err(format!("range {range} has no leader now")),
                }
            }
            loop {
                let woken = self.changed.current();
                let caught_up = {
                    let replicas = self.replicas.borrow();
                    indexes.iter().all(|(r, i)| replicas.applied(*r).is_some_and(|a| a >= *i))
                };
                if caught_up {
                    return Ok(());
                }
                woken.wait().await;
            }
        };
        let left = deadline.saturating_sub(runtime::now_ms());
        match race(confirmed, sleep(Duration::from_millis(left))).await {
            Either::Left(r) => r,
            Either::Right(()) => {
                Err(format!("no majority confirmed the read within {CLUSTER_REQUEST_TIMEOUT_MS} ms"))
            }
        }
    }

    /// Until this core leads no range (or LEADER_HANDOVER_MS): each range it leads handed to
    /// the replica whose log matches the most of it among those whose link is up (raft-rs
    /// catches it up, then tells it to stand at once).
    async fn hand_over_leadership(&self) {
        let deadline = runtime::now_ms() + LEADER_HANDOVER_MS;
        let led_here =
            || -> Vec<_> { self.replicas.borrow().status().into_iter().filter(|s| s.is_leader).collect() };
        let led_at_start = led_here().len();
        loop {
            let woken = self.changed.current();
            let led = led_here();
            if led.is_empty() {
                break;
            }
            if self.ready_ended.get() {
                tracing::warn!(
                    shard = self.core,
                    ranges = led.len(),
                    "stopping while still leading, with no Raft messages leaving: the peers elect after a timeout"
                );
                return;
            }
            let left = deadline.saturating_sub(runtime::now_ms());
            if left == 0 {
                tracing::warn!(
                    shard = self.core,
                    ranges = led.len(),
                    "stopping while still leading: the peers elect after a timeout"
                );
                return;
            }
            for s in led {
                let to = s
                    .matched
                    .iter()
                    // Voters only: raft-rs does not hand the leadership to a learner.
                    .filter(|(id, _)| {
                        *id != self.cluster().this && s.voters.contains(id) && !self.unreachable(*id, s.range)
                    })
                    .max_by_key(|(_, m)| *m)
                    .map(|(id, _)| *id);
                if let Some(to) = to {
                    // Asked again each round: raft-rs ignores a transfer already under way.
                    let _ = self.replicas.borrow_mut().transfer_leadership(s.range, to);
                }
            }
            self.ready_kick.notify();
            let _ = race(woken.wait(), sleep(Duration::from_millis(left))).await;
        }
        if led_at_start > 0 {
            tracing::info!(
                shard = self.core,
                ranges = led_at_start,
                "handed over leadership before stopping"
            );
        }
    }

    /// One read-index request per range for the reads queued since the last cycle, and again
    /// for those asked under a leader or term that has changed since (raft-rs drops its pending
    /// requests then), or unanswered for READ_INDEX_RETRY_TICKS (a link dropped the request).
    /// A range with no leader known keeps its reads queued until one is (their own deadline
    /// bounds the wait); a range this core holds no replica of tells its reads so.
    fn ask_reads(&self) {
        let mut queued = std::mem::take(&mut *self.queued_reads.borrow_mut());
        let tick = self.ticks.get();
        let mut reads = self.reads.borrow_mut();
        {
            let replicas = self.replicas.borrow();
            reads.retain(|_, a| {
                a.waiters.retain(|w| w.strong_count() > 0);
                if a.waiters.is_empty() {
                    return false;
                }
                let lost =
                    replicas.leader_term(a.range) != Some(a.under) || tick >= a.tick + READ_INDEX_RETRY_TICKS;
                if lost {
                    queued.entry(a.range).or_default().append(&mut a.waiters);
                }
                !lost
            });
        }
        for (range, mut waiting) in queued {
            waiting.retain(|w| w.strong_count() > 0);
            if waiting.is_empty() {
                continue;
            }
            let under = self.replicas.borrow().leader_term(range);
            let asked = match under {
                None => Err(ProposeError::NotLeader { leader: None }),
                Some(_) => self.replicas.borrow_mut().read(range),
            };
            match (asked, under) {
                (Ok(id), Some(under)) => {
                    reads.insert(id, AskedRead { range, under, tick, waiters: waiting });
                }
                (Err(ProposeError::NotLeader { .. }), _) => {
                    self.queued_reads.borrow_mut().entry(range).or_default().extend(waiting);
                }
                _ => waiting.iter().filter_map(|w| w.upgrade()).for_each(|s| s.put(None)),
            }
        }
    }

    /// `velocityd cluster change`'s request: take `text` (a cluster file, without `self`) as
    /// this core's membership if it is a change of the current one (`Membership::change_to`).
    /// The file is written before the change is used, so a restart keeps it; from then on only
    /// the new membership's keys are accepted and its nodes linked to, and the ranges' leaders
    /// on this core reconcile their replicas with it (`reconcile`). Each core of a node is
    /// asked (each has its own peer port), and each writes the same file.
    async fn adopt(&self, core: &Core, text: &str) -> serde_json::Value {
        if self.adopting.replace(true) {
            return serde_json::json!({ "error": "another membership change is being adopted here: run it again" });
        }
        let answer = self.adopt_one(core, text).await;
        self.adopting.set(false);
        answer
    }

    /// `text` as a change of this core's membership, checked as `adopt` would (None: it says
    /// what this membership says). `cluster change` asks every node this first, and adopts
    /// only if none refuses, so that no node takes a change another refuses.
    fn prepare(
        &self,
        core: &Core,
        text: &str,
    ) -> Result<Option<(Cluster, crate::cluster::membership::Change)>, String> {
        let cluster = self.cluster();
        let (next, change) = cluster.membership.change_to(&Membership::parse(text)?)?;
        if change.is_empty() {
            return Ok(None);
        }
        let built = Cluster::build(next, &cluster.cert_pem, &cluster.key_pem)?;
        let back: Vec<RangeId> = built
            .ranges_of_core(self.core, core.shards)
            .into_iter()
            .filter(|r| self.gave_up.borrow().contains(r))
            .collect();
        if !back.is_empty() {
            return Err(format!(
                "the change places on node {} ranges it gave up before ({back:?}); a replica rebuilt under the same id \
                 could stand with a stale log in a membership its old self was in, so a node does not take a range back \
                 (until each replica has a Raft id of its own: docs/cluster.md)",
                cluster.this
            ));
        }
        Ok(Some((built, change)))
    }

    async fn adopt_one(&self, core: &Core, text: &str) -> serde_json::Value {
        let (built, change) = match self.prepare(core, text) {
            Ok(Some(p)) => p,
            Ok(None) => return serde_json::json!({ "adopted": false }),
            Err(e) => return serde_json::json!({ "error": e }),
        };
        let (dir, rendered, id) = (core.shared.config.data_dir.clone(), built.membership.render(), core.id);
        let written = runtime::spawn_blocking(move || -> Result<(), String> {
            let path = cluster_file(&dir);
            let tmp = path.with_extension(format!("tmp{id}"));
            std::fs::write(&tmp, &rendered).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
            std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(|e| e.to_string())?;
            std::fs::rename(&tmp, &path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            super::durable::sync_dir(&dir)
        })
        .await;
        if let Err(e) = written {
            return serde_json::json!({ "error": e });
        }
        tracing::info!(shard = self.core, ?change, "membership changed");
        *self.cluster.borrow_mut() = Rc::new(built);
        // Links to nodes that left end on their next look (`run_link`), their peers' on the
        // next read (`serve_peer`).
        for link in self.links.borrow().values() {
            link.kick.notify();
        }
        self.changed.notify();
        serde_json::json!({ "adopted": true })
    }

    /// Each range this core leads takes its next step towards the membership's replicas; and
    /// a range the membership places on this core that has no replica here gets one.
    fn reconcile(&self, core: &Core) {
        let cluster = self.cluster();
        for r in cluster.ranges_of_core(self.core, core.shards) {
            if !self.holds(r) && !self.gave_up.borrow().contains(&r) {
                match self.replicas.borrow_mut().add(r, cluster.new_log(r)) {
                    Ok(()) => tracing::info!(
                        shard = self.core,
                        range = r,
                        "replica made: the membership places the range here"
                    ),
                    Err(e) => {
                        tracing::warn!(shard = self.core, range = r, error = %e, "cannot make a replica")
                    }
                }
            }
        }
        let mut replicas = self.replicas.borrow_mut();
        let newest = cluster.membership.highest_id;
        let led: Vec<RangeId> = replicas
            .status()
            .into_iter()
            // A range whose membership names a node above every id this node knows took in a
            // node by a change this node missed: reconciling it to this node's older file would
            // undo that change (`cluster change` again brings this node up to date).
            .filter(|s| {
                s.is_leader
                    && s.voters.iter().chain(&s.voters_outgoing).chain(&s.learners).all(|n| *n <= newest)
            })
            .map(|s| s.range)
            .collect();
        for range in led {
            if let Some(step) = replicas.reconcile(range, &cluster.target(range), LEARNER_CAUGHT_UP_ENTRIES) {
                tracing::info!(shard = self.core, range, step, "membership");
            }
        }
    }

    /// What `cluster status` is told of this core (JSON).
    fn status_json(&self) -> serde_json::Value {
        let ranges: Vec<serde_json::Value> = self
            .replicas
            .borrow()
            .status()
            .into_iter()
            .map(|s| {
                serde_json::json!({
                    "range": s.range,
                    "leader": s.leader,
                    "is_leader": s.is_leader,
                    "term": s.term,
                    "commit": s.commit,
                    "applied": s.applied,
                    "snapshot_index": s.snapshot_index,
                    "matched": s.matched,
                    "voters": s.voters,
                    "voters_outgoing": s.voters_outgoing,
                    "learners": s.learners,
                })
            })
            .collect();
        let links: Vec<serde_json::Value> = self
            .links
            .borrow()
            .iter()
            .map(|((node, core), l)| {
                serde_json::json!({"node": node, "core": core, "up": l.up.get(), "dropped": l.dropped.get()})
            })
            .collect();
        serde_json::json!({"node": self.cluster().this, "core": self.core, "ranges": ranges, "links": links})
    }
}

impl Replicated for NodeCore {
    fn execute(
        self: Rc<Self>,
        core: Rc<Core>,
        ops: Vec<ShardOp>,
        now_ms: u64,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Vec<ShardReply>>>> {
        Box::pin(self.execute_all(core, ops, now_ms))
    }

    /// The core's snapshot starts: each replica's log is compacted to what it applied (the rows
    /// the snapshot copies next), and the writes that make each log on its own go first into
    /// the new log, so that the older logs can go once the snapshot is durable.
    fn hand_over(self: Rc<Self>) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> {
        Box::pin(async move { self.hand_over_leadership().await })
    }

    fn ranges_status(&self) -> (u64, Vec<crate::cluster::replicas::RangeStatus>) {
        (self.cluster().this, self.replicas.borrow().status())
    }

    fn checkpoint_put_off(&self) -> bool {
        self.replicas.borrow().rows_pending()
    }

    fn checkpoint(&self, wal: &Wal) -> Result<bool, String> {
        // As the ready loop: a log that lost a write takes no more Raft records.
        if wal.storage_errors.get() > 0 {
            return Err("a log write failed: this core's Raft log takes nothing more".into());
        }
        // A checkpoint stands for the store's rows: with a leader's snapshot half in, it would
        // stand for rows the store does not hold, and drop the log's copy of them.
        if self.checkpoint_put_off() {
            return Ok(false);
        }
        let all = self.replicas.borrow_mut().checkpoint();
        for (range, writes) in all {
            for w in &writes {
                for payload in encode_records(range, w, WAL_RECORD_BYTES_MAX)? {
                    wal.log(|redo, _undo| redo.extend_from_slice(&payload));
                }
            }
        }
        let gave_up: Vec<RangeId> = self.gave_up.borrow().iter().copied().collect();
        log_dropped(wal, &gave_up);
        Ok(true)
    }
}

/// Which "file" a range's rows in transit are, for the snapshot format's framing: never
/// encrypted (the link is TLS, and on disk they sit inside the log's sealed records).
/// Visit the live rows of `range` in `store` (a core's store holds several ranges, by token).
fn each_row_of(
    store: &Store,
    map: &RangeMap,
    range: RangeId,
    now_ms: u64,
    mut visit: impl FnMut(crate::store::EntryView<'_>),
) {
    store.scan(&KeyRange::all(), false, now_ms, |e| {
        if map.range_of_key(e.key) == range {
            visit(e);
        }
        std::ops::ControlFlow::Continue(())
    });
}

/// The keys a point write may change.
fn written_keys(op: &ShardOp) -> Vec<&[u8]> {
    match op {
        ShardOp::Put { rows, .. } => rows.iter().map(|r| &r.key[..]).collect(),
        ShardOp::Update { key, .. } => vec![&key[..]],
        ShardOp::Delete { keys, .. } => keys.iter().map(|k| &k[..]).collect(),
        _ => Vec::new(),
    }
}

/// Every row of `range` out of `store`.
fn clear_rows(store: &mut Store, map: &RangeMap, range: RangeId, now_ms: u64) -> usize {
    let mut old = Vec::new();
    each_row_of(store, map, range, now_ms, |e| old.push(e.key.to_vec()));
    for key in &old {
        store.delete(key, now_ms);
    }
    old.len()
}

/// `items` grouped by the range of each one's key, in range order: each range's items with
/// their places among all of them.
fn by_range<T>(
    map: &RangeMap,
    items: Vec<T>,
    key: impl Fn(&T) -> &[u8],
) -> impl Iterator<Item = (RangeId, Vec<usize>, Vec<T>)> {
    let mut by: BTreeMap<RangeId, (Vec<usize>, Vec<T>)> = BTreeMap::new();
    for (i, item) in items.into_iter().enumerate() {
        let e = by.entry(map.range_of_key(key(&item))).or_default();
        e.0.push(i);
        e.1.push(item);
    }
    by.into_iter().map(|(range, (idx, items))| (range, idx, items))
}

/// A Scan or Count through `sliced` (which may see only some ranges' keys), a slice at a time.
async fn read_sliced(
    core: &Core,
    op: &ShardOp,
    now_ms: u64,
    mut sliced: crate::shard::ops::Sliced,
) -> ShardReply {
    loop {
        let step = sliced.read_step(op, &core.store.borrow(), now_ms, SLICE_ENTRIES);
        if let Some(r) = step {
            return r;
        }
        runtime::yield_now().await;
    }
}

/// The parts of `op` served by different cores or nodes, as one reply: the first refusal if
/// any part was refused (an unknown outcome before it, for a range DELETE some of whose parts
/// applied), else the rows put in order (and cut to a Scan's limit), the counts added up.
fn join(op: &ShardOp, parts: Vec<ShardReply>) -> ShardReply {
    let applied_some = parts.iter().any(|r| matches!(r, ShardReply::Affected(n) if *n > 0));
    if let Some(bad) = parts.iter().find(|r| {
        !matches!(
            r,
            ShardReply::Rows(_) | ShardReply::Count(_) | ShardReply::Affected(_) | ShardReply::Entry(_)
        )
    }) {
        if op.is_write() && applied_some {
            return ShardReply::OutcomeUnknown;
        }
        return bad.clone();
    }
    match op {
        ShardOp::Get { .. } => parts.into_iter().next().unwrap_or(ShardReply::Entry(None)),
        ShardOp::Count { .. } => {
            ShardReply::Count(parts.iter().map(|r| if let ShardReply::Count(n) = r { *n } else { 0 }).sum())
        }
        ShardOp::DeleteRange { .. } => ShardReply::Affected(
            parts.iter().map(|r| if let ShardReply::Affected(n) = r { *n } else { 0 }).sum(),
        ),
        _ => {
            let mut rows: Vec<crate::shard::RowOut> = parts
                .into_iter()
                .flat_map(|r| if let ShardReply::Rows(v) = r { v } else { Vec::new() })
                .collect();
            if let ShardOp::Scan { desc, limit, .. } = op {
                if *desc {
                    rows.sort_unstable_by(|a, b| b.key.cmp(&a.key));
                } else {
                    rows.sort_unstable_by(|a, b| a.key.cmp(&b.key));
                }
                rows.truncate((*limit).min(usize::MAX as u64) as usize);
            }
            ShardReply::Rows(rows)
        }
    }
}

/// One write's reply from its ranges' outcomes (`idx`: each part's rows' places in the whole).
/// A write that some ranges applied and others did not, or may not have, is OUTCOME_UNKNOWN
/// as a whole: each range's part is atomic, the parts are not (docs/cluster.md).
fn combine(parts: Vec<(Vec<usize>, Outcome)>) -> ShardReply {
    let (mut affected, mut rows, mut returned) = (0, Vec::new(), false);
    let (mut unknown, mut not_applied, mut applied) = (false, None, false);
    let (mut storage, mut full, mut invalid) = (false, false, None);
    for (idx, o) in parts {
        match o {
            Outcome::Unknown => unknown = true,
            Outcome::NotApplied(why) => not_applied = Some(why),
            Outcome::Applied(r) => {
                applied = true;
                match r {
                    ShardReply::Affected(n) => affected += n,
                    ShardReply::Returned { affected: n, rows: rs } => {
                        returned = true;
                        affected += n;
                        rows.extend(
                            rs.into_iter().filter_map(|(i, c)| idx.get(i as usize).map(|at| (*at as u32, c))),
                        );
                    }
                    ShardReply::Full { affected: n } => {
                        full = true;
                        affected += n;
                    }
                    ShardReply::Invalid(why) => invalid = Some(why),
                    ShardReply::StorageError => storage = true,
                    other => not_applied = Some(format!("a write answered {other:?}")),
                }
            }
        }
    }
    if unknown || (not_applied.is_some() && applied) {
        return ShardReply::OutcomeUnknown;
    }
    if let Some(why) = not_applied {
        return ShardReply::Unavailable(why);
    }
    if storage {
        return ShardReply::StorageError;
    }
    if full {
        return ShardReply::Full { affected };
    }
    if let Some(why) = invalid {
        return ShardReply::Invalid(why);
    }
    if returned {
        rows.sort_by_key(|(i, _)| *i);
        return ShardReply::Returned { affected, rows };
    }
    ShardReply::Affected(affected)
}

/// Start the core's cluster tasks: its clock, its ready loop, the wait for durability, and
/// the listener for its peers.
pub fn start(core: &Rc<Core>, node: &Rc<NodeCore>, wal: Rc<Wal>, listener: std::net::TcpListener) {
    runtime::spawn(tick_loop(core.clone(), node.clone()));
    runtime::spawn(ready_loop(core.clone(), node.clone(), wal));
    runtime::spawn(persist_loop(core.clone(), node.clone()));
    runtime::spawn(accept_loop(core.clone(), node.clone(), runtime::listener(listener)));
}

async fn tick_loop(core: Rc<Core>, node: Rc<NodeCore>) {
    while !core.shutdown.is_fired() {
        let _ = race(sleep(Duration::from_millis(RAFT_TICK_MS)), core.shutdown.wait()).await;
        node.replicas.borrow_mut().tick();
        node.reconcile(&core);
        node.ticks.set(node.ticks.get() + 1);
        if node.ticks.get() % REPLICA_PROBE_TICKS == 0 {
            node.probe(&core);
        }
        node.ready_kick.notify();
        node.changed.notify();
    }
}

async fn ready_loop(core: Rc<Core>, node: Rc<NodeCore>, wal: Rc<Wal>) {
    loop {
        let woken = node.ready_kick.current();
        if core.shutdown.is_fired() {
            return;
        }
        // A log that lost a write takes no more Raft records (the cycle below runs without an
        // await, so this holds for all it appends): the replicas' state in memory has moved past
        // what the log holds, and a record made durable after the lost ones would leave a log
        // no replica ever had — seen: a hard state committing an entry the failed write took
        // with it, which raft-rs refused at the next start. The persist loop stops the node.
        if wal.storage_errors.get() > 0 {
            node.ready_ended.set(true);
            stop_node(&core, "a log write failed: this core's Raft log takes nothing more");
            return;
        }
        let gone: Vec<RangeId> = std::mem::take(&mut *node.gone.borrow_mut());
        let gone: Vec<RangeId> = gone.into_iter().filter(|r| node.holds(*r) && !node.serves(*r)).collect();
        for r in &gone {
            node.drop_replica(&core, *r, "a node of the range says its membership names this node no more");
        }
        log_dropped(&wal, &gone);
        node.ask_reads();
        node.propose_batches();
        node.offer_snapshots(&core);
        let batch = node.replicas.borrow_mut().ready();
        if batch.number == 0 {
            let _ = race(woken.wait(), core.shutdown.wait()).await;
            continue;
        }
        if let Err(e) = run_batch(&core, &node, &wal, batch) {
            node.ready_ended.set(true);
            stop_node(&core, &e);
            return;
        }
    }
}

/// One cycle: messages out, committed entries applied, the log writes appended to the core's
/// log (their group is what the cycle's promises wait for).
fn run_batch(core: &Rc<Core>, node: &Rc<NodeCore>, wal: &Wal, batch: Batch) -> Result<(), String> {
    let Batch { number, send, apply: applies, lost, unknown, reads, writes, must_sync } = batch;
    for env in send {
        node.send(core, env);
    }
    for a in applies {
        match a {
            Apply::Entry { range, index, data, proposal, .. } => {
                // A new leader's first entry is empty: it commits the entries of earlier terms.
                let mut replies = Vec::new();
                if !data.is_empty() {
                    let ops =
                        decode_entries(&data).map_err(|e| format!("range {range}, entry {index}: {e}"))?;
                    let mut store = core.store.borrow_mut();
                    let mut capture = wal.capture.borrow_mut();
                    let mut dumps = node.dumps.borrow_mut();
                    for (at_ms, op) in ops {
                        // A snapshot copy under way must hold these keys as they were at its
                        // checkpoint: a restart applies this entry again on top of it. So must
                        // a copy of this range for a follower, as they were at its index.
                        if let Some(c) = capture.as_mut() {
                            for key in written_keys(&op) {
                                c.keep(&store, key, at_ms);
                            }
                        }
                        if let Some(d) = dumps.get_mut(&range) {
                            for key in written_keys(&op) {
                                d.keep(&store, key);
                            }
                        }
                        replies.push(Outcome::Applied(apply(&mut store, &op, at_ms, &mut NoLog)));
                    }
                }
                if let Some(id) = proposal {
                    if replies.is_empty() {
                        node.settle(id, Outcome::NotApplied("an empty entry took its place".into()));
                    } else {
                        node.settle_each(id, replies);
                    }
                }
            }
            Apply::Snapshot { range, index, data } => {
                // Raft checked it follows; rows that do not read are the leader's damage, and a
                // replica that cannot take what its majority holds stops. A copy of the old
                // rows for a follower is of no use now.
                node.dumps.borrow_mut().remove(&range);
                let swap = RowSwap::new(range, &node.cluster().map, &data)
                    .map_err(|e| format!("range {range}: the snapshot at index {index}: {e}"))?;
                let live = Rc::new(Cell::new(true));
                node.swapping.borrow_mut().insert(range, live.clone());
                runtime::spawn(swap_rows(core.clone(), node.clone(), index, swap, live));
            }
            Apply::Membership { range, index, voters, voters_outgoing, learners } => {
                tracing::info!(
                    shard = core.id,
                    range,
                    index,
                    ?voters,
                    ?voters_outgoing,
                    ?learners,
                    "range membership applied"
                );
                // A replica leaves only on its leader's word (`probe`): this entry may be an old
                // one a replica made later replays from the range's first membership.
                let cluster = node.cluster();
                let newest = cluster.membership.members.iter().map(|m| m.id).max().unwrap_or(0);
                if let Some(n) = voters.iter().chain(&learners).find(|n| **n > newest) {
                    // Ids only grow, so a node above every id this node knows came in by a
                    // `cluster change` this node missed (it was down): it neither trusts nor
                    // reaches a replica its ranges now have. (Below: a node replaced since, as
                    // a log replayed from its start names.)
                    tracing::warn!(
                        shard = core.id,
                        range,
                        node = n,
                        "a replica of this range is on a node this node's cluster file does not name: run `velocityd cluster change` again"
                    );
                }
            }
        }
    }
    for id in lost {
        node.settle(id, Outcome::NotApplied("a new leader's log replaced it".into()));
    }
    for id in unknown {
        node.settle(id, Outcome::Unknown);
    }
    for (_, id, index) in reads {
        // A request duplicated on the way is answered twice; the first answer serves.
        let waiting = node.reads.borrow_mut().remove(&id).map(|a| a.waiters);
        for slot in waiting.into_iter().flatten().filter_map(|w| w.upgrade()) {
            slot.put(Some(index));
        }
    }
    node.changed.notify();
    let mut group = None;
    for (range, w) in &writes {
        for payload in encode_records(*range, w, WAL_RECORD_BYTES_MAX)? {
            let ((), g, appended) = wal.log(|redo, _undo| redo.extend_from_slice(&payload));
            if appended {
                group = Some(g);
            }
        }
    }
    // Appended records settle in order, so the cycle waits for its last group only; a cycle
    // whose promises need no sync (a new commit index alone) still waits its turn.
    let _ = must_sync;
    node.persisting.borrow_mut().push_back((number, group));
    node.persist_kick.notify();
    Ok(())
}

/// The log's word that this core dropped `ranges` (`encode_dropped`): the group to wait for.
fn log_dropped(wal: &Wal, ranges: &[RangeId]) -> Option<Rc<Group>> {
    let mut group = None;
    for range in ranges {
        let payload = encode_dropped(*range);
        let ((), g, appended) = wal.log(|redo, _undo| redo.extend_from_slice(&payload));
        if appended {
            group = Some(g);
        }
    }
    group
}

/// Copy the rows of `range`'s snapshot for a follower a slice of SLICE_ENTRIES at a time, the
/// core free for its other work between slices, then offer it to raft-rs. Ends early when the
/// copy was dropped (the replica went, or installed a snapshot itself).
async fn dump_snapshot(core: Rc<Core>, node: Rc<NodeCore>, range: RangeId) {
    let map = node.cluster().map.clone();
    loop {
        let done = {
            let mut dumps = node.dumps.borrow_mut();
            let Some(d) = dumps.get_mut(&range) else { return };
            d.step(&core.store.borrow(), &map, SLICE_ENTRIES)
        };
        if done {
            break;
        }
        runtime::yield_now().await;
        if core.shutdown.is_fired() {
            node.dumps.borrow_mut().remove(&range);
            return;
        }
    }
    let Some(d) = node.dumps.borrow_mut().remove(&range) else { return };
    let point = (d.index, d.term, d.conf_state.clone());
    let rows = d.finish();
    let bytes = rows.len();
    let offered = node.replicas.borrow_mut().offer_snapshot_at(range, point.clone(), rows);
    match offered {
        Ok(()) => {
            tracing::info!(shard = core.id, range, index = point.0, bytes, "snapshot made for a follower")
        }
        Err(e) => tracing::warn!(shard = core.id, range, error = %e, "cannot make a snapshot"),
    }
    node.ready_kick.notify();
}

/// Delete the rows of `range`, given up, a slice of SLICE_ENTRIES of the store at a time, the
/// core free between slices. Meanwhile reads pass them over (`served_only`: the range is not
/// served here), and a restart clears what is left (its `Dropped` record).
async fn clear_dropped(core: Rc<Core>, node: Rc<NodeCore>, range: RangeId) {
    let map = node.cluster().map.clone();
    let mut rest = Some(KeyRange::all());
    let mut rows = 0;
    while let Some(r) = rest.take() {
        let now_ms = runtime::now_ms();
        let mut keys = Vec::new();
        rest = core.store.borrow().scan_slice(&r, false, now_ms, SLICE_ENTRIES, |e| {
            if map.range_of_key(e.key) == range {
                keys.push(e.key.to_vec());
            }
            std::ops::ControlFlow::Continue(())
        });
        {
            let mut store = core.store.borrow_mut();
            for key in &keys {
                store.delete(key, now_ms);
            }
        }
        rows += keys.len();
        if rest.is_some() {
            runtime::yield_now().await;
        }
    }
    tracing::info!(shard = core.id, range, rows, "a dropped replica's rows deleted");
}

/// A leader's snapshot into the store a slice at a time (other requests on this core run
/// between slices), then the replica, frozen meanwhile, goes on from it. The rows are in the
/// core's log too (durable with the cycle that installed them), which a restart takes them from.
async fn swap_rows(core: Rc<Core>, node: Rc<NodeCore>, index: u64, mut swap: RowSwap, live: Rc<Cell<bool>>) {
    let map = node.cluster().map.clone();
    let range = swap.range;
    loop {
        // Dropped meanwhile: its rows go by `clear_dropped`, which starts after this slice.
        if !live.get() || core.shutdown.is_fired() {
            return;
        }
        if swap.step(&mut core.store.borrow_mut(), &map, runtime::now_ms(), SLICE_ENTRIES) {
            break;
        }
        runtime::yield_now().await;
    }
    node.swapping.borrow_mut().remove(&range);
    let send = node.replicas.borrow_mut().rows_installed(range);
    for env in send {
        node.send(&core, env);
    }
    tracing::info!(
        shard = core.id,
        range,
        index,
        rows = swap.rows_total,
        "snapshot installed from the leader"
    );
    node.ready_kick.notify();
    node.changed.notify();
}

/// Hand each cycle back to Raft, in order, once what it wrote is durable: the votes and append
/// acknowledgements that waited for it leave now.
async fn persist_loop(core: Rc<Core>, node: Rc<NodeCore>) {
    loop {
        let woken = node.persist_kick.current();
        let next = node.persisting.borrow_mut().pop_front();
        let Some((number, group)) = next else {
            if core.shutdown.is_fired() {
                return;
            }
            let _ = race(woken.wait(), core.shutdown.wait()).await;
            continue;
        };
        if let Some(g) = group {
            if !g.wait().await {
                stop_node(&core, "a Raft log write could not be made durable");
                return;
            }
        }
        let after = node.replicas.borrow_mut().persisted(number);
        for env in after {
            node.send(&core, env);
        }
        node.ready_kick.notify();
    }
}

/// A node that cannot keep what it promised must not go on promising: it stops, as etcd does,
/// and its peers elect around it.
fn stop_node(core: &Core, why: &str) {
    tracing::error!(shard = core.id, error = why, "the cluster node cannot go on; shutting down");
    core.shared.shutdown.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Connect to `addr` and finish a TLS handshake within the handshake timeout.
async fn connect(addr: std::net::SocketAddr, tls: Arc<rustls::ClientConfig>) -> Result<Transport, String> {
    let dial = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        let conn = rustls::ClientConnection::new(tls, crate::security::tls::server_name("velocity"))
            .map_err(|e| e.to_string())?;
        let mut t = Transport::Tls { tcp, tls: Box::new(conn.into()), pending: Vec::new() };
        t.handshake().await.map_err(|e| e.to_string())?;
        Ok(t)
    };
    match race(dial, sleep(Duration::from_millis(HANDSHAKE_TIMEOUT_MS))).await {
        Either::Left(r) => r,
        Either::Right(()) => Err("timed out".into()),
    }
}

/// Keep a link to one peer core up and drain its queue into it; while it is down, messages
/// are dropped (Raft sends again), so a dead peer costs no memory.
async fn run_link(core: Rc<Core>, node: Rc<NodeCore>, (to, peer_core): (NodeId, usize), link: Rc<Link>) {
    let mut failures = 0u64;
    while !core.shutdown.is_fired() {
        let cluster = node.cluster();
        let (Some(member), Some(tls)) = (cluster.membership.member(to), cluster.links_tls.get(&to)) else {
            // The node left the membership: its link goes, and what was queued for it.
            node.links.borrow_mut().remove(&(to, peer_core));
            discard(&node, &link);
            return;
        };
        let (addr, tls) = (member.peer_addr(peer_core), tls.clone());
        drop(cluster);
        match connect(addr, tls).await.and_then(|t| Duplex::new(t).ok_or_else(|| "not TLS".to_string())) {
            Ok(d) => {
                if failures > 0 {
                    tracing::info!(shard = core.id, node = to, core = peer_core, "link to peer up");
                }
                failures = 0;
                link.up.set(true);
                link.down.set(false);
                link.broken.set(None);
                node.changed.notify();
                // The reader stops only at a read; the writer, at its own turn (never amid a
                // frame, a snapshot's report or the record of what it sent).
                let reading = async {
                    let why = read_answers(&node, &d).await;
                    link.broken.set(Some(why));
                    link.kick.notify();
                    std::future::pending::<&'static str>().await
                };
                let (Either::Left(why) | Either::Right(why)) =
                    race(drain_link(&core, &node, &link, &d, to), reading).await;
                link.up.set(false);
                for id in std::mem::take(&mut *link.sent.borrow_mut()) {
                    if let Some(slot) = node.forwards.borrow_mut().remove(&id) {
                        slot.put(Outcome::Unknown);
                    }
                }
                tracing::info!(shard = core.id, node = to, core = peer_core, why, "link to peer down");
                // A peer that stopped reading does not hold the link up past this.
                let _ = race(d.close(), sleep(Duration::from_millis(HANDSHAKE_TIMEOUT_MS))).await;
            }
            Err(e) => {
                // Once, then every 50th attempt: a peer down for long is not a log line a tick.
                if failures % 50 == 0 {
                    tracing::warn!(shard = core.id, node = to, %addr, error = %e, "cannot reach peer");
                }
                failures += 1;
                link.down.set(true);
                node.changed.notify();
            }
        }
        discard(&node, &link);
        let _ = race(sleep(Duration::from_millis(PEER_RECONNECT_MS)), core.shutdown.wait()).await;
    }
}

/// Messages queued for a link that is down: dropped, and snapshots reported undelivered.
fn discard(node: &NodeCore, link: &Link) {
    let dropped: Vec<_> = link.queue.borrow_mut().drain(..).collect();
    link.queued_bytes.set(0);
    if let Some(o) = link.snapshot.borrow_mut().take() {
        node.replicas.borrow_mut().report_snapshot(o.range, o.to, false);
    }
    for (_, tag) in dropped {
        link.dropped.set(link.dropped.get() + 1);
        match tag {
            Tag::None => {}
            Tag::Forward(id) => {
                if let Some(slot) = node.forwards.borrow_mut().remove(&id) {
                    slot.put(Outcome::NotApplied("the link to the range's leader is down".into()));
                }
            }
        }
    }
}

async fn drain_link(
    core: &Rc<Core>,
    node: &Rc<NodeCore>,
    link: &Link,
    d: &Duplex,
    to: NodeId,
) -> &'static str {
    let mut out = Vec::new();
    loop {
        let woken = link.kick.current();
        if node.cluster().membership.member(to).is_none() {
            return "the node left the membership";
        }
        if let Some(why) = link.broken.get() {
            return why;
        }
        let mut snapshots = Vec::new();
        let mut forwards = Vec::new();
        {
            let mut q = link.queue.borrow_mut();
            while let Some((frame, tag)) = q.pop_front() {
                out.extend_from_slice(&frame);
                if let Tag::Forward(id) = tag {
                    forwards.push(id);
                }
            }
        }
        link.queued_bytes.set(0);
        let finished = {
            let mut s = link.snapshot.borrow_mut();
            match s.as_mut().map(|o| o.pieces.pop_front()) {
                None => false,
                Some(Some(piece)) => {
                    out.extend_from_slice(&piece);
                    false
                }
                Some(None) => {
                    let o = s.as_ref().expect("matched");
                    out.extend_from_slice(&o.message);
                    snapshots.push((o.range, o.to));
                    true
                }
            }
        };
        if finished {
            *link.snapshot.borrow_mut() = None;
        }
        if out.is_empty() {
            if core.shutdown.is_fired() {
                return "shutting down";
            }
            let _ = race(woken.wait(), core.shutdown.wait()).await;
            continue;
        }
        {
            // Before the write: an answer may come back while the write is still going.
            let mut sent = link.sent.borrow_mut();
            sent.extend(forwards);
            // Answered ones go now and then, so the list stays the size of what is in flight.
            if sent.len() > 64 && sent.len() > 2 * node.forwards.borrow().len() {
                let waiting = node.forwards.borrow();
                sent.retain(|id| waiting.contains_key(id));
            }
        }
        let ok = d.write_all(&out).await.is_ok();
        out.clear();
        for (range, to) in snapshots {
            node.replicas.borrow_mut().report_snapshot(range, to, ok);
        }
        if !ok {
            return "write failed";
        }
    }
}

/// Read the answers a peer writes back on a link this core opened: forwarded requests'
/// outcomes and probes' "gone". Ends when the peer closes the connection or sends anything else.
async fn read_answers(node: &NodeCore, d: &Duplex) -> &'static str {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        match d.read(&mut chunk).await {
            Ok(0) => return "closed by peer",
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => return "read failed",
        }
        let mut used = 0;
        loop {
            match wire::decode_frame(&buf[used..]) {
                Ok(None) => break,
                Err(_) => return "a malformed answer",
                Ok(Some((Frame::Outcome(body), n))) => {
                    used += n;
                    let Ok((id, o)) = decode_outcome(&body) else { return "a malformed outcome" };
                    if let Some(slot) = node.forwards.borrow_mut().remove(&id) {
                        slot.put(o);
                    }
                }
                Ok(Some((Frame::Gone(body), n))) => {
                    used += n;
                    if let Some(range) = body.first_chunk::<4>() {
                        node.gone.borrow_mut().push(RangeId::from_le_bytes(*range));
                        node.ready_kick.notify();
                    }
                }
                Ok(Some(_)) => return "a request where an answer belongs",
            }
        }
        buf.drain(..used);
    }
}

async fn accept_loop(core: Rc<Core>, node: Rc<NodeCore>, listener: runtime::TcpListener) {
    loop {
        let stream = match race(listener.accept(), core.shutdown.wait()).await {
            Either::Right(()) => return,
            Either::Left(Ok(s)) => s,
            Either::Left(Err(e)) => {
                tracing::warn!(error = %e, "peer accept failed");
                let _ = race(sleep(Duration::from_millis(PEER_RECONNECT_MS)), core.shutdown.wait()).await;
                continue;
            }
        };
        if node.inbound.get() >= PEER_CONNECTIONS_MAX {
            continue;
        }
        node.inbound.set(node.inbound.get() + 1);
        let (c, n) = (core.clone(), node.clone());
        runtime::spawn(async move {
            let why = serve_peer(&c, &n, stream).await;
            tracing::debug!(shard = c.id, why, "peer connection closed");
            n.inbound.set(n.inbound.get() - 1);
        });
    }
}

/// Read a peer's frames: Raft messages are stepped into this core's replicas; what asks for an
/// answer (a forwarded write or request, a probe, a control request) is answered on the same
/// connection, by a writer beside the reader.
async fn serve_peer(core: &Rc<Core>, node: &Rc<NodeCore>, tcp: TcpStream) -> String {
    let _ = tcp.set_nodelay(true);
    let conn = match rustls::ServerConnection::new(node.cluster().server_tls.clone()) {
        Ok(c) => c,
        Err(e) => return e.to_string(),
    };
    let mut t = Transport::Tls { tcp, tls: Box::new(conn.into()), pending: Vec::new() };
    match race(t.handshake(), sleep(Duration::from_millis(HANDSHAKE_TIMEOUT_MS))).await {
        Either::Left(Ok(())) => {}
        Either::Left(Err(e)) => return format!("handshake: {e}"),
        Either::Right(()) => return "handshake timed out".into(),
    }
    let from = match &t {
        Transport::Tls { tls, .. } => crate::security::tls::peer_fingerprint(tls),
        Transport::Plain(_) => None,
    };
    // The verifier let only pinned keys through; this is who holds the one presented.
    let Some((peer, fp)) =
        from.and_then(|fp| node.cluster().membership.by_fingerprint(&fp).map(|m| (m.id, fp)))
    else {
        return "no pinned key".into();
    };
    let Some(d) = Duplex::new(t) else { return "not TLS".into() };
    let answers = Rc::new(Answers::default());
    let writer_done = Rc::new(LocalSignal::default());
    let writing = async {
        let why = write_answers(&d, &answers).await;
        tracing::debug!(shard = core.id, node = peer, why, "peer connection's writer stopped");
        writer_done.fire();
        std::future::pending::<String>().await
    };
    let (Either::Left(why) | Either::Right(why)) =
        race(read_peer(core, node, &d, &answers, &writer_done, peer, &fp), writing).await;
    answers.closed.set(true);
    answers.queue.borrow_mut().clear();
    // A peer that stopped reading does not hold the connection's slot past this.
    let _ = race(d.close(), sleep(Duration::from_millis(HANDSHAKE_TIMEOUT_MS))).await;
    why
}

/// Write a peer connection's answers as they come, until a write fails.
async fn write_answers(d: &Duplex, answers: &Answers) -> String {
    let mut out = Vec::new();
    loop {
        let woken = answers.kick.current();
        if answers.closed.get() {
            return "its peer does not read its answers".into();
        }
        answers.queue.borrow_mut().drain(..).for_each(|f| out.extend_from_slice(&f));
        answers.bytes.set(0);
        if out.is_empty() {
            woken.wait().await;
            continue;
        }
        if let Err(e) = d.write_all(&out).await {
            return format!("writing answers: {e}");
        }
        out.clear();
    }
}

/// The reading half of `serve_peer`: stops only at a read (never amid a control request being
/// carried out), at shutdown, or when the writer failed.
async fn read_peer(
    core: &Rc<Core>,
    node: &Rc<NodeCore>,
    d: &Duplex,
    answers: &Rc<Answers>,
    writer_done: &Rc<LocalSignal>,
    peer: NodeId,
    fp: &[u8; 32],
) -> String {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    let mut assembly = wire::Assembly::default();
    loop {
        let n = match race(d.read(&mut chunk), race(core.shutdown.wait(), writer_done.wait())).await {
            Either::Right(Either::Left(())) => return "shutting down".into(),
            Either::Right(Either::Right(())) => return "its answers could not be written".into(),
            Either::Left(Ok(0)) => return "closed by peer".into(),
            Either::Left(Ok(n)) => n,
            Either::Left(Err(e)) => return e.to_string(),
        };
        buf.extend_from_slice(&chunk[..n]);
        // A membership change since the handshake may have removed its key.
        if node.cluster().membership.by_fingerprint(fp).is_none() {
            return "its key left the membership".into();
        }
        let mut used = 0;
        let mut stepped = false;
        loop {
            match wire::decode_frame(&buf[used..]) {
                Ok(None) => break,
                Err(e) => return e.to_string(),
                Ok(Some((Frame::Raft(mut env), n))) => {
                    used += n;
                    // A node speaks for itself only: a message claiming another sender is
                    // dropped, so one node's key cannot vote or append as another.
                    if env.msg.from != peer {
                        tracing::warn!(
                            shard = core.id,
                            node = peer,
                            claimed = env.msg.from,
                            "a peer message from another node's id: dropped"
                        );
                        continue;
                    }
                    if env.msg.get_msg_type() == MessageType::MsgSnapshot {
                        // Its rows came ahead of it on this connection, or it is dropped (the
                        // leader hears nothing back and sends it again).
                        match assembly.take(env.range) {
                            Some(rows) => env.msg.mut_snapshot().data = rows.into(),
                            None => continue,
                        }
                    }
                    if let Err(e) = node.replicas.borrow_mut().step(env) {
                        tracing::debug!(shard = core.id, node = peer, error = ?e, "peer message not stepped");
                    }
                    stepped = true;
                }
                // Too short to name the question's id (or range): nothing could answer it, so
                // the connection ends and its peer fails what it waited for on it at once.
                Ok(Some((Frame::Forward(body) | Frame::Request(body), _))) if body.len() < 12 => {
                    return "a forwarded write or request cut short".into();
                }
                Ok(Some((Frame::Probe(body), _))) if body.len() < 4 => return "a probe cut short".into(),
                Ok(Some((Frame::Forward(body), n))) => {
                    used += n;
                    node.take_forward(core, answers, &body);
                }
                Ok(Some((Frame::Request(body), n))) => {
                    used += n;
                    node.take_request(core, answers, &body);
                }
                Ok(Some((Frame::Probe(body), n))) => {
                    used += n;
                    node.take_probe(answers, peer, &body);
                }
                Ok(Some((Frame::Outcome(_) | Frame::Gone(_), _))) => {
                    return "an answer where a request belongs".into();
                }
                Ok(Some((Frame::SnapshotRows(body), n))) => {
                    used += n;
                    if let Err(e) = assembly.add(&body, RAFT_SNAPSHOT_BYTES_MAX) {
                        return e;
                    }
                }
                Ok(Some((Frame::Control(body), n))) => {
                    used += n;
                    let answer = match &body[..] {
                        b"status" => node.status_json().to_string(),
                        adopt if adopt.starts_with(ADOPT) => match std::str::from_utf8(&adopt[ADOPT.len()..])
                        {
                            Ok(text) => node.adopt(core, text).await.to_string(),
                            Err(_) => serde_json::json!({"error": "a cluster file is UTF-8"}).to_string(),
                        },
                        check if check.starts_with(CHECK) => match std::str::from_utf8(&check[CHECK.len()..])
                        {
                            Ok(text) => match node.prepare(core, text) {
                                Ok(_) => serde_json::json!({"ok": true}).to_string(),
                                Err(e) => serde_json::json!({ "error": e }).to_string(),
                            },
                            Err(_) => serde_json::json!({"error": "a cluster file is UTF-8"}).to_string(),
                        },
                        _ => serde_json::json!({"error": "unknown control request"}).to_string(),
                    };
                    let mut out = Vec::new();
                    wire::encode_control(answer.as_bytes(), &mut out);
                    if !answers.push(out) {
                        return "its control answers are not being read".into();
                    }
                }
            }
        }
        buf.drain(..used);
        if stepped {
            node.ready_kick.notify();
        }
    }
}

/// `velocityd cluster init`: make this data directory node `node_id` of the cluster that
/// `text` (a cluster file) describes. The directory's key must be the one the file pins for
/// the node; a directory with a single node's data, or already a node of another cluster, is
/// refused (its rows are not in any range's Raft log).
pub fn init(data_dir: &Path, node_id: NodeId, text: &str) -> Result<String, String> {
    let mut m = Membership::parse(text)?;
    let member =
        m.member(node_id).ok_or_else(|| format!("the cluster file names no node {node_id}"))?.clone();
    let (_, _, fp) = super::datadir::identity(data_dir)?;
    if member.fingerprint != fp {
        return Err(format!(
            "the cluster file pins {} for node {node_id}, but {}'s key is {}",
            crate::security::tls::fingerprint_string(&member.fingerprint),
            data_dir.display(),
            crate::security::tls::fingerprint_string(&fp)
        ));
    }
    m.this = Some(node_id);
    let rendered = m.render();
    let path = cluster_file(data_dir);
    match std::fs::read_to_string(&path) {
        Ok(old) if old == rendered => return Ok(format!("{} already says this", path.display())),
        Ok(_) => {
            return Err(format!(
            "{} already makes this directory a node of another membership; a running cluster's membership changes with `velocityd cluster change`",
            path.display()
        ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    }
    if super::durable::current(data_dir)?.is_some() {
        return Err(format!(
            "{} holds a single node's data, which no range's Raft log has: initialise an empty data directory",
            data_dir.display()
        ));
    }
    if let Some((peer, range, index)) = remembered_by_peers(data_dir, &m, node_id)? {
        return Err(format!(
            "node {peer}, leading range {range}, has node {node_id}'s log up to index {index}: node {node_id} ran before and lost its data. \
             Started empty under the same identity it could vote twice in a term or count towards a majority for entries it no longer has; \
             a node that lost its data comes back under a new identity (a new id and key) in its old place (`velocityd cluster change`: docs/cluster.md)"
        ));
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, &rendered).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    super::durable::sync_dir(data_dir)?;
    Ok(format!(
        "{} is node {node_id} of a cluster of {} nodes ({} ranges, {} replicas each); start velocityd with --cores {}",
        data_dir.display(),
        m.members.len(),
        m.ranges,
        m.replication,
        member.cores
    ))
}

/// Whether a reachable leader of some range knows node `node_id`'s log to reach an index above 0
/// (it acknowledged entries before): the peer, range and index. Peers that do not answer (not
/// started yet, as at bootstrap, or pinning another key) tell nothing.
fn remembered_by_peers(
    data_dir: &Path,
    m: &Membership,
    node_id: NodeId,
) -> Result<Option<(NodeId, u64, u64)>, String> {
    let (key_pem, cert_pem, _) = super::datadir::identity(data_dir)?;
    for other in m.members.iter().filter(|o| o.id != node_id) {
        let tls = crate::security::tls::peer_client_config(&cert_pem, &key_pem, other.fingerprint)?;
        for core in 0..other.cores {
            let probe = Duration::from_millis(CLUSTER_INIT_PROBE_MS);
            let Ok(answer) = ask(other.peer_addr(core), tls.clone(), probe, b"status") else { continue };
            for r in answer["ranges"].as_array().into_iter().flatten() {
                for pair in r["matched"].as_array().into_iter().flatten() {
                    let (id, index) = (pair[0].as_u64(), pair[1].as_u64().unwrap_or(0));
                    if id == Some(node_id) && index > 0 {
                        return Ok(Some((other.id, r["range"].as_u64().unwrap_or(0), index)));
                    }
                }
            }
        }
    }
    Ok(None)
}

/// Ask one core of a node a control request over the node-to-node port, as this data
/// directory's node (whose key is pinned in the membership, as the peer checks); its answer.
fn ask(
    addr: std::net::SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
    request: &[u8],
) -> Result<serde_json::Value, String> {
    use std::io::{Read, Write};
    let tcp = std::net::TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    tcp.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let conn = rustls::ClientConnection::new(tls, crate::security::tls::server_name("velocity"))
        .map_err(|e| e.to_string())?;
    let mut s = rustls::StreamOwned::new(conn, tcp);
    let mut out = Vec::new();
    wire::encode_control(request, &mut out);
    s.write_all(&out).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 << 10];
    loop {
        match wire::decode_frame(&buf).map_err(|e| e.to_string())? {
            Some((Frame::Control(body), _)) => {
                return serde_json::from_slice(&body).map_err(|e| format!("not an answer: {e}"))
            }
            Some(_) => return Err("a Raft message where an answer belongs".into()),
            None => {}
        }
        let n = s.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed before answering".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// `velocityd cluster change`: every core of every node that stays asked to adopt `text` as a
/// change of this data directory's node's membership (`NodeCore::adopt`), and what each said.
/// Refused by any node: an error. A node that does not answer keeps its old membership (it
/// trusts the old node's key, not the new one's) until this is run again, which is harmless
/// for the nodes that have it.
pub fn change(data_dir: &Path, text: &str, file: &Path) -> Result<String, String> {
    use std::fmt::Write as _;
    let path = cluster_file(data_dir);
    let current =
        std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let current = Membership::parse(&current).map_err(|e| format!("{}: {e}", path.display()))?;
    let (next, change) = current.change_to(&Membership::parse(text)?)?;
    let shared = Membership { this: None, ..next.clone() }.render();
    let (key_pem, cert_pem, _) = super::datadir::identity(data_dir)?;
    let timeout = Duration::from_millis(HANDSHAKE_TIMEOUT_MS);
    // First every core that answers checks it, so that none adopts a change another refuses.
    let mut check = CHECK.to_vec();
    check.extend_from_slice(shared.as_bytes());
    let mut refusals = String::new();
    for member in next.members.iter().filter(|m| current.member(m.id).is_some()) {
        let tls = crate::security::tls::peer_client_config(&cert_pem, &key_pem, member.fingerprint)?;
        for core in 0..member.cores {
            if let Ok(v) = ask(member.peer_addr(core), tls.clone(), timeout, &check) {
                if let Some(e) = v["error"].as_str() {
                    let _ = writeln!(refusals, "node {} core {core}: refused: {e}", member.id);
                }
            }
        }
    }
    if !refusals.is_empty() {
        return Err(format!("{refusals}nothing was changed"));
    }
    let mut request = ADOPT.to_vec();
    request.extend_from_slice(shared.as_bytes());
    let (mut out, mut refused, mut unreachable) = (String::new(), false, false);
    for member in next.members.iter().filter(|m| current.member(m.id).is_some()) {
        let tls = crate::security::tls::peer_client_config(&cert_pem, &key_pem, member.fingerprint)?;
        for core in 0..member.cores {
            let said = match ask(
                member.peer_addr(core),
                tls.clone(),
                Duration::from_millis(HANDSHAKE_TIMEOUT_MS),
                &request,
            ) {
                Ok(v) if v["error"].is_string() => {
                    refused = true;
                    format!("refused: {}", v["error"].as_str().unwrap_or(""))
                }
                Ok(v) if v["adopted"].as_bool() == Some(true) => "adopted it".to_string(),
                Ok(_) => "had it already".to_string(),
                Err(e) => {
                    unreachable = true;
                    format!("unreachable ({e})")
                }
            };
            let _ = writeln!(out, "node {} core {core}: {said}", member.id);
        }
    }
    if refused {
        return Err(out);
    }
    for (old, new) in &change.replaced {
        let _ = writeln!(out, "node {new} takes node {old}'s place");
    }
    for new in &change.added {
        let _ = writeln!(out, "node {new} joins in a new place");
    }
    for old in &change.removed {
        let _ = writeln!(out, "node {old} leaves, and its place with it");
    }
    // The file as the cluster has it now (its origin and highest id too): what a new node is
    // initialised with, so that it places the ranges as the others do.
    if text != shared {
        std::fs::write(file, &shared).map_err(|e| format!("cannot write {}: {e}", file.display()))?;
        let _ = writeln!(out, "{} now holds the membership as the nodes have it", file.display());
    }
    if unreachable {
        let _ = writeln!(
            out,
            "a node that did not answer keeps the old membership: run this again once it is up"
        );
    }
    for m in next.members.iter().filter(|m| current.member(m.id).is_none()) {
        let _ = writeln!(
            out,
            "next, on node {}: velocityd cluster init --node-id {} --cluster-file {} --data-dir …, then start it with --cores {}; \
             `velocityd cluster status` shows each range's voters as its leader swaps node {} in",
            m.id,
            m.id,
            file.display(),
            m.cores,
            m.id
        );
    }
    Ok(out)
}

/// `velocityd cluster status`: every core of every node asked for its replicas' state, as a
/// JSON array of each core's answer (an unreachable one as `{"node", "core", "error"}`).
pub fn status(data_dir: &Path) -> Result<Vec<serde_json::Value>, String> {
    let path = cluster_file(data_dir);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let m = Membership::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let (key_pem, cert_pem, _) = super::datadir::identity(data_dir)?;
    let mut all = Vec::new();
    for member in &m.members {
        let tls = crate::security::tls::peer_client_config(&cert_pem, &key_pem, member.fingerprint)?;
        for core in 0..member.cores {
            match ask(
                member.peer_addr(core),
                tls.clone(),
                Duration::from_millis(HANDSHAKE_TIMEOUT_MS),
                b"status",
            ) {
                Ok(v) => all.push(v),
                Err(e) => all.push(serde_json::json!({"node": member.id, "core": core, "error": e})),
            }
        }
    }
    Ok(all)
}

/// The status as people read it: a line per range (its leader's view: term, commit, and each
/// replica's applied index and lag), then the nodes that did not answer.
pub fn render_status(all: &[serde_json::Value]) -> String {
    use std::fmt::Write as _;
    let mut by_range: BTreeMap<u64, Vec<(u64, &serde_json::Value)>> = BTreeMap::new();
    let mut out = String::new();
    for core in all {
        let node = core["node"].as_u64().unwrap_or(0);
        if let Some(e) = core["error"].as_str() {
            let _ = writeln!(out, "node {node} core {}: unreachable ({e})", core["core"]);
            continue;
        }
        for r in core["ranges"].as_array().into_iter().flatten() {
            by_range.entry(r["range"].as_u64().unwrap_or(0)).or_default().push((node, r));
        }
    }
    let mut lines = String::new();
    for (range, replicas) in &by_range {
        let leader = replicas.iter().find(|(_, r)| r["is_leader"].as_bool() == Some(true));
        let (lead, term, commit) = match leader {
            Some((n, r)) => {
                (n.to_string(), r["term"].as_u64().unwrap_or(0), r["commit"].as_u64().unwrap_or(0))
            }
            None => {
                ("none".into(), replicas.iter().filter_map(|(_, r)| r["term"].as_u64()).max().unwrap_or(0), 0)
            }
        };
        let _ =
            write!(lines, "range {range:>4}  leader {lead:>4}  term {term:>5}  commit {commit:>8}  replicas");
        for (n, r) in replicas {
            let applied = r["applied"].as_u64().unwrap_or(0);
            let _ = write!(lines, "  {n}: applied {applied} lag {}", commit.saturating_sub(applied));
        }
        if let Some((_, r)) = leader {
            let ids = |k: &str| -> Vec<String> {
                r[k].as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_u64())
                    .map(|v| v.to_string())
                    .collect()
            };
            let _ = write!(lines, "  voters {}", ids("voters").join(","));
            let outgoing = ids("voters_outgoing");
            if !outgoing.is_empty() {
                // A joint change under way: a majority of both memberships commits.
                let _ = write!(lines, " (joint with {})", outgoing.join(","));
            }
            let learners = ids("learners");
            if !learners.is_empty() {
                let _ = write!(lines, "  learners {}", learners.join(","));
            }
        }
        lines.push('\n');
    }
    lines + &out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_waiter_hears_a_notification_that_follows_its_look() {
        let n = Notify::default();
        let (a, b) = (n.current(), n.current());
        n.notify();
        assert!(a.is_fired() && b.is_fired());
        // A waiter that looks after it waits for the next one.
        let c = n.current();
        assert!(!c.is_fired());
        n.notify();
        assert!(c.is_fired());
    }
}
