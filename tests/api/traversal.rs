use serde_json::json;

use crate::harness::{tree, TestServer};

/// Hostile workspace and org ids get 400 or 404 and never reach the filesystem.
#[tokio::test]
async fn hostile_ids_never_become_paths() {
    let s = TestServer::start();
    let api = s.api();
    let org = api.create_org("victim").await;
    let ws = api.create_workspace(&org, "w").await;
    let before = tree(&s.data_dir);

    let long = "a".repeat(5000);
    let hostile = [
        "..",
        "%2e%2e",
        "%2E%2E",
        ".%2e",
        "..%2F..%2Fetc%2Fpasswd",
        "%2e%2e%2fcontrol.db",
        "%2Fetc%2Fpasswd",
        "%2F",
        "control.db",
        ".trash",
        "%00",
        "abc%00def",
        &format!("{ws}%00"),
        &format!("{ws}%2F..%2F..%2Fcontrol.db"),
        &format!("%7B{ws}%7D"),
        &format!("urn:uuid:{ws}"),
        &format!("{ws}.."),
        "~root",
        "C:%5Cwindows",
        &long,
    ];
    for id in hostile {
        for (method, path) in [
            ("GET", format!("/v1/workspaces/{id}")),
            ("PATCH", format!("/v1/workspaces/{id}")),
            ("DELETE", format!("/v1/workspaces/{id}")),
            ("GET", format!("/v1/orgs/{id}")),
            ("GET", format!("/v1/orgs/{id}/workspaces")),
            ("POST", format!("/v1/orgs/{id}/workspaces")),
        ] {
            let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
            let body = (method != "GET" && method != "DELETE").then(|| json!({"name": "x"}));
            let r = api.send(m, &path, body).await;
            assert!(
                r.status == 400 || r.status == 404,
                "{method} {path}: {} {:?}",
                r.status,
                r.body
            );
            assert!(
                r.body["error"]["code"].is_string(),
                "{method} {path}: JSON error"
            );
        }
    }
    assert_eq!(
        tree(&s.data_dir),
        before,
        "the data dir was changed by hostile requests"
    );
    let r = api.get(&format!("/v1/workspaces/{ws}")).await;
    assert_eq!(r.status, 200, "the real workspace is unharmed");
    assert!(s.data_path("control.db").is_file());
}

/// An id in any accepted spelling reaches the one canonical folder.
#[tokio::test]
async fn id_spellings_are_canonicalised() {
    let s = TestServer::start();
    let api = s.api();
    let org = api.create_org("o").await;
    let ws = api.create_workspace(&org, "w").await;
    let upper = ws.to_uppercase();
    let simple = ws.replace('-', "");
    for id in [upper, simple] {
        let r = api.get(&format!("/v1/workspaces/{id}")).await;
        assert_eq!((r.status, r.body["id"].as_str()), (200, Some(ws.as_str())));
    }
}
