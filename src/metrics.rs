//! Prometheus metrics, sans-I/O: every core's `ShardStats` in the text exposition format
//! (version 0.0.4), and the little of HTTP/1.x a scrape needs: its request line, and one reply
//! per connection. `server::metrics` moves the bytes; docs/operations.md ("Metrics") lists every
//! metric.
//!
//! Written by hand rather than with a client library: the figures are snapshots collected from
//! every core at each scrape (counters that only the cores themselves bump, and HDR histograms),
//! not live metric objects registered once, and `prometheus-client` writes only the OpenMetrics
//! format and would have each histogram re-observed sample by sample. The format is a few lines
//! of text per series; `promtool check metrics` checks what this writes (tests/e2e_metrics.rs).

use crate::protocol::ErrorCode;
use crate::sql::StatementKind;
use crate::stats::{code_index, ShardStats};
use hdrhistogram::Histogram;
use std::fmt::{Display, Write};

/// Upper bounds (µs) of the latency histograms' buckets (`le`, in seconds): 50 µs to 25 s in
/// 1-2.5-5 steps, then +Inf. The HDR histograms behind them keep 2 significant digits,
/// so a latency less than 1% above a bound may be counted at or below it.
pub const LATENCY_BUCKETS_US: [u64; 18] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000, 25_000_000,
];

/// The media type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the process reports beside its shards' figures.
pub struct Process {
    pub version: &'static str,
    pub uptime_s: u64,
    /// Open connections, server-wide, and the limit.
    pub connections: u64,
    pub max_connections: u64,
    pub rss_bytes: u64,
    /// Whether the write-ahead log is on (its metrics are left out otherwise).
    pub durable: bool,
}

/// The exposition of every shard's statistics, `all` in shard order.
pub fn render(all: &[ShardStats], p: &Process) -> String {
    let shards: Vec<String> = (0..all.len()).map(|i| i.to_string()).collect();
    let mut o = Out { text: String::with_capacity(16 << 10), shards: shards.clone() };
    o.family("velocity_build_info", "gauge", "The server's version (label version); always 1.");
    o.sample("velocity_build_info", &[("version", p.version)], 1);
    o.single("velocity_shards", "gauge", "Shards (cores) the server runs.", all.len());
    o.single("velocity_uptime_seconds", "gauge", "Seconds since the server started.", p.uptime_s);
    o.single(
        "velocity_process_resident_memory_bytes",
        "gauge",
        "Resident memory of the whole process (VmRSS).",
        p.rss_bytes,
    );

    o.family(
        "velocity_requests_total",
        "counter",
        "Statements run, by kind, on the connections of each shard's core.",
    );
    for (i, s) in all.iter().enumerate() {
        for k in StatementKind::ALL {
            o.sample(
                "velocity_requests_total",
                &[("shard", &shards[i]), ("kind", k.name())],
                s.ops[k.index()],
            );
        }
    }
    o.family(
        "velocity_request_errors_total",
        "counter",
        "Statements that ran and failed (any error reply), by kind.",
    );
    for (i, s) in all.iter().enumerate() {
        for k in StatementKind::ALL {
            let v = s.errors_by_kind[k.index()];
            o.sample("velocity_request_errors_total", &[("shard", &shards[i]), ("kind", k.name())], v);
        }
    }
    o.family(
        "velocity_error_replies_total",
        "counter",
        "ERROR replies sent, by wire code (docs/protocol.md): failed statements, statements refused before they ran, protocol errors.",
    );
    for (i, s) in all.iter().enumerate() {
        for c in ErrorCode::ALL.into_iter().filter(|c| *c != ErrorCode::Success) {
            let v = s.errors_by_code[code_index(c)];
            o.sample("velocity_error_replies_total", &[("shard", &shards[i]), ("code", c.name())], v);
        }
    }
    o.histograms(all);

    for m in PER_SHARD {
        o.per_shard(m, all);
    }
    o.single(
        "velocity_connections_max",
        "gauge",
        "The connection limit (--max-connections).",
        p.max_connections,
    );
    o.single(
        "velocity_connections_server_open",
        "gauge",
        "Open client connections, server-wide.",
        p.connections,
    );
    if p.durable {
        for m in PER_SHARD_DURABLE {
            o.per_shard(m, all);
        }
    }
    o.text
}

/// A metric with one value per shard: name, type, help, and its value in a shard's statistics.
type PerShard = (&'static str, &'static str, &'static str, fn(&ShardStats) -> f64);

const PER_SHARD: &[PerShard] = &[
    ("velocity_connections_open", "gauge", "Open client connections (parked ones included).", |s| {
        s.connections as f64
    }),
    ("velocity_connections_parked", "gauge", "Idle connections parked as session state.", |s| {
        s.connections_parked as f64
    }),
    ("velocity_connections_accepted_total", "counter", "Connections accepted and admitted.", |s| {
        s.connections_total as f64
    }),
    (
        "velocity_connections_refused_total",
        "counter",
        "Connections refused with SERVER_OVERLOADED (--max-connections, login slots).",
        |s| s.connections_refused as f64,
    ),
    ("velocity_network_received_bytes_total", "counter", "Bytes of requests read from clients.", |s| {
        s.bytes_in as f64
    }),
    ("velocity_network_sent_bytes_total", "counter", "Bytes of replies written to clients.", |s| {
        s.bytes_out as f64
    }),
    ("velocity_keys", "gauge", "Live keys in the shard.", |s| s.keys as f64),
    ("velocity_memory_data_bytes", "gauge", "Bytes of the shard's entries (headers, keys, values).", |s| {
        s.data_bytes as f64
    }),
    ("velocity_memory_index_bytes", "gauge", "Estimated bytes of the shard's hash index and B-tree.", |s| {
        s.index_bytes as f64
    }),
    (
        "velocity_memory_used_bytes",
        "gauge",
        "Heap bytes the shard's store holds (entries as the allocator rounds them, and indexes): what --max-memory limits.",
        |s| s.memory_used_bytes as f64,
    ),
    ("velocity_memory_limit_bytes", "gauge", "The shard's share of --max-memory (0: no limit).", |s| {
        s.memory_limit_bytes as f64
    }),
    ("velocity_evicted_keys_total", "counter", "Keys evicted to stay under --max-memory.", |s| {
        s.evictions as f64
    }),
    (
        "velocity_rate_limited_requests_total",
        "counter",
        "Requests refused with RATE_LIMITED by a rate limit (--rate-limit-*, a user's).",
        |s| s.rate_limited as f64,
    ),
    (
        "velocity_failed_logins_total",
        "counter",
        "Logins that failed (wrong credentials or throttled).",
        |s| s.failed_logins as f64,
    ),
    (
        "velocity_throttled_logins_total",
        "counter",
        "Failed logins refused unchecked by the login throttle (RATE_LIMITED).",
        |s| s.login_throttled as f64,
    ),
    (
        "velocity_audit_dropped_lines_total",
        "counter",
        "Audit lines dropped because the audit writer fell behind.",
        |s| s.audit_dropped as f64,
    ),
];

/// The write-ahead log's, when it is on.
const PER_SHARD_DURABLE: &[PerShard] = &[
    ("velocity_wal_syncs_total", "counter", "fdatasync calls of the shard's log that completed.", |s| {
        s.syncs as f64
    }),
    ("velocity_wal_sync_seconds_total", "counter", "Time spent in those fdatasync calls.", |s| {
        s.sync_us as f64 / 1e6
    }),
    (
        "velocity_wal_io_stalled_seconds",
        "gauge",
        "How long the log's oldest write or fdatasync still in progress has run (0: none).",
        |s| s.io_stalled_ms as f64 / 1e3,
    ),
    ("velocity_wal_log_bytes", "gauge", "Bytes of the current log file.", |s| s.log_bytes as f64),
    ("velocity_wal_snapshot_bytes", "gauge", "Bytes of the last snapshot.", |s| s.snapshot_bytes as f64),
    ("velocity_wal_snapshots_total", "counter", "Snapshots taken since start.", |s| s.snapshots as f64),
    (
        "velocity_wal_last_snapshot_timestamp_seconds",
        "gauge",
        "When the last snapshot was taken (or the log opened at start), Unix time.",
        |s| s.last_snapshot_ms as f64 / 1e3,
    ),
    (
        "velocity_storage_errors_total",
        "counter",
        "Log groups that could not be made durable (their writes got STORAGE_ERROR), and failed periodic writes or syncs.",
        |s| s.storage_errors as f64,
    ),
];

struct Out {
    text: String,
    shards: Vec<String>,
}

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{k}=\"{}\"", escape_label(v));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }

    fn single(&mut self, name: &str, kind: &str, help: &str, value: impl Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    fn per_shard(&mut self, (name, kind, help, value): &PerShard, all: &[ShardStats]) {
        self.family(name, kind, help);
        for (i, s) in all.iter().enumerate() {
            let shard = std::mem::take(&mut self.shards[i]);
            self.sample(name, &[("shard", &shard)], value(s));
            self.shards[i] = shard;
        }
    }

    /// One histogram per statement kind, every core's merged (per-shard histograms would
    /// multiply the series by the cores for little: latency is a property of the server).
    fn histograms(&mut self, all: &[ShardStats]) {
        let name = "velocity_request_duration_seconds";
        self.family(
            name,
            "histogram",
            "Statement latency, from reading the request to its reply being ready, by kind (all shards).",
        );
        for k in StatementKind::ALL {
            let mut h = all.first().map_or_else(empty_histogram, |s| s.latency_us[k.index()].clone());
            let mut sum_us = 0u64;
            for (i, s) in all.iter().enumerate() {
                if i > 0 {
                    let _ = h.add(&s.latency_us[k.index()]);
                }
                sum_us = sum_us.saturating_add(s.latency_sum_us[k.index()]);
            }
            let bucket = format!("{name}_bucket");
            for (le, n) in LATENCY_BUCKETS_US.iter().zip(cumulative_buckets(&h)) {
                self.sample(&bucket, &[("kind", k.name()), ("le", &seconds(*le))], n);
            }
            self.sample(&bucket, &[("kind", k.name()), ("le", "+Inf")], h.len());
            self.sample(&format!("{name}_sum"), &[("kind", k.name())], sum_us as f64 / 1e6);
            self.sample(&format!("{name}_count"), &[("kind", k.name())], h.len());
        }
    }
}

fn empty_histogram() -> Histogram<u64> {
    ShardStats::default().latency_us.swap_remove(0)
}

/// Recorded latencies at most each bound of LATENCY_BUCKETS_US, cumulative. Each HDR bucket is
/// counted by its lowest value: one that holds a bound counts as at most that bound.
pub fn cumulative_buckets(h: &Histogram<u64>) -> [u64; LATENCY_BUCKETS_US.len()] {
    let mut n = [0u64; LATENCY_BUCKETS_US.len()];
    for v in h.iter_recorded() {
        let at = h.lowest_equivalent(v.value_iterated_to());
        if let Some(i) = LATENCY_BUCKETS_US.iter().position(|b| at <= *b) {
            n[i] += v.count_at_value();
        }
    }
    for i in 1..n.len() {
        n[i] += n[i - 1];
    }
    n
}

/// Microseconds as seconds in plain decimal: 50 -> "0.00005", 2_500_000 -> "2.5".
pub fn seconds(us: u64) -> String {
    let (whole, frac) = (us / 1_000_000, us % 1_000_000);
    if frac == 0 {
        return whole.to_string();
    }
    let digits = format!("{frac:06}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

// ---- HTTP: one request per connection ----

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// GET /metrics (HEAD: the same without the body).
    Metrics {
        head_only: bool,
    },
    NotFound,
    MethodNotAllowed,
    BadRequest,
    /// No end of the head within METRICS_REQUEST_BYTES_MAX (never made by `parse_request`).
    TooLarge,
}

/// The request at the start of `buf` once its head (request line and headers, up to the blank
/// line) is all there; None while it is not. Only the request line matters: headers are
/// skipped, a body is never read (no method taken here has one).
pub fn parse_request(buf: &[u8]) -> Option<Request> {
    // A server should ignore empty lines before the request line (RFC 9112 §2.2).
    let start = buf.iter().position(|b| *b != b'\r' && *b != b'\n')?;
    let buf = &buf[start..];
    let line_end = buf.iter().position(|b| *b == b'\n')?;
    let rest = &buf[line_end + 1..];
    let head_done = rest.starts_with(b"\n")
        || rest.starts_with(b"\r\n")
        || rest.windows(2).any(|w| w == b"\n\n")
        || rest.windows(3).any(|w| w == b"\n\r\n");
    if !head_done {
        return None;
    }
    let line = &buf[..line_end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    Some(request_line(line))
}

fn request_line(line: &[u8]) -> Request {
    let Ok(line) = std::str::from_utf8(line) else { return Request::BadRequest };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Request::BadRequest;
    };
    let token = |s: &str| {
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    if !token(method) || !target.starts_with('/') || !target.bytes().all(|b| b.is_ascii_graphic()) {
        return Request::BadRequest;
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Request::BadRequest;
    }
    let path = target.split('?').next().unwrap_or("");
    if path != "/metrics" {
        return Request::NotFound;
    }
    match method {
        "GET" => Request::Metrics { head_only: false },
        "HEAD" => Request::Metrics { head_only: true },
        _ => Request::MethodNotAllowed,
    }
}

/// A whole HTTP/1.1 reply, after which the connection closes. `head_only`: without the body
/// (its Content-Length stays).
pub fn response(status: u16, content_type: &str, body: &[u8], head_only: bool) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    };
    let allow = if status == 405 { "Allow: GET, HEAD\r\n" } else { "" };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body);
    }
    out
}

/// The reply to a request that is not for the metrics.
pub fn error_response(req: &Request) -> Vec<u8> {
    let (status, text) = match req {
        Request::NotFound => (404, "not found: the metrics are at /metrics\n"),
        Request::MethodNotAllowed => (405, "method not allowed: GET or HEAD /metrics\n"),
        Request::TooLarge => (431, "request too large\n"),
        Request::Metrics { .. } | Request::BadRequest => (400, "bad request\n"),
    };
    response(status, "text/plain; charset=utf-8", text.as_bytes(), false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::message::encode_error;
    use crate::protocol::{encode_frame, MessageType};

    fn process() -> Process {
        Process {
            version: "0.1.0",
            uptime_s: 5,
            connections: 3,
            max_connections: 100,
            rss_bytes: 1 << 20,
            durable: true,
        }
    }

    #[test]
    fn bounds_in_seconds() {
        assert_eq!(seconds(50), "0.00005");
        assert_eq!(seconds(250), "0.00025");
        assert_eq!(seconds(1_000), "0.001");
        assert_eq!(seconds(1_000_000), "1");
        assert_eq!(seconds(2_500_000), "2.5");
        assert_eq!(seconds(25_000_000), "25");
        assert!(LATENCY_BUCKETS_US.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn buckets_are_cumulative_and_end_at_the_count() {
        let mut s = ShardStats::default();
        for us in [1, 49, 50, 51, 99, 100, 1_000, 60_000, 3_000_000, 40_000_000] {
            s.record(StatementKind::SelectPoint, us, true);
        }
        let b = cumulative_buckets(&s.latency_us[StatementKind::SelectPoint.index()]);
        let at = |us: u64| b[LATENCY_BUCKETS_US.iter().position(|x| *x == us).unwrap()];
        assert_eq!(at(50), 3);
        assert_eq!(at(100), 6);
        assert_eq!(at(1_000), 7);
        assert_eq!(at(50_000), 7);
        assert_eq!(at(100_000), 8);
        assert_eq!(at(5_000_000), 9);
        assert_eq!(at(25_000_000), 9); // 40 s is past the last bound: only +Inf has it
        assert!(b.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn every_shard_and_kind_is_a_series() {
        let mut a = ShardStats::default();
        a.record(StatementKind::Insert, 120, true);
        a.record(StatementKind::SelectPoint, 80, false);
        a.keys = 7;
        // Replies as written: a result, then an error, then another; only ERROR frames count.
        let mut out = Vec::new();
        encode_frame(&mut out, MessageType::Response as u8, b"\x00\x01rows");
        encode_error(&mut out, ErrorCode::KeyNotFound, "key not found");
        encode_frame(&mut out, MessageType::Pong as u8, b"");
        a.count_error_replies(&out);
        let mut b = ShardStats::default();
        b.record(StatementKind::Insert, 2_000, false);
        out.clear();
        encode_error(&mut out, ErrorCode::StorageError, "");
        encode_error(&mut out, ErrorCode::StorageError, "twice");
        b.count_error_replies(&out[..out.len() - 3]); // a cut frame is still counted by its header
        b.syncs = 4;
        let text = render(&[a, b], &process());
        for line in [
            "velocity_requests_total{shard=\"0\",kind=\"insert\"} 1",
            "velocity_requests_total{shard=\"1\",kind=\"insert\"} 1",
            "velocity_request_errors_total{shard=\"0\",kind=\"select_point\"} 1",
            "velocity_request_errors_total{shard=\"1\",kind=\"insert\"} 1",
            "velocity_error_replies_total{shard=\"0\",code=\"KEY_NOT_FOUND\"} 1",
            "velocity_error_replies_total{shard=\"1\",code=\"STORAGE_ERROR\"} 2",
            "velocity_error_replies_total{shard=\"0\",code=\"STORAGE_ERROR\"} 0",
            "velocity_request_duration_seconds_bucket{kind=\"insert\",le=\"0.00025\"} 1",
            "velocity_request_duration_seconds_bucket{kind=\"insert\",le=\"0.0025\"} 2",
            "velocity_request_duration_seconds_bucket{kind=\"insert\",le=\"+Inf\"} 2",
            "velocity_request_duration_seconds_sum{kind=\"insert\"} 0.00212",
            "velocity_request_duration_seconds_count{kind=\"insert\"} 2",
            "velocity_request_duration_seconds_count{kind=\"delete\"} 0",
            "velocity_keys{shard=\"0\"} 7",
            "velocity_wal_syncs_total{shard=\"1\"} 4",
            "velocity_build_info{version=\"0.1.0\"} 1",
            "velocity_process_resident_memory_bytes 1048576",
            "# TYPE velocity_request_duration_seconds histogram",
        ] {
            assert!(text.lines().any(|l| l == line), "no line {line:?} in\n{text}");
        }
        assert!(!text.contains("SUCCESS"));
        let quiet = render(&[ShardStats::default()], &Process { durable: false, ..process() });
        assert!(!quiet.contains("velocity_wal_"));
    }

    #[test]
    fn requests() {
        let p = |s: &str| parse_request(s.as_bytes());
        assert_eq!(
            p("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(Request::Metrics { head_only: false })
        );
        assert_eq!(p("\r\nGET /metrics?x=1 HTTP/1.0\n\n"), Some(Request::Metrics { head_only: false }));
        assert_eq!(p("HEAD /metrics HTTP/1.1\r\n\r\n"), Some(Request::Metrics { head_only: true }));
        assert_eq!(p("GET /metrics HTTP/1.1\r\nHost: x\r\n"), None);
        assert_eq!(p("GET /metrics HTTP/1.1\r\n"), None);
        assert_eq!(p("GET /metrics"), None);
        assert_eq!(p(""), None);
        assert_eq!(p("POST /metrics HTTP/1.1\r\n\r\n"), Some(Request::MethodNotAllowed));
        assert_eq!(p("GET / HTTP/1.1\r\n\r\n"), Some(Request::NotFound));
        assert_eq!(p("GET /metricsx HTTP/1.1\r\n\r\n"), Some(Request::NotFound));
        assert_eq!(p("DELETE /x HTTP/1.1\r\n\r\n"), Some(Request::NotFound));
        for bad in [
            "GET  /metrics HTTP/1.1",
            "GET /metrics HTTP/2",
            "GET metrics HTTP/1.1",
            "G(T /metrics HTTP/1.1",
            "GET /metrics HTTP/1.1 x",
            "\u{e9} / HTTP/1.1",
        ] {
            assert_eq!(p(&format!("{bad}\r\n\r\n")), Some(Request::BadRequest), "{bad}");
        }
        assert_eq!(parse_request(b"GET /\xff HTTP/1.1\r\n\r\n"), Some(Request::BadRequest));
        let r = String::from_utf8(error_response(&Request::MethodNotAllowed)).unwrap();
        assert!(r.starts_with("HTTP/1.1 405 ") && r.contains("\r\nAllow: GET, HEAD\r\n"), "{r}");
        let head = String::from_utf8(response(200, CONTENT_TYPE, b"abc", true)).unwrap();
        assert!(head.ends_with("Content-Length: 3\r\nConnection: close\r\n\r\n"), "{head}");
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_parse_without_panicking(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = parse_request(&bytes);
            // Once a blank line ends it, a head with anything in it is answered.
            let mut framed = bytes.clone();
            framed.extend_from_slice(b"\r\n\r\n");
            let blank = bytes.iter().all(|b| *b == b'\r' || *b == b'\n');
            proptest::prop_assert!(blank || parse_request(&framed).is_some());
        }
    }
}
