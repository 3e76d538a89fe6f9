#!/usr/bin/env python3
"""Writes tests/vectors/frames.json: Velocity frames as hex with their meaning.

An independent encoder (Python's zlib CRC-32, struct packing) so that the Rust codec, and every
client that loads the vectors, is checked against a second implementation. The example frames
of profile section 7 are asserted byte for byte before anything is written.

Usage: python3 scripts/gen_vectors.py   (rewrites the file; the Rust tests check it)
"""
import hashlib, json, struct, sys, zlib, os

MAGIC = b"VELO"
T = dict(HELLO=0x01, SERVER_INFO=0x02, AUTH_REQUEST=0x03, AUTH_RESPONSE=0x04, DISCONNECT=0x05,
         COMMAND=0x10, RESPONSE=0x11, ERROR=0x12, PING=0x20, PONG=0x21, STATS=0x22)

def frame(kind, payload, version=1):
    body = MAGIC + bytes([version, kind]) + struct.pack("<I", len(payload)) + payload
    return body + struct.pack("<I", zlib.crc32(body) & 0xffffffff)

def str8(s): b = s.encode() if isinstance(s, str) else s; return bytes([len(b)]) + b
def str16(s): b = s.encode(); return struct.pack("<H", len(b)) + b

def value(v):
    if v is None: return b"\x00"
    if isinstance(v, int): return b"\x02" + struct.pack("<q", v)
    return b"\x01" + struct.pack("<I", len(v)) + v

def result_set(columns, rows, affected):
    out = struct.pack("<H", len(columns)) + b"".join(str16(c) for c in columns)
    out += struct.pack("<I", len(rows)) + b"".join(value(v) for r in rows for v in r)
    return out + struct.pack("<Q", affected)

def rs_meaning(columns, rows, affected):
    def cell(v):
        if v is None: return {"null": True}
        if isinstance(v, int): return {"int": v}
        return {"bytes_hex": v.hex()}
    return {"columns": columns, "rows": [[cell(v) for v in r] for r in rows], "affected": affected}

vectors = []
def add(name, direction, typ, payload, meaning):
    vectors.append({"name": name, "direction": direction, "type": typ,
                     "hex": frame(T[typ], payload).hex(), "message": meaning})

# Profile section 7, verbatim.
SPEC = {
    "PING, empty payload": "56454c4f01200000000 0a2f66905",
    "PING \"hi\"": "56454c4f0120020000006869 8c07b45d",
    "HELLO [1] \"velocity-cli/0.1.0\"": "56454c4f01011500000001011276656c6f636974792d636c692f302e312e309ffd29c8",
    "COMMAND SELECT value FROM kv WHERE key = 'user:1'": "56454c4f011029000000 53454c4543542076616c75652046524f4d206b76205748455245206b6579203d2027757365723a3127ddc70460",
    "RESPONSE value=alice": "56454c4f01111f000000010005007661 6c7565010000000105000000616c6963650000000000000000 76fbca4d",
    "RESPONSE affected=3": "56454c4f01110e00000000000000000003000000000000 00e98e9375",
    "ERROR KEY_NOT_FOUND": "56454c4f0112110000000400 0d006b6579206e6f7420666f756e6434 62ad3a",
}
SPEC = {k: v.replace(" ", "") for k, v in SPEC.items()}

add("PING, empty payload", "client", "PING", b"", {"payload_hex": ""})
add("PING \"hi\"", "client", "PING", b"hi", {"payload_hex": b"hi".hex()})
add("HELLO [1] \"velocity-cli/0.1.0\"", "client", "HELLO", bytes([1, 1]) + str8("velocity-cli/0.1.0"),
    {"versions": [1], "client": "velocity-cli/0.1.0"})
sql = "SELECT value FROM kv WHERE key = 'user:1'"
add("COMMAND SELECT value FROM kv WHERE key = 'user:1'", "client", "COMMAND", sql.encode(), {"sql": sql})
add("RESPONSE value=alice", "server", "RESPONSE", result_set(["value"], [[b"alice"]], 0),
    rs_meaning(["value"], [[b"alice"]], 0))
add("RESPONSE affected=3", "server", "RESPONSE", result_set([], [], 3), rs_meaning([], [], 3))
add("ERROR KEY_NOT_FOUND", "server", "ERROR", struct.pack("<H", 4) + str16("key not found"),
    {"code": 4, "message": "key not found"})
for v in vectors:
    assert SPEC[v["name"]] == v["hex"], (v["name"], v["hex"])

# Our own: every other message type and the corner cases of each encoding.
fp = hashlib.sha256(b"example SubjectPublicKeyInfo").digest()
salt = bytes(range(16))
si = (bytes([1]) + str8("velocityd/0.1.0") + fp + salt + struct.pack("<IIB", 19456, 2, 1)
      + struct.pack("<IHB", 1 << 20, 2, 0x03))
add("SERVER_INFO", "server", "SERVER_INFO", si,
    {"version": 1, "server": "velocityd/0.1.0", "fingerprint_hex": fp.hex(), "auth_salt_hex": salt.hex(),
     "argon2_m_kib": 19456, "argon2_t": 2, "argon2_p": 1, "max_payload": 1 << 20, "shards": 2, "flags": 3})
cred = bytes.fromhex("348410209a4900c7ca6485cd79f28d97bf92614b5884826920a6e758eddbc065")
add("AUTH_REQUEST password alice", "client", "AUTH_REQUEST", bytes([1]) + str8("alice") + str8(cred),
    {"method": 1, "username": "alice", "credential_hex": cred.hex()})
add("AUTH_REQUEST api key", "client", "AUTH_REQUEST", bytes([2]) + str8("") + str8("vk_example"),
    {"method": 2, "username": "", "credential_hex": b"vk_example".hex()})
add("AUTH_RESPONSE success", "server", "AUTH_RESPONSE", struct.pack("<H", 0) + str16("welcome"),
    {"status": 0, "message": "welcome"})
add("AUTH_RESPONSE invalid", "server", "AUTH_RESPONSE", struct.pack("<H", 1) + str16("invalid credentials"),
    {"status": 1, "message": "invalid credentials"})
add("DISCONNECT from client", "client", "DISCONNECT", struct.pack("<H", 0) + str16("bye"), {"code": 0, "reason": "bye"})
add("DISCONNECT shutdown", "server", "DISCONNECT", struct.pack("<H", 0) + str16("server shutting down"),
    {"code": 0, "reason": "server shutting down"})
sql = "INSERT INTO kv (key, value, ttl) VALUES ('it''s', X'00ff', 60);"
add("COMMAND with doubled quote and hex", "client", "COMMAND", sql.encode(), {"sql": sql})
add("COMMAND with UTF-8", "client", "COMMAND", "SELECT value FROM kv WHERE key = 'caf\u00e9'".encode(),
    {"sql": "SELECT value FROM kv WHERE key = 'caf\u00e9'"})
rows = [[b"user:1", b"alice", None], [b"user:2", b"", 42], [b"\x00\xff", b"\x01", -1]]
add("RESPONSE key, value, ttl", "server", "RESPONSE", result_set(["key", "value", "ttl"], rows, 0),
    rs_meaning(["key", "value", "ttl"], rows, 0))
add("RESPONSE empty rows", "server", "RESPONSE", result_set(["key", "value"], [], 0), rs_meaning(["key", "value"], [], 0))
add("RESPONSE count", "server", "RESPONSE", result_set(["count"], [[3]], 0), rs_meaning(["count"], [[3]], 0))
for code, name in [(1, "invalid credentials"), (2, "rate limited"), (3, "at byte 7: expected FROM, found 'FORM'"),
                   (5, "storage error"), (6, "bad magic"), (7, "server overloaded"), (8, "not authenticated")]:
    add(f"ERROR code {code}", "server", "ERROR", struct.pack("<H", code) + str16(name), {"code": code, "message": name})
add("PONG \"hi\"", "server", "PONG", b"hi", {"payload_hex": b"hi".hex()})
add("PING 64 bytes", "client", "PING", bytes(range(64)), {"payload_hex": bytes(range(64)).hex()})
add("STATS request", "client", "STATS", b"", {})
srows = [[b"ops_select_point", 10], [b"latency_p99_us", 120]]
add("STATS reply", "server", "STATS", result_set(["name", "value"], srows, 0), rs_meaning(["name", "value"], srows, 0))

# Frames every receiver must refuse, with the section 1 rule and the reaction.
good = frame(T["PING"], b"")
def with_length(n): return MAGIC + bytes([1, T["COMMAND"]]) + struct.pack("<I", n)
invalid = [
    {"name": "wrong magic", "hex": (b"VELX" + good[4:]).hex(), "limit": 4096, "error": "bad_magic", "close": True},
    {"name": "HTTP request", "hex": b"GET / HTTP/1.1\r\n\r\n".hex(), "limit": 4096, "error": "bad_magic", "close": True},
    {"name": "version 2", "hex": frame(T["PING"], b"", version=2).hex(), "limit": 4096, "error": "bad_version", "close": True},
    {"name": "length 4097 before authentication (header only)", "hex": with_length(4097).hex(), "limit": 4096,
     "error": "too_long", "close": True},
    {"name": "length 2^32-1 (header only)", "hex": with_length(0xffffffff).hex(), "limit": 1 << 20, "error": "too_long", "close": True},
    {"name": "checksum mismatch", "hex": (good[:-1] + bytes([good[-1] ^ 1])).hex(), "limit": 4096,
     "error": "bad_checksum", "close": True},
    {"name": "unknown type 0x7f", "hex": frame(0x7F, b"").hex(), "limit": 4096, "error": "unknown_type", "close": False},
    {"name": "RESPONSE sent to a server", "hex": frame(T["RESPONSE"], result_set([], [], 0)).hex(), "limit": 4096,
     "error": "wrong_direction", "close": False},
    {"name": "HELLO with truncated payload", "hex": frame(T["HELLO"], bytes([3, 1])).hex(), "limit": 4096,
     "error": "malformed", "close": False},
    {"name": "COMMAND that is not UTF-8", "hex": frame(T["COMMAND"], b"\xff\xfe").hex(), "limit": 4096,
     "error": "malformed", "close": False},
    {"name": "PING of 65 bytes", "hex": frame(T["PING"], bytes(65)).hex(), "limit": 4096, "error": "malformed", "close": False},
]
incomplete = [{"name": "header prefix", "hex": good[:7].hex()}, {"name": "all but the checksum", "hex": good[:-4].hex()}]

credential = {
    "auth_salt_hex": salt.hex(), "username": "alice", "password": "correct horse battery staple",
    "argon2_m_kib": 19456, "argon2_t": 2, "argon2_p": 1,
    "salt_hex": hashlib.sha256(salt + b"alice").digest()[:16].hex(),
    "credential_hex": cred.hex(),
    "stored_hex": hashlib.sha256(cred).hexdigest(),
}
assert credential["salt_hex"] == "4bae77313a70b8732fd7144d646a5cf8"
assert credential["stored_hex"] == "e4bdc83df2264cc8b220e37b0cccee295029dde299790152b669e1406fd87117"

out = {"about": "Velocity protocol v1 test vectors; see docs/protocol.md. Generated by scripts/gen_vectors.py.",
       "frames": vectors, "invalid": invalid, "incomplete": incomplete, "credential": credential}
path = os.path.join(os.path.dirname(__file__), "..", "tests", "vectors", "frames.json")
with open(path, "w") as f:
    json.dump(out, f, indent=1)
    f.write("\n")
print(f"wrote {len(vectors)} frames, {len(invalid)} invalid, {len(incomplete)} incomplete to {os.path.normpath(path)}")
