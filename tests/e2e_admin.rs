//! The operator's first hour, against the real binaries: `velocityd user` and `apikey` on a
//! live data directory, `--port`, a file given as `--data-dir`, `--help`, and
//! `scripts/quickstart.sh` in a real terminal (a pseudo-terminal: Ctrl-C is the line
//! discipline's SIGINT to the foreground process group, as in any terminal emulator or tmux).

mod common;

use common::*;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use velocity::client::{ClientError, Credentials};
use velocity::protocol::ErrorCode;

fn velocityd(args: &[&str], dir: &Path, stdin: &str) -> Output {
    run_with_stdin(Command::new(bin("velocityd")).args(args).arg("--data-dir").arg(dir), stdin)
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn refused(out: &Output) -> String {
    assert!(!out.status.success(), "expected a refusal; stdout: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Retry `f` for up to 10 s: the server picks up changed user and key files within a second.
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within 10 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn password(user: &str, pw: &str) -> Credentials {
    Credentials::Password { user: user.into(), password: pw.into() }
}

/// Whether a login of `user` with `pw` is accepted (a wrong password is refused, status 1).
fn logs_in(s: &Server, user: &str, pw: &str) -> bool {
    match s.connect(&password(user, pw)) {
        Ok(_) => true,
        Err(ClientError::Auth { status: 1, .. }) => false,
        Err(e) => panic!("login of {user}: {e}"),
    }
}

fn can_write(c: &mut velocity::client::Client) -> bool {
    match c.execute("INSERT INTO kv (key, value) VALUES ('admin-test', 'w')") {
        Ok(_) => true,
        Err(e) if e.code() == Some(ErrorCode::Unauthorized) => false,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn user_add_refuses_an_existing_user_and_passwd_and_role_change_a_live_server() {
    let s = Server::start_with(1, &["--plaintext", "--audit", "off", "--login-fail-threshold", "0"]);
    let dir = s.data_dir.clone();
    let out = ok(&velocityd(&["user", "add", "bob", "--password-stdin"], &dir, "first"));
    assert!(out.contains("user bob (readwrite) added"), "{out}");
    let mut bob = eventually("bob can log in", || s.connect(&password("bob", "first")).ok());
    assert!(can_write(&mut bob));

    // Another password: refused, nothing written, the old password still works.
    let before = std::fs::read(dir.join("users")).unwrap();
    let err = refused(&velocityd(&["user", "add", "bob", "--password-stdin"], &dir, "second"));
    assert!(err.contains("user bob already exists") && err.contains("another password"), "{err}");
    assert!(
        err.contains("user passwd bob") && err.contains("user role bob") && err.contains("--force"),
        "{err}"
    );
    let err =
        refused(&velocityd(&["user", "add", "bob", "--role", "readonly", "--password-stdin"], &dir, "x"));
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(std::fs::read(dir.join("users")).unwrap(), before);
    // The same password again: nothing to do, and nothing is rewritten.
    let out = ok(&velocityd(&["user", "add", "bob", "--password-stdin"], &dir, "first"));
    assert!(out.contains("already exists with this password; nothing changed"), "{out}");
    assert_eq!(std::fs::read(dir.join("users")).unwrap(), before);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(logs_in(&s, "bob", "first") && !logs_in(&s, "bob", "second"));

    // `user role` reaches the open session from its next request, both ways.
    let out = ok(&velocityd(&["user", "role", "bob", "readonly"], &dir, ""));
    assert!(out.contains("user bob is now readonly"), "{out}");
    eventually("bob's session becomes readonly", || (!can_write(&mut bob)).then_some(()));
    assert!(bob.execute("SELECT value FROM kv WHERE key = 'admin-test'").is_ok());
    assert!(ok(&velocityd(&["user", "list"], &dir, "")).contains("bob\treadonly"));
    let out = ok(&velocityd(&["user", "role", "bob", "readonly"], &dir, ""));
    assert!(out.contains("already readonly; nothing changed"), "{out}");
    ok(&velocityd(&["user", "role", "bob", "readwrite"], &dir, ""));
    eventually("bob's session can write again", || can_write(&mut bob).then_some(()));

    // Changes in quick succession (within one tick of the file system's clock) all arrive:
    // the server sees the last one.
    for role in ["readonly", "readwrite", "readonly"] {
        ok(&velocityd(&["user", "role", "bob", role], &dir, ""));
    }
    eventually("the last of three quick role changes applies", || (!can_write(&mut bob)).then_some(()));
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!can_write(&mut bob), "a later reload undid the last role change");
    ok(&velocityd(&["user", "role", "bob", "readwrite"], &dir, ""));

    // The same password with --role / --rate-limit: applies only those, and says so.
    let out =
        ok(&velocityd(&["user", "add", "bob", "--rate-limit", "1000", "--password-stdin"], &dir, "first"));
    assert!(out.contains("changed rate limit none -> 1000:1000"), "{out}");
    assert!(
        ok(&velocityd(&["user", "list"], &dir, "")).contains("bob\treadwrite\trate 1000 ops/s, burst 1000")
    );

    // `user passwd`: new logins need the new password; role, rate limit and open sessions stay.
    let out = ok(&velocityd(&["user", "passwd", "bob", "--password-stdin"], &dir, "second\n"));
    assert!(out.contains("password of user bob changed"), "{out}");
    eventually("the new password works", || logs_in(&s, "bob", "second").then_some(()));
    assert!(!logs_in(&s, "bob", "first"));
    assert!(
        ok(&velocityd(&["user", "list"], &dir, "")).contains("bob\treadwrite\trate 1000 ops/s, burst 1000")
    );
    assert!(can_write(&mut bob), "the open session ended");

    // --force replaces the user: password, role and rate limit.
    let out = ok(&velocityd(
        &["user", "add", "bob", "--force", "--role", "readonly", "--password-stdin"],
        &dir,
        "third",
    ));
    assert!(out.contains("user bob (readonly) replaced"), "{out}");
    eventually("the replaced user's password works", || logs_in(&s, "bob", "third").then_some(()));
    assert!(!logs_in(&s, "bob", "second"));
    assert!(ok(&velocityd(&["user", "list"], &dir, "")).contains("bob\treadonly\tno rate limit"));

    // No such user.
    assert!(refused(&velocityd(&["user", "passwd", "nobody", "--password-stdin"], &dir, "pw"))
        .contains("no user nobody"));
    assert!(refused(&velocityd(&["user", "role", "nobody", "readonly"], &dir, "")).contains("no user nobody"));
    assert!(refused(&velocityd(&["user", "passwd", "bob", "--password-stdin"], &dir, "")).contains("empty"));
    // Others were never touched.
    assert!(can_write(&mut s.client()));
}

/// Commands that change users or keys at the same time on one directory all take effect: each
/// reads and replaces the file under a lock, instead of the last writer undoing the others.
#[test]
fn concurrent_user_commands_lose_nothing() {
    let dir = temp_dir("concurrent");
    let children: Vec<_> = (0..6)
        .map(|i| {
            let mut c = Command::new(bin("velocityd"))
                .args(["user", "add", &format!("u{i}"), "--password-stdin", "--data-dir"])
                .arg(&dir)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            c.stdin.take().unwrap().write_all(format!("pw{i}").as_bytes()).unwrap();
            c
        })
        .collect();
    let keys: Vec<_> = (0..4)
        .map(|_| {
            Command::new(bin("velocityd"))
                .args(["apikey", "create", "--user", "u0", "--data-dir"])
                .arg(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    for mut k in keys {
        k.wait().unwrap(); // u0 may not exist yet when a key is made: those are refused
    }
    let list = ok(&velocityd(&["user", "list"], &dir, ""));
    for i in 0..6 {
        assert!(list.contains(&format!("u{i}\treadwrite")), "{list}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The civil date of RFC 3339 `s` (UTC, seconds) back in seconds since 1970.
fn parse_rfc3339(s: &str) -> u64 {
    let b = s.as_bytes();
    assert!(s.len() == 20 && b[4] == b'-' && b[7] == b'-' && b[10] == b'T' && b[19] == b'Z', "{s}");
    let n = |r: std::ops::Range<usize>| s[r].parse::<i64>().unwrap();
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let days = 365 * y + y / 4 - y / 100 + y / 400 + (153 * m + 2) / 5 + d - 1 - 719_468;
    (days * 86_400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19)) as u64
}

#[test]
fn apikey_list_shows_rfc3339_times() {
    let dir = temp_dir("apikeys");
    add_user(&dir, "alice", PASSWORD, "readwrite");
    let key = ok(&velocityd(&["apikey", "create", "--user", "alice"], &dir, ""));
    let id = key.trim().split('_').nth(1).unwrap().to_string();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let list = ok(&velocityd(&["apikey", "list"], &dir, ""));
    let line = list.lines().find(|l| l.starts_with(&id)).unwrap_or_else(|| panic!("{list}"));
    let fields: Vec<&str> = line.split('\t').collect();
    assert_eq!(fields[..2], [id.as_str(), "alice"], "{line}");
    let created = fields[2].strip_prefix("created ").unwrap_or_else(|| panic!("{line}"));
    assert!(parse_rfc3339(created).abs_diff(now) <= 5, "{created} is not about now ({now})");
    // The same instant as the file holds.
    let stored = std::fs::read_to_string(dir.join("apikeys")).unwrap();
    let unix: u64 =
        stored.lines().find(|l| l.starts_with(&id)).unwrap().rsplit('\t').next().unwrap().parse().unwrap();
    assert_eq!(parse_rfc3339(created), unix);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Start velocityd with `args` on `dir` and wait until alice can log in on `port`.
fn serve(dir: &Path, args: &[&str], port: u16) -> std::process::Child {
    let mut child = Command::new(bin("velocityd"))
        .args(["--cores", "1", "--plaintext", "--audit", "off", "--data-dir"])
        .arg(dir)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut o = velocity::client::ConnectOptions::new("127.0.0.1", port);
    o.tls = false;
    o.trust = velocity::client::trust::Trust {
        known_hosts: Some(dir.with_extension("known_hosts")),
        new_host: velocity::client::trust::NewHost::Accept,
        pinned: None,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(child.try_wait().unwrap().is_none(), "velocityd {args:?} exited");
        if let Ok(mut c) = velocity::client::Client::connect(&o, &password("alice", PASSWORD)) {
            c.execute("SELECT COUNT(*) FROM kv").unwrap();
            return child;
        }
        assert!(Instant::now() < deadline, "velocityd {args:?} did not serve on port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn port_is_the_port_part_of_listen() {
    let dir = temp_dir("port");
    add_user(&dir, "alice", PASSWORD, "readwrite");
    for args in [vec!["--port"], vec!["--listen", "127.0.0.1", "--port"]] {
        let port = free_port();
        let p = port.to_string();
        let args: Vec<&str> = args.into_iter().chain([p.as_str()]).collect();
        let mut child = serve(&dir, &args, port);
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        assert!(child.wait().unwrap().success());
    }
    // The port given twice, differently: refused, naming both.
    let (status, err) = start_expecting_refusal(&dir, &["--port", "7412"]);
    assert!(!status.success());
    assert!(err.contains("--port 7412 disagrees") && err.contains("127.0.0.1:0"), "{err}");
    let help = ok(&Command::new(bin("velocityd")).arg("--help").output().unwrap());
    assert!(
        help.contains("--port <PORT>") && help.contains("shorthand for the port part of --listen"),
        "{help}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(dir.with_extension("known_hosts"));
}

#[test]
fn a_file_as_data_dir_is_not_a_directory() {
    let dir = temp_dir("notadir");
    let file = dir.join("velocity-data");
    std::fs::write(&file, "not a directory").unwrap();
    let f = file.to_str().unwrap();
    for (args, stdin) in [
        (vec!["user", "add", "alice", "--password-stdin", "--data-dir", f], "pw"),
        (vec!["user", "passwd", "alice", "--password-stdin", "--data-dir", f], "pw"),
        (vec!["user", "role", "alice", "readonly", "--data-dir", f], ""),
        (vec!["user", "list", "--data-dir", f], ""),
        (vec!["user", "remove", "alice", "--data-dir", f], ""),
        (vec!["apikey", "create", "--user", "alice", "--data-dir", f], ""),
        (vec!["apikey", "list", "--data-dir", f], ""),
        (vec!["apikey", "revoke", "00000000", "--data-dir", f], ""),
        (vec!["fingerprint", "--data-dir", f], ""),
        (vec!["audit", "--data-dir", f], ""),
        (vec!["repair", "--data-dir", f], ""),
        (vec!["--listen", "127.0.0.1:0", "--data-dir", f], ""),
    ] {
        let out = run_with_stdin(Command::new(bin("velocityd")).args(&args), stdin);
        let err = refused(&out);
        assert!(err.contains(&format!("{f} is not a directory")), "{args:?}: {err}");
        assert!(!err.contains("File exists") && !err.contains("os error"), "{args:?}: {err}");
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "not a directory");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn help_of_user_and_apikey_says_they_work_on_a_live_data_directory() {
    for args in [
        &["user", "--help"][..],
        &["user", "add", "--help"],
        &["user", "passwd", "--help"],
        &["user", "role", "--help"],
        &["user", "list", "--help"],
        &["user", "remove", "--help"],
        &["apikey", "--help"],
        &["apikey", "create", "--help"],
        &["apikey", "list", "--help"],
        &["apikey", "revoke", "--help"],
    ] {
        let help = ok(&Command::new(bin("velocityd")).args(args).output().unwrap());
        assert!(
            help.contains("Works on the data directory of a running server too")
                && help.contains("within a second, without a restart"),
            "{args:?}:\n{help}"
        );
    }
    let top = ok(&Command::new(bin("velocityd")).args(["user", "--help"]).output().unwrap());
    for sub in ["add", "passwd", "role", "list", "remove"] {
        assert!(top.lines().any(|l| l.trim_start().starts_with(sub)), "{top}");
    }
    let add = ok(&Command::new(bin("velocityd")).args(["user", "add", "--help"]).output().unwrap());
    assert!(add.contains("--force") && add.contains("refused"), "{add}");
}

// ---- scripts/quickstart.sh in a terminal ----

/// A pseudo-terminal pair: the master (our side, as a terminal emulator's) and the slave's path.
fn open_pty() -> (std::fs::File, PathBuf) {
    use std::os::unix::io::FromRawFd;
    // SAFETY: plain libc calls on a descriptor we own; ptsname_r writes into our buffer.
    unsafe {
        let fd = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        assert!(fd >= 0, "posix_openpt: {}", std::io::Error::last_os_error());
        assert_eq!(libc::grantpt(fd), 0);
        assert_eq!(libc::unlockpt(fd), 0);
        let mut name = [0 as libc::c_char; 128];
        assert_eq!(libc::ptsname_r(fd, name.as_mut_ptr(), name.len()), 0);
        let path = std::ffi::CStr::from_ptr(name.as_ptr()).to_str().unwrap().to_owned();
        (std::fs::File::from_raw_fd(fd), PathBuf::from(path))
    }
}

struct Quickstart {
    child: std::process::Child,
    master: std::fs::File,
    screen: Arc<Mutex<Vec<u8>>>,
    /// Copies the terminal into `screen` until every process has closed it.
    reader: std::thread::JoinHandle<()>,
    port: u16,
    dir: PathBuf,
}

impl Quickstart {
    /// scripts/quickstart.sh as a terminal's foreground job: its own session, with the
    /// pseudo-terminal as controlling terminal, so the terminal's Ctrl-C reaches its process group.
    /// `cargo` is a stand-in that records how it was called (the binaries are built already).
    fn start() -> Quickstart {
        let dir = temp_dir("quickstart");
        let home = dir.join("home");
        std::fs::create_dir_all(&home).unwrap();
        let fake_cargo = dir.join("cargo");
        std::fs::write(
            &fake_cargo,
            format!("#!/bin/sh\necho \"$@\" >> '{}'\n", dir.join("cargo.args").display()),
        )
        .unwrap();
        std::fs::set_permissions(&fake_cargo, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        // target/release/velocityd → target
        let target = bin("velocityd").parent().unwrap().parent().unwrap().to_path_buf();
        let (master, slave) = open_pty();
        let tty = || std::fs::OpenOptions::new().read(true).write(true).open(&slave).unwrap();
        let port = free_port();
        let mut cmd = Command::new("bash");
        cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/quickstart.sh"))
            .env("HOME", &home)
            .env("DATA_DIR", dir.join("data"))
            .env("LISTEN", format!("127.0.0.1:{port}"))
            .env("CORES", "1")
            .env("VELOCITY_PASSWORD", PASSWORD)
            .env("CARGO", &fake_cargo)
            .env("CARGO_TARGET_DIR", &target)
            .env("TERM", "xterm")
            .stdin(tty())
            .stdout(tty())
            .stderr(tty());
        // SAFETY: setsid and ioctl are async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
        let screen = Arc::new(Mutex::new(Vec::new()));
        let (mut reader, sink) = (master.try_clone().unwrap(), screen.clone());
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // EIO once every process has closed the terminal.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Quickstart { child, master, screen, reader, port, dir }
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.screen.lock().unwrap()).into_owned()
    }

    fn wait_for(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.screen().contains(text) {
            assert!(Instant::now() < deadline, "no {text:?} on the terminal:\n{}", self.screen());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // The exit status alone is not enough: what the server wrote last (its "stopped"
            // line) may still be in the terminal's buffer, not yet copied to the screen.
            if let Some(st) = self.child.try_wait().unwrap() {
                if self.reader.is_finished() {
                    return st;
                }
            }
            assert!(
                Instant::now() < deadline,
                "quickstart did not exit, or left its terminal open:\n{}",
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Quickstart {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn quickstart_builds_everything_and_ctrl_c_in_its_terminal_stops_velocityd_cleanly() {
    let mut q = Quickstart::start();
    q.wait_for("Ctrl-C stops the server.");
    let screen = q.screen();
    assert!(screen.contains(" user:1 | alice"), "the demo did not run:\n{screen}");
    assert!(screen.contains("velocityd starting"), "{screen}");
    let bench_hint = format!("velocity-bench --port {} -u admin", q.port);
    assert!(screen.contains(&bench_hint) && screen.contains("--workload mixed:90"), "{screen}");
    assert!(screen.contains(&format!("VELOCITY_PORT={}", q.port)), "{screen}");
    let built = std::fs::read_to_string(q.dir.join("cargo.args")).unwrap();
    for b in ["velocityd", "velocity-cli", "velocity-bench"] {
        assert!(built.contains(&format!("--bin {b}")), "quickstart does not build {b}: {built}");
    }
    q.master.write_all(b"\x03").unwrap();
    let status = q.wait_exit();
    let screen = q.screen();
    assert_eq!(status.code(), Some(0), "Ctrl-C: {status:?}\n{screen}");
    assert!(screen.contains("shutting down") && screen.contains("velocityd stopped"), "{screen}");
    assert_eq!(screen.matches("shutting down").count(), 1, "{screen}");
    assert!(std::net::TcpStream::connect(("127.0.0.1", q.port)).is_err(), "still listening");
}

/// `kill PID` of the script is one SIGTERM to the server (the script's PID becomes velocityd's).
#[test]
fn quickstart_stops_cleanly_on_sigterm_to_its_pid() {
    let mut q = Quickstart::start();
    q.wait_for("Ctrl-C stops the server.");
    unsafe { libc::kill(q.child.id() as i32, libc::SIGTERM) };
    let status = q.wait_exit();
    let screen = q.screen();
    assert_eq!(status.code(), Some(0), "SIGTERM: {status:?}\n{screen}");
    assert!(screen.contains("velocityd stopped"), "{screen}");
}
