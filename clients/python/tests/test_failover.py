"""Seeds, reconnection and retries (velocity.failover): OUTCOME_UNKNOWN's class, which statements
count as reads, what is sent again after a lost connection or SERVER_OVERLOADED — against a
scripted stand-in server for failures that a real one makes only by chance, and against the real
velocityd: a dead first seed, and a server killed (SIGKILL) and restarted mid-session."""

import asyncio
import select
import socket
import struct
import threading
import time

import pytest

import velocity
from velocity import aio
from velocity import protocol as p
from velocity.client import _frame_is_read
from velocity.errors import CODE_NAMES, ERRORS_BY_CODE, error_for
from velocity.failover import (
    RETRY_BACKOFF_MAX,
    backoff,
    is_read,
    overloaded_retry_safe,
    parse_seed,
    seed_list,
)

from conftest import PASSWORD, free_port

# -- codes ---------------------------------------------------------------------------------


def test_outcome_unknown_is_mapped_from_its_code():
    msg = ("the write reached the cluster but its outcome is unknown (a leader failed or timed out "
           "midway): it may or may not have been applied")
    e = error_for(0x0009, msg)
    assert type(e) is velocity.OutcomeUnknown and isinstance(e, velocity.VelocityError)
    assert (e.code, e.message, str(e)) == (9, msg, msg)
    assert ERRORS_BY_CODE[9] is velocity.OutcomeUnknown and CODE_NAMES[9] == "OUTCOME_UNKNOWN"
    assert "OutcomeUnknown" in velocity.__all__
    # Every code of docs/protocol.md's table has its class; a newer one stays unknown.
    assert sorted(ERRORS_BY_CODE) == list(range(1, 10))
    assert type(error_for(0x000A, "x")) is velocity.UnknownServerError


# -- which statements are reads ------------------------------------------------------------

READS = [
    "SELECT value FROM kv WHERE key = 'a'",
    "select count(*) from kv",
    "  \t\r\n SeLeCt key FROM kv",
    "-- a comment\nSELECT 1",
    "/* a /* nested */ comment */ SELECT value FROM kv WHERE key = 'a'",
    "/**/SELECT value FROM kv WHERE key = 'a'",
    "SELECT(value) FROM kv",
    "SHOW STATS",
    "show status;",
    "SHOW SLOWLOG",
    "SHOW SLOWLOG LIMIT 10",
    "SHOW /* which */ SLOWLOG -- all\n",
]
WRITES = [
    "INSERT INTO kv (key, value) VALUES ('a', 'b')",
    "UPDATE kv SET value = 'x' WHERE key = 'a'",
    "DELETE FROM kv WHERE key = 'a'",
    "INSERT INTO kv (key, value) VALUES ('SELECT', 'SELECT') RETURNING value",
    "INSERT INTO kv (key, value) VALUES ('hits', '1') ON CONFLICT (key) DO UPDATE SET value = value + 1 RETURNING value",
    "SHOW SLOWLOG RESET",
    "show slowlog /* all of it */ reset;",
    "-- SELECT\nDELETE FROM kv",
    "/* SELECT */ DELETE FROM kv",
    "/* unterminated SELECT",
    "/* /* nested, closed once */ SELECT",
    "SELECTED",
    "SELECT_x",
    "SHOWS",
    "(SELECT 1)",
    "'SELECT'",
    "",
    "   ",
    "\f SELECT",  # not a blank to the server: the statement is refused, so not a read either
]


@pytest.mark.parametrize("sql", READS)
def test_reads(sql):
    assert is_read(sql)


@pytest.mark.parametrize("sql", WRITES)
def test_not_reads(sql):
    assert not is_read(sql)


def test_request_frames_are_classified_as_their_statements():
    assert _frame_is_read(p.encode_command("SELECT value FROM kv WHERE key = 'a'"))
    assert not _frame_is_read(p.encode_command("DELETE FROM kv WHERE key = 'a'"))
    assert _frame_is_read(p.encode_ping(b"x")) and _frame_is_read(p.encode_stats())
    assert not _frame_is_read(p.encode_frame(p.COMMAND, b"\xff SELECT"))
    assert not _frame_is_read(p.encode_frame(0x7F, b""))


def test_overloaded_is_retried_unless_rows_were_written():
    assert overloaded_retry_safe(False, "no leader for the range now; nothing was changed: retry")
    assert overloaded_retry_safe(False, "out of memory: …; nothing was changed")
    assert not overloaded_retry_safe(False, "out of memory: …; 3 of its rows were written before it")
    assert not overloaded_retry_safe(False, "a shard is not answering")
    assert overloaded_retry_safe(True, "anything at all")


def test_backoff_doubles_with_jitter_and_a_cap():
    for attempt, full in [(1, 0.1), (2, 0.2), (3, 0.4)]:
        for _ in range(50):
            assert full / 2 <= backoff(attempt, 0.1) <= full
    assert backoff(30, 0.1) <= RETRY_BACKOFF_MAX
    assert backoff(1, 0) == 0


# -- seeds ---------------------------------------------------------------------------------


def test_seed_forms():
    assert parse_seed(("10.0.0.1", 7412), 7411) == ("10.0.0.1", 7412)
    assert parse_seed(["db", 1], 7411) == ("db", 1)
    assert parse_seed("db.example:7413", 7411) == ("db.example", 7413)
    assert parse_seed("db.example", 7411) == ("db.example", 7411)
    assert parse_seed("[::1]:7414", 7411) == ("::1", 7414)
    assert parse_seed("[::1]", 7411) == ("::1", 7411)
    assert parse_seed("fe80::1", 7411) == ("fe80::1", 7411)
    for bad in ["", ":7411", "db:", "db:x", "db:0", "db:65536", "[::1", "[::1]7411", ("db",), ("db", "1"),
                ("db", True), ("", 1), 7411, None]:
        with pytest.raises(velocity.UsageError):
            parse_seed(bad, 7411)


def test_seed_list():
    assert seed_list(None, None, None, "127.0.0.1", 7411) == [("127.0.0.1", 7411)]
    assert seed_list("db", None, None, "127.0.0.1", 7411) == [("db", 7411)]
    assert seed_list(None, 1, None, "127.0.0.1", 7411) == [("127.0.0.1", 1)]
    assert seed_list(None, None, ["a:1", ("b", 2), "c"], "127.0.0.1", 7411) == [("a", 1), ("b", 2), ("c", 7411)]
    for host, port, hosts in [("a", None, ["b:1"]), (None, 1, ["b:1"]), (None, None, []), (None, None, "a:1")]:
        with pytest.raises(velocity.UsageError):
            seed_list(host, port, hosts, "127.0.0.1", 7411)


def test_bad_retry_settings_are_refused_before_connecting():
    for kw in [dict(retries=-1), dict(retries=1.5), dict(retries=True), dict(retry_backoff=-0.1),
               dict(retry_backoff="1")]:
        with pytest.raises(velocity.UsageError):
            velocity.connect(hosts=["127.0.0.1:1"], tls=False, **kw)


# -- a scripted stand-in server ------------------------------------------------------------

DROP = "drop"  # close the connection instead of answering
SILENT = "silent"  # never answer
OVERLOADED = (0x0007, "no leader for the range now; nothing was changed: retry")


def server_info_payload() -> bytes:
    name = b"velocityd/fake"
    return (bytes([1, len(name)]) + name + bytes(32) + bytes(16)
            + struct.pack("<IIBIHB", 19456, 2, 1, 1 << 20, 1, p.FLAG_AUTH_REQUIRED))


def code_message(code: int, message: str) -> bytes:
    m = message.encode()
    return struct.pack("<HH", code, len(m)) + m


class FakeNode:
    """Plaintext, no login. ``answer(sql, n)`` says what to do with the n-th COMMAND (from 1,
    over all connections): an int is a RESPONSE with that many rows affected, ``(code, message)``
    an ERROR, DROP closes the connection unanswered, SILENT leaves it unanswered, ``(n, 'bye')``
    answers n and then says DISCONNECT 0, ``('disconnect', code, reason)`` says DISCONNECT in
    place of a reply. PING is answered with PONG."""

    def __init__(self, answer=lambda sql, n: 1):
        self.answer = answer
        self.received = []  # (connection number, statement or "PING")
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.address = ("127.0.0.1", self.port)
        self._socks = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            self._socks.append(sock)
            threading.Thread(target=self._serve, args=(sock, self.connections), daemon=True).start()

    def _serve(self, sock, conn_no):
        try:
            with sock:
                self._converse(sock, conn_no)
        except OSError:
            pass  # the client went away, or the test hung up

    def _converse(self, sock, conn_no):
        dec = p.FrameDecoder(1 << 20)
        while True:
            data = sock.recv(65536)
            if not data:
                return
            dec.feed(data)
            while True:
                frame = dec.next_frame()
                if frame is None:
                    break
                msg_type, payload = frame
                if msg_type == p.HELLO:
                    sock.sendall(p.encode_frame(p.SERVER_INFO, server_info_payload()))
                elif msg_type == p.PING:
                    self.received.append((conn_no, "PING"))
                    sock.sendall(p.encode_frame(p.PONG, payload))
                elif msg_type == p.DISCONNECT:
                    return
                elif msg_type == p.COMMAND:
                    sql = payload.decode()
                    self.received.append((conn_no, sql))
                    action = self.answer(sql, len([r for r in self.received if r[1] != "PING"]))
                    if action == DROP:
                        return
                    if action == SILENT:
                        continue
                    if isinstance(action, tuple) and action[0] == "disconnect":
                        sock.sendall(p.encode_disconnect(action[1], action[2]))
                        return
                    if isinstance(action, tuple) and action[1] == "bye":
                        sock.sendall(response(action[0]) + p.encode_disconnect(0, "idle timeout"))
                        return
                    sock.sendall(response(action) if isinstance(action, int)
                                 else p.encode_frame(p.ERROR, code_message(*action)))

    def statements(self):
        return [sql for _, sql in self.received]

    def hang_up(self):
        """Close every connection from this side (shutdown: a close would not wake the thread
        blocked reading it, and the FIN would wait for that thread)."""
        for s in self._socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        self.listener.close()
        for s in self._socks:
            try:
                s.close()
            except OSError:
                pass


def response(affected: int) -> bytes:
    return p.encode_frame(p.RESPONSE, struct.pack("<HIQ", 0, 0, affected))


@pytest.fixture
def fake(tmp_dir):
    nodes = []

    def make(answer=lambda sql, n: 1):
        node = FakeNode(answer)
        nodes.append(node)
        return node

    make.kw = dict(tls=False, known_hosts=tmp_dir / "known_hosts", accept_new_host=True, retry_backoff=0.001)
    yield make
    for n in nodes:
        n.close()


def test_a_lost_read_is_sent_again_to_the_next_seed(fake):
    a = fake(lambda sql, n: DROP)
    b = fake()
    with velocity.connect(hosts=[a.address, f"127.0.0.1:{b.port}"], **fake.kw) as db:
        assert db.address == a.address
        assert db.execute("SELECT COUNT(*) FROM kv").affected == 1
        assert db.address == b.address and db.reconnects == 1
    assert a.statements() == b.statements() == ["SELECT COUNT(*) FROM kv"]


def test_a_lost_write_is_outcome_unknown_and_not_sent_again(fake):
    node = fake(lambda sql, n: DROP if n == 1 else 1)
    with velocity.connect(hosts=[node.address], **fake.kw) as db:
        with pytest.raises(velocity.OutcomeUnknown, match="may or may not have been applied") as e:
            db.execute("INSERT INTO kv (key, value) VALUES ('k', 'v')")
        assert isinstance(e.value.__cause__, velocity.Disconnected)
        for write in (lambda: db.incr("hits"), lambda: db.cas("k", "v", "w"),
                      lambda: db.insert_if_absent("k", "v"), lambda: db.execute("SHOW SLOWLOG RESET")):
            node.answer = lambda sql, n: DROP
            with pytest.raises(velocity.OutcomeUnknown):
                write()
        # The connection is replaced on the next request, which runs as usual.
        node.answer = lambda sql, n: 1
        assert db.execute("DELETE FROM kv WHERE key = 'k'").affected == 1
        assert db.reconnects == 5
    statements = node.statements()
    assert len(statements) == 6 and statements[0].startswith("INSERT") and statements[-1].startswith("DELETE")


def test_a_write_timed_out_is_outcome_unknown_and_the_connection_is_replaced(fake):
    node = fake(lambda sql, n: SILENT if n == 1 else 1)
    with velocity.connect(hosts=[node.address], timeout=0.3, **fake.kw) as db:
        with pytest.raises(velocity.OutcomeUnknown, match="timed out"):
            db.execute("UPDATE kv SET value = 'x' WHERE key = 'k'")
        # The late reply cannot be taken for this one's: it is a new connection.
        assert db.ping(b"hi") == b"hi" and db.reconnects == 1
    assert node.statements() == ["UPDATE kv SET value = 'x' WHERE key = 'k'", "PING"]


def test_a_read_is_tried_retries_plus_one_times_then_raises(fake):
    node = fake(lambda sql, n: DROP)
    with velocity.connect(hosts=[node.address], **{**fake.kw, "retries": 2}) as db:
        with pytest.raises(velocity.Disconnected):
            db.execute("SELECT value FROM kv WHERE key = 'k'")
    assert len(node.statements()) == 3
    with velocity.connect(hosts=[node.address], **{**fake.kw, "retries": 0}) as db:
        with pytest.raises(velocity.Disconnected):
            db.execute("SELECT value FROM kv WHERE key = 'k'")
    assert len(node.statements()) == 4


def test_overloaded_is_sent_again_after_a_pause_reads_and_writes(fake):
    node = fake(lambda sql, n: OVERLOADED if n % 3 else 7)
    with velocity.connect(hosts=[node.address], **{**fake.kw, "retry_backoff": 0.05}) as db:
        t = time.monotonic()
        assert db.execute("INSERT INTO kv (key, value) VALUES ('k', 'v')").affected == 7
        assert time.monotonic() - t >= 0.05 * 0.5 + 0.1 * 0.5  # two pauses, jittered
        assert db.execute("SELECT COUNT(*) FROM kv").affected == 7
        assert db.reconnects == 0  # the same connection: the server answered
    assert len(node.statements()) == 6
    # Not more than retries allow; the last refusal is raised.
    node.answer = lambda sql, n: OVERLOADED
    with velocity.connect(hosts=[node.address], **{**fake.kw, "retries": 1}) as db:
        with pytest.raises(velocity.ServerOverloaded):
            db.execute("SELECT COUNT(*) FROM kv")
    assert len(node.statements()) == 8


def test_a_write_partly_done_before_the_memory_limit_is_not_sent_again(fake):
    node = fake(lambda sql, n: (7, "out of memory: the write needs more than the memory limit (--max-memory) "
                                   "leaves, and eviction could not make room; 2 of its rows were written before it"))
    with velocity.connect(hosts=[node.address], **fake.kw) as db:
        with pytest.raises(velocity.ServerOverloaded, match="2 of its rows"):
            db.execute("INSERT INTO kv (key, value) VALUES ('a', '1'), ('b', '2'), ('c', '3')")
    assert len(node.statements()) == 1


def test_the_servers_outcome_unknown_is_raised_not_retried(fake):
    node = fake(lambda sql, n: (9, "the write reached the cluster but its outcome is unknown"))
    with velocity.connect(hosts=[node.address], **fake.kw) as db:
        with pytest.raises(velocity.OutcomeUnknown) as e:
            db.incr("hits")
        assert e.value.code == 9 and e.value.__cause__ is None
        assert db.reconnects == 0
    assert len(node.statements()) == 1


def test_a_connection_the_server_closed_between_requests_is_replaced_before_sending(fake):
    # DISCONNECT (an idle timeout, a shutdown) or a plain close while no request was in flight:
    # the next write is sent over a new connection, and is not in doubt.
    node = fake(lambda sql, n: (1, "bye") if n == 1 else 1)
    with velocity.connect(hosts=[node.address], **fake.kw) as db:
        db.execute("INSERT INTO kv (key, value) VALUES ('a', '1')")
        time.sleep(0.2)
        assert db.execute("INSERT INTO kv (key, value) VALUES ('b', '2')").affected == 1
        assert db.reconnects == 1
        node.answer = lambda sql, n: 1
        node.hang_up()
        time.sleep(0.2)
        assert db.execute("INSERT INTO kv (key, value) VALUES ('c', '3')").affected == 1
        assert db.reconnects == 2
    assert [c for c, _ in node.received] == [1, 2, 3]


def test_a_single_host_is_not_reconnected_unless_asked(fake):
    # host and port work as before seeds existed: no reconnect, no retry.
    node = fake(lambda sql, n: DROP if n == 1 else OVERLOADED if n == 2 else 1)
    kw = {k: v for k, v in fake.kw.items() if k != "retry_backoff"}
    with velocity.connect("127.0.0.1", node.port, **kw) as db:
        assert (db.retries, db._dial) == (0, None)
        with pytest.raises(velocity.Disconnected):
            db.execute("SELECT COUNT(*) FROM kv")
        with pytest.raises(velocity.Disconnected):
            db.execute("SELECT COUNT(*) FROM kv")
    with velocity.connect("127.0.0.1", node.port, reconnect=True, retry_backoff=0.001, **kw) as db:
        assert db.retries == 3
        assert db.execute("SELECT COUNT(*) FROM kv").affected == 1  # OVERLOADED, then 1
    assert node.connections == 2 and len(node.statements()) == 3


def test_a_disconnect_that_ends_the_session_is_not_reconnected(fake):
    # The server removed the user (DISCONNECT 0x0008): logging in again is not the client's call.
    node = fake(lambda sql, n: ("disconnect", 8, "user removed") if n == 1 else 1)
    with velocity.connect(hosts=[node.address], **fake.kw) as db:
        with pytest.raises(velocity.Disconnected, match="user removed") as e:
            db.execute("SELECT COUNT(*) FROM kv")  # a read, in place of its reply: not sent again
        assert e.value.code == 8
        with pytest.raises(velocity.Disconnected, match="user removed"):
            db.ping()
    with velocity.connect(hosts=[node.address], **fake.kw) as db:
        db.execute("SELECT COUNT(*) FROM kv")
        # Sent unasked to an idle session: found before the next request is sent.
        node._socks[-1].sendall(p.encode_disconnect(8, "user removed"))
        time.sleep(0.2)
        with pytest.raises(velocity.Disconnected, match="user removed") as e:
            db.ping()
        assert e.value.code == 8 and db.reconnects == 0
    assert node.connections == 2 and node.statements() == ["SELECT COUNT(*) FROM kv"] * 2


def test_reconnect_false_keeps_a_lost_connection_lost(fake):
    node = fake(lambda sql, n: DROP)
    with velocity.connect(hosts=[node.address], reconnect=False, **fake.kw) as db:
        with pytest.raises(velocity.Disconnected):
            db.execute("INSERT INTO kv (key, value) VALUES ('a', '1')")
        with pytest.raises(velocity.Disconnected):
            db.execute("SELECT COUNT(*) FROM kv")
        assert db.closed
    assert len(node.statements()) == 1


def test_a_closed_connection_is_not_reopened(fake):
    node = fake()
    db = velocity.connect(hosts=[node.address], **fake.kw)
    db.close()
    with pytest.raises(velocity.Disconnected, match="closed"):
        db.execute("SELECT COUNT(*) FROM kv")
    assert node.connections == 1


def test_pipelines_are_not_sent_again(fake):
    node = fake(lambda sql, n: DROP if n == 3 else 1)
    with velocity.connect(hosts=[node.address], **fake.kw) as db:
        pipe = db.pipeline()
        for sql in ["SELECT COUNT(*) FROM kv", "SELECT COUNT(*) FROM kv", "INSERT INTO kv (key, value) VALUES ('a', '1')",
                    "SELECT COUNT(*) FROM kv"]:
            pipe.execute(sql)
        with pytest.raises(velocity.OutcomeUnknown, match="pipeline"):
            pipe.run()
        # Reads only: lost replies are just lost.
        node.answer = lambda sql, n: DROP if n == 5 else 1
        with pytest.raises(velocity.Disconnected) as e:
            db.pipeline().execute("SELECT COUNT(*) FROM kv").execute("SELECT COUNT(*) FROM kv").run()
        assert not isinstance(e.value, velocity.OutcomeUnknown)
        # The connection comes back for the next request.
        assert [r.affected for r in db.pipeline().execute("SELECT COUNT(*) FROM kv").run()] == [1]
    assert node.connections == 3 and len(node.statements()) == 5 + 1


def test_connect_passes_over_dead_seeds_in_order_and_says_what_each_did(fake, tmp_dir):
    dead = ("127.0.0.1", free_port())
    live = fake()
    with velocity.connect(hosts=[dead, live.address, dead], **fake.kw) as db:
        assert db.address == live.address
    with pytest.raises(velocity.Disconnected, match="no seed answered") as e:
        velocity.connect(hosts=[dead, f"127.0.0.1:{dead[1]}"], **fake.kw)
    assert str(e.value).count(f"127.0.0.1:{dead[1]}") >= 2
    assert [type(x) for x in e.value.errors] == [velocity.Disconnected] * 2
    # A single seed's failure is its own, as before seeds existed.
    with pytest.raises(velocity.Disconnected, match=f"cannot connect to 127.0.0.1:{dead[1]}"):
        velocity.connect("127.0.0.1", dead[1], tls=False)
    # An untrusted identity is not passed over: it stops the connect at once.
    with pytest.raises(velocity.TrustError):
        velocity.connect(hosts=[live.address, dead], tls=False, known_hosts=tmp_dir / "other", accept_new_host=False)
    with pytest.raises(velocity.UsageError):
        velocity.connect("127.0.0.1", live.port, hosts=[live.address], tls=False)


def test_asyncio_reconnects_the_same_way(fake):
    def drop_writes(first_too):
        return lambda sql, n: DROP if sql.startswith("INSERT") or (first_too and n == 1) else 1

    a = fake(drop_writes(True))
    b = fake(drop_writes(False))

    async def main():
        db = await aio.connect(hosts=[("127.0.0.1", free_port()), a.address, b.address], **fake.kw)
        async with db:
            assert db.address == a.address
            # a loses the read: it goes to b.
            assert (await db.execute("SELECT COUNT(*) FROM kv")).affected == 1
            assert db.address == b.address and db.reconnects == 1
            with pytest.raises(velocity.OutcomeUnknown):
                await db.execute("INSERT INTO kv (key, value) VALUES ('a', '1')")
            # Round the list: the dead first seed, then a.
            assert await db.ping(b"x") == b"x"
            assert db.address == a.address and db.reconnects == 2
            replies = await db.pipeline(["SELECT COUNT(*) FROM kv"] * 3)
            assert [r.affected for r in replies] == [1, 1, 1]
            with pytest.raises(velocity.OutcomeUnknown, match="pipeline"):
                await db.pipeline(["SELECT COUNT(*) FROM kv", "INSERT INTO kv (key, value) VALUES ('b', '2')"])
            a.answer = b.answer = lambda sql, n: OVERLOADED if n % 2 else 3
            assert (await db.execute("DELETE FROM kv WHERE key = 'a'")).affected == 3
            assert db.reconnects == 3
        with pytest.raises(velocity.Disconnected, match="closed"):
            await db.execute("SELECT COUNT(*) FROM kv")

    asyncio.run(main())
    assert b.statements()[:2] == ["SELECT COUNT(*) FROM kv", "INSERT INTO kv (key, value) VALUES ('a', '1')"]


# -- against the real velocityd ------------------------------------------------------------


def logins(s, **kw):
    return dict(user="alice", password=PASSWORD, tls=s.tls, known_hosts=s.known_hosts, accept_new_host=True, **kw)


def test_the_first_seed_closed_the_second_answers(server):
    closed = free_port()
    with velocity.connect(hosts=[("127.0.0.1", closed), ("127.0.0.1", server.port)], **logins(server)) as db:
        assert db.address == ("127.0.0.1", server.port)
        db.execute("INSERT INTO kv (key, value) VALUES ('k', 'v')")
        assert db.execute("SELECT value FROM kv WHERE key = 'k'").scalar() == b"v"
    with velocity.connect(hosts=[f"127.0.0.1:{closed}", f"127.0.0.1:{server.port}"], **logins(server)) as db:
        assert db.execute("SHOW STATUS").as_dict()["user"] == b"alice"

    async def main():
        db = await aio.connect(hosts=[f"127.0.0.1:{closed}", ("127.0.0.1", server.port)], **logins(server))
        async with db:
            assert db.address == ("127.0.0.1", server.port)
            assert (await db.execute("SELECT value FROM kv WHERE key = 'k'")).scalar() == b"v"

    asyncio.run(main())


def hung_up(db) -> bool:
    """Whether the client's socket has seen the server's end of the connection. A killed
    process's sockets are closed a moment after it is reaped, not at once."""
    poller = select.poll()
    poller.register(db._sock, select.POLLIN)
    return bool(poller.poll(5000))


def kill_and_restart(s, make_server):
    s.proc.kill()  # SIGKILL: no DISCONNECT, no clean close of the sessions
    s.proc.wait()
    return make_server(2, () if s.tls else ("--plaintext",), port=s.port, data_dir=s.data_dir)


def test_server_killed_and_restarted_mid_session(server, make_server):
    # The second seed is a port nobody listens on: after the kill the client tries it, then the
    # first again, which is by then the restarted server.
    seeds = [("127.0.0.1", server.port), ("127.0.0.1", free_port())]
    with velocity.connect(hosts=seeds, **logins(server)) as db:
        db.execute("INSERT INTO kv (key, value) VALUES ('k', 'v')")
        first_fp = db.fingerprint
        s2 = kill_and_restart(server, make_server)
        assert db.execute("SELECT value FROM kv WHERE key = 'k'").scalar() == b"v"
        assert db.reconnects == 1 and db.address == seeds[0] and db.fingerprint == first_fp
        # A connection seen lost before a write is sent is replaced first: the write is not in
        # doubt. (Sent into it before the end arrived, it would be OutcomeUnknown.)
        s3 = kill_and_restart(s2, make_server)
        assert hung_up(db)
        assert db.execute("INSERT INTO kv (key, value) VALUES ('k2', 'v2')").affected == 1
        assert db.reconnects == 2
        assert db.execute("SELECT COUNT(*) FROM kv").scalar() == 2
        assert db.ping(b"up") == b"up"
        # With no node up, a read gives up after its retries; the connection recovers later.
        s3.proc.kill()
        s3.proc.wait()
        db.retries, db.retry_backoff = 1, 0.01
        with pytest.raises(velocity.Disconnected, match="no seed answered"):
            db.execute("SELECT COUNT(*) FROM kv")
        make_server(2, () if server.tls else ("--plaintext",), port=server.port, data_dir=server.data_dir)
        assert db.execute("SELECT value FROM kv WHERE key = 'k2'").scalar() == b"v2"
        assert db.reconnects == 3


def test_asyncio_server_killed_and_restarted_mid_session(server, make_server):
    async def main():
        db = await aio.connect(hosts=[("127.0.0.1", server.port)], **logins(server))
        async with db:
            await db.execute("INSERT INTO kv (key, value) VALUES ('k', 'v')")
            kill_and_restart(server, make_server)
            assert (await db.execute("SELECT value FROM kv WHERE key = 'k'")).scalar() == b"v"
            assert db.reconnects == 1
            assert (await db.incr("n")) == 1

    asyncio.run(main())
