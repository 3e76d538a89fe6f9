#!/usr/bin/env python3
"""Connect, write, read back, pipeline, handle a missing key.

    python3 examples/quickstart.py --port 7411 --user alice   # asks for the password
"""

import argparse
import getpass
import os

import velocity


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=7411)
    ap.add_argument("--user", default="alice")
    ap.add_argument("--plaintext", action="store_true", help="server started with --plaintext")
    ap.add_argument("--accept-new-host", action="store_true", help="trust a server seen for the first time")
    args = ap.parse_args()
    password = os.environ.get("VELOCITY_PASSWORD") or getpass.getpass(f"password for {args.user}: ")

    with velocity.connect(args.host, args.port, user=args.user, password=password, tls=not args.plaintext,
                          accept_new_host=args.accept_new_host) as db:
        print("connected to", db.server_info.server, db.fingerprint)
        db.execute("INSERT INTO kv (key, value, ttl) VALUES (?, ?, ?)", ["greeting", "hello, world", 60])
        print("greeting =", velocity.text(db.execute("SELECT value FROM kv WHERE key = ?", ["greeting"]).scalar()))

        with db.pipeline() as pipe:
            for i in range(1000):
                pipe.execute("INSERT INTO kv (key, value) VALUES (?, ?)", [f"example:{i:04}", f"value {i}"])
        print("pipelined", len(pipe.results), "inserts")
        for key, value in db.execute("SELECT key, value FROM kv WHERE key LIKE 'example:%' LIMIT 3").text():
            print(" ", key, "=", value)

        try:
            db.execute("SELECT value FROM kv WHERE key = 'no such key'")
        except velocity.KeyNotFound as e:
            print(f"missing key: {e} (wire code {e.code})")
        db.execute("DELETE FROM kv WHERE key LIKE 'example:%'")


if __name__ == "__main__":
    main()
