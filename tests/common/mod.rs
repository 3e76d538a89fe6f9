//! Starts the real `velocityd` binary on a free loopback port with a fresh data directory,
//! and hands out real clients. Dropping a `Server` kills the process and removes its data.
#![allow(dead_code)]

pub mod registers;

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use velocity::client::trust::{NewHost, Trust};
use velocity::client::{derive, Client, ConnectOptions, Credentials};

pub const PASSWORD: &str = "correct horse battery staple";
pub const RO_PASSWORD: &str = "read only please";

pub fn bin(name: &str) -> PathBuf {
    match name {
        "velocityd" => PathBuf::from(env!("CARGO_BIN_EXE_velocityd")),
        "velocity-cli" => PathBuf::from(env!("CARGO_BIN_EXE_velocity-cli")),
        _ => unreachable!(),
    }
}

pub fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "velocity-test-{}-{}-{tag}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Run `cmd` with `input` on its standard input; its output, captured.
pub fn run_with_stdin(cmd: &mut Command, input: &str) -> std::process::Output {
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    // A child may end without reading its input (a usage error, say): that is its answer,
    // told by its status and output, not a failure to write.
    match child.stdin.take().unwrap().write_all(input.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => panic!("writing to {cmd:?}: {e}"),
        _ => {}
    }
    child.wait_with_output().unwrap()
}

pub fn add_user(data_dir: &PathBuf, name: &str, password: &str, role: &str) {
    let out = run_with_stdin(
        Command::new(bin("velocityd"))
            .args(["user", "add", name, "--role", role, "--password-stdin", "--data-dir"])
            .arg(data_dir),
        password,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    /// alice's credential, derived once: every connection then costs one SHA-256 server-side.
    pub alice: Credentials,
    pub reader: Credentials,
    pub tls: bool,
}

impl Server {
    pub fn start(cores: usize) -> Server {
        Self::start_with(cores, &[])
    }

    pub fn start_with(cores: usize, extra: &[&str]) -> Server {
        let data_dir = temp_dir("data");
        add_user(&data_dir, "alice", PASSWORD, "readwrite");
        add_user(&data_dir, "reader", RO_PASSWORD, "readonly");
        Self::start_in(data_dir, cores, extra)
    }

    pub fn start_in(data_dir: PathBuf, cores: usize, extra: &[&str]) -> Server {
        Self::start_at(data_dir, cores, extra, None)
    }

    /// Start on `port` when given (to stand in for another server), else on a free port.
    pub fn start_at(data_dir: PathBuf, cores: usize, extra: &[&str], port: Option<u16>) -> Server {
        Self::start_limited(data_dir, cores, extra, port, None)
    }

    /// As `start_at`, with the process's file-size limit (RLIMIT_FSIZE) set to `fsize_bytes`: a
    /// disk that fills up, without needing to mount one.
    pub fn start_limited(
        data_dir: PathBuf,
        cores: usize,
        extra: &[&str],
        port: Option<u16>,
        fsize_bytes: Option<u64>,
    ) -> Server {
        let log = data_dir.with_extension("log");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let port = port.unwrap_or_else(free_port);
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            let mut cmd = Command::new(bin("velocityd"));
            cmd.args(["--listen", &addr.to_string(), "--cores", &cores.to_string(), "--data-dir"])
                .arg(&data_dir)
                .args(extra)
                .env("VELOCITY_LOG", "info")
                .stdout(Stdio::null())
                .stderr(std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap());
            if let Some(limit) = fsize_bytes {
                use std::os::unix::process::CommandExt;
                // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
                unsafe {
                    cmd.pre_exec(move || {
                        let l = libc::rlimit { rlim_cur: limit, rlim_max: limit };
                        if libc::setrlimit(libc::RLIMIT_FSIZE, &l) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        Ok(())
                    });
                }
            }
            let child = cmd.spawn().expect("start velocityd");
            let mut s = Server {
                child,
                addr,
                data_dir: data_dir.clone(),
                log: log.clone(),
                alice: Credentials::ApiKey(String::new()),
                reader: Credentials::ApiKey(String::new()),
                tls: !extra.contains(&"--plaintext"),
            };
            // Ready when every core accepts: with SO_REUSEPORT a connection may land on any.
            while Instant::now() < deadline {
                if let Ok(Some(_)) = s.child.try_wait() {
                    // Port taken by someone else, or a start-up error: retry below, on the
                    // same data directory (this attempt must not remove it).
                    s.data_dir = PathBuf::new();
                    break;
                }
                if TcpStream::connect(addr).is_ok() {
                    let c = match Client::open(&s.options()) {
                        Ok(c) => c,
                        // Right after a kill -9 on this port, the dead server's listening socket
                        // lingers a few milliseconds in the kernel and takes connections it then
                        // resets: this server is not listening yet. The probe above may have
                        // reached that socket, gone by now (refused) before this one binds.
                        Err(velocity::client::ClientError::Io(e))
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionRefused
                            ) && Instant::now() < deadline =>
                        {
                            std::thread::sleep(Duration::from_millis(20));
                            continue;
                        }
                        Err(e) => panic!("HELLO: {e}; velocityd's log:\n{}", s.log_text()),
                    };
                    let info = c.server_info().clone();
                    s.alice = Credentials::Derived {
                        user: "alice".into(),
                        credential: derive(&info, "alice", PASSWORD).unwrap(),
                    };
                    s.reader = Credentials::Derived {
                        user: "reader".into(),
                        credential: derive(&info, "reader", RO_PASSWORD).unwrap(),
                    };
                    return s;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let log_text = std::fs::read_to_string(&log).unwrap_or_default();
            assert!(Instant::now() < deadline, "velocityd did not start:\n{log_text}");
        }
    }

    /// This server's known-hosts file: each test server gets its own.
    pub fn known_hosts(&self) -> PathBuf {
        self.data_dir.with_extension("known_hosts")
    }

    /// TLS (unless started with --plaintext), trusting this server on first contact.
    pub fn options(&self) -> ConnectOptions {
        let mut o = ConnectOptions::new("127.0.0.1", self.addr.port());
        o.tls = self.tls;
        o.trust = Trust { known_hosts: Some(self.known_hosts()), new_host: NewHost::Accept, pinned: None };
        o.timeout = Some(Duration::from_secs(30));
        o
    }

    pub fn connect(&self, creds: &Credentials) -> velocity::client::Result<Client> {
        Client::connect(&self.options(), creds)
    }

    pub fn client(&self) -> Client {
        self.connect(&self.alice)
            .unwrap_or_else(|e| panic!("connect as alice: {e}; velocityd's log:\n{}", self.log_text()))
    }

    /// Connected and past HELLO, not logged in.
    pub fn raw(&self) -> Client {
        Client::open(&self.options()).expect("HELLO")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL (a crash), keeping the data directory for a restart; returns it.
    pub fn crash(mut self) -> PathBuf {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.keep_data()
    }

    /// Stop caring for the data directory (the caller restarts on it); returns it.
    pub fn keep_data(&mut self) -> PathBuf {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::take(&mut self.data_dir)
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < deadline, "velocityd did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.data_dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.data_dir);
            let _ = std::fs::remove_file(&self.log);
            let _ = std::fs::remove_file(self.known_hosts());
        }
    }
}

/// Start velocityd on `dir` expecting it to refuse: its exit status and stderr. Killed (and the
/// test failed) if it starts serving instead.
pub fn start_expecting_refusal(dir: &Path, args: &[&str]) -> (std::process::ExitStatus, String) {
    let mut cmd = Command::new(bin("velocityd"));
    cmd.args(["--listen", "127.0.0.1:0", "--cores", "1", "--data-dir"]).arg(dir).args(args);
    expect_refusal(cmd)
}

/// Run `cmd` (velocityd) expecting it to refuse to serve: its exit status and stderr.
pub fn expect_refusal(mut cmd: Command) -> (std::process::ExitStatus, String) {
    let mut child =
        cmd.stderr(std::process::Stdio::piped()).stdout(std::process::Stdio::null()).spawn().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("velocityd started instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    (status, err)
}

/// The value of `key`, or None for KEY_NOT_FOUND.
pub fn value_of(c: &mut Client, key: &str) -> Option<Vec<u8>> {
    use velocity::protocol::{ErrorCode, Value};
    match c.execute(&velocity::client::build::get(key.as_bytes())) {
        Ok(rs) => match &rs.rows[0][0] {
            Value::Bytes(b) => Some(b.clone()),
            other => panic!("{other:?}"),
        },
        Err(e) if e.code() == Some(ErrorCode::KeyNotFound) => None,
        Err(e) => panic!("{e}"),
    }
}

/// Every file below `dir`.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The audit log of `data_dir` as `velocityd audit` prints it (the files hold binary records):
/// its JSON lines, parsed. A warning on stderr fails the caller.
pub fn audit_lines(data_dir: &Path) -> Vec<serde_json::Value> {
    let out = Command::new(bin("velocityd")).args(["audit", "--data-dir"]).arg(data_dir).output().unwrap();
    assert!(out.status.success() && out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Make `peers.len()` fresh data directories one cluster (`ranges` ranges, RF 3, `cores` each,
/// node i+1's peer address `peers[i]`) with `velocityd cluster init`, each with the user alice.
/// A new node's data directory, with alice: its key's fingerprint as a cluster file names it.
pub fn node_dir(tag: &str) -> (PathBuf, String) {
    let d = temp_dir(tag);
    add_user(&d, "alice", PASSWORD, "readwrite");
    let out = Command::new(bin("velocityd")).args(["fingerprint", "--data-dir"]).arg(&d).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let fp = String::from_utf8(out.stdout).unwrap().split_whitespace().last().unwrap().to_owned();
    (d, fp)
}

/// `velocityd cluster ARGS --cluster-file FILE --data-dir DIR`, which must succeed: what it printed.
pub fn cluster_command(args: &[&str], file: &Path, dir: &Path) -> String {
    let out = Command::new(bin("velocityd"))
        .arg("cluster")
        .args(args)
        .arg("--cluster-file")
        .arg(file)
        .arg("--data-dir")
        .arg(dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "cluster {args:?}: {text}");
    text
}

/// The cluster file `file` with node `old` replaced by node `new` at `peer` (`replaces=`).
pub fn replacing(file: &str, old: u64, new: u64, peer: &str, cores: usize, fp: &str) -> String {
    let mut out: String =
        file.lines().filter(|l| !l.starts_with(&format!("node {old} "))).map(|l| format!("{l}\n")).collect();
    out.push_str(&format!("node {new} {peer} cores={cores} {fp} replaces={old}\n"));
    out
}

pub fn init_cluster(tag: &str, ranges: usize, cores: usize, peers: &[String]) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let mut file = format!("ranges {ranges}\nreplication 3\n");
    for (i, peer) in peers.iter().enumerate() {
        let (d, fp) = node_dir(tag);
        file.push_str(&format!("node {} {peer} cores={cores} {fp}\n", i + 1));
        dirs.push(d);
    }
    let cf = dirs[0].with_extension("cluster");
    std::fs::write(&cf, &file).unwrap();
    for (i, d) in dirs.iter().enumerate() {
        cluster_command(&["init", "--node-id", &(i + 1).to_string()], &cf, d);
    }
    dirs
}
