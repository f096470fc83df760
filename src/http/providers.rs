//! `/v1/orgs/{org}/providers`: an org's model providers (bring your own key), for org admins.
//! Listing never returns a key; only whether one is set.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;

use super::auth::OrgContext;
use super::error::ApiResult;
use super::extract::{Json, Path};
use super::params::blocking;
use crate::app::App;
use crate::chat::providers::ProviderInput;

pub async fn list(State(app): State<Arc<App>>, ctx: OrgContext) -> ApiResult<impl IntoResponse> {
    let list = blocking(move || app.chat().list_providers(&ctx)).await?;
    Ok(axum::Json(json!({ "data": list })))
}

pub async fn put(
    State(app): State<Arc<App>>,
    ctx: OrgContext,
    Path((_, name)): Path<(String, String)>,
    Json(input): Json<ProviderInput>,
) -> ApiResult<impl IntoResponse> {
    let view = blocking(move || app.chat().set_provider(&ctx, &name, input)).await?;
    Ok(axum::Json(view))
}

pub async fn delete(
    State(app): State<Arc<App>>,
    ctx: OrgContext,
    Path((_, name)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    blocking(move || app.chat().delete_provider(&ctx, &name)).await?;
    Ok(StatusCode::NO_CONTENT)
}
