//! A store's memory limit: what a write would add to `mem_bytes`, and which key goes when room
//! must be made. The store only chooses; the shard's write path (`shard::ops::make_room`) removes
//! the chosen keys through the write-ahead log, so that an evicted key stays gone after a restart.

use super::entry::{heap_bytes, EntryPtr, HEADER_BYTES, NO_EXPIRY};
use super::{live, Store, EXPIRY_BYTES_PER_KEY, ORDER_BYTES_PER_KEY};
use crate::limits::{EVICTION_SAMPLES, EVICTION_SAMPLE_PROBES};
use hashbrown::HashTable;

/// What makes room when a write would pass the limit (Redis's `maxmemory-policy` names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Eviction {
    /// Nothing: the write is refused and not applied. Reads and deletes keep working.
    NoEviction,
    /// Any key, the least recently used of a random sample (approximate LRU, as Redis).
    AllKeysLru,
    /// Keys with a TTL, the nearest expiry first (exact: the expiry index is in that order).
    VolatileTtl,
}

impl Eviction {
    pub const ALL: [Eviction; 3] = [Eviction::NoEviction, Eviction::AllKeysLru, Eviction::VolatileTtl];

    pub fn name(self) -> &'static str {
        match self {
            Eviction::NoEviction => "noeviction",
            Eviction::AllKeysLru => "allkeys-lru",
            Eviction::VolatileTtl => "volatile-ttl",
        }
    }

    pub fn parse(s: &str) -> Option<Eviction> {
        Self::ALL.into_iter().find(|e| e.name() == s)
    }
}

/// The memory one store may hold (`mem_bytes`), and the policy that keeps it there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryLimit {
    pub bytes_max: usize,
    pub eviction: Eviction,
}

/// What a write adds to a store, before the hash table's share (`Store::growth_bytes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Growth {
    pub entry_bytes: isize,
    pub new_keys: usize,
}

impl Store {
    pub fn set_memory_limit(&mut self, limit: Option<MemoryLimit>) {
        self.limit = limit;
    }

    pub fn memory_limit(&self) -> Option<MemoryLimit> {
        self.limit
    }

    /// Keys evicted since start.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// What writing each of `rows` — (key, value length, whether it will expire) — now would
    /// add: the new blocks less the ones they replace, and index entries for new keys. The keys
    /// are distinct: a caller writing one key twice passes its largest row (`put_growth`).
    pub fn growth<'a>(&self, rows: impl IntoIterator<Item = (&'a [u8], usize, bool)>) -> Growth {
        let mut delta = 0isize;
        let mut new_keys = 0;
        for (key, value_len, expires) in rows {
            delta += heap_bytes(HEADER_BYTES + key.len() + value_len) as isize;
            let expiry = |on: bool| if on { EXPIRY_BYTES_PER_KEY as isize } else { 0 };
            match self.find(key) {
                Some(old) => {
                    delta += expiry(expires) - expiry(old.expires_at_ms() != NO_EXPIRY);
                    delta -= old.heap_bytes() as isize;
                }
                None => {
                    new_keys += 1;
                    delta += (ORDER_BYTES_PER_KEY as isize) + expiry(expires);
                }
            }
        }
        Growth { entry_bytes: delta, new_keys }
    }

    /// How much `mem_bytes` grows by when `g` is written, at most: its entries, and the hash
    /// table's growth if they overfill it.
    pub fn growth_bytes(&self, g: Growth) -> isize {
        g.entry_bytes + self.table_growth_bytes(g.new_keys) as isize
    }

    /// What the hash table's allocation grows by when `new_keys` more keys go in: nothing while
    /// they fit. Past that hashbrown doubles its buckets (the old table is freed once its
    /// entries have moved), which adds the table's size again, less 16 bytes of control group,
    /// and at least doubles the room: one doubling counted per doubling of room is an upper
    /// bound, also where slots freed by deletes let hashbrown rehash in place instead. A write
    /// of many new keys may double the table more than once.
    fn table_growth_bytes(&self, new_keys: usize) -> usize {
        let keys = self.hash.len() + new_keys;
        let mut capacity = self.hash.capacity();
        if keys <= capacity {
            return 0;
        }
        let mut bytes = self.hash.allocation_size();
        if bytes == 0 {
            // The first table's size is hashbrown's to choose, so ask it; an empty store only.
            return HashTable::<EntryPtr>::with_capacity(keys).allocation_size();
        }
        let mut growth = 0;
        capacity = capacity.max(1);
        while keys > capacity {
            growth += bytes;
            bytes *= 2;
            capacity *= 2;
        }
        growth
    }

    /// The key that `eviction` would remove next, never one of `keep` (sorted: the keys the
    /// write itself is about to touch); None: no key may go.
    pub fn victim(&mut self, eviction: Eviction, keep: &[&[u8]], now_ms: u64) -> Option<Vec<u8>> {
        match eviction {
            Eviction::NoEviction => None,
            Eviction::VolatileTtl => self
                .expiry
                .iter()
                // SAFETY: the expiry index holds addresses of live blocks only.
                .map(|&(_, addr)| unsafe { EntryPtr::from_addr(addr) })
                .find(|e| keep.binary_search(&e.key()).is_err())
                .map(|e| e.key().to_vec()),
            Eviction::AllKeysLru => self.lru_sample(keep, now_ms).map(|e| e.key().to_vec()),
        }
    }

    /// Remove `key`, chosen by `victim`, counting it as evicted. The caller logs the delete.
    pub fn evict(&mut self, key: &[u8]) {
        if let Some(e) = self.find(key) {
            self.remove(e);
            self.evictions += 1;
        }
    }

    /// The least recently used of up to EVICTION_SAMPLES entries from random buckets of the
    /// hash table (an expired entry counts as the oldest of all).
    fn lru_sample(&mut self, keep: &[&[u8]], now_ms: u64) -> Option<EntryPtr> {
        let buckets = self.hash.num_buckets();
        if self.hash.is_empty() || buckets == 0 {
            return None;
        }
        let now = super::entry::clock_10ms(now_ms);
        let idle =
            |e: &EntryPtr| if live(e, now_ms) { now.wrapping_sub(e.accessed_10ms()) } else { u32::MAX };
        let mut best: Option<(u32, EntryPtr)> = None;
        for _ in 0..EVICTION_SAMPLES {
            let start = self.next_random() as usize;
            // Buckets are a power of two; a run of probes finds the next occupied one.
            let found = (0..EVICTION_SAMPLE_PROBES)
                .find_map(|i| self.hash.get_bucket((start + i) & (buckets - 1)))
                .copied()
                .filter(|e| keep.binary_search(&e.key()).is_err());
            if let Some(e) = found {
                let i = idle(&e);
                if best.is_none_or(|(b, _)| i > b) {
                    best = Some((i, e));
                }
            }
        }
        // A table left sparse by deletes may miss every probe: then any entry will do.
        best.map(|(_, e)| e)
            .or_else(|| self.hash.iter().find(|e| keep.binary_search(&e.key()).is_err()).copied())
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*: sampling needs spread, not secrecy.
        let mut x = self.sample_seed;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.sample_seed = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lru(bytes_max: usize) -> Option<MemoryLimit> {
        Some(MemoryLimit { bytes_max, eviction: Eviction::AllKeysLru })
    }

    #[test]
    fn growth_is_what_mem_bytes_becomes() {
        let mut s = Store::new();
        for i in 0..1000u32 {
            let key = format!("key:{i}");
            let value = vec![b'v'; (i as usize * 37) % 3000];
            let expires = i % 3 == 0;
            let before = s.mem_bytes() as isize;
            let growth = s.growth_bytes(s.growth([(key.as_bytes(), value.len(), expires)]));
            s.insert(key.as_bytes(), &value, expires.then_some(1 << 40), 0);
            // Exact but where the hash table doubles: there, over by its 16 control bytes.
            let over = growth - (s.mem_bytes() as isize - before);
            assert!((0..=16).contains(&over), "row {i}: grew {} for {growth}", growth - over);
        }
        // Overwrites: shorter, longer, dropping and gaining a TTL.
        for (i, len) in [(3u32, 10usize), (4, 5000), (6, 0), (7, 7)] {
            let key = format!("key:{i}");
            let before = s.mem_bytes() as isize;
            let growth = s.growth_bytes(s.growth([(key.as_bytes(), len, i == 7)]));
            s.insert(key.as_bytes(), &vec![b'w'; len], (i == 7).then_some(1 << 40), 0);
            assert_eq!(s.mem_bytes() as isize - before, growth, "overwrite {i}");
        }
    }

    /// Many new keys in one write, into an empty table (hashbrown sizes the first), into one
    /// that doubles several times, and into one holding deleted slots: never more than said.
    #[test]
    fn growth_of_many_keys_bounds_the_table() {
        let mut s = Store::new();
        let mut next = 0u32;
        for (deletes, n) in [(0, 1usize), (0, 3), (0, 40), (0, 1000), (900, 10), (0, 500), (1200, 3000)] {
            for i in next - deletes.min(next)..next {
                s.delete(format!("key:{i}").as_bytes(), 0);
            }
            let keys: Vec<String> = (next..next + n as u32).map(|i| format!("key:{i}")).collect();
            next += n as u32;
            let before = s.mem_bytes() as isize;
            let growth = s.growth_bytes(s.growth(keys.iter().map(|k| (k.as_bytes(), 8, false))));
            for k in &keys {
                s.insert(k.as_bytes(), b"12345678", None, 0);
            }
            let grew = s.mem_bytes() as isize - before;
            assert!(grew <= growth, "{n} keys after {deletes} deletes grew {grew} for {growth}");
        }
    }

    #[test]
    fn lru_evicts_the_idle_not_the_used() {
        let mut s = Store::new();
        s.set_memory_limit(lru(1 << 20));
        for i in 0..2000u32 {
            s.insert(format!("cold:{i}").as_bytes(), b"v", None, 1_000);
        }
        for i in 0..100u32 {
            s.insert(format!("hot:{i}").as_bytes(), b"v", None, 1_000);
        }
        // The hot keys are read later than every cold key was written.
        for i in 0..100u32 {
            assert!(s.get(format!("hot:{i}").as_bytes(), 60_000).is_some());
        }
        for _ in 0..1000 {
            let k = s.victim(Eviction::AllKeysLru, &[], 60_000).expect("a victim");
            s.evict(&k);
        }
        let hot_left = (0..100u32).filter(|i| s.get(format!("hot:{i}").as_bytes(), 60_000).is_some()).count();
        assert_eq!(hot_left, 100, "sampling picked a hot key while cold ones were idle for a minute");
        assert_eq!((s.evictions(), s.len()), (1000, 1100));
    }

    #[test]
    fn victims_respect_keep_and_policy() {
        let mut s = Store::new();
        s.insert(b"a", b"1", None, 0);
        assert_eq!(s.victim(Eviction::AllKeysLru, &[b"a"], 0), None);
        assert_eq!(s.victim(Eviction::VolatileTtl, &[], 0), None);
        assert_eq!(s.victim(Eviction::NoEviction, &[], 0), None);
        s.insert(b"late", b"1", Some(9_000), 0);
        s.insert(b"soon", b"1", Some(5_000), 0);
        assert_eq!(s.victim(Eviction::VolatileTtl, &[], 0).as_deref(), Some(&b"soon"[..]));
        assert_eq!(s.victim(Eviction::VolatileTtl, &[b"a", b"soon"], 0).as_deref(), Some(&b"late"[..]));
        s.evict(b"soon");
        assert_eq!((s.evictions(), s.len(), s.expiring_len()), (1, 2, 1));
    }

    #[test]
    fn a_sparse_table_still_yields_a_victim() {
        let mut s = Store::new();
        for i in 0..100_000u32 {
            s.insert(&i.to_be_bytes(), b"v", None, 0);
        }
        for i in 1..100_000u32 {
            s.delete(&i.to_be_bytes(), 0);
        }
        assert_eq!(s.victim(Eviction::AllKeysLru, &[], 0).as_deref(), Some(&0u32.to_be_bytes()[..]));
    }
}
