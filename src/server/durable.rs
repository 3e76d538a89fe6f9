//! The durable state in the data directory, read and laid out at start-up (plain std::fs: this
//! runs before any executor) and repaired offline.
//!
//! ```text
//! D/wal/CURRENT            "generation G" and "shards N": the files that are the truth
//! D/wal/G/S/snap-K         shard S's snapshot K (entries as of some moment during its writing)
//! D/wal/G/S/log-K          shard S's writes from the start of snapshot K on
//! ```
//! Recovery loads, for every shard of the current generation, its newest snapshot and then its
//! logs from that index on, routing each key to the shard that owns it under the new `--cores`.
//! It then writes the result as generation G+1 (one snapshot per new shard, empty logs), switches
//! CURRENT with a rename, and removes generation G: a crash at any point leaves one complete
//! generation to start from.

use crate::durability::{
    apply::replay, file_header, read_snapshot, scan_file, Cipher, FileId, FileKind, Payload, SnapshotEncoder,
    Tail,
};
use crate::shard::shard_of_key;
use crate::store::{KeyRange, Store};
use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub fn wal_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("wal")
}

pub fn shard_dir(data_dir: &Path, generation: u64, shard: usize) -> PathBuf {
    wal_dir(data_dir).join(generation.to_string()).join(shard.to_string())
}

pub fn log_path(dir: &Path, index: u64) -> PathBuf {
    dir.join(format!("log-{index}"))
}

pub fn snap_path(dir: &Path, index: u64) -> PathBuf {
    dir.join(format!("snap-{index}"))
}

/// The generation and shard count CURRENT names, if there is one.
pub fn current(data_dir: &Path) -> Result<Option<(u64, usize)>, String> {
    let path = wal_dir(data_dir).join("CURRENT");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let field = |name: &str| -> Result<u64, String> {
        text.lines()
            .find_map(|l| l.strip_prefix(name).map(str::trim))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{} is damaged: no `{name}` line", path.display()))
    };
    Ok(Some((field("generation")?, field("shards")? as usize)))
}

/// Indexes of `prefix-K` files in `dir`, ascending.
fn indexes(dir: &Path, prefix: &str) -> Result<Vec<u64>, String> {
    let mut v = Vec::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(v),
        Err(e) => return Err(format!("cannot list {}: {e}", dir.display())),
    };
    for e in rd.flatten() {
        if let Some(k) =
            e.file_name().to_str().and_then(|n| n.strip_prefix(prefix)).and_then(|k| k.parse().ok())
        {
            v.push(k);
        }
    }
    v.sort_unstable();
    Ok(v)
}

#[derive(Default, Debug)]
pub struct RecoveryReport {
    pub snapshot_entries: u64,
    pub log_records: u64,
    pub bytes_read: u64,
    pub torn_tails: Vec<String>,
    pub elapsed_ms: u64,
}

pub struct Recovered {
    pub stores: Vec<Store>,
    pub generation: u64,
    pub report: RecoveryReport,
}

/// Load the current generation into `shards` stores. Damage before a log's tail is an error
/// that names the file and the offset.
pub fn recover(
    data_dir: &Path,
    shards: usize,
    cipher: Option<&Cipher>,
    now_ms: u64,
) -> Result<Recovered, String> {
    let started = Instant::now();
    let mut stores: Vec<Store> = (0..shards).map(|_| Store::new()).collect();
    let mut report = RecoveryReport::default();
    let Some((generation, old_shards)) = current(data_dir)? else {
        return Ok(Recovered { stores, generation: 0, report });
    };
    for s in 0..old_shards {
        let dir = shard_dir(data_dir, generation, s);
        let snaps = indexes(&dir, "snap-")?;
        let base = snaps.last().copied();
        if let Some(k) = base {
            let path = snap_path(&dir, k);
            let data = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            report.bytes_read += data.len() as u64;
            let file = FileId { kind: FileKind::Snapshot, generation, shard: s as u32, index: k };
            let entries = read_snapshot(&data, &file, cipher)
                .map_err(|e| format!("snapshot {} is {e}; restore it from a backup", path.display()))?;
            report.snapshot_entries += entries.len() as u64;
            for m in entries {
                let to = shard_of_key(m.key(), shards);
                replay(&mut stores[to], m, now_ms);
            }
        }
        let logs: Vec<u64> =
            indexes(&dir, "log-")?.into_iter().filter(|k| base.is_none_or(|b| *k >= b)).collect();
        for (i, &k) in logs.iter().enumerate() {
            let path = log_path(&dir, k);
            let data = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            report.bytes_read += data.len() as u64;
            let file = FileId { kind: FileKind::Log, generation, shard: s as u32, index: k };
            let scan = scan_file(&data, &file, cipher).map_err(|e| format!("{}: {e}", path.display()))?;
            let last = i + 1 == logs.len();
            match &scan.tail {
                Tail::Clean => {}
                Tail::Torn { offset, reason } if last => {
                    let line = format!(
                        "{}: dropped a torn last record at offset {offset} ({} bytes: {reason}), the trace of a crash mid-write; it was never acknowledged",
                        path.display(),
                        data.len() as u64 - offset
                    );
                    tracing::warn!("{line}");
                    report.torn_tails.push(line);
                }
                Tail::Torn { offset, reason } | Tail::Corrupt { offset, reason } => {
                    return Err(format!(
                        "{} is damaged at offset {offset} ({reason}); records after it cannot be trusted. \
                         `velocityd repair --data-dir {}` truncates the log there after saying what it drops",
                        path.display(),
                        data_dir.display()
                    ));
                }
            }
            for (_, p) in scan.records {
                if let Payload::Mutations(ms) = p {
                    report.log_records += 1;
                    for m in ms {
                        let to = shard_of_key(m.key(), shards);
                        replay(&mut stores[to], m, now_ms);
                    }
                }
            }
        }
    }
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(Recovered { stores, generation, report })
}

fn sync_dir(dir: &Path) -> Result<(), String> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("cannot sync {}: {e}", dir.display()))
}

fn write_synced(path: &Path, chunks: impl IntoIterator<Item = Vec<u8>>) -> Result<u64, String> {
    let err = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    let mut f = std::fs::File::create(path).map_err(err)?;
    let mut n = 0;
    for c in chunks {
        n += c.len() as u64;
        f.write_all(&c).map_err(err)?;
    }
    f.sync_all().map_err(err)?;
    Ok(n)
}

/// Write `store` as a complete snapshot file at `path`.
pub fn write_snapshot(
    path: &Path,
    file: FileId,
    store: &Store,
    cipher: Option<&Cipher>,
    now_ms: u64,
) -> Result<u64, String> {
    let mut enc = SnapshotEncoder::new(file, cipher);
    let mut chunks = Vec::new();
    store.scan(&KeyRange::all(), false, now_ms, |e| {
        enc.push(e.key, e.value, e.expires_at_ms);
        if let Some((_, b)) = enc.take_ready(1 << 20) {
            chunks.push(b);
        }
        ControlFlow::Continue(())
    });
    chunks.push(enc.finish().1);
    write_synced(path, chunks)
}

/// Make `stores` generation `old + 1`: a snapshot and an empty log per shard, then CURRENT, then
/// remove the old generation. Returns the new generation.
pub fn install(
    data_dir: &Path,
    old: u64,
    stores: &[Store],
    cipher: Option<&Cipher>,
    now_ms: u64,
) -> Result<u64, String> {
    let generation = old + 1;
    let wal = wal_dir(data_dir);
    let gen_dir = wal.join(generation.to_string());
    // Left over from a start that crashed before switching CURRENT: never the truth.
    let _ = std::fs::remove_dir_all(&gen_dir);
    for (s, store) in stores.iter().enumerate() {
        let dir = shard_dir(data_dir, generation, s);
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let file = FileId { kind: FileKind::Snapshot, generation, shard: s as u32, index: 0 };
        write_snapshot(&snap_path(&dir, 0), file, store, cipher, now_ms)?;
        write_synced(&log_path(&dir, 0), [file_header(FileKind::Log, cipher).to_vec()])?;
        sync_dir(&dir)?;
    }
    sync_dir(&gen_dir)?;
    let tmp = wal.join("CURRENT.tmp");
    write_synced(&tmp, [format!("generation {generation}\nshards {}\n", stores.len()).into_bytes()])?;
    std::fs::rename(&tmp, wal.join("CURRENT"))
        .map_err(|e| format!("cannot switch {}: {e}", wal.display()))?;
    sync_dir(&wal)?;
    // Everything else under wal/ is an older generation.
    if let Ok(rd) = std::fs::read_dir(&wal) {
        for e in rd.flatten() {
            let n = e.file_name();
            if e.path().is_dir() && n.to_str() != Some(&generation.to_string()) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    Ok(generation)
}

/// `velocityd repair`: truncate every damaged log to its last good record, saying what goes.
/// Returns the report lines.
pub fn repair(data_dir: &Path, cipher: Option<&Cipher>) -> Result<Vec<String>, String> {
    let mut lines = Vec::new();
    let Some((generation, shards)) = current(data_dir)? else {
        return Ok(vec![format!("{}: no durable data; nothing to repair", wal_dir(data_dir).display())]);
    };
    for s in 0..shards {
        let dir = shard_dir(data_dir, generation, s);
        for k in indexes(&dir, "snap-")? {
            let path = snap_path(&dir, k);
            let data = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let file = FileId { kind: FileKind::Snapshot, generation, shard: s as u32, index: k };
            if let Err(e) = read_snapshot(&data, &file, cipher) {
                lines.push(format!(
                    "{}: snapshot is {e}; repair cannot rebuild it: restore it from a backup",
                    path.display()
                ));
            }
        }
        for k in indexes(&dir, "log-")? {
            let path = log_path(&dir, k);
            let data = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let file = FileId { kind: FileKind::Log, generation, shard: s as u32, index: k };
            let scan = scan_file(&data, &file, cipher).map_err(|e| format!("{}: {e}", path.display()))?;
            match scan.tail {
                Tail::Clean => lines.push(format!("{}: ok, {} records", path.display(), scan.records.len())),
                Tail::Torn { offset, reason } | Tail::Corrupt { offset, reason } => {
                    lines.push(format!(
                        "{}: keeping {} records up to offset {offset}; dropping {} bytes from offset {offset} ({reason})",
                        path.display(),
                        scan.records.len(),
                        data.len() as u64 - offset
                    ));
                    let f = std::fs::OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
                    f.set_len(offset)
                        .and_then(|_| f.sync_all())
                        .map_err(|e| format!("cannot truncate {}: {e}", path.display()))?;
                }
            }
        }
    }
    Ok(lines)
}
