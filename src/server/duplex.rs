//! A TLS connection that one core reads and writes at once, from two futures: a node-to-node
//! connection carries requests one way and their answers back, so neither side may stop
//! reading while it writes (two peers each blocked writing to the other, neither reading,
//! would wait for ever once both sockets' buffers filled).
//!
//! The TLS state (rustls, sans-I/O) is only touched between awaits; the socket is borrowed for
//! the length of one poll. The socket's reads and writes wait on separate readiness sources, so
//! a read waiting for bytes never holds back a write, and dropping either future loses nothing
//! that was read (readiness, not a read in flight, is what it waited on).

use super::runtime::TcpStream;
use super::transport::Transport;
use crate::limits::{TLS_READ_BYTES, TLS_WRITE_CHUNK_BYTES};
use futures_lite::{AsyncRead, AsyncWrite};
use std::cell::RefCell;
use std::future::poll_fn;
use std::io::{self, Read, Write};
use std::pin::Pin;

pub struct Duplex {
    tcp: RefCell<TcpStream>,
    tls: RefCell<Box<rustls::Connection>>,
    /// Ciphertext read from the socket that rustls has not taken yet.
    pending: RefCell<Vec<u8>>,
    /// What each socket read lands in first (one buffer for the connection's life).
    scratch: RefCell<Vec<u8>>,
}

impl Duplex {
    /// A TLS transport whose handshake is done; None for a plain one (peers always use TLS).
    pub fn new(t: Transport) -> Option<Duplex> {
        match t {
            Transport::Plain(_) => None,
            Transport::Tls { tcp, tls, pending } => Some(Duplex {
                tcp: RefCell::new(tcp),
                tls: RefCell::new(tls),
                pending: RefCell::new(pending),
                scratch: RefCell::new(vec![0; TLS_READ_BYTES]),
            }),
        }
    }

    /// Read plaintext into `buf`; 0 means the peer closed. Only one reader at a time.
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.tls.borrow_mut().reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if self.pending.borrow().is_empty() {
                let n = poll_fn(|cx| {
                    Pin::new(&mut *self.tcp.borrow_mut()).poll_read(cx, &mut self.scratch.borrow_mut())
                })
                .await?;
                if n == 0 {
                    return Ok(0);
                }
                self.pending.borrow_mut().extend_from_slice(&self.scratch.borrow()[..n]);
            }
            let mut tls = self.tls.borrow_mut();
            let mut pending = self.pending.borrow_mut();
            let mut rd = &pending[..];
            let taken = tls.read_tls(&mut rd)?;
            pending.drain(..taken);
            // What rustls answers to the records (a key update, an alert) goes with the
            // writer's next write: only the writer writes to the socket.
            tls.process_new_packets().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        }
    }

    /// Encrypt and send `data` (and whatever records rustls has queued). Only one writer at a
    /// time; an empty `data` just sends what is queued. rustls takes plaintext only while its
    /// buffer of records to send has room (records the reader queued, a key update of its own
    /// take some): each turn gives it what it takes and sends the records made.
    pub async fn write_all(&self, data: &[u8]) -> io::Result<()> {
        let mut rest = data;
        loop {
            let (taken, records) = {
                let mut tls = self.tls.borrow_mut();
                let taken = match rest.is_empty() {
                    true => 0,
                    false => tls.writer().write(&rest[..rest.len().min(TLS_WRITE_CHUNK_BYTES)])?,
                };
                let mut out = Vec::new();
                while tls.wants_write() {
                    tls.write_tls(&mut out)?;
                }
                (taken, out)
            };
            rest = &rest[taken..];
            if taken == 0 && records.is_empty() && !rest.is_empty() {
                // Nothing taken with nothing queued to make room: rustls will take no more.
                return Err(io::ErrorKind::WriteZero.into());
            }
            let mut sent = 0;
            while sent < records.len() {
                let n = poll_fn(|cx| Pin::new(&mut *self.tcp.borrow_mut()).poll_write(cx, &records[sent..]))
                    .await?;
                if n == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                sent += n;
            }
            if rest.is_empty() {
                return Ok(());
            }
        }
    }

    /// Say goodbye (TLS close_notify) and shut the socket down.
    pub async fn close(self) {
        self.tls.borrow_mut().send_close_notify();
        let _ = self.write_all(&[]).await;
        let _ = poll_fn(|cx| Pin::new(&mut *self.tcp.borrow_mut()).poll_close(cx)).await;
    }
}
