//! Knowledge: ingestion of every format, search in every mode with filters, external ids,
//! deletion, hostile files, job survival across a restart, scheduler fairness, embedders.

use std::sync::{Arc, Mutex};

use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::{tree, Options, TestServer};

/// A one-page PDF whose text layer says `text` (ASCII).
pub fn pdf_with_text(text: &str) -> Vec<u8> {
    let content = format!("BT /F1 12 Tf 72 712 Td ({text}) Tj ET");
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_string(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_string(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>".to_string(),
        format!("<< /Length {} >>\nstream\n{content}\nendstream", content.len()),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>".to_string(),
    ];
    pdf_of(&objects)
}

pub use crate::doc_files::{docx, pdf_of, pdf_with_comment};

fn para(text: &str) -> String {
    format!("<w:p><w:r><w:t>{text}</w:t></w:r></w:p>")
}

fn ids(results: &[Value]) -> Vec<String> {
    results
        .iter()
        .map(|r| r["document_id"].as_str().unwrap_or("").to_string())
        .collect()
}

#[tokio::test]
async fn json_documents_are_searchable_in_every_mode_with_filters() {
    let s = TestServer::start();
    let api = s.api();
    let ws = api.knowledge_workspace("k-json").await;
    let a = api
        .add_doc(
            &ws,
            json!({"title": "Refund policy", "text": "# Refunds\n\nCustomers may return hardware within thirty days for a full refund.",
                   "content_type": "text/markdown",
                   "metadata": {"group": "sales", "year": 2021, "published": "2021-05-01", "tags": ["billing", "policy"]}}),
        )
        .await;
    let b = api
        .add_doc(
            &ws,
            json!({"title": "Kubernetes upgrade", "text": "Upgrading the cluster requires draining every node before the kubelet restarts.",
                   "metadata": {"group": "eng", "year": 2024, "published": "2024-02-10", "tags": ["ops"]}}),
        )
        .await;
    let c = api
        .add_doc(
            &ws,
            json!({"title": "Holiday calendar", "text": "The office is closed on public holidays and the last week of December.",
                   "metadata": {"group": "hr", "year": 2023, "published": "2023-11-30"}}),
        )
        .await;

    // Full text: stemming ("refunds" finds "refund"), highlights, SPEC's shape.
    let r = api
        .search(
            &ws,
            json!({"query": "refunds hardware", "mode": "fulltext"}),
        )
        .await;
    assert_eq!(ids(&r)[0], a);
    let top = &r[0];
    for key in [
        "document_id",
        "external_id",
        "chunk_id",
        "title",
        "text",
        "score",
        "metadata",
        "highlights",
    ] {
        assert!(top.get(key).is_some(), "missing {key}: {top}");
    }
    assert_eq!(top["title"], "Refund policy");
    assert_eq!(top["heading_path"], "Refunds");
    assert!(
        top["highlights"][0]
            .as_str()
            .unwrap_or("")
            .contains("<mark>"),
        "{top}"
    );

    // Vector and hybrid find by meaning.
    for mode in ["vector", "hybrid"] {
        let r = api
            .search(
                &ws,
                json!({"query": "drain nodes before upgrading kubernetes", "mode": mode}),
            )
            .await;
        assert_eq!(ids(&r)[0], b, "{mode}: {r:?}");
    }
    // Default mode is hybrid.
    let r = api
        .post(
            &format!("/v1/workspaces/{ws}/search"),
            json!({"query": "office closed holidays"}),
        )
        .await;
    assert_eq!(r.body["mode"], "hybrid");
    assert_eq!(r.body["results"][0]["document_id"], c.as_str());

    // Filters apply to every mode.
    let q = "policy cluster office holidays refund upgrade";
    for mode in ["fulltext", "vector", "hybrid"] {
        let cases = [
            (json!({"metadata.group": "eng"}), vec![b.clone()]),
            (
                json!({"group": {"in": ["hr", "sales"]}}),
                vec![a.clone(), c.clone()],
            ),
            (json!({"year": {"gte": 2022, "lt": 2024}}), vec![c.clone()]),
            (
                json!({"published": {"gt": "2023-01-01"}}),
                vec![b.clone(), c.clone()],
            ),
            (json!({"tags": "policy"}), vec![a.clone()]),
            (
                json!({"document_id": {"in": [a, b]}}),
                vec![a.clone(), b.clone()],
            ),
            (
                json!({"or": [{"group": "hr"}, {"year": 2024}]}),
                vec![b.clone(), c.clone()],
            ),
        ];
        for (filter, want) in cases {
            let r = api
                .search(
                    &ws,
                    json!({"query": q, "mode": mode, "filter": filter, "limit": 10}),
                )
                .await;
            let mut got = ids(&r);
            got.sort();
            got.dedup();
            let mut want = want.clone();
            want.sort();
            assert_eq!(got, want, "{mode} {filter}");
        }
    }
    // limit / offset page through the same ranking.
    let all = api
        .search(&ws, json!({"query": q, "mode": "fulltext", "limit": 3}))
        .await;
    let second = api
        .search(
            &ws,
            json!({"query": q, "mode": "fulltext", "limit": 1, "offset": 1}),
        )
        .await;
    assert_eq!(ids(&second), vec![ids(&all)[1].clone()]);

    // Bad requests are clear 4xx errors.
    for bad in [
        json!({"query": "x", "mode": "fuzzy"}),
        json!({"query": "x", "limit": 0}),
        json!({"query": "x", "filter": {"a": {"like": 1}}}),
        json!({"query": "x", "filter": [1]}),
        json!({"query": ""}),
        json!({"query": "x", "unknown": 1}),
    ] {
        let r = api
            .post(&format!("/v1/workspaces/{ws}/search"), bad.clone())
            .await;
        assert!(matches!(r.status, 400 | 422), "{bad}: {}", r.status);
        assert_eq!(r.code(), "invalid_request", "{bad}");
    }
}

#[tokio::test]
async fn every_format_is_ingested() {
    let s = TestServer::start();
    let api = s.api();
    let ws = api.knowledge_workspace("k-formats").await;
    let path = format!("/v1/workspaces/{ws}/documents?wait=true");
    let files: Vec<(&str, Option<&str>, Vec<u8>, &str)> = vec![
        ("notes.txt", Some("text/plain"), b"Plain aardvark notes.\n\nSecond paragraph.".to_vec(), "aardvark"),
        ("guide.md", None, b"# Guide\n\n## Setup\n\nInstall the bandicoot package.".to_vec(), "bandicoot"),
        ("page.html", Some("text/html"), b"<html><head><title>Page</title><script>capybara()</script></head><body><h1>Intro</h1><p>The chinchilla lives here.</p></body></html>".to_vec(), "chinchilla"),
        ("table.csv", Some("text/csv"), b"animal,home\ndingo,Australia\n".to_vec(), "dingo"),
        ("data.json", Some("application/json"), br#"{"title": "Zoo", "animals": [{"name": "echidna"}]}"#.to_vec(), "echidna"),
        ("report.pdf", Some("application/pdf"), pdf_with_text("The flamingo report"), "flamingo"),
        ("memo.docx", None, docx(&format!(
            r#"<w:p><w:pPr><w:pStyle w:val="Heading1"/></w:pPr><w:r><w:t>Memo</w:t></w:r></w:p>{}"#,
            para("A gazelle crossed the road.")
        )), "gazelle"),
    ];
    for (name, ct, bytes, word) in files {
        let r = api
            .upload(
                &path,
                name,
                ct,
                bytes,
                &[("metadata", r#"{"kind": "file"}"#)],
            )
            .await;
        assert_eq!(r.status, 201, "{name}: {:?}", r.body);
        assert_eq!(r.body["status"], "indexed", "{name}");
        assert_eq!(r.body["source_name"], name);
        let hits = api
            .search(&ws, json!({"query": word, "mode": "fulltext"}))
            .await;
        assert_eq!(hits.len(), 1, "{name}: {hits:?}");
        assert_eq!(hits[0]["metadata"]["kind"], "file");
    }
    // The script of the HTML page is not indexed.
    assert!(api
        .search(&ws, json!({"query": "capybara", "mode": "fulltext"}))
        .await
        .is_empty());
    // Heading paths are indexed and returned.
    let hits = api
        .search(&ws, json!({"query": "setup", "mode": "fulltext"}))
        .await;
    assert_eq!(hits[0]["heading_path"], "Guide > Setup");
    let docs = api.get(&format!("/v1/workspaces/{ws}/documents")).await;
    assert_eq!(docs.body["data"].as_array().map(Vec::len), Some(7));
}

#[tokio::test]
async fn hostile_and_unsupported_files_fail_alone() {
    let s = TestServer::start_with(Options::configured(|c| c.max_upload_bytes = 4 << 20));
    let api = s.api();
    let ws = api.knowledge_workspace("k-hostile").await;
    let path = format!("/v1/workspaces/{ws}/documents?wait=true");
    api.add_doc(&ws, json!({"title": "ok", "text": "the survivor document"}))
        .await;

    // A zip bomb DOCX: ~100 MB of XML in well under a megabyte.
    let p = para(&"a".repeat(1000));
    let bomb = docx(&p.repeat(100_000));
    assert!(bomb.len() < (4 << 20), "{}", bomb.len());
    let r = api.upload(&path, "bomb.docx", None, bomb, &[]).await;
    assert_eq!(
        (r.status, r.code()),
        (422, "invalid_request"),
        "{:?}",
        r.body
    );
    assert!(r.message().contains("zip bomb"), "{:?}", r.body);

    let r = api
        .upload(
            &path,
            "broken.pdf",
            None,
            b"%PDF-1.7\n1 0 obj << /Broken".to_vec(),
            &[],
        )
        .await;
    assert_eq!(r.status, 422, "{:?}", r.body);
    let deep = "[".repeat(50_000) + &"]".repeat(50_000);
    let r = api
        .upload(&path, "deep.json", None, deep.into_bytes(), &[])
        .await;
    assert_eq!(r.status, 422, "{:?}", r.body);
    assert!(r.message().contains("nested"));

    let r = api
        .upload(
            &path,
            "x.png",
            Some("image/png"),
            b"\x89PNG\r\n\x1a\n\0\0".to_vec(),
            &[],
        )
        .await;
    assert_eq!((r.status, r.code()), (415, "unsupported_media_type"));
    let r = api
        .upload(&path, "big.txt", None, vec![b'a'; 5 << 20], &[])
        .await;
    assert_eq!((r.status, r.code()), (413, "payload_too_large"));
    let r = api.post(&path, json!({"text": "x".repeat(5 << 20)})).await;
    assert_eq!((r.status, r.code()), (413, "payload_too_large"));
    let r = api
        .upload(&path, "a.txt", None, b"hi".to_vec(), &[("metadata", "[1]")])
        .await;
    assert_eq!(r.code(), "invalid_request");

    // Failed documents are listed with their reason; the good one is untouched.
    let failed = api
        .get(&format!("/v1/workspaces/{ws}/documents?status=failed"))
        .await;
    assert_eq!(
        failed.body["data"].as_array().map(Vec::len),
        Some(3),
        "{:?}",
        failed.body
    );
    let hits = api.search(&ws, json!({"query": "survivor"})).await;
    assert_eq!(hits.len(), 1);
}

#[tokio::test]
async fn external_ids_replace_dedup_and_delete_removes_everything() {
    let s = TestServer::start();
    let api = s.api();
    let ws = api.knowledge_workspace("k-ext").await;
    let docs = format!("/v1/workspaces/{ws}/documents");
    let first = api
        .add_doc(
            &ws,
            json!({"external_id": "kb-1", "title": "v1", "text": "original walrus text"}),
        )
        .await;
    // Identical again: nothing new.
    let r = api
        .post(
            &docs,
            json!({"external_id": "kb-1", "title": "v1", "text": "original walrus text"}),
        )
        .await;
    assert_eq!(
        (r.status, r.body["duplicate"].as_bool()),
        (200, Some(true)),
        "{:?}",
        r.body
    );
    assert_eq!(r.id(), first);
    // New content under the same external id replaces it.
    let second = api
        .add_doc(
            &ws,
            json!({"external_id": "kb-1", "title": "v2", "text": "updated narwhal text"}),
        )
        .await;
    assert_ne!(first, second);
    let list = api.get(&docs).await;
    assert_eq!(list.body["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(list.body["data"][0]["external_id"], "kb-1");
    assert!(api
        .search(&ws, json!({"query": "walrus", "mode": "fulltext"}))
        .await
        .is_empty());
    let hits = api.search(&ws, json!({"query": "narwhal"})).await;
    assert_eq!(hits[0]["external_id"], "kb-1");
    assert_eq!(api.get(&format!("{docs}/{first}")).await.status, 404);

    // Delete: gone from every index (text sent as JSON keeps no blob: `footprint.rs` checks
    // an upload's is removed).
    let r = api.delete(&format!("{docs}/{second}")).await;
    assert_eq!(r.status, 204);
    for mode in ["fulltext", "vector", "hybrid"] {
        assert!(
            api.search(&ws, json!({"query": "narwhal", "mode": mode}))
                .await
                .is_empty(),
            "{mode}"
        );
    }
    let blobs_after = tree(&s.data_path(&format!("{ws}/blobs")));
    assert!(!blobs_after.iter().any(|f| f.len() > 60), "{blobs_after:?}");
    assert_eq!(api.delete(&format!("{docs}/{second}")).await.status, 404);
    assert_eq!(api.get(&format!("{docs}/not-a-uuid")).await.status, 400);
}

#[tokio::test]
async fn jobs_survive_a_restart_and_can_be_cancelled() {
    let tmp = tempfile::tempdir().expect("tmp");
    let s = TestServer::start_with(Options::on(tmp.path(), 0));
    let api = s.api();
    let ws = api.knowledge_workspace("k-restart").await;
    let job = api
        .queue_document(&ws, json!({"text": "persistent puffin"}))
        .await;
    let cancel_job = api
        .queue_document(&ws, json!({"text": "cancelled cormorant"}))
        .await;
    let j = api.get(&format!("/v1/workspaces/{ws}/jobs/{job}")).await;
    assert_eq!(j.body["status"], "queued");
    let c = api
        .post(
            &format!("/v1/workspaces/{ws}/jobs/{cancel_job}/cancel"),
            json!({}),
        )
        .await;
    assert_eq!(c.body["status"], "cancelled", "{:?}", c.body);
    drop(s);

    let s = TestServer::start_with(Options::on(tmp.path(), 1));
    let api = s.api();
    let done = api.wait_job(&ws, &job, 60).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["progress"], 1.0);
    assert_eq!(api.search(&ws, json!({"query": "puffin"})).await.len(), 1);
    assert!(api
        .search(&ws, json!({"query": "cormorant", "mode": "fulltext"}))
        .await
        .is_empty());
    let again = api
        .post(&format!("/v1/workspaces/{ws}/jobs/{job}/cancel"), json!({}))
        .await;
    assert_eq!(again.status, 409);
}

/// The status of a job read straight from the workspace database (the API refuses a suspended
/// org's requests, the operator's included).
fn job_status(s: &TestServer, ws: &str, job: &str) -> String {
    let id = uuid::Uuid::parse_str(ws).expect("ws id");
    let (_, handle) = s.app.tenancy().open_workspace(id).expect("open");
    let conn = handle.conn();
    conn.query_row("SELECT status FROM jobs WHERE id = ?1", [job], |r| {
        r.get::<_, String>(0)
    })
    .expect("job row")
}

#[tokio::test]
async fn a_suspended_orgs_jobs_wait_for_its_reactivation() {
    let tmp = tempfile::tempdir().expect("tmp");
    // No workers: the test runs the scheduler's quanta itself, so nothing races.
    let s = TestServer::start_with(Options::on(tmp.path(), 0));
    let api = s.api();
    let ws = api.knowledge_workspace("k-suspended").await;
    let job = api
        .queue_document(&ws, json!({"text": "dormant dormouse"}))
        .await;
    let r = api.post("/v1/orgs/k-suspended/suspend", json!({})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let marker = s.data_path(&format!(".queue/{ws}"));
    assert!(marker.exists());

    let app = s.app.clone();
    tokio::task::spawn_blocking(move || app.knowledge().run_jobs_until_idle(|| ()))
        .await
        .expect("run");
    assert!(
        s.app.knowledge().scheduler().is_idle(),
        "the suspended workspace left the queue"
    );
    assert_eq!(job_status(&s, &ws, &job), "queued");
    assert!(marker.exists(), "the marker stays for the reactivation");
    let r = api.get(&format!("/v1/workspaces/{ws}/jobs/{job}")).await;
    assert_eq!((r.status, r.code()), (403, "tenant_suspended"));

    let r = api.post("/v1/orgs/k-suspended/reactivate", json!({})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(
        !s.app.knowledge().scheduler().is_idle(),
        "reactivation woke the workspace"
    );
    let app = s.app.clone();
    tokio::task::spawn_blocking(move || app.knowledge().run_jobs_until_idle(|| ()))
        .await
        .expect("run");
    assert_eq!(job_status(&s, &ws, &job), "succeeded");
    assert!(!marker.exists());
    assert_eq!(api.search(&ws, json!({"query": "dormouse"})).await.len(), 1);

    // Across a restart: a job queued, the org suspended, the server restarted with a worker;
    // reactivation starts the job.
    let job = api
        .queue_document(&ws, json!({"text": "hibernating hedgehog"}))
        .await;
    let r = api.post("/v1/orgs/k-suspended/suspend", json!({})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    drop(s);
    let s = TestServer::start_with(Options::on(tmp.path(), 1));
    let api = s.api();
    assert!(s.data_path(&format!(".queue/{ws}")).exists());
    let r = api.post("/v1/orgs/k-suspended/reactivate", json!({})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let done = api.wait_job(&ws, &job, 60).await;
    assert_eq!(done["status"], "succeeded", "{done}");
}

#[tokio::test]
async fn a_big_backlog_does_not_starve_a_small_workspace() {
    let tmp = tempfile::tempdir().expect("tmp");
    let s = TestServer::start_with(Options::on(tmp.path(), 0));
    let api = s.api();
    let big = api.knowledge_workspace("k-big").await;
    let small = api.knowledge_workspace("k-small").await;
    let mut big_jobs = Vec::new();
    for i in 0..400 {
        let text = format!(
            "bulk document number {i} about many things. {}",
            "filler words here. ".repeat(40)
        );
        big_jobs.push(api.queue_document(&big, json!({ "text": text })).await);
    }
    let small_job = api
        .queue_document(&small, json!({"text": "the single small one"}))
        .await;
    drop(s);

    let s = TestServer::start_with(Options::on(tmp.path(), 1));
    let api = s.api();
    let done = api.wait_job(&small, &small_job, 120).await;
    assert_eq!(done["status"], "succeeded");
    let last = api
        .get(&format!("/v1/workspaces/{big}/jobs/{}", big_jobs[399]))
        .await;
    assert_ne!(
        last.body["status"], "succeeded",
        "the big backlog finished first: {:?}",
        last.body
    );
    let done = api.wait_job(&big, &big_jobs[399], 300).await;
    assert_eq!(done["status"], "succeeded");
}

#[tokio::test]
async fn switching_embedder_reembeds_in_the_background() {
    let s = TestServer::start();
    let api = s.api();
    let ws = api.knowledge_workspace("k-switch").await;
    for t in [
        "The lighthouse keeper trims the lamp every evening.",
        "Bread rises when yeast ferments the sugars in dough.",
        "Glaciers carve valleys over thousands of years.",
    ] {
        api.add_doc(&ws, json!({"text": t})).await;
    }
    let e = api.get(&format!("/v1/workspaces/{ws}/embedder")).await;
    assert_eq!(e.body["active"]["embedder"]["kind"], "static");
    assert_eq!(e.body["active"]["dimension"], 256);
    // Switch to the transformer: a re-embedding job; search keeps working meanwhile.
    let r = api
        .send(
            Method::PUT,
            &format!("/v1/workspaces/{ws}/embedder"),
            Some(json!({"kind": "minilm"})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let hits = api
        .search(
            &ws,
            json!({"query": "how does dough rise", "mode": "vector"}),
        )
        .await;
    assert!(!hits.is_empty());
    if let Some(job) = r.body["building"]["job"]["id"].as_str() {
        let done = api.wait_job(&ws, job, 300).await;
        assert_eq!(done["status"], "succeeded", "{done}");
    }
    let e = api.get(&format!("/v1/workspaces/{ws}/embedder")).await;
    assert_eq!(e.body["active"]["embedder"]["kind"], "minilm");
    assert_eq!(e.body["active"]["dimension"], 384);
    assert!(e.body["building"].is_null());
    let hits = api
        .search(
            &ws,
            json!({"query": "how does dough rise", "mode": "vector"}),
        )
        .await;
    assert!(
        hits[0]["text"].as_str().unwrap_or("").contains("yeast"),
        "{hits:?}"
    );
    // Bad configurations are refused.
    for bad in [
        json!({"kind": "nope"}),
        json!({"kind": "openai", "base_url": "ftp://x", "model": "m", "dimension": 3}),
    ] {
        let r = api
            .send(
                Method::PUT,
                &format!("/v1/workspaces/{ws}/embedder"),
                Some(bad),
            )
            .await;
        assert!(matches!(r.status, 400 | 422), "{:?}", r.body);
    }
}

/// A fake OpenAI-compatible `/embeddings` endpoint: 8-dimensional bag-of-letters vectors, or
/// HTTP 500 when the input contains "explode". Returns its base URL and the `Authorization`
/// headers it received.
async fn fake_provider() -> (String, Arc<Mutex<Vec<Option<String>>>>) {
    use axum::routing::post;
    type Seen = Arc<Mutex<Vec<Option<String>>>>;
    async fn embeddings(
        axum::extract::State(seen): axum::extract::State<Seen>,
        headers: axum::http::HeaderMap,
        axum::Json(body): axum::Json<Value>,
    ) -> axum::response::Response {
        use axum::response::IntoResponse;
        seen.lock().expect("lock").push(
            headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        );
        let inputs: Vec<String> = body["input"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if inputs.iter().any(|t| t.contains("explode")) {
            return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response();
        }
        let data: Vec<Value> = inputs
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let mut v = vec![0.01f32; 8];
                for b in t.bytes() {
                    v[(b % 8) as usize] += 1.0;
                }
                json!({"index": i, "embedding": v})
            })
            .collect();
        axum::Json(json!({"data": data})).into_response()
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen: Seen = Arc::default();
    let state = seen.clone();
    tokio::spawn(async move {
        let app = axum::Router::new()
            .route("/v1/embeddings", post(embeddings))
            .with_state(state);
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/v1"), seen)
}

/// Whether `needle` occurs in the bytes of any file of the workspace database (db, WAL).
fn in_workspace_db(s: &TestServer, ws: &str, needle: &str) -> bool {
    ["workspace.db", "workspace.db-wal"].iter().any(|f| {
        std::fs::read(s.data_path(&format!("{ws}/{f}")))
            .map(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
            .unwrap_or(false)
    })
}

const EMBED_KEY: &str = "sk-embed-secret-4242424242";

#[tokio::test]
async fn openai_compatible_and_user_provided_embedders() {
    let s = TestServer::start();
    let api = s.api();
    let (base, seen) = fake_provider().await;
    let org = api.create_org("k-remote").await;
    let ws = api.create_workspace(&org, "remote").await;
    let embedder = format!("/v1/workspaces/{ws}/embedder");
    // A search first: the workspace's embedder configurations are cached with it, and the
    // switch below must be seen (the search after it binds the org's provider).
    assert!(api
        .search(&ws, json!({"query": "zzz", "mode": "hybrid"}))
        .await
        .is_empty());
    let openai =
        json!({"kind": "openai", "provider": "openai-compatible", "model": "fake", "dimension": 8});
    // No provider in the org yet: not found.
    let r = api.send(Method::PUT, &embedder, Some(openai.clone())).await;
    assert_eq!((r.status, r.code()), (404, "not_found"), "{:?}", r.body);
    let r = api
        .send(
            Method::PUT,
            &format!("/v1/orgs/{org}/providers/openai-compatible"),
            Some(json!({"base_url": base, "model": "chat-model", "api_key": EMBED_KEY})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    // The endpoint and key come from the provider only.
    for body in [
        json!({"kind": "openai", "base_url": base, "model": "fake", "dimension": 8, "api_key": "sk-own"}),
        json!({"kind": "openai", "provider": "openai-compatible", "model": "fake", "dimension": 8, "base_url": "http://127.0.0.1:9/v1"}),
        json!({"kind": "openai", "provider": "elsewhere", "model": "fake", "dimension": 8}),
    ] {
        let r = api.send(Method::PUT, &embedder, Some(body.clone())).await;
        assert_eq!(
            (r.status, r.code()),
            (400, "invalid_request"),
            "{body}: {:?}",
            r.body
        );
    }
    let r = api.send(Method::PUT, &embedder, Some(openai.clone())).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["active"]["embedder"], openai, "{:?}", r.body);
    api.add_doc(&ws, json!({"text": "zzzz zzzz"})).await;
    api.add_doc(&ws, json!({"text": "aaaa aaaa"})).await;
    let hits = api
        .search(&ws, json!({"query": "zzz", "mode": "vector"}))
        .await;
    assert!(
        hits[0]["text"].as_str().unwrap_or("").contains("zzzz"),
        "{hits:?}"
    );
    let auth = seen.lock().expect("lock").clone();
    assert!(!auth.is_empty());
    let bearer = format!("Bearer {EMBED_KEY}");
    assert!(
        auth.iter().all(|a| a.as_deref() == Some(bearer.as_str())),
        "{auth:?}"
    );
    let r = api
        .post(
            &format!("/v1/workspaces/{ws}/search"),
            json!({"query": "explode", "mode": "vector"}),
        )
        .await;
    assert_eq!((r.status, r.code()), (502, "provider_error"));
    // The key is nowhere in the workspace's database, nor in clear in the control plane.
    let (_, handle) = s
        .app
        .tenancy()
        .open_workspace(ws.parse().expect("uuid"))
        .expect("open");
    handle
        .conn()
        .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
        .expect("checkpoint");
    drop(handle);
    assert!(!in_workspace_db(&s, &ws, EMBED_KEY));
    let control = std::fs::read(s.data_path("control.db")).expect("control.db");
    assert!(!control
        .windows(EMBED_KEY.len())
        .any(|w| w == EMBED_KEY.as_bytes()));
    let r = api.get(&embedder).await;
    assert!(!r.body.to_string().contains(EMBED_KEY), "{:?}", r.body);

    // Another org's workspace cannot use this org's provider (its lookup is in its own org).
    let other_org = api.create_org("k-remote-other").await;
    let other = api.create_workspace(&other_org, "other").await;
    let r = api
        .send(
            Method::PUT,
            &format!("/v1/workspaces/{other}/embedder"),
            Some(openai.clone()),
        )
        .await;
    assert_eq!((r.status, r.code()), (404, "not_found"), "{:?}", r.body);
    // Nor can an admin of the other org touch this org's provider.
    let admin = api
        .create_user(&other_org, "k-remote@example.com", "admin")
        .await;
    let r = api
        .with_token(&admin.token)
        .get(&format!("/v1/orgs/{org}/providers"))
        .await;
    assert_eq!((r.status, r.code()), (404, "not_found"), "{:?}", r.body);

    // Without the provider, vector search is a provider error; full text still works.
    let r = api
        .delete(&format!("/v1/orgs/{org}/providers/openai-compatible"))
        .await;
    assert_eq!(r.status, 204, "{:?}", r.body);
    let r = api
        .post(
            &format!("/v1/workspaces/{ws}/search"),
            json!({"query": "zzzz", "mode": "vector"}),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (502, "provider_error"),
        "{:?}",
        r.body
    );
    assert_eq!(
        api.search(&ws, json!({"query": "zzzz", "mode": "fulltext"}))
            .await
            .len(),
        1
    );

    // Bring your own vectors.
    let ws2 = api.create_workspace(&org, "byo").await;
    let r = api
        .send(
            Method::PUT,
            &format!("/v1/workspaces/{ws2}/embedder"),
            Some(json!({"kind": "user-provided", "dimension": 3})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    api.add_doc(&ws2, json!({"text": "east", "embedding": [1.0, 0.0, 0.0]}))
        .await;
    api.add_doc(&ws2, json!({"text": "north", "embedding": [0.0, 1.0, 0.0]}))
        .await;
    let hits = api
        .search(&ws2, json!({"vector": [0.1, 0.9, 0.0], "mode": "vector"}))
        .await;
    assert_eq!(hits[0]["text"], "north");
    let r = api
        .post(
            &format!("/v1/workspaces/{ws2}/documents"),
            json!({"text": "no vector"}),
        )
        .await;
    assert_eq!(r.code(), "invalid_request");
    let r = api
        .post(
            &format!("/v1/workspaces/{ws2}/search"),
            json!({"vector": [1.0], "mode": "vector"}),
        )
        .await;
    assert_eq!(r.code(), "invalid_request");
}

#[tokio::test]
async fn knowledge_routes_need_a_credential_and_a_workspace() {
    let s = TestServer::start();
    let anon = s.anonymous();
    let id = "01900000-0000-7000-8000-000000000000";
    let r = anon
        .post(
            &format!("/v1/workspaces/{id}/search"),
            json!({"query": "x"}),
        )
        .await;
    assert_eq!(r.status, 401);
    let r = s
        .api()
        .post(
            &format!("/v1/workspaces/{id}/search"),
            json!({"query": "x"}),
        )
        .await;
    assert_eq!((r.status, r.code()), (404, "not_found"));
    let r = s.api().get(&format!("/v1/workspaces/{id}/jobs/{id}")).await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn a_legacy_plaintext_embedder_key_is_moved_to_the_org_provider() {
    let s = TestServer::start();
    let api = s.api();
    let (base, seen) = fake_provider().await;
    let org = api.create_org("k-legacy").await;
    let ws = api.create_workspace(&org, "legacy").await;
    let r = api
        .send(
            Method::PUT,
            &format!("/v1/orgs/{org}/providers/openai-compatible"),
            Some(json!({"base_url": base, "model": "chat-model", "api_key": EMBED_KEY})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let openai =
        json!({"kind": "openai", "provider": "openai-compatible", "model": "fake", "dimension": 8});
    let r = api
        .send(
            Method::PUT,
            &format!("/v1/workspaces/{ws}/embedder"),
            Some(openai.clone()),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    api.add_doc(&ws, json!({"text": "zzzz zzzz"})).await;
    // What an older version stored: its own base URL and the key in clear.
    const LEGACY_KEY: &str = "sk-legacy-plaintext-0123456789";
    let (_, handle) = s
        .app
        .tenancy()
        .open_workspace(ws.parse().expect("uuid"))
        .expect("open");
    {
        let conn = handle.conn();
        conn.execute(
            "UPDATE vector_spaces SET embedder = ?1 WHERE state = 'active'",
            [json!({"kind": "openai", "base_url": base, "model": "fake", "dimension": 8, "api_key": LEGACY_KEY}).to_string()],
        )
        .expect("legacy row");
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .expect("checkpoint");
    }
    assert!(in_workspace_db(&s, &ws, LEGACY_KEY), "the fixture wrote it");
    seen.lock().expect("lock").clear();
    // The next use rewrites it: the org's provider (and its key) from now on.
    let hits = api
        .search(&ws, json!({"query": "zzz", "mode": "vector"}))
        .await;
    assert_eq!(hits.len(), 1, "{hits:?}");
    let bearer = format!("Bearer {EMBED_KEY}");
    assert_eq!(
        seen.lock().expect("lock").clone(),
        vec![Some(bearer)],
        "the org provider's key, not the legacy one"
    );
    let r = api.get(&format!("/v1/workspaces/{ws}/embedder")).await;
    assert_eq!(r.body["active"]["embedder"], openai, "{:?}", r.body);
    drop(handle);
    assert!(!in_workspace_db(&s, &ws, LEGACY_KEY));
}
