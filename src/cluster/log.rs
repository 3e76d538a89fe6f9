//! One replica's Raft log, in memory, behind raft-rs's `Storage`: the entries since its last
//! snapshot, the hard state (term, vote, commit), the membership, and the snapshot itself (its
//! data is the range's rows at the snapshot's index, which a follower too far behind is sent).
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
    /// disagrees with it), as the Raft paper's InstallSnapshot prescribes.
    Snapshot(Snapshot),
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
    /// Index and term 0 before the first snapshot.
    snapshot: Snapshot,
    /// `entries[i].index == snapshot index + 1 + i`.
    entries: Vec<Entry>,
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
                self.install(snapshot.clone());
                Ok(())
            }
        }
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

    fn install(&mut self, snapshot: Snapshot) {
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
        self.snapshot = snapshot;
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

    /// The snapshot the log starts after, with the range's rows at its index.
    pub fn snapshot_data(&self) -> &[u8] {
        &self.snapshot.data
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
        // The replica compacts behind a snapshot of what it applied; a follower that asks for a
        // newer one waits for the next compaction.
        if self.snapshot_index() < request_index || self.snapshot_index() == 0 {
            return Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable));
        }
        Ok(self.snapshot.clone())
    }
}

// ---- In the core's write-ahead log ----
//
// A write is one or more records of the core's log (`durability`, op OP_RAFT), each
// `range: u32 LE | kind: u8 | body`: for entries, each entry as `length: u32 LE | protobuf`; for
// the others, the protobuf of the hard state, membership or snapshot. Entries are split over
// records so that none is longer than the log's reader accepts.

const KIND_ENTRIES: u8 = 1;
const KIND_HARD_STATE: u8 = 2;
const KIND_CONF_STATE: u8 = 3;
const KIND_SNAPSHOT: u8 = 4;
const HEAD_BYTES: usize = 5;

/// The payloads of the log records that hold `write` of `range`, none over `payload_bytes_max`.
/// A snapshot or a single entry longer than that is refused: snapshots too big for one record
/// belong in snapshot files (not built yet), and an entry holds one statement, far shorter.
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
        LogWrite::Snapshot(snapshot) => one(KIND_SNAPSHOT, snapshot),
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

/// A record's write, from the body of a `Payload::Raft` (what follows the op byte). Bytes that
/// passed the log's checksum but do not decode are damage, said so, never a panic.
pub fn decode_record(body: &[u8]) -> Result<(RangeId, LogWrite), String> {
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
    Ok((range, write))
}

/// Each range's log, rebuilt from a core's Raft records in the order its log holds them,
/// starting from `logs` (each range's log as of the core's last snapshot, or new). A record
/// for a range not in `logs`, or one that does not follow its log, is damage.
pub fn rebuild<'a>(
    logs: &mut std::collections::BTreeMap<RangeId, GroupLog>,
    records: impl IntoIterator<Item = &'a [u8]>,
) -> Result<(), String> {
    for (i, body) in records.into_iter().enumerate() {
        let (range, write) = decode_record(body).map_err(|e| format!("Raft record {i}: {e}"))?;
        let log = logs
            .get_mut(&range)
            .ok_or_else(|| format!("Raft record {i}: range {range} is not this core's"))?;
        log.apply(&write).map_err(|e| format!("Raft record {i}, range {range}: {e}"))?;
    }
    Ok(())
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
        assert_eq!(log.snapshot(0, 2).unwrap().data.as_ref(), b"rows at 4");
        // An older snapshot changes nothing.
        log.apply(&LogWrite::Snapshot(snapshot(2, 1, b"old"))).unwrap();
        assert_eq!(log.snapshot_data(), b"rows at 4");
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
                assert_eq!(payloads.len(), if seq == 0 { 2 } else { 1 });
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
            rebuild(&mut logs, bodies.iter().map(|b| b.as_slice())).unwrap();
            assert_eq!(logs, expected);

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
        let huge = LogWrite::Snapshot(snapshot(9, 1, &[0; 5000]));
        assert!(encode_records(1, &huge, 4096).unwrap_err().contains("at most 4096"));
    }
}
