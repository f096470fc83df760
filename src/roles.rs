//! The vocabulary of access, shared by identity (which decides) and the control plane (which
//! stores memberships and keys): a member's [`Role`], a key's or token's [`Scope`]s. A leaf
//! module, so that `control` does not depend on `identity`; `identity` re-exports these.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A member's role in an organization, weakest first (so `>=` compares privilege).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
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

/// In the API contract: a list of scope names, as serialised.
impl utoipa::PartialSchema for Scopes {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ArrayBuilder::new()
            .items(<Scope as utoipa::PartialSchema>::schema())
            .into()
    }
}

impl utoipa::ToSchema for Scopes {}

impl Serialize for Scopes {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> std::result::Result<S::Ok, S::Error> {
        ser.collect_seq(self.iter())
    }
}
