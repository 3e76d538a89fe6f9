//! What Raft costs a write, without I/O: three nodes' replicas of one range in this thread,
//! every message encoded and decoded as between nodes (`cluster::wire`), writes "durable" at
//! once. The time per write is the CPU all three replicas spend on it (the leader's proposal,
//! appends, acknowledgements, commit and apply), the part of a replicated write's cost that is
//! Raft's own rather than the network's or the disk's. Run: `cargo bench --bench raft`.
//! Results and the machine are recorded in docs/benchmarks.md.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::collections::VecDeque;
use velocity::cluster::log::GroupLog;
use velocity::cluster::replicas::{Apply, Replicas};
use velocity::cluster::wire;

const NODES: [u64; 3] = [1, 2, 3];

struct Cluster {
    replicas: Vec<Replicas>,
    network: VecDeque<Vec<u8>>,
    acked: usize,
}

impl Cluster {
    fn new() -> Cluster {
        let replicas = NODES
            .iter()
            .map(|n| Replicas::new(*n, vec![(0, GroupLog::new(&NODES))], None).unwrap())
            .collect();
        let mut c = Cluster { replicas, network: VecDeque::new(), acked: 0 };
        c.replicas[0].campaign(0).unwrap();
        while !c.replicas[0].status()[0].is_leader || c.round() {
            c.round();
        }
        c
    }

    /// Delivers what is in flight and runs every node's cycle once; false when all was quiet.
    fn round(&mut self) -> bool {
        let mut busy = false;
        while let Some(frame) = self.network.pop_front() {
            let (envelope, _) = wire::decode(&frame).unwrap().unwrap();
            let to = (envelope.msg.to - 1) as usize;
            let _ = self.replicas[to].step(envelope);
            busy = true;
        }
        for node in 0..self.replicas.len() {
            let batch = self.replicas[node].ready();
            if batch.number == 0 {
                continue;
            }
            busy = true;
            let mut send = batch.send;
            send.extend(self.replicas[node].persisted(batch.number));
            for envelope in send {
                let mut frame = Vec::new();
                wire::encode(&envelope, &mut frame);
                self.network.push_back(frame);
            }
            self.acked +=
                batch.apply.iter().filter(|a| matches!(a, Apply::Entry { proposal: Some(_), .. })).count();
            if self.replicas[node].entries_behind_applied(0) > 10_000 {
                // The core's snapshot would write the checkpoint; the log in memory is compacted.
                let _ = self.replicas[node].checkpoint();
            }
        }
        busy
    }

    fn write(&mut self, writes: usize, value: &[u8]) {
        let goal = self.acked + writes;
        for _ in 0..writes {
            self.replicas[0].propose(0, value.to_vec()).unwrap();
        }
        while self.acked < goal {
            assert!(self.round(), "the cluster went quiet before committing");
        }
    }
}

fn raft(c: &mut Criterion) {
    let value = [7u8; 64];
    let mut g = c.benchmark_group("raft");
    for writes in [1usize, 16] {
        let mut cluster = Cluster::new();
        g.throughput(Throughput::Elements(writes as u64));
        g.bench_function(format!("3 replicas commit {writes} x 64 B"), |b| {
            b.iter(|| cluster.write(writes, &value))
        });
    }
    g.finish();
}

criterion_group!(benches, raft);
criterion_main!(benches);
