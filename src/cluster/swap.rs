//! A range's rows in a core's store replaced by those of a snapshot from its leader, a slice at
//! a time, so that installing a big range costs the core many short pauses rather than one long
//! one (requests for its other ranges run between slices). The rows the snapshot lacks go
//! first, then its rows are put over what the store holds: a key both hold is never missing
//! between slices. The snapshot is read and checked whole before anything changes, so damaged
//! rows change nothing. No I/O: the node drives it, and holds the replica frozen until it is
//! done (`Replicas::rows_installed`), so that no entry of the range is applied on rows half
//! swapped and no read waiting for the snapshot's index is served from them.

use super::dump::rows_file;
use super::ranges::RangeMap;
use super::RangeId;
use crate::durability::apply::replay;
use crate::durability::{read_snapshot, Mutation};
use crate::store::{KeyRange, Store};
use std::ops::ControlFlow;

pub struct RowSwap {
    pub range: RangeId,
    /// The snapshot's rows in key order, looked up while the old rows go.
    rows: Vec<Mutation>,
    pub rows_total: usize,
    /// The store's keys still to look at for old rows of the range (None: all looked at).
    rest: Option<KeyRange>,
    /// The snapshot's rows not yet put, once the old rows are gone.
    putting: Option<std::vec::IntoIter<Mutation>>,
}

impl RowSwap {
    /// `rows` in the snapshot file format; refused if they do not read or hold a row of
    /// another range.
    pub fn new(range: RangeId, map: &RangeMap, rows: &[u8]) -> Result<RowSwap, String> {
        let mut rows = read_snapshot(rows, &rows_file(range), None)?;
        if let Some(m) = rows.iter().find(|m| map.range_of_key(m.key()) != range) {
            return Err(format!("a row of range {} among them", map.range_of_key(m.key())));
        }
        // Stable: of two rows of one key, the later is put last, as a replay in file order.
        rows.sort_by(|a, b| a.key().cmp(b.key()));
        let rows_total = rows.len();
        Ok(RowSwap { range, rows, rows_total, rest: Some(KeyRange::all()), putting: None })
    }

    /// The next slice, looking at no more than `budget` of the store's entries (of any range)
    /// or putting no more than `budget` rows. True once the range's rows are the snapshot's.
    pub fn step(&mut self, store: &mut Store, map: &RangeMap, now_ms: u64, budget: usize) -> bool {
        if let Some(rest) = self.rest.take() {
            let (range, rows) = (self.range, &self.rows);
            let mut old = Vec::new();
            self.rest = store.scan_slice(&rest, false, now_ms, budget, |e| {
                if map.range_of_key(e.key) == range && rows.binary_search_by(|m| m.key().cmp(e.key)).is_err()
                {
                    old.push(e.key.to_vec());
                }
                ControlFlow::Continue(())
            });
            for key in &old {
                store.delete(key, now_ms);
            }
            return false;
        }
        let putting = self.putting.get_or_insert_with(|| std::mem::take(&mut self.rows).into_iter());
        for m in putting.by_ref().take(budget.max(1)) {
            replay(store, m, now_ms);
        }
        putting.len() == 0
    }

    /// Every slice at once (a restart, before the core serves anything).
    pub fn run(mut self, store: &mut Store, map: &RangeMap, now_ms: u64) -> usize {
        while !self.step(store, map, now_ms, usize::MAX) {}
        self.rows_total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::dump::tests::{rows_of, xorshift};
    use crate::durability::SnapshotEncoder;
    use std::collections::BTreeMap;

    fn encoded(rows: &BTreeMap<Vec<u8>, Vec<u8>>, range: RangeId) -> Vec<u8> {
        let mut enc = SnapshotEncoder::new(rows_file(range), None);
        for (k, v) in rows {
            enc.push(k, v, None);
        }
        enc.finish().1
    }

    /// Seeded: a store of many ranges' keys takes a snapshot of one range in slices of random
    /// size while the other ranges' keys change between slices. Between any two slices every
    /// key the old and the new rows both hold is there; at the end the range's rows are the
    /// snapshot's and no other range's row changed but by those writes.
    #[test]
    fn a_swap_in_slices_never_loses_a_key_both_hold_and_ends_as_the_snapshot() {
        let map = RangeMap::new(8, 1, &[1]).unwrap();
        for seed in 1..=20u64 {
            let mut next = xorshift(seed);
            let range = (seed % 8) as RangeId;
            let mut store = Store::new();
            for i in 0..500 {
                store.insert(
                    format!("k{:04}", next() % 700).as_bytes(),
                    format!("old{i}").as_bytes(),
                    None,
                    0,
                );
            }
            let old = rows_of(&store, &map, range);
            let mut new = BTreeMap::new();
            for i in 0..300 {
                let key = format!("k{:04}", next() % 700).into_bytes();
                if map.range_of_key(&key) == range {
                    new.insert(key, format!("new{i}").into_bytes());
                }
            }
            let both: Vec<&Vec<u8>> = old.keys().filter(|k| new.contains_key(*k)).collect();
            assert!(!both.is_empty() && old.len() > both.len(), "seed {seed}: a poor case");
            let mut others: BTreeMap<RangeId, BTreeMap<Vec<u8>, Vec<u8>>> =
                (0..8).filter(|r| *r != range).map(|r| (r, rows_of(&store, &map, r))).collect();

            let mut swap = RowSwap::new(range, &map, &encoded(&new, range)).unwrap();
            assert_eq!(swap.rows_total, new.len());
            let mut slices = 0;
            while !swap.step(&mut store, &map, 0, 1 + (next() % 30) as usize) {
                slices += 1;
                for key in &both {
                    assert!(store.get(key, 0).is_some(), "seed {seed}: {key:?} missing between slices");
                }
                for _ in 0..(next() % 6) {
                    let key = format!("k{:04}", next() % 700).into_bytes();
                    let r = map.range_of_key(&key);
                    if r != range {
                        let value = format!("w{}", next()).into_bytes();
                        store.insert(&key, &value, None, 0);
                        others.get_mut(&r).unwrap().insert(key, value);
                    }
                }
            }
            assert!(slices > 10, "seed {seed}: the swap took {slices} slices");
            assert_eq!(rows_of(&store, &map, range), new, "seed {seed}");
            for (r, rows) in &others {
                assert_eq!(&rows_of(&store, &map, *r), rows, "seed {seed}: range {r}");
            }
        }
    }

    #[test]
    fn damaged_rows_or_another_ranges_row_change_nothing() {
        let map = RangeMap::new(8, 1, &[1]).unwrap();
        let key = (0..).map(|i| format!("k{i}").into_bytes()).find(|k| map.range_of_key(k) == 3).unwrap();
        let rows = encoded(&BTreeMap::from([(key.clone(), b"v".to_vec())]), 3);
        assert!(RowSwap::new(3, &map, &rows).is_ok());
        let refused = RowSwap::new(4, &map, &encoded(&BTreeMap::from([(key, b"v".to_vec())]), 4)).err();
        assert!(refused.expect("refused").contains("a row of range 3"));
        let mut damaged = rows.clone();
        let at = damaged.len() - 3;
        damaged[at] ^= 0x40;
        assert!(RowSwap::new(3, &map, &damaged).is_err());
    }
}
