//! velocity-cli's interactive shell through a real terminal: the CLI runs on a pseudo-terminal
//! (posix_openpt, as its controlling terminal), so rustyline edits in raw mode, Tab completes
//! and the password prompt turns echo off, exactly as for a person. No external program
//! (tmux, expect, script) is needed, so nothing is skipped on a bare machine.
//!
//! Every step waits for text the shell prints (its prompt, a result) before typing on; a
//! deadline only turns a hang into a failure that shows the screen.

mod common;

use common::*;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(30);
const PROMPT: &str = "velocity> ";

/// What the terminal shows, in order, without escape sequences or carriage returns.
fn clean(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => match chars.next() {
                // CSI: parameters and intermediates, then one final byte.
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('\x40'..='\x7e').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC: up to BEL or ESC \.
                Some(']') => {
                    while let Some(c) = chars.next() {
                        if c == '\x07' || (c == '\x1b' && chars.next_if_eq(&'\\').is_some()) {
                            break;
                        }
                    }
                }
                _ => {}
            },
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// The CLI on a pseudo-terminal.
struct Term {
    child: Child,
    master: std::fs::File,
    out: Arc<(Mutex<Vec<u8>>, Condvar)>,
    /// How much of the cleaned output `expect` has consumed.
    seen: usize,
}

impl Term {
    fn spawn(mut cmd: Command) -> Term {
        // SAFETY: plain libc calls on descriptors this function owns; checked one by one.
        let (master, slave) = unsafe {
            let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
            assert!(m >= 0, "posix_openpt: {}", std::io::Error::last_os_error());
            assert_eq!(libc::grantpt(m), 0, "grantpt");
            assert_eq!(libc::unlockpt(m), 0, "unlockpt");
            let mut name = [0 as libc::c_char; 128];
            assert_eq!(libc::ptsname_r(m, name.as_mut_ptr(), name.len()), 0, "ptsname_r");
            let s = libc::open(name.as_ptr(), libc::O_RDWR | libc::O_NOCTTY);
            assert!(s >= 0, "open the terminal: {}", std::io::Error::last_os_error());
            let ws = libc::winsize { ws_row: 50, ws_col: 200, ws_xpixel: 0, ws_ypixel: 0 };
            assert_eq!(libc::ioctl(s, libc::TIOCSWINSZ, &ws), 0, "TIOCSWINSZ");
            (std::fs::File::from_raw_fd(m), OwnedFd::from_raw_fd(s))
        };
        cmd.stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave))
            .env("TERM", "xterm");
        // SAFETY: setsid and ioctl are async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                // A session of its own with the terminal as its controlling one: /dev/tty works.
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("start velocity-cli");
        // The Command holds the terminal's other ends: dropped, the reader sees the end when
        // the CLI exits.
        drop(cmd);
        let out = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let (mut r, sink) = (master.try_clone().unwrap(), out.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.0.lock().unwrap().extend_from_slice(&buf[..n]);
                sink.1.notify_all();
            }
        });
        Term { child, master, out, seen: 0 }
    }

    fn screen(&self) -> String {
        clean(&self.out.0.lock().unwrap())
    }

    fn send(&mut self, keys: &str) {
        self.master.write_all(keys.as_bytes()).unwrap();
        self.master.flush().unwrap();
    }

    /// Wait until `text` shows after what earlier calls consumed; return the output up to and
    /// including it, and consume that.
    fn expect(&mut self, text: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        let (lock, cv) = &*self.out;
        let mut raw = lock.lock().unwrap();
        loop {
            let screen = clean(&raw);
            if let Some(i) = screen.get(self.seen..).and_then(|s| s.find(text)) {
                let end = self.seen + i + text.len();
                let got = screen[self.seen..end].to_owned();
                self.seen = end;
                return got;
            }
            let now = Instant::now();
            if now >= deadline {
                drop(raw);
                panic!("no {text:?} on the terminal after {DEADLINE:?}; it shows:\n{}", self.screen());
            }
            raw = cv.wait_timeout(raw, deadline - now).unwrap().0;
        }
    }

    /// Type a line, then wait for the next prompt: what the shell printed in between.
    fn line(&mut self, keys: &str) -> String {
        self.send(keys);
        self.send("\r");
        self.expect(PROMPT)
    }

    /// Type a line with Tabs in it, wait for `marker` in what it prints, then for the next
    /// prompt; all of it.
    fn typed(&mut self, keys: &str, marker: &str) -> String {
        self.send(keys);
        self.send("\r");
        let out = self.expect(marker);
        out + &self.expect(PROMPT)
    }

    fn wait(mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("velocity-cli did not exit; the terminal shows:\n{}", self.screen());
            }
            // Exit is not announced on the terminal: poll the process (not a synchronisation
            // sleep: nothing is typed after it).
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Term {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn shell_cmd(s: &Server, home: &std::path::Path, password_env: bool) -> Command {
    let mut cmd = Command::new(bin("velocity-cli"));
    cmd.args(["-h", "127.0.0.1", "-p", &s.addr.port().to_string(), "-U", "alice", "--accept-new-host"])
        .arg("--known-hosts")
        .arg(s.known_hosts())
        .env("HOME", home)
        .env_remove("VELOCITY_PASSWORD")
        .env_remove("VELOCITY_API_KEY");
    if password_env {
        cmd.env("VELOCITY_PASSWORD", PASSWORD);
    }
    cmd
}

/// The shell on a terminal, logged in, at its first prompt.
fn shell(s: &Server) -> (Term, std::path::PathBuf) {
    let home = temp_dir("home");
    let mut t = Term::spawn(shell_cmd(s, &home, true));
    let banner = t.expect(PROMPT);
    assert!(banner.contains("connected to velocityd/"), "{banner}");
    assert!(banner.contains("Type \"help\" for help, \\q to quit."), "{banner}");
    (t, home)
}

fn quit(mut t: Term, home: std::path::PathBuf) {
    t.send("\\q\r");
    let st = t.wait();
    assert!(st.success(), "exit status {st:?}");
    let _ = std::fs::remove_dir_all(home);
}

#[test]
fn terminal_help_where_psql_and_redis_users_look_for_it() {
    let s = Server::start(1);
    let (mut t, home) = shell(&s);
    let out = t.line("help");
    assert!(out.contains("You are using velocity-cli"), "{out}");
    assert!(out.contains("\\? for help with velocity-cli commands"), "{out}");
    assert!(out.contains("\\h for help with SQL statements"), "{out}");
    assert!(!out.contains("      ... "), "help is no continuation line: {out}");

    let out = t.line("\\?");
    for cmd in [
        "\\h [STATEMENT]",
        "\\q",
        "\\x [on|off|auto]",
        "\\timing [on|off]",
        "\\conninfo",
        "\\stats",
        "\\g",
        "\\r",
    ] {
        assert!(out.contains(cmd), "\\? does not list {cmd}: {out}");
    }
    assert!(out.contains("-- starts a comment"), "{out}");

    let out = t.line("\\h");
    assert!(out.contains("Available help:"), "{out}");
    for st in ["SELECT", "INSERT", "UPDATE", "DELETE", "SHOW STATS", "SHOW STATUS"] {
        assert!(out.contains(st), "\\h does not list {st}: {out}");
    }
    let out = t.line("\\h insert");
    assert!(out.contains("Statement:   INSERT"), "{out}");
    assert!(out.contains("INSERT INTO kv (key, value [, ttl]) VALUES"), "{out}");
    assert!(out.contains("INSERT INTO kv (key, value) VALUES ('user:1', 'alice');"), "{out}");
    let out = t.line("\\help SELECT");
    assert!(out.contains("Statement:   SELECT") && out.contains("ORDER BY key [ ASC | DESC ]"), "{out}");
    let out = t.line("help update");
    assert!(out.contains("Statement:   UPDATE"), "{out}");
    let out = t.line("\\h drop");
    assert!(out.contains("No help available for \"drop\""), "{out}");
    let out = t.line("\\nope");
    assert!(out.contains("invalid command \\nope. Try \\? for help."), "{out}");

    // A Redis command is answered with its SQL, and not run.
    let out = t.line("SET user:1 alice");
    assert!(out.contains("Velocity speaks SQL"), "{out}");
    assert!(out.contains("INSERT INTO kv (key, value) VALUES ('user:1', 'alice');"), "{out}");
    assert_eq!(value_of(&mut s.client(), "user:1"), None);
    let out = t.line("GET user:1");
    assert!(out.contains("SELECT value FROM kv WHERE key = 'user:1';"), "{out}");
    quit(t, home);
}

#[test]
fn terminal_tab_completes_keywords_and_commands() {
    let s = Server::start(1);
    s.client().execute("INSERT INTO kv (key, value) VALUES ('k1', 'v1')").unwrap();
    let (mut t, home) = shell(&s);
    // Keys are read in order: each Tab completes before the next key is taken. A completion
    // redraws the line, prompt included: wait for the result, then for the next prompt.
    let out = t.typed("sel\t* fr\tkv wh\tkey = 'k1';", "(1 row)");
    assert!(out.contains("select * from kv where key = 'k1';"), "{out}");
    assert!(out.contains(" k1  | v1"), "{out}");
    let out = t.typed("SEL\tCOU\tFROM KV;", "(1 row)");
    assert!(out.contains("SELECT COUNT(*) FROM KV;"), "{out}");
    let out = t.typed("\\tim\toff", "Timing is off.");
    assert!(out.contains("\\timing off"), "{out}");
    let out = t.typed("\\x a\t", "Expanded display is used automatically.");
    assert!(out.contains("\\x auto"), "{out}");
    t.typed("\\h ins\t", "Statement:   INSERT");
    // Nothing is completed inside a literal.
    t.typed("SELECT value FROM kv WHERE key = 'sel\t';", "ERROR: KEY_NOT_FOUND");
    quit(t, home);
}

#[test]
fn terminal_statements_end_at_a_semicolon_outside_literals_and_comments() {
    let s = Server::start(1);
    let mut c = s.client();
    c.execute("INSERT INTO kv (key, value) VALUES ('a;b', 'semi'), ('multi\nline', 'ml')").unwrap();
    let (mut t, home) = shell(&s);
    const MORE: &str = "      ... ";
    t.send("SELECT key, value FROM kv -- not the end;\r");
    t.expect(MORE);
    t.send("WHERE key = 'a;b' /* ; nor this */\r");
    t.expect(MORE);
    t.send("/* open\r");
    t.expect("     *... ");
    t.send("still a comment; */ ;\r");
    let out = t.expect(PROMPT);
    assert!(out.contains(" a;b | semi"), "{out}");
    assert!(out.contains("(1 row)") && out.contains("Time: "), "{out}");

    t.send("SELECT value FROM kv WHERE key = 'multi\r");
    t.expect("     '... ");
    let out = t.line("line';");
    assert!(out.contains(" ml"), "{out}");

    // Two statements on a line, a trailing comment after the last.
    let out = t.line("SELECT value FROM kv WHERE key = 'a;b'; SELECT COUNT(*) FROM kv; -- done");
    assert!(out.contains(" semi") && out.contains(" 2"), "{out}");

    // Ctrl-C forgets the statement begun; \p shows it, \r clears it, \g runs it.
    t.send("SELECT oops\r");
    t.expect(MORE);
    t.send("\x03");
    t.expect(PROMPT);
    let out = t.line("\\p");
    assert!(out.contains("Query buffer is empty."), "{out}");
    t.send("SELECT COUNT(*)\r");
    t.expect(MORE);
    t.send("\\p\r");
    t.expect("SELECT COUNT(*)\n");
    t.expect(MORE);
    t.send("FROM kv\r");
    t.expect(MORE);
    let out = t.line("\\g");
    assert!(out.contains(" 2\n") && out.contains("(1 row)"), "{out}");
    t.send("DELETE FROM kv\r");
    t.expect(MORE);
    let out = t.line("\\r");
    assert!(out.contains("Query buffer reset (cleared)."), "{out}");
    assert_eq!(c.execute("SELECT COUNT(*) FROM kv").unwrap().rows[0][0], velocity::protocol::Value::Int(2));
    // An error keeps the shell going.
    let out = t.line("SELECT value FORM kv;");
    assert!(out.contains("ERROR: INVALID_COMMAND: at byte 13"), "{out}");
    assert!(out.contains("LINE 1: SELECT value FORM kv\n                     ^"), "{out}");
    quit(t, home);
}

#[test]
fn terminal_expanded_display_and_timing() {
    let s = Server::start(1);
    let big = "x".repeat(5000);
    s.client()
        .execute(&format!("INSERT INTO kv (key, value) VALUES ('big', '{big}'), ('small', 's')"))
        .unwrap();
    let (mut t, home) = shell(&s);
    let out = t.line("SELECT key, value FROM kv WHERE key = 'big';");
    assert!(out.contains("… (5000 bytes)") && !out.contains(&big), "{out}");
    assert!(out.contains("Time: ") && out.contains(" ms"), "{out}");

    let out = t.line("\\timing");
    assert!(out.contains("Timing is off."), "{out}");
    let out = t.line("\\x");
    assert!(out.contains("Expanded display is on."), "{out}");
    let out = t.line("SELECT key, value FROM kv WHERE key = 'big';");
    assert!(out.contains("-[ RECORD 1 ]"), "{out}");
    assert!(out.contains("key   | big\n"), "{out}");
    assert!(out.contains(&format!("value | {big}\n")), "the whole value: {out}");
    assert!(!out.contains("Time: "), "{out}");

    // auto: a table when it fits, records when it would cut a value.
    t.line("\\x auto");
    let out = t.line("SELECT key, value FROM kv WHERE key = 'small';");
    assert!(out.contains(" small | s") && !out.contains("RECORD"), "{out}");
    let out = t.line("SELECT key, value FROM kv ORDER BY key;");
    assert!(out.contains("-[ RECORD 2 ]") && out.contains(&big), "{out}");
    let out = t.line("\\x off");
    assert!(out.contains("Expanded display is off."), "{out}");
    let out = t.line("\\timing on");
    assert!(out.contains("Timing is on."), "{out}");
    let out = t.line("\\conninfo");
    assert!(out.contains("as user \"alice\", over TLS 1.3"), "{out}");
    let out = t.line("\\status");
    assert!(out.contains(" alice"), "{out}");
    quit(t, home);
}

#[test]
fn terminal_password_prompt_does_not_echo() {
    let s = Server::start(1);
    let home = temp_dir("home");
    let mut t = Term::spawn(shell_cmd(&s, &home, false));
    t.expect("password: ");
    t.send(&format!("{PASSWORD}\r"));
    let out = t.expect(PROMPT);
    assert!(out.contains("connected to velocityd/"), "{out}");
    let out = t.line("\\conninfo");
    assert!(out.contains("as user \"alice\""), "{out}");
    assert!(!t.screen().contains(PASSWORD), "the password was echoed:\n{}", t.screen());
    // Ctrl-D at an empty prompt leaves, as in psql.
    t.send("\x04");
    let st = t.wait();
    assert!(st.success(), "{st:?}");
    let _ = std::fs::remove_dir_all(home);
}

/// The interactive shell keeps its history as it goes, not only on a clean exit: a session
/// that ends badly (a crash, a lost terminal) still has the statements it ran.
#[test]
fn shell_saves_history_after_each_statement() {
    let s = Server::start(1);
    s.client()
        .execute(&format!("INSERT INTO kv (key, value) VALUES ('big', '{}')", "y".repeat(70_000)))
        .unwrap();
    let (mut t, home) = shell(&s);
    let out = t.line("SELECT key, value FROM kv WHERE key = 'big';");
    assert!(out.contains("… (70000 bytes)"), "{out}");
    // Saved before it ran; the shell is still running, waiting at its prompt.
    assert!(t.child.try_wait().unwrap().is_none());
    let history = std::fs::read_to_string(home.join(".velocity_history")).unwrap_or_default();
    assert!(history.contains("SELECT key, value FROM kv WHERE key = 'big';"), "{history:?}");
    // A statement over lines is one entry.
    t.send("SELECT COUNT(*)\r");
    t.expect("      ... ");
    t.line("FROM kv;");
    let history = std::fs::read_to_string(home.join(".velocity_history")).unwrap_or_default();
    assert!(
        history.contains("SELECT COUNT(*)\\nFROM kv;") || history.contains("SELECT COUNT(*)\nFROM kv;"),
        "{history:?}"
    );
    quit(t, home);
}
