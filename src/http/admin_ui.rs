//! The admin web UI at `/admin/`: static files from `assets/admin/`, embedded in the binary
//! (`rust-embed`, also in debug builds), no network at run time. The UI is a client of the public
//! `/v1` API only; nothing here reads tenant data.
//!
//! - `/admin` redirects to `/admin/`; `/admin/` and any path under it that names no file serve
//!   `index.html` (the UI routes on the URL fragment, so this only matters for typed URLs).
//! - Every answer carries a strict `Content-Security-Policy` (`default-src 'self'`, no inline
//!   script or style), `X-Frame-Options: DENY`, `Referrer-Policy: no-referrer` and `nosniff`.
//! - Caching: `Cache-Control: no-cache` with a strong `ETag` (the file's SHA-256, computed at
//!   build time): a browser revalidates each file and gets `304` while the binary is unchanged,
//!   so an upgraded binary is never served stale files.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use rust_embed::RustEmbed;

#[derive(RustEmbed)]
#[folder = "assets/admin/"]
struct Assets;

/// The policy of every `/admin` answer. `connect-src 'self'`: the UI talks to its own origin's
/// `/v1` only.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; \
base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The routes of the UI, to merge into the server's router.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/admin", get(|| async { Redirect::permanent("/admin/") }))
        .route("/admin/", get(serve))
        .route("/admin/{*path}", get(serve))
}

async fn serve(uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path().strip_prefix("/admin/").unwrap_or("");
    let (name, file) = match Assets::get(path).filter(|_| !path.is_empty()) {
        Some(file) => (path, file),
        None => {
            // A path with an extension names a file that is not there: a plain 404 (a missing
            // script must not come back as HTML). Anything else is a client-side route.
            if path
                .rsplit('/')
                .next()
                .is_some_and(|last| last.contains('.'))
            {
                return with_policy(StatusCode::NOT_FOUND.into_response());
            }
            match Assets::get("index.html") {
                Some(file) => ("index.html", file),
                None => return with_policy(StatusCode::NOT_FOUND.into_response()),
            }
        }
    };
    let etag = format!("\"{}\"", hex::encode(file.metadata.sha256_hash()));
    let unchanged = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut res = if unchanged {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(header::CONTENT_TYPE, content_type(name))],
            file.data.into_owned(),
        )
            .into_response()
    };
    if let Ok(v) = HeaderValue::from_str(&etag) {
        res.headers_mut().insert(header::ETAG, v);
    }
    with_policy(res)
}

fn with_policy(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    res
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "json" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The UI's files and their sizes (for the size test).
    fn files() -> impl Iterator<Item = (String, usize)> {
        Assets::iter().filter_map(|name| {
            let len = Assets::get(&name)?.data.len();
            Some((name.into_owned(), len))
        })
    }

    #[test]
    fn every_embedded_file_has_a_known_type() {
        let mut n = 0;
        for (name, len) in files() {
            assert_ne!(
                content_type(&name),
                "application/octet-stream",
                "{name} has no content type"
            );
            assert!(len > 0, "{name} is empty");
            n += 1;
        }
        assert!(
            n >= 3,
            "index.html, a script and a style sheet are embedded"
        );
        assert!(Assets::get("index.html").is_some());
    }
}
