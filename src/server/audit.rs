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

use crate::limits::{AUDIT_BUFFER_BYTES, AUDIT_FLUSH_MS, AUDIT_QUEUE_BUFFERS};
use std::cell::{Cell, RefCell};
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub struct AuditLog {
    tx: Option<crossbeam_channel::Sender<Vec<u8>>>,
    writer: Option<std::thread::JoinHandle<()>>,
    /// Lines formatted since the last hand-over, and how many.
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
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).mode(0o600).open(path)
}

impl Writer {
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
        Ok(())
    }

    /// Write whole lines; rotation happens between lines.
    fn write(&mut self, mut lines: &[u8]) -> std::io::Result<()> {
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
    pub fn off() -> AuditLog {
        AuditLog {
            tx: None,
            writer: None,
            buf: RefCell::new(Vec::new()),
            lines: Cell::new(0),
            dropped: Cell::new(0),
        }
    }

    pub fn open(data_dir: &Path, shard: usize, max_bytes: u64, keep: usize) -> Result<AuditLog, String> {
        let dir = data_dir.join("audit");
        fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let path = dir.join(format!("shard-{shard}.log"));
        let file = open_append(&path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let written = file.metadata().map_or(0, |m| m.len());
        let (tx, rx) = crossbeam_channel::bounded::<Vec<u8>>(AUDIT_QUEUE_BUFFERS);
        let mut w = Writer { path, out: BufWriter::new(file), written, max_bytes: max_bytes.max(4096), keep };
        let writer = std::thread::Builder::new()
            .name(format!("velocity-audit-{shard}"))
            .spawn(move || {
                // The executor that starts this thread is pinned; the writer need not share its
                // core, so let the kernel place it on any CPU.
                if let Some(cores) = core_affinity::get_core_ids() {
                    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
                    for c in cores {
                        unsafe { libc::CPU_SET(c.id, &mut set) };
                    }
                    unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
                }
                let mut failed = false;
                loop {
                    match rx.recv_timeout(Duration::from_millis(AUDIT_FLUSH_MS)) {
                        Ok(lines) => {
                            if let Err(e) = w.write(&lines) {
                                if !failed {
                                    tracing::error!(error = %e, path = %w.path.display(), "cannot write the audit log");
                                    failed = true;
                                }
                            }
                        }
                        Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                            let _ = w.out.flush();
                        }
                        Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
                    }
                }
                let _ = w.out.flush();
                let _ = w.out.get_ref().sync_all();
            })
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

/// Append `s` as a JSON string literal.
pub fn put_json_str(out: &mut Vec<u8>, s: &str) {
    let _ = serde_json::to_writer(out, s);
}
