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
    let b = sql.as_bytes();
    if b.len() <= PREFIX.len() || !b[..PREFIX.len()].eq_ignore_ascii_case(PREFIX) {
        return None;
    }
    let rest = &b[PREFIX.len()..];
    let end = rest.iter().position(|&c| c == b'\'')?;
    let tail = &rest[end + 1..];
    // A doubled quote continues the literal: leave that to the parser.
    if !(tail.is_empty() || tail == b";") || end > KEY_BYTES_MAX {
        return None;
    }
    Some(&rest[..end])
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
        ] {
            assert!(point_select_key(sql).is_none(), "{sql}");
        }
    }

    proptest::proptest! {
        #[test]
        fn never_disagrees_with_the_parser(lit in "(?s).{0,12}", tail in proptest::sample::select(&["", ";", "' ", "'", " LIMIT 1", ";;"][..]), upper in proptest::bool::ANY) {
            let prefix = if upper { "SELECT VALUE FROM KV WHERE KEY = '" } else { "select value from kv where key = '" };
            same_as_parser(&format!("{prefix}{lit}'{tail}"));
            same_as_parser(&format!("{prefix}{lit}"));
        }
    }
}
