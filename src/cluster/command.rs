//! What a replicated range's Raft entries hold, and what a forwarded write answers, as bytes.
//!
//! An entry is one write op of one range and the leader's clock when it was proposed, so that
//! every replica applies the same op to the same rows with the same "now" (a TTL set by it
//! expires at the same instant everywhere):
//!
//! ```text
//! version: u8 = 1 | now_ms: varint | op
//! op     = 1 Put    | rows: varint n, n × (key: bytes, value: bytes, ttl_s: opt varint) | conflict | returning
//!        | 2 Update | key: bytes | change | ttl | expect: opt bytes | returning
//!        | 3 Delete | keys: varint n, n × bytes | expect: opt bytes | returning
//! bytes  = varint length | the bytes;  opt X = 0 | 1 X
//! ```
//!
//! The ops a range's leader took in one cycle go as one entry, applied in order (one Raft
//! entry, log record and commit round for all of them):
//!
//! ```text
//! batch: u8 = 2 | n: varint | n × entry: bytes
//! ```
//!
//! Check, then parse: every length is checked against the bytes left before anything is
//! allocated for it, and bytes that do not decode are an error, never a panic. No I/O.

use crate::protocol::Value;
use crate::shard::{Change, Conflict, PutRow, RowOut, ShardOp, ShardReply};
use crate::sql::{Column, ColumnList, LikePattern, RetCol, Returning, TtlChange};
use crate::store::KeyRange;
use integer_encoding::VarInt;
use std::ops::Bound;

const VERSION: u8 = 1;
const BATCH: u8 = 2;

/// One entry holding `entries` (each from [`encode_entry`]), to be applied in order.
pub fn encode_batch(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + entries.iter().map(|e| e.len() + 4).sum::<usize>());
    out.push(BATCH);
    put_varint(&mut out, entries.len() as u64);
    for e in entries {
        put_bytes(&mut out, e);
    }
    out
}

/// The ops of an entry, in order: one for an entry of one op, each of a batch's.
pub fn decode_entries(data: &[u8]) -> Result<Vec<(u64, ShardOp)>, String> {
    if data.first() != Some(&BATCH) {
        return Ok(vec![decode_entry(data)?]);
    }
    let mut r = Reader { rest: &data[1..] };
    let n = r.count().map_err(|e| format!("not a batch of writes: {e}"))?;
    let mut ops = Vec::with_capacity(n);
    for _ in 0..n {
        let one = r.bytes().map_err(|e| format!("not a batch of writes: {e}"))?;
        ops.push(decode_entry(&one)?);
    }
    r.end().map_err(|e| format!("not a batch of writes: {e}"))?;
    Ok(ops)
}

fn put_varint(out: &mut Vec<u8>, v: u64) {
    let mut buf = [0u8; 10];
    let n = v.encode_var(&mut buf);
    out.extend_from_slice(&buf[..n]);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn put_opt_bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => out.push(0),
        Some(b) => {
            out.push(1);
            put_bytes(out, b);
        }
    }
}

fn put_change(out: &mut Vec<u8>, c: &Change) {
    match c {
        Change::Set(v) => {
            out.push(0);
            put_bytes(out, v);
        }
        Change::Excluded => out.push(1),
        Change::Add(n) => {
            out.push(2);
            put_varint(out, *n as u64);
        }
    }
}

fn put_ttl(out: &mut Vec<u8>, t: &TtlChange) {
    match t {
        TtlChange::Keep => out.push(0),
        TtlChange::Set(s) => {
            out.push(1);
            put_varint(out, *s);
        }
        TtlChange::Clear => out.push(2),
        TtlChange::Excluded => out.push(3),
    }
}

fn ret_code(c: RetCol) -> u8 {
    match c {
        RetCol::Key => 0,
        RetCol::Value => 1,
        RetCol::Ttl => 2,
        RetCol::OldValue => 3,
        RetCol::OldTtl => 4,
    }
}

fn put_returning(out: &mut Vec<u8>, r: &Option<Returning>) {
    match r {
        None => out.push(0),
        Some(cols) => {
            out.push(1);
            put_varint(out, cols.len() as u64);
            out.extend(cols.iter().map(|c| ret_code(*c)));
        }
    }
}

/// The entry for write `op` proposed at `now_ms`; None for an op that is not a replicated
/// write (reads; range deletes go as deletes of the keys they match, docs/cluster.md).
pub fn encode_entry(now_ms: u64, op: &ShardOp) -> Option<Vec<u8>> {
    let mut out = vec![VERSION];
    put_varint(&mut out, now_ms);
    match op {
        ShardOp::Put { rows, on_conflict, returning } => {
            out.push(1);
            put_varint(&mut out, rows.len() as u64);
            for r in rows {
                put_bytes(&mut out, &r.key);
                put_bytes(&mut out, &r.value);
                match r.ttl_s {
                    None => out.push(0),
                    Some(t) => {
                        out.push(1);
                        put_varint(&mut out, t);
                    }
                }
            }
            match on_conflict {
                Conflict::Replace => out.push(0),
                Conflict::Nothing => out.push(1),
                Conflict::Update { value, ttl } => {
                    out.push(2);
                    put_change(&mut out, value);
                    put_ttl(&mut out, ttl);
                }
            }
            put_returning(&mut out, returning);
        }
        ShardOp::Update { key, value, ttl, expect, returning } => {
            out.push(2);
            put_bytes(&mut out, key);
            put_change(&mut out, value);
            put_ttl(&mut out, ttl);
            put_opt_bytes(&mut out, expect.as_deref());
            put_returning(&mut out, returning);
        }
        ShardOp::Delete { keys, expect, returning } => {
            out.push(3);
            put_varint(&mut out, keys.len() as u64);
            for k in keys {
                put_bytes(&mut out, k);
            }
            put_opt_bytes(&mut out, expect.as_deref());
            put_returning(&mut out, returning);
        }
        _ => return None,
    }
    Some(out)
}

/// Reads what the encoders wrote, refusing anything else.
struct Reader<'a> {
    rest: &'a [u8],
}

type R<T> = Result<T, String>;

impl<'a> Reader<'a> {
    fn byte(&mut self) -> R<u8> {
        let (&b, rest) = self.rest.split_first().ok_or("cut short")?;
        self.rest = rest;
        Ok(b)
    }

    fn varint(&mut self) -> R<u64> {
        let (v, n) = u64::decode_var(self.rest).ok_or("a number cut short or too long")?;
        self.rest = &self.rest[n..];
        Ok(v)
    }

    /// A count of items that take at least one byte each: never more than the bytes left.
    fn count(&mut self) -> R<usize> {
        let n = self.varint()?;
        if n > self.rest.len() as u64 {
            return Err(format!("{n} items in {} bytes", self.rest.len()));
        }
        Ok(n as usize)
    }

    fn bytes(&mut self) -> R<Vec<u8>> {
        let n = self.varint()?;
        if n > self.rest.len() as u64 {
            return Err(format!("{n} bytes where {} are left", self.rest.len()));
        }
        let (b, rest) = self.rest.split_at(n as usize);
        self.rest = rest;
        Ok(b.to_vec())
    }

    fn opt_bytes(&mut self) -> R<Option<Vec<u8>>> {
        match self.byte()? {
            0 => Ok(None),
            1 => self.bytes().map(Some),
            t => Err(format!("option tag {t}")),
        }
    }

    fn change(&mut self) -> R<Change> {
        Ok(match self.byte()? {
            0 => Change::Set(self.bytes()?),
            1 => Change::Excluded,
            2 => Change::Add(self.varint()? as i64),
            t => return Err(format!("change tag {t}")),
        })
    }

    fn ttl(&mut self) -> R<TtlChange> {
        Ok(match self.byte()? {
            0 => TtlChange::Keep,
            1 => TtlChange::Set(self.varint()?),
            2 => TtlChange::Clear,
            3 => TtlChange::Excluded,
            t => return Err(format!("ttl tag {t}")),
        })
    }

    fn returning(&mut self) -> R<Option<Returning>> {
        match self.byte()? {
            0 => Ok(None),
            1 => {
                let n = self.count()?;
                let mut cols = Vec::with_capacity(n);
                for _ in 0..n {
                    cols.push(match self.byte()? {
                        0 => RetCol::Key,
                        1 => RetCol::Value,
                        2 => RetCol::Ttl,
                        3 => RetCol::OldValue,
                        4 => RetCol::OldTtl,
                        c => return Err(format!("returning column {c}")),
                    });
                }
                Ok(Some(cols))
            }
            t => Err(format!("option tag {t}")),
        }
    }

    fn value(&mut self) -> R<Value> {
        Ok(match self.byte()? {
            0 => Value::Null,
            1 => Value::Bytes(self.bytes()?),
            2 => Value::Int(self.varint()? as i64),
            t => return Err(format!("value tag {t}")),
        })
    }

    fn ttl_s(&mut self) -> R<Option<i64>> {
        self.opt_bytes()?
            .map(|b| {
                <[u8; 8]>::try_from(&b[..])
                    .map(i64::from_le_bytes)
                    .map_err(|_| "a TTL of 8 bytes".to_string())
            })
            .transpose()
    }

    fn bound(&mut self) -> R<Bound<Vec<u8>>> {
        Ok(match self.byte()? {
            0 => Bound::Unbounded,
            1 => Bound::Included(self.bytes()?),
            2 => Bound::Excluded(self.bytes()?),
            t => return Err(format!("bound tag {t}")),
        })
    }

    fn cols(&mut self) -> R<ColumnList> {
        let n = self.count()?;
        let mut cols = ColumnList::new();
        for _ in 0..n {
            let c = match self.byte()? {
                0 => Column::Key,
                1 => Column::Value,
                2 => Column::Ttl,
                c => return Err(format!("column {c}")),
            };
            if !cols.push(c) {
                return Err("too many columns".into());
            }
        }
        Ok(cols)
    }

    fn like(&mut self) -> R<Option<LikePattern>> {
        self.opt_bytes()?.map(|p| LikePattern::compile(&p).map_err(|e| e.to_string())).transpose()
    }

    fn end(&self) -> R<()> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(format!("{} bytes after the end", self.rest.len()))
        }
    }
}

fn put_bound(out: &mut Vec<u8>, b: &Bound<Vec<u8>>) {
    match b {
        Bound::Unbounded => out.push(0),
        Bound::Included(k) => {
            out.push(1);
            put_bytes(out, k);
        }
        Bound::Excluded(k) => {
            out.push(2);
            put_bytes(out, k);
        }
    }
}

fn put_cols(out: &mut Vec<u8>, cols: &ColumnList) {
    put_varint(out, cols.as_slice().len() as u64);
    for c in cols.as_slice() {
        out.push(match c {
            Column::Key => 0,
            Column::Value => 1,
            Column::Ttl => 2,
        });
    }
}

fn put_like(out: &mut Vec<u8>, like: &Option<LikePattern>) {
    put_opt_bytes(out, like.as_ref().map(|l| l.source()).as_deref());
}

/// An op a node that holds no replica of its ranges sends to a node that does, to run there
/// (`now_ms | op`): a read, or a range DELETE; None for any other op (point writes travel as
/// entries, `encode_entry`).
pub fn encode_request(now_ms: u64, op: &ShardOp) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    put_varint(&mut out, now_ms);
    match op {
        ShardOp::Get { key } => {
            out.push(0);
            put_bytes(&mut out, key);
        }
        ShardOp::MultiGet { keys, cols, bytes_max } => {
            out.push(1);
            put_varint(&mut out, keys.len() as u64);
            keys.iter().for_each(|k| put_bytes(&mut out, k));
            put_cols(&mut out, cols);
            put_varint(&mut out, *bytes_max as u64);
        }
        ShardOp::Scan { range, like, desc, limit, cols, bytes_max } => {
            out.push(2);
            put_bound(&mut out, &range.lower);
            put_bound(&mut out, &range.upper);
            put_like(&mut out, like);
            out.push(*desc as u8);
            put_varint(&mut out, *limit);
            put_cols(&mut out, cols);
            put_varint(&mut out, *bytes_max as u64);
        }
        ShardOp::Count { range, like } => {
            out.push(3);
            put_bound(&mut out, &range.lower);
            put_bound(&mut out, &range.upper);
            put_like(&mut out, like);
        }
        ShardOp::DeleteRange { range, like } => {
            out.push(4);
            put_bound(&mut out, &range.lower);
            put_bound(&mut out, &range.upper);
            put_like(&mut out, like);
        }
        _ => return None,
    }
    Some(out)
}

/// A read's clock and op, or why the bytes are not one.
pub fn decode_request(data: &[u8]) -> Result<(u64, ShardOp), String> {
    let mut r = Reader { rest: data };
    let inner = |r: &mut Reader| -> R<(u64, ShardOp)> {
        let now_ms = r.varint()?;
        let op = match r.byte()? {
            0 => ShardOp::Get { key: r.bytes()? },
            1 => {
                let n = r.count()?;
                let keys = (0..n).map(|_| r.bytes()).collect::<R<Vec<_>>>()?;
                ShardOp::MultiGet { keys, cols: r.cols()?, bytes_max: r.varint()? as usize }
            }
            2 => ShardOp::Scan {
                range: KeyRange { lower: r.bound()?, upper: r.bound()? },
                like: r.like()?,
                desc: r.byte()? != 0,
                limit: r.varint()?,
                cols: r.cols()?,
                bytes_max: r.varint()? as usize,
            },
            3 => ShardOp::Count { range: KeyRange { lower: r.bound()?, upper: r.bound()? }, like: r.like()? },
            4 => ShardOp::DeleteRange {
                range: KeyRange { lower: r.bound()?, upper: r.bound()? },
                like: r.like()?,
            },
            t => return Err(format!("request tag {t}")),
        };
        r.end()?;
        Ok((now_ms, op))
    };
    inner(&mut r).map_err(|e| format!("not a request: {e}"))
}

/// An entry's clock and op, or why the bytes are not an entry.
pub fn decode_entry(data: &[u8]) -> Result<(u64, ShardOp), String> {
    let mut r = Reader { rest: data };
    let inner = |r: &mut Reader| -> R<(u64, ShardOp)> {
        let v = r.byte()?;
        if v != VERSION {
            return Err(format!("version {v}"));
        }
        let now_ms = r.varint()?;
        let op = match r.byte()? {
            1 => {
                let n = r.count()?;
                let mut rows = Vec::with_capacity(n);
                for _ in 0..n {
                    let key = r.bytes()?;
                    let value = r.bytes()?;
                    let ttl_s = match r.byte()? {
                        0 => None,
                        1 => Some(r.varint()?),
                        t => return Err(format!("option tag {t}")),
                    };
                    rows.push(PutRow { key, value, ttl_s });
                }
                let on_conflict = match r.byte()? {
                    0 => Conflict::Replace,
                    1 => Conflict::Nothing,
                    2 => Conflict::Update { value: r.change()?, ttl: r.ttl()? },
                    t => return Err(format!("conflict tag {t}")),
                };
                ShardOp::Put { rows, on_conflict, returning: r.returning()? }
            }
            2 => ShardOp::Update {
                key: r.bytes()?,
                value: r.change()?,
                ttl: r.ttl()?,
                expect: r.opt_bytes()?,
                returning: r.returning()?,
            },
            3 => {
                let n = r.count()?;
                let mut keys = Vec::with_capacity(n);
                for _ in 0..n {
                    keys.push(r.bytes()?);
                }
                ShardOp::Delete { keys, expect: r.opt_bytes()?, returning: r.returning()? }
            }
            t => return Err(format!("op tag {t}")),
        };
        r.end()?;
        Ok((now_ms, op))
    };
    inner(&mut r).map_err(|e| format!("not a replicated write: {e}"))
}

/// What a forwarded write comes back as: the leader's reply when it was applied, or why not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Applied(ShardReply),
    /// Not applied, and never will be: safe to send again (no leader now, another leader,
    /// or the entry was overwritten by a newer leader's log).
    NotApplied(String),
    /// It may or may not be applied: the leader lost track of it (a timeout, a snapshot
    /// that overtook it).
    Unknown,
}

/// `id: u64 LE | outcome`, the outcome's reply limited to what writes answer.
pub fn encode_outcome(id: u64, o: &Outcome, out: &mut Vec<u8>) {
    out.extend_from_slice(&id.to_le_bytes());
    match o {
        Outcome::Applied(ShardReply::Affected(n)) => {
            out.push(0);
            put_varint(out, *n);
        }
        Outcome::Applied(ShardReply::Returned { affected, rows }) => {
            out.push(1);
            put_varint(out, *affected);
            put_varint(out, rows.len() as u64);
            for (i, cells) in rows {
                put_varint(out, *i as u64);
                put_varint(out, cells.len() as u64);
                for c in cells {
                    match c {
                        Value::Null => out.push(0),
                        Value::Bytes(b) => {
                            out.push(1);
                            put_bytes(out, b);
                        }
                        Value::Int(n) => {
                            out.push(2);
                            put_varint(out, *n as u64);
                        }
                    }
                }
            }
        }
        Outcome::Applied(ShardReply::Invalid(why)) => {
            out.push(2);
            put_bytes(out, why.as_bytes());
        }
        Outcome::Applied(ShardReply::Full { affected }) => {
            out.push(3);
            put_varint(out, *affected);
        }
        Outcome::Applied(ShardReply::StorageError) => out.push(4),
        // A forwarded read's replies.
        Outcome::Applied(ShardReply::Entry(e)) => {
            out.push(7);
            match e {
                None => out.push(0),
                Some((value, ttl_s)) => {
                    out.push(1);
                    put_bytes(out, value);
                    put_opt_bytes(out, ttl_s.map(|t| t.to_le_bytes()).as_ref().map(|t| &t[..]));
                }
            }
        }
        Outcome::Applied(ShardReply::Rows(rows)) => {
            out.push(8);
            put_varint(out, rows.len() as u64);
            for row in rows {
                put_bytes(out, &row.key);
                put_bytes(out, &row.value);
                put_opt_bytes(out, row.ttl_s.map(|t| t.to_le_bytes()).as_ref().map(|t| &t[..]));
            }
        }
        Outcome::Applied(ShardReply::TooLarge) => out.push(9),
        Outcome::Applied(ShardReply::Count(n)) => {
            out.push(10);
            put_varint(out, *n);
        }
        Outcome::Applied(ShardReply::Unavailable(why)) => {
            out.push(11);
            put_bytes(out, why.as_bytes());
        }
        Outcome::Applied(ShardReply::OutcomeUnknown) => out.push(6),
        Outcome::NotApplied(why) => {
            out.push(5);
            put_bytes(out, why.as_bytes());
        }
        Outcome::Unknown => out.push(6),
    }
}

pub fn decode_outcome(data: &[u8]) -> Result<(u64, Outcome), String> {
    let (id, rest) = data.split_first_chunk::<8>().ok_or("an outcome cut short")?;
    let mut r = Reader { rest };
    let inner = |r: &mut Reader| -> R<Outcome> {
        Ok(match r.byte()? {
            0 => Outcome::Applied(ShardReply::Affected(r.varint()?)),
            1 => {
                let affected = r.varint()?;
                let n = r.count()?;
                let mut rows = Vec::with_capacity(n);
                for _ in 0..n {
                    let i = u32::try_from(r.varint()?).map_err(|_| "a row index over 32 bits")?;
                    let m = r.count()?;
                    let mut cells = Vec::with_capacity(m);
                    for _ in 0..m {
                        cells.push(r.value()?);
                    }
                    rows.push((i, cells));
                }
                Outcome::Applied(ShardReply::Returned { affected, rows })
            }
            2 => Outcome::Applied(ShardReply::Invalid(String::from_utf8_lossy(&r.bytes()?).into_owned())),
            3 => Outcome::Applied(ShardReply::Full { affected: r.varint()? }),
            4 => Outcome::Applied(ShardReply::StorageError),
            5 => Outcome::NotApplied(String::from_utf8_lossy(&r.bytes()?).into_owned()),
            6 => Outcome::Unknown,
            7 => Outcome::Applied(ShardReply::Entry(match r.byte()? {
                0 => None,
                1 => Some((r.bytes()?, r.ttl_s()?)),
                t => return Err(format!("entry tag {t}")),
            })),
            8 => {
                let n = r.count()?;
                let mut rows = Vec::with_capacity(n);
                for _ in 0..n {
                    rows.push(RowOut { key: r.bytes()?, value: r.bytes()?, ttl_s: r.ttl_s()? });
                }
                Outcome::Applied(ShardReply::Rows(rows))
            }
            9 => Outcome::Applied(ShardReply::TooLarge),
            10 => Outcome::Applied(ShardReply::Count(r.varint()?)),
            11 => {
                Outcome::Applied(ShardReply::Unavailable(String::from_utf8_lossy(&r.bytes()?).into_owned()))
            }
            t => return Err(format!("outcome tag {t}")),
        })
    };
    let o = inner(&mut r).map_err(|e| format!("not an outcome: {e}"))?;
    r.end()?;
    Ok((u64::from_le_bytes(*id), o))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops() -> Vec<ShardOp> {
        vec![
            ShardOp::Put {
                rows: vec![
                    PutRow { key: b"a".to_vec(), value: b"1".to_vec(), ttl_s: Some(30) },
                    PutRow { key: vec![0, 255], value: Vec::new(), ttl_s: None },
                ],
                on_conflict: Conflict::Update { value: Change::Add(-5), ttl: TtlChange::Excluded },
                returning: Some(vec![RetCol::Key, RetCol::OldValue, RetCol::OldTtl]),
            },
            ShardOp::Put {
                rows: vec![PutRow { key: b"k".to_vec(), value: b"v".to_vec(), ttl_s: None }],
                on_conflict: Conflict::Nothing,
                returning: None,
            },
            ShardOp::Update {
                key: b"k".to_vec(),
                value: Change::Set(b"new".to_vec()),
                ttl: TtlChange::Set(9),
                expect: Some(b"old".to_vec()),
                returning: Some(vec![RetCol::Value, RetCol::Ttl]),
            },
            ShardOp::Update {
                key: b"k".to_vec(),
                value: Change::Excluded,
                ttl: TtlChange::Clear,
                expect: None,
                returning: None,
            },
            ShardOp::Delete {
                keys: vec![b"x".to_vec(), b"y".to_vec()],
                expect: None,
                returning: Some(vec![]),
            },
        ]
    }

    #[test]
    fn every_replicated_write_survives_the_trip_and_reads_are_not_entries() {
        for op in ops() {
            let e = encode_entry(1234, &op).unwrap();
            assert_eq!(decode_entry(&e).unwrap(), (1234, op));
        }
        assert_eq!(encode_entry(1, &ShardOp::Get { key: b"k".to_vec() }), None);
    }

    #[test]
    fn a_batch_holds_its_ops_in_order_and_damage_is_an_error() {
        let entries: Vec<Vec<u8>> =
            ops().iter().enumerate().map(|(i, op)| encode_entry(i as u64, op).unwrap()).collect();
        let batch = encode_batch(&entries);
        let expected: Vec<(u64, ShardOp)> =
            ops().into_iter().enumerate().map(|(i, op)| (i as u64, op)).collect();
        assert_eq!(decode_entries(&batch).unwrap(), expected);
        // An entry of one op reads as a batch of one.
        assert_eq!(decode_entries(&entries[0]).unwrap(), expected[..1].to_vec());
        for cut in 0..batch.len() {
            assert!(decode_entries(&batch[..cut]).is_err(), "cut at {cut}");
        }
        for i in 0..batch.len() {
            let mut d = batch.clone();
            d[i] ^= 0xff;
            let _ = decode_entries(&d);
        }
        let mut huge = vec![BATCH];
        put_varint(&mut huge, u64::MAX);
        assert!(decode_entries(&huge).unwrap_err().contains("items"));
    }

    #[test]
    fn damaged_entries_are_errors_never_panics() {
        for op in ops() {
            let e = encode_entry(u64::MAX, &op).unwrap();
            for cut in 0..e.len() {
                assert!(decode_entry(&e[..cut]).is_err(), "cut at {cut}");
            }
            for i in 0..e.len() {
                for b in [0u8, 1, 0x7f, 0x80, 0xff] {
                    let mut d = e.clone();
                    d[i] = b;
                    let _ = decode_entry(&d);
                }
            }
            let mut long = e.clone();
            long.push(0);
            assert!(decode_entry(&long).is_err());
        }
        // A count far beyond the bytes is refused before anything is allocated for it.
        let mut huge = vec![VERSION, 0, 3];
        put_varint(&mut huge, u64::MAX);
        assert!(decode_entry(&huge).unwrap_err().contains("items"));
    }

    #[test]
    fn forwarded_reads_decode_as_encoded_and_nothing_else_does() {
        use crate::sql::{Column, ColumnList, LikePattern};
        let cols = ColumnList::of(&[Column::Key, Column::Ttl]);
        let reads = [
            ShardOp::Get { key: b"k".to_vec() },
            ShardOp::MultiGet { keys: vec![b"a".to_vec(), b"b".to_vec()], cols, bytes_max: 1 << 20 },
            ShardOp::Scan {
                range: KeyRange {
                    lower: Bound::Included(b"a".to_vec()),
                    upper: Bound::Excluded(b"m".to_vec()),
                },
                like: Some(LikePattern::compile(b"a_%").unwrap()),
                desc: true,
                limit: 10,
                cols,
                bytes_max: 4096,
            },
            ShardOp::Count { range: KeyRange::all(), like: None },
            ShardOp::DeleteRange { range: KeyRange::all(), like: Some(LikePattern::compile(b"%x").unwrap()) },
        ];
        for op in reads {
            let b = encode_request(5, &op).unwrap();
            assert_eq!(decode_request(&b).unwrap(), (5, op.clone()));
            for cut in 0..b.len() {
                assert!(decode_request(&b[..cut]).is_err());
            }
        }
        assert_eq!(encode_request(1, &ShardOp::Delete { keys: vec![], expect: None, returning: None }), None);
    }

    #[test]
    fn outcomes_survive_the_trip() {
        let all = [
            Outcome::Applied(ShardReply::Affected(3)),
            Outcome::Applied(ShardReply::Returned {
                affected: 2,
                rows: vec![(0, vec![Value::Null, Value::Int(-7)]), (5, vec![Value::Bytes(b"v".to_vec())])],
            }),
            Outcome::Applied(ShardReply::Invalid("not an integer".into())),
            Outcome::Applied(ShardReply::Full { affected: 1 }),
            Outcome::Applied(ShardReply::StorageError),
            Outcome::NotApplied("no leader".into()),
            Outcome::Unknown,
            Outcome::Applied(ShardReply::Entry(None)),
            Outcome::Applied(ShardReply::Entry(Some((b"v".to_vec(), Some(-1))))),
            Outcome::Applied(ShardReply::Rows(vec![
                RowOut { key: b"a".to_vec(), value: b"1".to_vec(), ttl_s: None },
                RowOut { key: b"b".to_vec(), value: Vec::new(), ttl_s: Some(30) },
            ])),
            Outcome::Applied(ShardReply::TooLarge),
            Outcome::Applied(ShardReply::Count(12)),
            Outcome::Applied(ShardReply::Unavailable("no leader".into())),
        ];
        for o in all {
            let mut b = Vec::new();
            encode_outcome(77, &o, &mut b);
            assert_eq!(decode_outcome(&b).unwrap(), (77, o));
            for cut in 0..b.len() {
                assert!(decode_outcome(&b[..cut]).is_err());
            }
        }
    }
}
