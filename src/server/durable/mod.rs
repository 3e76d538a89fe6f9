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
//! Reading changes nothing: a start-up refused for damage leaves every byte as it found it.
//!
//! With the same `--cores` (and the same encryption), each core then goes on appending to its
//! shard's last log where the good records end (a torn tail is cut off first): a restart needs no
//! new disk space, so a server whose disk filled up can start again. With another `--cores` the
//! keys must be laid out afresh: the result is written as generation G+1 (one snapshot per new
//! shard, empty logs) after checking that the disk has room for it, CURRENT is switched with a
//! rename, and generation G is removed: a crash at any point leaves one complete generation.

use crate::durability::{
    apply::replay, file_header, header_encrypted, read_snapshot, scan_file, Cipher, FileId, FileKind,
    Payload, SnapshotEncoder, Tail, HEADER_BYTES,
};
use crate::shard::shard_of_key;
use crate::store::{KeyRange, Store};
use std::io::Write;
use std::ops::ControlFlow;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

mod backup;
mod repair;
pub use backup::{backup, restore, Copied};
pub use repair::{quarantine_dir, repair};

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

/// Where a shard's log goes on: the core appends record `next_seq` at offset `end` of log
/// `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardLog {
    pub index: u64,
    pub end: u64,
    pub next_seq: u64,
    /// Size of the shard's newest snapshot (what the log must outgrow before the next one).
    pub snapshot_bytes: u64,
}

/// The last log of an old shard, as recovery found it.
#[derive(Debug)]
struct LastLog {
    log: ShardLog,
    /// Length of the file: more than `log.end` when a torn tail is to be cut.
    file_bytes: u64,
}

pub struct Recovered {
    pub stores: Vec<Store>,
    pub generation: u64,
    pub report: RecoveryReport,
    old_shards: usize,
    /// Per old shard; None when a shard has no log to append to.
    last_logs: Vec<Option<LastLog>>,
    /// Some file of the generation is not encrypted.
    plain_files: bool,
    /// Per old shard, the bodies of its Raft records in log order (a cluster node's replicas'
    /// state, `cluster::log`), and where the first one is, for the refusal of a single node.
    pub raft: Vec<Vec<Vec<u8>>>,
    pub first_raft_record: Option<(PathBuf, u64)>,
}

impl Recovered {
    /// Whether start-up can go on with the current generation's files in place: the same
    /// shards, no encryption newly turned on, every shard with a log to append to.
    pub fn reusable(&self, shards: usize, encrypted: bool) -> bool {
        self.generation > 0
            && self.old_shards == shards
            && !(encrypted && self.plain_files)
            && self.last_logs.iter().all(Option::is_some)
    }
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Load the current generation into `shards` stores. A torn tail of a shard's last log is
/// dropped (with a warning); damage anywhere is an error naming the file, the offset and what
/// `repair` would do about it. Nothing is written.
pub fn recover(
    data_dir: &Path,
    shards: usize,
    cipher: Option<&Cipher>,
    now_ms: u64,
) -> Result<Recovered, String> {
    let started = Instant::now();
    let mut stores: Vec<Store> = (0..shards).map(|_| Store::new()).collect();
    let Some((generation, old_shards)) = current(data_dir)? else {
        return Ok(Recovered {
            stores,
            generation: 0,
            report: RecoveryReport::default(),
            old_shards: 0,
            last_logs: Vec::new(),
            plain_files: false,
            raft: Vec::new(),
            first_raft_record: None,
        });
    };
    let mut r = Replay {
        data_dir,
        generation,
        stores: &mut stores,
        cipher,
        now_ms,
        report: RecoveryReport::default(),
        plain_files: false,
        raft: vec![Vec::new(); old_shards],
        first_raft_record: None,
    };
    let mut last_logs = Vec::new();
    for s in 0..old_shards {
        let dir = shard_dir(data_dir, generation, s);
        let (base, snapshot_bytes) = r.snapshot(&dir, s)?;
        last_logs.push(r.logs(&dir, s, base, snapshot_bytes)?);
    }
    let (mut report, plain_files, raft, first_raft_record) =
        (r.report, r.plain_files, r.raft, r.first_raft_record);
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(Recovered { stores, generation, report, old_shards, last_logs, plain_files, raft, first_raft_record })
}

/// Recovery under way: the files of one generation replayed into the stores of this run's
/// shards (which may be more or fewer than the generation's).
struct Replay<'a> {
    data_dir: &'a Path,
    generation: u64,
    stores: &'a mut [Store],
    cipher: Option<&'a Cipher>,
    now_ms: u64,
    report: RecoveryReport,
    /// Whether any file read was written without encryption.
    plain_files: bool,
    raft: Vec<Vec<Vec<u8>>>,
    first_raft_record: Option<(PathBuf, u64)>,
}

impl Replay<'_> {
    fn apply(&mut self, m: crate::durability::Mutation) {
        let to = shard_of_key(m.key(), self.stores.len());
        replay(&mut self.stores[to], m, self.now_ms);
    }

    /// Load old shard `s`'s newest snapshot: its index (None: there is none) and size.
    fn snapshot(&mut self, dir: &Path, s: usize) -> Result<(Option<u64>, u64), String> {
        let Some(k) = indexes(dir, "snap-")?.last().copied() else { return Ok((None, 0)) };
        let path = snap_path(dir, k);
        let data = read(&path)?;
        self.report.bytes_read += data.len() as u64;
        self.plain_files |= !header_encrypted(&data);
        let file =
            FileId { kind: FileKind::Snapshot, generation: self.generation, shard: s as u32, index: k };
        let entries = read_snapshot(&data, &file, self.cipher)
            .map_err(|e| format!("snapshot {} is {e}; restore it from a backup", path.display()))?;
        self.report.snapshot_entries += entries.len() as u64;
        for m in entries {
            self.apply(m);
        }
        Ok((Some(k), data.len() as u64))
    }

    /// Replay old shard `s`'s logs from snapshot `base` on: a torn tail of the last one is
    /// dropped, any other damage refused. Where the last log ends, for the shard to go on.
    fn logs(
        &mut self,
        dir: &Path,
        s: usize,
        base: Option<u64>,
        snapshot_bytes: u64,
    ) -> Result<Option<LastLog>, String> {
        let logs: Vec<u64> =
            indexes(dir, "log-")?.into_iter().filter(|k| base.is_none_or(|b| *k >= b)).collect();
        let mut last_log = None;
        for (i, &k) in logs.iter().enumerate() {
            let path = log_path(dir, k);
            let data = read(&path)?;
            self.report.bytes_read += data.len() as u64;
            self.plain_files |= !header_encrypted(&data);
            let file = FileId { kind: FileKind::Log, generation: self.generation, shard: s as u32, index: k };
            let scan =
                scan_file(&data, &file, self.cipher).map_err(|e| format!("{}: {e}", path.display()))?;
            let last = i + 1 == logs.len();
            match &scan.tail {
                Tail::Clean => {}
                Tail::Torn { offset, reason } if last => {
                    let line = format!(
                        "{}: dropped a torn last write at offset {offset} ({} bytes: {reason}), the trace of a crash mid-write; it was never acknowledged",
                        path.display(),
                        data.len() as u64 - offset
                    );
                    tracing::warn!("{line}");
                    self.report.torn_tails.push(line);
                }
                tail => return Err(damage_message(self.data_dir, &path, &data, &scan, tail, last)),
            }
            if last {
                let log =
                    ShardLog { index: k, end: scan.good_end, next_seq: scan.last_seq() + 1, snapshot_bytes };
                last_log = Some(LastLog { log, file_bytes: data.len() as u64 });
            }
            for (offset, p) in scan.records {
                match p {
                    Payload::Mutations(ms) => {
                        self.report.log_records += 1;
                        for m in ms {
                            self.apply(m);
                        }
                    }
                    Payload::End { .. } => {}
                    // Kept apart, in order: the caller rebuilds a cluster node's replicas from
                    // them, or refuses to start a single node on a cluster node's data.
                    Payload::Raft(body) => {
                        self.first_raft_record.get_or_insert_with(|| (path.clone(), offset));
                        // A checkpoint's resets lead the log its snapshot rotated to; in a later
                        // log they are a snapshot's that failed after writing them (the store is
                        // restored from an older one, which holds none of the entries they would
                        // have the replicas' logs skip). The rest of such a checkpoint repeats
                        // what the logs already hold.
                        if Some(k) != base && crate::cluster::log::is_reset(&body) {
                            continue;
                        }
                        self.raft[s].push(body);
                    }
                }
            }
        }
        Ok(last_log)
    }
}

/// What the operator reads when start-up refuses a damaged log.
fn damage_message(
    data_dir: &Path,
    path: &Path,
    data: &[u8],
    scan: &crate::durability::Scan,
    tail: &Tail,
    last: bool,
) -> String {
    let (offset, reason, next) = match tail {
        Tail::Corrupt { offset, reason, next_intact } => (*offset, reason.as_str(), *next_intact),
        Tail::Torn { offset, reason } => (*offset, reason.as_str(), None),
        Tail::Clean => unreachable!("a clean file is not damaged"),
    };
    let what = match (next, last) {
        (Some(n), _) => {
            format!("intact records follow it (the next at offset {n}): that is damage, not a torn write")
        }
        (None, false) => "later logs follow it, so it cannot be a torn last write".into(),
        (None, true) => "the record there is whole but cannot be read".into(),
    };
    format!(
        "{} is damaged at offset {offset} ({reason}); {what}. Nothing was changed. \
         `velocityd repair --data-dir {}` would keep the {} records before offset {offset} and move the {} bytes \
         from there on to {} (restore from a backup if you need what they hold)",
        path.display(),
        data_dir.display(),
        scan.records.len(),
        data.len() as u64 - offset,
        quarantine_dir(data_dir).display()
    )
}

/// fsync a directory, so that the files created or renamed in it stay after a crash.
pub fn sync_dir(dir: &Path) -> Result<(), String> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("cannot sync {}: {e}", dir.display()))
}

/// Create `path` (0600: data files hold keys and values) with `chunks`, synced.
fn write_synced(path: &Path, chunks: impl IntoIterator<Item = Vec<u8>>) -> Result<u64, String> {
    let err = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    let mut n = 0;
    for c in chunks {
        n += c.len() as u64;
        f.write_all(&c).map_err(err)?;
    }
    f.sync_all().map_err(err)?;
    Ok(n)
}

fn create_dir(dir: &Path) -> Result<(), String> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))
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

/// Bytes free for this user on the file system holding `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs fills a local struct from a NUL-terminated path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statvfs(c.as_ptr(), &mut st) } == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

/// Files left by an interrupted start-up or snapshot: a generation CURRENT does not name,
/// `CURRENT.tmp`, snapshots being written (`snap-K.tmp`). None is ever the truth.
fn remove_leftovers(data_dir: &Path, generation: u64, shards: usize) {
    let wal = wal_dir(data_dir);
    let _ = std::fs::remove_file(wal.join("CURRENT.tmp"));
    if let Ok(rd) = std::fs::read_dir(&wal) {
        for e in rd.flatten() {
            if e.path().is_dir() && e.file_name().to_str() != Some(&generation.to_string()) {
                tracing::info!(path = %e.path().display(), "removing a generation left by an interrupted start-up");
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    for s in 0..shards {
        let Ok(rd) = std::fs::read_dir(shard_dir(data_dir, generation, s)) else { continue };
        for e in rd.flatten() {
            if e.file_name().to_str().is_some_and(|n| n.ends_with(".tmp")) {
                tracing::info!(path = %e.path().display(), "removing an unfinished snapshot");
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// Make the recovered state the one the cores serve: reuse the current generation in place when
/// the shards and the encryption are unchanged (cutting torn tails off), else write a new
/// generation for `rec.stores`. Returns the generation and where each core's log goes on.
pub fn lay_out(
    data_dir: &Path,
    rec: &Recovered,
    cipher: Option<&Cipher>,
    now_ms: u64,
) -> Result<(u64, Vec<ShardLog>), String> {
    let shards = rec.stores.len();
    if rec.reusable(shards, cipher.is_some()) {
        remove_leftovers(data_dir, rec.generation, shards);
        let mut logs = Vec::new();
        for (s, last) in rec.last_logs.iter().enumerate() {
            let last = last.as_ref().expect("checked above");
            if last.file_bytes > last.log.end {
                // Appending after a torn tail would make it damage: cut it (needs no space).
                let path = log_path(&shard_dir(data_dir, rec.generation, s), last.log.index);
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_len(last.log.end).and(f.sync_all()))
                    .map_err(|e| format!("cannot cut the torn tail of {}: {e}", path.display()));
                f?;
            }
            logs.push(last.log);
        }
        return Ok((rec.generation, logs));
    }
    let needed: u64 =
        rec.stores.iter().map(|s| s.data_bytes() as u64 + s.data_bytes() as u64 / 64 + 2 * (64 << 10)).sum();
    if let Some(free) = free_bytes(data_dir) {
        if free < needed {
            let why = if rec.old_shards != shards && rec.generation > 0 {
                format!(
                    " (or start with --cores {} to go on with the files as they are, which needs no space)",
                    rec.old_shards
                )
            } else {
                String::new()
            };
            return Err(format!(
                "laying the data out for {shards} shards needs about {needed} bytes in {}, and {free} are free: free some space{why}",
                data_dir.display()
            ));
        }
    }
    let generation = install(data_dir, rec.generation, &rec.stores, cipher, now_ms)?;
    let logs = (0..shards)
        .map(|s| {
            let snap = snap_path(&shard_dir(data_dir, generation, s), 0);
            let snapshot_bytes = std::fs::metadata(snap).map_or(0, |m| m.len());
            ShardLog { index: 0, end: HEADER_BYTES as u64, next_seq: 1, snapshot_bytes }
        })
        .collect();
    Ok((generation, logs))
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
        create_dir(&dir)?;
        let file = FileId { kind: FileKind::Snapshot, generation, shard: s as u32, index: 0 };
        let made = write_snapshot(&snap_path(&dir, 0), file, store, cipher, now_ms)
            .and_then(|_| write_synced(&log_path(&dir, 0), [file_header(FileKind::Log, cipher).to_vec()]))
            .and_then(|_| sync_dir(&dir));
        if let Err(e) = made {
            // Whatever this attempt wrote is not the truth; give its space back.
            let _ = std::fs::remove_dir_all(&gen_dir);
            return Err(e);
        }
    }
    sync_dir(&gen_dir)?;
    let tmp = wal.join("CURRENT.tmp");
    write_synced(&tmp, [format!("generation {generation}\nshards {}\n", stores.len()).into_bytes()])?;
    std::fs::rename(&tmp, wal.join("CURRENT"))
        .map_err(|e| format!("cannot switch {}: {e}", wal.display()))?;
    sync_dir(&wal)?;
    remove_leftovers(data_dir, generation, stores.len());
    Ok(generation)
}
