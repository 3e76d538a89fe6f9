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
    let mut out = Vec::with_capacity(bytes.len() + 2);
    quote_literal_into(&mut out, bytes);
    // Both forms are ASCII or the input's own UTF-8.
    String::from_utf8(out).expect("a quoted literal is UTF-8")
}

/// `quote_literal`, appended to a buffer: a load generator builds its statements without
/// allocating.
pub fn quote_literal_into(out: &mut Vec<u8>, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(s) if !s.chars().any(|c| c.is_control()) => {
            out.reserve(bytes.len() + 2);
            out.push(b'\'');
            // A quote is one byte in UTF-8, never inside a multi-byte character: doubled.
            for part in bytes.split_inclusive(|&b| b == b'\'') {
                out.extend_from_slice(part);
                if part.last() == Some(&b'\'') {
                    out.push(b'\'');
                }
            }
            out.push(b'\'');
        }
        _ => {
            out.extend_from_slice(b"X'");
            let at = out.len();
            out.resize(at + bytes.len() * 2, 0);
            hex::encode_to_slice(bytes, &mut out[at..]).expect("the slice is twice the input");
            out.push(b'\'');
        }
    }
}
