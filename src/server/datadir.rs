//! The data directory: `auth_salt` (16 random bytes), `users` (one line per user: name, role,
//! SHA-256 of the credential in hex) and the identity key pair with its self-signed certificate.
//! Everything is created on first start; secrets are written 0600.

use crate::limits::{ARGON2_M_KIB_DEFAULT, ARGON2_P_DEFAULT, ARGON2_T_DEFAULT, USERNAME_BYTES_MAX};
use crate::security::{derive_credential, stored_hash, Argon2Params};
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

pub const ARGON2: Argon2Params =
    Argon2Params { m_kib: ARGON2_M_KIB_DEFAULT, t: ARGON2_T_DEFAULT, p: ARGON2_P_DEFAULT };

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    ReadOnly,
    ReadWrite,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::ReadOnly => "readonly",
            Role::ReadWrite => "readwrite",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "readonly" => Some(Role::ReadOnly),
            "readwrite" => Some(Role::ReadWrite),
            _ => None,
        }
    }
}

/// A token-bucket setting: sustained operations per second and the burst allowed above it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    pub ops_per_s: f64,
    pub burst: f64,
}

impl RateLimit {
    /// `OPS` or `OPS:BURST` (burst defaults to one second's worth); `0` means no limit.
    pub fn parse(s: &str) -> Result<Option<RateLimit>, String> {
        let bad = || format!("rate limit {s:?}: expected OPS or OPS:BURST (operations per second)");
        let (ops, burst) = match s.split_once(':') {
            Some((o, b)) => {
                (o.parse::<f64>().map_err(|_| bad())?, Some(b.parse::<f64>().map_err(|_| bad())?))
            }
            None => (s.parse::<f64>().map_err(|_| bad())?, None),
        };
        if !ops.is_finite() || ops < 0.0 || burst.is_some_and(|b| !b.is_finite() || b < 1.0) {
            return Err(bad());
        }
        Ok((ops > 0.0).then(|| RateLimit { ops_per_s: ops, burst: burst.unwrap_or(ops.max(1.0)) }))
    }

    pub fn to_arg(&self) -> String {
        format!("{}:{}", self.ops_per_s, self.burst)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct User {
    pub name: String,
    pub role: Role,
    pub stored: [u8; 32],
    pub rate_limit: Option<RateLimit>,
}

/// An API key as stored: its id (shown by `apikey list`), the user it acts as, SHA-256 of the
/// key, and when it was made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKey {
    pub id: String,
    pub user: String,
    pub stored: [u8; 32],
    pub created_unix_s: u64,
}

/// What a server reads from its data directory at start.
pub struct DataDir {
    pub auth_salt: [u8; 16],
    /// SHA-256 of the identity's SubjectPublicKeyInfo (DER).
    pub fingerprint: [u8; 32],
    pub cert_pem: String,
    pub key_pem: String,
}

fn write_secret(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(bytes)?;
    // A running server notices changed users and API keys by the files' mtimes: the new file's
    // must differ from the one it replaces, even when both writes fall within one tick of the
    // file system's clock (a few milliseconds), as `user add` then `user role` may.
    if let Ok(old) = fs::metadata(path).and_then(|m| m.modified()) {
        if f.metadata()?.modified()? <= old {
            f.set_modified(old + std::time::Duration::from_millis(1))?;
        }
    }
    f.sync_all()?;
    fs::rename(&tmp, path)
}

fn ctx<'a>(what: &str, path: &'a Path) -> impl FnOnce(std::io::Error) -> String + 'a {
    let what = what.to_owned();
    move |e| format!("{what} {}: {e}", path.display())
}

/// A lock file, created 0600 if missing, its contents kept: what `flock` is taken on.
pub fn open_lock_file(path: &Path) -> Result<fs::File, String> {
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))
}

/// Run `make` holding `dir`'s creation lock: the files made once on first use (the auth salt,
/// the identity) are made by one process, and the others read what it made. Without it a
/// server starting and `velocityd fingerprint` raced on one temporary file.
fn creating<T>(dir: &Path, make: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    use std::os::fd::AsRawFd;
    let path = dir.join("create.lock");
    let f = open_lock_file(&path)?;
    // SAFETY: flock on a descriptor we own; released when it is closed, below.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(format!("cannot lock {}: {}", path.display(), std::io::Error::last_os_error()));
    }
    let made = make();
    drop(f);
    made
}

/// Load (or create) the auth salt of `dir`.
pub fn auth_salt(dir: &Path) -> Result<[u8; 16], String> {
    fs::create_dir_all(dir).map_err(ctx("cannot create data directory", dir))?;
    let p = dir.join("auth_salt");
    let read = |p: &Path| match fs::read(p) {
        Ok(b) => b.try_into().map(Some).map_err(|_| format!("{} is not 16 bytes long", p.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", p.display())),
    };
    if let Some(salt) = read(&p)? {
        return Ok(salt);
    }
    creating(dir, || {
        if let Some(salt) = read(&p)? {
            return Ok(salt); // made meanwhile by another process
        }
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).map_err(|e| format!("no randomness: {e}"))?;
        write_secret(&p, &salt).map_err(ctx("cannot write", &p))?;
        Ok(salt)
    })
}

pub fn load_users(dir: &Path) -> Result<Vec<User>, String> {
    let p = dir.join("users");
    let text = match fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", p.display())),
    };
    let mut users = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || {
            format!("{}:{}: expected `name<TAB>role<TAB>sha256-hex[<TAB>rate=OPS:BURST]`", p.display(), i + 1)
        };
        let f: Vec<&str> = line.split('\t').collect();
        let (name, role, hex) = match f[..] {
            [n, r, h] | [n, r, h, _] => (n, r, h),
            _ => return Err(bad()),
        };
        let role = Role::parse(role).ok_or_else(bad)?;
        let stored = unhex32(hex).ok_or_else(bad)?;
        let rate_limit = match f.get(3) {
            Some(r) => RateLimit::parse(r.strip_prefix("rate=").ok_or_else(bad)?)?,
            None => None,
        };
        users.push(User { name: name.to_owned(), role, stored, rate_limit });
    }
    Ok(users)
}

fn save_users(dir: &Path, users: &[User]) -> Result<(), String> {
    let mut text = String::from("# velocityd users: name, role, SHA-256 of the Argon2id credential\n");
    for u in users {
        text += &format!("{}\t{}\t{}", u.name, u.role.name(), hex(&u.stored));
        if let Some(r) = u.rate_limit {
            text += &format!("\trate={}", r.to_arg());
        }
        text.push('\n');
    }
    let p = dir.join("users");
    write_secret(&p, text.as_bytes()).map_err(ctx("cannot write", &p))
}

pub fn validate_username(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > USERNAME_BYTES_MAX {
        return Err(format!("a user name is 1 to {USERNAME_BYTES_MAX} bytes"));
    }
    if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("a user name may not contain spaces or control characters".into());
    }
    Ok(())
}

/// Add or replace a user. Runs Argon2id here, in the management command, never in the server.
pub fn add_user(
    dir: &Path,
    name: &str,
    password: &str,
    role: Role,
    rate_limit: Option<RateLimit>,
) -> Result<(), String> {
    let stored = stored_credential(dir, name, password)?;
    let mut users = load_users(dir)?;
    users.retain(|u| u.name != name);
    users.push(User { name: name.to_owned(), role, stored, rate_limit });
    save_users(dir, &users)
}

/// What `name`'s stored credential is with `password`: what `add_user` would store, for
/// comparing with a user's current one or setting a new password with `update_user`.
pub fn stored_credential(dir: &Path, name: &str, password: &str) -> Result<[u8; 32], String> {
    validate_username(name)?;
    if password.is_empty() {
        return Err("the password is empty".into());
    }
    let salt = auth_salt(dir)?;
    Ok(stored_hash(&derive_credential(password, name, &salt, ARGON2)?))
}

/// Change the user `name` in place (its password, role or rate limit); false if there is none.
pub fn update_user(dir: &Path, name: &str, change: impl FnOnce(&mut User)) -> Result<bool, String> {
    let mut users = load_users(dir)?;
    let Some(u) = users.iter_mut().find(|u| u.name == name) else { return Ok(false) };
    change(u);
    save_users(dir, &users)?;
    Ok(true)
}

pub fn load_api_keys(dir: &Path) -> Result<Vec<ApiKey>, String> {
    let p = dir.join("apikeys");
    let text = match fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", p.display())),
    };
    let mut keys = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#')) {
        let bad = || format!("{}:{}: expected `id<TAB>user<TAB>sha256-hex<TAB>created`", p.display(), i + 1);
        let f: Vec<&str> = line.split('\t').collect();
        let [id, user, h, created] = f[..] else { return Err(bad()) };
        keys.push(ApiKey {
            id: id.to_owned(),
            user: user.to_owned(),
            stored: unhex32(h).ok_or_else(bad)?,
            created_unix_s: created.parse().map_err(|_| bad())?,
        });
    }
    Ok(keys)
}

fn save_api_keys(dir: &Path, keys: &[ApiKey]) -> Result<(), String> {
    let mut text =
        String::from("# velocityd API keys: id, user, SHA-256 of the key, created (unix seconds)\n");
    for k in keys {
        text += &format!("{}\t{}\t{}\t{}\n", k.id, k.user, hex(&k.stored), k.created_unix_s);
    }
    let p = dir.join("apikeys");
    write_secret(&p, text.as_bytes()).map_err(ctx("cannot write", &p))
}

/// Make a key for `user`; returns (id, key). Only its SHA-256 is kept: the key is shown once.
pub fn create_api_key(dir: &Path, user: &str) -> Result<(String, String), String> {
    if !load_users(dir)?.iter().any(|u| u.name == user) {
        return Err(format!("no user {user} in {}", dir.display()));
    }
    let mut id = [0u8; 4];
    let mut secret = [0u8; 24];
    getrandom::fill(&mut id).map_err(|e| format!("no randomness: {e}"))?;
    getrandom::fill(&mut secret).map_err(|e| format!("no randomness: {e}"))?;
    let id = hex(&id);
    let key = format!("vk_{id}_{}", hex(&secret));
    let mut keys = load_api_keys(dir)?;
    let created_unix_s =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    keys.push(ApiKey {
        id: id.clone(),
        user: user.to_owned(),
        stored: stored_hash(key.as_bytes()),
        created_unix_s,
    });
    save_api_keys(dir, &keys)?;
    Ok((id, key))
}

pub fn revoke_api_key(dir: &Path, id: &str) -> Result<bool, String> {
    let mut keys = load_api_keys(dir)?;
    let before = keys.len();
    keys.retain(|k| k.id != id);
    if keys.len() == before {
        return Ok(false);
    }
    save_api_keys(dir, &keys)?;
    Ok(true)
}

pub fn remove_user(dir: &Path, name: &str) -> Result<bool, String> {
    let mut users = load_users(dir)?;
    let before = users.len();
    users.retain(|u| u.name != name);
    if users.len() == before {
        return Ok(false);
    }
    save_users(dir, &users)?;
    Ok(true)
}

/// Load (or create) the identity key pair and certificate.
pub fn identity(dir: &Path) -> Result<(String, String, [u8; 32]), String> {
    let key_p = dir.join("identity.key");
    let cert_p = dir.join("identity.crt");
    // The key is written last: once it is there, so is its certificate.
    let read = || -> Result<(String, String), String> {
        let k = fs::read_to_string(&key_p).map_err(ctx("cannot read", &key_p))?;
        let c = fs::read_to_string(&cert_p).map_err(ctx("cannot read", &cert_p))?;
        Ok((k, c))
    };
    let (key_pem, cert_pem) = if key_p.exists() {
        read()?
    } else {
        fs::create_dir_all(dir).map_err(ctx("cannot create data directory", dir))?;
        creating(dir, || {
            if key_p.exists() {
                return read(); // made meanwhile by another process
            }
            let key = rcgen::KeyPair::generate().map_err(|e| format!("cannot generate a key pair: {e}"))?;
            let params = rcgen::CertificateParams::new(vec!["localhost".to_string()])
                .map_err(|e| format!("certificate parameters: {e}"))?;
            let cert = params.self_signed(&key).map_err(|e| format!("cannot self-sign: {e}"))?;
            let (k, c) = (key.serialize_pem(), cert.pem());
            write_secret(&cert_p, c.as_bytes()).map_err(ctx("cannot write", &cert_p))?;
            write_secret(&key_p, k.as_bytes()).map_err(ctx("cannot write", &key_p))?;
            Ok((k, c))
        })?
    };
    let fingerprint = cert_fingerprint(&cert_pem).map_err(|e| format!("{}: {e}", cert_p.display()))?;
    Ok((key_pem, cert_pem, fingerprint))
}

/// The fingerprint of the first certificate in a PEM chain.
pub fn cert_fingerprint(cert_pem: &str) -> Result<[u8; 32], String> {
    let certs = crate::security::tls::certs_from_pem(cert_pem)?;
    crate::security::tls::spki_sha256(&certs[0])
}

/// The identity a server presents: the operator's certificate and key when given, else the
/// data directory's own (created on first start).
pub fn served_identity(
    dir: &Path,
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<(String, String, [u8; 32]), String> {
    match (cert, key) {
        (None, None) => identity(dir),
        (Some(c), Some(k)) => {
            let cert_pem = fs::read_to_string(c).map_err(ctx("cannot read", c))?;
            let key_pem = fs::read_to_string(k).map_err(ctx("cannot read", k))?;
            let fp = cert_fingerprint(&cert_pem).map_err(|e| format!("{}: {e}", c.display()))?;
            Ok((key_pem, cert_pem, fp))
        }
        _ => Err("--tls-cert and --tls-key go together".into()),
    }
}

impl DataDir {
    pub fn open(path: &Path, cert: Option<&Path>, key: Option<&Path>) -> Result<DataDir, String> {
        let auth_salt = auth_salt(path)?;
        let (key_pem, cert_pem, fingerprint) = served_identity(path, cert, key)?;
        Ok(DataDir { auth_salt, fingerprint, cert_pem, key_pem })
    }
}

pub fn hex(b: &[u8]) -> String {
    hex::encode(b)
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

pub use crate::security::tls::fingerprint_string;
