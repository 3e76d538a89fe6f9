//! End-to-end tests of velocityd through the real client over real sockets, with one and with
//! two cores.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::time::Duration;
use velocity::client::{build, ClientError, Credentials};
use velocity::protocol::*;

fn b(s: &str) -> Value {
    Value::Bytes(s.as_bytes().to_vec())
}

fn for_each_core_count(f: impl Fn(&Server)) {
    for cores in [1, 2] {
        let s = Server::start(cores);
        f(&s);
    }
}

#[test]
fn seed_examples_over_the_wire() {
    for_each_core_count(|s| {
        let mut c = s.client();
        let e = c.execute("SELECT value FROM kv WHERE key = 'user:1';").unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::KeyNotFound));
        assert_eq!(c.execute("INSERT INTO kv (key, value) VALUES ('user:1', 'alice');").unwrap().affected, 1);
        assert_eq!(
            c.execute("SELECT value FROM kv WHERE key = 'user:1';").unwrap().rows,
            vec![vec![b("alice")]]
        );
        assert_eq!(
            c.execute("UPDATE kv SET value = 'alice_updated' WHERE key = 'user:1';").unwrap().affected,
            1
        );
        assert_eq!(
            c.execute("SELECT value FROM kv WHERE key = 'user:1'").unwrap().rows,
            vec![vec![b("alice_updated")]]
        );
        assert_eq!(c.execute("DELETE FROM kv WHERE key = 'user:1';").unwrap().affected, 1);
        let batch = "INSERT INTO kv (key, value) VALUES \n ('user:1', 'alice'),\n ('user:2', 'bob'),\n ('user:3', 'charlie');";
        assert_eq!(c.execute(batch).unwrap().affected, 3);
        let want =
            vec![vec![b("user:1"), b("alice")], vec![b("user:2"), b("bob")], vec![b("user:3"), b("charlie")]];
        assert_eq!(
            c.execute("SELECT key, value FROM kv WHERE key LIKE 'user:%' LIMIT 100;").unwrap().rows,
            want
        );
        assert_eq!(
            c.execute("SELECT key, value FROM kv WHERE key >= 'user:1' AND key <= 'user:9';").unwrap().rows,
            want
        );
        assert_eq!(c.execute("SELECT COUNT(*) FROM kv;").unwrap().rows, vec![vec![Value::Int(3)]]);
        let stats = c.execute("SHOW STATS;").unwrap();
        assert!(stats.rows.iter().any(|r| r[0] == b("ops_insert") && r[1] == Value::Int(2)), "{stats:?}");
        assert!(stats.rows.iter().any(|r| r[0] == b("latency_p99_us")));
        let status = c.execute("SHOW STATUS;").unwrap();
        let shards = if s.log_text().contains("shards=2") { 2 } else { 1 };
        assert!(status.rows.contains(&vec![b("shards"), Value::Int(shards)]));
        assert!(status.rows.contains(&vec![b("user"), b("alice")]));
        assert!(status.rows.contains(&vec![b("role"), b("readwrite")]));
    });
}

/// 10,000 pipelined requests of every kind, checked one by one against a model, in order.
#[test]
fn ten_thousand_pipelined_mixed_requests_arrive_in_order_and_right() {
    for_each_core_count(|s| {
        let mut c = s.client();
        let mut model: BTreeMap<String, String> = BTreeMap::new();
        let mut stmts = Vec::new();
        let mut want: Vec<Result<Vec<Vec<Value>>, ErrorCode>> = Vec::new();
        let mut x: u64 = 0x2545F4914F6CDD1D;
        for i in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let k = format!("k{:03}", x % 300);
            match x % 6 {
                0 | 1 => {
                    let v = format!("v{i}");
                    stmts.push(build::set(k.as_bytes(), v.as_bytes()));
                    model.insert(k, v);
                    want.push(Ok(vec![]));
                }
                2 | 3 => {
                    stmts.push(build::get(k.as_bytes()));
                    want.push(model.get(&k).map(|v| vec![vec![b(v)]]).ok_or(ErrorCode::KeyNotFound));
                }
                4 => {
                    stmts.push(build::delete(k.as_bytes()));
                    model.remove(&k);
                    want.push(Ok(vec![]));
                }
                _ => {
                    let lo = format!("k{:03}", x % 290);
                    let hi = format!("k{:03}", x % 290 + 9);
                    stmts.push(format!("SELECT key, value FROM kv WHERE key BETWEEN '{lo}' AND '{hi}'"));
                    want.push(Ok(model.range(lo..=hi).map(|(k, v)| vec![b(k), b(v)]).collect()));
                }
            }
        }
        let replies = c.pipeline(&stmts).unwrap();
        assert_eq!(replies.len(), 10_000);
        for (i, (got, want)) in replies.into_iter().zip(want).enumerate() {
            let got = got.map(|rs| rs.rows).map_err(|e| e.code);
            assert_eq!(got, want, "request {i}: {}", stmts[i]);
        }
    });
}

#[test]
fn read_your_writes_across_shards_in_one_pipeline() {
    let s = Server::start(2);
    let mut c = s.client();
    let mut stmts = Vec::new();
    for i in 0..500 {
        let k = format!("ryw:{i}");
        stmts.push(build::set(k.as_bytes(), b"1"));
        stmts.push(build::update(k.as_bytes(), format!("{i}").as_bytes()));
        stmts.push(build::get(k.as_bytes()));
        stmts.push("SELECT COUNT(*) FROM kv WHERE key LIKE 'ryw:%'".to_string());
    }
    let replies = c.pipeline(&stmts).unwrap();
    for i in 0..500 {
        assert_eq!(replies[4 * i + 2].as_ref().unwrap().rows, vec![vec![b(&i.to_string())]]);
        assert_eq!(replies[4 * i + 3].as_ref().unwrap().rows, vec![vec![Value::Int(i as i64 + 1)]]);
    }
    // Both shards hold some of the keys.
    let status = c.execute("SHOW STATUS").unwrap();
    for shard in ["shard_0_keys", "shard_1_keys"] {
        let n = status.rows.iter().find(|r| r[0] == b(shard)).unwrap()[1].as_int().unwrap();
        assert!(n > 100, "{shard}={n}");
    }
}

#[test]
fn ranges_and_like_equal_a_btreemap_model() {
    for_each_core_count(|s| {
        let mut c = s.client();
        let mut model = BTreeMap::new();
        let mut rows = Vec::new();
        for i in 0..400u32 {
            let k = format!("{}:{:x}", ["user", "item", "us_r", "u%x"][(i % 4) as usize], i * 7919 % 1000);
            let v = format!("value-{i}");
            model.insert(k.clone(), v.clone());
            rows.push((k, v));
        }
        for chunk in rows.chunks(100) {
            c.execute(&build::set_many(chunk)).unwrap();
        }
        let m = |lo: &str, hi: &str| -> Vec<Vec<Value>> {
            model.range(lo.to_string()..=hi.to_string()).map(|(k, v)| vec![b(k), b(v)]).collect()
        };
        assert_eq!(
            c.execute("SELECT key, value FROM kv WHERE key BETWEEN 'item:1' AND 'user:5'").unwrap().rows,
            m("item:1", "user:5")
        );
        let mut desc = m("item:1", "user:5");
        desc.reverse();
        desc.truncate(7);
        assert_eq!(
            c.execute("SELECT key, value FROM kv WHERE key >= 'item:1' AND key <= 'user:5' ORDER BY key DESC LIMIT 7").unwrap().rows,
            desc
        );
        let like: Vec<Vec<Value>> =
            model.iter().filter(|(k, _)| k.starts_with("us_r:")).map(|(k, v)| vec![b(k), b(v)]).collect();
        assert_eq!(c.execute("SELECT key, value FROM kv WHERE key LIKE 'us\\_r:%'").unwrap().rows, like);
        let like2: Vec<Vec<Value>> = model
            .iter()
            .filter(|(k, _)| k.starts_with("u") && k.ends_with('7'))
            .map(|(k, v)| vec![b(k), b(v)])
            .collect();
        assert_eq!(c.execute("SELECT key, value FROM kv WHERE key LIKE 'u%7'").unwrap().rows, like2);
        let n = c.execute("SELECT COUNT(*) FROM kv WHERE key LIKE 'user:%'").unwrap().rows[0][0]
            .as_int()
            .unwrap();
        assert_eq!(n as usize, model.keys().filter(|k| k.starts_with("user:")).count());
        // Paging with the client's builder visits every key once, in order.
        let mut seen = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = c.execute(&build::scan_prefix(b"item:", after.as_deref(), 13)).unwrap();
            if page.rows.is_empty() {
                break;
            }
            for r in &page.rows {
                seen.push(String::from_utf8(r[0].as_bytes().unwrap().to_vec()).unwrap());
            }
            after = Some(page.rows.last().unwrap()[0].as_bytes().unwrap().to_vec());
        }
        let want: Vec<String> = model.keys().filter(|k| k.starts_with("item:")).cloned().collect();
        assert_eq!(seen, want);
    });
}

fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    encode_frame(&mut v, kind, payload);
    v
}

fn expect_error_then(c: &mut velocity::client::Client, code: ErrorCode, closes: bool) {
    match c.read_message(1 << 20) {
        Ok(Message::Error { code: got, message }) => assert_eq!(got, code as u16, "{message}"),
        other => panic!("expected ERROR {code}, got {other:?}"),
    }
    if closes {
        match c.read_message(1 << 20) {
            Err(ClientError::Io(e)) => assert!(matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
            )),
            other => panic!("expected the connection to close, got {other:?}"),
        }
    } else {
        assert_eq!(c.ping(b"still here").unwrap(), b"still here");
    }
}

/// Every §1 rule, sent as raw bytes, is answered as the profile says, while a second
/// connection keeps working.
#[test]
fn framing_rules_are_enforced_and_other_connections_carry_on() {
    for_each_core_count(|s| {
        let mut bystander = s.client();
        bystander.execute("INSERT INTO kv (key, value) VALUES ('by', 'stander')").unwrap();
        let good = frame(0x20, b"");
        let cases: Vec<(&str, Vec<u8>, ErrorCode, bool)> = vec![
            ("wrong magic", [b"VELX".as_slice(), &good[4..]].concat(), ErrorCode::ProtocolError, true),
            (
                "version 2",
                {
                    let mut f = good.clone();
                    f[4] = 2;
                    f
                },
                ErrorCode::ProtocolError,
                true,
            ),
            (
                "checksum",
                {
                    let mut f = good.clone();
                    let n = f.len();
                    f[n - 1] ^= 1;
                    f
                },
                ErrorCode::ProtocolError,
                true,
            ),
            (
                "too long before auth",
                {
                    let mut f = frame(0x10, b"");
                    f[6..10].copy_from_slice(&4097u32.to_le_bytes());
                    f.truncate(10);
                    f
                },
                ErrorCode::ProtocolError,
                true,
            ),
            ("unknown type", frame(0x7f, b""), ErrorCode::ProtocolError, false),
            (
                "wrong direction",
                frame(0x11, &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
                ErrorCode::ProtocolError,
                false,
            ),
            ("malformed AUTH_REQUEST", frame(0x03, &[1, 200]), ErrorCode::ProtocolError, false),
            (
                "COMMAND before auth",
                frame(0x10, b"SELECT value FROM kv WHERE key = 'by'"),
                ErrorCode::Unauthorized,
                false,
            ),
            ("STATS before auth", frame(0x22, b""), ErrorCode::Unauthorized, false),
        ];
        for (name, bytes, code, closes) in cases {
            let mut c = s.raw();
            c.send_raw(&bytes).unwrap();
            eprintln!("case: {name}");
            expect_error_then(&mut c, code, closes);
            assert_eq!(
                bystander.execute("SELECT value FROM kv WHERE key = 'by'").unwrap().rows,
                vec![vec![b("stander")]]
            );
        }
        // After authentication the limit is max_payload, and SQL errors keep the connection.
        let mut c = s.client();
        let mut f = frame(0x10, b"");
        f[6..10].copy_from_slice(&((1u32 << 20) + 1).to_le_bytes());
        f.truncate(10);
        c.send_raw(&f).unwrap();
        expect_error_then(&mut c, ErrorCode::ProtocolError, true);
        let mut c = s.client();
        assert_eq!(c.execute("SELEKT 1").unwrap_err().code(), Some(ErrorCode::InvalidCommand));
        c.send_raw(&frame(0x10, &[0xff, 0xfe])).unwrap();
        expect_error_then(&mut c, ErrorCode::InvalidCommand, false);
        c.send_raw(&frame(0x22, b"x")).unwrap();
        expect_error_then(&mut c, ErrorCode::ProtocolError, false);
        // A frame split into single bytes is reassembled.
        let sql = frame(0x10, b"SELECT value FROM kv WHERE key = 'by'");
        for byte in &sql {
            c.send_raw(std::slice::from_ref(byte)).unwrap();
            std::thread::sleep(Duration::from_micros(200));
        }
        assert!(matches!(c.read_message(1 << 20).unwrap(), Message::Response(_)));
    });
}

#[test]
fn before_hello_only_hello_and_ping() {
    let s = Server::start_with(1, &["--plaintext"]);
    let mut c = std::net::TcpStream::connect(s.addr).unwrap();
    use std::io::{Read, Write};
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(&frame(0x20, b"p")).unwrap();
    let mut buf = [0u8; 15];
    c.read_exact(&mut buf).unwrap();
    assert_eq!(buf[5], 0x21);
    c.write_all(&frame(0x10, b"SELECT value FROM kv WHERE key = 'a'")).unwrap();
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).unwrap(); // the server closes
    let Ok(Decoded::Frame(f)) = decode_frame(&rest, 4096) else { panic!("{rest:?}") };
    assert_eq!(f.kind, 0x12);
    assert_eq!(&f.payload[..2], &(ErrorCode::ProtocolError as u16).to_le_bytes());
}

#[test]
fn wrong_password_three_times_then_disconnect() {
    let s = Server::start(1);
    let mut c = s.raw();
    let bad = Credentials::Password { user: "alice".into(), password: "wrong".into() };
    for _ in 0..3 {
        match c.authenticate(&bad) {
            Err(ClientError::Auth { status, .. }) => {
                assert_eq!(status, AuthStatus::InvalidCredentials as u16)
            }
            other => panic!("{other:?}"),
        }
    }
    match c.authenticate(&s.alice) {
        Err(ClientError::Disconnected { reason, .. }) => assert!(reason.contains("failed logins")),
        other => panic!("the fourth try should see DISCONNECT: {other:?}"),
    }
    // Unknown users fail the same way, and the right password still works on a new connection.
    let mut c = s.raw();
    let ghost = Credentials::Password { user: "ghost".into(), password: PASSWORD.into() };
    assert!(matches!(c.authenticate(&ghost), Err(ClientError::Auth { status: 1, .. })));
    c.authenticate(&s.alice).unwrap();
    assert_eq!(c.ping(b"").unwrap(), b"");
}

#[test]
fn readonly_role_cannot_write() {
    let s = Server::start(2);
    s.client().execute("INSERT INTO kv (key, value) VALUES ('a', '1')").unwrap();
    let mut r = s.connect(&s.reader).unwrap();
    assert_eq!(r.execute("SELECT value FROM kv WHERE key = 'a'").unwrap().rows, vec![vec![b("1")]]);
    for w in [
        "INSERT INTO kv (key, value) VALUES ('a', '2')",
        "UPDATE kv SET value = '3' WHERE key = 'a'",
        "DELETE FROM kv WHERE key = 'a'",
    ] {
        assert_eq!(r.execute(w).unwrap_err().code(), Some(ErrorCode::Unauthorized), "{w}");
    }
    assert_eq!(r.execute("SELECT value FROM kv WHERE key = 'a'").unwrap().rows, vec![vec![b("1")]]);
}

#[test]
fn connection_limit_answers_server_overloaded() {
    let s = Server::start_with(2, &["--max-connections", "3"]);
    let held: Vec<_> = (0..3).map(|_| s.client()).collect();
    match velocity::client::Client::open(&s.options()) {
        Err(e) => assert_eq!(e.code(), Some(ErrorCode::ServerOverloaded), "{e}"),
        Ok(_) => panic!("a fourth connection was admitted"),
    }
    drop(held);
    // Slots come back once connections close.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match s.connect(&s.alice) {
            Ok(mut c) => {
                c.ping(b"").unwrap();
                break;
            }
            Err(_) if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn shutdown_sends_disconnect_and_exits_zero() {
    let mut s = Server::start(2);
    let mut idle = s.client();
    let mut busy = s.client();
    busy.execute("INSERT INTO kv (key, value) VALUES ('x', 'y')").unwrap();
    let status = s.terminate();
    assert!(status.success(), "{status:?}\n{}", s.log_text());
    for c in [&mut idle, &mut busy] {
        match c.read_message(1 << 20) {
            Err(ClientError::Disconnected { code, reason }) => {
                assert_eq!(code, 0);
                assert!(reason.contains("shutting down"), "{reason}");
            }
            other => panic!("expected DISCONNECT, got {other:?}"),
        }
    }
}

/// Once a stopped server has exited, its address refuses connections: nothing of it is left
/// listening. (A listener's pending io_uring accept holds the socket after its descriptor is
/// closed; unless the server shuts the socket down itself, the kernel tears it down a moment after
/// the process is gone, and meanwhile takes connections it then resets. A restart script that
/// probes the port would see a server there.) Several rounds: the moment is short.
#[test]
fn a_stopped_server_listens_no_more_once_it_has_exited() {
    let mut dir = Server::start_with(2, &["--plaintext"]).keep_data();
    for round in 0..12 {
        let mut s = Server::start_in(dir, 2, &["--plaintext"]);
        // Every core has a pending accept: connect to each a few times over.
        for _ in 0..4 {
            drop(std::net::TcpStream::connect(s.addr).unwrap());
        }
        unsafe { libc::kill(s.child.id() as i32, libc::SIGTERM) };
        let status = s.child.wait().unwrap();
        assert!(status.success(), "{status:?}\n{}", s.log_text());
        let refused = std::net::TcpStream::connect(s.addr);
        assert!(refused.is_err(), "round {round}: {} still takes connections after its exit", s.addr);
        dir = s.keep_data();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn idle_and_handshake_timeouts_disconnect() {
    let s = Server::start_with(1, &["--idle-timeout-s", "1", "--handshake-timeout-ms", "500"]);
    let mut c = s.client();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        matches!(c.read_message(1 << 20), Err(ClientError::Disconnected { reason, .. }) if reason.contains("idle"))
    );
    let mut h = s.raw();
    assert!(
        matches!(h.read_message(4096), Err(ClientError::Disconnected { reason, .. }) if reason.contains("handshake"))
    );
}

fn stat(c: &mut velocity::client::Client, name: &str) -> i64 {
    let rs = c.execute("SHOW STATS").unwrap();
    match rs.rows.iter().find(|r| r[0] == Value::Bytes(name.as_bytes().to_vec())).map(|r| &r[1]) {
        Some(Value::Int(n)) => *n,
        other => panic!("{name}: {other:?}"),
    }
}

/// Idle plaintext connections are parked (their task and socket state freed) and resume on
/// their next request with their session intact; parked ones still get the idle timeout and
/// the shutdown DISCONNECT.
#[test]
fn idle_connections_park_and_resume_with_their_session() {
    let mut s = Server::start_with(2, &["--plaintext", "--idle-timeout-s", "5"]);
    let mut writers: Vec<_> = (0..20).map(|_| s.client()).collect();
    let mut reader = s.connect(&s.reader).unwrap();
    for (i, c) in writers.iter_mut().enumerate() {
        c.execute(&build::set(format!("k{i}").as_bytes(), b"v")).unwrap();
    }
    std::thread::sleep(Duration::from_millis(2600));
    let mut probe = s.client();
    assert!(stat(&mut probe, "connections_parked") >= 21);
    // Each resumes on its request, as the same user with the same role.
    for (i, c) in writers.iter_mut().enumerate() {
        assert_eq!(
            c.execute(&build::get(format!("k{i}").as_bytes())).unwrap().rows[0][0],
            Value::Bytes(b"v".to_vec())
        );
    }
    let e = reader.execute(&build::set(b"no", b"no")).unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Unauthorized));
    // Pipelined requests after a park arrive whole.
    let sql: Vec<String> = (0..500).map(|i| build::get(format!("k{}", i % 20).as_bytes())).collect();
    assert!(writers[0].pipeline(&sql).unwrap().iter().all(|r| r.is_ok()));
    // A parked connection past the idle timeout is told why and closed.
    std::thread::sleep(Duration::from_millis(6500));
    match writers[1].read_message(1 << 20) {
        Err(ClientError::Disconnected { reason, .. }) => assert!(reason.contains("idle"), "{reason}"),
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
    let mut fresh = s.client();
    assert_eq!(stat(&mut fresh, "connections"), 1);
    // Shutdown reaches parked connections too.
    let mut parked = s.client();
    std::thread::sleep(Duration::from_millis(2600));
    assert!(s.terminate().success());
    match parked.read_message(1 << 20) {
        Err(ClientError::Disconnected { reason, .. }) => {
            assert!(reason.contains("shutting down"), "{reason}")
        }
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
}

#[test]
fn stats_frame_ttl_big_values_and_too_large_results() {
    let s = Server::start_with(2, &["--max-payload", "65536"]);
    let mut c = s.client();
    let big = vec![b'v'; 60_000];
    c.execute(&build::set(b"big1", &big)).unwrap();
    assert_eq!(c.execute(&build::get(b"big1")).unwrap().rows[0][0].as_bytes().unwrap(), &big[..]);
    c.execute(&build::set(b"big2", &big)).unwrap();
    let e = c.execute("SELECT key, value FROM kv").unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidCommand));
    assert!(e.to_string().contains("LIMIT"), "{e}");
    assert_eq!(c.execute("SELECT key FROM kv").unwrap().rows.len(), 2);
    c.execute(&build::set_ttl(b"short", b"lived", 1)).unwrap();
    assert_eq!(c.execute("SELECT ttl FROM kv WHERE key = 'short'").unwrap().rows, vec![vec![Value::Int(1)]]);
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(c.execute(&build::get(b"short")).unwrap_err().code(), Some(ErrorCode::KeyNotFound));
    let st = c.stats().unwrap();
    assert_eq!(st.columns, vec!["name", "value"]);
    let get =
        |n: &str| st.rows.iter().find(|r| r[0] == b(n)).unwrap_or_else(|| panic!("{n}"))[1].as_int().unwrap();
    assert!(get("ops_select_point") >= 3);
    assert!(get("ops_insert") >= 3);
    assert_eq!(get("keys"), 2);
    assert!(get("bytes_in") > 120_000);
}

/// SO_REUSEPORT spreads connections over the cores, and SHOW STATUS reports the spread.
#[test]
fn connections_spread_over_both_cores() {
    let s = Server::start(2);
    let conns: Vec<_> = (0..64).map(|_| s.client()).collect();
    let mut c = s.client();
    let status = c.execute("SHOW STATUS").unwrap();
    let get = |n: &str| status.rows.iter().find(|r| r[0] == b(n)).unwrap()[1].as_int().unwrap();
    let (a, z) = (get("shard_0_connections"), get("shard_1_connections"));
    assert_eq!(a + z, 65);
    // Binomial(65, 1/2): a shard below 12 happens about once in a million runs.
    assert!(a >= 12 && z >= 12, "poor spread: {a} / {z}");
    drop(conns);
}

/// The crossbeam transport, kept for measurement, answers exactly like the default one.
#[test]
fn crossbeam_mesh_gives_the_same_answers() {
    let s = Server::start_with(2, &["--mesh", "crossbeam"]);
    let mut c = s.client();
    let stmts: Vec<String> = (0..2000)
        .flat_map(|i| {
            [
                build::set(format!("m{i}").as_bytes(), format!("{i}").as_bytes()),
                build::get(format!("m{i}").as_bytes()),
            ]
        })
        .collect();
    for (i, r) in c.pipeline(&stmts).unwrap().into_iter().enumerate() {
        let rs = r.unwrap();
        if i % 2 == 1 {
            assert_eq!(rs.rows, vec![vec![b(&(i / 2).to_string())]]);
        }
    }
    assert_eq!(c.execute("SELECT COUNT(*) FROM kv").unwrap().rows, vec![vec![Value::Int(2000)]]);
}

/// An idle connection waits with a 256-byte buffer; requests that fill it exactly must still be
/// answered at once (not held back waiting for more bytes).
#[test]
fn requests_filling_the_first_read_exactly_are_answered() {
    use std::io::{Read, Write};
    let s = Server::start_with(1, &["--plaintext"]);
    let mut c = std::net::TcpStream::connect(s.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut bytes = Vec::new();
    for i in 0..4u8 {
        bytes.extend(frame(0x20, &[i; 50]));
    }
    assert_eq!(bytes.len(), velocity::limits::CONN_FIRST_READ_BYTES);
    for round in 0..3 {
        c.write_all(&bytes).unwrap();
        let mut got = vec![0u8; bytes.len()];
        c.read_exact(&mut got).unwrap_or_else(|e| panic!("round {round}: {e}"));
        for i in 0..4 {
            assert_eq!(got[i * 64 + 5], 0x21);
            assert_eq!(got[i * 64 + 10], i as u8);
        }
    }
}
