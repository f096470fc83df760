//! Request context: a request id on every response and log line (taken from a well-formed
//! incoming `X-Request-Id`, else generated), one log span per request that handlers enrich with
//! org and workspace ids, and one access log line per request.

use std::time::Instant;

use std::sync::Arc;

use axum::extract::{Request, State};
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
    let started = Instant::now();
    let mut resp = next.run(req).instrument(span.clone()).await;
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
}
