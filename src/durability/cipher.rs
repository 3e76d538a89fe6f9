//! AES-256-GCM for data at rest (ring's implementation, already linked for TLS). Each sealed
//! body is `96-bit random nonce ‖ ciphertext ‖ 128-bit tag`. Random nonces rather than counters:
//! a log position is rewritten after a failed write or a repair, and a counter could repeat
//! across restarts; with random nonces a repeat is a 2^-96 event per pair of records.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use sha2::{Digest, Sha256};

pub const KEY_BYTES: usize = 32;
pub const OVERHEAD_BYTES: usize = NONCE_LEN + 16;

pub struct Cipher {
    key: LessSafeKey,
    key_id: [u8; 8],
}

impl Cipher {
    pub fn new(key: &[u8; KEY_BYTES]) -> Cipher {
        let id: [u8; 32] =
            Sha256::new().chain_update(b"velocity key id v1").chain_update(key).finalize().into();
        Cipher {
            key: LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("a 32-byte key")),
            key_id: id[..8].try_into().unwrap(),
        }
    }

    /// A one-way identifier of the key, kept in file headers so that a wrong key is named as
    /// such before any record is read.
    pub fn key_id(&self) -> [u8; 8] {
        self.key_id
    }

    pub fn seal_into(&self, out: &mut Vec<u8>, plain: &[u8], aad: &[u8]) {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("the OS random source");
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.extend_from_slice(plain);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut out[start..],
            )
            .expect("AES-GCM seals any record the log accepts");
        out.extend_from_slice(tag.as_ref());
    }

    /// The plaintext, or None when the body does not authenticate.
    pub fn open(&self, body: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
        if body.len() < OVERHEAD_BYTES {
            return None;
        }
        let nonce = Nonce::try_assume_unique_for_key(&body[..NONCE_LEN]).ok()?;
        let mut buf = body[NONCE_LEN..].to_vec();
        let plain = self.key.open_in_place(nonce, Aad::from(aad), &mut buf).ok()?;
        let n = plain.len();
        buf.truncate(n);
        Some(buf)
    }
}

/// Read a key file: 32 raw bytes, or 64 hex characters (surrounding whitespace allowed).
pub fn read_key_file(path: &std::path::Path) -> Result<[u8; KEY_BYTES], String> {
    let bytes =
        std::fs::read(path).map_err(|e| format!("cannot read the key file {}: {e}", path.display()))?;
    if bytes.len() == KEY_BYTES {
        return Ok(bytes.try_into().unwrap());
    }
    let text = std::str::from_utf8(&bytes).map(str::trim).unwrap_or("");
    let mut key = [0u8; KEY_BYTES];
    if hex::decode_to_slice(text, &mut key).is_ok() {
        return Ok(key);
    }
    Err(format!(
        "the key file {} holds {} bytes: expected 32 raw bytes or 64 hex characters (`velocityd keygen`)",
        path.display(),
        bytes.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_tamper() {
        let c = Cipher::new(&[1u8; 32]);
        let mut out = Vec::new();
        c.seal_into(&mut out, b"secret value", b"pos 16");
        assert_eq!(out.len(), 12 + OVERHEAD_BYTES);
        assert_eq!(c.open(&out, b"pos 16").unwrap(), b"secret value");
        assert!(c.open(&out, b"pos 17").is_none());
        let mut bad = out.clone();
        bad[20] ^= 1;
        assert!(c.open(&bad, b"pos 16").is_none());
        assert!(Cipher::new(&[2u8; 32]).open(&out, b"pos 16").is_none());
        // Two seals of the same plaintext differ (fresh nonces).
        let mut again = Vec::new();
        c.seal_into(&mut again, b"secret value", b"pos 16");
        assert_ne!(out, again);
    }

    #[test]
    fn key_files_raw_or_hex() {
        let dir = std::env::temp_dir().join(format!("velocity-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let raw = dir.join("raw");
        std::fs::write(&raw, [0xabu8; 32]).unwrap();
        assert_eq!(read_key_file(&raw).unwrap(), [0xab; 32]);
        let hex = dir.join("hex");
        std::fs::write(&hex, format!("{}\n", "ab".repeat(32))).unwrap();
        assert_eq!(read_key_file(&hex).unwrap(), [0xab; 32]);
        std::fs::write(&hex, "abc").unwrap();
        assert!(read_key_file(&hex).unwrap_err().contains("expected 32 raw bytes"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
