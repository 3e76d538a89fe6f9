//! Primitive encodings of profile §1: little-endian integers, `str8`, `str16`, `bytes32`.
//! The reader never allocates more than the bytes it has actually been given.

pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

/// Why a payload did not decode; the message names the field for the logs.
pub(crate) type ReadResult<T> = Result<T, &'static str>;

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn take(&mut self, n: usize, what: &'static str) -> ReadResult<&'a [u8]> {
        if self.remaining() < n {
            return Err(what);
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub fn u8(&mut self, what: &'static str) -> ReadResult<u8> {
        Ok(self.take(1, what)?[0])
    }

    pub fn u16(&mut self, what: &'static str) -> ReadResult<u16> {
        Ok(u16::from_le_bytes(self.take(2, what)?.try_into().unwrap()))
    }

    pub fn u32(&mut self, what: &'static str) -> ReadResult<u32> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().unwrap()))
    }

    pub fn u64(&mut self, what: &'static str) -> ReadResult<u64> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().unwrap()))
    }

    pub fn i64(&mut self, what: &'static str) -> ReadResult<i64> {
        Ok(i64::from_le_bytes(self.take(8, what)?.try_into().unwrap()))
    }

    pub fn bytes8(&mut self, what: &'static str) -> ReadResult<&'a [u8]> {
        let n = self.u8(what)? as usize;
        self.take(n, what)
    }

    pub fn str8(&mut self, what: &'static str) -> ReadResult<&'a str> {
        std::str::from_utf8(self.bytes8(what)?).map_err(|_| what)
    }

    pub fn str16(&mut self, what: &'static str) -> ReadResult<&'a str> {
        let n = self.u16(what)? as usize;
        std::str::from_utf8(self.take(n, what)?).map_err(|_| what)
    }

    pub fn bytes32(&mut self, what: &'static str) -> ReadResult<&'a [u8]> {
        let n = self.u32(what)? as usize;
        self.take(n, what)
    }

    pub fn finish(&self, what: &'static str) -> ReadResult<()> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(what)
        }
    }
}

/// The longest prefix of `s` that is at most `max` bytes and ends on a character boundary,
/// so that an over-long message is shortened rather than producing an invalid frame.
pub(crate) fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

pub(crate) fn put_bytes8(out: &mut Vec<u8>, b: &[u8]) {
    let b = &b[..b.len().min(u8::MAX as usize)];
    out.push(b.len() as u8);
    out.extend_from_slice(b);
}

pub(crate) fn put_str8(out: &mut Vec<u8>, s: &str) {
    put_bytes8(out, truncate_utf8(s, u8::MAX as usize).as_bytes());
}

pub(crate) fn put_str16(out: &mut Vec<u8>, s: &str) {
    let s = truncate_utf8(s, u16::MAX as usize);
    out.extend_from_slice(&(s.len() as u16).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}
