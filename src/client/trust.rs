//! Trust on first use, as SSH: a known-hosts file maps `host:port` to the server's fingerprint
//! (`SHA256:<base64>`). An unknown host is asked about or accepted by an explicit option and then
//! recorded; a changed fingerprint is a hard failure with no bypass.

use crate::server::datadir::fingerprint_string;
use std::io::Write;
use std::path::{Path, PathBuf};

/// What the client does with a server it has not seen before.
pub enum NewHost {
    /// Refuse (the default for programs).
    Refuse,
    /// Record it and go on (`--accept-new-host`).
    Accept,
    /// Ask; the callback gets `host:port` and the fingerprint and says yes or no.
    Ask(AskFn),
}

/// Asked about an unknown server: `host:port` and its fingerprint in, trust it or not out.
pub type AskFn = Box<dyn Fn(&str, &str) -> bool>;

pub struct Trust {
    /// Default: `~/.velocity/known_hosts`.
    pub known_hosts: Option<PathBuf>,
    pub new_host: NewHost,
    /// `SHA256:…`: accept exactly this server key, whatever the known-hosts file says.
    pub pinned: Option<String>,
}

impl Default for Trust {
    fn default() -> Self {
        Trust { known_hosts: None, new_host: NewHost::Refuse, pinned: None }
    }
}

pub fn default_known_hosts() -> PathBuf {
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".velocity").join("known_hosts")
}

/// The fingerprint recorded for `host`, if any.
pub fn lookup(path: &Path, host: &str) -> Result<Option<String>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    Ok(text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once(' '))
        .find(|(h, _)| *h == host)
        .map(|(_, fp)| fp.trim().to_owned()))
}

pub fn record(path: &Path, host: &str, fingerprint: &str) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        #[cfg(unix)]
        if dir.ends_with(".velocity") {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    writeln!(f, "{host} {fingerprint}").map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn changed_warning(host: &str, known: &str, now: &str, path: &Path) -> String {
    format!(
        "\n@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n\
         @    WARNING: VELOCITY SERVER IDENTIFICATION HAS CHANGED!  @\n\
         @@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n\
         IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!\n\
         Someone could be eavesdropping on you right now (man-in-the-middle attack)!\n\
         It is also possible that the server's identity key was replaced.\n\
         The fingerprint for {host} recorded in {path} is\n    {known}\n\
         and the server now presents\n    {now}\n\
         Check the new fingerprint with the server's operator (`velocityd fingerprint`), then\n\
         remove the old line from {path}. The connection was refused.",
        path = path.display()
    )
}

/// Check the server's fingerprint for `host` under `trust`. Returns a message on refusal.
pub fn check(trust: &Trust, host: &str, fp: &[u8; 32]) -> Result<(), String> {
    let now = fingerprint_string(fp);
    if let Some(pin) = &trust.pinned {
        return if *pin == now {
            Ok(())
        } else {
            Err(format!("server {host} presents {now}, not the pinned fingerprint {pin}: refused"))
        };
    }
    let path = trust.known_hosts.clone().unwrap_or_else(default_known_hosts);
    match lookup(&path, host)? {
        Some(known) if known == now => Ok(()),
        Some(known) => Err(changed_warning(host, &known, &now, &path)),
        None => {
            let accept = match &trust.new_host {
                NewHost::Accept => true,
                NewHost::Ask(ask) => ask(host, &now),
                NewHost::Refuse => false,
            };
            if !accept {
                return Err(format!(
                    "unknown server {host} with fingerprint {now}: check it with the server's operator \
                     (`velocityd fingerprint`), then connect with --accept-new-host or --fingerprint {now}"
                ));
            }
            record(&path, host, &now)
        }
    }
}

/// The command-line options that say how a tool connects and whom it trusts; shared by
/// velocity-cli and velocity-bench.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct TrustArgs {
    /// Connect without TLS (to a server started with --plaintext).
    #[arg(long)]
    pub plaintext: bool,
    /// Known-hosts file (default ~/.velocity/known_hosts).
    #[arg(long)]
    pub known_hosts: Option<PathBuf>,
    /// Trust and record a server seen for the first time, without asking.
    #[arg(long)]
    pub accept_new_host: bool,
    /// Accept only this server key (SHA256:…, as `velocityd fingerprint` prints it).
    #[arg(long)]
    pub fingerprint: Option<String>,
}

impl TrustArgs {
    /// Connect options for `host:port`; `ask` is used for a new host when not accepted outright.
    pub fn options(&self, host: &str, port: u16, ask: Option<AskFn>) -> super::ConnectOptions {
        let mut o = super::ConnectOptions::new(host, port);
        o.tls = !self.plaintext;
        o.trust = Trust {
            known_hosts: self.known_hosts.clone(),
            new_host: match (self.accept_new_host, ask) {
                (true, _) => NewHost::Accept,
                (false, Some(ask)) => NewHost::Ask(ask),
                (false, None) => NewHost::Refuse,
            },
            pinned: self.fingerprint.clone(),
        };
        o
    }
}
