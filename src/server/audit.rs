//! The audit log: one JSON line per login attempt and per request, in `audit/shard-<i>.log`
//! under the data directory, rotated by size. Lines are handed to a writer thread of the shard's
//! own through a bounded queue, so the request path never waits on the disk. When the disk
//! cannot keep up and the queue is full, the line is dropped and counted (`audit_dropped` in
//! SHOW STATS, and a warning in the log): availability wins over a complete audit trail, and the
//! count says exactly how incomplete it is.
//!
//! What a line holds: time, shard, connection id, peer address, user, event, statement kind,
//! the key or key range (keys only, as SQL literals), rows, result code and latency. Never a
//! password, credential, API key or value.

use crate::limits::{AUDIT_FLUSH_MS, AUDIT_QUEUE_LINES};
use std::cell::Cell;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub struct AuditLog {
    tx: Option<crossbeam_channel::Sender<String>>,
    writer: Option<std::thread::JoinHandle<()>>,
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

    fn write(&mut self, line: &str) -> std::io::Result<()> {
        if self.written + line.len() as u64 + 1 > self.max_bytes && self.written > 0 {
            self.rotate()?;
        }
        self.out.write_all(line.as_bytes())?;
        self.out.write_all(b"\n")?;
        self.written += line.len() as u64 + 1;
        Ok(())
    }
}

impl AuditLog {
    pub fn off() -> AuditLog {
        AuditLog { tx: None, writer: None, dropped: Cell::new(0) }
    }

    pub fn open(data_dir: &Path, shard: usize, max_bytes: u64, keep: usize) -> Result<AuditLog, String> {
        let dir = data_dir.join("audit");
        fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let path = dir.join(format!("shard-{shard}.log"));
        let file = open_append(&path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let written = file.metadata().map_or(0, |m| m.len());
        let (tx, rx) = crossbeam_channel::bounded::<String>(AUDIT_QUEUE_LINES);
        let mut w = Writer { path, out: BufWriter::new(file), written, max_bytes: max_bytes.max(4096), keep };
        let writer = std::thread::Builder::new()
            .name(format!("velocity-audit-{shard}"))
            .spawn(move || {
                let mut failed = false;
                loop {
                    match rx.recv_timeout(Duration::from_millis(AUDIT_FLUSH_MS)) {
                        Ok(line) => {
                            if let Err(e) = w.write(&line) {
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
        Ok(AuditLog { tx: Some(tx), writer: Some(writer), dropped: Cell::new(0) })
    }

    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    pub fn record(&self, line: String) {
        if let Some(tx) = &self.tx {
            if tx.try_send(line).is_err() {
                let n = self.dropped.get() + 1;
                self.dropped.set(n);
                if n.is_power_of_two() {
                    tracing::warn!(dropped = n, "audit log cannot keep up: lines dropped");
                }
            }
        }
    }

    /// Stop taking lines and wait until the writer has written and synced what it has.
    pub fn close(&mut self) {
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

/// JSON string literal for `s`.
pub fn json_str(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}
