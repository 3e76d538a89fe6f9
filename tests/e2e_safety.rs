//! Data safety and isolation, end to end: one owner per data directory and per address, and a
//! restart right after kill -9 that neither joins the dead server's sockets nor loses writes.

mod common;

use common::*;
use std::process::Command;
use std::time::{Duration, Instant};
use velocity::client::build;
use velocity::protocol::{ErrorCode, Value};

/// A second velocityd on a data directory in use refuses, naming the holder, and so does
/// `repair`; the first server's acknowledged writes survive its crash and restart. User
/// management keeps working on the live directory.
#[test]
fn a_data_directory_has_one_owner() {
    let s = Server::start_with(1, &["--audit", "off"]);
    let mut c = s.client();
    for i in 0..200 {
        c.execute(&build::set(format!("k{i}").as_bytes(), b"kept")).unwrap();
    }
    let pid = s.child.id();
    let mut cmd = Command::new(bin("velocityd"));
    cmd.args(["--listen", &format!("127.0.0.1:{}", free_port()), "--cores", "1", "--data-dir"])
        .arg(&s.data_dir);
    let (status, err) = expect_refusal(cmd);
    assert!(!status.success());
    assert!(err.contains(&format!("in use by PID {pid}")) && err.contains("LOCK"), "{err}");
    let out =
        Command::new(bin("velocityd")).args(["repair", "--data-dir"]).arg(&s.data_dir).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot repair") && err.contains(&format!("PID {pid}")), "{err}");
    // Files are replaced atomically: user management is fine on a live directory.
    add_user(&s.data_dir, "carol", "carol's password", "readonly");
    drop(c);
    let dir = s.crash();
    let s = Server::start_in(dir, 1, &["--audit", "off"]);
    let mut c = s.client();
    assert_eq!(value_of(&mut c, "k0"), Some(b"kept".to_vec()));
    assert_eq!(value_of(&mut c, "k199"), Some(b"kept".to_vec()));
}

/// A second velocityd (another data directory) on an address that is served refuses, instead of
/// joining the SO_REUSEPORT group and splitting the clients between two databases.
#[test]
fn an_address_has_one_server() {
    let s = Server::start_with(2, &["--audit", "off"]);
    s.client().execute("INSERT INTO kv (key, value) VALUES ('whose', 'first')").unwrap();
    let other = temp_dir("other");
    add_user(&other, "alice", PASSWORD, "readwrite");
    let mut cmd = Command::new(bin("velocityd"));
    cmd.args(["--listen", &s.addr.to_string(), "--cores", "2", "--data-dir"]).arg(&other);
    let (status, err) = expect_refusal(cmd);
    assert!(!status.success());
    assert!(err.contains(&s.addr.to_string()) && err.contains(&format!("PID {}", s.child.id())), "{err}");
    // Every connection reaches the one server.
    for _ in 0..40 {
        assert_eq!(value_of(&mut s.client(), "whose"), Some(b"first".to_vec()));
    }
    let _ = std::fs::remove_dir_all(&other);
}

struct KillOnDrop(Option<std::process::Child>);

impl KillOnDrop {
    fn get(&mut self) -> &mut std::process::Child {
        self.0.as_mut().unwrap()
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// /proc/PID/stat's state: 'Z' once a process has exited (its sockets are closed by then).
fn state_of(pid: u32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit(')').next().and_then(|r| r.trim().chars().next()).unwrap_or('?')
}

/// kill -9 and an immediate restart on the same address and data directory: the new server
/// listens only once the old one's sockets are gone (it never joins a dying socket group, whose
/// queued connections the kernel resets), and no connection to the new server is reset.
#[test]
fn a_restart_right_after_kill_9_waits_for_the_old_process() {
    const BIG_VALUES: usize = 32;
    // A large heap makes the killed process take a while to exit, as in production.
    let extra = ["--audit", "off", "--durability", "none", "--plaintext", "--max-payload", "67108864"];
    let mut s = Server::start_with(2, &extra);
    let port = s.addr.port();
    let big = format!("INSERT INTO kv (key, value) VALUES ('big', '{}')", "x".repeat(60 << 20));
    for cycle in 0..2 {
        let mut c = s.client();
        for i in 0..BIG_VALUES {
            c.execute(&big.replacen("'big'", &format!("'big{i}'"), 1)).unwrap();
        }
        drop(c);
        let old = s.child.id();
        let mut opts = s.options();
        opts.timeout = Some(Duration::from_secs(10));
        let dir = std::mem::take(&mut s.data_dir);
        // SIGKILL, without waiting for the old process to be gone.
        unsafe { libc::kill(old as i32, libc::SIGKILL) };
        let mut next = Command::new(bin("velocityd"));
        next.args(["--listen", &format!("127.0.0.1:{port}"), "--cores", "2", "--data-dir"])
            .arg(&dir)
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        // Killed if the test fails before it takes the old server's place.
        let mut child = KillOnDrop(Some(next.spawn().unwrap()));
        // The first connection the new server answers: by then the old one must have exited.
        let deadline = Instant::now() + Duration::from_secs(40);
        let mut answered = 0;
        let mut resets = 0;
        while answered < 20 {
            assert!(Instant::now() < deadline, "the restarted server never answered");
            assert!(child.get().try_wait().unwrap().is_none(), "the restarted server exited (refused?)");
            match velocity::client::Client::open(&opts) {
                Ok(_) => {
                    if answered == 0 {
                        assert_eq!(
                            state_of(old),
                            'Z',
                            "cycle {cycle}: answered while the old server was alive"
                        );
                    }
                    answered += 1;
                }
                // Refused: nothing listens yet (the new server is waiting). A reset after the new
                // server answered would mean a connection went to a dying socket.
                Err(velocity::client::ClientError::Io(_)) if answered == 0 => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => {
                    resets += 1;
                    eprintln!("cycle {cycle}: {e}");
                }
            }
        }
        assert_eq!(resets, 0, "cycle {cycle}: connections to the restarted server were reset");
        // Reap the old process; the new one is the server from now on.
        let mut old_child = std::mem::replace(&mut s.child, child.0.take().unwrap());
        old_child.wait().unwrap();
        s.data_dir = dir;
    }
}

/// With --durability sync a read does not answer with a write that is not yet durable: here the
/// log write of two writes (one key on each shard) is held back, a second client reads them
/// meanwhile, and the server is killed before they reach the log. Whatever the reader was shown must still
/// be there after the restart.
#[test]
fn a_read_never_shows_a_write_that_a_crash_takes_back() {
    for cores in [1, 2] {
        let s = Server::start_with(cores, &["--audit", "off", "--test-write-delay-ms", "1500"]);
        // One key on each shard: the read is local for one and forwarded for the other.
        let keys: Vec<String> = (0..cores)
            .map(|shard| {
                (0..)
                    .map(|i| format!("k{i}"))
                    .find(|k| velocity::shard::shard_of_key(k.as_bytes(), cores) == shard)
                    .unwrap()
            })
            .collect();
        let mut writer = s.client();
        let mut reader = s.client();
        for k in &keys {
            writer.send(&build::set(k.as_bytes(), b"not yet durable")).unwrap();
        }
        writer.flush().unwrap();
        // The writes are applied at once; their log write waits 1.5 s.
        std::thread::sleep(Duration::from_millis(100));
        reader.set_timeout(Some(Duration::from_millis(300))).unwrap();
        for k in &keys {
            reader.send(&build::get(k.as_bytes())).unwrap();
        }
        reader.flush().unwrap();
        let mut shown = Vec::new();
        for k in &keys {
            match reader.recv() {
                Ok(Ok(_)) => shown.push(k.clone()),
                Ok(Err(e)) if e.code == ErrorCode::KeyNotFound => {}
                Ok(Err(e)) => panic!("{e}"),
                Err(_) => break, // still waiting for the log: nothing shown
            }
        }
        // SIGKILL before the log write (unless the machine stalled for a second and more).
        let dir = s.crash();
        let s = Server::start_in(dir, cores, &["--audit", "off"]);
        let mut c = s.client();
        for k in &shown {
            assert!(
                value_of(&mut c, k).is_some(),
                "cores {cores}: a read showed {k}, which the crash then took back"
            );
        }
        drop(writer);
    }
}

/// A history check over kill -9 cycles: 4 writers each own 8 keys and write them with rising
/// sequence numbers (pipelined), 4 readers read every key; the server is killed every 0.5–1.5 s
/// and restarted. After each restart a key holds at least the newest value any writer was told
/// was written and any reader was shown — a value once seen never vanishes — and no value that
/// was never sent.
#[test]
fn kill_9_history_reads_and_acknowledgements_survive() {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    // A short pause before each log write keeps writes visible-but-not-yet-durable for a while.
    let extra = ["--audit", "off", "--test-write-delay-ms", "3"];
    let mut s = Server::start_with(2, &extra);
    #[derive(Default, Clone, Copy)]
    struct Seen {
        sent: u64,
        acked: u64,
        read: u64,
    }
    let history: Arc<Mutex<HashMap<String, Seen>>> = Arc::default();
    let key = |w: usize, i: u64| format!("h{w}:{i}");
    let mut checked = 0;
    for cycle in 0..4 {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for w in 0..4usize {
            let (mut c, history, stop) = (s.client(), history.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                let mut round = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    round += 1;
                    let batch: Vec<(String, u64)> = (0..4)
                        .map(|j| {
                            let k = key(w, (round * 4 + j) % 8);
                            let mut h = history.lock().unwrap();
                            let e = h.entry(k.clone()).or_default();
                            e.sent += 1;
                            (k, e.sent)
                        })
                        .collect();
                    let sql: Vec<String> = batch
                        .iter()
                        .map(|(k, n)| build::set(k.as_bytes(), n.to_string().as_bytes()))
                        .collect();
                    let Ok(replies) = c.pipeline(&sql) else { return };
                    let mut h = history.lock().unwrap();
                    for ((k, n), r) in batch.iter().zip(replies) {
                        if r.is_ok() {
                            let e = h.get_mut(k).unwrap();
                            e.acked = e.acked.max(*n);
                        }
                    }
                }
            }));
        }
        for r in 0..4u64 {
            let (mut c, history, stop) = (s.client(), history.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                let mut i = r;
                while !stop.load(Ordering::Relaxed) {
                    i += 7;
                    let k = key((i % 4) as usize, (i / 4) % 8);
                    match c.execute(&build::get(k.as_bytes())) {
                        Ok(rs) => {
                            let Value::Bytes(v) = &rs.rows[0][0] else { panic!() };
                            let n: u64 = String::from_utf8_lossy(v).parse().unwrap();
                            let mut h = history.lock().unwrap();
                            let e = h.entry(k).or_default();
                            e.read = e.read.max(n);
                        }
                        Err(e) if e.code() == Some(ErrorCode::KeyNotFound) => {}
                        Err(_) => return,
                    }
                }
            }));
        }
        std::thread::sleep(Duration::from_millis(500 + (cycle as u64 * 337) % 1000));
        let dir = s.crash();
        stop.store(true, Ordering::Relaxed);
        threads.into_iter().for_each(|t| t.join().unwrap());
        s = Server::start_in(dir, 1 + cycle % 2, &extra);
        let mut c = s.client();
        let h = history.lock().unwrap();
        for (k, e) in h.iter() {
            let got =
                value_of(&mut c, k).map_or(0, |v| String::from_utf8(v).unwrap().parse::<u64>().unwrap());
            let floor = e.acked.max(e.read);
            assert!(
                got >= floor && got <= e.sent,
                "cycle {cycle}, {k}: recovered {got}; acknowledged {}, shown to a reader {}, sent {}",
                e.acked,
                e.read,
                e.sent
            );
            checked += 1;
        }
    }
    assert!(checked > 0);
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Clients that pipeline reads of 1 MB values and never read the replies cost the server a
/// bounded amount each (its output bound plus one reply), not the sum of what they asked for;
/// IN lists and ranges of large values are refused before their values are copied; and a
/// well-behaved client is served all along.
#[test]
fn clients_that_never_read_hold_bounded_memory() {
    let s = Server::start_with(2, &["--audit", "off", "--durability", "none", "--plaintext"]);
    let mut c = s.client();
    let mb = "v".repeat((1 << 20) - 200);
    for i in 0..4 {
        c.execute(&format!("INSERT INTO kv (key, value) VALUES ('big{i}', '{mb}')")).unwrap();
    }
    let e = c.execute("SELECT key, value FROM kv WHERE key IN ('big0', 'big1', 'big2', 'big3')").unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidCommand), "{e}");
    let e = c.execute("SELECT key, value FROM kv WHERE key >= 'big'").unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidCommand), "{e}");
    let pid = s.child.id();
    let before = rss_bytes(pid);
    // 16 clients, each asking for 200 MB of replies (keys on both shards) and reading none.
    let mut idle = Vec::new();
    for n in 0..16 {
        let mut r = s.client();
        for i in 0..200 {
            r.send(&build::get(format!("big{}", (n + i) % 4).as_bytes())).unwrap();
        }
        r.flush().unwrap();
        idle.push(r);
    }
    let mut peak = 0;
    for _ in 0..40 {
        // The well-behaved client is answered throughout.
        assert_eq!(value_of(&mut c, "big1").map(|v| v.len()), Some(mb.len()));
        peak = peak.max(rss_bytes(pid));
        std::thread::sleep(Duration::from_millis(25));
    }
    let grew = peak.saturating_sub(before);
    // Per connection at most about CONN_OUT_BYTES_MAX plus a reply being encoded and one being
    // forwarded: well under 8 MB each; unbounded it was 200 MB each.
    assert!(grew < 16 * (8 << 20), "RSS grew by {} MB for 16 clients that never read", grew >> 20);
    eprintln!("16 never-reading clients: RSS {} MB -> peak {} MB", before >> 20, peak >> 20);
    drop(idle);
}

/// Failed logins lock out the (address, user) pair, not the address: a typo storm of one user
/// behind a shared address leaves the others logging in; spraying many users from one address
/// throttles that address; and the server log gets one summary per address, not a line per try.
#[test]
fn login_throttling_locks_out_only_the_attacker() {
    use velocity::client::{Client, ClientError, Credentials};
    let s = Server::start_with(1, &[]);
    let from = |ip: &str| {
        let mut o = s.options();
        o.source = Some(ip.parse().unwrap());
        o
    };
    let shared = from("127.0.0.1");
    let wrong = Credentials::Password { user: "alice".into(), password: "typo".into() };
    for _ in 0..2 {
        let mut c = Client::open(&shared).unwrap();
        for _ in 0..3 {
            let _ = c.authenticate(&wrong);
        }
    }
    // alice is throttled from this address, even with her right password...
    match Client::connect(&shared, &s.alice) {
        Err(ClientError::Auth { status: 2, message }) => assert!(message.contains("this user"), "{message}"),
        other => panic!("alice not throttled: {:?}", other.map(|_| ())),
    }
    // ...and the other users there are not.
    Client::connect(&shared, &s.reader).expect("another user from the same address");
    // Spraying: one wrong try for each of 60 users from one address.
    let sprayer = from("127.0.0.3");
    let mut c = Client::open(&sprayer).unwrap();
    for i in 0..60 {
        if i % 3 == 0 {
            c = Client::open(&sprayer).unwrap();
        }
        let _ = c.authenticate(&Credentials::Derived { user: format!("user{i}"), credential: [7; 32] });
    }
    match Client::connect(&sprayer, &s.reader) {
        Err(ClientError::Auth { status: 2, message }) => {
            assert!(message.contains("your address"), "{message}")
        }
        other => panic!("the spraying address is not throttled: {:?}", other.map(|_| ())),
    }
    Client::connect(&shared, &s.reader).expect("an address that did not spray");
    // Logged as summaries within the report interval, not one line per attempt.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !s.log_text().contains("127.0.0.3: 50 failed logins") {
        assert!(std::time::Instant::now() < deadline, "no summary:\n{}", s.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    let lines = s.log_text().lines().filter(|l| l.contains("127.0.0.3")).count();
    assert!(lines <= 2, "{lines} log lines for one address:\n{}", s.log_text());
}

fn velocityd_cmd(args: &[&str], dir: &std::path::Path) -> String {
    let out = Command::new(bin("velocityd")).args(args).arg("--data-dir").arg(dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Revocation reaches open sessions: after `apikey revoke` and `user remove`, the sessions of
/// that key or user — busy ones, idle ones, and idle ones parked as session state — get
/// DISCONNECT and close within the reload interval; a changed role applies from the next request.
#[test]
fn revoked_keys_and_removed_users_lose_their_open_sessions() {
    use velocity::client::{ClientError, Credentials};
    let s = Server::start_with(2, &["--plaintext", "--audit", "off"]);
    add_user(&s.data_dir, "carol", "carol's password", "readwrite");
    add_user(&s.data_dir, "dave", "dave's password", "readwrite");
    let key = velocityd_cmd(&["apikey", "create", "--user", "alice"], &s.data_dir).trim().to_string();
    let id = key.split('_').nth(1).unwrap().to_string();
    // The server reloads the files within a second.
    std::thread::sleep(Duration::from_millis(1500));
    let login = |creds: Credentials| s.connect(&creds).unwrap();
    let carol = || Credentials::Password { user: "carol".into(), password: "carol's password".into() };
    let (mut key_busy, mut key_idle) =
        (login(Credentials::ApiKey(key.clone())), login(Credentials::ApiKey(key.clone())));
    let (mut carol_busy, mut carol_idle) = (login(carol()), login(carol()));
    let mut dave = login(Credentials::Password { user: "dave".into(), password: "dave's password".into() });
    let mut alice = s.client();
    for c in [&mut key_busy, &mut key_idle, &mut carol_busy, &mut carol_idle, &mut dave, &mut alice] {
        c.execute("INSERT INTO kv (key, value) VALUES ('k', 'v')").unwrap();
    }
    // Idle for longer than the parking delay: two of them wait as parked session state.
    std::thread::sleep(Duration::from_millis(2500));
    velocityd_cmd(&["apikey", "revoke", &id], &s.data_dir);
    velocityd_cmd(&["user", "remove", "carol"], &s.data_dir);
    run_with_stdin(
        Command::new(bin("velocityd"))
            .args(["user", "add", "dave", "--role", "readonly", "--password-stdin", "--data-dir"])
            .arg(&s.data_dir),
        "dave's password",
    );
    // The busy ones: refused from the next request on, with DISCONNECT.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    for c in [&mut key_busy, &mut carol_busy] {
        loop {
            assert!(std::time::Instant::now() < deadline, "a revoked session kept working");
            match c.execute("SELECT value FROM kv WHERE key = 'k'") {
                Ok(_) => std::thread::sleep(Duration::from_millis(50)),
                Err(ClientError::Disconnected { code, reason }) => {
                    assert_eq!(code, ErrorCode::Unauthorized as u16, "{reason}");
                    break;
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
    // The idle ones are told without asking anything.
    for (c, why) in [(&mut key_idle, "API key revoked"), (&mut carol_idle, "user removed")] {
        c.set_timeout(Some(Duration::from_secs(10))).unwrap();
        match c.read_message(1 << 20) {
            Err(ClientError::Disconnected { code, reason }) => {
                assert_eq!((code, reason.as_str()), (ErrorCode::Unauthorized as u16, why))
            }
            other => panic!("an idle revoked session got {:?}", other.map(|m| m.kind())),
        }
    }
    // dave is readonly now, on his open session, once the server has seen the change.
    loop {
        assert!(std::time::Instant::now() < deadline, "dave's new role never applied");
        match dave.execute("INSERT INTO kv (key, value) VALUES ('k', 'w')") {
            Ok(_) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => {
                assert_eq!(e.code(), Some(ErrorCode::Unauthorized), "{e}");
                break;
            }
        }
    }
    assert!(dave.execute("SELECT value FROM kv WHERE key = 'k'").is_ok());
    // Everyone else carries on.
    alice.execute("INSERT INTO kv (key, value) VALUES ('k', 'x')").unwrap();
}

/// Connections that trickle their handshake a byte at a time and reconnect as soon as they are
/// closed — more of them than there are connection slots — no longer lock out logins: one
/// address holds at most its share of the login slots, and each such connection is closed at
/// the handshake deadline however it trickles. A logged-in client trickling a frame is closed at
/// the frame deadline.
#[test]
fn handshake_tricklers_do_not_lock_out_logins() {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let s = Server::start_with(
        2,
        &[
            "--plaintext",
            "--audit",
            "off",
            "--max-connections",
            "200",
            "--handshake-timeout-ms",
            "3000",
            "--frame-timeout-ms",
            "1000",
        ],
    );
    let addr = s.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let longest_ms = Arc::new(AtomicU64::new(0));
    let trickler = {
        let (stop, longest_ms) = (stop.clone(), longest_ms.clone());
        std::thread::spawn(move || {
            let hello = velocity::protocol::Message::Hello(velocity::protocol::Hello {
                versions: vec![1],
                client: "trickler".into(),
            })
            .to_frame();
            let open = || {
                let c = std::net::TcpStream::connect(addr).ok()?;
                c.set_nonblocking(true).ok()?;
                Some((c, 0usize, std::time::Instant::now()))
            };
            let mut conns: Vec<_> = (0..260).filter_map(|_| open()).collect();
            while !stop.load(Ordering::Relaxed) {
                for slot in conns.iter_mut() {
                    let (c, sent, since) = slot;
                    let mut buf = [0u8; 256];
                    let closed = match c.read(&mut buf) {
                        Ok(0) => true,
                        Ok(_) => false,
                        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
                    };
                    let closed = closed || c.write(&hello[*sent % hello.len()..][..1]).is_err();
                    *sent += 1;
                    if closed {
                        longest_ms.fetch_max(since.elapsed().as_millis() as u64, Ordering::Relaxed);
                        if let Some(fresh) = open() {
                            *slot = fresh;
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(300));
            }
        })
    };
    // Let the tricklers take what they can, then log in, again and again, from elsewhere.
    std::thread::sleep(Duration::from_millis(1000));
    let mut o = s.options();
    o.source = Some("127.0.0.2".parse().unwrap());
    for i in 0..20 {
        let mut c = velocity::client::Client::connect(&o, &s.alice)
            .unwrap_or_else(|e| panic!("login {i} refused while tricklers hold connections: {e}"));
        c.execute("SELECT COUNT(*) FROM kv").unwrap();
        std::thread::sleep(Duration::from_millis(200));
    }
    // A logged-in client that trickles a frame is closed at the frame deadline. (From the
    // tricklers' own address logins are refused meanwhile: that address is over its share.)
    let mut c = velocity::client::Client::connect(&o, &s.alice).unwrap();
    let frame = velocity::protocol::Message::Ping(b"slow".to_vec()).to_frame();
    let started = std::time::Instant::now();
    let mut closed = false;
    for b in &frame[..frame.len() - 1] {
        if c.send_raw(&[*b]).is_err() {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(400));
    }
    if !closed {
        c.set_timeout(Some(Duration::from_secs(10))).unwrap();
        assert!(c.read_message(4096).is_err(), "a trickled frame was never cut off");
    }
    assert!(started.elapsed() < Duration::from_secs(8), "{:?}", started.elapsed());
    stop.store(true, Ordering::Relaxed);
    trickler.join().unwrap();
    // Every trickling connection was closed by its handshake deadline (3 s), not kept alive by
    // its trickle.
    let longest = longest_ms.load(Ordering::Relaxed);
    assert!(longest > 0 && longest < 6000, "a trickling connection lived {longest} ms");
}

/// Heavy statements — a range DELETE of a million keys, COUNT and a LIKE scan over them, a
/// 100,000-row INSERT — run in slices: a client of the same core is served while each runs, and
/// the statements' results are what they were.
#[test]
fn heavy_statements_let_the_other_clients_of_their_core_in() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let s = Server::start_with(1, &["--audit", "off", "--durability", "none", "--max-payload", "8388608"]);
    let mut c = s.client();
    c.execute("INSERT INTO kv (key, value) VALUES ('a', 'probe')").unwrap();
    let insert_rows = |from: usize, n: usize| -> String {
        let rows: Vec<String> = (from..from + n).map(|i| format!("('r:{i:07}', 'v')")).collect();
        format!("INSERT INTO kv (key, value) VALUES {}", rows.join(", "))
    };
    let stmts: Vec<String> = (0..100).map(|b| insert_rows(b * 10_000, 10_000)).collect();
    assert!(c.pipeline(&stmts).unwrap().iter().all(|r| r.is_ok()));
    // While `heavy` runs on one connection, another asks for 'a' again and again: how many
    // answers come back before the heavy statement's?
    let during = |heavy: &str| -> (velocity::protocol::ResultSet, usize) {
        let mut h = s.client();
        let mut probe = s.client();
        h.send(heavy).unwrap();
        h.flush().unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let waiter = {
            let done = done.clone();
            std::thread::spawn(move || {
                let r = h.recv().unwrap().unwrap();
                done.store(true, Ordering::SeqCst);
                r
            })
        };
        let mut answered = 0;
        while !done.load(Ordering::SeqCst) {
            assert_eq!(value_of(&mut probe, "a"), Some(b"probe".to_vec()));
            if !done.load(Ordering::SeqCst) {
                answered += 1;
            }
        }
        (waiter.join().unwrap(), answered)
    };
    let (rs, n) = during("SELECT COUNT(*) FROM kv WHERE key >= 'r:'");
    assert_eq!(rs.rows, vec![vec![Value::Int(1_000_000)]]);
    assert!(n >= 3, "COUNT held the core: {n} probes answered meanwhile");
    let (rs, n) = during("SELECT key FROM kv WHERE key LIKE 'r:%x'");
    assert!(rs.rows.is_empty());
    assert!(n >= 3, "a LIKE scan held the core: {n} probes answered meanwhile");
    let (rs, n) = during("DELETE FROM kv WHERE key >= 'r:'");
    assert_eq!(rs.affected, 1_000_000);
    assert!(n >= 3, "DELETE held the core: {n} probes answered meanwhile");
    assert_eq!(c.execute("SELECT COUNT(*) FROM kv").unwrap().rows, vec![vec![Value::Int(1)]]);
    let (rs, n) = during(&insert_rows(0, 100_000));
    assert_eq!(rs.affected, 100_000);
    assert!(n >= 3, "a 100,000-row INSERT held the core: {n} probes answered meanwhile");
    assert_eq!(c.execute("SELECT COUNT(*) FROM kv").unwrap().rows, vec![vec![Value::Int(100_001)]]);
    // Long statements parsed off the core keep their order in a pipeline and their errors.
    let pad = " ".repeat(velocity::limits::STATEMENT_OFF_CORE_BYTES);
    let stmts = vec![
        format!("DELETE FROM kv WHERE key >= 'r:'{pad}"),
        "SELECT COUNT(*) FROM kv".to_string(),
        format!("SHOW STATUS{pad}"),
        format!("SELEKT 1{pad}"),
    ];
    let rs = c.pipeline(&stmts).unwrap();
    assert_eq!(rs[0].as_ref().unwrap().affected, 100_000);
    assert_eq!(rs[1].as_ref().unwrap().rows, vec![vec![Value::Int(1)]]);
    assert!(!rs[2].as_ref().unwrap().rows.is_empty());
    assert!(rs[3].is_err());
}

/// With --encryption-key-file no file under the data directory holds a key name in the clear:
/// the audit log is sealed with the data key too (older plain audit files at start), and
/// `velocityd audit` reads it back.
#[test]
fn with_encryption_the_audit_log_names_no_key_in_the_clear() {
    let keys = temp_dir("audit-key");
    let key = keys.join("k");
    let out = Command::new(bin("velocityd")).args(["keygen", "--out"]).arg(&key).output().unwrap();
    assert!(out.status.success());
    // First without encryption: a plain audit file with key names.
    let mut s = Server::start_with(1, &[]);
    s.client().execute("INSERT INTO kv (key, value) VALUES ('secret-key-early', 'v')").unwrap();
    assert!(s.terminate().success());
    let dir = s.keep_data();
    // And a file of JSON lines, as releases before the binary records wrote (shard 1's, which
    // the next start, on two cores, goes on with).
    let legacy = r#"{"ts_ms":1,"shard":1,"conn":1,"peer":"","user":"u","event":"command","kind":"insert","target":"keys 'secret-key-legacy'","rows":1,"code":"SUCCESS","latency_us":1}"#;
    std::fs::write(dir.join("audit/shard-1.log"), format!("{legacy}\n")).unwrap();
    let extra = ["--encryption-key-file", key.to_str().unwrap()];
    let mut s = Server::start_in(dir, 2, &extra);
    let mut c = s.client();
    for i in 0..50 {
        c.execute(&format!("INSERT INTO kv (key, value) VALUES ('secret-key-{i}', 'v')")).unwrap();
    }
    drop(c);
    assert!(s.terminate().success());
    let dir = s.keep_data();
    for f in files_under(&dir) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(!bytes.windows(10).any(|w| w == b"secret-key"), "{} names a key in the clear", f.display());
    }
    let read = |with_key: bool| {
        let mut cmd = Command::new(bin("velocityd"));
        cmd.args(["audit", "--data-dir"]).arg(&dir);
        if with_key {
            cmd.args(extra);
        }
        cmd.output().unwrap()
    };
    let out = read(true);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in ["secret-key-early", "secret-key-legacy", "secret-key-0", "secret-key-49"] {
        assert!(text.contains(needle), "{needle} not in the audit log:\n{text}");
    }
    assert!(text.lines().all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()), "{text}");
    let out = read(false);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--encryption-key-file"));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("secret-key"));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&keys);
}

/// kill -9, reaped at once, and an immediate restart: the dead process's listening sockets
/// outlive it by a few milliseconds (the kernel closes them once their io_uring's pending accept
/// is cancelled, with no process left to hold them). The restart waits for them instead of
/// refusing the address or joining them.
#[test]
fn a_restart_after_kill_9_and_reap_waits_for_the_orphaned_sockets() {
    let mut s = Server::start_with(2, &["--audit", "off", "--plaintext"]);
    let port = s.addr.port();
    for cycle in 0..10 {
        let dir = s.crash(); // SIGKILL and reap
        let next = Server::start_at(dir, 2, &["--audit", "off", "--plaintext"], Some(port));
        assert!(!next.log_text().contains("cannot listen"), "cycle {cycle}:\n{}", next.log_text());
        assert_eq!(next.addr.port(), port);
        s = next;
    }
}

/// A value written under a larger --max-payload than the server now runs with: a point read of
/// it (the fast path too) is refused as too large, as every other read is, instead of a reply
/// frame the client must reject; the connection goes on.
#[test]
fn a_value_larger_than_the_current_max_payload_is_refused_not_sent() {
    let args = ["--audit", "off", "--plaintext"];
    let mut s = Server::start_with(1, &[&args[..], &["--max-payload", "4194304"]].concat());
    let big = "x".repeat(2 << 20);
    s.client().execute(&format!("INSERT INTO kv (key, value) VALUES ('big', '{big}')")).unwrap();
    s.client().execute("INSERT INTO kv (key, value) VALUES ('small', 'v')").unwrap();
    assert!(s.terminate().success());
    let dir = s.keep_data();
    let s = Server::start_at(dir, 1, &[&args[..], &["--max-payload", "1048576"]].concat(), None);
    let mut c = s.client();
    for sql in ["SELECT value FROM kv WHERE key = 'big'", "SELECT value FROM kv WHERE key = 'big' LIMIT 1"] {
        let e = c.execute(sql).unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::InvalidCommand), "{sql}: {e}");
        assert!(e.to_string().contains("too large"), "{sql}: {e}");
    }
    assert_eq!(value_of(&mut c, "small"), Some(b"v".to_vec()));
}

/// `velocityd audit | head`: when the reader goes away the command stops quietly, as `cat`
/// does, instead of failing with "Broken pipe".
#[test]
fn audit_output_into_a_closed_pipe_ends_quietly() {
    use std::io::BufRead;
    let mut s = Server::start_with(1, &["--plaintext", "--durability", "none"]);
    let mut c = s.client();
    let stmts: Vec<String> =
        (0..3000).map(|i| format!("INSERT INTO kv (key, value) VALUES ('audit-{i}', 'v')")).collect();
    assert!(c.pipeline(&stmts).unwrap().iter().all(|r| r.is_ok()));
    drop(c);
    assert!(s.terminate().success());
    let dir = s.keep_data();
    let mut child = Command::new(bin("velocityd"))
        .args(["audit", "--data-dir"])
        .arg(&dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    assert!(first.contains("\"event\""), "{first}");
    // The reader is gone now (its end of the pipe was dropped with the BufReader).
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !err.contains("Broken pipe"), "{:?}: {err}", out.status);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The data directory's identity and salt are made once, by whoever comes first: a server
/// starting and `velocityd fingerprint` (or several of them) on a fresh directory at the same
/// moment all see the same key and none fails (they raced on one temporary file).
#[test]
fn concurrent_first_uses_of_a_data_dir_make_one_identity() {
    for round in 0..5 {
        let dir = temp_dir("identity-race");
        let runs: Vec<_> = (0..8)
            .map(|_| {
                Command::new(bin("velocityd"))
                    .args(["fingerprint", "--data-dir"])
                    .arg(&dir)
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let outs: Vec<_> = runs.into_iter().map(|c| c.wait_with_output().unwrap()).collect();
        for o in &outs {
            assert!(o.status.success(), "round {round}: {}", String::from_utf8_lossy(&o.stderr));
        }
        let first = &outs[0].stdout;
        assert!(outs.iter().all(|o| &o.stdout == first), "round {round}: different fingerprints");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// A client blocked on a reply (with a read timeout set) while its process is stopped and
/// continued, as a debugger or a job-control shell does, sees its read fail with EINTR: the
/// client reads again instead of failing the statement (seen once in CI as
/// "Interrupted system call" in the middle of a test).
#[test]
fn a_stop_and_continue_of_the_client_does_not_fail_its_request() {
    let s = Server::start_with(1, &["--audit", "off", "--plaintext", "--test-write-delay-ms", "400"]);
    // Its read timeout (30 s) makes the kernel end a read interrupted by a stop with EINTR.
    let mut c = s.client();
    let me = std::process::id();
    for i in 0..3 {
        // The write waits 400 ms in the server before it is logged: meanwhile this thread is
        // blocked reading its reply when another process stops and continues this one.
        let jolt = std::thread::spawn(move || {
            Command::new("sh").args(["-c", &format!("kill -STOP {me}; kill -CONT {me}")]).status().unwrap()
        });
        let r = c.execute(&format!("INSERT INTO kv (key, value) VALUES ('k{i}', 'v')"));
        assert!(jolt.join().unwrap().success());
        assert_eq!(r.unwrap().affected, 1, "round {i}");
    }
}
