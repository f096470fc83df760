//! API keys and the tenant tokens minted from them; the rotation of the tokens' signing secret.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use super::Identity;
use super::WorkspaceAccess;
use crate::control::{format_time, ApiKey};
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::identity::jwt::{self, Claims};
use crate::identity::{secrets, Action, Principal, Scopes};

/// Default and largest lifetime of a tenant token.
pub const TOKEN_DEFAULT_SECS: i64 = 3600;

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewApiKey {
    pub name: String,
    pub scopes: Vec<String>,
    /// RFC 3339; must be in the future.
    pub expires_at: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTenantToken {
    /// Default: the key's `search` and `chat` scopes.
    pub scopes: Option<Vec<String>>,
    pub filter: Option<Value>,
    /// Seconds, 1 to 86400; default 3600.
    pub expires_in: Option<i64>,
    /// The app's own id for its end user.
    pub subject: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MintedToken {
    pub token: String,
    pub expires_at: String,
    pub workspace_id: Uuid,
    pub scopes: Scopes,
    pub filter: Option<Value>,
    pub subject: Option<String>,
}

fn parse_future_time(text: &str, what: &str, now: DateTime<Utc>) -> Result<String> {
    let t = DateTime::parse_from_rfc3339(text)
        .map_err(|_| Error::invalid(format!("{what} must be an RFC 3339 time")))?
        .with_timezone(&Utc);
    if t <= now {
        return Err(Error::invalid(format!("{what} must be in the future")));
    }
    Ok(format_time(t))
}

impl Identity {
    // ---- API keys ----

    /// Creates an API key for the workspace; returns it with its secret (shown only now).
    pub fn create_api_key(
        &self,
        access: &WorkspaceAccess,
        new: NewApiKey,
    ) -> Result<(ApiKey, String)> {
        access.require(Action::ApiKeysManage)?;
        let name = crate::ids::validate_name(&new.name)?;
        let scopes = Scopes::parse_list(&new.scopes)?;
        let expires_at = new
            .expires_at
            .as_deref()
            .map(|t| parse_future_time(t, "expires_at", self.state.clock().now()))
            .transpose()?;
        // Governance hook: the org's API key quota, held until the key exists.
        let room = self.quota.hold(
            access.org_id(),
            Some(access.workspace_id()),
            super::Seat::ApiKey,
        )?;
        let (key, prefix) = secrets::new_api_key();
        let created = self.control.insert_api_key(
            access.org_id(),
            access.workspace_id(),
            &name,
            &prefix,
            &secrets::sha256_hex(&key),
            scopes,
            access.principal().user_id(),
            expires_at.as_deref(),
        )?;
        if let Some(room) = room {
            room.commit();
        }
        tracing::info!(key_id = %created.id, "API key created");
        Ok((created, key))
    }

    pub fn list_api_keys(&self, access: &WorkspaceAccess) -> Result<Vec<ApiKey>> {
        access.require(Action::ApiKeysManage)?;
        let mut keys = self.control.list_api_keys(access.workspace_id())?;
        for k in &mut keys {
            if let Some(t) = self.state.pending_last_use(k.id) {
                let t = format_time(t);
                if k.last_used_at.as_deref().is_none_or(|s| s < t.as_str()) {
                    k.last_used_at = Some(t);
                }
            }
        }
        Ok(keys)
    }

    /// Revokes a key at once: the next request with it (or a token minted from it) is refused.
    pub fn revoke_api_key(&self, access: &WorkspaceAccess, id: Uuid) -> Result<()> {
        access.require(Action::ApiKeysManage)?;
        self.control.revoke_api_key(access.workspace_id(), id)?;
        // The authentication cache must not outlive the key.
        self.state.forget_keys();
        tracing::info!(key_id = %id, "API key revoked");
        Ok(())
    }

    /// Writes the in-memory `last_used_at` of keys to the control plane (background task).
    pub fn flush_key_usage(&self) -> Result<()> {
        let pending = self.state.take_last_used();
        self.control.flush_last_used(&pending)
    }

    // ---- tenant tokens ----

    /// Mints a tenant token from the API key of `access`: scopes narrowed to what the key holds
    /// (search and chat at most), an optional metadata filter, a short life.
    pub fn mint_tenant_token(
        &self,
        access: &WorkspaceAccess,
        req: NewTenantToken,
    ) -> Result<MintedToken> {
        access.require(Action::TenantTokenMint)?;
        let Principal::ApiKey {
            key_id,
            scopes: key_scopes,
            ..
        } = access.principal()
        else {
            return Err(Error::forbidden("tenant tokens are minted with an API key"));
        };
        let scopes = match &req.scopes {
            Some(list) => Scopes::parse_list(list)?,
            None => key_scopes.intersect(Scopes::TENANT_TOKEN_MAX),
        };
        if scopes.is_empty() {
            return Err(Error::forbidden(
                "the key holds neither search nor chat, so it cannot mint a tenant token",
            ));
        }
        if !scopes.is_subset_of(Scopes::TENANT_TOKEN_MAX) {
            return Err(Error::invalid(
                "tenant tokens carry only the search and chat scopes",
            ));
        }
        if !scopes.is_subset_of(*key_scopes) {
            return Err(Error::forbidden(
                "a tenant token cannot hold a scope its key lacks",
            ));
        }
        // The filter is parsed here as every request will parse it; `null` is no filter.
        let token_filter = req.filter.clone().filter(|f| !f.is_null());
        if let Some(f) = &token_filter {
            Filter::parse(f)?;
        }
        let lifetime = req.expires_in.unwrap_or(TOKEN_DEFAULT_SECS);
        if !(1..=jwt::MAX_LIFETIME_SECS).contains(&lifetime) {
            return Err(Error::invalid(format!(
                "expires_in must be 1 to {} seconds",
                jwt::MAX_LIFETIME_SECS
            )));
        }
        if req.subject.as_ref().is_some_and(|s| s.len() > 256) {
            return Err(Error::invalid("subject must be at most 256 bytes"));
        }
        let signing = self
            .state
            .current_signing_key()
            .ok_or_else(|| Error::internal("no tenant-token signing key"))?;
        let now = self.state.clock().now();
        let claims = Claims {
            iss: jwt::ISSUER.into(),
            sub: req.subject.clone(),
            org: access.org_id(),
            ws: access.workspace_id(),
            key: *key_id,
            scopes: scopes.to_vec(),
            filter: token_filter.clone(),
            iat: now.timestamp(),
            exp: now.timestamp() + lifetime,
            jti: secrets::random_hex(8),
        };
        let token = jwt::sign(&claims, &signing.kid, &signing.secret);
        // A token longer than verification reads would be refused on every request: refuse it
        // now, while the caller can still shrink the filter.
        if token.len() > jwt::MAX_TOKEN_LEN {
            return Err(Error::invalid(format!(
                "the tenant token would be {} bytes, over the {}-byte limit of a tenant token: \
                 make the filter (or the subject) smaller, e.g. fewer or shorter \"in\" values",
                token.len(),
                jwt::MAX_TOKEN_LEN
            )));
        }
        Ok(MintedToken {
            token,
            expires_at: format_time(now + Duration::seconds(lifetime)),
            workspace_id: access.workspace_id(),
            scopes,
            filter: token_filter,
            subject: req.subject,
        })
    }

    /// Rotates the tenant-token signing secret (operator). With `retire_previous`, tokens
    /// signed before stop working at once; otherwise they live out their (short) lifetime.
    pub fn rotate_token_secret(&self, retire_previous: bool) -> Result<Value> {
        let keys = self.control.rotate_signing_key(retire_previous)?;
        let current = keys.first().map(|k| k.kid.clone());
        let verifying: Vec<String> = keys.iter().map(|k| k.kid.clone()).collect();
        self.state.set_signing_keys(keys);
        tracing::info!(retire_previous, "tenant-token signing secret rotated");
        Ok(json!({"current_kid": current, "verifying_kids": verifying}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::service::fixtures::{app, key, workspace};

    #[test]
    fn key_usage_is_kept_in_memory_and_flushed() {
        let (_t, app) = app();
        let (_, ws) = workspace(&app, "a");
        let k = key(&app, ws, &["search"]);
        app.identity().authenticate(&k).expect("auth");
        let stored = app.control_plane().list_api_keys(ws).expect("list");
        assert!(stored[0].last_used_at.is_none(), "no write per request");
        let op = app
            .identity()
            .workspace_access(&Principal::Operator, Some(ws), None)
            .expect("op");
        assert!(app.identity().list_api_keys(&op).expect("list")[0]
            .last_used_at
            .is_some());
        app.identity().flush_key_usage().expect("flush");
        assert!(app.control_plane().list_api_keys(ws).expect("list")[0]
            .last_used_at
            .is_some());
    }
}
