//! Parking idle plaintext connections. A logged-in connection with nothing to do for
//! CONN_PARK_AFTER_IDLE_MS gives up its task and its glommio socket (about 3 KB together) and
//! is kept as its small session state plus its file descriptor, registered with this core's
//! epoll set. A core task polls that set (without blocking, every CONN_PARK_POLL_MS) and
//! resumes a connection as soon as its socket is readable or closed. Idle connections then cost
//! their session state, not a task: what makes 10,000 idle connections cheap.

use crate::limits::PARKED_EVENTS_PER_POLL;
use crate::protocol::Message;
use std::cell::{Cell, RefCell};
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

/// A parked connection: its state (`T`, the session) and its socket, owned here.
pub struct Parked<T> {
    pub state: T,
    pub fd: RawFd,
    idle_since: Instant,
}

/// The parked connections of one core, registered with its epoll set. Sans task: the core's
/// parking loop (executor) polls it.
pub struct Parker<T> {
    epfd: RawFd,
    slots: RefCell<Vec<Option<Parked<T>>>>,
    free: RefCell<Vec<usize>>,
    count: Cell<usize>,
}

impl<T> Parker<T> {
    pub fn new() -> std::io::Result<Parker<T>> {
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

    /// Keep `state` (of the connection whose socket is `fd`, now owned here) until its socket is
    /// readable. On failure the caller gets both back.
    pub fn park(&self, state: T, fd: RawFd, idle_since: Instant) -> Result<(), (T, RawFd)> {
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
            return Err((state, fd));
        }
        self.slots.borrow_mut()[slot] = Some(Parked { state, fd, idle_since });
        self.count.set(self.count.get() + 1);
        Ok(())
    }

    fn take(&self, slot: usize) -> Option<Parked<T>> {
        let p = self.slots.borrow_mut().get_mut(slot)?.take()?;
        // SAFETY: removing a registered fd from our own epoll set.
        unsafe { libc::epoll_ctl(self.epfd, libc::EPOLL_CTL_DEL, p.fd, std::ptr::null_mut()) };
        self.free.borrow_mut().push(slot);
        self.count.set(self.count.get() - 1);
        Some(p)
    }

    /// Connections whose sockets became readable (or closed) since the last poll.
    pub fn ready(&self) -> Vec<Parked<T>> {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; PARKED_EVENTS_PER_POLL];
        // SAFETY: `events` has room for PARKED_EVENTS_PER_POLL entries; timeout 0 never blocks.
        let n = unsafe { libc::epoll_wait(self.epfd, events.as_mut_ptr(), events.len() as i32, 0) };
        (0..n.max(0) as usize).filter_map(|i| self.take(events[i].u64 as usize)).collect()
    }

    /// Parked connections idle for longer than `limit`.
    pub fn expired(&self, limit: Duration) -> Vec<Parked<T>> {
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

    /// Take out the parked connections for which `end` says why they must end.
    pub fn take_ending(
        &self,
        mut end: impl FnMut(&mut T) -> Option<&'static str>,
    ) -> Vec<(Parked<T>, &'static str)> {
        let n = self.slots.borrow().len();
        let mut ending = Vec::new();
        for i in 0..n {
            let why = self.slots.borrow_mut()[i].as_mut().and_then(|p| end(&mut p.state));
            if let Some(p) = why.and_then(|why| self.take(i).map(|p| (p, why))) {
                ending.push(p);
            }
        }
        ending
    }

    pub fn all(&self) -> Vec<Parked<T>> {
        let n = self.slots.borrow().len();
        (0..n).filter_map(|i| self.take(i)).collect()
    }
}

impl<T> Drop for Parker<T> {
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
pub fn disconnect<T>(p: Parked<T>, code: u16, reason: &str) {
    let frame = Message::Disconnect { code, reason: reason.into() }.to_frame();
    // SAFETY: `p.fd` is an open socket we own; the buffer is valid for its length.
    unsafe {
        libc::send(p.fd, frame.as_ptr().cast(), frame.len(), libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL);
        libc::close(p.fd);
    }
}
