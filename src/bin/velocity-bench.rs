//! velocity-bench: a closed-loop load generator for Velocity. Each connection keeps
//! `--pipeline` requests in flight, checks every reply, and records each request's latency (from
//! the write of its batch to the return of the read that brought its reply) in an HDR
//! histogram, one for reads and one for writes; the report gives throughput and percentiles up
//! to p99.99 and the maximum, of all requests and (mixed workloads) of GET and SET apart. Keys
//! are `--key-prefix` and a 12-digit number; the last line says which are left.
//! `--plot` draws latency by percentile as SVG; `--plot-compare` draws saved runs (.hgrm) together.

use clap::Parser;
use hdrhistogram::Histogram;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use velocity::client::trust::TrustArgs;
use velocity::client::ConnectOptions;
use velocity::client::{build, derive, Client, Credentials};
use velocity::protocol::{
    decode_frame, encode_frame, AuthRequest, Decoded, Hello, Message, MessageType, Peer, ServerInfo, VERSION,
};
use velocity::server::runtime::{self, Placement, TcpStream};
use velocity::server::transport::Transport;
use velocity::sql::{quote_literal, quote_literal_into};

#[derive(Parser, Clone)]
#[command(name = "velocity-bench", version, about = "Load generator and latency histograms for Velocity")]
struct Args {
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, short = 'p', default_value_t = 7411)]
    port: u16,
    #[arg(long, short = 'c', default_value_t = 50)]
    connections: usize,
    /// Requests each connection keeps in flight.
    #[arg(long, short = 'P', default_value_t = 1)]
    pipeline: usize,
    /// Client threads (glommio executors; unpinned, so taskset decides where they run).
    #[arg(long, short = 't', default_value_t = 1)]
    threads: usize,
    #[arg(long, default_value_t = 10)]
    duration_s: u64,
    /// Stop after this many requests instead of after --duration-s.
    #[arg(long)]
    requests: Option<u64>,
    #[arg(long, default_value_t = 1)]
    warmup_s: u64,
    /// get | set | incr | mixed:READ_PCT | range:N | batch:N (incr: counters `counter:%012d`, as redis-benchmark -t incr)
    #[arg(long, default_value = "get")]
    workload: String,
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// uniform | zipf:S
    #[arg(long, default_value = "uniform")]
    key_dist: String,
    #[arg(long, default_value_t = 16)]
    value_bytes: usize,
    /// Skip loading the key space before the run.
    #[arg(long)]
    no_populate: bool,
    #[arg(long, short = 'u', default_value = "admin")]
    user: String,
    /// Read the password from standard input (else VELOCITY_PASSWORD).
    #[arg(long)]
    password_stdin: bool,
    #[command(flatten)]
    trust: TrustArgs,
    /// Once every connection is logged in, hold them all idle this long before the load starts
    /// (for measuring memory per idle connection).
    #[arg(long, default_value_t = 0)]
    idle_s: u64,
    /// Pause between a connection's rounds of requests: a light load spread over many
    /// connections (0: closed loop, as fast as replies come).
    #[arg(long, default_value_t = 0)]
    think_ms: u64,
    /// Keys are this prefix and a 12-digit number, 0 to --keys - 1: they stay after the run
    /// (the last line says which, and how to remove them).
    #[arg(long, default_value = "velocity-bench:")]
    key_prefix: String,
    /// Write an SVG chart of latency by percentile here (log scale of 1/(1-p), as HdrHistogram
    /// plots): p50, p99 and p99.9 marked, throughput and command in the title; GET and SET apart
    /// for mixed workloads. With --plot-compare: the chart of those files.
    #[arg(long)]
    plot: Option<String>,
    /// Draw these latency distributions (.hgrm files written by --hist-out) in one chart at
    /// --plot, instead of running a benchmark: `--plot-compare a.hgrm b.hgrm --plot ab.svg`.
    #[arg(long, num_args = 1.., value_name = "HGRM", requires = "plot")]
    plot_compare: Vec<String>,
    /// Write the latency distribution (.hgrm, HdrHistogram's percentile format, in ms) here;
    /// mixed workloads also write GET and SET apart, to NAME.get.hgrm and NAME.set.hgrm.
    #[arg(long)]
    hist_out: Option<String>,
    /// Print a JSON summary instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy)]
enum Workload {
    Get,
    Set,
    Mixed(u32),
    Range(u32),
    Batch(u32),
    /// `INSERT … ON CONFLICT (key) DO UPDATE SET value = value + 1 RETURNING value` on the keys
    /// `counter:%012d`, as redis-benchmark's INCR names them.
    Incr,
}

fn parse_workload(s: &str) -> Result<Workload, String> {
    let num = |v: &str| v.parse::<u32>().map_err(|_| format!("bad number in --workload {s}"));
    Ok(match s.split_once(':') {
        None if s == "get" => Workload::Get,
        None if s == "set" => Workload::Set,
        None if s == "incr" => Workload::Incr,
        Some(("mixed", p)) => Workload::Mixed(num(p)?.min(100)),
        Some(("range", n)) => Workload::Range(num(n)?.max(1)),
        Some(("batch", n)) => Workload::Batch(num(n)?.max(1)),
        _ => {
            return Err(format!(
                "unknown --workload {s}: get | set | incr | mixed:READ_PCT | range:N | batch:N"
            ))
        }
    })
}

fn key(prefix: &str, i: u64) -> Vec<u8> {
    let mut k = Vec::new();
    key_into(&mut k, prefix, i);
    k
}

/// Key `i`: the prefix and `i` in at least 12 digits, so that keys sort as their numbers do.
/// Into a buffer, as the request loop builds every statement without allocating (a load
/// generator that costs more per request than the server measures itself).
fn key_into(k: &mut Vec<u8>, prefix: &str, i: u64) {
    k.clear();
    k.extend_from_slice(prefix.as_bytes());
    let mut digits = itoa::Buffer::new();
    let d = digits.format(i).as_bytes();
    k.resize(k.len() + 12usize.saturating_sub(d.len()), b'0');
    k.extend_from_slice(d);
}

fn value(i: u64, len: usize) -> Vec<u8> {
    let mut v = Vec::new();
    value_into(&mut v, i, len);
    v
}

/// The value stored under key `i`: deterministic, so every GET reply can be checked.
fn value_into(v: &mut Vec<u8>, i: u64, len: usize) {
    v.clear();
    v.push(b'v');
    v.extend_from_slice(itoa::Buffer::new().format(i).as_bytes());
    v.push(b'-');
    while v.len() < len {
        v.push(b'a' + (v.len() % 26) as u8);
    }
    v.truncate(len.max(1));
}

/// Samples key indices; zipf by inverse CDF over precomputed weights.
enum KeyDist {
    Uniform(u64),
    Zipf(Vec<f64>),
}

impl KeyDist {
    fn sample(&self, rng: &mut u64) -> u64 {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        match self {
            KeyDist::Uniform(n) => *rng % n,
            KeyDist::Zipf(cdf) => {
                let u = (*rng >> 11) as f64 / (1u64 << 53) as f64;
                cdf.partition_point(|c| *c < u) as u64
            }
        }
    }
}

struct Shared {
    args: Args,
    workload: Workload,
    dist: KeyDist,
    credential: [u8; 32],
    /// The server key, checked once through the trust rules; every TLS connection must match it.
    server_fingerprint: [u8; 32],
    addr: SocketAddr,
    recording: AtomicBool,
    stop: AtomicBool,
    done: AtomicU64,
    errors: AtomicU64,
    wrong: AtomicU64,
    /// Latencies of reads (GET, range) and of writes (SET, batch), apart.
    hist: Mutex<[Histogram<u64>; 2]>,
    first_error: Mutex<Option<String>>,
    /// Connections logged in, and whether the idle hold is over.
    connected: AtomicU64,
    released: AtomicBool,
}

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap()
}

fn note_error(sh: &Shared, what: String) {
    sh.errors.fetch_add(1, Ordering::Relaxed);
    let mut f = sh.first_error.lock().unwrap();
    if f.is_none() {
        *f = Some(what);
    }
}

/// Check one reply frame against what the request expects (`scratch` holds the expected value).
fn check(
    sh: &Shared,
    kind: u8,
    payload: &[u8],
    expect_value: Option<u64>,
    expect_affected: Option<u64>,
    scratch: &mut Vec<u8>,
) {
    if kind == MessageType::Error as u8 {
        let m = Message::decode(kind, payload, Peer::Server).map(|m| format!("{m:?}")).unwrap_or_default();
        note_error(sh, m);
        return;
    }
    if kind != MessageType::Response as u8 {
        note_error(sh, format!("unexpected frame type 0x{kind:02x}"));
        return;
    }
    if let Some(i) = expect_value {
        // One column "value", one row, one BYTES value: fixed offsets.
        value_into(scratch, i, sh.args.value_bytes);
        let want = &scratch[..];
        let ok = payload.len() == 2 + 7 + 4 + 5 + want.len() + 8 && payload[18..18 + want.len()] == *want;
        if !ok {
            sh.wrong.fetch_add(1, Ordering::Relaxed);
        }
    }
    if let Some(n) = expect_affected {
        let got =
            payload.len() >= 8 && u64::from_le_bytes(payload[payload.len() - 8..].try_into().unwrap()) == n;
        if !got {
            sh.wrong.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn handshake(sh: &Shared, s: &mut Transport, buf: &mut Vec<u8>) -> Result<(), String> {
    let mut out = Vec::new();
    Message::Hello(Hello { versions: vec![VERSION], client: "velocity-bench".into() }).encode(&mut out);
    s.write_all(&out).await.map_err(|e| e.to_string())?;
    let Message::ServerInfo(_) = read_msg(s, buf).await? else {
        return Err("expected SERVER_INFO".into());
    };
    out.clear();
    Message::AuthRequest(AuthRequest {
        method: AuthRequest::METHOD_PASSWORD,
        username: sh.args.user.clone(),
        credential: sh.credential.to_vec(),
    })
    .encode(&mut out);
    s.write_all(&out).await.map_err(|e| e.to_string())?;
    match read_msg(s, buf).await? {
        Message::AuthResponse { status: 0, .. } => Ok(()),
        m => Err(format!("login failed: {m:?}")),
    }
}

async fn read_msg(s: &mut Transport, buf: &mut Vec<u8>) -> Result<Message, String> {
    loop {
        if let Ok(Decoded::Frame(f)) = decode_frame(buf, 64 << 20) {
            let m = Message::decode(f.kind, f.payload, Peer::Server).map_err(|e| e.to_string());
            let n = f.consumed;
            buf.drain(..n);
            return m;
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("server closed the connection".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Handshakes each load thread has in flight at most: a pool that opens thousands of connections
/// at once would otherwise meet the server's cap on connections waiting to log in from one
/// address (--max-unauthenticated-per-ip), as any well-behaved client pool should not.
const HANDSHAKES_IN_FLIGHT_MAX: u64 = 16;

async fn connection(
    sh: Arc<Shared>,
    conn_no: u64,
    hist: std::rc::Rc<std::cell::RefCell<[Histogram<u64>; 2]>>,
    logins: std::rc::Rc<glommio::sync::Semaphore>,
) {
    let login = logins.acquire_static_permit(1).await;
    let tcp = match TcpStream::connect(sh.addr).await {
        Ok(s) => s,
        Err(e) => return note_error(&sh, format!("connect: {e}")),
    };
    let _ = tcp.set_nodelay(true);
    let mut s = if sh.args.trust.plaintext {
        Transport::Plain(tcp)
    } else {
        let (cfg, verifier) = velocity::security::tls::client_config();
        let conn =
            rustls::ClientConnection::new(cfg, velocity::security::tls::server_name(&sh.args.host)).unwrap();
        let mut t = Transport::Tls { tcp, tls: Box::new(conn.into()), pending: Vec::new() };
        if let Err(e) = t.handshake().await {
            return note_error(&sh, format!("TLS handshake: {e}"));
        }
        if *verifier.seen.lock().unwrap() != Some(sh.server_fingerprint) {
            return note_error(&sh, "the server's TLS key is not the one checked at start".into());
        }
        t
    };
    let mut inbuf = Vec::with_capacity(64 << 10);
    if let Err(e) = handshake(&sh, &mut s, &mut inbuf).await {
        return note_error(&sh, e);
    }
    drop(login);
    sh.connected.fetch_add(1, Ordering::Relaxed);
    while !sh.released.load(Ordering::Relaxed) {
        runtime::sleep(Duration::from_millis(100)).await;
    }
    let mut rng = 0x9E3779B97F4A7C15u64 ^ (conn_no + 1).wrapping_mul(0xBF58476D1CE4E5B9);
    if sh.args.think_ms > 0 {
        // Spread the connections over the think interval, so the load is even, not in waves.
        let offset = (conn_no.wrapping_mul(0x9E3779B97F4A7C15) >> 11) % sh.args.think_ms;
        runtime::sleep(Duration::from_millis(offset)).await;
    }
    let depth = sh.args.pipeline.max(1);
    let mut out = Vec::with_capacity(depth * 128);
    // Per request: the value a GET must return, the rows a write must report, and whether it reads.
    let mut expect: Vec<(Option<u64>, Option<u64>, bool)> = Vec::with_capacity(depth);
    let prefix = sh.args.key_prefix.as_str();
    let mut chunk = vec![0u8; 64 << 10];
    let vb = sh.args.value_bytes;
    let (mut sql, mut kbuf, mut vbuf) = (Vec::with_capacity(256), Vec::new(), Vec::new());
    while !sh.stop.load(Ordering::Relaxed) {
        out.clear();
        expect.clear();
        let recording = sh.recording.load(Ordering::Relaxed);
        for _ in 0..depth {
            let i = sh.dist.sample(&mut rng);
            let read = match sh.workload {
                Workload::Get | Workload::Range(_) => true,
                Workload::Set | Workload::Batch(_) | Workload::Incr => false,
                Workload::Mixed(p) => (rng % 100) < p as u64,
            };
            sql.clear();
            match sh.workload {
                Workload::Range(n) => {
                    expect.push((None, None, true));
                    sql.extend_from_slice(b"SELECT key, value FROM kv WHERE key >= ");
                    key_into(&mut kbuf, prefix, i);
                    quote_literal_into(&mut sql, &kbuf);
                    sql.extend_from_slice(format!(" LIMIT {n}").as_bytes());
                }
                Workload::Batch(n) => {
                    let rows: Vec<(Vec<u8>, Vec<u8>)> = (0..n as u64)
                        .map(|j| {
                            let k = (i + j) % sh.args.keys;
                            (key(prefix, k), value(k, vb))
                        })
                        .collect();
                    expect.push((None, Some(n as u64), false));
                    sql.extend_from_slice(build::set_many(&rows).as_bytes());
                }
                Workload::Incr => {
                    expect.push((None, Some(1), false));
                    sql.extend_from_slice(build::incr(&key("counter:", i), 1).as_bytes());
                }
                _ if read => {
                    expect.push((Some(i), None, true));
                    key_into(&mut kbuf, prefix, i);
                    build::get_into(&mut sql, &kbuf);
                }
                _ => {
                    expect.push((None, Some(1), false));
                    key_into(&mut kbuf, prefix, i);
                    value_into(&mut vbuf, i, vb);
                    build::set_into(&mut sql, &kbuf, &vbuf);
                }
            }
            encode_frame(&mut out, MessageType::Command as u8, &sql);
        }
        let start = Instant::now();
        if let Err(e) = s.write_all(&out).await {
            return note_error(&sh, format!("write: {e}"));
        }
        // A reply's latency ends when the read that brought it returned: one clock read per
        // read, not per reply (as redis-benchmark), and decoding earlier replies is not counted.
        let (mut got, mut at, mut arrived) = (0, 0, start);
        while got < depth {
            match decode_frame(&inbuf[at..], 64 << 20) {
                Ok(Decoded::Frame(f)) => {
                    let (ev, ea, read) = expect[got];
                    // With a store populated up front a GET miss is an error; without, a miss is fine.
                    if !(sh.args.no_populate && f.kind == MessageType::Error as u8) {
                        check(&sh, f.kind, f.payload, ev, ea, &mut vbuf);
                    }
                    at += f.consumed;
                    got += 1;
                    if recording {
                        let us = arrived.duration_since(start).as_micros().max(1) as u64;
                        hist.borrow_mut()[usize::from(!read)].saturating_record(us);
                    }
                }
                Ok(Decoded::Incomplete { .. }) => {
                    inbuf.drain(..at);
                    at = 0;
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return note_error(&sh, "connection lost".into()),
                        Ok(n) => inbuf.extend_from_slice(&chunk[..n]),
                    }
                    arrived = Instant::now();
                }
                Err(e) => return note_error(&sh, format!("bad frame: {e}")),
            }
        }
        inbuf.drain(..at);
        if recording {
            sh.done.fetch_add(depth as u64, Ordering::Relaxed);
        }
        if sh.args.think_ms > 0 {
            runtime::sleep(Duration::from_millis(sh.args.think_ms)).await;
        }
        if let Some(max) = sh.args.requests {
            if sh.done.load(Ordering::Relaxed) >= max {
                sh.stop.store(true, Ordering::Relaxed);
            }
        }
    }
}

fn connect_options(args: &Args) -> ConnectOptions {
    args.trust.options(&args.host, args.port, None)
}

fn populate(args: &Args, creds: &Credentials) -> Result<(), String> {
    let mut c = Client::connect(&connect_options(args), creds).map_err(|e| e.to_string())?;
    let mut stmts = Vec::new();
    let mut i = 0;
    while i < args.keys {
        let rows: Vec<(Vec<u8>, Vec<u8>)> = (i..(i + 200).min(args.keys))
            .map(|k| (key(&args.key_prefix, k), value(k, args.value_bytes)))
            .collect();
        stmts.push(build::set_many(&rows));
        i += 200;
        if stmts.len() == 64 || i >= args.keys {
            for r in c.pipeline(&stmts).map_err(|e| e.to_string())? {
                r.map_err(|e| e.to_string())?;
            }
            stmts.clear();
        }
    }
    Ok(())
}

// ---- Latency charts and .hgrm files ----

/// The percentiles each chart marks, and each report names.
const MARKS: [(f64, &str); 3] = [(0.5, "p50"), (0.99, "p99"), (0.999, "p99.9")];

/// Percentile steps of a .hgrm file and a chart's curve: 5 per halving of the distance to 100%,
/// as HdrHistogram's own percentile output.
const TICKS_PER_HALF: u32 = 5;

/// Colors of a chart's curves, in order; a mixed run draws all, GET and SET.
const COLORS: [&str; 8] =
    ["#1f6feb", "#1a7f37", "#bf5700", "#8250df", "#cf222e", "#0a7ea4", "#9a6700", "#57606a"];

/// One curve of a latency chart.
struct Series {
    /// What the legend calls it: the workload, GET or SET, or a file's name.
    label: String,
    /// The velocity-bench command line that measured it, when known.
    command: Option<String>,
    ops_per_s: Option<f64>,
    requests: u64,
    /// (percentile as a fraction, latency in ms), rising.
    points: Vec<(f64, f64)>,
    /// Latency (ms) at each of MARKS.
    marks: [f64; 3],
    max_ms: f64,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

impl Series {
    fn of(label: &str, command: &str, ops_per_s: f64, h: &Histogram<u64>) -> Series {
        Series {
            label: label.into(),
            command: Some(command.into()),
            ops_per_s: Some(ops_per_s),
            requests: h.len(),
            points: if h.is_empty() {
                Vec::new()
            } else {
                h.iter_quantiles(TICKS_PER_HALF)
                    .map(|v| (v.quantile_iterated_to(), ms(v.value_iterated_to())))
                    .collect()
            },
            marks: MARKS.map(|(q, _)| ms(h.value_at_quantile(q))),
            max_ms: ms(h.max()),
        }
    }

    /// A .hgrm file: its percentile table (value in ms, percentile, total count, 1/(1-p)), and
    /// what velocity-bench adds in `#[Name = value]` lines after it.
    fn read(path: &str) -> Result<Series, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
        let stem =
            std::path::Path::new(path).file_stem().map_or(path.into(), |s| s.to_string_lossy().into_owned());
        let mut s = Series {
            label: stem,
            command: None,
            ops_per_s: None,
            requests: 0,
            points: Vec::new(),
            marks: [f64::NAN; 3],
            max_ms: f64::NAN,
        };
        for line in text.lines().map(str::trim) {
            if let Some(meta) = line.strip_prefix("#[").and_then(|l| l.strip_suffix(']')) {
                let Some((name, v)) = meta.split_once('=') else { continue };
                let (name, v) = (name.trim(), v.trim());
                let num =
                    |v: &str| v.split_whitespace().next().and_then(|n| n.trim_end_matches(',').parse().ok());
                match name {
                    "Command" => s.command = Some(v.to_owned()),
                    "Label" => s.label = format!("{} {v}", s.label),
                    "Throughput" => s.ops_per_s = num(v),
                    "Percentiles" => {
                        for (i, part) in v.split(',').enumerate().take(3) {
                            s.marks[i] = part
                                .split_whitespace()
                                .nth(1)
                                .and_then(|n| n.parse().ok())
                                .unwrap_or(f64::NAN);
                        }
                    }
                    "Max" => {
                        s.max_ms = num(v).unwrap_or(f64::NAN);
                        if let Some(c) = v
                            .split_once("Total count")
                            .and_then(|(_, c)| num(c.trim_start_matches([' ', '='])))
                        {
                            s.requests = c as u64;
                        }
                    }
                    _ => {}
                }
                continue;
            }
            let f: Vec<&str> = line.split_whitespace().collect();
            if let [v, q, rest @ ..] = &f[..] {
                if let (Ok(v), Ok(q)) = (v.parse::<f64>(), q.parse::<f64>()) {
                    s.points.push((q, v));
                    if let Some(c) = rest.first().and_then(|c| c.parse::<u64>().ok()) {
                        s.requests = s.requests.max(c);
                    }
                }
            }
        }
        if s.points.is_empty() {
            return Err(format!("{path}: no percentile lines (expected a .hgrm file, as --hist-out writes)"));
        }
        // Files from elsewhere: the marks and the maximum from the table itself.
        for (i, (q, _)) in MARKS.iter().enumerate() {
            if s.marks[i].is_nan() {
                s.marks[i] = s.points.iter().find(|p| p.0 >= *q).or(s.points.last()).map_or(0.0, |p| p.1);
            }
        }
        if s.max_ms.is_nan() {
            s.max_ms = s.points.last().map_or(0.0, |p| p.1);
        }
        Ok(s)
    }
}

/// `h` in HdrHistogram's percentile format (values in ms), with what a chart needs to say where
/// it came from in `#[...]` lines at the end.
fn hgrm(h: &Histogram<u64>, s: &Series) -> String {
    use std::fmt::Write;
    let mut out =
        format!("{:>12} {:>14} {:>10} {:>14}\n\n", "Value", "Percentile", "TotalCount", "1/(1-Percentile)");
    let mut total = 0;
    if !h.is_empty() {
        for v in h.iter_quantiles(TICKS_PER_HALF) {
            total += v.count_since_last_iteration();
            let q = v.quantile_iterated_to();
            let inv = if q < 1.0 { format!("{:>14.2}", 1.0 / (1.0 - q)) } else { String::new() };
            let _ = writeln!(out, "{:>12.3} {:>14.12} {:>10} {inv}", ms(v.value_iterated_to()), q, total);
        }
    }
    let _ = writeln!(
        out,
        "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]",
        h.mean() / 1000.0,
        h.stdev() / 1000.0
    );
    let _ = writeln!(out, "#[Max     = {:>12.3}, Total count    = {:>12}]", ms(h.max()), h.len());
    let _ = writeln!(out, "#[Label = {}]", s.label);
    let _ = writeln!(out, "#[Throughput = {:.1} ops/s]", s.ops_per_s.unwrap_or(0.0));
    let marks: Vec<String> = MARKS.iter().zip(s.marks).map(|((_, n), v)| format!("{n} {v:.3} ms")).collect();
    let _ = writeln!(out, "#[Percentiles = {}]", marks.join(", "));
    let _ = writeln!(out, "#[Command = {}]", s.command.as_deref().unwrap_or(""));
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

/// 1234567.8 → "1,234,568".
fn thousands(x: f64) -> String {
    let digits = format!("{:.0}", x.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A latency in ms to about three significant digits.
fn fmt_ms(v: f64) -> String {
    match v {
        v if v < 1.0 => format!("{v:.3}"),
        v if v < 10.0 => format!("{v:.2}"),
        v if v < 100.0 => format!("{v:.1}"),
        v => format!("{v:.0}"),
    }
}

/// Round axis ticks for 0..=max: a step of 1, 2, 2.5 or 5 times a power of ten, about five of
/// them; returns (step, top).
fn nice_ticks(max: f64) -> (f64, f64) {
    let max = if max.is_finite() && max > 0.0 { max } else { 1.0 };
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step =
        [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * mag).find(|s| *s >= raw * 0.999).unwrap_or(10.0 * mag);
    (step, (max / step - 1e-9).ceil().max(1.0) * step)
}

/// Decimal places that show every multiple of `step` exactly.
fn decimals(step: f64) -> usize {
    (0..6)
        .find(|d| ((step * 10f64.powi(*d as i32)).round() - step * 10f64.powi(*d as i32)).abs() < 1e-6)
        .unwrap_or(6)
}

/// Words of `text` in lines of at most `width` characters.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for w in text.split(' ') {
        match lines.last_mut() {
            Some(l) if l.chars().count() + 1 + w.chars().count() <= width => {
                l.push(' ');
                l.push_str(w);
            }
            _ => lines.push(w.to_owned()),
        }
    }
    lines
}

/// Latency against percentile on a log scale of 1/(1-p) (0%, 90%, 99%, 99.9%, …), as
/// HdrHistogram plots it: one curve per series, p50, p99 and p99.9 marked on each, round ticks,
/// and a legend with each series' throughput and percentiles (and command, when they differ).
fn latency_svg(title: &str, subtitle: Option<&str>, series: &[Series]) -> String {
    use std::fmt::Write;
    let (w, left, right, plot_h) = (960.0, 84.0, 44.0, 360.0);
    let sub = subtitle.map(|t| wrap(t, 140)).unwrap_or_default();
    let own_commands = series.iter().filter_map(|s| s.command.as_deref()).any(|c| Some(c) != subtitle);
    let plot_top = 34.0 + 15.0 * sub.len() as f64 + 26.0;
    let plot_bottom = plot_top + plot_h;
    let legend_top = plot_bottom + 62.0;
    // Each series' legend: one line, then its command (wrapped) when it is not the subtitle.
    let commands: Vec<Vec<String>> = series
        .iter()
        .map(|s| match s.command.as_deref() {
            Some(c) if own_commands && Some(c) != subtitle => wrap(c, 140),
            _ => Vec::new(),
        })
        .collect();
    let rows: Vec<f64> =
        commands.iter().map(|c| 20.0 + 14.0 * c.len() as f64 + 2.0 * f64::from(!c.is_empty())).collect();
    let ht = legend_top + rows.iter().sum::<f64>() + 8.0;
    // Percentiles up to what the samples resolve: 1 - 1/N.
    let most = series.iter().map(|s| s.requests).max().unwrap_or(0).max(1);
    let x_max = ((most as f64).log10().floor()).clamp(2.0, 6.0);
    let y_data =
        series.iter().flat_map(|s| s.points.iter().map(|p| p.1).chain([s.max_ms])).fold(0.0, f64::max);
    let (unit, scale) = if y_data < 1.0 { ("µs", 1000.0) } else { ("ms", 1.0) };
    let (step, y_top) = nice_ticks(y_data * scale);
    let px = |q: f64| {
        let x = if q >= 1.0 { x_max } else { (1.0 / (1.0 - q)).log10().min(x_max) };
        left + x / x_max * (w - left - right)
    };
    let py = |ms: f64| plot_bottom - (ms * scale / y_top).min(1.0) * plot_h;
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{ht}' viewBox='0 0 {w} {ht}' \
         font-family='DejaVu Sans, Helvetica, Arial, sans-serif' font-size='12' fill='#24292f'>\n\
         <rect width='100%' height='100%' fill='white'/>\n\
         <text x='{left}' y='24' font-size='16' font-weight='bold'>{}</text>\n",
        esc(title)
    );
    for (i, l) in sub.iter().enumerate() {
        let _ = writeln!(
            svg,
            "<text x='{left}' y='{}' font-size='11' fill='#57606a'>{}</text>",
            44.0 + 15.0 * i as f64,
            esc(l)
        );
    }
    // Grid and axes: latency ticks, then percentile ticks.
    let mut y = 0.0;
    let d = decimals(step);
    while y <= y_top + step * 1e-6 {
        let yy = plot_bottom - y / y_top * plot_h;
        let _ = writeln!(
            svg,
            "<line x1='{left}' y1='{yy:.1}' x2='{:.1}' y2='{yy:.1}' stroke='#eaeef2'/>\
             <text class='ytick' x='{:.1}' y='{:.1}' text-anchor='end'>{y:.d$} {unit}</text>",
            w - right,
            left - 8.0,
            yy + 4.0
        );
        y += step;
    }
    for k in 0..=x_max as u32 {
        let q = 1.0 - 10f64.powi(-(k as i32));
        let x = px(q);
        let label = match k {
            0 => "0%".to_string(),
            k => format!("{:.*}%", k.saturating_sub(2) as usize, q * 100.0),
        };
        let _ = writeln!(
            svg,
            "<line x1='{x:.1}' y1='{plot_top}' x2='{x:.1}' y2='{plot_bottom}' stroke='#d0d7de'/>\
             <text class='xtick' x='{x:.1}' y='{:.1}' text-anchor='middle'>{label}</text>",
            plot_bottom + 18.0
        );
    }
    let _ = writeln!(
        svg,
        "<rect x='{left}' y='{plot_top}' width='{:.1}' height='{plot_h}' fill='none' stroke='#8c959f'/>\n\
         <text x='{:.1}' y='{:.1}' text-anchor='middle'>percentile (log scale of 1/(1−p); the right edge is the maximum)</text>\n\
         <text transform='translate(18 {:.1}) rotate(-90)' text-anchor='middle'>latency ({unit})</text>",
        w - left - right,
        (w + left - right) / 2.0,
        plot_bottom + 40.0,
        (plot_top + plot_bottom) / 2.0
    );
    // The marked percentiles: a dashed line each, named above the plot.
    for (q, name) in MARKS {
        let x = px(q);
        let _ = writeln!(
            svg,
            "<line x1='{x:.1}' y1='{plot_top}' x2='{x:.1}' y2='{plot_bottom}' stroke='#6e7781' stroke-dasharray='4 3'/>\
             <text class='mark' x='{x:.1}' y='{:.1}' text-anchor='middle' font-weight='bold'>{name}</text>",
            plot_top - 7.0
        );
    }
    // The first series (all requests, or the first file) is drawn last, on top.
    for (i, s) in series.iter().enumerate().rev() {
        let color = COLORS[i % COLORS.len()];
        let pts: Vec<String> = s
            .points
            .iter()
            .map(|&(q, v)| format!("{:.1},{:.1}", px(q), py(v)))
            .chain((s.requests > 0).then(|| format!("{:.1},{:.1}", px(1.0), py(s.max_ms))))
            .collect();
        let _ = writeln!(
            svg,
            "<polyline class='series' fill='none' stroke='{color}' stroke-width='2' stroke-linejoin='round' points='{}'/>",
            pts.join(" ")
        );
        for ((q, _), v) in MARKS.iter().zip(s.marks) {
            let (x, y) = (px(*q), py(v));
            let _ = writeln!(
                svg,
                "<circle class='dot' cx='{x:.1}' cy='{y:.1}' r='4' fill='{color}' stroke='white' stroke-width='1.5'/>"
            );
            if series.len() == 1 {
                // Left of the dot, where the curve is lower; right of it near the y axis.
                let (dx, anchor) = if x - left < 80.0 { (7.0, "start") } else { (-7.0, "end") };
                let _ = writeln!(
                    svg,
                    "<text x='{:.1}' y='{:.1}' text-anchor='{anchor}' font-weight='bold' fill='{color}'>{} ms</text>",
                    x + dx,
                    y - 7.0,
                    fmt_ms(v)
                );
            }
        }
    }
    // The legend, in order: what, how fast, the marked percentiles; and the command when it is
    // not the subtitle.
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let ly = legend_top + rows[..i].iter().sum::<f64>();
        let tput = s.ops_per_s.map_or(String::new(), |o| format!(" · {} ops/s", thousands(o)));
        let marks: Vec<String> =
            MARKS.iter().zip(s.marks).map(|((_, n), v)| format!("{n} {}", fmt_ms(v))).collect();
        let _ = writeln!(
            svg,
            "<line x1='{left}' y1='{:.1}' x2='{:.1}' y2='{:.1}' stroke='{color}' stroke-width='3'/>\
             <text class='legend' x='{:.1}' y='{ly:.1}'><tspan font-weight='bold'>{}</tspan>{tput} · {} requests · {} · max {} ms</text>",
            ly - 4.0,
            left + 22.0,
            ly - 4.0,
            left + 30.0,
            esc(&s.label),
            thousands(s.requests as f64),
            marks.join(" · "),
            fmt_ms(s.max_ms)
        );
        for (k, c) in commands[i].iter().enumerate() {
            let _ = writeln!(
                svg,
                "<text class='command' x='{:.1}' y='{:.1}' font-size='11' fill='#57606a'>{}</text>",
                left + 30.0,
                ly + 15.0 + 14.0 * k as f64,
                esc(c)
            );
        }
    }
    svg += "</svg>\n";
    svg
}

/// This process's command line, as typed (the password never is: stdin or VELOCITY_PASSWORD).
fn command_line() -> String {
    let mut args = std::env::args();
    let prog = args.next().map_or("velocity-bench".into(), |p| {
        std::path::Path::new(&p).file_name().map_or(p.clone(), |f| f.to_string_lossy().into_owned())
    });
    std::iter::once(prog)
        .chain(args.map(|a| if a.is_empty() || a.contains([' ', '\'', '"']) { format!("'{a}'") } else { a }))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `--plot-compare`: the saved runs in one chart at --plot.
fn plot_compare(args: &Args) -> Result<(), String> {
    let series = args.plot_compare.iter().map(|p| Series::read(p)).collect::<Result<Vec<_>, _>>()?;
    let out = args.plot.as_deref().ok_or("--plot-compare needs --plot OUT.svg")?;
    let title = format!("velocity-bench: latency by percentile, {} runs", series.len());
    std::fs::write(out, latency_svg(&title, None, &series)).map_err(|e| format!("{out}: {e}"))?;
    eprintln!("wrote {out}: {}", series.iter().map(|s| s.label.as_str()).collect::<Vec<_>>().join(", "));
    Ok(())
}

/// Many connections need many descriptors: take the hard limit.
fn raise_fd_limit() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("velocity-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<std::process::ExitCode, String> {
    let args = Args::parse();
    if !args.plot_compare.is_empty() {
        plot_compare(&args)?;
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let workload = parse_workload(&args.workload)?;
    let dist = match args.key_dist.split_once(':') {
        None if args.key_dist == "uniform" => KeyDist::Uniform(args.keys.max(1)),
        Some(("zipf", s)) => {
            let s: f64 = s.parse().map_err(|_| "bad zipf exponent")?;
            let w: Vec<f64> = (1..=args.keys).map(|r| 1.0 / (r as f64).powf(s)).collect();
            let total: f64 = w.iter().sum();
            let mut acc = 0.0;
            KeyDist::Zipf(
                w.iter()
                    .map(|x| {
                        acc += x / total;
                        acc
                    })
                    .collect(),
            )
        }
        _ => return Err(format!("unknown --key-dist {}", args.key_dist)),
    };
    let password = if args.password_stdin {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).map_err(|e| e.to_string())?;
        s.trim_end_matches(['\n', '\r']).to_owned()
    } else {
        std::env::var("VELOCITY_PASSWORD")
            .map_err(|_| "give the password with --password-stdin or VELOCITY_PASSWORD")?
    };
    let addr: SocketAddr = std::net::ToSocketAddrs::to_socket_addrs(&(args.host.as_str(), args.port))
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("no address")?;
    // Derive the credential once for every connection.
    let info: ServerInfo =
        Client::open(&connect_options(&args)).map_err(|e| e.to_string())?.server_info().clone();
    let credential = derive(&info, &args.user, &password).map_err(|e| e.to_string())?;
    let creds = Credentials::Derived { user: args.user.clone(), credential };
    if !args.no_populate && !matches!(workload, Workload::Set | Workload::Batch(_) | Workload::Incr) {
        let t = Instant::now();
        populate(&args, &creds)?;
        eprintln!("populated {} keys in {:.1}s", args.keys, t.elapsed().as_secs_f64());
    }
    let sh = Arc::new(Shared {
        args: args.clone(),
        workload,
        dist,
        credential,
        server_fingerprint: info.fingerprint,
        addr,
        recording: AtomicBool::new(args.warmup_s == 0),
        stop: AtomicBool::new(false),
        done: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        wrong: AtomicU64::new(0),
        hist: Mutex::new([new_hist(), new_hist()]),
        first_error: Mutex::new(None),
        connected: AtomicU64::new(0),
        released: AtomicBool::new(false),
    });
    raise_fd_limit();
    let threads = args.threads.max(1);
    let timer_sh = sh.clone();
    let timer = std::thread::spawn(move || {
        let sh = timer_sh;
        // Wait until every connection is in (or has failed), hold them idle, then start.
        let want = sh.args.connections.max(1) as u64;
        let t = Instant::now();
        while sh.connected.load(Ordering::Relaxed) + sh.errors.load(Ordering::Relaxed) < want {
            std::thread::sleep(Duration::from_millis(20));
        }
        if sh.args.idle_s > 0 {
            eprintln!(
                "established {} connections in {:.1}s; holding them idle for {}s",
                sh.connected.load(Ordering::Relaxed),
                t.elapsed().as_secs_f64(),
                sh.args.idle_s
            );
            std::thread::sleep(Duration::from_secs(sh.args.idle_s));
        }
        sh.released.store(true, Ordering::Relaxed);
        std::thread::sleep(Duration::from_secs(sh.args.warmup_s));
        sh.recording.store(true, Ordering::Relaxed);
        let start = Instant::now();
        let mut last = 0;
        while !sh.stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(250));
            let el = start.elapsed();
            if el.as_millis() % 1000 < 250 && !sh.args.json {
                let d = sh.done.load(Ordering::Relaxed);
                eprintln!("  {:>4.0}s  {:>10.0} ops/s", el.as_secs_f64(), (d - last) as f64);
                last = d;
            }
            if sh.args.requests.is_none() && el >= Duration::from_secs(sh.args.duration_s) {
                sh.stop.store(true, Ordering::Relaxed);
            }
        }
        start.elapsed()
    });
    let conns = args.connections.max(1);
    let pool_sh = sh.clone();
    runtime::run_pool(Placement::Unbound(threads), Duration::from_millis(1), move || async move {
        let me = glommio::executor().id();
        let hist = std::rc::Rc::new(std::cell::RefCell::new([new_hist(), new_hist()]));
        let logins = std::rc::Rc::new(glommio::sync::Semaphore::new(HANDSHAKES_IN_FLIGHT_MAX));
        let mut tasks = Vec::new();
        for c in (0..conns).filter(|c| c % threads == me % threads) {
            tasks.push(glommio::spawn_local(connection(
                pool_sh.clone(),
                c as u64,
                hist.clone(),
                logins.clone(),
            )));
        }
        for t in tasks {
            t.await;
        }
        let mut all = pool_sh.hist.lock().unwrap();
        for (into, from) in all.iter_mut().zip(hist.borrow().iter()) {
            into.add(from).unwrap();
        }
    })?;
    sh.stop.store(true, Ordering::Relaxed);
    let elapsed = timer.join().unwrap();
    let secs = elapsed.as_secs_f64();
    let [reads, writes] = std::mem::replace(&mut *sh.hist.lock().unwrap(), [new_hist(), new_hist()]);
    let mut h = reads.clone();
    h.add(&writes).unwrap();
    let done = h.len();
    let ops = done as f64 / secs;
    let (errors, wrong) = (sh.errors.load(Ordering::Relaxed), sh.wrong.load(Ordering::Relaxed));
    let command = command_line();
    // A mixed workload's GET and SET apart, besides all requests together.
    let parts: Vec<(&str, &Histogram<u64>)> = match workload {
        Workload::Mixed(_) => vec![("GET", &reads), ("SET", &writes)],
        _ => Vec::new(),
    };
    let left = keys_left(&args, &creds);
    let p = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let summary = |h: &Histogram<u64>| {
        serde_json::json!({
            "requests": h.len(), "ops_per_s": h.len() as f64 / secs, "p50_ms": p(h, 0.5), "p90_ms": p(h, 0.9),
            "p99_ms": p(h, 0.99), "p99_9_ms": p(h, 0.999), "p99_99_ms": p(h, 0.9999), "max_ms": h.max() as f64 / 1000.0,
        })
    };
    let latency = |h: &Histogram<u64>| {
        format!(
            "p50 {:.3} ms · p90 {:.3} · p99 {:.3} · p99.9 {:.3} · p99.99 {:.3} · max {:.3}",
            p(h, 0.5),
            p(h, 0.9),
            p(h, 0.99),
            p(h, 0.999),
            p(h, 0.9999),
            h.max() as f64 / 1000.0
        )
    };
    if args.json {
        let mut j = serde_json::json!({
            "workload": args.workload, "connections": conns, "pipeline": args.pipeline, "threads": threads,
            "keys": args.keys, "value_bytes": args.value_bytes, "key_prefix": args.key_prefix, "requests": done,
            "seconds": secs, "ops_per_s": ops, "p50_ms": p(&h, 0.5), "p90_ms": p(&h, 0.9), "p99_ms": p(&h, 0.99),
            "p99_9_ms": p(&h, 0.999), "p99_99_ms": p(&h, 0.9999), "max_ms": h.max() as f64 / 1000.0,
            "errors": errors, "wrong_replies": wrong,
        });
        for (name, part) in &parts {
            j[name.to_lowercase()] = summary(part);
        }
        j["keys_left"] = serde_json::json!({
            "prefix": args.key_prefix, "first": left.first, "last": left.last, "count": left.count,
        });
        println!("{j}");
        // Standard output stays one JSON document; the note on keys goes to standard error.
        eprintln!("{}", left.line);
    } else {
        println!(
            "workload {} · {} connections × pipeline {} · {} thread(s) · {} keys · {} B values",
            args.workload, conns, args.pipeline, threads, args.keys, args.value_bytes
        );
        println!("requests   {done} in {secs:.2}s");
        println!("throughput {ops:.0} ops/s");
        println!("latency    {}{}", latency(&h), if parts.is_empty() { "" } else { "   (all)" });
        for (name, part) in &parts {
            println!(
                "  {name:<8} {}   ({} requests, {:.0} ops/s)",
                latency(part),
                part.len(),
                part.len() as f64 / secs
            );
        }
        println!("errors     {errors} · wrong replies {wrong}");
        println!("{}", left.line);
    }
    if let Some(e) = sh.first_error.lock().unwrap().as_ref() {
        eprintln!("first error: {e}");
    }
    let label = if parts.is_empty() { args.workload.as_str() } else { "all" };
    let mut series = vec![(Series::of(label, &command, ops, &h), &h)];
    for (name, part) in &parts {
        series.push((Series::of(name, &command, part.len() as f64 / secs, part), *part));
    }
    if let Some(path) = &args.hist_out {
        std::fs::write(path, hgrm(&h, &series[0].0)).map_err(|e| format!("{path}: {e}"))?;
        let stem = path.strip_suffix(".hgrm").unwrap_or(path);
        for (s, part) in &series[1..] {
            let p = format!("{stem}.{}.hgrm", s.label.to_lowercase());
            std::fs::write(&p, hgrm(part, s)).map_err(|e| format!("{p}: {e}"))?;
        }
    }
    if let Some(path) = &args.plot {
        let title = format!(
            "velocity-bench {} · {} connections × pipeline {} · {} ops/s",
            args.workload,
            conns,
            args.pipeline,
            thousands(ops)
        );
        let series: Vec<Series> = series.into_iter().map(|(s, _)| s).collect();
        std::fs::write(path, latency_svg(&title, Some(&command), &series))
            .map_err(|e| format!("{path}: {e}"))?;
    }
    Ok(if errors > 0 || wrong > 0 {
        std::process::ExitCode::from(2)
    } else {
        std::process::ExitCode::SUCCESS
    })
}

/// What a run leaves in the store: the keys in its range (prefix, first, last), counted after
/// the run, and the line that says so.
struct KeysLeft {
    first: String,
    last: String,
    count: Option<i64>,
    line: String,
}

fn keys_left(args: &Args, creds: &Credentials) -> KeysLeft {
    let text = |i| String::from_utf8_lossy(&key(&args.key_prefix, i)).into_owned();
    let (first, last) = (text(0), text(args.keys.max(1) - 1));
    // Bounded: a run whose server died or hangs still ends, saying it could not count.
    let mut opts = connect_options(args);
    opts.timeout = Some(Duration::from_secs(30));
    let counted = Client::connect(&opts, creds).map_err(|e| e.to_string()).and_then(|mut c| {
        let sql = format!(
            "SELECT COUNT(*) FROM kv WHERE key BETWEEN {} AND {}",
            quote_literal(first.as_bytes()),
            quote_literal(last.as_bytes())
        );
        match c.execute(&sql).map_err(|e| e.to_string())?.rows.first().and_then(|r| r.first()) {
            Some(velocity::protocol::Value::Int(n)) => Ok(*n),
            other => Err(format!("unexpected reply to COUNT(*): {other:?}")),
        }
    });
    // LIKE matches the prefix literally once its wildcards are escaped.
    let mut pat = String::new();
    for c in args.key_prefix.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pat.push('\\');
        }
        pat.push(c);
    }
    pat.push('%');
    let remove = format!("DELETE FROM kv WHERE key LIKE {}", quote_literal(pat.as_bytes()));
    let (count, line) = match counted {
        Ok(0) => (Some(0), format!("keys left  none in {first} … {last} (prefix {:?})", args.key_prefix)),
        Ok(n) => (
            Some(n),
            format!("keys left  {n} keys in {first} … {last} (prefix {:?}); to remove them: {remove}", args.key_prefix),
        ),
        Err(e) => (
            None,
            format!(
                "keys left  up to {} keys in {first} … {last} (prefix {:?}; could not count them: {e}); to remove them: {remove}",
                args.keys, args.key_prefix
            ),
        ),
    };
    KeysLeft { first, last, count, line }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_at_least_twelve_digits_after_the_prefix() {
        assert_eq!(key("key:", 5), b"key:000000000005");
        assert_eq!(key("", 1_234_567_890_123), b"1234567890123");
        let mut k = b"left over".to_vec();
        key_into(&mut k, "p", 42);
        assert_eq!(k, b"p000000000042");
    }

    #[test]
    fn values_are_the_index_then_letters_cut_to_length() {
        assert_eq!(value(7, 16), b"v7-defghijklmnop");
        assert_eq!(value(123_456_789, 4), b"v123");
        assert_eq!(value(1, 0), b"v");
        let mut v = b"left over".to_vec();
        value_into(&mut v, 7, 16);
        assert_eq!(v, value(7, 16));
    }
}
