"""The asyncio variant: the same protocol core, on ``asyncio`` streams.

    conn = await velocity.aio.connect("127.0.0.1", 7411, user="alice", password="…")
    async with conn:
        await conn.execute("INSERT INTO kv (key, value) VALUES (?, ?)", ["k", "v"])
        rows = await conn.pipeline(["SELECT value FROM kv WHERE key = 'k'"] * 100)

Argon2id runs in a worker thread so that the event loop is not blocked while it derives.
Seeds, reconnection and retries are those of the blocking connection (velocity.failover).
"""

from __future__ import annotations

import asyncio
import functools
from typing import Awaitable, Callable, List, Optional, Sequence, Tuple, Union

from . import protocol as p
from .client import (
    CLIENT_NAME,
    DEFAULT_HOST,
    DEFAULT_PORT,
    PIPELINE_WINDOW,
    Bytes,
    Login,
    Param,
    _frame_is_read,
    _unsolicited,
    _is_ip,
    _where,
    accept_server_info,
    _cas_sql,
    check_auth_response,
    _counter_value,
    _incr_sql,
    _insert_if_absent_sql,
    reply_to_result,
    tls_context,
)
from .errors import Disconnected, OutcomeUnknown, ProtocolError, ServerOverloaded, UsageError, VelocityError
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
from .trust import PathLike, host_label


class AsyncConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._decoder = p.FrameDecoder(p.PREAUTH_PAYLOAD_BYTES_MAX)
        self.server_info: ServerInfo = None  # type: ignore[assignment]
        self._lock = asyncio.Lock()
        self._closed = False
        # Closed by its user: never reconnected.
        self._shut = False
        self._lost = "the connection is closed"
        self._lost_code: Optional[int] = None
        # Set by connect(): how to open a replacement, and where (None: never replaced).
        self._dial: Optional[Callable[[Address], Awaitable["AsyncConnection"]]] = None
        self._seeds: List[Address] = []
        self._seed = 0
        self.address: Optional[Address] = None
        self.reconnects = 0
        self.retries = 0
        self.retry_backoff = DEFAULT_RETRY_BACKOFF

    def _drop(self, why: str, code: Optional[int] = None) -> None:
        self._closed = True
        self._lost, self._lost_code = why, code
        self._shut = self._shut or (code is not None and session_ended(code))
        self._writer.close()

    def _closed_error(self) -> Disconnected:
        return Disconnected(self._lost, self._lost_code)

    async def _recv_frame(self):
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
                data = await self._reader.read(256 * 1024)
            except OSError as e:
                self._drop(f"connection lost: {e}")
                raise Disconnected(self._lost) from e
            if not data:
                self._drop("the server closed the connection")
                raise Disconnected(self._lost)
            self._decoder.feed(data)

    async def _reply_frame(self) -> Tuple[int, bytes]:
        msg_type, payload = await self._recv_frame()
        if msg_type == p.DISCONNECT:
            code, reason = p.parse_code_message(payload)
            self._drop(f"server disconnected: {reason}", code)
            raise Disconnected(self._lost, code, reason)
        return msg_type, payload

    async def _send(self, data: bytes) -> None:
        try:
            self._writer.write(data)
            await self._writer.drain()
        except OSError as e:
            self._drop(f"connection lost while sending: {e}")
            raise Disconnected(self._lost) from e

    # -- reconnection (as the blocking Connection's) ----------------------------------------

    async def _check_peer(self) -> None:
        """As the blocking Connection's: the reader takes in whatever arrives, so its state
        tells without waiting."""
        r = self._reader
        # StreamReader has no public way to ask whether bytes are buffered without awaiting.
        waiting = bool(getattr(r, "_buffer", b""))
        if not (self._decoder.buffered() or waiting or r.at_eof() or r.exception() is not None
                or self._writer.transport.is_closing()):
            return
        if waiting or r.at_eof():
            try:
                self._decoder.feed(await r.read(256 * 1024))  # at once: bytes are there, or EOF
            except OSError:
                pass
        self._drop(*_unsolicited(self._decoder))

    async def _reconnect(self) -> None:
        if self._shut or self._dial is None:
            raise self._closed_error()
        if not self._closed:
            self._drop("replaced")
        fresh, self._seed = await _open_any(self._seeds, self._seed + 1, self._dial)
        self._reader, self._writer, self._decoder = fresh._reader, fresh._writer, fresh._decoder
        self.server_info, self.address = fresh.server_info, fresh.address
        self._closed = False
        self.reconnects += 1

    async def _ensure_connected(self) -> None:
        if not self._closed:
            await self._check_peer()
        if self._closed:
            await self._reconnect()

    async def _request(self, frame: bytes, read: bool) -> Tuple[int, bytes]:
        async with self._lock:
            attempt = 0
            while True:
                try:
                    await self._ensure_connected()
                except Exception as e:
                    # No seed answered (down, full, still starting): wait, then try them again.
                    if self._shut or self._dial is None or attempt >= self.retries or not seed_is_skippable(e):
                        raise
                    attempt += 1
                    await asyncio.sleep(backoff(attempt, self.retry_backoff))
                    continue
                try:
                    # Unlike a blocking send, a failed drain does not say the frame stayed here:
                    # the transport may have handed all of it to the kernel first.
                    await self._send(frame)
                    msg_type, payload = await self._reply_frame()
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
                    continue
                if msg_type == p.ERROR and attempt < self.retries:
                    code, message = p.parse_code_message(payload)
                    if code == ServerOverloaded.code and overloaded_retry_safe(read, message):
                        attempt += 1
                        await asyncio.sleep(backoff(attempt, self.retry_backoff))
                        continue
                return msg_type, payload

    def _command(self, sql: str, params: Optional[Sequence[Param]]) -> bytes:
        if self._shut or (self._closed and self._dial is None):
            raise self._closed_error()
        if params is not None:
            sql = p.bind(sql, params)
        data = sql.encode("utf-8")
        if len(data) > self.server_info.max_payload:
            raise UsageError(f"statement is {len(data)} bytes; the server accepts {self.server_info.max_payload}")
        return p.encode_frame(p.COMMAND, data)

    async def execute(self, sql: str, params: Optional[Sequence[Param]] = None) -> Result:
        """As :meth:`velocity.Connection.execute`: a read is sent again over a new connection,
        a write whose connection was lost after it was sent raises :class:`OutcomeUnknown`."""
        r = reply_to_result(*await self._request(self._command(sql, params), is_read(sql)))
        if isinstance(r, VelocityError):
            raise r
        return r


    # -- conditional writes and counters (as the blocking Connection's) ---------------------

    async def insert_if_absent(self, key: Bytes, value: Bytes, ttl: Optional[int] = None) -> bool:
        """True when ``key`` was absent (or expired) and is now written; False leaves it alone."""
        return (await self.execute(_insert_if_absent_sql(key, value, ttl))).affected == 1

    async def cas(self, key: Bytes, expected: Bytes, new: Bytes) -> bool:
        """True when ``key`` held exactly ``expected`` and now holds ``new`` (TTL kept)."""
        return (await self.execute(_cas_sql(key, expected, new))).affected == 1

    async def incr(self, key: Bytes, by: int = 1) -> int:
        """The counter's new value after adding ``by`` (an absent key counts from 0)."""
        return _counter_value(await self.execute(_incr_sql(key, by)))

    async def pipeline(
        self, statements: Sequence[Union[str, tuple]], raise_on_error: bool = True
    ) -> List[Union[Result, VelocityError]]:
        """Run many statements in one round trip; each is SQL or ``(sql, params)``. Nothing is
        sent again: as :meth:`velocity.Connection.run_pipelined`."""
        frames = [self._command(s, None) if isinstance(s, str) else self._command(*s) for s in statements]
        replies = await self._run(frames)
        if raise_on_error:
            for r in replies:
                if isinstance(r, VelocityError):
                    raise r
        return replies

    async def _run(self, frames: List[bytes]) -> List[Union[Result, VelocityError]]:
        # One request batch at a time per connection: replies come back in request order.
        async with self._lock:
            await self._ensure_connected()
            replies: List[Union[Result, VelocityError]] = []
            in_flight = 0
            try:
                for f in frames:
                    self._writer.write(f)
                    in_flight += 1
                    if in_flight >= PIPELINE_WINDOW:
                        await self._send(b"")
                        while in_flight > PIPELINE_WINDOW // 2:
                            replies.append(reply_to_result(*await self._reply_frame()))
                            in_flight -= 1
                await self._send(b"")
                for _ in range(in_flight):
                    replies.append(reply_to_result(*await self._reply_frame()))
            except Disconnected as e:
                # What was written may have reached the server, drained or not.
                unanswered = frames[len(replies):len(replies) + in_flight]
                if self._dial is not None and not all(_frame_is_read(f) for f in unanswered):
                    raise OutcomeUnknown(
                        f"the connection to {_where(self.address)} was lost with {len(unanswered)} requests of "
                        f"the pipeline sent and not answered ({e}): the writes among them may or may not have "
                        f"been applied; the {len(replies)} before them were answered") from e
                raise
            return replies

    async def ping(self, data: bytes = b"") -> bytes:
        if len(data) > p.PING_PAYLOAD_BYTES_MAX:
            raise UsageError(f"PING carries at most {p.PING_PAYLOAD_BYTES_MAX} bytes")
        msg_type, payload = await self._request(p.encode_ping(data), read=True)
        if msg_type == p.PONG:
            return payload
        r = reply_to_result(msg_type, payload)
        raise r if isinstance(r, VelocityError) else ProtocolError("PING answered with a result set")

    @property
    def fingerprint(self) -> str:
        return self.server_info.fingerprint_text

    @property
    def closed(self) -> bool:
        return self._closed

    async def close(self) -> None:
        self._shut = True
        if self._closed:
            return
        self._closed = True
        try:
            self._writer.write(p.encode_disconnect(0, "bye"))
            await self._writer.drain()
        except OSError:
            pass
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except (OSError, ConnectionError):
            pass

    async def __aenter__(self) -> "AsyncConnection":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()


async def _open(
    address: Address,
    *,
    login: Login,
    tls: bool,
    known_hosts: Optional[PathLike],
    accept_new_host: Union[bool, Callable[[str, str], bool]],
    fingerprint: Optional[str],
    timeout: Optional[float],
    client_name: str,
) -> AsyncConnection:
    host, port = address
    ssl_ctx = tls_context() if tls else None
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                host, port, ssl=ssl_ctx, server_hostname=(None if _is_ip(host) else host) if tls else None
            ),
            timeout,
        )
    except (OSError, asyncio.TimeoutError) as e:
        hint = "; if the server was started with --plaintext, connect with tls=False" if tls else ""
        raise Disconnected(f"cannot connect to {host}:{port}: {e}{hint}") from e
    conn = AsyncConnection(reader, writer)
    conn.address = (host, port)
    try:
        cert_der = None
        if tls:
            cert_der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.write(p.encode_hello(client_name))
        await writer.drain()
        msg_type, payload = await _within(conn._recv_frame(), timeout)
        info = accept_server_info(
            msg_type, payload, cert_der, host_label(host, port), known_hosts, accept_new_host, fingerprint
        )
        conn.server_info = info
        if login.needs_derivation(info):
            # Argon2id off the event loop.
            await asyncio.get_running_loop().run_in_executor(None, login.derive, info)
        frame = login.frame(info)
        if frame is not None:
            writer.write(frame)
            await writer.drain()
            check_auth_response(*await _within(conn._recv_frame(), timeout))
            conn._decoder.payload_bytes_max = info.max_payload
        return conn
    except BaseException:
        writer.close()
        raise


async def _within(aw, timeout: Optional[float]):
    try:
        return await asyncio.wait_for(aw, timeout)
    except asyncio.TimeoutError as e:
        # A timeout is a seed that does not answer: the next one is tried.
        raise Disconnected(f"timed out waiting for the server ({timeout} s)") from e


async def _open_any(seeds: List[Address], start: int,
                    dial: Callable[[Address], Awaitable[AsyncConnection]]) -> Tuple[AsyncConnection, int]:
    """As velocity.client._open_any."""
    failures = []
    for i in range(len(seeds)):
        index = (start + i) % len(seeds)
        try:
            return await dial(seeds[index]), index
        except Exception as e:
            if not seed_is_skippable(e):
                raise
            failures.append((seeds[index], e))
    err = none_answered(failures)
    if err is failures[-1][1]:
        raise err
    raise err from failures[-1][1]


async def connect(
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
) -> AsyncConnection:
    """As :func:`velocity.connect`, for asyncio."""
    seeds = seed_list(host, port, hosts, DEFAULT_HOST, DEFAULT_PORT)
    reconnect, retries = retry_settings(hosts, reconnect, retries, retry_backoff)
    dial = functools.partial(
        _open, login=Login(user, password, api_key, credential), tls=tls, known_hosts=known_hosts,
        accept_new_host=accept_new_host, fingerprint=fingerprint, timeout=timeout, client_name=client_name,
    )
    conn, index = await _open_any(seeds, 0, dial)
    conn.retries, conn.retry_backoff = retries, retry_backoff
    if reconnect:
        conn._dial, conn._seeds, conn._seed = dial, seeds, index
    return conn
