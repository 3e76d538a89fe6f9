//! Statement builders. Every key and value goes through `quote_literal`, so user data can never
//! change the shape of a statement: `'` is doubled and anything unprintable becomes `X'…'`.

use crate::sql::{quote_literal as q, quote_literal_into as q_into};

pub fn get(key: &[u8]) -> String {
    let mut out = Vec::new();
    get_into(&mut out, key);
    String::from_utf8(out).expect("statements are UTF-8")
}

/// `get`, appended to a buffer (a load generator's statements cost no allocation).
pub fn get_into(out: &mut Vec<u8>, key: &[u8]) {
    out.extend_from_slice(b"SELECT value FROM kv WHERE key = ");
    q_into(out, key);
}

pub fn set(key: &[u8], value: &[u8]) -> String {
    let mut out = Vec::new();
    set_into(&mut out, key, value);
    String::from_utf8(out).expect("statements are UTF-8")
}

/// `set`, appended to a buffer.
pub fn set_into(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    out.extend_from_slice(b"INSERT INTO kv (key, value) VALUES (");
    q_into(out, key);
    out.extend_from_slice(b", ");
    q_into(out, value);
    out.push(b')');
}

pub fn set_ttl(key: &[u8], value: &[u8], ttl_s: u64) -> String {
    format!("INSERT INTO kv (key, value, ttl) VALUES ({}, {}, {ttl_s})", q(key), q(value))
}

pub fn set_many<K: AsRef<[u8]>, V: AsRef<[u8]>>(rows: &[(K, V)]) -> String {
    let rows: Vec<String> =
        rows.iter().map(|(k, v)| format!("({}, {})", q(k.as_ref()), q(v.as_ref()))).collect();
    format!("INSERT INTO kv (key, value) VALUES {}", rows.join(", "))
}

pub fn update(key: &[u8], value: &[u8]) -> String {
    format!("UPDATE kv SET value = {} WHERE key = {}", q(value), q(key))
}

pub fn delete(key: &[u8]) -> String {
    format!("DELETE FROM kv WHERE key = {}", q(key))
}

pub fn get_many<K: AsRef<[u8]>>(keys: &[K]) -> String {
    let keys: Vec<String> = keys.iter().map(|k| q(k.as_ref())).collect();
    format!("SELECT key, value FROM kv WHERE key IN ({})", keys.join(", "))
}

/// A page of the keys starting with `prefix`, after `after` (exclusive) when given.
pub fn scan_prefix(prefix: &[u8], after: Option<&[u8]>, limit: u64) -> String {
    let mut pat = Vec::with_capacity(prefix.len() + 1);
    for &b in prefix {
        if matches!(b, b'%' | b'_' | b'\\') {
            pat.push(b'\\');
        }
        pat.push(b);
    }
    pat.push(b'%');
    match after {
        // LIKE cannot be combined with a bound, so a later page is the range (after, successor).
        Some(a) => match crate::store::prefix_successor(prefix) {
            Some(end) => {
                format!("SELECT key, value FROM kv WHERE key > {} AND key < {} LIMIT {limit}", q(a), q(&end))
            }
            None => format!("SELECT key, value FROM kv WHERE key > {} LIMIT {limit}", q(a)),
        },
        None => format!("SELECT key, value FROM kv WHERE key LIKE {} LIMIT {limit}", q(&pat)),
    }
}

/// Keys in `[lower, upper]`, in order.
pub fn range(lower: &[u8], upper: &[u8], limit: u64) -> String {
    format!("SELECT key, value FROM kv WHERE key BETWEEN {} AND {} LIMIT {limit}", q(lower), q(upper))
}

/// Insert `key` only if it is absent (or expired): affected 1 when it was inserted, 0 when the
/// key was there (and is left alone).
pub fn insert_if_absent(key: &[u8], value: &[u8], ttl_s: Option<u64>) -> String {
    match ttl_s {
        Some(t) => format!(
            "INSERT INTO kv (key, value, ttl) VALUES ({}, {}, {t}) ON CONFLICT DO NOTHING",
            q(key),
            q(value)
        ),
        None => {
            format!("INSERT INTO kv (key, value) VALUES ({}, {}) ON CONFLICT DO NOTHING", q(key), q(value))
        }
    }
}

/// Compare-and-set: replace the value of `key` with `new` only if it is `expected` (the TTL
/// stays): affected 1 when it held, 0 when not (or the key is missing).
pub fn cas(key: &[u8], expected: &[u8], new: &[u8]) -> String {
    format!("UPDATE kv SET value = {} WHERE key = {} AND value = {}", q(new), q(key), q(expected))
}

/// Delete `key` only if its value is `expected`: affected 1 or 0.
pub fn delete_if(key: &[u8], expected: &[u8]) -> String {
    format!("DELETE FROM kv WHERE key = {} AND value = {}", q(key), q(expected))
}

/// Add `by` to the counter at `key` (absent: it starts at 0), returning the new value as the
/// one row's `value`.
pub fn incr(key: &[u8], by: i64) -> String {
    let change = if by < 0 { format!("value - {}", by.unsigned_abs()) } else { format!("value + {by}") };
    format!(
        "INSERT INTO kv (key, value) VALUES ({}, '{by}') ON CONFLICT (key) DO UPDATE SET value = {change} RETURNING value",
        q(key)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::{parse, NewValue, OnConflict, Statement};

    #[test]
    fn conditional_builders_parse_as_meant() {
        for by in [0, 1, -1, 42, i64::MAX, i64::MIN] {
            let sql = incr(b"it's", by);
            let Ok(Statement::Insert(i)) = parse(&sql) else { panic!("{sql}") };
            assert_eq!(&*i.first.key, b"it's");
            assert_eq!(&*i.first.value, by.to_string().as_bytes());
            assert!(
                matches!(i.on_conflict, OnConflict::Update { value: NewValue::Add(d), .. } if d == by),
                "{sql}"
            );
        }
        let sql = cas(b"k", b"o'ld", b"\x00");
        let Ok(Statement::Update(u)) = parse(&sql) else { panic!() };
        assert_eq!(u.expect.as_deref(), Some(&b"o'ld"[..]));
        let sql = insert_if_absent(b"k", b"v", Some(5));
        let Ok(Statement::Insert(i)) = parse(&sql) else { panic!() };
        assert_eq!((i.on_conflict, i.first.ttl_s), (OnConflict::Nothing, Some(5)));
        assert!(parse(&delete_if(b"k", b"v")).is_ok());
    }
}
