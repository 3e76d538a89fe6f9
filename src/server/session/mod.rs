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
mod tests;
