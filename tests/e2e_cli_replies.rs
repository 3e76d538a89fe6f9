//! velocity-cli against a server that lies: a fake one on loopback (plaintext) completes the
//! handshake, then answers the statement with a broken frame, a malformed result set, an
//! unexpected message, control sequences in its text, or random bytes. Whatever it sends, the
//! CLI reports an error or prints the result, exits 0 or 1, never panics, and never passes a
//! control character to the terminal.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output};
use velocity::protocol::{begin_frame, decode_frame, encode_frame, end_frame, Decoded, Message, ServerInfo};

/// What the fake server gets wrong, and where.
#[derive(Clone)]
enum Lie {
    /// Its SERVER_INFO frame (instead of a proper one).
    Info(Vec<u8>),
    /// Its reply to the login.
    Login(Vec<u8>),
    /// Its reply to the first statement.
    Reply(Vec<u8>),
}

fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(&mut out, kind, payload);
    out
}

fn message(m: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    m.encode(&mut out);
    out
}

fn info(server: &str) -> Vec<u8> {
    message(&Message::ServerInfo(ServerInfo {
        version: 1,
        server: server.into(),
        fingerprint: [7; 32],
        auth_salt: [1; 16],
        // The cheapest Argon2id: each case's login costs next to nothing.
        argon2_m_kib: 8,
        argon2_t: 1,
        argon2_p: 1,
        max_payload: 1 << 20,
        shards: 1,
        flags: 2,
    }))
}

/// Read one frame from `s` (into `buf`), or None at the end of the stream.
fn read_frame(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<u8> {
    loop {
        if let Ok(Decoded::Frame(f)) = decode_frame(buf, 1 << 20) {
            let (kind, used) = (f.kind, f.consumed);
            buf.drain(..used);
            return Some(kind);
        }
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Serve one connection telling `lie`; then close, so that a CLI waiting for more sees the end.
fn serve(listener: &TcpListener, lie: Lie) {
    let Ok((mut s, _)) = listener.accept() else { return };
    let mut buf = Vec::new();
    let send = |s: &mut TcpStream, b: &[u8]| {
        let _ = s.write_all(b);
    };
    if read_frame(&mut s, &mut buf).is_none() {
        return;
    }
    match &lie {
        Lie::Info(b) => send(&mut s, b),
        _ => send(&mut s, &info("fake")),
    }
    // The rest of the handshake, as long as the CLI goes on (after a bad SERVER_INFO it leaves).
    if read_frame(&mut s, &mut buf).is_some() {
        match &lie {
            Lie::Login(b) => send(&mut s, b),
            _ => send(&mut s, &message(&Message::AuthResponse { status: 0, message: String::new() })),
        }
        if let (Lie::Reply(b), Some(_)) = (&lie, read_frame(&mut s, &mut buf)) {
            send(&mut s, b);
        }
    }
    let _ = s.shutdown(std::net::Shutdown::Write);
    // Until the CLI closes: closing with its bytes unread would reset the connection.
    let mut sink = [0u8; 4096];
    while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
}

fn run(lie: Lie, args: &[&str], known_hosts: &std::path::Path) -> Output {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || serve(&listener, lie));
    let out = Command::new(bin("velocity-cli"))
        .args(["--plaintext", "--accept-new-host", "-h", "127.0.0.1", "-p", &port.to_string(), "-U", "alice"])
        .arg("--known-hosts")
        .arg(known_hosts)
        .args(args)
        .env("VELOCITY_PASSWORD", "pw")
        .env_remove("VELOCITY_API_KEY")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    server.join().unwrap();
    out
}

/// Exited 0 or 1 by itself, said nothing of a panic, printed nothing a terminal would obey.
fn check(out: &Output, what: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(matches!(out.status.code(), Some(0 | 1)), "{what}: status {:?}: {err}", out.status);
    assert!(!err.contains("panicked"), "{what}: {err}");
    for (name, b) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        assert!(
            !b.iter().any(|&c| c < 0x20 && c != b'\n' && c != b'\t'),
            "{what}: a control byte on {name}: {:?}",
            String::from_utf8_lossy(b)
        );
        assert!(!b.contains(&0x7f) && !String::from_utf8_lossy(b).contains('\u{9b}'), "{what}: {name}");
    }
}

/// A RESPONSE payload: `columns`, `rows` of values as (tag, bytes), `affected`.
fn result_payload(columns: &[&[u8]], rows: &[&[(u8, &[u8])]], affected: u64) -> Vec<u8> {
    let mut p = (columns.len() as u16).to_le_bytes().to_vec();
    for c in columns {
        p.extend_from_slice(&(c.len() as u16).to_le_bytes());
        p.extend_from_slice(c);
    }
    p.extend_from_slice(&(rows.len() as u32).to_le_bytes());
    for r in rows {
        for (tag, b) in r.iter() {
            p.push(*tag);
            match tag {
                1 => {
                    p.extend_from_slice(&(b.len() as u32).to_le_bytes());
                    p.extend_from_slice(b);
                }
                _ => p.extend_from_slice(b),
            }
        }
    }
    p.extend_from_slice(&affected.to_le_bytes());
    p
}

#[test]
fn hostile_server_replies_never_panic_the_cli() {
    let dir = temp_dir("replies");
    let kh = dir.join("known_hosts");
    const RESPONSE: u8 = 0x11;
    // OSC (set the window title), BEL, CSI (clear the screen), and CSI as one C1 character.
    let esc: &[u8] = "\x1b]0;owned\x07\x1b[2J\u{9b}".as_bytes();
    let good = result_payload(&[b"key", b"value"], &[&[(1, b"k"), (1, b"v")]], 0);
    let mut bad_crc = frame(RESPONSE, &good);
    let n = bad_crc.len();
    bad_crc[n - 1] ^= 0xff;
    let mut huge_len = frame(RESPONSE, &good);
    huge_len[6..10].copy_from_slice(&u32::MAX.to_le_bytes());
    let mut wrong_version = frame(RESPONSE, &good);
    wrong_version[4] = 9;
    let cases: Vec<(&str, Lie)> = vec![
        ("a proper reply, to compare", Lie::Reply(frame(RESPONSE, &good))),
        ("bad checksum", Lie::Reply(bad_crc)),
        ("length past the limit", Lie::Reply(huge_len)),
        ("another protocol version", Lie::Reply(wrong_version)),
        ("not a frame at all", Lie::Reply(b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec())),
        ("half a frame, then the end", Lie::Reply(frame(RESPONSE, &good)[..12].to_vec())),
        ("nothing, then the end", Lie::Reply(Vec::new())),
        ("unknown message type", Lie::Reply(frame(0x7e, b"??"))),
        ("a client's message type", Lie::Reply(frame(0x10, b"SELECT 1"))),
        ("PONG for a statement", Lie::Reply(frame(0x21, b"hi"))),
        ("SERVER_INFO again", Lie::Reply(info("again"))),
        ("truncated result set", Lie::Reply(frame(RESPONSE, &good[..good.len() - 5]))),
        (
            "more rows claimed than sent",
            Lie::Reply(frame(RESPONSE, &{
                let mut p = good.clone();
                let at = 2 + 2 + 3 + 2 + 5;
                p[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
                p
            })),
        ),
        ("unknown value tag", Lie::Reply(frame(RESPONSE, &result_payload(&[b"v"], &[&[(9, b"")]], 0)))),
        (
            "value longer than the frame",
            Lie::Reply(frame(RESPONSE, &{
                let mut p = result_payload(&[b"v"], &[&[(1, b"abc")]], 0);
                p[2 + 2 + 1 + 4 + 1..2 + 2 + 1 + 4 + 1 + 4].copy_from_slice(&u32::MAX.to_le_bytes());
                p
            })),
        ),
        ("column name not UTF-8", Lie::Reply(frame(RESPONSE, &result_payload(&[b"\xff\xfe"], &[], 0)))),
        (
            "rows without columns",
            Lie::Reply(frame(RESPONSE, &{
                let mut p = 0u16.to_le_bytes().to_vec();
                p.extend_from_slice(&3u32.to_le_bytes());
                p.extend_from_slice(&0u64.to_le_bytes());
                p
            })),
        ),
        (
            "trailing bytes after the result",
            Lie::Reply(frame(RESPONSE, &[good.clone(), b"junk".to_vec()].concat())),
        ),
        (
            "control sequences in names and values",
            Lie::Reply(frame(
                RESPONSE,
                &result_payload(
                    &[esc, b"v"],
                    &[&[(1, esc), (2, &(-1i64).to_le_bytes())], &[(0, b""), (1, b"\x00\x1b[31mred")]],
                    0,
                ),
            )),
        ),
        (
            "control sequences in an error",
            Lie::Reply(message(&Message::Error {
                code: 4,
                message: String::from_utf8_lossy(esc).into_owned(),
            })),
        ),
        ("unknown error code", Lie::Reply(message(&Message::Error { code: 0x9999, message: "what".into() }))),
        ("error without its message", Lie::Reply(frame(0x12, &[4, 0, 200, 0]))),
        (
            "DISCONNECT with control sequences",
            Lie::Reply(message(&Message::Disconnect { code: 1, reason: "\x1b[2Jbye".into() })),
        ),
        ("malformed SERVER_INFO", Lie::Info(frame(0x02, &[1, 5, b'x']))),
        (
            "SERVER_INFO for another version",
            Lie::Info({
                let mut f = info("v9");
                f[10] = 9;
                let payload = f[10..f.len() - 4].to_vec();
                frame(0x02, &payload)
            }),
        ),
        (
            "no SERVER_INFO but an ERROR",
            Lie::Info(message(&Message::Error { code: 6, message: "\x1b[5mno".into() })),
        ),
        ("control sequences in the server name", Lie::Info(info("fake\x1b[2J\x07"))),
        (
            "absurd Argon2 parameters",
            Lie::Info({
                let mut f = info("argon");
                // m_kib sits after version, server name (1 + 5), fingerprint and salt.
                let at = 10 + 1 + 1 + 5 + 32 + 16;
                f[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
                let payload = f[10..f.len() - 4].to_vec();
                frame(0x02, &payload)
            }),
        ),
        (
            "login refused with control sequences",
            Lie::Login(message(&Message::AuthResponse { status: 1, message: "\x1b[2Jno".into() })),
        ),
        ("login answered with a RESPONSE", Lie::Login(frame(RESPONSE, &good))),
        ("login answered with garbage", Lie::Login(frame(0x04, &[0]))),
    ];
    // Replies the decoder may take as a result set; every other case is an error (status 1).
    const MAY_SUCCEED: &[&str] = &[
        "a proper reply, to compare",
        "control sequences in names and values",
        "trailing bytes after the result",
        "rows without columns",
    ];
    for (what, lie) in &cases {
        for mode in [
            &["-c", "SELECT key, value FROM kv"][..],
            &["--json", "-c", "SELECT 1"],
            &["-x", "-c", "\\conninfo\nSELECT 1"],
            &["--csv", "-c", "SELECT 1"],
        ] {
            let out = run(lie.clone(), mode, &kh);
            check(&out, &format!("{what} {mode:?}"));
            if *what == "a proper reply, to compare" && mode[0] == "-c" {
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
                assert!(String::from_utf8_lossy(&out.stdout).contains(" k   | v"));
            } else if *what == "control sequences in names and values" && mode[0] == "-c" {
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
                let table = String::from_utf8_lossy(&out.stdout);
                assert!(table.contains(" X'1b5d303b6f776e6564071b5b324ac29b' | v"), "{table}");
                assert!(table.contains("X'001b5b33316d726564'"), "{table}");
            } else if *what == "control sequences in an error" && mode[0] == "-c" {
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(
                    err.contains("ERROR: KEY_NOT_FOUND: \\u{1b}]0;owned\\u{7}\\u{1b}[2J\\u{9b}"),
                    "{err}"
                );
            }
            if !MAY_SUCCEED.contains(what) {
                assert_eq!(
                    out.status.code(),
                    Some(1),
                    "{what} {mode:?} is an error: {}",
                    String::from_utf8_lossy(&out.stdout)
                );
            }
        }
    }

    // Random damage to a proper reply: bytes flipped, cut, or appended; CRC recomputed so
    // that the result-set decoder (not the frame check) meets it. A fixed seed: the same cases
    // every run.
    let rich = result_payload(
        &[b"key", b"value", b"ttl"],
        &[
            &[(1, b"user:1"), (1, b"alice"), (2, &60i64.to_le_bytes())],
            &[(1, b"b"), (1, b"\xff\x00"), (0, b"")],
        ],
        3,
    );
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for case in 0..48 {
        let mut p = rich.clone();
        match next() % 3 {
            0 => {
                for _ in 0..1 + next() % 4 {
                    let i = (next() as usize) % p.len();
                    p[i] = next() as u8;
                }
            }
            1 => p.truncate((next() as usize) % p.len()),
            _ => p.extend((0..1 + next() % 16).map(|_| next() as u8)),
        }
        let mut f = Vec::new();
        let start = begin_frame(&mut f, RESPONSE);
        f.extend_from_slice(&p);
        end_frame(&mut f, start);
        let out = run(Lie::Reply(f), &["-c", "SELECT 1"], &kh);
        check(&out, &format!("random case {case}: {p:02x?}"));
    }
    let _ = std::fs::remove_dir_all(dir);
}
