//! Statement builders. Every key and value goes through `quote_literal`, so user data can never
//! change the shape of a statement: `'` is doubled and anything unprintable becomes `X'…'`.

use crate::sql::quote_literal as q;

pub fn get(key: &[u8]) -> String {
    format!("SELECT value FROM kv WHERE key = {}", q(key))
}

pub fn set(key: &[u8], value: &[u8]) -> String {
    format!("INSERT INTO kv (key, value) VALUES ({}, {})", q(key), q(value))
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
