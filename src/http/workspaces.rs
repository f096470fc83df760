//! `/v1/workspaces/{ws}`: get (with live statistics from the store), patch, delete.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;

use super::auth::WorkspaceContext;
use super::error::ApiResult;
use super::extract::Json;
use super::params::blocking;
use crate::app::App;
use crate::control::WorkspacePatch;

pub async fn get(
    State(app): State<Arc<App>>,
    ctx: WorkspaceContext,
) -> ApiResult<impl IntoResponse> {
    let view = blocking(move || app.tenancy().get_workspace(&ctx)).await?;
    Ok(axum::Json(view))
}

pub async fn patch(
    State(app): State<Arc<App>>,
    ctx: WorkspaceContext,
    Json(patch): Json<WorkspacePatch>,
) -> ApiResult<impl IntoResponse> {
    let rec = blocking(move || app.tenancy().update_workspace(&ctx, patch)).await?;
    Ok(axum::Json(rec))
}

pub async fn delete(
    State(app): State<Arc<App>>,
    ctx: WorkspaceContext,
    super::extract::Query(q): super::extract::Query<super::plans::PurgeQuery>,
) -> ApiResult<impl IntoResponse> {
    blocking(move || {
        app.tenancy()
            .delete_workspace(&ctx, q.purge.unwrap_or(false))
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
