//! Request context: a request id on every response and log line (taken from a well-formed
//! incoming `X-Request-Id`, else generated), one log span per request that handlers enrich with
//! org and workspace ids, and one access log line per request.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::{field::Empty, Instrument};

use crate::app::App;

pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

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
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        path = %req.uri().path(),
        principal = Empty,
        org_id = Empty,
        workspace_id = Empty,
    );
    req.extensions_mut().insert(RequestId(id.clone()));
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string());
    let client = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    let slot = Arc::new(Mutex::new(RequestTenant::default()));
    let started = Instant::now();
    let mut resp = TENANT
        .scope(slot.clone(), next.run(req).instrument(span.clone()))
        .await;
    let tenant = slot.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if tenant.principal == Some("operator") {
        // Every operator request is recorded: who, what, which org and workspace, when.
        let entry = crate::control::AuditEntry {
            actor: "operator".into(),
            action: format!("{method} {}", route.as_deref().unwrap_or(&path)),
            path,
            status: Some(resp.status().as_u16()),
            org_id: tenant.org_id,
            workspace_id: tenant.workspace_id,
            request_id: Some(id.clone()),
            client,
            ..Default::default()
        };
        let audit_app = app.clone();
        let _ = tokio::task::spawn_blocking(move || audit_app.record_audit(&entry)).await;
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_ID.clone(), v);
    }
    let status = resp.status().as_u16();
    let micros = started.elapsed().as_micros() as u64;
    span.in_scope(|| tracing::info!(status, latency_us = micros, "request finished"));
    app.http_metrics.count_response(status);
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
