//! Identity and the verified tenant context: who is asking (operator, user, API key, tenant
//! token), for which org and workspace, with which role or scopes, and under which metadata
//! filter. The service is [`Identity`] (`service/`); the HTTP extractors in `http::auth` are
//! thin adapters over it. The permission table is `permissions.rs`, the only place that decides
//! what a principal may do; the domain functions call `require` on the verified context.

pub mod jwt;
pub mod password;
pub mod permissions;
pub mod secrets;
mod service;
pub mod state;
pub mod throttle;

use std::sync::Arc;

use uuid::Uuid;

use crate::error::{Error, Result};

pub use permissions::{permits, Action, Subject};
pub use service::{
    Identity, LoginResult, MintedToken, NewApiKey, NewTenantToken, OrgAccess, OrgWithRole, Seat,
    SeatHold, SeatQuota, WorkspaceAccess,
};
pub use state::IdentityState;

pub use crate::roles::{Role, Scope, Scopes};

/// Who is asking, as proven by the credential.
#[derive(Debug, Clone, PartialEq)]
pub enum Principal {
    /// The operator token: may act across orgs; its actions are audited.
    Operator,
    /// A user, through a login session.
    User { user_id: Uuid, session_id: Uuid },
    /// A workspace API key.
    ApiKey {
        key_id: Uuid,
        org_id: Uuid,
        workspace_id: Uuid,
        scopes: Scopes,
    },
    /// A tenant token minted from an API key for an app's end user.
    TenantToken {
        key_id: Uuid,
        org_id: Uuid,
        workspace_id: Uuid,
        scopes: Scopes,
        /// The token's metadata filter, parsed once when the token is authenticated.
        filter: Option<Arc<crate::filter::Parsed>>,
        subject: Option<String>,
        /// The token's own id (`jti`): what its chat sessions belong to when it has no subject.
        token_id: String,
    },
}

impl Principal {
    /// Short name for logs and `/v1/me`.
    pub fn kind(&self) -> &'static str {
        match self {
            Principal::Operator => "operator",
            Principal::User { .. } => "user",
            Principal::ApiKey { .. } => "api_key",
            Principal::TenantToken { .. } => "tenant_token",
        }
    }

    /// The workspace a key or token is bound to.
    pub fn bound_workspace(&self) -> Option<(Uuid, Uuid)> {
        match self {
            Principal::ApiKey {
                org_id,
                workspace_id,
                ..
            }
            | Principal::TenantToken {
                org_id,
                workspace_id,
                ..
            } => Some((*org_id, *workspace_id)),
            _ => None,
        }
    }

    pub fn is_operator(&self) -> bool {
        matches!(self, Principal::Operator)
    }

    pub fn user_id(&self) -> Option<Uuid> {
        match self {
            Principal::User { user_id, .. } => Some(*user_id),
            _ => None,
        }
    }
}

/// Normalises and checks an email address: trimmed, lowercased, one `@` with text on both
/// sides, no spaces or control characters, at most 254 characters.
pub fn normalize_email(email: &str) -> Result<String> {
    let e = email.trim().to_lowercase();
    let ok = e.len() <= 254
        && !e.chars().any(|c| c.is_whitespace() || c.is_control())
        && matches!(e.split_once('@'), Some((l, d)) if !l.is_empty() && !d.is_empty() && !d.contains('@'));
    if ok {
        Ok(e)
    } else {
        Err(Error::invalid("email must be a valid address"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_and_compare() {
        let s = Scopes::parse_list(&["search", "chat"]).expect("parse");
        assert!(s.contains(Scope::Search) && !s.contains(Scope::Manage));
        assert_eq!(s.to_csv(), "search,chat");
        assert_eq!(Scopes::parse_csv("chat,search").expect("csv"), s);
        assert!(s.is_subset_of(Scopes::all()));
        assert!(!Scopes::all().is_subset_of(s));
        assert!(Scopes::parse_list(&["admin"]).is_err());
        assert!(Scopes::parse_list::<&str>(&[]).is_err());
        assert_eq!(
            serde_json::to_value(s).expect("json"),
            serde_json::json!(["search", "chat"])
        );
    }

    #[test]
    fn roles_are_ordered_by_privilege() {
        assert!(
            Role::Owner > Role::Admin && Role::Admin > Role::Member && Role::Member > Role::Viewer
        );
        assert_eq!(Role::parse("admin").expect("parse"), Role::Admin);
        assert!(Role::parse("root").is_err());
    }

    #[test]
    fn emails_are_normalised() {
        assert_eq!(
            normalize_email("  Ann@Example.COM ").expect("ok"),
            "ann@example.com"
        );
        for bad in ["", "ann", "@x", "ann@", "a b@x", "a@b@c", "a\0@x"] {
            assert!(normalize_email(bad).is_err(), "{bad:?}");
        }
    }
}
