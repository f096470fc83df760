//! Issue 16 (disk): vector storage. A workspace whose vectors are sqlite-vec floats (made with
//! `vector_storage = "f32"`, as every workspace was before int8) stays searchable and writable
//! when the server moves to int8, and its archive keeps its storage; an int8 workspace's
//! archive round-trips to the same bytes; int8 and f32 workspaces answer alike.

use std::path::{Path, PathBuf};

use enclave::config::VectorStorage;
use serde_json::{json, Value};

use crate::durability::{entries, export_bytes, import_bytes};
use crate::harness::{Options, TestServer};

fn docs() -> Vec<Value> {
    [
        "Refunds are paid within thirty days of the request.",
        "Parcels ship from the warehouse in Lyon every weekday morning.",
        "Reset your password from the account page; the link expires after an hour.",
        "Invoices are sent by email at the end of each month.",
        "The orchard grows apples, pears and plums for the cider press.",
        "Support answers tickets in French and English during office hours.",
    ]
    .iter()
    .map(|t| json!({ "text": t }))
    .collect()
}

const QUERIES: &[&str] = &[
    "refund",
    "warehouse parcels",
    "password link",
    "apples cider",
    "email",
];

/// The active space's table of a workspace (read from its database file).
fn active_table(data_dir: &Path, ws: &str) -> String {
    let db = find(data_dir, ws)
        .expect("workspace folder")
        .join("workspace.db");
    let conn = rusqlite::Connection::open(db).expect("open");
    conn.query_row(
        "SELECT table_name FROM vector_spaces WHERE state = 'active'",
        [],
        |r| r.get(0),
    )
    .expect("active space")
}

fn find(dir: &Path, name: &str) -> Option<PathBuf> {
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n == name) && p.join("workspace.db").exists() {
                return Some(p);
            }
            if let Some(found) = find(&p, name) {
                return Some(found);
            }
        }
    }
    None
}

/// Vector search answers: (document, chunk, score) per query.
async fn vector_answers(s: &TestServer, ws: &str) -> Vec<Vec<(String, i64, f64)>> {
    let mut out = Vec::new();
    for q in QUERIES {
        let hits = s
            .api()
            .search(ws, json!({"query": q, "mode": "vector"}))
            .await;
        out.push(
            hits.iter()
                .map(|h| {
                    (
                        h["document_id"].as_str().unwrap_or_default().to_string(),
                        h["chunk_id"].as_i64().unwrap_or_default(),
                        h["score"].as_f64().unwrap_or_default(),
                    )
                })
                .collect(),
        );
    }
    out
}

#[tokio::test]
async fn an_f32_workspace_stays_searchable_and_writable_under_int8_and_keeps_its_storage_in_archives(
) {
    let tmp = tempfile::tempdir().expect("tmp");
    let a = TestServer::start_with(
        Options::on(tmp.path(), 1).with(|c| c.vector_storage = VectorStorage::F32),
    );
    let (ws, _) = a.api().workspace_with_docs("floats", docs()).await;
    let before = vector_answers(&a, &ws).await;
    assert!(before.iter().all(|hits| !hits.is_empty()));
    let data_dir = a.data_dir.clone();
    a.stop();
    assert!(active_table(&data_dir, &ws).starts_with("vec_"));

    // The same data under an int8 server (the default): the same answers, to the bit.
    let b = TestServer::start_with(Options::on(tmp.path(), 1));
    assert_eq!(vector_answers(&b, &ws).await, before);
    // New documents go into the workspace's float space and are found.
    b.api()
        .add_doc(
            &ws,
            json!({"text": "Gift cards never expire and can be refunded."}),
        )
        .await;
    let hits = b
        .api()
        .search(&ws, json!({"query": "gift cards", "mode": "vector"}))
        .await;
    assert!(
        hits[0]["text"]
            .as_str()
            .unwrap_or_default()
            .contains("Gift cards"),
        "{hits:?}"
    );
    // Its archive keeps float storage through an import on this int8 server.
    let first = export_bytes(&b, &ws).await;
    let org = b.api().create_org("copies").await;
    let (status, rec) = import_bytes(&b, &org, first.clone(), "").await;
    assert_eq!(status, 201, "{rec}");
    let copy = rec["id"].as_str().expect("id").to_string();
    assert_eq!(entries(&first), entries(&export_bytes(&b, &copy).await));
    assert_eq!(
        vector_answers(&b, &copy).await,
        vector_answers(&b, &ws).await
    );
    let data_dir = b.data_dir.clone();
    b.stop();
    assert!(active_table(&data_dir, &copy).starts_with("vec_"));
}

#[tokio::test]
async fn int8_archives_round_trip_to_the_same_bytes_and_int8_answers_like_f32() {
    let q8 = TestServer::start();
    let f32s = TestServer::start_with(Options::configured(|c| {
        c.vector_storage = VectorStorage::F32
    }));
    let (ws8, _) = q8.api().workspace_with_docs("bytes", docs()).await;
    let (ws32, _) = f32s.api().workspace_with_docs("floats", docs()).await;
    assert!(active_table(&q8.data_dir, &ws8).starts_with("vq_"));
    assert!(active_table(&f32s.data_dir, &ws32).starts_with("vec_"));
    // The same ranking (no ties in this corpus), scores within the quantisation error.
    let (a, b) = (
        vector_answers(&q8, &ws8).await,
        vector_answers(&f32s, &ws32).await,
    );
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.len(), y.len());
        for ((_, _, s8), (_, _, s32)) in x.iter().zip(y) {
            assert!((s8 - s32).abs() < 3e-3, "{s8} vs {s32}");
        }
    }
    let order = |v: &Vec<Vec<(String, i64, f64)>>| -> Vec<Vec<i64>> {
        v.iter().map(|h| h.iter().map(|x| x.1).collect()).collect()
    };
    assert_eq!(order(&a), order(&b));
    // Export, import, export: the same entries (the vectors dequantised, then the same bytes).
    let first = export_bytes(&q8, &ws8).await;
    let org = q8.api().create_org("again").await;
    let (status, rec) = import_bytes(&q8, &org, first.clone(), "").await;
    assert_eq!(status, 201, "{rec}");
    let copy = rec["id"].as_str().expect("id").to_string();
    assert_eq!(entries(&first), entries(&export_bytes(&q8, &copy).await));
    assert_eq!(vector_answers(&q8, &copy).await, a);
    assert!(active_table(&q8.data_dir, &copy).starts_with("vq_"));
    // An int8 archive imported by an f32 server stays int8.
    let org = f32s.api().create_org("from-int8").await;
    let (status, rec) = import_bytes(&f32s, &org, first, "").await;
    assert_eq!(status, 201, "{rec}");
    let there = rec["id"].as_str().expect("id").to_string();
    assert!(active_table(&f32s.data_dir, &there).starts_with("vq_"));
    assert_eq!(vector_answers(&f32s, &there).await, a);
}
