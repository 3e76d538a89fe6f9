//! A fast path for the hot statement: the canonical point read
//! `SELECT value FROM kv WHERE key = '<literal>'` (keywords in any case, single spaces, an
//! optional `;`), which the client builders produce. Anything else — other spacing, a doubled
//! quote, a hex literal — returns `None` and goes to the full parser, so the result is always
//! what `parse` would give (a property test checks that).

use crate::limits::KEY_BYTES_MAX;

const PREFIX: &[u8] = b"select value from kv where key = '";

/// The key of a canonical point SELECT, borrowed from `sql`.
#[inline]
pub fn point_select_key(sql: &str) -> Option<&[u8]> {
    point_select_key_bytes(sql.as_bytes())
}

/// The key that a canonical point SELECT or one-row INSERT will look up, for a look-ahead that
/// prefetches it. A hint only: the bytes are not checked to be UTF-8 or a whole statement (the
/// real run still goes through `point_select_key` or `insert_one`).
#[inline]
pub fn hot_key(b: &[u8]) -> Option<&[u8]> {
    point_select_key_bytes(b).or_else(|| literal(after_prefix(b, INSERT_PREFIX)?).map(|(key, _)| key))
}

/// What follows `prefix` (matched in any case) in `b`, if anything does.
#[inline]
fn after_prefix<'a>(b: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    if b.len() <= prefix.len() || !b[..prefix.len()].eq_ignore_ascii_case(prefix) {
        return None;
    }
    Some(&b[prefix.len()..])
}

/// A literal's bytes up to its closing quote, and what follows that quote.
#[inline]
fn literal(rest: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = rest.iter().position(|&c| c == b'\'')?;
    Some((&rest[..end], &rest[end + 1..]))
}

#[inline]
fn point_select_key_bytes(b: &[u8]) -> Option<&[u8]> {
    let (key, tail) = literal(after_prefix(b, PREFIX)?)?;
    // A doubled quote continues the literal: leave that to the parser.
    if !(tail.is_empty() || tail == b";") || key.len() > KEY_BYTES_MAX {
        return None;
    }
    Some(key)
}

const INSERT_PREFIX: &[u8] = b"insert into kv (key, value) values ('";

/// Key and value of a canonical one-row INSERT without TTL:
/// `INSERT INTO kv (key, value) VALUES ('<key>', '<value>')`, optional `;`.
#[inline]
pub fn insert_one(sql: &str) -> Option<(&[u8], &[u8])> {
    let (key, after_key) = literal(after_prefix(sql.as_bytes(), INSERT_PREFIX)?)?;
    let (value, tail) = literal(after_key.strip_prefix(b", '")?)?;
    if !(tail == b")" || tail == b");") || key.len() > KEY_BYTES_MAX {
        return None;
    }
    Some((key, value))
}

const INCR_HEAD: &[u8] = b") on conflict (key) do update set value = value ";
const INCR_TAIL: &[u8] = b" returning value";

/// Key and increment of a canonical counter bump, as `client::build::incr` writes it:
/// `INSERT INTO kv (key, value) VALUES ('<key>', '<n>') ON CONFLICT (key) DO UPDATE SET value =
/// value + <n> RETURNING value` (`value - <-n>` for a negative n; keywords in any case, an
/// optional `;`), the two n the same canonical integer.
#[inline]
pub fn incr_one(sql: &str) -> Option<(&[u8], i64)> {
    let (key, after_key) = literal(after_prefix(sql.as_bytes(), INSERT_PREFIX)?)?;
    let (start, tail) = literal(after_key.strip_prefix(b", '")?)?;
    let by: i64 = std::str::from_utf8(start).ok()?.parse().ok()?;
    let tail = after_prefix(tail, INCR_HEAD)?;
    let (sign, rest) = tail.split_first()?;
    let digits = rest.strip_prefix(b" ")?;
    let end = digits.iter().position(|c| !c.is_ascii_digit()).unwrap_or(digits.len());
    let magnitude: u64 = std::str::from_utf8(&digits[..end]).ok()?.parse().ok()?;
    let rest = &digits[end..];
    let canonical = by.to_string().as_bytes() == start
        && magnitude.to_string().as_bytes() == &digits[..end]
        && by.unsigned_abs() == magnitude
        && *sign == if by < 0 { b'-' } else { b'+' };
    let ends = rest.len() >= INCR_TAIL.len()
        && rest[..INCR_TAIL.len()].eq_ignore_ascii_case(INCR_TAIL)
        && matches!(&rest[INCR_TAIL.len()..], b"" | b";");
    (canonical && ends && key.len() <= KEY_BYTES_MAX).then_some((key, by))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::{parse, Column, ColumnList, Filter, Projection, Statement};

    fn same_as_parser(sql: &str) {
        if let Some(k) = point_select_key(sql) {
            let Ok(Statement::Select(s)) = parse(sql) else { panic!("{sql:?}") };
            assert_eq!(s.projection, Projection::Columns(ColumnList::of(&[Column::Value])), "{sql:?}");
            assert_eq!(s.filter, Filter::Eq(std::borrow::Cow::Borrowed(k)), "{sql:?}");
            assert!(!s.desc && s.limit.is_none(), "{sql:?}");
        }
    }

    #[test]
    fn hot_key_names_the_key_of_both_fast_forms() {
        assert_eq!(hot_key(b"SELECT value FROM kv WHERE key = 'a1'"), Some(&b"a1"[..]));
        assert_eq!(hot_key(b"insert into kv (key, value) values ('k', 'v')"), Some(&b"k"[..]));
        assert_eq!(hot_key(b"DELETE FROM kv WHERE key = 'a'"), None);
        assert_eq!(hot_key(b"SELECT value FROM kv WHERE key = 'unterminated"), None);
        assert_eq!(hot_key(b"\xff\xfe"), None);
    }

    #[test]
    fn canonical_forms_hit_and_agree() {
        for sql in [
            "SELECT value FROM kv WHERE key = 'user:1'",
            "select VALUE from KV where KEY = 'user:1';",
            "SELECT value FROM kv WHERE key = ''",
        ] {
            assert!(point_select_key(sql).is_some(), "{sql}");
            same_as_parser(sql);
        }
        for sql in [
            "SELECT value FROM kv WHERE key = 'it''s'",
            "SELECT value FROM kv WHERE key = 'a' LIMIT 1",
            "SELECT value FROM kv WHERE key = 'a' ; ",
            "SELECT value  FROM kv WHERE key = 'a'",
            "SELECT value FROM kv WHERE key = X'00'",
            "SELECT value FROM kv WHERE key = 'unterminated",
            "SELECT value FROM kv WHERE key = 'a' -- a comment goes to the parser",
            "SELECT value FROM kv WHERE key = 'a'/* so does this */",
        ] {
            assert!(point_select_key(sql).is_none(), "{sql}");
        }
        // A literal holding comment markers is still the key.
        for sql in ["SELECT value FROM kv WHERE key = '--'", "SELECT value FROM kv WHERE key = '/*'"] {
            assert!(point_select_key(sql).is_some(), "{sql}");
            same_as_parser(sql);
        }
    }

    fn insert_same_as_parser(sql: &str) {
        if let Some((k, v)) = insert_one(sql) {
            let Ok(Statement::Insert(i)) = parse(sql) else { panic!("{sql:?}") };
            assert!(i.rest.is_empty(), "{sql:?}");
            assert_eq!((&*i.first.key, &*i.first.value, i.first.ttl_s), (k, v, None), "{sql:?}");
        }
    }

    #[test]
    fn canonical_insert_hits_and_agrees() {
        for sql in [
            "INSERT INTO kv (key, value) VALUES ('user:1', 'alice')",
            "insert into KV (KEY, VALUE) values ('', '');",
        ] {
            assert!(insert_one(sql).is_some(), "{sql}");
            insert_same_as_parser(sql);
        }
        for sql in [
            "INSERT INTO kv (key, value) VALUES ('a', 'b'), ('c', 'd')",
            "INSERT INTO kv (key, value) VALUES ('a', 'it''s')",
            "INSERT INTO kv (key, value) VALUES ('a''b', 'c')",
            "INSERT INTO kv (key, value) VALUES ('a', X'00')",
            "INSERT INTO kv (key, value, ttl) VALUES ('a', 'b', 5)",
            "INSERT INTO kv (key, value) VALUES ('a', 'b') -- comment",
        ] {
            assert!(insert_one(sql).is_none(), "{sql}");
        }
    }

    fn incr_same_as_parser(sql: &str) {
        use crate::sql::{NewValue, OnConflict, RetCol, TtlChange};
        if let Some((k, by)) = incr_one(sql) {
            let Ok(Statement::Insert(i)) = parse(sql) else { panic!("{sql:?}") };
            assert!(i.rest.is_empty(), "{sql:?}");
            assert_eq!(
                (&*i.first.key, &*i.first.value, i.first.ttl_s),
                (k, by.to_string().as_bytes(), None),
                "{sql:?}"
            );
            assert_eq!(
                i.on_conflict,
                OnConflict::Update { value: NewValue::Add(by), ttl: TtlChange::Keep },
                "{sql:?}"
            );
            assert_eq!(i.returning, Some(vec![RetCol::Value]), "{sql:?}");
        }
    }

    #[test]
    fn canonical_incr_hits_and_agrees() {
        for by in [0, 1, -1, 17, i64::MAX, i64::MIN] {
            let sql = crate::client::build::incr(b"hits:1", by);
            assert_eq!(incr_one(&sql), Some((&b"hits:1"[..], by)), "{sql}");
            incr_same_as_parser(&sql);
            incr_same_as_parser(&(sql.to_lowercase() + ";"));
        }
        for sql in [
            "INSERT INTO kv (key, value) VALUES ('a', '2') ON CONFLICT (key) DO UPDATE SET value = value + 1 RETURNING value",
            "INSERT INTO kv (key, value) VALUES ('a', '-1') ON CONFLICT (key) DO UPDATE SET value = value + 1 RETURNING value",
            "INSERT INTO kv (key, value) VALUES ('a', '01') ON CONFLICT (key) DO UPDATE SET value = value + 01 RETURNING value",
            "INSERT INTO kv (key, value) VALUES ('a', '+1') ON CONFLICT (key) DO UPDATE SET value = value + 1 RETURNING value",
            "INSERT INTO kv (key, value) VALUES ('a', '1') ON CONFLICT (key) DO UPDATE SET value = value + 1 RETURNING value, key",
            "INSERT INTO kv (key, value) VALUES ('a', '1') ON CONFLICT (key) DO UPDATE SET value = value + 1 RETURNING value -- c",
            "INSERT INTO kv (key, value) VALUES ('a', '1') ON CONFLICT (key) DO UPDATE SET value = value +1 RETURNING value",
            "INSERT INTO kv (key, value) VALUES ('a''b', '1') ON CONFLICT (key) DO UPDATE SET value = value + 1 RETURNING value",
            "INSERT INTO kv (key, value) VALUES ('a', '1') ON CONFLICT (key) DO UPDATE SET value = value + 1",
            "INSERT INTO kv (key, value) VALUES ('a', '1')",
        ] {
            assert!(incr_one(sql).is_none(), "{sql}");
        }
    }

    proptest::proptest! {
        #[test]
        fn incr_never_disagrees_with_the_parser(k in "(?s).{0,6}", n in "-?[0-9]{0,3}", m in "[0-9]{0,3}", sign in proptest::sample::select(&["+", "-", "*"][..]), tail in proptest::sample::select(&[" RETURNING value", " returning VALUE;", " RETURNING value ", " RETURNING value;;", ""][..])) {
            incr_same_as_parser(&format!("INSERT INTO kv (key, value) VALUES ('{k}', '{n}') ON CONFLICT (key) DO UPDATE SET value = value {sign} {m}{tail}"));
        }

        #[test]
        fn insert_never_disagrees_with_the_parser(k in "(?s).{0,8}", v in "(?s).{0,8}", sep in proptest::sample::select(&["', '", "','", "', ", "'), ('"][..]), tail in proptest::sample::select(&["')", "');", "') ", "'", "'), ('x', 'y')", "') -- c", "')/**/"][..])) {
            insert_same_as_parser(&format!("INSERT INTO kv (key, value) VALUES ('{k}{sep}{v}{tail}"));
        }

        #[test]
        fn never_disagrees_with_the_parser(lit in "(?s).{0,12}", tail in proptest::sample::select(&["", ";", "' ", "'", " LIMIT 1", ";;", " -- c", "--", "/* c */", "; /* c */"][..]), upper in proptest::bool::ANY) {
            let prefix = if upper { "SELECT VALUE FROM KV WHERE KEY = '" } else { "select value from kv where key = '" };
            same_as_parser(&format!("{prefix}{lit}'{tail}"));
            same_as_parser(&format!("{prefix}{lit}"));
        }
    }
}
