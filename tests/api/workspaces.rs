use serde_json::json;

use crate::harness::{count, run_scenarios, Scenario, TestServer};

#[tokio::test]
async fn workspace_crud_with_live_stats() {
    let s = TestServer::start();
    let api = s.api();
    let org = api.create_org("acme").await;
    let r = api
        .post(
            &format!("/v1/orgs/{org}/workspaces"),
            json!({"name": "Support Docs"}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let ws = r.id();
    assert_eq!(r.body["slug"], "support-docs");
    assert_eq!(r.body["org_id"].as_str(), Some(org.as_str()));
    assert!(s.data_path(&ws).join("workspace.db").is_file());
    assert!(s.data_path(&ws).join("index").is_dir());
    assert!(s.data_path(&ws).join("blobs").is_dir());

    let r = api.get(&format!("/v1/workspaces/{ws}")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["stats"]["documents"], 0);
    assert_eq!(r.body["stats"]["chunks"], 0);
    assert!(r.body["stats"]["bytes_on_disk"].as_u64().unwrap_or(0) > 0);

    // The slug can be used by org too.
    let r = api.get("/v1/orgs/acme/workspaces").await;
    assert_eq!(r.body["data"].as_array().map(Vec::len), Some(1));

    let r = api
        .patch(
            &format!("/v1/workspaces/{ws}"),
            json!({"name": "Help", "slug": "help"}),
        )
        .await;
    assert_eq!((r.status, r.body["slug"].as_str()), (200, Some("help")));
    let other = api.create_workspace(&org, "other").await;
    let other_path = format!("/v1/workspaces/{other}");
    run_scenarios(&[
        Scenario::patch("a taken slug", &api, &other_path, json!({"slug": "help"}))
            .fails(409, "conflict"),
        Scenario::patch("a bad slug", &api, &other_path, json!({"slug": "-bad-"}))
            .fails(400, "invalid_request"),
    ])
    .await;

    // The same slug is fine in another org.
    let org2 = api.create_org("globex").await;
    api.create_workspace(&org2, "help").await;

    // Purged at once (the operator's `?purge=true`; a plain delete keeps the folder for the
    // grace period).
    let path = format!("/v1/workspaces/{ws}");
    Scenario::delete("delete", &api, format!("{path}?purge=true"))
        .status(204)
        .run()
        .await;
    assert!(!s.data_path(&ws).exists(), "folder removed");
    run_scenarios(&[
        Scenario::get("a deleted workspace", &api, &path).fails(404, "not_found"),
        Scenario::delete("deleted again", &api, &path).status(404),
        Scenario::patch("a deleted workspace", &api, &path, json!({"name": "x"})).status(404),
        // Workspaces of unknown orgs.
        Scenario::post(
            "an unknown org",
            &api,
            "/v1/orgs/0191b1c8-0000-7000-8000-000000000000/workspaces",
            json!({"name": "x"}),
        )
        .fails(404, "not_found"),
    ])
    .await;
}

#[tokio::test]
async fn deleting_an_org_deletes_its_workspaces() {
    let s = TestServer::start();
    let api = s.api();
    let org = api.create_org("doomed").await;
    let keep_org = api.create_org("kept").await;
    let a = api.create_workspace(&org, "a").await;
    let b = api.create_workspace(&org, "b").await;
    let kept = api.create_workspace(&keep_org, "a").await;
    // Open one so deletion has to close it.
    assert_eq!(api.get(&format!("/v1/workspaces/{a}")).await.status, 200);

    assert_eq!(
        api.delete(&format!("/v1/orgs/{org}?purge=true"))
            .await
            .status,
        204
    );
    for ws in [&a, &b] {
        assert_eq!(api.get(&format!("/v1/workspaces/{ws}")).await.status, 404);
        assert!(!s.data_path(ws).exists());
    }
    assert_eq!(api.get(&format!("/v1/workspaces/{kept}")).await.status, 200);
    assert_eq!(
        api.get(&format!("/v1/orgs/{org}/workspaces")).await.status,
        404
    );
}

#[tokio::test]
async fn concurrent_creation_of_one_workspace_slug_has_one_winner() {
    let s = TestServer::start();
    let api = s.api();
    let org = api.create_org("racers").await;
    let path = format!("/v1/orgs/{org}/workspaces");
    let statuses = api
        .post_concurrently(
            &path,
            20,
            |i| json!({"name": format!("W {i}"), "slug": "same"}),
        )
        .await;
    assert_eq!(count(&statuses, 201), 1, "{statuses:?}");
    assert_eq!(count(&statuses, 409), 19, "{statuses:?}");
    // Losers left no store behind: exactly one workspace folder exists.
    let folders = std::fs::read_dir(&s.data_dir)
        .expect("read data dir")
        .flatten()
        .filter(|e| uuid::Uuid::try_parse(&e.file_name().to_string_lossy()).is_ok())
        .count();
    assert_eq!(folders, 1);
}
