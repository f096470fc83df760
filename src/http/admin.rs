//! Operator-only routes: the rotation of the tenant-token secret (the audit trail is in
//! `governance`).

use std::sync::Arc;

use axum::extract::State;
use axum::response::IntoResponse;
use serde::Deserialize;

use super::auth::Operator;
use super::error::ApiResult;
use super::extract::Query;
use super::params::blocking;
use crate::app::App;

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
