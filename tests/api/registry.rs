use std::collections::HashMap;

use crate::harness::{metric, Options, TestServer};

/// 50 workspaces used concurrently through a cache of capacity 4: every answer right, never more
/// than 4 stores open, no error.
#[tokio::test]
async fn fifty_workspaces_through_a_cache_of_four() {
    let s = TestServer::start_with(Options::configured(|c| c.max_open_workspaces = 4));
    let api = s.api();
    let mut expected: HashMap<String, (String, String)> = HashMap::new();
    for o in 0..5 {
        let org = api.create_org(&format!("org-{o}")).await;
        for w in 0..10 {
            let slug = format!("ws-{o}-{w}");
            let id = api.create_workspace(&org, &slug).await;
            expected.insert(id, (org.clone(), slug));
        }
    }
    let ids: Vec<String> = expected.keys().cloned().collect();
    let expected = std::sync::Arc::new(expected);

    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let api = api.clone();
            let ids = ids.clone();
            let expected = expected.clone();
            tokio::spawn(async move {
                let mut errors = Vec::new();
                for i in 0..25 {
                    let id = &ids[(t * 7 + i * 13) % ids.len()];
                    let r = api.get(&format!("/v1/workspaces/{id}")).await;
                    let (org, slug) = &expected[id];
                    let right = r.status == 200
                        && r.body["id"].as_str() == Some(id.as_str())
                        && r.body["org_id"].as_str() == Some(org.as_str())
                        && r.body["slug"].as_str() == Some(slug.as_str())
                        && r.body["stats"]["documents"] == 0;
                    if !right {
                        errors.push(format!("{id}: {} {:?}", r.status, r.body));
                    }
                }
                errors
            })
        })
        .collect();
    for t in tasks {
        let errors = t.await.expect("join");
        assert!(errors.is_empty(), "{errors:?}");
    }
    let m = s.anonymous().text("/metrics").await;
    assert!(metric(&m, "enclave_workspaces_open_peak") <= 4, "{m}");
    assert!(metric(&m, "enclave_workspaces_open") <= 4, "{m}");
    assert!(metric(&m, "enclave_workspace_evictions_total") > 0, "{m}");
    assert_eq!(
        metric(&m, "enclave_http_responses_total{class=\"5xx\"}"),
        0,
        "{m}"
    );
}

/// Deleting a workspace that a request holds open: the holder finishes, nothing reopens it.
#[tokio::test]
async fn delete_while_held_then_nothing_reopens_it() {
    let s = TestServer::start_with(Options::configured(|c| c.max_open_workspaces = 1));
    let api = s.api();
    let org = api.create_org("o").await;
    let ws = api.create_workspace(&org, "w").await;
    let other = api.create_workspace(&org, "x").await;
    let id = uuid::Uuid::try_parse(&ws).expect("uuid");

    // Hold the store as a slow request would.
    let held = s.app.registry().get(id).expect("open");
    // Purged at once (the operator's `?purge=true`; a plain delete keeps the folder for the
    // grace period).
    assert_eq!(
        api.delete(&format!("/v1/workspaces/{ws}?purge=true"))
            .await
            .status,
        204
    );
    let docs: i64 = held
        .conn()
        .query_row("SELECT count(*) FROM documents", [], |r| r.get(0))
        .expect("the holder's store still works after deletion");
    assert_eq!(docs, 0);
    assert_eq!(api.get(&format!("/v1/workspaces/{ws}")).await.status, 404);
    drop(held);
    // The slot is free again: another workspace opens in the cache of one.
    assert_eq!(
        api.get(&format!("/v1/workspaces/{other}")).await.status,
        200
    );
    assert!(!s.data_path(&ws).exists());
}

/// A request for a workspace waits while every slot is held, then succeeds.
#[tokio::test]
async fn a_request_waits_for_a_held_slot() {
    let s = TestServer::start_with(Options::configured(|c| c.max_open_workspaces = 1));
    let api = s.api();
    let org = api.create_org("o").await;
    let a = api.create_workspace(&org, "a").await;
    let b = api.create_workspace(&org, "b").await;
    let held = s
        .app
        .registry()
        .get(uuid::Uuid::try_parse(&a).expect("uuid"))
        .expect("open a");
    let waiting = {
        let api = api.clone();
        tokio::spawn(async move { api.get(&format!("/v1/workspaces/{b}")).await.status })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "b must wait while a holds the only slot"
    );
    drop(held);
    assert_eq!(waiting.await.expect("join"), 200);
}

/// When slots stay held past the wait limit the answer is a clear 503, never a hang.
#[tokio::test]
async fn a_full_cache_answers_503_after_the_wait_limit() {
    let s = TestServer::start_with(Options::configured(|c| {
        c.max_open_workspaces = 1;
        c.open_wait_secs = 0;
    }));
    let api = s.api();
    let org = api.create_org("o").await;
    let a = api.create_workspace(&org, "a").await;
    let b = api.create_workspace(&org, "b").await;
    let _held = s
        .app
        .registry()
        .get(uuid::Uuid::try_parse(&a).expect("uuid"))
        .expect("open a");
    let r = api.get(&format!("/v1/workspaces/{b}")).await;
    assert_eq!((r.status, r.code()), (503, "unavailable"));
    assert!(r.headers.contains_key("retry-after"));
}
