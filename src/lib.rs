//! Velocity: a thread-per-core, shared-nothing key-value server speaking the Velocity binary
//! protocol (SQL over one `kv` table).
//!
//! The request path, in a few lines:
//! bytes → [`protocol::decode_frame`] → COMMAND payload → [`sql::parse`] → [`shard::plan`] →
//! each part runs on its shard's [`store::Store`] ([`shard::run_op`]), inline when the shard is
//! local and over a cross-core queue otherwise → [`shard::merge`] → RESPONSE frame, written in
//! request order.
//!
//! `protocol`, `sql`, `store`, `shard`, `stats`, `slowlog` and `audit_record` do no I/O and know nothing of the runtime.

pub mod audit_record;
pub mod client;
pub mod cluster;
pub mod durability;
pub mod error;
pub mod limits;
pub mod linearizability;
pub mod metrics;
pub mod protocol;
pub mod security;
pub mod server;
pub mod shard;
pub mod slowlog;
pub mod sql;
pub mod stats;
pub mod store;

pub use error::WireError;
