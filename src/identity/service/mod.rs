//! The identity operations of [`App`]: authentication (the hot path), tenant access checks,
//! users and sessions, members and invitations, API keys and tenant tokens. HTTP handlers and
//! CLI commands call these; nothing here knows of HTTP.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use super::jwt::{self, Claims};
use super::permissions::may_manage_role;
use super::state::WorkspaceStatus;
use super::{
    normalize_email, password, permits, secrets, Action, Principal, Role, Scopes, Subject,
};
use crate::app::App;
use crate::control::{
    format_time, Accepted, ApiKey, AuditEntry, Invitation, Member, Org, OrgStatus, Page, User,
};
use crate::error::{Error, Resource, Result};
use crate::knowledge::filter::{self, Filter};

/// How long a login session lives.
pub const SESSION_DAYS: i64 = 7;
/// How long an invitation can be accepted.
pub const INVITATION_DAYS: i64 = 7;
/// Default and largest lifetime of a tenant token.
pub const TOKEN_DEFAULT_SECS: i64 = 3600;

/// A verified principal's access to one org.
#[derive(Debug, Clone)]
pub struct OrgAccess {
    pub principal: Principal,
    pub org: Org,
    /// The member's role (users only).
    pub role: Option<Role>,
}

/// A verified principal's access to one workspace: the tenant context of a request.
#[derive(Debug, Clone)]
pub struct WorkspaceAccess {
    pub principal: Principal,
    pub workspace_id: Uuid,
    pub org_id: Uuid,
    /// The member's role in the workspace's org (users only).
    pub role: Option<Role>,
    /// Effective scopes of a key or token; every scope for the operator and for users (whose
    /// role decides instead).
    pub scopes: Scopes,
    /// The tenant token's metadata filter, which every search, chat retrieval and document
    /// read must apply.
    pub filter: Option<Arc<filter::Parsed>>,
}

fn subject_of(principal: &Principal, role: Option<Role>) -> Option<Subject> {
    match principal {
        Principal::Operator => Some(Subject::Operator),
        Principal::User { .. } => role.map(Subject::Member),
        Principal::ApiKey { scopes, .. } => Some(Subject::Key(*scopes)),
        Principal::TenantToken { scopes, .. } => Some(Subject::Token(*scopes)),
    }
}

fn forbidden(action: Action, principal: &Principal) -> Error {
    let who = match principal {
        Principal::Operator => "operator",
        Principal::User { .. } => "user",
        Principal::ApiKey { .. } => "API key",
        Principal::TenantToken { .. } => "tenant token",
    };
    Error::forbidden(action.forbidden_message(who))
}

impl OrgAccess {
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
    pub fn subject(&self) -> Option<Subject> {
        subject_of(&self.principal, self.role)
    }

    /// `Forbidden` unless the permission table allows `action` (a [`super::Scope`] converts to
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

impl From<super::Scope> for Action {
    fn from(s: super::Scope) -> Action {
        match s {
            super::Scope::Search => Action::Search,
            super::Scope::Chat => Action::Chat,
            super::Scope::Ingest => Action::Ingest,
            super::Scope::Manage => Action::WorkspaceUpdate,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LoginResult {
    pub token: String,
    pub expires_at: String,
    pub user: User,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewApiKey {
    pub name: String,
    pub scopes: Vec<String>,
    /// RFC 3339; must be in the future.
    pub expires_at: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
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

#[derive(Debug, Clone, Serialize)]
pub struct MintedToken {
    pub token: String,
    pub expires_at: String,
    pub workspace_id: Uuid,
    pub scopes: Scopes,
    pub filter: Option<Value>,
    pub subject: Option<String>,
}

/// An org with the asking user's role in it.
#[derive(Debug, Clone, Serialize)]
pub struct OrgWithRole {
    #[serde(flatten)]
    pub org: Org,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
}

fn parse_future_time(text: &str, what: &str) -> Result<String> {
    let t = DateTime::parse_from_rfc3339(text)
        .map_err(|_| Error::invalid(format!("{what} must be an RFC 3339 time")))?
        .with_timezone(&Utc);
    if t <= Utc::now() {
        return Err(Error::invalid(format!("{what} must be in the future")));
    }
    Ok(format_time(t))
}

fn unauthenticated_key() -> Error {
    Error::unauthenticated("invalid API key")
}

impl App {
    // ---- the hot path ----

    /// Resolves a bearer credential: operator token, API key, session token or tenant token.
    /// Unknown, malformed, expired or revoked credentials are `Unauthenticated`.
    pub fn authenticate(&self, credential: &str) -> Result<Principal> {
        if self.is_operator_token(credential) {
            return Ok(Principal::Operator);
        }
        if let Some(prefix) = secrets::api_key_prefix(credential) {
            let row = self
                .control
                .key_by_prefix(prefix)?
                .ok_or_else(unauthenticated_key)?;
            if !secrets::digest_matches(credential, &row.secret_sha256) {
                return Err(unauthenticated_key());
            }
            if !row.is_live(&crate::db::now()) {
                return Err(Error::unauthenticated("API key revoked or expired"));
            }
            self.live_workspace_of_credential(row.workspace_id)?;
            self.identity.touch_key(row.id);
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
                .session_by_digest(&secrets::sha256_hex(credential))?
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
        let now = Utc::now().timestamp();
        let claims = jwt::verify(token, |kid| self.identity.signing_secret(kid), now)
            .map_err(|e| Error::unauthenticated(e.message()))?;
        let key = self
            .control
            .key_by_id(claims.key)?
            .filter(|k| k.workspace_id == claims.ws && k.org_id == claims.org)
            .ok_or_else(|| Error::unauthenticated("tenant token's API key does not exist"))?;
        if !key.is_live(&crate::db::now()) {
            return Err(Error::unauthenticated(
                "tenant token's API key is revoked or expired",
            ));
        }
        self.live_workspace_of_credential(claims.ws)?;
        self.identity.touch_key(key.id);
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
        if let Some(s) = self.identity.cached_status(ws) {
            return Ok(s);
        }
        let rec = self.control.get_workspace(ws)?;
        let s = WorkspaceStatus {
            org_id: rec.org_id,
            org_status: rec.org_status,
        };
        self.identity.cache_status(ws, s);
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
            role,
            scopes,
            filter,
        })
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

    // ---- users and sessions ----

    /// Creates a user (command line, tests); optionally as a member of `org` with `role`.
    pub fn create_user(
        &self,
        email: &str,
        name: &str,
        pass: &str,
        membership: Option<(&str, Role)>,
    ) -> Result<User> {
        let email = normalize_email(email)?;
        let name = if name.trim().is_empty() {
            String::new()
        } else {
            crate::ids::validate_name(name)?
        };
        password::validate(pass)?;
        let org = membership
            .map(|(o, r)| self.control.get_org(o).map(|o| (o.id, r)))
            .transpose()?;
        let hash = password::hash(pass)?;
        let user = self.control.insert_user(&email, &name, &hash)?;
        if let Some((org_id, role)) = org {
            self.control.add_member(org_id, user.id, role)?;
        }
        tracing::info!(user_id = %user.id, "user created");
        Ok(user)
    }

    /// Checks an email and password (throttled per email and client address) and opens a
    /// session.
    pub fn login(&self, email: &str, pass: &str, client: Option<&str>) -> Result<LoginResult> {
        let email = normalize_email(email)
            .map_err(|_| Error::unauthenticated("invalid email or password"))?;
        self.identity
            .throttle
            .check(&email, client)
            .map_err(Error::RateLimited)?;
        let ok = match self.control.user_by_email(&email)? {
            Some((user, hash)) if password::verify(pass, &hash) => Some(user),
            Some(_) => None,
            None => {
                password::verify_dummy(pass);
                None
            }
        };
        let Some(user) = ok else {
            self.identity.throttle.failed(&email, client);
            tracing::info!("login failed");
            return Err(Error::unauthenticated("invalid email or password"));
        };
        self.identity.throttle.succeeded(&email);
        self.open_session(user)
    }

    fn open_session(&self, user: User) -> Result<LoginResult> {
        let token = secrets::new_session_token();
        let expires_at = format_time(Utc::now() + Duration::days(SESSION_DAYS));
        self.control
            .insert_session(user.id, &secrets::sha256_hex(&token), &expires_at)?;
        tracing::info!(user_id = %user.id, "session opened");
        Ok(LoginResult {
            token,
            expires_at,
            user,
        })
    }

    /// Ends the session of a user principal.
    pub fn logout(&self, principal: &Principal) -> Result<()> {
        match principal {
            Principal::User { session_id, .. } => self.control.delete_session(*session_id),
            _ => Err(Error::invalid(
                "logout ends a user session; revoke API keys with DELETE /v1/workspaces/{ws}/api-keys/{id}",
            )),
        }
    }

    /// What `/v1/me` shows: the principal, and for a user their orgs and roles.
    pub fn me(&self, principal: &Principal) -> Result<Value> {
        Ok(match principal {
            Principal::Operator => json!({"principal": "operator"}),
            Principal::User { user_id, .. } => {
                let user = self.control.get_user(*user_id)?;
                let orgs: Vec<Value> = self
                    .control
                    .orgs_of_user(*user_id)?
                    .into_iter()
                    .map(|(o, r)| json!({"id": o.id, "slug": o.slug, "name": o.name, "status": o.status, "role": r}))
                    .collect();
                json!({"principal": "user", "user": user, "orgs": orgs})
            }
            Principal::ApiKey {
                key_id,
                org_id,
                workspace_id,
                scopes,
            } => json!({"principal": "api_key", "key_id": key_id, "org_id": org_id,
                        "workspace_id": workspace_id, "scopes": scopes}),
            Principal::TenantToken {
                key_id,
                org_id,
                workspace_id,
                scopes,
                filter,
                subject,
                ..
            } => json!({"principal": "tenant_token", "key_id": key_id, "org_id": org_id,
                        "workspace_id": workspace_id, "scopes": scopes,
                        "filter": filter.as_ref().map(|f| &f.json), "subject": subject}),
        })
    }

    /// `GET /v1/orgs`: every org for the operator, a user's own orgs (with role) for a user.
    pub fn orgs_for(&self, principal: &Principal, page: Page) -> Result<Vec<OrgWithRole>> {
        match principal {
            Principal::Operator => Ok(self
                .list_orgs(page)?
                .into_iter()
                .map(|org| OrgWithRole { org, role: None })
                .collect()),
            Principal::User { user_id, .. } => Ok(self
                .control
                .orgs_of_user(*user_id)?
                .into_iter()
                .skip(page.offset as usize)
                .take(page.limit as usize)
                .map(|(org, role)| OrgWithRole {
                    org,
                    role: Some(role),
                })
                .collect()),
            other => Err(forbidden(Action::OrgListAll, other)),
        }
    }

    // ---- members and invitations ----

    pub fn list_members(&self, access: &OrgAccess) -> Result<Vec<Member>> {
        access.require(Action::MembersRead)?;
        self.control.list_members(access.org.id)
    }

    /// Changes a member's role. Admins manage admins, members and viewers; only owners grant,
    /// change or take away the owner role; the last owner stays an owner.
    pub fn change_member_role(
        &self,
        access: &OrgAccess,
        user_id: Uuid,
        role: Role,
    ) -> Result<Member> {
        access.require(Action::MembersManage)?;
        let subject = access
            .subject()
            .ok_or_else(|| forbidden(Action::MembersManage, &access.principal))?;
        if !may_manage_role(subject, role) {
            return Err(Error::forbidden("only an owner may grant the owner role"));
        }
        self.control
            .change_membership(access.org.id, user_id, Some(role), |current| {
                if may_manage_role(subject, current) {
                    Ok(())
                } else {
                    Err(Error::forbidden("only an owner may change an owner's role"))
                }
            })?;
        self.control
            .list_members(access.org.id)?
            .into_iter()
            .find(|m| m.user_id == user_id)
            .ok_or(Error::NotFound(Resource::Member))
    }

    /// Removes a member; anyone may leave (except the last owner).
    pub fn remove_member(&self, access: &OrgAccess, user_id: Uuid) -> Result<()> {
        let leaving = access.principal.user_id() == Some(user_id);
        if !leaving {
            access.require(Action::MembersManage)?;
        }
        let subject = access
            .subject()
            .ok_or_else(|| forbidden(Action::MembersManage, &access.principal))?;
        self.control
            .change_membership(access.org.id, user_id, None, |current| {
                if leaving || may_manage_role(subject, current) {
                    Ok(())
                } else {
                    Err(Error::forbidden("only an owner may remove an owner"))
                }
            })
    }

    /// Invites someone by email; returns the invitation and its single-use token.
    pub fn invite(
        &self,
        access: &OrgAccess,
        email: &str,
        role: Role,
    ) -> Result<(Invitation, String)> {
        access.require(Action::MembersManage)?;
        let subject = access
            .subject()
            .ok_or_else(|| forbidden(Action::MembersManage, &access.principal))?;
        if !may_manage_role(subject, role) {
            return Err(Error::forbidden("only an owner may invite an owner"));
        }
        let email = normalize_email(email)?;
        let token = secrets::new_invitation_token();
        let expires_at = format_time(Utc::now() + Duration::days(INVITATION_DAYS));
        let inv = self.control.insert_invitation(
            access.org.id,
            &email,
            role,
            &secrets::sha256_hex(&token),
            access.principal.user_id(),
            &expires_at,
        )?;
        tracing::info!(org_id = %access.org.id, invitation_id = %inv.id, "invitation created");
        Ok((inv, token))
    }

    /// Accepts an invitation. A new email needs a password (the user is created and logged in);
    /// an existing user must present their own session.
    pub fn accept_invitation(
        &self,
        token: &str,
        principal: Option<&Principal>,
        pass: Option<&str>,
        name: Option<&str>,
    ) -> Result<(Accepted, Option<LoginResult>)> {
        if !secrets::well_formed(token, secrets::INVITATION_PREFIX) {
            return Err(Error::NotFound(Resource::Invitation));
        }
        let inv = self.control.open_invitation(&secrets::sha256_hex(token))?;
        match self.control.user_by_email(&inv.email)? {
            Some((user, _)) => {
                if principal.and_then(Principal::user_id) != Some(user.id) {
                    return Err(Error::unauthenticated(
                        "this invitation is for an existing user: log in as that user to accept it",
                    ));
                }
                Ok((
                    self.control.accept_invitation(&inv, Some(user.id), None)?,
                    None,
                ))
            }
            None => {
                let pass = pass.ok_or_else(|| {
                    Error::invalid("password is required to create the invited user")
                })?;
                password::validate(pass)?;
                let name = match name.map(str::trim) {
                    Some(n) if !n.is_empty() => crate::ids::validate_name(n)?,
                    _ => String::new(),
                };
                let hash = password::hash(pass)?;
                let accepted = self
                    .control
                    .accept_invitation(&inv, None, Some((&name, &hash)))?;
                let session = self.open_session(accepted.user.clone())?;
                Ok((accepted, Some(session)))
            }
        }
    }

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
            .map(|t| parse_future_time(t, "expires_at"))
            .transpose()?;
        let (key, prefix) = secrets::new_api_key();
        let created = self.control.insert_api_key(
            access.org_id,
            access.workspace_id,
            &name,
            &prefix,
            &secrets::sha256_hex(&key),
            scopes,
            access.principal.user_id(),
            expires_at.as_deref(),
        )?;
        tracing::info!(key_id = %created.id, "API key created");
        Ok((created, key))
    }

    pub fn list_api_keys(&self, access: &WorkspaceAccess) -> Result<Vec<ApiKey>> {
        access.require(Action::ApiKeysManage)?;
        let mut keys = self.control.list_api_keys(access.workspace_id)?;
        for k in &mut keys {
            if let Some(t) = self.identity.pending_last_use(k.id) {
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
        self.control.revoke_api_key(access.workspace_id, id)?;
        tracing::info!(key_id = %id, "API key revoked");
        Ok(())
    }

    /// Writes the in-memory `last_used_at` of keys to the control plane (background task).
    pub fn flush_key_usage(&self) -> Result<()> {
        let pending = self.identity.take_last_used();
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
        } = &access.principal
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
            .identity
            .current_signing_key()
            .ok_or_else(|| Error::internal("no tenant-token signing key"))?;
        let now = Utc::now();
        let claims = Claims {
            iss: jwt::ISSUER.into(),
            sub: req.subject.clone(),
            org: access.org_id,
            ws: access.workspace_id,
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
            workspace_id: access.workspace_id,
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
        self.identity.set_signing_keys(keys);
        tracing::info!(retire_previous, "tenant-token signing secret rotated");
        Ok(json!({"current_kid": current, "verifying_kids": verifying}))
    }

    // ---- operator audit ----

    /// Records an operator action; a failure is logged, never fails the request.
    pub fn record_audit(&self, entry: &AuditEntry) {
        if let Err(e) = self.control.record_audit(entry) {
            tracing::error!(error = %e, "could not write the operator audit log");
        }
    }

    pub fn list_audit(&self, org: Option<&str>, page: Page) -> Result<Vec<AuditEntry>> {
        let org_id = match org {
            Some(o) => Some(match crate::ids::parse_uuid(o, "organization") {
                Ok(id) => id,
                Err(_) => self.control.get_org(o)?.id,
            }),
            None => None,
        };
        self.control.list_audit(org_id, page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::control::{NewOrg, NewWorkspace};

    fn app() -> (tempfile::TempDir, Arc<App>) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut config = Config::for_data_dir(tmp.path());
        config.admin_token = Some("operator-token-for-unit-tests".into());
        let (app, _) = App::open(config).expect("open");
        (tmp, app)
    }

    fn workspace(app: &App, slug: &str) -> (Uuid, Uuid) {
        let org = app
            .create_org(NewOrg {
                name: slug.into(),
                ..Default::default()
            })
            .expect("org");
        let ws = app
            .create_workspace(
                &org.slug,
                NewWorkspace {
                    name: "w".into(),
                    ..Default::default()
                },
            )
            .expect("ws");
        (org.id, ws.id)
    }

    fn key(app: &App, ws: Uuid, scopes: &[&str]) -> String {
        let op = app
            .workspace_access(&Principal::Operator, Some(ws), None)
            .expect("op");
        app.create_api_key(
            &op,
            NewApiKey {
                name: "k".into(),
                scopes: scopes.iter().map(|s| s.to_string()).collect(),
                expires_at: None,
            },
        )
        .expect("key")
        .1
    }

    #[test]
    fn a_request_filter_narrows_but_never_widens_the_token_filter() {
        let (_t, app) = app();
        let (_, ws) = workspace(&app, "a");
        let k = key(&app, ws, &["search"]);
        let access = app
            .workspace_access(&app.authenticate(&k).expect("auth"), None, None)
            .expect("access");
        let minted = app
            .mint_tenant_token(
                &access,
                NewTenantToken {
                    filter: Some(json!({"group": "sales"})),
                    ..Default::default()
                },
            )
            .expect("mint");
        let principal = app.authenticate(&minted.token).expect("token");
        let ctx = app.workspace_access(&principal, None, None).expect("ctx");
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
    fn key_usage_is_kept_in_memory_and_flushed() {
        let (_t, app) = app();
        let (_, ws) = workspace(&app, "a");
        let k = key(&app, ws, &["search"]);
        app.authenticate(&k).expect("auth");
        let stored = app.control.list_api_keys(ws).expect("list");
        assert!(stored[0].last_used_at.is_none(), "no write per request");
        let op = app
            .workspace_access(&Principal::Operator, Some(ws), None)
            .expect("op");
        assert!(app.list_api_keys(&op).expect("list")[0]
            .last_used_at
            .is_some());
        app.flush_key_usage().expect("flush");
        assert!(app.control.list_api_keys(ws).expect("list")[0]
            .last_used_at
            .is_some());
    }

    #[test]
    fn status_changes_reach_the_cache_at_once() {
        let (_t, app) = app();
        let (org, ws) = workspace(&app, "a");
        let k = key(&app, ws, &["search"]);
        let p = app.authenticate(&k).expect("auth");
        assert!(app.workspace_access(&p, None, None).is_ok());
        app.set_org_status(&org.to_string(), OrgStatus::Suspended)
            .expect("suspend");
        assert!(matches!(
            app.workspace_access(&p, None, None),
            Err(Error::Suspended)
        ));
        app.set_org_status(&org.to_string(), OrgStatus::Active)
            .expect("reactivate");
        app.delete_workspace(ws).expect("delete");
        assert!(matches!(
            app.authenticate(&k),
            Err(Error::Unauthenticated(_))
        ));
    }

    #[test]
    fn the_last_owner_stays() {
        let (_t, app) = app();
        let (org, _) = workspace(&app, "a");
        let owner = app
            .create_user("o@x.io", "", "password1", Some(("a", Role::Owner)))
            .expect("user");
        let access = app
            .org_access(&Principal::Operator, &org.to_string(), None)
            .expect("access");
        assert!(matches!(
            app.change_member_role(&access, owner.id, Role::Admin),
            Err(Error::Conflict(_))
        ));
        assert!(matches!(
            app.remove_member(&access, owner.id),
            Err(Error::Conflict(_))
        ));
        assert!(
            app.create_user("O@X.io", "", "password1", None).is_err(),
            "emails are unique"
        );
    }
}
