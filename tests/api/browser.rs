//! What a browser app and an HTTPS deployment need: CORS for the configured origins (preflights
//! answered before credentials, rate-limit headers exposed, other origins get no CORS header),
//! HTTPS with the configured certificate, and workspaces found by their slug.

use reqwest::Method;
use serde_json::json;

use crate::harness::{Options, TestServer};

const APP_ORIGIN: &str = "https://app.example.com";

fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[tokio::test]
async fn configured_origins_may_search_with_a_tenant_token_and_preflights_are_answered() {
    let s = TestServer::start_with(Options::configured(|c| {
        c.cors_origins = vec![APP_ORIGIN.into()];
    }));
    let api = s.api();
    let org = api.create_org("web").await;
    let ws = api.create_workspace(&org, "site").await;
    let key = api.create_key(&ws, &["search", "chat"]).await;
    let token = api
        .with_token(&key.key)
        .tenant_token(json!({"scopes": ["search"]}))
        .await;
    let client = reqwest::Client::new();

    // The preflight: no credential, answered with what the app may send.
    let pre = client
        .request(Method::OPTIONS, format!("{}/v1/search", s.base))
        .header("Origin", APP_ORIGIN)
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "authorization,content-type,x-tenant-id",
        )
        .send()
        .await
        .expect("preflight");
    assert_eq!(pre.status(), 200);
    assert_eq!(header(&pre, "access-control-allow-origin"), APP_ORIGIN);
    let allowed = header(&pre, "access-control-allow-headers").to_ascii_lowercase();
    for h in ["authorization", "content-type", "x-tenant-id"] {
        assert!(allowed.contains(h), "{h} not allowed: {allowed}");
    }
    assert!(header(&pre, "access-control-allow-methods").contains("POST"));

    // The request itself: answered with the CORS headers, rate-limit headers readable.
    let r = client
        .post(format!("{}/v1/search", s.base))
        .header("Origin", APP_ORIGIN)
        .bearer_auth(&token)
        .header("X-Tenant-ID", &ws)
        .json(&json!({"query": "anything", "mode": "fulltext"}))
        .send()
        .await
        .expect("search");
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "access-control-allow-origin"), APP_ORIGIN);
    let exposed = header(&r, "access-control-expose-headers").to_ascii_lowercase();
    assert!(exposed.contains("ratelimit"), "{exposed}");
    assert!(exposed.contains("x-request-id"), "{exposed}");

    // Another origin: no CORS header, so the browser withholds the answer.
    let r = client
        .post(format!("{}/v1/search", s.base))
        .header("Origin", "https://evil.example.net")
        .bearer_auth(&token)
        .json(&json!({"query": "anything", "mode": "fulltext"}))
        .send()
        .await
        .expect("search");
    assert!(r.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn without_configured_origins_no_cors_headers_are_sent() {
    let s = TestServer::start();
    let pre = reqwest::Client::new()
        .request(Method::OPTIONS, format!("{}/v1/search", s.base))
        .header("Origin", APP_ORIGIN)
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .expect("preflight");
    assert!(pre.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn https_serves_with_the_configured_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).expect("write cert");
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).expect("write key");
    let s = TestServer::start_with(Options::configured(|c| {
        c.tls = Some(enclave::config::TlsFiles {
            cert: cert_path.clone(),
            key: key_path.clone(),
        });
    }));
    let addr: std::net::SocketAddr = s.base.trim_start_matches("http://").parse().expect("addr");
    let client = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).expect("root"),
        )
        .resolve("localhost", addr)
        .build()
        .expect("client");
    let url = format!("https://localhost:{}", addr.port());
    let r = client
        .get(format!("{url}/healthz"))
        .send()
        .await
        .expect("https");
    assert_eq!(r.status(), 200);
    // The API over the same connection type, with a credential.
    let r = client
        .get(format!("{url}/v1/orgs"))
        .bearer_auth(&s.token)
        .send()
        .await
        .expect("https");
    assert_eq!(r.status(), 200);

    // Plain HTTP to the HTTPS port gets no HTTP answer.
    let plain = reqwest::Client::new()
        .get(format!("{}/healthz", s.base))
        .timeout(std::time::Duration::from_secs(10))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");
    // A client that does not trust the certificate is refused by its own TLS check.
    let untrusting = reqwest::Client::builder()
        .resolve("localhost", addr)
        .build()
        .expect("client");
    assert!(untrusting
        .get(format!("{url}/healthz"))
        .send()
        .await
        .is_err());
}

#[tokio::test]
async fn a_workspace_is_found_by_its_slug_within_its_org() {
    let s = TestServer::start();
    let api = s.api();
    let org = api.create_org("acme").await;
    let ws = api.create_workspace(&org, "docs").await;
    let other = api.create_org("other").await;
    api.create_workspace(&other, "docs").await;

    for org_key in [org.as_str(), "acme"] {
        let r = api
            .get(&format!("/v1/orgs/{org_key}/workspaces/docs"))
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(r.body["id"], ws.as_str());
        assert_eq!(r.body["slug"], "docs");
    }
    let r = api.get("/v1/orgs/acme/workspaces/nope").await;
    assert_eq!((r.status, r.code()), (404, "not_found"), "{:?}", r.body);

    // A member of the other org cannot find acme's workspace by slug.
    let outsider = api.user_client(&other, "o@example.com", "admin").await;
    let r = outsider.get("/v1/orgs/acme/workspaces/docs").await;
    assert_eq!(r.status, 404, "{:?}", r.body);
    // A member of acme can.
    let member = api.user_client(&org, "m@example.com", "member").await;
    let r = member.get("/v1/orgs/acme/workspaces/docs").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["id"], ws.as_str());
}
