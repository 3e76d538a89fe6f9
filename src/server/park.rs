//! Parking idle plaintext connections. A logged-in connection with nothing to do for
//! CONN_PARK_AFTER_IDLE_MS gives up its task and its glommio socket (about 3 KB together) and
//! is kept as its small session state plus its file descriptor, registered with this core's
//! epoll set. A core task polls that set (without blocking, every CONN_PARK_POLL_MS) and
//! resumes a connection as soon as its socket is readable or closed. Idle connections then cost
//! their session state, not a task: what makes 10,000 idle connections cheap.

use super::conn::Conn;
use super::core::Core;
use super::runtime::{race, sleep, TcpStream};
use crate::limits::{CONN_PARK_POLL_MS, PARKED_EVENTS_PER_POLL, PARK_TRIM_EVERY};
use crate::protocol::{ErrorCode, Message};
use std::cell::{Cell, RefCell};
use std::os::fd::{FromRawFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

struct Parked {
    conn: Conn,
    fd: RawFd,
    idle_since: Instant,
}

pub struct Parker {
    epfd: RawFd,
    slots: RefCell<Vec<Option<Parked>>>,
    free: RefCell<Vec<usize>>,
    count: Cell<usize>,
}

impl Parker {
    pub fn new() -> std::io::Result<Parker> {
        // SAFETY: plain syscall.
        let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epfd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Parker {
            epfd,
            slots: RefCell::new(Vec::new()),
            free: RefCell::new(Vec::new()),
            count: Cell::new(0),
        })
    }

    pub fn len(&self) -> usize {
        self.count.get()
    }

    pub fn is_empty(&self) -> bool {
        self.count.get() == 0
    }

    /// Keep `conn` (whose socket is `fd`, now owned here) until its socket is readable. On
    /// failure the caller gets both back.
    pub fn park(&self, conn: Conn, fd: RawFd, idle_since: Instant) -> Result<(), (Conn, RawFd)> {
        let slot = self.free.borrow_mut().pop().unwrap_or_else(|| {
            let mut s = self.slots.borrow_mut();
            s.push(None);
            s.len() - 1
        });
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLONESHOT) as u32,
            u64: slot as u64,
        };
        // SAFETY: `fd` is an open socket we own; `ev` is a valid event.
        if unsafe { libc::epoll_ctl(self.epfd, libc::EPOLL_CTL_ADD, fd, &mut ev) } != 0 {
            self.free.borrow_mut().push(slot);
            return Err((conn, fd));
        }
        self.slots.borrow_mut()[slot] = Some(Parked { conn, fd, idle_since });
        self.count.set(self.count.get() + 1);
        Ok(())
    }

    fn take(&self, slot: usize) -> Option<Parked> {
        let p = self.slots.borrow_mut().get_mut(slot)?.take()?;
        // SAFETY: removing a registered fd from our own epoll set.
        unsafe { libc::epoll_ctl(self.epfd, libc::EPOLL_CTL_DEL, p.fd, std::ptr::null_mut()) };
        self.free.borrow_mut().push(slot);
        self.count.set(self.count.get() - 1);
        Some(p)
    }

    /// Connections whose sockets became readable (or closed) since the last poll.
    fn ready(&self) -> Vec<Parked> {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; PARKED_EVENTS_PER_POLL];
        // SAFETY: `events` has room for PARKED_EVENTS_PER_POLL entries; timeout 0 never blocks.
        let n = unsafe { libc::epoll_wait(self.epfd, events.as_mut_ptr(), events.len() as i32, 0) };
        (0..n.max(0) as usize).filter_map(|i| self.take(events[i].u64 as usize)).collect()
    }

    /// Parked connections idle for longer than `limit`.
    fn expired(&self, limit: Duration) -> Vec<Parked> {
        let due: Vec<usize> = self
            .slots
            .borrow()
            .iter()
            .enumerate()
            .filter(|(_, p)| p.as_ref().is_some_and(|p| p.idle_since.elapsed() >= limit))
            .map(|(i, _)| i)
            .collect();
        due.into_iter().filter_map(|i| self.take(i)).collect()
    }

    /// Say DISCONNECT to parked sessions whose user was removed or whose API key was revoked.
    pub fn end_revoked(&self, core: &Core) {
        let n = self.slots.borrow().len();
        for i in 0..n {
            let why = self.slots.borrow_mut()[i].as_mut().and_then(|p| p.conn.revoked());
            if let Some(why) = why {
                if let Some(p) = self.take(i) {
                    disconnect(core, p, ErrorCode::Unauthorized as u16, why);
                }
            }
        }
    }

    fn all(&self) -> Vec<Parked> {
        let n = self.slots.borrow().len();
        (0..n).filter_map(|i| self.take(i)).collect()
    }
}

impl Drop for Parker {
    fn drop(&mut self) {
        for p in self.slots.get_mut().drain(..).flatten() {
            // SAFETY: closing descriptors we own.
            unsafe { libc::close(p.fd) };
        }
        // SAFETY: as above.
        unsafe { libc::close(self.epfd) };
    }
}

/// Say goodbye on a parked socket (best effort: it is idle, so its send buffer has room) and
/// close it.
fn disconnect(core: &Core, p: Parked, code: u16, reason: &str) {
    let frame = Message::Disconnect { code, reason: reason.into() }.to_frame();
    // SAFETY: `p.fd` is an open socket we own; the buffer is valid for its length.
    unsafe {
        libc::send(p.fd, frame.as_ptr().cast(), frame.len(), libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL);
        libc::close(p.fd);
    }
    super::conn_ended(core);
}

/// The core's parking task: resume readable connections, close those past the idle timeout,
/// say goodbye to all at shutdown.
pub async fn run(core: Rc<Core>) {
    let idle_timeout = match core.shared.config.idle_timeout_s {
        0 => None,
        s => Some(Duration::from_secs(s)),
    };
    let mut last_expiry = Instant::now();
    let mut trimmed_at_count = 0usize;
    loop {
        let _ = race(sleep(Duration::from_millis(CONN_PARK_POLL_MS)), core.shutdown.wait()).await;
        if core.shutdown.is_fired() {
            for p in core.parker.all() {
                disconnect(&core, p, 0, "server shutting down");
            }
            return;
        }
        if core.parker.is_empty() {
            trimmed_at_count = 0;
            continue;
        }
        // The tasks and socket state of newly parked connections were freed, but the allocator
        // keeps freed pages; give them back once a batch has parked.
        if core.parker.len() >= trimmed_at_count + PARK_TRIM_EVERY {
            trimmed_at_count = core.parker.len();
            // SAFETY: glibc's malloc_trim only releases free memory.
            unsafe { libc::malloc_trim(0) };
        }
        for p in core.parker.ready() {
            // SAFETY: the descriptor is an open TCP socket whose ownership we hand over.
            let stream = unsafe { TcpStream::from_raw_fd(p.fd) };
            super::serve_conn(&core, p.conn, super::transport::Transport::Plain(stream));
        }
        if let Some(limit) = idle_timeout {
            if last_expiry.elapsed() >= Duration::from_secs(1) {
                last_expiry = Instant::now();
                for p in core.parker.expired(limit) {
                    disconnect(&core, p, 0, "idle timeout");
                }
            }
        }
    }
}
