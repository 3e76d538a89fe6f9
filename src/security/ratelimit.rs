//! Token buckets for rate limits, and login throttling per (address, user) and per address. No
//! I/O, no clock: callers pass the time, so tests drive it by hand.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::limits::{
    LOGIN_ADDR_FAIL_DRAIN_MS, LOGIN_ADDR_FAIL_THRESHOLD_DEFAULT, LOGIN_FAIL_THRESHOLD_DEFAULT,
    LOGIN_REPORT_ADDRESSES_MAX, LOGIN_REPORT_EXAMPLES, LOGIN_REPORT_INTERVAL_MS,
    LOGIN_THROTTLE_ADDRESSES_MAX, LOGIN_THROTTLE_PAIRS_MAX, USERNAME_BYTES_MAX,
};

/// `ops_per_s` sustained, up to `burst` at once.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    ops_per_s: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(ops_per_s: f64, burst: f64, now: Instant) -> Self {
        TokenBucket { ops_per_s, burst, tokens: burst, last: now }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.ops_per_s).min(self.burst);
        self.last = now;
    }

    /// Whether one operation may run now (without taking it).
    pub fn has_token(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= 1.0
    }

    pub fn take(&mut self) {
        self.tokens -= 1.0;
    }
}

/// Who a login attempt claims to be: the other half, with the source address, of what the
/// throttle counts failures for.
///
/// No `Debug`: an `ApiKey` holds a credential, which is never printed.
#[derive(Clone, Copy)]
pub enum Login<'a> {
    /// A password login (method 1) as this user name.
    User(&'a str),
    /// An API-key login (method 2): the credential as sent. Only the key's public ID
    /// (`vk_<8 hex id>_<48 hex secret>`, see `datadir::create_api_key`) is kept, never the secret.
    ApiKey(&'a [u8]),
}

/// The answer to a login that must be refused without checking its credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// How long until a credential will be checked again (whole milliseconds).
    pub retry_in: Duration,
    /// True when the whole address is throttled (spraying), false when only this user (or key)
    /// from this address is.
    pub whole_address: bool,
}

/// One line's worth of failed logins for the server log: what one address did since the last
/// report, or (`addr` None) the sum over addresses beyond the first
/// `report_addresses_max` of the interval.
#[derive(Clone, Debug, PartialEq)]
pub struct LoginReport {
    pub addr: Option<IpAddr>,
    /// Addresses summed here: 1 for an address's own report.
    pub addresses: u32,
    /// Logins whose credential was checked and was wrong.
    pub failures: u32,
    /// Logins refused unchecked because the address or the (address, user) pair was throttled.
    pub refused: u32,
    /// Distinct users and API keys among the failures (an entry forgotten under memory
    /// pressure is counted again when it comes back).
    pub users: u32,
    /// The first few of them, escaped for a log line: user names as `"name"` (Rust string
    /// escapes, so no control character reaches the log), keys as `api key vk_<id>`.
    pub examples: Vec<String>,
    /// The first and last attempt counted.
    pub first: Instant,
    pub last: Instant,
    /// Whether the whole address was throttled during the interval: the longest wait it was
    /// given (a back-off started, or what was left of one when an attempt was refused).
    pub address_throttled: Option<Duration>,
}

impl fmt::Display for LoginReport {
    /// `203.0.113.7: 50 failed logins (50 users: "u1", "u2", "u3", …), 9950 refused unchecked in
    /// 1.0 s; address throttled (back-off up to 1 s)`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            Some(a) => write!(f, "{a}: ")?,
            None => write!(f, "{} more addresses: ", self.addresses)?,
        }
        write!(f, "{} failed logins", self.failures)?;
        if self.users > 0 {
            write!(
                f,
                " ({} user{}: {}",
                self.users,
                if self.users == 1 { "" } else { "s" },
                self.examples.join(", ")
            )?;
            if self.users as usize > self.examples.len() {
                write!(f, ", …")?;
            }
            write!(f, ")")?;
        }
        if self.refused > 0 {
            write!(f, ", {} refused unchecked", self.refused)?;
        }
        write!(f, " in {:.1} s", self.last.saturating_duration_since(self.first).as_secs_f64())?;
        if let Some(t) = self.address_throttled {
            write!(f, "; address throttled (back-off up to {} s)", t.as_millis().div_ceil(1000))?;
        }
        Ok(())
    }
}

/// Settings of a `LoginThrottle`. `Default` is the server's defaults, from `limits.rs`.
#[derive(Clone, Debug)]
pub struct LoginThrottleConfig {
    /// Failures of one user (or one API key) from one address before that pair is refused
    /// unchecked, with the back-off. 0 turns it off.
    pub user_fail_threshold: u32,
    /// Failures from one address, all users together, before every login from it is refused
    /// unchecked, with the back-off. The count leaks away: it drains from the threshold to 0 in
    /// `addr_fail_drain_ms` without failures. 0 turns it off.
    pub addr_fail_threshold: u32,
    pub addr_fail_drain_ms: u64,
    /// Memory bounds: (address, user) pairs and addresses remembered.
    pub pairs_max: usize,
    pub addresses_max: usize,
    /// `take_report` hands out reports at most this often.
    pub report_interval_ms: u64,
    /// Addresses reported one by one per interval; the rest are summed into one report.
    pub report_addresses_max: usize,
}

impl Default for LoginThrottleConfig {
    fn default() -> Self {
        LoginThrottleConfig {
            user_fail_threshold: LOGIN_FAIL_THRESHOLD_DEFAULT,
            addr_fail_threshold: LOGIN_ADDR_FAIL_THRESHOLD_DEFAULT,
            addr_fail_drain_ms: LOGIN_ADDR_FAIL_DRAIN_MS,
            pairs_max: LOGIN_THROTTLE_PAIRS_MAX,
            addresses_max: LOGIN_THROTTLE_ADDRESSES_MAX,
            report_interval_ms: LOGIN_REPORT_INTERVAL_MS,
            report_addresses_max: LOGIN_REPORT_ADDRESSES_MAX,
        }
    }
}

/// Failed logins, counted two ways, and gathered for the log.
///
/// - Per (source address, user): past `user_fail_threshold` failures that user is refused from
///   that address without a credential check, for a back-off of 1 s doubling with each further
///   failure up to 5 min; forgotten after 15 min without failures; cleared by that user's
///   success. One user's typo storm therefore locks out only itself, not everyone behind the
///   same NAT or app server.
/// - Per address, all users together (password spraying: many users, few tries each): a leaky
///   bucket that drains `addr_fail_threshold` failures per `addr_fail_drain_ms`. Reaching the
///   threshold refuses every login from the address, with the same back-off. A success does not
///   drain it: a sprayer that guesses one password right keeps its count.
///
/// Each core has its own (no shared state). No clock inside: every call takes `now`. Memory is
/// bounded by the config (see `Generations`), and no call allocates once the maps have grown.
pub struct LoginThrottle {
    cfg: LoginThrottleConfig,
    /// Times are kept as milliseconds since this (8 bytes, not an `Instant`'s 16).
    epoch: Instant,
    /// Keys the 64-bit identity of a user name or key ID: with a per-process random key, an
    /// attacker cannot make two names share a counter.
    ids: RandomState,
    pairs: Generations<(IpAddr, u64), PairState>,
    addrs: Generations<IpAddr, AddrState>,
    /// Since the last report: at most `report_addresses_max` addresses one by one, then `others`.
    reports: HashMap<IpAddr, ReportAcc>,
    others: ReportAcc,
    /// Numbers the report intervals, so that an entry knows whether it was already counted
    /// (as a distinct user, or address) in this one. Never 0, which marks "never counted".
    report_gen: u32,
    /// When the first attempt since the last report was: the report is due an interval later.
    pending_since_ms: Option<u64>,
}

#[derive(Clone, Copy, Default)]
struct PairState {
    last_ms: u64,
    blocked_until_ms: u64,
    failures: u32,
    report_gen: u32,
}

#[derive(Clone, Copy, Default)]
struct AddrState {
    last_ms: u64,
    blocked_until_ms: u64,
    /// The leaky bucket: failures not yet forgiven, and until when forgiveness has been
    /// counted. One failure is forgiven every `addr_fail_drain_ms / addr_fail_threshold`.
    level: u32,
    drained_ms: u64,
    /// Times the threshold was reached since the address was last quiet for 15 min: the
    /// back-off's exponent.
    strikes: u32,
    report_gen: u32,
}

pub const LOGIN_BACKOFF_FIRST: Duration = Duration::from_secs(1);
pub const LOGIN_BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Failures are forgotten after this long without another.
pub const LOGIN_FAILURE_MEMORY: Duration = Duration::from_secs(900);

const MEMORY_MS: u64 = LOGIN_FAILURE_MEMORY.as_millis() as u64;

/// 1 s × 2^doublings, at most 5 min.
fn backoff_ms(doublings: u32) -> u64 {
    let first = LOGIN_BACKOFF_FIRST.as_millis() as u64;
    (first << doublings.min(16)).min(LOGIN_BACKOFF_MAX.as_millis() as u64)
}

impl LoginThrottle {
    pub fn new(cfg: LoginThrottleConfig, now: Instant) -> Self {
        LoginThrottle {
            pairs: Generations::new(cfg.pairs_max),
            addrs: Generations::new(cfg.addresses_max),
            reports: HashMap::new(),
            others: ReportAcc::default(),
            cfg,
            epoch: now,
            ids: RandomState::new(),
            report_gen: 1,
            pending_since_ms: None,
        }
    }

    fn ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_millis() as u64
    }

    /// Whether this login must be refused without checking its credential. A refusal is
    /// counted for the report (and keeps the address remembered); nothing else is changed, so a
    /// refused attempt neither lengthens the back-off nor counts as a failure.
    pub fn check(&mut self, addr: IpAddr, who: Login<'_>, now: Instant) -> Option<Refusal> {
        if self.cfg.user_fail_threshold == 0 && self.cfg.addr_fail_threshold == 0 {
            return None;
        }
        let now_ms = self.ms(now);
        let wait = |until_ms: u64| Some(until_ms.saturating_sub(now_ms)).filter(|w| *w > 0);
        let addr_wait = self.addrs.get(&addr).and_then(|a| wait(a.blocked_until_ms));
        let mut pair_wait = None;
        if self.cfg.user_fail_threshold > 0 {
            let pair = (addr, self.ids.hash_one(Claim::of(who)));
            pair_wait = self.pairs.get(&pair).and_then(|p| wait(p.blocked_until_ms));
            if pair_wait.is_some() {
                // Still being tried while refused: not quiet, so not the one to forget.
                self.pairs.touch(pair, PairState::default);
            }
        }
        let retry_ms = addr_wait.max(pair_wait)?;
        let r = self.report_slot(addr, now_ms);
        r.refused += 1;
        r.addr_backoff_ms = r.addr_backoff_ms.max(addr_wait.unwrap_or(0));
        Some(Refusal { retry_in: Duration::from_millis(retry_ms), whole_address: addr_wait.is_some() })
    }

    /// A login whose credential was checked and was wrong.
    pub fn failed(&mut self, addr: IpAddr, who: Login<'_>, now: Instant) {
        let now_ms = self.ms(now);
        let claim = Claim::of(who);
        let gen = self.report_gen;

        let p = self.pairs.touch((addr, self.ids.hash_one(claim)), PairState::default);
        if now_ms.saturating_sub(p.last_ms) >= MEMORY_MS {
            p.failures = 0;
        }
        p.failures = p.failures.saturating_add(1);
        p.last_ms = now_ms;
        let threshold = self.cfg.user_fail_threshold;
        if threshold > 0 && p.failures >= threshold {
            p.blocked_until_ms = now_ms + backoff_ms(p.failures - threshold);
        }
        let new_user = p.report_gen != gen;
        p.report_gen = gen;

        let a = self.addrs.touch(addr, AddrState::default);
        let quiet_ms = now_ms.saturating_sub(a.last_ms);
        if quiet_ms >= MEMORY_MS {
            a.strikes = 0;
        }
        let threshold = self.cfg.addr_fail_threshold;
        // Whole failures forgiven, the remainder carried: 50 failures within 6 s are 50.
        let forgive_ms = (self.cfg.addr_fail_drain_ms / threshold.max(1) as u64).max(1);
        let forgiven = now_ms.saturating_sub(a.drained_ms) / forgive_ms;
        a.level = a.level.saturating_sub(forgiven.min(u32::MAX as u64) as u32);
        a.drained_ms = if a.level == 0 { now_ms } else { a.drained_ms + forgiven * forgive_ms };
        a.level = a.level.saturating_add(1);
        a.last_ms = now_ms;
        let mut addr_backoff_ms = 0;
        if threshold > 0 && a.level >= threshold {
            addr_backoff_ms = backoff_ms(a.strikes);
            a.blocked_until_ms = now_ms + addr_backoff_ms;
            a.strikes = a.strikes.saturating_add(1);
        }

        let r = self.report_slot(addr, now_ms);
        r.failures = r.failures.saturating_add(1);
        r.addr_backoff_ms = r.addr_backoff_ms.max(addr_backoff_ms);
        if new_user {
            r.users = r.users.saturating_add(1);
            if let Some(slot) = r.examples.iter_mut().find(|e| e.is_none()) {
                *slot = Some(claim);
            }
        }
    }

    /// A login that succeeded: forgets that pair's failures. The address's count stays, so a
    /// sprayer's one right guess does not buy it a fresh budget.
    pub fn succeeded(&mut self, addr: IpAddr, who: Login<'_>) {
        self.pairs.remove(&(addr, self.ids.hash_one(Claim::of(who))));
    }

    /// What to log: one report per address with attempts since the last call that returned
    /// any (busiest first), plus one summing the addresses beyond `report_addresses_max`.
    /// Empty until `report_interval_ms` has passed since the first attempt after the last
    /// report, so each address gets at most one report per interval and a burst of any size is
    /// one line. Cheap when there is nothing to report: call it on a timer (a report waits for
    /// the next call), and after each failure if you like.
    pub fn take_report(&mut self, now: Instant) -> Vec<LoginReport> {
        let now_ms = self.ms(now);
        match self.pending_since_ms {
            Some(since_ms) if now_ms >= since_ms + self.cfg.report_interval_ms => {}
            _ => return Vec::new(),
        }
        let mut out = Vec::with_capacity(self.reports.len() + 1);
        for (addr, r) in self.reports.drain() {
            out.push(r.report(Some(addr), self.epoch));
        }
        out.sort_by_key(|r| std::cmp::Reverse((r.failures as u64 + r.refused as u64, r.addr)));
        if self.others.any() {
            out.push(std::mem::take(&mut self.others).report(None, self.epoch));
        }
        self.report_gen = self.report_gen.checked_add(1).unwrap_or(1);
        self.pending_since_ms = None;
        out
    }

    /// The report entry for `addr`'s attempt now: its own while there is room, else `others`.
    /// Touches the address, so that one still trying is not forgotten as quiet.
    fn report_slot(&mut self, addr: IpAddr, now_ms: u64) -> &mut ReportAcc {
        let a = self.addrs.touch(addr, AddrState::default);
        let first_in_interval = a.report_gen != self.report_gen;
        a.report_gen = self.report_gen;
        self.pending_since_ms.get_or_insert(now_ms);
        let r = if self.reports.contains_key(&addr) || self.reports.len() < self.cfg.report_addresses_max {
            self.reports.entry(addr).or_insert_with(|| ReportAcc {
                addresses: 1,
                first_ms: now_ms,
                ..Default::default()
            })
        } else {
            if first_in_interval {
                self.others.addresses += 1;
            }
            if !self.others.any() {
                self.others.first_ms = now_ms;
            }
            &mut self.others
        };
        r.last_ms = now_ms;
        r
    }
}

/// A user name or API key ID, inline (no allocation): what a pair is keyed by (hashed) and
/// what a report shows.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Claim {
    User {
        len: u8,
        bytes: [u8; USERNAME_BYTES_MAX],
    },
    Key {
        id: [u8; 8],
    },
    /// Any API-key credential not of the form `vk_<8 hex>_<48 hex>`: no such key exists, and
    /// nothing of it may be logged (it might be a password pasted in the wrong place).
    MalformedKey,
}

impl Claim {
    fn of(who: Login<'_>) -> Claim {
        match who {
            Login::User(name) => {
                // The wire allows at most USERNAME_BYTES_MAX; cut on a character boundary anyway.
                let mut len = name.len().min(USERNAME_BYTES_MAX);
                while !name.is_char_boundary(len) {
                    len -= 1;
                }
                let mut bytes = [0u8; USERNAME_BYTES_MAX];
                bytes[..len].copy_from_slice(&name.as_bytes()[..len]);
                Claim::User { len: len as u8, bytes }
            }
            Login::ApiKey(k) => {
                let hex = |b: &[u8]| b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
                if k.len() == 60 && k.starts_with(b"vk_") && k[11] == b'_' && hex(&k[3..11]) && hex(&k[12..])
                {
                    Claim::Key { id: k[3..11].try_into().unwrap() }
                } else {
                    Claim::MalformedKey
                }
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            Claim::User { len, bytes } => format!("{:?}", String::from_utf8_lossy(&bytes[..*len as usize])),
            Claim::Key { id } => format!("api key vk_{}", String::from_utf8_lossy(id)),
            Claim::MalformedKey => "malformed api key".into(),
        }
    }
}

#[derive(Clone, Default)]
struct ReportAcc {
    addresses: u32,
    failures: u32,
    refused: u32,
    users: u32,
    first_ms: u64,
    last_ms: u64,
    addr_backoff_ms: u64,
    examples: [Option<Claim>; LOGIN_REPORT_EXAMPLES],
}

impl ReportAcc {
    fn any(&self) -> bool {
        self.failures > 0 || self.refused > 0
    }

    fn report(self, addr: Option<IpAddr>, epoch: Instant) -> LoginReport {
        LoginReport {
            addr,
            addresses: self.addresses,
            failures: self.failures,
            refused: self.refused,
            users: self.users,
            examples: self.examples.iter().flatten().map(Claim::describe).collect(),
            first: epoch + Duration::from_millis(self.first_ms),
            last: epoch + Duration::from_millis(self.last_ms),
            address_throttled: Some(Duration::from_millis(self.addr_backoff_ms)).filter(|d| !d.is_zero()),
        }
    }
}

/// A map of at most `max` entries (rounded up to even) kept as two generations, a cheap
/// least-recently-used: entries are inserted, and moved when touched, into `young`; when
/// `young` holds max/2, `old` (everything untouched for a whole generation: the quietest) is
/// dropped at once and `young` becomes `old`. Every operation is O(1). The alternative, a scan
/// for the single quietest entry when full, costs a whole map's worth of steps per insert: a
/// flood of new addresses would turn each failed login into 50K steps. The two tables are
/// reused, so once both have grown nothing is allocated.
struct Generations<K, V> {
    young: HashMap<K, V>,
    old: HashMap<K, V>,
    half: usize,
}

impl<K: Copy + Eq + Hash, V> Generations<K, V> {
    fn new(max: usize) -> Self {
        Generations { young: HashMap::new(), old: HashMap::new(), half: max.div_ceil(2).max(1) }
    }

    fn get(&self, k: &K) -> Option<&V> {
        self.young.get(k).or_else(|| self.old.get(k))
    }

    /// The entry for `k` (made by `new` if there is none), marked as recently used.
    fn touch(&mut self, k: K, new: impl FnOnce() -> V) -> &mut V {
        if !self.young.contains_key(&k) {
            let v = self.old.remove(&k).unwrap_or_else(new);
            if self.young.len() >= self.half {
                std::mem::swap(&mut self.young, &mut self.old);
                self.young.clear();
            }
            self.young.insert(k, v);
        }
        self.young.get_mut(&k).unwrap()
    }

    fn remove(&mut self, k: &K) {
        self.young.remove(k);
        self.old.remove(k);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 3.0, t0);
        for _ in 0..3 {
            assert!(b.has_token(t0));
            b.take();
        }
        assert!(!b.has_token(t0));
        assert!(!b.has_token(t0 + Duration::from_millis(50)));
        assert!(b.has_token(t0 + Duration::from_millis(100)));
        b.take();
        // Refill never exceeds the burst.
        assert!(b.has_token(t0 + Duration::from_secs(60)));
        for _ in 0..3 {
            b.take();
        }
        assert!(!b.has_token(t0 + Duration::from_secs(60)));
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[derive(Debug, PartialEq)]
    enum Outcome {
        Refused(Refusal),
        Failed,
        LoggedIn,
    }

    /// What conn.rs does with one login: refused unchecked, or checked and right or wrong.
    fn login(th: &mut LoginThrottle, addr: IpAddr, who: Login<'_>, now: Instant, right: bool) -> Outcome {
        if let Some(r) = th.check(addr, who, now) {
            return Outcome::Refused(r);
        }
        if right {
            th.succeeded(addr, who);
            Outcome::LoggedIn
        } else {
            th.failed(addr, who, now);
            Outcome::Failed
        }
    }

    fn refused_for(o: Outcome) -> (Duration, bool) {
        match o {
            Outcome::Refused(r) => (r.retry_in, r.whole_address),
            o => panic!("expected a refusal, got {o:?}"),
        }
    }

    fn throttle(t0: Instant) -> LoginThrottle {
        LoginThrottle::new(LoginThrottleConfig::default(), t0)
    }

    #[test]
    fn typo_storm_of_one_user_does_not_block_another_user_from_the_address() {
        let t0 = Instant::now();
        let (x, y) = (ip("10.0.0.1"), ip("10.0.0.2"));
        let mut th = throttle(t0);
        let (mut failed, mut refused) = (0, 0);
        // Alice's client retries a wrong password every 100 µs for 1 s, then every second for
        // an hour; Bob, behind the same NAT, logs in every 10 s throughout.
        let mut t = t0;
        while t < t0 + Duration::from_secs(3600) {
            match login(&mut th, x, Login::User("alice"), t, false) {
                Outcome::Failed => failed += 1,
                Outcome::Refused(r) => {
                    assert!(!r.whole_address, "the address must not be throttled for one user");
                    refused += 1
                }
                Outcome::LoggedIn => unreachable!(),
            }
            if (t - t0).as_millis() % 10_000 == 0 {
                assert_eq!(login(&mut th, x, Login::User("bob"), t, true), Outcome::LoggedIn);
            }
            t += if t < t0 + Duration::from_secs(1) {
                Duration::from_micros(100)
            } else {
                Duration::from_secs(1)
            };
        }
        // 5 failures, then one per back-off (1, 2, … 256 s, then 300 s): ~22 in the hour.
        assert!((15..=30).contains(&failed), "{failed} failures reached the credential check");
        assert!(refused > 10_000);
        assert_eq!(login(&mut th, x, Login::User("bob"), t, true), Outcome::LoggedIn);
        assert_eq!(login(&mut th, y, Login::User("alice"), t, true), Outcome::LoggedIn);
        assert!(!refused_for(login(&mut th, x, Login::User("alice"), t, true)).1);
    }

    #[test]
    fn a_busy_nat_with_occasional_typos_is_never_throttled() {
        let t0 = Instant::now();
        let x = ip("192.0.2.1");
        let mut th = throttle(t0);
        // A day of a typo every 10 s, each from another user, plus 20 users at once every hour
        // (a password change), two of whom mistype five times (so are throttled themselves).
        for i in 0..8640u64 {
            let t = t0 + Duration::from_secs(10 * i);
            let name = format!("user{i}");
            assert_eq!(login(&mut th, x, Login::User(&name), t, false), Outcome::Failed);
            if i % 360 == 0 {
                for j in 0..20 {
                    let name = format!("burst{i}-{j}");
                    let tries = if j % 10 == 0 { 5 } else { 1 };
                    for _ in 0..tries {
                        assert_eq!(login(&mut th, x, Login::User(&name), t, false), Outcome::Failed);
                    }
                }
            }
        }
    }

    #[test]
    fn spraying_many_users_blocks_everyone_from_the_address() {
        let t0 = Instant::now();
        let (x, y) = (ip("203.0.113.7"), ip("203.0.113.8"));
        let mut th = throttle(t0);
        // One try each for 60 users at 10,000 tries a second.
        let mut outcomes = Vec::new();
        for i in 0..60u64 {
            let name = format!("user{i}");
            outcomes.push(login(&mut th, x, Login::User(&name), t0 + Duration::from_micros(100 * i), false));
        }
        assert!(outcomes[..50].iter().all(|o| *o == Outcome::Failed));
        for o in outcomes.drain(50..) {
            assert!(refused_for(o).1);
        }
        // Within 5 ms everyone from x is refused, even with the right password; not from y.
        let t = t0 + ms(6);
        let (wait, whole) = refused_for(login(&mut th, x, Login::User("carol"), t, true));
        assert!(whole && wait <= Duration::from_secs(1) && wait > ms(990), "{wait:?}");
        assert_eq!(login(&mut th, y, Login::User("carol"), t, true), Outcome::LoggedIn);
        // After the back-off one more wrong guess doubles it.
        let t = t0 + ms(1005);
        assert_eq!(login(&mut th, x, Login::User("user61"), t, false), Outcome::Failed);
        assert_eq!(
            refused_for(login(&mut th, x, Login::User("carol"), t, true)),
            (Duration::from_secs(2), true)
        );
    }

    #[test]
    fn pair_backoff_doubles_up_to_5_min_and_is_forgotten_after_15_min() {
        let t0 = Instant::now();
        let x = ip("10.0.0.1");
        let mut th = throttle(t0);
        let alice = Login::User("alice");
        for _ in 0..4 {
            th.failed(x, alice, t0);
        }
        assert_eq!(th.check(x, alice, t0), None);
        th.failed(x, alice, t0);
        let mut t = t0;
        let mut expected = Duration::from_secs(1);
        for _ in 0..12 {
            let (wait, whole) = refused_for(login(&mut th, x, alice, t, false));
            assert_eq!((wait, whole), (expected, false));
            t += wait;
            assert_eq!(login(&mut th, x, alice, t, false), Outcome::Failed);
            expected = (expected * 2).min(LOGIN_BACKOFF_MAX);
        }
        assert_eq!(expected, Duration::from_secs(300));
        assert_eq!(
            th.check(x, alice, t),
            Some(Refusal { retry_in: Duration::from_secs(300), whole_address: false })
        );
        // 15 min without failures: a fresh count.
        t += LOGIN_FAILURE_MEMORY;
        for _ in 0..4 {
            assert_eq!(login(&mut th, x, alice, t, false), Outcome::Failed);
        }
        assert_eq!(login(&mut th, x, alice, t, false), Outcome::Failed);
        assert_eq!(refused_for(login(&mut th, x, alice, t, false)), (Duration::from_secs(1), false));
    }

    #[test]
    fn address_backoff_doubles_drains_and_is_forgotten_after_15_min() {
        let t0 = Instant::now();
        let x = ip("203.0.113.7");
        let mut th = throttle(t0);
        let mut n = 0u32;
        let mut spray = |th: &mut LoginThrottle, t: Instant| {
            n += 1;
            login(th, x, Login::User(&format!("user{n}")), t, false)
        };
        for _ in 0..50 {
            assert_eq!(spray(&mut th, t0), Outcome::Failed);
        }
        let mut t = t0;
        let mut expected = Duration::from_secs(1);
        assert_eq!(refused_for(spray(&mut th, t)), (expected, true));
        let mut total = 50;
        for _ in 0..10 {
            // After each back-off the sprayer gets one try, plus at most one per 6 s the
            // back-off lasted (the count drained meanwhile), and the back-off doubles.
            t += expected;
            let mut through = 0;
            let wait = loop {
                match spray(&mut th, t) {
                    Outcome::Failed => through += 1,
                    o => break refused_for(o),
                }
            };
            assert!(
                (1..=1 + expected.as_secs() / 6).contains(&through),
                "{through} tries after {expected:?}"
            );
            total += through;
            expected = (expected * 2).min(LOGIN_BACKOFF_MAX);
            assert_eq!(wait, (expected, true));
        }
        assert_eq!(expected, LOGIN_BACKOFF_MAX);
        // In the long run: the threshold, one try per 6 s, one per back-off.
        assert!(total <= 50 + (t - t0).as_secs() / 6 + 10, "{total} tries in {:?}", t - t0);
        assert!(total > 50 + (t - t0).as_secs() / 6 - 10, "{total} tries in {:?}", t - t0);
        // 6 min later (the back-off is over, the count has drained) 49 users may fail again;
        // the 50th brings the back-off back where it was, not to 1 s.
        t += Duration::from_secs(360);
        for _ in 0..50 {
            assert_eq!(spray(&mut th, t), Outcome::Failed);
        }
        assert_eq!(refused_for(spray(&mut th, t)), (LOGIN_BACKOFF_MAX, true));
        // 15 min quiet: forgotten.
        t += LOGIN_FAILURE_MEMORY;
        for _ in 0..50 {
            assert_eq!(spray(&mut th, t), Outcome::Failed);
        }
        assert_eq!(refused_for(spray(&mut th, t)), (Duration::from_secs(1), true));
    }

    #[test]
    fn success_clears_the_pair_but_not_the_address_count() {
        let t0 = Instant::now();
        let x = ip("10.0.0.1");
        let mut th = throttle(t0);
        let alice = Login::User("alice");
        for _ in 0..4 {
            assert_eq!(login(&mut th, x, alice, t0, false), Outcome::Failed);
        }
        assert_eq!(login(&mut th, x, alice, t0, true), Outcome::LoggedIn);
        // Alice's count starts again: 4 more failures do not throttle her…
        for _ in 0..4 {
            assert_eq!(login(&mut th, x, alice, t0, false), Outcome::Failed);
        }
        assert_eq!(th.check(x, alice, t0), None);
        // …but all 8 still count for the address: 41 other users bring it to 49, and the
        // success of one of them changes nothing there.
        for i in 0..41 {
            assert_eq!(login(&mut th, x, Login::User(&format!("u{i}")), t0, false), Outcome::Failed);
        }
        assert_eq!(login(&mut th, x, Login::User("bob"), t0, true), Outcome::LoggedIn);
        assert_eq!(login(&mut th, x, Login::User("mallory"), t0, false), Outcome::Failed);
        assert!(refused_for(login(&mut th, x, Login::User("bob"), t0, true)).1);
    }

    #[test]
    fn api_keys_count_per_key_id_and_never_show_the_secret() {
        let t0 = Instant::now();
        let x = ip("10.0.0.9");
        let mut th = throttle(t0);
        let revoked = format!("vk_0badc0de_{}", "ab".repeat(24));
        let good = format!("vk_600dcafe_{}", "cd".repeat(24));
        // An app with a revoked key retries; another app on the same host keeps working.
        for _ in 0..5 {
            assert_eq!(login(&mut th, x, Login::ApiKey(revoked.as_bytes()), t0, false), Outcome::Failed);
        }
        assert!(!refused_for(login(&mut th, x, Login::ApiKey(revoked.as_bytes()), t0, false)).1);
        assert_eq!(login(&mut th, x, Login::ApiKey(good.as_bytes()), t0, true), Outcome::LoggedIn);
        // A user named like the key is someone else.
        assert_eq!(th.check(x, Login::User("vk_0badc0de"), t0), None);
        // Anything not shaped like a key is one pseudo-key per address.
        for i in 0..5 {
            let junk = format!("hunter{i}");
            assert_eq!(login(&mut th, x, Login::ApiKey(junk.as_bytes()), t0, false), Outcome::Failed);
        }
        assert!(th.check(x, Login::ApiKey(b"something else"), t0).is_some());
        let r = th.take_report(t0 + ms(LOGIN_REPORT_INTERVAL_MS));
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].failures, r[0].refused, r[0].users), (10, 2, 2));
        assert_eq!(r[0].examples, ["api key vk_0badc0de", "malformed api key"]);
        let line = r[0].to_string();
        assert!(!line.contains("abab") && !line.contains("hunter"), "{line}");
    }

    #[test]
    fn reports_come_once_per_address_per_interval_with_the_counts_since_the_last() {
        let t0 = Instant::now();
        let (x, y) = (ip("10.0.0.1"), ip("10.0.0.2"));
        let mut th = throttle(t0);
        assert!(th.take_report(t0).is_empty());
        for (who, n) in [("alice", 3), ("bob", 2), ("carol", 1), ("dave", 1)] {
            for _ in 0..n {
                th.failed(x, Login::User(who), t0 + ms(1));
            }
        }
        th.failed(y, Login::User("erin"), t0 + ms(500));
        th.failed(y, Login::User("erin"), t0 + ms(2000));
        assert!(th.take_report(t0 + ms(1)).is_empty());
        assert!(th.take_report(t0 + ms(10_000)).is_empty());
        let r = th.take_report(t0 + ms(10_001));
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].addr, Some(x));
        assert_eq!((r[0].addresses, r[0].failures, r[0].refused, r[0].users), (1, 7, 0, 4));
        assert_eq!(r[0].examples, ["\"alice\"", "\"bob\"", "\"carol\""]);
        assert_eq!(r[0].address_throttled, None);
        assert_eq!((r[0].first, r[0].last), (t0 + ms(1), t0 + ms(1)));
        assert_eq!(
            r[0].to_string(),
            "10.0.0.1: 7 failed logins (4 users: \"alice\", \"bob\", \"carol\", …) in 0.0 s"
        );
        assert_eq!(r[1].addr, Some(y));
        assert_eq!((r[1].failures, r[1].users, r[1].last - r[1].first), (2, 1, ms(1500)));
        assert!(th.take_report(t0 + ms(10_001)).is_empty());
        assert!(th.take_report(t0 + ms(60_000)).is_empty());
        // The next interval opens with the next attempt: alice again, now throttled, and refused.
        let t = t0 + ms(60_000);
        th.failed(x, Login::User("alice"), t);
        th.failed(x, Login::User("alice"), t);
        assert!(th.check(x, Login::User("alice"), t).is_some());
        assert!(th.take_report(t + ms(9_999)).is_empty());
        let r = th.take_report(t + ms(10_000));
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].failures, r[0].refused, r[0].users), (2, 1, 1));
        assert_eq!(r[0].address_throttled, None, "only alice is throttled, not the address");
    }

    #[test]
    fn ten_thousand_failures_make_one_report() {
        for cfg in [
            LoginThrottleConfig::default(),
            LoginThrottleConfig { user_fail_threshold: 0, addr_fail_threshold: 0, ..Default::default() },
        ] {
            let t0 = Instant::now();
            let x = ip("203.0.113.7");
            let off = cfg.addr_fail_threshold == 0;
            let mut th = LoginThrottle::new(cfg, t0);
            let mut lines = Vec::new();
            // 10,000 tries in 1 s over 100 users; the caller asks for a report after each.
            for i in 0..10_000u64 {
                let now = t0 + Duration::from_micros(100 * i);
                let name = format!("user{}", i % 100);
                let _ = login(&mut th, x, Login::User(&name), now, false);
                lines.extend(th.take_report(now));
            }
            for s in 1..=30 {
                lines.extend(th.take_report(t0 + Duration::from_secs(s)));
            }
            assert_eq!(lines.len(), 1, "{lines:?}");
            let r = &lines[0];
            assert_eq!(r.failures + r.refused, 10_000);
            if off {
                assert_eq!((r.failures, r.users, r.address_throttled), (10_000, 100, None));
            } else {
                assert_eq!((r.failures, r.users), (50, 50));
                assert_eq!(r.address_throttled, Some(Duration::from_secs(1)));
                let line = r.to_string();
                let want = concat!(
                    r#"203.0.113.7: 50 failed logins (50 users: "user0", "user1", "user2", …), "#,
                    "9950 refused unchecked in 1.0 s; address throttled (back-off up to 1 s)"
                );
                assert_eq!(line, want);
            }
        }
    }

    #[test]
    fn reports_itemise_a_bounded_number_of_addresses_and_sum_the_rest() {
        let t0 = Instant::now();
        let mut th = throttle(t0);
        for i in 0..1000u32 {
            let a = IpAddr::from((0x0a00_0000 + i).to_be_bytes());
            th.failed(a, Login::User("root"), t0);
            th.failed(a, Login::User("admin"), t0);
        }
        let r = th.take_report(t0 + ms(LOGIN_REPORT_INTERVAL_MS));
        assert_eq!(r.len(), LOGIN_REPORT_ADDRESSES_MAX + 1);
        let rest = r.last().unwrap();
        assert_eq!(rest.addr, None);
        let n = 1000 - LOGIN_REPORT_ADDRESSES_MAX as u32;
        assert_eq!((rest.addresses, rest.failures, rest.users), (n, 2 * n, 2 * n));
        assert!(rest.to_string().starts_with("936 more addresses: 1872 failed logins"), "{rest}");
    }

    #[test]
    fn report_lines_escape_user_names() {
        let t0 = Instant::now();
        let mut th = throttle(t0);
        th.failed(ip("10.0.0.1"), Login::User("x\n2024-01-01 INFO fake line\u{1b}[31m"), t0);
        let line = th.take_report(t0 + ms(LOGIN_REPORT_INTERVAL_MS))[0].to_string();
        assert!(!line.chars().any(char::is_control), "{line:?}");
        assert!(line.contains(r#""x\n2024-01-01 INFO fake line\u{1b}[31m""#), "{line}");
    }

    #[test]
    fn zero_thresholds_never_refuse() {
        let t0 = Instant::now();
        let x = ip("10.0.0.1");
        let cfg =
            LoginThrottleConfig { user_fail_threshold: 0, addr_fail_threshold: 0, ..Default::default() };
        let mut th = LoginThrottle::new(cfg, t0);
        for i in 0..1000 {
            th.failed(x, Login::User(if i % 2 == 0 { "alice" } else { "b" }), t0);
            assert_eq!(th.check(x, Login::User("alice"), t0), None);
        }
        // Each threshold works alone too.
        let cfg = LoginThrottleConfig { user_fail_threshold: 0, ..Default::default() };
        let mut th = LoginThrottle::new(cfg, t0);
        for _ in 0..49 {
            th.failed(x, Login::User("alice"), t0);
        }
        assert_eq!(th.check(x, Login::User("alice"), t0), None);
        th.failed(x, Login::User("alice"), t0);
        assert!(th.check(x, Login::User("bob"), t0).unwrap().whole_address);
        let cfg = LoginThrottleConfig { addr_fail_threshold: 0, ..Default::default() };
        let mut th = LoginThrottle::new(cfg, t0);
        for i in 0..1000 {
            th.failed(x, Login::User(&format!("u{i}")), t0);
        }
        assert_eq!(th.check(x, Login::User("alice"), t0), None);
    }

    #[test]
    fn memory_is_bounded_under_a_million_addresses_and_pairs() {
        let t0 = Instant::now();
        let mut th = throttle(t0);
        let busy = ip("198.51.100.1");
        for i in 0..50 {
            th.failed(busy, Login::User(&format!("u{i}")), t0);
        }
        let (pairs_cap, addrs_cap) = (th.pairs.young.capacity(), th.addrs.young.capacity());
        for i in 0..1_000_000u32 {
            // All within the busy address's first back-off (1 s).
            let now = t0 + Duration::from_nanos(100 * i as u64);
            // A million addresses, each with its own user: a million pairs too.
            th.failed(IpAddr::from((0x0a00_0000 + i).to_be_bytes()), Login::User(&format!("user{i}")), now);
            // And a million users from one address (the caller would have stopped at 50).
            th.failed(ip("192.0.2.1"), Login::User(&format!("other{i}")), now);
            // The busy sprayer keeps trying while refused: it is not forgotten as quiet.
            if i % 1000 == 0 {
                assert!(th.check(busy, Login::User("x"), now).is_some(), "forgot the busy address at {i}");
            }
            assert!(th.reports.len() <= LOGIN_REPORT_ADDRESSES_MAX);
        }
        let r = th.take_report(t0 + ms(LOGIN_REPORT_INTERVAL_MS));
        assert_eq!(r.len(), LOGIN_REPORT_ADDRESSES_MAX + 1);
        assert!(th.pairs.len() <= LOGIN_THROTTLE_PAIRS_MAX, "{}", th.pairs.len());
        assert!(th.addrs.len() <= LOGIN_THROTTLE_ADDRESSES_MAX, "{}", th.addrs.len());
        assert!(th.pairs.len() >= LOGIN_THROTTLE_PAIRS_MAX / 2);
        // The tables stop at 2^15 buckets each (capacity 7/8 of that).
        for cap in [
            th.pairs.young.capacity(),
            th.pairs.old.capacity(),
            th.addrs.young.capacity(),
            th.addrs.old.capacity(),
        ] {
            assert!(cap <= LOGIN_THROTTLE_PAIRS_MAX / 2, "{cap}, initially {pairs_cap} / {addrs_cap}");
        }
        // Both maps at the bound: 4 tables of 2^15 buckets, each an entry and a control byte.
        let pair = std::mem::size_of::<((IpAddr, u64), PairState)>() + 1;
        let addr = std::mem::size_of::<(IpAddr, AddrState)>() + 1;
        assert!(2 * 32_768 * (pair + addr) <= 8 << 20, "{pair} bytes a pair, {addr} an address");
    }
}
