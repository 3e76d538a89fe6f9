//! The multi-shard reference execution answers exactly like a single BTreeMap model, for random
//! sequences of statements, TTLs, clock moves and active-expiry steps, over 1 to 5 shards.
//! The model interprets the parsed statement directly; it shares no code with plan/merge.
//! The statements include the conditional writes: ON CONFLICT, compare-and-set, counters and
//! RETURNING.

use proptest::prelude::*;
use std::collections::BTreeMap;
use std::ops::Bound;
use velocity::protocol::{ErrorCode, ResultSet, Value};
use velocity::shard::execute;
use velocity::sql::{
    parse, quote_literal, Column, Filter, NewValue, OnConflict, Projection, RetCol, Statement, TtlChange,
};
use velocity::store::{KeyRange, Store};

type Model = BTreeMap<Vec<u8>, (Vec<u8>, Option<u64>)>;

fn live(e: &(Vec<u8>, Option<u64>), now: u64) -> bool {
    e.1.is_none_or(|t| now < t)
}

fn in_filter(f: &Filter, k: &[u8]) -> bool {
    match f {
        Filter::All => true,
        Filter::Eq(x) => &**x == k,
        Filter::In(xs) => xs.iter().any(|x| &**x == k),
        Filter::Like(p) => p.matches(k),
        Filter::Range { lower, upper } => KeyRange { lower: lower.clone(), upper: upper.clone() }.contains(k),
    }
}

fn model_exec(m: &mut Model, stmt: &Statement, now: u64) -> Result<ResultSet, ErrorCode> {
    m.retain(|_, e| live(e, now));
    let ttl_of =
        |e: &(Vec<u8>, Option<u64>)| e.1.map_or(Value::Null, |t| Value::Int((t - now).div_ceil(1000) as i64));
    match stmt {
        Statement::Select(s) => {
            let mut keys: Vec<&Vec<u8>> = m.keys().filter(|k| in_filter(&s.filter, k)).collect();
            if s.desc {
                keys.reverse();
            }
            let limit = s.limit.unwrap_or(u64::MAX) as usize;
            match &s.projection {
                Projection::Count => Ok(ResultSet {
                    columns: vec!["count".into()],
                    rows: if limit == 0 { vec![] } else { vec![vec![Value::Int(keys.len() as i64)]] },
                    affected: 0,
                }),
                Projection::Columns(cols) => {
                    if let Filter::Eq(_) = s.filter {
                        if keys.is_empty() {
                            return Err(ErrorCode::KeyNotFound);
                        }
                    }
                    let rows = keys
                        .into_iter()
                        .take(limit)
                        .map(|k| {
                            let e = &m[k];
                            cols.as_slice()
                                .iter()
                                .map(|c| match c {
                                    Column::Key => Value::Bytes(k.clone()),
                                    Column::Value => Value::Bytes(e.0.clone()),
                                    Column::Ttl => ttl_of(e),
                                })
                                .collect()
                        })
                        .collect();
                    Ok(ResultSet {
                        columns: cols.as_slice().iter().map(|c| c.name().to_string()).collect(),
                        rows,
                        affected: 0,
                    })
                }
            }
        }
        Statement::Insert(ins) => {
            let mut rows = Vec::new();
            for r in ins.rows() {
                let old = m.get(&*r.key).cloned();
                let row = (r.value.to_vec(), r.ttl_s.map(|t| now + t * 1000));
                let new = match (&ins.on_conflict, &old) {
                    (OnConflict::Nothing, Some(_)) => continue,
                    (OnConflict::Update { value, ttl }, Some(o)) => {
                        model_change(o, value, *ttl, Some(&row), now)?
                    }
                    _ => row,
                };
                rows.push(returned(&r.key, Some(&new), old.as_ref(), now));
                m.insert(r.key.to_vec(), new);
            }
            Ok(write_result(&ins.returning, rows))
        }
        Statement::Update(u) => {
            let old = m.get(&*u.key).cloned();
            let Some(o) = old.filter(|o| u.expect.as_ref().is_none_or(|want| **want == o.0)) else {
                return match (&u.expect, m.contains_key(&*u.key)) {
                    (None, false) => Err(ErrorCode::KeyNotFound),
                    _ => Ok(write_result(&u.returning, Vec::new())),
                };
            };
            let new = model_change(&o, &u.value, u.ttl, None, now)?;
            let row = returned(&u.key, Some(&new), Some(&o), now);
            m.insert(u.key.to_vec(), new);
            Ok(write_result(&u.returning, vec![row]))
        }
        Statement::Delete(d) => {
            // In the statement's order: the IN list's (distinct keys), else the key order.
            let keys: Vec<Vec<u8>> = match &d.filter {
                Filter::Eq(k) => vec![k.to_vec()],
                Filter::In(ks) => ks.iter().map(|k| k.to_vec()).collect(),
                f => m.keys().filter(|k| in_filter(f, k)).cloned().collect(),
            };
            let mut rows = Vec::new();
            for k in keys {
                let Some(o) = m.get(&k).cloned() else { continue };
                if d.expect.as_ref().is_some_and(|want| **want != o.0) {
                    continue;
                }
                rows.push(returned(&k, Some(&o), Some(&o), now));
                m.remove(&k);
            }
            Ok(write_result(&d.returning, rows))
        }
        _ => unreachable!(),
    }
}

type Entry = (Vec<u8>, Option<u64>);

/// A live row changed by SET `value` and `ttl`; `row` is what `excluded` names.
fn model_change(
    old: &Entry,
    value: &NewValue,
    ttl: TtlChange,
    row: Option<&Entry>,
    now: u64,
) -> Result<Entry, ErrorCode> {
    let v = match value {
        NewValue::Lit(v) => v.to_vec(),
        NewValue::Excluded => row.expect("excluded in an INSERT").0.clone(),
        NewValue::Add(d) => {
            let s = std::str::from_utf8(&old.0).map_err(|_| ErrorCode::InvalidCommand)?;
            let n: i64 = s.parse().map_err(|_| ErrorCode::InvalidCommand)?;
            if n.to_string() != s {
                return Err(ErrorCode::InvalidCommand);
            }
            n.checked_add(*d).ok_or(ErrorCode::InvalidCommand)?.to_string().into_bytes()
        }
    };
    let t = match ttl {
        TtlChange::Keep => old.1,
        TtlChange::Set(t) => Some(now + t * 1000),
        TtlChange::Clear => None,
        TtlChange::Excluded => row.expect("excluded in an INSERT").1,
    };
    Ok((v, t))
}

/// Every RETURNING column of a written row (new) over what was there (old); picked in
/// `write_result`.
fn returned(key: &[u8], new: Option<&Entry>, old: Option<&Entry>, now: u64) -> [(RetCol, Value); 5] {
    let ttl = |e: Option<&Entry>| match e {
        Some((_, Some(t))) => Value::Int((t - now).div_ceil(1000) as i64),
        _ => Value::Null,
    };
    let val = |e: Option<&Entry>| e.map_or(Value::Null, |e| Value::Bytes(e.0.clone()));
    [
        (RetCol::Key, Value::Bytes(key.to_vec())),
        (RetCol::Value, val(new)),
        (RetCol::Ttl, ttl(new)),
        (RetCol::OldValue, val(old)),
        (RetCol::OldTtl, ttl(old)),
    ]
}

fn write_result(returning: &Option<Vec<RetCol>>, rows: Vec<[(RetCol, Value); 5]>) -> ResultSet {
    let n = rows.len() as u64;
    let Some(cols) = returning else { return ResultSet::affected(n) };
    let pick = |r: &[(RetCol, Value); 5]| {
        cols.iter().map(|c| r.iter().find(|(rc, _)| rc == c).expect("every column").1.clone()).collect()
    };
    ResultSet {
        columns: cols.iter().map(|c| c.name().to_string()).collect(),
        rows: rows.iter().map(pick).collect(),
        affected: n,
    }
}

const KEYS: &[&str] = &["", "a", "ab", "abc", "b", "b%", "ba", "c", "user:1", "user:2", "user:10", "\u{7f}"];

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::sample::select(KEYS).prop_map(|k| k.as_bytes().to_vec()),
        Just(vec![0xff, 0x00]),
        Just(vec![b'a', 0xff]),
    ]
}

fn lit(k: &[u8]) -> String {
    quote_literal(k)
}

/// Values: short text, and integers for the counters (near the limits too).
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => "[a-z]{0,3}",
        2 => (-3i64..4).prop_map(|n| n.to_string()),
        1 => proptest::sample::select(&["9223372036854775807", "-9223372036854775808", "01", "+1", "-0", " 1"][..])
            .prop_map(str::to_string),
    ]
}

fn returning() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => Just(String::new()),
        1 => proptest::sample::select(
            &[" RETURNING value", " RETURNING *", " RETURNING key, ttl", " RETURNING old.value, value", " RETURNING old.ttl, key, old.value"][..]
        )
        .prop_map(str::to_string),
    ]
}

fn sql_stmt() -> impl Strategy<Value = String> {
    let ttl = prop_oneof![Just(None), (1u64..5).prop_map(Some)];
    let row = (key(), value(), ttl.clone());
    let delta =
        (-3i64..4).prop_map(|d| if d < 0 { format!("value - {}", -d) } else { format!("value + {d}") });
    let on_conflict = prop_oneof![
        3 => Just(String::new()),
        1 => Just(" ON CONFLICT DO NOTHING".to_string()),
        1 => Just(" ON CONFLICT (key) DO NOTHING".to_string()),
        1 => value().prop_map(|v| format!(" ON CONFLICT (key) DO UPDATE SET value = '{v}'")),
        1 => Just(" ON CONFLICT (key) DO UPDATE SET value = excluded.value, ttl = excluded.ttl".to_string()),
        1 => (1u64..5).prop_map(|t| format!(" ON CONFLICT (key) DO UPDATE SET value = excluded.value, ttl = {t}")),
    ];
    let cond = prop_oneof![
        key().prop_map(|k| format!("key = {}", lit(&k))),
        proptest::collection::vec(key(), 1..4)
            .prop_map(|ks| format!("key IN ({})", ks.iter().map(|k| lit(k)).collect::<Vec<_>>().join(", "))),
        proptest::sample::select(&["a%", "%b", "_", "user:_", "user:%", "%", "b\\%", "a_c", "ab", ""][..])
            .prop_map(|p| format!("key LIKE {}", lit(p.as_bytes()))),
        (key(), key()).prop_map(|(a, b)| format!("key BETWEEN {} AND {}", lit(&a), lit(&b))),
        (proptest::sample::select(&["<", "<=", ">", ">="][..]), key())
            .prop_map(|(op, k)| format!("key {op} {}", lit(&k))),
        (
            proptest::sample::select(&[">", ">="][..]),
            key(),
            proptest::sample::select(&["<", "<="][..]),
            key()
        )
            .prop_map(|(a, x, b, y)| format!("key {a} {} AND key {b} {}", lit(&x), lit(&y))),
    ];
    let cols = proptest::sample::select(
        &["value", "key", "key, value", "value, key", "*", "ttl", "key, ttl", "COUNT(*)"][..],
    );
    prop_oneof![
        3 => (proptest::collection::vec(row, 1..4), on_conflict, returning()).prop_map(|(rows, conflict, ret)| {
            let with_ttl = rows.iter().any(|r| r.2.is_some());
            let vals: Vec<String> = rows
                .iter()
                .map(|(k, v, t)| {
                    if with_ttl {
                        format!("({}, '{}', {})", lit(k), v, t.map_or("NULL".to_string(), |t| t.to_string()))
                    } else {
                        format!("({}, '{}')", lit(k), v)
                    }
                })
                .collect();
            format!("INSERT INTO kv (key, value{}) VALUES {}{conflict}{ret}", if with_ttl { ", ttl" } else { "" }, vals.join(", "))
        }),
        // A counter upsert: one row.
        1 => (key(), value(), delta.clone(), returning())
            .prop_map(|(k, v, d, ret)| format!("INSERT INTO kv (key, value) VALUES ({}, '{v}') ON CONFLICT (key) DO UPDATE SET value = {d}{ret}", lit(&k))),
        2 => (
            key(),
            prop_oneof![value().prop_map(|v| format!("'{v}'")), delta],
            prop_oneof![Just(String::new()), Just(", ttl = NULL".to_string()), (1u64..5).prop_map(|t| format!(", ttl = {t}"))],
            prop_oneof![2 => Just(String::new()), 1 => value().prop_map(|v| format!(" AND value = '{v}'"))],
            returning(),
        )
            .prop_map(|(k, v, t, cas, ret)| format!("UPDATE kv SET value = {v}{t} WHERE key = {}{cas}{ret}", lit(&k))),
        1 => cond.clone().prop_map(|c| format!("DELETE FROM kv WHERE {c}")),
        1 => (key(), prop_oneof![Just(String::new()), value().prop_map(|v| format!(" AND value = '{v}'"))], returning())
            .prop_map(|(k, cas, ret)| format!("DELETE FROM kv WHERE key = {}{cas}{ret}", lit(&k))),
        1 => (proptest::collection::vec(key(), 1..4), returning())
            .prop_map(|(ks, ret)| format!("DELETE FROM kv WHERE key IN ({}){ret}", ks.iter().map(|k| lit(k)).collect::<Vec<_>>().join(", "))),
        4 => (cols, prop_oneof![Just(None), cond.prop_map(Some)], any::<bool>(), prop_oneof![Just(None), (0u64..4).prop_map(Some)])
            .prop_map(|(cols, c, desc, limit)| {
                let mut s = format!("SELECT {cols} FROM kv");
                if let Some(c) = c { s += &format!(" WHERE {c}"); }
                if desc { s += " ORDER BY key DESC"; }
                if let Some(l) = limit { s += &format!(" LIMIT {l}"); }
                s
            }),
    ]
}

#[derive(Debug, Clone)]
enum Step {
    Sql(String),
    Tick(u64),
    Expire(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => sql_stmt().prop_map(Step::Sql),
        1 => (0u64..3000).prop_map(Step::Tick),
        1 => (0usize..4).prop_map(Step::Expire),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn sharded_execution_equals_the_model(shards in 1usize..6, steps in proptest::collection::vec(step(), 1..60)) {
        let mut stores: Vec<Store> = (0..shards).map(|_| Store::new()).collect();
        let mut model = Model::new();
        let mut now = 1_000_000u64;
        for s in steps {
            match s {
                Step::Tick(d) => now += d,
                Step::Expire(budget) => for st in &mut stores { st.expire_step(now, budget); },
                Step::Sql(sql) => {
                    let stmt = parse(&sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
                    let got = execute(&stmt, &mut stores, now, 1 << 20).map_err(|e| e.code);
                    let want = model_exec(&mut model, &stmt, now);
                    prop_assert_eq!(got, want, "{}", sql);
                }
            }
        }
        let live: u64 = stores.iter().map(|s| s.live_len(now)).sum();
        prop_assert_eq!(live, model.values().filter(|e| live_entry(e, now)).count() as u64);
    }
}

fn live_entry(e: &(Vec<u8>, Option<u64>), now: u64) -> bool {
    live(e, now)
}

#[test]
fn result_too_large_is_refused_with_invalid_command() {
    let mut stores: Vec<Store> = (0..3).map(|_| Store::new()).collect();
    for i in 0..200 {
        let sql = format!("INSERT INTO kv (key, value) VALUES ('k{i:03}', '{}')", "x".repeat(100));
        execute(&parse(&sql).unwrap(), &mut stores, 0, 8192).unwrap();
    }
    let e = execute(&parse("SELECT key, value FROM kv").unwrap(), &mut stores, 0, 8192).unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidCommand);
    assert!(e.message.contains("LIMIT"), "{}", e.message);
    let page = execute(
        &parse("SELECT key, value FROM kv WHERE key > 'k049' LIMIT 10").unwrap(),
        &mut stores,
        0,
        8192,
    )
    .unwrap();
    assert_eq!(page.rows.len(), 10);
    assert_eq!(page.rows[0][0], Value::Bytes(b"k050".to_vec()));
    let _ = Bound::<u8>::Unbounded;
}
