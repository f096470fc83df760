//! `/v1/workspaces/{ws}/mcp` (or `/v1/mcp` with an API key): the Streamable HTTP transport of
//! the Model Context Protocol. POST carries JSON-RPC and is answered with `application/json`
//! (or `202` for notifications); DELETE ends a session; GET (a server-to-client stream) is not
//! offered: `405`. The domain side is `chat::mcp`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::auth::WorkspaceContext;
use super::error::{ApiError, ApiResult, ErrorCode};
use super::params::blocking;
use crate::app::App;

const SESSION: &str = "mcp-session-id";
const PROTOCOL: &str = "mcp-protocol-version";

fn header_text(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
}

pub async fn post(
    State(app): State<Arc<App>>,
    ctx: WorkspaceContext,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let session = header_text(&headers, SESSION);
    let protocol = header_text(&headers, PROTOCOL);
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let reply = blocking(move || {
        Ok(app
            .chat()
            .mcp_post(&ctx, session.as_deref(), protocol.as_deref(), parsed))
    })
    .await?;
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK);
    let mut resp = match reply.body {
        Some(b) => (status, axum::Json(b)).into_response(),
        None => status.into_response(),
    };
    if let Some(sid) = reply.session_id {
        if let Ok(v) = HeaderValue::from_str(&sid) {
            resp.headers_mut().insert(SESSION, v);
        }
    }
    Ok(resp)
}

pub async fn delete(
    State(app): State<Arc<App>>,
    ctx: WorkspaceContext,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    let session = header_text(&headers, SESSION).ok_or_else(|| {
        ApiError::invalid(StatusCode::BAD_REQUEST, "missing Mcp-Session-Id header")
    })?;
    let ended = blocking(move || Ok(app.chat().mcp_delete(&ctx, &session))).await?;
    if ended {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("MCP session not found"))
    }
}

/// No server-initiated stream: `405` with `Allow`, as the transport permits.
pub async fn get(_: WorkspaceContext) -> Response {
    let mut resp = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::InvalidRequest,
        "this MCP endpoint offers no GET stream; POST JSON-RPC messages",
    )
    .into_response();
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST, DELETE"));
    resp
}
