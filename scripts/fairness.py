"""Fairness under heavy statements, measured (scripts/fairness.sh): one velocityd (--cores N,
defaults otherwise but plain TCP), 1,000,000 keys, and a probe client on its own that reads one
key after another; while the probe runs, another connection runs one heavy statement. Prints,
per statement, how long it took and the probe's latency percentiles over exactly that time,
next to the probe's own on the quiet server.
"""

import os
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from chaos import free_port, load_range, p, velocity  # noqa: E402

BIN = os.environ.get("BIN", "target/release")
CORES = os.environ.get("CORES", "1")
KEYS = 1_000_000


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def main():
    root = tempfile.mkdtemp(prefix="fairness-", dir="target")
    data = os.path.join(root, "data")
    subprocess.run([f"{BIN}/velocityd", "user", "add", "f", "--password-stdin", "--data-dir", data],
                   input=b"f", check=True, stdout=subprocess.DEVNULL)
    port = free_port()
    server = subprocess.Popen([f"{BIN}/velocityd", "--listen", f"127.0.0.1:{port}", "--cores", CORES,
                               "--data-dir", data, "--plaintext", "--max-payload", "8388608"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(400):
            try:
                c = velocity.connect("127.0.0.1", port, tls=False, known_hosts=os.devnull, accept_new_host=True)
                break
            except velocity.VelocityError:
                time.sleep(0.05)
        cred = velocity.derive_credential(c.server_info, "f", "f")
        c.close_now()

        def connect():
            return velocity.connect("127.0.0.1", port, user="f", credential=cred, tls=False,
                                    known_hosts=os.devnull, accept_new_host=True, timeout=300)

        def probe_during(sql):
            """(seconds the statement took, probe latencies in ms while it ran)."""
            probe, heavy = connect(), connect()
            lat, stop = [], threading.Event()
            window = [None, None]

            def run_probe():
                while not stop.is_set():
                    t = time.perf_counter()
                    probe.execute("SELECT value FROM kv WHERE key = 'probe'")
                    lat.append((t, (time.perf_counter() - t) * 1000))

            th = threading.Thread(target=run_probe)
            th.start()
            time.sleep(0.3)
            window[0] = time.perf_counter()
            if sql:
                heavy.execute(sql)
            else:
                time.sleep(1.0)
            window[1] = time.perf_counter()
            stop.set()
            th.join()
            probe.close_now()
            heavy.close_now()
            during = [ms for t, ms in lat if window[0] <= t <= window[1]]
            return window[1] - window[0], during

        load_range(connect, KEYS)
        connect().execute("INSERT INTO kv (key, value) VALUES ('probe', 'x')")
        insert = "INSERT INTO kv (key, value) VALUES " + ", ".join(f"('i:{i:06}', 'v')" for i in range(100_000))
        cases = [
            ("quiet (no statement)", None),
            ("COUNT(*) over 1M keys", "SELECT COUNT(*) FROM kv WHERE key >= 'r:'"),
            ("LIKE scan over 1M keys", "SELECT key FROM kv WHERE key LIKE 'r:%x'"),
            ("INSERT of 100,000 rows", insert),
            ("DELETE of 1M keys", "DELETE FROM kv WHERE key >= 'r:' AND key < 'r;'"),
        ]
        print(f"cores={CORES} ({BIN})")
        print("statement\ttook_s\tprobes\tp50_ms\tp99_ms\tmax_ms")
        for name, sql in cases:
            took, lat = probe_during(sql)
            print(f"{name}\t{took:.2f}\t{len(lat)}\t{pct(lat, 0.5):.2f}\t{pct(lat, 0.99):.2f}\t{max(lat):.2f}", flush=True)
    finally:
        server.kill()
        server.wait()
        subprocess.run(["rm", "-rf", root])


if __name__ == "__main__":
    main()
