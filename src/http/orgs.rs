//! `/v1/orgs` and `/v1/orgs/{org}/workspaces`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;

use super::auth::{Action, Auth, Operator, OrgContext};
use super::error::ApiResult;
use super::extract::{Json, Query};
use super::middleware::record_tenant;
use super::params::{blocking, PageQuery};
use crate::app::App;
use crate::control::{NewOrg, NewWorkspace, OrgPatch, OrgStatus};

// Handlers check the action against the permission table (`ctx.require`) before calling `App`:
// the extractor has already proven that the principal may reach the org at all (else `404`).

pub async fn create(
    State(app): State<Arc<App>>,
    _: Operator,
    Json(new): Json<NewOrg>,
) -> ApiResult<impl IntoResponse> {
    let owner = new.owner_email.clone();
    let (org, invitation) = blocking(move || {
        // Governance hook: `owner_email` checked before the org exists, invited after.
        if let Some(email) = &owner {
            crate::identity::normalize_email(email)?;
        }
        let org = app.create_org(new)?;
        let invitation = owner
            .map(|email| super::governance::invite_owner(&app, org.id, &email))
            .transpose()?;
        Ok((org, invitation))
    })
    .await?;
    record_tenant(Some(org.id), None);
    let mut body = serde_json::to_value(&org).unwrap_or_default();
    if let Some(inv) = invitation {
        body["owner_invitation"] = inv;
    }
    Ok((StatusCode::CREATED, axum::Json(body)))
}

pub async fn list(
    State(app): State<Arc<App>>,
    auth: Auth,
    Query(q): Query<PageQuery>,
) -> ApiResult<impl IntoResponse> {
    let orgs = blocking(move || app.orgs_for(&auth.principal, q.page()?)).await?;
    Ok(axum::Json(json!({ "data": orgs })))
}

pub async fn get(ctx: OrgContext) -> ApiResult<impl IntoResponse> {
    ctx.require(Action::OrgRead)?;
    Ok(axum::Json(ctx.0.org))
}

pub async fn patch(
    State(app): State<Arc<App>>,
    ctx: OrgContext,
    Json(patch): Json<OrgPatch>,
) -> ApiResult<impl IntoResponse> {
    // Plan, status and limits are billing fields: the operator's, not the org's own admins'.
    if patch.names_billing_fields() {
        ctx.require(Action::OrgBillingUpdate)?;
    }
    ctx.require(Action::OrgUpdate)?;
    let org = ctx.org.id.to_string();
    let org = blocking(move || app.update_org(&org, patch)).await?;
    record_tenant(Some(org.id), None);
    Ok(axum::Json(org))
}

pub async fn delete(
    State(app): State<Arc<App>>,
    ctx: OrgContext,
    Query(q): Query<super::governance::PurgeQuery>,
) -> ApiResult<impl IntoResponse> {
    ctx.require(Action::OrgDelete)?;
    let purge = q.purge(&ctx.principal)?;
    let org = ctx.org.id.to_string();
    blocking(move || app.delete_org(&org, purge)).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn suspend(State(app): State<Arc<App>>, ctx: OrgContext) -> ApiResult<impl IntoResponse> {
    ctx.require(Action::OrgSuspend)?;
    let org = ctx.org.id.to_string();
    let org = blocking(move || app.set_org_status(&org, OrgStatus::Suspended)).await?;
    record_tenant(Some(org.id), None);
    Ok(axum::Json(org))
}

pub async fn reactivate(
    State(app): State<Arc<App>>,
    ctx: OrgContext,
) -> ApiResult<impl IntoResponse> {
    ctx.require(Action::OrgSuspend)?;
    let org = ctx.org.id.to_string();
    let org = blocking(move || app.set_org_status(&org, OrgStatus::Active)).await?;
    record_tenant(Some(org.id), None);
    Ok(axum::Json(org))
}

pub async fn create_workspace(
    State(app): State<Arc<App>>,
    ctx: OrgContext,
    Json(new): Json<NewWorkspace>,
) -> ApiResult<impl IntoResponse> {
    ctx.require(Action::WorkspaceCreate)?;
    let org = ctx.org.id.to_string();
    let ws = blocking(move || app.create_workspace(&org, new)).await?;
    record_tenant(Some(ws.org_id), Some(ws.id));
    Ok((StatusCode::CREATED, axum::Json(ws)))
}

pub async fn list_workspaces(
    State(app): State<Arc<App>>,
    ctx: OrgContext,
    Query(q): Query<PageQuery>,
) -> ApiResult<impl IntoResponse> {
    ctx.require(Action::WorkspaceList)?;
    let org = ctx.org.id.to_string();
    let list = blocking(move || app.list_workspaces(&org, q.page()?)).await?;
    Ok(axum::Json(json!({ "data": list })))
}
