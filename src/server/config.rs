//! velocityd's settings, as the command line gives them.

use super::datadir;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    /// Where GET /metrics is served (Prometheus text format); None: nowhere.
    pub metrics_listen: Option<SocketAddr>,
    pub cores: usize,
    pub cpu_list: Option<Vec<usize>>,
    pub data_dir: PathBuf,
    /// 0: derived from the open-files limit.
    pub max_connections: usize,
    pub idle_timeout_s: u64,
    pub handshake_timeout_ms: u64,
    /// Longest a logged-in client may take to send one frame, from its first byte.
    pub frame_timeout_ms: u64,
    /// Connections waiting to log in, server-wide, from one address and in all (admission.rs).
    pub max_unauthenticated_per_ip: usize,
    pub max_unauthenticated: usize,
    pub max_payload: u32,
    /// Cross-core queues: glommio's channel mesh or crossbeam-channel.
    pub mesh: MeshKind,
    /// Serve plain TCP instead of TLS 1.3.
    pub plaintext: bool,
    /// The operator's certificate chain and key (PEM) instead of the data directory's identity.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Per-connection and server-wide rate limits (the latter split evenly across cores).
    pub rate_limit_conn: Option<datadir::RateLimit>,
    pub rate_limit_global: Option<datadir::RateLimit>,
    /// Failed logins of one user from one address (per core) before that pair is throttled;
    /// 0 turns it off.
    pub login_fail_threshold: u32,
    /// Failed logins from one address, all users (per core, leaking away), before the whole
    /// address is throttled (password spraying); 0 turns it off.
    pub login_addr_fail_threshold: u32,
    pub audit: bool,
    pub audit_file_bytes_max: u64,
    /// Statements whose latency reaches this many µs go into their core's slow log
    /// (SHOW SLOWLOG); 0: every statement, u64::MAX (`off`): none.
    pub slowlog_threshold_us: u64,
    /// `--max-memory`: the heap the stores may hold in all, split evenly across shards; None: no
    /// limit. `eviction` makes room when a write would pass it.
    pub max_memory_bytes: Option<u64>,
    pub eviction: crate::store::Eviction,
    /// None: in memory only.
    pub durability: Option<Mode>,
    /// AES-256-GCM key for the log and snapshots.
    pub encryption_key: Option<[u8; crate::durability::KEY_BYTES]>,
    /// Log size that triggers a snapshot.
    pub snapshot_log_bytes: u64,
    /// `--peer-listen`: where a cluster node takes its peers' connections (core c on the port +
    /// c) when not at the address its cluster file gives, which the peers dial: a node behind
    /// a NAT or a proxy. None: that address.
    pub peer_listen: Option<std::net::SocketAddr>,
    /// Testing only: a pause before each group write to the log (0: none).
    pub test_write_delay_ms: u64,
}

/// How durable an acknowledged write is (`--durability`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A RESPONSE leaves after its record is on disk.
    Sync,
    /// Records are written at once and synced every `interval_ms`; a crash loses at most that.
    Periodic { interval_ms: u64 },
}

/// Which queues carry cross-core messages (`--mesh`). Both are bounded and lock-free; glommio's
/// wake the receiving executor through an eventfd, crossbeam's are polled by a task that spins
/// while traffic flows and backs off to a short sleep when idle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MeshKind {
    Glommio,
    Crossbeam,
}

/// A size in bytes as Redis's configuration writes one: a number, optionally with `k` (10^3),
/// `kb` or `kib` (2^10), `m`, `mb`/`mib`, `g`, `gb`/`gib`, in either case.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let scale: u64 = match unit {
        "" | "b" => 1,
        "k" => 1_000,
        "kb" | "kib" => 1 << 10,
        "m" => 1_000_000,
        "mb" | "mib" => 1 << 20,
        "g" => 1_000_000_000,
        "gb" | "gib" => 1 << 30,
        _ => return Err(format!("{s:?}: expected bytes, e.g. 1073741824, 1gb or 512mb")),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("{s:?}: expected a positive number of bytes, e.g. 1gb or 512mb"))
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn sizes_parse_as_redis_writes_them() {
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        assert_eq!(parse_bytes("512mb"), Ok(512 << 20));
        assert_eq!(parse_bytes("2GB"), Ok(2 << 30));
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes("5k"), Ok(5000));
        for bad in ["", "0", "mb", "1.5gb", "-1", "1tb", "99999999999999999999gb"] {
            assert!(parse_bytes(bad).is_err(), "{bad:?}");
        }
    }
}
