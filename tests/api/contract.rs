//! The API contract: `/openapi.json` is served without a credential, describes what the live
//! router serves (every documented operation reaches a handler, not the router's fallback; the
//! router's recorded route table is exactly the documented set), and the answers agree with it
//! where schemathesis found they did not.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::TestServer;

async fn document(s: &TestServer) -> Value {
    let r = s.anonymous().get("/openapi.json").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body
}

#[tokio::test]
async fn the_document_is_public_openapi_3_1_with_the_four_credentials() {
    let s = TestServer::start();
    let doc = document(&s).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let schemes = doc["components"]["securitySchemes"]
        .as_object()
        .expect("security schemes");
    for name in ["operator", "session", "api_key", "tenant_token"] {
        assert_eq!(schemes[name]["scheme"], "bearer", "{name}");
    }
    // The error shape is the one every error answer has.
    let r = s.anonymous().get("/v1/me").await;
    assert_eq!(r.status, 401);
    let codes =
        &doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"];
    assert!(codes.as_array().expect("codes").contains(&json!(r.code())));
    // The key-bound data plane documents X-Tenant-ID.
    let params = &doc["paths"]["/v1/search"]["post"]["parameters"];
    assert!(params
        .as_array()
        .expect("parameters")
        .iter()
        .any(|p| p["name"] == "X-Tenant-ID" && p["in"] == "header"));
}

/// A concrete path for a template: each `{param}` becomes a value of its shape.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|seg| match seg {
            "{ws}" | "{user}" => "0190f5d6-0000-7000-8000-000000000001",
            s if s.starts_with('{') => "x1",
            s => s,
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn every_documented_operation_reaches_a_handler_and_matches_the_route_table() {
    let s = TestServer::start();
    let doc = document(&s).await;
    let mut documented = BTreeSet::new();
    let anonymous = s.anonymous();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            let m = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).expect("method");
            documented.insert((m.to_string(), path.clone()));
            // Without a credential a served route answers 401 (or its public answer); the
            // router's fallbacks answer "no such route" (404) or "method not allowed" (405).
            let r = anonymous
                .send(m.clone(), &concrete(path), Some(json!({})))
                .await;
            assert!(
                r.message() != "no such route" && r.message() != "method not allowed on this route",
                "{m} {path} is documented but not routed: {} {:?}",
                r.status,
                r.body
            );
        }
    }
    let served: BTreeSet<(String, String)> = enclave::http::route_table()
        .into_iter()
        .map(|r| (r.method.to_string(), r.path))
        .collect();
    assert_eq!(
        served, documented,
        "the router's routes and /openapi.json's operations differ"
    );
    // And a path that is not in the table is the fallback indeed (the probe above can fail).
    let r = anonymous.get("/v1/no-such-thing").await;
    assert_eq!((r.status, r.message()), (404, "no such route"));
}

/// The string enums of a component schema (`DocumentStatus`, ...).
fn enum_of(doc: &Value, name: &str) -> Vec<String> {
    doc["components"]["schemas"][name]["enum"]
        .as_array()
        .unwrap_or_else(|| panic!("{name} has no enum"))
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

/// Regression (found by schemathesis): the status enums were documented by their Rust variant
/// names (`Indexed`, `Succeeded`) while the API answers their lowercase names.
#[tokio::test]
async fn status_enums_are_documented_as_answered() {
    let s = TestServer::start();
    let doc = document(&s).await;
    let api = s.api();
    let ws = api.knowledge_workspace("contract").await;
    let doc_id = api
        .add_doc(&ws, json!({"title": "Guide", "text": "apart"}))
        .await;
    let d = api
        .get(&format!("/v1/workspaces/{ws}/documents/{doc_id}"))
        .await;
    assert_eq!(d.status, 200, "{:?}", d.body);
    let status = d.body["status"].as_str().expect("status").to_string();
    assert!(
        enum_of(&doc, "DocumentStatus").contains(&status),
        "{status}"
    );
    let jobs = api.get(&format!("/v1/workspaces/{ws}/jobs")).await;
    let job = &jobs.body["data"][0];
    for (field, schema) in [
        ("status", "JobStatus"),
        ("phase", "JobPhase"),
        ("kind", "JobKind"),
    ] {
        let v = job[field].as_str().expect("string").to_string();
        assert!(enum_of(&doc, schema).contains(&v), "{field} = {v}");
    }
}
