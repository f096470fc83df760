//! Governance routes: the operator's plans (`/v1/admin/plans`), an org's limits (operator:
//! `/v1/admin/orgs/{org}/limits`; members: `GET /v1/orgs/{org}/limits`), deleted orgs and
//! workspaces (`/v1/admin/deleted`, `POST .../restore`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::{json, Value};

use super::auth::{Action, Operator, OrgContext};
use super::error::ApiResult;
use super::extract::Json;
use super::params::blocking;
use crate::app::App;
use crate::governance::plans::{NewPlan, PlanPatch};
use crate::governance::quota::Counted;
use crate::governance::usage::Monthly;
use crate::ids::parse_uuid;

fn plan_id(p: &HashMap<String, String>) -> String {
    p.get("plan").cloned().unwrap_or_default()
}

pub async fn list_plans(State(app): State<Arc<App>>, _: Operator) -> ApiResult<impl IntoResponse> {
    let plans = blocking(move || app.control.list_plans()).await?;
    Ok(axum::Json(json!({ "data": plans })))
}

pub async fn get_plan(
    State(app): State<Arc<App>>,
    _: Operator,
    Path(p): Path<HashMap<String, String>>,
) -> ApiResult<impl IntoResponse> {
    let plan = blocking(move || app.control.get_plan(&plan_id(&p))).await?;
    Ok(axum::Json(plan))
}

pub async fn create_plan(
    State(app): State<Arc<App>>,
    _: Operator,
    Json(new): Json<NewPlan>,
) -> ApiResult<impl IntoResponse> {
    let plan = blocking(move || app.control.create_plan(new)).await?;
    Ok((StatusCode::CREATED, axum::Json(plan)))
}

pub async fn update_plan(
    State(app): State<Arc<App>>,
    _: Operator,
    Path(p): Path<HashMap<String, String>>,
    Json(patch): Json<PlanPatch>,
) -> ApiResult<impl IntoResponse> {
    let plan = blocking(move || {
        let plan = app.control.update_plan(&plan_id(&p), patch)?;
        app.governance().invalidate_limits();
        Ok(plan)
    })
    .await?;
    Ok(axum::Json(plan))
}

pub async fn delete_plan(
    State(app): State<Arc<App>>,
    _: Operator,
    Path(p): Path<HashMap<String, String>>,
) -> ApiResult<impl IntoResponse> {
    blocking(move || app.control.delete_plan(&plan_id(&p))).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// An org's limits with what it uses of the counted ones (as last counted; `null` when not
/// counted yet).
fn limits_view(app: &App, org: uuid::Uuid) -> crate::Result<Value> {
    let l = app.control.org_limits(org)?;
    let mut used = serde_json::Map::new();
    for c in [
        Counted::Workspaces,
        Counted::Documents,
        Counted::StorageBytes,
        Counted::Members,
        Counted::ApiKeys,
    ] {
        let v = if c.in_stores() {
            app.governance().ledger.known(org, c).map(|v| v.max(0))
        } else {
            let now = app.identity.clock().now_text();
            Some(match c {
                Counted::Workspaces => app.control.count_workspaces(org)?,
                Counted::Members => app.control.count_seats(org, &now)?,
                _ => app.control.count_api_keys(org, &now)?,
            })
        };
        used.insert(c.limit().as_str().into(), json!(v));
    }
    for m in [Monthly::ChatTokens, Monthly::EmbeddingChunks] {
        let v = app.governance().usage().used_this_month(org, m)?;
        used.insert(m.limit().as_str().into(), json!(v));
    }
    let mut v = serde_json::to_value(&l).map_err(|e| crate::Error::internal(e.to_string()))?;
    v["used"] = Value::Object(used);
    Ok(v)
}

/// `GET /v1/orgs/{org}/limits`: what the org is held to (viewers and up).
pub async fn org_limits(
    State(app): State<Arc<App>>,
    ctx: OrgContext,
) -> ApiResult<impl IntoResponse> {
    ctx.require(Action::OrgRead)?;
    let org = ctx.org.id;
    Ok(axum::Json(blocking(move || limits_view(&app, org)).await?))
}

fn org_of(app: &App, p: &HashMap<String, String>) -> crate::Result<uuid::Uuid> {
    Ok(app.control.get_org(p.get("org").map_or("", |s| s))?.id)
}

/// `GET /v1/admin/orgs/{org}/limits`.
pub async fn admin_org_limits(
    State(app): State<Arc<App>>,
    _: Operator,
    Path(p): Path<HashMap<String, String>>,
) -> ApiResult<impl IntoResponse> {
    let v = blocking(move || limits_view(&app, org_of(&app, &p)?)).await?;
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
        let org = org_of(&app, &p)?;
        app.control.set_org_overrides(org, &overrides)?;
        app.governance().invalidate_limits();
        limits_view(&app, org)
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
        let org = org_of(&app, &p)?;
        app.control.merge_org_overrides(org, &patch)?;
        app.governance().invalidate_limits();
        limits_view(&app, org)
    })
    .await?;
    Ok(axum::Json(v))
}

/// `GET /v1/admin/deleted`: deleted orgs and workspaces that can still be restored.
pub async fn list_deleted(
    State(app): State<Arc<App>>,
    _: Operator,
) -> ApiResult<impl IntoResponse> {
    let list = blocking(move || app.control.list_deleted()).await?;
    Ok(axum::Json(json!({ "data": list })))
}

/// `POST /v1/orgs/{org}/restore` (operator; `{org}` is the id: a deleted org's slug may be
/// someone else's now).
pub async fn restore_org(
    State(app): State<Arc<App>>,
    _: Operator,
    Path(p): Path<HashMap<String, String>>,
) -> ApiResult<impl IntoResponse> {
    let org = parse_uuid(p.get("org").map_or("", |s| s), "organization")?;
    let v = blocking(move || {
        let workspaces = crate::governance::lifecycle::restore_org(&app, org)?;
        let org = app.control.get_org_by_id(org)?;
        Ok(json!({ "org": org, "restored_workspaces": workspaces }))
    })
    .await?;
    Ok(axum::Json(v))
}

/// `POST /v1/workspaces/{ws}/restore` (operator).
pub async fn restore_workspace(
    State(app): State<Arc<App>>,
    _: Operator,
    Path(p): Path<HashMap<String, String>>,
) -> ApiResult<impl IntoResponse> {
    let ws = parse_uuid(p.get("ws").map_or("", |s| s), "workspace")?;
    let rec = blocking(move || {
        crate::governance::lifecycle::restore_workspace(&app, ws)?;
        app.control.get_workspace(ws)
    })
    .await?;
    Ok(axum::Json(rec))
}

/// `?purge=true` of `DELETE /v1/orgs/{org}` and `DELETE /v1/workspaces/{ws}`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurgeQuery {
    pub purge: Option<bool>,
}

impl PurgeQuery {
    /// Whether to purge at once; only the operator may.
    pub fn purge(&self, principal: &crate::identity::Principal) -> crate::Result<bool> {
        match self.purge {
            Some(true) if !principal.is_operator() => Err(crate::Error::forbidden(
                "only the operator may purge at once (?purge=true); without it the data is kept \
                 for the grace period and then purged",
            )),
            p => Ok(p.unwrap_or(false)),
        }
    }
}

/// Creates the first owner's invitation of an org the operator just created.
pub fn invite_owner(app: &App, org: uuid::Uuid, email: &str) -> crate::Result<Value> {
    let access = app.org_access(
        &crate::identity::Principal::Operator,
        &org.to_string(),
        None,
    )?;
    let (inv, token) = app.invite(&access, email, crate::identity::Role::Owner)?;
    let mut v = serde_json::to_value(&inv).map_err(|e| crate::Error::internal(e.to_string()))?;
    v["token"] = json!(token);
    Ok(v)
}
