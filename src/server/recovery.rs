//! Start-up: the data directory's durable state recovered into one store per core, and laid out
//! for this run's cores; what each core then starts from.

use super::config::Config;
use super::durable;
use super::runtime::now_ms;
use crate::store::Store;
use std::sync::Arc;

/// What each core starts from: its recovered shard and the generation its files are in.
pub struct Startup {
    pub generation: u64,
    pub cipher: Option<Arc<crate::durability::Cipher>>,
    /// Taken once by each core as it starts; never touched again.
    pub stores: std::sync::Mutex<Vec<Option<Store>>>,
    /// Where each core's log goes on (empty with durability off).
    pub logs: Vec<durable::ShardLog>,
    /// Each core's listening socket, bound before the cores start (owner::bind_listeners).
    pub listeners: std::sync::Mutex<Vec<Option<std::net::TcpListener>>>,
    /// The metrics endpoint's socket (--metrics-listen), taken by core 0.
    pub metrics_listener: std::sync::Mutex<Option<std::net::TcpListener>>,
    /// A cluster node's: each core's Raft records in log order (its replicas' logs), and its
    /// listening socket for peers.
    pub raft: Vec<Vec<Vec<u8>>>,
    pub peer_listeners: std::sync::Mutex<Vec<Option<std::net::TcpListener>>>,
    /// A cluster node's membership and link settings; None for a single node.
    pub cluster: Option<Arc<super::node::Cluster>>,
}

impl Startup {
    /// What each recovered store holds in the heap (`Store::mem_bytes`), before any core runs.
    pub fn stores_bytes(&self) -> Vec<u64> {
        let stores = self.stores.lock().expect("start-up hand-off");
        stores.iter().map(|s| s.as_ref().map_or(0, |s| s.mem_bytes() as u64)).collect()
    }
}

/// Recover the data directory's durable state into `cores` shards and lay it out afresh for
/// them (a new generation), or check that there is none when durability is off.
pub fn startup(config: &Config, cluster: bool) -> Result<Startup, String> {
    let cipher = config.encryption_key.map(|k| Arc::new(crate::durability::Cipher::new(&k)));
    let now = now_ms();
    if config.durability.is_none() {
        if durable::current(&config.data_dir)?.is_some() {
            return Err(format!(
                "{} holds durable data, and --durability none would neither load nor keep it: start with \
                 --durability sync (or periodic), or move that directory away to start empty",
                durable::wal_dir(&config.data_dir).display()
            ));
        }
        let stores = (0..config.cores).map(|_| Some(Store::new())).collect();
        return Ok(Startup {
            generation: 0,
            cipher,
            stores: std::sync::Mutex::new(stores),
            logs: Vec::new(),
            listeners: Default::default(),
            metrics_listener: Default::default(),
            raft: Vec::new(),
            peer_listeners: Default::default(),
            cluster: None,
        });
    }
    let rec = durable::recover(&config.data_dir, config.cores, cipher.as_deref(), now)?;
    let r = &rec.report;
    let records = r.snapshot_entries + r.log_records;
    tracing::info!(
        snapshot_entries = r.snapshot_entries,
        log_records = r.log_records,
        bytes = r.bytes_read,
        elapsed_ms = r.elapsed_ms,
        records_per_s = (records as f64 / (r.elapsed_ms.max(1) as f64 / 1000.0)) as u64,
        torn_tails = r.torn_tails.len(),
        "recovered"
    );
    if let Some((path, offset)) = &rec.first_raft_record {
        // Read as anything else, a cluster node's log would lose its replicas.
        if !cluster {
            return Err(format!(
                "{}: the record at offset {offset} is a cluster node's Raft state, and this data directory has no cluster file; this velocityd will not start on it as a single node",
                path.display()
            ));
        }
        if !rec.reusable(config.cores, cipher.is_some()) {
            return Err(format!(
                "{}: a cluster node's logs cannot be laid out afresh (other --cores, or encryption turned on): start it as it was",
                path.display()
            ));
        }
    }
    let (generation, logs) = durable::lay_out(&config.data_dir, &rec, cipher.as_deref(), now)?;
    let mut raft = rec.raft;
    raft.resize(config.cores, Vec::new());
    let stores = rec.stores.into_iter().map(Some).collect();
    Ok(Startup {
        generation,
        cipher,
        stores: std::sync::Mutex::new(stores),
        logs,
        listeners: Default::default(),
        metrics_listener: Default::default(),
        raft,
        peer_listeners: Default::default(),
        cluster: None,
    })
}
