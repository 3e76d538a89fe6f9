//! A connection's session, sans I/O: the handshake and login of profile §2 as a state machine
//! (HELLO → SERVER_INFO, AUTH_REQUEST → AUTH_RESPONSE, then requests), what a logged-in session
//! must keep passing (a reload may remove its user or revoke its key; a changed role applies
//! from the next request), and the rate limits of its requests. It decides the answers and
//! reports each login attempt; `conn` moves the bytes, `batch` runs the statements, and whoever
//! owns the audit log and the statistics records the attempts.

use super::auth::AuthDb;
use super::datadir::{RateLimit, Role};
use crate::limits::{AUTH_TRIES_MAX, PREAUTH_PAYLOAD_BYTES_MAX};
use crate::protocol::{AuthRequest, AuthStatus, ErrorCode, Message, MessageType, Peer, ServerInfo, VERSION};
use crate::security::ratelimit::{Login, LoginThrottle, TokenBucket};
use crate::security::{stored_hash, verify_credential};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

pub enum Phase {
    AwaitHello,
    AwaitAuth {
        tries: u32,
    },
    /// Logged in; `bucket` is this connection's rate limit, if one is set. `key` is the
    /// SHA-256 of the API key it logged in with (None: a password): what must still be there
    /// for the session to go on.
    Ready {
        user: Rc<str>,
        role: Role,
        bucket: Option<TokenBucket>,
        key: Option<[u8; 32]>,
    },
}

/// One connection's session: small, so that a parked idle connection costs little more.
pub struct Session {
    pub id: u64,
    pub peer: Option<SocketAddr>,
    pub phase: Phase,
    /// When the connection was accepted: the handshake timeout runs from there.
    pub accepted: Instant,
    /// The users-and-keys reload (`Core::auth_epoch`) this session was last checked against.
    auth_epoch: u64,
}

/// What a session consults to answer a frame.
pub struct Env<'a> {
    /// The core's copy of the users and API keys.
    pub auth: &'a AuthDb,
    pub throttle: &'a mut LoginThrottle,
    /// What SERVER_INFO says.
    pub server_info: &'a ServerInfo,
    /// Each connection's own rate limit (`--rate-limit-conn`).
    pub rate_limit_conn: Option<RateLimit>,
    pub now: Instant,
}

/// A login attempt, for the audit log and the statistics.
#[derive(Debug, PartialEq, Eq)]
pub struct LoginEvent {
    /// The user logged in as, or the name tried (`(api key)` for a failed key).
    pub user: String,
    pub method: &'static str,
    /// Success, InvalidCredentials, or RateLimited (throttled before the check).
    pub code: ErrorCode,
}

/// What a frame comes to.
#[derive(Debug)]
pub enum Step {
    /// A COMMAND of a logged-in session: the batch runs it.
    Command,
    /// A STATS request of a logged-in session: the batch answers it.
    Stats,
    /// Answer with `replies`, in order; then close if `close`.
    Reply { replies: Vec<Message>, close: bool, login: Option<LoginEvent> },
}

impl Step {
    fn reply(m: Message) -> Step {
        Step::Reply { replies: vec![m], close: false, login: None }
    }

    fn close(m: Message) -> Step {
        Step::Reply { replies: vec![m], close: true, login: None }
    }
}

impl Session {
    pub fn new(id: u64, peer: Option<SocketAddr>, accepted: Instant) -> Session {
        Session { id, peer, phase: Phase::AwaitHello, accepted, auth_epoch: 0 }
    }

    /// The logged-in user's name; empty before login.
    pub fn user(&self) -> &str {
        match &self.phase {
            Phase::Ready { user, .. } => user,
            _ => "",
        }
    }

    pub fn ready(&self) -> bool {
        matches!(self.phase, Phase::Ready { .. })
    }

    /// The largest payload accepted now: small until the session has logged in.
    pub fn payload_max(&self, max_payload: u32) -> u32 {
        if self.ready() {
            max_payload
        } else {
            PREAUTH_PAYLOAD_BYTES_MAX
        }
    }

    /// Handle one frame.
    pub fn on_frame(&mut self, kind: u8, payload: &[u8], env: &mut Env<'_>) -> Step {
        if kind == MessageType::Command as u8 {
            return match self.phase {
                Phase::Ready { .. } => Step::Command,
                Phase::AwaitHello => Step::close(Message::error(ErrorCode::ProtocolError, "expected HELLO")),
                Phase::AwaitAuth { .. } => {
                    Step::reply(Message::error(ErrorCode::Unauthorized, "not authenticated"))
                }
            };
        }
        let msg = match Message::decode(kind, payload, Peer::Client) {
            Ok(m) => m,
            Err(e) => {
                let m = Message::error(ErrorCode::ProtocolError, e.to_string());
                // Before HELLO nothing but HELLO and PING is accepted (profile §2).
                return if matches!(self.phase, Phase::AwaitHello) { Step::close(m) } else { Step::reply(m) };
            }
        };
        match (&self.phase, msg) {
            (_, Message::Ping(b)) => Step::reply(Message::Pong(b)),
            (_, Message::Disconnect { .. }) => Step::Reply { replies: Vec::new(), close: true, login: None },
            (Phase::AwaitHello, Message::Hello(h)) => {
                if !h.versions.contains(&VERSION) {
                    return Step::close(Message::error(
                        ErrorCode::ProtocolError,
                        "no common protocol version (this server speaks 1)",
                    ));
                }
                self.phase = Phase::AwaitAuth { tries: 0 };
                Step::reply(Message::ServerInfo(env.server_info.clone()))
            }
            (Phase::AwaitHello, _) => Step::close(Message::error(ErrorCode::ProtocolError, "expected HELLO")),
            (Phase::AwaitAuth { tries }, Message::AuthRequest(a)) => {
                let tries = *tries + 1;
                self.login(&a, tries, env)
            }
            (Phase::AwaitAuth { .. }, Message::StatsRequest) => {
                Step::reply(Message::error(ErrorCode::Unauthorized, "not authenticated"))
            }
            (Phase::Ready { .. }, Message::StatsRequest) => Step::Stats,
            (_, m) => Step::reply(Message::error(
                ErrorCode::ProtocolError,
                format!("unexpected {:?} frame here", m.kind()),
            )),
        }
    }

    /// An AUTH_REQUEST, the `tries`-th: throttled, refused or accepted.
    fn login(&mut self, a: &AuthRequest, tries: u32, env: &mut Env<'_>) -> Step {
        let api_key = a.method == AuthRequest::METHOD_API_KEY;
        let method = if api_key { "api_key" } else { "password" };
        let ip = self.peer.map(|p| p.ip());
        let who = if api_key { Login::ApiKey(&a.credential) } else { Login::User(&a.username) };
        let throttled = ip.and_then(|ip| env.throttle.check(ip, who, env.now));
        let outcome = match throttled {
            Some(r) => Err((
                AuthStatus::RateLimited,
                format!(
                    "too many failed logins {}from your address; retry in {} s",
                    if r.whole_address { "" } else { "for this user " },
                    r.retry_in.as_millis().div_ceil(1000).max(1)
                ),
            )),
            None => authenticate(env.auth, a)
                .ok_or((AuthStatus::InvalidCredentials, "invalid credentials".into())),
        };
        match outcome {
            Ok((user, role)) => {
                if let Some(ip) = ip {
                    env.throttle.succeeded(ip, who);
                }
                let login = LoginEvent { user: user.to_string(), method, code: ErrorCode::Success };
                let reply = Message::auth_response(AuthStatus::Success, format!("authenticated as {user}"));
                let bucket = env.rate_limit_conn.map(|r| TokenBucket::new(r.ops_per_s, r.burst, env.now));
                let key = api_key.then(|| stored_hash(&a.credential));
                self.phase = Phase::Ready { user, role, bucket, key };
                Step::Reply { replies: vec![reply], close: false, login: Some(login) }
            }
            Err((status, msg)) => {
                let code = if status == AuthStatus::RateLimited {
                    ErrorCode::RateLimited
                } else {
                    if let Some(ip) = ip {
                        env.throttle.failed(ip, who, env.now);
                    }
                    ErrorCode::InvalidCredentials
                };
                let user = if api_key { "(api key)".into() } else { a.username.clone() };
                let login = Some(LoginEvent { user, method, code });
                let mut replies = vec![Message::auth_response(status, msg)];
                let close = tries >= AUTH_TRIES_MAX;
                if close {
                    replies.push(Message::Disconnect {
                        code: ErrorCode::InvalidCredentials as u16,
                        reason: "too many failed logins".into(),
                    });
                } else {
                    self.phase = Phase::AwaitAuth { tries };
                }
                Step::Reply { replies, close, login }
            }
        }
    }

    /// Whether the session may go on after reload `epoch` of the users and API keys: None, with
    /// its role brought up to date (it applies from the next request); or why it must end (its
    /// user was removed, or its API key revoked).
    pub fn revoked(&mut self, auth: &AuthDb, epoch: u64) -> Option<&'static str> {
        if self.auth_epoch == epoch {
            return None;
        }
        self.auth_epoch = epoch;
        let Phase::Ready { user, role, key, .. } = &mut self.phase else { return None };
        if let Some(k) = key {
            if auth.api_keys.get(k).map(String::as_str) != Some(&**user) {
                return Some("API key revoked");
            }
        }
        match auth.users.get(&**user) {
            Some(u) => {
                *role = u.role;
                None
            }
            None => Some("user removed"),
        }
    }
}

/// Method 1 (password credential) or 2 (API key). A password is compared even for an unknown
/// user, so timing does not tell which user names exist.
fn authenticate(db: &AuthDb, a: &AuthRequest) -> Option<(Rc<str>, Role)> {
    let user = match a.method {
        AuthRequest::METHOD_PASSWORD => {
            let user = db.users.get(&a.username);
            let stored = user.map_or([0u8; 32], |u| u.stored);
            let ok = verify_credential(&a.credential, &stored);
            user.filter(|_| ok)?
        }
        AuthRequest::METHOD_API_KEY if a.username.is_empty() => db.api_key_user(&a.credential)?,
        _ => return None,
    };
    Some((db.names.get(&user.name)?.clone(), user.role))
}

/// The rate limits above a connection's own, kept per core: each user's and this core's share
/// of the server's.
pub struct RateLimits {
    global: Option<TokenBucket>,
    users: HashMap<String, TokenBucket>,
}

impl RateLimits {
    pub fn new(global: Option<TokenBucket>) -> RateLimits {
        RateLimits { global, users: HashMap::new() }
    }

    /// Whether a server-wide limit is set (then every request takes a token).
    pub fn server_wide(&self) -> bool {
        self.global.is_some()
    }

    /// Forget the users' buckets (their limits may have changed).
    pub fn clear_users(&mut self) {
        self.users.clear();
    }

    /// Whether one more request of `user` (on a connection whose own bucket is `conn`, with the
    /// user's limit `user_limit`) may run now; if so it is counted against every limit. A
    /// refused request uses up nothing; the error names the limit.
    pub fn admit(
        &mut self,
        conn: &mut Option<TokenBucket>,
        user: &str,
        user_limit: Option<RateLimit>,
        now: Instant,
    ) -> Result<(), &'static str> {
        if conn.is_none() && user_limit.is_none() && self.global.is_none() {
            return Ok(());
        }
        if let Some(b) = conn.as_mut() {
            if !b.has_token(now) {
                return Err("this connection's rate limit");
            }
        }
        let mut ub = user_limit.map(|r| {
            self.users.entry(user.to_owned()).or_insert_with(|| TokenBucket::new(r.ops_per_s, r.burst, now))
        });
        if let Some(b) = ub.as_mut() {
            if !b.has_token(now) {
                return Err("this user's rate limit");
            }
        }
        if let Some(g) = self.global.as_mut() {
            if !g.has_token(now) {
                return Err("the server's rate limit");
            }
        }
        for b in [conn.as_mut(), ub, self.global.as_mut()].into_iter().flatten() {
            b.take();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
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
            let Ok(crate::protocol::Decoded::Frame(f)) = crate::protocol::decode_frame(&frame, u32::MAX)
            else {
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
            let Step::Reply { login: Some(l), .. } = self.password(user, PASSWORD_CREDENTIAL) else {
                panic!()
            };
            assert_eq!(l.code, ErrorCode::Success);
        }
    }

    fn command() -> (u8, &'static [u8]) {
        (MessageType::Command as u8, b"SELECT 1")
    }

    /// The one reply of a step that goes on, or closes if `close`.
    fn only(step: Step, close: bool) -> Message {
        match step {
            Step::Reply { mut replies, close: c, .. } if replies.len() == 1 && c == close => {
                replies.remove(0)
            }
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
        r2.throttle =
            std::mem::replace(&mut r.throttle, LoginThrottle::new(Default::default(), Instant::now()));
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
}
