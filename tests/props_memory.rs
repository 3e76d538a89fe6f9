//! The memory limit on the one write path (`shard::apply`), for random statements over 1 to 3
//! shards under each eviction policy: no statement takes a store past its limit; a statement
//! refused by noeviction changes nothing; and each shard's log records, evictions included,
//! replayed on an empty store rebuild it exactly (a restart brings no evicted key back).

use proptest::prelude::*;
use std::ops::ControlFlow;
use velocity::durability::apply::replay;
use velocity::durability::{decode_payload, Payload, Recorder};
use velocity::protocol::ErrorCode;
use velocity::shard::{apply, merge, plan};
use velocity::sql::parse;
use velocity::store::{Eviction, KeyRange, MemoryLimit, Store};

type Dump = Vec<(Vec<u8>, Vec<u8>, Option<u64>)>;

fn dump(s: &Store, now: u64) -> Dump {
    let mut v = Vec::new();
    s.scan(&KeyRange::all(), false, now, |e| {
        v.push((e.key.to_vec(), e.value.to_vec(), e.expires_at_ms));
        ControlFlow::Continue(())
    });
    v
}

fn key() -> impl Strategy<Value = String> {
    (0u32..60).prop_map(|k| format!("k{k}"))
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => (0usize..2000).prop_map(|n| "v".repeat(n)),
        1 => (0i64..1000).prop_map(|n| n.to_string()),
    ]
}

fn sql_stmt() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (key(), value()).prop_map(|(k, v)| format!("INSERT INTO kv (key, value) VALUES ('{k}', '{v}')")),
        2 => (key(), value(), 1u64..100).prop_map(|(k, v, t)| format!("INSERT INTO kv (key, value, ttl) VALUES ('{k}', '{v}', {t})")),
        2 => proptest::collection::vec((key(), value()), 1..6).prop_map(|rows| {
            let rows: Vec<String> = rows.iter().map(|(k, v)| format!("('{k}', '{v}')")).collect();
            format!("INSERT INTO kv (key, value) VALUES {}", rows.join(", "))
        }),
        1 => (key(), value()).prop_map(|(k, v)| format!("INSERT INTO kv (key, value) VALUES ('{k}', '{v}') ON CONFLICT DO NOTHING")),
        1 => (key(), value()).prop_map(|(k, v)| format!("INSERT INTO kv (key, value) VALUES ('{k}', '{v}') ON CONFLICT (key) DO UPDATE SET value = excluded.value, ttl = 50")),
        1 => key().prop_map(|k| format!("INSERT INTO kv (key, value) VALUES ('{k}', '1') ON CONFLICT (key) DO UPDATE SET value = value + 1")),
        2 => (key(), value()).prop_map(|(k, v)| format!("UPDATE kv SET value = '{v}' WHERE key = '{k}'")),
        1 => (key(), value(), value()).prop_map(|(k, old, v)| format!("UPDATE kv SET value = '{v}' WHERE key = '{k}' AND value = '{old}'")),
        1 => key().prop_map(|k| format!("DELETE FROM kv WHERE key = '{k}'")),
        1 => "[a-z0-9]{0,2}".prop_map(|p| format!("DELETE FROM kv WHERE key LIKE 'k{p}%'")),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn no_write_passes_the_limit_refusals_change_nothing_and_the_log_rebuilds_the_store(
        shards in 1usize..4,
        policy in 0usize..3,
        limit in 3_000usize..40_000,
        steps in proptest::collection::vec((sql_stmt(), 0u64..20_000), 1..80),
    ) {
        let eviction = Eviction::ALL[policy];
        let mut stores: Vec<Store> = (0..shards).map(|_| Store::new()).collect();
        for s in &mut stores {
            s.set_memory_limit(Some(MemoryLimit { bytes_max: limit, eviction }));
        }
        let mut redo: Vec<Vec<u8>> = vec![Vec::new(); shards];
        let mut now = 1_000_000u64;
        for (sql, dt) in steps {
            now += dt;
            let stmt = parse(&sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
            let p = plan(&stmt, shards, 1 << 20).expect("a write has a plan");
            let before: Vec<Dump> = stores.iter().map(|s| dump(s, now)).collect();
            let parts = p.parts.len();
            let replies = p
                .parts
                .iter()
                .map(|(i, op)| {
                    apply(&mut stores[*i], op, now, &mut Recorder { redo: &mut redo[*i], undo: None, now_ms: now })
                })
                .collect();
            let res = merge(&p.merge, replies, 1 << 20);
            for (i, s) in stores.iter().enumerate() {
                prop_assert!(s.mem_bytes() <= limit, "{}: shard {} holds {} of {}", sql, i, s.mem_bytes(), limit);
            }
            if let Err(e) = &res {
                if e.code == ErrorCode::ServerOverloaded && eviction == Eviction::NoEviction && parts == 1 {
                    let after: Vec<Dump> = stores.iter().map(|s| dump(s, now)).collect();
                    prop_assert_eq!(&after, &before, "{} was refused but changed the store", sql);
                }
            }
        }
        for (i, s) in stores.iter().enumerate() {
            let mut replica = Store::new();
            let Payload::Mutations(muts) = decode_payload(&redo[i]).unwrap() else { panic!() };
            for m in muts {
                replay(&mut replica, m, now);
            }
            prop_assert_eq!(dump(&replica, now), dump(s, now), "shard {}: the log does not rebuild the store", i);
        }
    }
}

/// A key written twice by one INSERT, first shrunk and then grown past what it held: the
/// statement's growth is the key's largest row, not the sum of each row against the store as
/// it was (which let the shrink pay for the growth and took the store past its limit).
#[test]
fn a_key_repeated_in_one_insert_is_counted_at_its_largest_row() {
    let run = |store: &mut Store, sql: &str, now: u64| {
        let p = plan(&parse(sql).unwrap(), 1, 1 << 20).unwrap();
        let mut redo = Vec::new();
        let replies = p
            .parts
            .iter()
            .map(|(_, op)| apply(store, op, now, &mut Recorder { redo: &mut redo, undo: None, now_ms: now }))
            .collect();
        merge(&p.merge, replies, 1 << 20)
    };
    let now = 1_000_000;
    let mut store = Store::new();
    let long = "v".repeat(1000);
    run(&mut store, &format!("INSERT INTO kv (key, value) VALUES ('k11', '{long}')"), now).unwrap();
    let limit = store.mem_bytes() + 100;
    store.set_memory_limit(Some(MemoryLimit { bytes_max: limit, eviction: Eviction::NoEviction }));
    let longer = "v".repeat(1500);
    let sql = format!("INSERT INTO kv (key, value) VALUES ('k11', ''), ('k11', '{longer}')");
    let res = run(&mut store, &sql, now);
    assert!(store.mem_bytes() <= limit, "the store holds {} of {limit}", store.mem_bytes());
    assert_eq!(res.expect_err("the INSERT outgrows the limit").code, ErrorCode::ServerOverloaded);
    assert_eq!(store.get(b"k11", now).unwrap().value, long.as_bytes(), "a refusal changes nothing");
}
