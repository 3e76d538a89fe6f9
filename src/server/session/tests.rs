//! The session state machine: every phase transition of profile §2 and every failure.

use super::*;
use crate::protocol::Hello;
use crate::security::ratelimit::LoginThrottleConfig;
use crate::server::datadir::User;

const PASSWORD_CREDENTIAL: &[u8] = b"alice's 32-byte Argon2 credential";
const API_KEY: &[u8] = b"vk_the_api_key";

fn db() -> AuthDb {
    let user = |name: &str, role| User {
        name: name.into(),
        role,
        stored: stored_hash(PASSWORD_CREDENTIAL),
        rate_limit: None,
    };
    AuthDb::new(
        vec![user("alice", Role::ReadWrite), user("bob", Role::ReadOnly)],
        vec![(stored_hash(API_KEY), "bob".into())],
    )
}

fn info() -> ServerInfo {
    ServerInfo {
        version: VERSION,
        server: "velocityd/test".into(),
        fingerprint: [7; 32],
        auth_salt: [9; 16],
        argon2_m_kib: 8,
        argon2_t: 1,
        argon2_p: 1,
        max_payload: 1 << 20,
        shards: 2,
        flags: ServerInfo::FLAG_AUTH_REQUIRED,
    }
}

/// A session and what it consults, driven frame by frame.
struct Rig {
    s: Session,
    auth: AuthDb,
    throttle: LoginThrottle,
    info: ServerInfo,
}

impl Rig {
    fn new() -> Rig {
        let peer = Some("10.0.0.1:5000".parse().unwrap());
        let cfg = LoginThrottleConfig { user_fail_threshold: 3, ..Default::default() };
        Rig {
            s: Session::new(1, peer, Instant::now()),
            auth: db(),
            throttle: LoginThrottle::new(cfg, Instant::now()),
            info: info(),
        }
    }

    fn send(&mut self, m: Message) -> Step {
        let frame = m.to_frame();
        let Ok(crate::protocol::Decoded::Frame(f)) = crate::protocol::decode_frame(&frame, u32::MAX) else {
            panic!("a frame of its own")
        };
        let payload = f.payload.to_vec();
        self.raw(f.kind, &payload)
    }

    fn raw(&mut self, kind: u8, payload: &[u8]) -> Step {
        let mut env = Env {
            auth: &self.auth,
            throttle: &mut self.throttle,
            server_info: &self.info,
            rate_limit_conn: None,
            now: Instant::now(),
        };
        self.s.on_frame(kind, payload, &mut env)
    }

    fn hello(&mut self) -> Step {
        self.send(Message::Hello(Hello { versions: vec![VERSION], client: "test".into() }))
    }

    fn password(&mut self, user: &str, credential: &[u8]) -> Step {
        self.send(Message::AuthRequest(AuthRequest {
            method: AuthRequest::METHOD_PASSWORD,
            username: user.into(),
            credential: credential.to_vec(),
        }))
    }

    fn api_key(&mut self, key: &[u8]) -> Step {
        self.send(Message::AuthRequest(AuthRequest {
            method: AuthRequest::METHOD_API_KEY,
            username: String::new(),
            credential: key.to_vec(),
        }))
    }

    fn logged_in(&mut self, user: &str) {
        self.hello();
        let Step::Reply { login: Some(l), .. } = self.password(user, PASSWORD_CREDENTIAL) else { panic!() };
        assert_eq!(l.code, ErrorCode::Success);
    }
}

fn command() -> (u8, &'static [u8]) {
    (MessageType::Command as u8, b"SELECT 1")
}

/// The one reply of a step that goes on, or closes if `close`.
fn only(step: Step, close: bool) -> Message {
    match step {
        Step::Reply { mut replies, close: c, .. } if replies.len() == 1 && c == close => replies.remove(0),
        other => panic!("expected one reply (close {close}), got {other:?}"),
    }
}

fn code_of(m: &Message) -> u16 {
    match m {
        Message::Error { code, .. } => *code,
        Message::AuthResponse { status, .. } => *status,
        other => panic!("not an error: {other:?}"),
    }
}

#[test]
fn hello_then_password_then_commands() {
    let mut r = Rig::new();
    assert!(matches!(only(r.hello(), false), Message::ServerInfo(i) if i == info()));
    assert!(matches!(r.s.phase, Phase::AwaitAuth { tries: 0 }));
    let Step::Reply { replies, close: false, login: Some(l) } = r.password("alice", PASSWORD_CREDENTIAL)
    else {
        panic!()
    };
    assert_eq!(l, LoginEvent { user: "alice".into(), method: "password", code: ErrorCode::Success });
    assert_eq!(code_of(&replies[0]), AuthStatus::Success as u16);
    assert_eq!(r.s.user(), "alice");
    let (k, p) = command();
    assert!(matches!(r.raw(k, p), Step::Command));
    assert!(matches!(r.send(Message::StatsRequest), Step::Stats));
    assert_eq!(r.s.payload_max(1 << 20), 1 << 20);
}

#[test]
fn before_hello_only_hello_and_ping() {
    let mut r = Rig::new();
    assert!(matches!(only(r.send(Message::Ping(b"x".to_vec())), false), Message::Pong(b) if b == b"x"));
    assert_eq!(r.s.payload_max(1 << 20), PREAUTH_PAYLOAD_BYTES_MAX);
    let (k, p) = command();
    assert_eq!(code_of(&only(r.raw(k, p), true)), ErrorCode::ProtocolError as u16);
    let mut r = Rig::new();
    assert_eq!(
        code_of(&only(r.password("alice", PASSWORD_CREDENTIAL), true)),
        ErrorCode::ProtocolError as u16
    );
    let mut r = Rig::new();
    assert_eq!(code_of(&only(r.raw(0x7f, b""), true)), ErrorCode::ProtocolError as u16);
}

#[test]
fn a_hello_without_version_1_is_refused() {
    let mut r = Rig::new();
    let step = r.send(Message::Hello(Hello { versions: vec![2, 3], client: "future".into() }));
    assert_eq!(code_of(&only(step, true)), ErrorCode::ProtocolError as u16);
}

#[test]
fn not_logged_in_commands_and_stats_are_refused_and_the_session_goes_on() {
    let mut r = Rig::new();
    r.hello();
    let (k, p) = command();
    assert_eq!(code_of(&only(r.raw(k, p), false)), ErrorCode::Unauthorized as u16);
    assert_eq!(code_of(&only(r.send(Message::StatsRequest), false)), ErrorCode::Unauthorized as u16);
    // A second HELLO is out of place.
    assert_eq!(code_of(&only(r.hello(), false)), ErrorCode::ProtocolError as u16);
    assert!(matches!(r.s.phase, Phase::AwaitAuth { tries: 0 }));
}

#[test]
fn wrong_credentials_count_up_to_the_disconnect() {
    let mut r = Rig::new();
    r.hello();
    for i in 1..AUTH_TRIES_MAX {
        let Step::Reply { replies, close: false, login: Some(l) } = r.password("alice", b"wrong") else {
            panic!()
        };
        assert_eq!(l.code, ErrorCode::InvalidCredentials);
        assert_eq!(code_of(&replies[0]), AuthStatus::InvalidCredentials as u16);
        assert!(matches!(r.s.phase, Phase::AwaitAuth { tries } if tries == i));
    }
    // An unknown user looks the same as a wrong password.
    let Step::Reply { replies, close: true, login: Some(l) } = r.password("mallory", PASSWORD_CREDENTIAL)
    else {
        panic!()
    };
    assert_eq!(l.user, "mallory");
    assert_eq!(code_of(&replies[0]), AuthStatus::InvalidCredentials as u16);
    assert!(
        matches!(&replies[1], Message::Disconnect { code, .. } if *code == ErrorCode::InvalidCredentials as u16)
    );
}

#[test]
fn failed_logins_throttle_that_user_from_that_address_only() {
    let mut r = Rig::new();
    r.hello();
    for _ in 0..3 {
        r.password("alice", b"wrong");
    }
    let mut r2 = Rig { s: Session::new(2, r.s.peer, Instant::now()), ..Rig::new() };
    r2.throttle = std::mem::replace(&mut r.throttle, LoginThrottle::new(Default::default(), Instant::now()));
    r2.hello();
    // Even the right password is refused while throttled, before it is checked.
    let Step::Reply { replies, login: Some(l), .. } = r2.password("alice", PASSWORD_CREDENTIAL) else {
        panic!()
    };
    assert_eq!(l.code, ErrorCode::RateLimited);
    assert_eq!(code_of(&replies[0]), AuthStatus::RateLimited as u16);
    // Another user from the same address still gets in.
    let Step::Reply { login: Some(l), .. } = r2.password("bob", PASSWORD_CREDENTIAL) else { panic!() };
    assert_eq!(l.code, ErrorCode::Success);
}

#[test]
fn api_keys_log_in_as_their_user_and_unknown_keys_do_not() {
    let mut r = Rig::new();
    r.hello();
    let Step::Reply { login: Some(l), .. } = r.api_key(b"vk_unknown") else { panic!() };
    assert_eq!((l.user.as_str(), l.code), ("(api key)", ErrorCode::InvalidCredentials));
    let Step::Reply { login: Some(l), .. } = r.api_key(API_KEY) else { panic!() };
    assert_eq!((l.user.as_str(), l.method, l.code), ("bob", "api_key", ErrorCode::Success));
    assert!(matches!(&r.s.phase, Phase::Ready { role: Role::ReadOnly, key: Some(_), .. }));
}

#[test]
fn a_reload_ends_removed_users_and_revoked_keys_and_updates_roles() {
    let mut r = Rig::new();
    r.logged_in("alice");
    assert_eq!(r.s.revoked(&r.auth, 0), None, "same epoch: not checked");
    let demoted = |name: &str| User {
        name: name.into(),
        role: Role::ReadOnly,
        stored: stored_hash(PASSWORD_CREDENTIAL),
        rate_limit: None,
    };
    let reloaded = AuthDb::new(vec![demoted("alice")], vec![]);
    assert_eq!(r.s.revoked(&reloaded, 1), None);
    assert!(matches!(r.s.phase, Phase::Ready { role: Role::ReadOnly, .. }));
    assert_eq!(r.s.revoked(&AuthDb::new(vec![], vec![]), 2), Some("user removed"));

    let mut k = Rig::new();
    k.hello();
    k.api_key(API_KEY);
    let key_gone = AuthDb::new(vec![demoted("bob")], vec![]);
    assert_eq!(k.s.revoked(&key_gone, 1), Some("API key revoked"));
    // Not logged in: nothing to end.
    let mut n = Rig::new();
    assert_eq!(n.s.revoked(&key_gone, 1), None);
}

#[test]
fn disconnect_closes_in_any_phase() {
    for logged_in in [false, true] {
        let mut r = Rig::new();
        if logged_in {
            r.logged_in("alice");
        }
        let step = r.send(Message::Disconnect { code: 0, reason: "bye".into() });
        assert!(matches!(step, Step::Reply { ref replies, close: true, .. } if replies.is_empty()));
    }
}

#[test]
fn rate_limits_refuse_without_using_anything_up() {
    let now = Instant::now();
    let one = RateLimit { ops_per_s: 1.0, burst: 1.0 };
    let mut limits = RateLimits::new(None);
    let mut conn = None;
    assert_eq!(limits.admit(&mut conn, "alice", Some(one), now), Ok(()));
    assert_eq!(limits.admit(&mut conn, "alice", Some(one), now), Err("this user's rate limit"));
    // Another user has a bucket of its own.
    assert_eq!(limits.admit(&mut conn, "bob", Some(one), now), Ok(()));
    let mut conn = Some(TokenBucket::new(1.0, 1.0, now));
    let mut limits = RateLimits::new(Some(TokenBucket::new(1.0, 2.0, now)));
    assert_eq!(limits.admit(&mut conn, "alice", None, now), Ok(()));
    assert_eq!(limits.admit(&mut conn, "alice", None, now), Err("this connection's rate limit"));
    // The refusal took no token from the server's bucket: another connection still gets one.
    assert_eq!(limits.admit(&mut None, "alice", None, now), Ok(()));
    assert_eq!(limits.admit(&mut None, "alice", None, now), Err("the server's rate limit"));
}
