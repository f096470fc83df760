//! `/v1/orgs` and `/v1/orgs/{org}/workspaces`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;

use super::auth::{Auth, Operator, OrgContext};
use super::error::ApiResult;
use super::extract::{Json, Query};
use super::middleware::record_tenant;
use super::params::{blocking, PageQuery};
use crate::app::App;
use crate::control::{NewOrg, NewWorkspace, OrgPatch, OrgStatus};

// The extractor has proven that the principal may reach the org at all (else `404`); the
// domain (`Tenancy`) checks the action against the permission table (else `403`).

pub async fn create(
    State(app): State<Arc<App>>,
    _: Operator,
    Json(new): Json<NewOrg>,
) -> ApiResult<impl IntoResponse> {
    let (org, invitation) = blocking(move || app.tenancy().create_org_with_owner(new)).await?;
    record_tenant(Some(org.id), None);
    super::middleware::record_target("org", org.id);
    let mut body = serde_json::to_value(&org).unwrap_or_default();
    if let Some((inv, token)) = invitation {
        let mut v = serde_json::to_value(&inv).unwrap_or_default();
        v["token"] = serde_json::json!(token);
        body["owner_invitation"] = v;
    }
    Ok((StatusCode::CREATED, axum::Json(body)))
}

pub async fn list(
    State(app): State<Arc<App>>,
    auth: Auth,
    Query(q): Query<PageQuery>,
) -> ApiResult<impl IntoResponse> {
    let orgs = blocking(move || app.identity().orgs_for(&auth.principal, q.page()?)).await?;
    Ok(axum::Json(json!({ "data": orgs })))
}

pub async fn get(State(app): State<Arc<App>>, ctx: OrgContext) -> ApiResult<impl IntoResponse> {
    Ok(axum::Json(app.tenancy().get_org(&ctx)?))
}

pub async fn patch(
    State(app): State<Arc<App>>,
    ctx: OrgContext,
    Json(patch): Json<OrgPatch>,
) -> ApiResult<impl IntoResponse> {
    let org = blocking(move || app.tenancy().update_org(&ctx, patch)).await?;
    record_tenant(Some(org.id), None);
    Ok(axum::Json(org))
}

pub async fn delete(
    State(app): State<Arc<App>>,
    ctx: OrgContext,
    Query(q): Query<super::plans::PurgeQuery>,
) -> ApiResult<impl IntoResponse> {
    blocking(move || app.tenancy().delete_org(&ctx, q.purge.unwrap_or(false))).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn suspend(State(app): State<Arc<App>>, ctx: OrgContext) -> ApiResult<impl IntoResponse> {
    let org = blocking(move || app.tenancy().set_org_status(&ctx, OrgStatus::Suspended)).await?;
    record_tenant(Some(org.id), None);
    Ok(axum::Json(org))
}

pub async fn reactivate(
    State(app): State<Arc<App>>,
    ctx: OrgContext,
) -> ApiResult<impl IntoResponse> {
    let org = blocking(move || app.tenancy().set_org_status(&ctx, OrgStatus::Active)).await?;
    record_tenant(Some(org.id), None);
    Ok(axum::Json(org))
}

pub async fn create_workspace(
    State(app): State<Arc<App>>,
    ctx: OrgContext,
    Json(new): Json<NewWorkspace>,
) -> ApiResult<impl IntoResponse> {
    let ws = blocking(move || app.tenancy().create_workspace(&ctx, new)).await?;
    record_tenant(Some(ws.org_id), Some(ws.id));
    super::middleware::record_target("workspace", ws.id);
    Ok((StatusCode::CREATED, axum::Json(ws)))
}

pub async fn list_workspaces(
    State(app): State<Arc<App>>,
    ctx: OrgContext,
    Query(q): Query<PageQuery>,
) -> ApiResult<impl IntoResponse> {
    let list = blocking(move || app.tenancy().list_workspaces(&ctx, q.page()?)).await?;
    Ok(axum::Json(json!({ "data": list })))
}
