//! The slow log against the real server (`--slowlog-threshold-us`, SHOW SLOWLOG): entries of
//! every core merged newest first, LIMIT after the merge, the keys a statement touched but never
//! a value, each core's ring bounded, fast statements left out under a high threshold, and a
//! large scan across shards caught. With the audit log on and off: off, a slow statement is
//! described again from the connection's input once its reply is out.

mod common;

use common::*;
use std::collections::HashMap;
use std::time::Duration;
use velocity::client::{build, Client};
use velocity::limits::{SLOWLOG_BATCH_FAST_MAX, SLOWLOG_ENTRIES_PER_CORE};
use velocity::protocol::{ErrorCode, ResultSet, Value};
use velocity::shard::shard_of_key;

const SHARDS: usize = 2;
/// In every value written here; no cell of SHOW SLOWLOG may hold it.
const SECRET: &str = "S3CR3T-VALUE";

#[derive(Debug, Clone, PartialEq)]
struct Entry {
    time_unix_ms: i64,
    duration_us: i64,
    user: String,
    kind: String,
    target: String,
    rows: i64,
    shard: i64,
}

fn int(v: &Value) -> i64 {
    match v {
        Value::Int(i) => *i,
        v => panic!("expected an INT, got {v:?}"),
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::Bytes(b) => String::from_utf8(b.clone()).unwrap(),
        v => panic!("expected BYTES, got {v:?}"),
    }
}

/// SHOW SLOWLOG's rows, checked for its columns, its order and the absence of any value.
fn entries(rs: &ResultSet) -> Vec<Entry> {
    assert_eq!(rs.columns, ["time_unix_ms", "duration_us", "user", "kind", "target", "rows", "shard"]);
    for row in &rs.rows {
        for cell in row {
            if let Value::Bytes(b) = cell {
                assert!(!String::from_utf8_lossy(b).contains(SECRET), "a value in the slow log: {row:?}");
            }
        }
    }
    let e: Vec<Entry> = rs
        .rows
        .iter()
        .map(|r| Entry {
            time_unix_ms: int(&r[0]),
            duration_us: int(&r[1]),
            user: text(&r[2]),
            kind: text(&r[3]),
            target: text(&r[4]),
            rows: int(&r[5]),
            shard: int(&r[6]),
        })
        .collect();
    assert!(e.windows(2).all(|w| w[0].time_unix_ms >= w[1].time_unix_ms), "not newest first: {e:#?}");
    e
}

fn slowlog(c: &mut Client, sql: &str) -> Vec<Entry> {
    entries(&c.execute(sql).unwrap())
}

/// A connection of alice's on each shard (the kernel picks the core of each connection), found
/// by the `shard` of the entry its first statement leaves.
fn one_connection_per_shard(s: &Server) -> Vec<Client> {
    let mut by_shard: HashMap<i64, Client> = HashMap::new();
    for i in 0..64 {
        let mut c = s.client();
        c.execute(&format!("SELECT COUNT(*) FROM kv WHERE key = 'probe:{i}'")).unwrap();
        let newest = slowlog(&mut c, "SHOW SLOWLOG LIMIT 1");
        assert_eq!(newest[0].target, format!("key = 'probe:{i}'"), "{newest:?}");
        by_shard.entry(newest[0].shard).or_insert(c);
        if by_shard.len() == SHARDS {
            return (0..SHARDS as i64).map(|s| by_shard.remove(&s).unwrap()).collect();
        }
    }
    panic!("64 connections, all on one core");
}

fn server(threshold_us: &str, audit: &str, extra: &[&str]) -> Server {
    let mut args = vec!["--slowlog-threshold-us", threshold_us, "--audit", audit];
    args.extend_from_slice(extra);
    Server::start_with(SHARDS, &args)
}

#[test]
fn entries_of_both_cores_merge_newest_first_limit_applies_after_and_values_never_show() {
    for audit in ["on", "off"] {
        let s = server("0", audit, &[]);
        let mut conns = one_connection_per_shard(&s);
        let steps: Vec<(usize, String, &str, &str, i64)> = vec![
            (0, build::set(b"user:1", SECRET.as_bytes()), "insert", "keys 'user:1'", 1),
            (
                1,
                format!(
                    "INSERT INTO kv (key, value) VALUES ('user:2', '{SECRET}'), ('user:3', '{SECRET}-3')"
                ),
                "insert",
                "keys 'user:2', 'user:3'",
                2,
            ),
            (
                0,
                format!("UPDATE kv SET value = '{SECRET}-new' WHERE key = 'user:1' AND value = '{SECRET}'"),
                "update",
                "key = 'user:1' if value matches",
                1,
            ),
            (1, build::get(b"user:2"), "select_point", "key = 'user:2'", 1),
            (
                0,
                "SELECT key, value FROM kv WHERE key >= 'user:' ORDER BY key DESC".into(),
                "select_range",
                "key in ['user:', +∞)",
                3,
            ),
            (
                1,
                format!("DELETE FROM kv WHERE key = 'user:3' AND value = '{SECRET}-3' RETURNING value"),
                "delete",
                "key = 'user:3' if value matches",
                1,
            ),
            (0, build::incr(b"hits", 1), "insert", "keys 'hits' on conflict update", 1),
            (1, "SELECT value FROM kv WHERE key = 'nope'".into(), "select_point", "key = 'nope'", 0),
        ];
        for (conn, sql, ..) in &steps {
            // Distinct milliseconds, so that newest first is one order.
            std::thread::sleep(Duration::from_millis(3));
            let r = conns[*conn].execute(sql);
            assert!(r.is_ok() || sql.contains("'nope'"), "{sql}: {r:?}");
        }
        let all = slowlog(&mut conns[0], "SHOW SLOWLOG");
        let newest: Vec<(i64, &str, &str, i64)> = all
            .iter()
            .take(steps.len())
            .map(|e| (e.shard, e.kind.as_str(), e.target.as_str(), e.rows))
            .collect();
        let want: Vec<(i64, &str, &str, i64)> =
            steps.iter().rev().map(|(c, _, kind, target, rows)| (*c as i64, *kind, *target, *rows)).collect();
        assert_eq!(newest, want, "audit {audit}: {all:#?}");
        assert!(all[..steps.len()].windows(2).all(|w| w[0].time_unix_ms > w[1].time_unix_ms), "{all:#?}");
        assert!(all.iter().all(|e| e.user == "alice" && e.duration_us >= 0), "{all:#?}");
        // Older: the probes (one per connection) and their SHOW SLOWLOG LIMIT 1, from both cores.
        assert!(all.len() > steps.len() + 2, "{all:#?}");
        assert!(all[steps.len()..].iter().any(|e| e.kind == "show" && e.target.is_empty()));

        // LIMIT takes the newest after the merge; the SHOW SLOWLOG just run is newest now.
        let first = slowlog(&mut conns[1], "SHOW SLOWLOG LIMIT 3");
        assert_eq!(first.len(), 3);
        assert_eq!((first[0].kind.as_str(), first[0].shard, first[0].rows), ("show", 0, all.len() as i64));
        assert_eq!(first[1..], all[..2]);
        let none = conns[0].execute("SHOW SLOWLOG LIMIT 0").unwrap();
        assert_eq!((none.columns.len(), none.rows.len()), (7, 0));
        // The audit log never saw a value either (it is where targets come from).
        if audit == "on" {
            let read =
                || -> String { audit_lines(&s.data_dir).iter().map(|l| l.to_string() + "\n").collect() };
            // Records reach the files within a flush interval (100 ms).
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while !read().contains("'user:3' if value matches") && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let lines = read();
            assert!(lines.contains("'user:3' if value matches") && !lines.contains(SECRET), "{lines}");
            for f in std::fs::read_dir(s.data_dir.join("audit")).unwrap() {
                let bytes = std::fs::read(f.unwrap().path()).unwrap();
                assert!(
                    !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
                    "a value in the audit file"
                );
            }
        }
    }
}

#[test]
fn each_core_keeps_its_last_entries_only() {
    let s = server("0", "on", &[]);
    let mut conns = one_connection_per_shard(&s);
    let n = SLOWLOG_ENTRIES_PER_CORE + 100;
    for (i, c) in conns.iter_mut().enumerate() {
        // One at a time, so that they finish in the order sent (in a pipeline the statements
        // of other shards finish after the local ones of their batch).
        for j in 0..n {
            c.execute(&format!("SELECT COUNT(*) FROM kv WHERE key = 'c{i}:{j:04}'")).unwrap();
        }
    }
    let all = slowlog(&mut conns[0], "SHOW SLOWLOG");
    assert_eq!(all.len(), SLOWLOG_ENTRIES_PER_CORE * SHARDS, "at most the ring's size per core");
    for shard in 0..SHARDS {
        let mine: Vec<&str> =
            all.iter().filter(|e| e.shard == shard as i64).map(|e| e.target.as_str()).collect();
        let want: Vec<String> =
            (n - SLOWLOG_ENTRIES_PER_CORE..n).rev().map(|j| format!("key = 'c{shard}:{j:04}'")).collect();
        assert_eq!(mine, want, "shard {shard}: its newest, newest first");
    }
    assert_eq!(slowlog(&mut conns[1], "SHOW SLOWLOG LIMIT 100000").len(), SLOWLOG_ENTRIES_PER_CORE * SHARDS);
}

#[test]
fn a_slow_batch_logs_a_bounded_number_of_its_fast_statements() {
    // The audit log off: the canonical point reads take the fast path, timed per batch.
    let s = server("0", "off", &["--plaintext"]);
    let mut conns = one_connection_per_shard(&s);
    let c = &mut conns[0];
    let keys: Vec<String> =
        (0..2000).map(|i| format!("f:{i}")).filter(|k| shard_of_key(k.as_bytes(), SHARDS) == 0).collect();
    let keys = &keys[..200];
    let rows: Vec<(String, String)> = keys.iter().map(|k| (k.clone(), format!("{SECRET}-{k}"))).collect();
    c.execute(&build::set_many(&rows)).unwrap();
    let gets: Vec<String> = keys.iter().map(|k| build::get(k.as_bytes())).collect();
    for r in c.pipeline(&gets).unwrap() {
        r.unwrap();
    }
    let all = slowlog(c, "SHOW SLOWLOG");
    let fast: Vec<&Entry> = all.iter().filter(|e| e.target.starts_with("key = 'f:")).collect();
    assert!(fast.iter().all(|e| e.kind == "select_point" && e.rows == 1 && e.shard == 0), "{fast:#?}");
    // One pipelined write of 200 reads comes in one batch or a few: 16 of each.
    assert!(!fast.is_empty() && fast.len() <= 4 * SLOWLOG_BATCH_FAST_MAX, "{} fast entries", fast.len());
    // Without the bound they would fill the ring.
    assert!(fast.len() < SLOWLOG_ENTRIES_PER_CORE);
    // The batch's first ones, described from their text.
    let last = fast.last().unwrap();
    assert!(keys.iter().any(|k| last.target == format!("key = '{k}'")), "{last:?}");
}

#[test]
fn under_a_high_threshold_fast_statements_are_not_logged_and_only_readwrite_may_reset() {
    let s = server("5000000", "on", &[]);
    let mut c = s.client();
    c.execute(&build::set(b"a", SECRET.as_bytes())).unwrap();
    let sqls: Vec<String> = (0..200)
        .map(|i| match i % 4 {
            0 => build::get(b"a"),
            1 => build::set(format!("k{i}").as_bytes(), SECRET.as_bytes()),
            2 => format!("SELECT key, value FROM kv WHERE key IN ('a', 'k{}')", i - 1),
            _ => "SELECT COUNT(*) FROM kv".into(),
        })
        .collect();
    for r in c.pipeline(&sqls).unwrap() {
        r.unwrap();
    }
    c.execute("SHOW STATS").unwrap();
    let rs = c.execute("SHOW SLOWLOG").unwrap();
    assert_eq!((rs.columns.len(), rs.rows.len()), (7, 0), "{:?}", rs.rows);

    // A readonly user reads it, as SHOW STATS, but may not erase it.
    let mut reader = s.connect(&s.reader).unwrap();
    assert_eq!(reader.execute("SHOW SLOWLOG LIMIT 5").unwrap().rows.len(), 0);
    let e = reader.execute("SHOW SLOWLOG RESET").unwrap_err();
    assert!(
        matches!(&e, velocity::client::ClientError::Server(w) if w.code == ErrorCode::Unauthorized),
        "{e:?}"
    );
    assert_eq!(c.execute("show slowlog reset;").unwrap().affected, 0);
}

#[test]
fn a_large_scan_across_shards_is_logged_with_its_range() {
    // The audit log off: the scan's target is worked out after its slices, from its text.
    let s = server("1", "off", &["--durability", "none"]);
    let mut conns = one_connection_per_shard(&s);
    let c = &mut conns[0];
    let keys = 50_000;
    for start in (0..keys).step_by(1000) {
        let rows: Vec<(String, String)> =
            (start..start + 1000).map(|i| (format!("big:{i:06}"), SECRET.into())).collect();
        c.execute(&build::set_many(&rows)).unwrap();
    }
    assert!(c.execute("SHOW SLOWLOG RESET").unwrap().affected > 0);
    let count = c.execute("SELECT COUNT(*) FROM kv WHERE key LIKE 'big:%'").unwrap();
    assert_eq!(count.rows, [[Value::Int(keys as i64)]]);
    let page =
        c.execute("SELECT key, value FROM kv WHERE key BETWEEN 'big:000100' AND 'big:000199'").unwrap();
    assert_eq!(page.rows.len(), 100);
    // Long enough (over 64 KiB) to be parsed off the core, which describes it there.
    let rows: Vec<(String, String)> =
        (0..1000).map(|i| (format!("long:{i:04}"), format!("{SECRET}-{i:050}"))).collect();
    let long = build::set_many(&rows);
    assert!(long.len() > 64 << 10);
    assert_eq!(c.execute(&long).unwrap().affected, 1000);

    let all = slowlog(c, "SHOW SLOWLOG");
    let find =
        |kind: &str| all.iter().find(|e| e.kind == kind).unwrap_or_else(|| panic!("no {kind}: {all:#?}"));
    let scan = find("count");
    assert_eq!((scan.target.as_str(), scan.rows, scan.shard), ("key LIKE, prefix 'big:'", 1, 0));
    assert!(scan.duration_us >= 1, "{scan:?}");
    let range = find("select_range");
    assert_eq!((range.target.as_str(), range.rows), ("key in ['big:000100', 'big:000199']", 100));
    let insert = find("insert");
    assert!(
        insert.target.starts_with("keys 'long:0000', 'long:0001', ")
            && insert.target.ends_with("(1000 keys)")
    );
    assert_eq!(insert.rows, 1000);
    // Newest first: the INSERT, the range, the count, then the RESET that emptied the log.
    let kinds: Vec<&str> = all.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["insert", "select_range", "count", "show"], "{all:#?}");
}

#[test]
fn off_logs_nothing_and_a_bad_threshold_is_refused() {
    let s = server("off", "off", &["--plaintext"]);
    let mut c = s.client();
    let big: Vec<(String, String)> = (0..5000).map(|i| (format!("k{i:05}"), SECRET.into())).collect();
    c.execute(&build::set_many(&big)).unwrap();
    c.execute("SELECT COUNT(*) FROM kv WHERE key >= 'k'").unwrap();
    assert_eq!(c.execute("SHOW SLOWLOG").unwrap().rows.len(), 0);
    let out = std::process::Command::new(bin("velocityd"))
        .args(["--slowlog-threshold-us", "soon", "--data-dir"])
        .arg(&s.data_dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("expected a number of microseconds"), "{err}");
}
