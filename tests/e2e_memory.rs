//! The memory limit against the real server (`--max-memory`, `--eviction`): noeviction refuses
//! a write that would pass it and applies nothing of it, while reads and deletes go on;
//! allkeys-lru evicts durably (a crash and restart brings no evicted key back) and keeps a hot
//! set's hit rate under a flood of cold writes; volatile-ttl evicts the nearest expiry first and
//! never a key without a TTL; and a flood of mixed sizes far past the limit keeps the process's
//! peak RSS within 10% of it, in a memory cgroup of that size that would OOM-kill it otherwise.

mod common;

use common::*;
use std::collections::BTreeSet;
use velocity::client::{build, Client};
use velocity::protocol::{ErrorCode, ResultSet, Value};
use velocity::shard::shard_of_key;

const SHARDS: usize = 2;
const MIB: u64 = 1 << 20;

fn stat(c: &mut Client, name: &str) -> i64 {
    let rs = c.execute("SHOW STATS").unwrap();
    let row = rs.rows.iter().find(|r| r[0] == Value::Bytes(name.as_bytes().to_vec()));
    match row.map(|r| &r[1]) {
        Some(Value::Int(n)) => *n,
        other => panic!("SHOW STATS {name}: {other:?}"),
    }
}

fn count(c: &mut Client) -> i64 {
    match &c.execute("SELECT COUNT(*) FROM kv").unwrap().rows[0][0] {
        Value::Int(n) => *n,
        v => panic!("{v:?}"),
    }
}

/// Every key, paged in key order.
fn all_keys(c: &mut Client) -> BTreeSet<Vec<u8>> {
    let mut keys = BTreeSet::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let after_key = after.as_deref().map_or(String::new(), |k| String::from_utf8(k.to_vec()).unwrap());
        let sql = format!("SELECT key FROM kv WHERE key > '{after_key}' ORDER BY key LIMIT 1000");
        let rs: ResultSet = c.execute(&sql).unwrap();
        let Some(last) = rs.rows.last() else { return keys };
        let Value::Bytes(k) = &last[0] else { panic!() };
        after = Some(k.clone());
        for r in &rs.rows {
            let Value::Bytes(k) = &r[0] else { panic!() };
            keys.insert(k.clone());
        }
    }
}

/// Write `stmts` pipelined, in batches; the replies in order.
fn pipelined(c: &mut Client, stmts: &[String]) -> Vec<velocity::client::Reply> {
    stmts.chunks(64).flat_map(|chunk| c.pipeline(chunk).unwrap()).collect()
}

fn is_out_of_memory(e: &velocity::error::WireError) -> bool {
    e.code == ErrorCode::ServerOverloaded && e.message.starts_with("out of memory")
}

/// A process's figure from /proc/PID/status, in bytes.
fn proc_status_bytes(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = s.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("{field} in {s}"));
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// A memory cgroup of `limit_bytes` holding one process: over it, the kernel's OOM killer ends
/// the process. cgroup v2 (`memory.max`) or v1 (`memory.limit_in_bytes`, with the memory the
/// process already has counted against it), under this test's own cgroup. None where cgroups cannot be
/// written (not root): the peak-RSS check still says the same.
struct MemoryCgroup(std::path::PathBuf);

impl MemoryCgroup {
    fn enter(pid: u32, limit_bytes: u64) -> Option<MemoryCgroup> {
        let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let (root, rel, v2) = match own.lines().find_map(|l| l.strip_prefix("0::")) {
            Some(rel) if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() => {
                ("/sys/fs/cgroup".to_string(), rel.to_string(), true)
            }
            _ => {
                let rel = own.lines().find_map(|l| l.split_once(":memory:").map(|(_, r)| r.to_string()))?;
                ("/sys/fs/cgroup/memory".to_string(), rel, false)
            }
        };
        let dir = std::path::PathBuf::from(format!("{root}{rel}/velocity-test-{pid}"));
        std::fs::create_dir(&dir).ok()?;
        let cg = MemoryCgroup(dir);
        let w = |file: &str, v: String| std::fs::write(cg.0.join(file), v);
        let ok = if v2 {
            w("memory.max", limit_bytes.to_string()).and_then(|_| w("memory.swap.max", "0".into()).or(Ok(())))
        } else {
            // Newer kernels no longer move what a process has already been charged: then the
            // group's limit is what is left of `limit_bytes` after the pages it keeps outside.
            let moved = w("memory.move_charge_at_immigrate", "1".into()).is_ok();
            let outside = if moved { 0 } else { proc_status_bytes(pid, "VmRSS:") };
            w("memory.limit_in_bytes", limit_bytes.saturating_sub(outside).to_string())
        };
        ok.and_then(|_| w("cgroup.procs", pid.to_string())).ok()?;
        Some(cg)
    }

    /// Times the group reached its limit and was pushed back (v1's failcnt, v2's `max` events).
    fn oom_kills(&self) -> u64 {
        let events = std::fs::read_to_string(self.0.join("memory.events")).unwrap_or_default();
        let v2 = events.lines().find_map(|l| l.strip_prefix("oom_kill ")).and_then(|n| n.parse().ok());
        let v1 = std::fs::read_to_string(self.0.join("memory.oom_control"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill ").and_then(|n| n.parse().ok()));
        v2.or(v1).unwrap_or(0)
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        // A process still in it (a failed test unwinding) goes back to the parent group first.
        let parent = self.0.parent().unwrap().join("cgroup.procs");
        for pid in std::fs::read_to_string(self.0.join("cgroup.procs")).unwrap_or_default().lines() {
            let _ = std::fs::write(&parent, pid);
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// A deterministic stream of mixed value sizes, 16 B to 64 KiB, spread evenly in log scale.
struct Sizes(u64);

impl Sizes {
    fn next(&mut self) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let exp = 4.0 + (self.0 % 1000) as f64 / 1000.0 * 12.0;
        2f64.powf(exp) as usize
    }
}

#[test]
fn a_flood_of_mixed_sizes_stays_within_the_limit() {
    let limit = 256 * MIB;
    for eviction in ["allkeys-lru", "noeviction"] {
        let max = limit.to_string();
        let s = Server::start_with(
            SHARDS,
            &["--max-memory", &max, "--eviction", eviction, "--durability", "none", "--audit", "off"],
        );
        let cgroup = MemoryCgroup::enter(s.child.id(), limit + limit / 10);
        if cgroup.is_none() {
            eprintln!("no memory cgroup can be made here: the peak RSS alone is checked");
        }
        let mut c = s.client();
        let base = proc_status_bytes(s.child.id(), "VmRSS:");
        eprintln!("{eviction}: RSS at start {:.1} MiB", base as f64 / MIB as f64);
        let mut sizes = Sizes(0x5EED);
        let (mut written, mut refused, mut sent) = (0u64, 0u64, 0u64);
        let mut i = 0u64;
        while sent < 4 * limit {
            let stmts: Vec<String> = (0..64)
                .map(|_| {
                    i += 1;
                    let n = sizes.next();
                    sent += n as u64;
                    // A key space larger than what fits: new keys mostly, some overwrites.
                    let key = format!("k:{}", (i * 2_654_435_761) % 400_000);
                    build::set(key.as_bytes(), &vec![b'x'; n])
                })
                .collect();
            for r in pipelined(&mut c, &stmts) {
                match r {
                    Ok(_) => written += 1,
                    Err(e) if is_out_of_memory(&e) => refused += 1,
                    Err(e) => panic!("{e}"),
                }
            }
        }
        let pid = s.child.id();
        let (hwm, rss) = (proc_status_bytes(pid, "VmHWM:"), proc_status_bytes(pid, "VmRSS:"));
        let used = stat(&mut c, "memory_used_bytes") as u64;
        let evicted = stat(&mut c, "evicted_keys");
        eprintln!(
            "{eviction}: written {written}, refused {refused}, evicted {evicted}; used {:.1} MiB, RSS {:.1} MiB, peak {:.1} MiB of a {} MiB limit",
            used as f64 / MIB as f64,
            rss as f64 / MIB as f64,
            hwm as f64 / MIB as f64,
            limit / MIB
        );
        assert!(used <= limit, "accounted {used} past the limit {limit}");
        if let Some(cg) = &cgroup {
            assert_eq!(cg.oom_kills(), 0, "the OOM killer ran in the server's cgroup");
        }
        assert!(s.child.id() == pid && c.ping(b"alive").is_ok(), "the server is gone");
        assert!(hwm <= limit + limit / 10, "peak RSS {hwm} more than 10% past the limit {limit}");
        match eviction {
            "noeviction" => assert!(refused > 0 && evicted == 0),
            _ => assert!(refused == 0 && evicted > 0),
        }
        drop(c);
        drop(s);
        drop(cgroup);
    }
}

fn value(n: usize, tag: u64) -> Vec<u8> {
    let mut v = format!("{tag:016}").into_bytes();
    v.resize(n, b'.');
    v
}

#[test]
fn noeviction_refuses_a_write_that_would_pass_the_limit_and_applies_none_of_it() {
    // The process itself holds about 28 MiB (two executors' rings and buffers): 20 MiB for data.
    let s = Server::start_with(SHARDS, &["--max-memory", "48mb", "--audit", "off"]);
    let mut c = s.client();
    // Fill until writes are refused.
    let (mut written, mut refused) = (BTreeSet::new(), Vec::new());
    let mut i = 0u64;
    while refused.is_empty() {
        let stmts: Vec<String> =
            (i..i + 64).map(|k| build::set(format!("k:{k}").as_bytes(), &value(4000, k))).collect();
        for (j, r) in pipelined(&mut c, &stmts).into_iter().enumerate() {
            match r {
                Ok(_) => assert!(written.insert(i + j as u64)),
                Err(e) => {
                    assert!(is_out_of_memory(&e), "{e}");
                    assert!(e.message.ends_with("nothing was changed"), "{}", e.message);
                    refused.push(i + j as u64);
                }
            }
        }
        i += 64;
        assert!(i < 12_000, "48 MiB took 12,000 values of 4 KB");
    }
    assert_eq!(count(&mut c), written.len() as i64);
    for k in &refused {
        assert_eq!(value_of(&mut c, &format!("k:{k}")), None, "the refused write of k:{k} was applied");
    }
    let used = stat(&mut c, "memory_used_bytes");
    let limit = stat(&mut c, "memory_limit_bytes");
    // The limit less the process's own memory, which is measured at start.
    assert!(used <= limit && limit < 48 * MIB as i64, "used {used}, limit {limit}");
    assert_eq!(stat(&mut c, "evicted_keys"), 0);

    let key = format!("k:{}", refused[0]);
    let full = shard_of_key(key.as_bytes(), SHARDS);
    let on_full: Vec<u64> = written
        .iter()
        .copied()
        .filter(|k| shard_of_key(format!("k:{k}").as_bytes(), SHARDS) == full)
        .collect();
    let old = format!("k:{}", on_full[0]);
    let big = "y".repeat(60_000);
    // Each form of write that would add to the full shard is refused and changes nothing.
    for sql in [
        format!("INSERT INTO kv (key, value, ttl) VALUES ('{key}', '{big}', 60)"),
        format!("UPDATE kv SET value = '{big}' WHERE key = '{old}'"),
        format!("UPDATE kv SET value = '{big}' WHERE key = '{old}' AND value = '{}'", String::from_utf8(value(4000, on_full[0])).unwrap()),
        format!("INSERT INTO kv (key, value) VALUES ('{old}', '{big}') ON CONFLICT (key) DO UPDATE SET value = excluded.value"),
        format!("INSERT INTO kv (key, value) VALUES ('{key}', '{big}') ON CONFLICT DO NOTHING"),
    ] {
        let e = c.execute(&sql).expect_err(&sql[..60]);
        assert!(e.code() == Some(ErrorCode::ServerOverloaded), "{}: {e}", &sql[..60]);
    }
    assert_eq!(value_of(&mut c, &key), None);
    assert_eq!(value_of(&mut c, &old), Some(value(4000, on_full[0])));
    // Overwriting with a shorter value frees memory: it always has room.
    c.execute(&build::set(old.as_bytes(), b"short")).unwrap();
    // Reads and deletes go on, and a delete makes room again.
    assert_eq!(count(&mut c), written.len() as i64);
    for k in &on_full[1..9] {
        c.execute(&build::delete(format!("k:{k}").as_bytes())).unwrap();
    }
    c.execute(&build::set(key.as_bytes(), &value(4000, refused[0]))).unwrap();
    assert_eq!(value_of(&mut c, &key), Some(value(4000, refused[0])));
}

#[test]
fn allkeys_lru_evictions_are_durable_a_crash_brings_no_evicted_key_back() {
    let s =
        Server::start_with(SHARDS, &["--max-memory", "48mb", "--eviction", "allkeys-lru", "--audit", "off"]);
    let mut c = s.client();
    let n = 12_000u64;
    let stmts: Vec<String> =
        (0..n).map(|k| build::set(format!("k:{k}").as_bytes(), &value(4000, k))).collect();
    for r in pipelined(&mut c, &stmts) {
        r.unwrap();
    }
    let evicted = stat(&mut c, "evicted_keys");
    let kept = all_keys(&mut c);
    assert!(evicted > 0, "48 MB held 48 MB of values");
    assert_eq!(kept.len() as i64 + evicted, n as i64, "each write was of a new key");
    // The newest writes are the last to be evicted.
    assert!(kept.contains(format!("k:{}", n - 1).as_bytes()));
    let s = Server::start_in(s.crash(), SHARDS, &["--max-memory", "48mb", "--eviction", "allkeys-lru"]);
    let mut c = s.client();
    let after = all_keys(&mut c);
    let back: Vec<_> =
        after.difference(&kept).take(5).map(|k| String::from_utf8_lossy(k).into_owned()).collect();
    let lost: Vec<_> =
        kept.difference(&after).take(5).map(|k| String::from_utf8_lossy(k).into_owned()).collect();
    assert!(
        back.is_empty() && lost.is_empty(),
        "after a crash: evicted keys back {back:?}, kept keys lost {lost:?}"
    );
    for k in kept.iter().take(50) {
        let k = String::from_utf8(k.clone()).unwrap();
        let tag: u64 = k[2..].parse().unwrap();
        assert_eq!(value_of(&mut c, &k), Some(value(4000, tag)));
    }
    // Evictions are summed up in the log, at the latest when the server stops.
    let mut s = s;
    let more: Vec<String> =
        (0..2000u64).map(|k| build::set(format!("more:{k}").as_bytes(), &value(4000, k))).collect();
    pipelined(&mut c, &more).into_iter().for_each(|r| drop(r.unwrap()));
    assert!(stat(&mut c, "evicted_keys") > 0);
    assert!(s.terminate().success());
    let log = s.log_text();
    let line = log.lines().find(|l| l.contains("evicted keys to stay under --max-memory"));
    assert!(
        line.is_some_and(|l| l.contains("policy=\"allkeys-lru\"") || l.contains("policy=allkeys-lru")),
        "{log}"
    );
}

#[test]
fn volatile_ttl_evicts_the_nearest_expiry_first_and_never_a_key_without_one() {
    let s =
        Server::start_with(SHARDS, &["--max-memory", "48mb", "--eviction", "volatile-ttl", "--audit", "off"]);
    let mut c = s.client();
    let plain: Vec<String> =
        (0..1000u64).map(|k| build::set(format!("p:{k}").as_bytes(), &value(4000, k))).collect();
    for r in pipelined(&mut c, &plain) {
        r.unwrap();
    }
    // TTLs grow with the key's number: the low numbers expire first, so they go first.
    let n = 8000u64;
    let ttl: Vec<String> =
        (0..n).map(|k| build::set_ttl(format!("t:{k}").as_bytes(), &value(4000, k), 10_000 + k)).collect();
    for r in pipelined(&mut c, &ttl) {
        r.unwrap();
    }
    assert!(stat(&mut c, "evicted_keys") > 0);
    let keys = all_keys(&mut c);
    for k in 0..1000u64 {
        assert!(keys.contains(format!("p:{k}").as_bytes()), "p:{k}, without a TTL, was evicted");
    }
    for shard in 0..SHARDS {
        let on = |k: &u64| shard_of_key(format!("t:{k}").as_bytes(), SHARDS) == shard;
        let here: Vec<u64> = (0..n).filter(on).collect();
        let kept: Vec<u64> =
            here.iter().copied().filter(|k| keys.contains(format!("t:{k}").as_bytes())).collect();
        let first_kept = kept[0];
        assert!(
            here.iter().filter(|&&k| k > first_kept).all(|k| kept.contains(k)),
            "shard {shard}: a later expiry went before an earlier one"
        );
        assert!(kept.len() < here.len(), "shard {shard} evicted nothing");
    }
    // Once no key with a TTL is left, a write that needs room is refused.
    let mut i = 0u64;
    let e = loop {
        let r = c.execute(&build::set(format!("q:{i}").as_bytes(), &value(4000, i)));
        if let Err(e) = r {
            break e;
        }
        i += 1;
        assert!(i < 20_000);
    };
    assert!(e.code() == Some(ErrorCode::ServerOverloaded), "{e}");
    for k in 0..1000u64 {
        assert_eq!(value_of(&mut c, &format!("p:{k}")).map(|v| v.len()), Some(4000));
    }
}

#[test]
fn allkeys_lru_keeps_a_hot_set_hit_rate_under_a_flood_of_cold_writes() {
    let s = Server::start_with(
        SHARDS,
        &["--max-memory", "64mb", "--eviction", "allkeys-lru", "--durability", "none", "--audit", "off"],
    );
    let mut c = s.client();
    let hot: Vec<String> = (0..1000u64).map(|k| format!("hot:{k}")).collect();
    let writes: Vec<String> =
        hot.iter().enumerate().map(|(i, k)| build::set(k.as_bytes(), &value(1000, i as u64))).collect();
    for r in pipelined(&mut c, &writes) {
        r.unwrap();
    }
    let reads: Vec<String> = hot.iter().map(|k| build::get(k.as_bytes())).collect();
    // Each round writes 8 MB of cold keys, never read again, then reads the hot set: 20 rounds
    // turn the 36 MB or so left for data over about four times.
    let (mut hits, mut lookups) = (0usize, 0usize);
    for round in 0..20u64 {
        let cold: Vec<String> = (0..2000u64)
            .map(|k| build::set(format!("cold:{round}:{k}").as_bytes(), &value(4000, k)))
            .collect();
        for r in pipelined(&mut c, &cold) {
            r.unwrap();
        }
        for r in pipelined(&mut c, &reads) {
            lookups += 1;
            match r {
                Ok(_) => hits += 1,
                Err(e) => assert_eq!(e.code, ErrorCode::KeyNotFound, "{e}"),
            }
        }
    }
    let evicted = stat(&mut c, "evicted_keys");
    let rate = hits as f64 / lookups as f64;
    eprintln!("hot-set hit rate {rate:.4} with {evicted} cold keys evicted");
    assert!(evicted > 20_000, "the flood did not turn the store over: {evicted} evictions");
    assert!(rate >= 0.99, "hit rate {rate:.4}: LRU evicted the hot set");
}
