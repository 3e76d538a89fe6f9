//! Snapshots of a core's store: when the log has outgrown the last snapshot, the log is rotated
//! and the store copied a chunk at a time into a new snapshot file; once every write it may hold
//! is durable it replaces the older snapshot and logs.

use super::{sync_dir, Host, Wal};
use crate::durability::{FileKind, SnapshotEncoder};
use crate::limits::{SNAPSHOT_CHECK_MS, SNAPSHOT_CHUNK_ENTRIES, SNAPSHOT_WRITE_BYTES};
use crate::server::durable::{log_path, snap_path};
use crate::server::runtime::{create_file, now_ms, race, sleep, yield_now, Slot};
use crate::store::KeyRange;
use std::ops::ControlFlow;
use std::rc::Rc;
use std::time::Duration;

/// A snapshot copy under way, as the writers that must keep it exact see it. A single node's log
/// after the rotation holds each write's result, so replaying it over a store copied while it
/// changed (a row copied before or after a write) ends the same. A cluster node replays the
/// Raft entries after the checkpoint, ops that are not idempotent (a counter's increment): the
/// copy must be the store exactly at the checkpoint. So before such a writer changes a key the
/// copy has not reached yet, it hands the key's value at the checkpoint here (`keep`); the copy
/// writes those values, and skips the keys when it reaches them.
/// A row's value and expiry, or its absence.
type Row = Option<(Vec<u8>, Option<u64>)>;

#[derive(Default)]
pub struct Capture {
    /// The last key copied so far (None: none yet).
    copied_through: Option<Vec<u8>>,
    /// Keys ahead of the copy as they were at the checkpoint (None: absent then).
    before: std::collections::BTreeMap<Vec<u8>, Row>,
}

impl Capture {
    /// `key` is about to change in `store`: if the copy has not reached it, keep its value now.
    pub fn keep(&mut self, store: &crate::store::Store, key: &[u8], now_ms: u64) {
        if self.copied_through.as_deref().is_some_and(|c| key <= c) || self.before.contains_key(key) {
            return;
        }
        let was = store.get(key, now_ms).map(|e| (e.value.to_vec(), e.expires_at_ms));
        self.before.insert(key.to_vec(), was);
    }
}

/// Take a snapshot whenever the log has outgrown the threshold and the last snapshot.
pub async fn run_snapshots(core: Rc<impl Host>, wal: Rc<Wal>) {
    while !core.shutdown().is_fired() {
        let _ = race(sleep(Duration::from_millis(SNAPSHOT_CHECK_MS)), core.shutdown().wait()).await;
        if core.shutdown().is_fired() {
            break;
        }
        if wal.log_bytes() < wal.snapshot_log_bytes.max(wal.snapshot_bytes.get()) || core.checkpoint_put_off()
        {
            continue;
        }
        match snapshot(&*core, &wal).await {
            Ok(Some(bytes)) => tracing::info!(shard = wal.shard, bytes, "snapshot taken; older log removed"),
            Ok(None) => {}
            Err(e) => {
                tracing::error!(shard = wal.shard, error = %e, "snapshot failed; the log keeps growing")
            }
        }
    }
}

/// Rotate the log, copy the store a chunk at a time into `snap-K`, and once every write it may
/// have seen is durable, make it the snapshot and remove what it replaces. Ok(None): given up
/// because a log write failed meanwhile (the snapshot might hold writes that were taken back),
/// or put off by the host's checkpoint (a range's rows going into the store). A snapshot that
/// fails or is given up leaves no file behind.
pub async fn snapshot(core: &impl Host, wal: &Wal) -> Result<Option<u64>, String> {
    let errors_before = wal.storage_errors.get();
    tracing::debug!(shard = wal.shard, log_bytes = wal.log_bytes(), "snapshot: rotating the log");
    let slot = Slot::new();
    *wal.rotate.borrow_mut() = Some(slot.clone());
    wal.kick.borrow().fire();
    let index = slot.take().await?;
    if !core.checkpoint(wal)? {
        // The log rotated for nothing: the older logs stay until the next snapshot.
        tracing::debug!(shard = wal.shard, index, "snapshot put off: a range's rows are being installed");
        return Ok(None);
    }
    // From the checkpoint on, with no await between: what is applied after it is kept.
    *wal.capture.borrow_mut() = Some(Capture::default());
    tracing::debug!(shard = wal.shard, index, "snapshot: log rotated, copying the store");
    let dir = wal.dir();
    let tmp = dir.join(format!("snap-{index}.tmp"));
    let written = write_snapshot_file(core, wal, &tmp, index).await;
    wal.capture.borrow_mut().take();
    let size = match written {
        Ok(size) if wal.storage_errors.get() == errors_before => size,
        other => {
            let _ = std::fs::remove_file(&tmp);
            return other.map(|_| None);
        }
    };
    std::fs::rename(&tmp, snap_path(&dir, index))
        .map_err(|e| format!("cannot rename {}: {e}", tmp.display()))?;
    sync_dir(&dir).await?;
    for k in 0..index {
        let _ = std::fs::remove_file(snap_path(&dir, k));
        let _ = std::fs::remove_file(log_path(&dir, k));
    }
    wal.snapshot_bytes.set(size);
    wal.last_snapshot_ms.set(now_ms());
    wal.snapshots.set(wal.snapshots.get() + 1);
    Ok(Some(size))
}

/// Copy the store into `tmp` a chunk at a time, sync it, and wait until every write it may hold
/// is durable. Its size.
async fn write_snapshot_file(
    core: &impl Host,
    wal: &Wal,
    tmp: &std::path::Path,
    index: u64,
) -> Result<u64, String> {
    let file = create_file(tmp).await?;
    let mut enc = SnapshotEncoder::new(wal.file_id(FileKind::Snapshot, index), wal.cipher.as_deref());
    let copied = copy_store(core, wal, tmp, &file, &mut enc).await;
    let capture = wal.capture.borrow_mut().take().unwrap_or_default();
    let mut size = copied?;
    // The keys changed ahead of the copy, as they were at the checkpoint.
    for (key, was) in capture.before {
        if let Some((value, expires_at_ms)) = was {
            enc.push(&key, &value, expires_at_ms);
        }
    }
    let io = |e: &dyn std::fmt::Display| format!("{}: {e}", tmp.display());
    if let Some((at, bytes)) = enc.take_ready(0) {
        size = at + bytes.len() as u64;
        let len = bytes.len();
        if file.write_at(bytes, at).await.map_err(|e| io(&e))? < len {
            return Err(format!("{}: short write (disk full?)", tmp.display()));
        }
    }
    let (at, bytes) = enc.finish();
    size = size.max(at + bytes.len() as u64);
    let len = bytes.len();
    if file.write_at(bytes, at).await.map_err(|e| io(&e))? < len {
        return Err(format!("{}: short write (disk full?)", tmp.display()));
    }
    file.fdatasync().await.map_err(|e| io(&e))?;
    let _ = file.close().await;
    // The snapshot may hold writes still on their way to the log (queued, or being written or
    // synced): it becomes the truth only once they are durable.
    if let Some(g) = wal.unsettled() {
        g.wait().await;
    }
    Ok(size)
}

/// Copy the store into `enc` a chunk at a time, writing what is ready: the bytes written.
async fn copy_store(
    core: &impl Host,
    wal: &Wal,
    tmp: &std::path::Path,
    file: &crate::server::runtime::File,
    enc: &mut SnapshotEncoder<'_>,
) -> Result<u64, String> {
    let mut range = KeyRange::all();
    let mut size = 0u64;
    let io = |e: &dyn std::fmt::Display| format!("{}: {e}", tmp.display());
    loop {
        let mut last: Option<Vec<u8>> = None;
        let mut n = 0;
        {
            let store = core.store().borrow();
            let mut capture = wal.capture.borrow_mut();
            let kept = capture.as_ref().map(|c| &c.before);
            store.scan(&range, false, now_ms(), |e| {
                // Changed since the checkpoint: its value then goes in at the end.
                if !kept.is_some_and(|k| k.contains_key(e.key)) {
                    enc.push(e.key, e.value, e.expires_at_ms);
                }
                n += 1;
                if n == SNAPSHOT_CHUNK_ENTRIES {
                    last = Some(e.key.to_vec());
                    return ControlFlow::Break(());
                }
                ControlFlow::Continue(())
            });
            if let Some(c) = capture.as_mut() {
                c.copied_through = match &last {
                    Some(k) => Some(k.clone()),
                    // Done: every key is behind the copy.
                    None => Some(vec![0xff; crate::limits::KEY_BYTES_MAX + 1]),
                };
            }
        }
        if let Some((at, bytes)) = enc.take_ready(SNAPSHOT_WRITE_BYTES) {
            size = at + bytes.len() as u64;
            let len = bytes.len();
            if file.write_at(bytes, at).await.map_err(|e| io(&e))? < len {
                return Err(format!("{}: short write (disk full?)", tmp.display()));
            }
        }
        match last {
            Some(k) => range = range.resume_after(&k, false),
            None => break,
        }
        // The bounded pause: other tasks on this core run between chunks.
        yield_now().await;
    }
    Ok(size)
}
