//! What one executor owns: its shard's store, its statistics, its end of the mesh, and the
//! shared read-only configuration. Shard state sits in `RefCell`s that are borrowed only between
//! awaits, never across one.

use super::datadir::User;
use super::mesh::{Mesh, Rep, Req};
use super::runtime::LocalSignal;
use super::stats::ShardStats;
use super::Config;
use crate::shard::{run_op, ShardOp, ShardReply};
use crate::store::Store;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Read-only after start, plus a few counters that every core may bump. Never shard data.
pub struct Shared {
    pub config: Config,
    pub users: HashMap<String, User>,
    pub auth_salt: [u8; 16],
    pub fingerprint: [u8; 32],
    /// TLS 1.3 configuration; `None` with `--plaintext`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub started: Instant,
    pub connections: AtomicUsize,
    pub max_connections: usize,
    pub shutdown: AtomicBool,
    /// Cores still serving connections during shutdown.
    pub draining: AtomicUsize,
    pub next_conn_id: AtomicU64,
}

pub struct Core {
    pub id: usize,
    pub shards: usize,
    pub store: RefCell<Store>,
    pub stats: RefCell<ShardStats>,
    pub shared: Arc<Shared>,
    pub mesh: Option<Rc<Mesh>>,
    pub shutdown: Rc<LocalSignal>,
    pub conns: Cell<usize>,
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Core {
    pub fn run_ops(&self, ops: &[ShardOp], now_ms: u64) -> Vec<ShardReply> {
        let mut store = self.store.borrow_mut();
        ops.iter().map(|op| run_op(&mut store, op, now_ms)).collect()
    }

    /// This core's statistics with its store's figures filled in.
    pub fn stats_snapshot(&self) -> ShardStats {
        let mut s = self.stats.borrow().clone();
        let store = self.store.borrow();
        s.keys = store.live_len(now_ms());
        s.data_bytes = store.data_bytes() as u64;
        s.index_bytes = store.index_bytes_estimate() as u64;
        s.connections = self.conns.get() as u64;
        s
    }

    /// Serve a request from another core.
    pub fn handle(&self, req: Req) -> Rep {
        match req {
            Req::Ops { now_ms, ops, .. } => Rep::Ops(self.run_ops(&ops, now_ms)),
            Req::Stats { .. } => Rep::Stats(Box::new(self.stats_snapshot())),
        }
    }

    /// Every core's statistics, this one's first, in shard order.
    pub async fn collect_stats(&self) -> Vec<ShardStats> {
        let mut all = vec![None; self.shards];
        all[self.id] = Some(self.stats_snapshot());
        if let Some(mesh) = &self.mesh {
            let mut slots = Vec::new();
            for s in (0..self.shards).filter(|s| *s != self.id) {
                if let Some(slot) = mesh.send(s, |id, reply_to| Req::Stats { id, reply_to }).await {
                    slots.push((s, slot));
                }
            }
            for (s, slot) in slots {
                if let Rep::Stats(st) = slot.take().await {
                    all[s] = Some(*st);
                }
            }
        }
        all.into_iter().map(Option::unwrap_or_default).collect()
    }

    pub fn shutting_down(&self) -> bool {
        self.shared.shutdown.load(Ordering::Relaxed)
    }
}
