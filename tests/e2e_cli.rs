//! velocity-cli against a real server: `-c`, `-f`, pipes, `--json`, `--csv`, `-x`, the
//! conventional flags and variables, help and comments. The interactive shell on a terminal
//! is tested in e2e_cli_tty.rs, hostile server replies in e2e_cli_replies.rs.

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

/// velocity-cli with these arguments, variables and standard input, and none of the caller's
/// VELOCITY_* variables.
fn run_cli(s: &Server, args: &[&str], env: &[(&str, &str)], input: &str) -> Output {
    let mut cmd = Command::new(bin("velocity-cli"));
    cmd.arg("--known-hosts").arg(s.known_hosts()).arg("--accept-new-host").args(args);
    for v in ["VELOCITY_HOST", "VELOCITY_PORT", "VELOCITY_USER", "VELOCITY_PASSWORD", "VELOCITY_API_KEY"] {
        cmd.env_remove(v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_with_stdin(&mut cmd, input)
}

/// The user of the session, from `--json -c "SHOW STATUS"`.
fn status_user(out: &Output) -> String {
    assert!(out.status.success(), "status {:?}: {}", out.status, text(&out.stderr));
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|j| j["name"] == "user")
        .and_then(|j| j["value"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("no user row: {}", text(&out.stdout)))
}

fn args<'a>(parts: &[&[&'a str]]) -> Vec<&'a str> {
    parts.concat()
}

#[test]
fn conventional_flags_and_environment_variables() {
    let s = Server::start(1);
    let port = s.addr.port().to_string();
    let status: &[&str] = &["--json", "-c", "SHOW STATUS"];
    let alice = [("VELOCITY_PASSWORD", PASSWORD)];
    // psql's -h -p -U; -u (redis-cli's habit) and --username name the user too.
    for user_flag in ["-U", "-u", "--username", "--user"] {
        let out =
            run_cli(&s, &args(&[&["-h", "127.0.0.1", "-p", &port, user_flag, "alice"], status]), &alice, "");
        assert_eq!(status_user(&out), "alice", "{user_flag}");
    }
    // Only variables, as PGHOST, PGPORT, PGUSER, PGPASSWORD.
    let env = [
        ("VELOCITY_HOST", "127.0.0.1"),
        ("VELOCITY_PORT", port.as_str()),
        ("VELOCITY_USER", "reader"),
        ("VELOCITY_PASSWORD", RO_PASSWORD),
    ];
    assert_eq!(status_user(&run_cli(&s, status, &env, "")), "reader");
    // A flag wins over its variable: the variables name an address where nothing listens and
    // another user; the flags (and the password on stdin) are used.
    let wrong = [
        ("VELOCITY_HOST", "127.0.0.2"),
        ("VELOCITY_PORT", "1"),
        ("VELOCITY_USER", "reader"),
        ("VELOCITY_PASSWORD", RO_PASSWORD),
    ];
    let out = run_cli(
        &s,
        &args(&[&["-h", "127.0.0.1", "-p", &port, "-U", "alice", "--password-stdin"], status]),
        &wrong,
        &format!("{PASSWORD}\n"),
    );
    assert_eq!(status_user(&out), "alice");
    let out = run_cli(&s, &["-c", "SHOW STATUS"], &wrong, "");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("velocity-cli: cannot connect to 127.0.0.2:1: "),
        "{}",
        text(&out.stderr)
    );
    let out = run_cli(&s, &["-c", "SHOW STATUS"], &[("VELOCITY_PORT", "seventy")], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("VELOCITY_PORT=\"seventy\" is not a port number"),
        "{}",
        text(&out.stderr)
    );
    // -h is the host, as in psql; help is -? or --help.
    for help in ["-?", "--help"] {
        let out = run_cli(&s, &[help], &[], "");
        assert!(out.status.success(), "{help}: {}", text(&out.stderr));
        let usage = text(&out.stdout);
        for want in [
            "-h, --host <HOST>",
            "-p, --port <PORT>",
            "-U, --user <USER>",
            "-f, --file <FILE>",
            "--csv",
            "--api-key-stdin",
            "--continue-on-error",
            "VELOCITY_PASSWORD",
            "VELOCITY_API_KEY",
        ] {
            assert!(usage.contains(want), "{help} does not show {want}: {usage}");
        }
    }
    let out = run_cli(&s, &["-h"], &[], "");
    assert_eq!(out.status.code(), Some(2), "-h needs a host");
}

#[test]
fn api_key_login_from_stdin_or_the_environment() {
    let dir = temp_dir("data");
    add_user(&dir, "alice", PASSWORD, "readwrite");
    add_user(&dir, "reader", RO_PASSWORD, "readonly");
    let made = Command::new(bin("velocityd"))
        .args(["apikey", "create", "--user", "alice", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", text(&made.stderr));
    let key = text(&made.stdout).trim().to_owned();
    // Made before the server starts: it is known from the first login on.
    let s = Server::start_in(dir, 1, &[]);
    let port = s.addr.port().to_string();
    let status: &[&str] = &["--json", "-c", "SHOW STATUS"];
    let out = run_cli(&s, &args(&[&["-p", &port, "--api-key-stdin"], status]), &[], &format!("{key}\n"));
    assert_eq!(status_user(&out), "alice");
    let out = run_cli(&s, &args(&[&["-p", &port], status]), &[("VELOCITY_API_KEY", &key)], "");
    assert_eq!(status_user(&out), "alice");
    // A user named on the command line logs in with a password, whatever VELOCITY_API_KEY says.
    let env = [("VELOCITY_API_KEY", key.as_str()), ("VELOCITY_PASSWORD", RO_PASSWORD)];
    assert_eq!(
        status_user(&run_cli(&s, &args(&[&["-p", &port, "-U", "reader"], status]), &env, "")),
        "reader"
    );
    let out =
        run_cli(&s, &["-p", &port, "-c", "SHOW STATUS"], &[("VELOCITY_API_KEY", "vk_00000000_wrong")], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("login failed"), "{}", text(&out.stderr));
    // The key is the first line of stdin; a script may follow it.
    let out = run_cli(
        &s,
        &["-p", &port, "--api-key-stdin"],
        &[],
        &format!("{key}\nINSERT INTO kv (key, value) VALUES ('by', 'key');\nSELECT value FROM kv WHERE key = 'by';\n"),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(" key\n"), "{}", text(&out.stdout));
    let out = run_cli(&s, &["-p", &port, "--api-key-stdin", "-U", "alice"], &[], &key);
    assert_eq!(out.status.code(), Some(2), "an API key is its own user: {}", text(&out.stderr));
    let out = run_cli(&s, &["-p", &port, "--api-key-stdin", "-c", "SHOW STATUS"], &[], "\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no API key on standard input"), "{}", text(&out.stderr));
}

const SCRIPT: &str = "-- a dump: comments, statements over lines, ';' inside literals\n\
INSERT INTO kv (key, value) VALUES ('s:1', 'one');\n\
INSERT INTO kv (key, value)\n  VALUES ('s:2', 'two; still two'); /* ; */\n\
SELECT value FROM kv WHERE key = 'missing';\n\
INSERT INTO kv (key, value) VALUES ('s:3', 'three')\n";

fn keys_s(s: &Server) -> Vec<String> {
    let rs = s.client().execute("SELECT key FROM kv WHERE key LIKE 's:%'").unwrap();
    rs.rows.iter().map(|r| format!("{:?}", r[0])).collect()
}

#[test]
fn scripts_from_files_and_pipes_stop_at_their_first_error() {
    let s = Server::start(1);
    let port = s.addr.port().to_string();
    let env = [("VELOCITY_PORT", port.as_str()), ("VELOCITY_USER", "alice"), ("VELOCITY_PASSWORD", PASSWORD)];
    let dir = temp_dir("scripts");
    let file = dir.join("dump.sql");
    std::fs::write(&file, SCRIPT).unwrap();
    let f = file.to_str().unwrap();
    let stored = |s: &Server| {
        let mut c = s.client();
        (value_of(&mut c, "s:1"), value_of(&mut c, "s:2"), value_of(&mut c, "s:3"))
    };

    let out = run_cli(&s, &["-f", f], &env, "");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr).trim(), format!("{f}:5: ERROR: KEY_NOT_FOUND: key not found"));
    assert_eq!(text(&out.stdout), "OK, 1 row affected\nOK, 1 row affected\n");
    assert_eq!(stored(&s), (Some(b"one".to_vec()), Some(b"two; still two".to_vec()), None));

    // Go on: the last statement (no ';' at the end of the input) runs; still a failure.
    let out = run_cli(&s, &["--continue-on-error", "-f", f], &env, "");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains(&format!("{f}:5: ERROR: KEY_NOT_FOUND")), "{err}");
    assert!(err.contains("1 of 4 statements failed"), "{err}");
    assert_eq!(stored(&s).2, Some(b"three".to_vec()));
    s.client().execute("DELETE FROM kv WHERE key LIKE 's:%'").unwrap();
    assert!(keys_s(&s).is_empty());

    // A pipe is a script too (`velocity-cli < dump.sql`), as is `-f -`.
    for extra in [&[][..], &["-f", "-"][..]] {
        let out = run_cli(&s, extra, &env, SCRIPT);
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(text(&out.stderr).trim(), "<stdin>:5: ERROR: KEY_NOT_FOUND: key not found");
        assert_eq!(keys_s(&s).len(), 2);
    }
    // The password on the first line, the script after it.
    let out = run_cli(
        &s,
        &["-p", &port, "-U", "alice", "--password-stdin"],
        &[],
        &format!("{PASSWORD}\nSELECT value FROM kv WHERE key = 's:2';\n"),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(" two; still two"), "{}", text(&out.stdout));
    // Meta-commands on lines of their own work in scripts; \q ends one early.
    let out =
        run_cli(&s, &[], &env, "\\x\nSELECT key, value FROM kv WHERE key = 's:1';\n\\q\nSELECT nonsense;\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "Expanded display is on.\n-[ RECORD 1 ]-\nkey   | s:1\nvalue | one\n(1 row)\n"
    );
    let out = run_cli(&s, &[], &env, "\\bogus\nSELECT COUNT(*) FROM kv;\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("<stdin>:1: ERROR: invalid command \\bogus"), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty(), "stopped at the first error: {}", text(&out.stdout));
    // Input that is not UTF-8, a file that is not there.
    let mut raw = Command::new(bin("velocity-cli"));
    raw.args(["--known-hosts"]).arg(s.known_hosts()).env_remove("VELOCITY_API_KEY");
    for (k, v) in env {
        raw.env(k, v);
    }
    let mut child = raw
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"SELECT COUNT(*) FROM kv;\nSELECT '\xff';\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("<stdin>:2: ERROR: this line is not UTF-8"), "{}", text(&out.stderr));
    let out = run_cli(&s, &["-f", "/nonexistent/dump.sql"], &env, "");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cannot open /nonexistent/dump.sql"), "{}", text(&out.stderr));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn comments_reach_the_server_and_do_not_split_statements() {
    let s = Server::start(2);
    // The server's own lexer takes them, from any client.
    let mut c = s.client();
    c.execute("-- first\nINSERT INTO kv (key, value) /* the row: */ VALUES ('c--1', '/* kept */') -- done")
        .unwrap();
    assert_eq!(value_of(&mut c, "c--1"), Some(b"/* kept */".to_vec()));
    let rs =
        c.execute("SELECT value FROM kv /* a /* nested */ comment */ WHERE key = 'c--1'; -- after").unwrap();
    assert_eq!(rs.rows.len(), 1);
    let e = c.execute("SELECT value FROM kv /* never closed").unwrap_err();
    assert_eq!(e.code(), Some(velocity::protocol::ErrorCode::InvalidCommand));
    assert!(e.to_string().contains("at byte 21: unterminated /* comment"), "{e}");

    // The CLI splits only at a ';' outside literals and comments.
    let out = cli(
        &s,
        PASSWORD,
        &["-c", "INSERT INTO kv (key, value) VALUES ('k;1', 'v -- not a comment'); -- done; really\n/* SELECT; */ SELECT key, value FROM kv WHERE key = 'k;1' -- ;"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("OK, 1 row affected\n"), "{stdout}");
    assert!(stdout.contains(" k;1 | v -- not a comment"), "{stdout}");
    assert_eq!(stdout.matches("(1 row)").count(), 1, "{stdout}");
    let out = cli(&s, PASSWORD, &["-c", "SELECT COUNT(*) FROM kv /* open ; SELECT 1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("unterminated /* comment"), "{}", text(&out.stderr));
}

#[test]
fn help_and_meta_commands_outside_the_terminal() {
    let s = Server::start(1);
    let out = cli(&s, PASSWORD, &["-c", "\\?"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("\\h [STATEMENT]"), "{}", text(&out.stdout));
    let out = cli(&s, PASSWORD, &["-c", "\\h"]);
    assert!(text(&out.stdout).contains("Available help:"), "{}", text(&out.stdout));
    let out = cli(&s, PASSWORD, &["-c", "\\h delete"]);
    let h = text(&out.stdout);
    assert!(h.contains("Statement:   DELETE") && h.contains("DELETE FROM kv WHERE condition"), "{h}");
    let out = cli(&s, PASSWORD, &["-c", "\\h truncate"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("No help available for \"truncate\""), "{}", text(&out.stderr));
    let out = cli(&s, PASSWORD, &["-c", "\\conninfo"]);
    assert!(text(&out.stdout).contains("as user \"alice\", over TLS 1.3"), "{}", text(&out.stdout));
    // Meta-commands and statements on one line, split at ';'.
    let out = cli(&s, PASSWORD, &["-c", "\\timing on; SELECT COUNT(*) FROM kv; \\x"]);
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("Timing is on.\n count\n"), "{stdout}");
    assert!(stdout.contains("Time: ") && stdout.ends_with("Expanded display is on.\n"), "{stdout}");
}

/// Every example that `\h` shows runs on the server: the statements a newcomer copies work.
#[test]
fn help_examples_run_against_the_server() {
    let s = Server::start(2);
    let out = cli(&s, PASSWORD, &["-c", "\\h *"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let help = text(&out.stdout);
    let mut examples: Vec<String> = Vec::new();
    let mut in_examples = false;
    for l in help.lines() {
        if l.starts_with("Example") {
            in_examples = true;
        } else if l.starts_with("Statement:") || l.is_empty() {
            in_examples = false;
        } else if in_examples {
            examples.push(l.trim().to_owned());
        }
    }
    assert!(examples.len() >= 12, "{examples:?}");
    // Writes first, so that the reads find their keys; deletes last.
    let rank = |e: &String| {
        ["INSERT", "SELECT", "UPDATE", "SHOW", "DELETE"].iter().position(|k| e.starts_with(k)).unwrap()
    };
    examples.sort_by_key(rank);
    let out = cli(&s, PASSWORD, &["-c", &examples.join("\n")]);
    assert!(out.status.success(), "{}\n{}", text(&out.stderr), examples.join("\n"));
}

#[test]
fn csv_output_reads_back() {
    let s = Server::start(1);
    s.client()
        .execute("INSERT INTO kv (key, value, ttl) VALUES ('a', '', NULL), ('b,c', 'say \"hi\"', 3600), ('d', X'1b5b324aff', NULL), ('e', 'two\nlines', NULL)")
        .unwrap();
    let out = cli(&s, PASSWORD, &["--csv", "-c", "SELECT key, value FROM kv ORDER BY key; SELECT key, ttl FROM kv WHERE key = 'a'; DELETE FROM kv WHERE key = 'e'"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "key,value\na,\"\"\n\"b,c\",\"say \"\"hi\"\"\"\nd,X'1b5b324aff'\ne,\"two\nlines\"\n\
         key,ttl\na,\n\
         affected\n1\n"
    );
    let out = cli(&s, PASSWORD, &["--csv", "--json", "-c", "SHOW STATUS"]);
    assert_eq!(out.status.code(), Some(2), "one output format at a time");
}

#[test]
fn json_mode_reports_errors_as_objects_on_stderr() {
    let s = Server::start(1);
    let json_lines = |b: &[u8]| -> Vec<serde_json::Value> {
        text(b).lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"))).collect()
    };
    let out = cli(
        &s,
        PASSWORD,
        &["--json", "-c", "SELECT COUNT(*) FROM kv;\nSELECT value FROM kv WHERE key = 'nope'"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json_lines(&out.stdout), vec![serde_json::json!({"count": 0})]);
    assert_eq!(
        json_lines(&out.stderr),
        vec![serde_json::json!({"error": "KEY_NOT_FOUND", "code": 4, "message": "key not found", "line": 2})]
    );
    let out = cli(&s, PASSWORD, &["--json", "-c", "SELECT value FORM kv"]);
    let err = json_lines(&out.stderr);
    assert_eq!(err.len(), 1, "no caret lines beside the JSON: {}", text(&out.stderr));
    assert_eq!(err[0]["error"], "INVALID_COMMAND");
    assert_eq!(err[0]["code"], 3);
    assert_eq!(err[0]["message"], "at byte 13: expected FROM, found 'FORM'");
    let out = cli(&s, "wrong password", &["--json", "-c", "SHOW STATUS"]);
    assert_eq!(out.status.code(), Some(1));
    let err = json_lines(&out.stderr);
    assert_eq!(err[0]["error"], "INVALID_CREDENTIALS");
    assert_eq!(err[0]["code"], 1);
    assert!(
        err[0]["message"]
            .as_str()
            .unwrap()
            .starts_with(&format!("cannot connect to 127.0.0.1:{}: login failed", s.addr.port())),
        "{}",
        err[0]
    );
    let out = run_cli(
        &s,
        &["--json", "-p", &free_port().to_string(), "-c", "SHOW STATUS"],
        &[("VELOCITY_PASSWORD", PASSWORD)],
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json_lines(&out.stderr)[0]["error"], "IO_ERROR");
    let out = run_cli(&s, &["--json", "-c", "SHOW STATUS"], &[("VELOCITY_PORT", "0")], "");
    assert_eq!(json_lines(&out.stderr)[0]["error"], "USAGE");
}

/// `-x` (and `\x` in a script) prints long values whole, still without raw control bytes.
#[test]
fn expanded_display_prints_long_values_whole() {
    let s = Server::start(1);
    let big = "x".repeat(100 << 10);
    let mut c = s.client();
    c.execute(&format!("INSERT INTO kv (key, value) VALUES ('big', '{big}')")).unwrap();
    c.execute(&format!("INSERT INTO kv (key, value) VALUES ('bin', X'1b5b324a00ff{}')", "41".repeat(1000)))
        .unwrap();
    let out = cli(&s, PASSWORD, &["-x", "-c", "SELECT key, value FROM kv WHERE key = 'big'"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("-[ RECORD 1 ]"), "{}", &stdout[..200]);
    assert!(stdout.contains(&format!("\nvalue | {big}\n")), "not whole");
    assert!(stdout.ends_with("(1 row)\n"));
    let out = cli(&s, PASSWORD, &["-c", "\\x on\nSELECT key, value FROM kv WHERE key = 'bin'"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!out.stdout.iter().any(|&b| b < 0x20 && b != b'\n'), "{:?}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains(&format!("value | X'1b5b324a00ff{}'\n", "41".repeat(1000))),
        "{}",
        text(&out.stdout)
    );
    // auto, without a terminal (80 columns): the table for short values, records for long ones.
    let out = cli(
        &s,
        PASSWORD,
        &["-c", "\\x auto\nSELECT COUNT(*) FROM kv;\nSELECT key, value FROM kv WHERE key = 'big'"],
    );
    let stdout = text(&out.stdout);
    assert!(stdout.contains(" count\n-------\n 2\n"), "{}", &stdout[..200.min(stdout.len())]);
    assert!(stdout.contains(&format!("value | {big}\n")));
}

#[test]
fn parse_errors_point_at_the_spot() {
    let s = Server::start(1);
    let out = cli(&s, PASSWORD, &["-c", "SELECT key, value\nFROM kv\nWHERE key BETWEN 'a' AND 'b'"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "ERROR: INVALID_COMMAND: at byte 36: expected '=', IN, LIKE, BETWEEN, '<', '<=', '>' or '>=', found 'BETWEN'\n\
         LINE 3: WHERE key BETWEN 'a' AND 'b'\n\
         \x20                 ^\n"
    );
}
