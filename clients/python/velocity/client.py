"""The blocking connection: connect to the first seed that answers, check the server's identity,
log in, run statements one at a time or pipelined, reconnect when the connection is lost
(velocity.failover says what is retried)."""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import select
import socket
import ssl
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

from . import protocol as p
from .errors import (
    Disconnected,
    OutcomeUnknown,
    ProtocolError,
    ServerOverloaded,
    TrustError,
    UsageError,
    VelocityError,
    error_for,
)
from .failover import (
    DEFAULT_RETRY_BACKOFF,
    Address,
    Seed,
    backoff,
    is_read,
    none_answered,
    overloaded_retry_safe,
    retry_settings,
    seed_is_skippable,
    seed_list,
    session_ended,
)
from .protocol import Result, ServerInfo
from .trust import PathLike, check, host_label, spki_sha256

__version__ = "0.1.0"
CLIENT_NAME = f"velocity-py/{__version__}"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7411
#: Unanswered requests a pipeline keeps in flight: enough to fill the link, few enough that
#: neither side's socket buffers fill while the other waits (which would deadlock).
PIPELINE_WINDOW = 1024

Param = Union[str, bytes, int, None]


def derive_credential(info: ServerInfo, user: str, password: str) -> bytes:
    """The 32-byte method-1 credential: Argon2id(password, SHA-256(auth_salt ‖ user)[:16]) with
    the server's cost parameters, refused when they exceed the client's bounds."""
    from argon2.low_level import Type, hash_secret_raw

    if len(user.encode()) > p.USERNAME_BYTES_MAX:
        raise UsageError(f"user name is longer than {p.USERNAME_BYTES_MAX} bytes")
    if len(password.encode()) > p.PASSWORD_BYTES_MAX:
        raise UsageError(f"password is longer than {p.PASSWORD_BYTES_MAX} bytes")
    if not (
        0 < info.argon2_m_kib <= p.ARGON2_M_KIB_MAX
        and 0 < info.argon2_t <= p.ARGON2_T_MAX
        and 0 < info.argon2_p <= p.ARGON2_P_MAX
    ):
        raise ProtocolError(
            "server asks for Argon2id parameters outside the client's bounds: "
            f"m={info.argon2_m_kib} KiB, t={info.argon2_t}, p={info.argon2_p}"
        )
    salt = hashlib.sha256(info.auth_salt + user.encode()).digest()[:16]
    return hash_secret_raw(
        password.encode(),
        salt,
        time_cost=info.argon2_t,
        memory_cost=info.argon2_m_kib,
        parallelism=info.argon2_p,
        hash_len=32,
        type=Type.ID,
    )


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def tls_context() -> ssl.SSLContext:
    """TLS 1.3 only. Certificates are not checked against a CA: the server's identity is its key's
    fingerprint, checked against SERVER_INFO and the known-hosts file (trust on first use)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


def check_identity(
    info: ServerInfo,
    cert_der: Optional[bytes],
    label: str,
    known_hosts: Optional[PathLike],
    accept_new_host: Union[bool, Callable[[str, str], bool]],
    fingerprint: Optional[str],
) -> None:
    if info.version != p.VERSION:
        raise ProtocolError(f"server chose unsupported protocol version {info.version}")
    if cert_der is not None and spki_sha256(cert_der) != info.fingerprint:
        raise TrustError(
            "SERVER_INFO's fingerprint is not the key that the TLS handshake presented: "
            "possible man-in-the-middle; refused"
        )
    check(label, info.fingerprint_text, known_hosts, accept_new_host, fingerprint)


def accept_server_info(
    msg_type: int,
    payload: bytes,
    cert_der: Optional[bytes],
    label: str,
    known_hosts: Optional[PathLike],
    accept_new_host: Union[bool, Callable[[str, str], bool]],
    fingerprint: Optional[str],
) -> ServerInfo:
    """The reply to HELLO, checked: SERVER_INFO from a server we trust, with sane bounds."""
    if msg_type != p.SERVER_INFO:
        r = reply_to_result(msg_type, payload)
        raise r if isinstance(r, VelocityError) else ProtocolError("expected SERVER_INFO")
    info = p.parse_server_info(payload)
    check_identity(info, cert_der, label, known_hosts, accept_new_host, fingerprint)
    if info.max_payload > p.PAYLOAD_BYTES_CEILING:
        raise ProtocolError(f"server announces max_payload {info.max_payload}, beyond the protocol's ceiling")
    return info


def check_auth_response(msg_type: int, payload: bytes) -> None:
    if msg_type != p.AUTH_RESPONSE:
        r = reply_to_result(msg_type, payload)
        raise r if isinstance(r, VelocityError) else ProtocolError("expected AUTH_RESPONSE")
    status, message = p.parse_code_message(payload)
    if status != 0:
        raise error_for(status, message)


def auth_frame(info: ServerInfo, user: Optional[str], password: Optional[str], api_key: Optional[str],
               credential: Optional[bytes]) -> Optional[bytes]:
    if api_key is not None:
        key = api_key.encode()
        if len(key) > p.CREDENTIAL_BYTES_MAX:
            raise UsageError(f"API key is longer than {p.CREDENTIAL_BYTES_MAX} bytes")
        return p.encode_auth_request(p.METHOD_API_KEY, "", key)
    if user is None:
        if password is not None or credential is not None:
            raise UsageError("a password needs a user")
        return None
    if credential is None:
        if password is None:
            raise UsageError("give a password, a derived credential or an API key")
        credential = derive_credential(info, user, password)
    return p.encode_auth_request(p.METHOD_PASSWORD, user, credential)


class Login:
    """How a connection logs in, kept so that a reconnect logs in the same way. A password is
    derived once per server salt and cost (Argon2id is slow on purpose), not on every reconnect;
    the nodes of a cluster each have their own salt."""

    def __init__(self, user: Optional[str], password: Optional[str], api_key: Optional[str],
                 credential: Optional[bytes]) -> None:
        self.user = user
        self.password = password
        self.api_key = api_key
        self.credential = credential
        self._derived: Dict[tuple, bytes] = {}

    @staticmethod
    def _salt(info: ServerInfo) -> tuple:
        return (info.auth_salt, info.argon2_m_kib, info.argon2_t, info.argon2_p)

    def needs_derivation(self, info: ServerInfo) -> bool:
        return (self.api_key is None and self.user is not None and self.credential is None
                and self.password is not None and self._salt(info) not in self._derived)

    def derive(self, info: ServerInfo) -> bytes:
        c = derive_credential(info, self.user, self.password)  # type: ignore[arg-type]
        self._derived[self._salt(info)] = c
        return c

    def frame(self, info: ServerInfo) -> Optional[bytes]:
        """The AUTH_REQUEST for this server, or None to stay logged out."""
        credential = self.credential
        if self.api_key is None and self.user is not None and credential is None and self.password is not None:
            credential = self._derived.get(self._salt(info)) or self.derive(info)
        return auth_frame(info, self.user, self.password, self.api_key, credential)


def _frame_is_read(frame: bytes) -> bool:
    """Whether a request frame may be sent twice: PING, STATS, a COMMAND that is a read."""
    msg_type = frame[5] if len(frame) > 5 else None
    if msg_type in (p.PING, p.STATS):
        return True
    if msg_type != p.COMMAND:
        return False
    try:
        return is_read(frame[p.HEADER_BYTES:-4].decode("utf-8"))
    except UnicodeDecodeError:
        return False


def _unsolicited(decoder: p.FrameDecoder) -> Tuple[str, Optional[int]]:
    """Why a connection that had something to read between requests is over, and the
    DISCONNECT code if that is what the server sent (the only frame it sends unasked)."""
    try:
        frame = decoder.next_frame()
        if frame is not None and frame[0] == p.DISCONNECT:
            code, reason = p.parse_code_message(frame[1])
            return f"server disconnected: {reason}", code
    except p.FrameError:
        pass
    return "the server closed the connection", None


def _readable_now(sock: socket.socket) -> bool:
    # poll, not select: select fails on descriptors past FD_SETSIZE (1024).
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    r, _, _ = select.select([sock], [], [], 0)
    return bool(r)


def reply_to_result(msg_type: int, payload: bytes) -> Union[Result, VelocityError]:
    """A reply frame as a result, or the error it reports (returned, not raised, so that a
    pipeline can hand back each reply in order)."""
    if msg_type in (p.RESPONSE, p.STATS):
        return p.parse_result(payload)
    if msg_type == p.ERROR:
        code, message = p.parse_code_message(payload)
        return error_for(code, message)
    if msg_type == p.DISCONNECT:
        code, reason = p.parse_code_message(payload)
        raise Disconnected(f"server disconnected: {reason}", code, reason)
    raise ProtocolError(f"unexpected frame type 0x{msg_type:02x} in reply to a request")


# -- conditional writes and counters (docs/protocol.md, "Conditional writes and counters") ----
# Statement builders shared by the blocking and asyncio connections. Keys and values go into the
# statement only through quote() (as '…' with ' doubled, or X'hex'); integers are checked here.

I64_MIN = -(1 << 63)
I64_MAX = (1 << 63) - 1
Bytes = Union[str, bytes, bytearray]


def _literal(v: Bytes, what: str) -> str:
    if not isinstance(v, (str, bytes, bytearray)):
        raise UsageError(f"{what} must be str or bytes, not {type(v).__name__}")
    return p.quote(v)


def _insert_if_absent_sql(key: Bytes, value: Bytes, ttl: Optional[int] = None) -> str:
    """``INSERT … ON CONFLICT DO NOTHING``: affected is 1 when the key was absent (or expired)."""
    k, v = _literal(key, "key"), _literal(value, "value")
    if ttl is None:
        return f"INSERT INTO kv (key, value) VALUES ({k}, {v}) ON CONFLICT DO NOTHING"
    if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 0:
        raise UsageError(f"ttl must be None or whole seconds (an int >= 0), not {ttl!r}")
    return f"INSERT INTO kv (key, value, ttl) VALUES ({k}, {v}, {p.quote(ttl)}) ON CONFLICT DO NOTHING"


def _cas_sql(key: Bytes, expected: Bytes, new: Bytes) -> str:
    """``UPDATE … WHERE key = k AND value = expected``: affected is 1 when the compare held."""
    return (f"UPDATE kv SET value = {_literal(new, 'new value')} "
            f"WHERE key = {_literal(key, 'key')} AND value = {_literal(expected, 'expected value')}")


def _incr_sql(key: Bytes, by: int = 1) -> str:
    """The counter that starts at 0, in one round trip: ``INSERT … ON CONFLICT (key) DO UPDATE
    SET value = value ± |by| RETURNING value``."""
    if isinstance(by, bool) or not isinstance(by, int):
        raise UsageError(f"by must be an int, not {type(by).__name__}")
    if not I64_MIN <= by <= I64_MAX:
        raise UsageError(f"by must fit a signed 64-bit integer ({I64_MIN} to {I64_MAX}), not {by}")
    # The dialect's integers have no sign: a negative step is written `value - |by|`.
    op = "+" if by >= 0 else "-"
    return (f"INSERT INTO kv (key, value) VALUES ({_literal(key, 'key')}, {p.quote(str(by))}) "
            f"ON CONFLICT (key) DO UPDATE SET value = value {op} {p.quote(abs(by))} RETURNING value")


def _counter_value(r: Result) -> int:
    """The new value from _incr_sql's RETURNING row (decimal text)."""
    if len(r.rows) != 1 or len(r.columns) != 1:
        raise ProtocolError(f"a counter returned {len(r.rows)} rows of {len(r.columns)} columns, not one value")
    v = r.rows[0][0]
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    try:
        n = int(v.decode("ascii")) if isinstance(v, bytes) else None
    except (UnicodeDecodeError, ValueError):
        n = None
    if n is None or not I64_MIN <= n <= I64_MAX:
        raise ProtocolError(f"a counter returned {v!r}, not a signed 64-bit integer")
    return n


class Connection:
    """One connection to a Velocity server. Use :func:`velocity.connect` to make one.

    A context manager: leaving the ``with`` block says DISCONNECT and closes the socket.
    Not safe for use by several threads at once (use one connection per thread).

    When the connection is lost it is replaced by one to the next seed that answers (see
    :func:`velocity.connect`): ``address`` is the node it is on now, ``reconnects`` how many
    times it was replaced, ``retries`` and ``retry_backoff`` bound what is sent again.
    """

    def __init__(self, sock: socket.socket, info: ServerInfo, decoder: p.FrameDecoder) -> None:
        self._sock = sock
        self.server_info = info
        self._decoder = decoder
        self._closed = False
        # Closed by its user: never reconnected.
        self._shut = False
        self._lost = "the connection is closed"
        self._lost_code: Optional[int] = None
        # Set by connect(): how to open a replacement, and where (None: never replaced).
        self._dial: Optional[Callable[[Address], "Connection"]] = None
        self._seeds: List[Address] = []
        self._seed = 0
        self.address: Optional[Address] = None
        self.reconnects = 0
        self.retries = 0
        self.retry_backoff = DEFAULT_RETRY_BACKOFF

    # -- I/O --------------------------------------------------------------------------------

    def _drop(self, why: str, code: Optional[int] = None) -> None:
        """The connection is lost (or out of step): close the socket, keep the reason. A
        DISCONNECT that ends the session also ends the connection's reconnecting."""
        self._closed = True
        self._lost, self._lost_code = why, code
        self._shut = self._shut or (code is not None and session_ended(code))
        try:
            self._sock.close()
        except OSError:
            pass

    def _send(self, data: bytes) -> None:
        try:
            self._sock.sendall(data)
        except OSError as e:
            self._drop(f"connection lost while sending: {e}")
            raise Disconnected(self._lost) from e

    def _recv_frame(self):
        while True:
            try:
                frame = self._decoder.next_frame()
            except p.FrameError as e:
                if e.fatal:
                    self._drop(f"the server sent a bad frame: {e}")
                raise
            if frame is not None:
                return frame
            try:
                data = self._sock.recv(256 * 1024)
            except socket.timeout as e:
                # A reply that came later would be taken for the next request's: the
                # connection is out of step, so it is given up.
                self._drop(f"timed out waiting for the server ({self._sock.gettimeout()} s)")
                raise Disconnected(self._lost) from e
            except OSError as e:
                self._drop(f"connection lost: {e}")
                raise Disconnected(self._lost) from e
            if not data:
                self._drop("the server closed the connection")
                raise Disconnected(self._lost)
            self._decoder.feed(data)

    def _reply_frame(self) -> Tuple[int, bytes]:
        msg_type, payload = self._recv_frame()
        if msg_type == p.DISCONNECT:
            code, reason = p.parse_code_message(payload)
            self._drop(f"server disconnected: {reason}", code)
            raise Disconnected(self._lost, code, reason)
        return msg_type, payload

    def _reply(self) -> Union[Result, VelocityError]:
        return reply_to_result(*self._reply_frame())

    # -- reconnection -----------------------------------------------------------------------

    def _check_peer(self) -> None:
        """Drop the connection if the server has closed it (or sent something) since the last
        reply. Between requests nothing is due from it, so anything readable means the
        connection is over: seen before a request is sent, it is replaced with no doubt about
        the request (seen after, a write's outcome would be unknown)."""
        if not self._decoder.buffered():
            pending = getattr(self._sock, "pending", None)
            if not (pending is not None and pending()) and not _readable_now(self._sock):
                return
            timeout = self._sock.gettimeout()
            try:
                self._sock.settimeout(0)
                self._decoder.feed(self._sock.recv(256 * 1024))
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return  # TLS housekeeping (a session ticket), no data
            except OSError:
                pass
            finally:
                try:
                    self._sock.settimeout(timeout)
                except OSError:
                    pass
        self._drop(*_unsolicited(self._decoder))

    def _closed_error(self) -> Disconnected:
        return Disconnected(self._lost, self._lost_code)

    def _reconnect(self) -> None:
        if self._shut or self._dial is None:
            raise self._closed_error()
        if not self._closed:
            self._drop("replaced")
        # From the seed after the one that failed, so that a dead node is tried last.
        fresh, self._seed = _open_any(self._seeds, self._seed + 1, self._dial)
        self._sock, self._decoder, self.server_info, self.address = (
            fresh._sock, fresh._decoder, fresh.server_info, fresh.address)
        # The socket is this connection's now; the object that opened it must not close it.
        fresh._closed = True
        self._closed = False
        self.reconnects += 1

    def _ensure_connected(self) -> None:
        if not self._closed:
            self._check_peer()
        if self._closed:
            self._reconnect()

    def _request(self, frame: bytes, read: bool) -> Tuple[int, bytes]:
        """Send one request and return its reply frame, reconnecting and sending it again as
        velocity.failover describes, within ``retries`` further tries."""
        attempt = 0
        while True:
            try:
                self._ensure_connected()
                # A send that fails has not delivered the whole frame, and the server runs a
                # frame only once its checksum is in: nothing ran, any request may go again.
                self._send(frame)
            except Exception as e:
                # No seed answered (down, full, still starting): wait, then try them again.
                if self._shut or self._dial is None or attempt >= self.retries or not seed_is_skippable(e):
                    raise
                attempt += 1
                time.sleep(backoff(attempt, self.retry_backoff))
                continue
            try:
                msg_type, payload = self._reply_frame()
            except Disconnected as e:
                if self._dial is None:
                    raise
                if not read:
                    raise OutcomeUnknown(
                        f"the connection to {_where(self.address)} was lost after the write was sent ({e}): "
                        "it may or may not have been applied") from e
                if self._shut or attempt >= self.retries:
                    raise
                attempt += 1
                continue  # to another node at once: no need to wait for this one
            if msg_type == p.ERROR and attempt < self.retries:
                code, message = p.parse_code_message(payload)
                if code == ServerOverloaded.code and overloaded_retry_safe(read, message):
                    attempt += 1
                    time.sleep(backoff(attempt, self.retry_backoff))
                    continue
            return msg_type, payload

    # -- requests ---------------------------------------------------------------------------

    def execute(self, sql: str, params: Optional[Sequence[Param]] = None) -> Result:
        """Run one statement and return its result. ``?`` placeholders outside quoted literals
        are replaced by ``params``, each quoted so that it cannot change the statement.

        A read whose connection is lost, and any statement the server refuses as overloaded,
        is sent again (over a new connection if need be); a write whose connection is lost
        after it was sent raises :class:`OutcomeUnknown`."""
        r = reply_to_result(*self._request(self._command(sql, params), is_read(sql)))
        if isinstance(r, VelocityError):
            raise r
        return r

    def _command(self, sql: str, params: Optional[Sequence[Param]]) -> bytes:
        if self._shut or (self._closed and self._dial is None):
            raise self._closed_error()
        if params is not None:
            sql = p.bind(sql, params)
        data = sql.encode("utf-8")
        if len(data) > self.server_info.max_payload:
            raise UsageError(f"statement is {len(data)} bytes; the server accepts {self.server_info.max_payload}")
        return p.encode_frame(p.COMMAND, data)


    # -- conditional writes and counters ----------------------------------------------------

    def insert_if_absent(self, key: Bytes, value: Bytes, ttl: Optional[int] = None) -> bool:
        """Write ``key`` only if it is absent (or expired): True when inserted, False when a live
        key was left as it was (value and TTL). ``ttl`` in whole seconds, or None for no expiry."""
        return self.execute(_insert_if_absent_sql(key, value, ttl)).affected == 1

    def cas(self, key: Bytes, expected: Bytes, new: Bytes) -> bool:
        """Compare-and-set: replace the value with ``new`` only if ``key`` is live and holds
        exactly ``expected``; True when it did (the key keeps its TTL), False otherwise (a missing
        key included)."""
        return self.execute(_cas_sql(key, expected, new)).affected == 1

    def incr(self, key: Bytes, by: int = 1) -> int:
        """Add ``by`` (a signed 64-bit int; negative counts down) to the counter at ``key`` and
        return its new value; an absent key counts from 0. The value must be the decimal text of
        a 64-bit integer and the sum must fit: otherwise the server refuses with
        :class:`InvalidCommand` and nothing changes. A ``by`` out of range is a :class:`UsageError`."""
        return _counter_value(self.execute(_incr_sql(key, by)))

    def pipeline(self) -> "Pipeline":
        """Collect statements and send them together; see :class:`Pipeline`."""
        return Pipeline(self)

    def run_pipelined(self, frames: List[bytes], window: int = PIPELINE_WINDOW) -> List[Union[Result, VelocityError]]:
        """Send request frames without waiting, keeping at most ``window`` unanswered; the
        replies in request order.

        Nothing is sent again: a connection found lost before the first frame is replaced, but
        one lost midway raises :class:`OutcomeUnknown` if a write was among the requests sent
        and not answered (:class:`Disconnected` if they were all reads); the connection is
        replaced on its next request."""
        self._ensure_connected()
        replies: List[Union[Result, VelocityError]] = []
        out = bytearray()
        in_flight = 0
        sent = 0  # frames handed to the socket, wholly or in part
        try:
            for f in frames:
                out += f
                in_flight += 1
                if in_flight >= window:
                    sent = len(replies) + in_flight
                    self._send(bytes(out))
                    out.clear()
                    while in_flight > window // 2:
                        replies.append(self._reply())
                        in_flight -= 1
            if out:
                sent = len(replies) + in_flight
                self._send(bytes(out))
            for _ in range(in_flight):
                replies.append(self._reply())
        except Disconnected as e:
            unanswered = frames[len(replies):sent]
            if self._dial is not None and not all(_frame_is_read(f) for f in unanswered):
                raise OutcomeUnknown(
                    f"the connection to {_where(self.address)} was lost with {len(unanswered)} requests of the "
                    f"pipeline sent and not answered ({e}): the writes among them may or may not have been "
                    f"applied; the {len(replies)} before them were answered") from e
            raise
        return replies

    def ping(self, data: bytes = b"") -> bytes:
        if len(data) > p.PING_PAYLOAD_BYTES_MAX:
            raise UsageError(f"PING carries at most {p.PING_PAYLOAD_BYTES_MAX} bytes")
        msg_type, payload = self._request(p.encode_ping(data), read=True)
        if msg_type == p.PONG:
            return payload
        r = reply_to_result(msg_type, payload)
        raise r if isinstance(r, VelocityError) else ProtocolError("PING answered with a result set")

    def stats(self) -> Result:
        """The STATS frame: server counters and latency percentiles as (name, value) rows."""
        r = reply_to_result(*self._request(p.encode_stats(), read=True))
        if isinstance(r, VelocityError):
            raise r
        return r

    def send_raw(self, frame: bytes) -> Union[Result, VelocityError, bytes]:
        """Send a pre-built frame and return the reply (for tests and tools); never sent again."""
        self._ensure_connected()
        self._send(frame)
        msg_type, payload = self._reply_frame()
        return payload if msg_type == p.PONG else self._as_reply(msg_type, payload)

    @staticmethod
    def _as_reply(msg_type: int, payload: bytes) -> Union[Result, VelocityError]:
        return reply_to_result(msg_type, payload)

    @property
    def fingerprint(self) -> str:
        return self.server_info.fingerprint_text

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Say DISCONNECT and close."""
        if self._closed:
            self._shut = True
            return
        try:
            self._sock.sendall(p.encode_disconnect(0, "bye"))
        except OSError:
            pass
        self.close_now()

    def close_now(self) -> None:
        self._shut = True
        if not self._closed:
            self._drop("the connection is closed")

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self.close_now()


class Pipeline:
    """Statements sent in one round trip (within a window of in-flight requests)::

        with conn.pipeline() as pipe:
            for i in range(10_000):
                pipe.execute("INSERT INTO kv (key, value) VALUES (?, ?)", [f"k{i}", "v"])
        pipe.results  # one Result per statement, in order

    ``run()`` sends what was queued and returns the results; by default the first error is
    raised after every reply has been read (the connection stays usable); with
    ``raise_on_error=False`` errors are returned in place of their results.
    """

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._frames: List[bytes] = []
        self.results: List[Union[Result, VelocityError]] = []

    def execute(self, sql: str, params: Optional[Sequence[Param]] = None) -> "Pipeline":
        self._frames.append(self._conn._command(sql, params))
        return self

    add = execute

    def __len__(self) -> int:
        return len(self._frames)

    def run(self, raise_on_error: bool = True) -> List[Union[Result, VelocityError]]:
        frames, self._frames = self._frames, []
        self.results = self._conn.run_pipelined(frames)
        if raise_on_error:
            for r in self.results:
                if isinstance(r, VelocityError):
                    raise r
        return self.results

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None and self._frames:
            self.run()


def _where(address: Optional[Address]) -> str:
    return host_label(*address) if address else "the server"


def _open(
    address: Address,
    *,
    login: Login,
    tls: bool,
    known_hosts: Optional[PathLike],
    accept_new_host: Union[bool, Callable[[str, str], bool]],
    fingerprint: Optional[str],
    timeout: Optional[float],
    client_name: str,
) -> Connection:
    """One connection to one address: TCP, TLS, HELLO, the identity check, the login."""
    host, port = address
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as e:
        raise Disconnected(f"cannot connect to {host}:{port}: {e}") from e
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    cert_der = None
    decoder = p.FrameDecoder(p.PREAUTH_PAYLOAD_BYTES_MAX)
    try:
        if tls:
            try:
                sock = tls_context().wrap_socket(sock, server_hostname=None if _is_ip(host) else host)
            except (ssl.SSLError, OSError) as e:
                raise ProtocolError(
                    f"TLS handshake with {host}:{port} failed ({e}); if the server was started with "
                    "--plaintext, connect with tls=False"
                ) from e
            cert_der = sock.getpeercert(binary_form=True)
            if not cert_der:
                raise TrustError("the server presented no certificate")
        conn = Connection(sock, None, decoder)  # type: ignore[arg-type]
        conn.address = (host, port)
        conn._send(p.encode_hello(client_name))
        try:
            msg_type, payload = conn._recv_frame()
        except p.FrameError as e:
            if not tls and e.kind == "bad_magic":
                raise ProtocolError(f"{e}; if the server uses TLS (the default), connect with tls=True") from e
            raise
        info = accept_server_info(
            msg_type, payload, cert_der, host_label(host, port), known_hosts, accept_new_host, fingerprint
        )
        conn.server_info = info
        frame = login.frame(info)
        if frame is not None:
            conn._send(frame)
            check_auth_response(*conn._recv_frame())
            decoder.payload_bytes_max = info.max_payload
        return conn
    except BaseException:
        sock.close()
        raise


def _open_any(seeds: List[Address], start: int, dial: Callable[[Address], Connection]) -> Tuple[Connection, int]:
    """A connection to the first seed from ``start`` on (round the list) that answers, and its
    index; past one that cannot be reached or is full, not past a refused login or identity."""
    failures: List[Tuple[Address, BaseException]] = []
    for i in range(len(seeds)):
        index = (start + i) % len(seeds)
        try:
            return dial(seeds[index]), index
        except Exception as e:
            if not seed_is_skippable(e):
                raise
            failures.append((seeds[index], e))
    err = none_answered(failures)
    if err is failures[-1][1]:
        raise err
    raise err from failures[-1][1]


def connect(
    host: Optional[str] = None,
    port: Optional[int] = None,
    *,
    hosts: Optional[Sequence[Seed]] = None,
    user: Optional[str] = None,
    password: Optional[str] = None,
    api_key: Optional[str] = None,
    credential: Optional[bytes] = None,
    tls: bool = True,
    known_hosts: Optional[PathLike] = None,
    accept_new_host: Union[bool, Callable[[str, str], bool]] = False,
    fingerprint: Optional[str] = None,
    timeout: Optional[float] = 30.0,
    client_name: str = CLIENT_NAME,
    reconnect: Optional[bool] = None,
    retries: Optional[int] = None,
    retry_backoff: float = DEFAULT_RETRY_BACKOFF,
) -> Connection:
    """Connect to a Velocity server, check its identity and log in.

    - ``host`` and ``port`` (default 127.0.0.1, 7411), or ``hosts``: seed addresses, each
      ``(host, port)`` or ``"host:port"`` (``"host"``: port 7411; ``"[v6]:port"``), tried in
      order until one answers (one that cannot be reached, times out or is full is passed
      over; a refused login or an untrusted identity is raised at once).
    - ``user`` and ``password`` (Argon2id-derived here; the password never leaves the process),
      or ``user`` and a ``credential`` from :func:`derive_credential`, or an ``api_key``; with
      none of them the connection is made but not logged in.
    - ``tls=False`` for a server started with ``--plaintext``.
    - Trust on first use: ``known_hosts`` (default ``~/.velocity/known_hosts``);
      ``accept_new_host`` records a server seen for the first time (or a callable that asks);
      ``fingerprint='SHA256:…'`` accepts exactly that server key.
    - ``reconnect`` (default: True with ``hosts``, False with ``host`` and ``port``): when the
      connection is lost, the next seed that answers (round the list) replaces it, with the
      same handshake and login; a read in flight is sent again, a write in flight raises
      :class:`OutcomeUnknown`. Without it a lost connection stays lost (:class:`Disconnected`).
    - ``retries`` (default: 3 with ``reconnect``, else 0): further tries of a read whose
      connection was lost, or of a statement the server refused as overloaded; the first after
      ``retry_backoff`` seconds, each next one after twice as long.
    """
    seeds = seed_list(host, port, hosts, DEFAULT_HOST, DEFAULT_PORT)
    reconnect, retries = retry_settings(hosts, reconnect, retries, retry_backoff)
    dial = functools.partial(
        _open, login=Login(user, password, api_key, credential), tls=tls, known_hosts=known_hosts,
        accept_new_host=accept_new_host, fingerprint=fingerprint, timeout=timeout, client_name=client_name,
    )
    conn, index = _open_any(seeds, 0, dial)
    conn.retries, conn.retry_backoff = retries, retry_backoff
    if reconnect:
        conn._dial, conn._seeds, conn._seed = dial, seeds, index
    return conn
