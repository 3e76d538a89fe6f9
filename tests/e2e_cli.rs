//! velocity-cli in `-c` and `--json` modes against a real server.

mod common;

use common::*;
use std::process::{Command, Output};

fn cli(s: &Server, password: &str, args: &[&str]) -> Output {
    let port = s.addr.port().to_string();
    run_with_stdin(
        Command::new(bin("velocity-cli"))
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port,
                "-u",
                "alice",
                "--password-stdin",
                "--accept-new-host",
            ])
            .arg("--known-hosts")
            .arg(s.known_hosts())
            .args(args),
        password,
    )
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn command_mode_prints_tables_and_fails_on_errors() {
    let s = Server::start(2);
    let out = cli(&s, PASSWORD, &["-c", "INSERT INTO kv (key, value) VALUES ('user:1', 'alice'), ('user:2', 'bob'); SELECT key, value FROM kv WHERE key LIKE 'user:%'"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("OK, 2 rows affected"), "{stdout}");
    assert!(stdout.contains(" key    | value"), "{stdout}");
    assert!(stdout.contains(" user:2 | bob"), "{stdout}");
    assert!(stdout.contains("(2 rows)"), "{stdout}");

    let out = cli(&s, PASSWORD, &["-c", "SELECT value FROM kv WHERE key = 'missing'"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("KEY_NOT_FOUND"), "{}", text(&out.stderr));

    let out = cli(&s, PASSWORD, &["-c", "SELEKT"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("INVALID_COMMAND: at byte 0"), "{}", text(&out.stderr));

    let out = cli(&s, "wrong password", &["-c", "SHOW STATUS"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("login failed"), "{}", text(&out.stderr));

    let out = cli(&s, PASSWORD, &["-c", "\\status"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains(" shards "), "{}", text(&out.stdout));
}

#[test]
fn json_mode_prints_one_object_per_row() {
    let s = Server::start(1);
    let out = cli(&s, PASSWORD, &["--json", "-c", "INSERT INTO kv (key, value, ttl) VALUES ('a', 'x', 100), ('b', X'ff00', NULL); SELECT key, value, ttl FROM kv ORDER BY key"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> =
        text(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines[0], serde_json::json!({"affected": 2}));
    assert_eq!(lines[1], serde_json::json!({"key": "a", "value": "x", "ttl": 100}));
    assert_eq!(lines[2], serde_json::json!({"key": "b", "value": {"hex": "ff00"}, "ttl": null}));
    // Column order follows the statement.
    assert!(text(&out.stdout).lines().nth(1).unwrap().starts_with("{\"key\""));
}

/// Table mode on values far wider than a terminal: a 100 KiB value used to panic the CLI
/// (Rust's formatting width is limited to u16, and `{v:<w$}` took the value's length), binary
/// values must not reach the terminal raw, and `--json` still prints every byte.
#[test]
fn table_mode_cuts_long_and_binary_values() {
    let s = Server::start(1);
    let big = "x".repeat(100 << 10);
    let mut c = s.client();
    c.execute(&format!("INSERT INTO kv (key, value) VALUES ('big', '{big}')")).unwrap();
    // ESC [ 2 J (clear screen), NUL, an invalid UTF-8 byte, then 80 KiB more.
    c.execute(&format!(
        "INSERT INTO kv (key, value) VALUES ('bin', X'1b5b324a00ff{}')",
        "41".repeat(80 << 10)
    ))
    .unwrap();
    // 60 wide characters: 120 terminal columns, 180 bytes.
    c.execute(&format!("INSERT INTO kv (key, value) VALUES ('wide', '{}')", "表".repeat(60))).unwrap();

    let out = cli(&s, PASSWORD, &["-c", "SELECT key, value FROM kv WHERE key = 'big'"]);
    assert!(out.status.success(), "status {:?}: {}", out.status, text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains(" big | xxxxxxxx"), "{stdout}");
    assert!(stdout.contains("… (102400 bytes)"), "{stdout}");
    assert!(stdout.contains("(1 row)"), "{stdout}");
    assert!(stdout.lines().all(|l| l.chars().count() <= 200), "{stdout}");

    let out =
        cli(&s, PASSWORD, &["-c", "SELECT key, value FROM kv WHERE key IN ('bin', 'wide') ORDER BY key"]);
    assert!(out.status.success(), "status {:?}: {}", out.status, text(&out.stderr));
    // Nothing but printable text and newlines: the escape sequence is shown as hex.
    assert!(!out.stdout.iter().any(|&b| b < 0x20 && b != b'\n'), "{:?}", text(&out.stdout));
    let stdout = String::from_utf8(out.stdout).expect("table output is UTF-8");
    assert!(stdout.contains(" bin  | X'1b5b324a00ff414141"), "{stdout}");
    assert!(stdout.contains(&format!("… ({} bytes)", 6 + (80 << 10))), "{stdout}");
    assert!(stdout.contains(&format!(" wide | {}… (180 bytes)", "表".repeat(43))), "{stdout}");
    assert!(stdout.lines().all(|l| l.chars().count() <= 200), "{stdout}");

    let out = cli(&s, PASSWORD, &["--json", "-c", "SELECT key, value FROM kv WHERE key = 'big'"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let row: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(row, serde_json::json!({"key": "big", "value": big}));
}

/// The interactive shell keeps its history as it goes, not only on a clean exit: a session
/// that ends badly (a crash, a lost stdout) still has the statements it ran.
#[test]
fn shell_saves_history_after_each_statement() {
    use std::io::Write;
    use std::time::{Duration, Instant};
    let s = Server::start(1);
    s.client()
        .execute(&format!("INSERT INTO kv (key, value) VALUES ('big', '{}')", "y".repeat(70_000)))
        .unwrap();
    let home = temp_dir("home");
    let mut child = Command::new(bin("velocity-cli"))
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &s.addr.port().to_string(),
            "-u",
            "alice",
            "--accept-new-host",
        ])
        .arg("--known-hosts")
        .arg(s.known_hosts())
        .env("HOME", &home)
        .env("VELOCITY_PASSWORD", PASSWORD)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"SELECT key, value FROM kv WHERE key = 'big';\n").unwrap();
    stdin.flush().unwrap();
    let history = home.join(".velocity_history");
    let deadline = Instant::now() + Duration::from_secs(20);
    // Saved while the shell still runs: it waits on stdin, which stays open.
    while !std::fs::read_to_string(&history).unwrap_or_default().contains("key = 'big'") {
        if let Some(st) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            panic!("velocity-cli exited ({st}) before saving its history: {}", text(&out.stderr));
        }
        assert!(Instant::now() < deadline, "no history saved after a statement");
        std::thread::sleep(Duration::from_millis(20));
    }
    stdin.write_all(b"\\q\n").unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "status {:?}: {}", out.status, text(&out.stderr));
    assert!(text(&out.stdout).contains("… (70000 bytes)"), "{}", text(&out.stdout));
    let _ = std::fs::remove_dir_all(&home);
}
