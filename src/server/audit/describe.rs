//! What a statement touched, as the audit log and the slow log show it: keys and ranges as SQL
//! literals (cut to TARGET_KEY_BYTES_MAX bytes each), never a value.

use crate::sql::{incr_one, insert_one, parse, point_select_key, Filter, OnConflict, Statement};

use crate::audit_record::lit;
use crate::audit_record::Target;

fn describe_key(k: &[u8]) -> String {
    Target::Key(k).text()
}

/// `describe` of the statement `sql`, for a statement whose description was not made when it
/// ran (the slow log's, with the audit log off); empty if it does not parse. The canonical
/// point read, one-row INSERT and counter bump are read without the parser, as their fast paths
/// read them: one of them may carry a value of megabytes, too long to parse on the core.
pub fn describe_text(sql: &[u8]) -> String {
    let Ok(sql) = std::str::from_utf8(sql) else { return String::new() };
    if let Some(k) = point_select_key(sql) {
        describe_key(k)
    } else if let Some((k, _)) = incr_one(sql) {
        Target::Bump(k).text()
    } else if let Some((k, _)) = insert_one(sql) {
        Target::Keys(k).text()
    } else {
        parse(sql).map_or(String::new(), |st| describe(&st))
    }
}

/// What a statement touches, for the audit log: keys and key ranges as SQL literals (cut to
/// 128 bytes each), never a value.
pub fn describe(stmt: &Statement<'_>) -> String {
    fn keys<'k>(ks: impl Iterator<Item = &'k [u8]>, n: usize) -> String {
        let shown: Vec<String> = ks.take(8).map(lit).collect();
        let more = if n > shown.len() { format!(", … ({n} keys)") } else { String::new() };
        format!("{}{more}", shown.join(", "))
    }
    fn filter(f: &Filter<'_>) -> String {
        let b = |b: &std::ops::Bound<Vec<u8>>, open: bool| match b {
            std::ops::Bound::Included(k) => {
                format!("{}{}", if open { "[" } else { "" }, lit(k)) + if open { "" } else { "]" }
            }
            std::ops::Bound::Excluded(k) => {
                format!("{}{}", if open { "(" } else { "" }, lit(k)) + if open { "" } else { ")" }
            }
            std::ops::Bound::Unbounded => (if open { "(-∞" } else { "+∞)" }).to_string(),
        };
        match f {
            Filter::All => "all keys".into(),
            Filter::Eq(k) => describe_key(k),
            Filter::In(ks) => format!("key IN ({})", keys(ks.iter().map(|k| &**k), ks.len())),
            Filter::Like(p) => format!("key LIKE, prefix {}", lit(p.prefix())),
            Filter::Range { lower, upper } => format!("key in {}, {}", b(lower, true), b(upper, false)),
        }
    }
    match stmt {
        Statement::Select(s) => filter(&s.filter),
        // A condition is named, its value never shown.
        Statement::Delete(d) => filter(&d.filter) + if d.expect.is_some() { " if value matches" } else { "" },
        Statement::Insert(i) => format!(
            "keys {}{}",
            keys(i.rows().map(|r| &*r.key), i.len()),
            match i.on_conflict {
                OnConflict::Replace => "",
                OnConflict::Nothing => " if absent",
                OnConflict::Update { .. } => " on conflict update",
            }
        ),
        Statement::Update(u) => {
            describe_key(&u.key) + if u.expect.is_some() { " if value matches" } else { "" }
        }
        Statement::ShowStats | Statement::ShowStatus | Statement::ShowSlowlog { .. } => String::new(),
        // It erases what other users' statements left: its audit line says so.
        Statement::ResetSlowlog => "slow log reset".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_statement_is_described_from_its_text_as_when_it_ran() {
        let long = format!("INSERT INTO kv (key, value) VALUES ('big', '{}')", "v".repeat(100_000));
        for sql in [
            "SELECT value FROM kv WHERE key = 'user:1'",
            "INSERT INTO kv (key, value) VALUES ('user:1', 'secret')",
            "INSERT INTO kv (key, value) VALUES ('hits', '1') ON CONFLICT (key) DO UPDATE SET value = value + 1 RETURNING value",
            "insert into kv (key, value) values ('it''s', X'00')",
            "SELECT key, value FROM kv WHERE key BETWEEN 'a' AND 'b'",
            "DELETE FROM kv WHERE key = 'k' AND value = 'secret'",
            "SHOW SLOWLOG RESET",
            long.as_str(),
        ] {
            let want = describe(&parse(sql).unwrap());
            assert_eq!(describe_text(sql.as_bytes()), want, "{sql}");
            assert!(!want.contains("secret") && !want.contains("vvv"), "{want}");
        }
        assert_eq!(describe_text(b"SELECT nothing"), "");
        assert_eq!(describe_text(b"\xff"), "");
    }
}
