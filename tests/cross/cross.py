"""The Python client's runner for the cross-client check (tests/cross/run.py).

    cross.py write SPEC PREFIX   insert each SPEC line's key (PREFIX + key) and value
    cross.py read                print every x:% key in the canonical form

The server and login come from CROSS_HOST, CROSS_PORT, CROSS_USER, VELOCITY_PASSWORD, CROSS_TLS
(1/0), CROSS_KNOWN_HOSTS, CROSS_ACCEPT_NEW (1/0); the TTL range a reader accepts from
CROSS_TTL_MIN and CROSS_TTL_MAX. Every key and value goes through the client's own ``?`` binding:
text entries of SPEC as ``str``, bytes entries as ``bytes``.
"""

import os
import sys

import velocity


def connect() -> velocity.Connection:
    e = os.environ
    return velocity.connect(
        e["CROSS_HOST"], int(e["CROSS_PORT"]), user=e["CROSS_USER"], password=e["VELOCITY_PASSWORD"],
        tls=e["CROSS_TLS"] == "1", known_hosts=e["CROSS_KNOWN_HOSTS"], accept_new_host=e["CROSS_ACCEPT_NEW"] == "1",
    )


def decode(kind: str, hexed: str):
    b = bytes.fromhex(hexed)
    return b.decode("utf-8") if kind == "text" else b


def write(spec: str, prefix: str) -> None:
    with open(spec) as f, connect() as db:
        for line in f.read().splitlines():
            kk, kh, vk, vh, ttl = line.split(" ")
            key, value = decode(kk, kh), decode(vk, vh)
            key = prefix + key if isinstance(key, str) else prefix.encode() + key
            if ttl == "-":
                r = db.execute("INSERT INTO kv (key, value) VALUES (?, ?)", [key, value])
            else:
                r = db.execute("INSERT INTO kv (key, value, ttl) VALUES (?, ?, ?)", [key, value, int(ttl)])
            if r.affected != 1:
                raise SystemExit(f"INSERT of {key!r} affected {r.affected} rows")


def token(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, int):
        return f"i:{v}"
    if isinstance(v, bytes):
        return "b:" + v.hex()
    raise TypeError(f"unexpected value type {type(v).__name__}")


def ttl_token(v, lo: int, hi: int) -> str:
    if v is None:
        return "-"
    if isinstance(v, int):
        return "ttl" if lo <= v <= hi else f"ttl!{v}"
    return token(v)


def read() -> None:
    lo, hi = int(os.environ["CROSS_TTL_MIN"]), int(os.environ["CROSS_TTL_MAX"])

    def line(row) -> str:
        k, v, t = row
        return f"{token(k)} {token(v)} {ttl_token(t, lo, hi)}"

    out = []
    with connect() as db:
        count = db.execute("SELECT COUNT(*) FROM kv WHERE key LIKE ?", ["x:%"]).scalar()
        out.append(f"count {count}" if isinstance(count, int) else f"count {token(count)}")
        scan = sorted(db.execute("SELECT key, value, ttl FROM kv WHERE key LIKE ?", ["x:%"]).rows,
                      key=lambda r: r[0])
        out += [f"scan {line(r)}" for r in scan]
        keys = [r[0] for r in scan]
        for k in keys:
            rows = db.execute("SELECT key, value, ttl FROM kv WHERE key = ?", [k]).rows
            if len(rows) != 1:
                raise SystemExit(f"point read of {k!r}: {len(rows)} rows")
            out.append(f"point {line(rows[0])}")
        marks = ", ".join("?" * len(keys))
        rows = db.execute(f"SELECT key, value, ttl FROM kv WHERE key IN ({marks})", keys).rows
        out += [f"in {line(r)}" for r in sorted(rows, key=lambda r: r[0])]
    sys.stdout.write("".join(s + "\n" for s in out))


def main() -> None:
    if sys.argv[1:2] == ["write"] and len(sys.argv) == 4:
        write(sys.argv[2], sys.argv[3])
    elif sys.argv[1:] == ["read"]:
        read()
    else:
        raise SystemExit("usage: cross.py write SPEC PREFIX | cross.py read")


if __name__ == "__main__":
    main()
