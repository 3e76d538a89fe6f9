//! Shards: routing of keys to shards, the operations a shard runs, and how a statement is
//! planned across shards and merged back. The cross-core transport lives in `server`.

pub mod ops;
pub mod plan;
pub mod route;

pub use ops::{
    apply, apply_slice, make_room, put, put_row, run_op, Change, Conflict, NoLog, PutRow, RowOut, ShardOp,
    ShardReply, Sliced, WriteLog,
};
pub use plan::{execute, merge, plan, Merge, Plan};
pub use route::{shard_of_key, shard_of_token, token, token_range};
