//! Ranges of the token space and where their replicas live. Range r of R owns the tokens
//! `[r·2⁶⁴/R, (r+1)·2⁶⁴/R)`, the same split `shard::shard_of_token` makes of a node among its
//! cores, so a key's range is a pure function of the key and R. Its RF replicas are on RF
//! consecutive places of the membership (sorted; a place is named by the id of the node that
//! first held it, `membership::Member::slot`), starting at place r mod N: every node
//! holds R·RF/N replicas (±1), and each node is first — the replica that campaigns first at
//! bootstrap — for R/N ranges, so the leaders start spread evenly.

use super::{NodeId, RangeId};
use crate::limits::{CLUSTER_NODES_MAX, CLUSTER_RANGES_MAX, CLUSTER_REPLICATION_MAX};
use crate::shard::{shard_of_token, token, token_range};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeMap {
    ranges: RangeId,
    replication: usize,
    /// Sorted, distinct, none 0.
    nodes: Vec<NodeId>,
}

impl RangeMap {
    pub fn new(ranges: RangeId, replication: usize, nodes: &[NodeId]) -> Result<RangeMap, String> {
        let mut sorted = nodes.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != nodes.len() {
            return Err("a node id is named twice".into());
        }
        if sorted.first() == Some(&0) {
            return Err("node ids start at 1".into());
        }
        if sorted.is_empty() || sorted.len() > CLUSTER_NODES_MAX {
            return Err(format!("a cluster has 1 to {CLUSTER_NODES_MAX} nodes, not {}", sorted.len()));
        }
        if !(1..=CLUSTER_RANGES_MAX).contains(&ranges) {
            return Err(format!("a cluster has 1 to {CLUSTER_RANGES_MAX} ranges, not {ranges}"));
        }
        if replication == 0 || replication > CLUSTER_REPLICATION_MAX.min(sorted.len()) {
            return Err(format!(
                "the replication factor is 1 to {} (at most one replica a node), not {replication}",
                CLUSTER_REPLICATION_MAX.min(sorted.len())
            ));
        }
        Ok(RangeMap { ranges, replication, nodes: sorted })
    }

    pub fn ranges(&self) -> RangeId {
        self.ranges
    }

    pub fn replication(&self) -> usize {
        self.replication
    }

    pub fn nodes(&self) -> &[NodeId] {
        &self.nodes
    }

    pub fn range_of_token(&self, t: u64) -> RangeId {
        shard_of_token(t, self.ranges as usize) as RangeId
    }

    pub fn range_of_key(&self, key: &[u8]) -> RangeId {
        self.range_of_token(token(key))
    }

    /// The first and last token of range `r`.
    pub fn tokens(&self, r: RangeId) -> (u64, u64) {
        token_range(r as usize, self.ranges as usize)
    }

    /// The nodes holding range `r`, the one to campaign first at bootstrap first.
    pub fn replicas(&self, r: RangeId) -> Vec<NodeId> {
        let n = self.nodes.len();
        (0..self.replication).map(|i| self.nodes[(r as usize + i) % n]).collect()
    }

    /// Whether node `node` is one of range `r`'s replicas, without making the list (on the
    /// request path: a read asks it of every range it touches).
    pub fn places(&self, r: RangeId, node: NodeId) -> bool {
        let n = self.nodes.len();
        self.nodes
            .iter()
            .position(|x| *x == node)
            .is_some_and(|i| (i + n - r as usize % n) % n < self.replication)
    }

    /// The ranges node `node` holds a replica of, in order.
    pub fn ranges_of(&self, node: NodeId) -> Vec<RangeId> {
        (0..self.ranges).filter(|r| self.replicas(*r).contains(&node)).collect()
    }

    /// Which of a node's `cores` drives its replica of range `r`: the core whose shard of the
    /// token space holds the range. With R a multiple of the node's cores (the membership
    /// checks it) every token of range r is in that one shard, so the core that drives a range
    /// is the one that stores its rows (`shard::shard_of_token`).
    pub fn core_of(&self, r: RangeId, cores: usize) -> usize {
        (r as usize * cores.max(1)) / self.ranges as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_are_on_distinct_nodes_and_spread_evenly() {
        let m = RangeMap::new(48, 3, &[5, 1, 9, 3]).unwrap();
        assert_eq!(m.nodes(), &[1, 3, 5, 9]);
        let mut held = std::collections::HashMap::new();
        let mut first = std::collections::HashMap::new();
        for r in 0..m.ranges() {
            let mut rs = m.replicas(r);
            *first.entry(rs[0]).or_insert(0) += 1;
            for n in &rs {
                *held.entry(*n).or_insert(0) += 1;
            }
            rs.sort_unstable();
            rs.dedup();
            assert_eq!(rs.len(), 3, "range {r}");
        }
        // 48 ranges × 3 replicas over 4 nodes: 36 each, and 12 firsts each.
        assert!(held.values().all(|h| *h == 36), "{held:?}");
        assert!(first.values().all(|f| *f == 12), "{first:?}");
        assert_eq!(m.ranges_of(1).len(), 36);
        for r in 0..m.ranges() {
            for n in [1, 3, 5, 9, 7] {
                assert_eq!(m.places(r, n), m.replicas(r).contains(&n), "range {r} node {n}");
            }
        }
    }

    #[test]
    fn a_ranges_core_is_the_one_that_stores_its_rows() {
        for cores in [1usize, 2, 3, 4, 6] {
            let m = RangeMap::new(12, 1, &[1]).unwrap();
            for r in 0..12 {
                let (lo, hi) = m.tokens(r);
                let c = m.core_of(r, cores);
                for t in [lo, lo + (hi - lo) / 2, hi] {
                    assert_eq!(shard_of_token(t, cores), c, "range {r} of 12 on {cores} cores, token {t}");
                }
            }
        }
    }

    #[test]
    fn every_key_has_one_range_and_ranges_tile_the_tokens() {
        let m = RangeMap::new(16, 1, &[1]).unwrap();
        let mut next = 0u64;
        for r in 0..16 {
            let (lo, hi) = m.tokens(r);
            assert_eq!(lo, next);
            assert_eq!(m.range_of_token(lo), r);
            assert_eq!(m.range_of_token(hi), r);
            next = hi.wrapping_add(1);
        }
        assert_eq!(next, 0);
        for k in [&b"a"[..], b"user:1", b""] {
            assert_eq!(m.range_of_key(k), m.range_of_token(token(k)));
        }
    }

    #[test]
    fn a_bad_membership_is_refused_with_the_reason() {
        assert!(RangeMap::new(16, 3, &[1, 2]).unwrap_err().contains("replication factor"));
        assert!(RangeMap::new(16, 1, &[1, 1]).unwrap_err().contains("twice"));
        assert!(RangeMap::new(16, 1, &[0, 1]).unwrap_err().contains("start at 1"));
        assert!(RangeMap::new(0, 1, &[1]).unwrap_err().contains("ranges"));
        assert!(RangeMap::new(16, 1, &[]).is_err());
    }
}
