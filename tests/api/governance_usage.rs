//! Issue 12 part B: the audit trails (recorded, listed, filtered, tamper-evident), metered usage
//! (reconciled exactly against a known workload) and the metrics.

use std::process::Command;

use serde_json::{json, Value};

use crate::cli::enclave;
use crate::harness::TestServer;
use enclave::governance::usage::Refusal;

fn actions(body: &Value) -> Vec<String> {
    body["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|e| e["action"].as_str().unwrap_or("").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_state_change_is_audited_in_its_own_chain() {
    let srv = TestServer::start();
    let op = srv.api();
    let org = op.create_org("audited").await;
    let ws = op.create_workspace(&org, "audited-ws").await;
    op.use_static_embedder(&ws).await;
    let admin_user = op.create_user(&org, "admin@audited.test", "admin").await;
    let admin = op.with_token(&admin_user.token);
    let viewer = op.user_client(&org, "viewer@audited.test", "viewer").await;
    let key = admin.create_key(&ws, &["ingest"]).await;
    let ingest = op.with_token(&key.key);

    // An API key adds and deletes a document; a user creates an agent; a viewer is refused.
    let r = ingest
        .post("/v1/documents?wait=true", json!({"text": "audited words"}))
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let doc = r.id();
    let r = ingest
        .with_header("x-request-id", "delete-req-1")
        .delete(&format!("/v1/documents/{doc}"))
        .await;
    assert_eq!(r.status, 204, "{:?}", r.body);
    let r = admin
        .post(
            &format!("/v1/workspaces/{ws}/agents"),
            json!({"name": "Helper", "slug": "helper"}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let agent = r.id();
    let r = viewer
        .post(
            &format!("/v1/workspaces/{ws}/agents"),
            json!({"name": "Nope", "slug": "nope"}),
        )
        .await;
    assert_eq!(r.status, 403);
    // Reads are not audited.
    assert_eq!(ingest.get("/v1/documents").await.status, 200);

    let trail = admin.get(&format!("/v1/workspaces/{ws}/audit")).await;
    assert_eq!(trail.status, 200, "{:?}", trail.body);
    // Newest first: the refused agent, the agent, the deletion, the addition, the key, the
    // embedder.
    assert_eq!(
        actions(&trail.body),
        [
            "agent.create",
            "agent.create",
            "document.delete",
            "document.add",
            "api_key.create",
            "embedder.set"
        ]
    );
    let e = &trail.body["data"];
    assert_eq!(e[0]["outcome"], "denied");
    assert_eq!(e[0]["status"], 403);
    assert_eq!(e[0]["actor"], "user");
    assert_eq!(e[1]["outcome"], "success");
    assert_eq!(e[1]["actor_id"], admin_user.id.as_str());
    assert_eq!(e[1]["target"], format!("agent:{agent}"));
    assert_eq!(e[2]["actor"], "api_key");
    assert_eq!(e[2]["actor_id"], key.id.as_str());
    assert_eq!(e[2]["target"], format!("document:{doc}"));
    assert_eq!(e[2]["request_id"], "delete-req-1");
    assert_eq!(e[3]["target"], format!("document:{doc}"));
    assert_eq!(e[4]["target"], format!("api_key:{}", key.id));
    assert_eq!(e[5]["actor"], "operator");
    // Each entry carries the hash of the one before.
    assert_eq!(e[0]["prev_hash"], e[1]["hash"]);
    assert_eq!(e[4]["prev_hash"], e[5]["hash"]);

    // Filters and pages.
    let by_key = admin
        .get(&format!("/v1/workspaces/{ws}/audit?actor=api_key"))
        .await;
    assert_eq!(actions(&by_key.body), ["document.delete", "document.add"]);
    let by_id = admin
        .get(&format!(
            "/v1/workspaces/{ws}/audit?actor={}",
            admin_user.id
        ))
        .await;
    assert_eq!(actions(&by_id.body), ["agent.create", "api_key.create"]);
    let docs = admin
        .get(&format!("/v1/workspaces/{ws}/audit?action=document.*"))
        .await;
    assert_eq!(actions(&docs.body), ["document.delete", "document.add"]);
    let page = admin
        .get(&format!("/v1/workspaces/{ws}/audit?limit=2&offset=2"))
        .await;
    assert_eq!(actions(&page.body), ["document.delete", "document.add"]);
    assert_eq!(page.body["next_offset"], 4);
    let future = admin
        .get(&format!("/v1/workspaces/{ws}/audit?from=2999-01-01"))
        .await;
    assert_eq!(actions(&future.body), Vec::<String>::new());
    let bad = admin
        .get(&format!("/v1/workspaces/{ws}/audit?from=yesterday"))
        .await;
    assert_eq!(bad.status, 400);
    assert!(bad.message().contains("from must be"), "{:?}", bad.body);

    // Org- and server-level actions are in the control plane's chain.
    let org_trail = admin.get(&format!("/v1/orgs/{org}/audit")).await;
    assert_eq!(org_trail.status, 200, "{:?}", org_trail.body);
    let org_actions = actions(&org_trail.body);
    for a in ["org.create", "workspace.create", "invitation.create"] {
        assert!(org_actions.contains(&a.to_string()), "{a}: {org_actions:?}");
    }
    let user_only = admin
        .get(&format!(
            "/v1/orgs/{org}/audit?actor=operator&action=workspace.create"
        ))
        .await;
    assert_eq!(actions(&user_only.body), ["workspace.create"]);
    assert_eq!(
        user_only.body["data"][0]["target"],
        format!("workspace:{ws}")
    );

    // Only admins (and the operator) read trails; keys never.
    assert_eq!(
        viewer
            .get(&format!("/v1/workspaces/{ws}/audit"))
            .await
            .status,
        403
    );
    assert_eq!(
        viewer.get(&format!("/v1/orgs/{org}/audit")).await.status,
        403
    );
    assert_eq!(
        ingest
            .get(&format!("/v1/workspaces/{ws}/audit"))
            .await
            .status,
        403
    );
    assert_eq!(
        op.get(&format!("/v1/workspaces/{ws}/audit")).await.status,
        200
    );
    let other_org = op.create_org("audited-other").await;
    let r = admin.get(&format!("/v1/orgs/{other_org}/audit")).await;
    assert_eq!(r.status, 404);
    let all = op.get("/v1/admin/audit?action=org.create").await;
    assert_eq!(all.status, 200);
    assert_eq!(actions(&all.body), ["org.create", "org.create"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_names_an_entry_edited_or_deleted_in_the_sqlite_file() {
    let srv = TestServer::start();
    let op = srv.api();
    let org = op.create_org("tamper").await;
    let ws = op.create_workspace(&org, "tamper-ws").await;
    op.use_static_embedder(&ws).await;
    for i in 0..4 {
        let r = op
            .post(
                &format!("/v1/workspaces/{ws}/agents"),
                json!({"name": format!("a{i}"), "slug": format!("a{i}")}),
            )
            .await;
        assert_eq!(r.status, 201);
    }
    // One more control-plane entry, so that entry 2 is not the newest.
    op.create_org("tamper-other").await;
    let data = srv.data_dir.clone();
    let out = enclave(&data, &["audit", "verify", "--all"]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("control plane: ok"), "{stdout}");
    assert!(
        stdout.contains(&format!("workspace {ws}: ok, 5 entries")),
        "{stdout}"
    );

    // Edit entry 3 of the workspace's trail directly in its SQLite file.
    let ws_id = uuid::Uuid::parse_str(&ws).expect("uuid");
    let db = enclave::workspace::dir_of(&data, ws_id).join(enclave::workspace::DB_FILE);
    let conn = rusqlite::Connection::open(&db).expect("open workspace db");
    let n = conn
        .execute("UPDATE audit_log SET actor = 'cli' WHERE id = 3", [])
        .expect("edit");
    assert_eq!(n, 1);
    let out = enclave(&data, &["audit", "verify", "--workspace", &ws]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("BROKEN at entry 3"), "{stdout}");
    assert!(stdout.contains("edited"), "{stdout}");

    // Delete an entry of the control plane's chain.
    let control = rusqlite::Connection::open(data.join("control.db")).expect("open control db");
    let n = control
        .execute("DELETE FROM operator_audit WHERE id = 2", [])
        .expect("delete");
    assert_eq!(n, 1);
    let out = enclave(&data, &["audit", "verify"]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains("BROKEN at entry 3: entries 2 to 2 are missing"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn usage_reconciles_exactly_with_a_known_workload() {
    let srv = TestServer::start();
    let app = srv.app.clone();
    let op = srv.api();
    let org = op.create_org("metered").await;
    let ws = op.create_workspace(&org, "metered-ws").await;
    op.use_static_embedder(&ws).await;
    let other_org = op.create_org("metered-other").await;
    let other_ws = op.create_workspace(&other_org, "metered-other-ws").await;
    op.use_static_embedder(&other_ws).await;
    let admin_token = op
        .create_user(&org, "admin@metered.test", "admin")
        .await
        .token;
    let admin = op.with_token(&admin_token);
    let key = op.with_token(&op.create_key(&ws, &["ingest", "search", "chat"]).await.key);

    // Ingest: 3 new documents, 1 duplicate (a request, no new bytes), 1 refused (400).
    let texts = [
        "Alpine lakes freeze in winter.",
        "Desert dunes move with the wind, slowly.",
        "Coral reefs need warm and clear water to grow.",
    ];
    for (i, t) in texts.iter().enumerate() {
        let r = key
            .post(
                "/v1/documents?wait=true",
                json!({"text": t, "title": format!("Doc {i}")}),
            )
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
    }
    let dup = key
        .post("/v1/documents", json!({"text": texts[0], "title": "Doc 0"}))
        .await;
    assert_eq!(dup.status, 200, "{:?}", dup.body);
    assert_eq!(
        key.post("/v1/documents", json!({"text": "  "}))
            .await
            .status,
        400
    );
    // Searches: 4 answered, 1 refused.
    for q in ["lakes", "dunes", "reefs", "water"] {
        key.search(&ws, json!({"query": q})).await;
    }
    assert_eq!(key.post("/v1/search", json!({"nope": 1})).await.status, 422);
    // Chats: 2 extractive answers; their tokens are what they report.
    let mut prompt = 0;
    let mut completion = 0;
    for q in ["What freezes in winter?", "What moves the dunes?"] {
        let r = key.post("/v1/chat", json!({"query": q})).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        prompt += r.body["usage"]["prompt_tokens"].as_u64().expect("prompt");
        completion += r.body["usage"]["completion_tokens"]
            .as_u64()
            .expect("completion");
    }
    assert!(prompt > 0 && completion > 0);
    // The OpenAI facade: one listing of models.
    assert_eq!(key.get("/v1/openai/v1/models").await.status, 200);
    // Work in another org is never counted here.
    op.add_doc(&other_ws, json!({"text": "elsewhere"})).await;
    // Refusals are counted by whoever refuses (quotas and rate limits, issue 12 part A).
    let (org_id, ws_id) = (
        uuid::Uuid::parse_str(&org).expect("org"),
        uuid::Uuid::parse_str(&ws).expect("ws"),
    );
    app.governance()
        .record_refusal(org_id, Some(ws_id), Refusal::Quota);
    app.governance()
        .record_refusal(org_id, Some(ws_id), Refusal::Quota);
    app.governance()
        .record_refusal(org_id, None, Refusal::RateLimit);

    // Wait for every chunk to be embedded (jobs run on the worker), then compute what the
    // counters must say from the workspace itself.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let totals = || -> Option<(u64, u64)> {
        let (_, handle) = app.tenancy().open_workspace(ws_id).expect("open");
        let conn = handle.conn();
        let pending: i64 = conn
            .query_row("SELECT count(*) FROM chunks WHERE embedded = 0", [], |r| {
                r.get(0)
            })
            .expect("pending");
        if pending > 0 {
            return None;
        }
        let mut stmt = conn
            .prepare(
                "SELECT d.title, c.heading_path, c.text FROM chunks c
                 JOIN documents d ON d.id = c.document_id",
            )
            .expect("prepare");
        let rows: Vec<(String, String, String)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .expect("query")
            .collect::<rusqlite::Result<_>>()
            .expect("rows");
        let tokens: u64 = rows
            .iter()
            .map(|(t, h, x)| {
                enclave::chat::estimate_tokens(&enclave::knowledge::ingest::embedding_text(t, h, x))
            })
            .sum();
        Some((rows.len() as u64, tokens))
    };
    let (chunks, tokens) = loop {
        if let Some(t) = totals() {
            break t;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "embedding never finished"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(chunks >= 3);
    // Storage: sampled from the store now (nothing writes to it meanwhile).
    let stats = app
        .tenancy()
        .open_workspace(ws_id)
        .expect("open")
        .1
        .stats()
        .expect("stats");
    assert!(app.governance().sample_storage(true) >= 1);
    app.governance().flush_usage().expect("flush");

    let r = admin
        .get(&format!("/v1/orgs/{org}/usage?group=workspace"))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let rows = r.body["data"].as_array().expect("rows").clone();
    let ws_row = rows
        .iter()
        .find(|r| r["workspace_id"] == ws.as_str())
        .unwrap_or_else(|| panic!("no row for the workspace: {rows:?}"));
    let bytes: u64 = texts.iter().map(|t| t.len() as u64).sum();
    let expected = json!({
        "requests_ingest": 4,
        "requests_search": 4,
        "requests_chat": 2,
        "requests_mcp": 0,
        "requests_openai": 1,
        "chat_prompt_tokens": prompt,
        "chat_completion_tokens": completion,
        "embedding_chunks": chunks,
        "embedding_tokens": tokens,
        "ingest_bytes": bytes,
        "documents_added": 3,
        "documents": 3,
        "storage_bytes": stats.bytes_on_disk,
        "quota_refusals": 2,
        "rate_limit_refusals": 0,
    });
    for (k, v) in expected.as_object().expect("object") {
        assert_eq!(&ws_row[k], v, "{k}: {ws_row}");
    }
    let org_row = rows
        .iter()
        .find(|r| r.get("workspace_id").is_none())
        .expect("org-level row");
    assert_eq!(org_row["rate_limit_refusals"], 1);
    assert!(rows.iter().all(|r| r["org_id"] == org.as_str()));

    // Summed per org, by month, and as CSV: the same numbers.
    let month = admin
        .get(&format!("/v1/orgs/{org}/usage?granularity=month"))
        .await;
    assert_eq!(month.status, 200);
    let m = &month.body["data"][0];
    assert_eq!(month.body["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(m["requests_search"], 4);
    assert_eq!(m["quota_refusals"], 2);
    assert_eq!(m["rate_limit_refusals"], 1);
    assert_eq!(m["period"].as_str().map(str::len), Some(7));
    let csv_resp = reqwest::Client::new()
        .get(format!("{}/v1/orgs/{org}/usage?workspace={ws}", srv.base))
        .bearer_auth(&admin_token)
        .header("accept", "text/csv")
        .send()
        .await
        .expect("csv request");
    assert_eq!(csv_resp.status(), 200);
    assert!(csv_resp.headers()["content-type"]
        .to_str()
        .unwrap_or("")
        .starts_with("text/csv"));
    let csv = csv_resp.text().await.expect("csv");
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().expect("header").split(',').collect();
    let values: Vec<&str> = lines.next().expect("a row").split(',').collect();
    let col = |name: &str| values[header.iter().position(|h| *h == name).expect(name)];
    assert_eq!(col("workspace_id"), ws);
    assert_eq!(col("requests_search"), "4");
    assert_eq!(col("embedding_tokens"), tokens.to_string());

    // A new day starts new rows.
    srv.advance_clock(std::time::Duration::from_secs(86_400));
    key.search(&ws, json!({"query": "lakes"})).await;
    let days = admin
        .get(&format!(
            "/v1/orgs/{org}/usage?workspace={ws}&from=2000-01-01&to=2999-12-31"
        ))
        .await;
    assert_eq!(days.status, 400, "the range is bounded: {:?}", days.body);
    let r = admin
        .get(&format!("/v1/orgs/{org}/usage?workspace={ws}"))
        .await;
    let data = r.body["data"].as_array().expect("rows");
    let last = data.last().expect("today");
    assert_eq!(last["requests_search"], 1, "{data:?}");

    // Who may read: admins of the org and the operator; not another org's workspace.
    let viewer = op.user_client(&org, "viewer@metered.test", "viewer").await;
    assert_eq!(
        viewer.get(&format!("/v1/orgs/{org}/usage")).await.status,
        403
    );
    let r = admin
        .get(&format!("/v1/orgs/{org}/usage?workspace={other_ws}"))
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(
        admin
            .get(&format!("/v1/orgs/{other_org}/usage"))
            .await
            .status,
        404
    );
    let yesterday = app.governance().today() - chrono::Duration::days(1);
    let all = op
        .get(&format!("/v1/admin/usage?group=workspace&from={yesterday}"))
        .await;
    assert_eq!(all.status, 200);
    let orgs: Vec<&str> = all.body["data"]
        .as_array()
        .expect("rows")
        .iter()
        .filter_map(|r| r["org_id"].as_str())
        .collect();
    assert!(orgs.contains(&org.as_str()) && orgs.contains(&other_org.as_str()));

    // The command line exports the same (what the server flushed).
    app.governance().flush_usage().expect("flush");
    let out = enclave(
        &srv.data_dir,
        &[
            "usage",
            "export",
            "--org",
            &org,
            "--from",
            &yesterday.to_string(),
            "--to",
            &app.governance().today().to_string(),
            "--format",
            "json",
            "--by-workspace",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(&stdout).expect("json");
    let searches: u64 = v["data"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r["requests_search"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(searches, 5, "{stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_have_route_histograms_and_no_tenant_labels() {
    let srv = TestServer::start();
    let op = srv.api();
    let ws = op.knowledge_workspace("measured").await;
    op.add_doc(&ws, json!({"text": "measured words"})).await;
    op.search(&ws, json!({"query": "words"})).await;
    assert_eq!(op.get("/v1/no-such-route").await.status, 404);
    srv.app
        .governance()
        .record_refusal(uuid::Uuid::new_v4(), None, Refusal::RateLimit);
    let text = op.text("/metrics").await;
    assert!(
        text.contains(
            "enclave_http_request_duration_seconds_count{route=\"/v1/workspaces/{ws}/search\",class=\"2xx\"} 1"
        ),
        "{text}"
    );
    assert!(text.contains("route=\"unmatched\",class=\"4xx\""), "{text}");
    assert!(
        text.contains("enclave_refusals_total{reason=\"rate_limit\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("enclave_workspace_open_duration_seconds_count "),
        "{text}"
    );
    assert!(
        text.contains("enclave_ingest_chunks_total{stage=\"indexed\"} "),
        "{text}"
    );
    assert!(text.contains("enclave_embedding_queue_chunks "), "{text}");
    assert!(!text.contains(&ws), "a tenant id leaked into /metrics");
    // Prometheus's own linter, when installed (`.ci/run` installs it).
    if let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write");
        let out = child.wait_with_output().expect("promtool");
        assert!(
            out.status.success(),
            "promtool: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Credentials issued are audited although they change no stored row of the tenant's data: a
/// sign-in (in the control plane's trail: as `anonymous` and `denied` when refused, naming no
/// user; as the user when it succeeds) and a tenant token's minting (in the workspace's trail,
/// by the API key that minted it).
#[tokio::test]
async fn sign_ins_and_minted_tenant_tokens_are_audited() {
    let srv = TestServer::start();
    let op = srv.api();
    let org = op.create_org("signins").await;
    let ws = op.create_workspace(&org, "signins-ws").await;
    let user = op.create_user(&org, "admin@signins.test", "admin").await;

    let r = op.login("admin@signins.test", "not the password").await;
    assert_eq!(r.status, 401, "{:?}", r.body);
    let r = op
        .login("admin@signins.test", crate::harness::PASSWORD)
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);

    let trail = op.get("/v1/admin/audit?action=session.login").await;
    assert_eq!(trail.status, 200, "{:?}", trail.body);
    let entries = trail.body["data"].as_array().expect("entries");
    assert_eq!(entries.len(), 2, "{entries:?}");
    // Newest first: the sign-in, then the refused attempt.
    assert_eq!(entries[0]["actor"], "user");
    assert_eq!(entries[0]["actor_id"].as_str(), Some(user.id.as_str()));
    assert_eq!(entries[0]["outcome"], "success");
    assert_eq!(entries[1]["actor"], "anonymous");
    assert_eq!(entries[1]["outcome"], "denied");
    assert!(entries[1].get("actor_id").is_none(), "{:?}", entries[1]);

    // Attempts refused by the login throttle cost nothing and are not recorded.
    for _ in 0..enclave::identity::throttle::PER_EMAIL as usize {
        assert_eq!(op.login("nobody@signins.test", "guess").await.status, 401);
    }
    for _ in 0..3 {
        assert_eq!(op.login("nobody@signins.test", "guess").await.status, 429);
    }
    let trail = op.get("/v1/admin/audit?action=session.login").await;
    let entries = trail.body["data"].as_array().expect("entries");
    assert_eq!(
        entries.len(),
        2 + enclave::identity::throttle::PER_EMAIL as usize,
        "{entries:?}"
    );
    assert!(
        entries.iter().all(|e| e["outcome"] != "refused"),
        "{entries:?}"
    );

    let key = op.create_key(&ws, &["search"]).await;
    let client = op.with_token(&key.key);
    client.tenant_token(json!({"expires_in": 600})).await;
    let trail = op
        .get(&format!(
            "/v1/workspaces/{ws}/audit?action=tenant_token.mint"
        ))
        .await;
    assert_eq!(trail.status, 200, "{:?}", trail.body);
    let entries = trail.body["data"].as_array().expect("entries");
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["actor"], "api_key");
    assert_eq!(entries[0]["actor_id"].as_str(), Some(key.id.as_str()));
    assert_eq!(entries[0]["outcome"], "success");
}
