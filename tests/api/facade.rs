//! The OpenAI-compatible facade and the MCP endpoint, spoken raw over HTTP.

use serde_json::json;

use crate::harness::{mcp, TestServer};

#[tokio::test]
async fn openai_facade_lists_agents_and_completes_streaming_and_not() {
    let s = TestServer::start();
    let op = s.api();
    let org = op.create_org("facade").await;
    let ws = op.create_workspace(&org, "kb").await;
    s.seed_documents(
        &ws,
        &[("Guide", json!({}), "The gamma reactor runs at 300 kelvin.")],
    )
    .await;
    let key = op.key_client(&ws, &["chat"]).await;
    let base = format!("/v1/workspaces/{ws}/openai/v1");

    let r = key.get(&format!("{base}/models")).await;
    assert_eq!((r.status, r.body["object"].as_str()), (200, Some("list")));
    assert_eq!(r.body["data"][0]["id"], "default");
    assert_eq!(r.body["data"][0]["object"], "model");
    assert_eq!(
        key.get("/v1/openai/v1/models").await.body,
        r.body,
        "the key's workspace"
    );
    assert_eq!(key.get(&format!("{base}/models/default")).await.status, 200);

    let body = json!({
        "model": "default",
        "messages": [
            {"role": "system", "content": "Be precise."},
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": "hi"},
            {"role": "user", "content": [{"type": "text", "text": "gamma reactor temperature"}]}
        ]
    });
    let r = key
        .post(&format!("{base}/chat/completions"), body.clone())
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["object"], "chat.completion");
    assert_eq!(r.body["choices"][0]["message"]["role"], "assistant");
    assert!(r.body["choices"][0]["message"]["content"]
        .as_str()
        .expect("c")
        .contains("300 kelvin"));
    assert_eq!(r.body["choices"][0]["finish_reason"], "stop");
    assert!(r.body["usage"]["total_tokens"].as_u64().is_some());
    assert!(r.body["citations"][0]["chunk_id"].is_i64());

    let mut stream_body = body.clone();
    stream_body["stream"] = json!(true);
    stream_body["stream_options"] = json!({"include_usage": true});
    let (status, events) = key
        .sse(&format!("{base}/chat/completions"), stream_body)
        .await;
    assert_eq!(status, 200);
    assert_eq!(events.last().map(|e| e.1.clone()), Some(json!("[DONE]")));
    assert_eq!(events[0].1["choices"][0]["delta"]["role"], "assistant");
    let text: String = events
        .iter()
        .filter_map(|(_, d)| d["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert!(text.contains("300 kelvin"), "{text}");
    assert!(events
        .iter()
        .any(|(_, d)| d["usage"]["total_tokens"].is_u64()));
    assert!(events
        .iter()
        .any(|(_, d)| d["choices"][0]["finish_reason"] == "stop"));

    let r = key
        .post(
            &format!("{base}/chat/completions"),
            json!({"model": "ghost", "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    assert_eq!((r.status, r.code()), (404, "not_found"));
    let r = key
        .post(
            &format!("{base}/chat/completions"),
            json!({"model": "default", "messages": [{"role": "assistant", "content": "x"}]}),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "invalid_request"));
    let search_only = op.key_client(&ws, &["search"]).await;
    let r = search_only
        .post(
            &format!("{base}/chat/completions"),
            json!({"model": "default", "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
    assert_eq!(
        op.without_token()
            .get(&format!("{base}/models"))
            .await
            .status,
        401
    );
}

#[tokio::test]
async fn mcp_initializes_lists_and_calls_tools_in_the_tenant_context() {
    let s = TestServer::start();
    let op = s.api();
    let org = op.create_org("mcp").await;
    let ws = op.create_workspace(&org, "kb").await;
    let docs = s
        .seed_documents(
            &ws,
            &[
                (
                    "Public",
                    json!({"tier": "free"}),
                    "The delta protocol uses port 4242.",
                ),
                (
                    "Private",
                    json!({"tier": "paid"}),
                    "The delta protocol premium uses port 9999.",
                ),
            ],
        )
        .await;
    let key = op.create_key(&ws, &["search", "chat"]).await;
    let url = format!("{}/v1/workspaces/{ws}/mcp", s.base);
    let client = reqwest::Client::new();

    let (status, sid, body) = mcp(&client, &url, &key.key, None, json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
    })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["protocolVersion"], "2025-06-18");
    assert_eq!(body["result"]["serverInfo"]["name"], "enclave");
    let sid = sid.expect("session id");
    let (status, _, _) = mcp(
        &client,
        &url,
        &key.key,
        Some(&sid),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await;
    assert_eq!(status, 202);

    let (_, _, body) = mcp(
        &client,
        &url,
        &key.key,
        Some(&sid),
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
    )
    .await;
    let names: Vec<&str> = body["result"]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["search", "fulltext_search", "vector_search", "get_document"]
    );
    assert_eq!(
        body["result"]["tools"][0]["inputSchema"]["required"],
        json!(["query"])
    );

    let (_, _, body) = mcp(
        &client,
        &url,
        &key.key,
        Some(&sid),
        json!({
            "jsonrpc": "2.0", "id": 3, "method": "tools/call",
            "params": {"name": "search", "arguments": {"query": "delta protocol port"}}
        }),
    )
    .await;
    assert_eq!(body["result"]["isError"], false, "{body}");
    let results = body["result"]["structuredContent"]["results"]
        .as_array()
        .expect("results");
    assert_eq!(results.len(), 2);
    assert!(body["result"]["content"][0]["text"]
        .as_str()
        .expect("text")
        .contains("4242"));

    let (_, _, body) = mcp(
        &client,
        &url,
        &key.key,
        Some(&sid),
        json!({
            "jsonrpc": "2.0", "id": 4, "method": "tools/call",
            "params": {"name": "get_document", "arguments": {"document_id": docs[1].0}}
        }),
    )
    .await;
    assert!(body["result"]["structuredContent"]["text"]
        .as_str()
        .expect("t")
        .contains("9999"));
    let (_, _, body) = mcp(&client, &url, &key.key, Some(&sid), json!({
        "jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "search", "arguments": {}}
    })).await;
    assert_eq!(body["result"]["isError"], true);
    let (_, _, body) = mcp(
        &client,
        &url,
        &key.key,
        Some(&sid),
        json!({"jsonrpc": "2.0", "id": 6, "method": "nope"}),
    )
    .await;
    assert_eq!(body["error"]["code"], -32601);

    // A tenant token's filter binds MCP tools too.
    let token = op
        .with_token(&key.key)
        .tenant_token(json!({"scopes": ["search"], "filter": {"tier": "free"}}))
        .await;
    let (_, tsid, _) = mcp(&client, &url, &token, None, json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-03-26"}
    })).await;
    let tsid = tsid.expect("sid");
    let (_, _, body) = mcp(&client, &url, &token, Some(&tsid), json!({
        "jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "search", "arguments": {"query": "delta protocol port"}}
    })).await;
    let results = body["result"]["structuredContent"]["results"]
        .as_array()
        .expect("results");
    assert_eq!(results.len(), 1);
    assert_eq!(results[0]["document_id"].as_str(), Some(docs[0].0.as_str()));
    let (_, _, body) = mcp(&client, &url, &token, Some(&tsid), json!({
        "jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "get_document", "arguments": {"document_id": docs[1].0}}
    })).await;
    assert_eq!(
        body["result"]["isError"], true,
        "the paid document is outside the token's filter"
    );

    // Sessions: required, bound to their principal and workspace.
    let (status, _, _) = mcp(
        &client,
        &url,
        &key.key,
        None,
        json!({"jsonrpc": "2.0", "id": 7, "method": "tools/list"}),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _, _) = mcp(
        &client,
        &url,
        &token,
        Some(&sid),
        json!({"jsonrpc": "2.0", "id": 7, "method": "tools/list"}),
    )
    .await;
    assert_eq!(status, 404, "another principal's session");
    let (status, _, _) = mcp(
        &client,
        &url,
        &key.key,
        Some("f00d"),
        json!({"jsonrpc": "2.0", "id": 7, "method": "tools/list"}),
    )
    .await;
    assert_eq!(status, 404);
    let resp = client
        .post(&url)
        .bearer_auth(&key.key)
        .body("{oops")
        .header("content-type", "application/json")
        .header("mcp-session-id", &sid)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 400);
    let resp = client
        .get(&url)
        .bearer_auth(&key.key)
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status().as_u16(), 405);
    let resp = client
        .post(&url)
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
        .send()
        .await
        .expect("anon");
    assert_eq!(resp.status().as_u16(), 401);
    let resp = client
        .delete(&url)
        .bearer_auth(&key.key)
        .header("mcp-session-id", &sid)
        .send()
        .await
        .expect("delete");
    assert_eq!(resp.status().as_u16(), 204);
    let (status, _, _) = mcp(
        &client,
        &url,
        &key.key,
        Some(&sid),
        json!({"jsonrpc": "2.0", "id": 8, "method": "ping"}),
    )
    .await;
    assert_eq!(status, 404, "ended");

    // A key without search sees no tools.
    let chat_only = op.create_key(&ws, &["chat"]).await;
    let (_, csid, _) = mcp(&client, &format!("{}/v1/mcp", s.base), &chat_only.key, None, json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18"}
    })).await;
    let (_, _, body) = mcp(
        &client,
        &format!("{}/v1/mcp", s.base),
        &chat_only.key,
        csid.as_deref(),
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
    )
    .await;
    assert_eq!(body["result"]["tools"], json!([]));
}
