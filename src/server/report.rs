//! What SHOW STATS, SHOW STATUS and a STATS request answer: every core's statistics, merged,
//! and the server's settings.

use super::core::Core;
use super::runtime::now_ms;
use super::session::{Phase, Session};
use super::stats::ShardStats;
use super::wal::Mode;
use crate::protocol::{ResultSet, Value, VERSION};
use std::rc::Rc;
use std::sync::atomic::Ordering;

/// Which report.
#[derive(Clone, Copy)]
pub enum InfoKind {
    ShowStats,
    ShowStatus,
    StatsFrame,
}

fn durability_text(cfg: &super::config::Config) -> String {
    match cfg.durability {
        None => "none (in memory only)".into(),
        Some(Mode::Sync) => "sync (acknowledged after fdatasync; group commit)".into(),
        Some(Mode::Periodic { interval_ms }) => format!("periodic (fdatasync every {interval_ms} ms)"),
    }
}

pub async fn info(core: &Rc<Core>, s: &Session, what: InfoKind) -> ResultSet {
    let all = core.collect_stats().await;
    let int = |v: u64| Value::Int(v as i64);
    let text = |s: &str| Value::Bytes(s.as_bytes().to_vec());
    let rows = match what {
        InfoKind::ShowStats | InfoKind::StatsFrame => {
            let mut total = all[0].clone();
            for s in &all[1..] {
                total.merge(s);
            }
            total.rows()
        }
        InfoKind::ShowStatus => {
            let cfg = &core.shared.config;
            let (user, role) = match &s.phase {
                Phase::Ready { user, role, .. } => (&**user, role.name()),
                _ => ("", ""),
            };
            let mut rows = vec![
                ("version".to_string(), text(env!("CARGO_PKG_VERSION"))),
                ("protocol_version".into(), int(VERSION as u64)),
                ("uptime_s".into(), int(core.shared.started.elapsed().as_secs())),
                ("shards".into(), int(core.shards as u64)),
                ("connections".into(), int(core.shared.connections.load(Ordering::Relaxed) as u64)),
                ("max_connections".into(), int(core.shared.max_connections as u64)),
                ("max_payload".into(), int(cfg.max_payload as u64)),
                ("durability".into(), text(&durability_text(cfg))),
                (
                    "encryption_at_rest".into(),
                    text(if cfg.encryption_key.is_some() { "AES-256-GCM" } else { "off" }),
                ),
                ("tls".into(), text(if core.shared.tls.is_some() { "TLS 1.3" } else { "off" })),
                ("user".into(), text(user)),
                ("role".into(), text(role)),
            ];
            if cfg.durability.is_some() {
                let total = |f: fn(&ShardStats) -> u64| all.iter().map(f).sum::<u64>();
                rows.push(("wal_log_bytes".into(), int(total(|s| s.log_bytes))));
                rows.push(("wal_snapshot_bytes".into(), int(total(|s| s.snapshot_bytes))));
                let last = all.iter().map(|s| s.last_snapshot_ms).max().unwrap_or(0);
                rows.push(("wal_last_snapshot_unix_ms".into(), int(last)));
                rows.push(("wal_last_snapshot_age_s".into(), int(now_ms().saturating_sub(last) / 1000)));
                rows.push(("storage_errors".into(), int(total(|s| s.storage_errors))));
            }
            for (i, s) in all.iter().enumerate() {
                rows.push((format!("shard_{i}_keys"), int(s.keys)));
                rows.push((format!("shard_{i}_connections"), int(s.connections)));
                if cfg.durability.is_some() {
                    rows.push((format!("shard_{i}_wal_log_bytes"), int(s.log_bytes)));
                    rows.push((format!("shard_{i}_wal_snapshot_bytes"), int(s.snapshot_bytes)));
                }
            }
            rows
        }
    };
    crate::shard::plan::name_value_result(rows)
}
