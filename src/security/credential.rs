//! Method 1 of profile §3. The client turns a password into a 32-byte credential with Argon2id,
//! salted per server and per user; the server stores SHA-256 of that credential and compares in
//! constant time, so a login costs the server one SHA-256 and Argon2id never runs on a core.

use crate::limits::{ARGON2_M_KIB_MAX, ARGON2_P_MAX, ARGON2_T_MAX, PASSWORD_BYTES_MAX, USERNAME_BYTES_MAX};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Argon2Params {
    pub m_kib: u32,
    pub t: u32,
    pub p: u8,
}

/// `SHA-256(auth_salt ‖ username)[0..16]`: the Argon2id salt for this user on this server.
pub fn password_salt(auth_salt: &[u8; 16], username: &str) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(auth_salt);
    h.update(username.as_bytes());
    h.finalize()[..16].try_into().unwrap()
}

/// The credential a client sends for `password`. Refuses parameters outside the client's
/// bounds, so a hostile server cannot make it allocate or compute without limit.
pub fn derive_credential(
    password: &str,
    username: &str,
    auth_salt: &[u8; 16],
    params: Argon2Params,
) -> Result<[u8; 32], String> {
    if username.len() > USERNAME_BYTES_MAX {
        return Err(format!("user name is longer than {USERNAME_BYTES_MAX} bytes"));
    }
    if password.len() > PASSWORD_BYTES_MAX {
        return Err(format!("password is longer than {PASSWORD_BYTES_MAX} bytes"));
    }
    if params.m_kib > ARGON2_M_KIB_MAX || params.t > ARGON2_T_MAX || params.p > ARGON2_P_MAX || params.p == 0
    {
        return Err(format!("server asks for Argon2id parameters outside the client's bounds: {params:?}"));
    }
    let p = argon2::Params::new(params.m_kib, params.t, params.p as u32, Some(32))
        .map_err(|e| format!("invalid Argon2id parameters {params:?}: {e}"))?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, p);
    let mut out = [0u8; 32];
    a.hash_password_into(password.as_bytes(), &password_salt(auth_salt, username), &mut out)
        .map_err(|e| format!("Argon2id failed: {e}"))?;
    Ok(out)
}

/// What the server keeps for a credential (or an API key).
pub fn stored_hash(credential: &[u8]) -> [u8; 32] {
    Sha256::digest(credential).into()
}

/// Constant-time check of a presented credential against a stored hash.
pub fn verify_credential(credential: &[u8], stored: &[u8; 32]) -> bool {
    stored_hash(credential).ct_eq(stored).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    use hex::encode as hex;

    #[test]
    fn profile_test_vector() {
        let salt: [u8; 16] = std::array::from_fn(|i| i as u8);
        assert_eq!(hex(password_salt(&salt, "alice")), "4bae77313a70b8732fd7144d646a5cf8");
        let cred = derive_credential(
            "correct horse battery staple",
            "alice",
            &salt,
            Argon2Params { m_kib: 19456, t: 2, p: 1 },
        )
        .unwrap();
        assert_eq!(hex(cred), "348410209a4900c7ca6485cd79f28d97bf92614b5884826920a6e758eddbc065");
        let stored = stored_hash(&cred);
        assert_eq!(hex(stored), "e4bdc83df2264cc8b220e37b0cccee295029dde299790152b669e1406fd87117");
        assert!(verify_credential(&cred, &stored));
        assert!(!verify_credential(&cred[..31], &stored));
    }

    #[test]
    fn hostile_parameters_are_refused() {
        let salt = [0u8; 16];
        for (m_kib, t, p) in [(u32::MAX, 1, 1), (64, 1000, 1), (64, 1, 0)] {
            let params = Argon2Params { m_kib, t, p };
            assert!(derive_credential("pw", "u", &salt, params).is_err(), "{params:?}");
        }
    }
}
