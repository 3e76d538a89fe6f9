#!/usr/bin/env python3
"""Connect, write, read back, pipeline, write conditionally, count, handle a missing key.

    VELOCITY_PASSWORD=... python3 examples/quickstart.py [--plaintext] [--accept-new-host]

Where and as whom it connects comes from the environment, as for velocity-cli:
VELOCITY_HOST (default 127.0.0.1), VELOCITY_PORT (7411), VELOCITY_USER (admin) and
VELOCITY_PASSWORD (asked for when unset): the defaults are what scripts/quickstart.sh sets up.
--host, --port and --user override them.
"""

import argparse
import getpass
import os
import sys

import velocity

# The quick start's server and user (scripts/quickstart.sh).
DEFAULTS = {"VELOCITY_HOST": "127.0.0.1", "VELOCITY_PORT": "7411", "VELOCITY_USER": "admin"}


def settings(argv=None):
    ap = argparse.ArgumentParser(
        description="Velocity's Python client in a few statements.",
        epilog="Environment: VELOCITY_HOST, VELOCITY_PORT, VELOCITY_USER, VELOCITY_PASSWORD "
        "(defaults: 127.0.0.1, 7411, admin, as scripts/quickstart.sh sets up; the password is asked for).",
    )
    ap.add_argument("--host", help="overrides VELOCITY_HOST")
    ap.add_argument("--port", type=int, help="overrides VELOCITY_PORT")
    ap.add_argument("--user", help="overrides VELOCITY_USER")
    ap.add_argument("--plaintext", action="store_true", help="server started with --plaintext")
    ap.add_argument("--accept-new-host", action="store_true", help="trust a server seen for the first time")
    args = ap.parse_args(argv)
    defaulted = []

    def pick(given, name):
        if given is not None:
            return given
        if os.environ.get(name):
            return os.environ[name]
        defaulted.append(f"{name}={DEFAULTS[name]}")
        return DEFAULTS[name]

    args.host = pick(args.host, "VELOCITY_HOST")
    port = pick(args.port, "VELOCITY_PORT")
    try:
        args.port = int(port)
    except ValueError:
        ap.error(f"VELOCITY_PORT is not a port number: {port!r}")
    args.user = pick(args.user, "VELOCITY_USER")
    if defaulted:
        print(f"not set, so the quick start's defaults: {', '.join(defaulted)}", file=sys.stderr)
    args.password = os.environ.get("VELOCITY_PASSWORD")
    if not args.password:
        print(f"VELOCITY_PASSWORD is not set: asking for {args.user}'s password "
              "(scripts/quickstart.sh printed admin's)", file=sys.stderr)
        args.password = getpass.getpass(f"password for {args.user}: ")
    return args


def main() -> None:
    args = settings()
    with velocity.connect(args.host, args.port, user=args.user, password=args.password, tls=not args.plaintext,
                          accept_new_host=args.accept_new_host) as db:
        print(f"connected to {db.server_info.server} at {args.host}:{args.port} as {args.user}, {db.fingerprint}")
        db.execute("INSERT INTO kv (key, value, ttl) VALUES (?, ?, ?)", ["greeting", "hello, world", 60])
        print("greeting =", velocity.text(db.execute("SELECT value FROM kv WHERE key = ?", ["greeting"]).scalar()))

        with db.pipeline() as pipe:
            for i in range(1000):
                pipe.execute("INSERT INTO kv (key, value) VALUES (?, ?)", [f"example:{i:04}", f"value {i}"])
        print("pipelined", len(pipe.results), "inserts")
        for key, value in db.execute("SELECT key, value FROM kv WHERE key LIKE 'example:%' LIMIT 3").text():
            print(" ", key, "=", value)

        # Conditional writes and a counter, one round trip each (docs/protocol.md).
        first = db.insert_if_absent("example:lock", "worker-7", ttl=30)  # True: the key was absent
        second = db.insert_if_absent("example:lock", "worker-8")  # False: worker-7 holds it
        print(f"lock: first try {'won' if first else 'lost'}, second try {'won' if second else 'lost'}")
        handed = db.cas("example:lock", "worker-7", "worker-8")  # True: it held worker-7
        print(f"lock handed from worker-7 to worker-8: {'yes' if handed else 'no'}")
        print("visits =", db.incr("example:visits"), "then", db.incr("example:visits", 2))  # 1 then 3

        try:
            db.execute("SELECT value FROM kv WHERE key = 'no such key'")
        except velocity.KeyNotFound as e:
            print(f"missing key: {e} (wire code {e.code})")
        db.execute("DELETE FROM kv WHERE key LIKE 'example:%'")


if __name__ == "__main__":
    main()
