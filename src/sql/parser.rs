//! Recursive descent over the lexer. Every statement consumes all of its tokens (an optional
//! `;` aside) or fails with the byte offset of the offending token and what was expected there.

use super::ast::*;
use super::lexer::{LexError, Lexer, Tok};
use super::like::LikePattern;
use crate::limits::{INSERT_ROWS_MAX, IN_LIST_KEYS_MAX, KEY_BYTES_MAX, TTL_SECONDS_MAX};
use std::fmt;
use std::ops::Bound;

/// Why a statement did not parse, and where (a byte offset into the statement).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub pos: usize,
    pub msg: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at byte {}: {}", self.pos, self.msg)
    }
}

impl std::error::Error for ParseError {}

impl From<LexError> for ParseError {
    fn from(e: LexError) -> Self {
        ParseError { pos: e.pos, msg: e.msg }
    }
}

/// Parse one statement.
pub fn parse(sql: &str) -> Result<Statement<'_>, ParseError> {
    let mut p = Parser { lx: Lexer::new(sql), peeked: None };
    let stmt = p.statement()?;
    if p.peek()? == &Tok::Semi {
        p.bump()?;
    }
    let (pos, t) = p.bump()?;
    if t != Tok::End {
        return Err(ParseError { pos, msg: format!("expected end of statement, found {}", t.describe()) });
    }
    Ok(stmt)
}

struct Parser<'a> {
    lx: Lexer<'a>,
    peeked: Option<(usize, Tok<'a>)>,
}

type PResult<T> = Result<T, ParseError>;

impl<'a> Parser<'a> {
    fn peek(&mut self) -> PResult<&Tok<'a>> {
        if self.peeked.is_none() {
            self.peeked = Some(self.lx.next_tok()?);
        }
        Ok(&self.peeked.as_ref().unwrap().1)
    }

    fn bump(&mut self) -> PResult<(usize, Tok<'a>)> {
        match self.peeked.take() {
            Some(t) => Ok(t),
            None => Ok(self.lx.next_tok()?),
        }
    }

    fn err<T>(pos: usize, expected: &str, found: &Tok) -> PResult<T> {
        Err(ParseError { pos, msg: format!("expected {expected}, found {}", found.describe()) })
    }

    fn peek_is_word(&mut self, kw: &str) -> PResult<bool> {
        Ok(matches!(self.peek()?, Tok::Word(w) if w.eq_ignore_ascii_case(kw)))
    }

    /// Consume the keyword (or name) `kw`, case-insensitively.
    fn word(&mut self, kw: &str) -> PResult<()> {
        let (pos, t) = self.bump()?;
        match t {
            Tok::Word(w) if w.eq_ignore_ascii_case(kw) => Ok(()),
            _ => Self::err(pos, &kw.to_ascii_uppercase(), &t),
        }
    }

    fn tok(&mut self, want: Tok<'static>, what: &str) -> PResult<()> {
        let (pos, t) = self.bump()?;
        if t == want {
            Ok(())
        } else {
            Self::err(pos, what, &t)
        }
    }

    /// A key or value literal: `'text'` or `X'hex'`.
    fn literal(&mut self, what: &str) -> PResult<(usize, Lit<'a>)> {
        let (pos, t) = self.bump()?;
        match t {
            Tok::Str(s) => Ok((pos, s)),
            Tok::Hex(h) => Ok((pos, Lit::Owned(h))),
            _ => Self::err(pos, what, &t),
        }
    }

    fn key_literal(&mut self) -> PResult<Lit<'a>> {
        let (pos, k) = self.literal("a key literal")?;
        if k.len() > KEY_BYTES_MAX {
            return Err(ParseError { pos, msg: format!("key is longer than {KEY_BYTES_MAX} bytes") });
        }
        Ok(k)
    }

    fn integer(&mut self, what: &str) -> PResult<(usize, u64)> {
        let (pos, t) = self.bump()?;
        match t {
            Tok::Int(n) => Ok((pos, n)),
            _ => Self::err(pos, what, &t),
        }
    }

    fn ttl(&mut self) -> PResult<u64> {
        let (pos, n) = self.integer("a TTL in seconds")?;
        if n == 0 || n > TTL_SECONDS_MAX {
            return Err(ParseError {
                pos,
                msg: format!("TTL must be between 1 and {TTL_SECONDS_MAX} seconds"),
            });
        }
        Ok(n)
    }

    fn statement(&mut self) -> PResult<Statement<'a>> {
        let (pos, t) = self.bump()?;
        let Tok::Word(w) = t else {
            return Self::err(pos, "SELECT, INSERT, UPDATE, DELETE or SHOW", &t);
        };
        let is = |kw: &str| w.eq_ignore_ascii_case(kw);
        match () {
            _ if is("select") => self.select().map(Statement::Select),
            _ if is("insert") => self.insert().map(Statement::Insert),
            _ if is("update") => self.update().map(Statement::Update),
            _ if is("delete") => self.delete().map(Statement::Delete),
            _ if is("show") => {
                let (pos, t) = self.bump()?;
                match t {
                    Tok::Word(w) if w.eq_ignore_ascii_case("stats") => Ok(Statement::ShowStats),
                    Tok::Word(w) if w.eq_ignore_ascii_case("status") => Ok(Statement::ShowStatus),
                    Tok::Word(w) if w.eq_ignore_ascii_case("slowlog") => self.slowlog(),
                    _ => Self::err(pos, "STATS, STATUS or SLOWLOG", &t),
                }
            }
            _ => Self::err(pos, "SELECT, INSERT, UPDATE, DELETE or SHOW", &Tok::Word(w)),
        }
    }

    /// After SHOW SLOWLOG: `[LIMIT n]` or `RESET`.
    fn slowlog(&mut self) -> PResult<Statement<'a>> {
        if self.peek_is_word("reset")? {
            self.bump()?;
            return Ok(Statement::ResetSlowlog);
        }
        let mut limit = None;
        if self.peek_is_word("limit")? {
            self.bump()?;
            limit = Some(self.integer("a row count")?.1);
        }
        Ok(Statement::ShowSlowlog { limit })
    }

    fn column(&mut self) -> PResult<(usize, Column)> {
        let (pos, t) = self.bump()?;
        let col = match &t {
            Tok::Word(w) if w.eq_ignore_ascii_case("key") => Column::Key,
            Tok::Word(w) if w.eq_ignore_ascii_case("value") => Column::Value,
            Tok::Word(w) if w.eq_ignore_ascii_case("ttl") => Column::Ttl,
            _ => return Self::err(pos, "key, value or ttl", &t),
        };
        Ok((pos, col))
    }

    fn select(&mut self) -> PResult<Select<'a>> {
        let projection = match self.peek()? {
            Tok::Star => {
                self.bump()?;
                Projection::Columns(ColumnList::of(&[Column::Key, Column::Value]))
            }
            Tok::Word(w) if w.eq_ignore_ascii_case("count") => {
                self.bump()?;
                self.tok(Tok::LParen, "'('")?;
                self.tok(Tok::Star, "'*'")?;
                self.tok(Tok::RParen, "')'")?;
                Projection::Count
            }
            _ => {
                let mut cols = ColumnList::new();
                loop {
                    let (pos, c) = self.column()?;
                    if cols.contains(c) {
                        return Err(ParseError { pos, msg: format!("column {} listed twice", c.name()) });
                    }
                    cols.push(c);
                    if self.peek()? != &Tok::Comma {
                        break;
                    }
                    self.bump()?;
                }
                Projection::Columns(cols)
            }
        };
        self.word("from")?;
        self.word("kv")?;
        let filter = if self.peek_is_word("where")? {
            self.bump()?;
            self.condition()?
        } else {
            Filter::All
        };
        let mut desc = false;
        if self.peek_is_word("order")? {
            self.bump()?;
            self.word("by")?;
            self.word("key")?;
            if self.peek_is_word("desc")? {
                self.bump()?;
                desc = true;
            } else if self.peek_is_word("asc")? {
                self.bump()?;
            }
        }
        let mut limit = None;
        if self.peek_is_word("limit")? {
            self.bump()?;
            limit = Some(self.integer("a row count")?.1);
        }
        Ok(Select { projection, filter, desc, limit })
    }

    /// `cond` of profile §5, after WHERE.
    fn condition(&mut self) -> PResult<Filter<'a>> {
        self.word("key")?;
        let (pos, t) = self.bump()?;
        match t {
            Tok::Eq => Ok(Filter::Eq(self.key_literal()?)),
            Tok::Word(w) if w.eq_ignore_ascii_case("in") => {
                self.tok(Tok::LParen, "'('")?;
                let mut keys: Vec<Lit<'a>> = Vec::new();
                loop {
                    let lit_pos = self.peeked.as_ref().map(|p| p.0);
                    let k = self.key_literal()?;
                    if keys.len() == IN_LIST_KEYS_MAX {
                        return Err(ParseError {
                            pos: lit_pos.unwrap_or(pos),
                            msg: format!("IN list has more than {IN_LIST_KEYS_MAX} keys"),
                        });
                    }
                    if !keys.contains(&k) {
                        keys.push(k);
                    }
                    let (p, t) = self.bump()?;
                    match t {
                        Tok::Comma => continue,
                        Tok::RParen => break,
                        _ => return Self::err(p, "',' or ')'", &t),
                    }
                }
                Ok(Filter::In(keys))
            }
            Tok::Word(w) if w.eq_ignore_ascii_case("like") => {
                let (lpos, pat) = self.literal("a LIKE pattern")?;
                let pattern =
                    LikePattern::compile(&pat).map_err(|m| ParseError { pos: lpos, msg: m.into() })?;
                Ok(Filter::Like(pattern))
            }
            Tok::Word(w) if w.eq_ignore_ascii_case("between") => {
                let lo = self.key_literal()?.into_owned();
                self.word("and")?;
                let hi = self.key_literal()?.into_owned();
                Ok(Filter::Range { lower: Bound::Included(lo), upper: Bound::Included(hi) })
            }
            Tok::Lt | Tok::Le | Tok::Gt | Tok::Ge => {
                let (mut lower, mut upper) = (Bound::Unbounded, Bound::Unbounded);
                let lit = self.key_literal()?.into_owned();
                apply_bound(&mut lower, &mut upper, &t, lit);
                if self.peek_is_word("and")? {
                    self.bump()?;
                    self.word("key")?;
                    let (p, op) = self.bump()?;
                    if !matches!(op, Tok::Lt | Tok::Le | Tok::Gt | Tok::Ge) {
                        return Self::err(p, "'<', '<=', '>' or '>='", &op);
                    }
                    let lit = self.key_literal()?.into_owned();
                    apply_bound(&mut lower, &mut upper, &op, lit);
                }
                Ok(Filter::Range { lower, upper })
            }
            _ => Self::err(pos, "'=', IN, LIKE, BETWEEN, '<', '<=', '>' or '>='", &t),
        }
    }

    fn insert(&mut self) -> PResult<Insert<'a>> {
        self.word("into")?;
        self.word("kv")?;
        self.tok(Tok::LParen, "'('")?;
        self.word("key")?;
        self.tok(Tok::Comma, "','")?;
        self.word("value")?;
        let with_ttl = match self.bump()? {
            (_, Tok::RParen) => false,
            (_, Tok::Comma) => {
                self.word("ttl")?;
                self.tok(Tok::RParen, "')'")?;
                true
            }
            (pos, t) => return Self::err(pos, "',' or ')'", &t),
        };
        self.word("values")?;
        let first = self.row(with_ttl)?;
        let mut rest = Vec::new();
        while self.peek()? == &Tok::Comma {
            let (pos, _) = self.bump()?;
            if rest.len() + 1 >= INSERT_ROWS_MAX {
                return Err(ParseError { pos, msg: format!("INSERT has more than {INSERT_ROWS_MAX} rows") });
            }
            rest.push(self.row(with_ttl)?);
        }
        let on_conflict = self.on_conflict(rest.is_empty())?;
        let returning = self.returning()?;
        Ok(Insert { first, rest, on_conflict, returning })
    }

    /// `[ON CONFLICT [(key)] DO NOTHING | ON CONFLICT (key) DO UPDATE SET …]` after VALUES.
    fn on_conflict(&mut self, one_row: bool) -> PResult<OnConflict<'a>> {
        if !self.peek_is_word("on")? {
            return Ok(OnConflict::Replace);
        }
        self.bump()?;
        self.word("conflict")?;
        let mut target = false;
        if self.peek()? == &Tok::LParen {
            self.bump()?;
            self.word("key")?;
            self.tok(Tok::RParen, "')'")?;
            target = true;
        }
        self.word("do")?;
        let (pos, t) = self.bump()?;
        match t {
            Tok::Word(w) if w.eq_ignore_ascii_case("nothing") => Ok(OnConflict::Nothing),
            Tok::Word(w) if w.eq_ignore_ascii_case("update") => {
                if !target {
                    return Err(ParseError {
                        pos,
                        msg: "ON CONFLICT DO UPDATE needs the conflict target: ON CONFLICT (key)".into(),
                    });
                }
                self.word("set")?;
                let (vpos, value) = self.set_value(true)?;
                if matches!(value, NewValue::Add(_)) && !one_row {
                    // A counter can fail (not an integer, overflow); across rows and shards
                    // that could leave part of the statement applied.
                    return Err(ParseError {
                        pos: vpos,
                        msg: "value = value + n needs a one-row INSERT".into(),
                    });
                }
                let ttl = self.set_ttl(true)?;
                Ok(OnConflict::Update { value, ttl })
            }
            _ => Self::err(pos, "NOTHING or UPDATE", &t),
        }
    }

    /// `value = lit | value ± n | excluded.value` of a SET list (`excluded` only after ON
    /// CONFLICT), with where it starts.
    fn set_value(&mut self, excluded: bool) -> PResult<(usize, NewValue<'a>)> {
        self.word("value")?;
        self.tok(Tok::Eq, "'='")?;
        let pos = self.peeked_pos()?;
        let value = match self.peek()? {
            Tok::Word(w) if w.eq_ignore_ascii_case("value") => {
                self.bump()?;
                let (opos, op) = self.bump()?;
                let minus = match op {
                    Tok::Plus => false,
                    Tok::Minus => true,
                    _ => return Self::err(opos, "'+' or '-'", &op),
                };
                let (npos, n) = self.integer("an integer")?;
                let delta = if minus { 0i128 - n as i128 } else { n as i128 };
                let delta = i64::try_from(delta).map_err(|_| ParseError {
                    pos: npos,
                    msg: "the increment must fit a signed 64-bit integer".into(),
                })?;
                NewValue::Add(delta)
            }
            Tok::Word(w) if excluded && w.eq_ignore_ascii_case("excluded") => {
                self.bump()?;
                self.tok(Tok::Dot, "'.'")?;
                self.word("value")?;
                NewValue::Excluded
            }
            _ => NewValue::Lit(self.literal("a value literal, or value + n")?.1),
        };
        Ok((pos, value))
    }

    /// `[, ttl = n | NULL | excluded.ttl]` of a SET list.
    fn set_ttl(&mut self, excluded: bool) -> PResult<TtlChange> {
        if self.peek()? != &Tok::Comma {
            return Ok(TtlChange::Keep);
        }
        self.bump()?;
        self.word("ttl")?;
        self.tok(Tok::Eq, "'='")?;
        if self.peek_is_word("null")? {
            self.bump()?;
            return Ok(TtlChange::Clear);
        }
        if excluded && self.peek_is_word("excluded")? {
            self.bump()?;
            self.tok(Tok::Dot, "'.'")?;
            self.word("ttl")?;
            return Ok(TtlChange::Excluded);
        }
        Ok(TtlChange::Set(self.ttl()?))
    }

    /// `[RETURNING * | col, …]`: col is key, value, ttl, old.value or old.ttl.
    fn returning(&mut self) -> PResult<Option<Returning>> {
        if !self.peek_is_word("returning")? {
            return Ok(None);
        }
        self.bump()?;
        if self.peek()? == &Tok::Star {
            self.bump()?;
            return Ok(Some(vec![RetCol::Key, RetCol::Value]));
        }
        let mut cols = Vec::new();
        loop {
            let (pos, t) = self.bump()?;
            let col = match &t {
                Tok::Word(w) if w.eq_ignore_ascii_case("key") => RetCol::Key,
                Tok::Word(w) if w.eq_ignore_ascii_case("value") => RetCol::Value,
                Tok::Word(w) if w.eq_ignore_ascii_case("ttl") => RetCol::Ttl,
                Tok::Word(w) if w.eq_ignore_ascii_case("old") => {
                    self.tok(Tok::Dot, "'.'")?;
                    let (cpos, c) = self.bump()?;
                    match &c {
                        Tok::Word(w) if w.eq_ignore_ascii_case("value") => RetCol::OldValue,
                        Tok::Word(w) if w.eq_ignore_ascii_case("ttl") => RetCol::OldTtl,
                        _ => return Self::err(cpos, "value or ttl", &c),
                    }
                }
                _ => return Self::err(pos, "key, value, ttl, old.value or old.ttl", &t),
            };
            if cols.contains(&col) {
                return Err(ParseError { pos, msg: format!("column {} listed twice", col.name()) });
            }
            cols.push(col);
            if self.peek()? != &Tok::Comma {
                break;
            }
            self.bump()?;
        }
        Ok(Some(cols))
    }

    /// `[AND value = lit]` after `key = lit`.
    fn expect_value(&mut self) -> PResult<Option<Lit<'a>>> {
        if !self.peek_is_word("and")? {
            return Ok(None);
        }
        self.bump()?;
        self.word("value")?;
        self.tok(Tok::Eq, "'='")?;
        Ok(Some(self.literal("a value literal")?.1))
    }

    fn delete(&mut self) -> PResult<Delete<'a>> {
        self.word("from")?;
        self.word("kv")?;
        self.word("where")?;
        let filter = self.condition()?;
        let expect = match filter {
            Filter::Eq(_) => self.expect_value()?,
            _ => None,
        };
        let pos = self.peeked_pos()?;
        let returning = self.returning()?;
        if returning.is_some() && !matches!(filter, Filter::Eq(_) | Filter::In(_)) {
            return Err(ParseError {
                pos,
                msg: "RETURNING takes a DELETE of named keys (key = or key IN)".into(),
            });
        }
        Ok(Delete { filter, expect, returning })
    }

    /// Where the next token starts.
    fn peeked_pos(&mut self) -> PResult<usize> {
        self.peek()?;
        Ok(self.peeked.as_ref().expect("peeked").0)
    }

    fn row(&mut self, with_ttl: bool) -> PResult<Row<'a>> {
        self.tok(Tok::LParen, "'('")?;
        let key = self.key_literal()?;
        self.tok(Tok::Comma, "','")?;
        let (_, value) = self.literal("a value literal")?;
        let mut ttl_s = None;
        if with_ttl {
            self.tok(Tok::Comma, "','")?;
            if self.peek_is_word("null")? {
                self.bump()?;
            } else {
                ttl_s = Some(self.ttl()?);
            }
        }
        self.tok(Tok::RParen, "')'")?;
        Ok(Row { key, value, ttl_s })
    }

    fn update(&mut self) -> PResult<Update<'a>> {
        self.word("kv")?;
        self.word("set")?;
        let (_, value) = self.set_value(false)?;
        let ttl = self.set_ttl(false)?;
        self.word("where")?;
        self.word("key")?;
        self.tok(Tok::Eq, "'='")?;
        let key = self.key_literal()?;
        let expect = self.expect_value()?;
        let returning = self.returning()?;
        Ok(Update { key, value, ttl, expect, returning })
    }
}

/// Narrow the range by `key op lit`; two conditions on the same side keep the tighter one.
fn apply_bound(lower: &mut KeyBound, upper: &mut KeyBound, op: &Tok, lit: Vec<u8>) {
    match op {
        Tok::Gt | Tok::Ge => {
            let new = if *op == Tok::Gt { Bound::Excluded(lit) } else { Bound::Included(lit) };
            let tighter = match (&*lower, &new) {
                (Bound::Unbounded, _) => true,
                (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b)) => b > a,
                (Bound::Included(a), Bound::Excluded(b)) => b >= a,
                (Bound::Excluded(a), Bound::Excluded(b)) => b > a,
                _ => false,
            };
            if tighter {
                *lower = new;
            }
        }
        _ => {
            let new = if *op == Tok::Lt { Bound::Excluded(lit) } else { Bound::Included(lit) };
            let tighter = match (&*upper, &new) {
                (Bound::Unbounded, _) => true,
                (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b)) => b < a,
                (Bound::Included(a), Bound::Excluded(b)) => b <= a,
                (Bound::Excluded(a), Bound::Excluded(b)) => b < a,
                _ => false,
            };
            if tighter {
                *upper = new;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn ok(sql: &str) -> Statement<'_> {
        parse(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    fn err(sql: &str) -> ParseError {
        parse(sql).expect_err(sql)
    }

    #[test]
    fn point_select_borrows_its_key() {
        let Statement::Select(s) = ok("SELECT value FROM kv WHERE key = 'user:1';") else { panic!() };
        assert_eq!(s.projection, Projection::Columns(ColumnList::of(&[Column::Value])));
        assert!(matches!(s.filter, Filter::Eq(Cow::Borrowed(b"user:1"))));
    }

    #[test]
    fn keywords_are_case_insensitive_and_quotes_double() {
        let Statement::Insert(i) = ok("insert INTO Kv (KEY, Value) values ('it''s', X'00fF')") else {
            panic!()
        };
        assert_eq!(&*i.first.key, b"it's");
        assert_eq!(&*i.first.value, &[0x00, 0xff]);
    }

    #[test]
    fn every_seed_statement_parses() {
        for sql in [
            "SELECT value FROM kv WHERE key = 'user:1';",
            "INSERT INTO kv (key, value) VALUES ('user:1', 'alice');",
            "UPDATE kv SET value = 'alice_updated' WHERE key = 'user:1';",
            "DELETE FROM kv WHERE key = 'user:1';",
            "INSERT INTO kv (key, value) VALUES \n  ('user:1', 'alice'),\n  ('user:2', 'bob'),\n  ('user:3', 'charlie');",
            "SELECT key, value FROM kv WHERE key LIKE 'user:%' LIMIT 100;",
            "SELECT key, value FROM kv WHERE key >= 'user:1' AND key <= 'user:9';",
            "SELECT COUNT(*) FROM kv;",
            "SHOW STATS;",
            "SHOW STATUS;",
        ] {
            ok(sql);
        }
    }

    #[test]
    fn show_slowlog_forms() {
        assert_eq!(ok("SHOW SLOWLOG"), Statement::ShowSlowlog { limit: None });
        assert_eq!(ok("show slowlog limit 10;"), Statement::ShowSlowlog { limit: Some(10) });
        assert_eq!(ok("SHOW SLOWLOG LIMIT 0"), Statement::ShowSlowlog { limit: Some(0) });
        assert_eq!(ok("Show SlowLog Reset ;"), Statement::ResetSlowlog);
        assert_eq!(
            ok("SHOW /* the slow ones */ SLOWLOG -- all of them"),
            Statement::ShowSlowlog { limit: None }
        );
        for sql in ["SHOW SLOWLOG", "SHOW SLOWLOG LIMIT 5", "SHOW SLOWLOG RESET"] {
            assert_eq!(ok(sql).kind(), StatementKind::Show, "{sql}");
            assert!(!ok(sql).kind().is_write(), "{sql}");
        }
        let e = err("SHOW SLOW");
        assert_eq!((e.pos, e.msg.as_str()), (5, "expected STATS, STATUS or SLOWLOG, found 'SLOW'"));
        assert_eq!(err("SHOW").msg, "expected STATS, STATUS or SLOWLOG, found end of statement");
        let e = err("SHOW SLOWLOG LIMIT");
        assert_eq!((e.pos, e.msg.as_str()), (18, "expected a row count, found end of statement"));
        assert_eq!(err("SHOW SLOWLOG LIMIT 'a'").msg, "expected a row count, found a string literal");
        assert!(err("SHOW SLOWLOG LIMIT 99999999999999999999").msg.contains("too large"));
        // RESET takes nothing, and LIMIT comes once, with nothing after it.
        let e = err("SHOW SLOWLOG RESET LIMIT 1");
        assert_eq!((e.pos, e.msg.as_str()), (19, "expected end of statement, found 'LIMIT'"));
        assert_eq!(err("SHOW SLOWLOG LIMIT 1 RESET").pos, 21);
        assert_eq!(err("SHOW SLOWLOG LIMIT 1 LIMIT 2").pos, 21);
        assert_eq!(err("SHOW SLOWLOG ORDER BY key").pos, 13);
        assert_eq!(err("SHOW STATS LIMIT 1").pos, 11);
    }

    #[test]
    fn ranges_between_and_order() {
        let Statement::Select(s) =
            ok("SELECT key FROM kv WHERE key BETWEEN 'a' AND 'c' ORDER BY key DESC LIMIT 2")
        else {
            panic!()
        };
        assert_eq!(
            s.filter,
            Filter::Range { lower: Bound::Included(b"a".to_vec()), upper: Bound::Included(b"c".to_vec()) }
        );
        assert!(s.desc);
        assert_eq!(s.limit, Some(2));
        let Statement::Select(s) = ok("select * from kv where key > 'b' and key > 'a'") else { panic!() };
        assert_eq!(
            s.filter,
            Filter::Range { lower: Bound::Excluded(b"b".to_vec()), upper: Bound::Unbounded }
        );
    }

    #[test]
    fn ttl_forms() {
        let Statement::Insert(i) =
            ok("INSERT INTO kv (key, value, ttl) VALUES ('a', 'b', 60), ('c', 'd', NULL)")
        else {
            panic!()
        };
        assert_eq!((i.first.ttl_s, i.rest[0].ttl_s), (Some(60), None));
        let Statement::Update(u) = ok("UPDATE kv SET value = 'x', ttl = NULL WHERE key = 'a'") else {
            panic!()
        };
        assert_eq!(u.ttl, TtlChange::Clear);
        let Statement::Select(s) = ok("SELECT ttl, key FROM kv WHERE key IN ('a', 'b', 'a')") else {
            panic!()
        };
        assert_eq!(s.filter, Filter::In(vec![Cow::Borrowed(&b"a"[..]), Cow::Borrowed(&b"b"[..])]));
        assert_eq!(err("INSERT INTO kv (key, value, ttl) VALUES ('a', 'b', 0)").pos, 51);
    }

    #[test]
    fn errors_name_the_position_and_the_expectation() {
        let e = err("SELECT value FORM kv");
        assert_eq!(e.pos, 13);
        assert_eq!(e.to_string(), "at byte 13: expected FROM, found 'FORM'");
        assert_eq!(err("SELECT value FROM kv WHERE key = 'a' extra").pos, 37);
        assert_eq!(err("SELECT value FROM kv WHERE key = 'unterminated").pos, 33);
        assert_eq!(err("SELECT value FROM kv WHERE key = X'abc'").pos, 33);
        assert_eq!(err("").msg, "expected SELECT, INSERT, UPDATE, DELETE or SHOW, found end of statement");
        assert_eq!(err("SELECT key, key FROM kv").pos, 12);
        assert!(err("DELETE FROM kv").msg.contains("WHERE"));
        assert!(err("SELECT value FROM kv LIMIT 99999999999999999999").msg.contains("too large"));
        assert!(err("SELECT value FROM kv; ;").pos == 22);
        assert!(err("SELECT value FROM kv WHERE key = 'a' \u{00e9}").msg.contains("unexpected character"));
    }

    #[test]
    fn comments_are_blanks_between_tokens() {
        let plain = ok("SELECT key, value FROM kv WHERE key >= 'a' AND key < 'b' LIMIT 5");
        for sql in [
            "-- leading line comment\nSELECT key, value FROM kv WHERE key >= 'a' AND key < 'b' LIMIT 5",
            "SELECT key, value FROM kv -- why: the a range\nWHERE key >= 'a' AND key < 'b' LIMIT 5",
            "SELECT key, value FROM kv WHERE key >= 'a' AND key < 'b' LIMIT 5 -- trailing, no newline",
            "SELECT key, value FROM kv WHERE key >= 'a' AND key < 'b' LIMIT 5; -- after the ';'",
            "SELECT/**/key,/* c */value FROM kv WHERE key>='a'/*x*/AND key<'b' LIMIT 5/* end */",
            "/* multi\n   line */ SELECT key, value FROM kv WHERE key >= 'a' AND key < 'b' LIMIT 5",
            "SELECT key, value FROM kv WHERE key >= 'a' AND key < 'b' LIMIT 5--x",
            "SELECT key, value FROM kv /* outer /* nested */ still outer */ WHERE key >= 'a' AND key < 'b' LIMIT 5",
            "SELECT key, value FROM kv WHERE key >= 'a' /* -- a line comment inside a block */ AND key < 'b' LIMIT 5",
            "SELECT key, value FROM kv WHERE key >= 'a' -- /* a block opener inside a line comment\nAND key < 'b' LIMIT 5",
            "SELECT key, value FROM kv WHERE key >= 'a' AND key < 'b' LIMIT 5 /* ; */ ;",
            "SELECT key, value FROM kv WHERE key >= 'a' AND key < 'b' LIMIT 5\r\n-- crlf\r\n",
        ] {
            assert_eq!(ok(sql), plain, "{sql}");
        }
    }

    #[test]
    fn comment_markers_inside_literals_stay_text() {
        let Statement::Insert(i) =
            ok("INSERT INTO kv (key, value) VALUES ('a--b', '/* not a comment */'), ('it''s -- here', '*/')")
        else {
            panic!()
        };
        assert_eq!(&*i.first.key, b"a--b");
        assert_eq!(&*i.first.value, b"/* not a comment */");
        assert_eq!(&*i.rest[0].key, b"it's -- here");
        assert_eq!(&*i.rest[0].value, b"*/");
        let Statement::Select(s) = ok("SELECT value FROM kv WHERE key = '--' -- the key is two dashes")
        else {
            panic!()
        };
        assert_eq!(s.filter, Filter::Eq(Cow::Borrowed(&b"--"[..])));
    }

    #[test]
    fn comment_errors_are_clear() {
        let e = err("SELECT value FROM kv /* never closed");
        assert_eq!(e.pos, 21);
        assert!(e.msg.contains("unterminated /* comment"), "{e}");
        // Nested: one closing marker is not enough.
        let e = err("SELECT value FROM kv /* a /* b */");
        assert_eq!(e.pos, 21);
        assert!(e.msg.contains("unterminated /* comment"), "{e}");
        assert!(err("SELECT value FROM kv /*/").msg.contains("unterminated"));
        // A statement of comments alone is empty.
        assert_eq!(
            err("-- nothing here").msg,
            "expected SELECT, INSERT, UPDATE, DELETE or SHOW, found end of statement"
        );
        assert_eq!(err("/* nothing */ ;").pos, 14);
        // Positions after a comment are offsets into the text as sent, comments included.
        let e = err("/* 12345 */ SELECT value FORM kv");
        assert_eq!((e.pos, e.msg.as_str()), (25, "expected FROM, found 'FORM'"));
        // One dash is the minus of `value - n`, not a comment, and nothing else.
        assert_eq!(
            err("SELECT value FROM kv WHERE key = 'a' - 1").msg,
            "expected end of statement, found '-'"
        );
        assert!(err("SELECT value FROM kv WHERE key = 'a' / 1").msg.contains("unexpected character '/'"));
        // A comment ends a number like any blank; letters after digits are still malformed.
        let Statement::Select(s) = ok("SELECT key FROM kv LIMIT 7--seven") else { panic!() };
        assert_eq!(s.limit, Some(7));
    }

    #[test]
    fn in_list_is_bounded() {
        let keys: Vec<String> = (0..=IN_LIST_KEYS_MAX).map(|i| format!("'{i}'")).collect();
        let sql = format!("SELECT value FROM kv WHERE key IN ({})", keys.join(","));
        assert!(err(&sql).msg.contains("more than 1024"));
    }

    #[test]
    fn insert_on_conflict_forms() {
        let Statement::Insert(i) = ok("INSERT INTO kv (key, value) VALUES ('a', '1') ON CONFLICT DO NOTHING")
        else {
            panic!()
        };
        assert_eq!((i.on_conflict, i.returning), (OnConflict::Nothing, None));
        let Statement::Insert(i) =
            ok("insert into kv (key, value) values ('a', '1'), ('b', '2') on conflict (key) do nothing")
        else {
            panic!()
        };
        assert_eq!(i.on_conflict, OnConflict::Nothing);
        let Statement::Insert(i) = ok(
            "INSERT INTO kv (key, value, ttl) VALUES ('a', '1', 5) ON CONFLICT (key) DO UPDATE SET value = excluded.value, ttl = excluded.ttl",
        ) else {
            panic!()
        };
        assert_eq!(i.on_conflict, OnConflict::Update { value: NewValue::Excluded, ttl: TtlChange::Excluded });
        let Statement::Insert(i) =
            ok("INSERT INTO kv (key, value) VALUES ('c', '5') ON CONFLICT (key) DO UPDATE SET value = value + 5 RETURNING value")
        else {
            panic!()
        };
        assert_eq!(i.on_conflict, OnConflict::Update { value: NewValue::Add(5), ttl: TtlChange::Keep });
        assert_eq!(i.returning, Some(vec![RetCol::Value]));
        let Statement::Insert(i) =
            ok("INSERT INTO kv (key, value) VALUES ('a', 'x') ON CONFLICT (key) DO UPDATE SET value = 'y', ttl = NULL")
        else {
            panic!()
        };
        assert_eq!(
            i.on_conflict,
            OnConflict::Update { value: NewValue::Lit(Cow::Borrowed(b"y")), ttl: TtlChange::Clear }
        );
        let Statement::Insert(i) = ok("INSERT INTO kv (key, value) VALUES ('a', 'x')") else { panic!() };
        assert_eq!(i.on_conflict, OnConflict::Replace);
    }

    #[test]
    fn on_conflict_errors() {
        let e = err("INSERT INTO kv (key, value) VALUES ('a', '1') ON CONFLICT DO UPDATE SET value = 'x'");
        assert!(e.msg.contains("ON CONFLICT (key)"), "{e}");
        let e = err("INSERT INTO kv (key, value) VALUES ('a', '1'), ('b', '2') ON CONFLICT (key) DO UPDATE SET value = value + 1");
        assert!(e.msg.contains("one-row INSERT"), "{e}");
        assert!(err("INSERT INTO kv (key, value) VALUES ('a', '1') ON CONFLICT (value) DO NOTHING")
            .msg
            .contains("KEY"));
        assert!(err("INSERT INTO kv (key, value) VALUES ('a', '1') ON CONFLICT DO")
            .msg
            .contains("NOTHING or UPDATE"));
        // `excluded` names the INSERT's row: nothing to name in an UPDATE.
        assert!(err("UPDATE kv SET value = excluded.value WHERE key = 'a'").msg.contains("a value literal"));
        assert!(err("UPDATE kv SET value = 'x', ttl = excluded.ttl WHERE key = 'a'").msg.contains("a TTL"));
    }

    #[test]
    fn compare_and_set_and_counters() {
        let Statement::Update(u) = ok("UPDATE kv SET value = 'new' WHERE key = 'k' AND value = 'old'") else {
            panic!()
        };
        assert_eq!(u.value, NewValue::Lit(Cow::Borrowed(b"new")));
        assert_eq!(u.expect, Some(Cow::Borrowed(&b"old"[..])));
        let Statement::Update(u) = ok("UPDATE kv SET value = value + 10, ttl = 60 WHERE key = 'n'") else {
            panic!()
        };
        assert_eq!((u.value, u.ttl), (NewValue::Add(10), TtlChange::Set(60)));
        let Statement::Update(u) =
            ok("UPDATE kv SET value = value-3 WHERE key = 'n' RETURNING value, old.value")
        else {
            panic!()
        };
        assert_eq!(u.value, NewValue::Add(-3));
        assert_eq!(u.returning, Some(vec![RetCol::Value, RetCol::OldValue]));
        let Statement::Update(u) = ok("UPDATE kv SET value = value - 9223372036854775808 WHERE key = 'n'")
        else {
            panic!()
        };
        assert_eq!(u.value, NewValue::Add(i64::MIN));
        assert!(err("UPDATE kv SET value = value + 9223372036854775808 WHERE key = 'n'")
            .msg
            .contains("64-bit"));
        assert!(err("UPDATE kv SET value = value * 2 WHERE key = 'n'").msg.contains("'+' or '-'"));
        assert!(err("UPDATE kv SET value = value + 'x' WHERE key = 'n'").msg.contains("an integer"));
        // `value--1` is `value` and a comment.
        assert!(err("UPDATE kv SET value = value--1 WHERE key = 'n'").msg.contains("'+' or '-'"));
        let Statement::Delete(d) = ok("DELETE FROM kv WHERE key = 'k' AND value = 'v' RETURNING key, ttl")
        else {
            panic!()
        };
        assert_eq!(d.expect, Some(Cow::Borrowed(&b"v"[..])));
        assert_eq!(d.returning, Some(vec![RetCol::Key, RetCol::Ttl]));
        // The value condition goes with one named key only.
        assert!(err("DELETE FROM kv WHERE key IN ('a') AND value = 'v'").msg.contains("end of statement"));
    }

    #[test]
    fn returning_lists() {
        let Statement::Delete(d) = ok("DELETE FROM kv WHERE key IN ('a', 'b') RETURNING *") else { panic!() };
        assert_eq!(d.returning, Some(vec![RetCol::Key, RetCol::Value]));
        let Statement::Insert(i) = ok(
            "INSERT INTO kv (key, value) VALUES ('a', 'b') RETURNING key, value, ttl, old.value, old.ttl;",
        ) else {
            panic!()
        };
        assert_eq!(
            i.returning,
            Some(vec![RetCol::Key, RetCol::Value, RetCol::Ttl, RetCol::OldValue, RetCol::OldTtl])
        );
        assert!(err("INSERT INTO kv (key, value) VALUES ('a', 'b') RETURNING value, value")
            .msg
            .contains("twice"));
        assert!(err("INSERT INTO kv (key, value) VALUES ('a', 'b') RETURNING old.key")
            .msg
            .contains("value or ttl"));
        assert!(err("INSERT INTO kv (key, value) VALUES ('a', 'b') RETURNING")
            .msg
            .contains("key, value, ttl"));
        let e = err("DELETE FROM kv WHERE key LIKE 'a%' RETURNING key");
        assert!(e.msg.contains("named keys"), "{e}");
        assert_eq!(e.pos, 35);
    }
}
