//! velocityd: the Velocity server, and the commands that manage its data directory.

use clap::{Args, Parser, Subcommand};
use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use velocity::limits::{
    AUDIT_FILE_BYTES_MAX_DEFAULT, FRAME_TIMEOUT_MS_DEFAULT, FSYNC_INTERVAL_MS_DEFAULT, HANDSHAKE_TIMEOUT_MS,
    IDLE_TIMEOUT_S_DEFAULT, LOGIN_ADDR_FAIL_THRESHOLD_DEFAULT, LOGIN_FAIL_THRESHOLD_DEFAULT,
    PAYLOAD_BYTES_MAX_DEFAULT, SNAPSHOT_LOG_BYTES_DEFAULT, UNAUTHENTICATED_MAX_DEFAULT,
    UNAUTHENTICATED_PER_ADDRESS_MAX_DEFAULT,
};
use velocity::server::datadir::{self, Role};
use velocity::server::mesh::MeshKind;
use velocity::server::wal::Mode;
use velocity::server::{run, Config};

#[derive(Parser)]
#[command(name = "velocityd", version, about = "Velocity key-value server (thread-per-core, shared-nothing)")]
struct Cli {
    #[command(flatten)]
    serve: ServeArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Args)]
struct ServeArgs {
    /// Address every core listens on (SO_REUSEPORT).
    #[arg(long, default_value = "127.0.0.1:7411")]
    listen: SocketAddr,
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
    /// Testing only (fault injection): pause this long before every group write to the log.
    #[arg(long, hide = true, default_value_t = 0)]
    test_write_delay_ms: u64,
}

#[derive(Subcommand)]
enum Command {
    /// Manage users. Safe on the data directory of a running server: files are replaced
    /// atomically, and the server applies changes within a second (removed users are
    /// disconnected).
    #[command(subcommand)]
    User(UserCmd),
    /// Manage API keys (authentication method 2). Safe on a running server, as `user`: a revoked
    /// key's sessions are disconnected within a second.
    #[command(subcommand)]
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
enum ApiKeyCmd {
    /// Make a key acting as USER and print it once (only its SHA-256 is kept).
    Create {
        #[arg(long)]
        user: String,
        #[arg(long, default_value = "./velocity-data")]
        data_dir: PathBuf,
    },
    List {
        #[arg(long, default_value = "./velocity-data")]
        data_dir: PathBuf,
    },
    /// Revoke the key with this id (as `apikey list` shows it).
    Revoke {
        id: String,
        #[arg(long, default_value = "./velocity-data")]
        data_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum UserCmd {
    /// Add a user, or replace its password and role. The password is read from standard input.
    Add {
        name: String,
        #[arg(long, default_value = "readwrite", value_parser = ["readonly", "readwrite"])]
        role: String,
        /// Read the password from standard input (the only way: no prompts, no arguments).
        #[arg(long, required = true)]
        password_stdin: bool,
        /// This user's rate limit, OPS or OPS:BURST per second, enforced on each core (0: none).
        #[arg(long)]
        rate_limit: Option<String>,
        #[arg(long, default_value = "./velocity-data")]
        data_dir: PathBuf,
    },
    List {
        #[arg(long, default_value = "./velocity-data")]
        data_dir: PathBuf,
    },
    Remove {
        name: String,
        #[arg(long, default_value = "./velocity-data")]
        data_dir: PathBuf,
    },
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
    match cli.command {
        Some(Command::User(UserCmd::Add { name, role, data_dir, rate_limit, .. })) => {
            let rate = rate_limit.as_deref().map(datadir::RateLimit::parse).transpose()?.flatten();
            let pw = read_password()?;
            datadir::add_user(&data_dir, &name, &pw, Role::parse(&role).expect("clap checked"), rate)?;
            println!("user {name} ({role}) saved in {}", data_dir.display());
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
            if !datadir::remove_user(&data_dir, &name)? {
                return Err(format!("no user {name} in {}", data_dir.display()));
            }
            println!("user {name} removed; a running velocityd disconnects its sessions within a second");
        }
        Some(Command::Apikey(ApiKeyCmd::Create { user, data_dir })) => {
            let (id, key) = datadir::create_api_key(&data_dir, &user)?;
            eprintln!("API key {id} for user {user} (shown once; only its SHA-256 is kept):");
            println!("{key}");
        }
        Some(Command::Apikey(ApiKeyCmd::List { data_dir })) => {
            for k in datadir::load_api_keys(&data_dir)? {
                println!("{}\t{}\tcreated {}", k.id, k.user, k.created_unix_s);
            }
        }
        Some(Command::Apikey(ApiKeyCmd::Revoke { id, data_dir })) => {
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
            let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
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
            let mut out = std::io::BufWriter::new(stdout.lock());
            velocity::server::audit::read_all(&data_dir, cipher.as_ref(), &mut out, &mut |w| {
                eprintln!("velocityd audit: {w}")
            })?;
            std::io::Write::flush(&mut out).map_err(|e| e.to_string())?;
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
                listen: s.listen,
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
                test_write_delay_ms: s.test_write_delay_ms,
            })?;
        }
    }
    Ok(())
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
