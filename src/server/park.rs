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

#[cfg(test)]
mod tests {
    use super::*;

    /// A connected pair of sockets: (the parked end, the peer's end).
    fn pair() -> (RawFd, RawFd) {
        let mut fds = [0; 2];
        // SAFETY: socketpair fills the two-element array it is given.
        assert_eq!(unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, fds.as_mut_ptr()) }, 0);
        (fds[0], fds[1])
    }

    fn send(fd: RawFd, b: &[u8]) {
        // SAFETY: a write of a valid buffer to a socket we own.
        assert_eq!(unsafe { libc::write(fd, b.as_ptr().cast(), b.len()) }, b.len() as isize);
    }

    fn close(fd: RawFd) {
        // SAFETY: closing a descriptor we own.
        unsafe { libc::close(fd) };
    }

    #[test]
    fn parked_connections_come_back_when_readable_or_closed_and_only_then() {
        let p: Parker<&str> = Parker::new().unwrap();
        let (a, peer_a) = pair();
        let (b, peer_b) = pair();
        let (c, peer_c) = pair();
        for (name, fd) in [("a", a), ("b", b), ("c", c)] {
            assert!(p.park(name, fd, Instant::now()).is_ok());
        }
        assert_eq!(p.len(), 3);
        assert!(p.ready().is_empty(), "nothing to read yet");
        send(peer_b, b"x");
        close(peer_c);
        let mut back: Vec<&str> = p.ready().iter().map(|r| r.state).collect();
        back.sort();
        assert_eq!(back, ["b", "c"], "the readable one and the closed one");
        assert_eq!(p.len(), 1);
        // Taken out, they are the caller's again: more bytes for one are not reported twice.
        send(peer_b, b"y");
        assert!(p.ready().is_empty());
        close(b);
        close(c);
        let left = p.all();
        assert_eq!(left.iter().map(|l| l.state).collect::<Vec<_>>(), ["a"]);
        assert!(p.is_empty());
        for fd in [a, peer_a, peer_b] {
            close(fd);
        }
    }

    #[test]
    fn expiry_and_revocation_take_out_only_those_due() {
        let p: Parker<u32> = Parker::new().unwrap();
        let long_ago = Instant::now() - Duration::from_secs(60);
        let (old, peer_old) = pair();
        let (new, peer_new) = pair();
        let (revoked, peer_revoked) = pair();
        assert!(p.park(1, old, long_ago).is_ok());
        assert!(p.park(2, new, Instant::now()).is_ok());
        assert!(p.park(3, revoked, Instant::now()).is_ok());
        let due = p.expired(Duration::from_secs(30));
        assert_eq!(due.iter().map(|d| d.state).collect::<Vec<_>>(), [1]);
        let ending = p.take_ending(|s| (*s == 3).then_some("user removed"));
        assert_eq!(ending.iter().map(|(e, why)| (e.state, *why)).collect::<Vec<_>>(), [(3, "user removed")]);
        // The peer of a disconnected one reads the goodbye, then the end of the stream.
        let (gone, _) = ending.into_iter().next().unwrap();
        disconnect(gone, 8, "user removed");
        let mut buf = [0u8; 256];
        // SAFETY: a read into a buffer we own.
        let n = unsafe { libc::read(peer_revoked, buf.as_mut_ptr().cast(), buf.len()) };
        let frame = &buf[..n as usize];
        let Ok(crate::protocol::Decoded::Frame(f)) = crate::protocol::decode_frame(frame, 1 << 20) else {
            panic!("not a frame: {frame:?}")
        };
        assert_eq!(f.kind, crate::protocol::MessageType::Disconnect as u8);
        // SAFETY: as above.
        assert_eq!(unsafe { libc::read(peer_revoked, buf.as_mut_ptr().cast(), buf.len()) }, 0);
        assert_eq!(p.len(), 1, "the fresh one stays");
        drop(due);
        for fd in [old, peer_old, peer_new, peer_revoked] {
            close(fd);
        }
        // Dropping the parker closes what it still holds (`new`).
    }
}
