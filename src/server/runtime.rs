//! The thin layer over glommio: executors, timers, files, sockets, the channel mesh, a local
//! broadcast signal, and racing two futures. Nothing else in the library names glommio (only
//! velocity-bench's own executors do), so the rest stays portable.

use crate::error::Error;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// glommio's channel mesh: the bounded cross-core queues `mesh` is built on.
pub use glommio::channels::channel_mesh::{Full, MeshBuilder, Receivers, Senders};
pub use glommio::io::BufferedFile as File;
use glommio::io::OpenOptions;
pub use glommio::net::TcpStream;

/// A listening socket bound elsewhere (owner::bind_listeners), accepted from by this executor.
pub struct TcpListener {
    inner: glommio::net::TcpListener,
    fd: std::os::fd::RawFd,
}

pub fn listener(l: std::net::TcpListener) -> TcpListener {
    use std::os::fd::{FromRawFd, IntoRawFd};
    let fd = l.into_raw_fd();
    // SAFETY: the descriptor is a bound, listening TCP socket whose ownership moves here.
    TcpListener { inner: unsafe { glommio::net::TcpListener::from_raw_fd(fd) }, fd }
}

impl TcpListener {
    pub async fn accept(&self) -> glommio::Result<TcpStream, ()> {
        self.inner.accept().await
    }
}

impl Drop for TcpListener {
    /// Stop listening now, not when the socket's last reference goes: a pending io_uring accept
    /// holds the socket past the close of its descriptor, until the kernel has cancelled it —
    /// after the process has exited, when the ring is torn down — and meanwhile the socket takes
    /// connections it then resets. Shutting a listening socket down unhashes it at once (new
    /// connections are refused) and fails the pending accept.
    fn drop(&mut self) {
        // SAFETY: the descriptor is open (the inner listener closes it after this).
        unsafe { libc::shutdown(self.fd, libc::SHUT_RD) };
    }
}

pub fn spawn<F: Future<Output = ()> + 'static>(f: F) {
    glommio::spawn_local(f).detach();
}

/// Let the executor run other tasks before this one continues.
pub async fn yield_now() {
    glommio::executor().yield_task_queue_now().await;
}

/// Run `f` on the executor's blocking thread pool, letting this core go on meanwhile: for
/// CPU-heavy work that cannot be sliced (parsing a very long statement).
pub async fn spawn_blocking<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    glommio::executor().spawn_blocking(f).await
}

/// Wall-clock time in milliseconds since the Unix epoch: what expiry times are measured in.
pub fn now_ms() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Wall-clock time in microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

pub async fn sleep(d: Duration) {
    glommio::timer::sleep(d).await;
}

/// Which of two futures finished first.
pub enum Either<A, B> {
    Left(A),
    Right(B),
}

/// Race `a` against `b`; the loser is dropped.
pub async fn race<A: Future, B: Future>(a: A, b: B) -> Either<A::Output, B::Output> {
    futures_lite::future::or(async { Either::Left(a.await) }, async { Either::Right(b.await) }).await
}

/// A one-shot, core-local broadcast: every waiter wakes once `fire` is called.
#[derive(Default)]
pub struct LocalSignal {
    fired: Cell<bool>,
    waiters: RefCell<Vec<Option<Waker>>>,
    free: RefCell<Vec<usize>>,
}

impl LocalSignal {
    pub fn fire(&self) {
        self.fired.set(true);
        for w in self.waiters.borrow_mut().iter_mut() {
            if let Some(w) = w.take() {
                w.wake();
            }
        }
    }

    pub fn is_fired(&self) -> bool {
        self.fired.get()
    }

    pub fn wait(self: &Rc<Self>) -> SignalWait {
        SignalWait { sig: self.clone(), slot: None }
    }
}

pub struct SignalWait {
    sig: Rc<LocalSignal>,
    slot: Option<usize>,
}

impl Future for SignalWait {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.sig.fired.get() {
            return Poll::Ready(());
        }
        let sig = self.sig.clone();
        let mut waiters = sig.waiters.borrow_mut();
        match self.slot {
            Some(i) => waiters[i] = Some(cx.waker().clone()),
            None => {
                let i = match sig.free.borrow_mut().pop() {
                    Some(i) => {
                        waiters[i] = Some(cx.waker().clone());
                        i
                    }
                    None => {
                        waiters.push(Some(cx.waker().clone()));
                        waiters.len() - 1
                    }
                };
                self.slot = Some(i);
            }
        }
        Poll::Pending
    }
}

impl Drop for SignalWait {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            self.sig.waiters.borrow_mut()[i] = None;
            self.sig.free.borrow_mut().push(i);
        }
    }
}

/// A core-local one-shot slot: one side puts a value, the other awaits it.
pub struct Slot<T> {
    value: RefCell<Option<T>>,
    waker: RefCell<Option<Waker>>,
}

impl<T> Slot<T> {
    pub fn new() -> Rc<Self> {
        Rc::new(Slot { value: RefCell::new(None), waker: RefCell::new(None) })
    }

    pub fn put(&self, v: T) {
        *self.value.borrow_mut() = Some(v);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    pub fn take(self: &Rc<Self>) -> SlotWait<T> {
        SlotWait(self.clone())
    }
}

pub struct SlotWait<T>(Rc<Slot<T>>);

impl<T> Future for SlotWait<T> {
    type Output = T;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        if let Some(v) = self.0.value.borrow_mut().take() {
            return Poll::Ready(v);
        }
        *self.0.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// How executors are placed on CPUs.
pub enum Placement {
    /// One per listed CPU.
    Cpus(Vec<usize>),
    /// Pinned, spread one per CPU across the machine.
    Spread(usize),
    /// Not pinned (inherits the process's affinity, e.g. from taskset).
    Unbound(usize),
}

/// What an executor's future ends with: nothing, or whether its core came up.
pub trait Finished {
    fn into_result(self) -> Result<(), Error>;
}

impl Finished for () {
    fn into_result(self) -> Result<(), Error> {
        Ok(())
    }
}

impl Finished for Result<(), Error> {
    fn into_result(self) -> Result<(), Error> {
        self
    }
}

/// This executor's number in its pool (0, 1, …).
pub fn executor_id() -> usize {
    glommio::executor().id()
}

/// Run `f` on every executor of a pool placed as asked; returns when all have finished, with
/// the first error any of them returned.
pub fn run_pool<G, F>(placement: Placement, preempt: Duration, f: G) -> Result<(), Error>
where
    G: FnOnce() -> F + Clone + Send + 'static,
    F: Future + 'static,
    F::Output: Finished + Send,
{
    use glommio::{CpuSet, LocalExecutorPoolBuilder, PoolPlacement};
    let placement = match placement {
        Placement::Cpus(list) => {
            let online =
                CpuSet::online().map_err(|e| Error::Runtime(format!("cannot read the CPU topology: {e}")))?;
            let sets: Vec<CpuSet> = list.iter().map(|c| online.clone().filter(|l| l.cpu == *c)).collect();
            if let Some(i) = sets.iter().position(|s| s.is_empty()) {
                return Err(Error::Config(format!("CPU {} in --cpu-list is not online", list[i])));
            }
            PoolPlacement::Custom(sets)
        }
        Placement::Spread(n) => PoolPlacement::MaxSpread(n, None),
        Placement::Unbound(n) => PoolPlacement::Unbound(n),
    };
    let handles = LocalExecutorPoolBuilder::new(placement)
        .preempt_timer(preempt)
        .on_all_shards(f)
        .map_err(|e| Error::Runtime(format!("cannot start the executors: {e}")))?;
    let mut first = Ok(());
    for r in handles.join_all() {
        let r =
            r.map_err(|e| Error::Runtime(format!("executor failed: {e}"))).and_then(Finished::into_result);
        if first.is_ok() {
            first = r;
        }
    }
    first
}

// ---- Files (the write-ahead log and snapshots): glommio's io_uring file I/O ----

/// A new, empty file for writing (replacing any earlier one), readable by its owner only: data
/// files hold keys and values.
pub async fn create_file(path: &std::path::Path) -> Result<File, String> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .buffered_open(path)
        .await
        .map_err(|e| format!("cannot create {}: {e}", path.display()))
}

/// An existing file, opened for positional writes.
pub async fn open_file_for_writing(path: &std::path::Path) -> Result<File, String> {
    OpenOptions::new()
        .write(true)
        .buffered_open(path)
        .await
        .map_err(|e| format!("cannot open {}: {e}", path.display()))
}
