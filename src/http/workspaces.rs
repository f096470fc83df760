//! `/v1/workspaces/{ws}`: get (with live statistics from the store), patch, delete.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;

use super::auth::Operator;
use super::error::ApiResult;
use super::extract::{blocking, Json, Path};
use super::middleware::record_tenant;
use crate::app::App;
use crate::control::WorkspacePatch;
use crate::ids::parse_uuid;

pub async fn get(
    State(app): State<Arc<App>>,
    _: Operator,
    Path(ws): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let id = parse_uuid(&ws, "workspace")?;
    record_tenant(None, Some(id));
    let view = blocking(move || app.get_workspace(id)).await?;
    record_tenant(Some(view.record.org_id), None);
    Ok(axum::Json(view))
}

pub async fn patch(
    State(app): State<Arc<App>>,
    _: Operator,
    Path(ws): Path<String>,
    Json(patch): Json<WorkspacePatch>,
) -> ApiResult<impl IntoResponse> {
    let id = parse_uuid(&ws, "workspace")?;
    record_tenant(None, Some(id));
    let rec = blocking(move || app.update_workspace(id, patch)).await?;
    record_tenant(Some(rec.org_id), None);
    Ok(axum::Json(rec))
}

pub async fn delete(
    State(app): State<Arc<App>>,
    _: Operator,
    Path(ws): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let id = parse_uuid(&ws, "workspace")?;
    record_tenant(None, Some(id));
    blocking(move || app.delete_workspace(id)).await?;
    Ok(StatusCode::NO_CONTENT)
}
