//! velocity-bench against the real velocityd: GET and SET apart in mixed workloads, the key
//! prefix and the keys a run leaves behind, the .hgrm files, and the --plot / --plot-compare
//! charts.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use velocity::client::Client;
use velocity::protocol::Value;

fn bench_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_velocity-bench"))
}

/// velocity-bench as alice against `s`, with `args` after the connection ones.
fn bench(s: &Server, args: &[&str]) -> Output {
    let port = s.addr.port().to_string();
    let mut cmd = Command::new(bench_bin());
    cmd.args(["--port", &port, "-u", "alice", "--password-stdin", "--accept-new-host", "--known-hosts"])
        .arg(s.known_hosts())
        .args(["--warmup-s", "0", "-c", "2", "-P", "4"])
        .args(args);
    if !s.tls {
        cmd.arg("--plaintext");
    }
    let out = run_with_stdin(&mut cmd, PASSWORD);
    assert!(
        out.status.success(),
        "velocity-bench {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn count(c: &mut Client, sql: &str) -> i64 {
    match &c.execute(sql).unwrap().rows[0][0] {
        Value::Int(n) => *n,
        v => panic!("{v:?}"),
    }
}

/// The statement the "keys left" line gives for removing them.
fn removal(line: &str) -> String {
    line.split_once("to remove them: ")
        .unwrap_or_else(|| panic!("no removal in {line:?}"))
        .1
        .trim()
        .to_string()
}

#[test]
fn mixed_workload_reports_get_and_set_apart_and_the_keys_it_left() {
    let s = Server::start_with(1, &["--plaintext", "--audit", "off"]);
    let out = bench(&s, &["--workload", "mixed:70", "--keys", "500", "--requests", "4000", "--json"]);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document on stdout");
    let (all, get, set) = (j["requests"].as_u64().unwrap(), &j["get"], &j["set"]);
    let (g, w) = (get["requests"].as_u64().unwrap(), set["requests"].as_u64().unwrap());
    assert!(all >= 4000 && g + w == all, "{j}");
    let share = g as f64 / all as f64;
    assert!((0.6..0.8).contains(&share), "GET share {share} of mixed:70: {j}");
    for part in [&j, get, set] {
        let p: Vec<f64> = ["p50_ms", "p90_ms", "p99_ms", "p99_9_ms", "p99_99_ms", "max_ms"]
            .iter()
            .map(|k| part[k].as_f64().unwrap_or_else(|| panic!("{k} in {part}")))
            .collect();
        assert!(p[0] > 0.0 && p.windows(2).all(|w| w[0] <= w[1]), "{part}");
        assert!(part["ops_per_s"].as_f64().unwrap() > 0.0, "{part}");
    }
    let rate = |v: &serde_json::Value| v["ops_per_s"].as_f64().unwrap();
    assert!((rate(get) + rate(set) - rate(&j)).abs() < rate(&j) * 0.01, "{j}");
    // The keys: the benchmark's own prefix, all 500 populated ones, and what the line says.
    assert_eq!(j["key_prefix"], "velocity-bench:");
    let left = &j["keys_left"];
    assert_eq!(left["first"], "velocity-bench:000000000000", "{j}");
    assert_eq!(left["last"], "velocity-bench:000000000499", "{j}");
    assert_eq!(left["count"], 500, "{j}");
    let mut c = s.client();
    assert_eq!(count(&mut c, "SELECT COUNT(*) FROM kv"), 500);
    assert_eq!(count(&mut c, "SELECT COUNT(*) FROM kv WHERE key LIKE 'velocity-bench:%'"), 500);
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err.lines().find(|l| l.starts_with("keys left")).unwrap_or_else(|| panic!("{err}"));
    assert!(line.contains("500 keys in velocity-bench:000000000000 … velocity-bench:000000000499"), "{line}");

    // The table: all, then GET and SET apart; the keys line last.
    let out = bench(&s, &["--workload", "mixed:50", "--keys", "500", "--requests", "2000"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    let at = |p: &str| {
        lines.iter().position(|l| l.starts_with(p)).unwrap_or_else(|| panic!("no {p:?} in\n{text}"))
    };
    assert!(lines[at("latency")].contains("p50") && lines[at("latency")].ends_with("(all)"), "{text}");
    assert_eq!((at("  GET"), at("  SET")), (at("latency") + 1, at("latency") + 2), "{text}");
    assert!(lines[at("  GET")].contains("p99.9") && lines[at("  GET")].contains("requests,"), "{text}");
    let last = lines.last().unwrap();
    assert!(last.starts_with("keys left  500 keys in velocity-bench:"), "{text}");
    // The removal it suggests removes them, and only them.
    c.execute("INSERT INTO kv (key, value) VALUES ('mine', 'stays')").unwrap();
    c.execute(&removal(last)).unwrap();
    assert_eq!(count(&mut c, "SELECT COUNT(*) FROM kv"), 1);
    // A run that writes nothing says so.
    let out = bench(&s, &["--workload", "get", "--no-populate", "--keys", "10", "--requests", "100"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines().last().unwrap().starts_with("keys left  none in velocity-bench:000000000000"),
        "{text}"
    );
}

#[test]
fn key_prefix_names_every_key_and_the_count_is_what_was_written() {
    let s = Server::start_with(1, &["--plaintext", "--audit", "off"]);
    let mut c = s.client();
    // Neighbours that an unescaped LIKE pattern (_ and % are wildcards) would also match.
    c.execute("INSERT INTO kv (key, value) VALUES ('tX1ab:000000000001', 'a'), ('t_1ab:1', 'b')").unwrap();
    let prefix = "t_1%:";
    let out = bench(&s, &["--workload", "set", "--key-prefix", prefix, "--keys", "40", "--requests", "3000"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap();
    let written = count(&mut c, "SELECT COUNT(*) FROM kv") - 2;
    assert!((1..=40).contains(&written), "{written}");
    let want =
        format!("keys left  {written} keys in t_1%:000000000000 … t_1%:000000000039 (prefix \"t_1%:\")");
    assert!(last.starts_with(&want), "{last}\nwant {want}");
    let keys = c.execute("SELECT key FROM kv WHERE key >= 't_1%:' AND key < 't_1%;'").unwrap();
    assert_eq!(keys.rows.len() as i64, written);
    c.execute(&removal(last)).unwrap();
    assert_eq!(count(&mut c, "SELECT COUNT(*) FROM kv"), 2, "the removal took other keys too");
    // Batches write the same key space.
    let out =
        bench(&s, &["--workload", "batch:8", "--key-prefix", prefix, "--keys", "40", "--requests", "200"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().last().unwrap().starts_with("keys left  40 keys in t_1%:000000000000"), "{text}");
}

/// Every y-axis label of a chart: (value, unit).
fn y_ticks(svg: &str) -> Vec<(f64, String)> {
    svg.split("<text class='ytick'")
        .skip(1)
        .map(|t| {
            let label = &t[t.find('>').unwrap() + 1..t.find("</text>").unwrap()];
            let (v, unit) = label.split_once(' ').unwrap();
            (v.parse().unwrap_or_else(|_| panic!("{label}")), unit.to_string())
        })
        .collect()
}

fn texts_of(svg: &str, class: &str) -> Vec<String> {
    svg.split(&format!("<text class='{class}'"))
        .skip(1)
        .map(|t| {
            let inner = &t[t.find('>').unwrap() + 1..t.find("</text>").unwrap()];
            inner.replace("<tspan font-weight='bold'>", "").replace("</tspan>", "")
        })
        .collect()
}

/// Round ticks: 0, then equal steps of 1, 2, 2.5 or 5 times a power of ten, in one unit.
fn assert_round_ticks(svg: &str) {
    let ticks = y_ticks(svg);
    assert!(ticks.len() >= 3, "{ticks:?}");
    assert!(
        ticks.iter().all(|t| t.1 == ticks[0].1) && ["ms", "µs"].contains(&ticks[0].1.as_str()),
        "{ticks:?}"
    );
    assert_eq!(ticks[0].0, 0.0, "{ticks:?}");
    let step = ticks[1].0;
    let mantissa = step / 10f64.powf(step.log10().floor());
    assert!([1.0, 2.0, 2.5, 5.0].iter().any(|m| (m - mantissa).abs() < 1e-6), "step {step}: {ticks:?}");
    for (i, t) in ticks.iter().enumerate() {
        assert!((t.0 - step * i as f64).abs() < step * 1e-6, "{ticks:?}");
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn plot_marks_percentiles_and_compare_overlays_runs() {
    let s = Server::start_with(1, &["--plaintext", "--audit", "off"]);
    let dir = temp_dir("plots");
    let f = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    let out = bench(
        &s,
        &[
            "--workload",
            "get",
            "--keys",
            "200",
            "--requests",
            "3000",
            "--hist-out",
            &f("a.hgrm"),
            "--plot",
            &f("a.svg"),
        ],
    );
    let table = String::from_utf8_lossy(&out.stdout);
    let ops = table.lines().find_map(|l| l.strip_prefix("throughput ")).unwrap().trim_end_matches(" ops/s");
    let ops: f64 = ops.parse().unwrap();
    let svg = read(&dir.join("a.svg"));
    assert!(svg.starts_with("<svg xmlns='http://www.w3.org/2000/svg'") && svg.trim_end().ends_with("</svg>"));
    // The title: workload, connections, pipeline, throughput; the command under it.
    let title = svg.split("font-weight='bold'>").nth(1).unwrap().split("</text>").next().unwrap();
    assert!(title.starts_with("velocity-bench get · 2 connections × pipeline 4 · "), "{title}");
    let shown: f64 =
        title.rsplit(" · ").next().unwrap().trim_end_matches(" ops/s").replace(',', "").parse().unwrap();
    assert!((shown - ops).abs() <= 1.0, "{title} vs {ops}");
    assert!(svg.contains("velocity-bench --port") && svg.contains("--workload get --keys 200"), "no command");
    assert_eq!(texts_of(&svg, "mark"), ["p50", "p99", "p99.9"]);
    assert_eq!(svg.matches("<circle class='dot'").count(), 3);
    assert_eq!(svg.matches("<polyline class='series'").count(), 1);
    let xt = texts_of(&svg, "xtick");
    assert_eq!(xt[..4], ["0%", "90%", "99%", "99.9%"], "{xt:?}");
    assert_round_ticks(&svg);
    let legend = texts_of(&svg, "legend");
    assert!(legend[0].starts_with("get · ") && legend[0].contains(" ops/s · 3,"), "{legend:?}");
    assert!(
        legend[0].contains("p50 ") && legend[0].contains("p99 ") && legend[0].contains("p99.9 "),
        "{legend:?}"
    );

    // The .hgrm file: HdrHistogram's table (cumulative counts), then what the chart needs.
    let a = read(&dir.join("a.hgrm"));
    let rows: Vec<Vec<&str>> = a
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() >= 3 && f[0].parse::<f64>().is_ok())
        .collect();
    let total: u64 = rows.last().unwrap()[2].parse().unwrap();
    assert!(total >= 3000, "{a}");
    assert_eq!(rows.last().unwrap()[1], "1.000000000000");
    assert!(rows.windows(2).all(|w| w[0][2].parse::<u64>().unwrap() <= w[1][2].parse::<u64>().unwrap()));
    for meta in [
        "#[Max     =",
        "#[Label = get]",
        "#[Throughput = ",
        "#[Percentiles = p50 ",
        "#[Command = velocity-bench",
    ] {
        assert!(a.contains(meta), "no {meta:?} in\n{a}");
    }

    // A mixed run writes all, GET and SET; its chart draws the three.
    bench(
        &s,
        &[
            "--workload",
            "mixed:50",
            "--keys",
            "200",
            "--requests",
            "3000",
            "--hist-out",
            &f("b.hgrm"),
            "--plot",
            &f("b.svg"),
        ],
    );
    let b = read(&dir.join("b.svg"));
    assert_eq!(b.matches("<polyline class='series'").count(), 3);
    let legend = texts_of(&b, "legend");
    assert!(
        legend[0].starts_with("all · ") && legend[1].starts_with("GET · ") && legend[2].starts_with("SET · ")
    );
    assert!(read(&dir.join("b.get.hgrm")).contains("#[Label = GET]"));
    assert!(read(&dir.join("b.set.hgrm")).contains("#[Label = SET]"));
    assert_round_ticks(&b);

    // --plot-compare: no server, no password; one curve per file, each with its own command.
    let out = Command::new(bench_bin())
        .args(["--plot-compare", &f("a.hgrm"), &f("b.hgrm"), &f("b.set.hgrm"), "--plot", &f("ab.svg")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ab = read(&dir.join("ab.svg"));
    assert!(ab.contains("latency by percentile, 3 runs"), "{ab}");
    assert_eq!(ab.matches("<polyline class='series'").count(), 3);
    assert_eq!(ab.matches("<circle class='dot'").count(), 9);
    assert_eq!(texts_of(&ab, "mark"), ["p50", "p99", "p99.9"]);
    let legend = texts_of(&ab, "legend");
    assert!(legend[0].starts_with("a get · ") && legend[1].starts_with("b all · "), "{legend:?}");
    assert!(
        legend[2].starts_with("b.set SET · ") && legend.iter().all(|l| l.contains(" ops/s · ")),
        "{legend:?}"
    );
    let commands = texts_of(&ab, "command").join(" ");
    assert!(
        commands.contains("--workload get --keys 200") && commands.contains("--workload mixed:50"),
        "{commands}"
    );
    assert_eq!(commands.matches("velocity-bench --port").count(), 3, "{commands}");
    assert_round_ticks(&ab);
    // The marks read from a file are the run's own.
    let pct = a.lines().find_map(|l| l.strip_prefix("#[Percentiles = p50 ")).unwrap();
    let p50 = pct.split(' ').next().unwrap().parse::<f64>().unwrap();
    let fmt = if p50 < 1.0 { format!("p50 {p50:.3}") } else { format!("p50 {p50:.2}") };
    assert!(legend[0].contains(&fmt), "{} vs {fmt}", legend[0]);

    // A file that is no .hgrm is named.
    std::fs::write(dir.join("junk.hgrm"), "hello\n").unwrap();
    let out = Command::new(bench_bin())
        .args(["--plot-compare", &f("junk.hgrm"), "--plot", &f("x.svg")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("junk.hgrm: no percentile lines"));
    let out = Command::new(bench_bin()).args(["--plot-compare", &f("a.hgrm")]).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--plot"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A run whose server goes away still ends, and its last line says the keys could not be counted.
#[test]
fn a_run_whose_server_died_says_it_could_not_count_the_keys() {
    let s = Server::start_with(1, &["--plaintext", "--audit", "off"]);
    let port = s.addr.port().to_string();
    let mut cmd = Command::new(bench_bin());
    cmd.args(["--port", &port, "-u", "alice", "--password-stdin", "--accept-new-host", "--plaintext"])
        .arg("--known-hosts")
        .arg(s.known_hosts())
        .args(["--warmup-s", "0", "-c", "2", "--workload", "set", "--keys", "100", "--duration-s", "30"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), PASSWORD.as_bytes()).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let started = std::time::Instant::now();
    let (kh, log) = (s.known_hosts(), s.log.clone());
    let dir = s.crash();
    for f in [&kh, &log] {
        let _ = std::fs::remove_file(f);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let out = child.wait_with_output().unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(20), "the run went on without its server");
    assert_eq!(out.status.code(), Some(2), "errors exit 2");
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap();
    assert!(last.starts_with(
        "keys left  up to 100 keys in velocity-bench:000000000000 … velocity-bench:000000000099"
    ));
    assert!(
        last.contains("could not count them") && last.contains("DELETE FROM kv WHERE key LIKE"),
        "{last}"
    );
}
