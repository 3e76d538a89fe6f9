//! One shard's data: a hash index for point operations (ahash), an ordered index for ranges,
//! and an expiry index for TTLs, all over the same single-allocation entries. No I/O, no clock:
//! every call that depends on time takes `now_ms`, so tests drive time by hand.

mod entry;
mod evict;

use entry::{EntryPtr, HEADER_BYTES, NO_EXPIRY};
pub use evict::{Eviction, Growth, MemoryLimit};
use hashbrown::HashTable;
use std::collections::BTreeSet;
use std::ops::{Bound, ControlFlow};

/// A borrowed view of a live entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryView<'s> {
    pub key: &'s [u8],
    pub value: &'s [u8],
    /// Absolute expiry in the injected clock's milliseconds, or `None`.
    pub expires_at_ms: Option<u64>,
}

impl EntryView<'_> {
    /// Seconds left before expiry, rounded up (a key with 300 ms left reports 1, never 0, since
    /// 0 would read as already expired).
    pub fn ttl_remaining_s(&self, now_ms: u64) -> Option<i64> {
        self.expires_at_ms.map(|t| (t.saturating_sub(now_ms).div_ceil(1000)) as i64)
    }
}

/// A key range; `Bound` of owned bytes so it can cross cores.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRange {
    pub lower: Bound<Vec<u8>>,
    pub upper: Bound<Vec<u8>>,
}

impl KeyRange {
    pub fn all() -> Self {
        KeyRange { lower: Bound::Unbounded, upper: Bound::Unbounded }
    }

    /// Every key that starts with `prefix`.
    pub fn prefix(prefix: &[u8]) -> Self {
        let upper = match prefix_successor(prefix) {
            Some(s) => Bound::Excluded(s),
            None => Bound::Unbounded,
        };
        KeyRange { lower: Bound::Included(prefix.to_vec()), upper }
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        let lo = match &self.lower {
            Bound::Unbounded => true,
            Bound::Included(l) => key >= l.as_slice(),
            Bound::Excluded(l) => key > l.as_slice(),
        };
        let hi = match &self.upper {
            Bound::Unbounded => true,
            Bound::Included(u) => key <= u.as_slice(),
            Bound::Excluded(u) => key < u.as_slice(),
        };
        lo && hi
    }

    /// True when no key can be in the range (BTreeMap::range would panic on such bounds).
    pub fn is_empty(&self) -> bool {
        match (&self.lower, &self.upper) {
            (Bound::Included(l), Bound::Included(u)) => l > u,
            (Bound::Included(l) | Bound::Excluded(l), Bound::Excluded(u))
            | (Bound::Excluded(l), Bound::Included(u)) => l >= u,
            _ => false,
        }
    }

    /// The part of this range strictly after `key` (ascending) or before it (descending):
    /// how a scan resumes.
    pub fn resume_after(&self, key: &[u8], desc: bool) -> KeyRange {
        let mut r = self.clone();
        if desc {
            r.upper = Bound::Excluded(key.to_vec());
        } else {
            r.lower = Bound::Excluded(key.to_vec());
        }
        r
    }

    /// The part of this range from `key` on (ascending) or up to it (descending), `key`
    /// included: where a scan stopped before visiting `key` resumes.
    pub fn resume_from(&self, key: &[u8], desc: bool) -> KeyRange {
        let mut r = self.clone();
        if desc {
            r.upper = Bound::Included(key.to_vec());
        } else {
            r.lower = Bound::Included(key.to_vec());
        }
        r
    }

    fn as_ref_bounds(&self) -> (Bound<&[u8]>, Bound<&[u8]>) {
        (as_ref(&self.lower), as_ref(&self.upper))
    }
}

fn as_ref(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Included(v) => Bound::Included(v.as_slice()),
        Bound::Excluded(v) => Bound::Excluded(v.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// The smallest byte string greater than every string starting with `prefix`, if any.
pub fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut s = prefix.to_vec();
    while let Some(last) = s.pop() {
        if last < 0xff {
            s.push(last + 1);
            return Some(s);
        }
    }
    None
}

#[inline]
fn live(e: &EntryPtr, now_ms: u64) -> bool {
    let t = e.expires_at_ms();
    t == NO_EXPIRY || now_ms < t
}

fn view(e: &EntryPtr) -> EntryView<'_> {
    let t = e.expires_at_ms();
    EntryView { key: e.key(), value: e.value(), expires_at_ms: (t != NO_EXPIRY).then_some(t) }
}

pub struct Store {
    hasher: ahash::RandomState,
    /// Owns the entries: every block is freed through this table.
    hash: HashTable<EntryPtr>,
    /// The same entries in key order.
    order: BTreeSet<EntryPtr>,
    /// (expires_at_ms, entry address) of entries that expire, earliest first.
    expiry: BTreeSet<(u64, usize)>,
    /// Sum of entry block sizes: header, key and value bytes.
    data_bytes: usize,
    /// Sum of what the allocator holds for those blocks (`heap_bytes`).
    entry_heap_bytes: usize,
    /// The memory this store may hold, and what makes room when a write needs more (evict.rs).
    limit: Option<MemoryLimit>,
    /// Keys evicted to make room, since start.
    evictions: u64,
    /// State of the generator that picks eviction samples (xorshift; not for secrets).
    sample_seed: u64,
}

// SAFETY: a Store exclusively owns every block its pointers reach; moving it to another thread
// moves that ownership whole. It is not Sync-shared by anything.
unsafe impl Send for Store {}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    pub fn new() -> Self {
        Store {
            hasher: ahash::RandomState::new(),
            hash: HashTable::new(),
            order: BTreeSet::new(),
            expiry: BTreeSet::new(),
            data_bytes: 0,
            entry_heap_bytes: 0,
            limit: None,
            evictions: 0,
            sample_seed: 0x9E37_79B9_7F4A_7C15,
        }
    }

    /// The index's hash of `key` (what `prefetch` takes).
    #[inline]
    pub fn key_hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    #[inline]
    fn find(&self, key: &[u8]) -> Option<EntryPtr> {
        self.hash.find(self.key_hash(key), |e| e.key() == key).copied()
    }

    /// The live entry under `key`, marked as used now.
    #[inline]
    pub fn get(&self, key: &[u8], now_ms: u64) -> Option<EntryView<'_>> {
        let e = self.hash.find(self.key_hash(key), |e| e.key() == key)?;
        if !live(e, now_ms) {
            return None;
        }
        e.touch(now_ms);
        Some(view(e))
    }

    /// Start loading what `get` of the key hashed to `hash` (by `key_hash`) will read into the
    /// cache: the index's probe is done now (its loads may miss) and the entry's block is
    /// prefetched. Hash a batch's keys first, then call this for each in a tight loop: the
    /// probes are then independent and short enough for the CPU to have their misses in flight
    /// together, not one by one.
    #[inline]
    pub fn prefetch(&self, hash: u64) {
        if let Some(e) = self.hash.iter_hash(hash).next() {
            // A block is 16-byte aligned, not 64: a small entry's header, key and value span
            // two cache lines more often than one (reading its length to know would miss).
            prefetch_read(e.addr());
            prefetch_read(e.addr() + 64);
        }
    }

    /// Insert or overwrite (a key-value store's SET): the key takes the new value and the new
    /// expiry (`None`: none), whatever it had before.
    pub fn insert(&mut self, key: &[u8], value: &[u8], expires_at_ms: Option<u64>, now_ms: u64) {
        let exp = expires_at_ms.unwrap_or(NO_EXPIRY);
        match self.find(key) {
            Some(old) => self.replace(old, value, exp, now_ms),
            None => {
                let e = EntryPtr::new(key, value, exp, now_ms);
                let h = self.key_hash(key);
                let hasher = &self.hasher;
                self.hash.insert_unique(h, e, |x| hasher.hash_one(x.key()));
                self.order.insert(e);
                if exp != NO_EXPIRY {
                    self.expiry.insert((exp, e.addr()));
                }
                self.data_bytes += e.block_bytes();
                self.entry_heap_bytes += e.heap_bytes();
            }
        }
    }

    /// Change the value of a live key, its expiry (absolute ms) to `expiry(old expiry)`; false
    /// (and no change) when there is none.
    pub fn update(
        &mut self,
        key: &[u8],
        value: &[u8],
        expiry: impl FnOnce(Option<u64>) -> Option<u64>,
        now_ms: u64,
    ) -> bool {
        let Some(old) = self.find(key) else {
            return false;
        };
        if !live(&old, now_ms) {
            self.remove(old);
            return false;
        }
        let was = Some(old.expires_at_ms()).filter(|&t| t != NO_EXPIRY);
        self.replace(old, value, expiry(was).unwrap_or(NO_EXPIRY), now_ms);
        true
    }

    /// Remove `key`; true if a live key was removed.
    pub fn delete(&mut self, key: &[u8], now_ms: u64) -> bool {
        match self.find(key) {
            Some(e) => {
                let was_live = live(&e, now_ms);
                self.remove(e);
                was_live
            }
            None => false,
        }
    }

    /// Give `old` a new value and expiry, in place when the value length is unchanged.
    fn replace(&mut self, old: EntryPtr, value: &[u8], exp: u64, now_ms: u64) {
        let old_exp = old.expires_at_ms();
        if old.value().len() == value.len() {
            old.overwrite_value(value);
            old.touch(now_ms);
            if old_exp != exp {
                if old_exp != NO_EXPIRY {
                    self.expiry.remove(&(old_exp, old.addr()));
                }
                old.set_expires_at_ms(exp);
                if exp != NO_EXPIRY {
                    self.expiry.insert((exp, old.addr()));
                }
            }
            return;
        }
        let new = EntryPtr::new(old.key(), value, exp, now_ms);
        let h = self.key_hash(old.key());
        *self.hash.find_mut(h, |e| e.key() == old.key()).expect("indexed entry") = new;
        let replaced = self.order.replace(new);
        debug_assert!(replaced.is_some());
        if old_exp != NO_EXPIRY {
            self.expiry.remove(&(old_exp, old.addr()));
        }
        if exp != NO_EXPIRY {
            self.expiry.insert((exp, new.addr()));
        }
        self.data_bytes = self.data_bytes - old.block_bytes() + new.block_bytes();
        self.entry_heap_bytes = self.entry_heap_bytes - old.heap_bytes() + new.heap_bytes();
        // SAFETY: `old` has been replaced in all three indices.
        unsafe { old.free() };
    }

    /// Take `e` out of every index, then free it.
    fn remove(&mut self, e: EntryPtr) {
        let h = self.key_hash(e.key());
        if let Ok(slot) = self.hash.find_entry(h, |x| x.key() == e.key()) {
            slot.remove();
        }
        self.order.remove(e.key());
        let exp = e.expires_at_ms();
        if exp != NO_EXPIRY {
            self.expiry.remove(&(exp, e.addr()));
        }
        self.data_bytes -= e.block_bytes();
        self.entry_heap_bytes -= e.heap_bytes();
        // SAFETY: `e` is in no index any more.
        unsafe { e.free() };
    }

    /// Visit the live entries of `range` in key order (descending if `desc`) until `visit`
    /// breaks. Only entries inside the range are touched.
    pub fn scan(
        &self,
        range: &KeyRange,
        desc: bool,
        now_ms: u64,
        mut visit: impl FnMut(EntryView<'_>) -> ControlFlow<()>,
    ) {
        if range.is_empty() {
            return;
        }
        let it = self.order.range::<[u8], _>(range.as_ref_bounds());
        let mut step = |e: &EntryPtr| {
            if live(e, now_ms) {
                visit(view(e))
            } else {
                ControlFlow::Continue(())
            }
        };
        if desc {
            for e in it.rev() {
                if step(e).is_break() {
                    return;
                }
            }
        } else {
            for e in it {
                if step(e).is_break() {
                    return;
                }
            }
        }
    }

    /// `scan`, looking at no more than `budget` entries (live or expired): what a statement runs
    /// between two chances for the core's other requests. `visit` may stop early. Returns the
    /// part of `range` still to visit if the budget ran out first, None when done.
    pub fn scan_slice(
        &self,
        range: &KeyRange,
        desc: bool,
        now_ms: u64,
        budget: usize,
        mut visit: impl FnMut(EntryView<'_>) -> ControlFlow<()>,
    ) -> Option<KeyRange> {
        if range.is_empty() {
            return None;
        }
        let it = self.order.range::<[u8], _>(range.as_ref_bounds());
        let mut seen = 0;
        let mut step = |e: &EntryPtr| -> ControlFlow<Option<KeyRange>> {
            if seen == budget {
                return ControlFlow::Break(Some(range.resume_from(e.key(), desc)));
            }
            seen += 1;
            if live(e, now_ms) && visit(view(e)).is_break() {
                return ControlFlow::Break(None);
            }
            ControlFlow::Continue(())
        };
        let flow =
            if desc { it.rev().try_for_each(&mut step) } else { it.into_iter().try_for_each(&mut step) };
        match flow {
            ControlFlow::Break(rest) => rest,
            ControlFlow::Continue(()) => None,
        }
    }

    /// Live keys in `range` that satisfy `keep`.
    pub fn count(&self, range: &KeyRange, now_ms: u64, keep: impl Fn(&[u8]) -> bool) -> u64 {
        let mut n = 0u64;
        self.scan(range, false, now_ms, |e| {
            n += keep(e.key) as u64;
            ControlFlow::Continue(())
        });
        n
    }

    /// Live keys, without visiting them: all entries less those already due to expire.
    pub fn live_len(&self, now_ms: u64) -> u64 {
        let due = self.expiry.range(..(now_ms.saturating_add(1), 0)).count();
        (self.hash.len() - due) as u64
    }

    /// Active expiry: remove at most `budget` keys whose time has come. Returns how many went.
    pub fn expire_step(&mut self, now_ms: u64, budget: usize) -> usize {
        let due: Vec<(u64, usize)> =
            self.expiry.range(..(now_ms.saturating_add(1), 0)).take(budget).copied().collect();
        for &(_, addr) in &due {
            // SAFETY: the expiry index holds addresses of live blocks only.
            self.remove(unsafe { EntryPtr::from_addr(addr) });
        }
        due.len()
    }

    /// Entries held, including expired ones not yet collected.
    pub fn len(&self) -> usize {
        self.hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hash.is_empty()
    }

    /// Entries with an expiry set.
    pub fn expiring_len(&self) -> usize {
        self.expiry.len()
    }

    /// Exact bytes of entry blocks (header + key + value, before allocator rounding).
    pub fn data_bytes(&self) -> usize {
        self.data_bytes
    }

    /// Bytes of the indices: the hash table's allocation (exact), and the B-trees' nodes at
    /// their measured fill (`ORDER_BYTES_PER_KEY`, `EXPIRY_BYTES_PER_KEY`).
    pub fn index_bytes_estimate(&self) -> usize {
        self.hash.allocation_size()
            + self.order.len() * ORDER_BYTES_PER_KEY
            + self.expiry.len() * EXPIRY_BYTES_PER_KEY
    }

    /// What the store holds in the heap: entry blocks as the allocator rounds them, and the
    /// indices. What `--max-memory` is checked against.
    pub fn mem_bytes(&self) -> usize {
        self.entry_heap_bytes + self.index_bytes_estimate()
    }
}

/// Heap bytes per key of the B-tree in key order: its nodes (112 bytes from malloc for 11
/// keys of 8 bytes, internal nodes 208 for 11 and 12 children) at the fill that inserts leave,
/// from about half full (keys in ascending order) to two thirds (random order). `cargo bench
/// --bench memory` prints `mem_bytes` beside the RSS growth: 100.9 of 103.8 MB for 1M keys.
pub const ORDER_BYTES_PER_KEY: usize = 18;
/// The same for the expiry index, whose keys are 16 bytes (nodes of 208 and 304 bytes).
pub const EXPIRY_BYTES_PER_KEY: usize = 32;

impl Drop for Store {
    fn drop(&mut self) {
        self.order.clear();
        self.expiry.clear();
        for e in self.hash.drain() {
            // SAFETY: the other indices are empty; the table held the last pointer.
            unsafe { e.free() };
        }
    }
}

/// Bytes an entry of this size costs in the data accounting.
pub fn entry_block_bytes(key_len: usize, value_len: usize) -> usize {
    HEADER_BYTES + key_len + value_len
}

/// A hint to the CPU to bring the cache line at `addr` closer; never faults.
#[inline(always)]
fn prefetch_read(addr: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetching is a hint; it does not dereference in the language sense or fault,
    // whatever the address.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(addr as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(s: &Store, r: &KeyRange, desc: bool, now: u64) -> Vec<Vec<u8>> {
        let mut v = Vec::new();
        s.scan(r, desc, now, |e| {
            v.push(e.key.to_vec());
            ControlFlow::Continue(())
        });
        v
    }

    #[test]
    fn insert_get_update_delete() {
        let mut s = Store::new();
        s.insert(b"a", b"1", None, 0);
        assert_eq!(s.get(b"a", 0).unwrap().value, b"1");
        s.insert(b"a", b"2", None, 0); // same length: in place
        s.insert(b"a", b"333", None, 0); // new block
        assert_eq!(s.get(b"a", 0).unwrap().value, b"333");
        assert!(s.update(b"a", b"4", |e| e, 0));
        assert!(!s.update(b"zz", b"4", |e| e, 0));
        assert_eq!(s.data_bytes(), entry_block_bytes(1, 1));
        assert!(s.delete(b"a", 0));
        assert!(!s.delete(b"a", 0));
        assert_eq!((s.len(), s.data_bytes()), (0, 0));
    }

    /// A prefetch is a hint: present, missing and just-removed keys alike leave every read as it
    /// was (the second line it touches may lie past the block, or past the allocation).
    #[test]
    fn prefetch_changes_nothing_a_read_sees() {
        let mut s = Store::new();
        for i in 0..1000u32 {
            s.insert(format!("key:{i:012}").as_bytes(), &i.to_le_bytes(), None, 0);
        }
        s.delete(b"key:000000000007", 0);
        for k in [&b"key:000000000003"[..], b"key:000000000007", b"absent", b""] {
            s.prefetch(s.key_hash(k));
        }
        assert_eq!(s.get(b"key:000000000003", 0).unwrap().value, 3u32.to_le_bytes());
        assert!(s.get(b"key:000000000007", 0).is_none() && s.get(b"absent", 0).is_none());
        assert_eq!(s.len(), 999);
    }

    #[test]
    fn ttl_hides_then_collects() {
        let mut s = Store::new();
        s.insert(b"t", b"v", Some(1000), 0);
        s.insert(b"u", b"v", None, 0);
        assert_eq!(s.get(b"t", 999).unwrap().ttl_remaining_s(999), Some(1));
        assert_eq!(s.get(b"t", 0).unwrap().ttl_remaining_s(0), Some(1));
        assert!(s.get(b"t", 1000).is_none());
        assert_eq!(s.live_len(1000), 1);
        assert_eq!(s.count(&KeyRange::all(), 1000, |_| true), 1);
        assert_eq!(keys(&s, &KeyRange::all(), false, 1000), vec![b"u".to_vec()]);
        assert!(!s.update(b"t", b"w", |e| e, 1000));
        assert_eq!(s.len(), 1);
        s.insert(b"x", b"v", Some(5), 0);
        s.insert(b"x", b"vv", None, 0); // overwrite clears the expiry
        assert_eq!(s.expiring_len(), 0);
        assert!(s.get(b"x", 10).is_some());
    }

    #[test]
    fn expire_step_respects_its_budget() {
        let mut s = Store::new();
        for i in 0..10u32 {
            s.insert(&i.to_be_bytes(), b"v", Some(100 + i as u64), 0);
        }
        assert_eq!(s.expire_step(104, 3), 3);
        assert_eq!(s.expire_step(104, 3), 2);
        assert_eq!(s.expire_step(104, 3), 0);
        assert_eq!(s.len(), 5);
        assert_eq!(s.expire_step(u64::MAX, 100), 5);
        assert_eq!(s.data_bytes(), 0);
    }

    #[test]
    fn ranges_prefixes_and_resume() {
        let mut s = Store::new();
        for k in ["a", "b", "ba", "bb", "c", "\u{7f}"] {
            s.insert(k.as_bytes(), b"v", None, 0);
        }
        s.insert(&[b'b', 0xff], b"v", None, 0);
        let p = KeyRange::prefix(b"b");
        assert_eq!(
            keys(&s, &p, false, 0),
            vec![b"b".to_vec(), b"ba".to_vec(), b"bb".to_vec(), vec![b'b', 0xff]]
        );
        assert_eq!(keys(&s, &p.resume_after(b"ba", false), false, 0).len(), 2);
        assert_eq!(keys(&s, &p.resume_after(b"ba", true), true, 0), vec![b"b".to_vec()]);
        let empty = KeyRange { lower: Bound::Excluded(b"b".to_vec()), upper: Bound::Excluded(b"b".to_vec()) };
        assert!(empty.is_empty());
        assert!(keys(&s, &empty, false, 0).is_empty());
        assert_eq!(KeyRange::prefix(&[0xff, 0xff]).upper, Bound::Unbounded);
    }
}
