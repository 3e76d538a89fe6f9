//! Memory per key: RSS growth while one shard store takes 1M keys of 16-byte keys and values,
//! next to the store's own exact data accounting. Run: `cargo bench --bench memory`.
//! scripts/mem-per-key.sh runs it beside Redis loaded with the same keys.

use velocity::store::Store;

fn rss_bytes() -> usize {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = s.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn main() {
    let n: usize = std::env::var("KEYS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let before = rss_bytes();
    let mut s = Store::new();
    let mut key = *b"key:000000000000";
    let mut val = *b"val:000000000000";
    for i in 0..n {
        let mut x = i;
        for j in (4..16).rev() {
            key[j] = b'0' + (x % 10) as u8;
            val[j] = key[j];
            x /= 10;
        }
        s.insert(&key, &val, None, 0);
    }
    let after = rss_bytes();
    let per_key = (after - before) as f64 / n as f64;
    println!("keys={n} key_bytes=16 value_bytes=16");
    println!("rss_growth_bytes={} rss_bytes_per_key={per_key:.1}", after - before);
    println!(
        "data_bytes={} (header+key+value, exact) index_bytes_estimate={} mem_bytes={} (what --max-memory counts)",
        s.data_bytes(),
        s.index_bytes_estimate(),
        s.mem_bytes()
    );
    println!(
        "overhead_bytes_per_key={:.1} (RSS per key minus the 32 bytes of key and value)",
        per_key - 32.0
    );
    std::hint::black_box(&s);
}
