//! High-entropy bearer secrets and their digests. Only SHA-256 digests are stored: these secrets
//! carry 256 bits of randomness, so a fast hash is enough (FINDINGS.md: 55 ns, against 17 ms for
//! Argon2), and lookups go by a public prefix or by the digest itself.
//!
//! Formats (all lowercase hex):
//! - API key: `enc_key_<16 hex: public id>_<64 hex: secret>`; the prefix is `enc_key_<16 hex>`.
//! - Session token: `enc_sess_<64 hex>`.
//! - Invitation token: `enc_inv_<64 hex>`.

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const KEY_PREFIX: &str = "enc_key_";
pub const SESSION_PREFIX: &str = "enc_sess_";
pub const INVITATION_PREFIX: &str = "enc_inv_";

const KEY_ID_HEX: usize = 16;
const SECRET_HEX: usize = 64;

pub use crate::crypto::random_hex;

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    rand::rng().fill_bytes(&mut buf);
    buf
}

pub fn sha256(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

pub fn sha256_hex(text: &str) -> String {
    hex::encode(sha256(text))
}

/// Constant-time comparison of a presented secret's digest with a stored hex digest.
pub fn digest_matches(presented: &str, stored_hex: &str) -> bool {
    let Ok(stored) = hex::decode(stored_hex) else {
        return false;
    };
    bool::from(sha256(presented).as_slice().ct_eq(&stored))
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A new API key: `(whole key, public prefix)`.
pub fn new_api_key() -> (String, String) {
    let prefix = format!("{KEY_PREFIX}{}", random_hex(KEY_ID_HEX / 2));
    let key = format!("{prefix}_{}", random_hex(SECRET_HEX / 2));
    (key, prefix)
}

/// The public prefix of a well-formed API key, `None` for anything else.
pub fn api_key_prefix(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    if is_lower_hex(id, KEY_ID_HEX) && is_lower_hex(secret, SECRET_HEX) {
        Some(&key[..KEY_PREFIX.len() + KEY_ID_HEX])
    } else {
        None
    }
}

pub fn new_session_token() -> String {
    format!("{SESSION_PREFIX}{}", random_hex(SECRET_HEX / 2))
}

pub fn new_invitation_token() -> String {
    format!("{INVITATION_PREFIX}{}", random_hex(SECRET_HEX / 2))
}

/// Whether `token` has the shape of a token with `prefix` (so junk is refused before any lookup).
pub fn well_formed(token: &str, prefix: &str) -> bool {
    token
        .strip_prefix(prefix)
        .is_some_and(|s| is_lower_hex(s, SECRET_HEX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_parse_to_their_prefix() {
        let (key, prefix) = new_api_key();
        assert_eq!(api_key_prefix(&key), Some(prefix.as_str()));
        assert_eq!(key.len(), KEY_PREFIX.len() + 16 + 1 + 64);
        assert!(api_key_prefix(&prefix).is_none());
        assert!(api_key_prefix(&format!("{key}0")).is_none());
        assert!(api_key_prefix(&key.to_uppercase()).is_none());
        assert!(api_key_prefix("enc_key__").is_none());
        assert!(api_key_prefix("").is_none());
        let (other, _) = new_api_key();
        assert_ne!(key, other);
    }

    #[test]
    fn digests_compare() {
        let t = new_session_token();
        assert!(well_formed(&t, SESSION_PREFIX));
        assert!(!well_formed(&t, INVITATION_PREFIX));
        let d = sha256_hex(&t);
        assert!(digest_matches(&t, &d));
        assert!(!digest_matches(&new_session_token(), &d));
        assert!(!digest_matches(&t, "zz"));
    }
}
