"""The chaos run behind scripts/chaos.sh: one velocityd (2 cores, --durability sync, audit on,
plain TCP on loopback), a mixed pipelined load (velocity-bench) and a well-behaved latency probe
(velocity-bench, 1 connection, one request at a time) running through phases that each do one
bad thing to the server:

  baseline        nothing
  kill-9          SIGKILL and an immediate restart, three times, with writes in flight
  never-reading   100 clients pipelining reads of a 1 MB value and never reading, 20 reading slowly
  tricklers       260 connections trickling their handshake a byte at a time, reconnecting
  range-delete    DELETE of a range of 1,000,000 keys (without the mixed load: the probe's p99
                  is the delete's doing)
  disk-full       the server's file-size limit (prlimit) pinned just above its log for a while

A writer thread keeps writing its own keys with rising sequence numbers through it all and
remembers what was acknowledged; after every phase (and every restart) it reads all its keys
back. Per phase: the probe's p99, the server's peak RSS, writes acknowledged so far, keys
checked, and acknowledged writes lost (must be 0; the script fails otherwise).
"""

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "clients", "python"))
import velocity  # noqa: E402
from velocity import protocol as p  # noqa: E402

BIN = os.environ.get("BIN", "target/release")
PHASE_S = float(os.environ.get("PHASE_S", "8"))
PASSWORD = "chaos"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Server:
    def __init__(self, data_dir, port):
        self.data_dir, self.port, self.proc = data_dir, port, None
        self.log = open(os.path.join(os.path.dirname(data_dir), "velocityd.log"), "ab")

    def start(self):
        self.proc = subprocess.Popen(
            [f"{BIN}/velocityd", "--listen", f"127.0.0.1:{self.port}", "--cores", "2", "--data-dir",
             self.data_dir, "--plaintext", "--durability", "sync", "--max-payload", "4194304"],
            stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                c = self.connect()
                c.execute("SELECT COUNT(*) FROM kv WHERE key = 'none'")
                c.close_now()
                return
            except (velocity.VelocityError, OSError):
                time.sleep(0.05)
        raise SystemExit("velocityd did not start (see velocityd.log)")

    def connect(self, timeout=30.0):
        return velocity.connect("127.0.0.1", self.port, user="chaos", credential=self.credential(),
                                tls=False, known_hosts=os.devnull, accept_new_host=True, timeout=timeout)

    _credential = None

    def credential(self):
        if Server._credential is None:
            c = velocity.connect("127.0.0.1", self.port, tls=False, known_hosts=os.devnull,
                                 accept_new_host=True)
            Server._credential = velocity.derive_credential(c.server_info, "chaos", PASSWORD)
            c.close_now()
        return Server._credential

    def kill9(self):
        os.kill(self.proc.pid, signal.SIGKILL)

    def rss(self):
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0


class Writer(threading.Thread):
    """Writes 2,000 keys of its own, 64 a batch, each time with the next sequence number, and
    remembers the highest acknowledged per key; `check` reads them all back."""

    KEYS = 2000

    def __init__(self, server):
        super().__init__(daemon=True)
        self.server, self.stop, self.paused = server, False, threading.Event()
        self.lock = threading.Lock()
        self.sent = [0] * self.KEYS
        self.acked = [0] * self.KEYS
        self.acked_total = 0
        self.refused = 0

    def run(self):
        c, i = None, 0
        while not self.stop:
            if self.paused.is_set():
                time.sleep(0.01)
                continue
            try:
                if c is None:
                    c = self.server.connect(timeout=5)
                batch = []
                with self.lock:
                    for _ in range(64):
                        k = i % self.KEYS
                        i += 1
                        self.sent[k] += 1
                        batch.append((k, self.sent[k]))
                frames = [p.encode_command(f"INSERT INTO kv (key, value) VALUES ('w:{k}', '{n}')") for k, n in batch]
                replies = c.run_pipelined(frames)
                with self.lock:
                    for (k, n), r in zip(batch, replies):
                        if isinstance(r, velocity.VelocityError):
                            self.refused += 1
                        else:
                            self.acked[k] = max(self.acked[k], n)
                            self.acked_total += 1
            except (velocity.VelocityError, OSError):
                c = None
                time.sleep(0.05)

    def check(self):
        """(keys checked, acknowledged writes lost)."""
        self.paused.set()
        time.sleep(0.2)
        lost = 0
        deadline = time.time() + 60
        while True:
            try:
                c = self.server.connect(timeout=10)
                frames = [p.encode_command(f"SELECT value FROM kv WHERE key = 'w:{k}'") for k in range(self.KEYS)]
                replies = c.run_pipelined(frames)
                c.close_now()
                break
            except (velocity.VelocityError, OSError):
                if time.time() > deadline:
                    raise
                time.sleep(0.1)
        with self.lock:
            for k, r in enumerate(replies):
                got = 0 if isinstance(r, velocity.VelocityError) else int(r.rows[0][0])
                if got < self.acked[k] or got > self.sent[k]:
                    lost += 1
                    print(f"  LOST w:{k}: found {got}, acknowledged {self.acked[k]}, sent up to {self.sent[k]}")
        self.paused.clear()
        return self.KEYS, lost


def bench(server, seconds, *args):
    return subprocess.Popen(
        [f"{BIN}/velocity-bench", "-p", str(server.port), "-u", "chaos", "--password-stdin", "--plaintext",
         "--known-hosts", os.devnull, "--accept-new-host", "--duration-s", str(int(seconds)), "--warmup-s", "0",
         "--no-populate", "--json", *args],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def start_bench(proc):
    proc.stdin.write(PASSWORD)
    proc.stdin.close()
    return proc


def never_readers(server, stop):
    """100 connections that pipeline 200 reads of a 1 MB value each and never read; 20 that read
    their replies at 64 KiB a second."""
    socks = []
    for i in range(120):
        try:
            c = server.connect(timeout=10)
        except velocity.VelocityError:
            continue
        c._sock.setblocking(False)
        frames = b"".join(p.encode_command(f"SELECT value FROM kv WHERE key = 'big{(i + j) % 4}'") for j in range(200))
        try:
            c._sock.sendall(frames)
        except OSError:
            pass
        socks.append((i >= 100, c._sock))
    while not stop.is_set():
        for slow, s in socks:
            if slow:
                try:
                    s.recv(64 << 10)
                except OSError:
                    pass
        time.sleep(1)
    for _, s in socks:
        s.close()


def tricklers(server, stop):
    hello = p.encode_hello("trickler")

    def open_one():
        s = socket.socket()
        s.bind(("127.0.0.2", 0))
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", server.port))
        except BlockingIOError:
            pass
        return [s, 0]

    conns = [open_one() for _ in range(260)]
    while not stop.is_set():
        for c in conns:
            s, sent = c
            try:
                s.send(hello[sent % len(hello):][:1])
                c[1] += 1
                if s.recv(256) == b"":
                    raise OSError("closed")
            except BlockingIOError:
                pass
            except OSError:
                s.close()
                c[:] = open_one()
        time.sleep(0.3)
    for s, _ in conns:
        s.close()


def load_range(connect, n):
    """Keys r:0000000 … (n of them) with tiny values, 5,000 a statement, pipelined."""
    c = connect()
    frames = []
    for b in range(0, n, 5000):
        rows = ", ".join(f"('r:{i:07}', 'v')" for i in range(b, min(n, b + 5000)))
        frames.append(p.encode_command(f"INSERT INTO kv (key, value) VALUES {rows}"))
    for r in c.run_pipelined(frames, window=8):
        if isinstance(r, velocity.VelocityError):
            raise r
    c.close_now()


def main():
    root = tempfile.mkdtemp(prefix="chaos-", dir=os.environ.get("CHAOS_DIR", "target"))
    data = os.path.join(root, "data")
    subprocess.run([f"{BIN}/velocityd", "user", "add", "chaos", "--password-stdin", "--data-dir", data],
                   input=PASSWORD.encode(), check=True, stdout=subprocess.DEVNULL)
    server = Server(data, free_port())
    server.start()
    # The probe's and the load's key space, and 4 values of 1 MB for the never-reading clients.
    subprocess.run([f"{BIN}/velocity-bench", "-p", str(server.port), "-u", "chaos", "--password-stdin",
                    "--plaintext", "--known-hosts", os.devnull, "--accept-new-host", "--requests", "1",
                    "--keys", "100000", "--warmup-s", "0"], input=PASSWORD.encode(), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    c = server.connect()
    for i in range(4):
        c.execute(f"INSERT INTO kv (key, value) VALUES ('big{i}', '{'b' * ((1 << 20) - 100)}')")
    c.close_now()
    writer = Writer(server)
    writer.start()
    peak = [0]
    sampling = [True]

    def sample():
        while sampling[0]:
            peak[0] = max(peak[0], server.rss())
            time.sleep(0.05)

    threading.Thread(target=sample, daemon=True).start()
    rows, failed = [], False

    def phase(name, action, load=True, prepare=None):
        nonlocal failed
        if prepare:
            prepare()
        peak[0] = server.rss()
        load = start_bench(bench(server, PHASE_S, "-c", "8" if load else "1", "-P", "16" if load else "1",
                                 "--workload", "mixed:90", "--keys", "100000"))
        probe = start_bench(bench(server, PHASE_S, "-c", "1", "-P", "1", "--think-ms", "2", "--workload", "get",
                                  "--keys", "100000"))
        note = action() or ""
        out = probe.stdout.read()
        probe.wait()
        load.stdout.read()
        load.wait()
        try:
            j = json.loads(out)
            p99 = f"{j['p99_ms']:.2f}"
            probe_errors = j["errors"]
        except (ValueError, KeyError):
            p99, probe_errors = "n/a", "-"
        checked, lost = writer.check()
        failed |= lost > 0
        rows.append((name, p99, probe_errors, peak[0] >> 20, writer.acked_total, checked, lost, note))
        print(f"{name:14} probe p99 {p99:>6} ms (errors {probe_errors}), peak RSS {peak[0] >> 20:4} MiB, "
              f"acknowledged {writer.acked_total}, checked {checked}, lost {lost} {note}", flush=True)

    def wait():
        time.sleep(PHASE_S)

    def kill_cycles():
        for _ in range(3):
            time.sleep(PHASE_S / 4)
            server.kill9()
            server.start()  # right away: it waits for the old process to be gone
            checked, lost = writer.check()
            if lost:
                return f"(lost {lost} after a restart)"
        return "(3 restarts)"

    def with_thread(target):
        def act():
            stop = threading.Event()
            t = threading.Thread(target=target, args=(server, stop), daemon=True)
            t.start()
            time.sleep(PHASE_S)
            stop.set()
            t.join()
        return act

    def range_delete():
        c = server.connect(timeout=120)
        t0 = time.time()
        n = c.execute("DELETE FROM kv WHERE key >= 'r:' AND key < 'r;'").affected
        took = time.time() - t0
        c.close_now()
        time.sleep(max(0, PHASE_S - took))
        return f"(deleted {n} keys in {took:.2f} s)"

    def disk_full():
        log_bytes = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(os.path.join(data, "wal"))
                        for f in fs)
        biggest = max(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(os.path.join(data, "wal"))
                      for f in fs if f.startswith("log-"))
        # The soft limit only: a process may raise it again up to the hard one.
        subprocess.run(["prlimit", "--pid", str(server.proc.pid), f"--fsize={biggest + 4096}:unlimited"], check=True)
        before = writer.refused
        time.sleep(PHASE_S * 0.6)
        subprocess.run(["prlimit", "--pid", str(server.proc.pid), "--fsize=unlimited:unlimited"], check=True)
        time.sleep(PHASE_S * 0.4)
        return f"({writer.refused - before} writes refused with STORAGE_ERROR meanwhile; wal {log_bytes >> 20} MiB)"

    print(f"chaos: velocityd on 127.0.0.1:{server.port}, data in {data}, phases of {PHASE_S:.0f} s", flush=True)
    phase("baseline", wait)
    phase("kill-9", kill_cycles)
    phase("never-reading", with_thread(never_readers))
    phase("tricklers", with_thread(tricklers))
    # On an otherwise quiet server (no mixed load): the probe's p99 is the delete's doing.
    phase("range-delete", range_delete, load=False, prepare=lambda: load_range(lambda: server.connect(timeout=60), 1_000_000))
    phase("disk-full", disk_full)
    writer.stop = True
    sampling[0] = False
    server.kill9()
    print("\nphase\tprobe_p99_ms\tprobe_errors\tpeak_rss_mib\tacknowledged\tchecked\tlost\tnote")
    for r in rows:
        print("\t".join(str(x) for x in r))
    if failed:
        print("chaos: ACKNOWLEDGED WRITES WERE LOST")
        sys.exit(1)
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
