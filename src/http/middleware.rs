//! Request context: a request id on every response and log line (taken from a well-formed
//! incoming `X-Request-Id`, else generated), one log span per request that handlers enrich with
//! org and workspace ids, and one access log line per request.
//!
//! What is logged never holds a secret: the path only (never the query string, the headers or
//! the body), with secret path segments replaced by [`REDACTED`] ([`loggable_path`]). Every
//! response carries `X-Content-Type-Options: nosniff`, and every API response (`/v1`)
//! `Cache-Control: no-store`: several carry credentials (sessions, API keys, invitations,
//! tenant tokens) and the rest are a tenant's data. A request whose body the server cut off for
//! arriving too slowly (`crate::server::BodyTimedOut`) is answered `408 request_timeout`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::{field::Empty, Instrument};

use super::error::{ApiError, ErrorCode};
use crate::app::App;

pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What a secret path segment is logged as.
pub const REDACTED: &str = "[redacted]";

/// Route parameters that carry a secret (`/v1/invitations/{token}/accept`).
const SECRET_PARAMS: &[&str] = &["{token}"];

/// On a path no route matched, a segment at least this long that is not a UUID is logged as
/// [`REDACTED`]: a mistyped route may carry a token, a key or a session.
const UNMATCHED_SEGMENT_MAX: usize = 16;

/// The path as it may be logged: segments in a secret parameter of the matched `route` are
/// replaced by [`REDACTED`]; without a matched route, every segment that could be a credential.
pub fn loggable_path(path: &str, route: Option<&str>) -> String {
    let secret_positions: Vec<usize> = route
        .map(|r| {
            r.split('/')
                .enumerate()
                .filter(|(_, s)| SECRET_PARAMS.contains(s))
                .map(|(i, _)| i)
                .collect()
        })
        .unwrap_or_default();
    path.split('/')
        .enumerate()
        .map(|(i, seg)| {
            let secret = match route {
                Some(_) => secret_positions.contains(&i),
                None => could_be_credential(seg),
            };
            if secret {
                REDACTED
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// A path segment that may be a token, a key or a session: long and not a UUID, or with one of
/// Enclave's credential prefixes.
fn could_be_credential(seg: &str) -> bool {
    (seg.len() >= UNMATCHED_SEGMENT_MAX && uuid::Uuid::try_parse(seg).is_err())
        || seg.to_ascii_lowercase().starts_with("enc_")
}

/// The id of the current request, in request extensions.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

fn acceptable(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// What the request turned out to be about: filled by the auth extractors and
/// [`record_tenant`], read after the response for the operator audit log.
#[derive(Debug, Default, Clone)]
pub struct RequestTenant {
    pub principal: Option<&'static str>,
    pub org_id: Option<uuid::Uuid>,
    pub workspace_id: Option<uuid::Uuid>,
    /// The principal's id for the audit trail (`governance::audit::actor_id`).
    pub actor_id: Option<String>,
    /// Whether the workspace was verified reachable by the principal (`WorkspaceContext`).
    pub verified_workspace: bool,
    /// What the request acted on, when a handler names it ([`record_target`]).
    pub target: Option<String>,
}

tokio::task_local! {
    static TENANT: Arc<Mutex<RequestTenant>>;
}

fn with_tenant(f: impl FnOnce(&mut RequestTenant)) {
    let _ = TENANT.try_with(|t| f(&mut t.lock().unwrap_or_else(|p| p.into_inner())));
}

/// Records who is asking on the request's log span (and for the audit log).
pub fn record_principal(kind: &'static str) {
    tracing::Span::current().record("principal", kind);
    with_tenant(|t| t.principal = Some(kind));
}

/// Records the id of the principal (for the audit trail).
pub fn record_actor_id(id: Option<String>) {
    with_tenant(|t| t.actor_id = id);
}

/// Records that the request's workspace was verified reachable by its principal: its audit
/// entry goes to the workspace's own trail, and its usage is counted for the workspace.
pub fn record_verified_workspace(org_id: uuid::Uuid, workspace_id: uuid::Uuid) {
    record_tenant(Some(org_id), Some(workspace_id));
    with_tenant(|t| {
        t.org_id = Some(org_id);
        t.workspace_id = Some(workspace_id);
        t.verified_workspace = true;
    });
}

/// Names what the request acted on (`document:<id>`), for its audit entry: handlers that
/// create something call it with the new id.
pub fn record_target(kind: &str, id: impl std::fmt::Display) {
    let target = format!("{kind}:{id}");
    with_tenant(|t| t.target = Some(target));
}

pub async fn request_context(
    State(app): State<Arc<App>>,
    mut req: Request,
    next: Next,
) -> Response {
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| acceptable(v))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().simple().to_string());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string());
    let path = loggable_path(req.uri().path(), route.as_deref());
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        path = %path,
        principal = Empty,
        org_id = Empty,
        workspace_id = Empty,
    );
    req.extensions_mut().insert(RequestId(id.clone()));
    let method = req.method().clone();
    let api = req.uri().path().starts_with("/v1/");
    let client = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    let body_timed_out = req
        .extensions()
        .get::<crate::server::BodyTimedOut>()
        .cloned();
    let slot = Arc::new(Mutex::new(RequestTenant::default()));
    let started = Instant::now();
    let mut resp = TENANT
        .scope(slot.clone(), next.run(req).instrument(span.clone()))
        .await;
    if let Some(reason) = body_timed_out.as_ref().and_then(|t| t.reason()) {
        // Whatever the handler made of the failed read (a 400, a rejection), the answer is
        // that the body came too slowly; and the connection, whose body is unread, closes.
        resp = ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            ErrorCode::RequestTimeout,
            reason,
        )
        .into_response();
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        app.http_metrics().connection_timed_out();
    }
    let tenant = slot.lock().unwrap_or_else(|p| p.into_inner()).clone();
    // The one place requests are audited, metered and timed (`governance::service`).
    let facts = crate::governance::service::Facts {
        method: method.to_string(),
        route: route.clone(),
        path,
        status: resp.status().as_u16(),
        took: started.elapsed(),
        request_id: id.clone(),
        client,
        actor: tenant.principal,
        actor_id: tenant.actor_id,
        org_id: tenant.org_id,
        workspace_id: tenant.workspace_id,
        verified_workspace: tenant.verified_workspace,
        target: tenant.target,
    };
    if let Some(pending) = app.governance().after_request(&facts) {
        // Written before the answer leaves: a client that saw its answer finds the entry.
        let gov = app.governance().clone();
        let _ = tokio::task::spawn_blocking(move || gov.write_audit(pending)).await;
    }
    let headers = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&id) {
        headers.insert(REQUEST_ID.clone(), v);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if api {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    let status = resp.status().as_u16();
    let micros = started.elapsed().as_micros() as u64;
    span.in_scope(|| tracing::info!(status, latency_us = micros, "request finished"));
    app.http_metrics().count_response(status);
    resp
}

/// Records the org and workspace a request is about on its log span.
pub fn record_tenant(org_id: Option<uuid::Uuid>, workspace_id: Option<uuid::Uuid>) {
    let span = tracing::Span::current();
    if let Some(o) = org_id {
        span.record("org_id", tracing::field::display(o));
    }
    if let Some(w) = workspace_id {
        span.record("workspace_id", tracing::field::display(w));
    }
    with_tenant(|t| {
        t.org_id = org_id.or(t.org_id);
        t.workspace_id = workspace_id.or(t.workspace_id);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_route_parameters_are_redacted() {
        let token = format!("enc_inv_{}", "ab".repeat(32));
        assert_eq!(
            loggable_path(
                &format!("/v1/invitations/{token}/accept"),
                Some("/v1/invitations/{token}/accept")
            ),
            "/v1/invitations/[redacted]/accept"
        );
        // Ids and slugs of other routes are kept: they are what an operator searches logs for.
        let ws = "0190b5a4-7c1e-7b4e-8f00-000000000001";
        assert_eq!(
            loggable_path(
                &format!("/v1/workspaces/{ws}/documents/a-long-document-slug-x"),
                Some("/v1/workspaces/{ws}/documents/{id}")
            ),
            format!("/v1/workspaces/{ws}/documents/a-long-document-slug-x")
        );
    }

    #[test]
    fn unmatched_paths_lose_every_segment_that_could_be_a_credential() {
        let ws = "0190b5a4-7c1e-7b4e-8f00-000000000001";
        let cases = [
            (
                format!("/v1/invitations/enc_inv_{}", "cd".repeat(32)),
                "/v1/invitations/[redacted]".to_string(),
            ),
            (
                "/v1/x/enc_sess_1".to_string(),
                "/v1/x/[redacted]".to_string(),
            ),
            (
                "/v1/eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig/x".to_string(),
                "/v1/[redacted]/x".to_string(),
            ),
            (
                format!("/v1/workspaces/{ws}/nope"),
                format!("/v1/workspaces/{ws}/nope"),
            ),
        ];
        for (path, logged) in cases {
            assert_eq!(loggable_path(&path, None), logged, "{path}");
        }
    }
}
