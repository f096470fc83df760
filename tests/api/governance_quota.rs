//! Governance, part A: plans and per-org limits, quotas enforced before work is accepted
//! (concurrently, at the limit and never below), rate limits with their headers (by the
//! injected clock), suspension on every route, soft deletion with restore and purge, and an
//! org's first owner.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::{Api, Options, TestServer};

async fn put(api: &Api, path: &str, body: Value) -> crate::harness::Resp {
    api.send(Method::PUT, path, Some(body)).await
}

/// Sets an org's overrides (the operator's `PUT /v1/admin/orgs/{org}/limits`).
async fn limit(api: &Api, org: &str, overrides: Value) {
    let r = put(api, &format!("/v1/admin/orgs/{org}/limits"), overrides).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
}

fn assert_quota(r: &crate::harness::Resp, resource: &str, limit: u64, used: u64) {
    assert_eq!(
        (r.status, r.code()),
        (429, "quota_exceeded"),
        "{:?}",
        r.body
    );
    let e = &r.body["error"];
    assert_eq!(
        (
            e["resource"].as_str(),
            e["limit"].as_u64(),
            e["used"].as_u64()
        ),
        (Some(resource), Some(limit), Some(used)),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn plans_are_the_operators_and_built_in_ones_stay() {
    let s = TestServer::start();
    let api = s.api();
    let r = api.get("/v1/admin/plans").await;
    assert_eq!(r.status, 200);
    let ids: Vec<&str> = r.body["data"]
        .as_array()
        .expect("plans")
        .iter()
        .filter_map(|p| p["id"].as_str())
        .collect();
    assert_eq!(ids, ["free", "team", "enterprise"]);
    assert_eq!(r.body["data"][0]["limits"]["workspaces"], 3);
    assert_eq!(r.body["data"][2]["limits"]["workspaces"], Value::Null);

    // A custom plan: missing limits are unlimited.
    let r = api
        .post(
            "/v1/admin/plans",
            json!({"id": "startup", "name": "Startup", "limits": {"workspaces": 5, "ingest_priority": 3}}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["limits"]["workspaces"], 5);
    assert_eq!(r.body["limits"]["documents"], Value::Null);
    assert_eq!(r.body["limits"]["ingest_priority"], 3);
    let r = api.post("/v1/admin/plans", json!({"id": "startup"})).await;
    assert_eq!(r.status, 409);
    let r = api
        .post(
            "/v1/admin/plans",
            json!({"id": "bad", "limits": {"seats": 3}}),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "invalid_request"));
    assert!(r.message().contains("members"), "{}", r.message());
    let r = api
        .patch(
            "/v1/admin/plans/startup",
            json!({"limits": {"documents": 100}}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        (
            &r.body["limits"]["workspaces"],
            &r.body["limits"]["documents"]
        ),
        (&json!(5), &json!(100))
    );

    // An org on it; a plan in use or built in is not deleted.
    let r = api
        .post(
            "/v1/orgs",
            json!({"name": "S", "slug": "s", "plan": "startup"}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let org = r.id();
    assert_eq!(api.delete("/v1/admin/plans/startup").await.status, 409);
    assert_eq!(api.delete("/v1/admin/plans/free").await.status, 409);
    let r = api.get(&format!("/v1/admin/orgs/{org}/limits")).await;
    assert_eq!(r.body["plan"], "startup");
    assert_eq!(r.body["effective"]["workspaces"], 5);
    assert_eq!(r.body["used"]["workspaces"], 0);
    api.patch(&format!("/v1/orgs/{org}"), json!({"plan": "team"}))
        .await;
    assert_eq!(api.delete("/v1/admin/plans/startup").await.status, 204);
    assert_eq!(api.get("/v1/admin/plans/startup").await.status, 404);

    // Only the operator.
    let user = api.create_user(&org, "o@s.io", "owner").await;
    let u = api.with_token(&user.token);
    assert_eq!(u.get("/v1/admin/plans").await.status, 403);
    assert_eq!(
        put(&u, &format!("/v1/admin/orgs/{org}/limits"), json!({}))
            .await
            .status,
        403
    );
    // Members read their own limits.
    let r = u.get(&format!("/v1/orgs/{org}/limits")).await;
    assert_eq!((r.status, &r.body["plan"]), (200, &json!("team")));
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_workspace_creations_stop_exactly_at_the_limit() {
    let s = TestServer::start();
    let api = s.api();
    let r = api
        .post("/v1/orgs", json!({"name": "quota", "plan": "free"})) // 3 workspaces
        .await;
    let org = r.id();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let api = api.clone();
            let org = org.clone();
            tokio::spawn(async move {
                api.post(
                    &format!("/v1/orgs/{org}/workspaces"),
                    json!({"name": format!("w{i}")}),
                )
                .await
            })
        })
        .collect();
    let mut created = 0;
    for t in tasks {
        let r = t.await.expect("task");
        match r.status {
            201 => created += 1,
            _ => assert_quota(&r, "workspaces", 3, 3),
        }
    }
    assert_eq!(created, 3);
    // An override lifts it; null is unlimited; deleting frees room.
    limit(&api, &org, json!({"workspaces": 4})).await;
    let ws = api.create_workspace(&org, "fourth").await;
    let r = api
        .post(
            &format!("/v1/orgs/{org}/workspaces"),
            json!({"name": "fifth"}),
        )
        .await;
    assert_quota(&r, "workspaces", 4, 4);
    assert_eq!(
        api.delete(&format!("/v1/workspaces/{ws}")).await.status,
        204
    );
    api.create_workspace(&org, "fifth").await;
    limit(&api, &org, json!({"workspaces": null})).await;
    api.create_workspace(&org, "sixth").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn documents_storage_and_upload_size_are_refused_at_upload() {
    let s = TestServer::start();
    let api = s.api();
    let org = api.create_org("docs").await;
    let ws = api.create_workspace(&org, "w").await;
    let docs = format!("/v1/workspaces/{ws}/documents");
    limit(&api, &org, json!({"documents": 2})).await;
    for i in 0..2 {
        let r = api
            .post(&docs, json!({"text": format!("document number {i}")}))
            .await;
        assert_eq!(r.status, 202, "{:?}", r.body);
    }
    let r = api.post(&docs, json!({"text": "one too many"})).await;
    assert_quota(&r, "documents", 2, 2);
    // The same document again is no new one: answered as the duplicate it is, even at the limit.
    let r = api.post(&docs, json!({"text": "document number 0"})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["duplicate"], true, "{:?}", r.body);
    // A deletion frees room.
    let list = api.get(&docs).await;
    let id = list.body["data"][0]["id"]
        .as_str()
        .expect("doc")
        .to_string();
    assert_eq!(api.delete(&format!("{docs}/{id}")).await.status, 204);
    let r = api.post(&docs, json!({"text": "now it fits"})).await;
    assert_eq!(r.status, 202, "{:?}", r.body);

    // Storage: what is on disk already is over a tiny limit, so the upload is refused whole.
    limit(&api, &org, json!({"storage_bytes": 1000})).await;
    let r = api.post(&docs, json!({"text": "x".repeat(10)})).await;
    assert_eq!(
        (r.status, r.code()),
        (429, "quota_exceeded"),
        "{:?}",
        r.body
    );
    assert_eq!(r.body["error"]["resource"], "storage_bytes");
    assert!(r.body["error"]["used"].as_u64().unwrap_or(0) > 1000);
    let count = api.get(&docs).await.body["data"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(count, 2, "nothing of the refused upload was stored");

    // The plan's upload size.
    limit(&api, &org, json!({"upload_bytes": 10})).await;
    let r = api
        .post(&docs, json!({"text": "more than ten bytes"}))
        .await;
    assert_eq!(
        (r.status, r.code()),
        (413, "payload_too_large"),
        "{:?}",
        r.body
    );
    // Three refusals (documents, storage, upload size), each counted once; the duplicate
    // answered at the limit is none.
    assert_eq!(refusals(&api, &org, &ws).await, (3, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn members_and_api_keys_have_quotas() {
    let s = TestServer::start();
    let api = s.api();
    let org = api.create_org("seats").await;
    let ws = api.create_workspace(&org, "w").await;
    limit(&api, &org, json!({"members": 2, "api_keys": 1})).await;
    api.create_user(&org, "a@x.io", "owner").await;
    // An open invitation holds the second seat.
    let r = api
        .post(
            &format!("/v1/orgs/{org}/invitations"),
            json!({"email": "b@x.io", "role": "member"}),
        )
        .await;
    assert_eq!(r.status, 201);
    let r = api
        .post(
            &format!("/v1/orgs/{org}/invitations"),
            json!({"email": "c@x.io", "role": "member"}),
        )
        .await;
    assert_quota(&r, "members", 2, 2);

    let key = api.create_key(&ws, &["search"]).await;
    let r = api
        .post(
            &format!("/v1/workspaces/{ws}/api-keys"),
            json!({"name": "k2", "scopes": ["search"]}),
        )
        .await;
    assert_quota(&r, "api_keys", 1, 1);
    // Revoking frees the slot.
    let r = api
        .delete(&format!("/v1/workspaces/{ws}/api-keys/{}", key.id))
        .await;
    assert_eq!(r.status, 204);
    let r = api
        .post(
            &format!("/v1/workspaces/{ws}/api-keys"),
            json!({"name": "k2", "scopes": ["search"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    // The key refusal is the workspace's; the member refusal the org's own (no workspace).
    assert_eq!(refusals(&api, &org, &ws).await, (1, 0));
    let r = api
        .get(&format!("/v1/orgs/{org}/usage?granularity=month"))
        .await;
    assert_eq!(r.body["data"][0]["quota_refusals"], 2, "{:?}", r.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limits_per_key_and_per_org_with_headers() {
    let s = TestServer::start();
    let api = s.api();
    let org = api.create_org("rate").await;
    let ws = api.create_workspace(&org, "w").await;
    limit(
        &api,
        &org,
        json!({"requests_per_minute_per_key": 3, "requests_per_minute_per_org": 5}),
    )
    .await;
    let k1 = api.with_token(&api.create_key(&ws, &["search"]).await.key);
    let k2 = api.with_token(&api.create_key(&ws, &["search"]).await.key);
    let search = json!({"query": "anything"});
    for i in 0..3 {
        let r = k1.post("/v1/search", search.clone()).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        let policy = r.headers["ratelimit-policy"].to_str().unwrap_or("");
        assert_eq!(policy, "\"key\";q=3;w=60, \"org\";q=5;w=60");
        let state = r.headers["ratelimit"].to_str().unwrap_or("");
        assert!(
            state.starts_with(&format!("\"key\";r={};t=", 2 - i)),
            "{state}"
        );
    }
    let r = k1.post("/v1/search", search.clone()).await;
    assert_eq!((r.status, r.code()), (429, "rate_limited"), "{:?}", r.body);
    let retry: u64 = r.headers["retry-after"]
        .to_str()
        .ok()
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=20).contains(&retry), "{retry}");
    assert!(r.headers.contains_key("ratelimit"));
    // The second key has its own bucket, but shares the org's (5 a minute: 3 used).
    assert_eq!(k2.post("/v1/search", search.clone()).await.status, 200);
    assert_eq!(k2.post("/v1/search", search.clone()).await.status, 200);
    let r = k2.post("/v1/search", search.clone()).await;
    assert_eq!((r.status, r.code()), (429, "rate_limited"));
    assert!(
        r.headers["ratelimit"]
            .to_str()
            .unwrap_or("")
            .contains("\"org\";r=0"),
        "{:?}",
        r.headers
    );
    // The operator is never limited.
    assert_eq!(
        api.post(&format!("/v1/workspaces/{ws}/search"), search.clone())
            .await
            .status,
        200
    );
    // Both refusals are counted in the workspace's usage (and nothing else is).
    let (quota, rate) = refusals(&api, &org, &ws).await;
    assert_eq!((quota, rate), (0, 2));
    // Time (the injected clock) refills the buckets.
    s.advance_clock(Duration::from_secs(60));
    assert_eq!(k1.post("/v1/search", search.clone()).await.status, 200);
    // Unlimited again: no headers.
    limit(&api, &org, json!({})).await;
    limit(
        &api,
        &org,
        json!({"requests_per_minute_per_key": null, "requests_per_minute_per_org": null}),
    )
    .await;
    let r = k1.post("/v1/search", search.clone()).await;
    assert_eq!(r.status, 200);
    assert!(!r.headers.contains_key("ratelimit"), "{:?}", r.headers);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_suspended_org_is_refused_on_every_route_until_reactivated() {
    let s = TestServer::start();
    let api = s.api();
    let org = api.create_org("susp").await;
    let ws = api.create_workspace(&org, "w").await;
    let key = api.with_token(
        &api.create_key(&ws, &["search", "chat", "ingest", "manage"])
            .await
            .key,
    );
    let user = api.create_user(&org, "u@susp.io", "owner").await;
    let u = api.with_token(&user.token);
    let mcp_init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-03-26", "capabilities": {},
                   "clientInfo": {"name": "t", "version": "1"}}});
    let calls: Vec<(Method, String, Option<Value>)> = vec![
        (
            Method::POST,
            "/v1/search".into(),
            Some(json!({"query": "x"})),
        ),
        (Method::GET, "/v1/documents".into(), None),
        (
            Method::POST,
            "/v1/documents".into(),
            Some(json!({"text": "x"})),
        ),
        (
            Method::POST,
            "/v1/chat".into(),
            Some(json!({"message": "hi"})),
        ),
        (Method::POST, "/v1/mcp".into(), Some(mcp_init.clone())),
        (Method::GET, "/v1/openai/v1/models".into(), None),
        (
            Method::POST,
            "/v1/openai/v1/chat/completions".into(),
            Some(json!({"model": "default", "messages": [{"role": "user", "content": "hi"}]})),
        ),
        (Method::GET, "/v1/agents".into(), None),
    ];
    assert_eq!(
        api.post(&format!("/v1/orgs/{org}/suspend"), json!({}))
            .await
            .status,
        200
    );
    for (m, path, body) in &calls {
        let r = key.send(m.clone(), path, body.clone()).await;
        assert_eq!(
            (r.status, r.code()),
            (403, "tenant_suspended"),
            "key {m} {path}"
        );
        let ws_path = path.replacen("/v1/", &format!("/v1/workspaces/{ws}/"), 1);
        let r = u.send(m.clone(), &ws_path, body.clone()).await;
        assert_eq!(
            (r.status, r.code()),
            (403, "tenant_suspended"),
            "user {m} {ws_path}"
        );
    }
    for path in [
        format!("/v1/orgs/{org}"),
        format!("/v1/orgs/{org}/limits"),
        format!("/v1/orgs/{org}/workspaces"),
    ] {
        let r = u.get(&path).await;
        assert_eq!((r.status, r.code()), (403, "tenant_suspended"), "{path}");
    }
    assert_eq!(
        api.post(&format!("/v1/orgs/{org}/reactivate"), json!({}))
            .await
            .status,
        200
    );
    let r = key.get("/v1/openai/v1/models").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = key.send(Method::POST, "/v1/mcp", Some(mcp_init)).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(u.get(&format!("/v1/orgs/{org}")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn soft_deletion_keeps_data_for_the_grace_period_then_purges() {
    let s = TestServer::start();
    let api = s.api();
    let org = api.create_org("life").await;
    let ws = api.create_workspace(&org, "w").await;
    let key = api.create_key(&ws, &["search", "ingest"]).await;
    let k = api.with_token(&key.key);
    let r = k
        .post("/v1/documents?wait=true", json!({"text": "the blue whale"}))
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let folder = s.data_path(&ws);
    let owner = api.create_user(&org, "o@life.io", "owner").await;
    let o = api.with_token(&owner.token);

    // Deleted: invisible and unusable at once, its folder kept.
    let r = o.delete(&format!("/v1/workspaces/{ws}?purge=true")).await;
    assert_eq!(
        (r.status, r.code()),
        (403, "forbidden"),
        "only the operator purges"
    );
    assert_eq!(o.delete(&format!("/v1/workspaces/{ws}")).await.status, 204);
    assert_eq!(o.get(&format!("/v1/workspaces/{ws}")).await.status, 404);
    assert_eq!(
        k.post("/v1/search", json!({"query": "whale"})).await.status,
        401
    );
    assert!(folder.is_dir());
    let r = api.get("/v1/admin/deleted").await;
    assert!(r.body["data"]
        .as_array()
        .expect("deleted")
        .iter()
        .any(|d| d["id"] == json!(ws) && d["kind"] == "workspace"));
    // Restored by the operator, with its data and keys.
    assert_eq!(
        o.post(&format!("/v1/workspaces/{ws}/restore"), json!({}))
            .await
            .status,
        403
    );
    let r = api
        .post(&format!("/v1/workspaces/{ws}/restore"), json!({}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = k.post("/v1/search", json!({"query": "whale"})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.body["results"].as_array().map(Vec::len),
        Some(1),
        "{:?}",
        r.body
    );

    // The org: deleted with its workspace, restored with it.
    assert_eq!(o.delete(&format!("/v1/orgs/{org}")).await.status, 204);
    assert_eq!(api.get(&format!("/v1/orgs/{org}")).await.status, 404);
    assert_eq!(api.get(&format!("/v1/workspaces/{ws}")).await.status, 404);
    let r = api
        .post(&format!("/v1/orgs/{org}/restore"), json!({}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["restored_workspaces"], json!([ws]));
    assert_eq!(o.get(&format!("/v1/workspaces/{ws}")).await.status, 200);

    // Past the grace period (7 days by default) the upkeep purges; no restore after that.
    assert_eq!(o.delete(&format!("/v1/orgs/{org}")).await.status, 204);
    s.app.tenancy().purge_due();
    assert!(folder.is_dir(), "kept during the grace period");
    s.advance_clock(Duration::from_secs(7 * 24 * 3600 + 60));
    s.app.tenancy().purge_due();
    assert!(!folder.exists(), "purged after the grace period");
    let r = api
        .post(&format!("/v1/orgs/{org}/restore"), json!({}))
        .await;
    assert_eq!(r.status, 404);

    // `?purge=true` by the operator: gone at once.
    let org2 = api.create_org("life2").await;
    let ws2 = api.create_workspace(&org2, "w").await;
    let folder2 = s.data_path(&ws2);
    assert!(folder2.is_dir());
    assert_eq!(
        api.delete(&format!("/v1/orgs/{org2}?purge=true"))
            .await
            .status,
        204
    );
    assert!(!folder2.exists());
    assert_eq!(
        api.post(&format!("/v1/orgs/{org2}/restore"), json!({}))
            .await
            .status,
        404
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_org_can_be_created_with_its_first_owner() {
    let s = TestServer::start();
    let api = s.api();
    let r = api
        .post(
            "/v1/orgs",
            json!({"name": "Owned", "owner_email": "Boss@Owned.io"}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let org = r.id();
    let inv = &r.body["owner_invitation"];
    assert_eq!(
        (inv["email"].as_str(), inv["role"].as_str()),
        (Some("boss@owned.io"), Some("owner"))
    );
    let token = inv["token"].as_str().expect("token");
    let r = api
        .without_token()
        .post(
            &format!("/v1/invitations/{token}/accept"),
            json!({"password": crate::harness::PASSWORD}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let boss = api.with_token(r.body["token"].as_str().expect("session"));
    let r = boss.get(&format!("/v1/orgs/{org}/members")).await;
    assert_eq!(r.body["data"][0]["role"], "owner", "{:?}", r.body);
    // A bad email creates nothing.
    let r = api
        .post(
            "/v1/orgs",
            json!({"name": "Nobody", "slug": "nobody", "owner_email": "not-an-email"}),
        )
        .await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert_eq!(api.get("/v1/orgs/nobody").await.status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn monthly_chat_tokens_and_embedding_chunks_stop_at_their_allowance() {
    let s = TestServer::start();
    let api = s.api();
    let org = api.create_org("monthly").await;
    let ws = api.create_workspace(&org, "w").await;
    let docs = format!("/v1/workspaces/{ws}/documents");
    limit(
        &api,
        &org,
        json!({"chat_tokens_per_month": 1, "embedding_chunks_per_month": 1}),
    )
    .await;
    let r = api
        .post(
            &format!("{docs}?wait=true"),
            json!({"text": "otters hold hands while they sleep"}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    // The embedding of its chunk runs after full text; then the month's allowance is used up.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let r = api.get(&format!("/v1/orgs/{org}/limits")).await;
        if r.body["used"]["embedding_chunks_per_month"]
            .as_u64()
            .unwrap_or(0)
            >= 1
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{:?}", r.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = api.post(&docs, json!({"text": "another one"})).await;
    assert_eq!(
        (r.status, r.code()),
        (429, "quota_exceeded"),
        "{:?}",
        r.body
    );
    assert_eq!(r.body["error"]["resource"], "embedding_chunks_per_month");

    // Chat (extractive: its tokens are estimated) below the allowance, then refused.
    let chat = format!("/v1/workspaces/{ws}/chat");
    let r = api
        .post(&chat, json!({"query": "what do otters do?"}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = api
        .post(&chat, json!({"query": "what do otters do?"}))
        .await;
    assert_eq!(
        (r.status, r.code()),
        (429, "quota_exceeded"),
        "{:?}",
        r.body
    );
    assert_eq!(r.body["error"]["resource"], "chat_tokens_per_month");
    // Each refusal is counted once, in the workspace's usage.
    assert_eq!(refusals(&api, &org, &ws).await, (2, 0));
    let used = api.get(&format!("/v1/orgs/{org}/limits")).await.body["used"].clone();

    // The allowances are the metered usage: a restart (usage flushed at shutdown) keeps them.
    let data = s.data_dir.clone();
    let tmp = s.stop();
    let s = TestServer::start_with(Options::on(&data, 1));
    let api = s.api();
    let r = api.get(&format!("/v1/orgs/{org}/limits")).await;
    assert_eq!(
        r.body["used"]["chat_tokens_per_month"],
        used["chat_tokens_per_month"]
    );
    assert_eq!(
        r.body["used"]["embedding_chunks_per_month"],
        used["embedding_chunks_per_month"]
    );
    let r = api
        .post(&chat, json!({"query": "what do otters do?"}))
        .await;
    assert_eq!(
        (r.status, r.code()),
        (429, "quota_exceeded"),
        "{:?}",
        r.body
    );
    // Next month starts over.
    s.advance_clock(Duration::from_secs(32 * 24 * 3600));
    let r = api
        .post(&chat, json!({"query": "what do otters do?"}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    drop(s);
    drop(tmp);
}

/// The workspace's quota and rate-limit refusals this month, from the usage report.
async fn refusals(api: &Api, org: &str, ws: &str) -> (u64, u64) {
    let r = api
        .get(&format!(
            "/v1/orgs/{org}/usage?granularity=month&workspace={ws}"
        ))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let rows = r.body["data"].as_array().cloned().unwrap_or_default();
    let sum = |k: &str| rows.iter().map(|r| r[k].as_u64().unwrap_or(0)).sum::<u64>();
    (sum("quota_refusals"), sum("rate_limit_refusals"))
}

/// Runs the real binary on the server's data directory.
fn enclave_cli(s: &TestServer, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_enclave"))
        .arg("--data-dir")
        .arg(&s.data_dir)
        .args(args)
        .env("ENCLAVE_LOG", "warn")
        .env_remove("ENCLAVE_ADMIN_TOKEN")
        .env_remove("ENCLAVE_SERVER")
        .env_remove("ENCLAVE_TOKEN")
        .output()
        .expect("run enclave");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_command_line_manages_plans_and_suspends_through_the_running_server() {
    let s = TestServer::start();
    let api = s.api();
    let org = api.create_org("clisusp").await;
    let ws = api.create_workspace(&org, "w").await;
    let key = api.with_token(&api.create_key(&ws, &["search"]).await.key);

    // Plans: written to the control plane beside the running server.
    let (ok, out) = enclave_cli(
        &s,
        &[
            "plan",
            "create",
            "--id",
            "cli-plan",
            "--limits",
            r#"{"workspaces": 1}"#,
        ],
    );
    assert!(ok, "{out}");
    let r = api.get("/v1/admin/plans/cli-plan").await;
    assert_eq!(
        (r.status, &r.body["limits"]["workspaces"]),
        (200, &json!(1))
    );
    let (ok, out) = enclave_cli(&s, &["plan", "create", "--id", "x", "--limits", "{"]);
    assert!(!ok && out.contains("--limits"), "{out}");

    // Suspension while a server holds the data directory: without the operator token the
    // command says what it needs; with it, it goes through the server's API.
    let (ok, out) = enclave_cli(&s, &["org", "suspend", &org]);
    assert!(!ok && out.contains("operator token"), "{out}");
    let remote = ["--server", s.base.as_str(), "--token", s.token.as_str()];
    let (ok, out) = enclave_cli(&s, &[&["org", "suspend", &org][..], &remote[..]].concat());
    assert!(ok, "{out}");
    let r = key.post("/v1/search", json!({"query": "x"})).await;
    assert_eq!((r.status, r.code()), (403, "tenant_suspended"));
    let (ok, out) = enclave_cli(
        &s,
        &[&["org", "reactivate", &org][..], &remote[..]].concat(),
    );
    assert!(ok, "{out}");
    assert_eq!(
        key.post("/v1/search", json!({"query": "x"})).await.status,
        200
    );
}
