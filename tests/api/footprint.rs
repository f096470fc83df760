//! Issue 16: a workspace's footprint on disk and its reopening. A 200-document workspace of
//! user-provided vectors ends in at most 12 files once idle; text sent as JSON leaves no blob
//! (an uploaded file keeps one); the WAL is truncated when the store goes idle and when it
//! closes; reopening after LRU churn keeps every document.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{Options, TestServer};

const DIM: usize = 16;

fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).expect("prefix").display().to_string());
            }
        }
    }
    out.sort();
    out
}

fn vector(i: usize) -> Vec<f32> {
    (0..DIM)
        .map(|d| (((i * 31 + d * 7) % 17) as f32 - 8.0) / 8.0)
        .collect()
}

fn doc(i: usize) -> Value {
    json!({
        "title": format!("note {i}"),
        "text": format!("walrus {i} notes about the store footprint and segment number {}", i % 7),
        "embedding": vector(i),
    })
}

/// Waits until `cond` holds (polling, generous deadline).
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_loaded_idle_workspace_is_small_and_keeps_no_blob_for_text() {
    let s = TestServer::start_with(Options::configured(|c| c.writer_idle_secs = 1));
    let api = s.api();
    let org = api.create_org("fp").await;
    let ws = api.create_workspace(&org, "fp").await;
    let r = api
        .send(
            reqwest::Method::PUT,
            &format!("/v1/workspaces/{ws}/embedder"),
            Some(json!({"kind": "user-provided", "dimension": DIM})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    // One request per document, as a client without a batch endpoint loads them; every
    // tenth waits for its job, so the index sees many small commits.
    let mut last_job = String::new();
    for i in 0..200 {
        if i % 10 == 9 {
            api.add_doc(&ws, doc(i)).await;
        } else {
            last_job = api.queue_document(&ws, doc(i)).await;
        }
    }
    let job = api.wait_job(&ws, &last_job, 120).await;
    assert_eq!(job["status"], "succeeded", "{job:?}");
    let dir = s.data_path(&ws);
    let blobs: Vec<String> = files_under(&dir.join("blobs"));
    assert!(
        blobs.is_empty(),
        "text sent as JSON keeps no blob: {blobs:?}"
    );

    // Idle: the writer is closed by the sweeper, its segments merged into one, the WAL
    // truncated.
    eventually("the idle writer is closed and the store compacted", || {
        let files = files_under(&dir);
        let wal = std::fs::metadata(dir.join("workspace.db-wal")).map_or(0, |m| m.len());
        files.len() <= 12 && wal == 0
    })
    .await;
    let files = files_under(&dir);
    assert!(files.len() <= 12, "{} files: {files:?}", files.len());
    let segments = files.iter().filter(|f| f.ends_with(".idx")).count();
    assert_eq!(segments, 1, "{files:?}");

    // Every document is still found, and the uploaded one's original is readable.
    let hits = api
        .search(
            &ws,
            json!({"query": "walrus", "mode": "fulltext", "limit": 50}),
        )
        .await;
    assert_eq!(hits.len(), 50);
    let docs = api
        .get(&format!(
            "/v1/workspaces/{ws}/documents?limit=100&offset=100"
        ))
        .await;
    assert_eq!(docs.body["data"].as_array().map(Vec::len), Some(100));
}

#[tokio::test]
async fn an_uploaded_file_keeps_its_blob_and_json_text_has_none() {
    let s = TestServer::start();
    let api = s.api();
    let ws = api.knowledge_workspace("blobs").await;
    let text = api
        .add_doc(
            &ws,
            json!({"title": "t", "text": "json text about walruses"}),
        )
        .await;
    let blobs = s.data_path(&format!("{ws}/blobs"));
    assert!(files_under(&blobs).is_empty());
    let up = api
        .upload(
            &format!("/v1/workspaces/{ws}/documents?wait=true"),
            "original.txt",
            Some("text/plain"),
            b"an uploaded original about narwhals".to_vec(),
            &[],
        )
        .await;
    assert_eq!(up.status, 201, "{:?}", up.body);
    assert_eq!(
        files_under(&blobs).len(),
        1,
        "the upload keeps its original"
    );
    for q in ["walruses", "narwhals"] {
        let hits = api
            .search(&ws, json!({"query": q, "mode": "fulltext"}))
            .await;
        assert_eq!(hits.len(), 1, "{q}");
    }
    // Deleting the uploaded document removes its blob; the text document had none to remove.
    let r = api
        .delete(&format!("/v1/workspaces/{ws}/documents/{}", up.id()))
        .await;
    assert_eq!(r.status, 204);
    assert!(files_under(&blobs).is_empty());
    let r = api
        .delete(&format!("/v1/workspaces/{ws}/documents/{text}"))
        .await;
    assert_eq!(r.status, 204);
}

#[tokio::test]
async fn reopening_after_churn_keeps_data_and_closing_truncates_the_wal() {
    // Two open stores at most: three workspaces churn through the cache.
    let s = TestServer::start_with(Options::configured(|c| c.max_open_workspaces = 2));
    let api = s.api();
    let mut spaces = Vec::new();
    for i in 0..3 {
        let ws = api.knowledge_workspace(&format!("churn-{i}")).await;
        for d in 0..3 {
            api.add_doc(
                &ws,
                json!({"title": format!("t{d}"), "text": format!("churned otter {i} {d}")}),
            )
            .await;
        }
        spaces.push(ws);
    }
    for round in 0..3 {
        for (i, ws) in spaces.iter().enumerate() {
            let hits = api
                .search(ws, json!({"query": "otter", "mode": "fulltext"}))
                .await;
            assert_eq!(hits.len(), 3, "round {round}, workspace {i}");
        }
    }
    // The first workspace was evicted (closed) by the others: its WAL holds nothing.
    let closed = &spaces[0];
    let _ = api
        .search(&spaces[1], json!({"query": "otter", "mode": "fulltext"}))
        .await;
    let _ = api
        .search(&spaces[2], json!({"query": "otter", "mode": "fulltext"}))
        .await;
    let wal =
        std::fs::metadata(s.data_path(closed).join("workspace.db-wal")).map_or(0, |m| m.len());
    assert_eq!(wal, 0, "a closed store's WAL is truncated");
}

#[tokio::test]
async fn an_export_carries_the_text_and_vector_of_documents_not_yet_indexed() {
    // No job workers: the documents stay queued, their text and vector in `document_bodies`.
    let tmp = tempfile::tempdir().expect("tempdir");
    let a = TestServer::start_with(Options::on(tmp.path(), 0));
    let api = a.api();
    let org = api.create_org("pending").await;
    let ws = api.create_workspace(&org, "pending").await;
    let r = api
        .send(
            reqwest::Method::PUT,
            &format!("/v1/workspaces/{ws}/embedder"),
            Some(json!({"kind": "user-provided", "dimension": DIM})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    api.queue_document(&ws, doc(1)).await;
    let bytes = crate::durability::export_bytes(&a, &ws).await;
    a.stop();

    let b = TestServer::start();
    let api = b.api();
    let org = api.create_org("target").await;
    let (status, body) = crate::durability::import_bytes(&b, &org, bytes, "").await;
    assert_eq!(status, 201, "{body:?}");
    let copy = body["id"].as_str().expect("id").to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let hits = api
            .search(&copy, json!({"query": "walrus", "mode": "fulltext"}))
            .await;
        if hits.len() == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the imported document was never indexed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Its own vector came along: vector search finds it by that vector.
    let hits = api
        .search(
            &copy,
            json!({"query": "walrus", "mode": "vector", "vector": vector(1)}),
        )
        .await;
    assert_eq!(hits.len(), 1, "{hits:?}");
}
