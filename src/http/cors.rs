//! CORS for the configured origins (`cors_origins`): browser apps on those origins may call the
//! API with a bearer credential (a tenant token, an API key, a session token) in
//! `Authorization`; preflights are answered. No cookies are involved, so credentials mode is
//! off. Without configured origins, no CORS header is sent and browsers keep their
//! same-origin rule.

use axum::http::{header, HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// How long a browser may cache a preflight's answer.
const PREFLIGHT_MAX_AGE_SECS: u64 = 600;

/// The layer for `origins` (already validated by `Config::resolve`); `None` when empty.
pub fn layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect::<Vec<_>>(),
        )
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("x-tenant-id"),
                HeaderName::from_static("x-request-id"),
            ])
            .expose_headers([
                HeaderName::from_static("ratelimit"),
                HeaderName::from_static("ratelimit-policy"),
                header::RETRY_AFTER,
                HeaderName::from_static("x-request-id"),
            ])
            .max_age(std::time::Duration::from_secs(PREFLIGHT_MAX_AGE_SECS)),
    )
}
