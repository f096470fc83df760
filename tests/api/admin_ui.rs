//! The embedded admin UI at `/admin/`: routing, security and cache headers, and that every file
//! the UI references is served. (The UI itself is tested in a real browser by `tests/browser/`.)

use std::path::Path;

use crate::harness::TestServer;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

#[tokio::test]
async fn admin_is_served_with_a_strict_policy() {
    let s = TestServer::start();
    let c = client();
    let r = c
        .get(format!("{}/admin", s.base))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 308);
    assert_eq!(r.headers()["location"], "/admin/");

    let r = c
        .get(format!("{}/admin/", s.base))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert!(h["content-type"]
        .to_str()
        .unwrap_or("")
        .starts_with("text/html"));
    let csp = h["content-security-policy"].to_str().unwrap_or("");
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert!(csp.contains("script-src 'self'") && csp.contains("style-src 'self'"));
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
    assert!(csp.contains("frame-ancestors 'none'"));
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["cache-control"], "no-cache");
    let etag = h["etag"].to_str().expect("etag").to_string();
    let body = r.text().await.expect("body");
    assert!(body.contains("<script type=\"module\" src=\"js/app.js\">"));

    // Revalidation: the same file answers 304.
    let r = c
        .get(format!("{}/admin/", s.base))
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 304);
    assert_eq!(r.headers()["etag"].to_str().ok(), Some(etag.as_str()));

    // A client-side route serves the app; a missing file is a plain 404, never HTML.
    let r = c
        .get(format!("{}/admin/orgs/acme", s.base))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    assert!(r.text().await.expect("body").contains("js/app.js"));
    let r = c
        .get(format!("{}/admin/js/missing.js", s.base))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 404);
    assert!(r.headers().get("content-security-policy").is_some());

    // The UI is public static files only: no credential is needed, none is read, and the API's
    // own 404 stays JSON.
    let r = c
        .get(format!("{}/adminx", s.base))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 404);
    assert!(r.text().await.expect("body").contains("\"not_found\""));
}

/// Every file under `assets/admin/`, relative to it.
fn ui_files() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/admin");
    let mut out = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("read_dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(rel) = p.strip_prefix(&root) {
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn every_ui_file_is_embedded_and_typed() {
    let s = TestServer::start();
    let c = client();
    let files = ui_files();
    assert!(files.iter().any(|f| f == "index.html"));
    for f in &files {
        let r = c
            .get(format!("{}/admin/{f}", s.base))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 200, "{f}");
        let ct = r.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .to_string();
        let want = match f.rsplit('.').next() {
            Some("js") => "text/javascript",
            Some("css") => "text/css",
            Some("html") => "text/html",
            Some("svg") => "image/svg+xml",
            _ => "",
        };
        assert!(ct.starts_with(want), "{f}: {ct}");
        let served = r.bytes().await.expect("body");
        let on_disk = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("assets/admin")
                .join(f),
        )
        .expect("read");
        assert_eq!(
            served.as_ref(),
            on_disk.as_slice(),
            "{f} is served as it is"
        );
    }
}

/// The UI never parses HTML from data and never needs an inline style or script: what the CSP
/// forbids is not written in the first place.
#[test]
fn ui_sources_have_no_inline_script_style_or_html_parsing() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/admin");
    for f in ui_files() {
        if !(f.ends_with(".js") || f.ends_with(".html")) {
            continue;
        }
        let text = std::fs::read_to_string(root.join(&f)).expect("read");
        for banned in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
            "style=",
            "localStorage",
            "sessionStorage",
            "document.cookie",
        ] {
            assert!(!text.contains(banned), "{f} uses {banned}");
        }
        if f.ends_with(".html") {
            for (i, _) in text.match_indices("<script") {
                let tag = &text[i..text[i..].find('>').map_or(text.len(), |e| i + e)];
                assert!(tag.contains("src="), "{f}: an inline <script>");
            }
            assert!(!text.contains("<style"), "{f}: an inline <style>");
        }
    }
}
