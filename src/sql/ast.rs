//! Statement types. Literals are `Cow<[u8]>`: borrowed from the SQL text when they contain no
//! doubled quote, owned otherwise (and always for `X'…'`).

use super::like::LikePattern;
use crate::limits::SELECT_COLUMNS_MAX;
use std::borrow::Cow;
use std::ops::Bound;

pub type Lit<'a> = Cow<'a, [u8]>;
pub type KeyBound = Bound<Vec<u8>>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Statement<'a> {
    Select(Select<'a>),
    Insert(Insert<'a>),
    Update(Update<'a>),
    Delete(Delete<'a>),
    ShowStats,
    ShowStatus,
    /// `SHOW SLOWLOG [LIMIT n]`: the slow log's entries, newest first; `limit`: at most n.
    ShowSlowlog {
        limit: Option<u64>,
    },
    /// `SHOW SLOWLOG RESET`: empty every core's slow log (readwrite users only).
    ResetSlowlog,
}

/// What a statement does, for statistics and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StatementKind {
    SelectPoint,
    SelectMulti,
    SelectRange,
    Count,
    Insert,
    Update,
    Delete,
    Show,
}

impl StatementKind {
    pub const ALL: [StatementKind; 8] = [
        StatementKind::SelectPoint,
        StatementKind::SelectMulti,
        StatementKind::SelectRange,
        StatementKind::Count,
        StatementKind::Insert,
        StatementKind::Update,
        StatementKind::Delete,
        StatementKind::Show,
    ];

    pub fn name(self) -> &'static str {
        match self {
            StatementKind::SelectPoint => "select_point",
            StatementKind::SelectMulti => "select_multi",
            StatementKind::SelectRange => "select_range",
            StatementKind::Count => "count",
            StatementKind::Insert => "insert",
            StatementKind::Update => "update",
            StatementKind::Delete => "delete",
            StatementKind::Show => "show",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn is_write(self) -> bool {
        matches!(self, StatementKind::Insert | StatementKind::Update | StatementKind::Delete)
    }
}

impl<'a> Statement<'a> {
    pub fn kind(&self) -> StatementKind {
        match self {
            Statement::Select(s) => match (&s.projection, &s.filter) {
                (Projection::Count, _) => StatementKind::Count,
                (_, Filter::Eq(_)) => StatementKind::SelectPoint,
                (_, Filter::In(_)) => StatementKind::SelectMulti,
                _ => StatementKind::SelectRange,
            },
            Statement::Insert(_) => StatementKind::Insert,
            Statement::Update(_) => StatementKind::Update,
            Statement::Delete(_) => StatementKind::Delete,
            Statement::ShowStats
            | Statement::ShowStatus
            | Statement::ShowSlowlog { .. }
            | Statement::ResetSlowlog => StatementKind::Show,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Column {
    Key,
    Value,
    Ttl,
}

impl Column {
    pub fn name(self) -> &'static str {
        match self {
            Column::Key => "key",
            Column::Value => "value",
            Column::Ttl => "ttl",
        }
    }
}

/// A SELECT list kept inline (no allocation): at most `SELECT_COLUMNS_MAX` columns.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ColumnList {
    cols: [Column; SELECT_COLUMNS_MAX],
    len: u8,
}

impl ColumnList {
    pub fn new() -> Self {
        ColumnList { cols: [Column::Key; SELECT_COLUMNS_MAX], len: 0 }
    }

    pub fn of(cols: &[Column]) -> Self {
        let mut l = Self::new();
        for c in cols {
            l.push(*c);
        }
        l
    }

    /// False when the list is full.
    pub fn push(&mut self, c: Column) -> bool {
        if (self.len as usize) < SELECT_COLUMNS_MAX {
            self.cols[self.len as usize] = c;
            self.len += 1;
            true
        } else {
            false
        }
    }

    pub fn as_slice(&self) -> &[Column] {
        &self.cols[..self.len as usize]
    }

    pub fn contains(&self, c: Column) -> bool {
        self.as_slice().contains(&c)
    }
}

impl Default for ColumnList {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for ColumnList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Projection {
    Count,
    Columns(ColumnList),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Filter<'a> {
    /// No WHERE clause: every key.
    All,
    Eq(Lit<'a>),
    /// Distinct keys, in the order written.
    In(Vec<Lit<'a>>),
    Like(LikePattern),
    Range {
        lower: KeyBound,
        upper: KeyBound,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Select<'a> {
    pub projection: Projection,
    pub filter: Filter<'a>,
    pub desc: bool,
    pub limit: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row<'a> {
    pub key: Lit<'a>,
    pub value: Lit<'a>,
    /// Seconds until expiry; `None`: the key does not expire.
    pub ttl_s: Option<u64>,
}

/// The rows of an INSERT; the first is kept inline so that a one-row INSERT does not allocate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Insert<'a> {
    pub first: Row<'a>,
    pub rest: Vec<Row<'a>>,
    pub on_conflict: OnConflict<'a>,
    pub returning: Option<Returning>,
}

/// What an INSERT does to a row whose key is already there (and live).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OnConflict<'a> {
    /// No ON CONFLICT clause: the new row replaces the old, TTL and all (an upsert).
    Replace,
    /// `ON CONFLICT [(key)] DO NOTHING`: the old row stays; the row is not counted.
    Nothing,
    /// `ON CONFLICT (key) DO UPDATE SET value = …[, ttl = …]`: the old row changes as an
    /// UPDATE would (its TTL kept unless set).
    Update { value: NewValue<'a>, ttl: TtlChange },
}

/// The value a write sets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NewValue<'a> {
    Lit(Lit<'a>),
    /// `excluded.value`: the value of the INSERT's row (ON CONFLICT DO UPDATE only).
    Excluded,
    /// `value + n` / `value - n`: the old value read as the decimal text of a signed 64-bit
    /// integer, plus `n`, written back as decimal text (Redis INCRBY).
    Add(i64),
}

/// A column of a RETURNING list: the row as written (for DELETE: as it was), or as it was
/// before the statement (`old.value`, `old.ttl`; NULL when there was no row).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetCol {
    Key,
    Value,
    Ttl,
    OldValue,
    OldTtl,
}

impl RetCol {
    /// The result set's column name.
    pub fn name(self) -> &'static str {
        match self {
            RetCol::Key => "key",
            RetCol::Value => "value",
            RetCol::Ttl => "ttl",
            RetCol::OldValue => "old_value",
            RetCol::OldTtl => "old_ttl",
        }
    }
}

/// `RETURNING col, …`: distinct columns, in the order written.
pub type Returning = Vec<RetCol>;

impl<'a> Insert<'a> {
    pub fn rows(&self) -> impl Iterator<Item = &Row<'a>> {
        std::iter::once(&self.first).chain(self.rest.iter())
    }

    pub fn len(&self) -> usize {
        1 + self.rest.len()
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TtlChange {
    /// No `ttl =` in the SET list: the key keeps its expiry.
    Keep,
    Set(u64),
    /// `ttl = NULL`: the key no longer expires.
    Clear,
    /// `ttl = excluded.ttl`: the INSERT row's TTL (ON CONFLICT DO UPDATE only).
    Excluded,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Update<'a> {
    pub key: Lit<'a>,
    pub value: NewValue<'a>,
    pub ttl: TtlChange,
    /// `AND value = lit`: written only if the key holds exactly this value (compare-and-set).
    pub expect: Option<Lit<'a>>,
    pub returning: Option<Returning>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delete<'a> {
    pub filter: Filter<'a>,
    /// `AND value = lit` after `key = lit`: deleted only if the key holds exactly this value.
    pub expect: Option<Lit<'a>>,
    /// Only with `key =` or `key IN`: the rows deleted, as they were.
    pub returning: Option<Returning>,
}
