//! The on-disk formats of durability, without any I/O: write-ahead log records, snapshot blocks,
//! sealing with AES-256-GCM, scanning a log for its last good record, and applying a write while
//! recording what it did (the redo record) and what it replaced (the undo, for a write that
//! cannot be made durable).
//!
//! Every file starts with a 16-byte header; then records, each `u32 length ‖ u32 CRC-32 ‖ u64
//! sequence number ‖ body`, the CRC covering the length, the number and the body. Records of a
//! file are numbered 1, 2, 3, … with no gap, so a scan knows which record is due next and can
//! tell a torn tail from damage (below). The body is the plain payload, or `nonce ‖ ciphertext ‖
//! tag` when the file is encrypted, with the file's identity and the record's offset as
//! associated data: a record cannot be moved within or between files unnoticed. A payload is a
//! list of mutations, each an after-image (`Set` with its absolute expiry, or `Del`), so
//! replaying a record twice is harmless; that is what lets a snapshot be taken while writes go
//! on.
//!
//! **Torn tail or damage.** A crash can only tear the last write: its records are complete up to
//! some byte and missing (or garbage) after it. So a bad record at offset X is a torn tail only if
//! no intact record follows it — none of the bytes after X parses as a record with a valid
//! checksum and a number from the one due at X on. Anything else (a flipped bit, a zeroed or
//! duplicated or reordered block followed by intact records) is damage: the file is refused
//! whole, nothing is dropped silently, and `repair` moves what it cuts to a quarantine file.

pub mod apply;
pub mod cipher;
#[cfg(test)]
mod sim;

pub use apply::{Recorder, Undo};
pub use cipher::{Cipher, KEY_BYTES};

use crate::limits::{KEY_BYTES_MAX, WAL_RECORD_BYTES_MAX};

pub const HEADER_BYTES: usize = 16;
/// `u32 length ‖ u32 CRC ‖ u64 sequence number`.
pub const RECORD_HEADER_BYTES: usize = 16;
/// The shortest record: a header and a one-byte payload.
const RECORD_BYTES_MIN: usize = RECORD_HEADER_BYTES + 1;
/// How far past the number due a record found after damage may be numbered and still count as
/// one of this file's (a file holds far fewer records): random bytes pass this check once in 2^32.
const SEQ_JUMP_MAX: u64 = 1 << 32;
pub const LOG_MAGIC: &[u8; 4] = b"VWAL";
pub const SNAP_MAGIC: &[u8; 4] = b"VSNP";
/// An audit log sealed with the data key (--encryption-key-file): its records are batches of
/// JSON lines, so that no key name is on disk in the clear.
pub const AUDIT_MAGIC: &[u8; 4] = b"VAUD";
/// 2: numbered records (1 had none, and could not tell a torn tail from damage).
pub const FORMAT_VERSION: u8 = 2;
const FLAG_ENCRYPTED: u8 = 1;

const OP_SET: u8 = 1;
const OP_DEL: u8 = 2;
/// A snapshot's last record: the number of entries it holds, so a cut-short snapshot is known.
const OP_END: u8 = 3;
/// A cluster node's record of its Raft replicas' state (`cluster::log`), in the same log as the
/// core's other writes, so that one sync makes both durable.
const OP_RAFT: u8 = 4;

/// One change to one key, as it is after the write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mutation {
    Set { key: Vec<u8>, value: Vec<u8>, expires_at_ms: Option<u64> },
    Del { key: Vec<u8> },
}

impl Mutation {
    pub fn key(&self) -> &[u8] {
        match self {
            Mutation::Set { key, .. } | Mutation::Del { key } => key,
        }
    }
}

/// Which file a record lives in: bound into each sealed record's associated data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileId {
    pub kind: FileKind,
    pub generation: u64,
    pub shard: u32,
    pub index: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Log,
    Snapshot,
    Audit,
}

impl FileKind {
    fn magic(self) -> &'static [u8; 4] {
        match self {
            FileKind::Log => LOG_MAGIC,
            FileKind::Snapshot => SNAP_MAGIC,
            FileKind::Audit => AUDIT_MAGIC,
        }
    }
}

/// `magic ‖ version ‖ flags ‖ 2 reserved ‖ 8-byte key id` (zeros when not encrypted).
pub fn file_header(kind: FileKind, cipher: Option<&Cipher>) -> [u8; HEADER_BYTES] {
    let mut h = [0u8; HEADER_BYTES];
    h[..4].copy_from_slice(kind.magic());
    h[4] = FORMAT_VERSION;
    if let Some(c) = cipher {
        h[5] = FLAG_ENCRYPTED;
        h[8..16].copy_from_slice(&c.key_id());
    }
    h
}

/// Check a file's header against the key we have. Errors are for the operator.
pub fn check_header(kind: FileKind, header: &[u8], cipher: Option<&Cipher>) -> Result<(), String> {
    if header.len() < HEADER_BYTES || &header[..4] != kind.magic() {
        return Err("not a Velocity data file (bad magic)".into());
    }
    if header[4] != FORMAT_VERSION {
        return Err(format!(
            "format version {} is not supported (this build reads version {FORMAT_VERSION}); start the \
             release that wrote it and move the data over with paged reads (docs/operations.md)",
            header[4]
        ));
    }
    let encrypted = header[5] & FLAG_ENCRYPTED != 0;
    match (encrypted, cipher) {
        (true, None) => Err("the file is encrypted: start with --encryption-key-file".into()),
        (true, Some(c)) if header[8..16] != c.key_id() => {
            Err("the file is encrypted with a different key than --encryption-key-file holds".into())
        }
        _ => Ok(()),
    }
}

/// Whether the file's header says it is encrypted.
pub fn header_encrypted(header: &[u8]) -> bool {
    header.len() >= HEADER_BYTES && header[5] & FLAG_ENCRYPTED != 0
}

fn aad(file: &FileId, offset: u64) -> [u8; 29] {
    let mut a = [0u8; 29];
    a[0] = match file.kind {
        FileKind::Log => 0,
        FileKind::Snapshot => 1,
        FileKind::Audit => 2,
    };
    a[1..9].copy_from_slice(&file.generation.to_le_bytes());
    a[9..13].copy_from_slice(&file.shard.to_le_bytes());
    a[13..21].copy_from_slice(&file.index.to_le_bytes());
    a[21..29].copy_from_slice(&offset.to_le_bytes());
    a
}

pub fn encode_mutation(out: &mut Vec<u8>, m: &Mutation) {
    match m {
        Mutation::Set { key, value, expires_at_ms } => encode_set(out, key, value, *expires_at_ms),
        Mutation::Del { key } => encode_del(out, key),
    }
}

/// A `Del` from a borrowed key.
pub fn encode_del(out: &mut Vec<u8>, key: &[u8]) {
    out.push(OP_DEL);
    out.extend_from_slice(&(key.len() as u16).to_le_bytes());
    out.extend_from_slice(key);
}

/// A `Set` from borrowed parts (the hot path: no owned mutation is built).
pub fn encode_set(out: &mut Vec<u8>, key: &[u8], value: &[u8], expires_at_ms: Option<u64>) {
    out.push(OP_SET);
    out.extend_from_slice(&(key.len() as u16).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(value);
    out.extend_from_slice(&expires_at_ms.unwrap_or(0).to_le_bytes());
}

pub fn encode_end(out: &mut Vec<u8>, entries: u64) {
    out.push(OP_END);
    out.extend_from_slice(&entries.to_le_bytes());
}

/// A Raft record's payload: `body` as `cluster::log` encodes it.
pub fn encode_raft(out: &mut Vec<u8>, body: &[u8]) {
    out.push(OP_RAFT);
    out.extend_from_slice(body);
}

/// What a payload holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Payload {
    Mutations(Vec<Mutation>),
    End {
        entries: u64,
    },
    /// A cluster node's Raft record, for `cluster::log` to decode.
    Raft(Vec<u8>),
}

fn take<'a>(p: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
    if p.len() < n {
        return Err("record payload is cut short".into());
    }
    let (a, b) = p.split_at(n);
    *p = b;
    Ok(a)
}

pub fn decode_payload(mut p: &[u8]) -> Result<Payload, String> {
    if p.first() == Some(&OP_END) {
        if p.len() != 9 {
            return Err("malformed snapshot end record".into());
        }
        return Ok(Payload::End { entries: u64::from_le_bytes(p[1..9].try_into().unwrap()) });
    }
    if let Some((&OP_RAFT, body)) = p.split_first() {
        return Ok(Payload::Raft(body.to_vec()));
    }
    let mut out = Vec::new();
    while !p.is_empty() {
        let op = take(&mut p, 1)?[0];
        let klen = u16::from_le_bytes(take(&mut p, 2)?.try_into().unwrap()) as usize;
        if klen > KEY_BYTES_MAX {
            return Err("key longer than the limit".into());
        }
        let key = take(&mut p, klen)?.to_vec();
        match op {
            OP_SET => {
                let vlen = u32::from_le_bytes(take(&mut p, 4)?.try_into().unwrap()) as usize;
                let value = take(&mut p, vlen)?.to_vec();
                let exp = u64::from_le_bytes(take(&mut p, 8)?.try_into().unwrap());
                out.push(Mutation::Set { key, value, expires_at_ms: (exp != 0).then_some(exp) });
            }
            OP_DEL => out.push(Mutation::Del { key }),
            other => return Err(format!("unknown mutation type {other}")),
        }
    }
    Ok(Payload::Mutations(out))
}

fn record_crc(len: u32, seq: u64, body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&len.to_le_bytes());
    h.update(&seq.to_le_bytes());
    h.update(body);
    h.finalize()
}

/// Frame, as record `seq`, the `len` payload bytes that follow a RECORD_HEADER_BYTES placeholder
/// at `start` of `out` (the log builds its records in place, and numbers them when it writes).
pub fn frame_in_place(out: &mut [u8], start: usize, len: usize, seq: u64) {
    let body = &out[start + RECORD_HEADER_BYTES..start + RECORD_HEADER_BYTES + len];
    let crc = record_crc(len as u32, seq, body);
    out[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    out[start + 8..start + 16].copy_from_slice(&seq.to_le_bytes());
}

/// Frame `payload` as record `seq` at `offset` of `file`, appending to `out`.
pub fn seal_record(
    out: &mut Vec<u8>,
    payload: &[u8],
    file: &FileId,
    offset: u64,
    seq: u64,
    cipher: Option<&Cipher>,
) {
    let start = out.len();
    out.extend_from_slice(&[0u8; RECORD_HEADER_BYTES]);
    match cipher {
        None => out.extend_from_slice(payload),
        Some(c) => c.seal_into(out, payload, &aad(file, offset)),
    }
    let len = out.len() - start - RECORD_HEADER_BYTES;
    frame_in_place(out, start, len, seq);
}

/// Bytes a sealed record of `payload_len` takes.
pub fn sealed_len(payload_len: usize, encrypted: bool) -> usize {
    RECORD_HEADER_BYTES + payload_len + if encrypted { cipher::OVERHEAD_BYTES } else { 0 }
}

/// Where reading a file stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum Tail {
    /// Every byte was a good record.
    Clean,
    /// The last write was cut short (a crash mid-write): nothing intact follows `offset`, and the
    /// bytes from there on are dropped.
    Torn { offset: u64, reason: String },
    /// Damage, not a crash: intact records follow the bad one (the first at `next_intact`), or
    /// the record at `offset` is intact but cannot be read (a wrong key, a record moved from
    /// elsewhere, an unknown mutation). Nothing from `offset` on may be used or dropped silently.
    Corrupt { offset: u64, reason: String, next_intact: Option<u64> },
}

#[derive(Debug)]
pub struct Scan {
    /// (offset, payload) of each good record, in order; the i-th is record number i + 1.
    pub records: Vec<(u64, Payload)>,
    /// End of the last good record.
    pub good_end: u64,
    pub tail: Tail,
}

impl Scan {
    /// The number of the last good record (0: none), so appending continues with the next.
    pub fn last_seq(&self) -> u64 {
        self.records.len() as u64
    }
}

fn u32_at(data: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(data[at..at + 4].try_into().unwrap())
}

fn u64_at(data: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(data[at..at + 8].try_into().unwrap())
}

/// The record at `pos` if it is whole, its checksum holds and it is number `seq`: (its body's
/// range, where the next record starts). Otherwise why not.
fn record_at(data: &[u8], pos: usize, seq: u64) -> Result<(std::ops::Range<usize>, usize), String> {
    if data.len() - pos < RECORD_HEADER_BYTES {
        return Err("record header cut short".into());
    }
    let len = u32_at(data, pos) as usize;
    if len == 0 || len > WAL_RECORD_BYTES_MAX {
        return Err(format!("record length {len} is impossible"));
    }
    let body_start = pos + RECORD_HEADER_BYTES;
    if data.len() - body_start < len {
        return Err(format!("record of {len} bytes cut short"));
    }
    let body = body_start..body_start + len;
    let found = u64_at(data, pos + 8);
    if record_crc(len as u32, found, &data[body.clone()]) != u32_at(data, pos + 4) {
        return Err("checksum mismatch".into());
    }
    if found != seq {
        return Err(format!("record number {found} where {seq} was due"));
    }
    Ok((body.clone(), body.end))
}

/// The first offset at or after `from` holding an intact record numbered `seq` or later: what
/// makes a bad record damage rather than a torn tail. Cheap checks first (a plausible length and
/// number), the checksum only for the rare candidate that passes them.
pub fn next_intact(data: &[u8], from: usize, seq: u64) -> Option<u64> {
    let last = data.len().checked_sub(RECORD_BYTES_MIN)?;
    (from..=last).find_map(|p| {
        let len = u32_at(data, p) as usize;
        if len == 0 || len > WAL_RECORD_BYTES_MAX || len > data.len() - p - RECORD_HEADER_BYTES {
            return None;
        }
        let n = u64_at(data, p + 8);
        if n < seq || n - seq > SEQ_JUMP_MAX {
            return None;
        }
        let body = &data[p + RECORD_HEADER_BYTES..p + RECORD_HEADER_BYTES + len];
        (record_crc(len as u32, n, body) == u32_at(data, p + 4)).then_some(p as u64)
    })
}

/// The plaintext bodies of a whole file's records, as `scan_file` reads them but without
/// decoding them as mutations (an audit log's records are lines of text): the bodies, the end of
/// the last good one, and the tail.
pub fn scan_records(
    data: &[u8],
    file: &FileId,
    cipher: Option<&Cipher>,
) -> Result<(Vec<Vec<u8>>, u64, Tail), String> {
    let mut bodies = Vec::new();
    let scan = scan_with(data, file, cipher, &mut |p: &[u8]| {
        bodies.push(p.to_vec());
        Ok(Payload::End { entries: 0 })
    })?;
    Ok((bodies, scan.good_end, scan.tail))
}

/// Read the records of a whole file (header included in `data`), telling a torn tail from
/// damage as the module documentation says.
pub fn scan_file(data: &[u8], file: &FileId, cipher: Option<&Cipher>) -> Result<Scan, String> {
    scan_with(data, file, cipher, &mut decode_payload)
}

fn scan_with(
    data: &[u8],
    file: &FileId,
    cipher: Option<&Cipher>,
    decode: &mut dyn FnMut(&[u8]) -> Result<Payload, String>,
) -> Result<Scan, String> {
    check_header(file.kind, data, cipher)?;
    let encrypted = header_encrypted(data);
    let mut pos = HEADER_BYTES;
    let mut records = Vec::new();
    let tail = loop {
        if pos == data.len() {
            break Tail::Clean;
        }
        let seq = records.len() as u64 + 1;
        let (body, next) = match record_at(data, pos, seq) {
            Ok(r) => r,
            Err(reason) => {
                break match next_intact(data, pos, seq) {
                    None => Tail::Torn { offset: pos as u64, reason },
                    next_intact => Tail::Corrupt { offset: pos as u64, reason, next_intact },
                };
            }
        };
        let body = &data[body];
        let plain;
        let payload: &[u8] = match (encrypted, cipher) {
            (false, _) => body,
            (true, Some(c)) => match c.open(body, &aad(file, pos as u64)) {
                Some(p) => {
                    plain = p;
                    &plain
                }
                // The checksum matched, so the bytes are as written: a wrong key or a record
                // moved from elsewhere. Never garbage data.
                None => {
                    break Tail::Corrupt {
                        offset: pos as u64,
                        reason: "record fails authentication".into(),
                        next_intact: None,
                    }
                }
            },
            (true, None) => unreachable!("check_header refuses an encrypted file without a key"),
        };
        match decode(payload) {
            Ok(p) => records.push((pos as u64, p)),
            Err(reason) => break Tail::Corrupt { offset: pos as u64, reason, next_intact: None },
        }
        pos = next;
    };
    let good_end = match &tail {
        Tail::Clean => data.len() as u64,
        Tail::Torn { offset, .. } | Tail::Corrupt { offset, .. } => *offset,
    };
    Ok(Scan { records, good_end, tail })
}

/// Builds a snapshot file a block at a time: `push` entries, take `ready` bytes to write now and
/// then, `finish` with the end record. Blocks are sealed like log records.
pub struct SnapshotEncoder<'c> {
    file: FileId,
    cipher: Option<&'c Cipher>,
    /// Bytes produced and not yet taken by the caller.
    out: Vec<u8>,
    /// File offset of `out[0]`.
    out_offset: u64,
    block: Vec<u8>,
    /// Number of the next block record.
    seq: u64,
    pub entries: u64,
}

/// Payload bytes per snapshot block.
const SNAPSHOT_BLOCK_BYTES: usize = 64 << 10;

impl<'c> SnapshotEncoder<'c> {
    pub fn new(file: FileId, cipher: Option<&'c Cipher>) -> Self {
        SnapshotEncoder {
            file,
            cipher,
            out: file_header(FileKind::Snapshot, cipher).to_vec(),
            out_offset: 0,
            block: Vec::new(),
            seq: 1,
            entries: 0,
        }
    }

    pub fn push(&mut self, key: &[u8], value: &[u8], expires_at_ms: Option<u64>) {
        encode_set(&mut self.block, key, value, expires_at_ms);
        self.entries += 1;
        if self.block.len() >= SNAPSHOT_BLOCK_BYTES {
            self.seal_block();
        }
    }

    fn seal_block(&mut self) {
        if self.block.is_empty() {
            return;
        }
        let at = self.out_offset + self.out.len() as u64;
        let block = std::mem::take(&mut self.block);
        seal_record(&mut self.out, &block, &self.file, at, self.seq, self.cipher);
        self.seq += 1;
    }

    /// Bytes ready to be written at `offset`, once enough have gathered.
    pub fn take_ready(&mut self, min_bytes: usize) -> Option<(u64, Vec<u8>)> {
        if self.out.len() < min_bytes {
            return None;
        }
        let at = self.out_offset;
        let bytes = std::mem::take(&mut self.out);
        self.out_offset += bytes.len() as u64;
        Some((at, bytes))
    }

    /// The rest of the file: the last block and the end record.
    pub fn finish(mut self) -> (u64, Vec<u8>) {
        self.seal_block();
        let mut end = Vec::new();
        encode_end(&mut end, self.entries);
        let at = self.out_offset + self.out.len() as u64;
        seal_record(&mut self.out, &end, &self.file, at, self.seq, self.cipher);
        (self.out_offset, self.out)
    }
}

/// The entries of a whole snapshot file, checked: every block good and the end record present
/// with the right count.
pub fn read_snapshot(data: &[u8], file: &FileId, cipher: Option<&Cipher>) -> Result<Vec<Mutation>, String> {
    let scan = scan_file(data, file, cipher)?;
    match scan.tail {
        Tail::Clean => {}
        Tail::Torn { offset, reason } | Tail::Corrupt { offset, reason, .. } => {
            return Err(format!("damaged at offset {offset}: {reason}"))
        }
    }
    let mut out = Vec::new();
    let mut ended = false;
    for (offset, p) in scan.records {
        match p {
            Payload::Mutations(m) if !ended => out.extend(m),
            Payload::End { entries } if !ended && entries == out.len() as u64 => ended = true,
            _ => return Err(format!("damaged at offset {offset}: unexpected record")),
        }
    }
    if !ended {
        return Err("cut short: no end record".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> FileId {
        FileId { kind: FileKind::Log, generation: 1, shard: 0, index: 0 }
    }

    fn log(cipher: Option<&Cipher>, n: usize) -> Vec<u8> {
        let mut out = file_header(FileKind::Log, cipher).to_vec();
        for i in 0..n {
            let mut p = Vec::new();
            encode_set(&mut p, format!("k{i}").as_bytes(), b"value", if i % 2 == 0 { Some(5) } else { None });
            encode_mutation(&mut p, &Mutation::Del { key: b"gone".to_vec() });
            let at = out.len() as u64;
            seal_record(&mut out, &p, &file(), at, i as u64 + 1, cipher);
        }
        out
    }

    #[test]
    fn records_round_trip_plain_and_sealed() {
        let c = Cipher::new(&[7u8; 32]);
        for cipher in [None, Some(&c)] {
            let data = log(cipher, 10);
            let s = scan_file(&data, &file(), cipher).unwrap();
            assert_eq!(s.tail, Tail::Clean);
            assert_eq!(s.records.len(), 10);
            let Payload::Mutations(m) = &s.records[3].1 else { panic!() };
            assert_eq!(
                m[0],
                Mutation::Set { key: b"k3".to_vec(), value: b"value".to_vec(), expires_at_ms: None }
            );
            assert_eq!(m[1], Mutation::Del { key: b"gone".to_vec() });
        }
    }

    #[test]
    fn sealed_records_hide_their_contents_and_refuse_a_wrong_key() {
        let c = Cipher::new(&[7u8; 32]);
        let data = log(Some(&c), 3);
        assert!(!data.windows(5).any(|w| w == b"value"));
        let wrong = Cipher::new(&[8u8; 32]);
        assert!(scan_file(&data, &file(), Some(&wrong)).unwrap_err().contains("different key"));
        assert!(scan_file(&data, &file(), None).unwrap_err().contains("encrypted"));
        // A record moved to another file does not authenticate.
        let other = FileId { index: 1, ..file() };
        assert!(matches!(scan_file(&data, &other, Some(&c)).unwrap().tail, Tail::Corrupt { .. }));
    }

    #[test]
    fn every_cut_is_a_torn_tail_keeping_the_whole_records_before_it() {
        let data = log(None, 5);
        let full = scan_file(&data, &file(), None).unwrap();
        let ends: Vec<u64> = full.records.iter().map(|r| r.0).skip(1).chain([data.len() as u64]).collect();
        for cut in HEADER_BYTES..data.len() {
            let s = scan_file(&data[..cut], &file(), None).unwrap();
            let whole = ends.iter().filter(|e| **e as usize <= cut).count();
            assert_eq!(s.records.len(), whole, "cut at {cut}");
            match s.tail {
                Tail::Clean => assert!(cut == HEADER_BYTES || ends.contains(&(cut as u64))),
                Tail::Torn { offset, .. } => assert_eq!(offset, s.good_end),
                Tail::Corrupt { .. } => panic!("a cut is not corruption"),
            }
        }
    }

    #[test]
    fn snapshots_round_trip_and_a_cut_one_is_refused() {
        let c = Cipher::new(&[3u8; 32]);
        for cipher in [None, Some(&c)] {
            let file = FileId { kind: FileKind::Snapshot, generation: 2, shard: 1, index: 4 };
            let mut enc = SnapshotEncoder::new(file, cipher);
            let mut bytes = Vec::new();
            for i in 0..5000u32 {
                enc.push(&i.to_be_bytes(), &[7u8; 40], (i % 3 == 0).then_some(99));
                if let Some((at, b)) = enc.take_ready(4096) {
                    assert_eq!(at as usize, bytes.len());
                    bytes.extend(b);
                }
            }
            let (at, b) = enc.finish();
            assert_eq!(at as usize, bytes.len());
            bytes.extend(b);
            let m = read_snapshot(&bytes, &file, cipher).unwrap();
            assert_eq!(m.len(), 5000);
            assert_eq!(
                m[3],
                Mutation::Set {
                    key: 3u32.to_be_bytes().to_vec(),
                    value: vec![7; 40],
                    expires_at_ms: Some(99)
                }
            );
            assert!(read_snapshot(&bytes[..bytes.len() - 1], &file, cipher).is_err());
        }
    }

    #[test]
    fn a_flipped_bit_anywhere_before_an_intact_record_is_corruption() {
        let data = log(None, 50);
        let full = scan_file(&data, &file(), None).unwrap();
        let last = full.records.last().unwrap().0 as usize;
        // Near the end (once within a torn write's size of it, which used to be dropped as torn)
        // and far from it: intact records follow, so it is damage.
        for at in [HEADER_BYTES + 3, data.len() / 2, last - 5] {
            let mut d = data.clone();
            d[at] ^= 0x10;
            let s = scan_file(&d, &file(), None).unwrap();
            let Tail::Corrupt { offset, next_intact: Some(next), .. } = s.tail else {
                panic!("{:?}", s.tail)
            };
            assert!(offset as usize <= at && (next as usize) > at, "at {at}: {offset} {next}");
            assert_eq!(s.records.len(), full.records.iter().filter(|r| r.0 < offset).count());
        }
        // In the last record, with nothing after it: a torn write.
        let mut d = data.clone();
        d[last + 20] ^= 0x10;
        let s = scan_file(&d, &file(), None).unwrap();
        assert!(matches!(s.tail, Tail::Torn { offset, .. } if offset as usize == last), "{:?}", s.tail);
        assert_eq!(s.records.len(), 49);
    }

    #[test]
    fn duplicated_and_reordered_records_are_caught_by_their_numbers() {
        let data = log(None, 6);
        let full = scan_file(&data, &file(), None).unwrap();
        let at: Vec<usize> = full.records.iter().map(|r| r.0 as usize).chain([data.len()]).collect();
        // Records 2 and 3 swapped.
        let mut d = data[..at[1]].to_vec();
        d.extend_from_slice(&data[at[2]..at[3]]);
        d.extend_from_slice(&data[at[1]..at[2]]);
        d.extend_from_slice(&data[at[3]..]);
        assert!(matches!(scan_file(&d, &file(), None).unwrap().tail, Tail::Corrupt { .. }));
        // A copy of record 2 in front of record 3 (replaying it would bring back an old value).
        let mut d = data[..at[2]].to_vec();
        d.extend_from_slice(&data[at[1]..at[2]]);
        d.extend_from_slice(&data[at[2]..]);
        assert!(matches!(scan_file(&d, &file(), None).unwrap().tail, Tail::Corrupt { .. }));
        // Old records repeated after the last: nothing newer follows, so they are a torn tail
        // and every original record is kept.
        let mut d = data.clone();
        d.extend_from_slice(&data[at[0]..at[2]]);
        let s = scan_file(&d, &file(), None).unwrap();
        assert!(matches!(s.tail, Tail::Torn { .. }));
        assert_eq!(s.records.len(), 6);
    }
}
