//! Authentication (the hot path) and the verified tenant contexts: [`OrgAccess`] and
//! [`WorkspaceAccess`], what a principal reaches and may do in an org or a workspace.

use std::sync::Arc;

use serde_json::Value;
use uuid::Uuid;

use super::Identity;
use crate::control::{Org, OrgStatus};
use crate::error::{Error, Resource, Result};
use crate::filter::{self, Filter};
use crate::identity::jwt;
use crate::identity::state::{KeyLookup, WorkspaceStatus};
use crate::identity::{permits, secrets, Action, Principal, Role, Scopes, Subject};

/// A verified principal's access to one org. Built only by identity (`org_access`,
/// `operator_org`): nothing else can fabricate one.
#[derive(Debug, Clone)]
pub struct OrgAccess {
    principal: Principal,
    org: Org,
    /// The member's role (users only).
    role: Option<Role>,
}

/// A verified principal's access to one workspace: the tenant context of a request. Built only
/// by identity (`workspace_access`, `operator_workspace`): nothing else can fabricate one. It
/// carries what the domain needs to act without asking the control plane again: the
/// workspace, its org and the org's status as the status cache saw them when it was built.
#[derive(Debug, Clone)]
pub struct WorkspaceAccess {
    principal: Principal,
    workspace_id: Uuid,
    org_id: Uuid,
    org_status: OrgStatus,
    /// The member's role in the workspace's org (users only).
    role: Option<Role>,
    /// Effective scopes of a key or token; every scope for the operator and for users (whose
    /// role decides instead).
    scopes: Scopes,
    /// The tenant token's metadata filter, which every search, chat retrieval and document
    /// read must apply.
    filter: Option<Arc<filter::Parsed>>,
}

fn subject_of(principal: &Principal, role: Option<Role>) -> Option<Subject> {
    match principal {
        Principal::Operator => Some(Subject::Operator),
        Principal::User { .. } => role.map(Subject::Member),
        Principal::ApiKey { scopes, .. } => Some(Subject::Key(*scopes)),
        Principal::TenantToken { scopes, .. } => Some(Subject::Token(*scopes)),
    }
}

pub(super) fn forbidden(action: Action, principal: &Principal) -> Error {
    let who = match principal {
        Principal::Operator => "operator",
        Principal::User { .. } => "user",
        Principal::ApiKey { .. } => "API key",
        Principal::TenantToken { .. } => "tenant token",
    };
    Error::forbidden(action.forbidden_message(who))
}

impl OrgAccess {
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    pub fn org(&self) -> &Org {
        &self.org
    }

    pub fn org_id(&self) -> Uuid {
        self.org.id
    }

    pub fn role(&self) -> Option<Role> {
        self.role
    }

    pub fn into_org(self) -> Org {
        self.org
    }

    pub fn subject(&self) -> Option<Subject> {
        subject_of(&self.principal, self.role)
    }

    /// `Forbidden` unless the permission table allows `action`.
    pub fn require(&self, action: Action) -> Result<()> {
        match self.subject() {
            Some(s) if permits(s, action) => Ok(()),
            _ => Err(forbidden(action, &self.principal)),
        }
    }
}

impl WorkspaceAccess {
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    pub fn workspace_id(&self) -> Uuid {
        self.workspace_id
    }

    pub fn org_id(&self) -> Uuid {
        self.org_id
    }

    /// The org's status when this context was built (through the status cache).
    pub fn org_status(&self) -> OrgStatus {
        self.org_status
    }

    pub fn role(&self) -> Option<Role> {
        self.role
    }

    pub fn scopes(&self) -> Scopes {
        self.scopes
    }

    /// The tenant token's filter, if any.
    pub fn token_filter(&self) -> Option<&Arc<filter::Parsed>> {
        self.filter.as_ref()
    }

    pub fn subject(&self) -> Option<Subject> {
        subject_of(&self.principal, self.role)
    }

    /// `Forbidden` unless the permission table allows `action` (a [`crate::identity::Scope`] converts to
    /// its data-plane action).
    pub fn require(&self, action: impl Into<Action>) -> Result<()> {
        let action = action.into();
        match self.subject() {
            Some(s) if permits(s, action) => Ok(()),
            _ => Err(forbidden(action, &self.principal)),
        }
    }

    /// The one filter a search, chat retrieval or document read must apply: the tenant token's
    /// (if any) AND each of `extra` (a request's, a tool call's: parsed here; `null` is none).
    /// `None` when nothing restricts. A request can only narrow what the token allows.
    pub fn filter_with(&self, extra: &[&Value]) -> Result<Option<Filter>> {
        let mut out = self.filter.as_ref().map(|f| f.filter.clone());
        for r in extra.iter().filter(|r| !r.is_null()) {
            out = Filter::and(out, Some(Filter::parse(r)?));
        }
        Ok(out)
    }

    /// Whether a document passes this context's filter and `request`'s.
    pub fn allows(&self, request: Option<&Value>, doc: &filter::Doc) -> Result<bool> {
        let extra: Vec<&Value> = request.into_iter().collect();
        Ok(self.filter_with(&extra)?.is_none_or(|f| f.matches(doc)))
    }
}

impl From<crate::identity::Scope> for Action {
    fn from(s: crate::identity::Scope) -> Action {
        match s {
            crate::identity::Scope::Search => Action::Search,
            crate::identity::Scope::Chat => Action::Chat,
            crate::identity::Scope::Ingest => Action::Ingest,
            crate::identity::Scope::Manage => Action::WorkspaceUpdate,
        }
    }
}

fn unauthenticated_key() -> Error {
    Error::unauthenticated("invalid API key")
}

impl Identity {
    /// Resolves a bearer credential: operator token, API key, session token or tenant token.
    /// Unknown, malformed, expired or revoked credentials are `Unauthenticated`.
    pub fn authenticate(&self, credential: &str) -> Result<Principal> {
        if self.is_operator_token(credential) {
            return Ok(Principal::Operator);
        }
        if let Some(prefix) = secrets::api_key_prefix(credential) {
            // The authentication cache: keyed by the digest of the whole secret, so a hit is a
            // match; a miss reads the control plane and checks the digest there.
            let lookup = KeyLookup::Digest(secrets::sha256(credential));
            let row = match self.state.cached_key(&lookup) {
                Some(row) => row,
                None => {
                    let row = self
                        .control
                        .key_by_prefix(prefix)?
                        .ok_or_else(unauthenticated_key)?;
                    if !secrets::digest_matches(credential, &row.secret_sha256) {
                        return Err(unauthenticated_key());
                    }
                    self.state.cache_key(lookup, row.clone());
                    row
                }
            };
            if !row.is_live(&self.state.clock().now_text()) {
                return Err(Error::unauthenticated("API key revoked or expired"));
            }
            self.live_workspace_of_credential(row.workspace_id)?;
            self.state.touch_key(row.id);
            return Ok(Principal::ApiKey {
                key_id: row.id,
                org_id: row.org_id,
                workspace_id: row.workspace_id,
                scopes: row.scopes,
            });
        }
        if secrets::well_formed(credential, secrets::SESSION_PREFIX) {
            let s = self
                .control
                .session_by_digest(
                    &secrets::sha256_hex(credential),
                    &self.state.clock().now_text(),
                )?
                .ok_or_else(|| Error::unauthenticated("session expired or logged out"))?;
            return Ok(Principal::User {
                user_id: s.user_id,
                session_id: s.id,
            });
        }
        if jwt::looks_like_jwt(credential) {
            return self.authenticate_tenant_token(credential);
        }
        Err(Error::unauthenticated("invalid credential"))
    }

    fn authenticate_tenant_token(&self, token: &str) -> Result<Principal> {
        let now = self.state.clock().timestamp();
        let claims = jwt::verify(token, |kid| self.state.signing_secret(kid), now)
            .map_err(|e| Error::unauthenticated(e.message()))?;
        let lookup = KeyLookup::Id(claims.key);
        let key = match self.state.cached_key(&lookup) {
            Some(k) => Some(k),
            None => {
                let k = self.control.key_by_id(claims.key)?;
                if let Some(k) = &k {
                    self.state.cache_key(lookup, k.clone());
                }
                k
            }
        };
        let key = key
            .filter(|k| k.workspace_id == claims.ws && k.org_id == claims.org)
            .ok_or_else(|| Error::unauthenticated("tenant token's API key does not exist"))?;
        if !key.is_live(&self.state.clock().now_text()) {
            return Err(Error::unauthenticated(
                "tenant token's API key is revoked or expired",
            ));
        }
        self.live_workspace_of_credential(claims.ws)?;
        self.state.touch_key(key.id);
        let scopes: Scopes = claims.scopes.iter().copied().collect();
        Ok(Principal::TenantToken {
            key_id: key.id,
            org_id: key.org_id,
            workspace_id: key.workspace_id,
            scopes: scopes
                .intersect(key.scopes)
                .intersect(Scopes::TENANT_TOKEN_MAX),
            // Parsed once per request; a token whose filter no longer parses (minted by an
            // older version) is refused rather than applied with another meaning.
            filter: claims
                .filter
                .map(filter::Parsed::parse)
                .transpose()
                .map_err(|e| {
                    Error::unauthenticated(format!(
                        "tenant token's filter is not valid ({e}); mint a new token"
                    ))
                })?
                .map(Arc::new),
            subject: claims.sub,
            token_id: claims.jti,
        })
    }

    /// A credential bound to a workspace that no longer exists is no credential.
    fn live_workspace_of_credential(&self, ws: Uuid) -> Result<WorkspaceStatus> {
        match self.workspace_status(ws) {
            Err(Error::NotFound(_)) => Err(Error::unauthenticated(
                "the credential's workspace no longer exists",
            )),
            other => other,
        }
    }

    /// The org and status of a live workspace, through the status cache.
    pub fn workspace_status(&self, ws: Uuid) -> Result<WorkspaceStatus> {
        if let Some(s) = self.state.cached_status(ws) {
            return Ok(s);
        }
        let rec = self.control.get_workspace(ws)?;
        let s = WorkspaceStatus {
            org_id: rec.org_id,
            org_status: rec.org_status,
        };
        self.state.cache_status(ws, s);
        Ok(s)
    }

    /// Checks a tenant hint (`X-Tenant-ID` or subdomain) on a route that names no tenant: a key
    /// or token must be bound to that very workspace.
    pub fn check_tenant_hint(&self, principal: &Principal, hint: Option<Uuid>) -> Result<()> {
        match (principal.bound_workspace(), hint) {
            (Some((_, ws)), Some(h)) if ws != h => Err(Error::NotFound(Resource::Workspace)),
            _ => Ok(()),
        }
    }

    /// The tenant context of a workspace route. `ws` is the workspace of the path, if any (else
    /// the key's or token's own); `hint` the one of `X-Tenant-ID` or the subdomain. Another
    /// tenant's workspace is `NotFound`; a suspended org is `Suspended` (except for the operator).
    pub fn workspace_access(
        &self,
        principal: &Principal,
        ws: Option<Uuid>,
        hint: Option<Uuid>,
    ) -> Result<WorkspaceAccess> {
        let target =
            match (ws, principal.bound_workspace()) {
                (Some(w), _) => w,
                (None, Some((_, w))) => w,
                (None, None) => return Err(Error::invalid(
                    "this route takes its workspace from an API key; use /v1/workspaces/{ws}/...",
                )),
            };
        if hint.is_some_and(|h| h != target) {
            return Err(Error::NotFound(Resource::Workspace));
        }
        let (role, scopes, filter) = match principal {
            Principal::Operator => (None, Scopes::all(), None),
            Principal::User { user_id, .. } => {
                let st = self.workspace_status(target)?;
                let role = self
                    .control
                    .role_of(st.org_id, *user_id)?
                    .ok_or(Error::NotFound(Resource::Workspace))?;
                (Some(role), Scopes::all(), None)
            }
            Principal::ApiKey {
                workspace_id,
                scopes,
                ..
            } => {
                if *workspace_id != target {
                    return Err(Error::NotFound(Resource::Workspace));
                }
                (None, *scopes, None)
            }
            Principal::TenantToken {
                workspace_id,
                scopes,
                filter,
                ..
            } => {
                if *workspace_id != target {
                    return Err(Error::NotFound(Resource::Workspace));
                }
                (None, *scopes, filter.clone())
            }
        };
        let st = self.workspace_status(target)?;
        if st.org_status != OrgStatus::Active && !principal.is_operator() {
            return Err(Error::Suspended);
        }
        Ok(WorkspaceAccess {
            principal: principal.clone(),
            workspace_id: target,
            org_id: st.org_id,
            org_status: st.org_status,
            role,
            scopes,
            filter,
        })
    }

    /// The operator's context for a workspace (command line, evaluation, benchmarks).
    pub fn operator_workspace(&self, ws: Uuid) -> Result<WorkspaceAccess> {
        self.workspace_access(&Principal::Operator, Some(ws), None)
    }

    /// The operator's context for an org, by id or slug (command line).
    pub fn operator_org(&self, org_key: &str) -> Result<OrgAccess> {
        self.org_access(&Principal::Operator, org_key, None)
    }

    /// The tenant context of an org route (`org` is an id or slug). A non-member, or a key of
    /// another org, gets `NotFound`.
    pub fn org_access(
        &self,
        principal: &Principal,
        org_key: &str,
        hint: Option<Uuid>,
    ) -> Result<OrgAccess> {
        let org = self.control.get_org(org_key)?;
        let role = match principal {
            Principal::Operator => None,
            Principal::User { user_id, .. } => Some(
                self.control
                    .role_of(org.id, *user_id)?
                    .ok_or(Error::NotFound(Resource::Org))?,
            ),
            Principal::ApiKey { org_id, .. } | Principal::TenantToken { org_id, .. } => {
                if *org_id != org.id {
                    return Err(Error::NotFound(Resource::Org));
                }
                None
            }
        };
        if let Some(h) = hint {
            let in_org = matches!(self.workspace_status(h), Ok(s) if s.org_id == org.id);
            if !in_org {
                return Err(Error::NotFound(Resource::Org));
            }
            self.check_tenant_hint(principal, Some(h))
                .map_err(|_| Error::NotFound(Resource::Org))?;
        }
        if org.status != OrgStatus::Active && !principal.is_operator() {
            return Err(Error::Suspended);
        }
        Ok(OrgAccess {
            principal: principal.clone(),
            org,
            role,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::service::fixtures::{app, key, workspace};
    use crate::identity::service::NewTenantToken;
    use serde_json::json;

    #[test]
    fn a_request_filter_narrows_but_never_widens_the_token_filter() {
        let (_t, app) = app();
        let (_, ws) = workspace(&app, "a");
        let k = key(&app, ws, &["search"]);
        let access = app
            .identity()
            .workspace_access(&app.identity().authenticate(&k).expect("auth"), None, None)
            .expect("access");
        let minted = app
            .identity()
            .mint_tenant_token(
                &access,
                NewTenantToken {
                    filter: Some(json!({"group": "sales"})),
                    ..Default::default()
                },
            )
            .expect("mint");
        let principal = app.identity().authenticate(&minted.token).expect("token");
        let ctx = app
            .identity()
            .workspace_access(&principal, None, None)
            .expect("ctx");
        let sales = json!({"group": "sales", "year": 2024});
        let ops = json!({"group": "ops", "year": 2024});
        let doc = |metadata| filter::Doc {
            id: "d",
            external_id: None,
            title: "",
            mime_type: "text/plain",
            created_at: "",
            updated_at: "",
            metadata,
        };
        let widen = json!({"group": {"in": ["sales", "ops"]}});
        assert!(ctx.allows(Some(&widen), &doc(&sales)).expect("ok"));
        assert!(
            !ctx.allows(Some(&widen), &doc(&ops)).expect("ok"),
            "widened"
        );
        assert!(!ctx.allows(None, &doc(&ops)).expect("ok"));
        let narrow = json!({"year": {"lt": 2024}});
        assert!(
            !ctx.allows(Some(&narrow), &doc(&sales)).expect("ok"),
            "narrowed"
        );
        assert_eq!(
            ctx.filter_with(&[&Value::Null]).expect("ok"),
            Filter::parse(&json!({"group": "sales"})).ok()
        );
        assert!(ctx
            .filter_with(&[&json!({"group": {"regex": "."}})])
            .is_err());
        assert!(matches!(
            ctx.filter_with(&[&widen]).expect("ok"),
            Some(Filter::All(v)) if v.len() == 2
        ));
    }

    #[test]
    fn status_changes_reach_the_cache_at_once() {
        let (_t, app) = app();
        let (org, ws) = workspace(&app, "a");
        let k = key(&app, ws, &["search"]);
        let p = app.identity().authenticate(&k).expect("auth");
        assert!(app.identity().workspace_access(&p, None, None).is_ok());
        let op = app.identity().operator_org(&org.to_string()).expect("op");
        app.tenancy()
            .set_org_status(&op, OrgStatus::Suspended)
            .expect("suspend");
        assert!(matches!(
            app.identity().workspace_access(&p, None, None),
            Err(Error::Suspended)
        ));
        app.tenancy()
            .set_org_status(&op, OrgStatus::Active)
            .expect("reactivate");
        let ws_op = app.identity().operator_workspace(ws).expect("op ws");
        app.tenancy()
            .delete_workspace(&ws_op, false)
            .expect("delete");
        assert!(matches!(
            app.identity().authenticate(&k),
            Err(Error::Unauthenticated(_))
        ));
    }
}
