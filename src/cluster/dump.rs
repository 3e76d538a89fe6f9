//! A range's rows copied for a follower's snapshot a slice at a time, as they were at one
//! applied index, while the core goes on applying later entries between slices: a key an entry
//! is about to change ahead of the copy is kept first as it was (copy-before-write, as the
//! core's own snapshot does). So a snapshot costs the core many short pauses, never one scan of
//! its whole store. No I/O: the node drives it.

use super::ranges::RangeMap;
use super::RangeId;
use crate::durability::{FileId, FileKind, SnapshotEncoder};
use crate::store::{KeyRange, Store};
use raft::eraftpb::ConfState;
use std::collections::BTreeMap;
use std::ops::ControlFlow;

/// A key's value and expiry as they were when the copy began (None: absent then).
type Row = Option<(Vec<u8>, Option<u64>)>;

/// The identity of the rows of a range's snapshot in the snapshot file format.
pub fn rows_file(range: RangeId) -> FileId {
    FileId { kind: FileKind::Snapshot, generation: 0, shard: range, index: 0 }
}

pub struct RangeDump {
    pub range: RangeId,
    /// The applied index the rows are at, its term, and the membership then.
    pub index: u64,
    pub term: u64,
    pub conf_state: ConfState,
    /// Which rows were live is judged at the copy's start.
    now_ms: u64,
    /// The keys still to copy (None: all copied).
    rest: Option<KeyRange>,
    /// Keys ahead of the copy that changed since it began, as they were then.
    before: BTreeMap<Vec<u8>, Row>,
    enc: SnapshotEncoder<'static>,
}

impl RangeDump {
    pub fn new(range: RangeId, index: u64, term: u64, conf_state: ConfState, now_ms: u64) -> RangeDump {
        RangeDump {
            range,
            index,
            term,
            conf_state,
            now_ms,
            rest: Some(KeyRange::all()),
            before: BTreeMap::new(),
            enc: SnapshotEncoder::new(rows_file(range), None),
        }
    }

    /// `key`, of this range, is about to change in `store`: kept as it is now if the copy has
    /// not reached it (and was not kept already).
    pub fn keep(&mut self, store: &Store, key: &[u8]) {
        let ahead = self.rest.as_ref().is_some_and(|r| r.contains(key));
        if !ahead || self.before.contains_key(key) {
            return;
        }
        let was = store.get(key, self.now_ms).map(|e| (e.value.to_vec(), e.expires_at_ms));
        self.before.insert(key.to_vec(), was);
    }

    /// Copy the next slice, looking at no more than `budget` of the store's entries (of any
    /// range). True once every key is copied.
    pub fn step(&mut self, store: &Store, map: &RangeMap, budget: usize) -> bool {
        let Some(rest) = self.rest.take() else { return true };
        let (range, before, enc) = (self.range, &mut self.before, &mut self.enc);
        self.rest = store.scan_slice(&rest, false, self.now_ms, budget, |e| {
            if map.range_of_key(e.key) == range {
                match before.remove(e.key) {
                    Some(Some((value, expires_at_ms))) => enc.push(e.key, &value, expires_at_ms),
                    Some(None) => {}
                    None => enc.push(e.key, e.value, e.expires_at_ms),
                }
            }
            ControlFlow::Continue(())
        });
        self.rest.is_none()
    }

    /// The rows in the snapshot file format, once `step` has copied every key: with those kept
    /// that the store no longer holds (deleted after the copy began, before it got there).
    pub fn finish(self) -> Vec<u8> {
        let mut enc = self.enc;
        for (key, row) in self.before {
            if let Some((value, expires_at_ms)) = row {
                enc.push(&key, &value, expires_at_ms);
            }
        }
        enc.finish().1
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::durability::read_snapshot;

    /// A seeded xorshift: the slices and changes of a seeded test, repeatable.
    pub fn xorshift(seed: u64) -> impl FnMut() -> u64 {
        let mut rng = seed;
        move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        }
    }

    /// The live rows of `range` in `store`.
    pub fn rows_of(store: &Store, map: &RangeMap, range: RangeId) -> BTreeMap<Vec<u8>, Vec<u8>> {
        let mut out = BTreeMap::new();
        store.scan(&KeyRange::all(), false, 0, |e| {
            if map.range_of_key(e.key) == range {
                out.insert(e.key.to_vec(), e.value.to_vec());
            }
            ControlFlow::Continue(())
        });
        out
    }

    fn decoded(rows: &[u8], range: RangeId) -> BTreeMap<Vec<u8>, Vec<u8>> {
        let store = &mut Store::new();
        for m in read_snapshot(rows, &rows_file(range), None).unwrap() {
            crate::durability::apply::replay(store, m, 0);
        }
        rows_of(store, &RangeMap::new(8, 1, &[1]).unwrap(), range).into_iter().collect::<BTreeMap<_, _>>()
    }

    /// Seeded: a store of many ranges' keys changes between every slice of a copy (sets,
    /// overwrites, deletes, keys ahead of the copy and behind it), each change kept first as
    /// an entry's apply does; the copy is exactly the range's rows at its start.
    #[test]
    fn a_copy_in_slices_is_the_range_as_it_was_when_it_began() {
        let map = RangeMap::new(8, 1, &[1]).unwrap();
        for seed in 1..=20u64 {
            let mut next = xorshift(seed);
            let mut store = Store::new();
            for i in 0..400 {
                store.insert(format!("k{:04}", next() % 600).as_bytes(), format!("v{i}").as_bytes(), None, 0);
            }
            let range = (seed % 8) as RangeId;
            let want = rows_of(&store, &map, range);
            let mut dump = RangeDump::new(range, 7, 2, ConfState::default(), 0);
            let mut slices = 0;
            while !dump.step(&store, &map, 1 + (next() % 40) as usize) {
                slices += 1;
                for _ in 0..(next() % 12) {
                    let key = format!("k{:04}", next() % 600);
                    if map.range_of_key(key.as_bytes()) == range {
                        dump.keep(&store, key.as_bytes());
                    }
                    if next() % 3 == 0 {
                        store.delete(key.as_bytes(), 0);
                    } else {
                        store.insert(key.as_bytes(), format!("new{}", next()).as_bytes(), None, 0);
                    }
                }
            }
            assert!(slices > 5, "seed {seed}: the copy took {slices} slices");
            assert_eq!(decoded(&dump.finish(), range), want, "seed {seed}");
        }
    }
}
