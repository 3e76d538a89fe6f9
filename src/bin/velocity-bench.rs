//! velocity-bench: a closed-loop load generator for Velocity. Each connection keeps
//! `--pipeline` requests in flight, checks every reply, and records each request's latency in
//! an HDR histogram; the report gives throughput and percentiles up to p99.99 and the maximum.

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
    /// get | set | mixed:READ_PCT | range:N | batch:N
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
    /// Write an SVG chart of latency by percentile (log scale, as HdrHistogram plots) here.
    #[arg(long)]
    plot: Option<String>,
    /// Write the latency distribution (.hgrm) here.
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
}

fn parse_workload(s: &str) -> Result<Workload, String> {
    let num = |v: &str| v.parse::<u32>().map_err(|_| format!("bad number in --workload {s}"));
    Ok(match s.split_once(':') {
        None if s == "get" => Workload::Get,
        None if s == "set" => Workload::Set,
        Some(("mixed", p)) => Workload::Mixed(num(p)?.min(100)),
        Some(("range", n)) => Workload::Range(num(n)?.max(1)),
        Some(("batch", n)) => Workload::Batch(num(n)?.max(1)),
        _ => return Err(format!("unknown --workload {s}: get | set | mixed:READ_PCT | range:N | batch:N")),
    })
}

fn key(i: u64) -> Vec<u8> {
    format!("key:{i:012}").into_bytes()
}

/// The value stored under key `i`: deterministic, so every GET reply can be checked.
fn value(i: u64, len: usize) -> Vec<u8> {
    let mut v = format!("v{i}-").into_bytes();
    while v.len() < len {
        v.push(b'a' + (v.len() % 26) as u8);
    }
    v.truncate(len.max(1));
    v
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
    hist: Mutex<Histogram<u64>>,
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

/// Check one reply frame against what the request expects.
fn check(sh: &Shared, kind: u8, payload: &[u8], expect_value: Option<u64>, expect_affected: Option<u64>) {
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
        let want = value(i, sh.args.value_bytes);
        let ok = payload.len() == 2 + 7 + 4 + 5 + want.len() + 8 && payload[18..18 + want.len()] == want[..];
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
    hist: std::rc::Rc<std::cell::RefCell<Histogram<u64>>>,
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
    let mut expect: Vec<(Option<u64>, Option<u64>)> = Vec::with_capacity(depth);
    let mut chunk = vec![0u8; 64 << 10];
    let vb = sh.args.value_bytes;
    while !sh.stop.load(Ordering::Relaxed) {
        out.clear();
        expect.clear();
        for _ in 0..depth {
            let i = sh.dist.sample(&mut rng);
            let read = match sh.workload {
                Workload::Get | Workload::Range(_) => true,
                Workload::Set | Workload::Batch(_) => false,
                Workload::Mixed(p) => (rng % 100) < p as u64,
            };
            let sql = match sh.workload {
                Workload::Range(n) => {
                    expect.push((None, None));
                    format!(
                        "SELECT key, value FROM kv WHERE key >= '{}' LIMIT {n}",
                        String::from_utf8_lossy(&key(i))
                    )
                }
                Workload::Batch(n) => {
                    let rows: Vec<(Vec<u8>, Vec<u8>)> = (0..n as u64)
                        .map(|j| {
                            let k = (i + j) % sh.args.keys;
                            (key(k), value(k, vb))
                        })
                        .collect();
                    expect.push((None, Some(n as u64)));
                    build::set_many(&rows)
                }
                _ if read => {
                    expect.push((Some(i), None));
                    build::get(&key(i))
                }
                _ => {
                    expect.push((None, Some(1)));
                    build::set(&key(i), &value(i, vb))
                }
            };
            encode_frame(&mut out, MessageType::Command as u8, sql.as_bytes());
        }
        let start = Instant::now();
        if let Err(e) = s.write_all(&out).await {
            return note_error(&sh, format!("write: {e}"));
        }
        let mut got = 0;
        while got < depth {
            match decode_frame(&inbuf, 64 << 20) {
                Ok(Decoded::Frame(f)) => {
                    let (ev, ea) = expect[got];
                    // With a store populated up front a GET miss is an error; without, a miss is fine.
                    if !(sh.args.no_populate && f.kind == MessageType::Error as u8) {
                        check(&sh, f.kind, f.payload, ev, ea);
                    }
                    let n = f.consumed;
                    inbuf.drain(..n);
                    got += 1;
                    if sh.recording.load(Ordering::Relaxed) {
                        hist.borrow_mut().saturating_record(start.elapsed().as_micros().max(1) as u64);
                        sh.done.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(Decoded::Incomplete { .. }) => match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return note_error(&sh, "connection lost".into()),
                    Ok(n) => inbuf.extend_from_slice(&chunk[..n]),
                },
                Err(e) => return note_error(&sh, format!("bad frame: {e}")),
            }
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
        let rows: Vec<(Vec<u8>, Vec<u8>)> =
            (i..(i + 200).min(args.keys)).map(|k| (key(k), value(k, args.value_bytes))).collect();
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

/// Latency (ms) against percentile on a log scale of 1/(1-p): 0%, 90%, 99%, 99.9%, 99.99%.
fn latency_svg(h: &Histogram<u64>, args: &Args) -> String {
    let (w, ht, left, bottom, top, right) = (800.0, 420.0, 70.0, 50.0, 40.0, 20.0);
    let x_max = 4.0; // log10(1/(1-0.9999))
    let pts: Vec<(f64, f64)> = h
        .iter_quantiles(4)
        .map(|v| {
            let q = v.quantile_iterated_to().min(0.9999);
            ((1.0 / (1.0 - q)).log10(), v.value_iterated_to() as f64 / 1000.0)
        })
        .collect();
    let y_max = pts.iter().map(|p| p.1).fold(0.001f64, f64::max) * 1.1;
    let sx = |x: f64| left + x / x_max * (w - left - right);
    let sy = |y: f64| ht - bottom - y / y_max * (ht - bottom - top);
    let mut svg = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{ht}' font-family='sans-serif' font-size='12'>\n\
         <rect width='100%' height='100%' fill='white'/>\n\
         <text x='{left}' y='22' font-size='14'>velocity-bench {} · {} conns × pipeline {} · latency by percentile</text>\n",
        args.workload, args.connections, args.pipeline
    );
    for (i, label) in ["0%", "90%", "99%", "99.9%", "99.99%"].iter().enumerate() {
        let x = sx(i as f64);
        svg += &format!("<line x1='{x}' y1='{}' x2='{x}' y2='{}' stroke='#ddd'/><text x='{x}' y='{}' text-anchor='middle'>{label}</text>\n", sy(0.0), sy(y_max), ht - bottom + 18.0);
    }
    for i in 0..=4 {
        let y = y_max * i as f64 / 4.0;
        svg += &format!("<line x1='{left}' y1='{0}' x2='{1}' y2='{0}' stroke='#eee'/><text x='{2}' y='{0}' text-anchor='end'>{y:.2} ms</text>\n", sy(y), w - right, left - 6.0);
    }
    let line: Vec<String> = pts.iter().map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y))).collect();
    svg +=
        &format!("<polyline fill='none' stroke='#1f6feb' stroke-width='2' points='{}'/>\n", line.join(" "));
    svg += &format!(
        "<text x='{}' y='{}' text-anchor='middle'>percentile</text>\n</svg>\n",
        (w + left) / 2.0,
        ht - 8.0
    );
    svg
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
    if !args.no_populate && !matches!(workload, Workload::Set | Workload::Batch(_)) {
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
        hist: Mutex::new(new_hist()),
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
        let hist = std::rc::Rc::new(std::cell::RefCell::new(new_hist()));
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
        pool_sh.hist.lock().unwrap().add(&*hist.borrow()).unwrap();
    })?;
    sh.stop.store(true, Ordering::Relaxed);
    let elapsed = timer.join().unwrap();
    let h = sh.hist.lock().unwrap();
    let done = sh.done.load(Ordering::Relaxed);
    let ops = done as f64 / elapsed.as_secs_f64();
    let (errors, wrong) = (sh.errors.load(Ordering::Relaxed), sh.wrong.load(Ordering::Relaxed));
    let p = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "workload": args.workload, "connections": conns, "pipeline": args.pipeline, "threads": threads,
                "keys": args.keys, "value_bytes": args.value_bytes, "requests": done, "seconds": elapsed.as_secs_f64(),
                "ops_per_s": ops, "p50_ms": p(0.5), "p90_ms": p(0.9), "p99_ms": p(0.99), "p99_9_ms": p(0.999),
                "p99_99_ms": p(0.9999), "max_ms": h.max() as f64 / 1000.0, "errors": errors, "wrong_replies": wrong,
            })
        );
    } else {
        println!(
            "workload {} · {} connections × pipeline {} · {} thread(s) · {} keys · {} B values",
            args.workload, conns, args.pipeline, threads, args.keys, args.value_bytes
        );
        println!("requests   {done} in {:.2}s", elapsed.as_secs_f64());
        println!("throughput {ops:.0} ops/s");
        println!(
            "latency    p50 {:.3} ms · p90 {:.3} · p99 {:.3} · p99.9 {:.3} · p99.99 {:.3} · max {:.3}",
            p(0.5),
            p(0.9),
            p(0.99),
            p(0.999),
            p(0.9999),
            h.max() as f64 / 1000.0
        );
        println!("errors     {errors} · wrong replies {wrong}");
    }
    if let Some(e) = sh.first_error.lock().unwrap().as_ref() {
        eprintln!("first error: {e}");
    }
    if let Some(path) = &args.hist_out {
        let mut f = std::fs::File::create(path).map_err(|e| format!("{path}: {e}"))?;
        use std::io::Write;
        writeln!(f, "{:>12} {:>14} {:>10} {:>14}", "Value", "Percentile", "TotalCount", "1/(1-Percentile)")
            .unwrap();
        for v in h.iter_quantiles(1) {
            let q = v.quantile_iterated_to();
            let inv = if q < 1.0 { 1.0 / (1.0 - q) } else { f64::INFINITY };
            writeln!(
                f,
                "{:>12.3} {:>14.12} {:>10} {:>14.2}",
                v.value_iterated_to() as f64 / 1000.0,
                q,
                v.count_since_last_iteration(),
                inv
            )
            .unwrap();
        }
    }
    if let Some(path) = &args.plot {
        std::fs::write(path, latency_svg(&h, &args)).map_err(|e| format!("{path}: {e}"))?;
    }
    Ok(if errors > 0 || wrong > 0 {
        std::process::ExitCode::from(2)
    } else {
        std::process::ExitCode::SUCCESS
    })
}
