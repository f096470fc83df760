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
use crate::identity::Principal;

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
    let res = crate::task::blocking(move || {
        app.identity()
            .login(&body.email, &body.password, client.as_deref())
    })
    .await;
    // A sign-in is audited as the user it signed in; a wrong password as `anonymous` (`denied`,
    // naming no user). An attempt refused by the login throttle is not recorded: it costs the
    // client nothing, so recording it would let anyone fill the trail; wrong passwords are
    // bounded by the throttle (per email and per client address).
    match &res {
        Ok(r) => {
            super::middleware::record_principal("user");
            super::middleware::record_actor_id(Some(r.user.id.to_string()));
        }
        Err(crate::Error::RateLimited(_)) => {}
        Err(_) => super::middleware::record_principal("anonymous"),
    }
    Ok(axum::Json(res?))
}

pub async fn logout(State(app): State<Arc<App>>, auth: Auth) -> ApiResult<impl IntoResponse> {
    blocking(move || app.identity().logout(&auth.principal)).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn me(State(app): State<Arc<App>>, auth: Auth) -> ApiResult<impl IntoResponse> {
    // Only a user's answer reads the control plane; a key's, a token's or the operator's is the
    // credential itself, answered without the blocking pool's hop (the authenticated no-op).
    let me = if matches!(auth.principal, Principal::User { .. }) {
        blocking(move || app.identity().me(&auth.principal)).await?
    } else {
        app.identity().me(&auth.principal)?
    };
    Ok(axum::Json(me))
}
