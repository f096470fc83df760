//! Extractors that turn every malformed input into SPEC's `invalid_request` (instead of axum's
//! plain-text rejections).

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::error::{ApiError, ErrorCode};

/// A JSON body; syntax errors are 400, type errors 422, oversize 413.
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Json(v)),
            Err(rej) => Err(json_rejection(rej)),
        }
    }
}

fn json_rejection(rej: JsonRejection) -> ApiError {
    match &rej {
        JsonRejection::JsonDataError(e) => ApiError::invalid(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("invalid body: {}", source_text(e)),
        ),
        JsonRejection::JsonSyntaxError(e) => ApiError::invalid(
            StatusCode::BAD_REQUEST,
            format!("malformed JSON: {}", source_text(e)),
        ),
        JsonRejection::MissingJsonContentType(_) => ApiError::invalid(
            StatusCode::BAD_REQUEST,
            "expected a JSON body with Content-Type: application/json",
        ),
        _ if rej.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge,
            "the request body is over the limit",
        ),
        _ => ApiError::invalid(StatusCode::BAD_REQUEST, rej.body_text()),
    }
}

/// The innermost message of an error chain (serde's own words, without axum's prefix).
fn source_text(e: &dyn std::error::Error) -> String {
    let mut cur: &dyn std::error::Error = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Path parameters; undecodable ones are 400.
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Path(v)),
            Err(rej) => Err(path_rejection(rej)),
        }
    }
}

fn path_rejection(rej: PathRejection) -> ApiError {
    ApiError::invalid(
        StatusCode::BAD_REQUEST,
        format!("bad path: {}", rej.body_text()),
    )
}

/// Query parameters; bad ones are 400.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(rej) => Err(query_rejection(rej)),
        }
    }
}

fn query_rejection(rej: QueryRejection) -> ApiError {
    ApiError::invalid(
        StatusCode::BAD_REQUEST,
        format!("bad query: {}", rej.body_text()),
    )
}
