//! `/v1/workspaces/{ws}`: get (with live statistics from the store), patch, delete.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;

use super::auth::{Action, WorkspaceContext};
use super::error::ApiResult;
use super::extract::Json;
use super::params::blocking;
use crate::app::App;
use crate::control::WorkspacePatch;

pub async fn get(
    State(app): State<Arc<App>>,
    ctx: WorkspaceContext,
) -> ApiResult<impl IntoResponse> {
    ctx.require(Action::WorkspaceRead)?;
    let id = ctx.workspace_id;
    let view = blocking(move || app.get_workspace(id)).await?;
    Ok(axum::Json(view))
}

pub async fn patch(
    State(app): State<Arc<App>>,
    ctx: WorkspaceContext,
    Json(patch): Json<WorkspacePatch>,
) -> ApiResult<impl IntoResponse> {
    ctx.require(Action::WorkspaceUpdate)?;
    let id = ctx.workspace_id;
    let rec = blocking(move || app.update_workspace(id, patch)).await?;
    Ok(axum::Json(rec))
}

pub async fn delete(
    State(app): State<Arc<App>>,
    ctx: WorkspaceContext,
    super::extract::Query(q): super::extract::Query<super::governance::PurgeQuery>,
) -> ApiResult<impl IntoResponse> {
    ctx.require(Action::WorkspaceDelete)?;
    let purge = q.purge(&ctx.principal)?;
    let id = ctx.workspace_id;
    blocking(move || app.delete_workspace(id, purge)).await?;
    Ok(StatusCode::NO_CONTENT)
}
