//! The auth extractors: every `/v1` handler takes one, so no route can forget it. They are thin
//! adapters over the domain (`identity::service`): read the bearer credential, the path's org or
//! workspace, the `X-Tenant-ID` header and the subdomain, and ask `app.identity()` for a
//! verified tenant context. Handlers pass it to the domain, whose functions check their action
//! against the permission table (`identity::permissions`); no handler checks an action.
//!
//! - [`Auth`]: the verified principal (any credential), for routes that name no tenant.
//! - [`Operator`]: the operator token only.
//! - [`OrgContext`]: a principal's access to the org of the `{org}` path parameter.
//! - [`WorkspaceContext`]: the tenant context of a workspace route: the `{ws}` path parameter,
//!   or, when the route has none, the workspace of the API key or tenant token.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::{AUTHORIZATION, HOST};
use axum::http::request::Parts;
use axum::http::{HeaderName, StatusCode};
use uuid::Uuid;

use super::error::ApiError;
use super::middleware::{record_principal, record_tenant};
use crate::app::App;
use crate::identity::{OrgAccess, WorkspaceAccess};
use crate::ids::parse_uuid;

pub use crate::identity::{Action, Principal, Scope, Scopes};

/// Names the workspace a request is meant for; must agree with the credential and the path.
pub static TENANT_HEADER: HeaderName = HeaderName::from_static("x-tenant-id");

/// The bearer credential of the request, taken from `Authorization: Bearer <token>`.
pub fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let value = parts
        .headers
        .get(AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthenticated("missing Authorization: Bearer credential"))?;
    let text = value
        .to_str()
        .map_err(|_| ApiError::unauthenticated("malformed Authorization header"))?;
    let (scheme, token) = text
        .split_once(' ')
        .ok_or_else(|| ApiError::unauthenticated("malformed Authorization header"))?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(ApiError::unauthenticated(
            "expected Authorization: Bearer <credential>",
        ));
    }
    Ok(token)
}

/// The workspace named by `X-Tenant-ID` or by the configured tenant subdomain
/// (`<workspace-id>.<tenant_domain>`); both must agree when both are given.
fn tenant_hint(parts: &Parts, app: &App) -> Result<Option<Uuid>, ApiError> {
    let header = match parts.headers.get(&TENANT_HEADER) {
        Some(v) => {
            let text = v
                .to_str()
                .map_err(|_| ApiError::invalid(StatusCode::BAD_REQUEST, "malformed X-Tenant-ID"))?;
            Some(parse_uuid(text.trim(), "X-Tenant-ID workspace")?)
        }
        None => None,
    };
    let sub = match (&app.config().tenant_domain, parts.headers.get(HOST)) {
        (Some(domain), Some(host)) => {
            let host = host.to_str().unwrap_or("");
            let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
            match host
                .strip_suffix(domain.as_str())
                .and_then(|h| h.strip_suffix('.'))
            {
                Some(label) if !label.is_empty() && !label.contains('.') => {
                    Some(parse_uuid(label, "subdomain workspace")?)
                }
                _ => None,
            }
        }
        _ => None,
    };
    match (header, sub) {
        (Some(h), Some(s)) if h != s => Err(ApiError::not_found("workspace not found")),
        (h, s) => Ok(h.or(s)),
    }
}

/// A verified credential. Keys and tokens must agree with any tenant hint of the request.
#[derive(Debug, Clone)]
pub struct Auth {
    pub principal: Principal,
    /// The workspace named by `X-Tenant-ID` or the subdomain.
    pub hint: Option<Uuid>,
}

impl Auth {
    fn resolve(parts: &mut Parts, app: &App) -> Result<Auth, ApiError> {
        if let Some(a) = parts.extensions.get::<Auth>() {
            return Ok(a.clone());
        }
        let principal = app.identity().authenticate(bearer(parts)?)?;
        record_principal(principal.kind());
        super::middleware::record_actor_id(crate::governance::audit::actor_id(&principal));
        if let Some((org, ws)) = principal.bound_workspace() {
            record_tenant(Some(org), Some(ws));
        }
        let hint = tenant_hint(parts, app)?;
        app.identity().check_tenant_hint(&principal, hint)?;
        let auth = Auth { principal, hint };
        parts.extensions.insert(auth.clone());
        Ok(auth)
    }
}

impl FromRequestParts<Arc<App>> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        Auth::resolve(parts, app)
    }
}

/// A credential when the request has one (`None` without an `Authorization` header; a bad one is
/// still `401`).
pub struct MaybeAuth(pub Option<Principal>);

impl FromRequestParts<Arc<App>> for MaybeAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        if parts.headers.get(AUTHORIZATION).is_none() {
            return Ok(MaybeAuth(None));
        }
        Ok(MaybeAuth(Some(Auth::resolve(parts, app)?.principal)))
    }
}

/// A request made with the operator token; any other valid credential is `403`.
pub struct Operator;

impl FromRequestParts<Arc<App>> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        match Auth::resolve(parts, app)?.principal {
            Principal::Operator => Ok(Operator),
            _ => Err(ApiError::forbidden("only the operator may do this")),
        }
    }
}

/// The path parameters of the matched route (none when the route has none).
async fn params(parts: &mut Parts, app: &Arc<App>) -> HashMap<String, String> {
    match axum::extract::RawPathParams::from_request_parts(parts, app).await {
        Ok(p) => p
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        Err(_) => HashMap::new(),
    }
}

/// The verified access of a principal to the org of the `{org}` path parameter (id or slug).
/// Derefs to [`OrgAccess`]: `ctx.org()`, `ctx.role()`; the domain checks actions.
pub struct OrgContext(pub OrgAccess);

impl Deref for OrgContext {
    type Target = OrgAccess;
    fn deref(&self) -> &OrgAccess {
        &self.0
    }
}

impl FromRequestParts<Arc<App>> for OrgContext {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        let auth = Auth::resolve(parts, app)?;
        let params = params(parts, app).await;
        let org = params
            .get("org")
            .ok_or_else(|| ApiError::from(crate::Error::internal("route has no {org}")))?;
        let access = app.identity().org_access(&auth.principal, org, auth.hint)?;
        record_tenant(Some(access.org().id), None);
        // Governance hook: the request's rate limits (credential's and org's buckets).
        super::ratelimit::enforce(parts, app, &auth.principal, access.org_id(), None)?;
        Ok(OrgContext(access))
    }
}

/// The tenant context of a workspace route: principal, org, workspace, role or scopes, and the
/// tenant token's metadata filter. Derefs to [`WorkspaceAccess`]:
/// `ctx.workspace_id()`, `ctx.org_id()`, `ctx.scopes()`, `ctx.token_filter()`; the domain
/// checks actions and applies the token's filter.
///
/// The workspace comes from the `{ws}` path parameter, or, on routes without one, from the API
/// key or tenant token. Another tenant's workspace is `404`; a suspended org `403
/// tenant_suspended`.
#[derive(Debug, Clone)]
pub struct WorkspaceContext(pub WorkspaceAccess);

impl Deref for WorkspaceContext {
    type Target = WorkspaceAccess;
    fn deref(&self) -> &WorkspaceAccess {
        &self.0
    }
}

impl FromRequestParts<Arc<App>> for WorkspaceContext {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        let auth = Auth::resolve(parts, app)?;
        let params = params(parts, app).await;
        let ws = params
            .get("ws")
            .map(|w| parse_uuid(w, "workspace"))
            .transpose()?;
        if let Some(w) = ws {
            record_tenant(None, Some(w));
        }
        let access = app
            .identity()
            .workspace_access(&auth.principal, ws, auth.hint)?;
        super::middleware::record_verified_workspace(access.org_id(), access.workspace_id());
        // Governance hook: the request's rate limits (credential's and org's buckets).
        super::ratelimit::enforce(
            parts,
            app,
            &auth.principal,
            access.org_id(),
            Some(access.workspace_id()),
        )?;
        Ok(WorkspaceContext(access))
    }
}

/// The client's address (for login throttling), when the server knows it.
pub struct ClientAddr(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(ClientAddr(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip().to_string()),
        ))
    }
}
