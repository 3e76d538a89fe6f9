//! Authentication material (profile §3): the client-side credential derivation and the
//! server-side stored hash. Users, API keys and roles live beside it.

pub mod credential;
pub mod ratelimit;
pub mod tls;

pub use credential::{derive_credential, password_salt, stored_hash, verify_credential, Argon2Params};
