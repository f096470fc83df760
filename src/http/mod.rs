//! The HTTP API (axum). One module per resource; handlers parse, call one `App` function and
//! map the result. Domain code knows nothing of axum.

mod admin;
mod admin_ui;
mod archive;
pub mod auth;
mod chat;
mod cors;
pub mod error;
pub mod extract;
mod governance;
mod keys;
mod knowledge;
mod mcp;
mod members;
pub mod middleware;
mod openai;
pub mod openapi;
pub(crate) mod orgs;
pub mod params;
mod plans;
mod providers;
pub mod ratelimit;
pub mod routes;
mod session;
pub mod system;
mod workspaces;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::Router;

use crate::app::App;
use error::{ApiError, ErrorCode};
use routes::{delete, get, patch, post, put, RouteEntry, Routes};

pub fn router(app: Arc<App>) -> Router {
    // Uploads: the configured limit plus room for multipart framing and JSON escaping.
    let upload_limit = usize::try_from(app.config().max_upload_bytes)
        .unwrap_or(usize::MAX)
        .saturating_mul(2)
        .saturating_add(64 << 10);
    let batch_limit = usize::try_from(app.config().max_batch_bytes).unwrap_or(usize::MAX);
    let (api, _) = api_routes(upload_limit, batch_limit).into_parts();
    let router = api
        .merge(admin_ui::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            middleware::request_context,
        ));
    // Outermost: a preflight is answered before any credential is asked for.
    let router = match cors::layer(&app.config().cors_origins) {
        Some(cors) => router.layer(cors),
        None => router,
    };
    router.with_state(app)
}

/// Every (method, path) the API serves (the admin UI's static files aside), sorted: what
/// `openapi` must describe.
pub fn route_table() -> Vec<RouteEntry> {
    api_routes(0, 0).into_parts().1
}

/// The API's routes. Declared through `routes::Routes`, which records each one for
/// [`route_table`].
fn api_routes(upload_limit: usize, batch_limit: usize) -> Routes<Arc<App>> {
    let mut v1 = Routes::new()
        .route("/auth/login", post(session::login))
        .route("/auth/logout", post(session::logout))
        .route("/me", get(session::me))
        .route("/orgs", post(orgs::create).get(orgs::list))
        .route(
            "/orgs/{org}",
            get(orgs::get).patch(orgs::patch).delete(orgs::delete),
        )
        .route("/orgs/{org}/suspend", post(orgs::suspend))
        .route("/orgs/{org}/reactivate", post(orgs::reactivate))
        .route(
            "/orgs/{org}/workspaces",
            post(orgs::create_workspace).get(orgs::list_workspaces),
        )
        .route(
            "/orgs/{org}/workspaces/{slug}",
            get(orgs::get_workspace_by_slug),
        )
        .route(
            "/orgs/{org}/workspaces/import",
            post(archive::import).layer(DefaultBodyLimit::disable()),
        )
        .route("/workspaces/{ws}/export", get(archive::export))
        .route("/orgs/{org}/members", get(members::list))
        .route(
            "/orgs/{org}/members/{user}",
            patch(members::change_role).delete(members::remove),
        )
        .route("/orgs/{org}/invitations", post(members::invite))
        .route("/invitations/{token}/accept", post(members::accept))
        .route(
            "/workspaces/{ws}",
            get(workspaces::get)
                .patch(workspaces::patch)
                .delete(workspaces::delete),
        )
        .route(
            "/workspaces/{ws}/api-keys",
            post(keys::create).get(keys::list),
        )
        .route("/workspaces/{ws}/api-keys/{id}", delete(keys::revoke))
        .route("/workspaces/{ws}/tenant-tokens", post(keys::mint_token))
        .route("/tenant-tokens", post(keys::mint_token))
        .route("/orgs/{org}/providers", get(providers::list))
        .route(
            "/orgs/{org}/providers/{name}",
            put(providers::put).delete(providers::delete),
        )
        .route("/admin/backups", post(archive::backup))
        .route("/admin/restore", post(archive::restore))
        .route("/admin/audit", get(governance::admin_audit))
        .route("/admin/usage", get(governance::admin_usage))
        .route("/orgs/{org}/audit", get(governance::org_audit))
        .route("/orgs/{org}/usage", get(governance::org_usage))
        .route("/workspaces/{ws}/audit", get(governance::workspace_audit))
        .route(
            "/admin/plans",
            get(plans::list_plans).post(plans::create_plan),
        )
        .route(
            "/admin/plans/{plan}",
            get(plans::get_plan)
                .patch(plans::update_plan)
                .delete(plans::delete_plan),
        )
        .route(
            "/admin/orgs/{org}/limits",
            get(plans::admin_org_limits)
                .put(plans::put_org_limits)
                .patch(plans::patch_org_limits),
        )
        .route("/admin/deleted", get(plans::list_deleted))
        .route("/orgs/{org}/limits", get(plans::org_limits))
        .route("/orgs/{org}/restore", post(plans::restore_org))
        .route("/workspaces/{ws}/restore", post(plans::restore_workspace))
        .route(
            "/admin/tenant-token-secret/rotate",
            post(admin::rotate_token_secret),
        );
    // Data-plane routes (documents, jobs, search, embedder, agents, chat), with `{ws}` and (for
    // API keys and tenant tokens, which bring their workspace) without.
    for prefix in ["/workspaces/{ws}", ""] {
        let at = |p: &str| format!("{prefix}{p}");
        v1 = v1
            .route(
                &at("/documents"),
                post(knowledge::add)
                    .layer(DefaultBodyLimit::max(upload_limit))
                    .get(knowledge::list),
            )
            .route(
                &at("/documents/batch"),
                post(knowledge::add_batch).layer(DefaultBodyLimit::max(batch_limit)),
            )
            .route(
                &at("/documents/{id}"),
                get(knowledge::get).delete(knowledge::delete),
            )
            .route(&at("/jobs"), get(knowledge::list_jobs))
            .route(&at("/jobs/{id}"), get(knowledge::get_job))
            .route(&at("/jobs/{id}/cancel"), post(knowledge::cancel_job))
            .route(&at("/search"), post(knowledge::search))
            .route(
                &at("/embedder"),
                get(knowledge::get_embedder).put(knowledge::set_embedder),
            )
            .route(
                &at("/agents"),
                get(chat::list_agents).post(chat::create_agent),
            )
            .route(
                &at("/agents/{id}"),
                get(chat::get_agent)
                    .patch(chat::patch_agent)
                    .delete(chat::delete_agent),
            )
            .route(&at("/sessions"), get(chat::list_sessions))
            .route(&at("/sessions/{id}/messages"), get(chat::session_messages))
            .route(&at("/chat"), post(chat::chat))
            .route(
                &at("/mcp"),
                post(mcp::post).get(mcp::get).delete(mcp::delete),
            )
            .route(&at("/openai/v1/models"), get(openai::models))
            .route(&at("/openai/v1/models/{model}"), get(openai::model))
            .route(
                &at("/openai/v1/chat/completions"),
                post(openai::completions),
            );
    }
    // Rate-limit headers on every response whose credential was checked (governance).
    let v1 = v1.layer(axum::middleware::from_fn(ratelimit::headers));
    Routes::new()
        .route("/healthz", get(system::healthz))
        .route("/readyz", get(system::readyz))
        .route("/metrics", get(system::metrics))
        .route("/openapi.json", get(openapi::serve))
        .nest("/v1", v1)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::InvalidRequest,
        "method not allowed on this route",
    )
}
