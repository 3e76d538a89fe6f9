//! One owner per data directory and per listen address.
//!
//! A data directory is owned by the process holding an exclusive `flock` on `D/LOCK` for its
//! whole life; the file names that process (`pid start-time`), so a second server — or `repair`
//! — can say who holds it. The lock goes with the process, however it dies.
//!
//! Every core binds the listen address with SO_REUSEPORT, which would also let a second server
//! (of the same user) join the socket group and have the kernel split clients between two
//! databases. So the first socket is bound *without* SO_REUSEPORT, which the kernel refuses while
//! any other socket listens there, and only then opens the group to this server's other cores.
//!
//! A process killed with SIGKILL keeps its sockets and its lock until the kernel has torn it down
//! (freeing a large heap takes a while); connections the kernel hands to its sockets meanwhile
//! are reset when they close. A server that finds the address or the directory held by a process
//! that is exiting waits for it to be gone (bounded), then binds: it never joins a dying group.

use super::datadir::open_lock_file;
use crate::limits::{ADDR_UNSEEN_RETRIES, ORPHANED_SOCKET_POLL_MS, OWNER_EXIT_WAIT_MS, TCP_BACKLOG};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A process, told apart from a later one that reuses its PID by its start time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessId {
    pub pid: i32,
    /// Start time in clock ticks since boot (/proc/PID/stat field 22).
    pub start_ticks: u64,
}

/// What /proc says about a running process.
#[derive(Debug)]
struct ProcessState {
    start_ticks: u64,
    /// The kernel is tearing it down (PF_EXITING): it will let go of its files and sockets soon.
    exiting: bool,
    /// It has exited (its descriptors are closed) and waits to be reaped.
    zombie: bool,
    comm: String,
}

const PF_EXITING: u64 = 0x4;

fn process_state(pid: i32) -> Option<ProcessState> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid …`: comm may hold spaces and parentheses, so split at the last ')'.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_owned();
    let rest: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // rest[0] is field 3 (state); field N is rest[N - 3].
    let state = *rest.first()?;
    let flags: u64 = rest.get(9 - 3)?.parse().ok()?;
    let start_ticks: u64 = rest.get(22 - 3)?.parse().ok()?;
    // A zombie has closed everything already. A SIGKILL pending for the process (shared set)
    // means it is about to exit, before its threads have even set PF_EXITING.
    let killed = std::fs::read_to_string(format!("/proc/{pid}/status")).ok().is_some_and(|st| {
        st.lines()
            .find_map(|l| l.strip_prefix("ShdPnd:"))
            .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
            .is_some_and(|m| m & (1 << (libc::SIGKILL - 1)) != 0)
    });
    let zombie = state == "Z" || state == "X";
    let exiting = flags & PF_EXITING != 0 || zombie || killed;
    Some(ProcessState { start_ticks, exiting, zombie, comm })
}

impl ProcessId {
    pub fn current() -> ProcessId {
        let pid = std::process::id() as i32;
        let start_ticks = process_state(pid).map_or(0, |s| s.start_ticks);
        ProcessId { pid, start_ticks }
    }

    fn parse(text: &str) -> Option<ProcessId> {
        let mut f = text.split_whitespace();
        Some(ProcessId { pid: f.next()?.parse().ok()?, start_ticks: f.next()?.parse().ok()? })
    }

    /// The live process this id names, if it is still there (not a later one with its PID).
    fn state(&self) -> Option<ProcessState> {
        process_state(self.pid).filter(|s| s.start_ticks == self.start_ticks)
    }
}

/// Wait until `pid` has exited (its files and sockets are closed by then), at most until
/// `deadline`. True once it is gone.
fn wait_for_exit(pid: i32, deadline: Instant) -> bool {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    if fd < 0 {
        // ESRCH: already gone.
        return std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
    }
    // SAFETY: a descriptor we just received and now own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // A pidfd becomes readable when the process exits (after it has closed its files).
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut p, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        if n > 0 {
            return true;
        }
        if n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return false;
        }
    }
}

/// The exclusive lock on a data directory, held until dropped (or the process ends).
pub struct DirLock {
    _file: File,
    /// The process that held the directory before this one, if it left its name behind.
    pub previous: Option<ProcessId>,
}

pub fn lock_path(dir: &Path) -> PathBuf {
    dir.join("LOCK")
}

fn describe_holder(id: Option<ProcessId>) -> String {
    match id {
        Some(id) => match id.state() {
            Some(s) => format!("PID {} ({})", id.pid, s.comm),
            None => format!("PID {}", id.pid),
        },
        None => "another process".into(),
    }
}

impl DirLock {
    /// Take `dir` (created 0700 if missing) for this process, `what` naming the purpose in
    /// the refusal ("start velocityd", "repair"). A holder that is exiting is waited for.
    pub fn acquire(dir: &Path, what: &str) -> Result<DirLock, String> {
        match std::fs::metadata(dir) {
            Ok(m) if !m.is_dir() => return Err(format!("{} is not a directory", dir.display())),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|e| format!("cannot create data directory {}: {e}", dir.display()))?;
            }
            Err(e) => return Err(format!("cannot use {}: {e}", dir.display())),
        }
        let path = lock_path(dir);
        let mut file = open_lock_file(&path)?;
        let deadline = Instant::now() + Duration::from_millis(OWNER_EXIT_WAIT_MS);
        loop {
            // SAFETY: flock on a descriptor we own.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                break;
            }
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(format!("cannot lock {}: {err}", path.display()));
            }
            let holder = read_holder(&mut file);
            let exiting = holder.and_then(|h| h.state()).is_some_and(|s| s.exiting);
            match holder {
                Some(h) if exiting && Instant::now() < deadline => {
                    tracing::info!(
                        pid = h.pid,
                        "the data directory's previous owner is exiting; waiting for it"
                    );
                    wait_for_exit(h.pid, deadline);
                }
                _ => {
                    return Err(format!(
                    "cannot {what}: data directory {} is in use by {} (it holds {}); stop that process first",
                    dir.display(),
                    describe_holder(holder),
                    path.display()
                ))
                }
            }
        }
        let previous = read_holder(&mut file);
        let me = ProcessId::current();
        let write = |f: &mut File| -> std::io::Result<()> {
            f.set_len(0)?;
            f.rewind()?;
            f.write_all(format!("{} {}\n", me.pid, me.start_ticks).as_bytes())
        };
        write(&mut file).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(DirLock { _file: file, previous })
    }
}

fn read_holder(file: &mut File) -> Option<ProcessId> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    ProcessId::parse(&text)
}

/// A TCP socket bound to the port in question, as /proc shows it.
struct PortSocket {
    listening: bool,
    uid: u32,
    /// The processes holding it (empty: none, or none this user may see).
    pids: Vec<i32>,
}

/// The sockets bound to `port` (any address) but those in TIME_WAIT (which SO_REUSEADDR lets a
/// new listener share): listeners, and what a dead server leaves closing (its accepted
/// connections still sending their FIN, a listener being torn down).
fn sockets_on_port(port: u16) -> Vec<PortSocket> {
    let mut found: Vec<(PortSocket, String)> = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st queues timer retrnsmt uid timeout inode …
            let (Some(local), Some(st), Some(uid), Some(inode)) = (f.get(1), f.get(3), f.get(7), f.get(9))
            else {
                continue;
            };
            let p = local.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
            if p == Some(port) && *st != "06" {
                let s = PortSocket {
                    listening: *st == "0A",
                    uid: uid.parse().unwrap_or(u32::MAX),
                    pids: Vec::new(),
                };
                found.push((s, format!("socket:[{inode}]")));
            }
        }
    }
    // An orphaned socket (no file any more) has inode 0: no process can hold it.
    if found.iter().any(|(_, link)| link != "socket:[0]") {
        if let Ok(procs) = std::fs::read_dir("/proc") {
            for p in procs.flatten() {
                let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
                let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else { continue };
                for fd in fds.flatten() {
                    let Some(link) =
                        std::fs::read_link(fd.path()).ok().and_then(|l| l.to_str().map(str::to_owned))
                    else {
                        continue;
                    };
                    for (s, _) in found.iter_mut().filter(|(_, l)| *l == link) {
                        if !s.pids.contains(&pid) {
                            s.pids.push(pid);
                        }
                    }
                }
            }
        }
    }
    found.into_iter().map(|(s, _)| s).collect()
}

fn new_socket(addr: SocketAddr, reuse_port: bool) -> std::io::Result<socket2::Socket> {
    let s = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    // Restarting next to the previous run's TIME_WAIT connections is normal, not a conflict.
    s.set_reuse_address(true)?;
    if reuse_port {
        s.set_reuse_port(true)?;
    }
    Ok(s)
}

/// Bind `cores` listening sockets on `addr`, one per core, refusing an address that another
/// process serves. `previous` is the data directory's previous owner: if it is still exiting,
/// its sockets may still be there, and it is waited for.
pub fn bind_listeners(
    addr: SocketAddr,
    cores: usize,
    previous: Option<ProcessId>,
) -> Result<Vec<std::net::TcpListener>, String> {
    let deadline = Instant::now() + Duration::from_millis(OWNER_EXIT_WAIT_MS);
    let mut waited = false;
    let mut unseen = 0;
    let first = loop {
        let s = new_socket(addr, false).map_err(|e| format!("cannot make a socket for {addr}: {e}"))?;
        let err = match s.bind(&addr.into()) {
            Ok(()) => break s,
            Err(e) => e,
        };
        if err.kind() != std::io::ErrorKind::AddrInUse {
            return Err(format!("cannot listen on {addr}: {err}"));
        }
        let Holders { waiting, orphaned, foreign } = holders(addr, previous)?;
        // Nothing to be seen: what refused the bind may have gone in between (an orphaned
        // socket closes at any moment). Bind again, a bounded number of times.
        let vanished = !foreign && waiting.is_empty() && !orphaned;
        if vanished && unseen < ADDR_UNSEEN_RETRIES {
            unseen += 1;
            std::thread::sleep(Duration::from_millis(ORPHANED_SOCKET_POLL_MS));
            continue;
        }
        if foreign || vanished || Instant::now() >= deadline {
            return Err(format!(
                "cannot listen on {addr}: address in use (by another user's process, or one that did not \
                 let go of it within {} s)",
                OWNER_EXIT_WAIT_MS / 1000
            ));
        }
        if !waited {
            tracing::info!(%addr, pids = ?waiting, "the address is held by an exiting process; waiting for it");
            waited = true;
        }
        // A process still running its exit is waited for; once it has exited (a zombie, or
        // gone), its sockets may still be closing in the kernel, which tells no one: look again.
        let running: Vec<i32> =
            waiting.into_iter().filter(|p| process_state(*p).is_some_and(|s| !s.zombie)).collect();
        for pid in &running {
            wait_for_exit(*pid, deadline);
        }
        if running.is_empty() {
            std::thread::sleep(Duration::from_millis(ORPHANED_SOCKET_POLL_MS));
        }
    };
    open_group(addr, first, cores)
}

/// What holds a port that refused a bind: processes to wait for (exiting, or the previous
/// owner), sockets of ours that no process holds, another user's listener. Err: a live server.
struct Holders {
    waiting: Vec<i32>,
    orphaned: bool,
    foreign: bool,
}

fn holders(addr: SocketAddr, previous: Option<ProcessId>) -> Result<Holders, String> {
    let sockets = sockets_on_port(addr.port());
    let me = std::process::id() as i32;
    // SAFETY: geteuid has no preconditions.
    let my_uid = unsafe { libc::geteuid() };
    let holders: Vec<i32> = sockets
        .iter()
        .filter(|s| s.listening)
        .flat_map(|s| s.pids.iter().copied())
        .filter(|p| *p != me)
        .collect();
    let states: Vec<(i32, Option<ProcessState>)> = holders.iter().map(|&p| (p, process_state(p))).collect();
    if let Some((pid, st)) = states.iter().find(|(_, s)| s.as_ref().is_some_and(|s| !s.exiting)) {
        let comm = st.as_ref().map_or(String::new(), |s| format!(" ({})", s.comm));
        return Err(format!(
            "cannot listen on {addr}: it is served by PID {pid}{comm}; stop it or choose another --listen"
        ));
    }
    // Sockets of ours that no process holds are a killed server's, still being closed by the
    // kernel for a few milliseconds after it is gone (its listeners, once their io_uring's
    // pending accepts are cancelled; its connections, until their FIN is acknowledged).
    // Another user's listener that we cannot see is a conflict.
    let orphaned = sockets.iter().any(|s| s.pids.is_empty() && s.uid == my_uid);
    let foreign = sockets.iter().any(|s| s.listening && s.pids.is_empty() && s.uid != my_uid);
    let mut waiting: Vec<i32> = states.iter().map(|(p, _)| *p).collect();
    if let Some(prev) = previous.filter(|p| p.state().is_some()) {
        // Its sockets outlive the listing of its descriptors while it closes them.
        waiting.push(prev.pid);
    }
    Ok(Holders { waiting, orphaned, foreign })
}

/// Now that this process holds the address alone, open the group to its other cores.
fn open_group(
    addr: SocketAddr,
    first: socket2::Socket,
    cores: usize,
) -> Result<Vec<std::net::TcpListener>, String> {
    let err = |e: std::io::Error| format!("cannot listen on {addr}: {e}");
    first.set_reuse_port(true).map_err(err)?;
    first.listen(TCP_BACKLOG).map_err(err)?;
    let bound = first.local_addr().map_err(err)?.as_socket().ok_or("not an IP socket")?;
    let mut out = vec![std::net::TcpListener::from(first)];
    for _ in 1..cores {
        let s = new_socket(bound, true).map_err(err)?;
        s.bind(&bound.into()).map_err(err)?;
        s.listen(TCP_BACKLOG).map_err(err)?;
        out.push(s.into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_a_directory_is_refused_naming_the_holder() {
        let dir = std::env::temp_dir().join(format!("velocity-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a = DirLock::acquire(&dir, "start velocityd").unwrap();
        assert!(a.previous.is_none());
        // flock locks are per open file: a second open in this process conflicts too.
        let e = DirLock::acquire(&dir, "repair").err().unwrap();
        assert!(e.contains(&format!("PID {}", std::process::id())), "{e}");
        assert!(e.contains("cannot repair"), "{e}");
        drop(a);
        let b = DirLock::acquire(&dir, "start velocityd").unwrap();
        assert_eq!(b.previous, Some(ProcessId::current()));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_file_is_not_a_data_directory() {
        let f = std::env::temp_dir().join(format!("velocity-notdir-{}", std::process::id()));
        std::fs::write(&f, b"x").unwrap();
        let e = DirLock::acquire(&f, "start velocityd").err().unwrap();
        assert!(e.contains("is not a directory"), "{e}");
        let _ = std::fs::remove_file(&f);
    }

    #[test]
    fn an_address_this_process_serves_exclusively_is_refused_to_a_second_group() {
        let a = bind_listeners("127.0.0.1:0".parse().unwrap(), 2, None).unwrap();
        let addr = a[0].local_addr().unwrap();
        // The same protocol a second server follows: refused, naming this process.
        let e = bind_listeners(addr, 2, None).err().unwrap();
        assert!(e.contains(&addr.to_string()), "{e}");
        drop(a);
        assert_eq!(bind_listeners(addr, 1, None).unwrap().len(), 1);
    }

    #[test]
    fn proc_stat_parsing_survives_odd_names() {
        let me = ProcessId::current();
        assert!(me.start_ticks > 0);
        let st = me.state().unwrap();
        assert!(!st.exiting);
        assert_eq!(ProcessId::parse("12 34\n"), Some(ProcessId { pid: 12, start_ticks: 34 }));
        assert_eq!(ProcessId::parse(""), None);
    }
}
