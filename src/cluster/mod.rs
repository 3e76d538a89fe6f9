//! Replicated key ranges on Raft, without I/O: the pieces a core uses to keep its share of a
//! cluster's ranges, which `src/server/` will wire to the node-to-node listener, the cores'
//! write-ahead logs and the request path.
//!
//! The model (docs/cluster.md): a cluster splits the 64-bit token space (`shard::token`) into
//! R contiguous ranges, fixed at creation and independent of any node's `--cores`; each range is
//! one Raft group with a replica on RF distinct nodes ([`ranges::RangeMap`]). On a node, each
//! replica belongs to one core, which drives the Raft state of all its replicas together
//! ([`replicas::Replicas`]): one tick, one `ready` for all of them, so that their new entries
//! and hard states go to the core's one write-ahead log in one group commit and one fdatasync,
//! not one per group. The Raft engine is raft-rs (TiKV's): a state machine with no runtime and
//! no threads, which fits a core that owns its data (docs/architecture.md has the comparison
//! with openraft).
//!
//! - [`ranges`]: ranges, their tokens, and which nodes hold each.
//! - [`log`]: one replica's Raft log in memory, behind raft-rs's `Storage`; what is durable is
//!   what the core wrote of each `ready`, and a restart rebuilds it from that.
//! - [`replicas`]: one core's replicas: proposals, messages, the ready/persisted cycle, the
//!   committed entries to apply and the proposals they acknowledge, snapshots and compaction.
//! - [`wire`]: a Raft message between nodes, framed with its range.
//!
//! The seeded simulation (`sim`, tests only) runs several nodes' replicas over a network that
//! loses, duplicates, delays and partitions messages, and crashes nodes, and checks what Raft
//! promises: no two replicas apply different entries at one index, and every acknowledged write
//! is applied on every replica once the faults stop.

pub mod command;
pub mod dump;
pub mod log;
mod logger;
pub mod membership;
pub mod ranges;
pub mod replicas;
pub mod swap;
pub mod wire;

#[cfg(test)]
mod sim;

/// A node's id in the cluster (and the Raft peer id of each of its replicas): never 0, which
/// raft-rs reserves for "none".
pub type NodeId = u64;

/// A range's number, 0 to R−1.
pub type RangeId = u32;

pub use logger::raft_logger;
