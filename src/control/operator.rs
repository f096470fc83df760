//! The operator credential: `ENCLAVE_ADMIN_TOKEN`, or a token generated on first start, printed
//! once, of which only the SHA-256 digest is kept. Checked in constant time.

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::ControlPlane;
use crate::error::Result;

const SETTING: &str = "operator_token_sha256";
pub const TOKEN_PREFIX: &str = "enc_op_";

/// Where the operator token in force came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminTokenSource {
    /// From configuration (`ENCLAVE_ADMIN_TOKEN`).
    Configured,
    /// Generated now, on first start: the caller must show it once. This is the only copy.
    Generated(String),
    /// Generated on an earlier start; only its digest is known.
    Stored,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl ControlPlane {
    /// Settles the operator token at start-up: a configured token replaces any stored digest;
    /// with none configured and none stored, a new one is generated.
    pub fn init_operator_token(&self, configured: Option<&str>) -> Result<AdminTokenSource> {
        if let Some(token) = configured {
            self.set_setting(SETTING, &hex::encode(digest(token)))?;
            return Ok(AdminTokenSource::Configured);
        }
        if self.setting(SETTING)?.is_some() {
            return Ok(AdminTokenSource::Stored);
        }
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let token = format!("{TOKEN_PREFIX}{}", hex::encode(bytes));
        self.set_setting(SETTING, &hex::encode(digest(&token)))?;
        Ok(AdminTokenSource::Generated(token))
    }

    /// The stored digest of the operator token, loaded once by the server.
    pub fn operator_token_digest(&self) -> Result<Option<[u8; 32]>> {
        Ok(self.setting(SETTING)?.and_then(|h| {
            let bytes = hex::decode(h).ok()?;
            bytes.try_into().ok()
        }))
    }
}

/// Compares a presented token with the operator digest in constant time.
pub fn operator_token_matches(expected: &[u8; 32], presented: &str) -> bool {
    digest(presented).ct_eq(expected).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_then_stored_and_only_hashed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cp = ControlPlane::open(tmp.path()).expect("open");
        let AdminTokenSource::Generated(token) = cp.init_operator_token(None).expect("init") else {
            panic!("first start must generate a token");
        };
        assert_eq!(
            cp.init_operator_token(None).expect("again"),
            AdminTokenSource::Stored
        );
        let d = cp.operator_token_digest().expect("digest").expect("some");
        assert!(operator_token_matches(&d, &token));
        assert!(!operator_token_matches(&d, "enc_op_wrong"));
        let raw = std::fs::read(tmp.path().join(super::super::CONTROL_DB)).expect("read db");
        let needle = token.as_bytes();
        assert!(
            !raw.windows(needle.len()).any(|w| w == needle),
            "token stored in clear"
        );
    }

    #[test]
    fn configured_token_replaces_the_stored_one() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cp = ControlPlane::open(tmp.path()).expect("open");
        cp.init_operator_token(None).expect("gen");
        cp.init_operator_token(Some("secret-1"))
            .expect("configured");
        let d = cp.operator_token_digest().expect("digest").expect("some");
        assert!(operator_token_matches(&d, "secret-1"));
    }
}
