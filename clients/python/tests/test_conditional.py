"""insert_if_absent, cas and incr (blocking and asyncio) against the real velocityd: what each
returns, what the server refuses, and that racing connections lose no update."""

import asyncio
import threading

import pytest

import velocity
from velocity import aio

from conftest import PASSWORD

I64_MAX = (1 << 63) - 1
I64_MIN = -(1 << 63)


def value_of(db, key):
    return db.execute("SELECT value FROM kv WHERE key = ?", [key]).scalar()


def test_insert_if_absent(server):
    with server.alice() as db:
        assert db.insert_if_absent("lock", "worker-7") is True
        assert db.insert_if_absent("lock", "worker-8") is False
        assert value_of(db, "lock") == b"worker-7"
        # With a TTL; a live key keeps its value and its TTL when the second try loses.
        assert db.insert_if_absent(b"lease\xff", b"\x00one", ttl=100) is True
        assert db.insert_if_absent(b"lease\xff", "two", ttl=5) is False
        assert db.execute("SELECT value, ttl FROM kv WHERE key = ?", [b"lease\xff"]).rows[0][0] == b"\x00one"
        assert 5 < db.execute("SELECT ttl FROM kv WHERE key = ?", [b"lease\xff"]).scalar() <= 100
        # Quoting: hostile keys and values stay literals.
        hostile = "'); DELETE FROM kv WHERE key LIKE '%"
        assert db.insert_if_absent(hostile, hostile) is True
        assert value_of(db, hostile) == hostile.encode()
        assert db.execute("SELECT COUNT(*) FROM kv").scalar() == 3
        # The server's own checks stay the server's: ttl = 0 is refused.
        with pytest.raises(velocity.InvalidCommand):
            db.insert_if_absent("zero", "v", ttl=0)
        for bad in ("10", -1, 1.5, True):
            with pytest.raises(velocity.UsageError):
                db.insert_if_absent("k", "v", ttl=bad)
        with pytest.raises(velocity.UsageError):
            db.insert_if_absent(7, "v")
        with pytest.raises(velocity.UsageError):
            db.insert_if_absent("k", None)


def test_cas(server):
    with server.alice() as db:
        assert db.cas("missing", "a", "b") is False
        with pytest.raises(velocity.KeyNotFound):
            value_of(db, "missing")
        db.execute("INSERT INTO kv (key, value, ttl) VALUES ('owner', 'worker-7', 100)")
        assert db.cas("owner", "worker-8", "worker-9") is False
        assert value_of(db, "owner") == b"worker-7"
        assert db.cas("owner", "worker-7", "worker-8") is True
        assert value_of(db, "owner") == b"worker-8"
        # The TTL is kept.
        assert 0 < db.execute("SELECT ttl FROM kv WHERE key = 'owner'").scalar() <= 100
        # Exact bytes: a prefix or a different byte does not match.
        assert db.cas("owner", "worker-", "x") is False
        db.execute("INSERT INTO kv (key, value) VALUES (?, ?)", ["bin", b"\x00\xff'"])
        assert db.cas("bin", b"\x00\xfe'", b"no") is False
        assert db.cas("bin", b"\x00\xff'", "it's") is True
        assert value_of(db, "bin") == b"it's"
        with pytest.raises(velocity.UsageError):
            db.cas("bin", 1, "x")


def test_incr(server):
    with server.alice() as db:
        assert db.incr("hits") == 1
        assert db.incr("hits") == 2
        assert db.incr("hits", 10) == 12
        assert db.incr("hits", -20) == -8
        assert db.incr("hits", 0) == -8
        assert value_of(db, "hits") == b"-8"
        assert db.incr("down", -5) == -5
        # The extremes of the step, both written without a sign in the statement.
        assert db.incr("min", I64_MIN) == I64_MIN
        assert db.incr("max", I64_MAX) == I64_MAX
        # Overflow is the server's INVALID_COMMAND, and changes nothing.
        with pytest.raises(velocity.InvalidCommand, match="overflow"):
            db.incr("max")
        assert value_of(db, "max") == str(I64_MAX).encode()
        with pytest.raises(velocity.InvalidCommand, match="overflow"):
            db.incr("min", -1)
        assert db.incr("max", -1) == I64_MAX - 1
        # A value that is not an integer: refused, unchanged, TTL included.
        db.execute("INSERT INTO kv (key, value, ttl) VALUES ('name', 'alice', 100)")
        with pytest.raises(velocity.InvalidCommand, match="not an integer"):
            db.incr("name")
        assert value_of(db, "name") == b"alice"
        assert 0 < db.execute("SELECT ttl FROM kv WHERE key = 'name'").scalar() <= 100
        # The connection is still in step after the errors.
        assert db.incr("hits") == -7
        # A step that is not a signed 64-bit integer never reaches the server.
        for bad in (I64_MAX + 1, I64_MIN - 1, 1.0, "1", True, None):
            with pytest.raises(velocity.UsageError):
                db.incr("hits", bad)
        assert value_of(db, "hits") == b"-7"


def test_asyncio_helpers(server):
    async def main():
        db = await aio.connect("127.0.0.1", server.port, user="alice", password=PASSWORD, tls=server.tls,
                               known_hosts=server.known_hosts, accept_new_host=True)
        async with db:
            assert await db.insert_if_absent("lock", "a", ttl=60) is True
            assert await db.insert_if_absent("lock", "b") is False
            assert await db.cas("lock", "b", "c") is False
            assert await db.cas("lock", "a", "c") is True
            assert await db.cas("nope", "a", "c") is False
            assert await db.incr("n") == 1
            assert await db.incr("n", -3) == -2
            with pytest.raises(velocity.InvalidCommand):
                await db.incr("lock")
            with pytest.raises(velocity.UsageError):
                await db.incr("n", I64_MAX + 1)
            assert await db.incr("n", 2) == 0

    asyncio.run(main())


def _connections(s, n):
    """n connections to s, logged in with one Argon2id derivation."""
    first = s.alice()
    cred = velocity.derive_credential(first.server_info, "alice", PASSWORD)
    return [first] + [s.connect(user="alice", credential=cred) for _ in range(n - 1)]


def _run_threads(conns, work):
    errors = []

    def run(db):
        try:
            work(db)
        except BaseException as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    threads = [threading.Thread(target=run, args=(db,)) for db in conns]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_eight_connections_racing_incr_lose_nothing(make_server):
    s = make_server(2)
    conns = _connections(s, 8)
    try:
        seen = []

        def work(db):
            seen.append([db.incr("counter") for _ in range(500)])

        _run_threads(conns, work)
        assert value_of(conns[0], "counter") == b"4000"
        # Every increment saw its own new value: 1 to 4000, each once.
        assert sorted(v for vs in seen for v in vs) == list(range(1, 4001))
    finally:
        for db in conns:
            db.close()


def test_eight_connections_racing_a_cas_loop_lose_nothing(make_server):
    s = make_server(2)
    conns = _connections(s, 8)
    try:
        conns[0].execute("INSERT INTO kv (key, value) VALUES ('n', '0')")

        def work(db):
            for _ in range(200):
                while True:  # read, compare-and-set the next value, retry when another won
                    cur = value_of(db, "n")
                    if db.cas("n", cur, str(int(cur) + 1)):
                        break

        _run_threads(conns, work)
        assert value_of(conns[0], "n") == b"1600"
    finally:
        for db in conns:
            db.close()


def test_async_tasks_racing_incr_lose_nothing(make_server):
    s = make_server(2, ("--plaintext",))

    async def main():
        trust = dict(tls=False, known_hosts=s.known_hosts, accept_new_host=True)
        first = await aio.connect("127.0.0.1", s.port, user="alice", password=PASSWORD, **trust)
        cred = velocity.derive_credential(first.server_info, "alice", PASSWORD)
        conns = [first] + [await aio.connect("127.0.0.1", s.port, user="alice", credential=cred, **trust)
                           for _ in range(7)]
        try:
            async def work(db):
                for _ in range(500):
                    await db.incr("counter", -1)

            await asyncio.gather(*(work(db) for db in conns))
            assert await conns[0].incr("counter", 0) == -4000
        finally:
            for db in conns:
                await db.close()

    asyncio.run(main())
