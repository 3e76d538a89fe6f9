//! Users and API keys as a core holds them: its own copy of the data directory's files,
//! reloaded when they change. No I/O but reading those files.

use super::datadir::{self, User};
use crate::security::stored_hash;
use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;

/// Users and API keys, as the data directory holds them. Each core keeps its own copy and
/// reloads it when the files change, so `user add`, `user remove` and `apikey revoke` take
/// effect within AUTH_RELOAD_CHECK_MS without a restart and without shared state.
pub struct AuthDb {
    pub users: HashMap<String, User>,
    /// Each user's name, shared by its sessions: a session holds no allocation of its own,
    /// which would pin a page of the connection's freed buffers once it is parked.
    pub names: HashMap<String, Rc<str>>,
    /// SHA-256 of each key → the user it acts as.
    pub api_keys: HashMap<[u8; 32], String>,
    stamp: (Option<std::time::SystemTime>, Option<std::time::SystemTime>),
}

fn stamps(dir: &Path) -> (Option<std::time::SystemTime>, Option<std::time::SystemTime>) {
    let m = |f: &str| std::fs::metadata(dir.join(f)).and_then(|m| m.modified()).ok();
    (m("users"), m("apikeys"))
}

impl AuthDb {
    pub fn load(dir: &Path) -> Result<AuthDb, String> {
        let stamp = stamps(dir);
        let users = datadir::load_users(dir)?;
        let keys = datadir::load_api_keys(dir)?.into_iter().map(|k| (k.stored, k.user)).collect();
        Ok(AuthDb { stamp, ..AuthDb::new(users, keys) })
    }

    /// From users and (SHA-256 of an API key, its user) pairs.
    pub fn new(users: Vec<User>, api_keys: Vec<([u8; 32], String)>) -> AuthDb {
        let users: HashMap<String, User> = users.into_iter().map(|u| (u.name.clone(), u)).collect();
        let names = users.keys().map(|n| (n.clone(), Rc::from(n.as_str()))).collect();
        AuthDb { users, names, api_keys: api_keys.into_iter().collect(), stamp: (None, None) }
    }

    /// A fresh copy if the files changed since this one was read.
    pub fn reload_if_changed(&self, dir: &Path) -> Option<AuthDb> {
        if stamps(dir) == self.stamp {
            return None;
        }
        match AuthDb::load(dir) {
            Ok(db) => Some(db),
            Err(e) => {
                tracing::error!(error = %e, "cannot reload users and API keys; keeping the previous ones");
                None
            }
        }
    }

    /// The user an API key acts as, if the key is known and its user still exists.
    pub fn api_key_user(&self, key: &[u8]) -> Option<&User> {
        self.api_keys.get(&stored_hash(key)).and_then(|u| self.users.get(u))
    }
}
