//! `velocityd backup` against a running server under write load, and `velocityd restore` into a
//! new data directory: every write acknowledged before the backup started is in the restored
//! server, nothing that was never written is, and encrypted data stays encrypted.

mod common;

use common::*;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use velocity::client::build;

const WRITERS: usize = 4;

fn value(w: usize, i: usize) -> String {
    format!("backup-value-{w}-{i}")
}

/// Writers insert `w-i` keys until told to stop; each records how many it has had acknowledged.
fn start_writers(
    server: &Server,
    stop: &Arc<AtomicBool>,
) -> (Vec<std::thread::JoinHandle<()>>, Arc<Mutex<Vec<usize>>>) {
    let acked = Arc::new(Mutex::new(vec![0usize; WRITERS]));
    let threads = (0..WRITERS)
        .map(|w| {
            let mut c = server.client();
            let (stop, acked) = (stop.clone(), acked.clone());
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    // Ten rows a statement, across both shards: the log grows fast enough for
                    // snapshots to come and go while the backup copies.
                    let rows: Vec<(String, String)> =
                        (i..i + 10).map(|j| (format!("{w}-{j}"), value(w, j))).collect();
                    c.execute(&build::set_many(&rows)).unwrap();
                    i += 10;
                    acked.lock().unwrap()[w] = i;
                }
            })
        })
        .collect();
    (threads, acked)
}

fn snapshots(c: &mut velocity::client::Client) -> i64 {
    let stats = c.execute("SHOW STATS").unwrap();
    match stats.rows.iter().find(|r| r[0] == velocity::protocol::Value::Bytes(b"wal_snapshots".to_vec())) {
        Some(r) => match r[1] {
            velocity::protocol::Value::Int(n) => n,
            _ => panic!("{r:?}"),
        },
        None => panic!("no wal_snapshots in SHOW STATS"),
    }
}

fn velocityd(args: &[&str]) -> String {
    let out = Command::new(bin("velocityd")).args(args).output().unwrap();
    assert!(out.status.success(), "velocityd {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn backup_restore_under_load(extra: &[&str], key_file: Option<&str>) {
    let server = Server::start_with(2, extra);
    let stop = Arc::new(AtomicBool::new(false));
    let (threads, acked) = start_writers(&server, &stop);
    // Under way: snapshots come and go (each removes the files it replaces) while the backup
    // copies, as they do under load.
    let mut probe = server.client();
    while acked.lock().unwrap().iter().sum::<usize>() < 5_000 || snapshots(&mut probe) == 0 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let before: Vec<usize> = acked.lock().unwrap().clone();
    let backup = temp_dir("backup").join("b");
    let said = velocityd(&[
        "backup",
        "--data-dir",
        server.data_dir.to_str().unwrap(),
        "--to",
        backup.to_str().unwrap(),
    ]);
    assert!(said.contains("backed up"), "{said}");
    // The writers went on during the backup: it was taken under load.
    let after_backup: usize = acked.lock().unwrap().iter().sum();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let written: Vec<usize> = acked.lock().unwrap().clone();
    assert!(after_backup > before.iter().sum::<usize>(), "no write ran during the backup");
    let restored = temp_dir("restored").join("d");
    let mut args =
        vec!["restore", "--from", backup.to_str().unwrap(), "--data-dir", restored.to_str().unwrap()];
    if let Some(k) = key_file {
        args.extend(["--encryption-key-file", k]);
    }
    let said = velocityd(&args);
    assert!(said.contains("restored"), "{said}");
    // Restored with another --cores: the key space is laid out afresh, nothing lost.
    let server2 = Server::start_in(restored, 1, extra);
    let mut c = server2.client();
    for (w, &n) in before.iter().enumerate() {
        for i in (0..n).step_by(7).chain(n.checked_sub(1)) {
            assert_eq!(
                value_of(&mut c, &format!("{w}-{i}")),
                Some(value(w, i).into_bytes()),
                "{w}-{i}, acknowledged before the backup"
            );
        }
    }
    let count =
        |c: &mut velocity::client::Client| match &c.execute("SELECT COUNT(*) FROM kv").unwrap().rows[0][0] {
            velocity::protocol::Value::Int(n) => *n as usize,
            other => panic!("{other:?}"),
        };
    let n = count(&mut c);
    assert!(n >= before.iter().sum::<usize>() && n <= written.iter().sum::<usize>(), "{n} keys");
    // Users came along: the restored server takes the same logins (above), and its own data
    // directory is a working one.
    c.execute(&build::set(b"after-restore", b"ok")).unwrap();
}

#[test]
fn a_backup_under_write_load_restores_every_acknowledged_write() {
    backup_restore_under_load(&["--snapshot-log-bytes", "8192"], None);
}

#[test]
fn an_encrypted_backup_stays_encrypted_and_restores_with_its_key() {
    let keys = temp_dir("keys");
    let key = keys.join("k");
    velocityd(&["keygen", "--out", key.to_str().unwrap()]);
    let key = key.to_str().unwrap().to_string();
    backup_restore_under_load(&["--snapshot-log-bytes", "8192", "--encryption-key-file", &key], Some(&key));
    // The backup's files never hold a value in the clear.
    let server = Server::start_with(1, &["--encryption-key-file", &key]);
    server.client().execute(&build::set(b"plain?", b"a-value-to-look-for")).unwrap();
    let backup = temp_dir("backup2").join("b");
    velocityd(&["backup", "--data-dir", server.data_dir.to_str().unwrap(), "--to", backup.to_str().unwrap()]);
    for f in files_under(&backup) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(!bytes.windows(19).any(|w| w == b"a-value-to-look-for"), "{} holds the value", f.display());
    }
    // Without the key the restore cannot check the backup, and says so.
    let restored = temp_dir("restored2").join("d");
    let out = Command::new(bin("velocityd"))
        .args(["restore", "--from", backup.to_str().unwrap(), "--data-dir", restored.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not recover"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn backup_and_restore_refuse_what_is_not_theirs() {
    let server = Server::start(1);
    server.client().execute(&build::set(b"k", b"v")).unwrap();
    let dir = temp_dir("nonempty");
    std::fs::write(dir.join("x"), "x").unwrap();
    for args in [
        vec!["backup", "--data-dir", server.data_dir.to_str().unwrap(), "--to", dir.to_str().unwrap()],
        vec![
            "restore",
            "--from",
            dir.to_str().unwrap(),
            "--data-dir",
            temp_dir("r").join("d").to_str().unwrap(),
        ],
        vec![
            "restore",
            "--from",
            server.data_dir.to_str().unwrap(),
            "--data-dir",
            server.data_dir.to_str().unwrap(),
        ],
    ] {
        let out = Command::new(bin("velocityd")).args(&args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("not empty") || err.contains("not a complete backup"), "{args:?}: {err}");
    }
}
