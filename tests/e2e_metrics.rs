//! The metrics endpoint (`--metrics-listen`) of the real velocityd, over real sockets: counters
//! that move with the statements run, output that `promtool check metrics` accepts, HTTP edges
//! (404, 405, 400, 431, 408, the connection bound) and garbage that never panics or hangs the
//! server, and a real Prometheus server scraping it with the scrape config and alert rules of
//! docs/operations.md.
//!
//! promtool and prometheus come from Debian's `prometheus` package, which scripts/test.sh
//! installs. Without them these tests say so and skip, except under CI (CI set), where they fail.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use velocity::protocol::ErrorCode;

/// A server with the metrics endpoint on a free port; the endpoint's address.
fn start(cores: usize, extra: &[&str]) -> (Server, SocketAddr) {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let port = addr.port().to_string();
    let mut args = vec!["--metrics-listen", &port];
    args.extend_from_slice(extra);
    let s = Server::start_with(cores, &args);
    assert!(s.log_text().contains(&format!("metrics at http://{addr}/metrics")), "{}", s.log_text());
    (s, addr)
}

/// One HTTP exchange: `request` sent as is, then everything the server says until it closes.
fn exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    c.write_all(request).unwrap();
    let mut out = Vec::new();
    match c.read_to_end(&mut out) {
        Ok(_) => {}
        // A reply to a request with more unread behind it may end in a reset.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!(
            "reading the reply to {:?}: {e}",
            String::from_utf8_lossy(&request[..request.len().min(60)])
        ),
    }
    out
}

/// Status, headers and body of a GET of `path` on `addr`.
fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let raw =
        exchange(addr, format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: e2e\r\n\r\n").as_bytes());
    split_reply(&raw)
}

fn split_reply(raw: &[u8]) -> (u16, String, String) {
    let text = String::from_utf8_lossy(raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no HTTP reply: {text:?}"));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{head}"));
    (status, head.to_owned(), body.to_owned())
}

fn scrape(addr: SocketAddr) -> String {
    let (status, head, body) = get(addr, "/metrics");
    assert_eq!(status, 200, "{head}\n{body}");
    assert!(head.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8"), "{head}");
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("{head}"));
    assert_eq!(len, body.len());
    body
}

/// Samples of an exposition: (name, labels) -> value.
type Samples = BTreeMap<(String, BTreeMap<String, String>), f64>;

fn samples(text: &str) -> Samples {
    let mut out = Samples::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("{line}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series.to_owned(), BTreeMap::new()),
            Some((name, rest)) => {
                let rest = rest.strip_suffix('}').unwrap();
                let labels = rest
                    .split(',')
                    .map(|kv| {
                        let (k, v) = kv.split_once('=').unwrap();
                        (k.to_owned(), v.trim_matches('"').to_owned())
                    })
                    .collect();
                (name.to_owned(), labels)
            }
        };
        assert!(out.insert((name, labels), value).is_none(), "a series twice: {line}");
    }
    out
}

/// The sum of `name`'s samples whose labels include every pair of `with`.
fn sum(s: &Samples, name: &str, with: &[(&str, &str)]) -> f64 {
    s.iter()
        .filter(|((n, l), _)| {
            n == name && with.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, v)| *v)
        .sum()
}

/// A program of Debian's `prometheus` package, or None (then the test skips, but fails under CI).
fn prometheus_tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    if found.is_none() {
        let msg =
            format!("{name} is not installed (Debian's prometheus package; scripts/test.sh installs it)");
        assert!(std::env::var_os("CI").is_none(), "{msg}");
        eprintln!("SKIPPED: {msg}");
    }
    found
}

fn promtool_accepts(metrics: &str) {
    let Some(promtool) = prometheus_tool("promtool") else { return };
    let out = run_with_stdin(Command::new(promtool).args(["check", "metrics"]), metrics);
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics: {said}");
}

fn assert_no_panic(s: &Server) {
    let log = s.log_text();
    assert!(!log.contains("panicked"), "velocityd panicked:\n{log}");
}

#[test]
fn a_scrape_counts_the_statements_run_and_promtool_accepts_it() {
    let (s, addr) = start(2, &["--plaintext"]);
    let before = samples(&scrape(addr));
    assert_eq!(sum(&before, "velocity_shards", &[]), 2.0);
    assert_eq!(sum(&before, "velocity_keys", &[]), 0.0);

    let mut c = s.client();
    for i in 0..40 {
        c.execute(&format!("INSERT INTO kv (key, value) VALUES ('k{i}', 'value {i}')")).unwrap();
    }
    for i in 0..30 {
        c.execute(&format!("SELECT value FROM kv WHERE key = 'k{i}'")).unwrap();
    }
    for i in 0..5 {
        let e = c.execute(&format!("SELECT value FROM kv WHERE key = 'missing{i}'")).unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::KeyNotFound));
    }
    c.execute("SELECT COUNT(*) FROM kv").unwrap();
    c.execute("DELETE FROM kv WHERE key = 'k0'").unwrap();
    let e = c.execute("SELEKT nonsense").unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidCommand));

    let text = scrape(addr);
    promtool_accepts(&text);
    let after = samples(&text);
    let moved = |name: &str, with: &[(&str, &str)]| sum(&after, name, with) - sum(&before, name, with);
    assert_eq!(moved("velocity_requests_total", &[("kind", "insert")]), 40.0);
    assert_eq!(moved("velocity_requests_total", &[("kind", "select_point")]), 35.0);
    assert_eq!(moved("velocity_requests_total", &[("kind", "count")]), 1.0);
    assert_eq!(moved("velocity_requests_total", &[("kind", "delete")]), 1.0);
    assert_eq!(moved("velocity_request_errors_total", &[("kind", "select_point")]), 5.0);
    assert_eq!(moved("velocity_request_errors_total", &[("kind", "insert")]), 0.0);
    assert_eq!(moved("velocity_error_replies_total", &[("code", "KEY_NOT_FOUND")]), 5.0);
    assert_eq!(moved("velocity_error_replies_total", &[("code", "INVALID_COMMAND")]), 1.0);
    // The histogram holds every statement of its kind, its buckets cumulative.
    let hist = "velocity_request_duration_seconds";
    for kind in ["insert", "select_point", "count", "delete"] {
        let count = sum(&after, &format!("{hist}_count"), &[("kind", kind)]);
        assert_eq!(count, sum(&after, "velocity_requests_total", &[("kind", kind)]), "{kind}");
        assert_eq!(sum(&after, &format!("{hist}_bucket"), &[("kind", kind), ("le", "+Inf")]), count);
        let sum_s = sum(&after, &format!("{hist}_sum"), &[("kind", kind)]);
        assert!(sum_s > 0.0 && sum_s < count * 1.0, "{kind}: {sum_s} s for {count}");
        let mut last = 0.0;
        for ((n, l), v) in &after {
            if n == &format!("{hist}_bucket") && l["kind"] == kind {
                assert!(*v >= 0.0 && *v <= count);
                last = f64::max(last, *v);
            }
        }
        assert_eq!(last, count);
    }
    // The SQL connection is open; the shard owning each key holds it.
    assert!(sum(&after, "velocity_connections_open", &[]) >= 1.0);
    assert!(sum(&after, "velocity_connections_server_open", &[]) >= 1.0);
    assert!(moved("velocity_connections_accepted_total", &[]) >= 1.0);
    assert_eq!(sum(&after, "velocity_keys", &[]), 39.0);
    assert!(
        sum(&after, "velocity_keys", &[("shard", "0")]) > 0.0
            && sum(&after, "velocity_keys", &[("shard", "1")]) > 0.0
    );
    assert!(sum(&after, "velocity_memory_data_bytes", &[]) > 39.0 * 10.0);
    assert!(sum(&after, "velocity_memory_index_bytes", &[]) > 0.0);
    assert!(moved("velocity_network_received_bytes_total", &[]) > 40.0 * 40.0);
    assert!(moved("velocity_network_sent_bytes_total", &[]) > 0.0);
    assert!(sum(&after, "velocity_process_resident_memory_bytes", &[]) > 1e6);
    // Durable by default: each write was synced, on the log of the shard that owns its key.
    assert!(moved("velocity_wal_syncs_total", &[]) >= 1.0);
    assert!(moved("velocity_wal_sync_seconds_total", &[]) > 0.0);
    assert!(sum(&after, "velocity_wal_log_bytes", &[]) > 0.0);
    assert_eq!(sum(&after, "velocity_storage_errors_total", &[]), 0.0);
    assert!(sum(&after, "velocity_wal_io_stalled_seconds", &[]) < 5.0);
    assert!(sum(&after, "velocity_wal_last_snapshot_timestamp_seconds", &[("shard", "0")]) > 1.7e9);
    for name in [
        "velocity_connections_parked",
        "velocity_connections_refused_total",
        "velocity_rate_limited_requests_total",
        "velocity_failed_logins_total",
        "velocity_throttled_logins_total",
        "velocity_audit_dropped_lines_total",
        "velocity_wal_snapshot_bytes",
        "velocity_wal_snapshots_total",
        "velocity_uptime_seconds",
        "velocity_connections_max",
        "velocity_build_info",
    ] {
        assert!(after.keys().any(|(n, _)| n == name), "no {name} in\n{text}");
        // A per-shard metric has a series for every shard.
        if after.keys().any(|(n, l)| n == name && l.contains_key("shard")) {
            for shard in ["0", "1"] {
                assert!(
                    after.keys().any(|(n, l)| n == name && l["shard"] == shard),
                    "{name} of shard {shard}"
                );
            }
        }
    }

    // Every metric served is in docs/operations.md's table, and every one there is served.
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/operations.md")).unwrap();
    let documented: std::collections::BTreeSet<&str> =
        doc.lines().filter_map(|l| l.strip_prefix("| `velocity_")?.split('`').next()).collect();
    let served: std::collections::BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE velocity_")?.split(' ').next().map(str::to_owned))
        .collect();
    let served: std::collections::BTreeSet<&str> = served.iter().map(String::as_str).collect();
    assert_eq!(documented, served, "docs/operations.md's metrics table against a scrape");

    // Failed logins and rate limits are counted where they happen.
    let wrong = velocity::client::Credentials::Password { user: "alice".into(), password: "wrong".into() };
    assert!(s.connect(&wrong).is_err());
    let later = samples(&scrape(addr));
    assert_eq!(
        sum(&later, "velocity_failed_logins_total", &[]) - sum(&after, "velocity_failed_logins_total", &[]),
        1.0
    );
    // A readonly user's write is refused before it runs: counted by its code.
    let mut r = s.connect(&s.reader).unwrap();
    let e = r.execute("INSERT INTO kv (key, value) VALUES ('no', 'no')").unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Unauthorized));
    let later = samples(&scrape(addr));
    assert_eq!(sum(&later, "velocity_error_replies_total", &[("code", "UNAUTHORIZED")]), 1.0);
    // SHOW STATS agrees with the endpoint.
    let rs = c.execute("SHOW STATS").unwrap();
    let ops_insert =
        rs.rows.iter().find(|r| r[0] == velocity::protocol::Value::Bytes(b"ops_insert".to_vec())).unwrap();
    assert_eq!(ops_insert[1], velocity::protocol::Value::Int(40));
    drop(c);
    assert_no_panic(&s);
}

#[test]
fn without_durability_there_are_no_log_metrics_and_rate_limits_count() {
    let (s, addr) = start(1, &["--plaintext", "--durability", "none", "--rate-limit-conn", "5:5"]);
    let mut c = s.client();
    let mut limited = 0;
    for i in 0..30 {
        if let Err(e) = c.execute(&format!("INSERT INTO kv (key, value) VALUES ('k{i}', 'v')")) {
            assert_eq!(e.code(), Some(ErrorCode::RateLimited));
            limited += 1;
        }
    }
    assert!(limited > 0);
    let text = scrape(addr);
    promtool_accepts(&text);
    assert!(!text.contains("velocity_wal_") && !text.contains("velocity_storage_errors"), "{text}");
    let m = samples(&text);
    assert_eq!(sum(&m, "velocity_rate_limited_requests_total", &[]), limited as f64);
    assert_eq!(sum(&m, "velocity_error_replies_total", &[("code", "RATE_LIMITED")]), limited as f64);
    assert_eq!(sum(&m, "velocity_shards", &[]), 1.0);
    assert_no_panic(&s);
}

#[test]
fn other_paths_methods_and_garbage_get_http_errors_and_never_stall_the_server() {
    let (s, addr) = start(2, &["--plaintext"]);
    let (status, _, body) = get(addr, "/");
    assert_eq!(status, 404, "{body}");
    assert_eq!(get(addr, "/metricsx").0, 404);
    assert_eq!(get(addr, "/metrics?name[]=up").0, 200);
    let (status, head, _) =
        split_reply(&exchange(addr, b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"));
    assert_eq!(status, 405);
    assert!(head.contains("\r\nAllow: GET, HEAD"), "{head}");
    let (status, head, body) = split_reply(&exchange(addr, b"HEAD /metrics HTTP/1.0\r\n\r\n"));
    assert_eq!(status, 200);
    assert!(body.is_empty() && !head.contains("Content-Length: 0"), "{head}");
    assert_eq!(split_reply(&exchange(addr, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n")).0, 400);
    assert_eq!(split_reply(&exchange(addr, b"GET /metrics HTTP/9\r\n\r\n")).0, 400);
    let mut big = b"GET /metrics HTTP/1.1\r\nX-Filler: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 100_000));
    assert_eq!(split_reply(&exchange(addr, &big)).0, 431);

    // Garbage of every length, cut short or not: each gets an HTTP error or nothing, and quickly.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let started = Instant::now();
    for i in 0..300 {
        let len = (next() % 12_000) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if i % 3 == 0 {
            bytes.extend_from_slice(b"\r\n\r\n");
        } else if i % 3 == 1 {
            let line = ["GET", "PUT", "G\0T", "GET /metrics", "GET /metrics HTTP/1.1\r\n"][i % 5];
            bytes.splice(0..0, line.bytes());
        }
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = c.write_all(&bytes);
        let _ = c.shutdown(std::net::Shutdown::Write);
        let mut out = Vec::new();
        match c.read_to_end(&mut out) {
            Ok(_) => assert!(
                out.is_empty() || out.starts_with(b"HTTP/1.1 "),
                "{:?}",
                String::from_utf8_lossy(&out)
            ),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "case {i}: {e}"),
        }
    }
    assert!(started.elapsed() < Duration::from_secs(60), "garbage took {:?}", started.elapsed());
    assert!(!scrape(addr).is_empty());
    let mut c = s.client();
    c.execute("INSERT INTO kv (key, value) VALUES ('still', 'here')").unwrap();
    assert_no_panic(&s);
}

#[test]
fn silent_clients_time_out_and_are_bounded_while_sql_goes_on() {
    let (s, addr) = start(2, &["--plaintext"]);
    // Eight silent connections take every slot; a ninth is closed unanswered.
    let silent: Vec<TcpStream> = (0..8).map(|_| TcpStream::connect(addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let ninth = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n");
    assert!(
        ninth.is_empty() && t.elapsed() < Duration::from_secs(2),
        "{:?}",
        String::from_utf8_lossy(&ninth)
    );
    // Core 0 serves SQL meanwhile, without delay.
    let mut c = s.client();
    for i in 0..50 {
        let t = Instant::now();
        c.execute(&format!("INSERT INTO kv (key, value) VALUES ('k{i}', 'v')")).unwrap();
        assert!(t.elapsed() < Duration::from_secs(1));
    }
    // Each silent one gets 408 after the request timeout (5 s), then scrapes are served again.
    for mut sc in silent {
        sc.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut out = Vec::new();
        sc.read_to_end(&mut out).unwrap();
        assert_eq!(split_reply(&out).0, 408);
    }
    let waited = t.elapsed();
    assert!(waited > Duration::from_secs(4) && waited < Duration::from_secs(15), "{waited:?}");
    // A scrape trickled a byte at a time is served once whole.
    let mut c2 = TcpStream::connect(addr).unwrap();
    for b in b"GET /metrics HTTP/1.1\r\n\r\n" {
        c2.write_all(&[*b]).unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut out = Vec::new();
    c2.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    c2.read_to_end(&mut out).unwrap();
    assert_eq!(split_reply(&out).0, 200);
    assert!(sum(&samples(&scrape(addr)), "velocity_requests_total", &[("kind", "insert")]) >= 50.0);
    assert_no_panic(&s);
}

/// A fenced block of docs/operations.md whose text contains `marker`.
fn doc_block(marker: &str) -> String {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/operations.md")).unwrap();
    let mut blocks = Vec::new();
    let mut cur: Option<Vec<&str>> = None;
    for line in doc.lines() {
        match (&mut cur, line.trim_start().starts_with("```")) {
            (None, true) => cur = Some(Vec::new()),
            (Some(b), true) => {
                blocks.push(b.join("\n"));
                cur = None;
            }
            (Some(b), false) => b.push(line),
            (None, false) => {}
        }
    }
    blocks
        .into_iter()
        .find(|b| b.contains(marker))
        .unwrap_or_else(|| panic!("no block with {marker} in docs/operations.md"))
}

/// GET `path` from Prometheus's HTTP API: its JSON.
fn api(prom: SocketAddr, path: &str) -> Option<serde_json::Value> {
    let mut c = TcpStream::connect(prom).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    c.write_all(format!("GET {path} HTTP/1.0\r\nHost: {prom}\r\n\r\n").as_bytes()).ok()?;
    let mut raw = Vec::new();
    c.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (_, body) = text.split_once("\r\n\r\n")?;
    serde_json::from_str(body).ok()
}

fn query(prom: SocketAddr, promql: &str) -> Option<f64> {
    let enc: String = promql
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let j = api(prom, &format!("/api/v1/query?query={enc}"))?;
    let v = j["data"]["result"].as_array()?.first()?["value"][1].as_str()?.parse::<f64>().ok()?;
    v.is_finite().then_some(v)
}

#[test]
fn a_real_prometheus_scrapes_it_with_the_documented_config_and_rules() {
    let (Some(prometheus), Some(promtool)) = (prometheus_tool("prometheus"), prometheus_tool("promtool"))
    else {
        return;
    };
    let (s, addr) = start(2, &["--plaintext"]);
    let dir = temp_dir("prometheus");
    // The documented files, scraping this server every second and evaluating the rules as often.
    let config =
        doc_block("scrape_configs:").replace("127.0.0.1:9411", &addr.to_string()).replace("15s", "1s");
    assert!(config.contains(&addr.to_string()) && config.contains("velocity-rules.yml"), "{config}");
    std::fs::write(dir.join("prometheus.yml"), &config).unwrap();
    std::fs::write(dir.join("velocity-rules.yml"), doc_block("groups:")).unwrap();
    for (what, file) in [("config", "prometheus.yml"), ("rules", "velocity-rules.yml")] {
        let out = Command::new(&promtool).args(["check", what]).arg(dir.join(file)).output().unwrap();
        assert!(
            out.status.success(),
            "promtool check {what}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let web: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let child = Command::new(prometheus)
        .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address={web}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _guard = Kill(child);
    let prom_log = || std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default();

    // Writes keep coming, so rates and quantiles have something to show.
    let mut c = s.client();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut i = 0;
    let wait_for = |what: &str, c: &mut velocity::client::Client, i: &mut usize, ok: &dyn Fn() -> bool| loop {
        for _ in 0..20 {
            c.execute(&format!("INSERT INTO kv (key, value) VALUES ('p{i}', 'v')")).unwrap();
            *i += 1;
        }
        if ok() {
            return;
        }
        assert!(Instant::now() < deadline, "Prometheus never showed {what}; its log:\n{}", prom_log());
        std::thread::sleep(Duration::from_millis(200));
    };
    wait_for("the target up", &mut c, &mut i, &|| query(web, "up{job=\"velocity\"}") == Some(1.0));
    wait_for("the inserts", &mut c, &mut i, &|| {
        query(web, "sum(velocity_requests_total{kind=\"insert\"})").is_some_and(|n| n >= 20.0)
    });
    let p99 = "histogram_quantile(0.99, sum by (le) (rate(velocity_request_duration_seconds_bucket{kind=\"insert\"}[10s])))";
    wait_for("an insert p99", &mut c, &mut i, &|| query(web, p99).is_some_and(|v| v > 0.0 && v < 25.0));
    wait_for("the keys", &mut c, &mut i, &|| query(web, "sum(velocity_keys)").is_some_and(|n| n >= 20.0));
    // Every documented rule is loaded and evaluates without error.
    wait_for("the rules evaluated", &mut c, &mut i, &|| {
        let Some(j) = api(web, "/api/v1/rules") else { return false };
        let rules: Vec<&serde_json::Value> = j["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .collect();
        !rules.is_empty()
            && rules.iter().all(|r| {
                r["health"] == "ok" && r["lastEvaluation"].as_str().is_some_and(|t| !t.starts_with("0001"))
            })
    });
    eprintln!(
        "prometheus at {web}: {:?} inserts, insert p99 {:?} s, after {i} inserts",
        query(web, "sum(velocity_requests_total{kind=\"insert\"})"),
        query(web, p99)
    );
    // No alert fires on a healthy server.
    let alerts = api(web, "/api/v1/alerts").unwrap();
    let firing: Vec<_> =
        alerts["data"]["alerts"].as_array().unwrap().iter().filter(|a| a["state"] == "firing").collect();
    assert!(firing.is_empty(), "{firing:?}");
    drop(_guard);
    drop(c);
    assert_no_panic(&s);
    let _ = std::fs::remove_dir_all(&dir);
}
