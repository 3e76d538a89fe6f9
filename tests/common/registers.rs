//! Clients that write and read a few registers through one node each and record what they saw,
//! for `velocity::linearizability::check`: every operation's call and return on one clock, a
//! write cut off (its node killed, its outcome unknown) as an unknown outcome.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use velocity::client::{build, Client, ConnectOptions, Credentials};
use velocity::linearizability::{Input, Operation, Output};
use velocity::protocol::{ErrorCode, Value};

/// Where a client connects (plaintext, trusting the server on first contact).
#[derive(Clone)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub known_hosts: std::path::PathBuf,
}

impl Target {
    fn options(&self) -> ConnectOptions {
        let mut o = ConnectOptions::new(self.host.clone(), self.port);
        o.tls = false;
        o.trust = velocity::client::trust::Trust {
            known_hosts: Some(self.known_hosts.clone()),
            new_host: velocity::client::trust::NewHost::Accept,
            pinned: None,
        };
        o.timeout = Some(Duration::from_secs(20));
        o
    }
}

/// Start client `id` on `target` (alternately writing unique values and reading `registers`
/// keys) until `stop`; its operations go to `history`.
pub fn spawn(
    id: u64,
    target: Target,
    creds: Credentials,
    registers: u64,
    started: Instant,
    stop: Arc<AtomicBool>,
    history: Arc<Mutex<Vec<Operation>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let opts = target.options();
        let mut conn: Option<Client> = None;
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let Some(cl) = conn.as_mut() else {
                // Its node is down or cut off: try again, it comes back.
                conn = Client::connect(&opts, &creds).ok();
                if conn.is_none() {
                    std::thread::sleep(Duration::from_millis(50));
                }
                continue;
            };
            n += 1;
            let key = format!("reg-{}", (n * 7 + id) % registers).into_bytes();
            let write = n % 2 == 0;
            let value = format!("{id}-{n}").into_bytes();
            let call_ns = started.elapsed().as_nanos() as u64;
            let (sql, input) = if write {
                (build::set(&key, &value), Input::Put { key: key.clone(), value: value.clone() })
            } else {
                (build::get(&key), Input::Get { key: key.clone() })
            };
            let res = cl.execute(&sql);
            let return_ns = started.elapsed().as_nanos() as u64;
            let done = |output| Operation {
                client: id,
                call_ns,
                return_ns: Some(return_ns),
                input: input.clone(),
                output,
            };
            let op = match res {
                Ok(rs) if write => {
                    assert_eq!(rs.affected, 1);
                    Some(done(Output::Ok))
                }
                Ok(rs) => match &rs.rows[0][0] {
                    Value::Bytes(b) => Some(done(Output::Value(Some(b.clone())))),
                    v => panic!("{v:?}"),
                },
                Err(e) if !write && e.code() == Some(ErrorCode::KeyNotFound) => {
                    Some(done(Output::Value(None)))
                }
                // Refused and not applied: out of the history, as the client was told.
                Err(e) if e.code() == Some(ErrorCode::ServerOverloaded) => None,
                Err(e) if e.code().is_some() && e.code() != Some(ErrorCode::OutcomeUnknown) => panic!("{e}"),
                // OUTCOME_UNKNOWN, or the connection lost mid-request: a write may or may not
                // have happened, a read tells nothing.
                Err(_) => {
                    conn = None;
                    write.then(|| Operation {
                        client: id,
                        call_ns,
                        return_ns: None,
                        input: input.clone(),
                        output: Output::Unknown,
                    })
                }
            };
            history.lock().unwrap().extend(op);
        }
    })
}
