//! Per-shard statistics: operation counts and latency histograms per statement kind, connection
//! and byte counters. Each core keeps its own; SHOW STATS collects a copy from every core and
//! merges them, so recording a latency never touches shared memory. The rows of SHOW STATS and
//! SHOW STATUS are built here, and only here: by the server from every core's copy, and by the
//! reference semantics (`shard::execute`) from its stores alone.

use crate::limits::{FRAME_HEADER_BYTES, FRAME_OVERHEAD_BYTES};
use crate::protocol::{ErrorCode, MessageType, Value};
use crate::sql::StatementKind;
use crate::store::Store;
use hdrhistogram::Histogram;

/// Latencies are recorded in microseconds, 1 µs to 60 s, with 2 significant digits.
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 2).expect("static bounds")
}

/// Where `code` is in `ErrorCode::ALL` (and in `ShardStats::errors_by_code`).
pub fn code_index(code: ErrorCode) -> usize {
    ErrorCode::ALL.iter().position(|c| *c == code).unwrap_or(0)
}

#[derive(Clone)]
pub struct ShardStats {
    pub ops: [u64; StatementKind::ALL.len()],
    pub errors: u64,
    /// Failed statements by kind, and error replies by wire code (indexed as `ErrorCode::ALL`).
    pub errors_by_kind: [u64; StatementKind::ALL.len()],
    pub errors_by_code: [u64; ErrorCode::ALL.len()],
    pub latency_us: Vec<Histogram<u64>>,
    /// Exact sums of the latencies recorded per kind (the histograms keep 2 significant digits).
    pub latency_sum_us: [u64; StatementKind::ALL.len()],
    pub connections: u64,
    pub connections_total: u64,
    pub connections_refused: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub failed_logins: u64,
    pub login_throttled: u64,
    pub rate_limited: u64,
    pub audit_dropped: u64,
    pub keys: u64,
    pub data_bytes: u64,
    pub index_bytes: u64,
    /// What the store holds in the heap (`Store::mem_bytes`), its limit (0: none), and the keys
    /// evicted to keep it there.
    pub memory_used_bytes: u64,
    pub memory_limit_bytes: u64,
    pub evictions: u64,
    /// Durability: bytes of the current log and of the last snapshot, when it was taken, and
    /// log groups that could not be made durable.
    pub log_bytes: u64,
    pub snapshot_bytes: u64,
    pub last_snapshot_ms: u64,
    pub snapshots: u64,
    pub storage_errors: u64,
    pub syncs: u64,
    /// Time spent in those fdatasyncs, and how long the log's write or sync in progress has been
    /// running (0: none): a stalled disk shows there.
    pub sync_us: u64,
    pub io_stalled_ms: u64,
    /// Idle connections parked as session state (park.rs).
    pub connections_parked: u64,
    /// On a cluster node: its id, and the Raft state of the replicas this core drives.
    pub cluster_node: Option<u64>,
    pub ranges: Vec<crate::cluster::replicas::RangeStatus>,
}

impl Default for ShardStats {
    fn default() -> Self {
        ShardStats {
            ops: [0; StatementKind::ALL.len()],
            errors: 0,
            errors_by_kind: [0; StatementKind::ALL.len()],
            errors_by_code: [0; ErrorCode::ALL.len()],
            latency_us: StatementKind::ALL.iter().map(|_| new_histogram()).collect(),
            latency_sum_us: [0; StatementKind::ALL.len()],
            connections: 0,
            connections_total: 0,
            connections_refused: 0,
            bytes_in: 0,
            bytes_out: 0,
            failed_logins: 0,
            login_throttled: 0,
            rate_limited: 0,
            audit_dropped: 0,
            keys: 0,
            data_bytes: 0,
            index_bytes: 0,
            memory_used_bytes: 0,
            memory_limit_bytes: 0,
            evictions: 0,
            log_bytes: 0,
            snapshot_bytes: 0,
            last_snapshot_ms: 0,
            snapshots: 0,
            storage_errors: 0,
            syncs: 0,
            sync_us: 0,
            io_stalled_ms: 0,
            connections_parked: 0,
            cluster_node: None,
            ranges: Vec::new(),
        }
    }
}

impl ShardStats {
    /// A shard's figures that its store holds: keys and memory.
    pub fn set_store(&mut self, store: &Store, now_ms: u64) {
        self.keys = store.live_len(now_ms);
        self.data_bytes = store.data_bytes() as u64;
        self.index_bytes = store.index_bytes_estimate() as u64;
        self.memory_used_bytes = store.mem_bytes() as u64;
        self.memory_limit_bytes = store.memory_limit().map_or(0, |l| l.bytes_max as u64);
        self.evictions = store.evictions();
    }

    pub fn record(&mut self, kind: StatementKind, latency_us: u64, ok: bool) {
        self.ops[kind.index()] += 1;
        self.errors += (!ok) as u64;
        self.errors_by_kind[kind.index()] += (!ok) as u64;
        self.latency_us[kind.index()].saturating_record(latency_us.max(1));
        self.latency_sum_us[kind.index()] += latency_us;
    }

    /// Count the ERROR frames among `out`, whole frames about to be written to a client, by
    /// their code: every error reply, whatever answered it (a failed statement, one refused
    /// before it ran, a protocol error). One hop per frame, over headers just written.
    pub fn count_error_replies(&mut self, out: &[u8]) {
        let mut at = 0;
        while let Some(h) = out.get(at..at + FRAME_HEADER_BYTES) {
            let len = u32::from_le_bytes([h[6], h[7], h[8], h[9]]) as usize;
            if h[5] == MessageType::Error as u8 {
                let code = out.get(at + FRAME_HEADER_BYTES..at + FRAME_HEADER_BYTES + 2);
                if let Some(code) = code.and_then(|c| ErrorCode::from_u16(u16::from_le_bytes([c[0], c[1]]))) {
                    self.errors_by_code[code_index(code)] += 1;
                }
            }
            at += FRAME_OVERHEAD_BYTES + len;
        }
    }

    pub fn merge(&mut self, o: &ShardStats) {
        for i in 0..self.ops.len() {
            self.ops[i] += o.ops[i];
            self.errors_by_kind[i] += o.errors_by_kind[i];
            let _ = self.latency_us[i].add(&o.latency_us[i]);
            self.latency_sum_us[i] += o.latency_sum_us[i];
        }
        for i in 0..self.errors_by_code.len() {
            self.errors_by_code[i] += o.errors_by_code[i];
        }
        self.errors += o.errors;
        self.connections += o.connections;
        self.connections_total += o.connections_total;
        self.connections_refused += o.connections_refused;
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        self.failed_logins += o.failed_logins;
        self.login_throttled += o.login_throttled;
        self.rate_limited += o.rate_limited;
        self.audit_dropped += o.audit_dropped;
        self.keys += o.keys;
        self.data_bytes += o.data_bytes;
        self.index_bytes += o.index_bytes;
        self.memory_used_bytes += o.memory_used_bytes;
        self.memory_limit_bytes += o.memory_limit_bytes;
        self.evictions += o.evictions;
        self.log_bytes += o.log_bytes;
        self.snapshot_bytes += o.snapshot_bytes;
        self.last_snapshot_ms = self.last_snapshot_ms.max(o.last_snapshot_ms);
        self.snapshots += o.snapshots;
        self.storage_errors += o.storage_errors;
        self.syncs += o.syncs;
        self.sync_us += o.sync_us;
        self.io_stalled_ms = self.io_stalled_ms.max(o.io_stalled_ms);
        self.connections_parked += o.connections_parked;
    }

    /// The (name, value) rows of SHOW STATS and of a STATS reply.
    pub fn rows(&self, rss_bytes: u64) -> Vec<(String, Value)> {
        let int = |v: u64| Value::Int(v.min(i64::MAX as u64) as i64);
        let mut rows = Vec::new();
        let mut all = new_histogram();
        for k in StatementKind::ALL {
            rows.push((format!("ops_{}", k.name()), int(self.ops[k.index()])));
            let _ = all.add(&self.latency_us[k.index()]);
        }
        rows.push(("ops_total".into(), int(self.ops.iter().sum())));
        rows.push(("errors_total".into(), int(self.errors)));
        let pct = |rows: &mut Vec<(String, Value)>, prefix: &str, h: &Histogram<u64>| {
            for (name, q) in [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99_9", 99.9)] {
                rows.push((format!("{prefix}_{name}_us"), int(h.value_at_percentile(q))));
            }
            rows.push((format!("{prefix}_max_us"), int(h.max())));
        };
        pct(&mut rows, "latency", &all);
        for k in StatementKind::ALL {
            let h = &self.latency_us[k.index()];
            if !h.is_empty() {
                pct(&mut rows, &format!("latency_{}", k.name()), h);
            }
        }
        rows.push(("connections".into(), int(self.connections)));
        rows.push(("connections_total".into(), int(self.connections_total)));
        rows.push(("connections_refused".into(), int(self.connections_refused)));
        rows.push(("connections_parked".into(), int(self.connections_parked)));
        rows.push(("keys".into(), int(self.keys)));
        rows.push(("memory_data_bytes".into(), int(self.data_bytes)));
        rows.push(("memory_index_bytes".into(), int(self.index_bytes)));
        rows.push(("memory_rss_bytes".into(), int(rss_bytes)));
        rows.push(("memory_used_bytes".into(), int(self.memory_used_bytes)));
        rows.push(("memory_limit_bytes".into(), int(self.memory_limit_bytes)));
        rows.push(("evicted_keys".into(), int(self.evictions)));
        rows.push(("bytes_in".into(), int(self.bytes_in)));
        rows.push(("bytes_out".into(), int(self.bytes_out)));
        rows.push(("rate_limited".into(), int(self.rate_limited)));
        rows.push(("failed_logins".into(), int(self.failed_logins)));
        rows.push(("login_throttled".into(), int(self.login_throttled)));
        rows.push(("audit_dropped".into(), int(self.audit_dropped)));
        rows.push(("storage_errors".into(), int(self.storage_errors)));
        rows.push(("wal_log_bytes".into(), int(self.log_bytes)));
        rows.push(("wal_snapshot_bytes".into(), int(self.snapshot_bytes)));
        rows.push(("wal_snapshots".into(), int(self.snapshots)));
        rows.push(("wal_syncs".into(), int(self.syncs)));
        rows
    }
}

/// The server's side of SHOW STATUS: what it runs as and for whom. The default is no server
/// at all (the reference semantics run in place): nothing durable, nothing encrypted, no one.
#[derive(Default)]
pub struct Settings {
    pub uptime_s: u64,
    pub connections: u64,
    pub max_connections: u64,
    pub max_payload: u32,
    /// What --durability is, in words; None: in memory only.
    pub durability: Option<String>,
    pub encrypted: bool,
    pub tls: bool,
    pub user: String,
    pub role: &'static str,
    pub now_ms: u64,
    /// `--eviction` (what makes room under `--max-memory`).
    pub eviction: &'static str,
}

/// The rows of SHOW STATS (and of a STATS reply): every shard's statistics merged, and the
/// process's resident memory.
pub fn stats_rows(all: &[ShardStats], rss_bytes: u64) -> Vec<(String, Value)> {
    let mut total = ShardStats::default();
    for s in all {
        total.merge(s);
    }
    total.rows(rss_bytes)
}

/// A cluster node's rows of SHOW STATUS: per range it holds a replica of, what `velocityd
/// cluster status` says of it (leader, term, commit and applied index, where its log starts),
/// and on the leader each other replica's lag behind the commit index.
fn cluster_rows(node: u64, all: &[ShardStats]) -> Vec<(String, Value)> {
    let int = |v: u64| Value::Int(v.min(i64::MAX as u64) as i64);
    let mut ranges: Vec<&crate::cluster::replicas::RangeStatus> =
        all.iter().flat_map(|s| &s.ranges).collect();
    ranges.sort_by_key(|r| r.range);
    let mut rows = vec![
        ("cluster_node".to_string(), int(node)),
        ("cluster_ranges".into(), int(ranges.len() as u64)),
        ("cluster_ranges_led".into(), int(ranges.iter().filter(|r| r.is_leader).count() as u64)),
    ];
    for r in ranges {
        let n = r.range;
        let leader = r.leader.map_or(Value::Null, int);
        rows.push((format!("range_{n}_leader"), leader));
        rows.push((format!("range_{n}_term"), int(r.term)));
        rows.push((format!("range_{n}_commit"), int(r.commit)));
        rows.push((format!("range_{n}_applied"), int(r.applied)));
        rows.push((format!("range_{n}_snapshot_index"), int(r.snapshot_index)));
        for (replica, matched) in r.matched.iter().filter(|(id, _)| *id != node) {
            rows.push((format!("range_{n}_lag_node_{replica}"), int(r.commit.saturating_sub(*matched))));
        }
    }
    rows
}

/// The rows of SHOW STATUS: the settings, the log's figures when it is on, and per-shard keys.
pub fn status_rows(set: &Settings, all: &[ShardStats]) -> Vec<(String, Value)> {
    let int = |v: u64| Value::Int(v.min(i64::MAX as u64) as i64);
    let text = |s: &str| Value::Bytes(s.as_bytes().to_vec());
    let durable = set.durability.is_some();
    let mut rows = vec![
        ("version".to_string(), text(env!("CARGO_PKG_VERSION"))),
        ("protocol_version".into(), int(crate::protocol::VERSION as u64)),
        ("uptime_s".into(), int(set.uptime_s)),
        ("shards".into(), int(all.len() as u64)),
        ("connections".into(), int(set.connections)),
        ("max_connections".into(), int(set.max_connections)),
        ("max_payload".into(), int(set.max_payload as u64)),
        ("durability".into(), text(set.durability.as_deref().unwrap_or("none (in memory only)"))),
        ("encryption_at_rest".into(), text(if set.encrypted { "AES-256-GCM" } else { "off" })),
        ("tls".into(), text(if set.tls { "TLS 1.3" } else { "off" })),
        ("user".into(), text(&set.user)),
        ("role".into(), text(set.role)),
        ("max_memory_bytes".into(), int(all.iter().map(|s| s.memory_limit_bytes).sum())),
        ("eviction".into(), text(if set.eviction.is_empty() { "noeviction" } else { set.eviction })),
    ];
    if durable {
        let total = |f: fn(&ShardStats) -> u64| all.iter().map(f).sum::<u64>();
        rows.push(("wal_log_bytes".into(), int(total(|s| s.log_bytes))));
        rows.push(("wal_snapshot_bytes".into(), int(total(|s| s.snapshot_bytes))));
        let last = all.iter().map(|s| s.last_snapshot_ms).max().unwrap_or(0);
        rows.push(("wal_last_snapshot_unix_ms".into(), int(last)));
        rows.push(("wal_last_snapshot_age_s".into(), int(set.now_ms.saturating_sub(last) / 1000)));
        rows.push(("storage_errors".into(), int(total(|s| s.storage_errors))));
    }
    if let Some(node) = all.iter().find_map(|s| s.cluster_node) {
        rows.extend(cluster_rows(node, all));
    }
    for (i, s) in all.iter().enumerate() {
        rows.push((format!("shard_{i}_keys"), int(s.keys)));
        rows.push((format!("shard_{i}_connections"), int(s.connections)));
        rows.push((format!("shard_{i}_memory_used_bytes"), int(s.memory_used_bytes)));
        if durable {
            rows.push((format!("shard_{i}_wal_log_bytes"), int(s.log_bytes)));
            rows.push((format!("shard_{i}_wal_snapshot_bytes"), int(s.snapshot_bytes)));
        }
    }
    rows
}
