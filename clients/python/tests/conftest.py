"""Starts the real ``velocityd`` built from this repository on a free loopback port, with a fresh
data directory and two users, and stops it after the test."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
PASSWORD = "correct horse battery staple"
RO_PASSWORD = "read only please"


def velocityd_path() -> str:
    explicit = os.environ.get("VELOCITYD")
    if explicit:
        return explicit
    path = REPO / "target" / "release" / "velocityd"
    if not path.exists():
        subprocess.run(["cargo", "build", "--release", "--locked", "--bin", "velocityd"], cwd=REPO, check=True)
    return str(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def velocityd(*args: str, data_dir: Path, stdin: str = "") -> str:
    out = subprocess.run(
        [velocityd_path(), *args, "--data-dir", str(data_dir)], input=stdin, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


class Server:
    def __init__(self, data_dir: Path, cores: int = 2, extra=(), port: int = 0, fsize: int = 0) -> None:
        self.data_dir = data_dir
        self.tls = "--plaintext" not in extra
        self.known_hosts = data_dir.parent / (data_dir.name + ".known_hosts")
        self.log = data_dir.parent / (data_dir.name + ".log")
        deadline = time.monotonic() + 20
        while True:
            self.port = port or free_port()
            self.proc = subprocess.Popen(
                [velocityd_path(), "--listen", f"127.0.0.1:{self.port}", "--cores", str(cores),
                 "--data-dir", str(data_dir), *extra],
                stdout=subprocess.DEVNULL, stderr=open(self.log, "w"),
                preexec_fn=(lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))) if fsize else None,
            )
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break  # the port was taken, or a start-up error: try again
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    return
                except OSError:
                    time.sleep(0.02)
            assert time.monotonic() < deadline, "velocityd did not start:\n" + self.log.read_text()

    def connect(self, **kw):
        import velocity

        kw.setdefault("tls", self.tls)
        kw.setdefault("known_hosts", self.known_hosts)
        kw.setdefault("accept_new_host", True)
        return velocity.connect("127.0.0.1", self.port, **kw)

    def alice(self, **kw):
        return self.connect(user="alice", password=PASSWORD, **kw)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def tmp_dir():
    d = Path(tempfile.mkdtemp(prefix="velocity-py-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def make_server(tmp_dir):
    """``make_server(cores=2, extra=(), port=0, data_dir=None)``: a started server with users
    alice (readwrite) and reader (readonly)."""
    started = []

    def make(cores: int = 2, extra=(), port: int = 0, data_dir: Path = None, fsize: int = 0) -> Server:
        if data_dir is None:
            data_dir = tmp_dir / f"data{len(started)}"
            data_dir.mkdir()
            velocityd("user", "add", "alice", "--role", "readwrite", "--password-stdin", data_dir=data_dir, stdin=PASSWORD)
            velocityd("user", "add", "reader", "--role", "readonly", "--password-stdin", data_dir=data_dir, stdin=RO_PASSWORD)
        s = Server(data_dir, cores, extra, port, fsize)
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()


@pytest.fixture(params=["tls", "plaintext"])
def server(request, make_server):
    return make_server(2, () if request.param == "tls" else ("--plaintext",))
