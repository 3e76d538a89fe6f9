//! velocityd: one pinned glommio executor per core, each owning one shard, binding the listen
//! address with SO_REUSEPORT and accepting for itself. This module wires the sans-I/O core to
//! sockets and cores; `runtime` is the only place that names glommio.

mod admission;
pub mod audit;
mod conn;
mod core;
pub mod datadir;
pub mod durable;
pub mod mesh;
pub mod owner;
mod park;
pub mod runtime;
pub mod stats;
pub mod transport;
pub mod wal;

use self::core::{now_ms, Core, Shared};
use crate::limits::*;
use crate::protocol::{encode_error, ErrorCode};
use crate::security;
use crate::store::Store;
use runtime::{race, sleep, Either, LocalSignal};
use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
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
    pub mesh: mesh::Transport,
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
    /// None: in memory only.
    pub durability: Option<wal::Mode>,
    /// AES-256-GCM key for the log and snapshots.
    pub encryption_key: Option<[u8; crate::durability::KEY_BYTES]>,
    /// Log size that triggers a snapshot.
    pub snapshot_log_bytes: u64,
    /// Testing only: a pause before each group write to the log (0: none).
    pub test_write_delay_ms: u64,
}

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
}

/// Recover the data directory's durable state into `cores` shards and lay it out afresh for
/// them (a new generation), or check that there is none when durability is off.
fn startup(config: &Config) -> Result<Startup, String> {
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
    let (generation, logs) = durable::lay_out(&config.data_dir, &rec, cipher.as_deref(), now)?;
    let stores = rec.stores.into_iter().map(Some).collect();
    Ok(Startup {
        generation,
        cipher,
        stores: std::sync::Mutex::new(stores),
        logs,
        listeners: Default::default(),
    })
}

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

pub fn run(mut config: Config) -> Result<(), String> {
    if config.cores == 0 || config.cores > u16::MAX as usize {
        return Err("--cores must be between 1 and 65535".into());
    }
    if !(PAYLOAD_BYTES_MAX_FLOOR..=PAYLOAD_BYTES_MAX_CEILING).contains(&config.max_payload) {
        return Err(format!(
            "--max-payload must be between {PAYLOAD_BYTES_MAX_FLOOR} and {PAYLOAD_BYTES_MAX_CEILING} bytes"
        ));
    }
    // Held until velocityd exits: no second server, repair or start-up rewrites this directory.
    let lock = owner::DirLock::acquire(&config.data_dir, "start velocityd")?;
    // Bound before recovery: an address served by another process is refused at once, and
    // clients connecting while a large data set loads wait in the backlog instead of failing.
    let listeners = owner::bind_listeners(config.listen, config.cores, lock.previous)?;
    if let Some(bound) = listeners.first().and_then(|l| l.local_addr().ok()) {
        config.listen = bound;
    }
    let dd = datadir::DataDir::open(&config.data_dir, config.tls_cert.as_deref(), config.tls_key.as_deref())?;
    // Absolute from here on: glommio opens directories by absolute path only (a relative one
    // fails with EBADF), and log lines should name files unambiguously.
    config.data_dir = std::fs::canonicalize(&config.data_dir)
        .map_err(|e| format!("cannot resolve {}: {e}", config.data_dir.display()))?;
    let tls = if config.plaintext {
        None
    } else {
        Some(crate::security::tls::server_config(&dd.cert_pem, &dd.key_pem)?)
    };
    let max_connections = match config.max_connections {
        0 => default_max_connections(),
        n => n,
    };
    // Refuse to start on a malformed users or API-key file; each core loads its own copy later.
    let auth = core::AuthDb::load(&config.data_dir)?;
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
    // A file-size limit must surface as an error on the write (STORAGE_ERROR), not kill us.
    // SAFETY: setting a signal disposition to SIG_IGN.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    let start = startup(&config)?;
    *start.listeners.lock().expect("start-up hand-off") = listeners.into_iter().map(Some).collect();
    let start = Arc::new(start);
    tracing::info!(
        listen = %config.listen,
        shards = config.cores,
        fingerprint = %datadir::fingerprint_string(&dd.fingerprint),
        transport = if config.plaintext { "plain TCP" } else { "TLS 1.3" },
        data_dir = %config.data_dir.display(),
        max_connections,
        "velocityd starting"
    );
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
        config: config.clone(),
    });
    install_signal_thread(shared.clone());
    let meshes = match (config.cores > 1, config.mesh) {
        (false, _) => None,
        (true, mesh::Transport::Glommio) => Some(MeshSetup::Glommio(mesh::builders(config.cores))),
        (true, mesh::Transport::Crossbeam) => {
            Some(MeshSetup::Crossbeam(mesh::CrossbeamMesh::new(config.cores)))
        }
    };
    let preempt = Duration::from_micros(PREEMPT_TIMER_US);
    let sh = shared.clone();
    let placement = match config.cpu_list.clone() {
        Some(l) => runtime::Placement::Cpus(l),
        None => runtime::Placement::Spread(config.cores),
    };
    runtime::run_pool(placement, preempt, move || executor(sh, meshes, start))?;
    tracing::info!("velocityd stopped");
    drop(lock);
    Ok(())
}

/// Run a connection in a task of its own; when it ends (rather than parks), count it gone.
fn serve_conn(core: &Rc<Core>, c: conn::Conn, transport: transport::Transport) {
    let core = core.clone();
    let serve = c.serve(transport);
    if core.stats.borrow().connections_total == 1 {
        tracing::debug!(future_bytes = std::mem::size_of_val(&serve), "connection task size");
    }
    runtime::spawn(async move {
        if serve.await {
            conn_ended(&core);
        }
    });
}

fn conn_ended(core: &Core) {
    core.conns.set(core.conns.get() - 1);
    core.shared.connections.fetch_sub(1, Ordering::Relaxed);
}

/// Tell a connection that is not admitted why (in the transport it expects), then close it;
/// at most the handshake timeout is spent on it, and at most REFUSALS_IN_FLIGHT_MAX at once per
/// core: past that, under a flood, it is closed without a word.
fn refuse(core: &Rc<Core>, stream: runtime::TcpStream, why: &'static str) {
    if core.refusing.get() >= REFUSALS_IN_FLIGHT_MAX {
        drop(stream);
        return;
    }
    core.refusing.set(core.refusing.get() + 1);
    let tls = core.shared.tls.clone();
    let handshake_ms = core.shared.config.handshake_timeout_ms;
    let core = core.clone();
    runtime::spawn(async move {
        let mut t = match tls.map(rustls::ServerConnection::new) {
            None => transport::Transport::Plain(stream),
            Some(Ok(c)) => {
                transport::Transport::Tls { tcp: stream, tls: Box::new(c.into()), pending: Vec::new() }
            }
            Some(Err(_)) => return,
        };
        let mut out = Vec::new();
        encode_error(&mut out, ErrorCode::ServerOverloaded, why);
        let say = async {
            if t.handshake().await.is_ok() {
                let _ = t.write_all(&out).await;
            }
        };
        let _ = race(say, sleep(Duration::from_millis(handshake_ms))).await;
        t.close().await;
        core.refusing.set(core.refusing.get() - 1);
    });
}

#[derive(Clone)]
enum MeshSetup {
    Glommio((mesh::ReqMesh, mesh::RepMesh)),
    Crossbeam(Arc<mesh::CrossbeamMesh>),
}

async fn executor(shared: Arc<Shared>, meshes: Option<MeshSetup>, start: Arc<Startup>) {
    let shards = shared.config.cores;
    let (id, joined) = match meshes {
        Some(MeshSetup::Glommio((req, rep))) => {
            let j = mesh::join(req, rep).await;
            (j.shard_id, Some(j))
        }
        Some(MeshSetup::Crossbeam(m)) => {
            // The executor id orders the pool's threads 0..n, which is each core's shard.
            let id = glommio::executor().id() % shards;
            let j = m.take(id);
            (j.shard_id, Some(j))
        }
        None => (0, None),
    };
    let cfg = &shared.config;
    let auth = match core::AuthDb::load(&cfg.data_dir) {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "cannot load users");
            std::process::exit(1);
        }
    };
    let audit = if cfg.audit {
        match audit::AuditLog::open(
            &cfg.data_dir,
            id,
            cfg.audit_file_bytes_max,
            AUDIT_FILES_KEPT,
            start.cipher.clone(),
        ) {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(error = %e, "cannot open the audit log");
                std::process::exit(1);
            }
        }
    } else {
        audit::AuditLog::off()
    };
    let global_bucket = cfg.rate_limit_global.map(|r| {
        let n = shards as f64;
        security::ratelimit::TokenBucket::new(r.ops_per_s / n, (r.burst / n).max(1.0), Instant::now())
    });
    let store = start.stores.lock().expect("start-up hand-off")[id].take().expect("each shard starts once");
    let wal = match cfg.durability {
        None => None,
        Some(mode) => {
            match wal::Wal::open(cfg, mode, start.generation, id, start.cipher.clone(), start.logs[id]).await
            {
                Ok(w) => Some(Rc::new(w)),
                Err(e) => {
                    tracing::error!(error = %e, "cannot open the write-ahead log");
                    std::process::exit(1);
                }
            }
        }
    };
    let shutdown = Rc::new(LocalSignal::default());
    let core = Rc::new({
        let mesh = joined.as_ref().map(|j| j.mesh.clone());
        Core {
            id,
            shards,
            store: RefCell::new(store),
            stats: RefCell::new(stats::ShardStats::default()),
            shared: shared.clone(),
            mesh,
            shutdown: shutdown.clone(),
            conns: Cell::new(0),
            auth: RefCell::new(Rc::new(auth)),
            auth_epoch: Cell::new(0),
            auth_changed: RefCell::new(Rc::new(LocalSignal::default())),
            throttle: RefCell::new(security::ratelimit::LoginThrottle::new(
                security::ratelimit::LoginThrottleConfig {
                    user_fail_threshold: cfg.login_fail_threshold,
                    addr_fail_threshold: cfg.login_addr_fail_threshold,
                    ..Default::default()
                },
                std::time::Instant::now(),
            )),
            global_bucket: RefCell::new(global_bucket),
            user_buckets: RefCell::new(std::collections::HashMap::new()),
            audit: RefCell::new(audit),
            refusing: Cell::new(0),
            admission: {
                // Never more than half the connection limit (logged-in users always have room),
                // and one address never more than half of that (other addresses can log in);
                // a small connection limit bounds them by itself.
                let total =
                    cfg.max_unauthenticated.min((shared.max_connections / 2).max(UNAUTHENTICATED_MIN));
                let per_address = cfg.max_unauthenticated_per_ip.min(total / 2).max(1);
                admission::Admission::new(per_address, total, shards)
            },
            wal,
            parker: park::Parker::new().unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot create an epoll set");
                std::process::exit(1);
            }),
        }
    });
    runtime::spawn(park::run(core.clone()));
    if core.wal.is_some() {
        runtime::spawn(wal::run_writer(core.clone()));
        runtime::spawn(wal::run_snapshots(core.clone()));
    }
    // Pick up changes to the users and API-key files (user add/remove, apikey revoke).
    let c = core.clone();
    runtime::spawn(async move {
        while !c.shutdown.is_fired() {
            sleep(Duration::from_millis(AUTH_RELOAD_CHECK_MS)).await;
            // Failed logins: one summary line per address per interval, never one per attempt.
            for r in c.throttle.borrow_mut().take_report(Instant::now()) {
                tracing::warn!(shard = c.id, "{r}");
            }
            let fresh = c.auth.borrow().reload_if_changed(&c.shared.config.data_dir);
            if let Some(db) = fresh {
                tracing::info!(
                    shard = c.id,
                    users = db.users.len(),
                    api_keys = db.api_keys.len(),
                    "reloaded users and API keys"
                );
                *c.auth.borrow_mut() = Rc::new(db);
                c.user_buckets.borrow_mut().clear();
                // Sessions of removed users and revoked keys end now; a changed role applies
                // from the next request.
                c.auth_epoch.set(c.auth_epoch.get() + 1);
                let woken = c.auth_changed.replace(Rc::new(LocalSignal::default()));
                woken.fire();
                c.parker.end_revoked(&c);
            }
        }
    });

    // Active expiry: a bounded step every tick, so a mass expiry never stalls the core.
    let c = core.clone();
    runtime::spawn(async move {
        while !c.shutdown.is_fired() {
            sleep(Duration::from_millis(EXPIRY_TICK_MS)).await;
            c.store.borrow_mut().expire_step(now_ms(), EXPIRY_STEP_KEYS_MAX);
            // Audit lines reach the writer within a tick even when few arrive.
            c.audit.borrow().flush();
        }
    });
    // The signal thread sets an atomic; this turns it into a core-local wake-up.
    let c = core.clone();
    runtime::spawn(async move {
        while !c.shutting_down() {
            sleep(Duration::from_millis(SHUTDOWN_POLL_MS)).await;
        }
        c.shutdown.fire();
    });
    // Serve the other cores only now that this core is whole: glommio polls a spawned task at
    // once, inside `spawn`, so a request that a faster core queued while this one was starting
    // is handled right there, and its handler must find the core.
    if let Some(j) = joined {
        let weak = Rc::downgrade(&core);
        j.start(move |req| weak.upgrade().expect("core outlives its mesh tasks").handle(req));
    }

    let listener = runtime::listener(
        start.listeners.lock().expect("start-up hand-off")[id].take().expect("each shard listens once"),
    );
    tracing::debug!(shard = id, "accepting");
    loop {
        let stream = match race(listener.accept(), core.shutdown.wait()).await {
            Either::Right(()) => break,
            Either::Left(Ok(s)) => s,
            Either::Left(Err(e)) => {
                tracing::warn!(error = %e, "accept failed");
                sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let peer = stream.peer_addr().ok();
        let n = shared.connections.fetch_add(1, Ordering::Relaxed);
        let admitted = if n >= shared.max_connections {
            Err("too many connections")
        } else {
            core.admission.admit(peer.map(|p| p.ip())).map_err(|r| match r {
                admission::Refused::Address => {
                    "too many connections from your address are logging in; retry later"
                }
                admission::Refused::Total => "too many connections are logging in; retry later",
            })
        };
        let slot = match admitted {
            Ok(slot) => slot,
            Err(why) => {
                shared.connections.fetch_sub(1, Ordering::Relaxed);
                core.stats.borrow_mut().connections_refused += 1;
                refuse(&core, stream, why);
                continue;
            }
        };
        core.conns.set(core.conns.get() + 1);
        core.stats.borrow_mut().connections_total += 1;
        let conn_id = shared.next_conn_id.fetch_add(1, Ordering::Relaxed);
        let transport = match &shared.tls {
            None => transport::Transport::Plain(stream),
            Some(cfg) => match rustls::ServerConnection::new(cfg.clone()) {
                Ok(t) => {
                    transport::Transport::Tls { tcp: stream, tls: Box::new(t.into()), pending: Vec::new() }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start TLS");
                    continue;
                }
            },
        };
        serve_conn(&core, conn::Conn::new(core.clone(), conn_id, peer, slot), transport);
    }
    drop(listener);
    // Let this core's connections finish their in-flight requests and say goodbye, then wait
    // for the other cores too: their connections may still need this shard.
    let deadline = Instant::now() + Duration::from_millis(SHUTDOWN_DRAIN_MS);
    while core.conns.get() > 0 && Instant::now() < deadline {
        sleep(Duration::from_millis(5)).await;
    }
    shared.draining.fetch_sub(1, Ordering::SeqCst);
    while shared.draining.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        sleep(Duration::from_millis(5)).await;
    }
    if let Some(w) = &core.wal {
        // Whatever is queued is written and synced before the process exits.
        wal::drained(w).await;
    }
    core.audit.borrow_mut().close();
}
