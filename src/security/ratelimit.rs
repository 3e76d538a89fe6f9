//! Token buckets for rate limits, and per-address login throttling. No I/O, no clock: callers
//! pass the time, so tests drive it by hand.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

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

/// Failed logins per source address. Past `threshold` failures an address is refused without
/// a credential check for a back-off that doubles with each further failure, up to a ceiling.
/// A successful login clears the address. Bounded: at most `max_addresses` are remembered.
pub struct LoginThrottle {
    threshold: u32,
    max_addresses: usize,
    by_addr: HashMap<IpAddr, Failures>,
}

#[derive(Clone, Copy, Debug)]
struct Failures {
    count: u32,
    blocked_until: Option<Instant>,
    last: Instant,
}

pub const LOGIN_BACKOFF_FIRST: Duration = Duration::from_secs(1);
pub const LOGIN_BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Failures are forgotten after this long without another.
pub const LOGIN_FAILURE_MEMORY: Duration = Duration::from_secs(900);

impl LoginThrottle {
    pub fn new(threshold: u32, max_addresses: usize) -> Self {
        LoginThrottle { threshold, max_addresses, by_addr: HashMap::new() }
    }

    /// How long `addr` must still wait, if it is being throttled.
    pub fn blocked(&self, addr: IpAddr, now: Instant) -> Option<Duration> {
        if self.threshold == 0 {
            return None;
        }
        let f = self.by_addr.get(&addr)?;
        f.blocked_until.filter(|t| *t > now).map(|t| t - now)
    }

    pub fn failed(&mut self, addr: IpAddr, now: Instant) {
        if self.threshold == 0 {
            return;
        }
        if self.by_addr.len() >= self.max_addresses && !self.by_addr.contains_key(&addr) {
            self.by_addr.retain(|_, f| now.saturating_duration_since(f.last) < LOGIN_FAILURE_MEMORY);
            if self.by_addr.len() >= self.max_addresses {
                // Still full of recent failures: forget the quietest address.
                if let Some(k) = self.by_addr.iter().min_by_key(|(_, f)| f.last).map(|(k, _)| *k) {
                    self.by_addr.remove(&k);
                }
            }
        }
        let f = self.by_addr.entry(addr).or_insert(Failures { count: 0, blocked_until: None, last: now });
        if now.saturating_duration_since(f.last) >= LOGIN_FAILURE_MEMORY {
            f.count = 0;
        }
        f.count += 1;
        f.last = now;
        if f.count >= self.threshold {
            let doublings = (f.count - self.threshold).min(16);
            let backoff = LOGIN_BACKOFF_FIRST.saturating_mul(1 << doublings).min(LOGIN_BACKOFF_MAX);
            f.blocked_until = Some(now + backoff);
        }
    }

    pub fn succeeded(&mut self, addr: IpAddr) {
        self.by_addr.remove(&addr);
    }

    pub fn len(&self) -> usize {
        self.by_addr.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_addr.is_empty()
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

    #[test]
    fn throttle_backs_off_doubling_and_forgives_success() {
        let t0 = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let mut th = LoginThrottle::new(3, 100);
        th.failed(a, t0);
        th.failed(a, t0);
        assert_eq!(th.blocked(a, t0), None);
        th.failed(a, t0);
        assert_eq!(th.blocked(a, t0), Some(Duration::from_secs(1)));
        assert_eq!(th.blocked(other, t0), None);
        let t1 = t0 + Duration::from_secs(2);
        assert_eq!(th.blocked(a, t1), None);
        th.failed(a, t1);
        assert_eq!(th.blocked(a, t1), Some(Duration::from_secs(2)));
        th.succeeded(a);
        assert_eq!(th.blocked(a, t1), None);
    }

    #[test]
    fn throttle_memory_is_bounded() {
        let t0 = Instant::now();
        let mut th = LoginThrottle::new(3, 10);
        for i in 0..1000u32 {
            th.failed(IpAddr::from(i.to_be_bytes()), t0 + Duration::from_millis(i as u64));
        }
        assert!(th.len() <= 10);
    }
}
