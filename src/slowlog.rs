//! The slow log: each core keeps, in a bounded ring of its own, the last statements its
//! connections ran whose latency reached `--slowlog-threshold-us` (as Redis's SLOWLOG keeps
//! `slowlog-max-len` commands slower than `slowlog-log-slower-than`). Recording touches only
//! the core's own ring; SHOW SLOWLOG collects a copy of every core's and merges them here, newest
//! first. The rows of SHOW SLOWLOG are built here, and only here: by the server from every
//! core's ring, and by the reference semantics (`shard::execute`), which has no rings, empty.
//!
//! An entry says what the audit log says of a statement (docs/protocol.md, "SHOW SLOWLOG"): the
//! keys or key range it touched as SQL literals, never a value.

use crate::error::WireError;
use crate::limits::SLOWLOG_ENTRIES_PER_CORE;
use crate::protocol::{ResultSet, Value};
use crate::sql::StatementKind;
use std::collections::VecDeque;

/// One slow statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlowEntry {
    /// When it finished (its reply was ready), in unix microseconds; SHOW SLOWLOG shows the
    /// milliseconds (the `ts_ms` of its audit line) and orders by these, so that statements of
    /// two cores finished within one millisecond come in the order they finished.
    pub time_unix_us: u64,
    /// Its latency, as SHOW STATS records it.
    pub duration_us: u64,
    pub user: String,
    pub kind: StatementKind,
    /// What it touched, as the audit log describes it (`describe`): keys and ranges only.
    pub target: String,
    /// Rows returned, or for a write the rows affected.
    pub rows: u64,
    /// The core that served its connection and measured it (not the shards it touched).
    pub shard: usize,
    /// Its place in that core's ring (1, 2, …): orders entries of one core finished within one
    /// microsecond.
    pub seq: u64,
}

/// A core's slow log: at most SLOWLOG_ENTRIES_PER_CORE entries, the oldest dropped first.
#[derive(Default)]
pub struct SlowRing {
    entries: VecDeque<SlowEntry>,
    next_seq: u64,
}

impl SlowRing {
    /// Add an entry (its `seq` is given here), dropping the oldest when the ring is full.
    pub fn push(&mut self, mut e: SlowEntry) {
        if self.entries.len() == SLOWLOG_ENTRIES_PER_CORE {
            self.entries.pop_front();
        }
        self.next_seq += 1;
        e.seq = self.next_seq;
        self.entries.push_back(e);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A copy of the entries, oldest first.
    pub fn entries(&self) -> Vec<SlowEntry> {
        self.entries.iter().cloned().collect()
    }

    /// Empty the ring (SHOW SLOWLOG RESET); the entries it held, oldest first.
    pub fn take(&mut self) -> Vec<SlowEntry> {
        self.entries.drain(..).collect()
    }
}

/// The columns of SHOW SLOWLOG.
pub const COLUMNS: [&str; 7] = ["time_unix_ms", "duration_us", "user", "kind", "target", "rows", "shard"];

/// SHOW SLOWLOG's result: every core's entries merged, newest first (by `time_unix_us`, then
/// each core's own order), then at most `limit` of them. A result larger than `max_payload`
/// is refused, as any result is, with the advice to add LIMIT.
pub fn result(
    all: Vec<Vec<SlowEntry>>,
    limit: Option<u64>,
    max_payload: u32,
) -> Result<ResultSet, WireError> {
    let mut entries: Vec<SlowEntry> = all.into_iter().flatten().collect();
    entries.sort_unstable_by_key(|e| std::cmp::Reverse((e.time_unix_us, e.seq, e.shard)));
    if let Some(l) = limit {
        entries.truncate(l.min(usize::MAX as u64) as usize);
    }
    let int = |v: u64| Value::Int(v.min(i64::MAX as u64) as i64);
    let text = |s: String| Value::Bytes(s.into_bytes());
    let rs = ResultSet {
        columns: COLUMNS.iter().map(|c| c.to_string()).collect(),
        rows: entries
            .into_iter()
            .map(|e| {
                vec![
                    int(e.time_unix_us / 1000),
                    int(e.duration_us),
                    text(e.user),
                    text(e.kind.name().to_string()),
                    text(e.target),
                    int(e.rows),
                    int(e.shard as u64),
                ]
            })
            .collect(),
        affected: 0,
    };
    let bytes = rs.encoded_len();
    if bytes > max_payload as usize {
        return Err(WireError::invalid(format!(
            "result too large ({bytes} bytes; max_payload is {max_payload}): add LIMIT"
        )));
    }
    Ok(rs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(shard: usize, time_unix_us: u64, target: &str) -> SlowEntry {
        SlowEntry {
            time_unix_us,
            duration_us: 10,
            user: "alice".into(),
            kind: StatementKind::SelectRange,
            target: target.into(),
            rows: 1,
            shard,
            seq: 0,
        }
    }

    fn targets(rs: &ResultSet) -> Vec<String> {
        rs.rows
            .iter()
            .map(|r| match &r[4] {
                Value::Bytes(b) => String::from_utf8(b.clone()).unwrap(),
                v => panic!("target {v:?}"),
            })
            .collect()
    }

    #[test]
    fn the_ring_keeps_the_newest_entries_only() {
        let mut ring = SlowRing::default();
        for i in 0..SLOWLOG_ENTRIES_PER_CORE + 10 {
            ring.push(entry(0, i as u64, &i.to_string()));
        }
        assert_eq!(ring.len(), SLOWLOG_ENTRIES_PER_CORE);
        let e = ring.entries();
        assert_eq!(e[0].target, "10");
        assert_eq!(e.last().unwrap().target, (SLOWLOG_ENTRIES_PER_CORE + 9).to_string());
        assert!(e.windows(2).all(|w| w[0].seq + 1 == w[1].seq));
        assert_eq!(ring.take().len(), SLOWLOG_ENTRIES_PER_CORE);
        assert!(ring.is_empty());
    }

    #[test]
    fn cores_merge_newest_first_and_limit_applies_after_the_merge() {
        let mut a = SlowRing::default();
        let mut b = SlowRing::default();
        a.push(entry(0, 100_000, "a1"));
        b.push(entry(1, 101_000, "b1"));
        a.push(entry(0, 105_000, "a2"));
        // Within one microsecond a core's own order decides.
        a.push(entry(0, 105_000, "a3"));
        // Within one millisecond, the microseconds do.
        b.push(entry(1, 103_001, "b2"));
        a.push(entry(0, 103_000, "a0"));
        let all = || vec![a.entries(), b.entries()];
        let rs = result(all(), None, 1 << 20).unwrap();
        assert_eq!(rs.columns, COLUMNS);
        assert_eq!(targets(&rs), ["a3", "a2", "b2", "a0", "b1", "a1"]);
        assert_eq!(rs.rows[0][0], Value::Int(105));
        assert_eq!((&rs.rows[2][0], &rs.rows[3][0]), (&Value::Int(103), &Value::Int(103)));
        assert_eq!(rs.rows[0][6], Value::Int(0));
        assert_eq!(rs.rows[2][6], Value::Int(1));
        assert_eq!(rs.rows[0][3], Value::Bytes(b"select_range".to_vec()));
        assert_eq!(targets(&result(all(), Some(3), 1 << 20).unwrap()), ["a3", "a2", "b2"]);
        let none = result(all(), Some(0), 1 << 20).unwrap();
        assert_eq!((none.columns.len(), none.rows.len()), (7, 0));
        assert_eq!(result(Vec::new(), None, 1 << 20).unwrap().rows.len(), 0);
    }

    #[test]
    fn the_reference_semantics_answers_with_the_columns_and_no_rows() {
        let mut stores: Vec<crate::store::Store> = (0..3).map(|_| crate::store::Store::new()).collect();
        for sql in ["SHOW SLOWLOG", "SHOW SLOWLOG LIMIT 5"] {
            let rs =
                crate::shard::execute(&crate::sql::parse(sql).unwrap(), &mut stores, 0, 1 << 20).unwrap();
            assert_eq!(rs.columns, COLUMNS, "{sql}");
            assert_eq!((rs.rows.len(), rs.affected), (0, 0), "{sql}");
        }
        let reset =
            crate::shard::execute(&crate::sql::parse("SHOW SLOWLOG RESET").unwrap(), &mut stores, 0, 1 << 20);
        assert_eq!(reset.unwrap(), ResultSet::affected(0));
    }

    #[test]
    fn a_result_past_max_payload_is_refused() {
        let big = "k".repeat(2000);
        let all = vec![(0..10).map(|i| entry(0, i, &big)).collect()];
        let e = result(all.clone(), None, 8192).unwrap_err();
        assert!(e.message.contains("result too large") && e.message.contains("add LIMIT"), "{}", e.message);
        assert_eq!(result(all, Some(2), 8192).unwrap().rows.len(), 2);
    }
}
