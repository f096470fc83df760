//! `/v1/orgs/{org}/members`, `/v1/orgs/{org}/invitations` and `/v1/invitations/{token}/accept`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::json;

use super::auth::{MaybeAuth, OrgContext};
use super::error::ApiResult;
use super::extract::{Json, Path};
use super::middleware::record_tenant;
use super::params::blocking;
use crate::app::App;
use crate::identity::Role;
use crate::ids::parse_uuid;

pub async fn list(State(app): State<Arc<App>>, ctx: OrgContext) -> ApiResult<impl IntoResponse> {
    let members = blocking(move || app.identity().list_members(&ctx)).await?;
    Ok(axum::Json(json!({ "data": members })))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleBody {
    pub role: Role,
}

pub async fn change_role(
    State(app): State<Arc<App>>,
    ctx: OrgContext,
    Path((_, user)): Path<(String, String)>,
    Json(body): Json<RoleBody>,
) -> ApiResult<impl IntoResponse> {
    let user = parse_uuid(&user, "user")?;
    let member = blocking(move || app.identity().change_member_role(&ctx, user, body.role)).await?;
    Ok(axum::Json(member))
}

pub async fn remove(
    State(app): State<Arc<App>>,
    ctx: OrgContext,
    Path((_, user)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let user = parse_uuid(&user, "user")?;
    blocking(move || app.identity().remove_member(&ctx, user)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InviteBody {
    pub email: String,
    pub role: Role,
}

pub async fn invite(
    State(app): State<Arc<App>>,
    ctx: OrgContext,
    Json(body): Json<InviteBody>,
) -> ApiResult<impl IntoResponse> {
    let (inv, token) =
        blocking(move || app.identity().invite(&ctx, &body.email, body.role)).await?;
    super::middleware::record_target("invitation", inv.id);
    let mut v = serde_json::to_value(&inv).unwrap_or_default();
    v["token"] = json!(token);
    Ok((StatusCode::CREATED, axum::Json(v)))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcceptBody {
    pub password: Option<String>,
    pub name: Option<String>,
}

pub async fn accept(
    State(app): State<Arc<App>>,
    MaybeAuth(principal): MaybeAuth,
    Path(token): Path<String>,
    Json(body): Json<AcceptBody>,
) -> ApiResult<impl IntoResponse> {
    let (accepted, session) = blocking(move || {
        app.identity().accept_invitation(
            &token,
            principal.as_ref(),
            body.password.as_deref(),
            body.name.as_deref(),
        )
    })
    .await?;
    record_tenant(Some(accepted.org_id), None);
    let status = if accepted.created_user {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        axum::Json(json!({
            "user": accepted.user,
            "org_id": accepted.org_id,
            "role": accepted.role,
            "token": session.as_ref().map(|s| &s.token),
            "expires_at": session.as_ref().map(|s| &s.expires_at),
        })),
    ))
}
