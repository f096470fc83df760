//! `/v1/auth/login`, `/v1/auth/logout` and `/v1/me`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;

use super::auth::{Auth, ClientAddr};
use super::error::ApiResult;
use super::extract::Json;
use super::params::blocking;
use crate::app::App;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    pub email: String,
    pub password: String,
}

pub async fn login(
    State(app): State<Arc<App>>,
    ClientAddr(client): ClientAddr,
    Json(body): Json<LoginBody>,
) -> ApiResult<impl IntoResponse> {
    let res = blocking(move || {
        app.identity()
            .login(&body.email, &body.password, client.as_deref())
    })
    .await?;
    Ok(axum::Json(res))
}

pub async fn logout(State(app): State<Arc<App>>, auth: Auth) -> ApiResult<impl IntoResponse> {
    blocking(move || app.identity().logout(&auth.principal)).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn me(State(app): State<Arc<App>>, auth: Auth) -> ApiResult<impl IntoResponse> {
    let me = blocking(move || app.identity().me(&auth.principal)).await?;
    Ok(axum::Json(me))
}
