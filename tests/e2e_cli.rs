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
