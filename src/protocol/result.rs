//! Result sets (profile §4), the payload of RESPONSE and of a STATS reply.
//!
//! `ResultSetWriter` streams rows straight into an output buffer, and
//! `encode_single_value_response` writes the whole RESPONSE frame of a point GET without
//! building a `ResultSet` at all: that is the hot path.

use super::frame::{begin_frame, end_frame};
use super::wire::{put_str16, Reader};
use super::MessageType;

/// One cell of a result set.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Value {
    Null,
    Bytes(Vec<u8>),
    Int(i64),
}

impl Value {
    pub const TAG_NULL: u8 = 0;
    pub const TAG_BYTES: u8 = 1;
    pub const TAG_INT: u8 = 2;

    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// Bytes this value takes on the wire.
    pub fn encoded_len(&self) -> usize {
        match self {
            Value::Null => 1,
            Value::Bytes(b) => 5 + b.len(),
            Value::Int(_) => 9,
        }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::Null => out.push(Self::TAG_NULL),
            Value::Bytes(b) => put_bytes_value(out, b),
            Value::Int(i) => put_int_value(out, *i),
        }
    }
}

#[inline]
pub fn put_bytes_value(out: &mut Vec<u8>, b: &[u8]) {
    out.push(Value::TAG_BYTES);
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

#[inline]
pub fn put_int_value(out: &mut Vec<u8>, i: i64) {
    out.push(Value::TAG_INT);
    out.extend_from_slice(&i.to_le_bytes());
}

/// A decoded result set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResultSet {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
    pub affected: u64,
}

impl ResultSet {
    /// The reply of a write: no columns, no rows, `affected` rows written.
    pub fn affected(n: u64) -> Self {
        ResultSet { columns: Vec::new(), rows: Vec::new(), affected: n }
    }

    /// A two-column (name, value) table: what SHOW answers.
    pub fn name_value(rows: Vec<(String, Value)>) -> Self {
        ResultSet {
            columns: vec!["name".into(), "value".into()],
            rows: rows.into_iter().map(|(n, v)| vec![Value::Bytes(n.into_bytes()), v]).collect(),
            affected: 0,
        }
    }

    /// Bytes of a result set's counts: columns (u16), rows (u32), affected (u64).
    pub const EMPTY_ENCODED_BYTES: usize = 2 + 4 + 8;

    pub fn encoded_len(&self) -> usize {
        let cols: usize = self.columns.iter().map(|c| 2 + c.len()).sum();
        let cells: usize = self.rows.iter().flatten().map(Value::encoded_len).sum();
        Self::EMPTY_ENCODED_BYTES + cols + cells
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut w = ResultSetWriter::begin(out, self.columns.iter().map(String::as_str));
        for row in &self.rows {
            for v in row {
                v.encode(w.buf());
            }
            w.row_done();
        }
        w.finish(self.affected);
    }

    /// Decode a result set that must fill `payload` exactly. Counts read off the wire are
    /// checked against the bytes actually present before anything is reserved.
    pub fn decode(payload: &[u8]) -> Result<ResultSet, &'static str> {
        let mut r = Reader::new(payload);
        let n_columns = r.u16("n_columns")? as usize;
        // Each column name takes at least its 2-byte length.
        if n_columns * 2 > r.remaining() {
            return Err("n_columns exceeds the payload");
        }
        let mut columns = Vec::with_capacity(n_columns);
        for _ in 0..n_columns {
            columns.push(r.str16("column name")?.to_owned());
        }
        let n_rows = r.u32("n_rows")? as usize;
        if n_columns == 0 && n_rows != 0 {
            return Err("rows without columns");
        }
        // Each cell takes at least its 1-byte tag.
        if n_rows.saturating_mul(n_columns) > r.remaining() {
            return Err("n_rows exceeds the payload");
        }
        let mut rows = Vec::with_capacity(n_rows);
        for _ in 0..n_rows {
            let mut row = Vec::with_capacity(n_columns);
            for _ in 0..n_columns {
                row.push(match r.u8("value tag")? {
                    Value::TAG_NULL => Value::Null,
                    Value::TAG_BYTES => Value::Bytes(r.bytes32("bytes value")?.to_vec()),
                    Value::TAG_INT => Value::Int(r.i64("int value")?),
                    _ => return Err("unknown value tag"),
                });
            }
            rows.push(row);
        }
        let affected = r.u64("affected")?;
        r.finish("trailing bytes after the result set")?;
        Ok(ResultSet { columns, rows, affected })
    }
}

/// Streams a result set into a buffer: columns first, then values row by row, then the count
/// of rows is patched in by `finish`.
pub struct ResultSetWriter<'o> {
    out: &'o mut Vec<u8>,
    n_rows_at: usize,
    n_rows: u32,
}

impl<'o> ResultSetWriter<'o> {
    pub fn begin<'c>(out: &'o mut Vec<u8>, columns: impl ExactSizeIterator<Item = &'c str>) -> Self {
        out.extend_from_slice(&(columns.len() as u16).to_le_bytes());
        for c in columns {
            put_str16(out, c);
        }
        let n_rows_at = out.len();
        out.extend_from_slice(&[0; 4]);
        ResultSetWriter { out, n_rows_at, n_rows: 0 }
    }

    /// The buffer, to append the current row's values to.
    #[inline]
    pub fn buf(&mut self) -> &mut Vec<u8> {
        self.out
    }

    #[inline]
    pub fn row_done(&mut self) {
        self.n_rows += 1;
    }

    /// Bytes written so far, including what preceded the result set in the buffer.
    pub fn len(&self) -> usize {
        self.out.len()
    }

    pub fn is_empty(&self) -> bool {
        self.out.is_empty()
    }

    pub fn finish(self, affected: u64) {
        let at = self.n_rows_at;
        self.out[at..at + 4].copy_from_slice(&self.n_rows.to_le_bytes());
        self.out.extend_from_slice(&affected.to_le_bytes());
    }
}

/// The whole RESPONSE frame of a one-row, one-column reply: the point GET.
#[inline]
/// The payload bytes of `encode_single_value_response`'s frame.
pub fn single_value_response_len(column: &str, value_len: usize) -> usize {
    2 + 2 + column.len() + 4 + 5 + value_len + 8
}

pub fn encode_single_value_response(out: &mut Vec<u8>, column: &str, value: &[u8]) {
    encode_value_response(out, column, value, 0);
}

/// A one-row, one-column RESPONSE frame with `affected` (a write's RETURNING of one value).
pub fn encode_value_response(out: &mut Vec<u8>, column: &str, value: &[u8], affected: u64) {
    let start = begin_frame(out, MessageType::Response as u8);
    out.reserve(2 + 2 + column.len() + 4 + 5 + value.len() + 8 + 4);
    out.extend_from_slice(&1u16.to_le_bytes());
    put_str16(out, column);
    out.extend_from_slice(&1u32.to_le_bytes());
    put_bytes_value(out, value);
    out.extend_from_slice(&affected.to_le_bytes());
    end_frame(out, start);
}

/// The whole RESPONSE frame of a write: `affected` rows, nothing else.
#[inline]
pub fn encode_affected_response(out: &mut Vec<u8>, affected: u64) {
    let start = begin_frame(out, MessageType::Response as u8);
    out.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&affected.to_le_bytes());
    end_frame(out, start);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_every_value_kind() {
        let rs = ResultSet {
            columns: vec!["key".into(), "value".into(), "ttl".into()],
            rows: vec![
                vec![Value::Bytes(b"a".to_vec()), Value::Bytes(vec![0, 255]), Value::Null],
                vec![Value::Bytes(vec![]), Value::Bytes(b"x".to_vec()), Value::Int(-5)],
            ],
            affected: 7,
        };
        let mut buf = Vec::new();
        rs.encode(&mut buf);
        assert_eq!(buf.len(), rs.encoded_len());
        assert_eq!(ResultSet::decode(&buf).unwrap(), rs);
    }

    #[test]
    fn single_value_fast_path_equals_the_general_encoder() {
        let mut fast = Vec::new();
        encode_single_value_response(&mut fast, "value", b"alice");
        let rs = ResultSet {
            columns: vec!["value".into()],
            rows: vec![vec![Value::Bytes(b"alice".to_vec())]],
            affected: 0,
        };
        let mut payload = Vec::new();
        rs.encode(&mut payload);
        let mut slow = Vec::new();
        super::super::encode_frame(&mut slow, MessageType::Response as u8, &payload);
        assert_eq!(fast, slow);
    }

    #[test]
    fn hostile_counts_are_refused_before_allocation() {
        // 65535 columns claimed in a 6-byte payload.
        assert!(ResultSet::decode(&[0xff, 0xff, 0, 0, 0, 0]).is_err());
        // No columns but four billion rows.
        let mut p = vec![0, 0, 0xff, 0xff, 0xff, 0xff];
        p.extend_from_slice(&[0; 8]);
        assert_eq!(ResultSet::decode(&p), Err("rows without columns"));
        // One column, four billion rows, a few bytes.
        let mut p = vec![1, 0, 1, 0, b'v', 0xff, 0xff, 0xff, 0xff];
        p.extend_from_slice(&[0; 8]);
        assert_eq!(ResultSet::decode(&p), Err("n_rows exceeds the payload"));
        // A bytes value that claims 4 GiB.
        let p = [1, 0, 1, 0, b'v', 1, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff];
        assert!(ResultSet::decode(&p).is_err());
    }
}
