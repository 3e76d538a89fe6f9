"""The language-neutral vectors in tests/vectors/frames.json, byte for byte."""

import json
from pathlib import Path

import pytest

import velocity
from velocity import protocol as p

VECTORS = json.loads((Path(__file__).resolve().parents[3] / "tests" / "vectors" / "frames.json").read_text())
TYPES = {name: getattr(p, name) for name in ("HELLO", "SERVER_INFO", "AUTH_REQUEST", "AUTH_RESPONSE", "DISCONNECT",
                                             "COMMAND", "RESPONSE", "ERROR", "PING", "PONG", "STATS")}


def value(v):
    if "null" in v:
        return None
    if "int" in v:
        return v["int"]
    return bytes.fromhex(v["bytes_hex"])


def encode_client(f):
    m = f["message"]
    t = f["type"]
    if t == "PING":
        return p.encode_ping(bytes.fromhex(m["payload_hex"]))
    if t == "HELLO":
        return p.encode_hello(m["client"], m["versions"])
    if t == "COMMAND":
        return p.encode_command(m["sql"])
    if t == "AUTH_REQUEST":
        return p.encode_auth_request(m["method"], m["username"], bytes.fromhex(m["credential_hex"]))
    if t == "DISCONNECT":
        return p.encode_disconnect(m["code"], m["reason"])
    if t == "STATS":
        return p.encode_stats()
    raise AssertionError(t)


CLIENT_FRAMES = [f for f in VECTORS["frames"] if f["direction"] == "client"]
SERVER_FRAMES = [f for f in VECTORS["frames"] if f["direction"] == "server"]


@pytest.mark.parametrize("f", CLIENT_FRAMES, ids=[f["name"] for f in CLIENT_FRAMES])
def test_client_frames_encode_byte_for_byte(f):
    assert encode_client(f).hex() == f["hex"]


@pytest.mark.parametrize("f", SERVER_FRAMES, ids=[f["name"] for f in SERVER_FRAMES])
def test_server_frames_decode(f):
    d = p.FrameDecoder(1 << 20)
    d.feed(bytes.fromhex(f["hex"]))
    msg_type, payload = d.next_frame()
    assert msg_type == TYPES[f["type"]]
    assert d.buffered() == 0
    m = f["message"]
    if f["type"] in ("RESPONSE", "STATS"):
        r = p.parse_result(payload)
        assert r.columns == m["columns"]
        assert r.rows == [tuple(value(v) for v in row) for row in m["rows"]]
        assert r.affected == m["affected"]
    elif f["type"] == "ERROR":
        assert p.parse_code_message(payload) == (m["code"], m["message"])
        err = velocity.errors.error_for(m["code"], m["message"])
        assert err.code == m["code"] and err.message == m["message"]
    elif f["type"] == "AUTH_RESPONSE":
        assert p.parse_code_message(payload) == (m["status"], m["message"])
    elif f["type"] == "DISCONNECT":
        assert p.parse_code_message(payload) == (m["code"], m["reason"])
    elif f["type"] == "PONG":
        assert payload.hex() == m["payload_hex"]
    elif f["type"] == "SERVER_INFO":
        info = p.parse_server_info(payload)
        assert (info.version, info.server, info.fingerprint.hex(), info.auth_salt.hex()) == (
            m["version"], m["server"], m["fingerprint_hex"], m["auth_salt_hex"])
        assert (info.argon2_m_kib, info.argon2_t, info.argon2_p, info.max_payload, info.shards, info.flags) == (
            m["argon2_m_kib"], m["argon2_t"], m["argon2_p"], m["max_payload"], m["shards"], m["flags"])
    else:
        raise AssertionError(f["type"])


def test_frames_split_at_every_byte_are_incomplete_not_errors():
    for f in VECTORS["frames"]:
        raw = bytes.fromhex(f["hex"])
        d = p.FrameDecoder(1 << 20)
        for i in range(len(raw) - 1):
            d.feed(raw[i : i + 1])
            assert d.next_frame() is None, (f["name"], i)
        d.feed(raw[-1:])
        assert d.next_frame() is not None


@pytest.mark.parametrize("f", VECTORS["incomplete"], ids=[f["name"] for f in VECTORS["incomplete"]])
def test_incomplete(f):
    d = p.FrameDecoder()
    d.feed(bytes.fromhex(f["hex"]))
    assert d.next_frame() is None


# Framing violations are the same on either side; payload rules for frames a client never
# receives (HELLO, COMMAND, PING, a RESPONSE sent to a server) are the server's concern.
FRAMING = [f for f in VECTORS["invalid"] if f["error"] in ("bad_magic", "bad_version", "too_long", "bad_checksum",
                                                            "unknown_type")]


@pytest.mark.parametrize("f", FRAMING, ids=[f["name"] for f in FRAMING])
def test_invalid_frames(f):
    d = p.FrameDecoder(f["limit"])
    d.feed(bytes.fromhex(f["hex"]))
    with pytest.raises(p.FrameError) as e:
        d.next_frame()
    assert e.value.kind == f["error"]
    assert e.value.fatal == f["close"]
    assert e.value.code == 0x0006


def test_truncated_and_oversized_result_sets_are_malformed():
    good = p.parse_result(bytes.fromhex(VECTORS["frames"][4]["hex"])[10:-4])
    assert good.scalar() == b"alice"
    payload = bytes.fromhex(VECTORS["frames"][4]["hex"])[10:-4]
    for cut in range(len(payload)):
        with pytest.raises(p.FrameError):
            p.parse_result(payload[:cut])
    # A row count far beyond the payload is refused before anything is allocated for it.
    with pytest.raises(p.FrameError):
        p.parse_result(b"\x01\x00\x01\x00v\xff\xff\xff\xff")


def test_credential_vector():
    c = VECTORS["credential"]
    info = p.ServerInfo(1, "x", b"\0" * 32, bytes.fromhex(c["auth_salt_hex"]), c["argon2_m_kib"], c["argon2_t"],
                        c["argon2_p"], 1 << 20, 1, 3)
    cred = velocity.derive_credential(info, c["username"], c["password"])
    assert cred.hex() == c["credential_hex"]
    import hashlib
    assert hashlib.sha256(cred).hexdigest() == c["stored_hex"]


def test_hostile_argon2_parameters_are_refused():
    info = p.ServerInfo(1, "x", b"\0" * 32, b"\0" * 16, 1 << 30, 2, 1, 1 << 20, 1, 3)
    with pytest.raises(velocity.ProtocolError):
        velocity.derive_credential(info, "alice", "pw")


def test_quote_and_bind():
    assert velocity.quote("it's") == "'it''s'"
    assert velocity.quote(b"\x00\xff") == "X'00ff'"
    assert velocity.quote("line\nbreak") == "X'" + b"line\nbreak".hex() + "'"
    assert velocity.quote(42) == "42"
    assert velocity.quote(None) == "NULL"
    assert velocity.bind("SELECT value FROM kv WHERE key = ? AND key <> '?'", ["a'b"]) == \
        "SELECT value FROM kv WHERE key = 'a''b' AND key <> '?'"
    with pytest.raises(ValueError):
        velocity.bind("SELECT ?", [])
    with pytest.raises(ValueError):
        velocity.bind("SELECT ?", [1, 2])
    with pytest.raises(TypeError):
        velocity.quote(1.5)


def test_fingerprint_string_matches_the_rust_format():
    # SHA256: then unpadded standard base64, as `velocityd fingerprint` prints it.
    assert p.fingerprint_string(bytes(32)) == "SHA256:" + "A" * 43
