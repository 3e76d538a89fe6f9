//! `--max-memory` across the cores. Each store is limited to its share of what the limit leaves
//! after the process's own memory (the executors' rings and buffers, TLS, connections, the
//! binary): that part is measured as the least seen of RSS less what the stores hold, so it
//! never takes in data, and it only shrinks, so the stores' share only grows. Each core
//! publishes what its store holds at every tick; core 0 reads the RSS. No core waits on this.

use crate::store::{Eviction, MemoryLimit};
use std::sync::atomic::{AtomicU64, Ordering};

pub struct MemoryBudget {
    max_bytes: Option<u64>,
    eviction: Eviction,
    /// Each core's `Store::mem_bytes` as of its last tick.
    store_bytes: Vec<AtomicU64>,
    /// The least RSS less the stores seen so far; u64::MAX before the first look.
    overhead_min_bytes: AtomicU64,
}

impl MemoryBudget {
    /// For stores that hold `stores_bytes` at start (recovered data).
    pub fn new(max_bytes: Option<u64>, eviction: Eviction, stores_bytes: &[u64]) -> Self {
        MemoryBudget {
            max_bytes,
            eviction,
            store_bytes: stores_bytes.iter().map(|&b| AtomicU64::new(b)).collect(),
            overhead_min_bytes: AtomicU64::new(u64::MAX),
        }
    }

    pub fn is_limited(&self) -> bool {
        self.max_bytes.is_some()
    }

    /// Core `shard`'s store holds `bytes` now.
    pub fn publish(&self, shard: usize, bytes: u64) {
        self.store_bytes[shard].store(bytes, Ordering::Relaxed);
    }

    /// The process's RSS is `rss_bytes` now. Returns the process's own memory as now known.
    pub fn observe(&self, rss_bytes: u64) -> u64 {
        let stores: u64 = self.store_bytes.iter().map(|b| b.load(Ordering::Relaxed)).sum();
        let overhead = rss_bytes.saturating_sub(stores);
        self.overhead_min_bytes.fetch_min(overhead, Ordering::Relaxed).min(overhead)
    }

    /// The process's own memory, once measured.
    pub fn overhead_bytes(&self) -> Option<u64> {
        Some(self.overhead_min_bytes.load(Ordering::Relaxed)).filter(|&b| b != u64::MAX)
    }

    /// Each store's limit: an even share of what `--max-memory` leaves after the process's own
    /// memory (before it is measured, of all of it). None: no limit.
    pub fn shard_limit(&self) -> Option<MemoryLimit> {
        let max = self.max_bytes?;
        let left = max.saturating_sub(self.overhead_bytes().unwrap_or(0));
        Some(MemoryLimit {
            bytes_max: (left / self.store_bytes.len() as u64) as usize,
            eviction: self.eviction,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_share_is_the_least_seen_and_the_stores_share_only_grows() {
        let b = MemoryBudget::new(Some(1000), Eviction::AllKeysLru, &[100, 300]);
        assert_eq!(b.shard_limit().unwrap().bytes_max, 500);
        assert_eq!(b.observe(600), 200);
        assert_eq!(b.shard_limit().unwrap().bytes_max, 400);
        // Data written since is in the stores, not in the process's share.
        b.publish(0, 400);
        assert_eq!(b.observe(950), 200);
        // Freed memory the allocator kept: RSS less the stores grows, the share does not.
        b.publish(1, 0);
        assert_eq!(b.observe(950), 200);
        assert_eq!(b.observe(500), 100);
        assert_eq!(b.shard_limit().unwrap().bytes_max, 450);
        assert_eq!(MemoryBudget::new(None, Eviction::NoEviction, &[0]).shard_limit(), None);
        let tight = MemoryBudget::new(Some(100), Eviction::NoEviction, &[0]);
        tight.observe(300);
        assert_eq!(tight.shard_limit().unwrap().bytes_max, 0);
    }
}
