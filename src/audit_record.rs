//! The audit log's record: one per login attempt and per request, in a compact binary form that
//! a core writes with a few copies — no number or address formatting, no allocation on the
//! request path — and that `velocityd audit` renders as the JSON line people and tools read.
//! No I/O: `encode` appends to a buffer, `render_json` reads any bytes (a damaged record is an
//! error, never a panic or an unbounded allocation).
//!
//! A record (tag `0xA2`): ts_ms · shard · conn as LEB128 varints · peer (0 none; 4 + 4 address
//! bytes + port u16 LE; 6 + 16 + port) · user (u8 length, bytes) · event and kind as words ·
//! target (u8 form, varint length, bytes) · rows · code · latency_us as varints. A word is one
//! byte `0x80 | i` for entry i of WORDS (the event and statement names every request record
//! carries), else a length below 0x80 and that many bytes. A target is kept as the statement's
//! key where it has one (the first TARGET_KEY_BYTES_MAX bytes; the form's high bit says it was
//! cut) and as text otherwise. About 45 bytes and the key for a point read, half the fixed-width
//! form (tag `0xA1`: u64 and u16 fields, names as text) that earlier builds wrote and that is
//! still read: the bytes are what the writer thread's time goes to (the kernel's page-cache
//! write), and what decides how many seconds of requests the kept files hold.

use crate::limits::{TARGET_KEY_BYTES_MAX, USERNAME_BYTES_MAX};
use crate::protocol::truncate_utf8;
use crate::protocol::ErrorCode;
use crate::sql::quote_literal;
use integer_encoding::VarInt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The first byte of every record this build writes: never `{`, which begins a block of JSON
/// lines (the form older releases wrote).
pub const RECORD_TAG: u8 = 0xA2;
/// The fixed-width record of earlier builds, still read.
const FIXED_TAG: u8 = 0xA1;

/// Whether `b` begins a binary record (of either form).
pub fn is_record_tag(b: u8) -> bool {
    b == RECORD_TAG || b == FIXED_TAG
}

/// The words a record names by their index: append only (records on disk refer to them).
const WORDS: [&str; 14] = [
    "command",
    "login",
    "stats",
    "select_point",
    "select_multi",
    "select_range",
    "count",
    "insert",
    "update",
    "delete",
    "show",
    "password",
    "api_key",
    "",
];
const WORD_CODE: u8 = 0x80;

const FORM_TEXT: u8 = 1;
const FORM_KEY: u8 = 2;
const FORM_KEYS: u8 = 3;
const FORM_BUMP: u8 = 4;
const FORM_CUT: u8 = 0x80;

/// What a statement touched, as its audit record keeps it; rendered as text only when read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target<'a> {
    /// A description made already (a parsed statement's, by `describe`).
    Text(&'a str),
    /// A point read's key: `key = 'k'`.
    Key(&'a [u8]),
    /// A one-row INSERT's: `keys 'k'`.
    Keys(&'a [u8]),
    /// A counter bump's (an INSERT … DO UPDATE SET value = value + n): `keys 'k' on conflict update`.
    Bump(&'a [u8]),
}

impl Target<'_> {
    /// The text the audit and slow logs show.
    pub fn text(&self) -> String {
        render_target(self.form(), self.bytes(), false)
    }

    fn form(&self) -> u8 {
        match self {
            Target::Text(_) => FORM_TEXT,
            Target::Key(_) => FORM_KEY,
            Target::Keys(_) => FORM_KEYS,
            Target::Bump(_) => FORM_BUMP,
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Target::Text(t) => t.as_bytes(),
            Target::Key(k) | Target::Keys(k) | Target::Bump(k) => k,
        }
    }
}

/// A key as the audit log shows it: an SQL literal of at most TARGET_KEY_BYTES_MAX of its bytes.
pub fn lit(k: &[u8]) -> String {
    lit_cut(&k[..k.len().min(TARGET_KEY_BYTES_MAX)], k.len() > TARGET_KEY_BYTES_MAX)
}

fn lit_cut(shown: &[u8], cut: bool) -> String {
    let mut q = quote_literal(shown);
    if cut {
        q.push('…');
    }
    q
}

fn render_target(form: u8, bytes: &[u8], cut: bool) -> String {
    let key = || {
        lit_cut(&bytes[..bytes.len().min(TARGET_KEY_BYTES_MAX)], cut || bytes.len() > TARGET_KEY_BYTES_MAX)
    };
    match form {
        FORM_KEY => format!("key = {}", key()),
        FORM_KEYS => format!("keys {}", key()),
        FORM_BUMP => format!("keys {} on conflict update", key()),
        _ => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// One audit record, as the core writes it.
pub struct Record<'a> {
    pub ts_ms: u64,
    pub shard: u16,
    pub conn: u64,
    pub peer: Option<SocketAddr>,
    pub user: &'a str,
    pub event: &'a str,
    pub kind: &'a str,
    pub target: Option<Target<'a>>,
    pub rows: u64,
    pub code: ErrorCode,
    pub latency_us: u64,
}

fn put_short(out: &mut Vec<u8>, s: &str, max: usize) {
    let s = truncate_utf8(s, max.min(u8::MAX as usize));
    out.push(s.len() as u8);
    out.extend_from_slice(s.as_bytes());
}

fn put_var(out: &mut Vec<u8>, v: u64) {
    let mut b = [0u8; 10];
    let n = v.encode_var(&mut b);
    out.extend_from_slice(&b[..n]);
}

fn put_word(out: &mut Vec<u8>, s: &str) {
    match WORDS.iter().position(|w| *w == s) {
        Some(i) => out.push(WORD_CODE | i as u8),
        None => put_short(out, s, WORD_CODE as usize - 1),
    }
}

/// Append `r` to `out`.
pub fn encode(out: &mut Vec<u8>, r: &Record<'_>) {
    out.push(RECORD_TAG);
    put_var(out, r.ts_ms);
    put_var(out, r.shard.into());
    put_var(out, r.conn);
    match r.peer {
        None => out.push(0),
        Some(SocketAddr::V4(a)) => {
            out.push(4);
            out.extend_from_slice(&a.ip().octets());
            out.extend_from_slice(&a.port().to_le_bytes());
        }
        Some(SocketAddr::V6(a)) => {
            out.push(6);
            out.extend_from_slice(&a.ip().octets());
            out.extend_from_slice(&a.port().to_le_bytes());
        }
    }
    // A login attempt's user is the client's text: bounded as names are.
    put_short(out, r.user, USERNAME_BYTES_MAX);
    put_word(out, r.event);
    put_word(out, r.kind);
    match r.target {
        None => out.extend_from_slice(&[0, 0]),
        Some(Target::Text(t)) => {
            let t = truncate_utf8(t, u16::MAX as usize);
            out.push(FORM_TEXT);
            put_var(out, t.len() as u64);
            out.extend_from_slice(t.as_bytes());
        }
        Some(t) => {
            let k = t.bytes();
            let shown = &k[..k.len().min(TARGET_KEY_BYTES_MAX)];
            out.push(t.form() | if shown.len() < k.len() { FORM_CUT } else { 0 });
            put_var(out, shown.len() as u64);
            out.extend_from_slice(shown);
        }
    }
    put_var(out, r.rows);
    put_var(out, r.code as u64);
    put_var(out, r.latency_us);
}

/// Reads a record's fields in order; every read checks what is left.
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.buf.len());
        let Some(end) = end else { return Err(format!("record cut short at byte {}", self.at)) };
        let b = &self.buf[self.at..end];
        self.at = end;
        Ok(b)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    fn short(&mut self) -> Result<&'a [u8], String> {
        let n = self.u8()? as usize;
        self.take(n)
    }

    fn var(&mut self) -> Result<u64, String> {
        let Some((v, n)) = u64::decode_var(&self.buf[self.at..]) else {
            return Err(format!("bad or cut varint at byte {}", self.at));
        };
        self.at += n;
        Ok(v)
    }

    fn var_u16(&mut self) -> Result<u16, String> {
        let at = self.at;
        u16::try_from(self.var()?).map_err(|_| format!("value out of range at byte {at}"))
    }

    fn word(&mut self) -> Result<&'a [u8], String> {
        let b = self.u8()?;
        if b & WORD_CODE == 0 {
            return self.take(b as usize);
        }
        match WORDS.get((b & !WORD_CODE) as usize) {
            Some(w) => Ok(w.as_bytes()),
            None => Err(format!("unknown word {b:#04x}")),
        }
    }
}

fn put_json_str(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(out, s).expect("a Vec takes any write");
}

/// A record as read back: its fields borrowed from the buffer.
struct Fields<'a> {
    ts_ms: u64,
    shard: u16,
    conn: u64,
    peer: Option<SocketAddr>,
    user: &'a [u8],
    event: &'a [u8],
    kind: &'a [u8],
    /// Form (with its cut bit) and bytes; form 0: none.
    target: (u8, &'a [u8]),
    rows: u64,
    code: u16,
    latency_us: u64,
}

/// Read the record at the start of `buf`, and the bytes it takes. The one reader of the format.
fn decode(buf: &[u8]) -> Result<(Fields<'_>, usize), String> {
    let mut r = Reader { buf, at: 0 };
    let fixed = match r.u8()? {
        RECORD_TAG => false,
        FIXED_TAG => true,
        _ => return Err("not an audit record (bad tag)".into()),
    };
    let (ts_ms, shard, conn) =
        if fixed { (r.u64()?, r.u16()?, r.u64()?) } else { (r.var()?, r.var_u16()?, r.var()?) };
    let peer = match r.u8()? {
        0 => None,
        4 => {
            let ip: [u8; 4] = r.take(4)?.try_into().expect("4 bytes");
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), r.u16()?))
        }
        6 => {
            let ip: [u8; 16] = r.take(16)?.try_into().expect("16 bytes");
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), r.u16()?))
        }
        f => return Err(format!("unknown peer address family {f}")),
    };
    let user = r.short()?;
    let (event, kind) = if fixed { (r.short()?, r.short()?) } else { (r.word()?, r.word()?) };
    let form = r.u8()?;
    let n = if fixed { r.u16()? as usize } else { r.var()?.min(u32::MAX.into()) as usize };
    let target = match form & !FORM_CUT {
        0 if n == 0 && form == 0 => (0, &[][..]),
        FORM_TEXT | FORM_KEY | FORM_KEYS | FORM_BUMP => (form, r.take(n)?),
        f => return Err(format!("unknown target form {f}")),
    };
    let (rows, code, latency_us) =
        if fixed { (r.u64()?, r.u16()?, r.u64()?) } else { (r.var()?, r.var_u16()?, r.var()?) };
    Ok((Fields { ts_ms, shard, conn, peer, user, event, kind, target, rows, code, latency_us }, r.at))
}

/// The length of the record at the start of `buf`: the writer cuts a buffer of records between
/// them to rotate files.
pub fn record_len(buf: &[u8]) -> Result<usize, String> {
    decode(buf).map(|(_, n)| n)
}

/// Render the record at the start of `buf` as one JSON line (with its newline) onto `out`; the
/// bytes it took. An error for anything that is not a whole record, with `out` unchanged.
pub fn render_json(buf: &[u8], out: &mut Vec<u8>) -> Result<usize, String> {
    let (f, len) = decode(buf)?;
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let target = match f.target {
        (0, _) => String::new(),
        (form, bytes) => render_target(form & !FORM_CUT, bytes, form & FORM_CUT != 0),
    };
    let code =
        ErrorCode::from_u16(f.code).map_or_else(|| format!("0x{:04X}", f.code), |c| c.name().to_owned());
    let mut num = itoa::Buffer::new();
    let put = |o: &mut Vec<u8>, s: &str| o.extend_from_slice(s.as_bytes());
    put(out, "{\"ts_ms\":");
    put(out, num.format(f.ts_ms));
    put(out, ",\"shard\":");
    put(out, num.format(f.shard));
    put(out, ",\"conn\":");
    put(out, num.format(f.conn));
    put(out, ",\"peer\":");
    put_json_str(out, &f.peer.map_or(String::new(), |p| p.to_string()));
    put(out, ",\"user\":");
    put_json_str(out, &text(f.user));
    put(out, ",\"event\":");
    put_json_str(out, &text(f.event));
    put(out, ",\"kind\":");
    put_json_str(out, &text(f.kind));
    put(out, ",\"target\":");
    put_json_str(out, &target);
    put(out, ",\"rows\":");
    put(out, num.format(f.rows));
    put(out, ",\"code\":");
    put_json_str(out, &code);
    put(out, ",\"latency_us\":");
    put(out, num.format(f.latency_us));
    put(out, "}\n");
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(r: &Record<'_>) -> serde_json::Value {
        let mut b = Vec::new();
        encode(&mut b, r);
        let mut out = Vec::new();
        assert_eq!(render_json(&b, &mut out).unwrap(), b.len());
        assert_eq!(out.last(), Some(&b'\n'));
        serde_json::from_slice(&out).unwrap()
    }

    fn record<'a>(peer: Option<SocketAddr>, target: Option<Target<'a>>) -> Record<'a> {
        Record {
            ts_ms: 1_764_000_000_123,
            shard: 3,
            conn: 42,
            peer,
            user: "alice",
            event: "command",
            kind: "insert",
            target,
            rows: 7,
            code: ErrorCode::KeyNotFound,
            latency_us: 99,
        }
    }

    #[test]
    fn a_record_renders_as_the_json_line_it_stands_for() {
        let v = json(&record(Some("10.0.0.1:5000".parse().unwrap()), Some(Target::Keys(b"it's"))));
        let want = serde_json::json!({
            "ts_ms": 1_764_000_000_123u64, "shard": 3, "conn": 42, "peer": "10.0.0.1:5000",
            "user": "alice", "event": "command", "kind": "insert", "target": "keys 'it''s'",
            "rows": 7, "code": "KEY_NOT_FOUND", "latency_us": 99
        });
        assert_eq!(v, want);
        let v = json(&record(Some("[::1]:7".parse().unwrap()), None));
        assert_eq!((v["peer"].as_str(), v["target"].as_str()), (Some("[::1]:7"), Some("")));
        assert_eq!(json(&record(None, None))["peer"], "");
    }

    #[test]
    fn targets_read_as_the_slow_log_shows_them() {
        let long = vec![b'k'; 300];
        for t in [
            Target::Key(b"user:1"),
            Target::Keys(b"\x00\xff"),
            Target::Bump(b"hits"),
            Target::Key(&long),
            Target::Text("key in ['a', 'b']"),
        ] {
            assert_eq!(json(&record(None, Some(t)))["target"], t.text(), "{t:?}");
        }
        assert_eq!(Target::Key(&long).text(), format!("key = '{}'…", "k".repeat(128)));
        assert_eq!(Target::Bump(b"h").text(), "keys 'h' on conflict update");
    }

    #[test]
    fn any_cut_or_damaged_record_is_an_error_not_a_panic() {
        let mut b = Vec::new();
        encode(&mut b, &record(Some("10.0.0.1:5000".parse().unwrap()), Some(Target::Text("all keys"))));
        for n in 0..b.len() {
            let mut out = Vec::new();
            assert!(render_json(&b[..n], &mut out).is_err(), "cut at {n}");
        }
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        for _ in 0..20_000 {
            let mut d = b.clone();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            d[(seed as usize) % b.len()] = (seed >> 32) as u8;
            let _ = render_json(&d, &mut Vec::new());
        }
    }

    /// The fixed-width form of earlier builds, byte by byte as they wrote it.
    fn fixed_form(r: &Record<'_>, key: &[u8]) -> Vec<u8> {
        let mut b = vec![FIXED_TAG];
        b.extend_from_slice(&r.ts_ms.to_le_bytes());
        b.extend_from_slice(&r.shard.to_le_bytes());
        b.extend_from_slice(&r.conn.to_le_bytes());
        b.extend_from_slice(&[4, 10, 0, 0, 1]);
        b.extend_from_slice(&5000u16.to_le_bytes());
        for f in [r.user, r.event, r.kind] {
            b.push(f.len() as u8);
            b.extend_from_slice(f.as_bytes());
        }
        b.push(FORM_KEYS);
        b.extend_from_slice(&(key.len() as u16).to_le_bytes());
        b.extend_from_slice(key);
        b.extend_from_slice(&r.rows.to_le_bytes());
        b.extend_from_slice(&(r.code as u16).to_le_bytes());
        b.extend_from_slice(&r.latency_us.to_le_bytes());
        b
    }

    #[test]
    fn records_of_earlier_builds_read_as_they_did() {
        let r = record(Some("10.0.0.1:5000".parse().unwrap()), Some(Target::Keys(b"it's")));
        let old = fixed_form(&r, b"it's");
        let mut out = Vec::new();
        assert_eq!(render_json(&old, &mut out).unwrap(), old.len());
        assert_eq!(serde_json::from_slice::<serde_json::Value>(&out).unwrap(), json(&r));
        assert_eq!(record_len(&old), Ok(old.len()));
    }

    /// A point read's record is about half the fixed form; names outside WORDS are kept as text.
    #[test]
    fn a_point_read_record_is_compact_and_any_name_still_reads() {
        let key = b"key:000000012345";
        let mut r = record(Some("127.0.0.1:40000".parse().unwrap()), Some(Target::Key(key)));
        (r.user, r.event, r.kind, r.rows, r.code, r.latency_us) =
            ("bench", "command", "select_point", 1, ErrorCode::Success, 310);
        let mut b = Vec::new();
        encode(&mut b, &r);
        assert!(b.len() <= 30 + key.len(), "{} bytes", b.len());
        assert!(b.len() * 2 <= fixed_form(&r, key).len() + 8, "{} bytes", b.len());
        let name = "k".repeat(200);
        (r.event, r.kind) = ("a_name_of_tomorrow", &name);
        let v = json(&r);
        assert_eq!(
            (v["event"].as_str(), v["kind"].as_str().map(str::len)),
            (Some("a_name_of_tomorrow"), Some(127))
        );
        for w in WORDS {
            r.kind = w;
            assert_eq!(json(&r)["kind"], w);
        }
    }

    #[test]
    fn long_fields_are_cut_on_character_boundaries() {
        let user = "é".repeat(100);
        let mut r = record(None, None);
        r.user = &user;
        let v = json(&r);
        assert_eq!(v["user"].as_str().unwrap(), "é".repeat(USERNAME_BYTES_MAX / 2));
    }
}
