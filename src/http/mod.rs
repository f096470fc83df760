//! The HTTP API (axum). One module per resource; handlers parse, call one `App` function and
//! map the result. Domain code knows nothing of axum.

pub mod auth;
pub mod error;
pub mod extract;
mod knowledge;
pub mod middleware;
pub(crate) mod orgs;
pub mod system;
mod workspaces;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;

use crate::app::App;
use error::ApiError;

pub fn router(app: Arc<App>) -> Router {
    // Uploads: the configured limit plus room for multipart framing and JSON escaping.
    let upload_limit = usize::try_from(app.config.max_upload_bytes)
        .unwrap_or(usize::MAX)
        .saturating_mul(2)
        .saturating_add(64 << 10);
    let v1 = Router::new()
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
            "/workspaces/{ws}",
            get(workspaces::get)
                .patch(workspaces::patch)
                .delete(workspaces::delete),
        )
        .route(
            "/workspaces/{ws}/documents",
            post(knowledge::add)
                .layer(DefaultBodyLimit::max(upload_limit))
                .get(knowledge::list),
        )
        .route(
            "/workspaces/{ws}/documents/{id}",
            get(knowledge::get).delete(knowledge::delete),
        )
        .route("/workspaces/{ws}/jobs", get(knowledge::list_jobs))
        .route("/workspaces/{ws}/jobs/{id}", get(knowledge::get_job))
        .route(
            "/workspaces/{ws}/jobs/{id}/cancel",
            post(knowledge::cancel_job),
        )
        .route("/workspaces/{ws}/search", post(knowledge::search))
        .route(
            "/workspaces/{ws}/embedder",
            get(knowledge::get_embedder).put(knowledge::set_embedder),
        );
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
        "invalid_request",
        "method not allowed on this route",
    )
}
