"""The asyncio variant: the same protocol core, on ``asyncio`` streams.

    conn = await velocity.aio.connect("127.0.0.1", 7411, user="alice", password="…")
    async with conn:
        await conn.execute("INSERT INTO kv (key, value) VALUES (?, ?)", ["k", "v"])
        rows = await conn.pipeline(["SELECT value FROM kv WHERE key = 'k'"] * 100)

Argon2id runs in a worker thread so that the event loop is not blocked while it derives.
"""

from __future__ import annotations

import asyncio
from typing import Callable, List, Optional, Sequence, Union

from . import protocol as p
from .client import (
    CLIENT_NAME,
    DEFAULT_PORT,
    PIPELINE_WINDOW,
    Bytes,
    Param,
    _is_ip,
    accept_server_info,
    auth_frame,
    _cas_sql,
    check_auth_response,
    _counter_value,
    derive_credential,
    _incr_sql,
    _insert_if_absent_sql,
    reply_to_result,
    tls_context,
)
from .errors import Disconnected, ProtocolError, UsageError, VelocityError
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

    async def _recv_frame(self):
        while True:
            frame = self._decoder.next_frame()
            if frame is not None:
                return frame
            try:
                data = await self._reader.read(256 * 1024)
            except OSError as e:
                self._closed = True
                raise Disconnected(f"connection lost: {e}") from e
            if not data:
                self._closed = True
                raise Disconnected("the server closed the connection")
            self._decoder.feed(data)

    def _command(self, sql: str, params: Optional[Sequence[Param]]) -> bytes:
        if self._closed:
            raise Disconnected("the connection is closed")
        if params is not None:
            sql = p.bind(sql, params)
        data = sql.encode("utf-8")
        if len(data) > self.server_info.max_payload:
            raise UsageError(f"statement is {len(data)} bytes; the server accepts {self.server_info.max_payload}")
        return p.encode_frame(p.COMMAND, data)

    async def execute(self, sql: str, params: Optional[Sequence[Param]] = None) -> Result:
        (r,) = await self._run([self._command(sql, params)])
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
        """Run many statements in one round trip; each is SQL or ``(sql, params)``."""
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
            replies: List[Union[Result, VelocityError]] = []
            in_flight = 0
            for f in frames:
                self._writer.write(f)
                in_flight += 1
                if in_flight >= PIPELINE_WINDOW:
                    await self._writer.drain()
                    while in_flight > PIPELINE_WINDOW // 2:
                        replies.append(reply_to_result(*await self._recv_frame()))
                        in_flight -= 1
            await self._writer.drain()
            for _ in range(in_flight):
                replies.append(reply_to_result(*await self._recv_frame()))
            return replies

    async def ping(self, data: bytes = b"") -> bytes:
        async with self._lock:
            self._writer.write(p.encode_ping(data))
            await self._writer.drain()
            msg_type, payload = await self._recv_frame()
        if msg_type == p.PONG:
            return payload
        r = reply_to_result(msg_type, payload)
        raise r if isinstance(r, VelocityError) else ProtocolError("PING answered with a result set")

    @property
    def fingerprint(self) -> str:
        return self.server_info.fingerprint_text

    async def close(self) -> None:
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


async def connect(
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    *,
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
) -> AsyncConnection:
    """As :func:`velocity.connect`, for asyncio."""
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
    try:
        cert_der = None
        if tls:
            cert_der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.write(p.encode_hello(client_name))
        await writer.drain()
        msg_type, payload = await asyncio.wait_for(conn._recv_frame(), timeout)
        info = accept_server_info(
            msg_type, payload, cert_der, host_label(host, port), known_hosts, accept_new_host, fingerprint
        )
        conn.server_info = info
        if api_key is None and user is not None and credential is None and password is not None:
            # Argon2id off the event loop.
            credential = await asyncio.get_running_loop().run_in_executor(
                None, derive_credential, info, user, password
            )
        frame = auth_frame(info, user, None, api_key, credential)
        if frame is not None:
            writer.write(frame)
            await writer.drain()
            check_auth_response(*await asyncio.wait_for(conn._recv_frame(), timeout))
            conn._decoder.payload_bytes_max = info.max_payload
        return conn
    except BaseException:
        writer.close()
        raise
