//! The auth extractor: resolves the bearer credential of a request into a principal. Every
//! `/v1` handler takes one, so no route can forget it.
//!
//! Today the only credential is the operator token; users, API keys and tenant tokens are added
//! here as further [`Principal`] variants, with the tenant check in this one place.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::error::ApiError;
use crate::app::App;

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The operator: may act across orgs.
    Operator,
}

/// The bearer credential of the request, taken from `Authorization: Bearer <token>`.
pub fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let value = parts
        .headers
        .get(AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthenticated("missing Authorization: Bearer credential"))?;
    let text = value
        .to_str()
        .map_err(|_| ApiError::unauthenticated("malformed Authorization header"))?;
    let (scheme, token) = text
        .split_once(' ')
        .ok_or_else(|| ApiError::unauthenticated("malformed Authorization header"))?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(ApiError::unauthenticated(
            "expected Authorization: Bearer <credential>",
        ));
    }
    Ok(token)
}

/// A request made with the operator token.
pub struct Operator;

impl FromRequestParts<Arc<App>> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        match resolve(parts, app)? {
            Principal::Operator => Ok(Operator),
        }
    }
}

fn resolve(parts: &Parts, app: &App) -> Result<Principal, ApiError> {
    let token = bearer(parts)?;
    if app.is_operator_token(token) {
        tracing::Span::current().record("principal", "operator");
        return Ok(Principal::Operator);
    }
    Err(ApiError::unauthenticated("invalid credential"))
}
