//! Operator-only routes: the operator audit log and the rotation of the tenant-token secret.

use std::sync::Arc;

use axum::extract::State;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::json;

use super::auth::Operator;
use super::error::ApiResult;
use super::extract::Query;
use super::params::blocking;
use crate::app::App;
use crate::control::Page;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    pub org: Option<String>,
    pub limit: Option<u32>,
    pub offset: Option<u32>,
}

pub async fn audit(
    State(app): State<Arc<App>>,
    _: Operator,
    Query(q): Query<AuditQuery>,
) -> ApiResult<impl IntoResponse> {
    let list = blocking(move || {
        app.identity()
            .list_audit(q.org.as_deref(), Page::new(q.limit, q.offset)?)
    })
    .await?;
    Ok(axum::Json(json!({ "data": list })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateQuery {
    /// Stop accepting tokens signed with the previous secret at once.
    pub retire_previous: Option<bool>,
}

pub async fn rotate_token_secret(
    State(app): State<Arc<App>>,
    _: Operator,
    Query(q): Query<RotateQuery>,
) -> ApiResult<impl IntoResponse> {
    let res = blocking(move || {
        app.identity()
            .rotate_token_secret(q.retire_previous.unwrap_or(false))
    })
    .await?;
    Ok(axum::Json(res))
}
