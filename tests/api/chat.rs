//! Agents, sessions, chat (extractive and through a scripted OpenAI-compatible provider),
//! provider settings, and the isolation of all of them between tenants.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{Api, TestServer};
use crate::mock_llm::{self, MockLlm, Reply};

const DOCS: &str = "alpha pricing";

/// Seeds `ws` with a sales and two engineering documents (two about alpha pricing).
pub async fn seed(s: &TestServer, ws: &str) -> Vec<(String, Vec<i64>)> {
    s.seed_documents(
        ws,
        &[
            (
                "Sales playbook",
                json!({"group": "sales"}),
                "Alpha pricing is 10 euros per seat for the sales team.",
            ),
            (
                "Engineering notes",
                json!({"group": "eng"}),
                "Alpha pricing in engineering terms: the build costs nothing.",
            ),
            (
                "Unrelated",
                json!({"group": "eng"}),
                "Bananas are yellow and grow in bunches.",
            ),
        ],
    )
    .await
}

fn names(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(n, _)| n.as_str()).collect()
}

#[tokio::test]
async fn every_workspace_has_a_default_agent_and_agent_access_follows_the_table() {
    let s = TestServer::start();
    let op = s.api();
    let org = op.create_org("agents").await;
    let ws = op.create_workspace(&org, "main").await;
    let admin = op.user_client(&org, "admin@a.io", "admin").await;
    let m1 = op.user_client(&org, "m1@a.io", "member").await;
    let m2 = op.user_client(&org, "m2@a.io", "member").await;
    let viewer = op.user_client(&org, "v@a.io", "viewer").await;
    let base = format!("/v1/workspaces/{ws}/agents");

    let r = viewer.get(&base).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let list = r.body["data"].as_array().expect("list").clone();
    assert_eq!(list.len(), 1);
    assert_eq!(
        (list[0]["slug"].as_str(), list[0]["is_default"].as_bool()),
        (Some("default"), Some(true))
    );

    // Private agent: owner and admins see it; another member does not.
    let r = m1
        .post(&base, json!({"name": "Secret helper", "public": false, "system_prompt": "Be brief.", "tools": ["search"]}))
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let secret = r.id();
    assert_eq!(r.body["slug"], "secret-helper");
    assert_eq!(r.body["owner_id"].as_str().map(str::len), Some(36));
    let r = m2.get(&format!("{base}/{secret}")).await;
    assert_eq!((r.status, r.code()), (404, "not_found"));
    assert!(!m2.get(&base).await.body.to_string().contains(&secret));
    assert_eq!(
        m2.patch(&format!("{base}/{secret}"), json!({"name": "x"}))
            .await
            .status,
        404
    );
    assert_eq!(admin.get(&format!("{base}/{secret}")).await.status, 200);
    assert_eq!(
        m1.get(&format!("{base}/secret-helper")).await.status,
        200,
        "by slug"
    );
    let r = admin
        .patch(
            &format!("{base}/{secret}"),
            json!({"temperature": 0.2, "model": null}),
        )
        .await;
    assert_eq!((r.status, r.body["temperature"].as_f64()), (200, Some(0.2)));

    // Public agent: everyone reads; only owner or admin edit; viewers never write.
    let r = m1
        .post(&base, json!({"name": "Helper", "slug": "helper"}))
        .await;
    assert_eq!(r.status, 201);
    let helper = r.id();
    assert_eq!(m2.get(&format!("{base}/{helper}")).await.status, 200);
    let r = m2
        .patch(&format!("{base}/{helper}"), json!({"name": "mine"}))
        .await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
    assert_eq!(m2.delete(&format!("{base}/{helper}")).await.status, 403);
    assert_eq!(
        viewer.post(&base, json!({"name": "nope"})).await.status,
        403
    );
    assert_eq!(viewer.get(&format!("{base}/{helper}")).await.status, 200);

    // Validation and conflicts.
    let r = m1
        .post(&base, json!({"name": "Helper 2", "slug": "helper"}))
        .await;
    assert_eq!((r.status, r.code()), (409, "conflict"));
    for bad in [
        json!({"name": "x", "tools": ["shell"]}),
        json!({"name": "x", "temperature": 3}),
        json!({"name": "x", "provider": "magic"}),
        json!({"name": "x", "max_tokens": 0}),
        json!({"name": ""}),
    ] {
        let r = m1.post(&base, bad.clone()).await;
        assert_eq!((r.status, r.code()), (400, "invalid_request"), "{bad}");
    }
    assert_eq!(
        m1.post(&base, json!({"name": "x", "bogus": 1}))
            .await
            .status,
        422
    );

    // Soft delete: gone, slug free again; the default agent stays.
    assert_eq!(m1.delete(&format!("{base}/{helper}")).await.status, 204);
    assert_eq!(m1.get(&format!("{base}/{helper}")).await.status, 404);
    assert_eq!(
        m1.post(&base, json!({"name": "Helper", "slug": "helper"}))
            .await
            .status,
        201
    );
    let r = admin.delete(&format!("{base}/default")).await;
    assert_eq!((r.status, r.code()), (409, "conflict"));

    // Keys: chat scope reads, manage scope administers.
    let k = op.key_client(&ws, &["chat"]).await;
    let r = k.get("/v1/agents").await;
    assert_eq!(r.status, 200);
    assert!(
        !r.body.to_string().contains(&secret),
        "private agents are hidden from chat keys"
    );
    assert_eq!(k.post("/v1/agents", json!({"name": "k"})).await.status, 403);
    let manage = op.key_client(&ws, &["manage"]).await;
    assert_eq!(
        manage
            .patch(&format!("/v1/agents/{secret}"), json!({"public": true}))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn extractive_chat_cites_passages_streams_and_keeps_its_session() {
    let s = TestServer::start();
    let op = s.api();
    let org = op.create_org("chatx").await;
    let ws = op.create_workspace(&org, "kb").await;
    let seeded = seed(&s, &ws).await;
    let u = op.user_client(&org, "u@x.io", "viewer").await;
    let chat = format!("/v1/workspaces/{ws}/chat");

    let r = u
        .post(&chat, json!({"query": "What is the alpha pricing?"}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let answer = r.body["answer"].as_str().expect("answer");
    assert!(answer.starts_with("Extractive answer"), "{answer}");
    assert!(answer.contains("[1]"));
    let c = &r.body["citations"][0];
    assert_eq!(c["marker"], 1);
    let sales_chunk = seeded[0].1[0];
    let ids: Vec<i64> = r.body["citations"]
        .as_array()
        .expect("c")
        .iter()
        .filter_map(|c| c["chunk_id"].as_i64())
        .collect();
    assert!(ids.contains(&sales_chunk), "{ids:?}");
    assert!(!ids.contains(&seeded[2].1[0]), "bananas are not cited");
    for field in ["document_id", "title", "snippet"] {
        assert!(c[field].as_str().is_some_and(|t| !t.is_empty()), "{field}");
    }
    assert!(r.body["usage"]["total_tokens"].as_u64().unwrap_or(0) > 0);
    assert_eq!(r.body["provider"], "extractive");
    let sid = r.body["session_id"].as_str().expect("session").to_string();

    // The session keeps both messages, the answer with its citations and usage; it continues.
    let r = u
        .post(&chat, json!({"query": "And bananas?", "session_id": sid}))
        .await;
    assert_eq!(
        (r.status, r.body["session_id"].as_str()),
        (200, Some(sid.as_str()))
    );
    let r = u.get(&format!("/v1/workspaces/{ws}/sessions")).await;
    assert_eq!(r.body["data"].as_array().map(Vec::len), Some(1));
    let r = u
        .get(&format!("/v1/workspaces/{ws}/sessions/{sid}/messages"))
        .await;
    let msgs = r.body["data"].as_array().expect("messages");
    assert_eq!(msgs.len(), 4);
    assert_eq!(
        (msgs[0]["role"].as_str(), msgs[1]["role"].as_str()),
        (Some("user"), Some("assistant"))
    );
    assert!(msgs[1]["citations"][0]["chunk_id"].is_i64());
    assert!(msgs[1]["usage"]["total_tokens"].is_u64());

    // Streaming: session, deltas, citations, done.
    let (status, events) = u.sse(&chat, json!({"query": DOCS, "stream": true})).await;
    assert_eq!(status, 200);
    let n = names(&events);
    assert_eq!(n.first(), Some(&"session"));
    assert!(n.contains(&"delta"));
    assert_eq!(&n[n.len() - 2..], ["citations", "done"]);
    let text: String = events
        .iter()
        .filter(|(n, _)| n == "delta")
        .filter_map(|(_, d)| d["text"].as_str())
        .collect();
    let done = &events[events.len() - 1].1;
    assert_eq!(
        done["answer"].as_str().map(str::trim_end),
        Some(text.trim_end())
    );
    assert!(done["message_id"].is_i64());

    // Bad input.
    let r = u.post(&chat, json!({"query": "  "})).await;
    assert_eq!((r.status, r.code()), (400, "invalid_request"));
    let r = u
        .post(&chat, json!({"query": "x", "agent_id": "nobody"}))
        .await;
    assert_eq!((r.status, r.code()), (404, "not_found"));
    let r = u
        .post(
            &chat,
            json!({"query": "x", "session_id": "0193aaaa-0000-7000-8000-000000000000"}),
        )
        .await;
    assert_eq!(r.status, 404);
    let r = u
        .post(&chat, json!({"query": "x", "filter": {"a": {"nope": 1}}}))
        .await;
    assert_eq!(r.code(), "invalid_request");
    let r = u
        .raw(
            reqwest::Method::POST,
            &chat,
            "application/json",
            "{not json",
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "invalid_request"));
}

#[tokio::test]
async fn tenant_token_filters_bind_chat_and_sessions_stay_with_their_owner() {
    let s = TestServer::start();
    let op = s.api();
    let org = op.create_org("tok").await;
    let ws = op.create_workspace(&org, "kb").await;
    let seeded = seed(&s, &ws).await;
    let k = op.key_client(&ws, &["search", "chat"]).await;
    let t = k
        .tenant_client(
            json!({"scopes": ["chat"], "filter": {"group": "sales"}, "subject": "end-user-1"}),
        )
        .await;

    let r = t.post("/v1/chat", json!({"query": DOCS})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let cited: Vec<&str> = r.body["citations"]
        .as_array()
        .expect("c")
        .iter()
        .filter_map(|c| c["document_id"].as_str())
        .collect();
    assert!(!cited.is_empty());
    assert!(
        cited.iter().all(|d| *d == seeded[0].0),
        "only the sales document: {cited:?}"
    );
    let token_session = r.body["session_id"].as_str().expect("sid").to_string();
    // The request narrows the token's filter; it cannot widen it.
    let r = t
        .post(
            "/v1/chat",
            json!({"query": DOCS, "filter": {"group": "eng"}}),
        )
        .await;
    assert_eq!(
        r.body["citations"].as_array().map(Vec::len),
        Some(0),
        "{:?}",
        r.body
    );

    // Tenant tokens do not list sessions; the key does not see the token's; a user of the org
    // who is not admin does not see others' sessions.
    assert_eq!(t.get("/v1/sessions").await.status, 403);
    let r = k.get("/v1/sessions").await;
    assert_eq!(r.body["data"].as_array().map(Vec::len), Some(0));
    assert_eq!(
        k.get(&format!("/v1/sessions/{token_session}/messages"))
            .await
            .status,
        404
    );
    let r = k
        .post(
            "/v1/chat",
            json!({"query": "x", "session_id": token_session}),
        )
        .await;
    assert_eq!(r.status, 404, "a key cannot continue its token's session");
    let member = op.user_client(&org, "m@tok.io", "member").await;
    assert_eq!(
        member
            .get(&format!(
                "/v1/workspaces/{ws}/sessions/{token_session}/messages"
            ))
            .await
            .status,
        404
    );
    let admin = op.user_client(&org, "a@tok.io", "admin").await;
    let r = admin
        .get(&format!(
            "/v1/workspaces/{ws}/sessions/{token_session}/messages"
        ))
        .await;
    assert_eq!(
        (r.status, r.body["data"].as_array().map(Vec::len)),
        (200, Some(2))
    );
}

async fn set_provider(api: &Api, org: &str, base: &str, key: &str) -> crate::harness::Resp {
    api.send(
        reqwest::Method::PUT,
        &format!("/v1/orgs/{org}/providers/openai-compatible"),
        Some(json!({"base_url": base, "model": "mock-model", "api_key": key})),
    )
    .await
}

#[tokio::test]
async fn openai_compatible_provider_tools_streaming_retries_and_failures() {
    let s = TestServer::start();
    let mock = MockLlm::start();
    let op = s.api();
    let org = op.create_org("byok").await;
    let ws = op.create_workspace(&org, "kb").await;
    let seeded = seed(&s, &ws).await;
    let admin = op.user_client(&org, "a@byok.io", "admin").await;
    let member = op.user_client(&org, "m@byok.io", "member").await;

    // Only admins manage providers; the key never comes back, nor sits in control.db in clear.
    assert_eq!(
        set_provider(&member, &org, &mock.base, "sk-x").await.status,
        403
    );
    let r = set_provider(&admin, &org, "ftp://nope", "sk-x").await;
    assert_eq!((r.status, r.code()), (400, "invalid_request"));
    let r = set_provider(&admin, &org, &mock.base, "sk-org-secret-123").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["api_key_set"], true);
    let r = admin.get(&format!("/v1/orgs/{org}/providers")).await;
    assert_eq!(r.body["data"][0]["model"], "mock-model");
    assert!(!r.body.to_string().contains("sk-org-secret"));
    s.app.control_plane().checkpoint().expect("checkpoint");
    for f in ["control.db", "control.db-wal"] {
        let bytes = std::fs::read(s.data_path(f)).unwrap_or_default();
        assert!(
            !bytes.windows(10).any(|w| w == b"sk-org-sec"),
            "{f} holds the key in clear"
        );
    }
    let chat = format!("/v1/workspaces/{ws}/chat");
    let agents = format!("/v1/workspaces/{ws}/agents");
    let r = admin
        .post(&agents, json!({"name": "Plain", "tools": [], "model": "agent-model", "temperature": 0.1, "system_prompt": "You are terse."}))
        .await;
    let plain = r.id();

    // A plain answer, with the passages in the prompt (an agent without tools).
    mock.push(Reply::Json(mock_llm::answer("Alpha costs 10 euros [1].")));
    let r = member
        .post(&chat, json!({"agent_id": plain, "query": "alpha pricing?"}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["answer"], "Alpha costs 10 euros [1].");
    assert_eq!(
        (r.body["provider"].as_str(), r.body["model"].as_str()),
        (Some("openai-compatible"), Some("agent-model"))
    );
    assert_eq!(
        r.body["usage"],
        json!({"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18})
    );
    assert_eq!(
        r.body["citations"].as_array().map(Vec::len),
        Some(1),
        "only the cited passage"
    );
    let req = mock.requests().pop().expect("request");
    assert_eq!(
        req.authorization.as_deref(),
        Some("Bearer sk-org-secret-123")
    );
    assert_eq!(req.body["model"], "agent-model");
    assert_eq!(req.body["temperature"], 0.1);
    assert!(req.body.get("tools").is_none());
    let system = req.body["messages"][0]["content"].as_str().expect("system");
    assert!(
        system.starts_with("You are terse.") && system.contains("10 euros per seat"),
        "{system}"
    );
    assert_eq!(
        req.body["messages"]
            .as_array()
            .and_then(|m| m.last())
            .map(|m| m["content"].clone()),
        Some(json!("alpha pricing?"))
    );

    // Tool calling: the default agent offers search and get_document; the model searches,
    // then answers; the tool ran in the workspace and its passage is cited.
    mock.push(Reply::Json(mock_llm::tool_call(
        "call_1",
        "search",
        json!({"query": "alpha pricing", "limit": 2}),
    )));
    mock.push(Reply::Json(mock_llm::tool_call(
        "call_2",
        "get_document",
        json!({"document_id": seeded[0].0}),
    )));
    mock.push(Reply::Json(mock_llm::answer("Ten euros [1][2].")));
    let before = mock.requests().len();
    let r = member
        .post(&chat, json!({"query": "What does alpha cost?"}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let tools: Vec<&str> = r.body["tool_calls"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(tools, ["search", "get_document"]);
    assert_eq!(r.body["usage"]["prompt_tokens"], 20 + 20 + 11);
    assert!(r.body["citations"]
        .as_array()
        .expect("c")
        .iter()
        .any(|c| c["chunk_id"] == seeded[0].1[0]));
    let reqs = mock.requests();
    assert_eq!(reqs.len() - before, 3);
    let first = &reqs[before].body;
    let offered: Vec<&str> = first["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t["function"]["name"].as_str())
        .collect();
    assert_eq!(offered, ["search", "get_document"]);
    let third = &reqs[before + 2].body["messages"];
    let tool_msgs: Vec<&Value> = third
        .as_array()
        .expect("m")
        .iter()
        .filter(|m| m["role"] == "tool")
        .collect();
    assert_eq!(tool_msgs.len(), 2);
    assert_eq!(tool_msgs[0]["tool_call_id"], "call_1");
    let found: Value =
        serde_json::from_str(tool_msgs[0]["content"].as_str().expect("c")).expect("json");
    assert_eq!(found["results"][0]["marker"], 1);
    assert!(tool_msgs[1]["content"]
        .as_str()
        .expect("c")
        .contains("10 euros per seat"));

    // A model that keeps calling tools is stopped after a bounded number of rounds.
    for i in 0..4 {
        mock.push(Reply::Json(mock_llm::tool_call(
            &format!("l{i}"),
            "search",
            json!({"query": "alpha"}),
        )));
    }
    mock.push(Reply::Json(mock_llm::answer("done")));
    let before = mock.requests().len();
    let r = member.post(&chat, json!({"query": "loop"})).await;
    assert_eq!((r.status, r.body["answer"].as_str()), (200, Some("done")));
    let reqs = mock.requests();
    assert_eq!(reqs.len() - before, 5);
    assert_eq!(reqs[reqs.len() - 1].body["tool_choice"], "none");

    // Streaming from the provider to the client.
    mock.push(Reply::Stream(mock_llm::stream_text(&["Hel", "lo ", "[1]"])));
    let (status, events) = member
        .sse(
            &chat,
            json!({"agent_id": "plain", "query": DOCS, "stream": true}),
        )
        .await;
    assert_eq!(status, 200);
    let text: String = events
        .iter()
        .filter(|(n, _)| n == "delta")
        .filter_map(|(_, d)| d["text"].as_str())
        .collect();
    assert_eq!(text, "Hello [1]");
    let done = &events.last().expect("done").1;
    assert_eq!(done["usage"]["prompt_tokens"], 9);
    assert_eq!(mock.requests().pop().expect("r").body["stream"], true);

    // 429 then success: retried.
    mock.push(Reply::Status(429, Some(0)));
    mock.push(Reply::Status(503, None));
    mock.push(Reply::Json(mock_llm::answer("after retries")));
    let before = mock.requests().len();
    let r = member
        .post(&chat, json!({"agent_id": "plain", "query": "x"}))
        .await;
    assert_eq!(
        (r.status, r.body["answer"].as_str()),
        (200, Some("after retries"))
    );
    assert_eq!(mock.requests().len() - before, 3);

    // 500 every time: 502 provider_error after the retries, without leaking anything.
    for _ in 0..3 {
        mock.push(Reply::Status(500, None));
    }
    let before = mock.requests().len();
    let r = member
        .post(&chat, json!({"agent_id": "plain", "query": "x"}))
        .await;
    assert_eq!(
        (r.status, r.code()),
        (502, "provider_error"),
        "{:?}",
        r.body
    );
    assert_eq!(mock.requests().len() - before, 3);
    assert!(!r.body.to_string().contains("sk-"));

    // A refusal (401) is not retried, and the provider's text (which may echo the key) is not passed on.
    mock.push(Reply::Status(401, None));
    let r = member
        .post(&chat, json!({"agent_id": "plain", "query": "x"}))
        .await;
    assert_eq!((r.status, r.code()), (502, "provider_error"));
    assert!(!r.body.to_string().contains("leak"));

    // Slower than the timeout (2 s): a 502, not a hang.
    mock.push(Reply::Slow(
        Duration::from_secs(6),
        mock_llm::answer("too late"),
    ));
    let t0 = Instant::now();
    let r = member
        .post(&chat, json!({"agent_id": "plain", "query": "x"}))
        .await;
    assert_eq!((r.status, r.code()), (502, "provider_error"));
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());

    // A failure while streaming arrives as an error event.
    for _ in 0..3 {
        mock.push(Reply::Status(500, None));
    }
    let (status, events) = member
        .sse(
            &chat,
            json!({"agent_id": "plain", "query": "x", "stream": true}),
        )
        .await;
    assert_eq!(status, 200);
    let (name, data) = events.last().expect("event");
    assert_eq!(
        (name.as_str(), data["error"]["code"].as_str()),
        ("error", Some("provider_error"))
    );

    // Failed exchanges are not stored; successful ones are.
    let r = member.get(&format!("/v1/workspaces/{ws}/sessions")).await;
    assert_eq!(r.body["data"].as_array().map(Vec::len), Some(5));

    // Clearing the provider brings the default agent back to extractive.
    let r = admin
        .delete(&format!("/v1/orgs/{org}/providers/openai-compatible"))
        .await;
    assert_eq!(r.status, 204);
    let r = member.post(&chat, json!({"query": DOCS})).await;
    assert_eq!(r.body["provider"], "extractive");
    let r = member
        .post(&chat, json!({"agent_id": plain, "query": DOCS}))
        .await;
    assert_eq!(
        r.body["provider"], "extractive",
        "an agent with no provider set follows the org"
    );
    admin
        .patch(
            &format!("{agents}/{plain}"),
            json!({"provider": "openai-compatible"}),
        )
        .await;
    let r = member
        .post(&chat, json!({"agent_id": plain, "query": DOCS}))
        .await;
    assert_eq!(
        (r.status, r.code()),
        (400, "invalid_request"),
        "no provider configured"
    );
}

#[tokio::test]
async fn one_tenants_agents_sessions_and_provider_keys_never_reach_another() {
    let s = TestServer::start();
    let mock = MockLlm::start();
    let op = s.api();
    let org_a = op.create_org("tenant-a").await;
    let org_b = op.create_org("tenant-b").await;
    let ws_a = op.create_workspace(&org_a, "a").await;
    let ws_b = op.create_workspace(&org_b, "b").await;
    seed(&s, &ws_a).await;
    seed(&s, &ws_b).await;
    let a = op.user_client(&org_a, "owner@a.io", "owner").await;
    let b = op.user_client(&org_b, "owner@b.io", "owner").await;
    assert_eq!(
        set_provider(&a, &org_a, &mock.base, "sk-tenant-a-only")
            .await
            .status,
        200
    );

    let r = a
        .post(
            &format!("/v1/workspaces/{ws_a}/agents"),
            json!({"name": "A agent", "public": true}),
        )
        .await;
    let agent_a = r.id();
    mock.push(Reply::Json(mock_llm::answer("for A")));
    let r = a
        .post(
            &format!("/v1/workspaces/{ws_a}/chat"),
            json!({"agent_id": agent_a, "query": DOCS}),
        )
        .await;
    assert_eq!(r.status, 200);
    let session_a = r.body["session_id"].as_str().expect("sid").to_string();

    // B reaches none of A's agents, sessions, workspace or provider settings.
    for path in [
        format!("/v1/workspaces/{ws_a}/agents"),
        format!("/v1/workspaces/{ws_a}/agents/{agent_a}"),
        format!("/v1/workspaces/{ws_a}/sessions"),
        format!("/v1/workspaces/{ws_a}/sessions/{session_a}/messages"),
        format!("/v1/workspaces/{ws_b}/agents/{agent_a}"),
        format!("/v1/workspaces/{ws_b}/sessions/{session_a}/messages"),
        format!("/v1/orgs/{org_a}/providers"),
        format!("/v1/workspaces/{ws_a}/openai/v1/models"),
    ] {
        let r = b.get(&path).await;
        assert_eq!((r.status, r.code()), (404, "not_found"), "{path}");
        assert!(!r.body.to_string().contains("sk-"));
    }
    assert_eq!(
        set_provider(&b, &org_a, &mock.base, "sk-evil").await.status,
        404
    );
    let r = b
        .post(
            &format!("/v1/workspaces/{ws_b}/chat"),
            json!({"agent_id": agent_a, "query": DOCS}),
        )
        .await;
    assert_eq!(r.status, 404, "A's agent id in B's workspace");
    let r = b
        .post(
            &format!("/v1/workspaces/{ws_b}/chat"),
            json!({"query": DOCS, "session_id": session_a}),
        )
        .await;
    assert_eq!(r.status, 404, "A's session id in B's workspace");

    // B chats with its own default agent: extractive, A's provider is never called.
    let before = mock.requests().len();
    let r = b
        .post(
            &format!("/v1/workspaces/{ws_b}/chat"),
            json!({"query": DOCS}),
        )
        .await;
    assert_eq!(
        (r.status, r.body["provider"].as_str()),
        (200, Some("extractive"))
    );
    let key_b = op.key_client(&ws_b, &["chat", "search"]).await;
    let r = key_b.post("/v1/chat", json!({"query": DOCS})).await;
    assert_eq!(r.body["provider"], "extractive");
    let r = key_b
        .with_header("X-Tenant-ID", &ws_a)
        .post("/v1/chat", json!({"query": DOCS}))
        .await;
    assert_eq!(r.status, 404);
    let r = key_b
        .post(
            &format!("/v1/workspaces/{ws_a}/openai/v1/chat/completions"),
            json!({"model": "default", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(mock.requests().len(), before);

    // A's sealed key copied into B's row does not open for B (it is bound to A).
    {
        let conn = rusqlite::Connection::open(s.data_path("control.db")).expect("open control");
        conn.busy_timeout(Duration::from_secs(5)).expect("timeout");
        conn.execute(
            "INSERT INTO org_providers (org_id, name, base_url, model, key_nonce, key_sealed, created_at, updated_at)
             SELECT ?2, name, base_url, model, key_nonce, key_sealed, created_at, updated_at
             FROM org_providers WHERE org_id = ?1",
            rusqlite::params![org_a, org_b],
        )
        .expect("copy row");
    }
    let r = b
        .post(
            &format!("/v1/workspaces/{ws_b}/chat"),
            json!({"query": DOCS}),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (502, "provider_error"),
        "{:?}",
        r.body
    );
    assert_eq!(
        mock.requests().len(),
        before,
        "no request left with A's key"
    );

    // Purging an org destroys its provider keys (a plain delete keeps them sealed for the
    // grace period, so a restore gets them back; the upkeep's purge destroys them after it).
    assert_eq!(
        op.delete(&format!("/v1/orgs/{org_a}?purge=true"))
            .await
            .status,
        204
    );
    let conn = rusqlite::Connection::open(s.data_path("control.db")).expect("open control");
    let n: i64 = conn
        .query_row(
            "SELECT count(*) FROM org_providers WHERE org_id = ?1",
            [&org_a],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(n, 0);
}
