//! Micro-benchmarks of the no-I/O core. Run: `cargo bench --bench core`.
//! Results and the machine they ran on are recorded in docs/benchmarks.md.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::hint::black_box;
use std::ops::ControlFlow;
use velocity::protocol::{decode_frame, encode_frame, encode_single_value_response, Decoded, MessageType};
use velocity::sql::{parse, Filter, Statement};
use velocity::store::{KeyRange, Store};

const N_KEYS: usize = 1_000_000;

fn key(i: usize) -> [u8; 16] {
    let mut k = *b"key:000000000000";
    let mut n = i;
    for d in k[4..].iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
    k
}

fn filled_store() -> Store {
    let mut s = Store::new();
    for i in 0..N_KEYS {
        s.insert(&key(i), b"value:0123456789", None, 0);
    }
    s
}

fn codec(c: &mut Criterion) {
    let sql = b"SELECT value FROM kv WHERE key = 'key:000000012345'";
    let mut frame = Vec::new();
    encode_frame(&mut frame, MessageType::Command as u8, sql);
    let mut out = Vec::with_capacity(256);
    c.bench_function("frame/decode+encode COMMAND", |b| {
        b.iter(|| {
            out.clear();
            let Ok(Decoded::Frame(f)) = decode_frame(black_box(&frame), 1 << 20) else { unreachable!() };
            encode_frame(&mut out, f.kind, f.payload);
            black_box(&out);
        })
    });
}

fn sql(c: &mut Criterion) {
    c.bench_function("sql/parse point SELECT", |b| {
        b.iter(|| black_box(parse(black_box("SELECT value FROM kv WHERE key = 'key:000000012345'")).unwrap()))
    });
    c.bench_function("sql/parse one-row INSERT", |b| {
        b.iter(|| {
            black_box(
                parse(black_box(
                    "INSERT INTO kv (key, value) VALUES ('key:000000012345', 'value:0123456789')",
                ))
                .unwrap(),
            )
        })
    });
}

fn store(c: &mut Criterion) {
    let mut s = filled_store();
    let mut i = 0usize;
    c.bench_function("store/get (1M keys)", |b| {
        b.iter(|| {
            i = (i + 7919) % N_KEYS;
            black_box(s.get(&key(i), 0).is_some())
        })
    });
    // A pipelined batch of 16 reads, as a connection's batch runs them: one after another, or
    // with every entry prefetched first so that the cache misses overlap.
    let mut g = c.benchmark_group("store/16 gets (1M keys)");
    g.throughput(Throughput::Elements(16));
    g.bench_function("one by one", |b| {
        b.iter(|| {
            let mut hits = 0;
            for _ in 0..16 {
                i = (i + 7919) % N_KEYS;
                hits += s.get(&key(i), 0).is_some() as usize;
            }
            black_box(hits)
        })
    });
    g.bench_function("prefetched first", |b| {
        b.iter(|| {
            let start = i;
            // As the server does: hash the batch's keys, then probe in a tight loop.
            let mut hashes = [0u64; 16];
            for h in &mut hashes {
                i = (i + 7919) % N_KEYS;
                *h = s.key_hash(&key(i));
            }
            for &h in &hashes {
                s.prefetch(h);
            }
            i = start;
            let mut hits = 0;
            for _ in 0..16 {
                i = (i + 7919) % N_KEYS;
                hits += s.get(&key(i), 0).is_some() as usize;
            }
            black_box(hits)
        })
    });
    g.finish();
    c.bench_function("store/insert overwrite (1M keys)", |b| {
        b.iter(|| {
            i = (i + 7919) % N_KEYS;
            s.insert(&key(i), b"value:9876543210", None, 0);
        })
    });
    c.bench_function("store/insert new + delete (1M keys)", |b| {
        b.iter(|| {
            i = (i + 7919) % N_KEYS;
            let k = key(N_KEYS + i);
            s.insert(&k, b"value:9876543210", None, 0);
            s.delete(&k, 0);
        })
    });
    let mut g = c.benchmark_group("store/scan");
    g.throughput(Throughput::Elements(100));
    g.bench_function("100-key range (1M keys)", |b| {
        b.iter(|| {
            i = (i + 7919) % (N_KEYS - 200);
            let r = KeyRange::prefix(b"key:").resume_after(&key(i), false);
            let mut n = 0usize;
            s.scan(&r, false, 0, |e| {
                n += e.value.len();
                if n >= 100 * 16 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            });
            black_box(n)
        })
    });
    g.finish();

    // The whole point GET as the server runs it for a local key: decode → parse → execute →
    // encode the RESPONSE.
    let frames: Vec<Vec<u8>> = (0..4096)
        .map(|j| {
            let k = key((j * 7919 * 31) % N_KEYS);
            let sql = format!("SELECT value FROM kv WHERE key = '{}'", std::str::from_utf8(&k).unwrap());
            let mut frame = Vec::new();
            encode_frame(&mut frame, MessageType::Command as u8, sql.as_bytes());
            frame
        })
        .collect();
    let mut out = Vec::with_capacity(256);
    c.bench_function("whole point GET (1M keys)", |b| {
        b.iter(|| {
            out.clear();
            i = (i + 1) % frames.len();
            let Ok(Decoded::Frame(f)) = decode_frame(black_box(&frames[i]), 1 << 20) else { unreachable!() };
            let sql = std::str::from_utf8(f.payload).unwrap();
            let Statement::Select(sel) = parse(sql).unwrap() else { unreachable!() };
            let Filter::Eq(k) = &sel.filter else { unreachable!() };
            let e = s.get(k, 0).unwrap();
            encode_single_value_response(&mut out, "value", e.value);
            black_box(&out);
        })
    });
    drop(s);

    c.bench_function("store/build 100K keys (batched)", |b| {
        b.iter_batched(
            Store::new,
            |mut s| {
                for i in 0..100_000 {
                    s.insert(&key(i), b"value:0123456789", None, 0);
                }
                s
            },
            BatchSize::PerIteration,
        )
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3)).warm_up_time(std::time::Duration::from_secs(1));
    targets = codec, sql, store
}
criterion_main!(benches);
