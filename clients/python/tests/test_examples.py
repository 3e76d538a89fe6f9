"""examples/quickstart.py against the real velocityd: where it connects comes from VELOCITY_HOST,
VELOCITY_PORT, VELOCITY_USER and VELOCITY_PASSWORD, with the quick start's defaults, said aloud."""

import os
import subprocess
import sys
import time
from pathlib import Path

from conftest import PASSWORD, velocityd

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "quickstart.py"


def run_example(env, tmp_dir, *args, stdin=None):
    # A home of its own (known_hosts), and no controlling terminal: getpass then reads stdin.
    full = {k: v for k, v in os.environ.items() if not k.startswith("VELOCITY_")}
    full.update(HOME=str(tmp_dir / "home"), **env)
    return subprocess.run([sys.executable, str(EXAMPLE), "--accept-new-host", *args], env=full, input=stdin,
                          capture_output=True, text=True, timeout=120, start_new_session=True)


def check_ran(out, user):
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("connected to velocityd") and f" as {user}, SHA256:" in lines[0], out.stdout
    assert "greeting = hello, world" in lines
    assert "pipelined 1000 inserts" in lines
    assert "  example:0000 = value 0" in lines
    assert "lock: first try won, second try lost" in lines
    assert "lock handed from worker-7 to worker-8: yes" in lines
    assert "visits = 1 then 3" in lines
    assert any(l.startswith("missing key: ") and l.endswith("(wire code 4)") for l in lines), out.stdout


def test_example_takes_its_server_and_user_from_the_environment(make_server, tmp_dir):
    s = make_server(1)
    env = {"VELOCITY_HOST": "127.0.0.1", "VELOCITY_PORT": str(s.port), "VELOCITY_USER": "alice",
           "VELOCITY_PASSWORD": PASSWORD}
    out = run_example(env, tmp_dir)
    check_ran(out, "alice")
    assert f"at 127.0.0.1:{s.port} as alice" in out.stdout
    assert "not set" not in out.stderr, out.stderr
    # The example cleans up its keys; only the greeting (with a TTL) stays.
    with s.alice() as db:
        assert db.execute("SELECT COUNT(*) FROM kv WHERE key LIKE 'example:%'").scalar() == 0


def test_example_says_which_defaults_it_took(make_server, tmp_dir):
    s = make_server(1)
    # The quick start's user is admin: the default when VELOCITY_USER is unset.
    velocityd("user", "add", "admin", "--password-stdin", data_dir=s.data_dir, stdin="admin's password")
    time.sleep(1.5)  # the server reloads its users within a second
    out = run_example({"VELOCITY_PORT": str(s.port), "VELOCITY_PASSWORD": "admin's password"}, tmp_dir)
    check_ran(out, "admin")
    assert "not set, so the quick start's defaults: VELOCITY_HOST=127.0.0.1, VELOCITY_USER=admin" in out.stderr
    # No password: it says so and asks (here, without a terminal, on standard input).
    out = run_example({"VELOCITY_PORT": str(s.port), "VELOCITY_USER": "alice"}, tmp_dir, stdin=PASSWORD + "\n")
    check_ran(out, "alice")
    assert "VELOCITY_PASSWORD is not set: asking for alice's password" in out.stderr
    # Flags win over the environment.
    out = run_example({"VELOCITY_PORT": "1", "VELOCITY_USER": "nobody", "VELOCITY_PASSWORD": PASSWORD}, tmp_dir,
                      "--port", str(s.port), "--user", "alice")
    check_ran(out, "alice")
    # A port that is none is named.
    out = run_example({"VELOCITY_PORT": "not-a-port", "VELOCITY_PASSWORD": "x"}, tmp_dir)
    assert out.returncode != 0 and "VELOCITY_PORT is not a port number: 'not-a-port'" in out.stderr
