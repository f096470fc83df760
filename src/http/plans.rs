//! Plans, limits and the lifecycle (issue 12 part A): the operator's plans
//! (`/v1/admin/plans`), an org's limits (operator: `/v1/admin/orgs/{org}/limits`; members:
//! `GET /v1/orgs/{org}/limits`), deleted orgs and workspaces (`/v1/admin/deleted`,
//! `POST .../restore`), and the `?purge=true` of deletions.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::{json, Value};

use super::auth::{Operator, OrgContext};
use super::error::ApiResult;
use super::extract::Json;
use super::params::blocking;
use crate::app::App;
use crate::control::limits::{NewPlan, PlanPatch};
use crate::ids::parse_uuid;

fn param(p: &HashMap<String, String>, name: &str) -> String {
    p.get(name).cloned().unwrap_or_default()
}

pub async fn list_plans(State(app): State<Arc<App>>, _: Operator) -> ApiResult<impl IntoResponse> {
    let plans = blocking(move || app.governance().list_plans()).await?;
    Ok(axum::Json(json!({ "data": plans })))
}

pub async fn get_plan(
    State(app): State<Arc<App>>,
    _: Operator,
    Path(p): Path<HashMap<String, String>>,
) -> ApiResult<impl IntoResponse> {
    let plan = blocking(move || app.governance().get_plan(&param(&p, "plan"))).await?;
    Ok(axum::Json(plan))
}

pub async fn create_plan(
    State(app): State<Arc<App>>,
    _: Operator,
    Json(new): Json<NewPlan>,
) -> ApiResult<impl IntoResponse> {
    let plan = blocking(move || app.governance().create_plan(new)).await?;
    Ok((StatusCode::CREATED, axum::Json(plan)))
}

pub async fn update_plan(
    State(app): State<Arc<App>>,
    _: Operator,
    Path(p): Path<HashMap<String, String>>,
    Json(patch): Json<PlanPatch>,
) -> ApiResult<impl IntoResponse> {
    let plan = blocking(move || app.governance().update_plan(&param(&p, "plan"), patch)).await?;
    Ok(axum::Json(plan))
}

pub async fn delete_plan(
    State(app): State<Arc<App>>,
    _: Operator,
    Path(p): Path<HashMap<String, String>>,
) -> ApiResult<impl IntoResponse> {
    blocking(move || app.governance().delete_plan(&param(&p, "plan"))).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/orgs/{org}/limits`: what the org is held to (viewers and up).
pub async fn org_limits(
    State(app): State<Arc<App>>,
    ctx: OrgContext,
) -> ApiResult<impl IntoResponse> {
    Ok(axum::Json(
        blocking(move || app.governance().org_limits(&ctx)).await?,
    ))
}

/// `GET /v1/admin/orgs/{org}/limits`.
pub async fn admin_org_limits(
    State(app): State<Arc<App>>,
    _: Operator,
    Path(p): Path<HashMap<String, String>>,
) -> ApiResult<impl IntoResponse> {
    let v = blocking(move || app.governance().operator_org_limits(&param(&p, "org"))).await?;
    Ok(axum::Json(v))
}

/// `PUT /v1/admin/orgs/{org}/limits`: replaces the org's overrides (`{}` removes them; a key
/// set to `null` is unlimited).
pub async fn put_org_limits(
    State(app): State<Arc<App>>,
    _: Operator,
    Path(p): Path<HashMap<String, String>>,
    Json(overrides): Json<Value>,
) -> ApiResult<impl IntoResponse> {
    let v = blocking(move || {
        app.governance()
            .set_org_overrides(&param(&p, "org"), &overrides)
    })
    .await?;
    Ok(axum::Json(v))
}

/// `PATCH /v1/admin/orgs/{org}/limits`: merges into the overrides (RFC 7396: `null` removes
/// an override, so the plan's value applies again).
pub async fn patch_org_limits(
    State(app): State<Arc<App>>,
    _: Operator,
    Path(p): Path<HashMap<String, String>>,
    Json(patch): Json<Value>,
) -> ApiResult<impl IntoResponse> {
    let v = blocking(move || {
        app.governance()
            .merge_org_overrides(&param(&p, "org"), &patch)
    })
    .await?;
    Ok(axum::Json(v))
}

/// `GET /v1/admin/deleted`: deleted orgs and workspaces that can still be restored.
pub async fn list_deleted(
    State(app): State<Arc<App>>,
    _: Operator,
) -> ApiResult<impl IntoResponse> {
    let list = blocking(move || app.tenancy().list_deleted()).await?;
    Ok(axum::Json(json!({ "data": list })))
}

/// `POST /v1/orgs/{org}/restore` (operator; `{org}` is the id: a deleted org's slug may be
/// someone else's now).
pub async fn restore_org(
    State(app): State<Arc<App>>,
    _: Operator,
    Path(p): Path<HashMap<String, String>>,
) -> ApiResult<impl IntoResponse> {
    let org = parse_uuid(&param(&p, "org"), "organization")?;
    let (org, workspaces) = blocking(move || app.tenancy().restore_org(org)).await?;
    Ok(axum::Json(
        json!({ "org": org, "restored_workspaces": workspaces }),
    ))
}

/// `POST /v1/workspaces/{ws}/restore` (operator).
pub async fn restore_workspace(
    State(app): State<Arc<App>>,
    _: Operator,
    Path(p): Path<HashMap<String, String>>,
) -> ApiResult<impl IntoResponse> {
    let ws = parse_uuid(&param(&p, "ws"), "workspace")?;
    let rec = blocking(move || app.tenancy().restore_workspace(ws)).await?;
    Ok(axum::Json(rec))
}

/// `?purge=true` of `DELETE /v1/orgs/{org}` and `DELETE /v1/workspaces/{ws}` (the operator's:
/// tenancy checks it).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurgeQuery {
    pub purge: Option<bool>,
}
