//! Framing (profile §1): `magic | version | type | length | payload | crc32`.
//!
//! `decode_frame` checks before it parses: a bad magic byte is caught on the first byte that
//! differs, and an over-long length on the header alone, so that the caller never buffers the
//! payload of a frame it is going to refuse.

use crate::limits::{FRAME_HEADER_BYTES, FRAME_OVERHEAD_BYTES, FRAME_TRAILER_BYTES};
use crate::protocol::{MAGIC, VERSION};
use std::fmt;

/// One complete frame, borrowed from the caller's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    pub kind: u8,
    pub payload: &'a [u8],
    /// Bytes of the buffer this frame occupied; the caller advances by this much.
    pub consumed: usize,
}

/// What the decoder made of the buffer so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// Not a whole frame yet: at least `needed` more bytes are required.
    Incomplete {
        needed: usize,
    },
    Frame(Frame<'a>),
}

/// A §1 rule that the bytes broke. Each of these closes the connection after an ERROR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    BadMagic,
    BadVersion { got: u8 },
    TooLong { length: u32, max: u32 },
    BadChecksum { expected: u32, actual: u32 },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::BadMagic => write!(f, "bad magic (expected \"VELO\")"),
            FrameError::BadVersion { got } => {
                write!(f, "unsupported protocol version {got} (expected {VERSION})")
            }
            FrameError::TooLong { length, max } => {
                write!(f, "payload length {length} exceeds the limit of {max} bytes")
            }
            FrameError::BadChecksum { expected, actual } => {
                write!(f, "checksum mismatch (frame says {expected:08x}, bytes give {actual:08x})")
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// Decode the frame at the start of `buf`, accepting payloads of at most `payload_max` bytes.
pub fn decode_frame(buf: &[u8], payload_max: u32) -> Result<Decoded<'_>, FrameError> {
    let f = match peek_frame(buf, payload_max)? {
        Decoded::Frame(f) => f,
        incomplete => return Ok(incomplete),
    };
    let body_end = f.consumed - FRAME_TRAILER_BYTES;
    let expected = u32::from_le_bytes(buf[body_end..f.consumed].try_into().unwrap());
    let actual = crc32fast::hash(&buf[..body_end]);
    if expected != actual {
        return Err(FrameError::BadChecksum { expected, actual });
    }
    Ok(Decoded::Frame(f))
}

/// `decode_frame` without the checksum: for looking ahead at frames that `decode_frame` will
/// check when they are handled (the CRC is a few percent of server time; once is enough).
pub fn peek_frame(buf: &[u8], payload_max: u32) -> Result<Decoded<'_>, FrameError> {
    let magic_seen = buf.len().min(MAGIC.len());
    if buf[..magic_seen] != MAGIC[..magic_seen] {
        return Err(FrameError::BadMagic);
    }
    if buf.len() > 4 && buf[4] != VERSION {
        return Err(FrameError::BadVersion { got: buf[4] });
    }
    if buf.len() < FRAME_HEADER_BYTES {
        return Ok(Decoded::Incomplete { needed: FRAME_HEADER_BYTES - buf.len() });
    }
    let length = u32::from_le_bytes(buf[6..10].try_into().unwrap());
    if length > payload_max {
        return Err(FrameError::TooLong { length, max: payload_max });
    }
    let total = FRAME_OVERHEAD_BYTES + length as usize;
    if buf.len() < total {
        return Ok(Decoded::Incomplete { needed: total - buf.len() });
    }
    let body_end = total - FRAME_TRAILER_BYTES;
    Ok(Decoded::Frame(Frame { kind: buf[5], payload: &buf[FRAME_HEADER_BYTES..body_end], consumed: total }))
}

/// Start a frame of type `kind` at the end of `out`; append the payload, then call
/// [`end_frame`] with the returned offset. This lets encoders write payloads in place.
#[inline]
pub fn begin_frame(out: &mut Vec<u8>, kind: u8) -> usize {
    let start = out.len();
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(kind);
    out.extend_from_slice(&[0; 4]);
    start
}

/// Patch the length of the frame begun at `start` and append its checksum.
#[inline]
pub fn end_frame(out: &mut Vec<u8>, start: usize) {
    let payload_len = out.len() - start - FRAME_HEADER_BYTES;
    debug_assert!(payload_len <= u32::MAX as usize);
    out[start + 6..start + 10].copy_from_slice(&(payload_len as u32).to_le_bytes());
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// Append a whole frame with the given payload.
pub fn encode_frame(out: &mut Vec<u8>, kind: u8, payload: &[u8]) {
    let start = begin_frame(out, kind);
    out.extend_from_slice(payload);
    end_frame(out, start);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        encode_frame(&mut v, kind, payload);
        v
    }

    #[test]
    fn every_prefix_is_incomplete_and_the_whole_is_a_frame() {
        let f = frame(0x20, b"hi");
        for n in 0..f.len() {
            match decode_frame(&f[..n], 4096).unwrap() {
                Decoded::Incomplete { needed } => assert!(needed >= 1 && needed <= f.len() - n),
                other => panic!("prefix {n}: {other:?}"),
            }
        }
        let Decoded::Frame(fr) = decode_frame(&f, 4096).unwrap() else { panic!() };
        assert_eq!((fr.kind, fr.payload, fr.consumed), (0x20, &b"hi"[..], f.len()));
    }

    #[test]
    fn bad_magic_is_caught_on_the_first_wrong_byte() {
        assert_eq!(decode_frame(b"X", 4096), Err(FrameError::BadMagic));
        assert_eq!(decode_frame(b"VEL0", 4096), Err(FrameError::BadMagic));
        assert_eq!(decode_frame(b"GET / HTTP/1.1\r\n", 4096), Err(FrameError::BadMagic));
    }

    #[test]
    fn bad_version_is_refused() {
        let mut f = frame(0x20, b"");
        f[4] = 2;
        assert_eq!(decode_frame(&f[..5], 4096), Err(FrameError::BadVersion { got: 2 }));
    }

    #[test]
    fn over_long_length_is_refused_from_the_header_alone() {
        let mut header = frame(0x10, b"")[..10].to_vec();
        header[6..10].copy_from_slice(&4097u32.to_le_bytes());
        assert_eq!(decode_frame(&header, 4096), Err(FrameError::TooLong { length: 4097, max: 4096 }));
        header[6..10].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode_frame(&header, 1 << 20), Err(FrameError::TooLong { .. })));
    }

    #[test]
    fn a_flipped_bit_fails_the_checksum() {
        let f = frame(0x10, b"SELECT 1");
        for i in 10..f.len() {
            let mut g = f.clone();
            g[i] ^= 0x01;
            assert!(matches!(decode_frame(&g, 4096), Err(FrameError::BadChecksum { .. })), "{i}");
        }
    }

    #[test]
    fn two_frames_back_to_back() {
        let mut buf = frame(0x20, b"a");
        buf.extend(frame(0x20, b"bc"));
        let Decoded::Frame(a) = decode_frame(&buf, 4096).unwrap() else { panic!() };
        let Decoded::Frame(b) = decode_frame(&buf[a.consumed..], 4096).unwrap() else { panic!() };
        assert_eq!((a.payload, b.payload), (&b"a"[..], &b"bc"[..]));
    }
}
