"""Seeds, reconnection and retries, shared by the blocking and asyncio connections.

A connection is given one or more seed addresses (the nodes of a cluster, or one server). It
uses the first that answers; when that connection is lost it moves on to the next. What is then
done with the statement in flight depends on whether running it twice could change anything:

- a read (SELECT, SHOW other than SHOW SLOWLOG RESET, PING, STATS) is sent again over the new
  connection, a bounded number of times with a growing pause;
- a write whose connection was lost after it was sent is not: it may have been applied, so it
  raises :class:`OutcomeUnknown`;
- any statement the server answered SERVER_OVERLOADED (it changed nothing) is sent again, except
  a write of which the server says part was or may have been applied.

Without seeds (``host`` and ``port``) a connection is neither replaced nor retried unless asked,
as before seeds existed.
"""

from __future__ import annotations

import random
from typing import List, Optional, Sequence, Tuple, Union

from .errors import (
    Disconnected,
    InvalidCredentials,
    ProtocolError,
    RateLimited,
    ServerOverloaded,
    TrustError,
    Unauthorized,
    UsageError,
    VelocityError,
)
from .trust import host_label

Address = Tuple[str, int]
#: ``("host", port)``, or ``"host:port"``, ``"host"`` (the default port), ``"[v6]:port"``.
Seed = Union[str, Tuple[str, int]]

#: Further tries of a read, or of a statement the server refused as overloaded, when the
#: connection reconnects.
DEFAULT_RETRIES = 3
#: Seconds before the first further try; each one after waits twice as long, up to RETRY_BACKOFF_MAX.
DEFAULT_RETRY_BACKOFF = 0.1
RETRY_BACKOFF_MAX = 2.0


def _port(v: object, seed: object) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 < v < 65536:
        raise UsageError(f"seed {seed!r}: the port must be an int from 1 to 65535")
    return v


def parse_seed(seed: Seed, default_port: int) -> Address:
    if isinstance(seed, (tuple, list)):
        if len(seed) != 2 or not isinstance(seed[0], str) or not seed[0]:
            raise UsageError(f"seed {seed!r}: expected (host, port)")
        return seed[0], _port(seed[1], seed)
    if not isinstance(seed, str) or not seed:
        raise UsageError(f"seed {seed!r}: expected 'host:port' or (host, port)")
    if seed.startswith("["):
        end = seed.find("]")
        rest = seed[end + 1 :] if end > 0 else None
        if rest is None or (rest and not rest.startswith(":")):
            raise UsageError(f"seed {seed!r}: expected '[v6 address]:port'")
        host, port_text = seed[1:end], rest[1:] if rest else None
    elif seed.count(":") == 1:
        host, port_text = seed.split(":")
    else:
        # No colon, or a bare IPv6 address (several): the whole is the host.
        host, port_text = seed, None
    if not host:
        raise UsageError(f"seed {seed!r}: no host")
    if port_text is None:
        return host, default_port
    if not port_text.isdigit() or not port_text.isascii():
        raise UsageError(f"seed {seed!r}: the port is not a number")
    return host, _port(int(port_text), seed)


def seed_list(host: Optional[str], port: Optional[int], hosts: Optional[Sequence[Seed]],
              default_host: str, default_port: int) -> List[Address]:
    """The addresses to try, in order: ``hosts``, or else the single ``host`` and ``port``."""
    if hosts is None:
        return [(default_host if host is None else host, default_port if port is None else port)]
    if host is not None or port is not None:
        raise UsageError("give either host and port or hosts, not both")
    if isinstance(hosts, (str, bytes)):
        raise UsageError("hosts is a list of seeds: hosts=['host:port', ...] or [(host, port), ...]")
    seeds = [parse_seed(s, default_port) for s in hosts]
    if not seeds:
        raise UsageError("hosts is empty")
    return seeds


# -- which statements are reads ------------------------------------------------------------
# Blanks and comments as the server's lexer has them (src/sql/lexer.rs): space, tab, CR, LF;
# `--` to the end of the line; `/* … */`, nesting.

_BLANKS = " \t\r\n"


def _keywords(sql: str):
    """The leading words of a statement, upper-cased, until something that is not a word."""
    i, n = 0, len(sql)
    while True:
        while True:
            while i < n and sql[i] in _BLANKS:
                i += 1
            if sql.startswith("--", i):
                j = sql.find("\n", i)
                i = n if j < 0 else j + 1
            elif sql.startswith("/*", i):
                depth = 0
                while i < n:
                    if sql.startswith("/*", i):
                        depth += 1
                        i += 2
                    elif sql.startswith("*/", i):
                        depth -= 1
                        i += 2
                        if depth == 0:
                            break
                    else:
                        i += 1
                if depth:
                    return  # unterminated: the server refuses the statement
            else:
                break
        j = i
        while j < n and sql[j].isascii() and (sql[j].isalnum() or sql[j] == "_"):
            j += 1
        if j == i:
            return
        yield sql[i:j].upper()
        i = j


def is_read(sql: str) -> bool:
    """Whether running ``sql`` twice gives what running it once does: a statement whose first
    keyword is SELECT or SHOW (any case, after blanks and comments), except SHOW SLOWLOG RESET,
    which empties the slow log (a second run would report nothing removed)."""
    words = _keywords(sql)
    first = next(words, None)
    if first == "SELECT":
        return True
    if first == "SHOW":
        return (next(words, None), next(words, None)) != ("SLOWLOG", "RESET")
    return False


# -- what is retried -----------------------------------------------------------------------


def session_ended(code: int) -> bool:
    """A DISCONNECT that ends the session on purpose (user removed, key revoked: 8; too many
    failed logins: 1), not one for a shutdown or a timeout (0): logging in again is not for the
    client to try."""
    return code != 0


def overloaded_retry_safe(read: bool, message: str) -> bool:
    """SERVER_OVERLOADED means nothing was changed, except for two writes over several shards:
    the memory limit refused one after some of its rows were written, or a shard did not answer
    for its part, which it may have applied. Repeating those would apply parts twice (a counter
    would count twice)."""
    return read or (" of its rows were written" not in message and "a shard is not answering" not in message)


def seed_is_skippable(e: BaseException) -> bool:
    """Whether connect may try the next seed after this failure. Not after a refused login or an
    untrusted identity: those are the caller's to fix, and repeating a login elsewhere would
    only count more failures against it."""
    if isinstance(e, (TrustError, InvalidCredentials, Unauthorized, RateLimited, UsageError)):
        return False
    return isinstance(e, (VelocityError, OSError))


def backoff(attempt: int, base: float) -> float:
    """Seconds to wait before further try number ``attempt`` (1, 2, …): ``base`` doubled each
    time, capped, with jitter so that clients that lost one node do not all come back at once."""
    d = min(base * (2 ** (attempt - 1)), RETRY_BACKOFF_MAX)
    return d * random.uniform(0.5, 1.0)


def none_answered(failures: List[Tuple[Address, BaseException]]) -> BaseException:
    """The error for a connect that no seed answered: the only seed's own, or one naming each
    (with their errors in ``errors``)."""
    if len(failures) == 1:
        return failures[0][1]
    last = failures[-1][1]
    text = "; ".join(f"{host_label(*a)}: {e}" for a, e in failures)
    msg = f"no seed answered ({text})"
    err: VelocityError = VelocityError(msg)
    for cls in (ServerOverloaded, ProtocolError, Disconnected):
        if isinstance(last, cls):
            err = cls(msg)
            break
    err.errors = [e for _, e in failures]  # type: ignore[attr-defined]
    return err


def retry_settings(hosts: Optional[Sequence[Seed]], reconnect: Optional[bool], retries: Optional[int],
                   retry_backoff: float) -> Tuple[bool, int]:
    """``reconnect`` and ``retries`` as given, or their defaults: with seeds, reconnect and
    retry; with a single host and port, neither, as before seeds existed."""
    if reconnect is None:
        reconnect = hosts is not None
    if retries is None:
        retries = DEFAULT_RETRIES if reconnect else 0
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise UsageError(f"retries must be an int >= 0, not {retries!r}")
    if isinstance(retry_backoff, bool) or not isinstance(retry_backoff, (int, float)) or retry_backoff < 0:
        raise UsageError(f"retry_backoff must be seconds >= 0, not {retry_backoff!r}")
    return bool(reconnect), retries
