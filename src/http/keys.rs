//! `/v1/workspaces/{ws}/api-keys` and tenant tokens (`/v1/workspaces/{ws}/tenant-tokens`, or
//! `/v1/tenant-tokens` with the workspace of the API key).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;

use super::auth::WorkspaceContext;
use super::error::ApiResult;
use super::extract::{Json, Path};
use super::params::blocking;
use crate::app::App;
use crate::identity::{NewApiKey, NewTenantToken};
use crate::ids::parse_uuid;

pub async fn create(
    State(app): State<Arc<App>>,
    ctx: WorkspaceContext,
    Json(new): Json<NewApiKey>,
) -> ApiResult<impl IntoResponse> {
    let (key, secret) = blocking(move || app.identity().create_api_key(&ctx, new)).await?;
    super::middleware::record_target("api_key", key.id);
    let mut v = serde_json::to_value(&key).unwrap_or_default();
    v["key"] = json!(secret);
    Ok((StatusCode::CREATED, axum::Json(v)))
}

pub async fn list(
    State(app): State<Arc<App>>,
    ctx: WorkspaceContext,
) -> ApiResult<impl IntoResponse> {
    let keys = blocking(move || app.identity().list_api_keys(&ctx)).await?;
    Ok(axum::Json(json!({ "data": keys })))
}

pub async fn revoke(
    State(app): State<Arc<App>>,
    ctx: WorkspaceContext,
    Path((_, id)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let id = parse_uuid(&id, "API key")?;
    blocking(move || app.identity().revoke_api_key(&ctx, id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn mint_token(
    State(app): State<Arc<App>>,
    ctx: WorkspaceContext,
    Json(req): Json<NewTenantToken>,
) -> ApiResult<impl IntoResponse> {
    let minted = blocking(move || app.identity().mint_tenant_token(&ctx, req)).await?;
    Ok((StatusCode::CREATED, axum::Json(minted)))
}
