//! What one shard is asked to do for one statement, and what it answers. A `ShardOp` owns its
//! bytes so that it can cross cores; `apply` runs it on a store. No I/O.

use crate::limits::EVICTIONS_PER_WRITE_MAX;
use crate::protocol::Value;
use crate::sql::{Column, ColumnList, LikePattern, RetCol, Returning, TtlChange};
use crate::store::{Growth, KeyRange, Store};
use std::ops::ControlFlow;

/// The value a write sets (`sql::NewValue`, owned).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Set(Vec<u8>),
    /// The INSERT row's own value.
    Excluded,
    /// The old value as a decimal i64, plus this.
    Add(i64),
}

/// What a Put does to a key that is there (`sql::OnConflict`, owned).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Conflict {
    Replace,
    Nothing,
    Update { value: Change, ttl: TtlChange },
}

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
        on_conflict: Conflict,
        returning: Option<Returning>,
    },
    Update {
        key: Vec<u8>,
        value: Change,
        ttl: TtlChange,
        /// Compare-and-set: written only if the key holds exactly these bytes.
        expect: Option<Vec<u8>>,
        returning: Option<Returning>,
    },
    Delete {
        keys: Vec<Vec<u8>>,
        expect: Option<Vec<u8>>,
        returning: Option<Returning>,
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
pub enum ShardReply {
    /// Point read: the value and remaining TTL, or nothing.
    Entry(Option<(Vec<u8>, Option<i64>)>),
    Rows(Vec<RowOut>),
    TooLarge,
    Count(u64),
    Affected(u64),
    /// A write with RETURNING: the rows it affected, as cells of the RETURNING list, each with
    /// its index among the part's rows (or keys).
    Returned {
        affected: u64,
        rows: Vec<(u32, Vec<Value>)>,
    },
    /// Refused without a change (a counter on a value that is not an integer, an overflow).
    Invalid(String),
    /// Refused by the memory limit: no room, and eviction (if any) could not make it. Nothing
    /// of the op was applied after the `affected` rows of its earlier slices.
    Full {
        affected: u64,
    },
    /// The write could not be made durable and was taken back.
    StorageError,
    /// A cluster node could not run it, and nothing was changed: no leader for its range now,
    /// or the leader changed under it. Safe to send again.
    Unavailable(String),
    /// A cluster node sent the write to its range's leader and never learned whether it was
    /// applied (a timeout, a leader that failed midway): it may or may not have been.
    OutcomeUnknown,
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
            ShardReply::Returned { rows, .. } => rows
                .iter()
                .map(|(_, cells)| ROW_OVERHEAD_BYTES + cells.iter().map(Value::encoded_len).sum::<usize>())
                .sum::<usize>(),
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
    /// A write's RETURNING rows so far.
    returned: Vec<(u32, Vec<Value>)>,
    /// Only keys whose token is in one of these intervals (a cluster node serving some of a
    /// core's ranges for another node); None: every key.
    only: Option<Vec<(u64, u64)>>,
}

/// Whether `key`'s token is in one of the intervals (`Sliced::within`).
fn admits(only: Option<&[(u64, u64)]>, key: &[u8]) -> bool {
    only.is_none_or(|intervals| {
        let t = crate::shard::token(key);
        intervals.iter().any(|(lo, hi)| (*lo..=*hi).contains(&t))
    })
}

impl Sliced {
    /// Slices that see only the keys whose token is in one of `intervals` (inclusive).
    pub fn within(intervals: Vec<(u64, u64)>) -> Sliced {
        Sliced { only: Some(intervals), ..Sliced::default() }
    }

    /// Whether `op` may take more than one slice.
    pub fn needed(op: &ShardOp, budget: usize) -> bool {
        match op {
            ShardOp::Scan { .. } | ShardOp::DeleteRange { .. } => true,
            ShardOp::Count { range, like } => like.is_some() || *range != KeyRange::all(),
            ShardOp::Put { rows, .. } => rows.len() > budget,
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
                let (rows, bytes, only) = (&mut self.rows, &mut self.bytes, self.only.as_deref());
                let mut too_large = false;
                if let (Some(range), true) = (range, *limit > 0 && (rows.len() as u64) < *limit) {
                    self.rest = store.scan_slice(&range, *desc, now_ms, budget, |e| {
                        if !matches(like, e.key) || !admits(only, e.key) {
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
                let (n, only) = (&mut self.count, self.only.as_deref());
                if let Some(range) = range {
                    self.rest = store.scan_slice(&range, false, now_ms, budget, |e| {
                        *n += (matches(like, e.key) && admits(only, e.key)) as u64;
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
            let only = self.only.as_deref();
            self.rest = store.scan_slice(&range, false, now_ms, visits, |e| {
                if matches(like, e.key) && admits(only, e.key) {
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

    /// The rows `next_rows` will hand out, without taking them.
    pub fn peek_rows(&self, op: &ShardOp, budget: usize) -> (usize, usize) {
        let ShardOp::Put { rows, .. } = op else { unreachable!("peek_rows of {op:?}") };
        (self.next_row, rows.len().min(self.next_row.saturating_add(budget)))
    }

    /// The rows the next slice of a Put writes, and whether it is the last slice.
    pub fn next_rows(&mut self, op: &ShardOp, budget: usize) -> (std::ops::Range<usize>, bool) {
        let ShardOp::Put { rows, .. } = op else { unreachable!("next_rows of {op:?}") };
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
/// Where a write's changes are recorded as it applies them (the write-ahead log: before-images
/// to take it back, after-images to redo it). Writes reach the store only through `apply` and
/// `apply_slice`, with a `WriteLog` or with `NoLog`: the code the model test checks is the code
/// the server runs.
pub trait WriteLog {
    /// `key` is about to change: what it holds now may be needed to take the change back.
    fn before(&mut self, store: &Store, key: &[u8]);
    fn set(&mut self, key: &[u8], value: &[u8], expires_at_ms: Option<u64>);
    fn deleted(&mut self, key: &[u8]);
}

/// No record (`--durability none`, and the tests' stores).
pub struct NoLog;

impl WriteLog for NoLog {
    fn before(&mut self, _: &Store, _: &[u8]) {}
    fn set(&mut self, _: &[u8], _: &[u8], _: Option<u64>) {}
    fn deleted(&mut self, _: &[u8]) {}
}

/// Run `op` on `store` in one piece, with no record of its writes.
pub fn run_op(store: &mut Store, op: &ShardOp, now_ms: u64) -> ShardReply {
    apply(store, op, now_ms, &mut NoLog)
}

/// Run `op` on `store` in one piece; a write's changes go to `log` as they are made.
pub fn apply(store: &mut Store, op: &ShardOp, now_ms: u64, log: &mut impl WriteLog) -> ShardReply {
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
        ShardOp::Update { key, value, ttl, expect, returning } => {
            update(store, key, value, *ttl, expect.as_deref(), returning.as_deref(), now_ms, log)
        }
        ShardOp::Delete { keys, expect, returning } => {
            let mut n = 0;
            let mut rows = Vec::new();
            for (i, k) in keys.iter().enumerate() {
                if let Some(want) = expect {
                    if store.get(k, now_ms).is_none_or(|e| e.value != &want[..]) {
                        continue;
                    }
                }
                if let Some(cols) = returning {
                    let Some(e) = store.get(k, now_ms) else { continue };
                    let was = Some((e.value, e.expires_at_ms));
                    rows.push((i as u32, cells(cols, k, was, was, now_ms)));
                }
                log.before(store, k);
                if store.delete(k, now_ms) {
                    n += 1;
                    log.deleted(k);
                }
            }
            written(n, returning.is_some(), rows)
        }
        // One slice as large as the op: the same code as the server's slices.
        ShardOp::Put { .. } | ShardOp::DeleteRange { .. } => {
            apply_slice(store, op, &mut Sliced::default(), now_ms, usize::MAX, usize::MAX, log)
                .expect("one slice")
        }
        ShardOp::Count { range, like } if like.is_none() && *range == KeyRange::all() => {
            ShardReply::Count(store.live_len(now_ms))
        }
        ShardOp::Scan { .. } | ShardOp::Count { .. } => {
            Sliced::default().read_step(op, store, now_ms, usize::MAX).expect("one slice")
        }
    }
}

/// Write one row, recorded in `log`: every insert of a key, the one-row fast path's too.
pub fn put(
    store: &mut Store,
    key: &[u8],
    value: &[u8],
    expires_at_ms: Option<u64>,
    now_ms: u64,
    log: &mut impl WriteLog,
) {
    log.before(store, key);
    store.insert(key, value, expires_at_ms, now_ms);
    log.set(key, value, expires_at_ms);
}

/// The one-row INSERT of the fast path (no TTL): written, or refused by the memory limit.
pub fn put_row(store: &mut Store, key: &[u8], value: &[u8], now_ms: u64, log: &mut impl WriteLog) -> bool {
    if !make_room(store, |s| s.growth([(key, value.len(), false)]), &[key], now_ms, log) {
        return false;
    }
    put(store, key, value, None, now_ms, log);
    true
}

/// Room in the store's memory limit (if it has one) for a write that grows it by `growth`:
/// keys evicted by its policy, never one of `keep` (sorted: the write's own), each logged as a
/// delete so that a restart does not bring it back. False: no room could be made, and the write
/// must not be applied. A write that frees memory always has room; one larger than the whole
/// limit never has.
pub fn make_room(
    store: &mut Store,
    growth: impl FnOnce(&Store) -> Growth,
    keep: &[&[u8]],
    now_ms: u64,
    log: &mut impl WriteLog,
) -> bool {
    let Some(limit) = store.memory_limit() else { return true };
    let growth = growth(store);
    for _ in 0..=EVICTIONS_PER_WRITE_MAX {
        // The table's share changes as keys go, so it is counted again each time.
        let need = store.growth_bytes(growth);
        if need <= 0 || store.mem_bytes().saturating_add(need as usize) <= limit.bytes_max {
            return true;
        }
        if need as usize > limit.bytes_max {
            return false;
        }
        let Some(key) = store.victim(limit.eviction, keep, now_ms) else { return false };
        log.before(store, &key);
        store.evict(&key);
        log.deleted(&key);
    }
    false
}

/// Whether `op` leaves a store under `bytes_max` (a cluster core's share of --max-memory). A
/// replicated write is checked once, before it is proposed, never when applied: every replica
/// must apply what was committed, and one that refused it or evicted for it would hold other
/// rows than its peers. An UPDATE is counted at its new value's size (an addition at a number's
/// widest); a write that frees memory always fits.
pub fn fits(store: &Store, op: &ShardOp, bytes_max: usize, now_ms: u64) -> bool {
    let growth = match op {
        ShardOp::Put { rows, on_conflict, .. } => put_growth(store, rows, on_conflict, now_ms),
        ShardOp::Update { key, value, ttl, .. } => {
            let len = match value {
                Change::Set(v) => v.len(),
                // Excluded belongs to an upsert's conflict, not to an UPDATE.
                Change::Add(_) | Change::Excluded => 20,
            };
            store.growth([(&key[..], len, matches!(ttl, TtlChange::Set(_)))])
        }
        _ => return true,
    };
    let need = store.growth_bytes(growth);
    need <= 0 || store.mem_bytes().saturating_add(need as usize) <= bytes_max
}

/// One slice of a long write (a Put of many rows, a DeleteRange): at most `writes` rows
/// written and `visits` entries looked at, each change recorded in `log`. The reply once the
/// last slice is done. A DeleteRange records the keys it removes, not its range: after a change
/// of --cores the range would reach keys that were never this shard's.
pub fn apply_slice(
    store: &mut Store,
    op: &ShardOp,
    s: &mut Sliced,
    now_ms: u64,
    visits: usize,
    writes: usize,
    log: &mut impl WriteLog,
) -> Option<ShardReply> {
    if let ShardOp::Put { rows, on_conflict, .. } = op {
        // The whole slice fits, or none of it is written.
        let (from, to) = s.peek_rows(op, writes);
        if store.memory_limit().is_some() {
            let mut keep: Vec<&[u8]> = rows[from..to].iter().map(|r| &r.key[..]).collect();
            keep.sort_unstable();
            let growth = |st: &Store| put_growth(st, &rows[from..to], on_conflict, now_ms);
            if !make_room(store, growth, &keep, now_ms, log) {
                return Some(ShardReply::Full { affected: s.affected });
            }
        }
    }
    let (n, last) = match op {
        ShardOp::Put { rows, on_conflict: Conflict::Replace, returning: None } => {
            let (slice, last) = s.next_rows(op, writes);
            for r in &rows[slice.clone()] {
                put(store, &r.key, &r.value, r.ttl_s.map(|t| expiry_at(now_ms, t)), now_ms, log);
            }
            (slice.len() as u64, last)
        }
        ShardOp::Put { rows, on_conflict, returning } => {
            let (slice, last) = s.next_rows(op, writes);
            let mut n = 0;
            for i in slice {
                match upsert(store, &rows[i], on_conflict, returning.as_deref(), now_ms, log) {
                    // Only a one-row INSERT may fail (the parser's rule): nothing is written.
                    Err(why) => return Some(ShardReply::Invalid(why)),
                    Ok(None) => {}
                    Ok(Some(cells)) => {
                        n += 1;
                        if returning.is_some() {
                            s.returned.push((i as u32, cells));
                        }
                    }
                }
            }
            (n, last)
        }
        ShardOp::DeleteRange { .. } => {
            let (keys, last) = s.next_doomed(op, store, now_ms, visits, writes);
            for k in &keys {
                log.before(store, k);
                store.delete(k, now_ms);
                log.deleted(k);
            }
            (keys.len() as u64, last)
        }
        other => unreachable!("apply_slice of {other:?}"),
    };
    let total = s.add_affected(n);
    let returning = matches!(op, ShardOp::Put { returning: Some(_), .. });
    last.then(|| written(total, returning, std::mem::take(&mut s.returned)))
}

/// What writing `rows` by `on_conflict` adds to the store at most, for `make_room`: a DO NOTHING
/// writes only the keys that are not there; a DO UPDATE's value is at most the longer of the
/// row's and the one it sets (a counter's: 20 digits). A key written by several rows counts once,
/// at its largest row and with a TTL if any row may give it one: the rows run in turn, so the
/// sum of each against the store as it is would let one row's shrink pay for another's growth.
fn put_growth(store: &Store, rows: &[PutRow], on_conflict: &Conflict, now_ms: u64) -> Growth {
    let (len_max, ttl) = match on_conflict {
        Conflict::Update { value: Change::Set(v), ttl } => (v.len(), *ttl),
        Conflict::Update { value: Change::Add(_), ttl } => (20, *ttl),
        Conflict::Update { value: Change::Excluded, ttl } => (0, *ttl),
        Conflict::Replace | Conflict::Nothing => (0, TtlChange::Excluded),
    };
    let nothing = matches!(on_conflict, Conflict::Nothing);
    let mut writes: Vec<(&[u8], usize, bool)> = rows
        .iter()
        .filter_map(|r| {
            let old = store.get(&r.key, now_ms).map(|e| e.expires_at_ms.is_some());
            if nothing && old.is_some() {
                return None;
            }
            // Whether the entry will expire: a new key takes the row's TTL; a key there, the TTL change.
            let expires = match (old, ttl) {
                (Some(_), TtlChange::Set(_)) => true,
                (Some(_), TtlChange::Clear) => false,
                (Some(had), TtlChange::Keep) => had,
                _ => r.ttl_s.is_some(),
            };
            Some((&r.key[..], r.value.len().max(len_max), expires))
        })
        .collect();
    writes.sort_unstable_by(|a, b| a.0.cmp(b.0));
    writes.dedup_by(|later, kept| {
        let same = later.0 == kept.0;
        if same {
            kept.1 = kept.1.max(later.1);
            kept.2 |= later.2;
        }
        same
    });
    store.growth(writes)
}

/// A write's reply: its count, and its rows when it has a RETURNING list.
fn written(affected: u64, returning: bool, rows: Vec<(u32, Vec<Value>)>) -> ShardReply {
    if returning {
        ShardReply::Returned { affected, rows }
    } else {
        ShardReply::Affected(affected)
    }
}

/// A key's value and absolute expiry, borrowed from the store or the statement.
type Image<'a> = Option<(&'a [u8], Option<u64>)>;

/// The cells of a RETURNING list for `key`, written as `new` over `old` (None: no row).
fn cells(cols: &[RetCol], key: &[u8], new: Image<'_>, old: Image<'_>, now_ms: u64) -> Vec<Value> {
    let ttl = |exp: Option<u64>| {
        exp.map_or(Value::Null, |t| Value::Int(t.saturating_sub(now_ms).div_ceil(1000) as i64))
    };
    cols.iter()
        .map(|c| match (c, new, old) {
            (RetCol::Key, _, _) => Value::Bytes(key.to_vec()),
            (RetCol::Value, Some((v, _)), _) | (RetCol::OldValue, _, Some((v, _))) => {
                Value::Bytes(v.to_vec())
            }
            (RetCol::Ttl, Some((_, exp)), _) | (RetCol::OldTtl, _, Some((_, exp))) => ttl(exp),
            _ => Value::Null,
        })
        .collect()
}

/// `old` plus `delta`, both as Redis INCRBY reads them: the value must be the canonical
/// decimal text of a signed 64-bit integer, and the sum must fit one.
fn add_to(old: &[u8], delta: i64) -> Result<Vec<u8>, String> {
    let n = std::str::from_utf8(old)
        .ok()
        .and_then(|s| s.parse::<i64>().ok().filter(|n| n.to_string() == s))
        .ok_or_else(|| {
            "the value is not an integer (the decimal text of a signed 64-bit integer)".to_string()
        })?;
    let sum = n
        .checked_add(delta)
        .ok_or_else(|| "the increment would overflow a signed 64-bit integer".to_string())?;
    Ok(sum.to_string().into_bytes())
}

/// The new value and expiry of a live row changed by `value` and `ttl`; `row` is the INSERT
/// row that `excluded` names, if any.
fn changed(
    old: (&[u8], Option<u64>),
    value: &Change,
    ttl: TtlChange,
    row: Option<&PutRow>,
    now_ms: u64,
) -> Result<(Vec<u8>, Option<u64>), String> {
    let v = match value {
        Change::Set(v) => v.clone(),
        Change::Excluded => row.map_or_else(|| old.0.to_vec(), |r| r.value.clone()),
        Change::Add(d) => add_to(old.0, *d)?,
    };
    let exp = match ttl {
        TtlChange::Keep => old.1,
        TtlChange::Set(t) => Some(expiry_at(now_ms, t)),
        TtlChange::Clear => None,
        TtlChange::Excluded => row.map_or(old.1, |r| r.ttl_s.map(|t| expiry_at(now_ms, t))),
    };
    Ok((v, exp))
}

/// Write `v` with expiry `exp` to `key`, recorded in `log`.
/// One INSERT row under its ON CONFLICT rule: the RETURNING cells if written (empty without
/// RETURNING), None if the rule left the old row alone, Err (nothing written) if a counter
/// could not be applied.
fn upsert(
    store: &mut Store,
    row: &PutRow,
    on_conflict: &Conflict,
    returning: Option<&[RetCol]>,
    now_ms: u64,
    log: &mut impl WriteLog,
) -> Result<Option<Vec<Value>>, String> {
    let old = store.get(&row.key, now_ms).map(|e| (e.value.to_vec(), e.expires_at_ms));
    let (v, exp) = match (on_conflict, &old) {
        (Conflict::Nothing, Some(_)) => return Ok(None),
        (Conflict::Update { value, ttl }, Some((ov, oexp))) => {
            changed((ov, *oexp), value, *ttl, Some(row), now_ms)?
        }
        _ => (row.value.clone(), row.ttl_s.map(|t| expiry_at(now_ms, t))),
    };
    put(store, &row.key, &v, exp, now_ms, log);
    let old = old.as_ref().map(|(v, e)| (&v[..], *e));
    Ok(Some(returning.map_or_else(Vec::new, |cols| cells(cols, &row.key, Some((&v, exp)), old, now_ms))))
}

/// An UPDATE of one key: a missing key, or one whose value is not `expect`, is left alone
/// (affected 0).
#[allow(clippy::too_many_arguments)]
fn update(
    store: &mut Store,
    key: &[u8],
    value: &Change,
    ttl: TtlChange,
    expect: Option<&[u8]>,
    returning: Option<&[RetCol]>,
    now_ms: u64,
    log: &mut impl WriteLog,
) -> ShardReply {
    let Some(e) = store.get(key, now_ms) else { return written(0, returning.is_some(), Vec::new()) };
    if expect.is_some_and(|want| e.value != want) {
        return written(0, returning.is_some(), Vec::new());
    }
    let old = (e.value.to_vec(), e.expires_at_ms);
    let (v, exp) = match changed((&old.0, old.1), value, ttl, None, now_ms) {
        Ok(new) => new,
        Err(why) => return ShardReply::Invalid(why),
    };
    if !make_room(store, |s| s.growth([(key, v.len(), exp.is_some())]), &[key], now_ms, log) {
        return ShardReply::Full { affected: 0 };
    }
    put(store, key, &v, exp, now_ms, log);
    let rows = returning.map_or_else(Vec::new, |cols| {
        vec![(0, cells(cols, key, Some((&v, exp)), Some((&old.0, old.1)), now_ms))]
    });
    written(1, returning.is_some(), rows)
}

fn to_row(cols: &ColumnList, e: crate::store::EntryView<'_>, now_ms: u64) -> RowOut {
    RowOut {
        key: e.key.to_vec(),
        value: if cols.contains(Column::Value) { e.value.to_vec() } else { Vec::new() },
        ttl_s: if cols.contains(Column::Ttl) { e.ttl_remaining_s(now_ms) } else { None },
    }
}
