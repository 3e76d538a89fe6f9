//! A Raft message between nodes, framed with the range it is for:
//!
//! ```text
//! length: u32 LE (of what follows) | range: u32 LE | raft-rs's Message, protobuf-encoded
//! ```
//!
//! Check, then parse: a buffer that holds less than a whole frame is `None`, not an error,
//! and a length over `RAFT_MESSAGE_BYTES_MAX` is refused before anything is allocated for it.
//! Bytes that do not parse are an error the connection is closed on, never a panic.

use super::RangeId;
use crate::limits::RAFT_MESSAGE_BYTES_MAX;
use protobuf::Message as _;
use raft::eraftpb::Message;

#[derive(Clone, Debug, PartialEq)]
pub struct Envelope {
    pub range: RangeId,
    pub msg: Message,
}

#[derive(Debug, PartialEq, Eq)]
pub enum WireError {
    TooLong {
        length: usize,
    },
    TooShort {
        length: usize,
    },
    /// The protobuf did not parse: the peer is not speaking this protocol, or the bytes were
    /// damaged on the way.
    Malformed(String),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::TooLong { length } => {
                write!(f, "a Raft frame of {length} bytes (at most {RAFT_MESSAGE_BYTES_MAX})")
            }
            WireError::TooShort { length } => write!(f, "a Raft frame of {length} bytes"),
            WireError::Malformed(why) => write!(f, "a Raft message that does not parse: {why}"),
        }
    }
}

pub fn encode(envelope: &Envelope, out: &mut Vec<u8>) {
    let body = envelope.msg.compute_size() as usize;
    out.reserve(8 + body);
    out.extend_from_slice(&((4 + body) as u32).to_le_bytes());
    out.extend_from_slice(&envelope.range.to_le_bytes());
    // Writing a message into a Vec cannot fail: the only errors are the writer's.
    envelope.msg.write_to_vec(out).expect("protobuf into a Vec");
}

/// Range numbers that mark frames other than Raft messages: no range has them
/// (CLUSTER_RANGES_MAX is far below). A control frame is `cluster status` asking a core, and
/// its answer; a forward is a write sent to its range's leader, an outcome the leader's answer.
pub const CONTROL_RANGE: RangeId = u32::MAX;
pub const FORWARD_RANGE: RangeId = u32::MAX - 1;
pub const OUTCOME_RANGE: RangeId = u32::MAX - 2;
pub const SNAPSHOT_ROWS_RANGE: RangeId = u32::MAX - 3;
pub const REQUEST_RANGE: RangeId = u32::MAX - 4;
pub const PROBE_RANGE: RangeId = u32::MAX - 5;
pub const GONE_RANGE: RangeId = u32::MAX - 6;

/// What a node-to-node frame holds.
#[derive(Clone, Debug, PartialEq)]
pub enum Frame {
    Raft(Envelope),
    /// Opaque bytes for the control protocol (UTF-8 JSON, docs/cluster.md).
    Control(Vec<u8>),
    /// A forwarded write: `id: u64 LE | range: u32 LE | entry` (`cluster::command`), answered
    /// by an outcome frame on the same connection.
    Forward(Vec<u8>),
    /// A forwarded write's or request's outcome (`command::encode_outcome`).
    Outcome(Vec<u8>),
    /// A piece of the rows of the snapshot message that follows on the same connection:
    /// `range: u32 LE | total: u64 LE | offset: u64 LE | bytes` ([`encode_snapshot_rows`]).
    SnapshotRows(Vec<u8>),
    /// An op a node without a replica of its ranges has a node with one run (a read or a range
    /// DELETE): `id: u64 LE | ranges: u32 LE count, then each u32 LE | request`
    /// (`command::encode_request`), answered by an outcome frame on the same connection.
    Request(Vec<u8>),
    /// A node that holds a replica of a range the membership placed elsewhere asks one of the
    /// range's nodes whether its replica was removed: `range: u32 LE`.
    Probe(Vec<u8>),
    /// The answer when it was (the range's applied membership names it no more): `range`.
    Gone(Vec<u8>),
}

/// The frames that carry `rows` of a snapshot of `range` ahead of its message, a piece of at
/// most `piece_bytes` each: a snapshot as large as a range's rows is never one frame.
pub fn encode_snapshot_rows(range: RangeId, rows: &[u8], piece_bytes: usize) -> Vec<Vec<u8>> {
    let total = rows.len() as u64;
    rows.chunks(piece_bytes.max(1))
        .enumerate()
        .map(|(i, piece)| {
            let mut body = Vec::with_capacity(20 + piece.len());
            body.extend_from_slice(&range.to_le_bytes());
            body.extend_from_slice(&total.to_le_bytes());
            body.extend_from_slice(&((i * piece_bytes.max(1)) as u64).to_le_bytes());
            body.extend_from_slice(piece);
            let mut frame = Vec::with_capacity(8 + body.len());
            encode_special(SNAPSHOT_ROWS_RANGE, &body, &mut frame);
            frame
        })
        .collect()
}

/// A connection's snapshot under way: the pieces gathered, in order, until the message they
/// belong to arrives and takes them ([`Assembly::take`]).
#[derive(Debug, Default)]
pub struct Assembly {
    range: RangeId,
    total: u64,
    rows: Vec<u8>,
}

impl Assembly {
    /// Add a piece. Refused (the connection is damaged or hostile): a piece out of order, or a
    /// total over `bytes_max`. A piece at offset 0 starts a new snapshot.
    pub fn add(&mut self, body: &[u8], bytes_max: u64) -> Result<(), String> {
        let Some((head, bytes)) = body.split_first_chunk::<20>() else {
            return Err("a snapshot piece cut short".into());
        };
        let range = RangeId::from_le_bytes(head[..4].try_into().expect("4 bytes"));
        let total = u64::from_le_bytes(head[4..12].try_into().expect("8 bytes"));
        let offset = u64::from_le_bytes(head[12..].try_into().expect("8 bytes"));
        if total > bytes_max {
            return Err(format!("a snapshot of {total} bytes (at most {bytes_max})"));
        }
        if offset == 0 {
            *self = Assembly { range, total, rows: Vec::new() };
        }
        let end = offset.checked_add(bytes.len() as u64);
        if range != self.range || total != self.total || offset != self.rows.len() as u64 || end > Some(total)
        {
            return Err(format!("a snapshot piece of range {range} at {offset} out of order"));
        }
        self.rows.extend_from_slice(bytes);
        Ok(())
    }

    /// The whole rows of `range`'s snapshot, if they all came; the assembly starts empty again.
    pub fn take(&mut self, range: RangeId) -> Option<Vec<u8>> {
        let done = self.range == range && self.total > 0 && self.rows.len() as u64 == self.total;
        let a = std::mem::take(self);
        done.then_some(a.rows)
    }
}

/// Frame `body` as the non-Raft frame `kind` (one of the reserved range numbers).
pub fn encode_special(kind: RangeId, body: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&((4 + body.len()) as u32).to_le_bytes());
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(body);
}

pub fn encode_control(body: &[u8], out: &mut Vec<u8>) {
    encode_special(CONTROL_RANGE, body, out)
}

/// The first frame in `buf` and the bytes it took, or `None` while the frame is incomplete.
pub fn decode_frame(buf: &[u8]) -> Result<Option<(Frame, usize)>, WireError> {
    let Some(head) = buf.get(..4) else { return Ok(None) };
    let length = u32::from_le_bytes(head.try_into().expect("4 bytes")) as usize;
    if length > RAFT_MESSAGE_BYTES_MAX {
        return Err(WireError::TooLong { length });
    }
    if length < 4 {
        return Err(WireError::TooShort { length });
    }
    let Some(frame) = buf.get(4..4 + length) else { return Ok(None) };
    let range = RangeId::from_le_bytes(frame[..4].try_into().expect("4 bytes"));
    let body = &frame[4..];
    match range {
        CONTROL_RANGE => return Ok(Some((Frame::Control(body.to_vec()), 4 + length))),
        FORWARD_RANGE => return Ok(Some((Frame::Forward(body.to_vec()), 4 + length))),
        OUTCOME_RANGE => return Ok(Some((Frame::Outcome(body.to_vec()), 4 + length))),
        SNAPSHOT_ROWS_RANGE => return Ok(Some((Frame::SnapshotRows(body.to_vec()), 4 + length))),
        REQUEST_RANGE => return Ok(Some((Frame::Request(body.to_vec()), 4 + length))),
        PROBE_RANGE => return Ok(Some((Frame::Probe(body.to_vec()), 4 + length))),
        GONE_RANGE => return Ok(Some((Frame::Gone(body.to_vec()), 4 + length))),
        _ => {}
    }
    let msg = Message::parse_from_bytes(&frame[4..]).map_err(|e| WireError::Malformed(e.to_string()))?;
    Ok(Some((Frame::Raft(Envelope { range, msg }), 4 + length)))
}

/// The first Raft message in `buf` and the bytes it took, or `None` while the frame is
/// incomplete; a control frame here is an error.
pub fn decode(buf: &[u8]) -> Result<Option<(Envelope, usize)>, WireError> {
    match decode_frame(buf)? {
        None => Ok(None),
        Some((Frame::Raft(e), n)) => Ok(Some((e, n))),
        Some(_) => Err(WireError::Malformed("a control frame, not a Raft message".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::eraftpb::{Entry, MessageType};

    fn append() -> Envelope {
        let mut msg = Message::default();
        msg.set_msg_type(MessageType::MsgAppend);
        msg.to = 2;
        msg.from = 1;
        msg.term = 7;
        msg.index = 41;
        msg.log_term = 6;
        msg.commit = 40;
        msg.mut_entries().push(Entry {
            index: 42,
            term: 7,
            data: b"SET k v".to_vec().into(),
            context: 9u64.to_le_bytes().to_vec().into(),
            ..Default::default()
        });
        Envelope { range: 13, msg }
    }

    #[test]
    fn a_message_survives_the_trip_and_a_partial_frame_is_incomplete() {
        let mut buf = Vec::new();
        encode(&append(), &mut buf);
        encode(&Envelope { range: 0, msg: Message::default() }, &mut buf);
        let Ok(Some((first, used))) = decode(&buf) else { panic!("a whole frame") };
        assert_eq!(first, append());
        assert_eq!(decode(&buf[used..]).unwrap(), Some((Envelope { range: 0, msg: Message::default() }, 8)));
        for cut in 0..used {
            assert_eq!(decode(&buf[..cut]).unwrap(), None, "cut at {cut}");
        }
    }

    #[test]
    fn a_control_frame_is_told_apart_from_a_raft_message() {
        let mut buf = Vec::new();
        encode_control(b"status", &mut buf);
        encode(&append(), &mut buf);
        let Ok(Some((Frame::Control(body), used))) = decode_frame(&buf) else { panic!("a control frame") };
        assert_eq!(body, b"status");
        assert!(decode(&buf).is_err());
        assert_eq!(decode_frame(&buf[used..]).unwrap().map(|(f, _)| f), Some(Frame::Raft(append())));
    }

    #[test]
    fn a_snapshot_travels_in_pieces_and_a_piece_out_of_order_is_refused() {
        let rows: Vec<u8> = (0..=255u8).cycle().take(2500).collect();
        let frames = encode_snapshot_rows(7, &rows, 1000);
        assert_eq!(frames.len(), 3);
        let bodies: Vec<Vec<u8>> = frames
            .iter()
            .map(|f| match decode_frame(f).unwrap() {
                Some((Frame::SnapshotRows(b), n)) if n == f.len() => b,
                other => panic!("{other:?}"),
            })
            .collect();
        let mut a = Assembly::default();
        a.add(&bodies[0], 1 << 20).unwrap();
        a.add(&bodies[1], 1 << 20).unwrap();
        // Not all there: the message finds none, and the next starts over.
        assert_eq!(a.take(7), None);
        for b in &bodies {
            a.add(b, 1 << 20).unwrap();
        }
        assert_eq!(a.take(6), None, "another range's message takes nothing");
        for b in &bodies {
            a.add(b, 1 << 20).unwrap();
        }
        assert_eq!(a.take(7), Some(rows));
        // Out of order, or larger than allowed, or cut short: refused.
        let mut a = Assembly::default();
        assert!(a.add(&bodies[1], 1 << 20).is_err());
        assert!(a.add(&bodies[0], 2000).unwrap_err().contains("at most 2000"));
        assert!(a.add(&bodies[0][..10], 1 << 20).is_err());
        a.add(&bodies[0], 1 << 20).unwrap();
        assert!(a.add(&bodies[2], 1 << 20).is_err());
    }

    #[test]
    fn a_length_over_the_bound_is_refused_before_the_bytes_arrive() {
        let buf = ((RAFT_MESSAGE_BYTES_MAX + 1) as u32).to_le_bytes();
        assert_eq!(decode(&buf), Err(WireError::TooLong { length: RAFT_MESSAGE_BYTES_MAX + 1 }));
        assert_eq!(decode(&2u32.to_le_bytes()), Err(WireError::TooShort { length: 2 }));
    }

    #[test]
    fn damaged_and_random_bytes_are_errors_or_messages_never_panics() {
        let mut whole = Vec::new();
        encode(&append(), &mut whole);
        // Every single-byte change of a real frame, and seeded garbage bodies.
        for at in 0..whole.len() {
            for bits in [0x01u8, 0x80, 0xff] {
                let mut damaged = whole.clone();
                damaged[at] ^= bits;
                let _ = decode(&damaged);
            }
        }
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..400usize {
            let mut buf = ((len + 4) as u32).to_le_bytes().to_vec();
            buf.extend_from_slice(&[0; 4]);
            for _ in 0..len {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                buf.push(state as u8);
            }
            match decode(&buf) {
                Ok(Some((_, used))) => assert_eq!(used, buf.len()),
                Ok(None) => panic!("a whole frame is never incomplete"),
                Err(WireError::Malformed(_)) => {}
                Err(e) => panic!("{e}"),
            }
        }
    }
}
