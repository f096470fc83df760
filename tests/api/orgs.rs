use serde_json::json;

use crate::harness::{count, Api, TestServer};

#[tokio::test]
async fn org_crud() {
    let s = TestServer::start();
    let api = s.api();
    let r = api
        .post("/v1/orgs", json!({"name": "Acme Corp", "plan": "team"}))
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let id = r.id();
    assert_eq!(r.body["slug"], "acme-corp");
    assert_eq!(r.body["plan"], "team");
    assert_eq!(r.body["status"], "active");

    let r = api.get(&format!("/v1/orgs/{id}")).await;
    assert_eq!((r.status, r.body["id"].as_str()), (200, Some(id.as_str())));
    let r = api.get("/v1/orgs/acme-corp").await;
    assert_eq!(r.body["id"].as_str(), Some(id.as_str()), "lookup by slug");

    api.create_org("second").await;
    let r = api.get("/v1/orgs").await;
    assert_eq!(r.body["data"].as_array().map(Vec::len), Some(2));
    let r = api.get("/v1/orgs?limit=1&offset=1").await;
    assert_eq!(r.body["data"].as_array().map(Vec::len), Some(1));

    let r = api
        .patch(
            &format!("/v1/orgs/{id}"),
            json!({"name": "Acme", "settings": {"brand": "red"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["name"], "Acme");
    assert_eq!(r.body["settings"]["brand"], "red");

    let r = api.post(&format!("/v1/orgs/{id}/suspend"), json!({})).await;
    assert_eq!(r.body["status"], "suspended");
    let r = api
        .post(&format!("/v1/orgs/{id}/reactivate"), json!({}))
        .await;
    assert_eq!(r.body["status"], "active");

    assert_eq!(api.delete(&format!("/v1/orgs/{id}")).await.status, 204);
    let r = api.get(&format!("/v1/orgs/{id}")).await;
    assert_eq!((r.status, r.code()), (404, "not_found"));
    assert_eq!(api.delete(&format!("/v1/orgs/{id}")).await.status, 404);
    assert_eq!(
        api.get("/v1/orgs").await.body["data"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
}

#[tokio::test]
async fn errors_follow_the_spec_table() {
    let s = TestServer::start();
    let api = s.api();

    // Credentials.
    let r = s.anonymous().get("/v1/orgs").await;
    assert_eq!((r.status, r.code()), (401, "unauthenticated"));
    let r = api
        .with_token("wrong-token-wrong-token")
        .get("/v1/orgs")
        .await;
    assert_eq!((r.status, r.code()), (401, "unauthenticated"));
    let r = Api::new(&s.base, None)
        .raw(reqwest::Method::GET, "/v1/orgs", "application/json", "")
        .await;
    assert_eq!(r.status, 401);

    // Bodies.
    let r = api
        .raw(
            reqwest::Method::POST,
            "/v1/orgs",
            "application/json",
            "{not json",
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "invalid_request"));
    let r = api
        .raw(reqwest::Method::POST, "/v1/orgs", "text/plain", "{}")
        .await;
    assert_eq!((r.status, r.code()), (400, "invalid_request"));
    let r = api.post("/v1/orgs", json!({"name": 42})).await;
    assert_eq!((r.status, r.code()), (422, "invalid_request"));
    let r = api
        .post("/v1/orgs", json!({"name": "x", "colour": "blue"}))
        .await;
    assert_eq!(
        (r.status, r.code()),
        (422, "invalid_request"),
        "unknown fields are refused"
    );
    let r = api
        .post("/v1/orgs", json!({"name": "x", "slug": "Bad Slug"}))
        .await;
    assert_eq!((r.status, r.code()), (400, "invalid_request"));
    let r = api
        .post("/v1/orgs", json!({"name": "x", "plan": "platinum"}))
        .await;
    assert_eq!((r.status, r.code()), (400, "invalid_request"));
    let r = api.post("/v1/orgs", json!({"name": "   "})).await;
    assert_eq!((r.status, r.code()), (400, "invalid_request"));
    let r = api
        .post("/v1/orgs", json!({"name": "x", "settings": [1, 2]}))
        .await;
    assert_eq!((r.status, r.code()), (400, "invalid_request"));
    let r = api.get("/v1/orgs?limit=0").await;
    assert_eq!((r.status, r.code()), (400, "invalid_request"));
    let r = api.get("/v1/orgs?limit=abc").await;
    assert_eq!((r.status, r.code()), (400, "invalid_request"));

    // Conflicts.
    api.create_org("taken").await;
    let r = api
        .post("/v1/orgs", json!({"name": "Other", "slug": "taken"}))
        .await;
    assert_eq!((r.status, r.code()), (409, "conflict"));

    // Unknown routes and methods are JSON errors too.
    let r = api.get("/v1/nothing-here").await;
    assert_eq!((r.status, r.code()), (404, "not_found"));
    let r = api.send(reqwest::Method::PUT, "/v1/orgs", None).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.code(), "invalid_request");

    // Every error has a human message.
    assert!(!r.body["error"]["message"].as_str().unwrap_or("").is_empty());
}

#[tokio::test]
async fn request_ids_on_every_response() {
    let s = TestServer::start();
    let r = s.anonymous().get("/healthz").await;
    let generated = r
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    assert!(generated.is_some_and(|g| g.len() >= 16));
    let r = s.anonymous().get("/v1/orgs").await;
    assert!(
        r.headers.contains_key("x-request-id"),
        "errors carry one too"
    );

    let client = reqwest::Client::new();
    let echoed = client
        .get(format!("{}/healthz", s.base))
        .header("x-request-id", "my-trace-123")
        .send()
        .await
        .expect("send");
    assert_eq!(echoed.headers()["x-request-id"], "my-trace-123");
    let refused = client
        .get(format!("{}/healthz", s.base))
        .header("x-request-id", "bad id with spaces")
        .send()
        .await
        .expect("send");
    assert_ne!(refused.headers()["x-request-id"], "bad id with spaces");
}

#[tokio::test]
async fn concurrent_creation_of_one_org_slug_has_one_winner() {
    let s = TestServer::start();
    let api = s.api();
    let statuses = api
        .post_concurrently(
            "/v1/orgs",
            16,
            |i| json!({"name": format!("Racer {i}"), "slug": "race"}),
        )
        .await;
    assert_eq!(count(&statuses, 201), 1, "{statuses:?}");
    assert_eq!(count(&statuses, 409), 15, "{statuses:?}");
}
