//! What SHOW STATS, SHOW STATUS, SHOW SLOWLOG and a STATS request answer: every core's
//! statistics or slow log, collected over the mesh, and the server's settings, in the rows
//! `stats` and `slowlog` build.

use super::core::Core;
use super::runtime::now_ms;
use super::session::{Phase, Session};
use super::wal::Mode;
use crate::error::WireError;
use crate::protocol::ResultSet;
use crate::stats::{stats_rows, status_rows, Settings};
use std::rc::Rc;
use std::sync::atomic::Ordering;

/// Which report.
#[derive(Clone, Copy)]
pub enum InfoKind {
    ShowStats,
    ShowStatus,
    StatsFrame,
    ShowSlowlog { limit: Option<u64> },
    ResetSlowlog,
}

fn durability_text(mode: Mode) -> String {
    match mode {
        Mode::Sync => "sync (acknowledged after fdatasync; group commit)".into(),
        Mode::Periodic { interval_ms } => format!("periodic (fdatasync every {interval_ms} ms)"),
    }
}

pub async fn info(core: &Rc<Core>, s: &Session, what: InfoKind) -> Result<ResultSet, WireError> {
    match what {
        InfoKind::ShowSlowlog { limit } => {
            let all = core.collect_slowlog(false).await;
            return crate::slowlog::result(all, limit, core.shared.config.max_payload);
        }
        InfoKind::ResetSlowlog => {
            let removed = core.collect_slowlog(true).await.iter().map(Vec::len).sum::<usize>();
            return Ok(ResultSet::affected(removed as u64));
        }
        _ => {}
    }
    let all = core.collect_stats().await;
    let rows = match what {
        InfoKind::ShowStats | InfoKind::StatsFrame => stats_rows(&all, rss_bytes()),
        InfoKind::ShowStatus => {
            let (shared, cfg) = (&core.shared, &core.shared.config);
            let (user, role) = match &s.phase {
                Phase::Ready { user, role, .. } => (user.to_string(), role.name()),
                _ => (String::new(), ""),
            };
            let settings = Settings {
                uptime_s: shared.started.elapsed().as_secs(),
                connections: shared.connections.load(Ordering::Relaxed) as u64,
                max_connections: shared.max_connections as u64,
                max_payload: cfg.max_payload,
                durability: cfg.durability.map(durability_text),
                encrypted: cfg.encryption_key.is_some(),
                tls: shared.tls.is_some(),
                user,
                role,
                now_ms: now_ms(),
                eviction: cfg.eviction.name(),
            };
            status_rows(&settings, &all)
        }
        InfoKind::ShowSlowlog { .. } | InfoKind::ResetSlowlog => unreachable!("answered above"),
    };
    Ok(ResultSet::name_value(rows))
}

/// Resident memory of the whole process.
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .map_or(0, |pages| pages * 4096)
}
