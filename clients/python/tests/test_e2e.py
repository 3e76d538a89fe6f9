"""End to end against the real velocityd built from this repository, over TLS and plain TCP."""

import asyncio
import subprocess
import time

import pytest

import velocity
from velocity import protocol as p

from conftest import PASSWORD, RO_PASSWORD, REPO, velocityd


def admitted(s):
    """A connection once the server has a slot for it. A slot is returned when the server has
    seen its connection close, a moment after the client closed it: a connection opened at once
    may still find the server full."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return s.alice()
        except velocity.ServerOverloaded:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def test_seed_examples_in_order(server):
    with server.alice() as db:
        with pytest.raises(velocity.KeyNotFound) as e:
            db.execute("SELECT value FROM kv WHERE key = 'user:1';")
        assert e.value.code == 0x0004
        assert db.execute("INSERT INTO kv (key, value) VALUES ('user:1', 'alice');").affected == 1
        assert db.execute("SELECT value FROM kv WHERE key = 'user:1';").scalar() == b"alice"
        assert db.execute("UPDATE kv SET value = 'alice_updated' WHERE key = 'user:1';").affected == 1
        assert db.execute("SELECT value FROM kv WHERE key = 'user:1';").text() == [("alice_updated",)]
        assert db.execute("DELETE FROM kv WHERE key = 'user:1';").affected == 1
        assert db.execute("DELETE FROM kv WHERE key = 'user:1';").affected == 0
        with pytest.raises(velocity.KeyNotFound):
            db.execute("UPDATE kv SET value = 'x' WHERE key = 'user:1';")
        batch = (
            "INSERT INTO kv (key, value) VALUES \n  ('user:1', 'alice'),\n  ('user:2', 'bob'),\n"
            "  ('user:3', 'charlie');"
        )
        assert db.execute(batch).affected == 3
        like = db.execute("SELECT key, value FROM kv WHERE key LIKE 'user:%' LIMIT 100;")
        assert like.columns == ["key", "value"]
        assert like.text() == [("user:1", "alice"), ("user:2", "bob"), ("user:3", "charlie")]
        rng = db.execute("SELECT key, value FROM kv WHERE key >= 'user:1' AND key <= 'user:9';")
        assert rng.rows == like.rows
        count = db.execute("SELECT COUNT(*) FROM kv;")
        assert (count.columns, count.rows) == (["count"], [(3,)])
        stats = db.execute("SHOW STATS;").as_dict()
        assert stats["keys"] == 3
        status = db.execute("SHOW STATUS;").as_dict()
        assert status["shards"] == 2
        assert status["tls"] == (b"TLS 1.3" if server.tls else b"off")
        assert status["user"] == b"alice"
        assert db.server_info.tls == server.tls
        assert db.ping(b"hi") == b"hi"
        assert db.stats().columns == ["name", "value"]


def test_pipelining_ten_thousand_statements(server):
    with server.alice() as db:
        with db.pipeline() as pipe:
            for i in range(10_000):
                pipe.execute("INSERT INTO kv (key, value) VALUES (?, ?)", [f"k{i:05}", f"v{i}"])
        assert len(pipe.results) == 10_000
        assert all(r.affected == 1 for r in pipe.results)
        pipe = db.pipeline()
        for i in range(10_000):
            pipe.execute("SELECT value FROM kv WHERE key = ?", [f"k{i:05}"])
        pipe.execute("SELECT value FROM kv WHERE key = 'missing'")
        results = pipe.run(raise_on_error=False)
        assert [r.scalar() for r in results[:-1]] == [f"v{i}".encode() for i in range(10_000)]
        assert isinstance(results[-1], velocity.KeyNotFound)
        # The first error is raised after every reply was read: the connection stays in step.
        with pytest.raises(velocity.InvalidCommand):
            db.pipeline().execute("SELECT nonsense").execute("SELECT COUNT(*) FROM kv").run()
        assert db.execute("SELECT COUNT(*) FROM kv").scalar() == 10_000


def test_user_data_cannot_escape_its_literal(server):
    hostile = ["'; DELETE FROM kv; --", "it's", "\x00\xff binary", "\n\t", "ключ ✓", "%_\\", "?", "x"]
    with server.alice() as db:
        db.execute("INSERT INTO kv (key, value) VALUES ('keep', 'me')")
        for h in hostile:
            db.execute("INSERT INTO kv (key, value) VALUES (?, ?)", [h, h])
            assert db.execute("SELECT value FROM kv WHERE key = ?", [h]).text() == [(h,)], h
            raw = h.encode() + b"\xfe"
            db.execute(f"INSERT INTO kv (key, value) VALUES ({velocity.quote(raw)}, {velocity.quote(raw)})")
            assert db.execute("SELECT value FROM kv WHERE key = ?", [raw]).scalar() == raw
        assert db.execute("SELECT value FROM kv WHERE key = 'keep'").scalar() == b"me"
        assert db.execute("SELECT COUNT(*) FROM kv").scalar() == 1 + 2 * len(hostile)


def test_ttl_and_null(server):
    with server.alice() as db:
        db.execute("INSERT INTO kv (key, value, ttl) VALUES ('t', 'v', 100)")
        db.execute("INSERT INTO kv (key, value) VALUES ('n', 'v')")
        rows = dict(db.execute("SELECT key, ttl FROM kv WHERE key IN ('t', 'n')").text())
        assert rows["n"] is None and 0 < rows["t"] <= 100


def test_every_error_code_the_client_can_provoke(make_server):
    s = make_server(1, ("--plaintext", "--rate-limit-conn", "5:5", "--max-connections", "3"))
    # INVALID_CREDENTIALS
    with pytest.raises(velocity.InvalidCredentials) as e:
        s.connect(user="alice", password="wrong")
    assert e.value.code == 1
    with s.alice() as db:
        # INVALID_COMMAND, saying where the problem is
        with pytest.raises(velocity.InvalidCommand) as e:
            db.execute("SELECT value FORM kv")
        assert e.value.code == 3 and "FORM" in e.value.message
        # KEY_NOT_FOUND
        with pytest.raises(velocity.KeyNotFound):
            db.execute("UPDATE kv SET value = 'x' WHERE key = 'absent'")
        # PROTOCOL_ERROR: an unknown frame type is answered, and the connection stays open.
        r = db.send_raw(p.encode_frame(0x7F, b""))
        assert isinstance(r, velocity.ProtocolError) and r.code == 6
        assert db.ping(b"still here") == b"still here"
        # RATE_LIMITED: 5 requests/s with a burst of 5 on this connection.
        pipe = db.pipeline()
        for _ in range(20):
            pipe.execute("SELECT COUNT(*) FROM kv")
        out = pipe.run(raise_on_error=False)
        assert any(isinstance(r, velocity.RateLimited) and r.code == 2 for r in out)
    # UNAUTHORIZED: a read-only user writing, and a command before logging in.
    with s.connect(user="reader", password=RO_PASSWORD) as ro:
        with pytest.raises(velocity.Unauthorized) as e:
            ro.execute("INSERT INTO kv (key, value) VALUES ('a', 'b')")
        assert e.value.code == 8
    with s.connect() as anon:
        with pytest.raises(velocity.Unauthorized):
            anon.execute("SELECT COUNT(*) FROM kv")
    # SERVER_OVERLOADED: beyond --max-connections.
    held = [admitted(s) for _ in range(3)]
    with pytest.raises(velocity.ServerOverloaded) as e:
        s.alice()
    assert e.value.code == 7
    for c in held:
        c.close()
    # A framing violation is answered with PROTOCOL_ERROR, then the server closes.
    with admitted(s) as db:
        r = db.send_raw(b"VELX" + bytes(10))
        assert isinstance(r, velocity.ProtocolError)
        with pytest.raises(velocity.Disconnected):
            db.ping()


def test_storage_error_when_the_disk_is_full(make_server):
    # A file-size limit stands in for a full disk: the write that does not fit is refused with
    # STORAGE_ERROR and is not applied.
    s = make_server(1, ("--plaintext", "--audit", "off"), fsize=24 * 1024)
    with s.alice() as db:
        with pytest.raises(velocity.StorageError) as e:
            for i in range(1000):
                db.execute("INSERT INTO kv (key, value) VALUES (?, ?)", [f"k{i}", "v" * 200])
        assert e.value.code == 5
        assert db.execute("SELECT COUNT(*) FROM kv").scalar() == i
        with pytest.raises(velocity.KeyNotFound):
            db.execute("SELECT value FROM kv WHERE key = ?", [f"k{i}"])


def test_api_key_login(make_server):
    # Waiting for the key file to be reloaded means failed logins; throttling is tested in Rust.
    s = make_server(1, ("--login-fail-threshold", "0"))
    key = velocityd("apikey", "create", "--user", "alice", data_dir=s.data_dir).strip()
    for _ in range(50):  # the server picks up a new key within a second
        try:
            db = s.connect(api_key=key)
            break
        except velocity.InvalidCredentials:
            time.sleep(0.1)
    with db:
        assert db.execute("SHOW STATUS").as_dict()["user"] == b"alice"
    with pytest.raises(velocity.InvalidCredentials):
        s.connect(api_key="vk_00000000_nope")


def test_trust_on_first_use_and_a_changed_key(make_server, tmp_dir):
    s = make_server(1)
    kh = tmp_dir / "kh" / "known_hosts"
    with pytest.raises(velocity.TrustError, match="unknown server"):
        s.connect(known_hosts=kh, accept_new_host=False)
    assert not kh.exists()
    asked = []
    with pytest.raises(velocity.TrustError):
        s.connect(known_hosts=kh, accept_new_host=lambda h, fp: asked.append((h, fp)) or False)
    assert asked and asked[0][0] == f"127.0.0.1:{s.port}" and asked[0][1].startswith("SHA256:")
    assert not kh.exists()
    with s.connect(known_hosts=kh, accept_new_host=True, user="alice", password=PASSWORD) as db:
        fp = db.fingerprint
    line = kh.read_text()
    assert line == f"127.0.0.1:{s.port} {fp}\n"
    # The operator's command prints the same fingerprint.
    assert velocityd("fingerprint", data_dir=s.data_dir).strip() == fp
    s.connect(known_hosts=kh, accept_new_host=False).close()
    # Pinning.
    s.connect(known_hosts=tmp_dir / "other", fingerprint=fp).close()
    with pytest.raises(velocity.TrustError, match="pinned"):
        s.connect(known_hosts=tmp_dir / "other", fingerprint="SHA256:" + "A" * 43)
    # The Rust CLI trusts the file the Python client wrote.
    cli = subprocess.run(
        [str(REPO / "target" / "release" / "velocity-cli"), "--port", str(s.port), "-u", "alice",
         "--password-stdin", "--known-hosts", str(kh), "-c", "SHOW STATUS"],
        input=PASSWORD, capture_output=True, text=True,
    )
    assert cli.returncode == 0, cli.stderr
    # Another server (another identity key) on the same port: refused loudly, even when new
    # hosts are accepted, and the file is left alone.
    port = s.port
    s.stop()
    s2 = make_server(1, port=port)
    with pytest.raises(velocity.TrustError, match="HAS CHANGED") as e:
        s2.connect(known_hosts=kh, accept_new_host=True)
    assert fp in str(e.value)
    assert kh.read_text() == line


def test_tls_and_plaintext_mismatch_give_clear_errors(make_server):
    tls = make_server(1)
    plain = make_server(1, ("--plaintext",))
    with pytest.raises(velocity.ProtocolError, match="tls=True"):
        tls.connect(tls=False)
    with pytest.raises(velocity.ProtocolError, match="tls=False"):
        plain.connect(tls=True)


def test_asyncio_variant(server):
    from velocity import aio

    async def main():
        db = await aio.connect("127.0.0.1", server.port, user="alice", password=PASSWORD, tls=server.tls,
                               known_hosts=server.known_hosts, accept_new_host=True)
        async with db:
            await db.execute("INSERT INTO kv (key, value) VALUES (?, ?)", ["a", "1"])
            replies = await db.pipeline([("SELECT value FROM kv WHERE key = ?", ["a"])] * 3000)
            assert [r.scalar() for r in replies] == [b"1"] * 3000
            with pytest.raises(velocity.KeyNotFound):
                await db.execute("SELECT value FROM kv WHERE key = 'b'")
            assert await db.ping(b"x") == b"x"

    asyncio.run(main())
