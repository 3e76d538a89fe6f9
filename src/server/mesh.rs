//! Cross-core messaging over glommio's channel mesh: bounded lock-free queues, one per
//! (source, destination) pair, that wake the receiving executor without polling. Requests and
//! replies travel on two separate meshes: a core that is blocked sending a request can still
//! drain its replies, so no cycle of full queues can deadlock two cores.

pub use super::config::MeshKind;
use super::runtime::{spawn, Slot};
use super::runtime::{Full, MeshBuilder, Receivers, Senders};
use crate::limits::{CROSSBEAM_IDLE_SLEEP_US, CROSSBEAM_SPIN_ROUNDS, SHARD_QUEUE_BATCHES_MAX};
use crate::shard::{ShardOp, ShardReply};
use crate::slowlog::SlowEntry;
use crate::stats::ShardStats;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

pub enum Req {
    /// One connection's operations for this shard from one read buffer, in request order; the
    /// replies may hold about `reply_bytes_max` (Core::run_ops).
    Ops {
        id: u64,
        reply_to: usize,
        now_ms: u64,
        ops: Vec<ShardOp>,
        reply_bytes_max: usize,
    },
    Stats {
        id: u64,
        reply_to: usize,
    },
    /// This shard's slow log; `reset`: emptied too.
    Slowlog {
        id: u64,
        reply_to: usize,
        reset: bool,
    },
}

pub enum Rep {
    /// Replies to the first ops, in order; `rest` are the ops not run (to be sent again).
    Ops {
        replies: Vec<ShardReply>,
        rest: Vec<ShardOp>,
    },
    Stats(Box<ShardStats>),
    Slowlog(Vec<SlowEntry>),
}

/// How a request from another core is answered: at once, or once some work (slices of a long
/// statement, a log group to become durable) is done, in a task of its own.
pub enum Handled {
    Now(Rep),
    Later(std::pin::Pin<Box<dyn std::future::Future<Output = Rep>>>),
}

pub type ReqMesh = MeshBuilder<Req, Full>;
pub type RepMesh = MeshBuilder<(u64, Rep), Full>;

pub fn builders(cores: usize) -> (ReqMesh, RepMesh) {
    (MeshBuilder::full(cores, SHARD_QUEUE_BATCHES_MAX), MeshBuilder::full(cores, SHARD_QUEUE_BATCHES_MAX))
}

enum Tx {
    Glommio {
        req: Senders<Req>,
        rep: Senders<(u64, Rep)>,
    },
    Crossbeam {
        req: Vec<Option<crossbeam_channel::Sender<Req>>>,
        rep: Vec<Option<crossbeam_channel::Sender<(u64, Rep)>>>,
    },
}

pub struct Mesh {
    tx: Tx,
    /// This core's id in the reply mesh (join order may differ from the request mesh's).
    rep_id: usize,
    next_id: Cell<u64>,
    pending: RefCell<HashMap<u64, Rc<Slot<Rep>>>>,
}

/// The crossbeam queues of every (source, destination) pair, made once and handed out by
/// core: `take(i)` gives core i its senders to every other core and its receivers from them.
pub struct CrossbeamMesh {
    #[allow(clippy::type_complexity)]
    ends: std::sync::Mutex<Vec<Option<CoreEnds>>>,
}

pub struct CoreEnds {
    req_tx: Vec<Option<crossbeam_channel::Sender<Req>>>,
    rep_tx: Vec<Option<crossbeam_channel::Sender<(u64, Rep)>>>,
    req_rx: Vec<crossbeam_channel::Receiver<Req>>,
    rep_rx: Vec<crossbeam_channel::Receiver<(u64, Rep)>>,
}

impl CrossbeamMesh {
    pub fn new(cores: usize) -> std::sync::Arc<CrossbeamMesh> {
        let mut ends: Vec<CoreEnds> = (0..cores)
            .map(|_| CoreEnds {
                req_tx: (0..cores).map(|_| None).collect(),
                rep_tx: (0..cores).map(|_| None).collect(),
                req_rx: Vec::new(),
                rep_rx: Vec::new(),
            })
            .collect();
        for from in 0..cores {
            for to in (0..cores).filter(|t| *t != from) {
                let (tx, rx) = crossbeam_channel::bounded(SHARD_QUEUE_BATCHES_MAX);
                ends[from].req_tx[to] = Some(tx);
                ends[to].req_rx.push(rx);
                let (tx, rx) = crossbeam_channel::bounded(SHARD_QUEUE_BATCHES_MAX);
                ends[from].rep_tx[to] = Some(tx);
                ends[to].rep_rx.push(rx);
            }
        }
        std::sync::Arc::new(CrossbeamMesh {
            ends: std::sync::Mutex::new(ends.into_iter().map(Some).collect()),
        })
    }

    /// Core `id`'s ends; the shard id is the position, fixed at construction.
    pub fn take(&self, id: usize) -> Joined {
        let e = self.ends.lock().expect("mesh ends")[id].take().expect("each core takes its ends once");
        let mesh = Rc::new(Mesh {
            tx: Tx::Crossbeam { req: e.req_tx, rep: e.rep_tx },
            rep_id: id,
            next_id: Cell::new(1),
            pending: RefCell::new(HashMap::new()),
        });
        Joined { shard_id: id, mesh, rx: Rx::Crossbeam { req: e.req_rx, rep: e.rep_rx } }
    }
}

enum Rx {
    Glommio {
        req: Receivers<Req>,
        rep: Receivers<(u64, Rep)>,
    },
    Crossbeam {
        req: Vec<crossbeam_channel::Receiver<Req>>,
        rep: Vec<crossbeam_channel::Receiver<(u64, Rep)>>,
    },
}

/// Joined meshes; `shard_id` is this core's position in the request mesh, which is its shard.
pub struct Joined {
    pub shard_id: usize,
    pub mesh: Rc<Mesh>,
    rx: Rx,
}

pub async fn join(req: ReqMesh, rep: RepMesh) -> Joined {
    let (req_tx, req_rx) = req.join().await.expect("join the request mesh");
    let (rep_tx, rep_rx) = rep.join().await.expect("join the reply mesh");
    let shard_id = req_tx.peer_id();
    let rep_id = rep_tx.peer_id();
    let mesh = Rc::new(Mesh {
        tx: Tx::Glommio { req: req_tx, rep: rep_tx },
        rep_id,
        next_id: Cell::new(1),
        pending: RefCell::new(HashMap::new()),
    });
    Joined { shard_id, mesh, rx: Rx::Glommio { req: req_rx, rep: rep_rx } }
}

impl Joined {
    /// Start the tasks that serve other cores' requests with `handle` and route replies to the
    /// waiting connections. Call it once the core that `handle` reaches is whole: a request the
    /// other cores queued meanwhile is handled as soon as its task is spawned.
    pub fn start(self, handle: impl Fn(Req) -> Handled + 'static) {
        let handle = Rc::new(handle);
        match self.rx {
            Rx::Glommio { req: mut req_rx, rep: mut rep_rx } => {
                for (_, rx) in req_rx.streams() {
                    let mesh = self.mesh.clone();
                    let handle = handle.clone();
                    spawn(async move {
                        while let Some(req) = rx.recv().await {
                            let (id, reply_to) = req.ids();
                            match handle(req) {
                                Handled::Now(rep) => {
                                    if mesh.reply(reply_to, (id, rep)).await.is_err() {
                                        break;
                                    }
                                }
                                Handled::Later(work) => answer_later(&mesh, reply_to, id, work),
                            }
                        }
                    });
                }
                for (_, rx) in rep_rx.streams() {
                    let mesh = self.mesh.clone();
                    spawn(async move {
                        while let Some((id, rep)) = rx.recv().await {
                            mesh.deliver(id, rep);
                        }
                    });
                }
            }
            Rx::Crossbeam { req, rep } => {
                let mesh = self.mesh.clone();
                spawn(async move {
                    // Spin (yielding to other tasks) while messages flow; sleep briefly when
                    // idle, so an idle server does not burn its cores.
                    let mut idle_rounds = 0u32;
                    loop {
                        let mut got = false;
                        for rx in &rep {
                            while let Ok((id, r)) = rx.try_recv() {
                                mesh.deliver(id, r);
                                got = true;
                            }
                        }
                        for rx in &req {
                            while let Ok(q) = rx.try_recv() {
                                let (id, reply_to) = q.ids();
                                match handle(q) {
                                    Handled::Now(rep) => {
                                        let _ = mesh.reply(reply_to, (id, rep)).await;
                                    }
                                    Handled::Later(work) => answer_later(&mesh, reply_to, id, work),
                                }
                                got = true;
                            }
                        }
                        if got {
                            idle_rounds = 0;
                        } else {
                            idle_rounds += 1;
                        }
                        if idle_rounds > CROSSBEAM_SPIN_ROUNDS {
                            // Back off exponentially: 50 µs after the spin, up to 1 ms when idle.
                            let shift = (idle_rounds - CROSSBEAM_SPIN_ROUNDS).min(5);
                            let us = (CROSSBEAM_IDLE_SLEEP_US << shift).min(1000);
                            super::runtime::sleep(std::time::Duration::from_micros(us)).await;
                        } else {
                            super::runtime::yield_now().await;
                        }
                    }
                });
            }
        }
    }
}

impl Req {
    fn ids(&self) -> (u64, usize) {
        match self {
            Req::Ops { id, reply_to, .. }
            | Req::Stats { id, reply_to }
            | Req::Slowlog { id, reply_to, .. } => (*id, *reply_to),
        }
    }
}

/// Answer a request once its work is done, in a task of its own: the requests behind it on
/// the queue go on meanwhile.
fn answer_later(
    mesh: &Rc<Mesh>,
    reply_to: usize,
    id: u64,
    work: std::pin::Pin<Box<dyn std::future::Future<Output = Rep>>>,
) {
    let mesh = mesh.clone();
    spawn(async move {
        let rep = work.await;
        let _ = mesh.reply(reply_to, (id, rep)).await;
    });
}

impl Mesh {
    /// Send `make(id, reply_to)` to `shard`; the returned slot receives the reply. Waits while
    /// the queue to that shard is full (back-pressure on the sending connection only).
    pub async fn send(&self, shard: usize, make: impl FnOnce(u64, usize) -> Req) -> Option<Rc<Slot<Rep>>> {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let slot = Slot::new();
        self.pending.borrow_mut().insert(id, slot.clone());
        let msg = make(id, self.rep_id);
        let sent = match &self.tx {
            Tx::Glommio { req, .. } => req.send_to(shard, msg).await.is_ok(),
            Tx::Crossbeam { req, .. } => send_polling(req[shard].as_ref(), msg).await,
        };
        if !sent {
            self.pending.borrow_mut().remove(&id);
            return None;
        }
        Some(slot)
    }

    async fn reply(&self, to: usize, rep: (u64, Rep)) -> Result<(), ()> {
        match &self.tx {
            Tx::Glommio { rep: tx, .. } => tx.send_to(to, rep).await.map_err(|_| ()),
            Tx::Crossbeam { rep: tx, .. } => send_polling(tx[to].as_ref(), rep).await.then_some(()).ok_or(()),
        }
    }

    fn deliver(&self, id: u64, rep: Rep) {
        if let Some(slot) = self.pending.borrow_mut().remove(&id) {
            slot.put(rep);
        }
    }
}

/// Send on a bounded crossbeam queue, yielding to other tasks while it is full.
async fn send_polling<T>(tx: Option<&crossbeam_channel::Sender<T>>, mut msg: T) -> bool {
    let Some(tx) = tx else { return false };
    loop {
        match tx.try_send(msg) {
            Ok(()) => return true,
            Err(crossbeam_channel::TrySendError::Full(m)) => {
                msg = m;
                super::runtime::yield_now().await;
            }
            Err(crossbeam_channel::TrySendError::Disconnected(_)) => return false,
        }
    }
}
