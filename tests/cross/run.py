#!/usr/bin/env python3
"""Cross-client check: every client writes, every client reads, all agree byte for byte.

Starts the real velocityd (``$VELOCITYD``, else target/release/velocityd) on a free loopback port,
once over TLS and once over plain TCP. In each run, each of the five clients (Rust, Python,
Node.js, Go, Java) writes the same set of awkward keys and values under its own prefix
``x:<client>:`` through its own parameter binding and quoting; then each client reads every key of
every writer (a LIKE scan, a COUNT, a point read per key and one IN list of all keys, each with
the keys bound as parameters) and prints them in one canonical form (``dump`` below). Each dump
must equal, byte for byte, the one this script computes from the data set. velocity-cli's
``--json`` output is checked too (COUNT and scan: the CLI has no parameter binding).

Trust on first use: each writer records the server in a known-hosts file of its own
(``--accept-new-host``); each file must hold exactly ``127.0.0.1:PORT <velocityd fingerprint>``.
Each reader then connects *without* accepting new hosts, trusting the file another client
wrote. (Over plain TCP too: the clients check SERVER_INFO's fingerprint against known_hosts
either way.)

The runners (built by scripts/test-cross.sh) live in tests/cross: cross.py, cross.js,
go/main.go, Cross.java and rust/cross.rs. They share one interface: ``write SPEC PREFIX`` and
``read``, the server and login from CROSS_* variables and VELOCITY_PASSWORD.

    target/pyenv/bin/python tests/cross/run.py [--clients rust,python,...] [--modes tls,plain] [-v]

Exits non-zero, saying which client disagreed on which key, if any check fails; its last line
is ``cross-client: N passed, M failed``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CROSS = REPO / "tests" / "cross"
BUILD = REPO / "target" / "cross"
USER = "cross"
PASSWORD = "cross-client password: 'quoted' \\ too"
TTL = 3600
# Seconds left, rounded up, as read back: at most TTL, and the whole test takes far less than
# the slack.
TTL_MIN, TTL_MAX = TTL - 600, TTL
MAX_PAYLOAD = 4 << 20  # each scan returns every writer's two 100 KiB values
CLIENTS = ["rust", "python", "node", "go", "java"]
RUNNER_TIMEOUT_S = 120


def velocityd_path() -> Path:
    return Path(os.environ.get("VELOCITYD") or REPO / "target" / "release" / "velocityd")


def cli_path() -> Path:
    return Path(os.environ.get("VELOCITY_CLI") or velocityd_path().parent / "velocity-cli")


def bcprov_jar() -> Path:
    return Path(os.environ.get("BCPROV_JAR") or "/usr/share/java/bcprov.jar")


def runner(name: str) -> list:
    """The command line that starts a client's runner."""
    if name == "python":
        return [sys.executable, str(CROSS / "cross.py")]
    if name == "node":
        return ["node", str(CROSS / "cross.js")]
    if name == "go":
        return [str(BUILD / "go" / "cross")]
    if name == "java":
        cp = [BUILD / "java", REPO / "clients" / "java" / "target" / "classes", bcprov_jar()]
        return ["java", "-cp", os.pathsep.join(map(str, cp)), "Cross"]
    if name == "rust":
        return [os.environ.get("CROSS_RUST_RUNNER") or str(REPO / "target" / "release" / "velocity-cross")]
    raise SystemExit(f"unknown client {name!r}; known: {', '.join(CLIENTS)}")


def missing_prerequisites(clients) -> list:
    """What is not there to run: each with the step that makes it."""
    out = []
    if not velocityd_path().is_file():
        out.append(f"{velocityd_path()}: no velocityd (set VELOCITYD, or run scripts/test.sh)")
    if not cli_path().is_file():
        out.append(f"{cli_path()}: no velocity-cli beside velocityd (set VELOCITY_CLI)")
    for name in clients:
        if name == "python":
            try:
                import velocity  # noqa: F401
            except ImportError:
                out.append(f"{sys.executable}: the Python client is not installed here (run scripts/test.sh, "
                           "then use target/pyenv/bin/python)")
        elif name == "node":
            if shutil.which("node") is None:
                out.append("node: not installed (scripts/test.sh installs it)")
            if not (REPO / "clients" / "node" / "node_modules" / "hash-wasm").is_dir():
                out.append("clients/node/node_modules: missing (scripts/test.sh runs npm ci there)")
        elif name == "java":
            if not (REPO / "clients" / "java" / "target" / "classes" / "dev").is_dir():
                out.append("clients/java/target/classes: missing (run scripts/test-java.sh)")
            if not bcprov_jar().is_file():
                out.append(f"{bcprov_jar()}: no Bouncy Castle jar (scripts/test-java.sh installs libbcprov-java)")
            if not (BUILD / "java" / "Cross.class").is_file():
                out.append("target/cross/java/Cross.class: not built (scripts/test-cross.sh builds it)")
        else:
            exe = Path(runner(name)[0])
            if not exe.is_file():
                out.append(f"{exe}: the {name} runner is not built (scripts/test-cross.sh builds it)")
    return out


# ---- the data set ---------------------------------------------------------------------------

def big_text() -> bytes:
    """About 100 KiB of text full of quotes, backslashes and multi-byte characters, cut at a
    character boundary."""
    unit = "it's ''quoted'' \\ back\\\\slash ünïcödé € 😀 ? ".encode()
    b = (unit * (102400 // len(unit) + 1))[:102400]
    return b.decode("utf-8", "ignore").encode()


CASES = [
    # (key kind, key suffix, value kind, value, ttl). "text" entries are passed to the client
    # as its native string type, "bytes" entries as its byte-array type.
    ("text", b"", "text", b"the empty suffix: the key is the prefix alone", None),
    ("text", b"empty", "text", b"", None),
    ("text", b"empty-bytes", "bytes", b"", None),
    ("text", b"quotes", "text", b"it's ''doubled'' and 'single' and \\ back\\\\slashes \\' end'", None),
    ("text", b"one-quote", "text", b"'", None),
    ("text", b"backslash", "text", b"\\", None),
    ("text", b"sql", "text", b"'); DELETE FROM kv WHERE key LIKE '%'; --", None),
    ("text", b"qmark", "text", b"what? ? '?' ?? (a ? in a parameter is not a placeholder)", None),
    ("text", b"unicode", "text",
     "héllo wörld — 日本語 ∑ 😀 👩‍💻 e\u0301 \u00a0nbsp \ufeffbom \u200bzw \u2028ls \U0010fffd".encode(), None),
    ("text", b"control", "text", b"line1\nline2\r\n\ttab \x1b[31mred\x1b[0m \x7fdel \x00nul", None),
    ("bytes", b"all-bytes", "bytes", bytes(range(256)), None),
    ("text", b"nul", "bytes", b"\x00", None),
    ("text", b"non-utf8", "bytes",
     b"\xff\xfe caf\xe9 \xc3\x28 \xc0\xaf \xed\xa0\x80 \xf4\x90\x80\x80 \x80 tail", None),
    ("text", b"printable-bytes", "bytes", b"plain ASCII passed as bytes, with 'quotes'", None),
    ("text", b"big-text", "text", big_text(), None),
    ("text", b"big-binary", "bytes", bytes((i * 167 + (i >> 8)) & 0xFF for i in range(102400)), None),
    ("text", b"key 'with' ''quotes'' \\ and ?", "text", b"a key with quotes", None),
    ("bytes", b"bin\x00\x01\n\xff\xfe", "text", b"a binary key", None),
    ("text", "ключ-日本-😀".encode(), "text", b"a unicode key", None),
    ("text", b"like_%\\", "text", b"LIKE metacharacters in a key", None),
    ("text", b"ttl", "text", b"expires in an hour", TTL),
    ("bytes", b"ttl-bin\xff", "bytes", b"\x00expires\xff", TTL),
]


def spec_text() -> str:
    lines = []
    for kk, k, vk, v, ttl in CASES:
        for kind, b in ((kk, k), (vk, v)):
            if kind == "text":
                b.decode("utf-8")  # text must be valid UTF-8
        lines.append(f"{kk} {k.hex()} {vk} {v.hex()} {'-' if ttl is None else ttl}")
    return "\n".join(lines) + "\n"


def value_token(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, int):
        return f"i:{v}"
    return "b:" + v.hex()


def ttl_token(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, int):
        return "ttl" if TTL_MIN <= v <= TTL_MAX else f"ttl!{v}"
    return value_token(v)


def expected_rows(writers) -> list:
    rows = []
    for w in writers:
        prefix = f"x:{w}:".encode()
        for _kk, k, _vk, v, ttl in CASES:
            rows.append((prefix + k, v, ttl))
    rows.sort(key=lambda r: r[0])
    return rows


def dump(rows, sections=("count", "scan", "point", "in")) -> str:
    """The canonical form every runner prints, from (key, value, ttl) rows."""
    rows = sorted(rows, key=lambda r: r[0])
    body = [f"{value_token(k)} {value_token(v)} {ttl_token(t)}" for k, v, t in rows]
    out = []
    for s in sections:
        if s == "count":
            out.append(f"count {len(rows)}")
        else:
            out.extend(f"{s} {line}" for line in body)
    return "".join(line + "\n" for line in out)


# ---- the server -----------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, root: Path, tls: bool) -> None:
        self.tls = tls
        self.data_dir = root / ("data-tls" if tls else "data-plain")
        self.data_dir.mkdir()
        self.log = root / (self.data_dir.name + ".log")
        out = subprocess.run(
            [str(velocityd_path()), "user", "add", USER, "--role", "readwrite", "--password-stdin",
             "--data-dir", str(self.data_dir)], input=PASSWORD, capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"velocityd user add failed:\n{out.stderr}")
        # Plain TCP too: SERVER_INFO carries the fingerprint either way, and every client checks
        # it against its known-hosts file (without TLS nothing proves the server holds that key).
        out = subprocess.run([str(velocityd_path()), "fingerprint", "--data-dir", str(self.data_dir)],
                             capture_output=True, text=True, check=True)
        self.fingerprint = out.stdout.strip()
        deadline = time.monotonic() + 20
        while True:
            self.port = free_port()
            cmd = [str(velocityd_path()), "--listen", f"127.0.0.1:{self.port}", "--cores", "2",
                   "--data-dir", str(self.data_dir), "--max-payload", str(MAX_PAYLOAD)]
            if not tls:
                cmd.append("--plaintext")
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(self.log, "w"))
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break  # the port was taken in between, or a start-up error: try again
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    return
                except OSError:
                    time.sleep(0.02)
            if time.monotonic() >= deadline:
                self.stop()
                raise SystemExit("velocityd did not start:\n" + self.log.read_text())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ---- the checks -----------------------------------------------------------------------------

class Checks:
    def __init__(self, verbose: bool) -> None:
        self.passed = 0
        self.failed = []
        self.verbose = verbose

    def ok(self, what: str) -> None:
        self.passed += 1
        if self.verbose:
            print(f"  ok   {what}", flush=True)

    def fail(self, what: str, detail: str) -> None:
        self.failed.append(what)
        print(f"  FAIL {what}\n{detail}", flush=True)


def short(line: str, n: int = 160) -> str:
    return line if len(line) <= n else f"{line[:n]}… ({len(line)} chars)"


def key_of(line: str) -> str:
    """The key of a dump line, readable: ``x:rust:quotes``."""
    parts = line.split(" ")
    if parts[0] == "count":
        return "(the COUNT(*) line)"
    if len(parts) > 1 and parts[1].startswith("b:"):
        try:
            return repr(bytes.fromhex(parts[1][2:]).decode("utf-8", "backslashreplace"))
        except ValueError:
            pass
    return "?"


def explain_diff(got: str, want: str) -> str:
    g, w = got.split("\n"), want.split("\n")
    out = []
    for i in range(max(len(g), len(w))):
        a = g[i] if i < len(g) else "<no line>"
        b = w[i] if i < len(w) else "<no line>"
        if a != b:
            out.append(f"    line {i + 1}, key {key_of(b)}:\n      got  {short(a)}\n      want {short(b)}")
            if len(out) == 5:
                out.append("    …")
                break
    out.append(f"    ({len(g)} lines, {len(w)} expected)")
    return "\n".join(out)


def run_runner(name: str, args: list, env: dict) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(runner(name) + args, env=env, capture_output=True, timeout=RUNNER_TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        return subprocess.CompletedProcess(e.cmd, -1, e.stdout or b"", (e.stderr or b"") + b"\n(timed out)")


def failure_text(p: subprocess.CompletedProcess) -> str:
    err = p.stderr.decode("utf-8", "replace").strip()[-3000:]
    return f"    exit status {p.returncode}\n    " + err.replace("\n", "\n    ")


def known_hosts_lines(path: Path) -> list:
    if not path.exists():
        return []
    return [line for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def cli_read(server: Server, known_hosts: Path) -> subprocess.CompletedProcess:
    cmd = [str(cli_path()), "--host", "127.0.0.1", "--port", str(server.port), "--user", USER,
           "--password-stdin", "--json", "-c",
           "SELECT COUNT(*) FROM kv WHERE key LIKE 'x:%'; SELECT key, value, ttl FROM kv WHERE key LIKE 'x:%'"]
    cmd += ["--known-hosts", str(known_hosts)] + ([] if server.tls else ["--plaintext"])
    return subprocess.run(cmd, input=PASSWORD.encode(), capture_output=True, timeout=RUNNER_TIMEOUT_S)


def cli_dump(stdout: bytes) -> str:
    """velocity-cli --json lines (text as JSON strings, other bytes as {"hex": …}) in the
    canonical form."""
    def cell(j):
        if isinstance(j, dict):
            return bytes.fromhex(j["hex"])
        if isinstance(j, str):
            return j.encode("utf-8")
        return j

    # Split on newlines only: str.splitlines would also split at U+2028, which JSON leaves as is.
    lines = [line for line in stdout.decode("utf-8").split("\n") if line]
    count = json.loads(lines[0])["count"]
    rows = []
    for line in lines[1:]:
        o = json.loads(line)
        rows.append((cell(o["key"]), cell(o["value"]), cell(o["ttl"])))
    rows.sort(key=lambda r: r[0] if isinstance(r[0], bytes) else b"")
    body = [f"{value_token(k)} {value_token(v)} {ttl_token(t)}" for k, v, t in rows]
    return f"count {count}\n" + "".join(f"scan {b}\n" for b in body)


def run_mode(tls: bool, clients: list, tmp: Path, checks: Checks, keep: Path = None) -> None:
    mode = "tls" if tls else "plain"
    print(f"== {mode}: {len(clients)} writers, {len(clients)} readers + velocity-cli ==", flush=True)
    started = time.monotonic()
    server = Server(tmp, tls)
    try:
        spec = tmp / "spec.txt"
        spec.write_text(spec_text())
        base = dict(os.environ, CROSS_HOST="127.0.0.1", CROSS_PORT=str(server.port), CROSS_USER=USER,
                    VELOCITY_PASSWORD=PASSWORD, CROSS_TLS="1" if tls else "0",
                    CROSS_TTL_MIN=str(TTL_MIN), CROSS_TTL_MAX=str(TTL_MAX))
        expected_line = f"127.0.0.1:{server.port} {server.fingerprint}"
        hosts = {w: tmp / f"known_hosts.{mode}.{w}" for w in clients}

        # Writers one after another: each records the server in its own known-hosts file.
        for w in clients:
            env = dict(base, CROSS_KNOWN_HOSTS=str(hosts[w]), CROSS_ACCEPT_NEW="1")
            p = run_runner(w, ["write", str(spec), f"x:{w}:"], env)
            if p.returncode != 0:
                checks.fail(f"{mode}: {w} writes", failure_text(p))
                continue
            checks.ok(f"{mode}: {w} writes {len(CASES)} keys")
            got = known_hosts_lines(hosts[w])
            if got == [expected_line]:
                checks.ok(f"{mode}: {w} recorded the server in known_hosts")
            else:
                checks.fail(f"{mode}: {w}'s known_hosts", f"    got  {got}\n    want {[expected_line]}")

        # Readers in parallel; each trusts only the file the next writer recorded.
        want = dump(expected_rows(clients))
        if keep:
            (keep / f"{mode}.expected").write_text(want)
        jobs = {}
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(clients) + 1) as pool:
            for i, r in enumerate(clients):
                other = clients[(i + 1) % len(clients)]
                env = dict(base, CROSS_KNOWN_HOSTS=str(hosts[other]), CROSS_ACCEPT_NEW="0")
                jobs[r] = (other, pool.submit(run_runner, r, ["read"], env))
            cli_job = pool.submit(cli_read, server, hosts[clients[0]])
            dumps = {}
            explained = {}  # a wrong dump already shown, by the reader that printed it

            def wrong(what: str, got: str, want: str, reader: str) -> None:
                if got in explained:
                    checks.fail(what, f"    (the same dump as {explained[got]}'s)")
                else:
                    explained[got] = reader
                    checks.fail(what, explain_diff(got, want))

            for r, (other, job) in jobs.items():
                p = job.result()
                trusting = f" (trusting {other}'s known_hosts)"
                if p.returncode != 0:
                    checks.fail(f"{mode}: {r} reads{trusting}", failure_text(p))
                    continue
                got = p.stdout.decode("utf-8", "replace")
                dumps[r] = got
                if keep:
                    (keep / f"{mode}.{r}").write_text(got)
                if got == want:
                    checks.ok(f"{mode}: {r} reads every writer's keys{trusting}, byte for byte")
                else:
                    wrong(f"{mode}: {r} reads every writer's keys", got, want, r)
            p = cli_job.result()
            if p.returncode != 0:
                checks.fail(f"{mode}: velocity-cli --json reads", failure_text(p))
            else:
                want_cli = dump(expected_rows(clients), ("count", "scan"))
                try:
                    got = cli_dump(p.stdout)
                except (ValueError, KeyError, IndexError, TypeError) as e:
                    got = f"unreadable velocity-cli output: {e!r}\n"
                if got == want_cli:
                    checks.ok(f"{mode}: velocity-cli --json reads every writer's keys")
                else:
                    wrong(f"{mode}: velocity-cli --json reads", got, want_cli, "velocity-cli")
        # Which readers agree with which (all in one group when everything passes).
        groups = {}
        for r, d in dumps.items():
            groups.setdefault(d, []).append(r)
        if len(groups) > 1:
            print("  readers grouped by identical dumps: "
                  + "; ".join(", ".join(g) for g in groups.values()), flush=True)
    finally:
        server.stop()
        shutil.rmtree(server.data_dir, ignore_errors=True)
    print(f"   ({time.monotonic() - started:.1f} s)", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", default=",".join(CLIENTS), help="comma-separated subset of " + ",".join(CLIENTS))
    ap.add_argument("--modes", default="tls,plain", help="tls, plain or both (default)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every check that passes")
    ap.add_argument("--keep", type=Path, help="write the expected dump and every reader's dump to this directory")
    a = ap.parse_args()
    clients = [c for c in a.clients.split(",") if c]
    for c in clients:
        runner(c)  # unknown names exit here
    modes = [m for m in a.modes.split(",") if m]
    if any(m not in ("tls", "plain") for m in modes):
        raise SystemExit("--modes takes tls and/or plain")
    missing = missing_prerequisites(clients)
    if missing:
        print("cross-client check cannot run:\n  " + "\n  ".join(missing), file=sys.stderr)
        return 2
    # Each reader holds every writer's values in memory at once; clients open many files.
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
    except (ValueError, OSError):
        pass
    checks = Checks(a.verbose)
    if a.keep:
        a.keep.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="velocity-cross-"))
    try:
        for m in modes:
            run_mode(m == "tls", clients, tmp, checks, a.keep)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if checks.failed:
        print("failed: " + "; ".join(checks.failed))
    print(f"cross-client: {checks.passed} passed, {len(checks.failed)} failed")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
