//! What one shard is asked to do for one statement, and what it answers. A `ShardOp` owns its
//! bytes so that it can cross cores; `run_op` applies it to a store. No I/O.

use crate::sql::{Column, ColumnList, LikePattern, TtlChange};
use crate::store::{ExpiryChange, KeyRange, Store};
use std::ops::ControlFlow;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutRow {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub ttl_s: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShardOp {
    Get {
        key: Vec<u8>,
    },
    /// The rows of the keys found, refusing with `TooLarge` (before copying a value) when
    /// their encoded size passes `bytes_max`.
    MultiGet {
        keys: Vec<Vec<u8>>,
        cols: ColumnList,
        bytes_max: usize,
    },
    Put {
        rows: Vec<PutRow>,
    },
    Update {
        key: Vec<u8>,
        value: Vec<u8>,
        ttl: TtlChange,
    },
    Delete {
        keys: Vec<Vec<u8>>,
    },
    DeleteRange {
        range: KeyRange,
        like: Option<LikePattern>,
    },
    /// Rows of `range` (matching `like`) in order, at most `limit`, refusing with `TooLarge`
    /// once their encoded size passes `bytes_max`.
    Scan {
        range: KeyRange,
        like: Option<LikePattern>,
        desc: bool,
        limit: u64,
        cols: ColumnList,
        bytes_max: usize,
    },
    Count {
        range: KeyRange,
        like: Option<LikePattern>,
    },
    /// Key count and memory of the shard, for SHOW STATS / STATUS.
    Info,
}

impl ShardOp {
    /// Whether the op changes the store (and so goes to the write-ahead log).
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            ShardOp::Put { .. }
                | ShardOp::Update { .. }
                | ShardOp::Delete { .. }
                | ShardOp::DeleteRange { .. }
        )
    }
}

/// One row read from a shard. `value` and `ttl_s` are filled only when the projection asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowOut {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub ttl_s: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardInfo {
    pub keys: u64,
    pub data_bytes: u64,
    pub index_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShardReply {
    /// Point read: the value and remaining TTL, or nothing.
    Entry(Option<(Vec<u8>, Option<i64>)>),
    Rows(Vec<RowOut>),
    TooLarge,
    Count(u64),
    Affected(u64),
    Info(ShardInfo),
    /// The write could not be made durable and was taken back.
    StorageError,
}

impl ShardReply {
    /// Roughly the bytes this reply holds: what a batch counts against its output bound.
    pub fn held_bytes(&self) -> usize {
        const ROW_OVERHEAD_BYTES: usize = 48;
        match self {
            ShardReply::Entry(Some((v, _))) => ROW_OVERHEAD_BYTES + v.len(),
            ShardReply::Rows(rows) => {
                rows.iter().map(|r| ROW_OVERHEAD_BYTES + r.key.len() + r.value.len()).sum::<usize>()
            }
            _ => ROW_OVERHEAD_BYTES,
        }
    }
}

/// A statement part that may visit or write many entries, run a slice at a time (Core): what
/// it has gathered so far and where it goes on. Each slice looks at a bounded number of entries
/// (or writes a bounded number of rows); each key is read or written atomically, the part as a
/// whole is not (docs/protocol.md).
#[derive(Debug, Default)]
pub struct Sliced {
    /// The range still to visit (None: not started, or done).
    rest: Option<KeyRange>,
    started: bool,
    /// A Scan's rows and their encoded size; a Count's count; a Put's next row; what a write's
    /// slices affected.
    rows: Vec<RowOut>,
    bytes: usize,
    count: u64,
    next_row: usize,
    affected: u64,
}

impl Sliced {
    /// Whether `op` may take more than one slice.
    pub fn needed(op: &ShardOp, budget: usize) -> bool {
        match op {
            ShardOp::Scan { .. } | ShardOp::DeleteRange { .. } => true,
            ShardOp::Count { range, like } => like.is_some() || *range != KeyRange::all(),
            ShardOp::Put { rows } => rows.len() > budget,
            _ => false,
        }
    }

    fn range(&mut self, op: &ShardOp) -> Option<KeyRange> {
        if !self.started {
            self.started = true;
            return match op {
                ShardOp::Scan { range, .. }
                | ShardOp::Count { range, .. }
                | ShardOp::DeleteRange { range, .. } => Some(range.clone()),
                _ => None,
            };
        }
        self.rest.take()
    }

    /// One slice of a read (Scan, Count): the reply once the last slice is done.
    pub fn read_step(
        &mut self,
        op: &ShardOp,
        store: &Store,
        now_ms: u64,
        budget: usize,
    ) -> Option<ShardReply> {
        let range = self.range(op);
        match op {
            ShardOp::Scan { like, desc, limit, cols, bytes_max, .. } => {
                let (rows, bytes) = (&mut self.rows, &mut self.bytes);
                let mut too_large = false;
                if let (Some(range), true) = (range, *limit > 0 && (rows.len() as u64) < *limit) {
                    self.rest = store.scan_slice(&range, *desc, now_ms, budget, |e| {
                        if !matches(like, e.key) {
                            return ControlFlow::Continue(());
                        }
                        *bytes +=
                            row_encoded_len(cols, e.key.len(), e.value.len(), e.expires_at_ms.is_some());
                        if *bytes > *bytes_max {
                            too_large = true;
                            return ControlFlow::Break(());
                        }
                        rows.push(to_row(cols, e, now_ms));
                        if rows.len() as u64 >= *limit {
                            ControlFlow::Break(())
                        } else {
                            ControlFlow::Continue(())
                        }
                    });
                }
                if too_large {
                    self.rest = None;
                    return Some(ShardReply::TooLarge);
                }
                self.rest.is_none().then(|| ShardReply::Rows(std::mem::take(&mut self.rows)))
            }
            ShardOp::Count { like, .. } => {
                let n = &mut self.count;
                if let Some(range) = range {
                    self.rest = store.scan_slice(&range, false, now_ms, budget, |e| {
                        *n += matches(like, e.key) as u64;
                        ControlFlow::Continue(())
                    });
                }
                self.rest.is_none().then_some(ShardReply::Count(self.count))
            }
            other => unreachable!("read_step of {other:?}"),
        }
    }

    /// The keys the next slice of a DeleteRange removes (at most `writes` of them, at most
    /// `visits` entries looked at), and whether it is the last slice.
    pub fn next_doomed(
        &mut self,
        op: &ShardOp,
        store: &Store,
        now_ms: u64,
        visits: usize,
        writes: usize,
    ) -> (Vec<Vec<u8>>, bool) {
        let ShardOp::DeleteRange { like, .. } = op else { unreachable!("next_doomed of {op:?}") };
        let mut keys: Vec<Vec<u8>> = Vec::new();
        if let Some(range) = self.range(op) {
            self.rest = store.scan_slice(&range, false, now_ms, visits, |e| {
                if matches(like, e.key) {
                    keys.push(e.key.to_vec());
                    if keys.len() == writes {
                        return ControlFlow::Break(());
                    }
                }
                ControlFlow::Continue(())
            });
            if keys.len() == writes {
                // Stopped at the write budget: go on after the last key taken.
                self.rest = Some(range.resume_after(keys.last().expect("writes > 0"), false));
            }
        }
        (keys, self.rest.is_none())
    }

    /// The rows the next slice of a Put writes, and whether it is the last slice.
    pub fn next_rows(&mut self, op: &ShardOp, budget: usize) -> (std::ops::Range<usize>, bool) {
        let ShardOp::Put { rows } = op else { unreachable!("next_rows of {op:?}") };
        let from = self.next_row;
        let to = rows.len().min(from.saturating_add(budget));
        self.next_row = to;
        (from..to, to == rows.len())
    }

    /// Add what a slice of a write affected; the total so far.
    pub fn add_affected(&mut self, n: u64) -> u64 {
        self.affected += n;
        self.affected
    }
}

/// Wire bytes of one row under `cols` (the value tags and lengths included).
pub fn row_encoded_len(cols: &ColumnList, key_len: usize, value_len: usize, has_ttl: bool) -> usize {
    cols.as_slice()
        .iter()
        .map(|c| match c {
            Column::Key => 5 + key_len,
            Column::Value => 5 + value_len,
            Column::Ttl => {
                if has_ttl {
                    9
                } else {
                    1
                }
            }
        })
        .sum()
}

fn expiry_at(now_ms: u64, ttl_s: u64) -> u64 {
    now_ms + ttl_s * 1000
}

fn matches(like: &Option<LikePattern>, key: &[u8]) -> bool {
    like.as_ref().is_none_or(|p| p.matches(key))
}

/// Apply `op` to `store` at time `now_ms`.
pub fn run_op(store: &mut Store, op: &ShardOp, now_ms: u64) -> ShardReply {
    match op {
        ShardOp::Get { key } => {
            ShardReply::Entry(store.get(key, now_ms).map(|e| (e.value.to_vec(), e.ttl_remaining_s(now_ms))))
        }
        ShardOp::MultiGet { keys, cols, bytes_max } => {
            // Sized first: a hostile IN list of large values must not be copied to be refused.
            let bytes: usize = keys
                .iter()
                .filter_map(|k| store.get(k, now_ms))
                .map(|e| row_encoded_len(cols, e.key.len(), e.value.len(), e.expires_at_ms.is_some()))
                .sum();
            if bytes > *bytes_max {
                return ShardReply::TooLarge;
            }
            let rows =
                keys.iter().filter_map(|k| store.get(k, now_ms).map(|e| to_row(cols, e, now_ms))).collect();
            ShardReply::Rows(rows)
        }
        ShardOp::Put { rows } => {
            for r in rows {
                store.insert(&r.key, &r.value, r.ttl_s.map(|t| expiry_at(now_ms, t)));
            }
            ShardReply::Affected(rows.len() as u64)
        }
        ShardOp::Update { key, value, ttl } => {
            let change = match ttl {
                TtlChange::Keep => ExpiryChange::Keep,
                TtlChange::Set(t) => ExpiryChange::Set(expiry_at(now_ms, *t)),
                TtlChange::Clear => ExpiryChange::Clear,
            };
            ShardReply::Affected(store.update(key, value, change, now_ms) as u64)
        }
        ShardOp::Delete { keys } => {
            ShardReply::Affected(keys.iter().map(|k| store.delete(k, now_ms) as u64).sum())
        }
        ShardOp::DeleteRange { range, like } => {
            ShardReply::Affected(store.delete_range(range, now_ms, |k| matches(like, k)))
        }
        // One slice as large as the range: the same code as the server's slices.
        ShardOp::Scan { .. } => {
            Sliced::default().read_step(op, store, now_ms, usize::MAX).expect("one slice")
        }
        ShardOp::Count { range, like } if like.is_none() && *range == KeyRange::all() => {
            ShardReply::Count(store.live_len(now_ms))
        }
        ShardOp::Count { .. } => {
            Sliced::default().read_step(op, store, now_ms, usize::MAX).expect("one slice")
        }
        ShardOp::Info => ShardReply::Info(ShardInfo {
            keys: store.live_len(now_ms),
            data_bytes: store.data_bytes() as u64,
            index_bytes: store.index_bytes_estimate() as u64,
        }),
    }
}

fn to_row(cols: &ColumnList, e: crate::store::EntryView<'_>, now_ms: u64) -> RowOut {
    RowOut {
        key: e.key.to_vec(),
        value: if cols.contains(Column::Value) { e.value.to_vec() } else { Vec::new() },
        ttl_s: if cols.contains(Column::Ttl) { e.ttl_remaining_s(now_ms) } else { None },
    }
}
