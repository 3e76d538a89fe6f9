//! The SQL dialect of profile §5: a lexer and a recursive-descent parser producing typed
//! statements. No I/O. The point statements borrow their key and value bytes from the input,
//! so `SELECT value FROM kv WHERE key = '…'` and a one-row INSERT parse without allocating.

mod ast;
mod fast;
mod lexer;
mod like;
mod parser;

pub use ast::{
    Column, ColumnList, Delete, Filter, Insert, KeyBound, NewValue, OnConflict, Projection, RetCol,
    Returning, Row, Select, Statement, StatementKind, TtlChange, Update,
};
pub use fast::{hot_key, incr_one, insert_one, point_select_key};
pub use like::LikePattern;
pub use parser::{parse, ParseError};

/// Render bytes as a SQL literal that parses back to the same bytes: a quoted string when the
/// bytes are printable UTF-8, `X'…'` otherwise. Builders use this so that user data can never
/// change the shape of a statement.
pub fn quote_literal(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) if !s.chars().any(|c| c.is_control()) => {
            let mut out = String::with_capacity(s.len() + 2);
            out.push('\'');
            for c in s.chars() {
                if c == '\'' {
                    out.push('\'');
                }
                out.push(c);
            }
            out.push('\'');
            out
        }
        _ => {
            let mut out = String::with_capacity(bytes.len() * 2 + 3);
            out.push_str("X'");
            out.push_str(&hex::encode(bytes));
            out.push('\'');
            out
        }
    }
}
