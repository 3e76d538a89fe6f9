//! Cross-core messaging over glommio's channel mesh: bounded lock-free queues, one per
//! (source, destination) pair, that wake the receiving executor without polling. Requests and
//! replies travel on two separate meshes: a core that is blocked sending a request can still
//! drain its replies, so no cycle of full queues can deadlock two cores.

use super::runtime::{spawn, Slot};
use super::stats::ShardStats;
use crate::limits::SHARD_QUEUE_BATCHES_MAX;
use crate::shard::{ShardOp, ShardReply};
use glommio::channels::channel_mesh::{Full, MeshBuilder, Receivers, Senders};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

pub enum Req {
    /// One connection's operations for this shard from one read buffer, in request order.
    Ops {
        id: u64,
        reply_to: usize,
        now_ms: u64,
        ops: Vec<ShardOp>,
    },
    Stats {
        id: u64,
        reply_to: usize,
    },
}

pub enum Rep {
    Ops(Vec<ShardReply>),
    Stats(Box<ShardStats>),
}

pub type ReqMesh = MeshBuilder<Req, Full>;
pub type RepMesh = MeshBuilder<(u64, Rep), Full>;

pub fn builders(cores: usize) -> (ReqMesh, RepMesh) {
    (
        MeshBuilder::full(cores, SHARD_QUEUE_BATCHES_MAX),
        MeshBuilder::full(cores, SHARD_QUEUE_BATCHES_MAX),
    )
}

pub struct Mesh {
    req_tx: Senders<Req>,
    rep_tx: Senders<(u64, Rep)>,
    /// This core's id in the reply mesh (join order may differ from the request mesh's).
    rep_id: usize,
    next_id: Cell<u64>,
    pending: RefCell<HashMap<u64, Rc<Slot<Rep>>>>,
}

/// Joined meshes; `shard_id` is this core's position in the request mesh, which is its shard.
pub struct Joined {
    pub shard_id: usize,
    pub mesh: Rc<Mesh>,
    req_rx: Receivers<Req>,
    rep_rx: Receivers<(u64, Rep)>,
}

pub async fn join(req: ReqMesh, rep: RepMesh) -> Joined {
    let (req_tx, req_rx) = req.join().await.expect("join the request mesh");
    let (rep_tx, rep_rx) = rep.join().await.expect("join the reply mesh");
    let shard_id = req_tx.peer_id();
    let rep_id = rep_tx.peer_id();
    let mesh = Rc::new(Mesh {
        req_tx,
        rep_tx,
        rep_id,
        next_id: Cell::new(1),
        pending: RefCell::new(HashMap::new()),
    });
    Joined {
        shard_id,
        mesh,
        req_rx,
        rep_rx,
    }
}

impl Joined {
    /// Start the tasks that serve other cores' requests with `handle` and route replies to the
    /// waiting connections. Returns the mesh handle for sending.
    pub fn start(mut self, handle: impl Fn(Req) -> Rep + 'static) -> Rc<Mesh> {
        let handle = Rc::new(handle);
        for (_, rx) in self.req_rx.streams() {
            let mesh = self.mesh.clone();
            let handle = handle.clone();
            spawn(async move {
                while let Some(req) = rx.recv().await {
                    let (id, reply_to) = match &req {
                        Req::Ops { id, reply_to, .. } | Req::Stats { id, reply_to } => {
                            (*id, *reply_to)
                        }
                    };
                    let rep = handle(req);
                    if mesh.rep_tx.send_to(reply_to, (id, rep)).await.is_err() {
                        break;
                    }
                }
            });
        }
        for (_, rx) in self.rep_rx.streams() {
            let mesh = self.mesh.clone();
            spawn(async move {
                while let Some((id, rep)) = rx.recv().await {
                    if let Some(slot) = mesh.pending.borrow_mut().remove(&id) {
                        slot.put(rep);
                    }
                }
            });
        }
        self.mesh
    }
}

impl Mesh {
    /// Send `make(id, reply_to)` to `shard`; the returned slot receives the reply. Waits while
    /// the queue to that shard is full (back-pressure on the sending connection only).
    pub async fn send(
        &self,
        shard: usize,
        make: impl FnOnce(u64, usize) -> Req,
    ) -> Option<Rc<Slot<Rep>>> {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let slot = Slot::new();
        self.pending.borrow_mut().insert(id, slot.clone());
        if self
            .req_tx
            .send_to(shard, make(id, self.rep_id))
            .await
            .is_err()
        {
            self.pending.borrow_mut().remove(&id);
            return None;
        }
        Some(slot)
    }
}
