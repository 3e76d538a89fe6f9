//! Apply a write to a store and record it: the redo payload (after-images, for the log) and the
//! undo (before-images, to take the write back if the log cannot be made durable).

use super::{encode_del, encode_set, Mutation};
use crate::shard::WriteLog;
use crate::store::Store;

/// Before-images of the keys a group of writes changed, in one flat buffer (no allocation per
/// write): per entry `u16 key length ‖ key ‖ u8 had a value ‖ [u32 length ‖ value ‖ u64 expiry]`.
#[derive(Default, Debug, Clone, PartialEq, Eq)]
pub struct Undo {
    buf: Vec<u8>,
}

impl Undo {
    /// Remember what `key` holds now.
    pub fn push(&mut self, store: &Store, key: &[u8], now_ms: u64) {
        self.buf.extend_from_slice(&(key.len() as u16).to_le_bytes());
        self.buf.extend_from_slice(key);
        match store.get(key, now_ms) {
            None => self.buf.push(0),
            Some(e) => {
                self.buf.push(1);
                self.buf.extend_from_slice(&(e.value.len() as u32).to_le_bytes());
                self.buf.extend_from_slice(e.value);
                self.buf.extend_from_slice(&e.expires_at_ms.unwrap_or(0).to_le_bytes());
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Bytes of before-images so far: where the entries pushed from now on begin.
    pub fn len_bytes(&self) -> usize {
        self.buf.len()
    }

    /// The keys of the entries from byte `at` on (a `len_bytes` taken earlier).
    pub fn keys_from(&self, mut at: usize) -> impl Iterator<Item = &[u8]> {
        let b = &self.buf;
        std::iter::from_fn(move || {
            if at >= b.len() {
                return None;
            }
            let klen = u16::from_le_bytes([b[at], b[at + 1]]) as usize;
            let key = &b[at + 2..at + 2 + klen];
            let mut next = at + 2 + klen + 1;
            if b[at + 2 + klen] == 1 {
                let vlen = u32::from_le_bytes(b[next..next + 4].try_into().unwrap()) as usize;
                next += 4 + vlen + 8;
            }
            at = next;
            Some(key)
        })
    }

    /// Restore every remembered key, newest first.
    pub fn apply(&self, store: &mut Store, now_ms: u64) {
        let b = &self.buf;
        let mut entries = Vec::new();
        let mut pos = 0;
        while pos < b.len() {
            let start = pos;
            let klen = u16::from_le_bytes([b[pos], b[pos + 1]]) as usize;
            pos += 2 + klen;
            let has = b[pos] == 1;
            pos += 1;
            if has {
                let vlen = u32::from_le_bytes(b[pos..pos + 4].try_into().unwrap()) as usize;
                pos += 4 + vlen + 8;
            }
            entries.push(start);
        }
        for &start in entries.iter().rev() {
            let klen = u16::from_le_bytes([b[start], b[start + 1]]) as usize;
            let key = &b[start + 2..start + 2 + klen];
            let at = start + 2 + klen;
            if b[at] == 1 {
                let vlen = u32::from_le_bytes(b[at + 1..at + 5].try_into().unwrap()) as usize;
                let value = &b[at + 5..at + 5 + vlen];
                let exp = u64::from_le_bytes(b[at + 5 + vlen..at + 13 + vlen].try_into().unwrap());
                store.insert(key, value, (exp != 0).then_some(exp), now_ms);
            } else {
                store.delete(key, now_ms);
            }
        }
    }
}

/// A write's record as it is made: its mutations appended to `redo` (the log record's payload)
/// and, in sync mode, its before-images to `undo`.
pub struct Recorder<'a> {
    pub redo: &'a mut Vec<u8>,
    pub undo: Option<&'a mut Undo>,
    pub now_ms: u64,
}

impl WriteLog for Recorder<'_> {
    fn before(&mut self, store: &Store, key: &[u8]) {
        if let Some(u) = self.undo.as_deref_mut() {
            u.push(store, key, self.now_ms);
        }
    }

    fn set(&mut self, key: &[u8], value: &[u8], expires_at_ms: Option<u64>) {
        encode_set(self.redo, key, value, expires_at_ms);
    }

    fn deleted(&mut self, key: &[u8]) {
        encode_del(self.redo, key);
    }
}

/// Apply a replayed mutation. A key whose expiry has passed is removed, not brought back.
pub fn replay(store: &mut Store, m: Mutation, now_ms: u64) {
    match m {
        Mutation::Set { key, value, expires_at_ms } => {
            if expires_at_ms.is_some_and(|t| t <= now_ms) {
                store.delete(&key, now_ms);
            } else {
                store.insert(&key, &value, expires_at_ms, now_ms);
            }
        }
        Mutation::Del { key } => {
            store.delete(&key, now_ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::durability::{decode_payload, Payload};
    use crate::shard::{apply, plan, run_op, ShardOp};
    use crate::sql::parse;
    use std::ops::ControlFlow;

    fn ops(sql: &str) -> Vec<ShardOp> {
        plan(&parse(sql).unwrap(), 1, 1 << 20).unwrap().parts.into_iter().map(|(_, op)| op).collect()
    }

    fn dump(s: &Store, now: u64) -> Vec<(Vec<u8>, Vec<u8>, Option<u64>)> {
        let mut v = Vec::new();
        s.scan(&crate::store::KeyRange::all(), false, now, |e| {
            v.push((e.key.to_vec(), e.value.to_vec(), e.expires_at_ms));
            ControlFlow::Continue(())
        });
        v
    }

    #[test]
    fn redo_replays_to_the_same_state_and_undo_restores_the_old_one() {
        let now = 1_000_000;
        let mut s = Store::new();
        for op in ops("INSERT INTO kv (key, value) VALUES ('a', '1'), ('b', '2'), ('c', '3')") {
            run_op(&mut s, &op, now);
        }
        let start = dump(&s, now);
        let mut replica = Store::new();
        for (k, v, e) in &start {
            replica.insert(k, v, *e, now);
        }
        let mut redo = Vec::new();
        let mut und = Undo::default();
        for sql in [
            "INSERT INTO kv (key, value, ttl) VALUES ('a', 'x', 60), ('d', '4', 10)",
            "UPDATE kv SET value = 'y' WHERE key = 'b'",
            "UPDATE kv SET value = 'z' WHERE key = 'missing'",
            "DELETE FROM kv WHERE key = 'c'",
            "DELETE FROM kv WHERE key LIKE 'd%'",
        ] {
            for op in ops(sql) {
                apply(&mut s, &op, now, &mut Recorder { redo: &mut redo, undo: Some(&mut und), now_ms: now });
            }
        }
        let Payload::Mutations(muts) = decode_payload(&redo).unwrap() else { panic!() };
        for m in muts {
            replay(&mut replica, m, now);
        }
        assert_eq!(dump(&replica, now), dump(&s, now));
        und.apply(&mut s, now);
        assert_eq!(dump(&s, now), start);
    }

    #[test]
    fn replay_does_not_bring_back_expired_keys() {
        let mut s = Store::new();
        s.insert(b"k", b"old", None, 0);
        replay(
            &mut s,
            Mutation::Set { key: b"k".to_vec(), value: b"v".to_vec(), expires_at_ms: Some(5) },
            10,
        );
        assert!(s.get(b"k", 10).is_none());
        assert_eq!(s.len(), 0);
    }
}
