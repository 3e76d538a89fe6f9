//! The audit log: one record per login attempt and per request, in `audit/shard-<i>.log` under
//! the data directory, rotated by size. Each core appends compact binary records
//! (`crate::audit_record`: a few copies, no formatting) to a buffer of its own and hands full
//! buffers — or whatever it has every 100 ms — to a writer thread of the shard's own through a
//! bounded queue, so the request path never waits on the disk. The writer writes each buffer as
//! one record of the data files' framing (numbered and checksummed; with
//! `--encryption-key-file`, sealed with the data key: AES-256-GCM with the file and offset as
//! associated data, since records name keys). `velocityd audit` renders them as JSON lines.
//! When the disk cannot keep up and the queue is full, the buffer's records are dropped and
//! counted (`audit_dropped` in SHOW STATS, and a warning in the log): availability wins over a
//! complete audit trail, and the count says exactly how incomplete it is.
//!
//! What a record holds: time, shard, connection id, peer address, user, event, statement kind,
//! the key or key range (keys only), rows, result code and latency. Never a password,
//! credential, API key or value.
//!
//! Older releases wrote JSON lines, plain or (encrypted) in sealed records; `velocityd audit`
//! still reads both, and a plain file is sealed at start when a key is given.

use crate::audit_record::{encode, is_record_tag, record_len, render_json, Record};
use crate::durability::{
    file_header, header_encrypted, scan_records, seal_record, sealed_len, Cipher, FileId, FileKind, Tail,
    HEADER_BYTES,
};
use crate::limits::{AUDIT_BUFFER_BYTES, AUDIT_FLUSH_MS, AUDIT_QUEUE_BUFFERS};
use std::cell::{Cell, RefCell};
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

mod describe;
pub use describe::{describe, describe_text};

pub struct AuditLog {
    tx: Option<crossbeam_channel::Sender<Vec<u8>>>,
    writer: Option<std::thread::JoinHandle<()>>,
    /// Records encoded since the last hand-over, and how many.
    buf: RefCell<Vec<u8>>,
    lines: Cell<u64>,
    pub dropped: Cell<u64>,
}

struct Writer {
    path: PathBuf,
    out: BufWriter<File>,
    written: u64,
    max_bytes: u64,
    keep: usize,
    shard: u32,
    /// The data key, when records are sealed with it.
    cipher: Option<Arc<Cipher>>,
    /// The number of the file's next record.
    next_seq: u64,
}

/// Every audit file is framed as the same "file" (the name changes as files rotate): a record
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

/// What an audit file holds, by its first bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Form {
    Empty,
    /// JSON lines, as releases before the binary records wrote them.
    Lines,
    Framed {
        encrypted: bool,
    },
}

fn form_of(head: &[u8]) -> Form {
    if head.is_empty() {
        Form::Empty
    } else if head.starts_with(crate::durability::AUDIT_MAGIC) {
        Form::Framed { encrypted: header_encrypted(head) }
    } else {
        Form::Lines
    }
}

/// Rewrite an unencrypted audit file sealed: a framed file record by record, a file of JSON
/// lines in records of about AUDIT_BUFFER_BYTES.
fn seal_file(path: &Path, form: Form, cipher: &Cipher, shard: u32) -> Result<(), String> {
    let err = |e: std::io::Error| format!("cannot seal {}: {e}", path.display());
    let data = fs::read(path).map_err(err)?;
    let mut payloads: Vec<Vec<u8>> = Vec::new();
    if form == Form::Lines {
        let mut rest = &data[..];
        while !rest.is_empty() {
            let mut cut = rest.len().min(AUDIT_BUFFER_BYTES);
            if cut < rest.len() {
                cut = rest[..cut].iter().rposition(|b| *b == b'\n').map_or(cut, |i| i + 1);
            }
            payloads.push(rest[..cut].to_vec());
            rest = &rest[cut..];
        }
    } else {
        // A torn last record is dropped here as at any open; damage is kept for the operator.
        let (records, _, tail) = scan_records(&data, &audit_file_id(shard), None)?;
        if let Tail::Corrupt { offset, reason, .. } = tail {
            return Err(format!("{} is damaged at offset {offset} ({reason}): move it away", path.display()));
        }
        payloads = records;
    }
    let mut out = file_header(FileKind::Audit, Some(cipher)).to_vec();
    for (i, p) in payloads.iter().enumerate() {
        let at = out.len() as u64;
        seal_record(&mut out, p, &audit_file_id(shard), at, i as u64 + 1, Some(cipher));
    }
    let tmp = path.with_extension("sealing");
    let mut f =
        OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(err)?;
    f.write_all(&out).map_err(err)?;
    f.sync_all().map_err(err)?;
    fs::rename(&tmp, path).map_err(err)
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
        self.start_file()
    }

    /// A new file starts with its header.
    fn start_file(&mut self) -> std::io::Result<()> {
        if self.written == 0 {
            let header = file_header(FileKind::Audit, self.cipher.as_deref());
            self.out.write_all(&header)?;
            self.written = header.len() as u64;
            self.next_seq = 1;
        }
        Ok(())
    }

    /// Write a buffer of whole records, as one record of the file or, where the file has no
    /// room for all of them, cut between them: a file passes its size only by a lone record.
    fn write(&mut self, mut records: &[u8]) -> std::io::Result<()> {
        let encrypted = self.cipher.is_some();
        while !records.is_empty() {
            let room = self.max_bytes.saturating_sub(self.written) as usize;
            if sealed_len(records.len(), encrypted) <= room {
                // The usual case: the whole buffer fits, and no record need be read.
                return self.write_block(records);
            }
            let mut cut = 0;
            while cut < records.len() {
                let Ok(n) = record_len(&records[cut..]) else {
                    // Our own encoding always reads back; were it not to, the rest goes whole.
                    cut = records.len();
                    break;
                };
                if cut > 0 && sealed_len(cut + n, encrypted) > room {
                    break;
                }
                cut += n;
            }
            if sealed_len(cut, encrypted) > room && self.written > HEADER_BYTES as u64 {
                self.rotate()?;
                continue;
            }
            self.write_block(&records[..cut])?;
            records = &records[cut..];
        }
        Ok(())
    }

    fn write_block(&mut self, block: &[u8]) -> std::io::Result<()> {
        let mut out = Vec::with_capacity(sealed_len(block.len(), self.cipher.is_some()));
        let file = audit_file_id(self.shard);
        seal_record(&mut out, block, &file, self.written, self.next_seq, self.cipher.as_deref());
        self.next_seq += 1;
        self.out.write_all(&out)?;
        self.written += out.len() as u64;
        Ok(())
    }
}

impl AuditLog {
    pub fn off() -> AuditLog {
        AuditLog {
            tx: None,
            writer: None,
            buf: RefCell::new(Vec::new()),
            lines: Cell::new(0),
            dropped: Cell::new(0),
        }
    }

    /// Open shard `shard`'s audit log; sealed with `cipher` when given (older unencrypted files
    /// are sealed now), plain otherwise (a current file of another form is rotated away first).
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
        let mut current = Form::Empty;
        for f in audit_files(data_dir, shard) {
            let mut head = [0u8; HEADER_BYTES];
            let n = File::open(&f).and_then(|mut h| std::io::Read::read(&mut h, &mut head)).unwrap_or(0);
            let mut form = form_of(&head[..n]);
            if let (Some(c), Form::Lines | Form::Framed { encrypted: false }) = (&cipher, form) {
                seal_file(&f, form, c, shard as u32)?;
                form = Form::Framed { encrypted: true };
            }
            if f == path {
                current = form;
            }
        }
        let mut next_seq = 1;
        // Go on after the last good record of a current file of this form (a crash may have
        // torn the last write); any other current file is rotated away, kept for `velocityd audit`.
        let mut go_on = current == Form::Framed { encrypted: cipher.is_some() };
        if go_on {
            let data = fs::read(&path).map_err(err)?;
            let (records, good_end, tail) =
                scan_records(&data, &audit_file_id(shard as u32), cipher.as_deref())
                    .map_err(|e| format!("audit log {}: {e}", path.display()))?;
            match tail {
                Tail::Corrupt { offset, reason, .. } => {
                    tracing::warn!(path = %path.display(), offset, reason, "audit file damaged: kept as it is, a new one started");
                    go_on = false;
                }
                _ => {
                    OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .and_then(|f| f.set_len(good_end))
                        .map_err(err)?;
                    next_seq = records.len() as u64 + 1;
                }
            }
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
            shard: shard as u32,
            cipher,
            next_seq,
        };
        if !go_on && current != Form::Empty {
            w.rotate().map_err(err)?;
        }
        w.start_file().map_err(err)?;
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
        })
    }

    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Append one record: who (connection `conn` of `peer`, as `user`) did what (`event`,
    /// `kind`) to what (`target`), and how it went.
    pub fn record(&self, r: &Record<'_>) {
        if self.tx.is_none() {
            return;
        }
        let full = {
            let mut b = self.buf.borrow_mut();
            encode(&mut b, r);
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

/// The records of every audit file of the data directory as JSON lines, oldest first per shard
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
            match form_of(&data[..data.len().min(HEADER_BYTES)]) {
                Form::Empty => continue,
                Form::Lines => {
                    out.write_all(&data).map_err(|e| e.to_string())?;
                    continue;
                }
                Form::Framed { encrypted: true } if cipher.is_none() => {
                    warn(format!("{} is sealed: give --encryption-key-file", f.display()));
                    continue;
                }
                Form::Framed { .. } => {}
            }
            let (blocks, _, tail) = match scan_records(&data, &audit_file_id(shard as u32), cipher) {
                Ok(scan) => scan,
                Err(e) => {
                    warn(format!("{}: {e}", f.display()));
                    continue;
                }
            };
            for b in blocks {
                render_block(&b, out, &mut |e| warn(format!("{}: {e}", f.display())))?;
            }
            if let Tail::Torn { offset, reason } | Tail::Corrupt { offset, reason, .. } = tail {
                warn(format!("{}: stopped at offset {offset} ({reason})", f.display()));
            }
        }
    }
    Ok(())
}

/// One block of a framed file as JSON lines: its binary records, or the lines older releases
/// sealed as they were.
fn render_block(block: &[u8], out: &mut dyn Write, warn: &mut dyn FnMut(String)) -> Result<(), String> {
    if !block.first().is_some_and(|b| is_record_tag(*b)) {
        return out.write_all(block).map_err(|e| e.to_string());
    }
    let mut lines = Vec::with_capacity(block.len() * 4);
    let mut at = 0;
    while at < block.len() {
        match render_json(&block[at..], &mut lines) {
            Ok(n) => at += n,
            Err(e) => {
                // The block's checksum held, so this is a record this build cannot read.
                warn(format!("a record it cannot read ({e}); the rest of its block skipped"));
                break;
            }
        }
    }
    out.write_all(&lines).map_err(|e| e.to_string())
}
