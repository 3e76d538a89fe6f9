//! The Rust client's runner for the cross-client check (tests/cross/run.py).
//!
//!     velocity-cross write SPEC PREFIX   insert each SPEC line's key (PREFIX + key) and value
//!     velocity-cross read                print every x:% key in the canonical form
//!
//! The server and login come from CROSS_HOST, CROSS_PORT, CROSS_USER, VELOCITY_PASSWORD,
//! CROSS_TLS (1/0), CROSS_KNOWN_HOSTS, CROSS_ACCEPT_NEW (1/0); the TTL range a reader accepts
//! from CROSS_TTL_MIN and CROSS_TTL_MAX. The Rust client has no `?` binding: its statements are
//! built by `velocity::client::build` (writes) and `velocity::sql::quote_literal` (reads), the
//! quoting every Rust program uses. SPEC's text entries are checked to be UTF-8 and passed as the
//! bytes of a `&str`, bytes entries as `&[u8]`.
//!
//! Built by scripts/test-cross.sh as the one binary of a package whose manifest it writes under
//! target/cross/rust (a path dependency on this repository's crate), so that the crate's own
//! Cargo.toml stays as it is.

use std::io::Write;
use std::process::ExitCode;
use velocity::client::build;
use velocity::client::trust::{NewHost, Trust};
use velocity::client::{Client, ConnectOptions, Credentials};
use velocity::protocol::{ResultSet, Value};
use velocity::sql::quote_literal as q;

type Res<T> = Result<T, String>;

fn env(name: &str) -> Res<String> {
    std::env::var(name).map_err(|_| format!("{name} is not set"))
}

fn connect() -> Res<Client> {
    let port: u16 = env("CROSS_PORT")?.parse().map_err(|e| format!("CROSS_PORT: {e}"))?;
    let mut opts = ConnectOptions::new(env("CROSS_HOST")?, port);
    opts.tls = env("CROSS_TLS")? == "1";
    opts.trust = Trust {
        known_hosts: Some(env("CROSS_KNOWN_HOSTS")?.into()),
        new_host: if env("CROSS_ACCEPT_NEW")? == "1" { NewHost::Accept } else { NewHost::Refuse },
        pinned: None,
    };
    let creds = Credentials::Password { user: env("CROSS_USER")?, password: env("VELOCITY_PASSWORD")? };
    Client::connect(&opts, &creds).map_err(|e| format!("connect: {e}"))
}

fn unhex(h: &str) -> Res<Vec<u8>> {
    if h.len() % 2 != 0 {
        return Err(format!("odd hex {h}"));
    }
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&h[i..i + 2], 16).map_err(|e| format!("hex {h}: {e}")))
        .collect()
}

fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

/// A SPEC entry: text must be UTF-8 (a `String`'s bytes), bytes are anything.
fn decode(kind: &str, h: &str) -> Res<Vec<u8>> {
    let b = unhex(h)?;
    if kind == "text" {
        let s = String::from_utf8(b).map_err(|e| format!("text entry {h}: {e}"))?;
        return Ok(s.into_bytes());
    }
    Ok(b)
}

fn execute(db: &mut Client, sql: &str) -> Res<ResultSet> {
    db.execute(sql).map_err(|e| format!("{e} (in a statement of {} bytes)", sql.len()))
}

fn write(spec: &str, prefix: &str) -> Res<()> {
    let text = std::fs::read_to_string(spec).map_err(|e| format!("{spec}: {e}"))?;
    let mut db = connect()?;
    for line in text.lines().filter(|l| !l.is_empty()) {
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() != 5 {
            return Err(format!("bad spec line {line}"));
        }
        let mut key = prefix.as_bytes().to_vec();
        key.extend(decode(f[0], f[1])?);
        let value = decode(f[2], f[3])?;
        let sql = if f[4] == "-" {
            build::set(&key, &value)
        } else {
            build::set_ttl(&key, &value, f[4].parse().map_err(|e| format!("ttl {}: {e}", f[4]))?)
        };
        let r = execute(&mut db, &sql)?;
        if r.affected != 1 {
            return Err(format!("INSERT of {} affected {} rows", hex(&key), r.affected));
        }
    }
    db.close().map_err(|e| e.to_string())
}

fn token(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Int(i) => format!("i:{i}"),
        Value::Bytes(b) => format!("b:{}", hex(b)),
    }
}

fn read() -> Res<()> {
    let lo: i64 = env("CROSS_TTL_MIN")?.parse().map_err(|e| format!("CROSS_TTL_MIN: {e}"))?;
    let hi: i64 = env("CROSS_TTL_MAX")?.parse().map_err(|e| format!("CROSS_TTL_MAX: {e}"))?;
    let ttl_token = |v: &Value| match v {
        Value::Null => "-".to_string(),
        Value::Int(i) if lo <= *i && *i <= hi => "ttl".to_string(),
        Value::Int(i) => format!("ttl!{i}"),
        other => token(other),
    };
    let line = |r: &[Value]| match r {
        [k, v, t] => format!("{} {} {}", token(k), token(v), ttl_token(t)),
        _ => format!("?{} columns", r.len()),
    };
    let key_of = |r: &Vec<Value>| match r.first() {
        Some(Value::Bytes(b)) => b.clone(),
        _ => Vec::new(),
    };
    let pattern = q(b"x:%");
    let mut db = connect()?;
    let mut out = String::new();

    let count = execute(&mut db, &format!("SELECT COUNT(*) FROM kv WHERE key LIKE {pattern}"))?;
    match count.rows.as_slice() {
        [row] if row.len() == 1 => match &row[0] {
            Value::Int(n) => out.push_str(&format!("count {n}\n")),
            other => out.push_str(&format!("count {}\n", token(other))),
        },
        _ => return Err(format!("COUNT(*) gave {} rows", count.rows.len())),
    }

    let mut scan =
        execute(&mut db, &format!("SELECT key, value, ttl FROM kv WHERE key LIKE {pattern}"))?.rows;
    scan.sort_by_key(key_of);
    let keys: Vec<Vec<u8>> = scan.iter().map(key_of).collect();
    for r in &scan {
        out.push_str(&format!("scan {}\n", line(r)));
    }
    for k in &keys {
        let r = execute(&mut db, &format!("SELECT key, value, ttl FROM kv WHERE key = {}", q(k)))
            .map_err(|e| format!("point read of {}: {e}", hex(k)))?;
        if r.rows.len() != 1 {
            return Err(format!("point read of {}: {} rows", hex(k), r.rows.len()));
        }
        out.push_str(&format!("point {}\n", line(&r.rows[0])));
    }
    let list: Vec<String> = keys.iter().map(|k| q(k)).collect();
    let mut rows =
        execute(&mut db, &format!("SELECT key, value, ttl FROM kv WHERE key IN ({})", list.join(", ")))?.rows;
    rows.sort_by_key(key_of);
    for r in &rows {
        out.push_str(&format!("in {}\n", line(r)));
    }
    db.close().map_err(|e| e.to_string())?;
    std::io::stdout().lock().write_all(out.as_bytes()).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["write", spec, prefix] => write(spec, prefix),
        ["read"] => read(),
        _ => Err("usage: velocity-cross write SPEC PREFIX | velocity-cross read".into()),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("velocity-cross: {e}");
            ExitCode::FAILURE
        }
    }
}
