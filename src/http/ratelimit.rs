//! Rate limits at the edge: the auth extractors call [`enforce`] once per request with the
//! verified principal and org; [`headers`] (a layer over `/v1`) writes the IETF draft's
//! `RateLimit-Policy` and `RateLimit` headers (draft-ietf-httpapi-ratelimit-headers) on the
//! response, and a refusal is `429 rate_limited` with `Retry-After`.

use std::sync::{Arc, Mutex};

use axum::extract::Request;
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use uuid::Uuid;

use super::error::ApiError;
use crate::app::App;
use crate::governance::ratelimit::{Verdict, Window, WINDOW_SECS};
use crate::identity::Principal;

pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Where the extractor leaves the request's windows for the layer.
#[derive(Clone, Default)]
struct Slot(Arc<Mutex<Option<Vec<Window>>>>);

/// Marks a request whose rate was checked (an extractor may run twice).
#[derive(Clone, Copy)]
struct Checked;

/// Checks the request's rate once: the credential's bucket and the org's.
pub fn enforce(
    parts: &mut Parts,
    app: &App,
    principal: &Principal,
    org: Uuid,
    ws: Option<Uuid>,
) -> Result<(), ApiError> {
    if parts.extensions.get::<Checked>().is_some() {
        return Ok(());
    }
    parts.extensions.insert(Checked);
    let verdict = app.governance().rate_check(principal, org, ws)?;
    let (windows, refused) = match verdict {
        None => return Ok(()),
        Some(Verdict::Allowed(w)) => (w, None),
        Some(Verdict::Limited {
            retry_after_secs,
            windows,
        }) => (windows, Some(retry_after_secs)),
    };
    if let Some(slot) = parts.extensions.get::<Slot>() {
        *slot.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(windows);
    }
    match refused {
        Some(secs) => Err(crate::Error::TooManyRequests(secs).into()),
        None => Ok(()),
    }
}

/// `"key";q=600;w=60, "org";q=1200;w=60`
fn policy(windows: &[Window]) -> String {
    windows
        .iter()
        .map(|w| format!("\"{}\";q={};w={WINDOW_SECS}", w.name, w.limit))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `"key";r=599;t=1, "org";r=1199;t=1`
fn state(windows: &[Window]) -> String {
    windows
        .iter()
        .map(|w| format!("\"{}\";r={};t={}", w.name, w.remaining, w.reset_secs))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The layer: gives the request a slot, and writes the headers from what was put in it.
pub async fn headers(mut req: Request, next: Next) -> Response {
    let slot = Slot::default();
    req.extensions_mut().insert(slot.clone());
    let mut resp = next.run(req).await;
    let windows = slot.0.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(w) = windows.filter(|w| !w.is_empty()) {
        if let Ok(v) = HeaderValue::from_str(&policy(&w)) {
            resp.headers_mut().insert(RATELIMIT_POLICY.clone(), v);
        }
        if let Ok(v) = HeaderValue::from_str(&state(&w)) {
            resp.headers_mut().insert(RATELIMIT.clone(), v);
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_follow_the_draft() {
        let w = [
            Window {
                name: "key",
                limit: 600,
                remaining: 599,
                reset_secs: 1,
            },
            Window {
                name: "org",
                limit: 1200,
                remaining: 0,
                reset_secs: 60,
            },
        ];
        assert_eq!(policy(&w), "\"key\";q=600;w=60, \"org\";q=1200;w=60");
        assert_eq!(state(&w), "\"key\";r=599;t=1, \"org\";r=0;t=60");
    }
}
