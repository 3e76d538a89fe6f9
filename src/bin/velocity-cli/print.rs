//! Result sets as text: an aligned table (cells cut to a screen's width), expanded records
//! (one line per column, values whole), JSON lines and CSV. Whatever the server sends, nothing
//! printed to a terminal is a control sequence and nothing here panics.

use std::io::Write;
use velocity::protocol::{ResultSet, Value};

/// Widest a table cell gets, in terminal columns: a value may be megabytes, a line of the
/// table should still fit a screen or two.
pub const CELL_COLUMNS_MAX: usize = 100;

/// Terminal columns `c` takes: 2 for the East Asian wide and fullwidth blocks, else 1. An
/// approximation (no width tables among our dependencies) that errs on the wide side for the
/// common wide scripts, so that a line is never longer than its computed width.
pub fn char_width(c: char) -> usize {
    match c as u32 {
        0x1100..=0x115F
        | 0x2E80..=0x303E
        | 0x3040..=0xA4CF
        | 0xAC00..=0xD7A3
        | 0xF900..=0xFAFF
        | 0xFE10..=0xFE19
        | 0xFE30..=0xFE6F
        | 0xFF00..=0xFF60
        | 0xFFE0..=0xFFE6
        | 0x1F300..=0x1F64F
        | 0x1F900..=0x1F9FF
        | 0x20000..=0x2FFFD
        | 0x30000..=0x3FFFD => 2,
        _ => 1,
    }
}

pub fn text_width(s: &str) -> usize {
    s.chars().map(char_width).sum()
}

/// `s` as one table cell: whole if it fits CELL_COLUMNS_MAX, else cut with a marker giving
/// the size of the whole value (`bytes`), so that a cut value is never mistaken for a short one.
pub fn clip(s: &str, bytes: usize) -> String {
    let mut width = 0;
    for (i, c) in s.char_indices() {
        width += char_width(c);
        if width > CELL_COLUMNS_MAX {
            let mark = format!("… ({bytes} bytes)");
            let room = CELL_COLUMNS_MAX - text_width(&mark);
            let mut cut = 0;
            let mut kept = 0;
            for (j, c) in s[..i].char_indices() {
                kept += char_width(c);
                if kept > room {
                    break;
                }
                cut = j + c.len_utf8();
            }
            return format!("{}{mark}", &s[..cut]);
        }
    }
    s.to_owned()
}

/// Bytes as shown on a terminal, whole: printable UTF-8 as is, anything else (control
/// characters such as ESC or NUL, invalid UTF-8) as an X'..' literal, so that no escape
/// sequence reaches the terminal.
pub fn whole_bytes(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) if !s.chars().any(|c| c.is_control()) => s.to_owned(),
        _ => velocity::sql::quote_literal(b),
    }
}

/// As `whole_bytes`, then cut to one table cell.
pub fn cell_bytes(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) if !s.chars().any(|c| c.is_control()) => clip(s, b.len()),
        _ => clip(&velocity::sql::quote_literal(b), b.len()),
    }
}

pub fn cell_text(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::Int(i) => i.to_string(),
        Value::Bytes(b) => cell_bytes(b),
    }
}

fn whole_text(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::Int(i) => i.to_string(),
        Value::Bytes(b) => whole_bytes(b),
    }
}

/// Text from the server that is not a value (an error message, a server name) made safe for
/// a terminal: control characters other than newline and tab are written as `\u{…}` escapes.
pub fn safe_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() && c != '\n' && c != '\t' {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// `v` as one line of JSON. serde_json escapes the C0 controls; DEL and the C1 controls
/// (U+0080 to U+009F, which some terminals obey as ESC sequences) are escaped here too. They
/// can only occur inside strings, where `\u…` stands for the same character.
pub fn json_line(v: &serde_json::Value) -> String {
    let s = v.to_string();
    if !s.chars().any(|c| ('\u{7f}'..='\u{9f}').contains(&c)) {
        return s;
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if ('\u{7f}'..='\u{9f}').contains(&c) {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

fn cell_json(v: &Value) -> serde_json::Value {
    match v {
        Value::Null => serde_json::Value::Null,
        Value::Int(i) => (*i).into(),
        Value::Bytes(b) => match std::str::from_utf8(b) {
            Ok(s) => s.into(),
            Err(_) => {
                serde_json::json!({ "hex": hex::encode(b) })
            }
        },
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn affected_line(rs: &ResultSet) -> String {
    format!("OK, {} row{} affected", rs.affected, if rs.affected == 1 { "" } else { "s" })
}

/// The table's cells: header and rows, each cut to CELL_COLUMNS_MAX; and whether any was cut.
fn table_cells(rs: &ResultSet) -> (Vec<String>, Vec<Vec<String>>) {
    // Column names come from the server too: the same rules as values.
    let header: Vec<String> = rs.columns.iter().map(|c| cell_bytes(c.as_bytes())).collect();
    let cells: Vec<Vec<String>> = rs.rows.iter().map(|r| r.iter().map(cell_text).collect()).collect();
    (header, cells)
}

fn column_widths(header: &[String], cells: &[Vec<String>]) -> Vec<usize> {
    let mut w: Vec<usize> = header.iter().map(|c| text_width(c)).collect();
    for r in cells {
        for (w, c) in w.iter_mut().zip(r) {
            *w = (*w).max(text_width(c));
        }
    }
    w
}

/// Whether the table of `rs` would be wider than `columns` or would cut a value: what `\x
/// auto` shows expanded instead.
pub fn table_too_wide(rs: &ResultSet, columns: usize) -> bool {
    if rs.columns.is_empty() {
        return false;
    }
    let (header, cells) = table_cells(rs);
    let width: usize = column_widths(&header, &cells).iter().map(|w| w + 3).sum::<usize>().saturating_sub(1);
    let cut = |v: &Value| matches!(v, Value::Bytes(b) if text_width(&whole_bytes(b)) > CELL_COLUMNS_MAX);
    width > columns
        || rs.rows.iter().flatten().any(cut)
        || rs.columns.iter().any(|c| text_width(&whole_bytes(c.as_bytes())) > CELL_COLUMNS_MAX)
}

pub fn print_table(rs: &ResultSet, out: &mut impl Write) -> std::io::Result<()> {
    if rs.columns.is_empty() {
        return writeln!(out, "{}", affected_line(rs));
    }
    let (header, cells) = table_cells(rs);
    let w = column_widths(&header, &cells);
    // Padded by hand, not with `{v:<w$}`: a format width is at most u16::MAX (wider panics)
    // and counts chars, not terminal columns.
    let line = |out: &mut dyn Write, vals: &[String]| -> std::io::Result<()> {
        let parts: Vec<String> =
            vals.iter().zip(&w).map(|(v, w)| format!(" {v}{} ", " ".repeat(w - text_width(v)))).collect();
        writeln!(out, "{}", parts.join("|").trim_end())
    };
    line(out, &header)?;
    writeln!(out, "{}", w.iter().map(|w| "-".repeat(w + 2)).collect::<Vec<_>>().join("+"))?;
    for r in &cells {
        line(out, r)?;
    }
    writeln!(out, "({} row{})", cells.len(), plural(cells.len()))
}

/// psql's expanded display: a header line per row, then `name | value` per column, values
/// whole (long ones are not cut; unprintable ones are X'..' literals, as in the table).
pub fn print_expanded(rs: &ResultSet, out: &mut impl Write) -> std::io::Result<()> {
    if rs.columns.is_empty() {
        return writeln!(out, "{}", affected_line(rs));
    }
    let names: Vec<String> = rs.columns.iter().map(|c| whole_bytes(c.as_bytes())).collect();
    let name_w = names.iter().map(|n| text_width(n)).max().unwrap_or(0);
    for (i, row) in rs.rows.iter().enumerate() {
        let vals: Vec<String> = row.iter().map(whole_text).collect();
        let val_w = vals.iter().map(|v| text_width(v)).max().unwrap_or(0);
        let title = format!("-[ RECORD {} ]", i + 1);
        let rule = (name_w + 3 + val_w).min(CELL_COLUMNS_MAX).max(title.len() + 1);
        writeln!(out, "{title}{}", "-".repeat(rule - title.len()))?;
        for (n, v) in names.iter().zip(&vals) {
            let pad = " ".repeat(name_w - text_width(n));
            writeln!(out, "{n}{pad} | {v}")?;
        }
    }
    writeln!(out, "({} row{})", rs.rows.len(), plural(rs.rows.len()))
}

pub fn print_json(rs: &ResultSet, out: &mut impl Write) -> std::io::Result<()> {
    if rs.columns.is_empty() {
        return writeln!(out, "{}", serde_json::json!({ "affected": rs.affected }));
    }
    for r in &rs.rows {
        let obj: serde_json::Map<String, serde_json::Value> =
            rs.columns.iter().cloned().zip(r.iter().map(cell_json)).collect();
        writeln!(out, "{}", json_line(&serde_json::Value::Object(obj)))?;
    }
    Ok(())
}

/// One CSV field (RFC 4180, with `\n` line ends): text as is, quoted when it holds a comma, a
/// quote or a line break, and always when empty, so that an empty string ("") is told from
/// NULL (nothing). Bytes that are not UTF-8, or hold control characters other than tab and
/// line breaks, are written as their X'..' literal, as in the table.
fn csv_bytes(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) if !s.chars().any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r')) => {
            if s.is_empty() || s.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", s.replace('"', "\"\""))
            } else {
                s.to_owned()
            }
        }
        _ => velocity::sql::quote_literal(b),
    }
}

fn csv_field(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::Int(i) => i.to_string(),
        Value::Bytes(b) => csv_bytes(b),
    }
}

/// A header line of column names, then a line per row. A write prints the one-column table
/// `affected`.
pub fn print_csv(rs: &ResultSet, out: &mut impl Write) -> std::io::Result<()> {
    if rs.columns.is_empty() {
        return writeln!(out, "affected\n{}", rs.affected);
    }
    let header: Vec<String> = rs.columns.iter().map(|c| csv_bytes(c.as_bytes())).collect();
    writeln!(out, "{}", header.join(","))?;
    for r in &rs.rows {
        writeln!(out, "{}", r.iter().map(csv_field).collect::<Vec<_>>().join(","))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Long values are a short random pattern repeated, so that a case costs about what it
    /// prints; short ones are fully random.
    fn bytes() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            8 => prop::collection::vec(any::<u8>(), 0..300),
            3 => prop::collection::vec(any::<char>(), 0..300)
                .prop_map(|c| c.into_iter().collect::<String>().into_bytes()),
            1 => (prop::collection::vec(any::<u8>(), 1..8), 0usize..200_000)
                .prop_map(|(p, n)| p.iter().cycle().take(n).copied().collect()),
            1 => (any::<char>(), 0usize..50_000).prop_map(|(c, n)| c.to_string().repeat(n).into_bytes()),
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            1 => Just(Value::Null),
            1 => any::<i64>().prop_map(Value::Int),
            6 => bytes().prop_map(Value::Bytes),
        ]
    }

    /// Any result set the decoder can hand over: rows as wide as the columns, no rows without
    /// columns; names up to the u16 length limit.
    fn result_set() -> impl Strategy<Value = ResultSet> {
        let name = prop_oneof![
            6 => prop::collection::vec(any::<char>(), 0..40).prop_map(|c| c.into_iter().collect::<String>()),
            1 => (any::<char>(), 0usize..16_000).prop_map(|(c, n)| c.to_string().repeat(n)),
        ];
        (0usize..12).prop_flat_map(move |n| {
            let rows = if n == 0 { 0..1 } else { 0..30 };
            (
                prop::collection::vec(name.clone(), n),
                prop::collection::vec(prop::collection::vec(value(), n), rows),
                any::<u64>(),
            )
                .prop_map(|(columns, rows, affected)| ResultSet { columns, rows, affected })
        })
    }

    /// What a JSON cell decodes back to: the value's bytes (or int, or NULL), whole.
    fn from_json(j: &serde_json::Value) -> Value {
        match j {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Number(n) => Value::Int(n.as_i64().unwrap()),
            serde_json::Value::String(s) => Value::Bytes(s.clone().into_bytes()),
            serde_json::Value::Object(o) => Value::Bytes(hex::decode(o["hex"].as_str().unwrap()).unwrap()),
            other => panic!("unexpected JSON cell {other}"),
        }
    }

    /// A small RFC 4180 reader: records of fields, and for each field whether it was quoted.
    fn read_csv(text: &str) -> Vec<Vec<(String, bool)>> {
        let mut records = Vec::new();
        let mut rec = Vec::new();
        let mut field = String::new();
        let mut quoted = false;
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '"' if field.is_empty() && !quoted => {
                    quoted = true;
                    loop {
                        match chars.next().expect("closing quote") {
                            '"' if chars.peek() == Some(&'"') => {
                                chars.next();
                                field.push('"');
                            }
                            '"' => break,
                            c => field.push(c),
                        }
                    }
                }
                ',' => rec.push((std::mem::take(&mut field), std::mem::replace(&mut quoted, false))),
                '\n' => {
                    rec.push((std::mem::take(&mut field), std::mem::replace(&mut quoted, false)));
                    records.push(std::mem::take(&mut rec));
                }
                c => {
                    assert!(!quoted, "text after a closing quote");
                    field.push(c)
                }
            }
        }
        assert!(field.is_empty() && rec.is_empty(), "no line end at the end");
        records
    }

    /// How a value reads back from CSV (text, X'..' literal, number or nothing).
    fn csv_expect(v: &Value) -> (String, bool) {
        match v {
            Value::Null => (String::new(), false),
            Value::Int(i) => (i.to_string(), false),
            Value::Bytes(b) => match std::str::from_utf8(b) {
                Ok(s) if !s.chars().any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r')) => {
                    let quoted = s.is_empty() || s.contains([',', '"', '\n', '\r']);
                    (s.to_owned(), quoted)
                }
                _ => (velocity::sql::quote_literal(b), false),
            },
        }
    }

    fn no_terminal_controls(out: &str) -> bool {
        !out.chars().any(|c| c.is_control() && c != '\n')
    }

    proptest! {
        #[test]
        fn printers_take_any_result_set(rs in result_set()) {
            let n = rs.columns.len();
            // Each cell: the whole rendering when it fits, else a prefix of it and the marker.
            for v in rs.rows.iter().flatten() {
                let t = cell_text(v);
                prop_assert!(text_width(&t) <= CELL_COLUMNS_MAX, "{}", t);
                if let Value::Bytes(b) = v {
                    let whole = whole_bytes(b);
                    if text_width(&whole) <= CELL_COLUMNS_MAX {
                        prop_assert_eq!(&t, &whole);
                    } else {
                        let kept = t.strip_suffix(&format!("… ({} bytes)", b.len()));
                        prop_assert!(kept.is_some_and(|k| whole.starts_with(k)), "{}", t);
                    }
                }
            }

            let mut out = Vec::new();
            print_table(&rs, &mut out).unwrap();
            // Printable text only: nothing the terminal would take as a command.
            let out = String::from_utf8(out).unwrap();
            prop_assert!(no_terminal_controls(&out), "{:?}", out);
            let lines: Vec<&str> = out.lines().collect();
            prop_assert_eq!(lines.len(), if n == 0 { 1 } else { rs.rows.len() + 3 });
            let bound = (n * (CELL_COLUMNS_MAX + 3)).max(40);
            for l in &lines {
                prop_assert!(text_width(l) <= bound, "{} columns > {}", text_width(l), bound);
            }

            // Expanded: every value whole, one line each, and still nothing unprintable.
            let mut out = Vec::new();
            print_expanded(&rs, &mut out).unwrap();
            let out = String::from_utf8(out).unwrap();
            prop_assert!(no_terminal_controls(&out), "{:?}", out);
            let lines: Vec<&str> = out.lines().collect();
            if n == 0 {
                prop_assert_eq!(lines.len(), 1);
            } else {
                prop_assert_eq!(lines.len(), rs.rows.len() * (n + 1) + 1);
                for (i, row) in rs.rows.iter().enumerate() {
                    let record = &lines[i * (n + 1)..(i + 1) * (n + 1)];
                    let title = format!("-[ RECORD {} ]", i + 1);
                    prop_assert!(record[0].starts_with(&title), "{}", record[0]);
                    for (line, v) in record[1..].iter().zip(row) {
                        let whole = whole_text(v);
                        prop_assert!(line.ends_with(&format!(" | {whole}")), "{} does not end with {}", line, whole);
                    }
                }
            }
            prop_assert_eq!(table_too_wide(&rs, usize::MAX), rs.rows.iter().flatten().any(|v| text_width(&whole_text(v)) > CELL_COLUMNS_MAX) || rs.columns.iter().any(|c| text_width(&whole_bytes(c.as_bytes())) > CELL_COLUMNS_MAX));

            let mut out = Vec::new();
            print_json(&rs, &mut out).unwrap();
            let lines: Vec<serde_json::Value> =
                String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
            if n == 0 {
                prop_assert_eq!(&lines, &vec![serde_json::json!({ "affected": rs.affected })]);
            } else {
                prop_assert_eq!(lines.len(), rs.rows.len());
                for (row, j) in rs.rows.iter().zip(&lines) {
                    // A repeated column name keeps its last value.
                    for (i, (c, v)) in rs.columns.iter().zip(row).enumerate() {
                        if !rs.columns[i + 1..].contains(c) {
                            prop_assert_eq!(&from_json(&j[c.as_str()]), v);
                        }
                    }
                }
            }

            // CSV reads back field for field: a header, then the rows.
            let mut out = Vec::new();
            print_csv(&rs, &mut out).unwrap();
            let out = String::from_utf8(out).unwrap();
            let records = read_csv(&out);
            if n == 0 {
                prop_assert_eq!(records, vec![vec![("affected".to_owned(), false)], vec![(rs.affected.to_string(), false)]]);
            } else {
                prop_assert_eq!(records.len(), rs.rows.len() + 1);
                let header: Vec<(String, bool)> = rs.columns.iter().map(|c| csv_expect(&Value::Bytes(c.clone().into_bytes()))).collect();
                prop_assert_eq!(&records[0], &header);
                for (rec, row) in records[1..].iter().zip(&rs.rows) {
                    let want: Vec<(String, bool)> = row.iter().map(csv_expect).collect();
                    prop_assert_eq!(rec, &want);
                }
            }
        }
    }

    #[test]
    fn csv_tells_null_from_empty_and_quotes_what_needs_it() {
        let rs = ResultSet {
            columns: vec!["key".into(), "value".into(), "ttl".into()],
            rows: vec![
                vec![Value::Bytes(b"a".to_vec()), Value::Bytes(Vec::new()), Value::Null],
                vec![
                    Value::Bytes(b"b,c".to_vec()),
                    Value::Bytes(b"say \"hi\"\nbye".to_vec()),
                    Value::Int(60),
                ],
                vec![Value::Bytes(b"bin".to_vec()), Value::Bytes(vec![0x1b, b'[', 0xff]), Value::Int(-1)],
            ],
            affected: 0,
        };
        let mut out = Vec::new();
        print_csv(&rs, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "key,value,ttl\na,\"\",\n\"b,c\",\"say \"\"hi\"\"\nbye\",60\nbin,X'1b5bff',-1\n"
        );
    }

    #[test]
    fn expanded_records_look_like_psql() {
        let rs = ResultSet {
            columns: vec!["key".into(), "value".into()],
            rows: vec![vec![Value::Bytes(b"user:1".to_vec()), Value::Bytes(b"alice".to_vec())]],
            affected: 0,
        };
        let mut out = Vec::new();
        print_expanded(&rs, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "-[ RECORD 1 ]-\nkey   | user:1\nvalue | alice\n(1 row)\n"
        );
        assert_eq!(safe_text("a\x1b[2Jb\n\tc\0"), "a\\u{1b}[2Jb\n\tc\\u{0}");
        let j = json_line(&serde_json::json!({ "v": "a\u{9b}2J\u{7f}\u{1b}é" }));
        assert_eq!(j, r#"{"v":"a\u009b2J\u007f\u001bé"}"#);
        assert_eq!(serde_json::from_str::<serde_json::Value>(&j).unwrap()["v"], "a\u{9b}2J\u{7f}\u{1b}é");
    }
}
