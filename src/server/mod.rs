//! velocityd: one pinned glommio executor per core, each owning one shard, binding the listen
//! address with SO_REUSEPORT and accepting for itself. This module wires the sans-I/O core to
//! sockets and cores; `runtime` is the only place that names glommio.

mod admission;
pub mod audit;
mod auth;
mod batch;
mod config;
mod conn;
mod core;
pub mod datadir;
mod duplex;
pub mod durable;
mod executor;
mod memory;
pub mod mesh;
mod metrics;
pub mod node;
pub mod owner;
mod park;
mod recovery;
mod report;
pub mod runtime;
mod session;
pub mod transport;
pub mod wal;

pub use config::{parse_bytes, Config};

use self::core::Shared;
use crate::error::Error;
use crate::limits::*;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The open-files limit, raised to its hard maximum, less a reserve for everything else.
fn default_max_connections() -> usize {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        }
    }
    (lim.rlim_cur.saturating_sub(FD_RESERVE) as usize).max(1)
}

/// Block SIGINT and SIGTERM in every thread (the executors inherit the mask) and turn them
/// into the shared shutdown flag on a thread of their own.
fn install_signal_thread(shared: Arc<Shared>) {
    // SAFETY: signal-mask manipulation on local sets; sigwait on the dedicated thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        std::thread::Builder::new()
            .name("velocity-signals".into())
            .spawn(move || {
                let mut sig = 0;
                libc::sigwait(&set, &mut sig);
                tracing::info!(
                    signal = sig,
                    "shutting down: no new connections, finishing in-flight requests"
                );
                shared.shutdown.store(true, Ordering::SeqCst);
                // A second signal exits at once.
                libc::sigwait(&set, &mut sig);
                std::process::exit(1);
            })
            .expect("signal thread");
    }
}

/// Run velocityd until it is told to stop; why it could not start, or why it stopped badly.
pub fn run(mut config: Config) -> Result<(), Error> {
    check(&config)?;
    // Held until velocityd exits: no second server, repair or start-up rewrites this directory.
    let lock = owner::DirLock::acquire(&config.data_dir, "start velocityd").map_err(Error::Busy)?;
    // Bound before recovery: an address served by another process is refused at once, and
    // clients connecting while a large data set loads wait in the backlog instead of failing.
    let listeners = owner::bind_listeners(config.listen, config.cores, lock.previous).map_err(Error::Busy)?;
    if let Some(bound) = listeners.first().and_then(|l| l.local_addr().ok()) {
        config.listen = bound;
    }
    let metrics_listener = match config.metrics_listen {
        Some(addr) => {
            let l = owner::bind_listeners(addr, 1, lock.previous).map_err(Error::Busy)?.pop();
            config.metrics_listen = l.as_ref().and_then(|l| l.local_addr().ok());
            l
        }
        None => None,
    };
    let dd = datadir::DataDir::open(&config.data_dir, config.tls_cert.as_deref(), config.tls_key.as_deref())
        .map_err(Error::Data)?;
    // Absolute from here on: glommio opens directories by absolute path only (a relative one
    // fails with EBADF), and log lines should name files unambiguously.
    config.data_dir = std::fs::canonicalize(&config.data_dir)
        .map_err(|e| Error::Data(format!("cannot resolve {}: {e}", config.data_dir.display())))?;
    let tls = if config.plaintext {
        None
    } else {
        Some(crate::security::tls::server_config(&dd.cert_pem, &dd.key_pem).map_err(Error::Config)?)
    };
    warn_of(&config)?;
    let cluster =
        node::Cluster::load(&config.data_dir, &dd.cert_pem, &dd.key_pem, &dd.fingerprint, config.cores)
            .map_err(Error::Config)?
            .map(Arc::new);
    let peer_listeners = match &cluster {
        None => Vec::new(),
        Some(c) => {
            if config.durability.is_none() {
                return Err(Error::Config(
                    "a cluster node keeps its Raft log in its write-ahead log: start it with --durability sync (or periodic)".into(),
                ));
            }
            if config.eviction != crate::store::Eviction::NoEviction {
                return Err(Error::Config(format!(
                    "--eviction {} on a cluster node: a replica would evict rows its peers keep; a cluster node refuses the writes that would pass --max-memory (noeviction)",
                    config.eviction.name()
                )));
            }
            let me = c.membership.member(c.this).expect("load checks it");
            let mut ls = Vec::new();
            for core in 0..config.cores {
                let at = match config.peer_listen {
                    Some(mut a) => {
                        a.set_port(a.port().checked_add(core as u16).ok_or_else(|| {
                            Error::Config(format!(
                                "--peer-listen {a}: port + {} cores does not fit",
                                config.cores
                            ))
                        })?);
                        a
                    }
                    None => me.peer_addr(core),
                };
                ls.extend(owner::bind_listeners(at, 1, lock.previous).map_err(Error::Busy)?);
            }
            ls
        }
    };
    // The open-files limit is raised here, before recovery opens the logs.
    let max_connections = match config.max_connections {
        0 => default_max_connections(),
        n => n,
    };
    // A file-size limit must surface as an error on the write (STORAGE_ERROR), not kill us.
    // SAFETY: setting a signal disposition to SIG_IGN.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    let mut start = recovery::startup(&config, cluster.is_some()).map_err(Error::Data)?;
    *start.peer_listeners.get_mut().expect("start-up hand-off") =
        peer_listeners.into_iter().map(Some).collect();
    start.cluster = cluster.clone();
    // Recovery's buffers (records read, mutations decoded) are freed by now, but malloc keeps
    // the pages for reuse: handing them back makes the RSS the stores' and the process's own,
    // which is what --max-memory measures the process's share by (memory.rs).
    // SAFETY: malloc_trim only releases free memory; nothing else allocates on this thread now.
    unsafe { libc::malloc_trim(0) };
    *start.listeners.lock().expect("start-up hand-off") = listeners.into_iter().map(Some).collect();
    *start.metrics_listener.lock().expect("start-up hand-off") = metrics_listener;
    let shared = Arc::new(Shared {
        auth_salt: dd.auth_salt,
        fingerprint: dd.fingerprint,
        tls,
        started: Instant::now(),
        connections: AtomicUsize::new(0),
        max_connections,
        shutdown: AtomicBool::new(false),
        draining: AtomicUsize::new(config.cores),
        next_conn_id: AtomicU64::new(1),
        memory: memory::MemoryBudget::new(config.max_memory_bytes, config.eviction, &start.stores_bytes()),
        config: config.clone(),
    });
    tracing::info!(
        listen = %config.listen,
        shards = config.cores,
        fingerprint = %datadir::fingerprint_string(&dd.fingerprint),
        transport = if config.plaintext { "plain TCP" } else { "TLS 1.3" },
        data_dir = %config.data_dir.display(),
        max_connections,
        "velocityd starting"
    );
    if let Some(addr) = config.metrics_listen {
        tracing::info!("metrics at http://{addr}/metrics");
    }
    if let Some(c) = &cluster {
        let me = c.membership.member(c.this).expect("load checks it");
        tracing::info!(node = c.this, peer_listen = %me.peer, nodes = c.membership.members.len(), ranges = c.map.ranges(), replication = c.map.replication(), "cluster node");
    }
    install_signal_thread(shared.clone());
    run_cores(shared, Arc::new(start))?;
    tracing::info!("velocityd stopped");
    drop(lock);
    Ok(())
}

/// Settings that cannot be, refused before anything is touched.
fn check(config: &Config) -> Result<(), Error> {
    if config.cores == 0 || config.cores > u16::MAX as usize {
        return Err(Error::Config("--cores must be between 1 and 65535".into()));
    }
    if !(PAYLOAD_BYTES_MAX_FLOOR..=PAYLOAD_BYTES_MAX_CEILING).contains(&config.max_payload) {
        return Err(Error::Config(format!(
            "--max-payload must be between {PAYLOAD_BYTES_MAX_FLOOR} and {PAYLOAD_BYTES_MAX_CEILING} bytes"
        )));
    }
    Ok(())
}

/// Refuse a malformed users or API-key file (each core loads its own copy later), and warn of
/// a server nobody can log in to or one that sends credentials in the clear.
fn warn_of(config: &Config) -> Result<(), Error> {
    let auth = auth::AuthDb::load(&config.data_dir).map_err(Error::Data)?;
    if auth.users.is_empty() {
        tracing::warn!(
            "no users in {}: nobody can log in; add one with `velocityd user add NAME --password-stdin --data-dir {}`",
            config.data_dir.display(),
            config.data_dir.display()
        );
    }
    if config.plaintext && !config.listen.ip().is_loopback() {
        tracing::warn!(listen = %config.listen, "--plaintext on a non-loopback address: credentials and data cross the network unencrypted");
    }
    if let Some(addr) = config.metrics_listen.filter(|a| !a.ip().is_loopback()) {
        tracing::warn!(metrics_listen = %addr, "--metrics-listen on a non-loopback address: the metrics are served to anyone who can reach it, without authentication");
    }
    Ok(())
}

/// One executor per core, placed as configured, joined by the mesh; until they all stop.
fn run_cores(shared: Arc<Shared>, start: Arc<recovery::Startup>) -> Result<(), Error> {
    let config = &shared.config;
    let meshes = match (config.cores > 1, config.mesh) {
        (false, _) => None,
        (true, mesh::MeshKind::Glommio) => Some(executor::MeshSetup::Glommio(mesh::builders(config.cores))),
        (true, mesh::MeshKind::Crossbeam) => {
            Some(executor::MeshSetup::Crossbeam(mesh::CrossbeamMesh::new(config.cores)))
        }
    };
    let placement = match config.cpu_list.clone() {
        Some(l) => runtime::Placement::Cpus(l),
        None => runtime::Placement::Spread(config.cores),
    };
    let preempt = Duration::from_micros(PREEMPT_TIMER_US);
    let sh = shared.clone();
    runtime::run_pool(placement, preempt, move || executor::run(sh, meshes, start))
}
