//! Property tests of the codec and the parser: round trips, and on arbitrary bytes no panic
//! and no allocation beyond a small multiple of the input (a counting allocator watches).

use proptest::prelude::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use velocity::protocol::*;

struct Counting;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let _ = LIVE.try_with(|c| {
            c.set(c.get() + l.size());
            let _ = PEAK.try_with(|p| p.set(p.get().max(c.get())));
        });
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        let _ = LIVE.try_with(|c| c.set(c.get().saturating_sub(l.size())));
        System.dealloc(p, l)
    }
}

#[global_allocator]
static A: Counting = Counting;

/// Peak bytes allocated (above what was live before) while running `f`.
fn peak_during(f: impl FnOnce()) -> usize {
    let base = LIVE.with(|c| c.get());
    PEAK.with(|p| p.set(base));
    f();
    PEAK.with(|p| p.get()) - base
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<i64>().prop_map(Value::Int),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::Bytes),
    ]
}

fn result_set() -> impl Strategy<Value = ResultSet> {
    (1usize..4, 0usize..5, any::<u64>()).prop_flat_map(|(nc, nr, affected)| {
        (
            proptest::collection::vec("[a-z]{0,8}", nc),
            proptest::collection::vec(proptest::collection::vec(value(), nc), nr),
        )
            .prop_map(move |(columns, rows)| ResultSet { columns, rows, affected })
    })
}

fn message() -> impl Strategy<Value = (Message, Peer)> {
    let s8 = "\\PC{0,20}";
    prop_oneof![
        (proptest::collection::vec(any::<u8>(), 0..5), s8)
            .prop_map(|(versions, client)| (Message::Hello(Hello { versions, client }), Peer::Client)),
        (any::<[u8; 32]>(), any::<[u8; 16]>(), any::<u32>(), any::<u16>(), any::<u8>(), s8).prop_map(
            |(fingerprint, auth_salt, max_payload, shards, flags, server)| (
                Message::ServerInfo(ServerInfo {
                    version: 1,
                    server,
                    fingerprint,
                    auth_salt,
                    argon2_m_kib: max_payload / 3,
                    argon2_t: 2,
                    argon2_p: 1,
                    max_payload,
                    shards,
                    flags
                }),
                Peer::Server
            )
        ),
        (any::<u8>(), "[a-z]{0,64}", proptest::collection::vec(any::<u8>(), 0..128)).prop_map(
            |(method, username, credential)| (
                Message::AuthRequest(AuthRequest { method, username, credential }),
                Peer::Client
            )
        ),
        (any::<u16>(), "\\PC{0,40}")
            .prop_map(|(status, message)| (Message::AuthResponse { status, message }, Peer::Server)),
        (any::<u16>(), "\\PC{0,40}", any::<bool>()).prop_map(|(code, reason, c)| (
            Message::Disconnect { code, reason },
            if c { Peer::Client } else { Peer::Server }
        )),
        "\\PC{0,80}".prop_map(|s| (Message::Command(s), Peer::Client)),
        result_set().prop_map(|r| (Message::Response(r), Peer::Server)),
        (any::<u16>(), "\\PC{0,40}")
            .prop_map(|(code, message)| (Message::Error { code, message }, Peer::Server)),
        proptest::collection::vec(any::<u8>(), 0..=64).prop_map(|b| (Message::Ping(b), Peer::Client)),
        proptest::collection::vec(any::<u8>(), 0..=64).prop_map(|b| (Message::Pong(b), Peer::Server)),
        Just((Message::StatsRequest, Peer::Client)),
        result_set().prop_map(|r| (Message::StatsReply(r), Peer::Server)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decode_of_encode_is_identity((m, sender) in message()) {
        let bytes = m.to_frame();
        let Ok(Decoded::Frame(f)) = decode_frame(&bytes, u32::MAX) else { panic!("not a frame") };
        prop_assert_eq!(f.consumed, bytes.len());
        prop_assert_eq!(Message::decode(f.kind, f.payload, sender).unwrap(), m);
    }

    #[test]
    fn decoder_never_panics_and_allocates_within_bounds(bytes in proptest::collection::vec(any::<u8>(), 0..600), fix in any::<bool>()) {
        // Half the cases get a valid header and checksum so the payload decoders are reached.
        let input = if fix && bytes.len() >= 2 {
            let mut v = Vec::new();
            encode_frame(&mut v, bytes[0] % 0x24, &bytes[1..]);
            v
        } else {
            bytes
        };
        let peak = peak_during(|| {
            if let Ok(Decoded::Frame(f)) = decode_frame(&input, 4096) {
                let _ = Message::decode(f.kind, f.payload, Peer::Client);
                let _ = Message::decode(f.kind, f.payload, Peer::Server);
            }
        });
        prop_assert!(peak <= 32 * input.len() + 1024, "peak {} for {} input bytes", peak, input.len());
    }

    #[test]
    fn parser_never_panics_and_allocates_within_bounds(sql in "(?s).{0,300}") {
        let peak = peak_during(|| { let _ = velocity::sql::parse(&sql); });
        prop_assert!(peak <= 32 * sql.len() + 4096, "peak {} for {} bytes", peak, sql.len());
    }

    #[test]
    fn parser_survives_sql_shaped_noise(words in proptest::collection::vec(prop_oneof![
        Just("SELECT"), Just("INSERT"), Just("INTO"), Just("UPDATE"), Just("DELETE"), Just("FROM"), Just("kv"),
        Just("WHERE"), Just("key"), Just("value"), Just("ttl"), Just("="), Just("<"), Just(">="), Just("("),
        Just(")"), Just(","), Just("'a'"), Just("X'00'"), Just("'it''s'"), Just("5"), Just("LIKE"), Just("IN"),
        Just("BETWEEN"), Just("AND"), Just("ORDER"), Just("BY"), Just("DESC"), Just("LIMIT"), Just("COUNT"),
        Just("*"), Just(";"), Just("VALUES"), Just("SET"), Just("NULL"), Just("SHOW"), Just("STATS"),
    ], 0..25)) {
        let sql = words.join(" ");
        let _ = velocity::sql::parse(&sql);
    }

    #[test]
    fn quote_literal_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..60)) {
        let sql = format!("SELECT value FROM kv WHERE key = {}", velocity::sql::quote_literal(&bytes));
        let velocity::sql::Statement::Select(s) = velocity::sql::parse(&sql).unwrap() else { panic!() };
        let velocity::sql::Filter::Eq(k) = s.filter else { panic!() };
        prop_assert_eq!(&*k, &bytes[..]);
    }

    #[test]
    fn quoted_text_round_trips(text in "[a-z' é]{0,30}") {
        let sql = velocity::client::build::get(text.as_bytes());
        let velocity::sql::Statement::Select(s) = velocity::sql::parse(&sql).unwrap() else { panic!() };
        let velocity::sql::Filter::Eq(k) = s.filter else { panic!() };
        prop_assert_eq!(&*k, text.as_bytes());
    }
}

#[test]
fn point_statements_parse_without_allocating() {
    let sql = "SELECT value FROM kv WHERE key = 'user:12345'";
    assert_eq!(
        peak_during(|| {
            std::hint::black_box(velocity::sql::parse(sql).unwrap());
        }),
        0
    );
    let sql = "INSERT INTO kv (key, value) VALUES ('user:12345', 'some value');";
    assert_eq!(
        peak_during(|| {
            std::hint::black_box(velocity::sql::parse(sql).unwrap());
        }),
        0
    );
}
