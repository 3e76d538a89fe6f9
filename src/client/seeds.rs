//! A client of a cluster (docs/cluster.md): several seed addresses, any node serving every key.
//! It connects to the first seed that answers, and when its node fails it goes on with the next:
//! a read, and a statement the server refused without changing anything (SERVER_OVERLOADED), are
//! sent again; a write whose connection died after it was sent is not, and is reported as
//! OUTCOME_UNKNOWN, since it may have been applied.

use super::{Client, ClientError, ConnectOptions, Credentials, Result};
use crate::protocol::{ErrorCode, ResultSet};
use std::time::Duration;

/// How a `SeedClient` retries.
#[derive(Clone, Debug)]
pub struct Retry {
    /// Tries of one statement at most, the first included.
    pub attempts: usize,
    /// The pause before a retry, doubled after each (a node failing over takes a second or two).
    pub backoff: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry { attempts: 6, backoff: Duration::from_millis(100) }
    }
}

pub struct SeedClient {
    seeds: Vec<ConnectOptions>,
    creds: Credentials,
    retry: Retry,
    /// The seed connected to, and the connection.
    current: Option<(usize, Client)>,
}

/// Whether `sql` only reads: its first keyword is SELECT or SHOW (comments and spaces before it
/// skipped). Anything else may write, and is never sent twice after a lost connection.
pub fn is_read(sql: &str) -> bool {
    let mut s = sql.trim_start();
    loop {
        if let Some(rest) = s.strip_prefix("--") {
            s = rest.split_once('\n').map_or("", |(_, r)| r).trim_start();
        } else if let Some(rest) = s.strip_prefix("/*") {
            s = rest.split_once("*/").map_or("", |(_, r)| r).trim_start();
        } else {
            break;
        }
    }
    let word: String = s.chars().take_while(|c| c.is_ascii_alphabetic()).collect();
    word.eq_ignore_ascii_case("select") || word.eq_ignore_ascii_case("show")
}

fn connection_lost(e: &ClientError) -> bool {
    matches!(e, ClientError::Io(_) | ClientError::Disconnected { .. })
}

impl SeedClient {
    /// Connect to the first of `seeds` that answers and log in.
    pub fn connect(seeds: Vec<ConnectOptions>, creds: Credentials, retry: Retry) -> Result<SeedClient> {
        if seeds.is_empty() {
            return Err(ClientError::Usage("no seed address".into()));
        }
        let mut c = SeedClient { seeds, creds, retry, current: None };
        c.reconnect(0)?;
        Ok(c)
    }

    /// Which seed the client is connected to (its index), if any.
    pub fn connected_to(&self) -> Option<usize> {
        self.current.as_ref().map(|(i, _)| *i)
    }

    /// Connect to the seeds in turn from `first`; the last error if none answers.
    fn reconnect(&mut self, first: usize) -> Result<()> {
        self.current = None;
        let mut last = None;
        for k in 0..self.seeds.len() {
            let i = (first + k) % self.seeds.len();
            match Client::connect(&self.seeds[i], &self.creds) {
                Ok(c) => {
                    self.current = Some((i, c));
                    return Ok(());
                }
                // A server that refuses this client's identity or login refuses it everywhere.
                Err(e @ (ClientError::Auth { .. } | ClientError::Trust(_))) => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("at least one seed"))
    }

    /// Run one statement, through another node if this one fails (see the module's rules).
    pub fn execute(&mut self, sql: &str) -> Result<ResultSet> {
        let read = is_read(sql);
        let mut pause = self.retry.backoff;
        let mut next = self.connected_to().unwrap_or(0);
        let mut attempt = 1;
        loop {
            let last_try = attempt >= self.retry.attempts;
            if self.current.is_none() {
                if let Err(e) = self.reconnect(next) {
                    if last_try {
                        return Err(e);
                    }
                    attempt += 1;
                    std::thread::sleep(pause);
                    pause *= 2;
                    continue;
                }
            }
            let (i, c) = self.current.as_mut().expect("connected above");
            let i = *i;
            match c.execute(sql) {
                Ok(rs) => return Ok(rs),
                Err(e) if e.code() == Some(ErrorCode::ServerOverloaded) && !last_try => {}
                Err(e) if connection_lost(&e) => {
                    self.current = None;
                    next = i + 1;
                    if !read {
                        return Err(ClientError::OutcomeUnknown(format!(
                            "the connection to {} was lost after the write was sent ({e}): it may or may not have been applied",
                            self.seeds[i].host_label()
                        )));
                    }
                    if last_try {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
            attempt += 1;
            std::thread::sleep(pause);
            pause *= 2;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_selects_and_shows_are_reads() {
        for sql in
            ["SELECT value FROM kv WHERE key = 'a'", "  select 1", "-- c\nSHOW STATUS", "/* x */ Select"]
        {
            assert!(is_read(sql), "{sql}");
        }
        for sql in [
            "INSERT INTO kv VALUES ('a', 'b')",
            "UPDATE kv SET value = 'x'",
            "DELETE FROM kv",
            "selectx",
            "",
            "-- SELECT",
        ] {
            assert!(!is_read(sql), "{sql}");
        }
    }
}
