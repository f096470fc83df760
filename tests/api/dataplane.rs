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

    let search_key = api.create_key(&ws, &["search"]).await;
    let searcher = api.with_token(&search_key.key);
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
    let r = searcher
        .mint_token(json!({"filter": {"group": "sales"}}))
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let token = r.body["token"].as_str().expect("token").to_string();
    let end_user = api.with_token(&token);
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
