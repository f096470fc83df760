//! Identity and the verified tenant context: who is asking (operator, user, API key, tenant
//! token), for which org and workspace, with which role or scopes, and under which metadata
//! filter. The HTTP extractors in `http::auth` are thin adapters over [`App`] functions defined in
//! `service/`; the permission table is `permissions.rs`, the only place that decides what a
//! principal may do.
//!
//! [`App`]: crate::app::App

pub mod jwt;
pub mod password;
pub mod permissions;
pub mod secrets;
mod service;
pub mod state;
pub mod throttle;

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Error, Result};

pub use permissions::{permits, Action, Subject};
pub use service::{
    LoginResult, MintedToken, NewApiKey, NewTenantToken, OrgAccess, OrgWithRole, WorkspaceAccess,
};
pub use state::IdentityState;

/// A member's role in an organization, weakest first (so `>=` compares privilege).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Member,
    Admin,
    Owner,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Member, Role::Admin, Role::Owner];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Member => "member",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }

    pub fn parse(s: &str) -> Result<Role> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "member" => Ok(Role::Member),
            "admin" => Ok(Role::Admin),
            "owner" => Ok(Role::Owner),
            other => Err(Error::invalid(format!(
                "unknown role {other:?} (owner, admin, member, viewer)"
            ))),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an API key or tenant token may do in its workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Search,
    Chat,
    Ingest,
    Manage,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Search, Scope::Chat, Scope::Ingest, Scope::Manage];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Search => "search",
            Scope::Chat => "chat",
            Scope::Ingest => "ingest",
            Scope::Manage => "manage",
        }
    }

    pub fn parse(s: &str) -> Result<Scope> {
        match s {
            "search" => Ok(Scope::Search),
            "chat" => Ok(Scope::Chat),
            "ingest" => Ok(Scope::Ingest),
            "manage" => Ok(Scope::Manage),
            other => Err(Error::invalid(format!(
                "unknown scope {other:?} (search, chat, ingest, manage)"
            ))),
        }
    }

    fn bit(self) -> u8 {
        match self {
            Scope::Search => 1,
            Scope::Chat => 2,
            Scope::Ingest => 4,
            Scope::Manage => 8,
        }
    }
}

/// A set of scopes (a bitset; serialised as a list of names).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Scopes(u8);

impl Scopes {
    pub const NONE: Scopes = Scopes(0);
    /// The scopes a tenant token may carry at most: end-user reads, never ingest or manage.
    pub const TENANT_TOKEN_MAX: Scopes = Scopes(1 | 2);

    pub fn all() -> Scopes {
        Scopes(15)
    }

    pub fn contains(self, s: Scope) -> bool {
        self.0 & s.bit() != 0
    }

    pub fn insert(&mut self, s: Scope) {
        self.0 |= s.bit();
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn is_subset_of(self, other: Scopes) -> bool {
        self.0 & !other.0 == 0
    }

    pub fn intersect(self, other: Scopes) -> Scopes {
        Scopes(self.0 & other.0)
    }

    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL.into_iter().filter(move |s| self.contains(*s))
    }

    pub fn to_vec(self) -> Vec<Scope> {
        self.iter().collect()
    }

    /// Comma-separated names, as stored.
    pub fn to_csv(self) -> String {
        self.iter().map(Scope::as_str).collect::<Vec<_>>().join(",")
    }

    /// Parses a list of names; rejects unknown names and an empty list.
    pub fn parse_list<S: AsRef<str>>(names: &[S]) -> Result<Scopes> {
        let mut out = Scopes::NONE;
        for n in names {
            out.insert(Scope::parse(n.as_ref().trim())?);
        }
        if out.is_empty() {
            return Err(Error::invalid(
                "scopes must name at least one of search, chat, ingest, manage",
            ));
        }
        Ok(out)
    }

    pub fn parse_csv(s: &str) -> Result<Scopes> {
        let parts: Vec<&str> = s.split(',').filter(|p| !p.trim().is_empty()).collect();
        Scopes::parse_list(&parts)
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        let mut s = Scopes::NONE;
        for x in iter {
            s.insert(x);
        }
        s
    }
}

impl Serialize for Scopes {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> std::result::Result<S::Ok, S::Error> {
        ser.collect_seq(self.iter())
    }
}

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
        filter: Option<Arc<crate::knowledge::filter::Parsed>>,
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
