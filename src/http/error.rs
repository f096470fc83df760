//! The one place where errors become HTTP responses with SPEC's status codes and error codes:
//! `{"error": {"code": "<snake_case>", "message": "<human sentence>"}}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::Error;

/// `Retry-After` of a search answered while the workspace's full-text index is rebuilt.
pub const INDEX_RETRY_AFTER_SECS: u64 = 2;

/// SPEC's error codes: the `code` of every error body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidRequest,
    Unauthenticated,
    Forbidden,
    TenantSuspended,
    NotFound,
    Conflict,
    PayloadTooLarge,
    UnsupportedMediaType,
    RateLimited,
    QuotaExceeded,
    RequestTimeout,
    ProviderError,
    Unavailable,
    InsufficientStorage,
    Internal,
}

impl ErrorCode {
    /// The code as written in error bodies.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::TenantSuspended => "tenant_suspended",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::QuotaExceeded => "quota_exceeded",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::ProviderError => "provider_error",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::InsufficientStorage => "insufficient_storage",
            ErrorCode::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    pub retry_after: Option<u64>,
    /// Extra fields of the error object (a quota refusal's `limit`, `used`, `resource`).
    pub details: Option<serde_json::Map<String, serde_json::Value>>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
            details: None,
        }
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthenticated,
            message,
        )
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, message)
    }

    pub fn invalid(status: StatusCode, message: impl Into<String>) -> Self {
        Self::new(status, ErrorCode::InvalidRequest, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, message)
    }
}

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        match err {
            // A batch item's own error, its message prefixed and its index in the details.
            Error::BatchItem { index, error } => {
                let mut api = ApiError::from(*error);
                api.message = format!("item {index}: {}", api.message);
                api.details
                    .get_or_insert_with(Default::default)
                    .insert("index".into(), index.into());
                api
            }
            Error::Invalid(m) => ApiError::invalid(StatusCode::BAD_REQUEST, m),
            Error::NotFound(what) => ApiError::not_found(format!("{what} not found")),
            Error::Conflict(m) => ApiError::new(StatusCode::CONFLICT, ErrorCode::Conflict, m),
            Error::Unauthenticated(m) => ApiError::unauthenticated(m),
            Error::Forbidden(m) => ApiError::forbidden(m),
            Error::RateLimited(secs) => ApiError {
                retry_after: Some(secs),
                ..ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    ErrorCode::RateLimited,
                    format!("too many attempts: try again in {secs} seconds"),
                )
            },
            Error::QuotaExceeded {
                resource,
                limit,
                used,
            } => {
                let message = Error::QuotaExceeded {
                    resource,
                    limit,
                    used,
                }
                .to_string();
                let mut details = serde_json::Map::new();
                details.insert("resource".into(), resource.into());
                details.insert("limit".into(), limit.into());
                details.insert("used".into(), used.into());
                ApiError {
                    details: Some(details),
                    ..ApiError::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        ErrorCode::QuotaExceeded,
                        message,
                    )
                }
            }
            e @ Error::TooManyRequests(secs) => ApiError {
                retry_after: Some(secs),
                ..ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    ErrorCode::RateLimited,
                    e.to_string(),
                )
            },
            Error::PayloadTooLarge(m) => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::PayloadTooLarge, m)
            }
            Error::UnsupportedMediaType(m) => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::UnsupportedMediaType,
                m,
            ),
            Error::Provider(m) => {
                tracing::warn!(error = %m, "provider error");
                ApiError::new(StatusCode::BAD_GATEWAY, ErrorCode::ProviderError, m)
            }
            Error::Suspended => ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::TenantSuspended,
                "the organization is suspended",
            ),
            e @ (Error::Busy | Error::ShuttingDown) => ApiError {
                retry_after: Some(1),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::Unavailable,
                    e.to_string(),
                )
            },
            Error::InsufficientStorage(m) => ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                ErrorCode::InsufficientStorage,
                m,
            ),
            Error::Corrupt(m) => {
                tracing::error!(error = %m, "corrupt store");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal, m)
            }
            Error::IndexUnavailable(m) => ApiError {
                retry_after: Some(INDEX_RETRY_AFTER_SECS),
                ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable, m)
            },
            e @ (Error::Sqlite(_) | Error::Index(_) | Error::Io(_) | Error::Internal(_)) => {
                tracing::error!(error = %e, "internal error");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorCode::Internal,
                    "an internal error occurred; the request id identifies it in the server log",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": {"code": self.code.as_str(), "message": self.message}});
        if let (Some(details), Some(obj)) = (self.details, body["error"].as_object_mut()) {
            obj.extend(details);
        }
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Resource;

    #[test]
    fn domain_errors_map_to_spec_codes() {
        let cases: Vec<(Error, u16, &str)> = vec![
            (Error::invalid("x"), 400, "invalid_request"),
            (Error::NotFound(Resource::Workspace), 404, "not_found"),
            (Error::Conflict("x".into()), 409, "conflict"),
            (Error::Suspended, 403, "tenant_suspended"),
            (Error::unauthenticated("x"), 401, "unauthenticated"),
            (Error::forbidden("x"), 403, "forbidden"),
            (Error::RateLimited(7), 429, "rate_limited"),
            (Error::TooManyRequests(3), 429, "rate_limited"),
            (
                Error::QuotaExceeded {
                    resource: "workspaces",
                    limit: 3,
                    used: 3,
                },
                429,
                "quota_exceeded",
            ),
            (Error::Busy, 503, "unavailable"),
            (Error::PayloadTooLarge("x".into()), 413, "payload_too_large"),
            (
                Error::UnsupportedMediaType("x".into()),
                415,
                "unsupported_media_type",
            ),
            (Error::Provider("x".into()), 502, "provider_error"),
            (
                Error::InsufficientStorage("x".into()),
                507,
                "insufficient_storage",
            ),
            (Error::IndexUnavailable("x".into()), 503, "unavailable"),
            (Error::internal("secret detail"), 500, "internal"),
        ];
        for (err, status, code) in cases {
            let api = ApiError::from(err);
            assert_eq!((api.status.as_u16(), api.code.as_str()), (status, code));
            assert!(!api.message.contains("secret detail"));
        }
    }

    #[test]
    fn a_batch_items_error_keeps_its_status_and_names_its_index() {
        let api = ApiError::from(Error::Conflict("still being ingested".into()).at_item(7));
        assert_eq!((api.status.as_u16(), api.code.as_str()), (409, "conflict"));
        assert_eq!(api.message, "item 7: still being ingested");
        assert_eq!(
            api.details.as_ref().and_then(|d| d.get("index")),
            Some(&serde_json::json!(7))
        );
        // A quota refusal keeps its own details beside the index; nesting keeps the first.
        let e = Error::QuotaExceeded {
            resource: "documents",
            limit: 2,
            used: 2,
        }
        .at_item(1)
        .at_item(5);
        let api = ApiError::from(e);
        let d = api.details.expect("details");
        assert_eq!(
            (d["index"].clone(), d["limit"].clone()),
            (1.into(), 2.into())
        );
    }

    #[test]
    fn a_full_disk_is_507_from_every_layer() {
        let io = std::io::Error::from_raw_os_error(libc::ENOSPC);
        let quota = std::io::Error::from_raw_os_error(libc::EDQUOT);
        let sqlite = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            None,
        );
        let tantivy = tantivy::TantivyError::from(std::io::Error::from_raw_os_error(libc::ENOSPC));
        for err in [
            Error::from(io),
            Error::from(quota),
            Error::from(sqlite),
            Error::from(tantivy),
        ] {
            assert!(err.is_storage_full(), "{err:?}");
            let api = ApiError::from(err);
            assert_eq!(
                (api.status.as_u16(), api.code.as_str()),
                (507, "insufficient_storage")
            );
        }
        let other = ApiError::from(Error::from(std::io::Error::other("boom")));
        assert_eq!(other.status.as_u16(), 500);
    }
}
