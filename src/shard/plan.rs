//! A statement becomes a plan: the operations each shard must run, and how their replies merge
//! into one result. The server runs the parts on their cores; `execute` runs them in place and is
//! the reference semantics of profile §5.

use super::ops::{row_encoded_len, run_op, Change, Conflict, PutRow, RowOut, ShardOp, ShardReply};
use super::route::shard_of_key;
use crate::error::WireError;
use crate::protocol::{ResultSet, Value};
use crate::sql::{
    Column, ColumnList, Filter, LikePattern, NewValue, OnConflict, Projection, Returning, Statement,
};
use crate::stats::{stats_rows, status_rows, Settings, ShardStats};
use crate::store::{KeyRange, Store};
use std::ops::Bound;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Merge {
    /// Point SELECT: one row, or KEY_NOT_FOUND.
    Point {
        cols: ColumnList,
        key: Vec<u8>,
        limit: Option<u64>,
    },
    /// Rows from several shards, merged in key order.
    Rows {
        cols: ColumnList,
        desc: bool,
        limit: Option<u64>,
    },
    /// COUNT(*) over an IN list: the rows found, counted.
    CountRows {
        limit: Option<u64>,
    },
    Count {
        limit: Option<u64>,
    },
    Affected,
    /// UPDATE: nothing changed means the key was missing, unless the UPDATE had a condition
    /// (compare-and-set), which answers 0 rows instead.
    Update {
        conditional: bool,
    },
    /// A write with RETURNING: the rows from every part, in the statement's order (`positions`:
    /// per part, each of its rows' place in the statement).
    Returning {
        cols: Returning,
        positions: Vec<Vec<u32>>,
        /// An unconditional UPDATE: no row means KEY_NOT_FOUND.
        must_hit: bool,
    },
}

impl Merge {
    /// Whether the statement writes (its STORAGE_ERROR says the write was not applied).
    pub fn is_write(&self) -> bool {
        matches!(self, Merge::Affected | Merge::Update { .. } | Merge::Returning { .. })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub parts: Vec<(usize, ShardOp)>,
    pub merge: Merge,
}

/// Where a WHERE clause sends a statement.
enum Target {
    /// Named keys, grouped by shard in first-seen order.
    Keys(Vec<(usize, Vec<Vec<u8>>)>),
    Range {
        range: KeyRange,
        like: Option<LikePattern>,
        shards: Vec<usize>,
    },
}

/// Items grouped by shard, shards in first-seen order, items in their original order (which
/// is what makes later INSERT rows win within a shard).
fn group_by_shard<T>(items: impl Iterator<Item = (usize, T)>) -> Vec<(usize, Vec<T>)> {
    let mut groups: Vec<(usize, Vec<T>)> = Vec::new();
    for (s, item) in items {
        match groups.iter_mut().find(|g| g.0 == s) {
            Some(g) => g.1.push(item),
            None => groups.push((s, vec![item])),
        }
    }
    groups
}

fn group_keys<'k>(keys: impl Iterator<Item = &'k [u8]>, shards: usize) -> Vec<(usize, Vec<Vec<u8>>)> {
    group_by_shard(keys.map(|k| (shard_of_key(k, shards), k.to_vec())))
}

/// One part per group, made by `op`.
fn per_group<T>(groups: Vec<(usize, T)>, op: impl Fn(T) -> ShardOp) -> Vec<(usize, ShardOp)> {
    groups.into_iter().map(|(s, t)| (s, op(t))).collect()
}

/// The same operation on each of `shards`.
fn per_shard(shards: Vec<usize>, op: impl Fn() -> ShardOp) -> Vec<(usize, ShardOp)> {
    shards.into_iter().map(|s| (s, op())).collect()
}

fn target(filter: &Filter<'_>, shards: usize) -> Target {
    let all: Vec<usize> = (0..shards).collect();
    match filter {
        Filter::All => Target::Range { range: KeyRange::all(), like: None, shards: all },
        Filter::Eq(k) => Target::Keys(group_keys(std::iter::once(&**k), shards)),
        Filter::In(keys) => Target::Keys(group_keys(keys.iter().map(|k| &**k), shards)),
        Filter::Like(p) if p.is_exact() => {
            let k = p.prefix().to_vec();
            let s = shard_of_key(&k, shards);
            Target::Range {
                range: KeyRange { lower: Bound::Included(k.clone()), upper: Bound::Included(k) },
                like: None,
                shards: vec![s],
            }
        }
        Filter::Like(p) => {
            Target::Range { range: KeyRange::prefix(p.prefix()), like: Some(p.clone()), shards: all }
        }
        Filter::Range { lower, upper } => Target::Range {
            range: KeyRange { lower: lower.clone(), upper: upper.clone() },
            like: None,
            shards: all,
        },
    }
}

/// Plan `stmt` over `shards` shards; results larger than `max_payload` will be refused.
/// None for SHOW, which is about the server rather than the data: the server answers it from
/// every core's statistics or slow log (`server::report`).
pub fn plan(stmt: &Statement<'_>, shards: usize, max_payload: u32) -> Option<Plan> {
    let p = match stmt {
        Statement::Select(sel) => {
            let t = target(&sel.filter, shards);
            match (&sel.projection, t) {
                (Projection::Count, Target::Keys(groups)) => Plan {
                    parts: per_group(groups, |keys| ShardOp::MultiGet {
                        keys,
                        cols: ColumnList::new(),
                        bytes_max: max_payload as usize,
                    }),
                    merge: Merge::CountRows { limit: sel.limit },
                },
                (Projection::Count, Target::Range { range, like, shards }) => Plan {
                    parts: per_shard(shards, || ShardOp::Count { range: range.clone(), like: like.clone() }),
                    merge: Merge::Count { limit: sel.limit },
                },
                (Projection::Columns(cols), Target::Keys(mut groups)) => {
                    if let Filter::Eq(k) = &sel.filter {
                        let (s, mut keys) = groups.pop().expect("one key");
                        let key = keys.pop().expect("one key");
                        return Some(Plan {
                            parts: vec![(s, ShardOp::Get { key })],
                            merge: Merge::Point { cols: *cols, key: k.to_vec(), limit: sel.limit },
                        });
                    }
                    Plan {
                        parts: per_group(groups, |keys| ShardOp::MultiGet {
                            keys,
                            cols: *cols,
                            bytes_max: max_payload as usize,
                        }),
                        merge: Merge::Rows { cols: *cols, desc: sel.desc, limit: sel.limit },
                    }
                }
                (Projection::Columns(cols), Target::Range { range, like, shards }) => Plan {
                    parts: per_shard(shards, || ShardOp::Scan {
                        range: range.clone(),
                        like: like.clone(),
                        desc: sel.desc,
                        limit: sel.limit.unwrap_or(u64::MAX),
                        cols: *cols,
                        bytes_max: max_payload as usize,
                    }),
                    merge: Merge::Rows { cols: *cols, desc: sel.desc, limit: sel.limit },
                },
            }
        }
        Statement::Insert(ins) => {
            let rows = ins.rows().enumerate().map(|(i, r)| {
                let row = PutRow { key: r.key.to_vec(), value: r.value.to_vec(), ttl_s: r.ttl_s };
                (shard_of_key(&r.key, shards), (i as u32, row))
            });
            let groups = group_by_shard(rows);
            let positions = groups.iter().map(|(_, g)| g.iter().map(|(i, _)| *i).collect()).collect();
            let on_conflict = match &ins.on_conflict {
                OnConflict::Replace => Conflict::Replace,
                OnConflict::Nothing => Conflict::Nothing,
                OnConflict::Update { value, ttl } => Conflict::Update { value: change(value), ttl: *ttl },
            };
            let parts = per_group(groups, |g| ShardOp::Put {
                rows: g.into_iter().map(|(_, r)| r).collect(),
                on_conflict: on_conflict.clone(),
                returning: ins.returning.clone(),
            });
            Plan { parts, merge: write_merge(&ins.returning, positions, Merge::Affected) }
        }
        Statement::Update(u) => Plan {
            parts: vec![(
                shard_of_key(&u.key, shards),
                ShardOp::Update {
                    key: u.key.to_vec(),
                    value: change(&u.value),
                    ttl: u.ttl,
                    expect: u.expect.as_ref().map(|v| v.to_vec()),
                    returning: u.returning.clone(),
                },
            )],
            merge: write_merge(
                &u.returning,
                vec![vec![0]],
                Merge::Update { conditional: u.expect.is_some() },
            ),
        },
        Statement::Delete(d) => match target(&d.filter, shards) {
            Target::Keys(groups) => {
                let keys: Vec<&[u8]> = match &d.filter {
                    Filter::In(keys) => keys.iter().map(|k| &**k).collect(),
                    Filter::Eq(k) => vec![&**k],
                    _ => Vec::new(),
                };
                let positions =
                    group_by_shard(keys.iter().enumerate().map(|(i, k)| (shard_of_key(k, shards), i as u32)))
                        .into_iter()
                        .map(|(_, p)| p)
                        .collect();
                let parts = per_group(groups, |keys| ShardOp::Delete {
                    keys,
                    expect: d.expect.as_ref().map(|v| v.to_vec()),
                    returning: d.returning.clone(),
                });
                Plan { parts, merge: write_merge(&d.returning, positions, Merge::Affected) }
            }
            Target::Range { range, like, shards } => Plan {
                parts: per_shard(shards, || ShardOp::DeleteRange {
                    range: range.clone(),
                    like: like.clone(),
                }),
                merge: Merge::Affected,
            },
        },
        Statement::ShowStats
        | Statement::ShowStatus
        | Statement::ShowSlowlog { .. }
        | Statement::ResetSlowlog => return None,
    };
    Some(p)
}

fn change(v: &NewValue<'_>) -> Change {
    match v {
        NewValue::Lit(v) => Change::Set(v.to_vec()),
        NewValue::Excluded => Change::Excluded,
        NewValue::Add(d) => Change::Add(*d),
    }
}

/// How a write's replies merge: its rows if it has a RETURNING list, else `plain`.
fn write_merge(returning: &Option<Returning>, positions: Vec<Vec<u32>>, plain: Merge) -> Merge {
    match returning {
        None => plain,
        Some(cols) => Merge::Returning {
            cols: cols.clone(),
            positions,
            must_hit: matches!(plain, Merge::Update { conditional: false }),
        },
    }
}

/// The row's cells under `cols`, moving its bytes rather than copying them (the key is copied
/// only if it is shown twice).
fn cells(cols: &ColumnList, r: RowOut) -> Vec<Value> {
    let (mut key, mut value) = (Some(r.key), Some(r.value));
    cols.as_slice()
        .iter()
        .map(|c| match c {
            Column::Key => Value::Bytes(key.take().unwrap_or_default()),
            Column::Value => Value::Bytes(value.take().unwrap_or_default()),
            Column::Ttl => r.ttl_s.map_or(Value::Null, Value::Int),
        })
        .collect()
}

fn col_names(cols: &ColumnList) -> Vec<String> {
    cols.as_slice().iter().map(|c| c.name().to_owned()).collect()
}

fn count_result(n: u64, limit: Option<u64>) -> ResultSet {
    ResultSet {
        columns: vec!["count".into()],
        rows: if limit == Some(0) { vec![] } else { vec![vec![Value::Int(n as i64)]] },
        affected: 0,
    }
}

/// Combine the shards' replies, in the order of the plan's parts, into the statement's result.
pub fn merge(m: &Merge, replies: Vec<ShardReply>, max_payload: u32) -> Result<ResultSet, WireError> {
    if replies.iter().any(|r| matches!(r, ShardReply::OutcomeUnknown)) {
        return Err(WireError::outcome_unknown());
    }
    if let Some(ShardReply::Unavailable(why)) =
        replies.iter().find(|r| matches!(r, ShardReply::Unavailable(_)))
    {
        return Err(WireError::unavailable(why, m.is_write()));
    }
    if replies.iter().any(|r| matches!(r, ShardReply::StorageError)) {
        return Err(if m.is_write() { WireError::storage() } else { WireError::storage_read() });
    }
    if replies.iter().any(|r| matches!(r, ShardReply::Full { .. })) {
        let written = replies
            .iter()
            .map(|r| match r {
                ShardReply::Full { affected } | ShardReply::Affected(affected) => *affected,
                ShardReply::Returned { affected, .. } => *affected,
                _ => 0,
            })
            .sum();
        return Err(WireError::out_of_memory(written));
    }
    if let Some(ShardReply::Invalid(why)) = replies.iter().find(|r| matches!(r, ShardReply::Invalid(_))) {
        return Err(WireError::invalid(format!("{why}; nothing was changed")));
    }
    let rs = match m {
        Merge::Point { cols, key, limit } => match replies.into_iter().next() {
            Some(ShardReply::Entry(Some((value, ttl_s)))) => {
                let r = RowOut {
                    key: if cols.contains(Column::Key) { key.clone() } else { Vec::new() },
                    value,
                    ttl_s,
                };
                ResultSet {
                    columns: col_names(cols),
                    rows: if *limit == Some(0) { vec![] } else { vec![cells(cols, r)] },
                    affected: 0,
                }
            }
            _ => return Err(WireError::not_found()),
        },
        Merge::Rows { cols, desc, limit } => {
            let mut rows: Vec<RowOut> = Vec::new();
            for r in replies {
                match r {
                    ShardReply::Rows(mut v) => rows.append(&mut v),
                    ShardReply::TooLarge => {
                        return Err(WireError::too_large(max_payload as usize + 1, max_payload))
                    }
                    other => unreachable!("rows merge got {other:?}"),
                }
            }
            // Shards hold disjoint keys, so a sort is a merge; each part is already ordered.
            if *desc {
                rows.sort_unstable_by(|a, b| b.key.cmp(&a.key));
            } else {
                rows.sort_unstable_by(|a, b| a.key.cmp(&b.key));
            }
            if let Some(l) = limit {
                rows.truncate((*l).min(usize::MAX as u64) as usize);
            }
            // Sized before the result is built, so that a result to refuse is never assembled.
            let bytes = ResultSet::EMPTY_ENCODED_BYTES
                + col_names(cols).iter().map(|c| 2 + c.len()).sum::<usize>()
                + rows
                    .iter()
                    .map(|r| row_encoded_len(cols, r.key.len(), r.value.len(), r.ttl_s.is_some()))
                    .sum::<usize>();
            if bytes > max_payload as usize {
                return Err(WireError::too_large(bytes, max_payload));
            }
            ResultSet {
                columns: col_names(cols),
                rows: rows.into_iter().map(|r| cells(cols, r)).collect(),
                affected: 0,
            }
        }
        Merge::CountRows { limit } => {
            let n =
                replies.iter().map(|r| if let ShardReply::Rows(v) = r { v.len() as u64 } else { 0 }).sum();
            count_result(n, *limit)
        }
        Merge::Count { limit } => {
            let n = replies.iter().map(|r| if let ShardReply::Count(n) = r { *n } else { 0 }).sum();
            count_result(n, *limit)
        }
        Merge::Affected => ResultSet::affected(
            replies.iter().map(|r| if let ShardReply::Affected(n) = r { *n } else { 0 }).sum(),
        ),
        Merge::Update { conditional } => match replies.first() {
            Some(ShardReply::Affected(n)) if *n == 1 || *conditional => ResultSet::affected(*n),
            _ => return Err(WireError::not_found()),
        },
        Merge::Returning { cols, positions, must_hit } => {
            let mut affected = 0;
            let mut rows = Vec::new();
            for (part, r) in replies.into_iter().enumerate() {
                if let ShardReply::Returned { affected: n, rows: rs } = r {
                    affected += n;
                    let at =
                        |i: u32| positions.get(part).and_then(|p| p.get(i as usize)).copied().unwrap_or(i);
                    rows.extend(rs.into_iter().map(|(i, cells)| (at(i), cells)));
                }
            }
            if *must_hit && affected == 0 {
                return Err(WireError::not_found());
            }
            rows.sort_by_key(|(pos, _)| *pos);
            let rs = ResultSet {
                columns: cols.iter().map(|c| c.name().to_string()).collect(),
                rows: rows.into_iter().map(|(_, cells)| cells).collect(),
                affected,
            };
            let bytes = rs.encoded_len();
            if bytes > max_payload as usize {
                // The rows are written; only their echo does not fit a frame.
                return Err(WireError::invalid(format!(
                    "the statement was applied ({affected} rows), but its RETURNING rows ({bytes} bytes) pass the {max_payload}-byte frame limit"
                )));
            }
            rs
        }
    };
    let bytes = rs.encoded_len();
    if bytes > max_payload as usize {
        return Err(WireError::too_large(bytes, max_payload));
    }
    Ok(rs)
}

/// The reference semantics: run `stmt` against `stores` (shard *i* is `stores[i]`) at `now_ms`.
pub fn execute(
    stmt: &Statement<'_>,
    stores: &mut [Store],
    now_ms: u64,
    max_payload: u32,
) -> Result<ResultSet, WireError> {
    let Some(p) = plan(stmt, stores.len(), max_payload) else {
        // SHOW: the same rows as the server's, from the stores alone (no server around them,
        // so no process memory either).
        let all: Vec<ShardStats> = stores
            .iter()
            .map(|store| {
                let mut s = ShardStats::default();
                s.set_store(store, now_ms);
                s
            })
            .collect();
        let rows = match stmt {
            Statement::ShowStatus => {
                status_rows(&Settings { max_payload, now_ms, ..Settings::default() }, &all)
            }
            // No server ran a statement here: no slow log, only its columns.
            Statement::ShowSlowlog { limit } => {
                return crate::slowlog::result(Vec::new(), *limit, max_payload)
            }
            Statement::ResetSlowlog => return Ok(ResultSet::affected(0)),
            _ => stats_rows(&all, 0),
        };
        return Ok(ResultSet::name_value(rows));
    };
    let replies = p.parts.iter().map(|(s, op)| run_op(&mut stores[*s], op, now_ms)).collect();
    merge(&p.merge, replies, max_payload)
}
