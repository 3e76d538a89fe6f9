"""The Velocity wire protocol, version 1 (profile sections 1, 3 and 4), without any I/O.

``FrameDecoder`` is fed bytes and hands out whole frames; an incomplete frame is ``None``, not an
error. The ``encode_*`` functions build client frames; ``parse_*`` read server payloads. The
blocking and asyncio connections are thin shells around this module.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

from .errors import ProtocolError

MAGIC = b"VELO"
VERSION = 1
HEADER_BYTES = 10
FRAME_OVERHEAD_BYTES = 14

#: Largest payload accepted before authentication (profile section 1).
PREAUTH_PAYLOAD_BYTES_MAX = 4096
#: The largest ``max_payload`` a server may announce; a larger one is a protocol error, so a
#: hostile server cannot make the client buffer without bound.
PAYLOAD_BYTES_CEILING = 64 << 20
PING_PAYLOAD_BYTES_MAX = 64
USERNAME_BYTES_MAX = 64
PASSWORD_BYTES_MAX = 128
CREDENTIAL_BYTES_MAX = 128
#: Bounds on the Argon2id cost a server may ask of the client (same as the Rust client).
ARGON2_M_KIB_MAX = 1 << 20
ARGON2_T_MAX = 16
ARGON2_P_MAX = 16

HELLO = 0x01
SERVER_INFO = 0x02
AUTH_REQUEST = 0x03
AUTH_RESPONSE = 0x04
DISCONNECT = 0x05
COMMAND = 0x10
RESPONSE = 0x11
ERROR = 0x12
PING = 0x20
PONG = 0x21
STATS = 0x22

KNOWN_TYPES = {HELLO, SERVER_INFO, AUTH_REQUEST, AUTH_RESPONSE, DISCONNECT, COMMAND, RESPONSE, ERROR, PING, PONG, STATS}

METHOD_PASSWORD = 1
METHOD_API_KEY = 2

FLAG_TLS = 0x01
FLAG_AUTH_REQUIRED = 0x02

#: A value of a result set: bytes, an integer, or None (SQL NULL).
Value = Union[bytes, int, None]
Row = Tuple[Value, ...]


class FrameError(ProtocolError):
    """A framing violation. ``kind`` names it as the shared test vectors do (``bad_magic``,
    ``bad_version``, ``too_long``, ``bad_checksum``, ``unknown_type``, ``malformed``); ``fatal``
    says whether the frame boundary is lost, so that the connection must close."""

    def __init__(self, kind: str, message: str, fatal: bool) -> None:
        super().__init__(message)
        self.kind = kind
        self.fatal = fatal


def encode_frame(msg_type: int, payload: bytes) -> bytes:
    head = MAGIC + struct.pack("<BBI", VERSION, msg_type, len(payload)) + payload
    return head + struct.pack("<I", zlib.crc32(head) & 0xFFFFFFFF)


class FrameDecoder:
    """Accumulates received bytes; ``next_frame`` returns ``(type, payload)`` or ``None``.

    The payload limit is checked from the header alone, before any payload is buffered.
    """

    def __init__(self, payload_bytes_max: int = PREAUTH_PAYLOAD_BYTES_MAX) -> None:
        self.payload_bytes_max = payload_bytes_max
        self._buf = bytearray()
        self._pos = 0

    def feed(self, data: bytes) -> None:
        if self._pos and self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        elif self._pos > 65536 and self._pos * 2 > len(self._buf):
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def next_frame(self) -> Optional[Tuple[int, bytes]]:
        buf, pos = self._buf, self._pos
        avail = len(buf) - pos
        # Check what has arrived as soon as it arrives: a wrong magic is known after 1 byte.
        head = bytes(buf[pos : pos + min(avail, HEADER_BYTES)])
        if head[:4] != MAGIC[: len(head[:4])]:
            raise FrameError("bad_magic", "bad magic: not a Velocity server (is it TLS on one side only?)", True)
        if avail < HEADER_BYTES:
            return None
        version, msg_type, length = struct.unpack_from("<BBI", buf, pos + 4)
        if version != VERSION:
            raise FrameError("bad_version", f"unsupported protocol version {version}", True)
        if length > self.payload_bytes_max:
            raise FrameError("too_long", f"frame of {length} bytes exceeds the limit of {self.payload_bytes_max}", True)
        total = FRAME_OVERHEAD_BYTES + length
        if avail < total:
            return None
        body_end = pos + HEADER_BYTES + length
        (crc,) = struct.unpack_from("<I", buf, body_end)
        if zlib.crc32(memoryview(buf)[pos:body_end]) & 0xFFFFFFFF != crc:
            raise FrameError("bad_checksum", "frame checksum mismatch", True)
        payload = bytes(buf[pos + HEADER_BYTES : body_end])
        self._pos = pos + total
        if msg_type not in KNOWN_TYPES:
            raise FrameError("unknown_type", f"unknown frame type 0x{msg_type:02x}", False)
        return msg_type, payload


class Reader:
    """Reads primitive fields from a payload; any overrun is a malformed payload."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n > len(self.data) - self.pos:
            raise FrameError("malformed", "payload is shorter than its fields", False)
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return struct.unpack("<H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def u64(self) -> int:
        return struct.unpack("<Q", self.take(8))[0]

    def i64(self) -> int:
        return struct.unpack("<q", self.take(8))[0]

    def text(self, n: int) -> str:
        try:
            return self.take(n).decode("utf-8")
        except UnicodeDecodeError:
            raise FrameError("malformed", "text field is not UTF-8", False) from None

    def str8(self) -> str:
        return self.text(self.u8())

    def str16(self) -> str:
        return self.text(self.u16())

    def end(self) -> None:
        if self.pos != len(self.data):
            raise FrameError("malformed", f"{len(self.data) - self.pos} bytes after the last field", False)


def _str8(s: str, what: str) -> bytes:
    b = s.encode("utf-8")
    if len(b) > 255:
        raise ProtocolError(f"{what} is longer than 255 bytes")
    return bytes([len(b)]) + b


def _str16(s: str) -> bytes:
    b = s.encode("utf-8")[:65535]
    return struct.pack("<H", len(b)) + b


def encode_hello(client_name: str, versions: Sequence[int] = (VERSION,)) -> bytes:
    return encode_frame(HELLO, bytes([len(versions)]) + bytes(versions) + _str8(client_name, "client name"))


def encode_auth_request(method: int, username: str, credential: bytes) -> bytes:
    if len(credential) > 255:
        raise ProtocolError("credential is longer than 255 bytes")
    payload = bytes([method]) + _str8(username, "user name") + bytes([len(credential)]) + credential
    return encode_frame(AUTH_REQUEST, payload)


def encode_command(sql: str) -> bytes:
    return encode_frame(COMMAND, sql.encode("utf-8"))


def encode_ping(data: bytes = b"") -> bytes:
    return encode_frame(PING, data)


def encode_stats() -> bytes:
    return encode_frame(STATS, b"")


def encode_disconnect(code: int = 0, reason: str = "bye") -> bytes:
    return encode_frame(DISCONNECT, struct.pack("<H", code) + _str16(reason))


@dataclass(frozen=True)
class ServerInfo:
    version: int
    server: str
    fingerprint: bytes
    auth_salt: bytes
    argon2_m_kib: int
    argon2_t: int
    argon2_p: int
    max_payload: int
    shards: int
    flags: int

    @property
    def tls(self) -> bool:
        return bool(self.flags & FLAG_TLS)

    @property
    def fingerprint_text(self) -> str:
        """``SHA256:<base64 without padding>``, as ``velocityd fingerprint`` prints it."""
        return fingerprint_string(self.fingerprint)


def fingerprint_string(fp: bytes) -> str:
    import base64

    return "SHA256:" + base64.b64encode(fp).decode("ascii").rstrip("=")


def parse_server_info(payload: bytes) -> ServerInfo:
    r = Reader(payload)
    info = ServerInfo(
        version=r.u8(),
        server=r.str8(),
        fingerprint=r.take(32),
        auth_salt=r.take(16),
        argon2_m_kib=r.u32(),
        argon2_t=r.u32(),
        argon2_p=r.u8(),
        max_payload=r.u32(),
        shards=r.u16(),
        flags=r.u8(),
    )
    r.end()
    return info


def parse_code_message(payload: bytes) -> Tuple[int, str]:
    """ERROR, AUTH_RESPONSE and DISCONNECT share the layout ``u16 code; str16 text``."""
    r = Reader(payload)
    code, text = r.u16(), r.str16()
    r.end()
    return code, text


@dataclass
class Result:
    """A result set: ``columns``, ``rows`` (tuples of bytes, int or None) and ``affected``.

    It is a sequence of its rows. ``text()`` gives the rows with bytes decoded as UTF-8.
    """

    columns: List[str]
    rows: List[Row]
    affected: int = 0

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def __getitem__(self, i: int) -> Row:
        return self.rows[i]

    def text(self, errors: str = "strict") -> List[Tuple[Union[str, int, None], ...]]:
        return [tuple(text(v, errors) for v in row) for row in self.rows]

    def scalar(self) -> Value:
        """The single value of a one-row, one-column result (``SELECT value … WHERE key = …``)."""
        if len(self.rows) != 1 or len(self.columns) != 1:
            raise ValueError(f"expected one value, got {len(self.rows)} rows of {len(self.columns)} columns")
        return self.rows[0][0]

    def as_dict(self) -> dict:
        """``{name: value}`` for two-column results such as SHOW STATS, SHOW STATUS and key, value."""
        return {row[0].decode() if isinstance(row[0], bytes) else row[0]: row[1] for row in self.rows}


def text(v: Value, errors: str = "strict") -> Union[str, int, None]:
    """Decode a bytes value as UTF-8; integers and None pass through."""
    return v.decode("utf-8", errors) if isinstance(v, bytes) else v


def parse_result(payload: bytes) -> Result:
    r = Reader(payload)
    n_cols = r.u16()
    columns = [r.str16() for _ in range(n_cols)]
    n_rows = r.u32()
    # Each value takes at least one byte: a count beyond the payload is malformed, caught before
    # any allocation proportional to it.
    if n_cols == 0 and n_rows != 0 or n_rows * n_cols > len(payload):
        raise FrameError("malformed", "result set claims more values than its payload holds", False)
    rows: List[Row] = []
    for _ in range(n_rows):
        row = []
        for _ in range(n_cols):
            tag = r.u8()
            if tag == 0:
                row.append(None)
            elif tag == 1:
                row.append(r.take(r.u32()))
            elif tag == 2:
                row.append(r.i64())
            else:
                raise FrameError("malformed", f"unknown value tag {tag}", False)
        rows.append(tuple(row))
    affected = r.u64()
    r.end()
    return Result(columns, rows, affected)


def quote(value: Union[str, bytes, bytearray, int, None]) -> str:
    """A SQL literal for ``value`` that parses back to exactly that value and can never change the
    shape of the statement it is placed in: text is quoted with ``'`` doubled; bytes that are not
    printable UTF-8 become ``X'…'``; integers are written in decimal; None is NULL."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        raise TypeError("cannot quote a bool; pass an int, str or bytes")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("the dialect has unsigned integer literals only")
        return str(value)
    if isinstance(value, str):
        value = value.encode("utf-8")
    if not isinstance(value, (bytes, bytearray)):
        raise TypeError(f"cannot quote {type(value).__name__}")
    try:
        s = bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        s = None
    if s is not None and s.isprintable():
        return "'" + s.replace("'", "''") + "'"
    return "X'" + bytes(value).hex() + "'"


def bind(sql: str, params: Sequence[Union[str, bytes, int, None]]) -> str:
    """Replace each ``?`` outside a quoted literal with ``quote(param)``."""
    out: List[str] = []
    it = iter(params)
    used = 0
    in_quote = False
    for ch in sql:
        if ch == "'":
            in_quote = not in_quote
            out.append(ch)
        elif ch == "?" and not in_quote:
            try:
                out.append(quote(next(it)))
            except StopIteration:
                raise ValueError("more ? placeholders than parameters") from None
            used += 1
        else:
            out.append(ch)
    if used != len(params):
        raise ValueError(f"{len(params)} parameters for {used} ? placeholders")
    return "".join(out)
