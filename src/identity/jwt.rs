//! Tenant tokens: compact JWTs signed with HMAC-SHA256 (`alg: HS256`) by a secret held in the
//! control plane. Verification is strict: the header must say `HS256` and name a known signing
//! key (`kid`); `alg: none`, every other algorithm, a `crit` header, a bad signature, a malformed
//! part, an expired token or one living longer than [`MAX_LIFETIME_SECS`] are all refused.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;
use uuid::Uuid;

use super::Scope;

type HmacSha256 = Hmac<Sha256>;

pub const ISSUER: &str = "enclave";
pub const MAX_LIFETIME_SECS: i64 = 24 * 3600;
/// Longest token text looked at. Minting refuses a token longer than this (a filter too large),
/// so every token handed out can be verified; hyper's request-head buffer (~400 KiB) is far above.
pub const MAX_TOKEN_LEN: usize = 8192;
/// Clock skew tolerated on `iat`.
const SKEW_SECS: i64 = 60;

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typ: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    crit: Option<Value>,
}

/// The claims of a tenant token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    pub iss: String,
    /// The app's own id for its end user (free text, optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    pub org: Uuid,
    pub ws: Uuid,
    /// The API key it was minted from: revoking the key revokes the token.
    pub key: Uuid,
    pub scopes: Vec<Scope>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Value>,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
}

/// Why a token was refused (all map to `401 unauthenticated`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    Malformed,
    Algorithm,
    UnknownKey,
    Signature,
    Expired,
    Lifetime,
}

impl TokenError {
    pub fn message(self) -> &'static str {
        match self {
            TokenError::Malformed => "malformed tenant token",
            TokenError::Algorithm => "tenant token algorithm not accepted (only HS256)",
            TokenError::UnknownKey => "tenant token signed with an unknown key",
            TokenError::Signature => "tenant token signature is invalid",
            TokenError::Expired => "tenant token has expired",
            TokenError::Lifetime => "tenant token lifetime is not acceptable",
        }
    }
}

/// Whether a bearer credential has the shape of a JWT (three base64url parts).
pub fn looks_like_jwt(token: &str) -> bool {
    token.starts_with("eyJ") && token.bytes().filter(|b| *b == b'.').count() == 2
}

fn mac(secret: &[u8], signing_input: &str) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut m = <HmacSha256 as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    m.update(signing_input.as_bytes());
    m
}

/// Signs `claims` with the key `kid`.
pub fn sign(claims: &Claims, kid: &str, secret: &[u8]) -> String {
    let header = Header {
        alg: "HS256".into(),
        typ: Some("JWT".into()),
        kid: Some(kid.into()),
        crit: None,
    };
    let h = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap_or_default());
    let c = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
    let input = format!("{h}.{c}");
    let sig = URL_SAFE_NO_PAD.encode(mac(secret, &input).finalize().into_bytes());
    format!("{input}.{sig}")
}

/// Verifies a token's header, signature and times; `secret_of` maps a `kid` to its secret.
pub fn verify(
    token: &str,
    secret_of: impl Fn(&str) -> Option<Vec<u8>>,
    now: i64,
) -> Result<Claims, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let header_bytes = URL_SAFE_NO_PAD
        .decode(h)
        .map_err(|_| TokenError::Malformed)?;
    let header: Header =
        serde_json::from_slice(&header_bytes).map_err(|_| TokenError::Malformed)?;
    if header.alg != "HS256" {
        return Err(TokenError::Algorithm);
    }
    if header.crit.is_some() || header.typ.as_deref().is_some_and(|t| t != "JWT") {
        return Err(TokenError::Malformed);
    }
    let kid = header.kid.ok_or(TokenError::UnknownKey)?;
    let secret = secret_of(&kid).ok_or(TokenError::UnknownKey)?;
    let sig = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| TokenError::Malformed)?;
    let input = &token[..h.len() + 1 + c.len()];
    mac(&secret, input)
        .verify_slice(&sig)
        .map_err(|_| TokenError::Signature)?;
    let claims_bytes = URL_SAFE_NO_PAD
        .decode(c)
        .map_err(|_| TokenError::Malformed)?;
    let claims: Claims =
        serde_json::from_slice(&claims_bytes).map_err(|_| TokenError::Malformed)?;
    if claims.iss != ISSUER {
        return Err(TokenError::Malformed);
    }
    if claims.exp <= now {
        return Err(TokenError::Expired);
    }
    if claims.iat > now + SKEW_SECS || claims.exp - claims.iat > MAX_LIFETIME_SECS {
        return Err(TokenError::Lifetime);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::Mac;
    use serde_json::json;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn claims(now: i64) -> Claims {
        Claims {
            iss: ISSUER.into(),
            sub: Some("end-user-7".into()),
            org: Uuid::now_v7(),
            ws: Uuid::now_v7(),
            key: Uuid::now_v7(),
            scopes: vec![Scope::Search],
            filter: Some(json!({"group": "sales"})),
            iat: now,
            exp: now + 600,
            jti: "j1".into(),
        }
    }

    fn keys(kid: &str) -> Option<Vec<u8>> {
        (kid == "k1").then(|| SECRET.to_vec())
    }

    fn b64(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("json"))
    }

    fn forge(header: Value, claims: &Claims, secret: &[u8], alg_sig: &str) -> String {
        let input = format!(
            "{}.{}",
            b64(&header),
            b64(&serde_json::to_value(claims).expect("claims"))
        );
        let sig = match alg_sig {
            "none" => String::new(),
            "HS512" => {
                let mut m = <Hmac<sha2::Sha512> as Mac>::new_from_slice(secret).expect("key");
                m.update(input.as_bytes());
                URL_SAFE_NO_PAD.encode(m.finalize().into_bytes())
            }
            _ => {
                let mut m = <HmacSha256 as Mac>::new_from_slice(secret).expect("key");
                m.update(input.as_bytes());
                URL_SAFE_NO_PAD.encode(m.finalize().into_bytes())
            }
        };
        format!("{input}.{sig}")
    }

    #[test]
    fn round_trip() {
        let c = claims(1000);
        let t = sign(&c, "k1", SECRET);
        assert!(looks_like_jwt(&t));
        assert_eq!(verify(&t, keys, 1001), Ok(c));
    }

    #[test]
    fn refuses_other_algorithms_keys_and_tampering() {
        let c = claims(1000);
        let none = forge(json!({"alg": "none", "kid": "k1"}), &c, SECRET, "none");
        assert_eq!(verify(&none, keys, 1001), Err(TokenError::Algorithm));
        let hs512 = forge(json!({"alg": "HS512", "kid": "k1"}), &c, SECRET, "HS512");
        assert_eq!(verify(&hs512, keys, 1001), Err(TokenError::Algorithm));
        let lower = forge(json!({"alg": "hs256", "kid": "k1"}), &c, SECRET, "HS256");
        assert_eq!(verify(&lower, keys, 1001), Err(TokenError::Algorithm));
        let wrong_key = forge(
            json!({"alg": "HS256", "kid": "k1"}),
            &c,
            b"another secret",
            "HS256",
        );
        assert_eq!(verify(&wrong_key, keys, 1001), Err(TokenError::Signature));
        let no_kid = forge(json!({"alg": "HS256"}), &c, SECRET, "HS256");
        assert_eq!(verify(&no_kid, keys, 1001), Err(TokenError::UnknownKey));
        let crit = forge(
            json!({"alg": "HS256", "kid": "k1", "crit": ["x"]}),
            &c,
            SECRET,
            "HS256",
        );
        assert_eq!(verify(&crit, keys, 1001), Err(TokenError::Malformed));

        // A payload edited after signing (filter removed) fails the signature.
        let good = sign(&c, "k1", SECRET);
        let mut widened = c.clone();
        widened.filter = None;
        let parts: Vec<&str> = good.split('.').collect();
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            b64(&serde_json::to_value(&widened).expect("claims")),
            parts[2]
        );
        assert_eq!(verify(&tampered, keys, 1001), Err(TokenError::Signature));
        for junk in ["", "a.b", "a.b.c.d", "eyJ.eyJ.", "!!!.!!!.!!!"] {
            assert!(verify(junk, keys, 1001).is_err(), "{junk:?}");
        }
    }

    #[test]
    fn refuses_expired_and_overlong_tokens() {
        let c = claims(1000);
        let t = sign(&c, "k1", SECRET);
        assert_eq!(verify(&t, keys, 1600), Err(TokenError::Expired));
        let mut long = claims(1000);
        long.exp = 1000 + MAX_LIFETIME_SECS + 1;
        assert_eq!(
            verify(&sign(&long, "k1", SECRET), keys, 1001),
            Err(TokenError::Lifetime)
        );
        let mut future = claims(5000);
        future.exp = 5600;
        assert_eq!(
            verify(&sign(&future, "k1", SECRET), keys, 1001),
            Err(TokenError::Lifetime)
        );
    }
}
