//! One replica's Raft log, in memory, behind raft-rs's `Storage`: the entries since its last
//! snapshot, the hard state (term, vote, commit), the membership, and where the log starts (the
//! snapshot's index, term and membership; the rows at that index are in the core's store, and
//! on disk in the core's snapshot or in the install record that brought them).
//!
//! A follower too far behind is sent a snapshot made on demand: raft-rs asks the log for one,
//! the log notes the wish and answers "not yet", the core dumps the range's rows at its applied
//! index ([`GroupLog::offer`]), and raft-rs's next attempt sends it.
//!
//! A log changes only through [`LogWrite`]s, applied by [`GroupLog::apply`]: the replica applies
//! each write to its log in memory as it hands the same write to the core to make durable, and a
//! restart rebuilds the log by applying, in order, the writes that were made durable. One write
//! path, so what a replica served before a crash is what it serves after it, up to the writes
//! that never reached the disk.

use super::RangeId;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

/// A change to a replica's log, in the order it must reach the disk.
#[derive(Clone, Debug, PartialEq)]
pub enum LogWrite {
    /// New entries; an entry at an index the log already holds replaces it and all after it
    /// (a new leader's log wins over an old leader's uncommitted tail).
    Entries(Vec<Entry>),
    HardState(HardState),
    /// The membership after a committed configuration change.
    ConfState(ConfState),
    /// The log now starts after this snapshot: entries up to its index go. Entries after it are
    /// kept when the log holds the snapshot's last entry with the same term (the replica's own
    /// compaction), and dropped otherwise (a snapshot from the leader replaces a log that
    /// disagrees with it), as the Raft paper's InstallSnapshot prescribes. Its data, the
    /// range's rows, goes to the disk with it (an install from the leader) but not into the log
    /// in memory: the core's store holds the rows.
    Snapshot(Snapshot),
    /// The log starts afresh after this snapshot (index, term and membership; no data), with no
    /// entries: the first of the writes a core's checkpoint makes ([`GroupLog::checkpoint`]),
    /// whose rows are in the core's snapshot file.
    Reset(Snapshot),
}

/// Why a write cannot apply to a log: the writes were not the ones a replica made, in order —
/// the disk returned something other than what was written.
#[derive(Debug, PartialEq, Eq)]
pub enum LogError {
    /// Entries that would leave a hole after the log's last index.
    Gap { last_index: u64, first_new: u64 },
    /// Entries that would replace entries already compacted behind the snapshot.
    BeforeSnapshot { snapshot_index: u64, first_new: u64 },
    /// Entries whose indexes do not follow one another.
    NotConsecutive { after: u64, index: u64 },
}

impl std::fmt::Display for LogError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LogError::Gap { last_index, first_new } => {
                write!(f, "entries from {first_new} would leave a gap after {last_index}")
            }
            LogError::BeforeSnapshot { snapshot_index, first_new } => {
                write!(f, "entries from {first_new} fall behind the snapshot at {snapshot_index}")
            }
            LogError::NotConsecutive { after, index } => write!(f, "entry {index} follows {after}"),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct GroupLog {
    hard_state: HardState,
    conf_state: ConfState,
    /// Where the log starts: index and term 0 before the first snapshot; never any data.
    snapshot: Snapshot,
    /// `entries[i].index == snapshot index + 1 + i`.
    entries: Vec<Entry>,
    /// A snapshot with the range's rows, made for a follower that needs one (memory only).
    sendable: Option<Snapshot>,
    /// raft-rs asked for a snapshot and none was there: the core is to make one.
    wanted: std::cell::Cell<bool>,
}

impl GroupLog {
    /// The log of a replica of a new range, before any entry: every replica of the range starts
    /// from the same membership, so none needs a snapshot to learn it.
    pub fn new(voters: &[u64]) -> GroupLog {
        let mut log = GroupLog::default();
        log.conf_state.voters = voters.to_vec();
        log.snapshot.mut_metadata().set_conf_state(log.conf_state.clone());
        log
    }

    pub fn apply(&mut self, write: &LogWrite) -> Result<(), LogError> {
        match write {
            LogWrite::Entries(entries) => self.append(entries),
            LogWrite::HardState(hs) => {
                self.hard_state = hs.clone();
                Ok(())
            }
            LogWrite::ConfState(cs) => {
                self.conf_state = cs.clone();
                Ok(())
            }
            LogWrite::Snapshot(snapshot) => {
                self.install(snapshot);
                Ok(())
            }
            LogWrite::Reset(start) => {
                self.snapshot = Snapshot::default();
                self.snapshot.set_metadata(start.get_metadata().clone());
                self.conf_state = start.get_metadata().get_conf_state().clone();
                self.entries.clear();
                self.sendable = None;
                Ok(())
            }
        }
    }

    /// The writes that make a log this one, on their own: what a core's snapshot writes after
    /// it, so that the logs before it can go.
    pub fn checkpoint(&self) -> Vec<LogWrite> {
        let mut writes = vec![
            LogWrite::Reset(self.snapshot.clone()),
            LogWrite::ConfState(self.conf_state.clone()),
            LogWrite::HardState(self.hard_state.clone()),
        ];
        if !self.entries.is_empty() {
            writes.push(LogWrite::Entries(self.entries.clone()));
        }
        writes
    }

    /// Drop the entries up to `index` (applied, of `term`), whose effect is in the rows.
    pub fn compact(&mut self, index: u64, term: u64) {
        if index <= self.snapshot_index() {
            return;
        }
        let mut start = Snapshot::default();
        start.mut_metadata().index = index;
        start.mut_metadata().term = term;
        start.mut_metadata().set_conf_state(self.conf_state.clone());
        self.install(&start);
    }

    /// The snapshot raft-rs asked for: `rows` (the range's rows in the snapshot file format) at
    /// `index`, an applied index, of `term`, with the membership applied then.
    pub fn offer(&mut self, index: u64, term: u64, conf_state: ConfState, rows: Vec<u8>) {
        self.wanted.set(false);
        let mut s = Snapshot { data: rows.into(), ..Snapshot::default() };
        s.mut_metadata().index = index;
        s.mut_metadata().term = term;
        s.mut_metadata().set_conf_state(conf_state);
        self.sendable = Some(s);
    }

    /// Whether raft-rs asked for a snapshot this log has not got.
    pub fn wants_snapshot(&self) -> bool {
        self.wanted.get()
    }

    /// The snapshot made for a follower has gone (or failed to): its memory is freed.
    pub fn sent(&mut self) {
        self.sendable = None;
    }

    fn append(&mut self, new: &[Entry]) -> Result<(), LogError> {
        let Some(first) = new.first() else { return Ok(()) };
        for pair in new.windows(2) {
            if pair[1].index != pair[0].index + 1 {
                return Err(LogError::NotConsecutive { after: pair[0].index, index: pair[1].index });
            }
        }
        let snapshot_index = self.snapshot_index();
        if first.index <= snapshot_index {
            return Err(LogError::BeforeSnapshot { snapshot_index, first_new: first.index });
        }
        if first.index > self.last() + 1 {
            return Err(LogError::Gap { last_index: self.last(), first_new: first.index });
        }
        self.entries.truncate((first.index - snapshot_index - 1) as usize);
        self.entries.extend_from_slice(new);
        Ok(())
    }

    fn install(&mut self, snapshot: &Snapshot) {
        let meta = snapshot.get_metadata();
        let (index, term) = (meta.index, meta.term);
        if index <= self.snapshot_index() {
            return;
        }
        let kept = self.entry(index).is_some_and(|e| e.term == term);
        if kept {
            let drop = (index - self.snapshot_index()) as usize;
            self.entries.drain(..drop);
        } else {
            self.entries.clear();
        }
        self.conf_state = meta.get_conf_state().clone();
        if self.hard_state.commit < index {
            self.hard_state.commit = index;
        }
        if self.hard_state.term < term {
            self.hard_state.term = term;
        }
        self.snapshot = Snapshot::default();
        self.snapshot.set_metadata(meta.clone());
        if self.sendable.as_ref().is_some_and(|s| s.get_metadata().index < index) {
            self.sendable = None;
        }
    }

    fn entry(&self, index: u64) -> Option<&Entry> {
        let offset = index.checked_sub(self.snapshot_index() + 1)?;
        self.entries.get(offset as usize)
    }

    pub fn snapshot_index(&self) -> u64 {
        self.snapshot.get_metadata().index
    }

    fn last(&self) -> u64 {
        self.snapshot_index() + self.entries.len() as u64
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    /// The entries the log holds, for replay and for tests.
    pub fn held(&self) -> &[Entry] {
        &self.entries
    }
}

impl Storage for GroupLog {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(self.hard_state.clone(), self.conf_state.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let first = self.snapshot_index() + 1;
        if low < first {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last() + 1 || low > high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let mut out = self.entries[(low - first) as usize..(high - first) as usize].to_vec();
        raft::util::limit_size(&mut out, max_size.into());
        Ok(out)
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        let snapshot_index = self.snapshot_index();
        if index == snapshot_index {
            return Ok(self.snapshot.get_metadata().term);
        }
        if index < snapshot_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        self.entry(index).map(|e| e.term).ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.snapshot_index() + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        // Made on demand (the rows are the store's, not the log's); raft-rs tries again later.
        match &self.sendable {
            Some(s) if s.get_metadata().index >= request_index.max(self.snapshot_index()) => Ok(s.clone()),
            _ => {
                self.wanted.set(true);
                Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable))
            }
        }
    }
}

// ---- In the core's write-ahead log ----
//
// A write is one or more records of the core's log (`durability`, op OP_RAFT), each
// `range: u32 LE | kind: u8 | body`: for entries, each entry as `length: u32 LE | protobuf`; for
// the others, the protobuf of the hard state, membership or snapshot. Entries are split over
// records so that none is longer than the log's reader accepts; an installed snapshot's rows go
// first, in pieces (KIND_SNAPSHOT_ROWS), and its record, without them, last.

const KIND_ENTRIES: u8 = 1;
const KIND_HARD_STATE: u8 = 2;
const KIND_CONF_STATE: u8 = 3;
const KIND_SNAPSHOT: u8 = 4;
const KIND_RESET: u8 = 5;
const KIND_SNAPSHOT_ROWS: u8 = 6;
const KIND_DROPPED: u8 = 7;

/// Whether a Raft record (its body, as `decode_record` takes it) is a checkpoint's reset: what a
/// restart may start a replica's log at only when its snapshot is the one restored.
pub fn is_reset(body: &[u8]) -> bool {
    body.get(HEAD_BYTES - 1) == Some(&KIND_RESET)
}

/// The record that says this core holds no replica of `range` any more (a membership change
/// moved it to other nodes): a restart makes no log for it, and its rows go from the store.
pub fn encode_dropped(range: RangeId) -> Vec<u8> {
    let mut out = Vec::new();
    crate::durability::encode_raft(&mut out, &[]);
    out.extend_from_slice(&range.to_le_bytes());
    out.push(KIND_DROPPED);
    out
}
const HEAD_BYTES: usize = 5;

/// The payloads of the log records that hold `write` of `range`, none over `payload_bytes_max`.
/// A single entry longer than that is refused: an entry holds one statement, far shorter.
pub fn encode_records(
    range: RangeId,
    write: &LogWrite,
    payload_bytes_max: usize,
) -> Result<Vec<Vec<u8>>, String> {
    let head = |kind: u8, out: &mut Vec<u8>| {
        crate::durability::encode_raft(out, &[]);
        out.extend_from_slice(&range.to_le_bytes());
        out.push(kind);
    };
    let one = |kind: u8, m: &dyn protobuf::Message| -> Result<Vec<Vec<u8>>, String> {
        let mut out = Vec::new();
        head(kind, &mut out);
        m.write_to_vec(&mut out).map_err(|e| e.to_string())?;
        if out.len() > payload_bytes_max {
            return Err(format!("a Raft record of {} bytes (at most {payload_bytes_max})", out.len()));
        }
        Ok(vec![out])
    };
    match write {
        LogWrite::HardState(hs) => one(KIND_HARD_STATE, hs),
        LogWrite::ConfState(cs) => one(KIND_CONF_STATE, cs),
        LogWrite::Reset(start) => {
            let mut meta = Snapshot::default();
            meta.set_metadata(start.get_metadata().clone());
            one(KIND_RESET, &meta)
        }
        LogWrite::Snapshot(snapshot) => {
            let room = payload_bytes_max.saturating_sub(1 + HEAD_BYTES + 16).max(1);
            let total = snapshot.data.len() as u64;
            let mut records = Vec::new();
            for (i, piece) in snapshot.data.chunks(room).enumerate() {
                let mut out = Vec::with_capacity(1 + HEAD_BYTES + 16 + piece.len());
                head(KIND_SNAPSHOT_ROWS, &mut out);
                out.extend_from_slice(&total.to_le_bytes());
                out.extend_from_slice(&((i * room) as u64).to_le_bytes());
                out.extend_from_slice(piece);
                records.push(out);
            }
            let mut meta = Snapshot::default();
            meta.set_metadata(snapshot.get_metadata().clone());
            records.extend(one(KIND_SNAPSHOT, &meta)?);
            Ok(records)
        }
        LogWrite::Entries(entries) => {
            let mut records = Vec::new();
            let mut out = Vec::new();
            for e in entries {
                let len = protobuf::Message::compute_size(e) as usize;
                if 1 + HEAD_BYTES + 4 + len > payload_bytes_max {
                    return Err(format!(
                        "a Raft entry of {len} bytes (at most {payload_bytes_max} a record)"
                    ));
                }
                if !out.is_empty() && out.len() + 4 + len > payload_bytes_max {
                    records.push(std::mem::take(&mut out));
                }
                if out.is_empty() {
                    head(KIND_ENTRIES, &mut out);
                }
                out.extend_from_slice(&(len as u32).to_le_bytes());
                protobuf::Message::write_to_vec(e, &mut out).map_err(|e| e.to_string())?;
            }
            if !out.is_empty() {
                records.push(out);
            }
            Ok(records)
        }
    }
}

/// One record of a range's log: a write, or a piece of the rows of the snapshot whose record
/// follows (`total` bytes of them, this piece at `offset`: a crash mid-install leaves pieces
/// with no record, and the next install's first piece, at offset 0, starts over).
#[derive(Debug, PartialEq)]
pub enum Record {
    Write(LogWrite),
    SnapshotRows { total: u64, offset: u64, bytes: Vec<u8> },
    Dropped,
}

/// A record, from the body of a `Payload::Raft` (what follows the op byte). Bytes that passed
/// the log's checksum but do not decode are damage, said so, never a panic.
pub fn decode_record(body: &[u8]) -> Result<(RangeId, Record), String> {
    use protobuf::Message as _;
    let Some((head, mut rest)) = body.split_first_chunk::<{ HEAD_BYTES }>() else {
        return Err("a Raft record cut short".into());
    };
    let range = RangeId::from_le_bytes(head[..4].try_into().expect("4 bytes"));
    let bad = |what: &str, e: protobuf::ProtobufError| format!("a Raft record's {what} does not decode: {e}");
    let write = match head[4] {
        KIND_HARD_STATE => {
            LogWrite::HardState(HardState::parse_from_bytes(rest).map_err(|e| bad("hard state", e))?)
        }
        KIND_CONF_STATE => {
            LogWrite::ConfState(ConfState::parse_from_bytes(rest).map_err(|e| bad("membership", e))?)
        }
        KIND_SNAPSHOT => {
            LogWrite::Snapshot(Snapshot::parse_from_bytes(rest).map_err(|e| bad("snapshot", e))?)
        }
        KIND_RESET => LogWrite::Reset(Snapshot::parse_from_bytes(rest).map_err(|e| bad("reset", e))?),
        KIND_DROPPED if rest.is_empty() => return Ok((range, Record::Dropped)),
        KIND_SNAPSHOT_ROWS => {
            let Some((at, bytes)) = rest.split_first_chunk::<16>() else {
                return Err("a snapshot's rows record cut short".into());
            };
            let total = u64::from_le_bytes(at[..8].try_into().expect("8 bytes"));
            let offset = u64::from_le_bytes(at[8..].try_into().expect("8 bytes"));
            return Ok((range, Record::SnapshotRows { total, offset, bytes: bytes.to_vec() }));
        }
        KIND_ENTRIES => {
            let mut entries = Vec::new();
            while !rest.is_empty() {
                let Some((len, tail)) = rest.split_first_chunk::<4>() else {
                    return Err("a Raft entry's length cut short".into());
                };
                let len = u32::from_le_bytes(*len) as usize;
                if len > tail.len() {
                    return Err(format!("a Raft entry of {len} bytes in {} left", tail.len()));
                }
                entries.push(Entry::parse_from_bytes(&tail[..len]).map_err(|e| bad("entry", e))?);
                rest = &tail[len..];
            }
            LogWrite::Entries(entries)
        }
        other => return Err(format!("a Raft record of unknown kind {other}")),
    };
    Ok((range, Record::Write(write)))
}

/// A snapshot installed from a leader, as the disk holds it: the range's rows at `index`.
#[derive(Debug, PartialEq)]
pub struct Installed {
    pub range: RangeId,
    pub index: u64,
    pub rows: Vec<u8>,
}

/// Each range's log, rebuilt from a core's Raft records in the order its log holds them,
/// starting from `logs` (new logs for the core's ranges); and the snapshots installed since the
/// core's snapshot, whose rows the store must take. A range's log starts at its last reset
/// (the core's snapshot's checkpoint), which holds everything before it: the records before it
/// may follow logs already removed. A record for a range not in `logs`, or one that does not
/// follow its log, is damage.
pub fn rebuild<'a>(
    logs: &mut std::collections::BTreeMap<RangeId, GroupLog>,
    records: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Vec<Installed>, String> {
    rebuild_with(logs, records, &|_| None).map(|(installed, _)| installed)
}

/// [`rebuild`], where a record of a range not in `logs` starts the log `fresh` makes for it
/// (None: not this core's, damage), and a dropped range's log goes (made anew if its records
/// go on, and when it was in `logs` to begin with). Also: the ranges dropped since their last
/// checkpoint, whose rows the store must lose before it takes the installed ones.
#[allow(clippy::type_complexity)]
pub fn rebuild_with<'a>(
    logs: &mut std::collections::BTreeMap<RangeId, GroupLog>,
    records: impl IntoIterator<Item = &'a [u8]>,
    fresh: &dyn Fn(RangeId) -> Option<GroupLog>,
) -> Result<(Vec<Installed>, Vec<RangeId>), String> {
    let mut decoded = Vec::new();
    let wanted: Vec<RangeId> = logs.keys().copied().collect();
    // Per range, where its log starts: its last checkpoint, or after it was last dropped.
    let mut last_reset = std::collections::BTreeMap::new();
    for (i, body) in records.into_iter().enumerate() {
        let (range, record) = decode_record(body).map_err(|e| format!("Raft record {i}: {e}"))?;
        if let std::collections::btree_map::Entry::Vacant(v) = logs.entry(range) {
            match fresh(range) {
                Some(log) => {
                    v.insert(log);
                }
                None => return Err(format!("Raft record {i}: range {range} is not this core's")),
            }
        }
        if matches!(record, Record::Write(LogWrite::Reset(_)) | Record::Dropped) {
            last_reset.insert(range, i);
        }
        decoded.push((range, record));
    }
    let mut dropped = Vec::new();
    // Per range, the rows of the install under way and how long they will be.
    let mut rows: std::collections::BTreeMap<RangeId, (u64, Vec<u8>)> = Default::default();
    let mut installed: std::collections::BTreeMap<RangeId, Installed> = Default::default();
    for (i, (range, record)) in decoded.into_iter().enumerate() {
        if last_reset.get(&range).is_some_and(|r| i < *r) {
            continue;
        }
        let write = match record {
            Record::Dropped => {
                logs.remove(&range);
                rows.remove(&range);
                installed.remove(&range);
                dropped.push(range);
                continue;
            }
            Record::SnapshotRows { total, offset, bytes } => {
                let at = rows.entry(range).or_default();
                if offset == 0 {
                    *at = (total, Vec::new());
                }
                if at.0 != total || at.1.len() as u64 != offset || offset + bytes.len() as u64 > total {
                    return Err(format!("Raft record {i}, range {range}: snapshot rows out of order"));
                }
                at.1.extend_from_slice(&bytes);
                continue;
            }
            Record::Write(w) => w,
        };
        let log = match logs.entry(range) {
            std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
            // Records after the range was dropped: it came back (a later membership change).
            std::collections::btree_map::Entry::Vacant(v) => v.insert(
                fresh(range).ok_or_else(|| format!("Raft record {i}: range {range} is not this core's"))?,
            ),
        };
        log.apply(&write).map_err(|e| format!("Raft record {i}, range {range}: {e}"))?;
        match write {
            LogWrite::Snapshot(s) => {
                let data = match rows.remove(&range) {
                    Some((total, data)) if data.len() as u64 == total && total > 0 => data,
                    _ => return Err(format!("Raft record {i}, range {range}: a snapshot without its rows")),
                };
                installed.insert(range, Installed { range, index: s.get_metadata().index, rows: data });
            }
            LogWrite::Reset(_) => {
                installed.remove(&range);
            }
            _ => {}
        }
    }
    for range in wanted.into_iter().filter(|r| !dropped.contains(r)) {
        if let (std::collections::btree_map::Entry::Vacant(v), Some(log)) = (logs.entry(range), fresh(range))
        {
            v.insert(log);
        }
    }
    // Rows left without their record were an install a crash cut short: never promised.
    Ok((installed.into_values().collect(), dropped))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry { index, term, data: vec![index as u8].into(), ..Default::default() }
    }

    fn snapshot(index: u64, term: u64, data: &[u8]) -> Snapshot {
        let mut s = Snapshot { data: data.to_vec().into(), ..Default::default() };
        s.mut_metadata().index = index;
        s.mut_metadata().term = term;
        s.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
        s
    }

    fn terms(log: &GroupLog) -> Vec<(u64, u64)> {
        log.held().iter().map(|e| (e.index, e.term)).collect()
    }

    #[test]
    fn a_new_leaders_entries_replace_an_uncommitted_tail() {
        let mut log = GroupLog::new(&[1, 2, 3]);
        log.apply(&LogWrite::Entries((1..=5).map(|i| entry(i, 1)).collect())).unwrap();
        log.apply(&LogWrite::Entries(vec![entry(4, 2)])).unwrap();
        assert_eq!(terms(&log), vec![(1, 1), (2, 1), (3, 1), (4, 2)]);
        assert_eq!(log.last_index().unwrap(), 4);
        assert_eq!(log.term(4).unwrap(), 2);
        assert_eq!(log.term(5), Err(raft::Error::Store(StorageError::Unavailable)));
    }

    #[test]
    fn writes_that_were_not_made_in_order_are_refused_and_change_nothing() {
        let mut log = GroupLog::new(&[1]);
        log.apply(&LogWrite::Entries(vec![entry(1, 1), entry(2, 1)])).unwrap();
        let before = log.clone();
        assert_eq!(
            log.apply(&LogWrite::Entries(vec![entry(4, 1)])),
            Err(LogError::Gap { last_index: 2, first_new: 4 })
        );
        assert_eq!(
            log.apply(&LogWrite::Entries(vec![entry(3, 1), entry(5, 1)])),
            Err(LogError::NotConsecutive { after: 3, index: 5 })
        );
        log.apply(&LogWrite::Snapshot(snapshot(2, 1, b"rows"))).unwrap();
        let compacted = log.clone();
        assert_eq!(
            log.apply(&LogWrite::Entries(vec![entry(2, 1)])),
            Err(LogError::BeforeSnapshot { snapshot_index: 2, first_new: 2 })
        );
        assert_eq!(log, compacted);
        assert_ne!(before, compacted);
    }

    #[test]
    fn compaction_keeps_the_entries_after_the_snapshot() {
        let mut log = GroupLog::new(&[1, 2, 3]);
        log.apply(&LogWrite::Entries((1..=6).map(|i| entry(i, 1)).collect())).unwrap();
        log.apply(&LogWrite::Snapshot(snapshot(4, 1, b"rows at 4"))).unwrap();
        assert_eq!(terms(&log), vec![(5, 1), (6, 1)]);
        assert_eq!(log.first_index().unwrap(), 5);
        assert_eq!(log.term(4).unwrap(), 1);
        assert_eq!(log.term(3), Err(raft::Error::Store(StorageError::Compacted)));
        let ctx = GetEntriesContext::empty(false);
        assert_eq!(log.entries(4, 6, None, ctx), Err(raft::Error::Store(StorageError::Compacted)));
        let ctx = GetEntriesContext::empty(false);
        assert_eq!(log.entries(5, 7, None, ctx).unwrap().len(), 2);
        // An older snapshot changes nothing.
        let before = log.clone();
        log.apply(&LogWrite::Snapshot(snapshot(2, 1, b"old"))).unwrap();
        assert_eq!(log, before);
        // The log compacts itself behind what was applied.
        log.compact(5, 1);
        assert_eq!(terms(&log), vec![(6, 1)]);
        log.compact(3, 1);
        assert_eq!(log.first_index().unwrap(), 6);
    }

    #[test]
    fn a_snapshot_to_send_is_made_when_raft_asks_and_freed_once_sent() {
        let mut log = GroupLog::new(&[1, 2, 3]);
        log.apply(&LogWrite::Entries((1..=6).map(|i| entry(i, 1)).collect())).unwrap();
        log.compact(4, 1);
        assert!(!log.wants_snapshot());
        assert_eq!(log.snapshot(0, 2), Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable)));
        assert!(log.wants_snapshot());
        log.offer(6, 1, log.conf_state().clone(), b"rows at 6".to_vec());
        assert!(!log.wants_snapshot());
        let s = log.snapshot(0, 2).unwrap();
        assert_eq!((s.get_metadata().index, s.data.as_ref()), (6, &b"rows at 6"[..]));
        assert_eq!(s.get_metadata().get_conf_state().voters, vec![1, 2, 3]);
        // Asked for a newer one than it has: made again.
        assert!(log.snapshot(7, 2).is_err());
        assert!(log.wants_snapshot());
        log.sent();
        assert!(log.snapshot(0, 2).is_err());
        // One older than the log's start is dropped by the compaction that passes it.
        log.offer(5, 1, log.conf_state().clone(), b"rows at 5".to_vec());
        log.compact(6, 1);
        assert!(log.snapshot(0, 2).is_err());
    }

    /// A core's checkpoint makes each log on its own: rebuilt from its last reset, the records
    /// before it (of logs removed since, or leftovers of the rotation) are passed over.
    #[test]
    fn a_checkpoints_reset_is_told_from_other_records() {
        let log = GroupLog::new(&[1, 2, 3]);
        for w in log.checkpoint() {
            for body in encode_records(7, &w, 1 << 20).unwrap() {
                let body = &body[1..];
                assert_eq!(is_reset(body), matches!(w, LogWrite::Reset(_)), "{w:?}");
                assert_eq!(decode_record(body).unwrap().0, 7);
            }
        }
        assert!(!is_reset(&encode_dropped(7)[1..]));
        assert!(!is_reset(&[]));
    }

    #[test]
    fn a_log_rebuilds_from_its_last_checkpoint() {
        use std::collections::BTreeMap;
        let hs = HardState { term: 3, vote: 2, commit: 5, ..Default::default() };
        let mut live = GroupLog::new(&[1, 2, 3]);
        let mut records = Vec::new();
        let write = |live: &mut GroupLog, w: LogWrite, records: &mut Vec<Vec<u8>>| {
            live.apply(&w).unwrap();
            records.extend(encode_records(0, &w, 1 << 20).unwrap());
        };
        write(&mut live, LogWrite::Entries((1..=6).map(|i| entry(i, 1)).collect()), &mut records);
        write(&mut live, LogWrite::HardState(hs.clone()), &mut records);
        live.compact(5, 1);
        let checkpoint = live.checkpoint();
        assert!(matches!(checkpoint[0], LogWrite::Reset(_)));
        // What reaches the log between the rotation and the checkpoint is in the checkpoint.
        let mut newer: Vec<Vec<u8>> =
            encode_records(0, &LogWrite::Entries(vec![entry(6, 1)]), 1 << 20).unwrap();
        for w in &checkpoint {
            newer.extend(encode_records(0, w, 1 << 20).unwrap());
        }
        write(&mut live, LogWrite::Entries(vec![entry(7, 3)]), &mut newer);
        let bodies = |rs: &[Vec<u8>]| rs.iter().map(|r| r[1..].to_vec()).collect::<Vec<_>>();
        // With the older records, and without (they were in logs the snapshot removed).
        for all in [[records.clone(), newer.clone()].concat(), newer.clone()] {
            let mut logs: BTreeMap<RangeId, GroupLog> = [(0, GroupLog::new(&[1, 2, 3]))].into();
            let b = bodies(&all);
            assert_eq!(rebuild(&mut logs, b.iter().map(|b| &b[..])).unwrap(), vec![]);
            assert_eq!(logs[&0], live);
            assert_eq!(terms(&logs[&0]), vec![(6, 1), (7, 3)]);
            assert_eq!(logs[&0].hard_state(), &hs);
            assert_eq!(logs[&0].snapshot_index(), 5);
        }
    }

    /// An installed snapshot's rows are on disk with it, in pieces: rebuilt, they come back
    /// for the store; a crash mid-install leaves pieces that are passed over; a checkpoint
    /// after the install holds the rows in the core's snapshot instead.
    #[test]
    fn an_installed_snapshot_comes_back_with_its_rows() {
        use std::collections::BTreeMap;
        let rows: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
        let install = encode_records(2, &LogWrite::Snapshot(snapshot(8, 3, &rows)), 4096).unwrap();
        assert_eq!(install.len(), 4, "three pieces of rows and the snapshot's record");
        let cut_short = &install[..2];
        let b: Vec<Vec<u8>> = [cut_short, &install[..]].concat().iter().map(|r| r[1..].to_vec()).collect();
        let mut logs: BTreeMap<RangeId, GroupLog> = [(2, GroupLog::new(&[1, 2, 3]))].into();
        let installed = rebuild(&mut logs, b.iter().map(|b| &b[..])).unwrap();
        assert_eq!(installed, vec![Installed { range: 2, index: 8, rows: rows.clone() }]);
        assert_eq!(logs[&2].snapshot_index(), 8);
        // Pieces of an install a crash cut short, at the end: nothing installed.
        let b: Vec<Vec<u8>> = install[..3].iter().map(|r| r[1..].to_vec()).collect();
        let mut logs: BTreeMap<RangeId, GroupLog> = [(2, GroupLog::new(&[1, 2, 3]))].into();
        assert_eq!(rebuild(&mut logs, b.iter().map(|b| &b[..])).unwrap(), vec![]);
        assert_eq!(logs[&2].snapshot_index(), 0);
        // A checkpoint after it: the rows are the core snapshot's.
        let mut log = GroupLog::new(&[1, 2, 3]);
        log.apply(&LogWrite::Snapshot(snapshot(8, 3, &rows))).unwrap();
        let mut all = install.clone();
        for w in log.checkpoint() {
            all.extend(encode_records(2, &w, 4096).unwrap());
        }
        let b: Vec<Vec<u8>> = all.iter().map(|r| r[1..].to_vec()).collect();
        let mut logs: BTreeMap<RangeId, GroupLog> = [(2, GroupLog::new(&[1, 2, 3]))].into();
        assert_eq!(rebuild(&mut logs, b.iter().map(|b| &b[..])).unwrap(), vec![]);
        assert_eq!(logs[&2], log);
        // Pieces out of order, or a snapshot record with no rows before it: damage.
        let b: Vec<Vec<u8>> = [&install[1], &install[0]].iter().map(|r| r[1..].to_vec()).collect();
        let mut logs: BTreeMap<RangeId, GroupLog> = [(2, GroupLog::new(&[1, 2, 3]))].into();
        assert!(rebuild(&mut logs, b.iter().map(|b| &b[..])).unwrap_err().contains("out of order"));
        let b = install[3][1..].to_vec();
        let mut logs: BTreeMap<RangeId, GroupLog> = [(2, GroupLog::new(&[1, 2, 3]))].into();
        assert!(rebuild(&mut logs, [&b[..]]).unwrap_err().contains("without its rows"));
    }

    #[test]
    fn a_leaders_snapshot_replaces_a_log_that_disagrees() {
        let mut log = GroupLog::new(&[1, 2, 3]);
        log.apply(&LogWrite::Entries((1..=6).map(|i| entry(i, 1)).collect())).unwrap();
        log.apply(&LogWrite::Snapshot(snapshot(8, 3, b"rows at 8"))).unwrap();
        assert!(log.held().is_empty());
        assert_eq!((log.first_index().unwrap(), log.last_index().unwrap()), (9, 8));
        assert_eq!(log.hard_state().commit, 8);
        assert_eq!(log.hard_state().term, 3);
        log.apply(&LogWrite::Entries(vec![entry(9, 3)])).unwrap();
        assert_eq!(log.last_index().unwrap(), 9);
    }

    #[test]
    fn entries_out_of_the_log_are_an_error_not_a_panic() {
        let log = GroupLog::new(&[1]);
        let ctx = GetEntriesContext::empty(false);
        assert!(log.entries(1, 5, None, ctx).is_err());
        let ctx = GetEntriesContext::empty(false);
        assert!(log.entries(3, 2, None, ctx).is_err());
        assert!(log.snapshot(0, 1).is_err());
    }

    /// A core's log as the durability layer writes it: writes of two ranges, sealed (and
    /// encrypted) as records, scanned back and rebuilt; a crash's torn tail loses only the
    /// last write.
    #[test]
    fn writes_survive_the_core_log_and_rebuild_the_same_logs() {
        use crate::durability::{
            file_header, scan_file, seal_record, Cipher, FileId, FileKind, Payload, Tail,
        };
        use std::collections::BTreeMap;
        let big = Entry { index: 3, term: 1, data: vec![9u8; 3040].into(), ..Default::default() };
        let hs = HardState { term: 2, vote: 1, commit: 3, ..Default::default() };
        let writes: Vec<(RangeId, LogWrite)> = vec![
            (0, LogWrite::Entries(vec![entry(1, 1), entry(2, 1), big])),
            (5, LogWrite::Entries(vec![entry(1, 1)])),
            (0, LogWrite::HardState(hs)),
            (0, LogWrite::Entries(vec![entry(3, 2)])),
            (5, LogWrite::ConfState(ConfState { voters: vec![1, 2, 3, 4], ..Default::default() })),
            (0, LogWrite::Snapshot(snapshot(2, 1, b"rows at 2"))),
            (5, LogWrite::Entries(vec![entry(2, 1)])),
        ];
        let mut expected: BTreeMap<RangeId, GroupLog> =
            [(0, GroupLog::new(&[1, 2, 3])), (5, GroupLog::new(&[1, 2, 3]))].into();
        for (range, w) in &writes {
            expected.get_mut(range).unwrap().apply(w).unwrap();
        }
        let file = FileId { kind: FileKind::Log, generation: 1, shard: 0, index: 1 };
        let key = [7u8; 32];
        for cipher in [None, Some(Cipher::new(&key))] {
            let mut data = file_header(FileKind::Log, cipher.as_ref()).to_vec();
            let mut ends = Vec::new();
            let mut seq = 0;
            for (range, w) in &writes {
                // Records of at most 3 KiB: the first write's three entries take two.
                let payloads = encode_records(*range, w, 3072).unwrap();
                // The first write's three entries take two; the snapshot's rows go ahead of it.
                let two = seq == 0 || matches!(w, LogWrite::Snapshot(_));
                assert_eq!(payloads.len(), if two { 2 } else { 1 });
                for payload in payloads {
                    seq += 1;
                    let at = data.len() as u64;
                    seal_record(&mut data, &payload, &file, at, seq, cipher.as_ref());
                }
                ends.push(data.len());
            }
            let scan = scan_file(&data, &file, cipher.as_ref()).unwrap();
            assert_eq!(scan.tail, Tail::Clean);
            let bodies: Vec<Vec<u8>> = scan
                .records
                .into_iter()
                .map(|(_, p)| match p {
                    Payload::Raft(b) => b,
                    other => panic!("{other:?}"),
                })
                .collect();
            let mut logs: BTreeMap<RangeId, GroupLog> =
                [(0, GroupLog::new(&[1, 2, 3])), (5, GroupLog::new(&[1, 2, 3]))].into();
            let installed = rebuild(&mut logs, bodies.iter().map(|b| b.as_slice())).unwrap();
            assert_eq!(logs, expected);
            assert_eq!(installed, vec![Installed { range: 0, index: 2, rows: b"rows at 2".to_vec() }]);

            // Torn in the last write: everything before it is rebuilt.
            let cut = &data[..ends[ends.len() - 1] - 3];
            let scan = scan_file(cut, &file, cipher.as_ref()).unwrap();
            assert!(matches!(scan.tail, Tail::Torn { .. }));
            let bodies: Vec<Vec<u8>> = scan
                .records
                .into_iter()
                .map(|(_, p)| match p {
                    Payload::Raft(b) => b,
                    _ => unreachable!(),
                })
                .collect();
            let mut logs: BTreeMap<RangeId, GroupLog> =
                [(0, GroupLog::new(&[1, 2, 3])), (5, GroupLog::new(&[1, 2, 3]))].into();
            rebuild(&mut logs, bodies.iter().map(|b| b.as_slice())).unwrap();
            assert_eq!(logs[&0], expected[&0]);
            assert_eq!(logs[&5].held().len(), 1);
        }
    }

    #[test]
    fn records_that_do_not_decode_or_do_not_follow_are_refused() {
        use std::collections::BTreeMap;
        let records = encode_records(3, &LogWrite::Entries(vec![entry(1, 1), entry(2, 1)]), 1 << 20).unwrap();
        // The op byte is the durability layer's; the body follows it.
        let body = &records[0][1..];
        for cut in 0..body.len() {
            let _ = decode_record(&body[..cut]);
        }
        assert!(decode_record(&body[..3]).is_err());
        let mut damaged = body.to_vec();
        damaged[4] = 9;
        assert!(decode_record(&damaged).unwrap_err().contains("unknown kind"));
        let mut logs: BTreeMap<RangeId, GroupLog> = [(1, GroupLog::new(&[1]))].into();
        assert!(rebuild(&mut logs, [body]).unwrap_err().contains("not this core's"));
        let gap = encode_records(1, &LogWrite::Entries(vec![entry(5, 1)]), 1 << 20).unwrap();
        assert!(rebuild(&mut logs, [&gap[0][1..]]).unwrap_err().contains("gap"));
        let huge = LogWrite::Entries(vec![Entry {
            index: 1,
            term: 1,
            data: vec![0; 5000].into(),
            ..Default::default()
        }]);
        assert!(encode_records(1, &huge, 4096).unwrap_err().contains("at most 4096"));
    }
}
