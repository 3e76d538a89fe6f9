//! Durability end to end: the real velocityd, killed with SIGKILL, restarted, its files damaged,
//! its disk filled, its data encrypted.

mod common;

use common::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use velocity::client::build;
use velocity::protocol::{ErrorCode, Value};

fn count(c: &mut velocity::client::Client) -> i64 {
    match c.execute("SELECT COUNT(*) FROM kv").unwrap().rows[0][0] {
        Value::Int(n) => n,
        ref v => panic!("{v:?}"),
    }
}

/// The one log file of a single-shard server.
fn only_log(data_dir: &Path) -> PathBuf {
    let logs: Vec<PathBuf> = files_under(&data_dir.join("wal"))
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("log-"))
        .collect();
    assert_eq!(logs.len(), 1, "{logs:?}");
    logs.into_iter().next().unwrap()
}

/// What each writer knows of its keys: the last acknowledged value's sequence number and the
/// highest one sent (an unacknowledged write may or may not have been made durable).
#[derive(Default, Clone, Copy)]
struct KeyState {
    acked: u64,
    sent: u64,
}

/// Writers pipelining batches of INSERTs until the server dies; returns writes acknowledged.
fn write_until_killed(s: &Server, state: &Arc<Mutex<HashMap<String, KeyState>>>, writers: usize) -> u64 {
    let stop = Arc::new(AtomicBool::new(false));
    let acked_total = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut threads = Vec::new();
    for w in 0..writers {
        let mut c = s.client();
        let state = state.clone();
        let stop = stop.clone();
        let acked_total = acked_total.clone();
        threads.push(std::thread::spawn(move || {
            let mut round = 0u64;
            while !stop.load(Ordering::Relaxed) {
                round += 1;
                // 16 statements a batch over 50 keys per writer: keys are rewritten often, so
                // "the last acknowledged value" is tested, not just presence.
                let batch: Vec<(String, u64)> = (0..16)
                    .map(|i| {
                        let k = format!("w{w}:{}", (round * 7 + i) % 50);
                        let seq = { state.lock().unwrap().get(&k).map_or(0, |s| s.sent) + 1 };
                        (k, seq)
                    })
                    .collect();
                let mut st = state.lock().unwrap();
                // A key may appear twice in a batch; the later write has the higher sequence.
                let mut seqs = Vec::new();
                for (k, _) in &batch {
                    let e = st.entry(k.clone()).or_default();
                    e.sent += 1;
                    seqs.push(e.sent);
                }
                drop(st);
                let sql: Vec<String> = batch
                    .iter()
                    .zip(&seqs)
                    .map(|((k, _), seq)| build::set(k.as_bytes(), format!("{seq}").as_bytes()))
                    .collect();
                match c.pipeline(&sql) {
                    Ok(replies) => {
                        let mut st = state.lock().unwrap();
                        for (((k, _), seq), r) in batch.iter().zip(&seqs).zip(replies) {
                            if r.is_ok() {
                                let e = st.get_mut(k).unwrap();
                                e.acked = e.acked.max(*seq);
                                acked_total.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(150 + rand_below(400)));
    stop.store(true, Ordering::Relaxed);
    threads.into_iter().for_each(|t| t.join().unwrap_or_else(|_| panic!("writer panicked")));
    acked_total.load(Ordering::Relaxed)
}

fn rand_below(n: u64) -> u64 {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).unwrap();
    u64::from_le_bytes(b) % n
}

/// Every acknowledged write is there with its last acknowledged value (or a later one that was
/// sent and may have become durable before the crash).
fn check_state(c: &mut velocity::client::Client, state: &HashMap<String, KeyState>) -> usize {
    for (k, s) in state {
        let got = value_of(c, k).map(|v| String::from_utf8(v).unwrap().parse::<u64>().unwrap());
        match got {
            None => assert_eq!(s.acked, 0, "{k}: acknowledged write {} lost", s.acked),
            Some(v) => assert!(
                v >= s.acked && v <= s.sent,
                "{k}: found {v}, acknowledged {} (sent up to {})",
                s.acked,
                s.sent
            ),
        }
    }
    state.len()
}

#[test]
fn crash_cycles_keep_every_acknowledged_write() {
    let cycles: usize = std::env::var("VELOCITY_CRASH_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let state = Arc::new(Mutex::new(HashMap::new()));
    let mut s = Server::start_with(2, &["--audit", "off"]);
    let mut total_acked = 0;
    let mut checks = 0;
    for cycle in 0..cycles {
        // Kill the server while the writers run: they see the connection drop.
        let killer = {
            let pid = s.child.id() as i32;
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100 + rand_below(300)));
                // SAFETY: signalling our own child.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            })
        };
        total_acked += write_until_killed(&s, &state, 4);
        killer.join().unwrap();
        let dir = s.crash();
        // Restart with the same or another number of cores: records are routed by key.
        s = Server::start_in(dir, 1 + cycle % 2, &["--audit", "off"]);
        let mut c = s.client();
        let keys = check_state(&mut c, &state.lock().unwrap());
        checks += keys;
        eprintln!("cycle {}: {total_acked} writes acknowledged so far, {keys} keys checked", cycle + 1);
    }
    eprintln!(
        "crash test: {cycles} SIGKILL cycles, {total_acked} acknowledged writes, {checks} key checks against the last acknowledged value: all kept"
    );
    assert!(total_acked > 0);
}

#[test]
fn a_torn_last_record_is_dropped_with_a_log_line() {
    let mut s = Server::start_with(1, &["--audit", "off"]);
    let mut c = s.client();
    for i in 0..100 {
        c.execute(&build::set(format!("k{i}").as_bytes(), b"v")).unwrap();
    }
    drop(c);
    let dir = s.keep_data();
    // A crash mid-write: a record header that promises more than follows.
    let log = only_log(&dir);
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    std::io::Write::write_all(&mut f, &[200, 0, 0, 0, 1, 2, 3, 4, 9, 9, 9]).unwrap();
    drop(f);
    let s = Server::start_in(dir, 1, &["--audit", "off"]);
    let mut c = s.client();
    assert_eq!(count(&mut c), 100);
    assert!(s.log_text().contains("torn last write"), "{}", s.log_text());
}

/// A log holding a cluster node's Raft state is refused whole: read as a single node's log, its
/// Raft records would be skipped and the replicas' state lost.
#[test]
fn a_log_with_raft_records_is_refused_not_skipped() {
    use velocity::cluster::log::{encode_records, LogWrite};
    use velocity::durability::{scan_file, seal_record, FileId, FileKind};
    let mut s = Server::start_with(1, &["--audit", "off"]);
    let mut c = s.client();
    c.execute(&build::set(b"k", b"v")).unwrap();
    drop(c);
    let dir = s.keep_data();
    let log = only_log(&dir);
    let mut bytes = std::fs::read(&log).unwrap();
    // Unencrypted, so the record's place is not part of its seal: any FileId reads it.
    let file = FileId { kind: FileKind::Log, generation: 0, shard: 0, index: 0 };
    let seq = scan_file(&bytes, &file, None).unwrap().last_seq() + 1;
    let hs = LogWrite::HardState(Default::default());
    let payload = encode_records(0, &hs, 1 << 20).unwrap().remove(0);
    let at = bytes.len() as u64;
    seal_record(&mut bytes, &payload, &file, at, seq, None);
    std::fs::write(&log, &bytes).unwrap();
    let (status, err) = start_expecting_refusal(&dir, &[]);
    assert!(!status.success());
    assert!(err.contains("cluster node's Raft state") && err.contains(log.to_str().unwrap()), "{err}");
}

/// Every file under `dir` with its bytes.
fn snapshot_of(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v: Vec<_> = files_under(dir)
        .into_iter()
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    v.sort();
    v
}

/// A flipped byte with intact records after it is damage, wherever it is — near the end too,
/// where it used to be dropped as a "torn tail" with the acknowledged writes after it. Start-up
/// refuses without changing a byte; repair cuts the log there and keeps what it cut.
#[test]
fn damage_anywhere_stops_start_up_and_repair_keeps_what_it_cuts() {
    // Near the end (1,000 records of ~1 KB before it: within a torn write's size) and far from it.
    for from_end in [1000usize, 6000] {
        let mut s = Server::start_with(1, &["--audit", "off"]);
        let mut c = s.client();
        let value = vec![b'x'; 1000];
        for chunk in 0..80 {
            let sql: Vec<String> =
                (0..100).map(|i| build::set(format!("k{:05}", chunk * 100 + i).as_bytes(), &value)).collect();
            c.pipeline(&sql).unwrap().into_iter().for_each(|r| assert!(r.is_ok()));
        }
        drop(c);
        let dir = s.keep_data();
        let log = only_log(&dir);
        let mut bytes = std::fs::read(&log).unwrap();
        // Inside record number 8000 - from_end (all records have the same size).
        let record = (bytes.len() - 16) / 8000;
        let at = bytes.len() - from_end * record + record / 2;
        bytes[at] ^= 0x04;
        std::fs::write(&log, &bytes).unwrap();
        let before = snapshot_of(&dir.join("wal"));
        // Start-up refuses, naming the file, the offset and what repair would do, and writes
        // nothing (no new generation over the damage).
        let (status, err) = start_expecting_refusal(&dir, &[]);
        assert!(!status.success());
        assert!(
            err.contains(log.to_str().unwrap())
                && err.contains("damaged at offset")
                && err.contains("intact records follow")
                && err.contains("repair")
                && err.contains("quarantine"),
            "{err}"
        );
        assert!(snapshot_of(&dir.join("wal")) == before, "a refused start-up changed the data files");
        // Repair says what it cuts and keeps it; start-up then works with the records before.
        let out = Command::new(bin("velocityd")).args(["repair", "--data-dir"]).arg(&dir).output().unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(said.contains("keeping") && said.contains("moved them to"), "{said}");
        let q: Vec<PathBuf> = files_under(&dir.join("quarantine"));
        assert_eq!(q.len(), 1, "{q:?}");
        let cut = std::fs::read(&q[0]).unwrap();
        assert!(bytes.ends_with(&cut) && cut.len() == from_end * record, "{} bytes kept", cut.len());
        let kept = std::fs::metadata(&log).unwrap().len() as usize;
        assert_eq!(kept + cut.len(), bytes.len());
        let s = Server::start_in(dir, 1, &["--audit", "off"]);
        let mut c = s.client();
        let n = count(&mut c) as usize;
        assert_eq!(n, 8000 - from_end, "records kept");
        // The kept ones are a prefix of what was written.
        assert_eq!(value_of(&mut c, "k00000"), Some(value.clone()));
        assert_eq!(value_of(&mut c, &format!("k{:05}", n - 1)), Some(value));
        assert_eq!(value_of(&mut c, &format!("k{:05}", n)), None);
    }
}

#[test]
fn recovery_with_a_different_number_of_cores() {
    let s = Server::start_with(2, &["--audit", "off"]);
    let mut c = s.client();
    let rows: Vec<String> = (0..500).map(|i| format!("('key:{i:03}', 'v{i}')")).collect();
    c.execute(&format!("INSERT INTO kv (key, value) VALUES {}", rows.join(", "))).unwrap();
    c.execute("DELETE FROM kv WHERE key LIKE 'key:1%'").unwrap();
    c.execute("INSERT INTO kv (key, value, ttl) VALUES ('short', 'lived', 1)").unwrap();
    drop(c);
    let mut dir = s.crash();
    std::thread::sleep(Duration::from_millis(1100));
    for cores in [1, 2, 1] {
        let s = Server::start_in(dir, cores, &["--audit", "off"]);
        let mut c = s.client();
        assert_eq!(count(&mut c), 400, "with {cores} cores");
        assert_eq!(value_of(&mut c, "key:250"), Some(b"v250".to_vec()));
        assert_eq!(value_of(&mut c, "key:150"), None);
        // Expired keys are not brought back.
        assert_eq!(value_of(&mut c, "short"), None);
        let ordered = c.execute("SELECT key FROM kv WHERE key >= 'key:2' LIMIT 3").unwrap();
        assert_eq!(ordered.rows.len(), 3);
        assert_eq!(ordered.rows[0][0], Value::Bytes(b"key:200".to_vec()));
        let mut s = s;
        dir = s.keep_data();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_full_disk_gives_storage_error_and_loses_nothing_acknowledged() {
    let dir = temp_dir("full");
    add_user(&dir, "alice", PASSWORD, "readwrite");
    // Room for the start-up files and a few hundred records, then EFBIG.
    let s = Server::start_limited(dir, 1, &["--audit", "off"], None, Some(24 * 1024));
    let mut c = s.client();
    let value = vec![b'v'; 200];
    let mut acked = Vec::new();
    let mut refused = None;
    for i in 0..1000 {
        let k = format!("k{i}");
        match c.execute(&build::set(k.as_bytes(), &value)) {
            Ok(_) => acked.push(k),
            Err(e) => {
                assert_eq!(e.code(), Some(ErrorCode::StorageError), "{e}");
                refused = Some(k);
                break;
            }
        }
    }
    let refused = refused.expect("the file-size limit was reached");
    assert!(!acked.is_empty());
    // The refused write is not visible; everything acknowledged is; the server still serves.
    assert_eq!(value_of(&mut c, &refused), None);
    assert_eq!(count(&mut c), acked.len() as i64);
    // The same write again: still no room, still refused.
    let e = c.execute(&build::set(refused.as_bytes(), &value)).unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::StorageError));
    let status = c.execute("SHOW STATUS").unwrap();
    assert!(status
        .rows
        .iter()
        .any(|r| r[0] == Value::Bytes(b"storage_errors".to_vec()) && r[1] != Value::Int(0)));
    assert!(s.log_text().contains("STORAGE_ERROR"), "{}", s.log_text());
    drop(c);
    // After a crash and a restart with room again: exactly the acknowledged writes.
    let dir = s.crash();
    let s = Server::start_in(dir, 1, &["--audit", "off"]);
    let mut c = s.client();
    assert_eq!(count(&mut c), acked.len() as i64);
    assert_eq!(value_of(&mut c, acked.last().unwrap()), Some(value));
    assert_eq!(value_of(&mut c, &refused), None);
}

#[test]
fn snapshots_truncate_the_log_and_recovery_uses_them() {
    let s = Server::start_with(1, &["--audit", "off", "--snapshot-log-bytes", "65536"]);
    let mut c = s.client();
    for round in 0..20 {
        let sql: Vec<String> = (0..200)
            .map(|i| build::set(format!("k{i}").as_bytes(), format!("r{round}").as_bytes()))
            .collect();
        c.pipeline(&sql).unwrap();
        std::thread::sleep(Duration::from_millis(60));
    }
    // The snapshot check runs every 500 ms. Writes keep coming meanwhile: a snapshot must not
    // wait for a quiet moment.
    let busy = Arc::new(AtomicBool::new(true));
    let writer = {
        let mut w = s.client();
        let busy = busy.clone();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while busy.load(Ordering::Relaxed) {
                let sql: Vec<String> =
                    (0..16).map(|i| build::set(format!("k{i}").as_bytes(), b"r19")).collect();
                w.pipeline(&sql).unwrap();
                n += 16;
            }
            n
        })
    };
    std::thread::sleep(Duration::from_millis(1500));
    busy.store(false, Ordering::Relaxed);
    let streamed = writer.join().unwrap();
    let stats = c.execute("SHOW STATS").unwrap();
    let snaps =
        stats.rows.iter().find(|r| r[0] == Value::Bytes(b"wal_snapshots".to_vec())).unwrap()[1].clone();
    assert!(matches!(snaps, Value::Int(n) if n >= 2), "{snaps:?}");
    // Everything written so far went through snapshots, and the logs behind them are gone:
    // once the writes stop, the next snapshot leaves only the new, empty log.
    let written_bytes = (20 * 200 + streamed) * 36;
    let dir = s.data_dir.clone();
    let log_bytes = || -> u64 {
        files_under(&dir.join("wal"))
            .iter()
            .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("log-"))
            .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
            .sum()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while log_bytes() >= 65536 {
        assert!(std::time::Instant::now() < deadline, "{} log bytes of {written_bytes} written", log_bytes());
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(c);
    let dir = s.crash();
    let s = Server::start_in(dir, 1, &["--audit", "off"]);
    let mut c = s.client();
    assert_eq!(count(&mut c), 200);
    assert_eq!(value_of(&mut c, "k7"), Some(b"r19".to_vec()));
}

#[test]
fn encryption_at_rest_hides_keys_and_values_and_refuses_a_wrong_key() {
    let keys = temp_dir("keys");
    let key = keys.join("k1");
    let out = Command::new(bin("velocityd")).args(["keygen", "--out"]).arg(&key).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::read_to_string(&key).unwrap().trim().len(), 64);
    // keygen never overwrites a key.
    assert!(!Command::new(bin("velocityd"))
        .args(["keygen", "--out"])
        .arg(&key)
        .output()
        .unwrap()
        .status
        .success());
    let other = keys.join("k2");
    std::fs::write(&other, [7u8; 32]).unwrap();

    let key_arg = key.to_str().unwrap();
    let extra = ["--audit", "off", "--snapshot-log-bytes", "8192", "--encryption-key-file", key_arg];
    let mut s = Server::start_with(1, &extra);
    let mut c = s.client();
    for i in 0..300 {
        c.execute(&build::set(format!("secret-key-{i}").as_bytes(), format!("secret-value-{i}").as_bytes()))
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(1200)); // a snapshot, too
    drop(c);
    let dir = s.keep_data();
    for f in files_under(&dir.join("wal")) {
        let bytes = std::fs::read(&f).unwrap();
        for needle in [&b"secret-key-"[..], &b"secret-value-"[..]] {
            assert!(!bytes.windows(needle.len()).any(|w| w == needle), "{} holds plain text", f.display());
        }
    }
    assert!(files_under(&dir.join("wal")).iter().any(|p| p.to_str().unwrap().contains("snap-")));
    let (status, err) = start_expecting_refusal(&dir, &["--encryption-key-file", other.to_str().unwrap()]);
    assert!(!status.success());
    assert!(err.contains("different key"), "{err}");
    let (status, err) = start_expecting_refusal(&dir, &[]);
    assert!(!status.success());
    assert!(err.contains("--encryption-key-file"), "{err}");
    // The right key: everything is there.
    let s = Server::start_in(dir, 1, &extra);
    let mut c = s.client();
    assert_eq!(count(&mut c), 300);
    assert_eq!(value_of(&mut c, "secret-key-299"), Some(b"secret-value-299".to_vec()));
    let _ = std::fs::remove_dir_all(&keys);
}

#[test]
fn durability_none_refuses_a_directory_with_durable_data() {
    let mut s = Server::start_with(1, &["--audit", "off"]);
    s.client().execute("INSERT INTO kv (key, value) VALUES ('a', 'b')").unwrap();
    let dir = s.keep_data();
    let (status, err) = start_expecting_refusal(&dir, &["--durability", "none"]);
    assert!(!status.success());
    assert!(err.contains("holds durable data"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn periodic_durability_keeps_what_was_synced_and_everything_on_a_clean_stop() {
    let extra = ["--audit", "off", "--durability", "periodic", "--fsync-interval-ms", "100"];
    let s = Server::start_with(2, &extra);
    let mut c = s.client();
    let status = c.execute("SHOW STATUS").unwrap();
    assert!(status.rows.iter().any(|r| r[1] == Value::Bytes(b"periodic (fdatasync every 100 ms)".to_vec())));
    for i in 0..200 {
        c.execute(&build::set(format!("k{i}").as_bytes(), b"v")).unwrap();
    }
    // Past the interval, a crash loses nothing of the above.
    std::thread::sleep(Duration::from_millis(400));
    drop(c);
    let dir = s.crash();
    let mut s = Server::start_in(dir, 1, &extra);
    let mut c = s.client();
    assert_eq!(count(&mut c), 200);
    // A clean stop (SIGTERM) writes and syncs whatever is queued.
    for i in 200..300 {
        c.execute(&build::set(format!("k{i}").as_bytes(), b"v")).unwrap();
    }
    drop(c);
    assert!(s.terminate().success());
    let dir = s.keep_data();
    let s = Server::start_in(dir, 2, &extra);
    assert_eq!(count(&mut s.client()), 300);
}

#[test]
fn writes_forwarded_across_cores_are_durable_with_either_mesh() {
    for mesh in ["glommio", "crossbeam"] {
        let s = Server::start_with(2, &["--audit", "off", "--mesh", mesh]);
        let mut c = s.client();
        // Keys spread over both shards: half of them are forwarded to the other core.
        let rows: Vec<String> = (0..300).map(|i| format!("('m{i}', 'v{i}')")).collect();
        assert_eq!(
            c.execute(&format!("INSERT INTO kv (key, value) VALUES {}", rows.join(", "))).unwrap().affected,
            300
        );
        let sql: Vec<String> = (300..600).map(|i| build::set(format!("m{i}").as_bytes(), b"x")).collect();
        assert!(c.pipeline(&sql).unwrap().iter().all(|r| r.is_ok()));
        drop(c);
        let dir = s.crash();
        let s = Server::start_in(dir, 2, &["--audit", "off", "--mesh", mesh]);
        let mut c = s.client();
        assert_eq!(count(&mut c), 600, "with the {mesh} mesh");
        assert_eq!(value_of(&mut c, "m7"), Some(b"v7".to_vec()));
    }
}

/// Snapshots under a steady stream of writes, with the data directory given as a relative path
/// (glommio opens directories by absolute path only: the server resolves it at start).
#[test]
fn snapshots_with_a_relative_data_dir_under_load() {
    use velocity::client::trust::{NewHost, Trust};
    use velocity::client::{Client, ConnectOptions, Credentials};
    let parent = temp_dir("rel");
    let dir = parent.join("data");
    add_user(&dir, "alice", PASSWORD, "readwrite");
    let port = free_port();
    let mut child = Command::new(bin("velocityd"))
        .current_dir(&parent)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--cores", "1", "--plaintext", "--audit", "off"])
        .args(["--snapshot-log-bytes", "65536", "--data-dir", "data"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut opts = ConnectOptions::new("127.0.0.1", port);
    opts.tls = false;
    opts.trust = Trust { known_hosts: Some(parent.join("kh")), new_host: NewHost::Accept, pinned: None };
    let creds = Credentials::Password { user: "alice".into(), password: PASSWORD.into() };
    let mut c = (0..200)
        .find_map(|_| {
            std::thread::sleep(Duration::from_millis(25));
            Client::connect(&opts, &creds).ok()
        })
        .expect("velocityd started");
    let started = std::time::Instant::now();
    let mut round = 0u64;
    while started.elapsed() < Duration::from_millis(1500) {
        round += 1;
        let sql: Vec<String> =
            (0..64).map(|i| build::set(format!("k{i}").as_bytes(), format!("r{round}").as_bytes())).collect();
        assert!(c.pipeline(&sql).unwrap().iter().all(|r| r.is_ok()));
    }
    let stats = c.execute("SHOW STATS").unwrap();
    let snaps =
        stats.rows.iter().find(|r| r[0] == Value::Bytes(b"wal_snapshots".to_vec())).unwrap()[1].clone();
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&parent);
    assert!(matches!(snaps, Value::Int(n) if n >= 1), "{snaps:?}");
}

fn generation(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("wal/CURRENT")).unwrap()
}

/// A restart with the same --cores goes on with the files in place (no new generation, no new
/// space), so a server whose disk filled up starts again: here its file-size limit is below the
/// size of its data, as a full disk would be. Reads work; writes that find no room are refused.
#[test]
fn a_server_whose_disk_filled_up_starts_again() {
    let mut s = Server::start_with(1, &["--audit", "off"]);
    let mut c = s.client();
    let value = vec![b'v'; 500];
    for chunk in 0..4 {
        let sql: Vec<String> =
            (0..100).map(|i| build::set(format!("k{}", chunk * 100 + i).as_bytes(), &value)).collect();
        assert!(c.pipeline(&sql).unwrap().iter().all(|r| r.is_ok()));
    }
    drop(c);
    let dir = s.keep_data();
    let before = generation(&dir);
    let s = Server::start_limited(dir, 1, &["--audit", "off"], None, Some(64 * 1024));
    let mut c = s.client();
    assert_eq!(count(&mut c), 400);
    assert_eq!(value_of(&mut c, "k399"), Some(value.clone()));
    let e = c.execute(&build::set(b"one more", &value)).unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::StorageError), "{e}");
    assert_eq!(generation(&s.data_dir), before, "a restart with the same cores rewrote the data");
    drop(c);
    // With room again, nothing was lost and the refused write is not there.
    let dir = s.crash();
    let s = Server::start_in(dir, 1, &["--audit", "off"]);
    let mut c = s.client();
    assert_eq!(count(&mut c), 400);
    assert_eq!(value_of(&mut c, "one more"), None);
}

/// A snapshot that cannot be written leaves no temporary file behind, and every file the server
/// writes under the data directory is readable by its owner only.
#[test]
fn failed_snapshots_leave_nothing_behind_and_data_files_are_private() {
    let mut s = Server::start_with(1, &["--audit", "on"]);
    let mut c = s.client();
    let value = vec![b'v'; 1000];
    let sql: Vec<String> = (0..200).map(|i| build::set(format!("k{i}").as_bytes(), &value)).collect();
    assert!(c.pipeline(&sql).unwrap().iter().all(|r| r.is_ok()));
    drop(c);
    let dir = s.keep_data();
    // Room for the log to grow a little, not for a snapshot of 200 KB; a small threshold makes
    // the server try one at once.
    let s = Server::start_limited(
        dir,
        1,
        &["--audit", "on", "--snapshot-log-bytes", "4096"],
        None,
        Some(150 * 1024),
    );
    let mut c = s.client();
    // The log is already past the limit: this write finds no room either.
    let e = c.execute(&build::set(b"refused", b"x")).unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::StorageError));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !s.log_text().contains("snapshot failed") {
        assert!(std::time::Instant::now() < deadline, "no snapshot was tried:\n{}", s.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    let tmp: Vec<PathBuf> = files_under(&s.data_dir.join("wal"))
        .into_iter()
        .filter(|p| p.to_str().unwrap().ends_with(".tmp"))
        .collect();
    assert!(tmp.is_empty(), "{tmp:?}");
    assert_eq!(count(&mut c), 200);
    use std::os::unix::fs::PermissionsExt;
    for f in files_under(&s.data_dir) {
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{} is mode {mode:o}", f.display());
    }
}
