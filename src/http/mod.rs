//! The HTTP API (axum). One module per resource; handlers parse, call one `App` function and
//! map the result. Domain code knows nothing of axum.

mod admin;
mod archive;
pub mod auth;
mod chat;
pub mod error;
pub mod extract;
mod keys;
mod knowledge;
mod mcp;
mod members;
pub mod middleware;
mod openai;
pub(crate) mod orgs;
pub mod params;
mod providers;
mod session;
pub mod system;
mod workspaces;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, patch, post, put};
use axum::Router;

use crate::app::App;
use error::{ApiError, ErrorCode};

pub fn router(app: Arc<App>) -> Router {
    // Uploads: the configured limit plus room for multipart framing and JSON escaping.
    let upload_limit = usize::try_from(app.config.max_upload_bytes)
        .unwrap_or(usize::MAX)
        .saturating_mul(2)
        .saturating_add(64 << 10);
    let mut v1 = Router::new()
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
        .route("/admin/audit", get(admin::audit))
        .route("/admin/backups", post(archive::backup))
        .route("/admin/restore", post(archive::restore))
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
    Router::new()
        .route("/healthz", get(system::healthz))
        .route("/readyz", get(system::readyz))
        .route("/metrics", get(system::metrics))
        .nest("/v1", v1)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            middleware::request_context,
        ))
        .with_state(app)
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
