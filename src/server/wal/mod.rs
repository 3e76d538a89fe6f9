//! Each core's write-ahead log and snapshots, through glommio's file I/O.
//!
//! A write is applied to the shard's store and its record appended to the open group; the
//! core's writer task writes one group at a time and fdatasyncs it, and every write that arrived
//! during that sync joins the next group (group commit). With `--durability sync` a write's
//! RESPONSE waits for its group. If a group cannot be made durable (disk full, I/O error), it
//! and every later group are taken back from the store with their undo images, in reverse, and
//! their writers get STORAGE_ERROR: what readers see afterwards is what is on disk.

mod snapshot;
mod tasks;

pub use super::config::Mode;
use super::durable::{log_path, shard_dir, ShardLog};
pub use snapshot::run_snapshots;
pub use tasks::{drained, run_writer};

/// `durable::sync_dir` on the blocking pool: a directory's fsync must not stall the core.
async fn sync_dir(dir: &std::path::Path) -> Result<(), String> {
    let dir = dir.to_owned();
    spawn_blocking(move || super::durable::sync_dir(&dir)).await
}
use super::runtime::{
    create_file, now_ms, open_file_for_writing, race, sleep, spawn_blocking, File, LocalSignal, Slot,
};
use crate::durability::{
    self, frame_in_place, seal_record, Cipher, FileId, FileKind, Undo, HEADER_BYTES, RECORD_HEADER_BYTES,
};
use crate::limits::{DIRTY_BUCKETS, WAL_GROUP_BYTES_MAX};
use crate::store::Store;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the log's tasks use of the core they serve: its store (to take back writes that could
/// not be made durable, and to copy into snapshots), its shutdown signal, and what else a
/// snapshot must carry into the new log (a cluster node's replicas' state).
pub trait Host {
    fn store(&self) -> &RefCell<Store>;
    fn shutdown(&self) -> &Rc<LocalSignal>;
    /// Called as a snapshot begins, right after the log is rotated and before the store is
    /// copied: records appended now are in the new log, ahead of every later write. False:
    /// the store cannot be copied now, and the snapshot is given up.
    fn checkpoint(&self, wal: &Wal) -> Result<bool, String>;
    /// True while `checkpoint` would say false: the snapshot is not begun.
    fn checkpoint_put_off(&self) -> bool;
}

/// The fate of the records appended while one group was open.
#[derive(Default)]
pub struct Group {
    durable: Cell<Option<bool>>,
    done: Rc<LocalSignal>,
    /// Groups of a log are numbered as they open, and settle in that order.
    pub number: u64,
}

/// The later of two groups to wait for: waiting for it covers the other.
pub fn later(a: Option<Rc<Group>>, b: Rc<Group>) -> Rc<Group> {
    match a {
        Some(a) if a.number > b.number => a,
        _ => b,
    }
}

impl Group {
    /// True once the group is on disk; false if it could not be made durable.
    pub async fn wait(&self) -> bool {
        if let Some(ok) = self.durable.get() {
            return ok;
        }
        self.done.wait().await;
        self.durable.get().unwrap_or(false)
    }

    /// Whether the group's fate is known.
    pub fn settled(&self) -> bool {
        self.durable.get().is_some()
    }

    fn settle(&self, ok: bool) {
        self.durable.set(Some(ok));
        self.done.fire();
    }
}

struct Queued {
    /// `u32 length ‖ 12 spare ‖ payload` per record: numbered and framed (or sealed, when
    /// encrypted: the associated data names the file and offset it lands at) when written, so
    /// that a group taken back leaves no gap in the numbers.
    records: Vec<u8>,
    undo: Undo,
    group: Rc<Group>,
    /// Number of the group's first record, once written.
    first_seq: u64,
}

/// A rotation's outcome: the new log's index, or why there is none.
type Rotated = Result<u64, String>;

pub struct Wal {
    pub mode: Mode,
    data_dir: PathBuf,
    generation: u64,
    shard: u32,
    cipher: Option<Arc<Cipher>>,
    index: Cell<u64>,
    file: RefCell<Option<Rc<File>>>,
    /// End of the last write to the current log.
    written_end: Cell<u64>,
    /// Number of the next record written to the current log.
    next_seq: Cell<u64>,
    queue: RefCell<VecDeque<Queued>>,
    /// Groups opened so far (the next one's number).
    groups_opened: Cell<u64>,
    /// The group of the newest record appended: every earlier group settles before it.
    newest: RefCell<Option<Rc<Group>>>,
    /// Per bucket of keys (by token), the group of the newest write to one of them (sync mode):
    /// a point read of a key waits only for a group that wrote a key of its bucket.
    dirty: RefCell<Box<[Option<Rc<Group>>]>>,
    kick: RefCell<Rc<LocalSignal>>,
    rotate: RefCell<Option<Rc<Slot<Rotated>>>>,
    snapshot_log_bytes: u64,
    /// A fault for tests: a pause before every group write, widening the window in which writes
    /// are applied in memory but not yet in the log (where a crash takes them back).
    write_delay: Duration,
    pub snapshot_bytes: Cell<u64>,
    /// The snapshot copy under way, for writers whose replay is not idempotent (a cluster
    /// node's Raft entries): `snapshot::Capture`.
    pub capture: RefCell<Option<snapshot::Capture>>,
    pub last_snapshot_ms: Cell<u64>,
    pub storage_errors: Cell<u64>,
    pub snapshots: Cell<u64>,
    /// fdatasync calls that completed (each made one or more groups durable), and the time
    /// they took.
    pub syncs: Cell<u64>,
    pub sync_us: Cell<u64>,
    /// Log writes and syncs in progress, and when the oldest of them began (metrics: a disk
    /// that stalls shows as one that never ends).
    io_in_flight: Cell<u32>,
    io_since_ms: Cell<u64>,
    writer_done: Rc<LocalSignal>,
}

impl Wal {
    /// Open this core's log of `generation` for appending where start-up left it (`at`).
    pub async fn open(
        cfg: &super::config::Config,
        mode: Mode,
        generation: u64,
        shard: usize,
        cipher: Option<Arc<Cipher>>,
        at: ShardLog,
    ) -> Result<Wal, String> {
        let data_dir = cfg.data_dir.clone();
        let dir = shard_dir(&data_dir, generation, shard);
        let path = log_path(&dir, at.index);
        let file = open_file_for_writing(&path).await?;
        Ok(Wal {
            mode,
            data_dir,
            generation,
            shard: shard as u32,
            cipher,
            index: Cell::new(at.index),
            file: RefCell::new(Some(Rc::new(file))),
            written_end: Cell::new(at.end),
            next_seq: Cell::new(at.next_seq),
            queue: RefCell::new(VecDeque::new()),
            groups_opened: Cell::new(0),
            newest: RefCell::new(None),
            dirty: RefCell::new((0..DIRTY_BUCKETS).map(|_| None).collect()),
            kick: RefCell::new(Rc::new(LocalSignal::default())),
            rotate: RefCell::new(None),
            snapshot_log_bytes: cfg.snapshot_log_bytes,
            write_delay: Duration::from_millis(cfg.test_write_delay_ms),
            snapshot_bytes: Cell::new(at.snapshot_bytes),
            capture: RefCell::new(None),
            last_snapshot_ms: Cell::new(now_ms()),
            storage_errors: Cell::new(0),
            snapshots: Cell::new(0),
            syncs: Cell::new(0),
            sync_us: Cell::new(0),
            io_in_flight: Cell::new(0),
            io_since_ms: Cell::new(0),
            writer_done: Rc::new(LocalSignal::default()),
        })
    }

    fn dir(&self) -> PathBuf {
        shard_dir(&self.data_dir, self.generation, self.shard as usize)
    }

    /// Bytes of the current log (written so far).
    pub fn log_bytes(&self) -> u64 {
        self.written_end.get()
    }

    /// How long the oldest log write or fdatasync still in progress has been running (0: none).
    pub fn io_stalled_ms(&self, now_ms: u64) -> u64 {
        if self.io_in_flight.get() == 0 {
            return 0;
        }
        now_ms.saturating_sub(self.io_since_ms.get())
    }

    /// Run one write or sync of the log, timed for `io_stalled_ms`.
    async fn io<T>(&self, op: impl std::future::Future<Output = T>) -> T {
        if self.io_in_flight.get() == 0 {
            self.io_since_ms.set(now_ms());
        }
        self.io_in_flight.set(self.io_in_flight.get() + 1);
        // Counted out when done, or when dropped unfinished.
        struct Done<'a>(&'a Cell<u32>);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.set(self.0.get() - 1);
            }
        }
        let _done = Done(&self.io_in_flight);
        op.await
    }

    /// Append one record built in place by `build`, which appends the payload to the first
    /// buffer (and before-images to the undo log, in sync mode). An empty payload appends
    /// nothing. Returns what `build` returned, the group the record joined, and whether one was
    /// appended.
    pub fn log<R>(&self, build: impl FnOnce(&mut Vec<u8>, &mut Undo) -> R) -> (R, Rc<Group>, bool) {
        let mut q = self.queue.borrow_mut();
        if q.back().is_none_or(|p| p.records.len() >= WAL_GROUP_BYTES_MAX) {
            q.push_back(Queued {
                records: Vec::new(),
                undo: Undo::default(),
                group: Rc::new(Group { number: self.groups_opened.get(), ..Group::default() }),
                first_seq: 0,
            });
            self.groups_opened.set(self.groups_opened.get() + 1);
        }
        let p = q.back_mut().expect("just ensured");
        let start = p.records.len();
        let undo_at = p.undo.len_bytes();
        p.records.extend_from_slice(&[0u8; RECORD_HEADER_BYTES]);
        let r = build(&mut p.records, &mut p.undo);
        let appended = p.records.len() > start + RECORD_HEADER_BYTES;
        if !appended {
            p.records.truncate(start);
        } else {
            let n = (p.records.len() - start - RECORD_HEADER_BYTES) as u32;
            p.records[start..start + 4].copy_from_slice(&n.to_le_bytes());
        }
        let g = p.group.clone();
        if appended {
            // The keys this record wrote are those it took before-images of (sync mode).
            let mut dirty = self.dirty.borrow_mut();
            for key in p.undo.keys_from(undo_at) {
                dirty[bucket(key)] = Some(g.clone());
            }
        }
        drop(q);
        if appended {
            *self.newest.borrow_mut() = Some(g.clone());
            self.kick.borrow().fire();
        }
        (r, g, appended)
    }

    /// The group a point read of `key` must wait for: the newest unsettled one that wrote a key
    /// of its bucket (or the key's absence, for a delete).
    pub fn unsettled_for(&self, key: &[u8]) -> Option<Rc<Group>> {
        self.dirty.borrow()[bucket(key)].as_ref().filter(|g| !g.settled()).cloned()
    }

    /// The group of the newest record, while it is not settled (queued, being written or being
    /// synced): whoever has seen the store's current state waits for it.
    pub fn unsettled(&self) -> Option<Rc<Group>> {
        self.newest.borrow().as_ref().filter(|g| !g.settled()).cloned()
    }

    fn file_id(&self, kind: FileKind, index: u64) -> FileId {
        FileId { kind, generation: self.generation, shard: self.shard, index }
    }

    /// Number and frame one group's records and write them at the end of the current log (the
    /// caller syncs).
    async fn write_group(&self, p: &mut Queued) -> Result<(), String> {
        if !self.write_delay.is_zero() {
            sleep(self.write_delay).await;
        }
        let file = self.file.borrow().clone().ok_or("the log is closed")?;
        let id = self.file_id(FileKind::Log, self.index.get());
        let start = self.written_end.get();
        p.first_seq = self.next_seq.get();
        let mut seq = p.first_seq;
        let out = match self.cipher.as_deref() {
            None => {
                let mut pos = 0;
                while pos < p.records.len() {
                    let n = u32::from_le_bytes(p.records[pos..pos + 4].try_into().unwrap()) as usize;
                    frame_in_place(&mut p.records, pos, n, seq);
                    seq += 1;
                    pos += RECORD_HEADER_BYTES + n;
                }
                std::mem::take(&mut p.records)
            }
            Some(c) => {
                let mut out = Vec::with_capacity(p.records.len() + p.records.len() / 8 + 64);
                let mut rest = &p.records[..];
                while !rest.is_empty() {
                    let n = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
                    let at = start + out.len() as u64;
                    let body = &rest[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + n];
                    seal_record(&mut out, body, &id, at, seq, Some(c));
                    seq += 1;
                    rest = &rest[RECORD_HEADER_BYTES + n..];
                }
                out
            }
        };
        self.next_seq.set(seq);
        let len = out.len();
        let wrote = self.io(file.write_at(out, start)).await.map_err(|e| e.to_string())?;
        if wrote < len {
            return Err(format!("short write: {wrote} of {len} bytes (disk full?)"));
        }
        self.written_end.set(start + len as u64);
        Ok(())
    }

    /// Take back `failed` and everything queued after it, newest first; each writer hears no.
    async fn fail_from(&self, core: &impl Host, mut failed: Vec<Queued>, start: u64, error: &str) {
        failed.extend(self.queue.borrow_mut().drain(..));
        {
            let now = now_ms();
            let mut store = core.store().borrow_mut();
            for p in failed.iter().rev() {
                p.undo.apply(&mut store, now);
            }
        }
        let groups = failed.len() as u64;
        self.storage_errors.set(self.storage_errors.get() + groups);
        tracing::error!(
            shard = self.shard,
            log = %log_path(&self.dir(), self.index.get()).display(),
            offset = start,
            error,
            groups,
            "a log write failed: its writes were taken back and answered with STORAGE_ERROR"
        );
        self.rewind(start, failed[0].first_seq).await;
        for p in failed {
            p.group.settle(false);
        }
    }

    /// Take the log back to `end`, where record `next_seq` goes next: nothing after the last
    /// good record may stay in the file, or a later scan would take it for damage.
    async fn rewind(&self, end: u64, next_seq: u64) {
        self.written_end.set(end);
        self.next_seq.set(next_seq);
        let file = self.file.borrow().clone();
        if let Some(f) = file {
            if let Err(e) = f.truncate(end).await {
                tracing::error!(shard = self.shard, error = %e, "cannot truncate the log after a failed write");
            }
        }
    }

    /// Start log `index + 1` between groups, so a snapshot can begin.
    async fn rotate_now(&self) -> Result<u64, String> {
        let next = self.index.get() + 1;
        let path = log_path(&self.dir(), next);
        let f = create_file(&path).await?;
        let header = durability::file_header(FileKind::Log, self.cipher.as_deref()).to_vec();
        f.write_at(header, 0).await.map_err(|e| e.to_string())?;
        f.fdatasync().await.map_err(|e| e.to_string())?;
        sync_dir(&self.dir()).await?;
        let old = self.file.replace(Some(Rc::new(f)));
        if let Some(old) = old.and_then(|o| Rc::try_unwrap(o).ok()) {
            let _ = old.close().await;
        }
        self.index.set(next);
        self.written_end.set(HEADER_BYTES as u64);
        self.next_seq.set(1);
        Ok(next)
    }
}

fn bucket(key: &[u8]) -> usize {
    // The token's low bits: its high ones are the shard, the same for every key here.
    (crate::shard::token(key) as usize) & (DIRTY_BUCKETS - 1)
}
