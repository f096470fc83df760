//! The data plane under the tenant context: scopes decide what a key may do, a tenant token's
//! filter holds on every search (a request can narrow it, never widen it), and another tenant's
//! workspace is out of reach.

use serde_json::json;

use crate::harness::TestServer;

#[tokio::test]
async fn keys_scopes_and_token_filters_hold_on_documents_and_search() {
    let s = TestServer::start();
    let api = s.api();
    let ws = api.knowledge_workspace("dp").await;
    let other = api.knowledge_workspace("dp-other").await;
    for (group, text) in [
        ("sales", "quarterly pipeline review"),
        ("eng", "quarterly pipeline outage"),
    ] {
        api.add_doc(
            &ws,
            json!({"title": group, "text": text, "metadata": {"group": group}}),
        )
        .await;
    }

    let searcher = api.key_client(&ws, &["search"]).await;
    let r = searcher
        .post(
            &format!("/v1/workspaces/{ws}/search"),
            json!({"query": "quarterly pipeline"}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["results"].as_array().map(Vec::len), Some(2));
    // No ingest scope: no writing and no reading documents.
    let r = searcher
        .post(
            &format!("/v1/workspaces/{ws}/documents"),
            json!({"title": "x", "text": "y"}),
        )
        .await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
    // Another workspace's data is not found, whatever the path says.
    let r = searcher
        .post(
            &format!("/v1/workspaces/{other}/search"),
            json!({"query": "quarterly"}),
        )
        .await;
    assert_eq!((r.status, r.code()), (404, "not_found"));

    // A tenant token for the sales group sees sales only, in every mode.
    let end_user = searcher
        .tenant_client(json!({"filter": {"group": "sales"}}))
        .await;
    let mut seen = 0;
    for mode in ["fulltext", "vector", "hybrid"] {
        for filter in [
            json!(null),
            json!({"group": {"in": ["sales", "eng"]}}),
            json!({"group": "eng"}),
        ] {
            let r = end_user
                .post(
                    &format!("/v1/workspaces/{ws}/search"),
                    json!({"query": "quarterly pipeline", "mode": mode, "filter": filter}),
                )
                .await;
            assert_eq!(r.status, 200, "{mode} {filter}: {:?}", r.body);
            for hit in r.body["results"].as_array().cloned().unwrap_or_default() {
                assert_eq!(hit["metadata"]["group"], "sales", "{mode} {filter}: {hit}");
                seen += 1;
            }
        }
    }
    assert!(
        seen >= 6,
        "the token's own group stays visible in every mode ({seen} hits)"
    );
}

#[tokio::test]
async fn key_only_routes_take_the_credentials_workspace_and_never_another() {
    let s = TestServer::start();
    let api = s.api();
    let a = api.knowledge_workspace("ko-a").await;
    let b = api.knowledge_workspace("ko-b").await;
    let doc_a = api
        .add_doc(
            &a,
            json!({"title": "a", "text": "albatross migration notes"}),
        )
        .await;
    let r = api
        .post(
            &format!("/v1/workspaces/{b}/documents?wait=true"),
            json!({"title": "b", "text": "albatross breeding secrets"}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let (doc_b, job_b) = (r.id(), r.body["job_id"].as_str().expect("job").to_string());

    let app = api.key_client(&a, &["search", "ingest"]).await;

    // Search and documents through the key-only form: the key's workspace, only.
    let r = app
        .post(
            "/v1/search",
            json!({"query": "albatross", "mode": "fulltext"}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let hits = r.body["results"].as_array().cloned().unwrap_or_default();
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(hits[0]["document_id"], doc_a.as_str());
    let r = app.get("/v1/documents").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let listed: Vec<&str> = r.body["data"]
        .as_array()
        .map(|d| d.iter().filter_map(|x| x["id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(listed, vec![doc_a.as_str()]);
    assert_eq!(app.get(&format!("/v1/documents/{doc_a}")).await.status, 200);
    let r = app
        .post(
            "/v1/documents?wait=true",
            json!({"title": "c", "text": "albatross wingspan"}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let job = r.body["job_id"].as_str().expect("job").to_string();
    let r = app.get(&format!("/v1/jobs/{job}")).await;
    assert_eq!(r.body["status"], "succeeded", "{:?}", r.body);
    assert_eq!(app.get("/v1/jobs").await.status, 200);
    assert_eq!(app.get("/v1/embedder").await.status, 200);
    // The new document landed in A, not B.
    let in_b = api
        .search(&b, json!({"query": "wingspan", "mode": "fulltext"}))
        .await;
    assert!(in_b.is_empty(), "{in_b:?}");
    assert_eq!(
        api.search(&a, json!({"query": "wingspan", "mode": "fulltext"}))
            .await
            .len(),
        1
    );
    // Changing the embedder needs `manage`.
    let r = app
        .send(
            reqwest::Method::PUT,
            "/v1/embedder",
            Some(json!({"kind": "static"})),
        )
        .await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));

    // B's data is out of reach through either form.
    for r in [
        app.get(&format!("/v1/documents/{doc_b}")).await,
        app.delete(&format!("/v1/documents/{doc_b}")).await,
        app.get(&format!("/v1/jobs/{job_b}")).await,
        app.post(&format!("/v1/jobs/{job_b}/cancel"), json!({}))
            .await,
        app.get(&format!("/v1/workspaces/{b}/documents")).await,
        app.get(&format!("/v1/workspaces/{b}/documents/{doc_b}"))
            .await,
        app.get(&format!("/v1/workspaces/{b}/jobs/{job_b}")).await,
        app.get(&format!("/v1/workspaces/{b}/embedder")).await,
        app.post(
            &format!("/v1/workspaces/{b}/search"),
            json!({"query": "albatross"}),
        )
        .await,
        app.with_header("X-Tenant-ID", &b)
            .post("/v1/search", json!({"query": "albatross"}))
            .await,
        app.with_header("X-Tenant-ID", &b)
            .get("/v1/documents")
            .await,
    ] {
        assert_eq!((r.status, r.code()), (404, "not_found"), "{:?}", r.body);
    }
    assert_eq!(
        api.get(&format!("/v1/workspaces/{b}/documents/{doc_b}"))
            .await
            .status,
        200,
        "B's document survived A's delete"
    );

    // A tenant token of A's key: key-only search with its filter.
    let end_user = app.tenant_client(json!({"scopes": ["search"]})).await;
    let r = end_user
        .post(
            "/v1/search",
            json!({"query": "albatross", "mode": "fulltext"}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["results"].as_array().map(Vec::len), Some(2));
    let r = end_user.get("/v1/documents").await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));

    // The operator and users name no workspace by their credential: a clear 400.
    let org_a = api.get(&format!("/v1/workspaces/{a}")).await.body["org_id"]
        .as_str()
        .expect("org id")
        .to_string();
    let user = api.create_user(&org_a, "ko@example.com", "admin").await;
    for who in [api.clone(), api.with_token(&user.token)] {
        for r in [
            who.post("/v1/search", json!({"query": "albatross"})).await,
            who.get("/v1/documents").await,
            who.get(&format!("/v1/documents/{doc_a}")).await,
            who.get("/v1/embedder").await,
        ] {
            assert_eq!(
                (r.status, r.code()),
                (400, "invalid_request"),
                "{:?}",
                r.body
            );
            let msg = r.message();
            assert!(msg.contains("/v1/workspaces/{ws}"), "{msg}");
        }
    }
    // Without a credential: 401 before anything else.
    let r = s
        .anonymous()
        .post("/v1/search", json!({"query": "albatross"}))
        .await;
    assert_eq!((r.status, r.code()), (401, "unauthenticated"));
}
