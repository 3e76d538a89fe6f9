//! A byte stream over a glommio socket, in the clear or through rustls (TLS 1.3). The TLS state
//! machine is sans-I/O (rustls); this type moves its records to and from the socket. Used by
//! the server's connections and by velocity-bench's.

use super::runtime::TcpStream;
use crate::limits::{TLS_READ_BYTES, TLS_WRITE_CHUNK_BYTES};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use std::io::{self, Read, Write};

pub enum Transport {
    Plain(TcpStream),
    /// `pending` holds ciphertext read from the socket that rustls has not taken yet: it takes
    /// more only while its buffer of received plaintext has room, so plaintext must be drained
    /// between feeds.
    Tls {
        tcp: TcpStream,
        tls: Box<rustls::Connection>,
        pending: Vec<u8>,
    },
}

impl Transport {
    pub fn tcp(&self) -> &TcpStream {
        let (Transport::Plain(t) | Transport::Tls { tcp: t, .. }) = self;
        t
    }

    /// Send whatever TLS records rustls has queued (handshake messages, alerts, data).
    async fn flush_tls(tcp: &mut TcpStream, tls: &mut rustls::Connection) -> io::Result<()> {
        while tls.wants_write() {
            let mut out = Vec::new();
            tls.write_tls(&mut out)?;
            tcp.write_all(&out).await?;
        }
        Ok(())
    }

    /// Wait for the peer's next bytes while holding only `first` (small, in the caller's
    /// state) rather than a full read buffer: an idle connection then costs little more than its
    /// state. Plain: up to `first.len()` bytes land in `first` and their count is returned.
    /// TLS: the ciphertext goes to rustls's side and `Some(0)` is returned. `None`: closed.
    pub async fn first_bytes(&mut self, first: &mut [u8]) -> io::Result<Option<usize>> {
        match self {
            Transport::Plain(t) => match t.read(first).await? {
                0 => Ok(None),
                n => Ok(Some(n)),
            },
            Transport::Tls { tcp, tls, pending } => {
                // rustls may already hold plaintext (more than the last read took) or ciphertext.
                let buffered = match tls.process_new_packets() {
                    Ok(st) => st.plaintext_bytes_to_read() > 0 || st.peer_has_closed(),
                    Err(_) => true, // let the read report it
                };
                if buffered || !pending.is_empty() || tls.wants_write() {
                    return Ok(Some(0));
                }
                match tcp.read(first).await? {
                    0 => Ok(None),
                    n => {
                        pending.extend_from_slice(&first[..n]);
                        Ok(Some(0))
                    }
                }
            }
        }
    }

    /// Plain only: append up to `max_bytes` of whatever the socket already holds, without
    /// waiting; returns how many (0: nothing yet, or TLS).
    pub fn read_ready(&mut self, buf: &mut Vec<u8>, max_bytes: usize) -> usize {
        let Transport::Plain(t) = self else { return 0 };
        use std::os::unix::io::AsRawFd;
        // Into spare capacity: zeroing a 16 KiB chunk per batch first was 1% of server time.
        buf.reserve(max_bytes);
        let spare = buf.spare_capacity_mut();
        let want = spare.len().min(max_bytes);
        // SAFETY: a non-blocking recv into writable (if uninitialised) memory we own; the kernel
        // initialises the n bytes it reports, and only those become part of the Vec.
        let n = unsafe { libc::recv(t.as_raw_fd(), spare.as_mut_ptr().cast(), want, libc::MSG_DONTWAIT) };
        if n <= 0 {
            return 0;
        }
        // SAFETY: the kernel wrote these n bytes, right after the initialised ones.
        unsafe { buf.set_len(buf.len() + n as usize) };
        n as usize
    }

    /// Read plaintext into `buf`; 0 means the peer closed.
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(t) => t.read(buf).await,
            Transport::Tls { tcp, tls, pending } => loop {
                match tls.reader().read(buf) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                Self::flush_tls(tcp, tls).await?;
                if pending.is_empty() && !Self::fill(tcp, pending).await? {
                    return Ok(0);
                }
                Self::feed(tcp, tls, pending).await?;
            },
        }
    }

    /// Read ciphertext from the socket into `pending`; false at end of stream.
    async fn fill(tcp: &mut TcpStream, pending: &mut Vec<u8>) -> io::Result<bool> {
        pending.resize(TLS_READ_BYTES, 0);
        let n = tcp.read(pending).await?;
        pending.truncate(n);
        if n == 0 {
            *pending = Vec::new();
        }
        Ok(n > 0)
    }

    /// Give rustls what it will take of `pending`, and let it process the records.
    async fn feed(
        tcp: &mut TcpStream,
        tls: &mut rustls::Connection,
        pending: &mut Vec<u8>,
    ) -> io::Result<()> {
        let mut rd = &pending[..];
        let taken = tls.read_tls(&mut rd)?;
        pending.drain(..taken);
        if pending.is_empty() {
            // An idle connection holds no ciphertext buffer.
            *pending = Vec::new();
        }
        if let Err(e) = tls.process_new_packets() {
            // Tell the peer why (an alert) before giving up.
            let _ = Self::flush_tls(tcp, tls).await;
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
        Ok(())
    }

    pub async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Transport::Plain(t) => t.write_all(data).await,
            Transport::Tls { tcp, tls, .. } => {
                // rustls takes plaintext only while its buffer of records to send has room (a
                // key update of its own takes some): give it what it takes, send, go on.
                let mut rest = data;
                while !rest.is_empty() {
                    let taken = tls.writer().write(&rest[..rest.len().min(TLS_WRITE_CHUNK_BYTES)])?;
                    if taken == 0 && !tls.wants_write() {
                        return Err(io::ErrorKind::WriteZero.into());
                    }
                    rest = &rest[taken..];
                    Self::flush_tls(tcp, tls).await?;
                }
                Ok(())
            }
        }
    }

    /// Drive the TLS handshake to completion (for a client before its first request; for a
    /// server that must speak before reading anything).
    pub async fn handshake(&mut self) -> io::Result<()> {
        if let Transport::Tls { tcp, tls, pending } = self {
            loop {
                Self::flush_tls(tcp, tls).await?;
                if !tls.is_handshaking() {
                    return Ok(());
                }
                if pending.is_empty() && !Self::fill(tcp, pending).await? {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                Self::feed(tcp, tls, pending).await?;
            }
        }
        Ok(())
    }

    pub async fn close(mut self) {
        if let Transport::Tls { tcp, tls, .. } = &mut self {
            tls.send_close_notify();
            let _ = Self::flush_tls(tcp, tls).await;
        }
        let (Transport::Plain(mut t) | Transport::Tls { tcp: mut t, .. }) = self;
        let _ = t.close().await;
    }
}
