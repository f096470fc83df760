//! Issue 16, bulk load: `POST /v1/workspaces/{ws}/documents/batch` (and `/v1/documents/batch`
//! for API keys): a JSON array or NDJSON of documents, atomic, indexed when it answers.

use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::{Api, Options, TestServer};

const DIM: usize = 4;

/// A unit vector along axis `i % DIM` (tilted a little by `i / DIM` so vectors differ).
fn vector(i: usize) -> Vec<f32> {
    let mut v = vec![0.05 * (i / DIM) as f32; DIM];
    v[i % DIM] = 1.0;
    v
}

/// A new workspace whose vectors are user-provided, `DIM` dimensions.
async fn vector_workspace(api: &Api, slug: &str) -> String {
    let org = api.create_org(slug).await;
    let ws = api.create_workspace(&org, slug).await;
    let r = api
        .send(
            Method::PUT,
            &format!("/v1/workspaces/{ws}/embedder"),
            Some(json!({"kind": "user-provided", "dimension": DIM})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    ws
}

async fn batch(api: &Api, ws: &str, items: Value) -> crate::harness::Resp {
    api.post(&format!("/v1/workspaces/{ws}/documents/batch"), items)
        .await
}

async fn ndjson(api: &Api, ws: &str, items: &[Value]) -> crate::harness::Resp {
    let body: String = items.iter().map(|i| format!("{i}\n")).collect();
    api.raw(
        Method::POST,
        &format!("/v1/workspaces/{ws}/documents/batch"),
        "application/x-ndjson",
        &body,
    )
    .await
}

async fn count(api: &Api, ws: &str) -> usize {
    let r = api
        .get(&format!("/v1/workspaces/{ws}/documents?limit=1000"))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body["data"].as_array().map_or(0, Vec::len)
}

fn statuses(r: &crate::harness::Resp) -> Vec<String> {
    r.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["status"].as_str().unwrap_or("").to_string())
        .collect()
}

fn ids(r: &crate::harness::Resp) -> Vec<String> {
    r.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["id"].as_str().unwrap_or("").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_mixes_new_unchanged_and_updated_items() {
    let s = TestServer::start();
    let api = s.api();
    let ws = vector_workspace(&api, "mixed").await;
    let first = batch(
        &api,
        &ws,
        json!([
            {"title": "Herons", "text": "grey herons wade in shallow water", "embedding": vector(0)},
            {"text": "kingfishers dive for small fish", "external_id": "kf", "embedding": vector(1),
             "metadata": {"kind": "bird"}},
        ]),
    )
    .await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    assert_eq!(statuses(&first), ["created", "created"]);
    assert_eq!(
        (
            &first.body["created"],
            &first.body["updated"],
            &first.body["unchanged"]
        ),
        (&json!(2), &json!(0), &json!(0))
    );
    assert_eq!(first.body["items"][0]["document_status"], "indexed");
    assert_eq!(first.body["items"][0]["job_id"], Value::Null);
    let old_kf = first.body["items"][1]["id"]
        .as_str()
        .expect("id")
        .to_string();

    let second = batch(
        &api,
        &ws,
        json!([
            // The same document as item 0 before: unchanged, its id.
            {"title": "Herons", "text": "grey herons wade in shallow water", "embedding": vector(0)},
            // A new version of "kf": replaces it.
            {"text": "kingfishers dive for minnows", "external_id": "kf", "embedding": vector(1)},
            // New.
            {"text": "ospreys hover before they strike", "embedding": vector(2)},
            // The same as item 2 of this batch: unchanged, item 2's id.
            {"text": "ospreys hover before they strike", "embedding": vector(2)},
        ]),
    )
    .await;
    assert_eq!(second.status, 200, "{:?}", second.body);
    assert_eq!(
        statuses(&second),
        ["unchanged", "updated", "created", "unchanged"]
    );
    let got = ids(&second);
    assert_eq!(got[0], ids(&first)[0]);
    assert_ne!(got[1], old_kf, "the new version is a new document");
    assert_eq!(got[3], got[2]);
    for (i, item) in second.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .enumerate()
    {
        assert_eq!(item["index"], i);
    }
    assert_eq!(
        (
            &second.body["created"],
            &second.body["updated"],
            &second.body["unchanged"]
        ),
        (&json!(1), &json!(1), &json!(2))
    );
    // The replaced version is gone; the new one holds the external id, indexed.
    let old = api
        .get(&format!("/v1/workspaces/{ws}/documents/{old_kf}"))
        .await;
    assert_eq!(old.status, 404, "{:?}", old.body);
    let new = api
        .get(&format!("/v1/workspaces/{ws}/documents/{}", got[1]))
        .await;
    assert_eq!(new.status, 200, "{:?}", new.body);
    assert_eq!(new.body["external_id"], "kf");
    assert_eq!(new.body["status"], "indexed");
    assert_eq!(new.body["chunk_count"], 1);
    assert_eq!(new.body["embedded_chunks"], 1);
    assert_eq!(count(&api, &ws).await, 3);
    // A single add of a batch's document is its duplicate; a single add replaces a batch's.
    let r = api
        .post(
            &format!("/v1/workspaces/{ws}/documents"),
            json!({"text": "ospreys hover before they strike", "embedding": vector(2)}),
        )
        .await;
    assert_eq!((r.status, &r.body["duplicate"]), (200, &json!(true)));
    assert_eq!(r.body["id"], got[2].as_str());
    // One audit entry for the batch, its target the counts.
    let trail = api.get(&format!("/v1/workspaces/{ws}/audit")).await;
    assert_eq!(trail.status, 200, "{:?}", trail.body);
    let last = &trail.body["data"][1];
    assert_eq!(last["action"], "document.add_batch", "{:?}", trail.body);
    assert_eq!(
        last["target"], "batch:1 created, 1 updated, 2 unchanged",
        "{last}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_item_refuses_the_batch_naming_its_index() {
    let s = TestServer::start();
    let api = s.api();
    let ws = vector_workspace(&api, "bad-items").await;
    let good = |i: usize| json!({"text": format!("good document {i}"), "embedding": vector(i)});
    let cases: Vec<(Value, u16, usize, &str)> = vec![
        (
            json!([good(0), good(1), {"text": "x", "metadata": [1], "embedding": vector(2)}]),
            400,
            2,
            "metadata must be a JSON object",
        ),
        (
            json!([good(0), {"text": "wrong size", "embedding": [1.0, 2.0]}]),
            400,
            1,
            "embedding must be 4 finite numbers",
        ),
        (
            json!([{"text": "no vector"}, good(1)]),
            400,
            0,
            "user-provided",
        ),
        (
            json!([good(0), good(1), good(2), {"text": "a", "colour": "red"}]),
            422,
            3,
            "unknown field",
        ),
        (
            json!([good(0), {"text": "html?", "content_type": "application/pdf", "embedding": vector(1)}]),
            400,
            1,
            "content_type",
        ),
        (
            json!([
                {"text": "one", "external_id": "same", "embedding": vector(0)},
                {"text": "two", "external_id": "same", "embedding": vector(1)},
            ]),
            400,
            1,
            "external_id",
        ),
    ];
    for (body, status, index, words) in cases {
        let r = batch(&api, &ws, body.clone()).await;
        assert_eq!(r.status, status, "{body}: {:?}", r.body);
        assert_eq!(r.body["error"]["index"], index, "{body}: {:?}", r.body);
        assert!(
            r.message().starts_with(&format!("item {index}: ")) && r.message().contains(words),
            "{body}: {}",
            r.message()
        );
    }
    // NDJSON names the line's item too (a syntax error in item 1).
    let body = format!("{}\n{{\"text\": \n", good(0));
    let r = api
        .raw(
            Method::POST,
            &format!("/v1/workspaces/{ws}/documents/batch"),
            "application/x-ndjson",
            &body,
        )
        .await;
    assert_eq!(
        (r.status, &r.body["error"]["index"]),
        (400, &json!(1)),
        "{:?}",
        r.body
    );
    assert_eq!(
        count(&api, &ws).await,
        0,
        "nothing of a refused batch is stored"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn batches_over_the_limits_are_refused() {
    let s = TestServer::start_with(Options::configured(|c| {
        c.max_batch_documents = 3;
        c.max_batch_bytes = 4096;
    }));
    let api = s.api();
    let ws = vector_workspace(&api, "limits").await;
    let item = |i: usize| json!({"text": format!("document {i}"), "embedding": vector(i)});
    let r = batch(&api, &ws, json!([item(0), item(1), item(2), item(3)])).await;
    assert_eq!(
        (r.status, r.code()),
        (413, "payload_too_large"),
        "{:?}",
        r.body
    );
    assert!(
        r.message().contains("more than 3 documents"),
        "{}",
        r.message()
    );
    let items: Vec<Value> = (0..4).map(item).collect();
    let r = ndjson(&api, &ws, &items).await;
    assert_eq!(
        (r.status, r.code()),
        (413, "payload_too_large"),
        "{:?}",
        r.body
    );
    let r = batch(
        &api,
        &ws,
        json!([{"text": "y".repeat(5000), "embedding": vector(0)}]),
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (413, "payload_too_large"),
        "{:?}",
        r.body
    );
    assert!(r.message().contains("4096 bytes"), "{}", r.message());
    let r = batch(&api, &ws, json!([])).await;
    assert_eq!(
        (r.status, r.code()),
        (400, "invalid_request"),
        "{:?}",
        r.body
    );
    let r = batch(&api, &ws, json!({"text": "not an array"})).await;
    assert_eq!(r.status, 422, "{:?}", r.body);
    let r = api
        .raw(
            Method::POST,
            &format!("/v1/workspaces/{ws}/documents/batch"),
            "text/plain",
            "hello",
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (415, "unsupported_media_type"),
        "{:?}",
        r.body
    );
    // Within the limits it passes.
    let r = batch(&api, &ws, json!([item(0), item(1), item(2)])).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_documents_quota_is_reserved_for_the_whole_batch() {
    let s = TestServer::start();
    let api = s.api();
    let org = api.create_org("quota").await;
    let ws = api.create_workspace(&org, "quota").await;
    api.use_static_embedder(&ws).await;
    let r = api
        .send(
            Method::PUT,
            &format!("/v1/admin/orgs/{org}/limits"),
            Some(json!({"documents": 3})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let item = |i: usize| json!({"text": format!("quota document {i}")});
    // Four new documents would pass three: refused whole, nothing written.
    let r = batch(&api, &ws, json!([item(0), item(1), item(2), item(3)])).await;
    assert_eq!(
        (r.status, r.code()),
        (429, "quota_exceeded"),
        "{:?}",
        r.body
    );
    assert_eq!(r.body["error"]["resource"], "documents");
    assert_eq!(count(&api, &ws).await, 0);
    // Three fit.
    let r = batch(&api, &ws, json!([item(0), item(1), item(2)])).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(count(&api, &ws).await, 3);
    // At the limit, a batch of what is there already is no new document: answered unchanged.
    let r = batch(&api, &ws, json!([item(2), item(0)])).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(statuses(&r), ["unchanged", "unchanged"]);
    // One new one among them is refused.
    let r = batch(&api, &ws, json!([item(0), item(9)])).await;
    assert_eq!(
        (r.status, r.code()),
        (429, "quota_exceeded"),
        "{:?}",
        r.body
    );
    assert_eq!(count(&api, &ws).await, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn ndjson_and_a_json_array_give_the_same_result() {
    let s = TestServer::start();
    let api = s.api();
    let items: Vec<Value> = (0..6)
        .map(|i| {
            json!({
                "title": format!("Note {i}"),
                "text": format!("field note {i} about the marsh and its {} birds", ["wading", "diving"][i % 2]),
                "metadata": {"n": i},
                "external_id": format!("note-{i}"),
                "embedding": vector(i),
            })
        })
        .collect();
    let a = vector_workspace(&api, "as-array").await;
    let b = vector_workspace(&api, "as-ndjson").await;
    let ra = batch(&api, &a, Value::Array(items.clone())).await;
    let rb = ndjson(&api, &b, &items).await;
    assert_eq!(
        (ra.status, rb.status),
        (200, 200),
        "{:?} {:?}",
        ra.body,
        rb.body
    );
    assert_eq!(statuses(&ra), statuses(&rb));
    for k in ["created", "updated", "unchanged"] {
        assert_eq!(ra.body[k], rb.body[k]);
    }
    let view = |api: &Api, ws: String| {
        let api = api.clone();
        async move {
            let r = api
                .get(&format!("/v1/workspaces/{ws}/documents?limit=100"))
                .await;
            let mut docs: Vec<(String, String, String, Value)> = r.body["data"]
                .as_array()
                .expect("docs")
                .iter()
                .map(|d| {
                    (
                        d["external_id"].as_str().unwrap_or("").to_string(),
                        d["title"].as_str().unwrap_or("").to_string(),
                        d["content_hash"].as_str().unwrap_or("").to_string(),
                        d["metadata"].clone(),
                    )
                })
                .collect();
            docs.sort_by(|x, y| x.0.cmp(&y.0));
            docs
        }
    };
    assert_eq!(view(&api, a.clone()).await, view(&api, b.clone()).await);
    let titles = |hits: Vec<Value>| -> Vec<String> {
        hits.iter()
            .map(|h| h["title"].as_str().unwrap_or("").to_string())
            .collect()
    };
    let q = json!({"query": "diving birds", "mode": "fulltext"});
    assert_eq!(
        titles(api.search(&a, q.clone()).await),
        titles(api.search(&b, q).await)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_of_one_workspace_cannot_batch_into_another() {
    let s = TestServer::start();
    let api = s.api();
    let a = vector_workspace(&api, "iso-a").await;
    let b = vector_workspace(&api, "iso-b").await;
    let key_a = api.key_client(&a, &["ingest", "search"]).await;
    let doc = json!([{"text": "a's secret plans", "embedding": vector(0)}]);
    let r = key_a
        .post(&format!("/v1/workspaces/{b}/documents/batch"), doc.clone())
        .await;
    assert!(matches!(r.status, 403 | 404), "{:?}", r.body);
    // Without `{ws}`, the key's own workspace.
    let r = key_a.post("/v1/documents/batch", doc.clone()).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    // A workspace named in the header must be the key's.
    let r = key_a
        .with_header("X-Tenant-ID", &b)
        .post("/v1/documents/batch", doc.clone())
        .await;
    assert!(matches!(r.status, 403 | 404), "{:?}", r.body);
    assert_eq!((count(&api, &a).await, count(&api, &b).await), (1, 0));
    // A key without the ingest scope may not batch.
    let search_only = api.key_client(&a, &["search"]).await;
    let r = search_only
        .post(
            "/v1/documents/batch",
            json!([{"text": "other", "embedding": vector(1)}]),
        )
        .await;
    assert_eq!((r.status, r.code()), (403, "forbidden"), "{:?}", r.body);
    assert_eq!(count(&api, &a).await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn batched_documents_are_searchable_in_all_three_modes() {
    let s = TestServer::start();
    let api = s.api();
    // User-provided vectors: searchable in every mode when the batch answers.
    let ws = vector_workspace(&api, "modes").await;
    let words = ["heron", "kingfisher", "osprey", "grebe", "bittern", "egret"];
    let items: Vec<Value> = words
        .iter()
        .enumerate()
        .map(|(i, w)| json!({"title": w, "text": format!("the {w} of the marsh"), "embedding": vector(i)}))
        .collect();
    let r = batch(&api, &ws, Value::Array(items)).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let ids = ids(&r);
    let top = |hits: &[Value]| hits.first().map(|h| h["document_id"].clone());
    let hits = api
        .search(&ws, json!({"query": "osprey", "mode": "fulltext"}))
        .await;
    assert_eq!(top(&hits), Some(json!(ids[2])), "{hits:?}");
    let hits = api
        .search(
            &ws,
            json!({"mode": "vector", "vector": vector(3), "limit": 3}),
        )
        .await;
    assert_eq!(top(&hits), Some(json!(ids[3])), "{hits:?}");
    let hits = api
        .search(
            &ws,
            json!({"query": "bittern", "mode": "hybrid", "vector": vector(4), "limit": 3}),
        )
        .await;
    assert_eq!(top(&hits), Some(json!(ids[4])), "{hits:?}");

    // A built-in embedder: searchable by full text at once; each document's job embeds it.
    let ws = api.knowledge_workspace("modes-static").await;
    let items: Vec<Value> = words
        .iter()
        .map(|w| json!({"title": w, "text": format!("the {w} of the marsh, a wading bird")}))
        .collect();
    let r = batch(&api, &ws, Value::Array(items)).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let ids = self::ids(&r);
    let hits = api
        .search(&ws, json!({"query": "grebe", "mode": "fulltext"}))
        .await;
    assert_eq!(top(&hits), Some(json!(ids[3])), "{hits:?}");
    for item in r.body["items"].as_array().expect("items") {
        let job = item["job_id"].as_str().expect("an embedding job");
        let done = api.wait_job(&ws, job, 60).await;
        assert_eq!(done["status"], "succeeded", "{done:?}");
    }
    let doc = api
        .get(&format!("/v1/workspaces/{ws}/documents/{}", ids[1]))
        .await;
    assert_eq!(
        doc.body["embedded_chunks"], doc.body["chunk_count"],
        "{:?}",
        doc.body
    );
    for mode in ["vector", "hybrid"] {
        let hits = api
            .search(
                &ws,
                json!({"query": "kingfisher", "mode": mode, "limit": 6}),
            )
            .await;
        assert!(
            hits.iter().any(|h| h["document_id"] == json!(ids[1])),
            "{mode}: {hits:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn enclave_ingest_sends_text_files_in_batches_and_drops_a_refused_one() {
    let tmp = tempfile::tempdir().expect("tmp");
    let s = TestServer::start();
    let api = s.api();
    let ws = api.knowledge_workspace("cli-batch").await;
    let key = api.create_key(&ws, &["ingest"]).await;
    let docs = tmp.path().join("docs");
    std::fs::create_dir_all(&docs).expect("mkdir");
    for i in 0..5 {
        std::fs::write(
            docs.join(format!("note-{i}.md")),
            format!("# Note {i}\n\nthe marsh holds {i} herons"),
        )
        .expect("write");
    }
    // A name with a control character cannot be an external_id: the server refuses that item
    // (and with it the batch); the command sends the others again without it.
    std::fs::write(docs.join("bad\u{7}name.txt"), "refused by its name").expect("write");
    let run = || {
        crate::cli::enclave(
            &tmp.path().join("unused-data"),
            &[
                "ingest",
                "--server",
                &s.base,
                "--token",
                &key.key,
                docs.to_str().expect("utf-8 path"),
            ],
        )
    };
    let out = run();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!out.status.success(), "one file failed: {stdout}");
    assert!(
        stdout.contains("6 files: 5 added or updated, 0 unchanged, 0 skipped, 1 failed"),
        "{stdout}"
    );
    assert!(
        stdout.contains("name.txt: item") && stdout.contains("external_id"),
        "the refused file and why: {stdout}"
    );
    assert_eq!(count(&api, &ws).await, 5);
    let doc = &api
        .get(&format!("/v1/workspaces/{ws}/documents"))
        .await
        .body["data"][0];
    assert!(
        doc["source_name"]
            .as_str()
            .is_some_and(|n| n.starts_with("note-")),
        "{doc}"
    );
    assert_eq!(
        doc["title"].as_str().map(|t| t.starts_with("Note ")),
        Some(true),
        "{doc}"
    );
    assert_eq!(doc["mime_type"], "text/markdown", "{doc}");
    // Again: all unchanged.
    let out = run();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        stdout.contains("6 files: 0 added or updated, 5 unchanged, 0 skipped, 1 failed"),
        "{stdout}"
    );
    let hits = api
        .search(&ws, json!({"query": "herons", "mode": "hybrid"}))
        .await;
    assert_eq!(hits.len(), 5, "{hits:?}");
}

/// The documents of `ws` by external id: (title, status) of each holder, in listing order.
async fn by_external_id(api: &Api, ws: &str) -> std::collections::BTreeMap<String, Vec<Value>> {
    let mut out: std::collections::BTreeMap<String, Vec<Value>> = Default::default();
    let mut offset = 0;
    loop {
        let r = api
            .get(&format!(
                "/v1/workspaces/{ws}/documents?limit=1000&offset={offset}"
            ))
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        let page = r.body["data"].as_array().cloned().unwrap_or_default();
        offset += page.len();
        let n = page.len();
        for d in page {
            let ext = d["external_id"].as_str().unwrap_or("").to_string();
            out.entry(ext).or_default().push(d);
        }
        if n < 1000 {
            return out;
        }
    }
}

/// Durability of the batch route: the real binary receives batches (new documents, and
/// replacements of earlier ones by `external_id`) and is SIGKILLed at a random moment; after a
/// restart every acknowledged item is there exactly once, indexed, in its acknowledged version
/// (or in that of the batch cut by the kill, which is all or nothing), and findable by full
/// text and by vector. `ENCLAVE_CRASH_ITERATIONS` (default 3) kills, `ENCLAVE_CRASH_SEED`.
#[tokio::test(flavor = "multi_thread")]
async fn sigkill_during_batches_loses_no_acknowledged_item_and_no_batch_is_half_written() {
    use rand::{Rng, SeedableRng};
    use std::collections::BTreeMap;
    use std::time::Duration;

    const ITEMS: usize = 40;
    let (iterations, seed) = crate::harness::crash_settings("batch crash test", 3);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let tmp = tempfile::tempdir().expect("tempdir");
    let (mut child, mut base) = crate::harness::spawn_binary(tmp.path());
    let ws = vector_workspace(&Api::new(&base, Some(crate::harness::TOKEN)), "bulkcrash").await;
    // external id → the titles its holder may have (the acknowledged one, and the one of a
    // batch whose answer the kill cut).
    let mut allowed: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut next_batch = 0usize;
    for it in 0..iterations {
        let client = reqwest::Client::new();
        let url = format!("{base}/v1/workspaces/{ws}/documents/batch");
        let delay = Duration::from_millis(rng.random_range(50..1500));
        let deadline = tokio::time::Instant::now() + delay;
        // The batch in flight when the kill came: its titles by external id.
        let mut cut: Option<BTreeMap<String, String>> = None;
        loop {
            let b = next_batch;
            next_batch += 1;
            // Every third batch replaces the items of an earlier one; the others are new.
            let exts: Vec<String> = if b % 3 == 2 && allowed.len() >= ITEMS {
                let start = rng.random_range(0..=allowed.len() - ITEMS);
                allowed.keys().skip(start).take(ITEMS).cloned().collect()
            } else {
                (0..ITEMS).map(|i| format!("b{b}-{i}")).collect()
            };
            let titles: BTreeMap<String, String> = exts
                .iter()
                .enumerate()
                .map(|(i, e)| (e.clone(), format!("zq{b}x{i}")))
                .collect();
            let items: Vec<Value> = exts
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    json!({"title": titles[e], "text": format!("Document {} of batch {b}.", titles[e]),
                           "external_id": e, "embedding": vector(b * ITEMS + i)})
                })
                .collect();
            for (e, t) in &titles {
                allowed.entry(e.clone()).or_default().push(t.clone());
            }
            let sent = client
                .post(&url)
                .bearer_auth(crate::harness::TOKEN)
                .json(&items)
                .send();
            let answer = tokio::select! {
                r = sent => Some(r),
                _ = tokio::time::sleep_until(deadline) => None,
            };
            match answer {
                Some(Ok(r)) if r.status() == 200 => {
                    let body: Value = r.json().await.expect("answer");
                    assert_eq!(body["items"].as_array().map(Vec::len), Some(ITEMS));
                    for (e, t) in &titles {
                        allowed.insert(e.clone(), vec![t.clone()]);
                    }
                }
                Some(Ok(r)) => panic!("batch {b}: {} {:?}", r.status(), r.text().await),
                Some(Err(e)) => panic!("batch {b}: {e}"),
                None => {
                    cut = Some(titles);
                    break;
                }
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
        }
        // SAFETY: a signal to our own child.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGKILL);
        }
        let _ = child.wait();
        (child, base) = crate::harness::spawn_binary(tmp.path());
        let api = Api::new(&base, Some(crate::harness::TOKEN));
        let docs = by_external_id(&api, &ws).await;
        // The cut batch: all of its items in its version, or none.
        if let Some(titles) = &cut {
            let taken = titles
                .iter()
                .filter(|(e, t)| {
                    docs.get(*e)
                        .and_then(|d| d.first())
                        .is_some_and(|d| d["title"] == json!(t))
                })
                .count();
            assert!(
                taken == 0 || taken == titles.len(),
                "iteration {it}: {taken} of the cut batch's {} items were written",
                titles.len()
            );
        }
        for (ext, titles) in &mut allowed {
            let held = docs.get(ext).map(Vec::as_slice).unwrap_or_default();
            let is_cut_new = cut.as_ref().is_some_and(|c| c.contains_key(ext)) && titles.len() == 1;
            if held.is_empty() && is_cut_new {
                continue; // a new item of the cut batch, not taken
            }
            assert_eq!(
                held.len(),
                1,
                "iteration {it}: {ext} held {} times",
                held.len()
            );
            let d = &held[0];
            assert_eq!(d["status"], "indexed", "iteration {it}: {d}");
            let title = d["title"].as_str().unwrap_or("").to_string();
            assert!(
                titles.contains(&title),
                "iteration {it}: {ext} is {title:?}, not one of {titles:?}"
            );
            *titles = vec![title];
        }
        allowed.retain(|ext, _| docs.contains_key(ext));
        // Findable: a sample of the holders by full text and by vector (the id's own filter).
        let sample: Vec<(String, String)> = allowed
            .iter()
            .filter(|_| rng.random_bool(0.05))
            .take(10)
            .map(|(e, t)| (e.clone(), t[0].clone()))
            .collect();
        for (ext, title) in sample {
            let hits = api
                .search(&ws, json!({"query": title, "mode": "fulltext", "limit": 3}))
                .await;
            assert!(
                hits.first().is_some_and(|h| h["title"] == json!(title)),
                "{ext}: full text {title}: {hits:?}"
            );
            let hits = api
                .search(
                    &ws,
                    json!({"mode": "vector", "vector": vector(0), "limit": 1,
                           "filter": {"external_id": ext}}),
                )
                .await;
            assert_eq!(hits.len(), 1, "{ext}: vector: {hits:?}");
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}
