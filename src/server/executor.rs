//! One core's life: bring-up (join the mesh, open the audit log and the write-ahead log, build
//! the core), its background tasks, the accept loop with admission, the parking loop, and the
//! drain at shutdown. A failure while the core comes up is returned, not exited on: `run`
//! reports it once.

use super::admission::{self, Admission};
use super::audit::AuditLog;
use super::auth::AuthDb;
use super::conn::{Conn, Served};
use super::core::{Core, Replicated, Shared};
use super::park::{self, Parker};
use super::recovery::Startup;
use super::runtime::{self, now_ms, race, sleep, Either, LocalSignal, TcpStream};
use super::session::{RateLimits, Session};
use super::transport::Transport;
use super::{datadir, mesh, wal};
use crate::error::Error;
use crate::limits::*;
use crate::protocol::{encode_error, ErrorCode, ServerInfo, VERSION};
use crate::security::ratelimit::{LoginThrottle, LoginThrottleConfig, TokenBucket};
use std::cell::{Cell, RefCell};
use std::os::fd::{AsRawFd, FromRawFd};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How the cores reach each other (`--mesh`), made before they start.
#[derive(Clone)]
pub enum MeshSetup {
    Glommio((mesh::ReqMesh, mesh::RepMesh)),
    Crossbeam(Arc<mesh::CrossbeamMesh>),
}

/// Run one core until shutdown; an error if it could not come up.
pub async fn run(shared: Arc<Shared>, meshes: Option<MeshSetup>, start: Arc<Startup>) -> Result<(), Error> {
    let (id, joined) = join_mesh(meshes, shared.config.cores).await;
    let (core, node) = match bring_up(&shared, &start, id, joined.as_ref().map(|j| j.mesh.clone())).await {
        Ok(up) => up,
        Err(e) => {
            // The other cores are up or coming up: they stop too, and do not wait for this one.
            shared.shutdown.store(true, Ordering::SeqCst);
            shared.draining.fetch_sub(1, Ordering::SeqCst);
            return Err(Error::Core { shard: id, what: e });
        }
    };
    spawn_background(&core);
    if let (Some(node), Some(wal)) = (node, core.wal.clone()) {
        let l = start.peer_listeners.lock().expect("start-up hand-off")[id]
            .take()
            .expect("each core listens once");
        super::node::start(&core, &node, wal, l);
    }
    // Serve the other cores only now that this core is whole: glommio polls a spawned task at
    // once, inside `spawn`, so a request that a faster core queued while this one was starting
    // is handled right there, and its handler must find the core.
    if let Some(j) = joined {
        let weak = Rc::downgrade(&core);
        j.start(move |req| weak.upgrade().expect("core outlives its mesh tasks").handle(req));
    }
    if id == 0 {
        if let Some(l) = start.metrics_listener.lock().expect("start-up hand-off").take() {
            runtime::spawn(super::metrics::serve(core.clone(), runtime::listener(l)));
        }
    }
    let listener = runtime::listener(
        start.listeners.lock().expect("start-up hand-off")[id].take().expect("each shard listens once"),
    );
    tracing::debug!(shard = id, "accepting");
    accept_loop(&core, &listener).await;
    drop(listener);
    drain(&core).await;
    Ok(())
}

async fn join_mesh(meshes: Option<MeshSetup>, shards: usize) -> (usize, Option<mesh::Joined>) {
    match meshes {
        Some(MeshSetup::Glommio((req, rep))) => {
            let j = mesh::join(req, rep).await;
            (j.shard_id, Some(j))
        }
        Some(MeshSetup::Crossbeam(m)) => {
            // The executor id orders the pool's threads 0..n, which is each core's shard.
            let j = m.take(runtime::executor_id() % shards);
            (j.shard_id, Some(j))
        }
        None => (0, None),
    }
}

/// Shard `id`'s core, and on a cluster node its replicas (rebuilt from its Raft records).
async fn bring_up(
    shared: &Arc<Shared>,
    start: &Startup,
    id: usize,
    mesh: Option<Rc<mesh::Mesh>>,
) -> Result<(Rc<Core>, Option<Rc<super::node::NodeCore>>), String> {
    let (node, installed, dropped) = match &start.cluster {
        None => (None, Vec::new(), Vec::new()),
        Some(c) => {
            let (logs, installed, dropped) = c.recover_logs(id, shared.config.cores, &start.raft[id])?;
            (Some(Rc::new(super::node::NodeCore::new(c, id, logs, dropped.clone())?)), installed, dropped)
        }
    };
    let replicated = node.clone().map(|n| n as Rc<dyn Replicated>);
    let core = build_core(shared, start, id, mesh, replicated).await?;
    if let Some(n) = &node {
        n.restore(&core, installed, dropped)?;
    }
    Ok((core, node))
}

/// Shard `id`'s core: its recovered store, users and keys, logs and limits.
async fn build_core(
    shared: &Arc<Shared>,
    start: &Startup,
    id: usize,
    mesh: Option<Rc<mesh::Mesh>>,
    node: Option<Rc<dyn Replicated>>,
) -> Result<Rc<Core>, String> {
    let cfg = &shared.config;
    let shards = cfg.cores;
    let auth = AuthDb::load(&cfg.data_dir).map_err(|e| format!("cannot load users: {e}"))?;
    let audit = if cfg.audit {
        AuditLog::open(&cfg.data_dir, id, cfg.audit_file_bytes_max, AUDIT_FILES_KEPT, start.cipher.clone())
            .map_err(|e| format!("cannot open the audit log: {e}"))?
    } else {
        AuditLog::off()
    };
    let global_bucket = cfg.rate_limit_global.map(|r| {
        let n = shards as f64;
        TokenBucket::new(r.ops_per_s / n, (r.burst / n).max(1.0), Instant::now())
    });
    let mut store =
        start.stores.lock().expect("start-up hand-off")[id].take().expect("each shard starts once");
    // A cluster core's writes are checked against the limit before they are proposed
    // (`NodeCore::room_for`): a committed entry is applied whatever the memory.
    if start.cluster.is_none() {
        store.set_memory_limit(shared.memory.shard_limit());
    }
    let wal = match cfg.durability {
        None => None,
        Some(mode) => Some(Rc::new(
            wal::Wal::open(cfg, mode, start.generation, id, start.cipher.clone(), start.logs[id])
                .await
                .map_err(|e| format!("cannot open the write-ahead log: {e}"))?,
        )),
    };
    let parker = Parker::new().map_err(|e| format!("cannot create an epoll set: {e}"))?;
    // Never more than half the connection limit (logged-in users always have room), and one
    // address never more than half of that (other addresses can log in); a small connection
    // limit bounds them by itself.
    let unauthenticated = cfg.max_unauthenticated.min((shared.max_connections / 2).max(UNAUTHENTICATED_MIN));
    let per_address = cfg.max_unauthenticated_per_ip.min(unauthenticated / 2).max(1);
    let throttle = LoginThrottleConfig {
        user_fail_threshold: cfg.login_fail_threshold,
        addr_fail_threshold: cfg.login_addr_fail_threshold,
        ..Default::default()
    };
    Ok(Rc::new(Core {
        id,
        shards,
        store: RefCell::new(store),
        stats: RefCell::new(crate::stats::ShardStats::default()),
        shared: shared.clone(),
        mesh,
        shutdown: Rc::new(LocalSignal::default()),
        conns: Cell::new(0),
        auth: RefCell::new(Rc::new(auth)),
        auth_epoch: Cell::new(0),
        auth_changed: RefCell::new(Rc::new(LocalSignal::default())),
        throttle: RefCell::new(LoginThrottle::new(throttle, Instant::now())),
        limits: RefCell::new(RateLimits::new(global_bucket)),
        server_info: server_info(shared),
        audit: RefCell::new(audit),
        refusing: Cell::new(0),
        admission: Admission::new(per_address, unauthenticated, shards),
        wal,
        parker,
        slowlog: RefCell::new(crate::slowlog::SlowRing::default()),
        slowlog_threshold_us: cfg.slowlog_threshold_us,
        node,
    }))
}

/// What SERVER_INFO says: the same on every core.
fn server_info(shared: &Shared) -> ServerInfo {
    ServerInfo {
        version: VERSION,
        server: concat!("velocityd/", env!("CARGO_PKG_VERSION")).into(),
        fingerprint: shared.fingerprint,
        auth_salt: shared.auth_salt,
        argon2_m_kib: datadir::ARGON2.m_kib,
        argon2_t: datadir::ARGON2.t,
        argon2_p: datadir::ARGON2.p,
        max_payload: shared.config.max_payload,
        shards: shared.config.cores as u16,
        flags: ServerInfo::FLAG_AUTH_REQUIRED | if shared.tls.is_some() { ServerInfo::FLAG_TLS } else { 0 },
    }
}

/// The core's tasks besides its connections: the log's writer and snapshots, the parking loop,
/// the reload of users and keys, active expiry, and the shutdown watch.
fn spawn_background(core: &Rc<Core>) {
    if let Some(wal) = core.wal.clone() {
        runtime::spawn(wal::run_writer(core.clone(), wal.clone()));
        // On a cluster node too: the snapshot's checkpoint carries the replicas' state into the
        // new log (compaction of a node's log: docs/cluster.md).
        runtime::spawn(wal::run_snapshots(core.clone(), wal));
    }
    runtime::spawn(park_loop(core.clone()));
    runtime::spawn(reload_loop(core.clone()));
    runtime::spawn(tick_loop(core.clone()));
    // The signal thread sets an atomic; this turns it into a core-local wake-up.
    let c = core.clone();
    runtime::spawn(async move {
        while !c.shutting_down() {
            sleep(Duration::from_millis(SHUTDOWN_POLL_MS)).await;
        }
        if let Some(n) = c.node.clone() {
            n.hand_over().await;
        }
        c.shutdown.fire();
    });
}

/// Every tick: a bounded active-expiry step (so a mass expiry never stalls the core), the audit
/// lines flushed (they reach the writer within a tick even when few arrive), and the memory
/// limit's share brought up to date, with a summary of evictions now and then (and at the end:
/// `drain`).
async fn tick_loop(c: Rc<Core>) {
    let budget = &c.shared.memory;
    let mut reported = (now_ms(), c.store.borrow().evictions());
    let mut warned = false;
    while !c.shutdown.is_fired() {
        if budget.is_limited() {
            let mut store = c.store.borrow_mut();
            budget.publish(c.id, store.mem_bytes() as u64);
            if c.id == 0 {
                let own = budget.observe(super::report::rss_bytes());
                if !warned && budget.shard_limit().is_some_and(|l| l.bytes_max == 0) {
                    warned = true;
                    tracing::warn!(process_bytes = own, "--max-memory leaves no room for data: every write that adds to it is refused or evicts");
                }
            }
            if c.node.is_none() {
                store.set_memory_limit(budget.shard_limit());
            }
            if now_ms() >= reported.0 + EVICTION_REPORT_INTERVAL_MS {
                report_evictions(&c, &store, &mut reported);
            }
        }
        sleep(Duration::from_millis(EXPIRY_TICK_MS)).await;
        c.store.borrow_mut().expire_step(now_ms(), EXPIRY_STEP_KEYS_MAX);
        c.audit.borrow().flush();
    }
}

/// One log line for the keys evicted since the last one (`reported`: when, and the count then),
/// if any were.
fn report_evictions(c: &Core, store: &crate::store::Store, reported: &mut (u64, u64)) {
    let evicted = store.evictions() - reported.1;
    if let (true, Some(limit)) = (evicted > 0, store.memory_limit()) {
        tracing::info!(
            shard = c.id,
            evicted,
            used_bytes = store.mem_bytes(),
            limit_bytes = limit.bytes_max,
            policy = limit.eviction.name(),
            "evicted keys to stay under --max-memory"
        );
    }
    *reported = (now_ms(), store.evictions());
}

/// Pick up changes to the users and API-key files (user add/remove, apikey revoke): sessions
/// of removed users and revoked keys end now, a changed role applies from the next request.
async fn reload_loop(c: Rc<Core>) {
    while !c.shutdown.is_fired() {
        sleep(Duration::from_millis(AUTH_RELOAD_CHECK_MS)).await;
        // Failed logins: one summary line per address per interval, never one per attempt.
        for r in c.throttle.borrow_mut().take_report(Instant::now()) {
            tracing::warn!(shard = c.id, "{r}");
        }
        let Some(db) = c.auth.borrow().reload_if_changed(&c.shared.config.data_dir) else { continue };
        tracing::info!(
            shard = c.id,
            users = db.users.len(),
            api_keys = db.api_keys.len(),
            "reloaded users and API keys"
        );
        let db = Rc::new(db);
        *c.auth.borrow_mut() = db.clone();
        c.limits.borrow_mut().clear_users();
        let epoch = c.auth_epoch.get() + 1;
        c.auth_epoch.set(epoch);
        let woken = c.auth_changed.replace(Rc::new(LocalSignal::default()));
        woken.fire();
        for (p, why) in c.parker.take_ending(|s| s.revoked(&db, epoch)) {
            park::disconnect(p, ErrorCode::Unauthorized as u16, why);
            conn_ended(&c);
        }
    }
}

/// Resume parked connections whose sockets became readable, close those past the idle timeout,
/// say goodbye to all at shutdown.
async fn park_loop(core: Rc<Core>) {
    let idle_timeout = match core.shared.config.idle_timeout_s {
        0 => None,
        s => Some(Duration::from_secs(s)),
    };
    let mut last_expiry = Instant::now();
    let mut trimmed_at_count = 0usize;
    loop {
        let _ = race(sleep(Duration::from_millis(CONN_PARK_POLL_MS)), core.shutdown.wait()).await;
        if core.shutdown.is_fired() {
            for p in core.parker.all() {
                park::disconnect(p, 0, "server shutting down");
                conn_ended(&core);
            }
            return;
        }
        if core.parker.is_empty() {
            trimmed_at_count = 0;
            continue;
        }
        // The tasks and socket state of newly parked connections were freed, but the allocator
        // keeps freed pages; give them back once a batch has parked.
        if core.parker.len() >= trimmed_at_count + PARK_TRIM_EVERY {
            trimmed_at_count = core.parker.len();
            // SAFETY: glibc's malloc_trim only releases free memory.
            unsafe { libc::malloc_trim(0) };
        }
        for p in core.parker.ready() {
            // SAFETY: the descriptor is an open TCP socket whose ownership moves to the stream.
            let stream = unsafe { TcpStream::from_raw_fd(p.fd) };
            serve(&core, Conn::new(core.clone(), p.state, None), Transport::Plain(stream));
        }
        if let Some(limit) = idle_timeout {
            if last_expiry.elapsed() >= Duration::from_secs(1) {
                last_expiry = Instant::now();
                for p in core.parker.expired(limit) {
                    park::disconnect(p, 0, "idle timeout");
                    conn_ended(&core);
                }
            }
        }
    }
}

/// Run a connection in a task of its own until it ends (counted gone) or idles (parked).
fn serve(core: &Rc<Core>, c: Conn, transport: Transport) {
    let core = core.clone();
    let serve = c.serve(transport);
    if core.stats.borrow().connections_total == 1 {
        tracing::debug!(future_bytes = std::mem::size_of_val(&serve), "connection task size");
    }
    runtime::spawn(async move {
        match serve.await {
            Served::Closed => conn_ended(&core),
            Served::Idle(session, stream) => park_or_serve(&core, session, stream),
        }
    });
}

/// Hand an idle connection's session and socket to the core's parker; its socket's descriptor
/// is duplicated before glommio's stream (and its state) is dropped. If it cannot be parked it
/// is served on.
fn park_or_serve(core: &Rc<Core>, session: Session, stream: Transport) {
    let id = session.id;
    // SAFETY: dup of a descriptor we hold open.
    let fd = unsafe { libc::dup(stream.tcp().as_raw_fd()) };
    if fd < 0 {
        return serve(core, Conn::new(core.clone(), session, None), stream);
    }
    let idle = Duration::from_millis(CONN_PARK_AFTER_IDLE_MS);
    let since = Instant::now().checked_sub(idle).unwrap_or_else(Instant::now);
    match core.parker.park(session, fd, since) {
        Ok(()) => {
            drop(stream);
            tracing::debug!(conn = id, "connection parked");
        }
        Err((session, fd)) => {
            // SAFETY: closing our duplicate.
            unsafe { libc::close(fd) };
            serve(core, Conn::new(core.clone(), session, None), stream);
        }
    }
}

fn conn_ended(core: &Core) {
    core.conns.set(core.conns.get() - 1);
    core.shared.connections.fetch_sub(1, Ordering::Relaxed);
}

async fn accept_loop(core: &Rc<Core>, listener: &runtime::TcpListener) {
    let shared = &core.shared;
    loop {
        let stream = match race(listener.accept(), core.shutdown.wait()).await {
            Either::Right(()) => break,
            Either::Left(Ok(s)) => s,
            Either::Left(Err(e)) => {
                tracing::warn!(error = %e, "accept failed");
                sleep(Duration::from_millis(ACCEPT_RETRY_MS)).await;
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
                refuse(core, stream, why);
                continue;
            }
        };
        core.conns.set(core.conns.get() + 1);
        core.stats.borrow_mut().connections_total += 1;
        let conn_id = shared.next_conn_id.fetch_add(1, Ordering::Relaxed);
        let transport = match &shared.tls {
            None => Transport::Plain(stream),
            Some(cfg) => match rustls::ServerConnection::new(cfg.clone()) {
                Ok(t) => Transport::Tls { tcp: stream, tls: Box::new(t.into()), pending: Vec::new() },
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start TLS");
                    conn_ended(core);
                    continue;
                }
            },
        };
        let session = Session::new(conn_id, peer, Instant::now());
        serve(core, Conn::new(core.clone(), session, Some(slot)), transport);
    }
}

/// Tell a connection that is not admitted why (in the transport it expects), then close it;
/// at most the handshake timeout is spent on it, and at most REFUSALS_IN_FLIGHT_MAX at once per
/// core: past that, under a flood, it is closed without a word.
fn refuse(core: &Rc<Core>, stream: TcpStream, why: &'static str) {
    if core.refusing.get() >= REFUSALS_IN_FLIGHT_MAX {
        drop(stream);
        return;
    }
    core.refusing.set(core.refusing.get() + 1);
    let tls = core.shared.tls.clone();
    let handshake_ms = core.shared.config.handshake_timeout_ms;
    let core = core.clone();
    runtime::spawn(async move {
        let t = match tls.map(rustls::ServerConnection::new) {
            None => Some(Transport::Plain(stream)),
            Some(Ok(c)) => Some(Transport::Tls { tcp: stream, tls: Box::new(c.into()), pending: Vec::new() }),
            Some(Err(_)) => None,
        };
        if let Some(mut t) = t {
            let mut out = Vec::new();
            encode_error(&mut out, ErrorCode::ServerOverloaded, why);
            let say = async {
                if t.handshake().await.is_ok() {
                    let _ = t.write_all(&out).await;
                }
            };
            let _ = race(say, sleep(Duration::from_millis(handshake_ms))).await;
            t.close().await;
        }
        core.refusing.set(core.refusing.get() - 1);
    });
}

/// Let this core's connections finish their in-flight requests and say goodbye, then wait for
/// the other cores too (their connections may still need this shard); then the log's last
/// groups and the audit log's last lines reach the disk.
async fn drain(core: &Rc<Core>) {
    let shared = &core.shared;
    let deadline = Instant::now() + Duration::from_millis(SHUTDOWN_DRAIN_MS);
    while core.conns.get() > 0 && Instant::now() < deadline {
        sleep(Duration::from_millis(SHUTDOWN_DRAIN_POLL_MS)).await;
    }
    shared.draining.fetch_sub(1, Ordering::SeqCst);
    while shared.draining.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        sleep(Duration::from_millis(SHUTDOWN_DRAIN_POLL_MS)).await;
    }
    if let Some(w) = &core.wal {
        // Whatever is queued is written and synced before the process exits.
        wal::drained(w).await;
    }
    core.audit.borrow_mut().close();
    let store = core.store.borrow();
    if let (evicted @ 1.., Some(limit)) = (store.evictions(), store.memory_limit()) {
        tracing::info!(
            shard = core.id,
            evicted,
            policy = limit.eviction.name(),
            "evicted keys to stay under --max-memory, since start"
        );
    }
}
