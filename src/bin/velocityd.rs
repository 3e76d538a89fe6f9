//! velocityd: the Velocity server, and the commands that manage its data directory.

use clap::{Args, Parser, Subcommand};
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use velocity::limits::{
    AUDIT_FILE_BYTES_MAX_DEFAULT, FRAME_TIMEOUT_MS_DEFAULT, FSYNC_INTERVAL_MS_DEFAULT, HANDSHAKE_TIMEOUT_MS,
    IDLE_TIMEOUT_S_DEFAULT, LOGIN_ADDR_FAIL_THRESHOLD_DEFAULT, LOGIN_FAIL_THRESHOLD_DEFAULT,
    PAYLOAD_BYTES_MAX_DEFAULT, SLOWLOG_THRESHOLD_US_DEFAULT, SNAPSHOT_LOG_BYTES_DEFAULT,
    UNAUTHENTICATED_MAX_DEFAULT, UNAUTHENTICATED_PER_ADDRESS_MAX_DEFAULT,
};
use velocity::server::datadir::{self, Role};
use velocity::server::mesh::MeshKind;
use velocity::server::wal::Mode;
use velocity::server::{parse_bytes, run, Config};

use velocity::store::Eviction;

#[derive(Parser)]
#[command(name = "velocityd", version, about = "Velocity key-value server (thread-per-core, shared-nothing)")]
struct Cli {
    #[command(flatten)]
    serve: ServeArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

/// What `--help` of `user` and `apikey` says about a running server.
const LIVE: &str =
    "Works on the data directory of a running server too: the file is replaced atomically, and \
the server picks up the change within a second, without a restart. Open sessions of a removed user or a \
revoked key are disconnected; a changed role applies to open sessions from their next request.";

/// The default of --listen.
const LISTEN_DEFAULT: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7411);

/// --listen: IP:PORT, or an IP alone (the port then comes from --port, else 7411).
#[derive(Clone, Copy, Debug)]
struct ListenArg {
    ip: IpAddr,
    port: Option<u16>,
}

fn parse_listen(s: &str) -> Result<ListenArg, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(ListenArg { ip: a.ip(), port: Some(a.port()) });
    }
    let ip = s.strip_prefix('[').and_then(|v| v.strip_suffix(']')).unwrap_or(s);
    match ip.parse::<IpAddr>() {
        Ok(ip) => Ok(ListenArg { ip, port: None }),
        Err(_) => Err("expected IP:PORT or an IP address, e.g. 0.0.0.0:7411, [::1]:7411 or 0.0.0.0".into()),
    }
}

/// --slowlog-threshold-us: microseconds, or `off` (nothing is slow).
fn parse_slowlog_threshold(s: &str) -> Result<u64, String> {
    match s {
        "off" => Ok(u64::MAX),
        _ => {
            s.parse().map_err(|_| "expected a number of microseconds (0: log every statement) or off".into())
        }
    }
}

/// The address to serve: --listen, with --port as the shorthand for its port part.
fn listen_addr(listen: Option<ListenArg>, port: Option<u16>) -> Result<SocketAddr, String> {
    let Some(l) = listen else {
        return Ok(SocketAddr::new(LISTEN_DEFAULT.ip(), port.unwrap_or(LISTEN_DEFAULT.port())));
    };
    match (l.port, port) {
        (Some(a), Some(b)) if a != b => Err(format!(
            "--port {b} disagrees with the port of --listen {}: give the port once",
            SocketAddr::new(l.ip, a)
        )),
        (a, b) => Ok(SocketAddr::new(l.ip, a.or(b).unwrap_or(LISTEN_DEFAULT.port()))),
    }
}

/// --metrics-listen: IP:PORT, or a bare PORT on 127.0.0.1.
fn parse_metrics_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    s.parse::<SocketAddr>().map_err(|_| {
        "expected IP:PORT or a port, e.g. 127.0.0.1:9411, [::1]:9411, 0.0.0.0:9411 or 9411".into()
    })
}

#[derive(Args)]
struct ServeArgs {
    /// Address every core listens on (SO_REUSEPORT): IP:PORT, or an IP with the port from --port.
    /// [default: 127.0.0.1:7411]
    #[arg(long, value_name = "IP[:PORT]", value_parser = parse_listen)]
    listen: Option<ListenArg>,
    /// The port to listen on: shorthand for the port part of --listen (`--port 7500` is
    /// `--listen 127.0.0.1:7500`; `--listen 0.0.0.0 --port 7500` is `--listen 0.0.0.0:7500`).
    #[arg(long)]
    port: Option<u16>,
    /// Serve Prometheus metrics (GET /metrics, text format 0.0.4) over HTTP on this address:
    /// IP:PORT, or a port alone on 127.0.0.1. No authentication: keep it on loopback or a
    /// private network. Off by default.
    #[arg(long, value_name = "IP:PORT|PORT", value_parser = parse_metrics_listen)]
    metrics_listen: Option<SocketAddr>,
    /// Number of cores (executors, shards). Default: every available CPU.
    #[arg(long)]
    cores: Option<usize>,
    /// CPUs to pin the cores to, e.g. 0,1 or 2-5 (sets --cores).
    #[arg(long)]
    cpu_list: Option<String>,
    /// Data directory: auth salt, users, identity key.
    #[arg(long, default_value = "./velocity-data")]
    data_dir: PathBuf,
    /// Most concurrent connections. Default: what the open-files limit allows.
    #[arg(long, default_value_t = 0)]
    max_connections: usize,
    /// Close authenticated connections idle this long (0 = never).
    #[arg(long, default_value_t = IDLE_TIMEOUT_S_DEFAULT)]
    idle_timeout_s: u64,
    /// Time allowed to send HELLO and log in.
    #[arg(long, default_value_t = HANDSHAKE_TIMEOUT_MS)]
    handshake_timeout_ms: u64,
    /// Time a logged-in client may take to send one frame, from its first byte.
    #[arg(long, default_value_t = FRAME_TIMEOUT_MS_DEFAULT)]
    frame_timeout_ms: u64,
    /// Connections from one address that may be waiting to log in at once (server-wide).
    #[arg(long, default_value_t = UNAUTHENTICATED_PER_ADDRESS_MAX_DEFAULT)]
    max_unauthenticated_per_ip: usize,
    /// Connections that may be waiting to log in at once, server-wide (at most half of
    /// --max-connections, so that logged-in users always have room).
    #[arg(long, default_value_t = UNAUTHENTICATED_MAX_DEFAULT)]
    max_unauthenticated: usize,
    /// Largest request or reply payload after authentication (4 KiB to 64 MiB).
    #[arg(long, default_value_t = PAYLOAD_BYTES_MAX_DEFAULT)]
    max_payload: u32,
    /// Cross-core queues: glommio (channel mesh, eventfd wake-ups) or crossbeam (polled).
    #[arg(long, default_value = "glommio", value_parser = ["glommio", "crossbeam"])]
    mesh: String,
    /// Serve plain TCP instead of TLS 1.3 (warned about on non-loopback addresses).
    #[arg(long)]
    plaintext: bool,
    /// Certificate chain (PEM) to serve instead of the data directory's identity.
    #[arg(long, requires = "tls_key", conflicts_with = "plaintext")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert", conflicts_with = "plaintext")]
    tls_key: Option<PathBuf>,
    /// Rate limit per connection, OPS or OPS:BURST per second (0: none).
    #[arg(long, default_value = "0")]
    rate_limit_conn: String,
    /// Server-wide rate limit, OPS or OPS:BURST per second, split evenly across cores (0: none).
    #[arg(long, default_value = "0")]
    rate_limit_global: String,
    /// Failed logins of one user (or API key) from one address, counted per core, before that
    /// user's attempts from there are refused unchecked, with a back-off from 1 s doubling to
    /// 5 min. Other users from the same address are not affected (0: off).
    #[arg(long, default_value_t = LOGIN_FAIL_THRESHOLD_DEFAULT)]
    login_fail_threshold: u32,
    /// Failed logins from one address, all users together, before every login from it is
    /// refused unchecked (password spraying); the count leaks away at this many per 5 min, so a
    /// shared NAT with occasional typos never reaches it (0: off).
    #[arg(long, default_value_t = LOGIN_ADDR_FAIL_THRESHOLD_DEFAULT)]
    login_addr_fail_threshold: u32,
    /// The audit log: one JSON line per login and per request under DATA_DIR/audit.
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    audit: String,
    /// Size at which an audit file is rotated (4 older files are kept).
    #[arg(long, default_value_t = AUDIT_FILE_BYTES_MAX_DEFAULT)]
    audit_file_bytes_max: u64,
    /// Statements whose latency (decode to reply, as SHOW STATS measures it) reaches this many
    /// microseconds go into the slow log (SHOW SLOWLOG; 128 per core). 0: every statement; off:
    /// none.
    #[arg(long, value_name = "US", default_value_t = SLOWLOG_THRESHOLD_US_DEFAULT, value_parser = parse_slowlog_threshold)]
    slowlog_threshold_us: u64,
    /// Heap the stores may hold in all (entries and indexes, as the allocator rounds them),
    /// split evenly across cores: BYTES, or with k/kb/m/mb/g/gb as Redis writes sizes. A write
    /// that would pass it is refused or makes room by --eviction. Default: no limit.
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    max_memory: Option<u64>,
    /// What makes room under --max-memory: noeviction (the write is refused with
    /// SERVER_OVERLOADED; reads and deletes go on), allkeys-lru (the least recently used of a
    /// sample of keys), volatile-ttl (keys with a TTL, nearest expiry first).
    #[arg(long, default_value = "noeviction", value_parser = ["noeviction", "allkeys-lru", "volatile-ttl"])]
    eviction: String,
    /// sync: a write is acknowledged once its log record is on disk (fdatasync, group commit).
    /// periodic: acknowledged at once, synced every --fsync-interval-ms. none: memory only.
    #[arg(long, default_value = "sync", value_parser = ["sync", "periodic", "none"])]
    durability: String,
    /// With --durability periodic: how often the log is synced.
    #[arg(long, default_value_t = FSYNC_INTERVAL_MS_DEFAULT)]
    fsync_interval_ms: u64,
    /// Encrypt the log and snapshots with AES-256-GCM under this key (32 raw bytes or 64 hex
    /// characters; `velocityd keygen` makes one).
    #[arg(long)]
    encryption_key_file: Option<PathBuf>,
    /// Log size (per shard) that triggers a snapshot, after which the log is truncated.
    #[arg(long, default_value_t = SNAPSHOT_LOG_BYTES_DEFAULT)]
    snapshot_log_bytes: u64,
    /// A cluster node: take the peers' connections here (IP:PORT; core c on PORT + c) instead
    /// of at the address the cluster file gives for this node, which the peers go on dialling
    /// (a node behind a NAT, or a proxy in front of it).
    #[arg(long)]
    peer_listen: Option<std::net::SocketAddr>,
    /// Testing only (fault injection): pause this long before every group write to the log.
    #[arg(long, hide = true, default_value_t = 0)]
    test_write_delay_ms: u64,
}

#[derive(Subcommand)]
enum Command {
    /// Manage users, also on the data directory of a running server (it applies changes within
    /// a second).
    #[command(subcommand, after_help = LIVE)]
    User(UserCmd),
    /// Manage API keys (authentication method 2), also on the data directory of a running server
    /// (a revoked key's sessions are disconnected within a second).
    #[command(subcommand, after_help = LIVE)]
    Apikey(ApiKeyCmd),
    /// Write a new random 256-bit key for --encryption-key-file (mode 0600; refuses to overwrite).
    Keygen {
        /// Where to write the key (64 hex characters and a newline).
        #[arg(long)]
        out: PathBuf,
    },
    /// Check the write-ahead logs and truncate each damaged one to its last good record, after
    /// saying what is cut; the cut bytes are kept in DATA_DIR/quarantine. Refuses while a
    /// server uses the directory.
    Repair {
        #[arg(long, default_value = "./velocity-data")]
        data_dir: PathBuf,
        #[arg(long)]
        encryption_key_file: Option<PathBuf>,
    },
    /// Print the audit log as JSON lines, oldest first per shard; sealed files (written with
    /// --encryption-key-file) need the same key. Safe while the server runs.
    Audit {
        #[arg(long, default_value = "./velocity-data")]
        data_dir: PathBuf,
        #[arg(long)]
        encryption_key_file: Option<PathBuf>,
    },
    /// Copy the data directory (users, keys, identity, every shard's snapshot and logs) into a
    /// new directory, while its server runs or not. Every write acknowledged before the backup
    /// starts is in it; each shard is copied as of some moment during the backup. Encrypted
    /// data stays encrypted. See docs/operations.md.
    Backup {
        #[arg(long, default_value = "./velocity-data")]
        data_dir: PathBuf,
        /// A new (or empty) directory for the backup.
        #[arg(long)]
        to: PathBuf,
    },
    /// Check a backup (it must recover) and copy it into a new data directory.
    Restore {
        /// The backup's directory (what `velocityd backup --to` wrote).
        #[arg(long)]
        from: PathBuf,
        /// A new (or empty) data directory to restore into.
        #[arg(long)]
        data_dir: PathBuf,
        /// The key the backed-up server used, if it encrypted its data: needed for the check.
        #[arg(long)]
        encryption_key_file: Option<PathBuf>,
    },
    /// Make a data directory a cluster node, and see a running cluster (docs/cluster.md).
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Print the server identity's fingerprint, for checking out of band.
    Fingerprint {
        #[arg(long, default_value = "./velocity-data")]
        data_dir: PathBuf,
        /// The fingerprint of this certificate (PEM) instead.
        #[arg(long)]
        tls_cert: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// Make this (empty) data directory node NODE_ID of the cluster the cluster file
    /// describes: its ranges, replication and every node's peer address, cores and key
    /// fingerprint (`velocityd fingerprint` prints a node's). Every node gets the same file.
    Init {
        #[arg(long)]
        node_id: u64,
        #[arg(long)]
        cluster_file: PathBuf,
        #[arg(long, default_value = "./velocity-data")]
        data_dir: PathBuf,
    },
    /// Give a node's place to a new node in a running cluster (a node that lost its disk comes
    /// back this way, under a new id and key): the cluster file is the current one with the old
    /// node's line replaced by the new node's, `replaces=PLACE` at its end. Every core of every
    /// node that stays is asked (as this data directory's node) to adopt it; then each range's
    /// leader adds the new node as a learner, catches it up and swaps it in.
    Change {
        #[arg(long)]
        cluster_file: PathBuf,
        #[arg(long, default_value = "./velocity-data")]
        data_dir: PathBuf,
    },
    /// Ask every core of every node (as this data directory's node) for its ranges: leader,
    /// term, commit index, and each replica's applied index and lag.
    Status {
        #[arg(long, default_value = "./velocity-data")]
        data_dir: PathBuf,
        /// Print each core's answer as a JSON line instead.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ApiKeyCmd {
    /// Make a key acting as USER and print it once (only its SHA-256 is kept).
    #[command(after_help = LIVE)]
    Create {
        #[arg(long)]
        user: String,
        #[arg(long, default_value = "./velocity-data")]
        data_dir: PathBuf,
    },
    /// List the keys: id, user, and when it was made (RFC 3339, UTC). The server does not record
    /// when a key was last used; the audit log (`velocityd audit`) has every login, API-key
    /// logins with method "api_key" and their user.
    #[command(after_help = LIVE)]
    List {
        #[arg(long, default_value = "./velocity-data")]
        data_dir: PathBuf,
    },
    /// Revoke the key with this id (as `apikey list` shows it).
    #[command(after_help = LIVE)]
    Revoke {
        id: String,
        #[arg(long, default_value = "./velocity-data")]
        data_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum UserCmd {
    /// Add a user; the password is read from standard input. An existing user is refused unless
    /// the password is the one it has (then only the --role and --rate-limit given are applied)
    /// or --force replaces it: `user passwd` and `user role` change one thing.
    #[command(after_help = LIVE)]
    Add {
        name: String,
        /// The new user's role [default: readwrite].
        #[arg(long, value_parser = ["readonly", "readwrite"])]
        role: Option<String>,
        /// Read the password from standard input (the only way: no prompts, no arguments).
        #[arg(long, required = true)]
        password_stdin: bool,
        /// This user's rate limit, OPS or OPS:BURST per second, enforced on each core (0: none).
        #[arg(long)]
        rate_limit: Option<String>,
        /// Replace an existing user of this name: its password, role and rate limit.
        #[arg(long)]
        force: bool,
        #[arg(long, default_value = "./velocity-data")]
        data_dir: PathBuf,
    },
    /// Change a user's password, read from standard input; its role and rate limit stay. Open
    /// sessions stay logged in: a password is checked at login.
    #[command(after_help = LIVE)]
    Passwd {
        name: String,
        /// Read the new password from standard input (the only way: no prompts, no arguments).
        #[arg(long, required = true)]
        password_stdin: bool,
        #[arg(long, default_value = "./velocity-data")]
        data_dir: PathBuf,
    },
    /// Change a user's role; its password and rate limit stay.
    #[command(after_help = LIVE)]
    Role {
        name: String,
        #[arg(value_parser = ["readonly", "readwrite"])]
        role: String,
        #[arg(long, default_value = "./velocity-data")]
        data_dir: PathBuf,
    },
    /// List the users: name, role, rate limit.
    #[command(after_help = LIVE)]
    List {
        #[arg(long, default_value = "./velocity-data")]
        data_dir: PathBuf,
    },
    /// Remove a user; its open sessions are disconnected.
    #[command(after_help = LIVE)]
    Remove {
        name: String,
        #[arg(long, default_value = "./velocity-data")]
        data_dir: PathBuf,
    },
}

/// The data directory a command works on.
fn data_dir_of(cmd: &Command) -> Option<&Path> {
    Some(match cmd {
        Command::User(
            UserCmd::Add { data_dir, .. }
            | UserCmd::Passwd { data_dir, .. }
            | UserCmd::Role { data_dir, .. }
            | UserCmd::List { data_dir }
            | UserCmd::Remove { data_dir, .. },
        ) => data_dir,
        Command::Apikey(
            ApiKeyCmd::Create { data_dir, .. }
            | ApiKeyCmd::List { data_dir }
            | ApiKeyCmd::Revoke { data_dir, .. },
        ) => data_dir,
        Command::Repair { data_dir, .. }
        | Command::Audit { data_dir, .. }
        | Command::Backup { data_dir, .. }
        | Command::Restore { data_dir, .. }
        | Command::Cluster(
            ClusterCmd::Init { data_dir, .. }
            | ClusterCmd::Change { data_dir, .. }
            | ClusterCmd::Status { data_dir, .. },
        ) => data_dir,
        Command::Fingerprint { data_dir, tls_cert: None } => data_dir,
        Command::Fingerprint { tls_cert: Some(_), .. } | Command::Keygen { .. } => return None,
    })
}

/// A data directory that exists must be a directory (else every command fails deep inside,
/// with "File exists" or "Not a directory" about a file in it).
fn check_data_dir(dir: &Path) -> Result<(), String> {
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => Err(format!(
            "{} is not a directory (--data-dir names the directory of users, keys and data)",
            dir.display()
        )),
        _ => Ok(()),
    }
}

/// Held while a command changes the users or API keys: two at once on one directory would read
/// the same file, and the second to write would undo the first's change. (The server does not
/// take it: it only reads, and each file is replaced atomically.)
struct AdminLock(#[allow(dead_code)] std::fs::File);

impl AdminLock {
    fn acquire(dir: &Path) -> Result<AdminLock, String> {
        use std::os::unix::fs::DirBuilderExt;
        use std::os::unix::io::AsRawFd;
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| format!("cannot create data directory {}: {e}", dir.display()))?;
        }
        let path = dir.join("admin.lock");
        let f = datadir::open_lock_file(&path)?;
        // SAFETY: flock on a descriptor we own; released when the file is closed.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(format!("cannot lock {}: {}", path.display(), std::io::Error::last_os_error()));
        }
        Ok(AdminLock(f))
    }
}

/// Seconds since 1970 as RFC 3339 in UTC, e.g. 2026-12-01T19:23:38Z.
fn rfc3339_utc(unix_s: u64) -> String {
    let t = i64::try_from(unix_s).ok().and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok());
    t.and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| format!("{unix_s} (seconds since 1970)"))
}

fn parse_cpu_list(s: &str) -> Result<Vec<usize>, String> {
    let mut cpus = Vec::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let bad = || format!("--cpu-list: cannot read {part:?} (expected e.g. 0,1 or 2-5)");
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) =
                    (a.trim().parse().map_err(|_| bad())?, b.trim().parse().map_err(|_| bad())?);
                if a > b {
                    return Err(bad());
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.trim().parse().map_err(|_| bad())?),
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    if cpus.is_empty() {
        return Err("--cpu-list is empty".into());
    }
    Ok(cpus)
}

fn read_password() -> Result<String, String> {
    let mut s = String::new();
    std::io::stdin().read_to_string(&mut s).map_err(|e| format!("cannot read the password: {e}"))?;
    let pw = s.strip_suffix('\n').map(|p| p.strip_suffix('\r').unwrap_or(p)).unwrap_or(&s).to_owned();
    Ok(pw)
}

fn main_inner() -> Result<(), String> {
    let cli = Cli::parse();
    match cli.command.as_ref().and_then(data_dir_of) {
        Some(dir) => check_data_dir(dir)?,
        None if cli.command.is_none() => check_data_dir(&cli.serve.data_dir)?,
        None => {}
    }
    match cli.command {
        Some(Command::User(UserCmd::Add { name, role, data_dir, rate_limit, force, .. })) => {
            let rate = rate_limit.as_deref().map(datadir::RateLimit::parse).transpose()?;
            let role = role.as_deref().map(|r| Role::parse(r).expect("clap checked"));
            let pw = read_password()?;
            let _lock = AdminLock::acquire(&data_dir)?;
            add_user(&data_dir, &name, &pw, role, rate, force)?;
        }
        Some(Command::User(UserCmd::Passwd { name, data_dir, .. })) => {
            let pw = read_password()?;
            let _lock = AdminLock::acquire(&data_dir)?;
            if !datadir::load_users(&data_dir)?.iter().any(|u| u.name == name) {
                return Err(format!("no user {name} in {}", data_dir.display()));
            }
            let stored = datadir::stored_credential(&data_dir, &name, &pw)?;
            datadir::update_user(&data_dir, &name, |u| u.stored = stored)?;
            println!(
                "password of user {name} changed; a running velocityd checks logins against it within a second \
                 (open sessions stay logged in)"
            );
        }
        Some(Command::User(UserCmd::Role { name, role, data_dir })) => {
            let new = Role::parse(&role).expect("clap checked");
            let _lock = AdminLock::acquire(&data_dir)?;
            let mut old = None;
            if !datadir::update_user(&data_dir, &name, |u| old = Some(std::mem::replace(&mut u.role, new)))? {
                return Err(format!("no user {name} in {}", data_dir.display()));
            }
            match old {
                Some(o) if o == new => println!("user {name} is already {role}; nothing changed"),
                _ => println!(
                    "user {name} is now {role}; a running velocityd applies it within a second, to open \
                     sessions from their next request"
                ),
            }
        }
        Some(Command::User(UserCmd::List { data_dir })) => {
            for u in datadir::load_users(&data_dir)? {
                let rate = u.rate_limit.map_or("no rate limit".to_string(), |r| {
                    format!("rate {} ops/s, burst {}", r.ops_per_s, r.burst)
                });
                println!("{}\t{}\t{rate}", u.name, u.role.name());
            }
        }
        Some(Command::User(UserCmd::Remove { name, data_dir })) => {
            let _lock = AdminLock::acquire(&data_dir)?;
            if !datadir::remove_user(&data_dir, &name)? {
                return Err(format!("no user {name} in {}", data_dir.display()));
            }
            println!("user {name} removed; a running velocityd disconnects its sessions within a second");
        }
        Some(Command::Apikey(ApiKeyCmd::Create { user, data_dir })) => {
            let _lock = AdminLock::acquire(&data_dir)?;
            let (id, key) = datadir::create_api_key(&data_dir, &user)?;
            eprintln!("API key {id} for user {user} (shown once; only its SHA-256 is kept):");
            println!("{key}");
        }
        Some(Command::Apikey(ApiKeyCmd::List { data_dir })) => {
            for k in datadir::load_api_keys(&data_dir)? {
                println!("{}\t{}\tcreated {}", k.id, k.user, rfc3339_utc(k.created_unix_s));
            }
        }
        Some(Command::Apikey(ApiKeyCmd::Revoke { id, data_dir })) => {
            let _lock = AdminLock::acquire(&data_dir)?;
            if !datadir::revoke_api_key(&data_dir, &id)? {
                return Err(format!("no API key {id} in {}", data_dir.display()));
            }
            println!("API key {id} revoked; a running velocityd disconnects its sessions within a second");
        }
        Some(Command::Keygen { out }) => {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut key = [0u8; velocity::durability::KEY_BYTES];
            getrandom::fill(&mut key).map_err(|e| format!("no randomness: {e}"))?;
            let hex = hex::encode(key);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&out)
                .map_err(|e| format!("cannot create {}: {e}", out.display()))?;
            f.write_all(format!("{hex}\n").as_bytes())
                .and_then(|_| f.sync_all())
                .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
            println!("wrote a new AES-256 key to {} (mode 0600). Keep a copy apart from the data: without it the data cannot be read.", out.display());
        }
        Some(Command::Repair { data_dir, encryption_key_file }) => {
            let key = encryption_key_file
                .as_deref()
                .map(velocity::durability::cipher::read_key_file)
                .transpose()?;
            let cipher = key.map(|k| velocity::durability::Cipher::new(&k));
            let _lock = velocity::server::owner::DirLock::acquire(&data_dir, "repair")?;
            for line in velocity::server::durable::repair(&data_dir, cipher.as_ref())? {
                println!("{line}");
            }
        }
        Some(Command::Audit { data_dir, encryption_key_file }) => {
            let key = encryption_key_file
                .as_deref()
                .map(velocity::durability::cipher::read_key_file)
                .transpose()?;
            let cipher = key.map(|k| velocity::durability::Cipher::new(&k));
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(PipeOut { inner: stdout.lock(), closed: false });
            let read = velocity::server::audit::read_all(&data_dir, cipher.as_ref(), &mut out, &mut |w| {
                eprintln!("velocityd audit: {w}")
            });
            let flushed = std::io::Write::flush(&mut out).map_err(|e| e.to_string());
            // The reader went away (`velocityd audit | head`): done, as `cat` would be.
            if !out.get_ref().closed {
                read?;
                flushed?;
            }
        }
        Some(Command::Cluster(ClusterCmd::Init { node_id, cluster_file, data_dir })) => {
            let text = std::fs::read_to_string(&cluster_file)
                .map_err(|e| format!("cannot read {}: {e}", cluster_file.display()))?;
            println!("{}", velocity::server::node::init(&data_dir, node_id, &text)?);
        }
        Some(Command::Cluster(ClusterCmd::Change { cluster_file, data_dir })) => {
            let text = std::fs::read_to_string(&cluster_file)
                .map_err(|e| format!("cannot read {}: {e}", cluster_file.display()))?;
            print!("{}", velocity::server::node::change(&data_dir, &text, &cluster_file)?);
        }
        Some(Command::Cluster(ClusterCmd::Status { data_dir, json })) => {
            let all = velocity::server::node::status(&data_dir)?;
            if json {
                for core in &all {
                    println!("{core}");
                }
            } else {
                print!("{}", velocity::server::node::render_status(&all));
            }
        }
        Some(Command::Backup { data_dir, to }) => {
            let started = std::time::Instant::now();
            let c = velocity::server::durable::backup(&data_dir, &to)?;
            println!(
                "backed up {} to {}: {} files, {} bytes, {} shards of generation {}, in {} ms",
                data_dir.display(),
                to.display(),
                c.files,
                c.bytes,
                c.shards,
                c.generation,
                started.elapsed().as_millis()
            );
        }
        Some(Command::Restore { from, data_dir, encryption_key_file }) => {
            let key = encryption_key_file
                .as_deref()
                .map(velocity::durability::cipher::read_key_file)
                .transpose()?;
            let cipher = key.map(|k| velocity::durability::Cipher::new(&k));
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let (c, keys) = velocity::server::durable::restore(&from, &data_dir, cipher.as_ref(), now)?;
            println!(
                "restored {} into {}: {} files, {} bytes, {} keys in {} shards; start velocityd --data-dir {} (any --cores)",
                from.display(),
                data_dir.display(),
                c.files,
                c.bytes,
                keys,
                c.shards,
                data_dir.display()
            );
        }
        Some(Command::Fingerprint { data_dir, tls_cert }) => {
            let fp = match tls_cert {
                Some(c) => datadir::cert_fingerprint(
                    &std::fs::read_to_string(&c).map_err(|e| format!("{}: {e}", c.display()))?,
                )?,
                None => {
                    std::fs::create_dir_all(&data_dir).map_err(|e| format!("{}: {e}", data_dir.display()))?;
                    datadir::identity(&data_dir)?.2
                }
            };
            println!("{}", datadir::fingerprint_string(&fp));
        }
        None => {
            let s = cli.serve;
            let cpu_list = s.cpu_list.as_deref().map(parse_cpu_list).transpose()?;
            let cores = match (&cpu_list, s.cores) {
                (Some(l), Some(n)) if n != l.len() => {
                    return Err(format!("--cores {n} disagrees with --cpu-list ({} CPUs)", l.len()))
                }
                (Some(l), _) => l.len(),
                (None, Some(n)) => n,
                (None, None) => std::thread::available_parallelism().map_or(1, |n| n.get()),
            };
            run(Config {
                listen: listen_addr(s.listen, s.port)?,
                metrics_listen: s.metrics_listen,
                cores,
                cpu_list,
                data_dir: s.data_dir,
                max_connections: s.max_connections,
                idle_timeout_s: s.idle_timeout_s,
                handshake_timeout_ms: s.handshake_timeout_ms,
                frame_timeout_ms: s.frame_timeout_ms,
                max_unauthenticated_per_ip: s.max_unauthenticated_per_ip,
                max_unauthenticated: s.max_unauthenticated,
                max_payload: s.max_payload,
                mesh: if s.mesh == "crossbeam" { MeshKind::Crossbeam } else { MeshKind::Glommio },
                plaintext: s.plaintext,
                tls_cert: s.tls_cert,
                tls_key: s.tls_key,
                rate_limit_conn: datadir::RateLimit::parse(&s.rate_limit_conn)?,
                rate_limit_global: datadir::RateLimit::parse(&s.rate_limit_global)?,
                login_fail_threshold: s.login_fail_threshold,
                login_addr_fail_threshold: s.login_addr_fail_threshold,
                audit: s.audit == "on",
                audit_file_bytes_max: s.audit_file_bytes_max,
                slowlog_threshold_us: s.slowlog_threshold_us,
                max_memory_bytes: s.max_memory,
                eviction: Eviction::parse(&s.eviction).expect("clap checked the name"),
                durability: match s.durability.as_str() {
                    "sync" => Some(Mode::Sync),
                    "periodic" => Some(Mode::Periodic { interval_ms: s.fsync_interval_ms.max(1) }),
                    _ => None,
                },
                encryption_key: s
                    .encryption_key_file
                    .as_deref()
                    .map(velocity::durability::cipher::read_key_file)
                    .transpose()?,
                snapshot_log_bytes: s.snapshot_log_bytes,
                peer_listen: s.peer_listen,
                test_write_delay_ms: s.test_write_delay_ms,
            })?;
        }
    }
    Ok(())
}

/// `user add`: a new user; an existing one only with its own password (then the role and rate
/// limit given are applied, and said) or with --force.
fn add_user(
    dir: &Path,
    name: &str,
    pw: &str,
    role: Option<Role>,
    rate: Option<Option<datadir::RateLimit>>,
    force: bool,
) -> Result<(), String> {
    let existing = datadir::load_users(dir)?.into_iter().find(|u| u.name == name);
    let old = match existing {
        Some(old) if !force => old,
        _ => {
            let role = role.unwrap_or(Role::ReadWrite);
            datadir::add_user(dir, name, pw, role, rate.flatten())?;
            let what =
                if existing.is_some() { "replaced (new password, role and rate limit)" } else { "added" };
            println!(
                "user {name} ({}) {what} in {}; a running velocityd applies it within a second",
                role.name(),
                dir.display()
            );
            return Ok(());
        }
    };
    if datadir::stored_credential(dir, name, pw)? != old.stored {
        return Err(format!(
            "user {name} already exists in {} with another password; nothing changed. \
             Change its password with `velocityd user passwd {name} --password-stdin`, its role with \
             `velocityd user role {name} readonly|readwrite`, or replace the user with `user add --force`",
            dir.display()
        ));
    }
    let mut changes = Vec::new();
    if let Some(r) = role.filter(|r| *r != old.role) {
        changes.push(format!("role {} -> {}", old.role.name(), r.name()));
    }
    if let Some(r) = rate.filter(|r| *r != old.rate_limit) {
        let show = |r: Option<datadir::RateLimit>| r.map_or("none".to_string(), |r| r.to_arg());
        changes.push(format!("rate limit {} -> {}", show(old.rate_limit), show(r)));
    }
    if changes.is_empty() {
        println!("user {name} already exists with this password; nothing changed");
        return Ok(());
    }
    datadir::update_user(dir, name, |u| {
        u.role = role.unwrap_or(u.role);
        u.rate_limit = rate.unwrap_or(u.rate_limit);
    })?;
    println!(
        "user {name} already exists with this password; changed {}; a running velocityd applies it within a second",
        changes.join(", ")
    );
    Ok(())
}

/// Standard output that remembers whether its reader closed the pipe.
struct PipeOut<W> {
    inner: W,
    closed: bool,
}

impl<W: std::io::Write> std::io::Write for PipeOut<W> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let r = self.inner.write(b);
        self.closed |= matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe);
        r
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let r = self.inner.flush();
        self.closed |= matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe);
        r
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VELOCITY_LOG").unwrap_or_else(|_| "info".into()),
        )
        .init();
    match main_inner() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("velocityd: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        for (t, want) in [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (1_709_210_096, "2024-02-29T12:34:56Z"),
            (1_796_153_018, "2026-12-01T19:23:38Z"),
            (4_102_444_799, "2099-12-31T23:59:59Z"),
        ] {
            assert_eq!(rfc3339_utc(t), want);
        }
    }

    #[test]
    fn listen_and_port() {
        let l = |s: &str| Some(parse_listen(s).unwrap());
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(listen_addr(None, None).unwrap(), a("127.0.0.1:7411"));
        assert_eq!(listen_addr(None, Some(7500)).unwrap(), a("127.0.0.1:7500"));
        assert_eq!(listen_addr(l("0.0.0.0:7600"), None).unwrap(), a("0.0.0.0:7600"));
        assert_eq!(listen_addr(l("0.0.0.0"), Some(7500)).unwrap(), a("0.0.0.0:7500"));
        assert_eq!(listen_addr(l("0.0.0.0"), None).unwrap(), a("0.0.0.0:7411"));
        assert_eq!(listen_addr(l("[::1]"), Some(7500)).unwrap(), a("[::1]:7500"));
        assert_eq!(listen_addr(l("::1"), None).unwrap(), a("[::1]:7411"));
        assert_eq!(listen_addr(l("0.0.0.0:7500"), Some(7500)).unwrap(), a("0.0.0.0:7500"));
        let e = listen_addr(l("0.0.0.0:7600"), Some(7500)).unwrap_err();
        assert!(e.contains("--port 7500") && e.contains("0.0.0.0:7600"), "{e}");
        assert!(parse_listen("localhost:7411").is_err());
        let m = |s: &str| parse_metrics_listen(s);
        assert_eq!(m("9411").unwrap(), a("127.0.0.1:9411"));
        assert_eq!(m("0.0.0.0:9411").unwrap(), a("0.0.0.0:9411"));
        assert_eq!(m("[::1]:9411").unwrap(), a("[::1]:9411"));
        assert!(m("localhost:9411").is_err() && m("0.0.0.0").is_err() && m("70000").is_err());
    }
}
