//! The audit log: one JSON line per login attempt and per request, in `audit/shard-<i>.log`
//! under the data directory, rotated by size. Each core formats its lines into a buffer of its
//! own (no allocation per line) and hands full buffers — or whatever it has every 100 ms — to a
//! writer thread of the shard's own through a bounded queue, so the request path never waits on
//! the disk. When the disk cannot keep up and the queue is full, the buffer's lines are dropped
//! and counted (`audit_dropped` in SHOW STATS, and a warning in the log): availability wins over
//! a complete audit trail, and the count says exactly how incomplete it is.
//!
//! What a line holds: time, shard, connection id, peer address, user, event, statement kind,
//! the key or key range (keys only, as SQL literals), rows, result code and latency. Never a
//! password, credential, API key or value.
//!
//! With `--encryption-key-file` the lines name keys, which must not be on disk in the clear: each
//! batch of lines handed to the writer is sealed with the data key as one record (the log's
//! framing: numbered, checksummed, AES-256-GCM with the file and offset as associated data), and
//! older plain files are sealed at start. `velocityd audit` prints them as JSON lines again.

use super::runtime::now_ms;
use crate::durability::{file_header, seal_record, Cipher, FileId, FileKind, HEADER_BYTES};
use crate::limits::{AUDIT_BUFFER_BYTES, AUDIT_FLUSH_MS, AUDIT_QUEUE_BUFFERS};
use crate::protocol::ErrorCode;
use std::cell::{Cell, RefCell};
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

mod describe;
pub use describe::{describe, describe_key, describe_text, lit};

pub struct AuditLog {
    tx: Option<crossbeam_channel::Sender<Vec<u8>>>,
    writer: Option<std::thread::JoinHandle<()>>,
    /// Lines formatted since the last hand-over, and how many.
    buf: RefCell<Vec<u8>>,
    lines: Cell<u64>,
    pub dropped: Cell<u64>,
    /// The last peer address written, as text: a batch's lines are mostly of one connection,
    /// and formatting an address cost more than the rest of the line.
    peer_text: RefCell<Option<(std::net::SocketAddr, String)>>,
}

struct Writer {
    path: PathBuf,
    out: BufWriter<File>,
    written: u64,
    max_bytes: u64,
    keep: usize,
    /// With encryption: the key, this shard, and the number of the next record of the file.
    seal: Option<Seal>,
}

struct Seal {
    cipher: Arc<Cipher>,
    shard: u32,
    next_seq: u64,
}

/// Every audit file is sealed as the same "file" (the name changes as files rotate): a record
/// cannot move to another offset, and no record of a data file passes for an audit one.
fn audit_file_id(shard: u32) -> FileId {
    FileId { kind: FileKind::Audit, generation: 0, shard, index: 0 }
}

/// The files of a shard's audit log, oldest first (`shard-N.log.K`, …, `shard-N.log`).
pub fn audit_files(data_dir: &Path, shard: usize) -> Vec<PathBuf> {
    let path = data_dir.join("audit").join(format!("shard-{shard}.log"));
    let mut v: Vec<(usize, PathBuf)> = fs::read_dir(data_dir.join("audit"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let k = name.strip_prefix(&format!("shard-{shard}.log."))?.parse().ok()?;
            Some((k, e.path()))
        })
        .collect();
    v.sort_by_key(|f| std::cmp::Reverse(f.0));
    let mut out: Vec<PathBuf> = v.into_iter().map(|(_, p)| p).collect();
    if path.exists() {
        out.push(path);
    }
    out
}

fn is_sealed(header: &[u8]) -> bool {
    header.starts_with(crate::durability::AUDIT_MAGIC)
}

/// Rewrite a plain audit file sealed: its lines in records of about AUDIT_BUFFER_BYTES.
fn seal_file(path: &Path, cipher: &Cipher, shard: u32) -> std::io::Result<()> {
    let plain = fs::read(path)?;
    let mut out = file_header(FileKind::Audit, Some(cipher)).to_vec();
    let mut rest = &plain[..];
    let mut seq = 1;
    while !rest.is_empty() {
        let mut cut = rest.len().min(AUDIT_BUFFER_BYTES);
        if cut < rest.len() {
            cut = rest[..cut].iter().rposition(|b| *b == b'\n').map_or(cut, |i| i + 1);
        }
        let at = out.len() as u64;
        seal_record(&mut out, &rest[..cut], &audit_file_id(shard), at, seq, Some(cipher));
        seq += 1;
        rest = &rest[cut..];
    }
    let tmp = path.with_extension("sealing");
    let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(&out)?;
    f.sync_all()?;
    fs::rename(&tmp, path)
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).mode(0o600).open(path)
}

impl Writer {
    /// The writer thread: lines as they come, a flush whenever none came for AUDIT_FLUSH_MS,
    /// and a sync at the end.
    fn run(mut self, rx: crossbeam_channel::Receiver<Vec<u8>>) {
        // The executor that starts this thread is pinned; the writer need not share its
        // core, so let the kernel place it on any CPU.
        if let Some(cores) = core_affinity::get_core_ids() {
            // SAFETY: an all-zero cpu_set_t is the empty set.
            let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
            for c in cores {
                // SAFETY: CPU_SET on a local set, with ids the system gave.
                unsafe { libc::CPU_SET(c.id, &mut set) };
            }
            // SAFETY: this thread's own affinity, from a valid set of its size.
            unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
        }
        let mut failed = false;
        loop {
            match rx.recv_timeout(Duration::from_millis(AUDIT_FLUSH_MS)) {
                Ok(lines) => {
                    if let Err(e) = self.write(&lines) {
                        if !failed {
                            tracing::error!(error = %e, path = %self.path.display(), "cannot write the audit log");
                            failed = true;
                        }
                    }
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    let _ = self.out.flush();
                }
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            }
        }
        let _ = self.out.flush();
        let _ = self.out.get_ref().sync_all();
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.out.flush()?;
        for i in (1..self.keep).rev() {
            let from = self.path.with_extension(format!("log.{i}"));
            if from.exists() {
                fs::rename(&from, self.path.with_extension(format!("log.{}", i + 1)))?;
            }
        }
        if self.keep > 0 {
            fs::rename(&self.path, self.path.with_extension("log.1"))?;
        } else {
            fs::remove_file(&self.path)?;
        }
        self.out = BufWriter::new(open_append(&self.path)?);
        self.written = 0;
        self.start_sealed()
    }

    /// A new sealed file starts with its header.
    fn start_sealed(&mut self) -> std::io::Result<()> {
        if let (Some(seal), 0) = (&mut self.seal, self.written) {
            let header = file_header(FileKind::Audit, Some(&seal.cipher));
            self.out.write_all(&header)?;
            self.written = header.len() as u64;
            seal.next_seq = 1;
        }
        Ok(())
    }

    /// Write whole lines; rotation happens between lines (between records, when sealed).
    fn write(&mut self, lines: &[u8]) -> std::io::Result<()> {
        if self.seal.is_none() {
            return self.write_plain(lines);
        }
        let len = crate::durability::sealed_len(lines.len(), true) as u64;
        if self.written > HEADER_BYTES as u64 && self.written + len > self.max_bytes {
            self.rotate()?;
        }
        let seal = self.seal.as_mut().expect("sealed above");
        let mut out = Vec::with_capacity(len as usize);
        seal_record(
            &mut out,
            lines,
            &audit_file_id(seal.shard),
            self.written,
            seal.next_seq,
            Some(&seal.cipher),
        );
        seal.next_seq += 1;
        self.out.write_all(&out)?;
        self.written += out.len() as u64;
        Ok(())
    }

    fn write_plain(&mut self, mut lines: &[u8]) -> std::io::Result<()> {
        while !lines.is_empty() {
            let room = self.max_bytes.saturating_sub(self.written) as usize;
            // As many whole lines as fit (at least one, into an empty file).
            let mut cut = lines.len().min(room);
            if cut < lines.len() {
                cut = lines[..cut].iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
                if cut == 0 && self.written > 0 {
                    self.rotate()?;
                    continue;
                }
                if cut == 0 {
                    cut = lines.iter().position(|b| *b == b'\n').map_or(lines.len(), |i| i + 1);
                }
            }
            self.out.write_all(&lines[..cut])?;
            self.written += cut as u64;
            lines = &lines[cut..];
        }
        Ok(())
    }
}

impl AuditLog {
    /// One line: who (connection `conn` of `peer`, as `user`) did what (`event`, `kind`) to
    /// what (`target`), and how it went.
    #[allow(clippy::too_many_arguments)]
    pub fn line(
        &self,
        shard: usize,
        conn: u64,
        peer: Option<std::net::SocketAddr>,
        user: &str,
        event: &str,
        kind: &str,
        target: Option<&str>,
        rows: u64,
        code: ErrorCode,
        latency_us: u64,
    ) {
        // Built from pieces, without `core::fmt` (a third of the line's cost), once a request.
        let mut num = itoa::Buffer::new();
        self.record(|b| {
            let put = |b: &mut Vec<u8>, piece: &str| b.extend_from_slice(piece.as_bytes());
            put(b, "{\"ts_ms\":");
            put(b, num.format(now_ms()));
            put(b, ",\"shard\":");
            put(b, num.format(shard));
            put(b, ",\"conn\":");
            put(b, num.format(conn));
            put(b, ",\"peer\":\"");
            if let Some(p) = peer {
                let mut cached = self.peer_text.borrow_mut();
                if cached.as_ref().is_none_or(|(a, _)| *a != p) {
                    *cached = Some((p, p.to_string()));
                }
                put(b, &cached.as_ref().expect("just set").1);
            }
            put(b, "\",\"user\":");
            put_json_str(b, user);
            put(b, ",\"event\":\"");
            put(b, event);
            put(b, "\",\"kind\":\"");
            put(b, kind);
            put(b, "\",\"target\":");
            put_json_str(b, target.unwrap_or(""));
            put(b, ",\"rows\":");
            put(b, num.format(rows));
            put(b, ",\"code\":\"");
            put(b, code.name());
            put(b, "\",\"latency_us\":");
            put(b, num.format(latency_us));
            put(b, "}");
        });
    }

    pub fn off() -> AuditLog {
        AuditLog {
            tx: None,
            writer: None,
            buf: RefCell::new(Vec::new()),
            lines: Cell::new(0),
            dropped: Cell::new(0),
            peer_text: RefCell::new(None),
        }
    }

    /// Open shard `shard`'s audit log; sealed with `cipher` when given (older plain files are
    /// sealed now), plain otherwise (a sealed current file is rotated away first).
    pub fn open(
        data_dir: &Path,
        shard: usize,
        max_bytes: u64,
        keep: usize,
        cipher: Option<Arc<Cipher>>,
    ) -> Result<AuditLog, String> {
        let dir = data_dir.join("audit");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let path = dir.join(format!("shard-{shard}.log"));
        let err = |e: std::io::Error| format!("audit log {}: {e}", path.display());
        let mut seal = None;
        let mut current_sealed = false;
        for f in audit_files(data_dir, shard) {
            let mut head = [0u8; HEADER_BYTES];
            let n = File::open(&f).and_then(|mut h| std::io::Read::read(&mut h, &mut head)).unwrap_or(0);
            let sealed = n == HEADER_BYTES && is_sealed(&head);
            match (&cipher, sealed) {
                (Some(c), false) if n > 0 => {
                    seal_file(&f, c, shard as u32).map_err(|e| format!("cannot seal {}: {e}", f.display()))?
                }
                _ => {}
            }
            if f == path {
                current_sealed = n > 0 && (sealed || cipher.is_some());
            }
        }
        if let Some(c) = &cipher {
            // Go on after the last good record (a crash may have torn the last write).
            let mut next_seq = 1;
            if current_sealed {
                let data = fs::read(&path).map_err(err)?;
                let (records, good_end, _) =
                    crate::durability::scan_records(&data, &audit_file_id(shard as u32), Some(c))
                        .map_err(|e| format!("audit log {}: {e}", path.display()))?;
                OpenOptions::new().write(true).open(&path).and_then(|f| f.set_len(good_end)).map_err(err)?;
                next_seq = records.len() as u64 + 1;
            }
            seal = Some(Seal { cipher: c.clone(), shard: shard as u32, next_seq });
        }
        let file = open_append(&path).map_err(err)?;
        let written = file.metadata().map_or(0, |m| m.len());
        let (tx, rx) = crossbeam_channel::bounded::<Vec<u8>>(AUDIT_QUEUE_BUFFERS);
        let mut w = Writer {
            path: path.clone(),
            out: BufWriter::new(file),
            written,
            max_bytes: max_bytes.max(4096),
            keep,
            seal,
        };
        if cipher.is_none() && current_sealed {
            // Plain lines do not go into a sealed file.
            w.rotate().map_err(err)?;
        }
        w.start_sealed().map_err(err)?;
        let writer = std::thread::Builder::new()
            .name(format!("velocity-audit-{shard}"))
            .spawn(move || w.run(rx))
            .map_err(|e| format!("cannot start the audit writer: {e}"))?;
        Ok(AuditLog {
            tx: Some(tx),
            writer: Some(writer),
            buf: RefCell::new(Vec::with_capacity(AUDIT_BUFFER_BYTES)),
            lines: Cell::new(0),
            dropped: Cell::new(0),
            peer_text: RefCell::new(None),
        })
    }

    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Append one line, written by `line` (without its newline).
    pub fn record(&self, line: impl FnOnce(&mut Vec<u8>)) {
        if self.tx.is_none() {
            return;
        }
        let full = {
            let mut b = self.buf.borrow_mut();
            line(&mut b);
            b.push(b'\n');
            b.len() >= AUDIT_BUFFER_BYTES
        };
        self.lines.set(self.lines.get() + 1);
        if full {
            self.flush();
        }
    }

    /// Hand what is buffered to the writer (called when the buffer fills, and on a tick).
    pub fn flush(&self) {
        let Some(tx) = &self.tx else { return };
        let lines = self.lines.replace(0);
        if lines == 0 {
            return;
        }
        let buf = std::mem::replace(&mut *self.buf.borrow_mut(), Vec::with_capacity(AUDIT_BUFFER_BYTES));
        if tx.try_send(buf).is_err() {
            let before = self.dropped.get();
            self.dropped.set(before + lines);
            if (before + lines).ilog2() != before.max(1).ilog2() || before == 0 {
                tracing::warn!(dropped = before + lines, "audit log cannot keep up: lines dropped");
            }
        }
    }

    /// Stop taking lines and wait until the writer has written and synced what it has.
    pub fn close(&mut self) {
        self.flush();
        self.tx = None;
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        self.close();
    }
}

/// The lines of every audit file of the data directory, oldest first per shard, as JSON lines
/// (sealed files opened with `cipher`); warnings for damaged or unreadable files go to `warn`.
pub fn read_all(
    data_dir: &Path,
    cipher: Option<&Cipher>,
    out: &mut dyn Write,
    warn: &mut dyn FnMut(String),
) -> Result<(), String> {
    for shard in 0.. {
        let files = audit_files(data_dir, shard);
        if files.is_empty() {
            break;
        }
        for f in files {
            let data = fs::read(&f).map_err(|e| format!("cannot read {}: {e}", f.display()))?;
            if !is_sealed(&data) {
                out.write_all(&data).map_err(|e| e.to_string())?;
                continue;
            }
            let Some(c) = cipher else {
                warn(format!("{} is sealed: give --encryption-key-file", f.display()));
                continue;
            };
            match crate::durability::scan_records(&data, &audit_file_id(shard as u32), Some(c)) {
                Ok((records, _, tail)) => {
                    for r in records {
                        out.write_all(&r).map_err(|e| e.to_string())?;
                    }
                    if let crate::durability::Tail::Torn { offset, reason }
                    | crate::durability::Tail::Corrupt { offset, reason, .. } = tail
                    {
                        warn(format!("{}: stopped at offset {offset} ({reason})", f.display()));
                    }
                }
                Err(e) => warn(format!("{}: {e}", f.display())),
            }
        }
    }
    Ok(())
}

/// Append `s` as a JSON string literal.
pub fn put_json_str(out: &mut Vec<u8>, s: &str) {
    let _ = serde_json::to_writer(out, s);
}
