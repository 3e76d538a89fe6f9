//! `velocityd backup` and `velocityd restore`: a copy of a data directory taken while its server
//! runs (or not), by the data directory's own rules rather than over a connection.
//!
//! Why it is consistent: a shard's durable state is its newest snapshot plus its logs from that
//! index on, and the server only ever appends to the last log, renames a finished snapshot into
//! place, and then unlinks what the snapshot replaces. The backup lists a shard's files and opens
//! every one of them before reading any (an opened file stays readable after an unlink); if one
//! vanished in between (a snapshot finished meanwhile), it lists again. It then copies each file
//! as it is when read: the last log up to wherever the writer is, so its copy may end in the
//! middle of a record, which recovery drops as a torn tail. A write acknowledged before the
//! backup started was synced into a log that the listing sees, so it is in the backup.
//!
//! What it does not give: one point in time across shards. Each shard's copy is its state at
//! some moment during the backup, as after a crash; a multi-row statement that spans shards and
//! runs while the backup runs may be in it on some shards only (such a statement was never
//! atomic across shards). Files are copied byte for byte, so encrypted data stays encrypted.

use super::{current, indexes, log_path, shard_dir, snap_path, sync_dir, wal_dir};
use crate::durability::Cipher;
use crate::limits::BACKUP_LIST_RETRIES;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

/// What a backup or a restore copied.
#[derive(Debug, Default)]
pub struct Copied {
    pub files: usize,
    pub bytes: u64,
    pub generation: u64,
    pub shards: usize,
}

/// Files of the data directory that are the server's own, not its data: never copied.
fn is_lock(name: &str) -> bool {
    name == "LOCK" || name.ends_with(".lock")
}

fn make_dir(dir: &Path) -> Result<(), String> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))
}

/// `dir` must not exist, or be empty: a backup or restore never mixes with other files.
fn fresh_dir(dir: &Path) -> Result<(), String> {
    match std::fs::read_dir(dir).map(|mut entries| entries.next().is_some()) {
        Ok(true) => Err(format!("{} is not empty; give a new directory", dir.display())),
        Ok(false) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => make_dir(dir),
        Err(e) => Err(format!("cannot read {}: {e}", dir.display())),
    }
}

/// Copy what `from` holds now into a new file `to` (0600), synced; its size.
fn copy_open(mut from: File, to: &Path) -> Result<u64, String> {
    let err = |e: std::io::Error| format!("cannot write {}: {e}", to.display());
    let mut out =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(to).map_err(err)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = from.read(&mut buf).map_err(|e| format!("cannot read for {}: {e}", to.display()))?;
        if k == 0 {
            break;
        }
        out.write_all(&buf[..k]).map_err(err)?;
        n += k as u64;
    }
    out.sync_all().map_err(err)?;
    Ok(n)
}

/// The newest snapshot of a shard and its logs from that index on, all opened; None when a
/// file was unlinked between the listing and the opening (a snapshot finished: list again).
fn open_shard(dir: &Path) -> Result<Option<Vec<(String, File)>>, String> {
    let snaps = indexes(dir, "snap-")?;
    let base = snaps.last().copied();
    let mut names: Vec<(String, std::path::PathBuf)> = Vec::new();
    if let Some(k) = base {
        names.push((format!("snap-{k}"), snap_path(dir, k)));
    }
    for k in indexes(dir, "log-")?.into_iter().filter(|k| base.is_none_or(|b| *k >= b)) {
        names.push((format!("log-{k}"), log_path(dir, k)));
    }
    let mut open = Vec::new();
    for (name, path) in names {
        match File::open(&path) {
            Ok(f) => open.push((name, f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot open {}: {e}", path.display())),
        }
    }
    Ok(Some(open))
}

/// Back up `data_dir` into the new directory `to`: its users, keys and identity, and every
/// shard's snapshot and logs; CURRENT last, so that a backup cut short is not taken for one.
pub fn backup(data_dir: &Path, to: &Path) -> Result<Copied, String> {
    let Some((generation, shards)) = current(data_dir)? else {
        return Err(format!("{}: no durable data to back up (no wal/CURRENT)", data_dir.display()));
    };
    fresh_dir(to)?;
    let mut c = Copied { generation, shards, ..Copied::default() };
    for e in std::fs::read_dir(data_dir).map_err(|e| format!("cannot read {}: {e}", data_dir.display()))? {
        let e = e.map_err(|e| format!("cannot read {}: {e}", data_dir.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !e.file_type().map_err(|e| e.to_string())?.is_file() || is_lock(&name) {
            continue;
        }
        let f = File::open(e.path()).map_err(|err| format!("cannot open {}: {err}", e.path().display()))?;
        c.bytes += copy_open(f, &to.join(&name))?;
        c.files += 1;
    }
    for s in 0..shards {
        let dir = shard_dir(data_dir, generation, s);
        let mut tries = 0;
        let files = loop {
            if let Some(files) = open_shard(&dir)? {
                break files;
            }
            tries += 1;
            if tries > BACKUP_LIST_RETRIES {
                return Err(format!(
                    "{}: its files kept changing under the backup; try again",
                    dir.display()
                ));
            }
        };
        let out = shard_dir(to, generation, s);
        make_dir(&out)?;
        for (name, f) in files {
            c.bytes += copy_open(f, &out.join(name))?;
            c.files += 1;
        }
        sync_dir(&out)?;
    }
    let current =
        File::open(wal_dir(data_dir).join("CURRENT")).map_err(|e| format!("cannot open CURRENT: {e}"))?;
    c.bytes += copy_open(current, &wal_dir(to).join("CURRENT"))?;
    c.files += 1;
    for d in [wal_dir(to), to.to_path_buf()] {
        sync_dir(&d)?;
    }
    Ok(c)
}

/// Restore the backup `from` into the new data directory `to`, after checking that it
/// recovers (every snapshot and log readable, at most a torn last write per shard, which
/// recovery drops); encrypted backups need their key for the check. The keys it holds.
pub fn restore(
    from: &Path,
    to: &Path,
    cipher: Option<&Cipher>,
    now_ms: u64,
) -> Result<(Copied, u64), String> {
    let Some((generation, shards)) = current(from)? else {
        return Err(format!("{} is not a complete backup (no wal/CURRENT)", from.display()));
    };
    let recovered = super::recover(from, shards, cipher, now_ms)
        .map_err(|e| format!("the backup in {} does not recover: {e}", from.display()))?;
    if recovered.plain_files && cipher.is_some() {
        tracing::warn!("the backup holds files written without encryption");
    }
    let keys = recovered.stores.iter().map(|s| s.live_len(now_ms)).sum();
    fresh_dir(to)?;
    let mut c = Copied { generation, shards, ..Copied::default() };
    copy_tree(from, to, &mut c)?;
    Ok((c, keys))
}

fn copy_tree(from: &Path, to: &Path, c: &mut Copied) -> Result<(), String> {
    make_dir(to)?;
    for e in std::fs::read_dir(from).map_err(|e| format!("cannot read {}: {e}", from.display()))? {
        let e = e.map_err(|e| format!("cannot read {}: {e}", from.display()))?;
        let kind = e.file_type().map_err(|e| e.to_string())?;
        let target = to.join(e.file_name());
        if kind.is_dir() {
            copy_tree(&e.path(), &target, c)?;
        } else if kind.is_file() {
            let f =
                File::open(e.path()).map_err(|err| format!("cannot open {}: {err}", e.path().display()))?;
            c.bytes += copy_open(f, &target)?;
            c.files += 1;
        }
    }
    sync_dir(to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_is_its_newest_snapshot_and_the_logs_from_it_on_and_stays_readable_once_open() {
        let dir = std::env::temp_dir().join(format!("velocity-backup-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for name in ["snap-0", "log-0", "snap-1", "log-1", "log-2", "snap-2.tmp"] {
            std::fs::write(dir.join(name), name).unwrap();
        }
        let files = open_shard(&dir).unwrap().expect("nothing vanished");
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["snap-1", "log-1", "log-2"]);
        // A snapshot finishing now unlinks what it replaces: what the backup opened is still
        // there to copy.
        for name in ["snap-1", "log-1"] {
            std::fs::remove_file(dir.join(name)).unwrap();
        }
        let out = dir.join("copy");
        for (name, f) in files {
            copy_open(f, &out.with_extension(&name)).unwrap();
            assert_eq!(std::fs::read_to_string(out.with_extension(&name)).unwrap(), name);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
