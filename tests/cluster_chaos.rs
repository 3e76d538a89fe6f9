//! A three-node cluster in network namespaces (one per node, veth pairs on a bridge), faults
//! injected in turn while six clients write and read registers through the nodes: the busiest
//! leader killed (SIGKILL) and restarted, paused (SIGSTOP) and resumed, cut off by its link going
//! down and healed, a follower cut off and healed, a node killed with its data directory deleted
//! and a new node (new key and id) put in its place, and delay and loss on every node-to-node link
//! (netem when the kernel has it; else the userspace proxy every such link goes through: `Impair`).
//! The clients' history must be linearizable (`velocity::linearizability::check`).
//!
//! Needs root and `ip netns`: ignored by `cargo test`; `scripts/cluster-chaos.sh` runs it, or
//! says it skipped.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use velocity::linearizability::{self, Operation};

const NODES: usize = 3;

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0]).args(&args[1..]).output().map_err(|e| format!("{args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{args:?}: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

fn must(args: &[&str]) {
    run(args).unwrap_or_else(|e| panic!("{e}"));
}

/// The namespaces, the bridge, the nodes; all removed when dropped.
struct Net {
    tag: String,
    subnet: u32,
    dirs: Vec<PathBuf>,
    nodes: Vec<Option<Child>>,
    /// Each namespace's node's id (a node replaced in place has a new one).
    ids: Vec<u64>,
    /// What the proxies in front of the nodes' peer ports do to what they carry.
    impair: Arc<Impair>,
}

/// Delay and loss for the node-to-node links, without netem (this kernel has none): every
/// link goes through a proxy in the root namespace (the cluster file names it; each node takes
/// its peers' connections from it with --peer-listen), which holds each chunk it reads for
/// `delay_ms` ± `jitter_ms` and, `loss_per_mille` of the time, `stall_ms` more — what a lost
/// segment costs a TCP stream, its retransmission — keeping the stream's order.
#[derive(Default)]
struct Impair {
    delay_ms: AtomicU64,
    jitter_ms: AtomicU64,
    loss_per_mille: AtomicU64,
    stall_ms: AtomicU64,
    stalls: AtomicU64,
}

/// Carry one direction of a proxied connection through `impair`.
fn pump(mut from: TcpStream, to: TcpStream, impair: Arc<Impair>, seed: u64) {
    let (tx, rx) = std::sync::mpsc::channel::<(Instant, Vec<u8>)>();
    let mut writer_to = to.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        for (due, chunk) in rx {
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            if writer_to.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = writer_to.shutdown(std::net::Shutdown::Write);
    });
    let mut rng = seed | 1;
    let mut next = |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        if n == 0 {
            0
        } else {
            rng % n
        }
    };
    let mut last = Instant::now();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let (delay, jitter) =
            (impair.delay_ms.load(Ordering::Relaxed), impair.jitter_ms.load(Ordering::Relaxed));
        let mut ms = (delay + next(2 * jitter + 1)).saturating_sub(jitter);
        if next(1000) < impair.loss_per_mille.load(Ordering::Relaxed) {
            ms += impair.stall_ms.load(Ordering::Relaxed);
            impair.stalls.fetch_add(1, Ordering::Relaxed);
        }
        // In order, as TCP delivers: never before the chunk read ahead of it.
        last = last.max(Instant::now() + Duration::from_millis(ms));
        if tx.send((last, buf[..n].to_vec())).is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer.join();
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// A proxy from `listen` to `target`, in threads that live as long as the test.
fn proxy(listen: SocketAddr, target: SocketAddr, impair: Arc<Impair>) {
    let l = std::net::TcpListener::bind(listen).unwrap_or_else(|e| panic!("proxy at {listen}: {e}"));
    std::thread::spawn(move || {
        for (n, client) in l.incoming().enumerate() {
            let Ok(client) = client else { continue };
            let impair = impair.clone();
            std::thread::spawn(move || {
                let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(1)) else { return };
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let i2 = impair.clone();
                let back = std::thread::spawn(move || pump(s2, c2, i2, n as u64 * 2 + 1));
                pump(client, server, impair, n as u64 * 2 + 2);
                let _ = back.join();
            });
        }
    });
}

impl Net {
    fn ns(&self, i: usize) -> String {
        format!("vc{}n{}", self.tag, i + 1)
    }

    fn veth(&self, i: usize) -> String {
        format!("vch{}{}", self.tag, i + 1)
    }

    fn bridge(&self) -> String {
        format!("vcb{}", self.tag)
    }

    fn ip(&self, i: usize) -> String {
        format!("10.89.{}.{}", self.subnet, i + 1)
    }

    fn client_addr(&self, i: usize) -> SocketAddr {
        format!("{}:7411", self.ip(i)).parse().unwrap()
    }

    fn up() -> Net {
        let pid = std::process::id();
        let net = Net {
            tag: format!("{}", pid % 100_000),
            subnet: 100 + pid % 100,
            dirs: Vec::new(),
            nodes: Vec::new(),
            ids: (1..=NODES as u64).collect(),
            impair: Arc::default(),
        };
        let br = net.bridge();
        must(&["ip", "link", "add", &br, "type", "bridge"]);
        must(&["ip", "addr", "add", &format!("10.89.{}.254/24", net.subnet), "dev", &br]);
        must(&["ip", "link", "set", &br, "up"]);
        for i in 0..NODES {
            let (ns, veth) = (net.ns(i), net.veth(i));
            must(&["ip", "netns", "add", &ns]);
            must(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
            must(&["ip", "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns]);
            must(&["ip", "link", "set", &veth, "master", &br, "up"]);
            must(&["ip", "-n", &ns, "addr", "add", &format!("{}/24", net.ip(i)), "dev", "eth0"]);
            must(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
        }
        net
    }

    /// The address the cluster file gives for node `i`: its proxy's, in the root namespace.
    fn peer(&self, i: usize) -> String {
        format!("10.89.{}.254:{}", self.subnet, 9000 + 10 * i)
    }

    fn make_cluster(&mut self) {
        for i in 0..NODES {
            for core in 0..2 {
                let listen = format!("10.89.{}.254:{}", self.subnet, 9000 + 10 * i + core).parse().unwrap();
                let target = format!("{}:{}", self.ip(i), 7511 + core).parse().unwrap();
                proxy(listen, target, self.impair.clone());
            }
        }
        let peers: Vec<String> = (0..NODES).map(|i| self.peer(i)).collect();
        self.dirs = init_cluster("chaos", 12, 2, &peers);
        for i in 0..NODES {
            let child = self.start(i);
            self.nodes.push(Some(child));
        }
    }

    /// Start node `i` in its namespace (`ip netns exec` execs velocityd: the child is it).
    fn start(&self, i: usize) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dirs[i].with_extension("log"))
            .unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(i)])
            .arg(bin("velocityd"))
            .args([
                "--listen",
                &self.client_addr(i).to_string(),
                "--cores",
                "2",
                "--plaintext",
                "--durability",
                "sync",
                // Small, so that each core's log is compacted behind its snapshot many times a
                // run and a node back from a kill or a cut is rebuilt from snapshots.
                "--snapshot-log-bytes",
                "131072",
                "--peer-listen",
                &format!("{}:7511", self.ip(i)),
            ])
            .arg("--data-dir")
            .arg(&self.dirs[i])
            .env("VELOCITY_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect_timeout(&self.client_addr(i), Duration::from_millis(200)).is_err() {
            assert!(Instant::now() < deadline, "node {} did not start", i + 1);
            std::thread::sleep(Duration::from_millis(50));
        }
        child
    }

    fn pid(&self, i: usize) -> i32 {
        self.nodes[i].as_ref().unwrap().id() as i32
    }

    /// The node leading most ranges, as those that answer report it.
    fn busiest_leader(&self) -> usize {
        let mut count = [0usize; NODES];
        for ask in 0..NODES {
            let Ok(all) = velocity::server::node::status(&self.dirs[ask]) else { continue };
            for core in &all {
                for r in core["ranges"].as_array().into_iter().flatten() {
                    if r["is_leader"].as_bool() == Some(true) {
                        if let Some(i) = self.ids.iter().position(|id| core["node"].as_u64() == Some(*id)) {
                            count[i] += 1;
                        }
                    }
                }
            }
            break;
        }
        (0..NODES).max_by_key(|i| count[*i]).unwrap()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for c in self.nodes.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for i in 0..NODES {
            let _ = run(&["ip", "netns", "del", &self.ns(i)]);
        }
        let _ = run(&["ip", "link", "del", &self.bridge()]);
        for d in &self.dirs {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

#[test]
#[ignore]
fn a_cluster_under_kills_pauses_and_partitions_stays_linearizable() {
    let mut net = Net::up();
    net.make_cluster();
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let history: Arc<Mutex<Vec<Operation>>> = Arc::default();
    let mut threads = Vec::new();
    for i in 0..NODES {
        // The first client's login: each node has its own salt, so a password, derived per node.
        let creds =
            velocity::client::Credentials::Password { user: "alice".into(), password: PASSWORD.into() };
        for t in 0..2u64 {
            let target = registers::Target {
                host: net.ip(i),
                port: 7411,
                known_hosts: net.dirs[i].with_extension("known_hosts"),
            };
            threads.push(registers::spawn(
                i as u64 * 10 + t,
                target,
                creds.clone(),
                4,
                started,
                stop.clone(),
                history.clone(),
            ));
        }
    }
    let wait = |ms| std::thread::sleep(Duration::from_millis(ms));
    let mut faults = Vec::new();
    wait(2000);

    let v = net.busiest_leader();
    let _ = net.nodes[v].as_mut().unwrap().kill();
    let _ = net.nodes[v].as_mut().unwrap().wait();
    faults.push(format!("node {} (busiest leader) killed with SIGKILL for 2.5 s, restarted", v + 1));
    wait(2500);
    net.nodes[v] = Some(net.start(v));
    wait(2000);

    let v = net.busiest_leader();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(net.pid(v), libc::SIGSTOP) };
    faults.push(format!("node {} (busiest leader) paused with SIGSTOP for 2.5 s, resumed", v + 1));
    wait(2500);
    unsafe { libc::kill(net.pid(v), libc::SIGCONT) };
    wait(2000);

    let v = net.busiest_leader();
    must(&["ip", "link", "set", &net.veth(v), "down"]);
    faults.push(format!("node {} (busiest leader) cut off (its link down) for 3 s, healed", v + 1));
    wait(3000);
    must(&["ip", "link", "set", &net.veth(v), "up"]);
    wait(2000);

    let f = (net.busiest_leader() + 1) % NODES;
    must(&["ip", "link", "set", &net.veth(f), "down"]);
    faults.push(format!("node {} (a follower of some ranges) cut off for 3 s, healed", f + 1));
    wait(3000);
    must(&["ip", "link", "set", &net.veth(f), "up"]);
    wait(2000);

    // A node wiped and rejoined: killed, its data directory lost, a new node (new key, id 4)
    // in its namespace at its address takes its place (`cluster change`, then `cluster init`),
    // and every range's leader swaps it in while the clients go on.
    let w = (net.busiest_leader() + 2) % NODES;
    let _ = net.nodes[w].as_mut().unwrap().kill();
    let _ = net.nodes[w].as_mut().unwrap().wait();
    let lost = std::mem::replace(&mut net.dirs[w], PathBuf::new());
    let _ = std::fs::remove_dir_all(&lost);
    let (dir, fp) = node_dir("chaos");
    let stays = (w + 1) % NODES;
    let current = std::fs::read_to_string(net.dirs[stays].join("cluster")).unwrap();
    let new_id = NODES as u64 + 1;
    let file = dir.with_extension("cluster");
    let peer = net.peer(w);
    std::fs::write(&file, replacing(&current, net.ids[w], new_id, &peer, 2, &fp)).unwrap();
    cluster_command(&["change"], &file, &net.dirs[stays]);
    cluster_command(&["init", "--node-id", &new_id.to_string()], &file, &dir);
    net.dirs[w] = dir;
    net.ids[w] = new_id;
    let replaced_at = Instant::now();
    net.nodes[w] = Some(net.start(w));
    let swapped = loop {
        let all = velocity::server::node::status(&net.dirs[stays]).unwrap_or_default();
        let led: Vec<&serde_json::Value> = all
            .iter()
            .flat_map(|c| c["ranges"].as_array().into_iter().flatten())
            .filter(|r| {
                r["is_leader"] == true
                    && r["voters"].as_array().is_some_and(|v| v.contains(&serde_json::Value::from(new_id)))
                    && r["voters_outgoing"] == serde_json::json!([])
            })
            .collect();
        if led.len() == 12 {
            break replaced_at.elapsed();
        }
        assert!(replaced_at.elapsed() < Duration::from_secs(60), "node {new_id} not swapped in: {all:?}");
        wait(100);
    };
    faults.push(format!(
        "node {} killed and its data directory deleted; node {new_id} (new key) took its place: every range's voters had it {} ms after it started",
        w + 1,
        swapped.as_millis()
    ));
    wait(2000);

    // Delay and loss on every node's link: netem if this kernel has it, else the proxies'.
    let netem: Vec<String> = (0..NODES).map(|i| net.veth(i)).collect();
    let with = netem.iter().all(|v| {
        run(&["tc", "qdisc", "add", "dev", v, "root", "netem", "delay", "20ms", "5ms", "loss", "3%"]).is_ok()
    });
    if with {
        faults.push("netem: 20 ± 5 ms delay and 3% loss on every link for 6 s".into());
        wait(6000);
    } else {
        let i = &net.impair;
        i.delay_ms.store(20, Ordering::Relaxed);
        i.jitter_ms.store(5, Ordering::Relaxed);
        i.stall_ms.store(200, Ordering::Relaxed);
        i.loss_per_mille.store(30, Ordering::Relaxed);
        wait(6000);
        for a in [&i.delay_ms, &i.jitter_ms, &i.loss_per_mille] {
            a.store(0, Ordering::Relaxed);
        }
        faults.push(format!(
            "delay 20 ± 5 ms each way and 3% of reads stalled 200 ms more (a lost segment's retransmission; {} stalls) \
             on every node-to-node link for 6 s, by the links' proxies: this kernel has no netem (sch_netem)",
            i.stalls.load(Ordering::Relaxed)
        ));
    }
    for v in &netem {
        let _ = run(&["tc", "qdisc", "del", "dev", v, "root"]);
    }
    wait(2000);

    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let history = history.lock().unwrap().clone();
    let report = linearizability::check(&history, 10_000_000).unwrap();
    eprintln!("faults injected, in turn:");
    for f in &faults {
        eprintln!("  {f}");
    }
    let logs: String = (0..NODES)
        .map(|i| std::fs::read_to_string(net.dirs[i].with_extension("log")).unwrap_or_default())
        .collect();
    let lines = |what: &str| logs.lines().filter(|l| l.contains(what)).count();
    eprintln!(
        "meanwhile: {} core snapshots (each compacting its log), {} range snapshots installed from a leader",
        lines("snapshot taken"),
        lines("snapshot installed from the leader")
    );
    let unknown = history.iter().filter(|o| o.return_ns.is_none()).count();
    eprintln!(
        "{} operations recorded ({unknown} writes of unknown outcome), {} checked: {:?}",
        history.len(),
        report.ops_checked,
        report.verdict
    );
    assert!(report.ops_checked > 100, "too few operations: {}", report.ops_checked);
    assert!(report.is_linearizable(), "{:?}", report.verdict);
}
