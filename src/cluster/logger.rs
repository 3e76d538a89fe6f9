//! raft-rs logs through slog; this drain hands its records to `tracing`, where the server's
//! other logs go, at the same level (elections and leader changes at info, the rest at debug).

use slog::{Drain, Level, OwnedKVList, Record, KV};

struct ToTracing;

/// The key-value pairs of a slog record, as `key=value` text.
struct Pairs(String);

impl slog::Serializer for Pairs {
    fn emit_arguments(&mut self, key: slog::Key, val: &std::fmt::Arguments<'_>) -> slog::Result {
        use std::fmt::Write;
        let _ = write!(self.0, " {key}={val}");
        Ok(())
    }
}

impl Drain for ToTracing {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> Result<(), slog::Never> {
        // Formatted only when tracing keeps the level: raft-rs logs every message at debug.
        let kv = || {
            let mut kv = Pairs(String::new());
            let _ = record.kv().serialize(record, &mut kv);
            let _ = values.serialize(record, &mut kv);
            kv.0
        };
        let msg = record.msg();
        match record.level() {
            Level::Critical | Level::Error => tracing::error!(target: "raft", "{msg}{}", kv()),
            Level::Warning => tracing::warn!(target: "raft", "{msg}{}", kv()),
            Level::Info => tracing::info!(target: "raft", "{msg}{}", kv()),
            Level::Debug | Level::Trace => tracing::debug!(target: "raft", "{msg}{}", kv()),
        }
        Ok(())
    }
}

/// The logger to give raft-rs, naming the node and range of its replica.
pub fn raft_logger(node: super::NodeId, range: super::RangeId) -> slog::Logger {
    slog::Logger::root(ToTracing.fuse(), slog::o!("node" => node, "range" => range))
}
