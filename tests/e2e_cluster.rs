//! Three real velocityd processes on loopback ports, made one cluster with `velocityd cluster
//! init`, talked to with the real client: rows replicate, every node serves every key, a node
//! killed with SIGKILL or stopped with SIGSTOP leaves its ranges writable again, a restarted one
//! catches up, and what concurrent clients saw through all of it is linearizable.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use velocity::client::{build, Client};
use velocity::linearizability::{self, Operation};
use velocity::protocol::{ErrorCode, Value};

const NODES: usize = 3;
const CORES: usize = 2;
const RANGES: usize = 12;

/// Two consecutive free ports (core c of a node takes its peers on the peer port + c), below
/// the kernel's ephemeral range and handed out once each in this process: a peer port is
/// written in the cluster file before its node starts, and a port `free_port` picked (an
/// ephemeral one) for another test's server meanwhile could take it, failing that node's start.
fn free_port_pair() -> u16 {
    use std::sync::atomic::AtomicU16;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let _ = NEXT.compare_exchange(
        0,
        20_000 + (std::process::id() % 40) as u16 * 200,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    loop {
        let p = NEXT.fetch_add(2, Ordering::SeqCst);
        assert!(p < 30_000, "out of peer ports");
        if TcpListener::bind(("127.0.0.1", p)).is_ok() && TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
}

struct Cluster {
    nodes: Vec<Option<Server>>,
    dirs: Vec<PathBuf>,
    ports: Vec<u16>,
}

const ARGS: &[&str] = &["--plaintext", "--durability", "sync"];

impl Cluster {
    fn start() -> Cluster {
        Cluster::start_with(ARGS)
    }

    fn start_with(args: &[&str]) -> Cluster {
        let peers: Vec<String> = (0..NODES).map(|_| format!("127.0.0.1:{}", free_port_pair())).collect();
        let dirs = init_cluster("cluster", RANGES, CORES, &peers);
        let nodes: Vec<Option<Server>> =
            dirs.iter().map(|d| Some(Server::start_in(d.clone(), CORES, args))).collect();
        let ports = nodes.iter().map(|n| n.as_ref().unwrap().addr.port()).collect();
        let c = Cluster { nodes, dirs, ports };
        c.wait_for_leaders(&[0, 1, 2]);
        c
    }

    /// Four nodes (more than the three replicas of each range), until every range has a leader.
    fn start_four(name: &str) -> Cluster {
        let peers: Vec<String> = (0..4).map(|_| format!("127.0.0.1:{}", free_port_pair())).collect();
        let dirs = init_cluster(name, RANGES, CORES, &peers);
        let nodes: Vec<Option<Server>> =
            dirs.iter().map(|d| Some(Server::start_in(d.clone(), CORES, ARGS))).collect();
        let ports = nodes.iter().map(|n| n.as_ref().unwrap().addr.port()).collect();
        let c = Cluster { nodes, dirs, ports };
        c.wait_for_leaders(&[0, 1, 2, 3]);
        c
    }

    /// Node `i` killed (SIGKILL) and started again on its data, on its port.
    fn crash_and_restart(&mut self, i: usize, args: &[&str]) {
        let dir = self.nodes[i].take().unwrap().crash();
        self.nodes[i] = Some(Server::start_at(dir, CORES, args, Some(self.ports[i])));
    }

    /// Every node killed (SIGKILL) at once and started again on its data, until every range has
    /// a leader.
    fn crash_all_and_restart(&mut self, args: &[&str]) {
        let dirs: Vec<PathBuf> = (0..NODES).map(|i| self.nodes[i].take().unwrap().crash()).collect();
        for (i, dir) in dirs.into_iter().enumerate() {
            self.nodes[i] = Some(Server::start_at(dir, CORES, args, Some(self.ports[i])));
        }
        self.wait_for_leaders(&[0, 1, 2]);
    }

    fn node(&self, i: usize) -> &Server {
        self.nodes[i].as_ref().expect("node running")
    }

    fn client(&self, i: usize) -> Client {
        let c = self.node(i).client();
        c.set_timeout(Some(Duration::from_secs(20))).unwrap();
        c
    }

    /// Each range's applied index on node `i`, as node 1 reports it (0 where it has none).
    fn applied_on(&self, i: usize) -> Vec<u64> {
        replica_indexes(&self.dirs[0])
            .iter()
            .map(|r| r.iter().find(|(n, _, _)| *n == i as u64 + 1).map(|(_, a, _)| *a).unwrap_or(0))
            .collect()
    }

    /// Until every live replica's log (as node 1 reports them) starts past `seen`, each range's.
    fn wait_compacted_past(&self, seen: &[u64]) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !replica_indexes(&self.dirs[0])
            .iter()
            .zip(seen)
            .all(|(r, seen)| r.iter().all(|(_, _, snap)| snap > seen))
        {
            assert!(Instant::now() < deadline, "the logs were not compacted past {seen:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Until node `i` reports a leader for every range and each range's replicas at one
    /// applied index (for up to 120 s from `started`).
    fn wait_caught_up(&self, i: usize, started: Instant) {
        loop {
            let st = self.status(i);
            if st.iter().all(|(_, l, a)| l.is_some() && a.len() == NODES && a.iter().all(|x| *x == a[0])) {
                return;
            }
            assert!(started.elapsed() < Duration::from_secs(120), "{st:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// How many snapshots node `i` installed from leaders, by its log.
    fn installs(&self, i: usize) -> usize {
        self.node(i).log_text().lines().filter(|l| l.contains("snapshot installed from the leader")).count()
    }

    /// `cluster status` asked as node `i`: each range's leader (as the leader reports it) and
    /// each live replica's applied index.
    fn status(&self, i: usize) -> Vec<(u64, Option<u64>, Vec<u64>)> {
        let all = velocity::server::node::status(&self.dirs[i]).unwrap();
        for e in all.iter().filter(|c| c.get("error").is_some()) {
            eprintln!("status: {e}");
        }
        let mut out: Vec<(u64, Option<u64>, Vec<u64>)> =
            (0..RANGES as u64).map(|r| (r, None, Vec::new())).collect();
        for core in &all {
            for r in core["ranges"].as_array().into_iter().flatten() {
                let e = &mut out[r["range"].as_u64().unwrap() as usize];
                if r["is_leader"].as_bool() == Some(true) {
                    e.1 = core["node"].as_u64();
                }
                e.2.push(r["applied"].as_u64().unwrap());
            }
        }
        out
    }

    /// Until every range has a leader among `live` (indexes), as node `live[0]` sees it.
    fn wait_for_leaders(&self, live: &[usize]) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let st = self.status(live[0]);
            let ids: Vec<u64> = live.iter().map(|i| *i as u64 + 1).collect();
            if st.iter().all(|(_, l, _)| l.is_some_and(|l| ids.contains(&l))) {
                return;
            }
            assert!(Instant::now() < deadline, "no leader for every range: {st:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The node leading most ranges (index), as node `ask` sees it.
    fn busiest_leader(&self, ask: usize) -> usize {
        let mut count = [0usize; NODES];
        for (_, l, _) in self.status(ask) {
            count[l.unwrap() as usize - 1] += 1;
        }
        (0..NODES).max_by_key(|i| count[*i]).unwrap()
    }
}

/// Figure `name` of SHOW STATS.
fn stat(c: &mut Client, name: &str) -> i64 {
    let rs = c.execute("SHOW STATS").unwrap();
    match rs.rows.iter().find(|r| r[0] == Value::Bytes(name.as_bytes().to_vec())) {
        Some(r) => match r[1] {
            Value::Int(n) => n,
            ref v => panic!("{name}: {v:?}"),
        },
        None => panic!("no {name} in {rs:?}"),
    }
}

fn count(c: &mut Client) -> i64 {
    let rs = c.execute("SELECT COUNT(*) FROM kv").unwrap();
    match rs.rows[0][0] {
        Value::Int(n) => n,
        ref v => panic!("{v:?}"),
    }
}

/// Upsert `keys` (value = key) through `c` until the statement succeeds: how long that took.
fn write_until_ok(c: &mut Client, keys: &[String]) -> Duration {
    let rows: Vec<(&str, &str)> = keys.iter().map(|k| (k.as_str(), k.as_str())).collect();
    let sql = build::set_many(&rows);
    let started = Instant::now();
    loop {
        match c.execute(&sql) {
            Ok(_) => return started.elapsed(),
            Err(e) if matches!(e.code(), Some(ErrorCode::ServerOverloaded | ErrorCode::OutcomeUnknown)) => {}
            Err(e) => panic!("{e}"),
        }
        assert!(started.elapsed() < Duration::from_secs(30), "not writable again within 30 s");
    }
}

#[test]
fn a_three_node_cluster_replicates_rows_and_every_node_serves_every_key() {
    let c = Cluster::start();
    let mut a = c.client(0);
    let keys: Vec<String> = (0..100).map(|i| format!("key-{i:03}")).collect();
    let rows: Vec<(&str, &str)> = keys.iter().map(|k| (k.as_str(), "v1")).collect();
    // One statement across every range (each range's part is its own Raft entry).
    assert_eq!(a.execute(&build::set_many(&rows)).unwrap().affected, 100);
    assert_eq!(a.execute(&build::update(b"key-007", b"v2")).unwrap().affected, 1);
    assert_eq!(a.execute(&build::delete(b"key-099")).unwrap().affected, 1);
    assert!(a.cas(b"key-001", b"v1", b"v3").unwrap());
    assert!(!a.cas(b"key-001", b"v1", b"v4").unwrap());
    assert_eq!(a.incr(b"counter", 5).unwrap(), 5);
    // A write acknowledged by one node is read by every node at once: reads are read-index.
    for i in 0..NODES {
        let mut b = c.client(i);
        assert_eq!(count(&mut b), 100, "node {}", i + 1);
        assert_eq!(value_of(&mut b, "key-007").as_deref(), Some(&b"v2"[..]));
        assert_eq!(value_of(&mut b, "key-001").as_deref(), Some(&b"v3"[..]));
        assert_eq!(value_of(&mut b, "key-099"), None);
        assert_eq!(b.incr(b"counter", 1).unwrap(), 6 + i as i64);
        let rs = b.execute("SELECT key FROM kv WHERE key LIKE 'key-00%' ORDER BY key").unwrap();
        assert_eq!(rs.rows.len(), 10);
    }
    // SHOW STATUS on each node has its replicas' Raft state, as `cluster status` does.
    let mut led = 0;
    for i in 0..NODES {
        let rs = c.client(i).execute("SHOW STATUS").unwrap();
        let row =
            |name: &str| rs.rows.iter().find(|r| r[0] == Value::Bytes(name.into())).map(|r| r[1].clone());
        assert_eq!(row("cluster_node"), Some(Value::Int(i as i64 + 1)));
        assert_eq!(row("cluster_ranges"), Some(Value::Int(RANGES as i64)));
        let Some(Value::Int(n)) = row("cluster_ranges_led") else { panic!("{rs:?}") };
        led += n;
        for r in 0..RANGES {
            assert!(matches!(row(&format!("range_{r}_leader")), Some(Value::Int(1..=3))), "{rs:?}");
            let (Some(Value::Int(commit)), Some(Value::Int(applied))) =
                (row(&format!("range_{r}_commit")), row(&format!("range_{r}_applied")))
            else {
                panic!("{rs:?}")
            };
            assert!(commit >= applied && applied > 0, "range {r}: {commit} {applied}");
            // The leader tells each other replica's lag.
            if row(&format!("range_{r}_leader")) == Some(Value::Int(i as i64 + 1)) {
                for other in (1..=NODES).filter(|n| *n != i + 1) {
                    assert!(row(&format!("range_{r}_lag_node_{other}")).is_some(), "{rs:?}");
                }
            }
        }
    }
    assert_eq!(led, RANGES as i64, "each range led by one node");
    // A range DELETE deletes by name through each range's Raft group: gone on every node.
    let rs = a.execute("DELETE FROM kv WHERE key >= 'key-050' AND key < 'key-060'").unwrap();
    assert_eq!(rs.affected, 10);
    assert_eq!(a.execute("DELETE FROM kv WHERE key LIKE 'key-%'").unwrap().affected, 89);
    for i in 0..NODES {
        let mut b = c.client(i);
        assert_eq!(count(&mut b), 1, "node {}", i + 1);
        assert_eq!(value_of(&mut b, "key-001"), None);
        assert_eq!(value_of(&mut b, "counter").as_deref(), Some(&b"8"[..]));
    }
}

#[test]
fn a_killed_node_leaves_its_ranges_writable_and_catches_up_when_restarted() {
    let mut c = Cluster::start();
    let keys: Vec<String> = (0..200).map(|i| format!("k{i}")).collect();
    let victim = c.busiest_leader(0);
    let survivor = (victim + 1) % NODES;
    let mut s = c.client(survivor);
    write_until_ok(&mut s, &keys[..100]);
    let dir = c.nodes[victim].take().unwrap().crash();
    // Every range, the dead node's included, takes writes again through a survivor.
    let took = write_until_ok(&mut s, &keys[100..]);
    eprintln!(
        "node {} (leading the most ranges) killed: every range writable again after {} ms",
        victim + 1,
        took.as_millis()
    );
    let live: Vec<usize> = (0..NODES).filter(|i| *i != victim).collect();
    c.wait_for_leaders(&live);
    for &i in &live {
        assert_eq!(count(&mut c.client(i)), 200, "node {}", i + 1);
    }
    // Restarted on its data: it replays its log and catches up on what it missed.
    c.nodes[victim] = Some(Server::start_at(dir, CORES, ARGS, Some(c.ports[victim])));
    let mut v = c.client(victim);
    assert_eq!(count(&mut v), 200);
    for k in ["k0", "k150", "k199"] {
        assert_eq!(value_of(&mut v, k).as_deref(), Some(k.as_bytes()));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = c.status(victim);
        if st.iter().all(|(_, l, applied)| {
            l.is_some() && applied.len() == NODES && applied.iter().all(|a| *a == applied[0])
        }) {
            break;
        }
        assert!(Instant::now() < deadline, "replicas did not converge: {st:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Each range's replicas as `cluster status` (asked as node `ask`) reports them: per node, its
/// applied and snapshot index.
fn replica_indexes(dir: &std::path::Path) -> Vec<Vec<(u64, u64, u64)>> {
    let mut out = vec![Vec::new(); RANGES];
    for core in velocity::server::node::status(dir).unwrap() {
        let node = core["node"].as_u64().unwrap_or(0);
        for r in core["ranges"].as_array().into_iter().flatten() {
            let at = |f: &str| r[f].as_u64().unwrap();
            out[at("range") as usize].push((node, at("applied"), at("snapshot_index")));
        }
    }
    out
}

/// Logs are compacted behind each core's snapshot (a small --snapshot-log-bytes here): a node
/// that was down meanwhile is too far behind for the logs and is rebuilt from snapshots the
/// leaders send in pieces; it keeps what it installed across a restart, and a cluster whose
/// every node restarts comes back from snapshots and checkpoints with every row.
#[test]
fn a_node_behind_the_compacted_logs_is_rebuilt_from_snapshots_that_survive_restarts() {
    let args = ["--plaintext", "--durability", "sync", "--snapshot-log-bytes", "65536"];
    let mut c = Cluster::start_with(&args);
    let mut a = c.client(0);
    let value = "v".repeat(2000);
    let write = |a: &mut Client, from: usize, to: usize| {
        for chunk in (from..to).collect::<Vec<_>>().chunks(50) {
            let keys: Vec<String> = chunk.iter().map(|i| format!("key-{i:05}")).collect();
            let rows: Vec<(&str, &str)> = keys.iter().map(|k| (k.as_str(), value.as_str())).collect();
            assert_eq!(a.execute(&build::set_many(&rows)).unwrap().affected, chunk.len() as u64);
        }
    };
    write(&mut a, 0, 100);
    let last_seen: Vec<u64> = replica_indexes(&c.dirs[0])
        .iter()
        .map(|r| r.iter().find(|(n, _, _)| *n == 3).map(|(_, applied, _)| *applied).unwrap())
        .collect();
    let down = c.nodes[2].take().unwrap().crash();
    c.wait_for_leaders(&[0, 1]);
    // Rows while node 3 is down, until every live replica's log starts past where node 3's
    // ended: each core's snapshot follows once its log outgrows 64 KiB and the last snapshot.
    let mut written = 100;
    loop {
        write(&mut a, written, written + 200);
        written += 200;
        std::thread::sleep(Duration::from_millis(1200));
        let st = replica_indexes(&c.dirs[0]);
        let past = st.iter().zip(&last_seen).all(|(r, seen)| r.iter().all(|(_, _, snap)| snap > seen));
        if past {
            break;
        }
        assert!(written < 3000, "the logs were not compacted past node 3: {st:?} {last_seen:?}");
    }
    let logs_of =
        |dir: &PathBuf| files_under(dir).iter().filter(|p| p.to_string_lossy().contains("log-")).count();
    assert!(logs_of(&c.dirs[0]) <= 2 * CORES, "older logs removed: {:?}", files_under(&c.dirs[0]));

    // While node 3 is rebuilt, counters go up through node 1: each snapshot a leader copies for
    // node 3, a slice at a time between its other work, must be the rows at one index (an
    // increment copied in that the entries after it apply again would count twice there).
    // Counting from before node 3 starts, as its rebuild may take less than a round of them.
    let stop = Arc::new(AtomicBool::new(false));
    let counting = {
        let (stop, mut b) = (stop.clone(), c.client(0));
        std::thread::spawn(move || {
            let mut told = [0i64; 8];
            // Until told to stop, and each counter went up at least once (for up to 60 s).
            let until = Instant::now() + Duration::from_secs(60);
            while (!stop.load(Ordering::SeqCst) || told.contains(&0)) && Instant::now() < until {
                for (k, n) in told.iter_mut().enumerate() {
                    if let Ok(v) = b.incr(format!("counter-{k}").as_bytes(), 1) {
                        *n = v;
                    }
                }
            }
            told
        })
    };
    c.nodes[2] = Some(Server::start_at(down, CORES, &args, Some(c.ports[2])));
    let deadline = Instant::now() + Duration::from_secs(60);
    while c.installs(2) < RANGES {
        assert!(Instant::now() < deadline, "node 3 was not rebuilt: {}", c.node(2).log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::SeqCst);
    let told = counting.join().unwrap();
    assert!(told.iter().all(|n| *n > 0), "a counter never went up: {told:?}");
    loop {
        let st = replica_indexes(&c.dirs[0]);
        let caught_up = st.iter().all(|r| {
            let lead = r.iter().map(|(_, applied, _)| *applied).max().unwrap_or(0);
            r.len() == NODES && r.iter().all(|(_, applied, _)| *applied == lead)
        });
        if caught_up {
            break;
        }
        assert!(Instant::now() < deadline, "node 3 did not catch up: {st:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    for (k, last) in told.iter().enumerate() {
        let key = format!("counter-{k}");
        let on = |i: usize| value_of(&mut c.client(i), &key).map(|v| String::from_utf8(v).unwrap());
        let (one, three) = (on(0), on(2));
        assert!(one.as_deref().is_some_and(|v| v.parse::<i64>().unwrap() >= *last), "{key}: {one:?} {last}");
        assert_eq!(three, one, "{key} on node 3 against node 1");
    }
    assert_eq!(a.execute("DELETE FROM kv WHERE key LIKE 'counter-%'").unwrap().affected, 8);
    // Node 3 serves every row from its own store (a read is served where it is asked).
    let mut v = c.client(2);
    assert_eq!(count(&mut v), written as i64);
    assert_eq!(value_of(&mut v, "key-00050").as_deref(), Some(value.as_bytes()));
    assert_eq!(value_of(&mut v, &format!("key-{:05}", written - 1)).as_deref(), Some(value.as_bytes()));
    drop(v);
    // Every range's entries it missed were gone from the leaders' logs: one snapshot each.
    let log = c.node(2).log_text();
    let installs = log.lines().filter(|l| l.contains("snapshot installed from the leader")).count();
    assert!(installs >= RANGES, "{installs} installs: {log}");
    let sent = c.node(0).log_text() + &c.node(1).log_text();
    assert!(sent.contains("snapshot made for a follower"), "{sent}");

    // Node 3 restarted: the installed rows come back from its disk (its log's install records,
    // or its own snapshot taken since), not from the leaders.
    c.crash_and_restart(2, &args);
    let mut v = c.client(2);
    assert_eq!(count(&mut v), written as i64);
    write(&mut v, written, written + 100);
    written += 100;
    drop(v);
    drop(a);

    // Every node down at once and back: snapshots, checkpoints and the logs after them.
    c.crash_all_and_restart(&args);
    for i in 0..NODES {
        let mut b = c.client(i);
        assert_eq!(count(&mut b), written as i64, "node {}", i + 1);
        assert_eq!(value_of(&mut b, "key-00000").as_deref(), Some(value.as_bytes()));
        assert_eq!(value_of(&mut b, &format!("key-{:05}", written - 1)).as_deref(), Some(value.as_bytes()));
    }
}

/// Counters incremented while each core's snapshot copies its store a chunk at a time (other
/// work runs between chunks), then every node killed and restarted from its snapshot and log:
/// each counter holds the increments acknowledged, give or take those whose outcome was unknown
/// — an increment applied during the copy must not come back twice.
#[test]
fn counters_come_back_exact_from_snapshots_taken_while_they_change() {
    let args = ["--plaintext", "--durability", "sync", "--snapshot-log-bytes", "32768"];
    let mut c = Cluster::start_with(&args);
    let mut a = c.client(0);
    // Rows enough that each core's copy takes a few chunks; the counters sort last.
    for chunk in (0..5000).collect::<Vec<_>>().chunks(250) {
        let keys: Vec<String> = chunk.iter().map(|i| format!("pad-{i:05}")).collect();
        let rows: Vec<(&str, &str)> = keys.iter().map(|k| (k.as_str(), "x")).collect();
        a.execute(&build::set_many(&rows)).unwrap();
    }
    let (mut acked, mut unknown) = ([0i64; 4], [0i64; 4]);
    let started = Instant::now();
    let mut i = 0;
    let taken = |c: &Cluster| -> usize {
        (0..NODES).map(|n| c.node(n).log_text().matches("snapshot taken").count()).sum()
    };
    let before = taken(&c);
    while started.elapsed() < Duration::from_secs(30)
        && (started.elapsed() < Duration::from_secs(8) || taken(&c) < before + 6)
    {
        let k = i % 4;
        i += 1;
        match a.incr(format!("zz-counter-{k}").as_bytes(), 1) {
            Ok(_) => acked[k] += 1,
            Err(e) if e.code() == Some(ErrorCode::OutcomeUnknown) => unknown[k] += 1,
            Err(e) if e.code() == Some(ErrorCode::ServerOverloaded) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert!(taken(&c) > before, "no snapshot while the counters changed");
    drop(a);
    c.crash_all_and_restart(&args);
    for n in 0..NODES {
        let mut b = c.client(n);
        for k in 0..4 {
            let v = value_of(&mut b, &format!("zz-counter-{k}")).unwrap();
            let v: i64 = String::from_utf8(v).unwrap().parse().unwrap();
            assert!(
                acked[k] <= v && v <= acked[k] + unknown[k],
                "node {} counter {k}: {v}, acknowledged {} (+{} unknown)",
                n + 1,
                acked[k],
                unknown[k]
            );
        }
    }
}

/// A node whose snapshots fail (its files may not grow past 256 KiB: each snapshot's copy of
/// the store fails, after the log was rotated and each replica's checkpoint written into the new
/// log) keeps every row over a restart: the replicas' logs start at the checkpoint of the
/// snapshot it restarts from, not at one whose snapshot never was.
#[test]
fn a_node_whose_snapshots_fail_loses_no_row_over_a_restart() {
    let args = ["--plaintext", "--durability", "sync", "--snapshot-log-bytes", "16384"];
    let mut c = Cluster::start_with(&args);
    let dir = c.nodes[2].take().unwrap().crash();
    c.nodes[2] = Some(Server::start_limited(dir, CORES, &args, Some(c.ports[2]), Some(256 << 10)));
    c.wait_for_leaders(&[0, 1, 2]);
    let mut a = c.client(0);
    let value = "v".repeat(1000);
    // About 1.2 MB of rows, a burst at a time so that no log outgrows the limit between two
    // snapshot attempts (each rotates the log).
    let written = upsert_rows(&mut a, 1200, &value, Duration::from_millis(100));
    let log = c.node(2).log_text();
    assert!(log.contains("snapshot failed"), "node 3's snapshots did not fail: {log}");
    drop(a);
    c.crash_and_restart(2, &args);
    c.wait_for_leaders(&[0, 1, 2]);
    let mut v = c.client(2);
    assert_eq!(count_once_served(&mut v), written as i64);
    assert_eq!(value_of(&mut v, "key-00000").as_deref(), Some(value.as_bytes()));
}

/// COUNT(*) served from the node's own store, once it has applied what the leaders had
/// committed (a read refused meanwhile, as unavailable, is asked again, for up to 30 s).
fn count_once_served(v: &mut Client) -> i64 {
    let started = Instant::now();
    loop {
        match v.execute("SELECT COUNT(*) FROM kv") {
            Ok(rs) => match rs.rows[0][0] {
                Value::Int(n) => return n,
                ref other => panic!("COUNT(*) gave {other:?}"),
            },
            Err(e)
                if e.code() == Some(ErrorCode::ServerOverloaded)
                    && started.elapsed() < Duration::from_secs(30) => {}
            Err(e) => panic!("{e}"),
        }
    }
}

/// `rows` rows of `value`, 20 to a statement with `pause` after each: upserts, so one whose
/// outcome was not known is sent again. Returns how many.
fn upsert_rows(a: &mut Client, rows: usize, value: &str, pause: Duration) -> usize {
    for start in (0..rows).step_by(20) {
        let keys: Vec<String> = (start..start + 20).map(|i| format!("key-{i:05}")).collect();
        let rows: Vec<(&str, &str)> = keys.iter().map(|k| (k.as_str(), value)).collect();
        let sql = build::set_many(&rows);
        loop {
            match a.execute(&sql) {
                Ok(_) => break,
                Err(e)
                    if matches!(e.code(), Some(ErrorCode::ServerOverloaded | ErrorCode::OutcomeUnknown)) => {}
                Err(e) => panic!("{e}"),
            }
        }
        std::thread::sleep(pause);
    }
    rows
}

/// A node whose log write fails (its disk full) stops itself, and nothing its cores do after
/// the failed write reaches the disk: it starts again on its data, catches up and serves every
/// row. (Before, a cycle appended after the failure could make a commit index durable past the
/// entries the failed write took with it, and raft-rs refused the restart: 1 run in 3.)
#[test]
fn a_node_whose_log_write_fails_stops_and_starts_again_with_every_row() {
    log_write_fails_and_node_restarts("sync");
}

/// The same with `--durability periodic`, whose writer (a review found) went on to write the
/// groups queued behind a failed one at the offset it rewound to. (Not seen here: the queue
/// behind a failure was empty in every run, before the fix too.)
#[test]
fn a_node_whose_periodic_log_write_fails_stops_and_starts_again_with_every_row() {
    log_write_fails_and_node_restarts("periodic");
}

fn log_write_fails_and_node_restarts(durability: &str) {
    let args = ["--plaintext", "--durability", durability];
    let mut c = Cluster::start_with(&args);
    let dir = c.nodes[2].take().unwrap().crash();
    c.nodes[2] = Some(Server::start_limited(dir, CORES, &args, Some(c.ports[2]), Some(256 << 10)));
    c.wait_for_leaders(&[0, 1, 2]);
    let mut a = c.client(0);
    let value = "v".repeat(1000);
    // About 1.2 MB: each of node 3's two cores' logs outgrows 256 KiB (no snapshot rotates them).
    let written = upsert_rows(&mut a, 1200, &value, Duration::ZERO);
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !c.node(2).log_text().contains("the cluster node cannot go on") {
        assert!(Instant::now() < deadline, "node 3 did not stop: {}", c.node(2).log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(c.node(2).log_text().contains("a log write failed"));
    c.crash_and_restart(2, &args);
    c.wait_for_leaders(&[2, 0, 1]);
    let mut v = c.client(2);
    assert_eq!(count_once_served(&mut v), written as i64);
    assert_eq!(value_of(&mut v, "key-01199").as_deref(), Some(value.as_bytes()));
}

/// --max-memory on a cluster node bounds the writes it takes, never what it applies: a replica
/// that refused (or evicted for) a committed entry would hold other rows than its peers, and
/// serve reads without rows that were acknowledged. Evicting policies are refused at start.
#[test]
fn a_cluster_nodes_memory_limit_refuses_the_writes_it_takes_and_applies_every_committed_one() {
    let args = ["--plaintext", "--durability", "sync"];
    let mut c = Cluster::start_with(&args);
    let dir = c.nodes[2].take().unwrap().crash();
    let out = std::process::Command::new(bin("velocityd"))
        .args(["--listen", &format!("127.0.0.1:{}", c.ports[2]), "--cores", &CORES.to_string()])
        .arg("--data-dir")
        .arg(&dir)
        .args(args)
        .args(["--max-memory", "1mb", "--eviction", "allkeys-lru"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && said.contains("--eviction allkeys-lru on a cluster node"), "{said}");
    // No room at all on node 3 (the process alone is over 1 MB).
    let tight: Vec<&str> = args.iter().copied().chain(["--max-memory", "1mb"]).collect();
    c.nodes[2] = Some(Server::start_at(dir, CORES, &tight, Some(c.ports[2])));
    c.wait_for_leaders(&[0, 1, 2]);
    let value = "v".repeat(1000);
    let mut t = c.client(2);
    let e = t.execute(&build::set_many(&[("refused", value.as_str())])).unwrap_err();
    assert!(e.code() == Some(ErrorCode::ServerOverloaded) && e.to_string().contains("out of memory"), "{e}");
    drop(t);
    // Written through node 1, each row acknowledged is on node 3 too. (A range node 3 came to
    // lead would refuse its rows: not acknowledged, so not counted.)
    let mut a = c.client(0);
    let mut acknowledged = Vec::new();
    for i in 0..100 {
        let key = format!("key-{i:05}");
        match a.execute(&build::set_many(&[(key.as_str(), value.as_str())])) {
            Ok(_) => acknowledged.push(key),
            Err(e) if e.to_string().contains("out of memory") => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert!(!acknowledged.is_empty());
    for i in [0, 2] {
        let mut v = c.client(i);
        assert_eq!(count(&mut v), acknowledged.len() as i64, "node {}", i + 1);
        for key in &acknowledged {
            assert_eq!(value_of(&mut v, key).as_deref(), Some(value.as_bytes()), "node {} {key}", i + 1);
        }
    }
}

/// A node that lost its data but kept its key cannot be made a member again under the same
/// identity: its peers remember its log, and `cluster init` refuses (an empty log under an old
/// identity could vote twice in a term).
#[test]
fn cluster_init_refuses_a_node_that_ran_before_and_lost_its_data() {
    let mut c = Cluster::start();
    let keys: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
    write_until_ok(&mut c.client(0), &keys);
    let old = c.nodes[2].take().unwrap().crash();
    let wiped = temp_dir("wiped");
    std::fs::create_dir_all(&wiped).unwrap();
    for f in ["identity.key", "identity.crt"] {
        std::fs::copy(old.join(f), wiped.join(f)).unwrap();
    }
    let mut init = std::process::Command::new(bin("velocityd"));
    init.args(["cluster", "init", "--node-id", "3", "--cluster-file"])
        .arg(c.dirs[0].with_extension("cluster"))
        .arg("--data-dir")
        .arg(&wiped);
    let (status, err) = expect_refusal(init);
    assert!(!status.success());
    assert!(err.contains("lost its data") && err.contains("new identity"), "{err}");
    assert!(!wiped.join("cluster").exists());
}

/// Four nodes, three replicas of each range: every node holds 9 of the 12 ranges, and serves
/// every key anyway — point and multi-key reads and writes, scans, COUNT and range DELETEs of
/// the ranges it holds no replica of go to a node that holds them, and what comes back is
/// joined with what it holds.
#[test]
fn with_more_nodes_than_replicas_every_node_serves_every_key() {
    let mut c = Cluster::start_four("wide");
    let held: Vec<usize> = (0..4)
        .map(|i| {
            let all = velocity::server::node::status(&c.dirs[i]).unwrap();
            all.iter()
                .filter(|a| a["node"] == i as u64 + 1)
                .map(|a| a["ranges"].as_array().unwrap().len())
                .sum()
        })
        .collect();
    assert_eq!(held, [9, 9, 9, 9], "each node holds 12 × 3 / 4 replicas");
    for i in 0..4 {
        let mut b = c.client(i);
        let keys: Vec<String> = (0..40).map(|k| format!("n{i}-{k:02}")).collect();
        let rows: Vec<(&str, &str)> = keys.iter().map(|k| (k.as_str(), "v")).collect();
        assert_eq!(b.execute(&build::set_many(&rows)).unwrap().affected, 40, "node {}", i + 1);
        assert_eq!(b.incr(b"counter", 1).unwrap(), i as i64 + 1);
    }
    for i in 0..4 {
        let mut b = c.client(i);
        assert_eq!(count(&mut b), 161, "node {}", i + 1);
        for k in ["n0-10", "n1-17", "n2-39", "n3-05"] {
            assert_eq!(value_of(&mut b, k).as_deref(), Some(&b"v"[..]), "node {} key {k}", i + 1);
        }
        let rs = b
            .execute("SELECT key FROM kv WHERE key IN ('n0-01', 'n1-02', 'n2-03', 'n3-04', 'none')")
            .unwrap();
        assert_eq!(rs.rows.len(), 4, "node {}", i + 1);
        let rs = b.execute("SELECT key FROM kv WHERE key LIKE 'n2-%' ORDER BY key DESC LIMIT 5").unwrap();
        let got: Vec<Value> = rs.rows.into_iter().map(|r| r[0].clone()).collect();
        let want: Vec<Value> = (35..40).rev().map(|k| Value::Bytes(format!("n2-{k}").into())).collect();
        assert_eq!(got, want, "node {}", i + 1);
        let rs = b.execute("SELECT COUNT(*) FROM kv WHERE key LIKE 'n1-%'").unwrap();
        assert_eq!(rs.rows[0][0], Value::Int(40), "node {}", i + 1);
        assert_eq!(b.execute(&build::update(format!("n{i}-00").as_bytes(), b"w")).unwrap().affected, 1);
    }
    // A range DELETE through node 1 reaches the rows of every range.
    let mut a = c.client(0);
    assert_eq!(a.execute("DELETE FROM kv WHERE key LIKE 'n3-%'").unwrap().affected, 40);
    drop(a);
    for i in 0..4 {
        let mut b = c.client(i);
        assert_eq!(count(&mut b), 121, "node {}", i + 1);
        assert_eq!(value_of(&mut b, "n3-05"), None);
        assert_eq!(value_of(&mut b, "n2-00").as_deref(), Some(&b"w"[..]));
    }
    // Node 4 killed and started again: its COUNT is run in part by nodes whose connections to
    // its old process died with it, unnoticed by them until they write. Their answers go back
    // on the connections the requests came on, so the first COUNT is answered, and exactly.
    c.crash_and_restart(3, ARGS);
    c.wait_for_leaders(&[3, 0, 1, 2]);
    for i in [3, 0, 1, 2] {
        let mut b = c.client(i);
        assert_eq!(count(&mut b), 121, "node {} after node 4's restart", i + 1);
    }
    // Node 1 leaves: stopped (its leaderships handed over), then taken out; its ranges move to
    // the others, which hold all 12 after.
    let mut one = c.nodes[0].take().unwrap();
    assert!(one.terminate().success());
    let file = c.dirs[1].with_extension("change");
    std::fs::write(&file, without_node(&c.dirs[1], 1)).unwrap();
    let said = cluster_command(&["change"], &file, &c.dirs[1]);
    assert!(said.contains("node 1 leaves"), "{said}");
    settled(&c, 1, &[2, 3, 4]);
    for i in 1..4 {
        let mut b = c.client(i);
        assert_eq!(count(&mut b), 121, "node {}", i + 1);
        let rs = b.execute("SELECT COUNT(*) FROM kv WHERE key LIKE 'n1-%'").unwrap();
        assert_eq!(rs.rows[0][0], Value::Int(40), "node {}", i + 1);
    }
}

/// With more nodes than replicas, the reads of ranges a node holds no replica of are run by a
/// node that does: when that node is killed mid-read, the read is asked of another node of its
/// ranges, so every read through node 1 is answered, and exactly.
#[test]
fn reads_another_node_runs_go_on_when_that_node_is_killed() {
    let mut c = Cluster::start_four("failover");
    let keys: Vec<String> = (0..200).map(|i| format!("k{i:03}")).collect();
    write_until_ok(&mut c.client(0), &keys);
    // The node node 1 asks first for most of the ranges it holds no replica of.
    let map = velocity::cluster::ranges::RangeMap::new(RANGES as u32, 3, &[1, 2, 3, 4]).unwrap();
    let mut asked = BTreeMap::new();
    for r in 0..RANGES as u32 {
        if !map.replicas(r).contains(&1) {
            *asked.entry(map.replicas(r)[0]).or_insert(0) += 1;
        }
    }
    let victim = asked.into_iter().max_by_key(|(_, n)| *n).unwrap().0 as usize - 1;
    let (stop, done) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let reading = {
        let (stop, done, mut b) = (stop.clone(), done.clone(), c.client(0));
        std::thread::spawn(move || {
            let mut failed = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                match b.execute("SELECT COUNT(*) FROM kv") {
                    Ok(rs) if rs.rows[0][0] == Value::Int(200) => {}
                    other => failed.push(format!("{other:?}")),
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
            failed
        })
    };
    let after = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while done.load(Ordering::SeqCst) < n {
            assert!(Instant::now() < deadline, "reads stalled at {}", done.load(Ordering::SeqCst));
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    after(50);
    let _ = c.nodes[victim].take().unwrap().crash();
    let at_kill = done.load(Ordering::SeqCst);
    after(at_kill + 100);
    stop.store(true, Ordering::SeqCst);
    let failed = reading.join().unwrap();
    assert!(
        failed.is_empty(),
        "{} reads of {} failed: {failed:?}",
        failed.len(),
        done.load(Ordering::SeqCst)
    );
}

/// The cluster file in data directory `dir`, shared (no `self` line), with node `id` left out.
fn without_node(dir: &std::path::Path, id: u64) -> String {
    let current = std::fs::read_to_string(dir.join("cluster")).unwrap();
    let gone = format!("node {id} ");
    current
        .lines()
        .filter(|l| !l.starts_with("self ") && !l.starts_with(&gone))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// A range's voters, outgoing voters (a joint change) and learners, as its leader has them.
type Voters = (serde_json::Value, serde_json::Value, serde_json::Value);

/// Each range's leader's voters and learners, and how many replicas each node holds, asked
/// as node `i`.
fn placement(c: &Cluster, i: usize) -> (Vec<Voters>, BTreeMap<u64, usize>) {
    let all = velocity::server::node::status(&c.dirs[i]).unwrap();
    let mut leaders =
        vec![(serde_json::Value::Null, serde_json::Value::Null, serde_json::Value::Null); RANGES];
    let mut held = BTreeMap::new();
    for core in all.iter().filter(|a| a.get("error").is_none()) {
        for r in core["ranges"].as_array().into_iter().flatten() {
            *held.entry(core["node"].as_u64().unwrap()).or_insert(0) += 1;
            if r["is_leader"] == true {
                leaders[r["range"].as_u64().unwrap() as usize] =
                    (r["voters"].clone(), r["voters_outgoing"].clone(), r["learners"].clone());
            }
        }
    }
    (leaders, held)
}

/// Until every range's leader has the replicas the places `want` give it (out of any joint
/// membership, no learner) and each node holds its share, as node `ask` sees it.
fn settled(c: &Cluster, ask: usize, want: &[u64]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (leaders, held) = placement(c, ask);
        let map = velocity::cluster::ranges::RangeMap::new(RANGES as u32, 3, want).unwrap();
        let moved = leaders.iter().enumerate().all(|(r, (voters, outgoing, learners))| {
            let mut w = map.replicas(r as u32);
            w.sort_unstable();
            *voters == serde_json::json!(w)
                && *outgoing == serde_json::json!([])
                && *learners == serde_json::json!([])
        });
        let each = RANGES * 3 / want.len();
        if moved && want.iter().all(|n| held.get(n) == Some(&each)) && held.len() == want.len() {
            return;
        }
        assert!(Instant::now() < deadline, "not placed over {want:?}: {leaders:?} {held:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A node joins a running cluster in a place of its own: the ranges are placed over four nodes,
/// each leader moves its replicas (a learner on the new node, then one joint change), and the
/// nodes that lose a range drop its replica and rows on its leader's word. Every node serves
/// every row throughout, with no row counted twice. A change that would give a node back a
/// range it gave up is refused.
#[test]
fn a_node_joins_a_running_cluster() {
    let mut c = Cluster::start();
    let keys: Vec<String> = (0..200).map(|i| format!("k{i:03}")).collect();
    write_until_ok(&mut c.client(0), &keys);

    // Node 4 joins.
    let (dir, fp) = node_dir("joining");
    let file = dir.with_extension("cluster");
    let current = std::fs::read_to_string(c.dirs[0].join("cluster")).unwrap();
    let current: String =
        current.lines().filter(|l| !l.starts_with("self ")).map(|l| format!("{l}\n")).collect();
    let peer = format!("127.0.0.1:{}", free_port_pair());
    std::fs::write(&file, current + &format!("node 4 {peer} cores={CORES} {fp}\n")).unwrap();
    let said = cluster_command(&["change"], &file, &c.dirs[0]);
    assert!(said.contains("node 4 joins in a new place"), "{said}");
    cluster_command(&["init", "--node-id", "4"], &file, &dir);
    c.nodes.push(Some(Server::start_in(dir.clone(), CORES, ARGS)));
    c.ports.push(c.node(3).addr.port());
    c.dirs.push(dir);
    settled(&c, 0, &[1, 2, 3, 4]);
    let log = c.node(0).log_text() + &c.node(1).log_text() + &c.node(2).log_text();
    assert!(log.contains("replica dropped"), "{log}");
    // The rows of the replicas dropped are deleted (a slice at a time): the four nodes' stores
    // hold each row three times, no more.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let held: i64 = (0..4).map(|i| stat(&mut c.client(i), "keys")).sum();
        if held == 600 {
            break;
        }
        assert!(Instant::now() < deadline, "the nodes' stores hold {held} rows");
        std::thread::sleep(Duration::from_millis(50));
    }
    for i in 0..4 {
        let mut b = c.client(i);
        assert_eq!(count(&mut b), 200, "node {}", i + 1);
        assert_eq!(value_of(&mut b, "k123").as_deref(), Some(&b"k123"[..]), "node {}", i + 1);
    }

    // Node 1 leaving now would place back on nodes 2 and 3 ranges they gave up: refused.
    std::fs::write(&file, without_node(&c.dirs[1], 1)).unwrap();
    let mut cmd = std::process::Command::new(bin("velocityd"));
    cmd.args(["cluster", "change", "--cluster-file"]).arg(&file).arg("--data-dir").arg(&c.dirs[1]);
    let (status, err) = expect_refusal(cmd);
    assert!(
        !status.success() && err.contains("gave up before") && err.contains("nothing was changed"),
        "{err}"
    );
    // Node 4 restarted: its replicas, and none of the ranges it gave up, come back.
    c.crash_and_restart(3, ARGS);
    c.wait_for_leaders(&[0, 1, 2, 3]);
    assert_eq!(count(&mut c.client(3)), 200);
    settled(&c, 3, &[1, 2, 3, 4]);
}

/// The way back for a node that lost its disk: a new node (new data directory, so a new key,
/// and a new id) takes its place with `cluster change`; each range's leader adds it as a
/// learner, catches it up and swaps it in for the old one. Then it counts in every majority
/// (writes go on with another node down), keeps its rows over a restart, and the old node's
/// key is no longer let in.
#[test]
fn a_node_that_lost_its_disk_is_replaced_by_a_new_node_in_its_place() {
    let mut c = Cluster::start();
    let keys: Vec<String> = (0..50).map(|i| format!("k{i:03}")).collect();
    write_until_ok(&mut c.client(0), &keys);
    let gone = c.nodes[2].take().unwrap().crash();
    c.wait_for_leaders(&[0, 1]);

    let (dir, fp) = node_dir("replacement");
    let old_file = std::fs::read_to_string(c.dirs[0].with_extension("cluster")).unwrap();
    let peer = format!("127.0.0.1:{}", free_port_pair());
    let new_file = dir.with_extension("cluster");
    std::fs::write(&new_file, replacing(&old_file, 3, 4, &peer, CORES, &fp)).unwrap();
    let said = cluster_command(&["change"], &new_file, &c.dirs[0]);
    for (node, core) in [(1, 0), (1, 1), (2, 0), (2, 1)] {
        assert!(said.contains(&format!("node {node} core {core}: adopted it")), "{said}");
    }
    assert!(said.contains("node 4 takes node 3's place"), "{said}");
    // Asked again (as a node that was down would need): nothing changes.
    assert!(cluster_command(&["change"], &new_file, &c.dirs[1]).contains("node 2 core 1: had it already"));
    cluster_command(&["init", "--node-id", "4"], &new_file, &dir);
    c.nodes.push(Some(Server::start_in(dir.clone(), CORES, ARGS)));
    c.ports.push(c.node(3).addr.port());
    c.dirs.push(dir);

    // Until every range's leader has node 4 for node 3 and node 4 has applied what it has.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let all = velocity::server::node::status(&c.dirs[0]).unwrap();
        let ranges: Vec<&serde_json::Value> =
            all.iter().flat_map(|c| c["ranges"].as_array().into_iter().flatten()).collect();
        let swapped = (0..RANGES as u64).all(|r| {
            let leader = ranges.iter().find(|x| x["range"] == r && x["is_leader"] == true);
            let on_4 = all
                .iter()
                .filter(|c| c["node"] == 4)
                .flat_map(|c| c["ranges"].as_array().into_iter().flatten())
                .find(|x| x["range"] == r);
            leader.is_some_and(|l| {
                l["voters"] == serde_json::json!([1, 2, 4])
                    && l["voters_outgoing"] == serde_json::json!([])
                    && l["learners"] == serde_json::json!([])
            }) && on_4.is_some_and(|x| x["applied"] == leader.unwrap()["commit"])
        });
        if swapped {
            break;
        }
        assert!(Instant::now() < deadline, "node 4 not swapped in: {all:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = c.node(0).log_text() + &c.node(1).log_text();
    assert!(log.contains("add node 4 as a learner"), "{log}");
    let mut d = c.client(3);
    assert_eq!(count(&mut d), 50);
    assert_eq!(value_of(&mut d, "k007").as_deref(), Some(&b"k007"[..]));

    // Node 4 counts now: with node 2 down, nodes 1 and 4 are every range's majority.
    drop(c.nodes[1].take().unwrap().crash());
    c.wait_for_leaders(&[0, 3]);
    let more: Vec<String> = (50..80).map(|i| format!("k{i:03}")).collect();
    write_until_ok(&mut d, &more);
    assert_eq!(count(&mut c.client(0)), 80);
    drop(d);
    // Restarted from its disk, it has every row.
    c.crash_and_restart(3, ARGS);
    c.wait_for_leaders(&[0, 3]);
    assert_eq!(count(&mut c.client(3)), 80);
    // The old node's key is let in nowhere now.
    let asked = velocity::server::node::status(&gone).unwrap();
    assert!(asked.iter().filter(|a| a["node"] != 3).all(|a| a.get("error").is_some()), "{asked:?}");
}

/// A node asked to stop (SIGTERM, as a rolling restart does) first hands the leadership of its
/// ranges to the other replicas: when it has exited, every range already has a leader among them.
#[test]
fn a_stopped_node_hands_its_leaderships_over_before_it_exits() {
    let mut c = Cluster::start();
    let keys: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
    write_until_ok(&mut c.client(0), &keys);
    let leaving = c.busiest_leader(0);
    let live: Vec<usize> = (0..NODES).filter(|i| *i != leaving).collect();
    let mut node = c.nodes[leaving].take().unwrap();
    assert!(node.terminate().success());
    let log = node.log_text();
    assert!(log.contains("handed over leadership before stopping"), "{log}");
    let ids: Vec<u64> = live.iter().map(|i| *i as u64 + 1).collect();
    let st = c.status(live[0]);
    assert!(st.iter().all(|(_, l, _)| l.is_some_and(|l| ids.contains(&l))), "{st:?}");
    let mut s = c.client(live[0]);
    let rows: Vec<(&str, &str)> = keys.iter().map(|k| (k.as_str(), "after")).collect();
    assert_eq!(s.execute(&build::set_many(&rows)).unwrap().affected, 20);
    // Restarted, it rejoins and serves what it missed.
    let dir = node.keep_data();
    drop(node);
    c.nodes[leaving] = Some(Server::start_at(dir, CORES, ARGS, Some(c.ports[leaving])));
    assert_eq!(value_of(&mut c.client(leaving), "k7").as_deref(), Some(&b"after"[..]));
}

#[test]
fn a_paused_leader_is_replaced_and_steps_down_when_it_resumes() {
    let c = Cluster::start();
    let victim = c.busiest_leader(0);
    let survivor = (victim + 1) % NODES;
    let pid = c.node(victim).child.id() as i32;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let mut s = c.client(survivor);
    let keys: Vec<String> = (0..50).map(|i| format!("p{i}")).collect();
    let took = write_until_ok(&mut s, &keys);
    eprintln!("node {} paused: every range writable again after {} ms", victim + 1, took.as_millis());
    unsafe { libc::kill(pid, libc::SIGCONT) };
    // The old leader hears of the newer terms and follows; it serves the writes it slept through.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = c.status(victim);
        let led_by_victim = st.iter().filter(|(_, l, _)| *l == Some(victim as u64 + 1)).count();
        if st.iter().all(|(_, l, _)| l.is_some()) && led_by_victim < RANGES / NODES + 1 {
            break;
        }
        assert!(Instant::now() < deadline, "{st:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(count(&mut c.client(victim)), 50);
}

#[test]
fn the_peer_port_takes_only_pinned_keys_and_survives_garbage() {
    use std::io::{Read, Write};
    let c = Cluster::start();
    let text = std::fs::read_to_string(c.dirs[0].join("cluster")).unwrap();
    let m = velocity::cluster::membership::Membership::parse(&text).unwrap();
    let peer = m.member(1).unwrap().peer_addr(0);
    // A stranger's key: the handshake is refused, nothing is read from it.
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["x".into()]).unwrap().self_signed(&key).unwrap();
    let fp = m.member(1).unwrap().fingerprint;
    let cfg = velocity::security::tls::peer_client_config(&cert.pem(), &key.serialize_pem(), fp).unwrap();
    let tcp = std::net::TcpStream::connect(peer).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let conn = rustls::ClientConnection::new(cfg, velocity::security::tls::server_name("velocity")).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let sent = tls.write_all(b"\x10\0\0\0\0\0\0\0garbage!").and_then(|_| tls.flush());
    let mut buf = [0u8; 64];
    let got = sent.and_then(|_| tls.read(&mut buf));
    assert!(!matches!(got, Ok(n) if n > 0), "a stranger got an answer: {got:?}");
    // Plain bytes that are not TLS at all.
    let mut raw = std::net::TcpStream::connect(peer).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = raw.write_all(&[0xffu8; 4096]);
    let _ = raw.read(&mut buf);
    // The cluster goes on as before.
    let mut a = c.client(0);
    write_until_ok(&mut a, &["after".to_string()]);
    assert_eq!(value_of(&mut c.client(2), "after").as_deref(), Some(&b"after"[..]));
}

#[test]
fn what_clients_see_through_a_leader_kill_and_restart_is_linearizable() {
    let mut c = Cluster::start();
    // One clock for every client: call and return times are comparable across threads.
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let history: Arc<Mutex<Vec<Operation>>> = Arc::default();
    let mut threads = Vec::new();
    for node in 0..NODES {
        for t in 0..2u64 {
            let target = registers::Target {
                host: "127.0.0.1".into(),
                port: c.ports[node],
                known_hosts: c.node(node).known_hosts(),
            };
            let creds = c.node(node).alice.clone();
            threads.push(registers::spawn(
                node as u64 * 10 + t,
                target,
                creds,
                4,
                started,
                stop.clone(),
                history.clone(),
            ));
        }
    }
    let wait = |ms| std::thread::sleep(Duration::from_millis(ms));
    wait(1500);
    let victim = c.busiest_leader(0);
    let dir = c.nodes[victim].take().unwrap().crash();
    wait(2500);
    c.nodes[victim] = Some(Server::start_at(dir, CORES, ARGS, Some(c.ports[victim])));
    wait(2000);
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let history = history.lock().unwrap().clone();
    let report = linearizability::check(&history, 5_000_000).unwrap();
    eprintln!(
        "node {} killed and restarted under 6 clients: {} operations checked, {:?}",
        victim + 1,
        report.ops_checked,
        report.verdict
    );
    assert!(report.ops_checked > 100, "too few operations: {}", report.ops_checked);
    assert!(report.is_linearizable(), "{:?}", report.verdict);
}

#[test]
fn a_seed_client_goes_on_through_another_node_and_reports_a_cut_off_write_as_unknown() {
    use velocity::client::seeds::{Retry, SeedClient};
    let mut c = Cluster::start();
    // The first seed is a port nobody listens on: the client goes on to the next.
    let dead_port = free_port();
    let seeds = |c: &Cluster, from: usize| {
        let mut dead = c.node(from).options();
        dead.port = dead_port;
        let mut s = vec![dead];
        s.extend((from..NODES).map(|i| c.node(i).options()));
        s
    };
    let retry = Retry { attempts: 8, backoff: Duration::from_millis(100) };
    // A password, not a credential derived for one node: each node has its own salt.
    let alice = velocity::client::Credentials::Password { user: "alice".into(), password: PASSWORD.into() };
    let mut a = SeedClient::connect(seeds(&c, 0), alice.clone(), retry.clone()).unwrap();
    assert_eq!(a.connected_to(), Some(1));
    a.execute(&build::set(b"seeded", b"1")).unwrap();
    // Its node dies: a read goes on through the next node, with the row written before.
    let _ = c.nodes[0].take().unwrap().crash();
    let rs = a.execute(&build::get(b"seeded")).unwrap();
    assert_eq!(rs.rows[0][0], Value::Bytes(b"1".to_vec()));
    assert_eq!(a.connected_to(), Some(2));
    // A write on a connection that dies under it is not sent again: its outcome is unknown.
    let mut b = SeedClient::connect(seeds(&c, 1), alice, retry).unwrap();
    assert_eq!(b.connected_to(), Some(1));
    let _ = c.nodes[1].take().unwrap().crash();
    let e = b.execute(&build::set(b"cut", b"1")).unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::OutcomeUnknown), "{e}");
}

/// Not a test: the failover and catch-up figures of docs/benchmarks.md, printed (never asserted:
/// this machine is shared). `scripts/cluster-bench.sh` runs it:
/// `VELOCITY_FAILOVER_KILLS=20 cargo test --release --test e2e_cluster measure_failover -- --ignored --nocapture`
#[test]
#[ignore]
fn measure_failover_and_catch_up() {
    let kills: usize =
        std::env::var("VELOCITY_FAILOVER_KILLS").ok().and_then(|k| k.parse().ok()).unwrap_or(20);
    // Set, the logs are compacted that small, and the node restarted for catch-up is rebuilt
    // from snapshots rather than from the entries it missed.
    let snapshot_log_bytes = std::env::var("VELOCITY_SNAPSHOT_LOG_BYTES").ok();
    let mut args = ARGS.to_vec();
    if let Some(b) = &snapshot_log_bytes {
        args.extend(["--snapshot-log-bytes", b.as_str()]);
    }
    let args = &args[..];
    let mut c = Cluster::start_with(args);
    let mut took_ms = Vec::new();
    for k in 0..kills {
        let victim = c.busiest_leader((k + 1) % NODES);
        let survivor = (victim + 1) % NODES;
        let mut s = c.client(survivor);
        let keys: Vec<String> = (0..48).map(|i| format!("f{k}-{i}")).collect();
        write_until_ok(&mut s, &keys[..1]);
        let dir = c.nodes[victim].take().unwrap().crash();
        took_ms.push(write_until_ok(&mut s, &keys).as_millis() as u64);
        c.nodes[victim] = Some(Server::start_at(dir, CORES, args, Some(c.ports[victim])));
        c.wait_for_leaders(&[0, 1, 2]);
    }
    took_ms.sort_unstable();
    if kills > 0 {
        eprintln!(
            "failover over {kills} kills of the busiest leader: median {} ms, max {} ms, all {:?}",
            took_ms[took_ms.len() / 2],
            took_ms.last().unwrap(),
            took_ms
        );
    }
    // Planned stops (SIGTERM, as a rolling restart does): the leadership is handed over first.
    let mut planned_ms = Vec::new();
    for k in 0..kills.min(5) {
        let leaving = c.busiest_leader((k + 1) % NODES);
        let mut s = c.client((leaving + 1) % NODES);
        let keys: Vec<String> = (0..48).map(|i| format!("p{k}-{i}")).collect();
        write_until_ok(&mut s, &keys[..1]);
        let mut node = c.nodes[leaving].take().unwrap();
        let started = Instant::now();
        unsafe { libc::kill(node.child.id() as i32, libc::SIGTERM) };
        write_until_ok(&mut s, &keys);
        planned_ms.push(started.elapsed().as_millis() as u64);
        assert!(node.child.wait().unwrap().success(), "exits 0 after the hand-over");
        let dir = node.keep_data();
        c.nodes[leaving] = Some(Server::start_at(dir, CORES, args, Some(c.ports[leaving])));
        c.wait_for_leaders(&[0, 1, 2]);
    }
    if !planned_ms.is_empty() {
        planned_ms.sort_unstable();
        eprintln!(
            "planned stop over {} SIGTERMs of the busiest leader: writable again after median {} ms, max {} ms, all {:?}",
            planned_ms.len(),
            planned_ms[planned_ms.len() / 2],
            planned_ms.last().unwrap(),
            planned_ms
        );
    }
    // Catch-up: a follower down while 20,000 rows are written, then restarted.
    let victim = 2;
    let last_seen = c.applied_on(victim);
    let dir = c.nodes[victim].take().unwrap().crash();
    let mut s = c.client(0);
    let rows = 20_000;
    for b in 0..rows / 500 {
        let keys: Vec<String> = (0..500).map(|i| format!("c{b}-{i}")).collect();
        write_until_ok(&mut s, &keys);
    }
    if snapshot_log_bytes.is_some() {
        // Until every live replica's log starts past where the victim's ended.
        c.wait_compacted_past(&last_seen);
    }
    let behind: u64 = c.status(0).iter().map(|(_, _, a)| a.iter().max().copied().unwrap_or(0)).sum();
    let started = Instant::now();
    c.nodes[victim] = Some(Server::start_at(dir, CORES, args, Some(c.ports[victim])));
    c.wait_caught_up(victim, started);
    let secs = started.elapsed().as_secs_f64();
    let installs = c.installs(victim);
    eprintln!(
        "catch-up ({installs} ranges rebuilt from snapshots): a node down for {rows} rows ({} statements of 500, about {behind} entries in all ranges' logs) restarted and caught up in {:.2} s (start-up included): {:.0} rows/s",
        rows / 500,
        secs,
        rows as f64 / secs
    );
}

/// Not a test: how long the rebuilt node's cores stop answering while it takes snapshots. A
/// node is down while `VELOCITY_REBUILD_ROWS` rows (default 200,000, of ~200 bytes) are
/// written and the logs are compacted past it; restarted, it is rebuilt from snapshots while a
/// client pings each of its cores (PING is answered by the connection's core, so a ping's time
/// is how long that core was busy elsewhere). Prints the catch-up time and the pings' times.
/// `cargo test --release --test e2e_cluster measure_rebuild_pauses -- --ignored --nocapture`
#[test]
#[ignore]
fn measure_rebuild_pauses() {
    let rows: usize =
        std::env::var("VELOCITY_REBUILD_ROWS").ok().and_then(|k| k.parse().ok()).unwrap_or(200_000);
    let args = ["--plaintext", "--audit", "off", "--durability", "sync", "--snapshot-log-bytes", "65536"];
    let mut c = Cluster::start_with(&args);
    let victim = 2;
    let last_seen = c.applied_on(victim);
    let dir = c.nodes[victim].take().unwrap().crash();
    let mut s = c.client(0);
    // Keys and values of about 100 bytes each.
    let pad = "x".repeat(88);
    for b in 0..rows / 500 {
        let keys: Vec<String> = (0..500).map(|i| format!("r{b:05}-{i:03}-{pad}")).collect();
        write_until_ok(&mut s, &keys);
    }
    c.wait_compacted_past(&last_seen);
    let started = Instant::now();
    c.nodes[victim] = Some(Server::start_at(dir, CORES, &args, Some(c.ports[victim])));
    let stop = Arc::new(AtomicBool::new(false));
    // Several connections, so that each core has one (SO_REUSEPORT spreads them).
    let pingers: Vec<_> = (0..4 * CORES)
        .map(|_| {
            let (stop, mut p) = (stop.clone(), c.client(victim));
            std::thread::spawn(move || {
                let mut took_us = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let t = Instant::now();
                    p.ping(b"p").unwrap();
                    took_us.push((t.elapsed().as_micros() as u64, (t - started).as_millis() as u64));
                }
                took_us
            })
        })
        .collect();
    c.wait_caught_up(victim, started);
    let secs = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::SeqCst);
    let mut pings: Vec<(u64, u64)> = pingers.into_iter().flat_map(|p| p.join().unwrap()).collect();
    pings.sort_unstable();
    let took_us: Vec<u64> = pings.iter().map(|(us, _)| *us).collect();
    let slow: Vec<u64> = took_us.iter().copied().filter(|us| *us > 100_000).collect();
    let longest: Vec<String> =
        pings.iter().rev().take(5).map(|(us, at)| format!("{} ms at +{at} ms", us / 1000)).collect();
    let at = |q: f64| took_us[((took_us.len() - 1) as f64 * q) as usize];
    let installs = c.installs(victim);
    eprintln!(
        "rebuild: {rows} rows, {installs} ranges from snapshots, caught up in {secs:.2} s; {} pings: p50 {} us, p99 {} us, p99.9 {} us, max {} us; {} over 100 ms ({} ms in all); the longest: {}",
        took_us.len(),
        at(0.5),
        at(0.99),
        at(0.999),
        took_us.last().unwrap(),
        slow.len(),
        slow.iter().sum::<u64>() / 1000,
        longest.join(", ")
    );
}
