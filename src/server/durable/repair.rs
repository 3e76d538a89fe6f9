//! `velocityd repair`: damaged logs cut back to their last good record, what is cut kept aside.

use super::{
    create_dir, current, indexes, log_path, read, shard_dir, snap_path, sync_dir, wal_dir, write_synced,
};
use crate::durability::{read_snapshot, scan_file, Cipher, FileId, FileKind, Tail};
use std::path::{Path, PathBuf};

/// Where `repair` keeps what it cuts.
pub fn quarantine_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("quarantine")
}

/// Copy `bytes` to a new file in the quarantine directory, synced; its path.
fn quarantine(data_dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf, String> {
    let dir = quarantine_dir(data_dir);
    create_dir(&dir)?;
    let mut path = dir.join(name);
    let mut n = 1;
    while path.exists() {
        path = dir.join(format!("{name}.{n}"));
        n += 1;
    }
    write_synced(&path, [bytes.to_vec()])?;
    sync_dir(&dir)?;
    Ok(path)
}

/// `velocityd repair`: cut every damaged log back to its last good record, keeping what is cut
/// in the quarantine directory, and say what was done. Returns the report lines.
pub fn repair(data_dir: &Path, cipher: Option<&Cipher>) -> Result<Vec<String>, String> {
    let mut lines = Vec::new();
    let Some((generation, shards)) = current(data_dir)? else {
        return Ok(vec![format!("{}: no durable data; nothing to repair", wal_dir(data_dir).display())]);
    };
    for s in 0..shards {
        let dir = shard_dir(data_dir, generation, s);
        for k in indexes(&dir, "snap-")? {
            let path = snap_path(&dir, k);
            let data = read(&path)?;
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
            let data = read(&path)?;
            let file = FileId { kind: FileKind::Log, generation, shard: s as u32, index: k };
            let scan = scan_file(&data, &file, cipher).map_err(|e| format!("{}: {e}", path.display()))?;
            let (offset, reason, next) = match &scan.tail {
                Tail::Clean => {
                    lines.push(format!("{}: ok, {} records", path.display(), scan.records.len()));
                    continue;
                }
                Tail::Torn { offset, reason } => (*offset, reason.clone(), None),
                Tail::Corrupt { offset, reason, next_intact } => (*offset, reason.clone(), *next_intact),
            };
            let cut = &data[offset as usize..];
            let kept = quarantine(data_dir, &format!("g{generation}-s{s}-log-{k}-from-{offset}"), cut)?;
            let after = next.map_or(String::new(), |n| format!("; intact records follow at offset {n}"));
            lines.push(format!(
                "{}: keeping {} records up to offset {offset}; cut {} bytes from offset {offset} ({reason}{after}) and moved them to {}",
                path.display(),
                scan.records.len(),
                cut.len(),
                kept.display()
            ));
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_len(offset).and(f.sync_all()))
                .map_err(|e| format!("cannot truncate {}: {e}", path.display()))?;
        }
    }
    Ok(lines)
}
