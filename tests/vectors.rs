//! Every frame of tests/vectors/frames.json decodes to its stated meaning and re-encodes byte
//! for byte; every invalid frame is refused with the stated §1 rule; the credential vector holds.

use serde_json::Value as J;
use velocity::protocol::*;
use velocity::security::{derive_credential, password_salt, stored_hash, Argon2Params};

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn vectors() -> J {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/frames.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn result_set(m: &J) -> ResultSet {
    ResultSet {
        columns: m["columns"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_owned()).collect(),
        rows: m["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|v| {
                        if v.get("null").is_some() {
                            Value::Null
                        } else if let Some(i) = v.get("int") {
                            Value::Int(i.as_i64().unwrap())
                        } else {
                            Value::Bytes(unhex(v["bytes_hex"].as_str().unwrap()))
                        }
                    })
                    .collect()
            })
            .collect(),
        affected: m["affected"].as_u64().unwrap(),
    }
}

fn meaning(typ: &str, m: &J) -> Message {
    let s = |k: &str| m[k].as_str().unwrap().to_owned();
    let n = |k: &str| m[k].as_u64().unwrap();
    match typ {
        "HELLO" => Message::Hello(Hello {
            versions: m["versions"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u8).collect(),
            client: s("client"),
        }),
        "SERVER_INFO" => Message::ServerInfo(ServerInfo {
            version: n("version") as u8,
            server: s("server"),
            fingerprint: unhex(&s("fingerprint_hex")).try_into().unwrap(),
            auth_salt: unhex(&s("auth_salt_hex")).try_into().unwrap(),
            argon2_m_kib: n("argon2_m_kib") as u32,
            argon2_t: n("argon2_t") as u32,
            argon2_p: n("argon2_p") as u8,
            max_payload: n("max_payload") as u32,
            shards: n("shards") as u16,
            flags: n("flags") as u8,
        }),
        "AUTH_REQUEST" => Message::AuthRequest(AuthRequest {
            method: n("method") as u8,
            username: s("username"),
            credential: unhex(&s("credential_hex")),
        }),
        "AUTH_RESPONSE" => Message::AuthResponse { status: n("status") as u16, message: s("message") },
        "DISCONNECT" => Message::Disconnect { code: n("code") as u16, reason: s("reason") },
        "COMMAND" => Message::Command(s("sql")),
        "RESPONSE" => Message::Response(result_set(m)),
        "ERROR" => Message::Error { code: n("code") as u16, message: s("message") },
        "PING" => Message::Ping(unhex(&s("payload_hex"))),
        "PONG" => Message::Pong(unhex(&s("payload_hex"))),
        "STATS" if m.get("columns").is_none() => Message::StatsRequest,
        "STATS" => Message::StatsReply(result_set(m)),
        other => panic!("unknown type {other}"),
    }
}

#[test]
fn every_vector_frame_decodes_and_reencodes_byte_for_byte() {
    let v = vectors();
    let frames = v["frames"].as_array().unwrap();
    assert!(frames.len() >= 30);
    let mut types_seen = std::collections::HashSet::new();
    for f in frames {
        let name = f["name"].as_str().unwrap();
        let bytes = unhex(f["hex"].as_str().unwrap());
        let sender = if f["direction"] == "client" { Peer::Client } else { Peer::Server };
        let Decoded::Frame(fr) = decode_frame(&bytes, 1 << 20).unwrap() else { panic!("{name}: incomplete") };
        assert_eq!(fr.consumed, bytes.len(), "{name}");
        let msg = Message::decode(fr.kind, fr.payload, sender).unwrap_or_else(|e| panic!("{name}: {e}"));
        let want = meaning(f["type"].as_str().unwrap(), &f["message"]);
        assert_eq!(msg, want, "{name}");
        assert_eq!(want.to_frame(), bytes, "{name}: re-encoding differs");
        types_seen.insert(fr.kind);
    }
    assert_eq!(types_seen.len(), 11, "every message type has a vector");
}

#[test]
fn every_invalid_vector_is_refused_as_stated() {
    for f in vectors()["invalid"].as_array().unwrap() {
        let name = f["name"].as_str().unwrap();
        let bytes = unhex(f["hex"].as_str().unwrap());
        let limit = f["limit"].as_u64().unwrap() as u32;
        let want = f["error"].as_str().unwrap();
        let got = match decode_frame(&bytes, limit) {
            Err(FrameError::BadMagic) => "bad_magic",
            Err(FrameError::BadVersion { .. }) => "bad_version",
            Err(FrameError::TooLong { .. }) => "too_long",
            Err(FrameError::BadChecksum { .. }) => "bad_checksum",
            Ok(Decoded::Incomplete { .. }) => "incomplete",
            Ok(Decoded::Frame(fr)) => match Message::decode(fr.kind, fr.payload, Peer::Client) {
                Err(PayloadError::UnknownType(_)) => "unknown_type",
                Err(PayloadError::WrongDirection(_)) => "wrong_direction",
                Err(PayloadError::Malformed { .. }) => "malformed",
                Ok(_) => "ok",
            },
        };
        assert_eq!(got, want, "{name}");
        let closes = matches!(got, "bad_magic" | "bad_version" | "too_long" | "bad_checksum");
        assert_eq!(closes, f["close"].as_bool().unwrap(), "{name}");
    }
}

#[test]
fn incomplete_vectors_wait_for_more() {
    for f in vectors()["incomplete"].as_array().unwrap() {
        let bytes = unhex(f["hex"].as_str().unwrap());
        assert!(matches!(decode_frame(&bytes, 4096), Ok(Decoded::Incomplete { .. })));
    }
}

#[test]
fn credential_vector() {
    let c = &vectors()["credential"];
    let salt: [u8; 16] = unhex(c["auth_salt_hex"].as_str().unwrap()).try_into().unwrap();
    let user = c["username"].as_str().unwrap();
    assert_eq!(password_salt(&salt, user).to_vec(), unhex(c["salt_hex"].as_str().unwrap()));
    let params = Argon2Params {
        m_kib: c["argon2_m_kib"].as_u64().unwrap() as u32,
        t: c["argon2_t"].as_u64().unwrap() as u32,
        p: c["argon2_p"].as_u64().unwrap() as u8,
    };
    let cred = derive_credential(c["password"].as_str().unwrap(), user, &salt, params).unwrap();
    assert_eq!(cred.to_vec(), unhex(c["credential_hex"].as_str().unwrap()));
    assert_eq!(stored_hash(&cred).to_vec(), unhex(c["stored_hex"].as_str().unwrap()));
}
