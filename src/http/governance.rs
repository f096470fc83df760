//! Audit trails and usage (issue 12): `GET /v1/workspaces/{ws}/audit`,
//! `GET /v1/orgs/{org}/audit`, `GET /v1/orgs/{org}/usage`, and the operator's
//! `GET /v1/admin/audit` and `GET /v1/admin/usage` across orgs. Usage answers JSON, or CSV to
//! `Accept: text/csv`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::auth::{Operator, OrgContext, WorkspaceContext};
use super::error::ApiResult;
use super::extract::Query;
use super::params::blocking;
use crate::app::App;
use crate::control::Page;
use crate::governance::audit::Filter;
use crate::governance::usage;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Operator listing only: one org (id or slug).
    pub org: Option<String>,
    /// An actor kind (`user`, `api_key`, `tenant_token`, `operator`, `cli`) or an actor id.
    pub actor: Option<String>,
    /// An action (`document.add`) or a prefix ending in `*` (`document.*`).
    pub action: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub limit: Option<u32>,
    pub offset: Option<u32>,
}

impl AuditQuery {
    fn filter(&self) -> crate::Result<(Filter, Page)> {
        let f = Filter::parse(
            self.actor.clone(),
            self.action.clone(),
            self.from.as_deref(),
            self.to.as_deref(),
        )?;
        Ok((f, Page::new(self.limit, self.offset)?))
    }
}

fn page_body<T: serde::Serialize>(list: Vec<T>, page: Page) -> axum::Json<serde_json::Value> {
    let next = (list.len() as u32 == page.limit).then(|| page.offset + page.limit);
    axum::Json(json!({ "data": list, "next_offset": next }))
}

pub async fn workspace_audit(
    State(app): State<Arc<App>>,
    ctx: WorkspaceContext,
    Query(q): Query<AuditQuery>,
) -> ApiResult<impl IntoResponse> {
    if q.org.is_some() {
        return Err(
            crate::Error::invalid("org is not a filter of a workspace's audit trail").into(),
        );
    }
    let (f, page) = q.filter()?;
    let list = blocking(move || app.governance().workspace_audit(&ctx, &f, page)).await?;
    Ok(page_body(list, page))
}

pub async fn org_audit(
    State(app): State<Arc<App>>,
    ctx: OrgContext,
    Query(q): Query<AuditQuery>,
) -> ApiResult<impl IntoResponse> {
    if q.org.is_some() {
        return Err(crate::Error::invalid("the org is the path's: drop the org filter").into());
    }
    let (f, page) = q.filter()?;
    let list = blocking(move || app.governance().org_audit(&ctx, &f, page)).await?;
    Ok(page_body(list, page))
}

/// The operator's view of the control plane's trail: every org, or `?org=`.
pub async fn admin_audit(
    State(app): State<Arc<App>>,
    _: Operator,
    Query(q): Query<AuditQuery>,
) -> ApiResult<impl IntoResponse> {
    let (f, page) = q.filter()?;
    let list = blocking(move || app.governance().operator_audit(q.org.as_deref(), f, page)).await?;
    Ok(page_body(list, page))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    pub from: Option<String>,
    pub to: Option<String>,
    /// `day` (default) or `month`.
    pub granularity: Option<String>,
    /// One workspace of the org (its rows only).
    pub workspace: Option<String>,
    /// `org` (default: the org's workspaces summed) or `workspace` (one row per workspace).
    pub group: Option<String>,
    /// Operator only: one org (id or slug).
    pub org: Option<String>,
    /// `json` or `csv` (instead of the `Accept` header).
    pub format: Option<String>,
}

impl UsageQuery {
    fn parse(&self, app: &App) -> crate::Result<usage::Query> {
        let mut q = usage::Query::parse(
            self.from.as_deref(),
            self.to.as_deref(),
            self.granularity.as_deref(),
            app.governance().today(),
        )?;
        q.workspace = self
            .workspace
            .as_deref()
            .map(|w| crate::ids::parse_uuid(w, "workspace"))
            .transpose()?;
        q.by_workspace = match self.group.as_deref() {
            None | Some("org") => false,
            Some("workspace") => true,
            Some(other) => {
                return Err(crate::Error::invalid(format!(
                    "group must be org or workspace, not {other:?}"
                )))
            }
        };
        Ok(q)
    }
}

fn wants_csv(headers: &HeaderMap, format: Option<&str>) -> crate::Result<bool> {
    match format {
        Some("csv") => return Ok(true),
        Some("json") => return Ok(false),
        Some(other) => {
            return Err(crate::Error::invalid(format!(
                "format must be json or csv, not {other:?}"
            )))
        }
        None => {}
    }
    Ok(headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.split(',').any(|t| t.trim().starts_with("text/csv"))))
}

fn usage_response(q: &usage::Query, rows: Vec<usage::Row>, csv: bool) -> Response {
    if csv {
        (
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            usage::to_csv(&rows),
        )
            .into_response()
    } else {
        axum::Json(json!({
            "from": q.from,
            "to": q.to,
            "granularity": q.granularity,
            "data": rows,
        }))
        .into_response()
    }
}

pub async fn org_usage(
    State(app): State<Arc<App>>,
    ctx: OrgContext,
    headers: HeaderMap,
    Query(q): Query<UsageQuery>,
) -> ApiResult<Response> {
    if q.org.is_some() {
        return Err(crate::Error::invalid("the org is the path's: drop the org filter").into());
    }
    let csv = wants_csv(&headers, q.format.as_deref())?;
    let uq = q.parse(&app)?;
    let shown = uq.clone();
    let rows = blocking(move || app.governance().org_usage(&ctx, uq)).await?;
    Ok(usage_response(&shown, rows, csv))
}

/// The operator's usage report: every org, or `?org=`.
pub async fn admin_usage(
    State(app): State<Arc<App>>,
    _: Operator,
    headers: HeaderMap,
    Query(q): Query<UsageQuery>,
) -> ApiResult<Response> {
    let csv = wants_csv(&headers, q.format.as_deref())?;
    let uq = q.parse(&app)?;
    let org = q.org.clone();
    let shown = uq.clone();
    let rows = blocking(move || app.governance().operator_usage(org.as_deref(), uq)).await?;
    Ok(usage_response(&shown, rows, csv))
}
