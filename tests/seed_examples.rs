//! Every SQL example of the seed specification (000_e746ea38627b8380.txt), in its order,
//! parsed and executed over two shards with the documented result.

use velocity::protocol::{ErrorCode, ResultSet, Value};
use velocity::shard::execute;
use velocity::sql::parse;
use velocity::store::Store;

fn run(stores: &mut [Store], sql: &str) -> Result<ResultSet, velocity::WireError> {
    execute(&parse(sql).unwrap_or_else(|e| panic!("{sql}: {e}")), stores, 1_000, 1 << 20)
}

fn b(s: &str) -> Value {
    Value::Bytes(s.as_bytes().to_vec())
}

#[test]
fn seed_examples_in_order() {
    let mut st: Vec<Store> = (0..2).map(|_| Store::new()).collect();
    let s = &mut st[..];
    assert_eq!(
        run(s, "SELECT value FROM kv WHERE key = 'user:1';").unwrap_err().code,
        ErrorCode::KeyNotFound
    );
    assert_eq!(run(s, "INSERT INTO kv (key, value) VALUES ('user:1', 'alice');").unwrap().affected, 1);
    assert_eq!(run(s, "SELECT value FROM kv WHERE key = 'user:1';").unwrap().rows, vec![vec![b("alice")]]);
    assert_eq!(run(s, "UPDATE kv SET value = 'alice_updated' WHERE key = 'user:1';").unwrap().affected, 1);
    assert_eq!(
        run(s, "SELECT value FROM kv WHERE key = 'user:1';").unwrap().rows,
        vec![vec![b("alice_updated")]]
    );
    assert_eq!(run(s, "DELETE FROM kv WHERE key = 'user:1';").unwrap().affected, 1);
    assert_eq!(run(s, "DELETE FROM kv WHERE key = 'user:1';").unwrap().affected, 0);
    assert_eq!(
        run(s, "UPDATE kv SET value = 'x' WHERE key = 'user:1';").unwrap_err().code,
        ErrorCode::KeyNotFound
    );
    let batch = "INSERT INTO kv (key, value) VALUES \n  ('user:1', 'alice'),\n  ('user:2', 'bob'),\n  ('user:3', 'charlie');";
    assert_eq!(run(s, batch).unwrap().affected, 3);
    let like = run(s, "SELECT key, value FROM kv WHERE key LIKE 'user:%' LIMIT 100;").unwrap();
    assert_eq!(like.columns, vec!["key", "value"]);
    assert_eq!(
        like.rows,
        vec![vec![b("user:1"), b("alice")], vec![b("user:2"), b("bob")], vec![b("user:3"), b("charlie")]]
    );
    let range = run(s, "SELECT key, value FROM kv WHERE key >= 'user:1' AND key <= 'user:9';").unwrap();
    assert_eq!(range.rows, like.rows);
    let count = run(s, "SELECT COUNT(*) FROM kv;").unwrap();
    assert_eq!((count.columns, count.rows), (vec!["count".to_string()], vec![vec![Value::Int(3)]]));
    let stats = run(s, "SHOW STATS;").unwrap();
    assert_eq!(stats.columns, vec!["name", "value"]);
    assert!(stats.rows.contains(&vec![b("keys"), Value::Int(3)]));
    let status = run(s, "SHOW STATUS;").unwrap();
    assert!(status.rows.contains(&vec![b("shards"), Value::Int(2)]));
}
