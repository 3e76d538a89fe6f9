//! The on-disk formats of durability, without any I/O: write-ahead log records, snapshot blocks,
//! sealing with AES-256-GCM, scanning a log for its last good record, and applying a write while
//! recording what it did (the redo record) and what it replaced (the undo, for a write that
//! cannot be made durable).
//!
//! Every file starts with a 16-byte header; then records, each `u32 length ‖ u32 CRC-32 of the
//! body ‖ body`. The body is the plain payload, or `nonce ‖ ciphertext ‖ tag` when the file is
//! encrypted, with the file's identity and the record's offset as associated data: a record
//! cannot be moved within or between files unnoticed. A payload is a list of mutations, each an
//! after-image (`Set` with its absolute expiry, or `Del`), so replaying a record twice is
//! harmless; that is what lets a snapshot be taken while writes go on.

pub mod apply;
pub mod cipher;

pub use apply::{apply_logged, Undo};
pub use cipher::{Cipher, KEY_BYTES};

use crate::limits::{KEY_BYTES_MAX, WAL_RECORD_BYTES_MAX, WAL_TORN_TAIL_BYTES_MAX};

pub const HEADER_BYTES: usize = 16;
pub const RECORD_HEADER_BYTES: usize = 8;
pub const LOG_MAGIC: &[u8; 4] = b"VWAL";
pub const SNAP_MAGIC: &[u8; 4] = b"VSNP";
pub const FORMAT_VERSION: u8 = 1;
const FLAG_ENCRYPTED: u8 = 1;

const OP_SET: u8 = 1;
const OP_DEL: u8 = 2;
/// A snapshot's last record: the number of entries it holds, so a cut-short snapshot is known.
const OP_END: u8 = 3;

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
}

impl FileKind {
    fn magic(self) -> &'static [u8; 4] {
        match self {
            FileKind::Log => LOG_MAGIC,
            FileKind::Snapshot => SNAP_MAGIC,
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
            "format version {} is not supported (this build reads {FORMAT_VERSION})",
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
    a[0] = matches!(file.kind, FileKind::Snapshot) as u8;
    a[1..9].copy_from_slice(&file.generation.to_le_bytes());
    a[9..13].copy_from_slice(&file.shard.to_le_bytes());
    a[13..21].copy_from_slice(&file.index.to_le_bytes());
    a[21..29].copy_from_slice(&offset.to_le_bytes());
    a
}

pub fn encode_mutation(out: &mut Vec<u8>, m: &Mutation) {
    match m {
        Mutation::Set { key, value, expires_at_ms } => encode_set(out, key, value, *expires_at_ms),
        Mutation::Del { key } => {
            out.push(OP_DEL);
            out.extend_from_slice(&(key.len() as u16).to_le_bytes());
            out.extend_from_slice(key);
        }
    }
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

/// What a payload holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Payload {
    Mutations(Vec<Mutation>),
    End { entries: u64 },
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

/// Frame a plain record whose payload was appended to `out` after an 8-byte placeholder at
/// `start` (the hot path builds records in place, without a copy).
pub fn frame_in_place(out: &mut [u8], start: usize) {
    let body = &out[start + RECORD_HEADER_BYTES..];
    let (len, crc) = (body.len() as u32, crc32fast::hash(body));
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Frame `payload` as the record at `offset` of `file`, appending to `out`.
pub fn seal_record(out: &mut Vec<u8>, payload: &[u8], file: &FileId, offset: u64, cipher: Option<&Cipher>) {
    let start = out.len();
    out.extend_from_slice(&[0u8; RECORD_HEADER_BYTES]);
    match cipher {
        None => out.extend_from_slice(payload),
        Some(c) => c.seal_into(out, payload, &aad(file, offset)),
    }
    let body_len = out.len() - start - RECORD_HEADER_BYTES;
    let crc = crc32fast::hash(&out[start + RECORD_HEADER_BYTES..]);
    out[start..start + 4].copy_from_slice(&(body_len as u32).to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
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
    /// The last write was cut short (a crash mid-write): the bytes from `offset` are dropped.
    Torn { offset: u64, reason: String },
    /// A bad record with more than a torn write's worth of data after it: not a crash but
    /// damage. Nothing from `offset` on can be trusted.
    Corrupt { offset: u64, reason: String },
}

#[derive(Debug)]
pub struct Scan {
    /// (offset, payload) of each good record, in order.
    pub records: Vec<(u64, Payload)>,
    /// End of the last good record.
    pub good_end: u64,
    pub tail: Tail,
}

/// Read the records of a whole file (header included in `data`). A bad record within
/// WAL_TORN_TAIL_BYTES_MAX of the end is a torn tail: a crash can only tear the last group
/// write, which is never larger. Earlier damage is corruption.
pub fn scan_file(data: &[u8], file: &FileId, cipher: Option<&Cipher>) -> Result<Scan, String> {
    check_header(file.kind, data, cipher)?;
    let encrypted = header_encrypted(data);
    let mut pos = HEADER_BYTES;
    let mut records = Vec::new();
    let bad = |pos: usize, reason: String| {
        if data.len() - pos <= WAL_TORN_TAIL_BYTES_MAX {
            Tail::Torn { offset: pos as u64, reason }
        } else {
            Tail::Corrupt { offset: pos as u64, reason }
        }
    };
    let tail = loop {
        if pos == data.len() {
            break Tail::Clean;
        }
        if data.len() - pos < RECORD_HEADER_BYTES {
            break bad(pos, "record header cut short".into());
        }
        let len = u32::from_le_bytes(data[pos..pos + 4].try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(data[pos + 4..pos + 8].try_into().unwrap());
        if len == 0 || len > WAL_RECORD_BYTES_MAX {
            break bad(pos, format!("record length {len} is impossible"));
        }
        let body_start = pos + RECORD_HEADER_BYTES;
        if data.len() - body_start < len {
            break bad(pos, format!("record of {len} bytes cut short"));
        }
        let body = &data[body_start..body_start + len];
        if crc32fast::hash(body) != crc {
            break bad(pos, "checksum mismatch".into());
        }
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
                    break Tail::Corrupt { offset: pos as u64, reason: "record fails authentication".into() }
                }
            },
            (true, None) => unreachable!("check_header refuses an encrypted file without a key"),
        };
        match decode_payload(payload) {
            Ok(p) => records.push((pos as u64, p)),
            Err(e) => break Tail::Corrupt { offset: pos as u64, reason: e },
        }
        pos = body_start + len;
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
        seal_record(&mut self.out, &block, &self.file, at, self.cipher);
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
        seal_record(&mut self.out, &end, &self.file, at, self.cipher);
        (self.out_offset, self.out)
    }
}

/// The entries of a whole snapshot file, checked: every block good and the end record present
/// with the right count.
pub fn read_snapshot(data: &[u8], file: &FileId, cipher: Option<&Cipher>) -> Result<Vec<Mutation>, String> {
    let scan = scan_file(data, file, cipher)?;
    match scan.tail {
        Tail::Clean => {}
        Tail::Torn { offset, reason } | Tail::Corrupt { offset, reason } => {
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
            seal_record(&mut out, &p, &file(), at, cipher);
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
    fn a_flipped_bit_far_from_the_end_is_corruption() {
        let mut p = Vec::new();
        encode_set(&mut p, b"k", &vec![b'x'; 1000], None);
        let mut data = file_header(FileKind::Log, None).to_vec();
        while data.len() < 2 * WAL_TORN_TAIL_BYTES_MAX {
            let at = data.len() as u64;
            seal_record(&mut data, &p, &file(), at, None);
        }
        data[HEADER_BYTES + 100] ^= 0x10;
        let s = scan_file(&data, &file(), None).unwrap();
        assert_eq!(s.tail, Tail::Corrupt { offset: HEADER_BYTES as u64, reason: "checksum mismatch".into() });
        assert!(s.records.is_empty());
    }
}
