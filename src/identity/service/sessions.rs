//! Users, login and sessions, and what a user sees of themselves (`me`, their orgs).

use chrono::Duration;
use serde::Serialize;
use serde_json::{json, Value};

use super::access::forbidden;
use super::Identity;
use crate::control::{format_time, Org, Page, User};
use crate::error::{Error, Result};
use crate::identity::{normalize_email, password, secrets, Action, Principal, Role};

/// How long a login session lives.
pub const SESSION_DAYS: i64 = 7;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LoginResult {
    pub token: String,
    pub expires_at: String,
    pub user: User,
}

/// An org with the asking user's role in it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OrgWithRole {
    #[serde(flatten)]
    pub org: Org,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
}

impl Identity {
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
        self.state
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
            self.state.throttle.failed(&email, client);
            tracing::info!("login failed");
            return Err(Error::unauthenticated("invalid email or password"));
        };
        self.state.throttle.succeeded(&email);
        self.open_session(user)
    }

    pub(super) fn open_session(&self, user: User) -> Result<LoginResult> {
        let token = secrets::new_session_token();
        let now = self.state.clock().now();
        let expires_at = format_time(now + Duration::days(SESSION_DAYS));
        self.control.insert_session(
            user.id,
            &secrets::sha256_hex(&token),
            &format_time(now),
            &expires_at,
        )?;
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
                .control
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
}
