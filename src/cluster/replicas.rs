//! One core's replicas: the Raft groups of the ranges this core holds a replica of, driven
//! together so that all of them share one write-ahead log and one fdatasync a cycle.
//!
//! The cycle, as the core runs it (raft-rs's asynchronous ready, so that the core goes on
//! stepping messages and taking proposals while a group commit is on its way to the disk):
//!
//! 1. [`Replicas::tick`] every `RAFT_TICK_MS`, [`Replicas::step`] each message from a peer,
//!    [`Replicas::propose`] each write this node leads the range of.
//! 2. [`Replicas::ready`] gathers what every replica has to do into one [`Batch`]: messages to
//!    send now (a leader sends its appends before its own copy is durable, Raft thesis 10.2.1),
//!    committed entries and snapshots to apply now (they are durable on a majority, this
//!    replica's copy included), and [`LogWrite`]s to make durable.
//! 3. The core writes `batch.writes` to its log, in order, syncing when `batch.must_sync`; then
//!    [`Replicas::persisted`] hands back the messages that had to wait for that (votes, append
//!    acknowledgements: a replica promises only what it will remember after a crash).
//!
//! A proposal is acknowledged when the entry this node appended for it is applied with the term
//! it was proposed in; it is known lost when another entry is applied at its index (a new leader
//! overwrote it). Anything else is an unknown outcome, which the caller's timeout reports.

use super::log::{GroupLog, LogWrite};
use super::wire::Envelope;
use super::{raft_logger, NodeId, RangeId};
use crate::limits::{
    RAFT_APPEND_BYTES_MAX, RAFT_ELECTION_TICKS, RAFT_HEARTBEAT_TICKS, RAFT_INFLIGHT_APPENDS_MAX,
    RAFT_UNCOMMITTED_BYTES_MAX,
};
use protobuf::Message as _;
use raft::eraftpb::{ConfChangeV2, ConfState, Entry, EntryType};
use raft::{Config, RawNode, StateRole, Storage};
use std::collections::{BTreeMap, HashMap, VecDeque};

/// A proposal's number on this core, to match its outcome with the request that made it.
pub type ProposalId = u64;

/// A linearizable read's number on this core.
pub type ReadId = u64;

/// What the core applies to a range's rows, in this order.
#[derive(Clone, Debug, PartialEq)]
pub enum Apply {
    /// A committed write, with the proposal it acknowledges when this core proposed it.
    Entry { range: RangeId, index: u64, term: u64, data: Vec<u8>, proposal: Option<ProposalId> },
    /// The range's rows are now the snapshot's: this replica was too far behind the leader's
    /// log, or new. The replica waits, frozen, until the core says the store holds them
    /// (`Replicas::rows_installed`).
    Snapshot { range: RangeId, index: u64, data: Vec<u8> },
    /// A committed change of the range's replicas.
    Membership {
        range: RangeId,
        index: u64,
        voters: Vec<NodeId>,
        voters_outgoing: Vec<NodeId>,
        learners: Vec<NodeId>,
    },
}

/// One cycle's work for all of a core's replicas.
#[derive(Debug, Default)]
pub struct Batch {
    /// The cycle's number: once `writes` are durable (synced, if `must_sync`), the core calls
    /// [`Replicas::persisted`] with it, even when `writes` is empty, since a replica's promises
    /// are made in order. 0 when the replicas had nothing to do.
    pub number: u64,
    pub send: Vec<Envelope>,
    pub apply: Vec<Apply>,
    /// Proposals that will never apply: another entry committed at their index.
    pub lost: Vec<ProposalId>,
    /// Proposals whose outcome this core will never learn (a snapshot overtook them).
    pub unknown: Vec<ProposalId>,
    /// Linearizable reads confirmed: each may be served once the range's applied index
    /// reaches the index given ([`Replicas::read`]).
    pub reads: Vec<(RangeId, ReadId, u64)>,
    pub writes: Vec<(RangeId, LogWrite)>,
    /// Whether the writes must be synced before `persisted`: a vote, a term, entries or a
    /// snapshot (a new commit index alone need not be, Raft recovers it).
    pub must_sync: bool,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.send.is_empty()
            && self.apply.is_empty()
            && self.lost.is_empty()
            && self.unknown.is_empty()
            && self.reads.is_empty()
            && self.writes.is_empty()
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum ProposeError {
    /// Another replica leads the range (when known): the request goes there.
    NotLeader {
        leader: Option<NodeId>,
    },
    UnknownRange(RangeId),
    /// Raft refused it: too many bytes not yet committed, or the leadership is moving.
    Refused(String),
}

#[derive(Debug, PartialEq, Eq)]
pub enum StepError {
    UnknownRange(RangeId),
    NotForThisNode {
        to: NodeId,
    },
    /// The replica is making a snapshot durable; the message is dropped, and Raft sends again.
    Installing(RangeId),
    /// raft-rs refused the message (a local message type from the network, a response from a
    /// node that is not a replica).
    Refused(String),
}

/// A range's Raft state as `cluster status` and SHOW STATUS report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeStatus {
    pub range: RangeId,
    pub leader: Option<NodeId>,
    pub is_leader: bool,
    pub term: u64,
    pub commit: u64,
    pub applied: u64,
    pub snapshot_index: u64,
    /// On the leader: each replica's last index known to match the leader's log.
    pub matched: Vec<(NodeId, u64)>,
    /// The membership this replica applied, sorted: during a joint change `voters` are the
    /// incoming membership's and `voters_outgoing` the old one's (empty otherwise).
    pub voters: Vec<NodeId>,
    pub voters_outgoing: Vec<NodeId>,
    pub learners: Vec<NodeId>,
}

struct Install {
    ready: raft::Ready,
    durable: bool,
    rows_in: bool,
}

struct Replica {
    raw: RawNode<GroupLog>,
    /// A ready that installs a snapshot, held until its writes are durable and the core's store
    /// holds its rows (`rows_installed`; a core takes them in slices): raft-rs may count the
    /// snapshot as applied only then, and until then the replica neither steps, ticks nor
    /// proposes (an election in between would read entries the snapshot has replaced), and
    /// no read waiting for its applied index is served from rows half taken.
    installing: Option<Install>,
    /// Entries committed as an installed snapshot became durable, applied with the next batch.
    committed_after_install: Vec<Entry>,
    /// Proposals this core made and has no outcome for, by the log index and term of the entry
    /// it appended for each (two at one index when a new leader's log overwrote this one's and
    /// this core led again: the older may still be committed, from another replica's copy).
    proposals: BTreeMap<(u64, u64), ProposalId>,
}

/// Ready numbers of a cycle, and the messages waiting for its writes to be durable.
struct InFlight {
    number: u64,
    readies: Vec<(RangeId, u64)>,
    after_sync: Vec<Envelope>,
}

pub struct Replicas {
    node: NodeId,
    groups: HashMap<RangeId, Replica>,
    next_proposal: ProposalId,
    next_read: ReadId,
    /// Random per incarnation, in every read's context: a leader's answer to a read a follower
    /// asked before it restarted must not be taken for one of this incarnation's reads (it
    /// would serve a new read at an old index).
    read_nonce: [u8; 8],
    next_batch: u64,
    in_flight: VecDeque<InFlight>,
    election_ticks: Option<(usize, usize)>,
}

fn config(node: NodeId, applied: u64) -> Config {
    Config {
        id: node,
        election_tick: RAFT_ELECTION_TICKS,
        heartbeat_tick: RAFT_HEARTBEAT_TICKS,
        applied,
        max_size_per_msg: RAFT_APPEND_BYTES_MAX as u64,
        max_inflight_msgs: RAFT_INFLIGHT_APPENDS_MAX,
        max_uncommitted_size: RAFT_UNCOMMITTED_BYTES_MAX,
        // A leader cut off from a majority steps down after an election timeout, and a node
        // back from a partition asks before it disrupts a working leader with a higher term.
        check_quorum: true,
        pre_vote: true,
        ..Config::default()
    }
}

impl Replicas {
    /// This core's replicas, each from its log as the disk holds it (`GroupLog::new` for a new
    /// range). `election_ticks` overrides the randomised election timeout (`Some((min, max))`,
    /// for the simulation, which needs runs to replay); `None` is Raft's `[E, 2E)`.
    pub fn new(
        node: NodeId,
        logs: Vec<(RangeId, GroupLog)>,
        election_ticks: Option<(usize, usize)>,
    ) -> Result<Replicas, String> {
        let mut replicas = Replicas {
            node,
            groups: HashMap::with_capacity(logs.len()),
            next_proposal: 1,
            next_read: 1,
            read_nonce: {
                let mut n = [0u8; 8];
                getrandom::fill(&mut n).map_err(|e| format!("no randomness for the read nonce: {e}"))?;
                n
            },
            next_batch: 1,
            in_flight: VecDeque::new(),
            election_ticks,
        };
        for (range, log) in logs {
            replicas.add(range, log)?;
        }
        Ok(replicas)
    }

    pub fn tick(&mut self) {
        for replica in self.groups.values_mut().filter(|r| r.installing.is_none()) {
            replica.raw.tick();
        }
    }

    /// Starts an election for `range` now rather than after a timeout: at bootstrap, the
    /// range's first replica does, so a new cluster has its leaders within a round trip.
    pub fn campaign(&mut self, range: RangeId) -> Result<(), String> {
        let replica = self.groups.get_mut(&range).ok_or_else(|| format!("no replica of range {range}"))?;
        if replica.installing.is_some() {
            return Err(format!("range {range} is installing a snapshot"));
        }
        replica.raw.campaign().map_err(|e| e.to_string())
    }

    pub fn step(&mut self, envelope: Envelope) -> Result<(), StepError> {
        let Envelope { range, msg } = envelope;
        let replica = self.groups.get_mut(&range).ok_or(StepError::UnknownRange(range))?;
        if msg.to != self.node {
            return Err(StepError::NotForThisNode { to: msg.to });
        }
        if replica.installing.is_some() {
            return Err(StepError::Installing(range));
        }
        replica.raw.step(msg).map_err(|e| StepError::Refused(e.to_string()))
    }

    pub fn propose(&mut self, range: RangeId, data: Vec<u8>) -> Result<ProposalId, ProposeError> {
        let replica = self.groups.get_mut(&range).ok_or(ProposeError::UnknownRange(range))?;
        let raft = &replica.raw.raft;
        if raft.state != StateRole::Leader || replica.installing.is_some() {
            let leader = raft.leader_id;
            return Err(ProposeError::NotLeader { leader: (leader != raft::INVALID_ID).then_some(leader) });
        }
        let last = raft.raft_log.last_index();
        replica.raw.propose(Vec::new(), data).map_err(|e| ProposeError::Refused(e.to_string()))?;
        let raft = &replica.raw.raft;
        let index = raft.raft_log.last_index();
        // A leader appends a proposal to its own log at once, at the next index.
        debug_assert_eq!(index, last + 1);
        let id = self.next_proposal;
        self.next_proposal += 1;
        replica.proposals.insert((index, raft.term), id);
        Ok(id)
    }

    /// Asks for a linearizable read of `range` (Raft's read-index, thesis 6.4): the leader
    /// notes its commit index and confirms with a heartbeat round that a majority still follows
    /// it; a later batch's `reads` then names the index the range must have applied before the
    /// read is served. No clock is trusted. A read whose confirmation never comes (the leader
    /// lost its majority) is never in a batch: the caller's timeout answers it.
    ///
    /// A follower asks too: raft-rs sends the request to the leader, which confirms as above and
    /// answers with its commit index; the follower serves the read once it has applied that far,
    /// so a read is served where it is asked, without a hop to the leader for the rows.
    pub fn read(&mut self, range: RangeId) -> Result<ReadId, ProposeError> {
        let replica = self.groups.get_mut(&range).ok_or(ProposeError::UnknownRange(range))?;
        let raft = &replica.raw.raft;
        if raft.leader_id == raft::INVALID_ID || replica.installing.is_some() {
            let leader = raft.leader_id;
            return Err(ProposeError::NotLeader { leader: (leader != raft::INVALID_ID).then_some(leader) });
        }
        let id = self.next_read;
        self.next_read += 1;
        let mut ctx = self.read_nonce.to_vec();
        ctx.extend_from_slice(&id.to_le_bytes());
        replica.raw.read_index(ctx);
        Ok(id)
    }

    /// Proposes a change of the range's replicas (a node added as a learner, promoted, or
    /// removed), applied when committed like any entry.
    pub fn propose_membership(
        &mut self,
        range: RangeId,
        change: ConfChangeV2,
    ) -> Result<ProposalId, ProposeError> {
        let replica = self.groups.get_mut(&range).ok_or(ProposeError::UnknownRange(range))?;
        if replica.raw.raft.state != StateRole::Leader || replica.installing.is_some() {
            let leader = replica.raw.raft.leader_id;
            return Err(ProposeError::NotLeader { leader: (leader != raft::INVALID_ID).then_some(leader) });
        }
        replica
            .raw
            .propose_conf_change(Vec::new(), change)
            .map_err(|e| ProposeError::Refused(e.to_string()))?;
        let index = replica.raw.raft.raft_log.last_index();
        let id = self.next_proposal;
        self.next_proposal += 1;
        replica.proposals.insert((index, replica.raw.raft.term), id);
        Ok(id)
    }

    /// On the leader of `range`, the next step that brings its replicas to `target` (a new
    /// membership's nodes for the range), taken now; None when there is none to take (not the
    /// leader, the replicas are the target, or a change is still being committed or waits for
    /// a learner to catch up). In order: each missing node is added as a learner (it counts
    /// in no majority while it catches up, from the log or a snapshot); once every one is
    /// within `caught_up_entries` of the commit index, the leader hands its leadership on if
    /// it is to leave; then one joint change (Raft's joint consensus, thesis 4.3) promotes the
    /// learners and removes the nodes that leave, which raft-rs leaves by itself once applied
    /// (or this asks for it, if the leader that entered it is gone). One change at a time: each
    /// call looks again at what the log holds, so a leader elected midway takes over.
    pub fn reconcile(&mut self, range: RangeId, target: &[NodeId], caught_up_entries: u64) -> Option<String> {
        use raft::eraftpb::{ConfChangeSingle, ConfChangeType};
        let replica = self.groups.get_mut(&range)?;
        let raft = &replica.raw.raft;
        if raft.state != StateRole::Leader
            || replica.installing.is_some()
            || raft.pending_conf_index > raft.raft_log.applied
        {
            return None;
        }
        let cs = replica.raw.store().conf_state().clone();
        let single = |change_type, node_id| ConfChangeSingle { change_type, node_id, ..Default::default() };
        let mut cc = ConfChangeV2::default();
        let step;
        if !cs.voters_outgoing.is_empty() {
            step = "leave the joint membership".to_string();
        } else {
            let missing: Vec<NodeId> = target.iter().copied().filter(|n| !cs.voters.contains(n)).collect();
            let leaving: Vec<NodeId> = cs.voters.iter().copied().filter(|n| !target.contains(n)).collect();
            if let Some(n) = missing.iter().find(|n| !cs.learners.contains(n)) {
                cc.mut_changes().push(single(ConfChangeType::AddLearnerNode, *n));
                step = format!("add node {n} as a learner");
            } else if missing.is_empty() && leaving.is_empty() {
                let stray = cs.learners.iter().find(|n| !target.contains(n))?;
                cc.mut_changes().push(single(ConfChangeType::RemoveNode, *stray));
                step = format!("remove learner {stray}");
            } else {
                let matched = |n: &NodeId| raft.prs().get(*n).map_or(0, |p| p.matched);
                if missing.iter().any(|n| matched(n) + caught_up_entries < raft.raft_log.committed) {
                    return None;
                }
                if leaving.contains(&self.node) {
                    let to = cs.voters.iter().filter(|n| target.contains(n)).max_by_key(|n| matched(n))?;
                    let to = *to;
                    replica.raw.transfer_leader(to);
                    return Some(format!("hand the leadership to node {to} before leaving"));
                }
                for n in &missing {
                    cc.mut_changes().push(single(ConfChangeType::AddNode, *n));
                }
                for n in &leaving {
                    cc.mut_changes().push(single(ConfChangeType::RemoveNode, *n));
                }
                step = format!("promote {missing:?} and remove {leaving:?}");
            }
        }
        match self.propose_membership(range, cc) {
            Ok(_) => Some(step),
            Err(e) => Some(format!("{step}: not proposed ({e:?})")),
        }
    }

    /// Everything the replicas have to do now; empty when nothing happened since the last.
    pub fn ready(&mut self) -> Batch {
        let mut batch = Batch::default();
        let mut flight = InFlight { number: 0, readies: Vec::new(), after_sync: Vec::new() };
        let mut ranges: Vec<RangeId> = self.groups.keys().copied().collect();
        // In range order, so that a cycle's batch does not depend on the map's order.
        ranges.sort_unstable();
        for range in ranges {
            let replica = self.groups.get_mut(&range).expect("listed");
            if replica.installing.is_some() {
                continue;
            }
            let after_install = std::mem::take(&mut replica.committed_after_install);
            Self::apply_committed(replica, range, after_install, &mut batch);
            if !replica.raw.has_ready() {
                continue;
            }
            let mut rd = replica.raw.ready();
            for read in rd.take_read_states() {
                // Only this core's contexts come back, but maybe of an earlier incarnation.
                if let Some((nonce, id)) = read.request_ctx.split_first_chunk::<8>() {
                    if *nonce == self.read_nonce {
                        if let Ok(id) = <[u8; 8]>::try_from(id) {
                            batch.reads.push((range, ReadId::from_le_bytes(id), read.index));
                        }
                    }
                }
            }
            batch.send.extend(rd.take_messages().into_iter().map(|msg| Envelope { range, msg }));
            flight
                .after_sync
                .extend(rd.take_persisted_messages().into_iter().map(|msg| Envelope { range, msg }));
            batch.must_sync |= rd.must_sync();

            if !rd.snapshot().is_empty() {
                let snapshot = rd.snapshot().clone();
                let meta = snapshot.get_metadata();
                batch.apply.push(Apply::Snapshot { range, index: meta.index, data: snapshot.data.to_vec() });
                // Whether what this core proposed up to the snapshot's index is in it cannot be
                // told from the snapshot: the outcome is unknown, and said so now.
                let rest = replica.proposals.split_off(&(meta.index + 1, 0));
                let overtaken = std::mem::replace(&mut replica.proposals, rest);
                batch.unknown.extend(overtaken.into_values());
                lose_older_than(replica, meta.term, &mut batch.lost);
                write(replica, range, LogWrite::Snapshot(snapshot), &mut batch);
            }
            let committed = rd.take_committed_entries();
            let entries = rd.take_entries();
            if !entries.is_empty() {
                write(replica, range, LogWrite::Entries(entries), &mut batch);
            }
            if let Some(hs) = rd.hs() {
                write(replica, range, LogWrite::HardState(hs.clone()), &mut batch);
            }
            flight.readies.push((range, rd.number()));
            if rd.snapshot().is_empty() {
                replica.raw.advance_append_async(rd);
                // After the ready is advanced: applying may append to the log (raft-rs's
                // leader leaves a joint membership by itself once it applied it), which must
                // come in the next ready, not after this one's last entry (raft-rs panics:
                // unstable entries that do not end where the ready did).
                Self::apply_committed(replica, range, committed, &mut batch);
            } else {
                // Entries after the snapshot (raft-rs gives none with one today) go on top of
                // its rows, so after them.
                replica.installing = Some(Install { ready: rd, durable: false, rows_in: false });
                replica.committed_after_install = committed;
            }
        }
        if batch.is_empty() && flight.readies.is_empty() {
            return batch;
        }
        batch.number = self.next_batch;
        self.next_batch += 1;
        flight.number = batch.number;
        self.in_flight.push_back(flight);
        batch
    }

    fn apply_committed(replica: &mut Replica, range: RangeId, committed: Vec<Entry>, batch: &mut Batch) {
        let Some(last) = committed.last().map(|e| (e.index, e.term)) else { return };
        for entry in committed {
            // Proposals at this index: the one of this entry's term is acknowledged, any other
            // is lost.
            let rest = replica.proposals.split_off(&(entry.index + 1, 0));
            let here = std::mem::replace(&mut replica.proposals, rest);
            let mut proposal = None;
            for ((_, term), id) in here {
                if term == entry.term {
                    proposal = Some(id);
                } else {
                    batch.lost.push(id);
                }
            }
            match entry.get_entry_type() {
                EntryType::EntryNormal => {
                    // A new leader's empty entry (Raft's no-op at the start of its term).
                    if entry.data.is_empty() && proposal.is_none() {
                        continue;
                    }
                    batch.apply.push(Apply::Entry {
                        range,
                        index: entry.index,
                        term: entry.term,
                        data: entry.data.to_vec(),
                        proposal,
                    });
                }
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                    let applied = if entry.get_entry_type() == EntryType::EntryConfChange {
                        raft::eraftpb::ConfChange::parse_from_bytes(&entry.data)
                            .map_err(|e| e.to_string())
                            .and_then(|cc| replica.raw.apply_conf_change(&cc).map_err(|e| e.to_string()))
                    } else {
                        ConfChangeV2::parse_from_bytes(&entry.data)
                            .map_err(|e| e.to_string())
                            .and_then(|cc| replica.raw.apply_conf_change(&cc).map_err(|e| e.to_string()))
                    };
                    match applied {
                        Ok(cs) => {
                            let (mut voters, mut learners) = (cs.voters.clone(), cs.learners.clone());
                            let mut voters_outgoing = cs.voters_outgoing.clone();
                            voters.sort_unstable();
                            voters_outgoing.sort_unstable();
                            learners.sort_unstable();
                            batch.apply.push(Apply::Membership {
                                range,
                                index: entry.index,
                                voters,
                                voters_outgoing,
                                learners,
                            });
                            write(replica, range, LogWrite::ConfState(cs), batch);
                        }
                        // Committed on a majority, so every replica refuses it alike: the
                        // change was invalid for the membership it met (raft-rs checks it).
                        Err(why) => {
                            tracing::warn!(range, index = entry.index, "membership change refused: {why}")
                        }
                    }
                }
            }
        }
        replica.raw.advance_apply_to(last.0);
        lose_older_than(replica, last.1, &mut batch.lost);
    }

    /// The writes of cycles up to `number` are durable: the messages that waited for them, to
    /// send now. Cycles are persisted in order, as the core's one log writes them.
    pub fn persisted(&mut self, number: u64) -> Vec<Envelope> {
        let mut send = Vec::new();
        while self.in_flight.front().is_some_and(|f| f.number <= number) {
            let flight = self.in_flight.pop_front().expect("checked");
            for (range, ready) in flight.readies {
                let Some(replica) = self.groups.get_mut(&range) else { continue };
                match replica.installing.as_mut() {
                    Some(install) => {
                        debug_assert_eq!(
                            install.ready.number(),
                            ready,
                            "a replica installs one snapshot at a time"
                        );
                        install.durable = true;
                        Self::finish_install(replica, range, &mut send);
                    }
                    None => replica.raw.on_persist_ready(ready),
                }
            }
            send.extend(flight.after_sync);
        }
        send
    }

    /// The core's store holds the rows of the snapshot `range` installs: the messages that
    /// waited for it (its acknowledgement to the leader), to send now.
    pub fn rows_installed(&mut self, range: RangeId) -> Vec<Envelope> {
        let mut send = Vec::new();
        if let Some(replica) = self.groups.get_mut(&range) {
            if let Some(install) = replica.installing.as_mut() {
                install.rows_in = true;
                Self::finish_install(replica, range, &mut send);
            }
        }
        send
    }

    /// Whether some replica's snapshot rows are still on their way into the store: a core's
    /// checkpoint then waits, as it stands for rows the store does not hold yet.
    pub fn rows_pending(&self) -> bool {
        self.groups.values().any(|r| r.installing.as_ref().is_some_and(|i| !i.rows_in))
    }

    /// Once durable and in the store, the install's whole advance (everything before it is
    /// durable too, being in earlier cycles), which counts the snapshot applied.
    fn finish_install(replica: &mut Replica, range: RangeId, send: &mut Vec<Envelope>) {
        if !replica.installing.as_ref().is_some_and(|i| i.durable && i.rows_in) {
            return;
        }
        let install = replica.installing.take().expect("checked");
        let mut light = replica.raw.advance(install.ready);
        send.extend(light.take_messages().into_iter().map(|msg| Envelope { range, msg }));
        replica.committed_after_install.extend(light.take_committed_entries());
    }

    /// Hands `range`'s leadership to `to` (a rolling restart moves leaders off a node before
    /// stopping it); raft-rs stops taking proposals meanwhile and gives up after an election
    /// timeout if `to` does not take over.
    pub fn transfer_leadership(&mut self, range: RangeId, to: NodeId) -> Result<(), String> {
        let replica = self.groups.get_mut(&range).ok_or_else(|| format!("no replica of range {range}"))?;
        if replica.raw.raft.state != StateRole::Leader {
            return Err(format!("this node does not lead range {range}"));
        }
        replica.raw.transfer_leader(to);
        Ok(())
    }

    /// Drops this core's replica of `range`, once a committed membership no longer names this
    /// node: what it would still receive is for a group it left.
    /// A replica of `range` from its log as the disk holds it; on a running core (a membership
    /// change placed the range on this node) `GroupLog::new` of the range's first membership,
    /// a replica that is no voter until a leader makes it one.
    pub fn add(&mut self, range: RangeId, log: GroupLog) -> Result<(), String> {
        if self.groups.contains_key(&range) {
            return Ok(());
        }
        // What the core restores from the snapshot is applied; the committed entries after it
        // come back in the first batches, to be applied again on top of it.
        let mut cfg = config(self.node, log.snapshot_index());
        if let Some((min, max)) = self.election_ticks {
            cfg.min_election_tick = min;
            cfg.max_election_tick = max;
        }
        cfg.validate().map_err(|e| format!("range {range}: {e}"))?;
        let raw = RawNode::new(&cfg, log, &raft_logger(self.node, range))
            .map_err(|e| format!("range {range}: {e}"))?;
        self.groups.insert(
            range,
            Replica {
                raw,
                installing: None,
                committed_after_install: Vec::new(),
                proposals: BTreeMap::new(),
            },
        );
        Ok(())
    }

    /// Drops this core's replica of `range`: the proposals it had no outcome for, which may or
    /// may not be applied by the range's other replicas.
    pub fn remove(&mut self, range: RangeId) -> Vec<ProposalId> {
        self.groups.remove(&range).map(|r| r.proposals.into_values().collect()).unwrap_or_default()
    }

    /// How sending a snapshot to `to` went. The leader sends no more to a replica it is sending
    /// a snapshot to until it learns this (the transport reports it when the snapshot's stream
    /// ends or breaks), so a snapshot lost on the way is sent again.
    pub fn report_snapshot(&mut self, range: RangeId, to: NodeId, delivered: bool) {
        if let Some(replica) = self.groups.get_mut(&range) {
            let status = if delivered { raft::SnapshotStatus::Finish } else { raft::SnapshotStatus::Failure };
            replica.raw.report_snapshot(to, status);
            replica.raw.mut_store().sent();
            // A heartbeat now: its answer resumes the follower (the next append, or the snapshot
            // again), rather than the next tick's.
            replica.raw.ping();
        }
    }

    /// The ranges raft-rs wants a snapshot of (a follower is behind what the log still holds):
    /// the core answers each with [`Replicas::offer_snapshot`].
    pub fn wanted_snapshots(&self) -> Vec<RangeId> {
        let mut wanted: Vec<RangeId> =
            self.groups.iter().filter(|(_, r)| r.raw.store().wants_snapshot()).map(|(r, _)| *r).collect();
        wanted.sort_unstable();
        wanted
    }

    /// `rows`, the range's rows as they are now (the snapshot file format), for raft-rs to send:
    /// they are the rows at the applied index, since the core applies a batch whole before it
    /// runs anything else.
    pub fn offer_snapshot(&mut self, range: RangeId, rows: Vec<u8>) -> Result<(), String> {
        let point = self.snapshot_point(range)?;
        self.offer_snapshot_at(range, point, rows)
    }

    /// What a snapshot of `range` begun now is at: the applied index, its term, and the
    /// membership applied then.
    pub fn snapshot_point(&self, range: RangeId) -> Result<(u64, u64, ConfState), String> {
        let replica = self.groups.get(&range).ok_or_else(|| format!("no replica of range {range}"))?;
        let index = replica.raw.raft.raft_log.applied;
        let term = replica.raw.store().term(index).map_err(|e| format!("range {range}: {e}"))?;
        Ok((index, term, replica.raw.store().conf_state().clone()))
    }

    /// `rows`, the range's rows as they were at `point` (`snapshot_point`), for raft-rs to send.
    /// (One that the log's compaction has passed since is dropped, and made again.)
    pub fn offer_snapshot_at(
        &mut self,
        range: RangeId,
        (index, term, conf_state): (u64, u64, ConfState),
        rows: Vec<u8>,
    ) -> Result<(), String> {
        let replica = self.groups.get_mut(&range).ok_or_else(|| format!("no replica of range {range}"))?;
        replica.raw.mut_store().offer(index, term, conf_state, rows);
        // raft-rs tries the snapshot again on the follower's answer to a heartbeat: one now.
        replica.raw.ping();
        Ok(())
    }

    /// The index this core has applied of `range` (what a snapshot taken now holds).
    /// The leader of `range` as this replica knows it: None for a range it does not hold,
    /// Some(None) while it knows of none (an election is under way).
    pub fn leader(&self, range: RangeId) -> Option<Option<NodeId>> {
        self.groups.get(&range).map(|r| Some(r.raw.raft.leader_id).filter(|l| *l != raft::INVALID_ID))
    }

    /// The leader of `range` this replica knows and the term it knows it in; None while it
    /// knows none (or holds no replica of the range).
    pub fn leader_term(&self, range: RangeId) -> Option<(NodeId, u64)> {
        let raft = &self.groups.get(&range)?.raw.raft;
        (raft.leader_id != raft::INVALID_ID).then_some((raft.leader_id, raft.term))
    }

    pub fn applied(&self, range: RangeId) -> Option<u64> {
        self.groups.get(&range).map(|r| r.raw.raft.raft_log.applied)
    }

    /// Entries of `range` held behind what was applied (what a checkpoint would drop).
    pub fn entries_behind_applied(&self, range: RangeId) -> u64 {
        self.groups
            .get(&range)
            .map_or(0, |r| r.raw.raft.raft_log.applied.saturating_sub(r.raw.store().snapshot_index()))
    }

    /// Each log compacted up to what was applied, and the writes that make it on their own:
    /// the core takes a snapshot of its store (the rows at each range's applied index, and
    /// after), appends these writes to its new log, and may then remove the older logs.
    pub fn checkpoint(&mut self) -> Vec<(RangeId, Vec<LogWrite>)> {
        let mut ranges: Vec<RangeId> = self.groups.keys().copied().collect();
        ranges.sort_unstable();
        let mut all = Vec::with_capacity(ranges.len());
        for range in ranges {
            let replica = self.groups.get_mut(&range).expect("listed");
            // A replica installing a snapshot keeps its log as it is: the rows are the
            // snapshot's, at the snapshot's index, which is where its log starts.
            if replica.installing.is_none() {
                let index = replica.raw.raft.raft_log.applied;
                if let Ok(term) = replica.raw.store().term(index) {
                    replica.raw.mut_store().compact(index, term);
                }
            }
            all.push((range, replica.raw.store().checkpoint()));
        }
        all
    }

    pub fn status(&self) -> Vec<RangeStatus> {
        let mut all: Vec<RangeStatus> = self
            .groups
            .iter()
            .map(|(range, replica)| {
                let raft = &replica.raw.raft;
                let is_leader = raft.state == StateRole::Leader;
                let mut matched: Vec<(NodeId, u64)> = if is_leader {
                    raft.prs().iter().map(|(id, pr)| (*id, pr.matched)).collect()
                } else {
                    Vec::new()
                };
                matched.sort_unstable();
                let cs = replica.raw.store().conf_state();
                let (mut voters, mut learners) = (cs.voters.clone(), cs.learners.clone());
                let mut voters_outgoing = cs.voters_outgoing.clone();
                voters.sort_unstable();
                voters_outgoing.sort_unstable();
                learners.sort_unstable();
                RangeStatus {
                    range: *range,
                    leader: (raft.leader_id != raft::INVALID_ID).then_some(raft.leader_id),
                    is_leader,
                    term: raft.term,
                    commit: raft.raft_log.committed,
                    applied: raft.raft_log.applied,
                    snapshot_index: replica.raw.store().snapshot_index(),
                    matched,
                    voters,
                    voters_outgoing,
                    learners,
                }
            })
            .collect();
        all.sort_unstable_by_key(|s| s.range);
        all
    }

    pub fn is_installing(&self, range: RangeId) -> bool {
        self.groups.get(&range).is_some_and(|r| r.installing.is_some())
    }

    /// Whether `node`'s removal from `range` is committed, as only this replica can tell when
    /// it leads the range with no membership change in flight (its applied membership is then
    /// the newest committed one: a new leader counts its whole log as in flight until applied):
    /// that membership names `node` nowhere and is not a joint one.
    pub fn has_removed(&self, range: RangeId, node: NodeId) -> bool {
        let Some(replica) = self.groups.get(&range) else { return false };
        let raft = &replica.raw.raft;
        if raft.state != StateRole::Leader || raft.pending_conf_index > raft.raft_log.applied {
            return false;
        }
        let cs = replica.raw.store().conf_state();
        cs.voters_outgoing.is_empty() && !cs.voters.iter().chain(&cs.learners).any(|n| *n == node)
    }

    /// The range's membership as this replica knows it.
    pub fn membership(&self, range: RangeId) -> Option<ConfState> {
        self.groups.get(&range).map(|r| r.raw.raft.prs().conf().to_conf_state())
    }
}

/// The proposals left after a committed entry of `term` can never be committed: terms only grow
/// along a log, so every later committed entry has at least that term, and theirs is older.
fn lose_older_than(replica: &mut Replica, term: u64, lost: &mut Vec<ProposalId>) {
    replica.proposals.retain(|(_, t), id| {
        if *t < term {
            lost.push(*id);
        }
        *t >= term
    });
}

/// Applies a write to the replica's log in memory and queues it for the disk: one path.
fn write(replica: &mut Replica, range: RangeId, w: LogWrite, batch: &mut Batch) {
    // raft-rs hands out only writes that follow its log: a refusal is a bug in this module.
    if let Err(e) = replica.raw.mut_store().apply(&w) {
        panic!("range {range}: raft-rs handed a write its log refuses: {e}");
    }
    batch.writes.push((range, w));
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::eraftpb::{ConfChangeSingle, ConfChangeType};
    use std::collections::BTreeSet;

    /// Nodes of one range in this thread over a network that delivers everything, in order;
    /// each node's disk is what it synced (every batch, at once).
    struct Net {
        nodes: BTreeMap<NodeId, Node>,
        down: BTreeSet<NodeId>,
        queue: VecDeque<Envelope>,
    }

    struct Node {
        replicas: Replicas,
        disk: GroupLog,
        /// The rows at the disk's snapshot index (the core's snapshot, or an install's rows).
        disk_rows: BTreeSet<Vec<u8>>,
        rows: BTreeSet<Vec<u8>>,
        acked: usize,
        snapshots: usize,
        memberships: Vec<Vec<NodeId>>,
        /// Installs whose rows this node's store is still taking (as a core takes them, in
        /// slices), when `slow_rows`: held until `rows_in`.
        slow_rows: bool,
        held: Vec<(RangeId, Vec<u8>)>,
    }

    fn rows_bytes(rows: &BTreeSet<Vec<u8>>) -> Vec<u8> {
        rows.iter().flat_map(|r| [&[r.len() as u8][..], r].concat()).collect()
    }

    fn rows_of(mut data: &[u8]) -> BTreeSet<Vec<u8>> {
        let mut rows = BTreeSet::new();
        while let Some((n, rest)) = data.split_first() {
            rows.insert(rest[..*n as usize].to_vec());
            data = &rest[*n as usize..];
        }
        rows
    }

    impl Net {
        fn new(voters: &[NodeId]) -> Net {
            let mut net = Net { nodes: BTreeMap::new(), down: BTreeSet::new(), queue: VecDeque::new() };
            for id in voters {
                net.start(*id, GroupLog::new(voters), BTreeSet::new());
            }
            net
        }

        fn start(&mut self, id: NodeId, disk: GroupLog, disk_rows: BTreeSet<Vec<u8>>) {
            let replicas = Replicas::new(id, vec![(0, disk.clone())], None).unwrap();
            let rows = disk_rows.clone();
            let node = Node {
                replicas,
                disk,
                disk_rows,
                rows,
                acked: 0,
                snapshots: 0,
                memberships: Vec::new(),
                slow_rows: false,
                held: Vec::new(),
            };
            self.nodes.insert(id, node);
            self.down.remove(&id);
        }

        fn node(&mut self, id: NodeId) -> &mut Node {
            self.nodes.get_mut(&id).unwrap()
        }

        /// Node `id`'s core snapshot: its log compacted, the checkpoint on its disk with the rows.
        fn checkpoint(&mut self, id: NodeId) {
            let node = self.node(id);
            for (_, writes) in node.replicas.checkpoint() {
                for w in writes {
                    node.disk.apply(&w).unwrap();
                }
            }
            node.disk_rows = node.rows.clone();
        }

        /// Node `id`'s store has taken the rows of the installs it held.
        fn rows_in(&mut self, id: NodeId) {
            let node = self.nodes.get_mut(&id).unwrap();
            for (range, data) in std::mem::take(&mut node.held) {
                node.rows = rows_of(&data);
                node.snapshots += 1;
                self.queue.extend(node.replicas.rows_installed(range));
            }
            self.round();
        }

        /// Runs 60 ticks (heartbeats find the replicas that missed an append; an election
        /// needs at most 20), each with all the messages and cycles it brings about.
        fn settle(&mut self) {
            for _ in 0..60 {
                for (id, node) in self.nodes.iter_mut() {
                    if !self.down.contains(id) {
                        node.replicas.tick();
                    }
                }
                self.round();
            }
        }

        fn round(&mut self) {
            for _ in 0..100 {
                let mut busy = false;
                while let Some(e) = self.queue.pop_front() {
                    busy = true;
                    if self.down.contains(&e.msg.to) {
                        continue;
                    }
                    if let Some(node) = self.nodes.get_mut(&e.msg.to) {
                        let (range, from, to) = (e.range, e.msg.from, e.msg.to);
                        let snapshot = e.msg.get_msg_type() == raft::eraftpb::MessageType::MsgSnapshot;
                        let ok = node.replicas.step(e).is_ok();
                        if snapshot {
                            self.nodes.get_mut(&from).unwrap().replicas.report_snapshot(range, to, ok);
                        }
                    }
                }
                for (id, node) in self.nodes.iter_mut() {
                    if self.down.contains(id) {
                        continue;
                    }
                    let batch = node.replicas.ready();
                    if batch.number == 0 {
                        continue;
                    }
                    busy = true;
                    let mut installed = Vec::new();
                    for a in batch.apply {
                        match a {
                            Apply::Entry { data, proposal, .. } => {
                                node.rows.insert(data);
                                node.acked += proposal.is_some() as usize;
                            }
                            Apply::Snapshot { range, data, .. } if node.slow_rows => {
                                node.held.push((range, data));
                            }
                            Apply::Snapshot { range, data, .. } => {
                                node.rows = rows_of(&data);
                                node.snapshots += 1;
                                installed.push(range);
                            }
                            Apply::Membership { voters, .. } => node.memberships.push(voters),
                        }
                    }
                    for (_, w) in &batch.writes {
                        node.disk.apply(w).unwrap();
                        if let LogWrite::Snapshot(s) = w {
                            node.disk_rows = rows_of(&s.data);
                        }
                    }
                    for range in node.replicas.wanted_snapshots() {
                        node.replicas.offer_snapshot(range, rows_bytes(&node.rows)).unwrap();
                    }
                    self.queue.extend(batch.send);
                    self.queue.extend(node.replicas.persisted(batch.number));
                    for range in installed {
                        self.queue.extend(node.replicas.rows_installed(range));
                    }
                }
                if !busy {
                    return;
                }
            }
            panic!("messages never stopped within a tick");
        }

        fn leader(&self) -> NodeId {
            let leaders: Vec<NodeId> = self
                .nodes
                .iter()
                .filter(|(id, n)| {
                    !self.down.contains(id) && n.replicas.status().first().is_some_and(|s| s.is_leader)
                })
                .map(|(id, _)| *id)
                .collect();
            assert_eq!(leaders.len(), 1, "{leaders:?}");
            leaders[0]
        }

        fn write(&mut self, keys: std::ops::Range<u32>) {
            let leader = self.leader();
            for k in keys {
                self.node(leader).replicas.propose(0, format!("k{k}").into_bytes()).unwrap();
            }
            self.settle();
        }

        fn change(&mut self, node: NodeId, change_type: ConfChangeType) {
            let mut cc = ConfChangeV2::default();
            cc.mut_changes().push(ConfChangeSingle { change_type, node_id: node, ..Default::default() });
            let leader = self.leader();
            self.node(leader).replicas.propose_membership(0, cc).unwrap();
            self.settle();
        }
    }

    #[test]
    fn a_replica_is_added_from_a_snapshot_promoted_and_another_removed() {
        let mut net = Net::new(&[1, 2, 3]);
        net.node(1).replicas.campaign(0).unwrap();
        net.settle();
        net.write(0..10);
        assert_eq!(net.node(1).acked, 10);

        // A learner first: it catches up without counting in the majority.
        net.change(4, ConfChangeType::AddLearnerNode);
        // Each node's core snapshot: the log compacted, its checkpoint on the disk with the rows.
        for id in [1, 2, 3] {
            net.checkpoint(id);
            assert_eq!(net.node(id).replicas.entries_behind_applied(0), 0);
        }
        net.settle();
        // Node 4 starts empty and is rebuilt from the leader's snapshot, which names it.
        net.start(4, GroupLog::new(&[]), BTreeSet::new());
        net.write(10..12);
        assert_eq!(net.node(4).snapshots, 1);
        let all = net.node(1).rows.clone();
        assert_eq!(net.node(4).rows, all);

        // Promoted, then the leader hands over and node 1 leaves.
        net.change(4, ConfChangeType::AddNode);
        net.node(1).replicas.transfer_leadership(0, 2).unwrap();
        net.settle();
        assert_eq!(net.leader(), 2);
        net.change(1, ConfChangeType::RemoveNode);
        assert_eq!(net.node(2).memberships.last().unwrap(), &vec![2, 3, 4]);
        let mut voters = net.node(1).replicas.membership(0).unwrap().voters;
        voters.sort_unstable();
        assert_eq!(voters, vec![2, 3, 4]);
        net.node(1).replicas.remove(0);
        assert!(net.node(1).replicas.membership(0).is_none());
        net.down.insert(1);

        // Node 4 now counts: with node 3 down, writes commit on 2 and 4 — across a restart of
        // node 4 from its disk, which holds its vote and the membership it learned.
        net.down.insert(3);
        net.write(12..15);
        assert_eq!(net.node(2).acked, 3);
        let disk = net.node(4).disk.clone();
        let mut voters = disk.conf_state().voters.clone();
        voters.sort_unstable();
        assert_eq!(voters, vec![2, 3, 4]);
        let disk_rows = net.node(4).disk_rows.clone();
        net.start(4, disk, disk_rows);
        net.write(15..20);
        assert_eq!(net.node(2).acked, 8);
        let rows = net.node(2).rows.clone();
        assert_eq!(net.node(4).rows, rows);
        assert_eq!(net.node(2).rows.len(), 20);
    }

    /// A snapshot durable on a node whose store has not taken its rows yet: the replica stays
    /// as it was (not applied, nothing stepped, its rows pending, which holds back the core's
    /// checkpoint), and goes on once the rows are in.
    #[test]
    fn a_replica_waits_for_its_snapshot_rows_to_be_in_the_store() {
        let mut net = Net::new(&[1, 2, 3]);
        net.node(1).replicas.campaign(0).unwrap();
        net.settle();
        net.write(0..10);
        net.change(4, ConfChangeType::AddLearnerNode);
        for id in [1, 2, 3] {
            net.checkpoint(id);
        }
        net.settle();
        net.start(4, GroupLog::new(&[]), BTreeSet::new());
        net.node(4).slow_rows = true;
        net.settle();
        let node = net.node(4);
        assert_eq!(node.held.len(), 1, "node 4 was sent no snapshot");
        assert!(node.replicas.is_installing(0) && node.replicas.rows_pending());
        assert_eq!(node.replicas.applied(0), Some(0));
        // Durable on its disk, as a restart would take it.
        assert!(node.disk.snapshot_index() > 0);
        // Its acknowledgement went with the sync (the rows are durable in its log, which a
        // restart takes them from), but what follows is not stepped while the rows go in.
        net.write(10..12);
        assert!(net.node(4).rows.is_empty());

        net.rows_in(4);
        net.settle();
        let node = net.node(4);
        assert!(!node.replicas.is_installing(0) && !node.replicas.rows_pending());
        assert_eq!(node.snapshots, 1);
        let all = net.node(1).rows.clone();
        assert_eq!(all.len(), 12);
        assert_eq!(net.node(4).rows, all);
        let applied = net.node(1).replicas.applied(0);
        assert_eq!(net.node(4).replicas.applied(0), applied);
    }

    /// Node 3 is lost with its disk; node 4 takes its place: started from the same initial
    /// membership every replica started from, it is brought in by the leader's reconciling
    /// alone, from the log (not compacted) or from a snapshot (compacted).
    #[test]
    fn a_lost_node_is_replaced_by_a_new_one_through_the_leaders_steps() {
        for compacted in [false, true] {
            let mut net = Net::new(&[1, 2, 3]);
            net.node(1).replicas.campaign(0).unwrap();
            net.settle();
            net.write(0..10);
            net.down.insert(3);
            net.nodes.remove(&3);
            if compacted {
                for id in [1, 2] {
                    net.checkpoint(id);
                }
            }
            net.start(4, GroupLog::new(&[1, 2, 3]), BTreeSet::new());
            let target = [1, 2, 4];
            let mut steps = Vec::new();
            for _ in 0..20 {
                let leader = net.leader();
                if let Some(step) = net.node(leader).replicas.reconcile(0, &target, 8) {
                    steps.push(step);
                }
                net.settle();
            }
            assert_eq!(
                steps,
                ["add node 4 as a learner", "promote [4] and remove [3]"],
                "compacted {compacted}"
            );
            for id in [1, 2, 4] {
                let cs = net.node(id).replicas.membership(0).unwrap();
                let mut voters = cs.voters.clone();
                voters.sort_unstable();
                assert_eq!(
                    (voters, cs.voters_outgoing, cs.learners),
                    (vec![1, 2, 4], vec![], vec![]),
                    "node {id}"
                );
            }
            assert_eq!(net.node(4).snapshots, compacted as usize);
            // Only the leader, with no change in flight, tells node 3 its removal committed.
            let leader = net.leader();
            assert!(net.node(leader).replicas.has_removed(0, 3));
            assert!(!net.node(leader).replicas.has_removed(0, 4));
            let follower = [1, 2, 4].into_iter().find(|n| *n != leader).unwrap();
            assert!(!net.node(follower).replicas.has_removed(0, 3));
            let all = net.node(1).rows.clone();
            assert_eq!(net.node(4).rows, all);
            // Node 4 counts now: with node 2 down too, writes commit on 1 and 4.
            net.down.insert(2);
            let acked = net.node(1).acked;
            net.write(10..13);
            assert_eq!(net.node(1).acked, acked + 3);
            assert_eq!(net.node(4).rows.len(), 13);
        }
    }

    #[test]
    fn a_follower_names_the_leader_and_refuses_the_write() {
        let mut net = Net::new(&[1, 2, 3]);
        net.node(2).replicas.campaign(0).unwrap();
        net.settle();
        assert_eq!(
            net.node(1).replicas.propose(0, b"k".to_vec()),
            Err(ProposeError::NotLeader { leader: Some(2) })
        );
        assert_eq!(net.node(1).replicas.propose(7, b"k".to_vec()), Err(ProposeError::UnknownRange(7)));
        let stray = Envelope { range: 0, msg: raft::eraftpb::Message { to: 9, ..Default::default() } };
        assert_eq!(net.node(1).replicas.step(stray), Err(StepError::NotForThisNode { to: 9 }));
    }
}
