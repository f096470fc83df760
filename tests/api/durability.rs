//! Workspace archives (export / import) through the API: round trip between two servers,
//! refusal of corrupt, truncated and tampered archives (leaving nothing behind), permissions.

use std::collections::BTreeMap;
use std::io::Read;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::harness::{tree, TestServer};

pub async fn export_bytes(s: &TestServer, ws: &str) -> Vec<u8> {
    let r = reqwest::Client::new()
        .get(format!("{}/v1/workspaces/{ws}/export", s.base))
        .bearer_auth(&s.token)
        .send()
        .await
        .expect("export");
    assert_eq!(r.status(), 200, "export");
    assert_eq!(
        r.headers()["content-type"].to_str().expect("type"),
        "application/x-tar"
    );
    r.bytes().await.expect("body").to_vec()
}

pub async fn import_bytes(s: &TestServer, org: &str, bytes: Vec<u8>, query: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/v1/orgs/{org}/workspaces/import{query}", s.base))
        .bearer_auth(&s.token)
        .header("content-type", "application/x-tar")
        .body(bytes)
        .send()
        .await
        .expect("import");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The archive's entries: path → SHA-256 of the bytes (the manifest by its parsed content
/// without the export time and the source workspace's id).
pub fn entries(bytes: &[u8]) -> BTreeMap<String, String> {
    let mut a = tar::Archive::new(bytes);
    let mut out = BTreeMap::new();
    for e in a.entries().expect("tar") {
        let mut e = e.expect("entry");
        let path = e.path().expect("path").display().to_string();
        let mut data = Vec::new();
        e.read_to_end(&mut data).expect("read");
        let digest = if path == "manifest.json" {
            let mut m: Value = serde_json::from_slice(&data).expect("manifest");
            m["exported_at"] = Value::Null;
            m["workspace"]["id"] = Value::Null;
            hex::encode(Sha256::digest(m.to_string().as_bytes()))
        } else {
            hex::encode(Sha256::digest(&data))
        };
        out.insert(path, digest);
    }
    out
}

fn docs() -> Vec<Value> {
    vec![
        json!({"title": "Refunds", "text": "# Refunds\n\nRefunds are paid within thirty days of the request.",
               "content_type": "text/markdown", "metadata": {"group": "sales", "year": 2024}, "external_id": "kb-1"}),
        json!({"title": "Shipping", "text": "Parcels ship from the warehouse in Lyon every weekday morning.",
               "metadata": {"group": "ops"}, "external_id": "kb-2"}),
        json!({"title": "Passwords", "text": "Reset your password from the account page; the link expires after an hour.",
               "metadata": {"group": "support", "tags": ["account", "security"]}}),
    ]
}

const QUERIES: &[&str] = &[
    "refund days",
    "warehouse parcels",
    "password reset link",
    "account",
];

async fn answers(s: &TestServer, ws: &str) -> Vec<Value> {
    let api = s.api();
    let mut out = Vec::new();
    for q in QUERIES {
        for mode in ["fulltext", "vector", "hybrid"] {
            let hits = api.search(ws, json!({"query": q, "mode": mode})).await;
            out.push(json!(hits
                .iter()
                .map(|h| json!([h["document_id"], h["chunk_id"], h["external_id"], h["text"]]))
                .collect::<Vec<_>>()));
        }
    }
    out
}

#[tokio::test]
async fn export_import_round_trip_between_servers() {
    let a = TestServer::start();
    let api = a.api();
    let (ws, _) = api.workspace_with_docs("roundtrip", docs()).await;
    let r = api
        .post(
            &format!("/v1/workspaces/{ws}/agents"),
            json!({"name": "Support bot", "system_prompt": "Be brief.", "tools": ["search"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let r = api
        .post(
            &format!("/v1/workspaces/{ws}/chat"),
            json!({"query": "How are refunds paid?"}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let first = export_bytes(&a, &ws).await;
    let before = answers(&a, &ws).await;

    let b = TestServer::start();
    let org = b.api().create_org("elsewhere").await;
    let (status, rec) = import_bytes(&b, &org, first.clone(), "").await;
    assert_eq!(status, 201, "{rec}");
    let ws_b = rec["id"].as_str().expect("id").to_string();
    assert_ne!(ws_b, ws);
    assert_eq!(rec["slug"], "roundtrip");
    // The same content comes back out.
    let second = export_bytes(&b, &ws_b).await;
    assert_eq!(entries(&first), entries(&second));
    // Search answers the same queries with the same results in every mode.
    assert_eq!(before, answers(&b, &ws_b).await);
    // Documents, agents and chat sessions are there.
    let list = b
        .api()
        .get(&format!("/v1/workspaces/{ws_b}/documents"))
        .await;
    assert_eq!(
        list.body["data"].as_array().map(Vec::len),
        Some(3),
        "{:?}",
        list.body
    );
    let agents = b.api().get(&format!("/v1/workspaces/{ws_b}/agents")).await;
    assert!(
        agents.body.to_string().contains("support-bot"),
        "{:?}",
        agents.body
    );
    let sessions = b
        .api()
        .get(&format!("/v1/workspaces/{ws_b}/sessions"))
        .await;
    assert_eq!(
        sessions.body["data"].as_array().map(Vec::len),
        Some(1),
        "{:?}",
        sessions.body
    );
    // Ingestion goes on in the imported workspace (ids continue after the imported ones).
    b.api()
        .add_doc(&ws_b, json!({"text": "A fourth document about invoices."}))
        .await;
    let hits = b
        .api()
        .search(&ws_b, json!({"query": "invoices", "mode": "fulltext"}))
        .await;
    assert_eq!(hits.len(), 1);
    // The same slug again in the same org is a conflict, and leaves nothing.
    let (status, body) = import_bytes(&b, &org, first, "").await;
    assert_eq!(status, 409, "{body}");
}

fn rewrite(bytes: &[u8], f: impl Fn(&str, Vec<u8>) -> Option<Vec<u8>>) -> Vec<u8> {
    let mut a = tar::Archive::new(bytes);
    let mut out = tar::Builder::new(Vec::new());
    for e in a.entries().expect("tar") {
        let mut e = e.expect("entry");
        let path = e.path().expect("path").display().to_string();
        let mut data = Vec::new();
        e.read_to_end(&mut data).expect("read");
        if let Some(data) = f(&path, data) {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o600);
            out.append_data(&mut h, &path, &data[..]).expect("append");
        }
    }
    out.into_inner().expect("tar")
}

#[tokio::test]
async fn corrupt_truncated_or_tampered_archives_are_refused_and_leave_nothing() {
    let a = TestServer::start();
    let api = a.api();
    let (ws, _) = api.workspace_with_docs("source", docs()).await;
    // Text sent as JSON keeps no blob: an uploaded file gives the archive one to tamper with.
    let up = api
        .upload(
            &format!("/v1/workspaces/{ws}/documents?wait=true"),
            "original.txt",
            Some("text/plain"),
            b"an uploaded original".to_vec(),
            &[],
        )
        .await;
    assert_eq!(up.status, 201, "{:?}", up.body);
    let good = export_bytes(&a, &ws).await;
    let org = api.create_org("target").await;
    let before = tree(&a.data_dir);
    let listed = |v: &Value| v["data"].as_array().map(Vec::len);
    let n_before = listed(&api.get(&format!("/v1/orgs/{org}/workspaces")).await.body);

    // Rows of a table changed after the manifest was written: checksum.
    let tampered = rewrite(&good, |p, mut d| {
        if p == "tables/documents.jsonl" {
            let s = String::from_utf8(d)
                .expect("utf8")
                .replace("Refunds", "Refunde");
            d = s.into_bytes();
        }
        Some(d)
    });
    // A blob whose bytes do not match its name.
    let bad_blob = rewrite(&good, |p, mut d| {
        if p.starts_with("blobs/") {
            d.push(b'x');
        }
        Some(d)
    });
    // A missing entry.
    let missing = rewrite(&good, |p, d| (p != "tables/chunks.jsonl").then_some(d));
    // A path escaping the archive (written raw: the tar crate refuses `..` in paths).
    let mut escaping = good.clone();
    {
        let mut h = tar::Header::new_ustar();
        h.set_size(1);
        h.set_mode(0o600);
        h.as_ustar_mut().expect("ustar").name[..9].copy_from_slice(b"../x.json");
        h.set_cksum();
        let end = escaping.len() - 1024;
        escaping.truncate(end);
        escaping.extend_from_slice(h.as_bytes());
        escaping.extend_from_slice(&[b'x'; 1]);
        escaping.extend_from_slice(&[0u8; 511]);
        escaping.extend_from_slice(&[0u8; 1024]);
    }
    // A manifest that lies about a row count, with consistent checksums (rows are checked).
    let lying = {
        let mut a = tar::Archive::new(&good[..]);
        let mut m: Value = Value::Null;
        for e in a.entries().expect("tar") {
            let mut e = e.expect("entry");
            if e.path().expect("p").display().to_string() == "manifest.json" {
                let mut d = Vec::new();
                e.read_to_end(&mut d).expect("read");
                m = serde_json::from_slice(&d).expect("json");
            }
        }
        m["counts"]["documents"] = json!(7);
        rewrite(&good, |p, d| {
            Some(if p == "manifest.json" {
                m.to_string().into_bytes()
            } else {
                d
            })
        })
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("truncated", good[..good.len() / 2].to_vec(), "truncated"),
        (
            "garbage",
            b"this is not a tar archive at all".repeat(40),
            "invalid archive",
        ),
        ("empty", Vec::new(), "invalid archive"),
        ("tampered", tampered, "checksum mismatch"),
        ("bad blob", bad_blob, "do not match its name"),
        ("missing entry", missing, "missing"),
        ("escaping path", escaping, "paths must be relative"),
        ("lying manifest", lying, "the manifest says 7"),
    ];
    for (what, bytes, reason) in cases {
        let (status, body) = import_bytes(&a, &org, bytes, "?slug=copy").await;
        assert_eq!(status, 400, "{what}: {body}");
        assert_eq!(body["error"]["code"], "invalid_request", "{what}: {body}");
        let msg = body["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(reason), "{what}: {msg}");
        // Nothing left: no record, no folder, no staging file.
        assert_eq!(
            listed(&api.get(&format!("/v1/orgs/{org}/workspaces")).await.body),
            n_before,
            "{what}"
        );
        let now: Vec<String> = tree(&a.data_dir)
            .into_iter()
            .filter(|p| !p.starts_with(".trash"))
            .collect();
        let was: Vec<String> = before
            .iter()
            .filter(|p| !p.starts_with(".trash"))
            .cloned()
            .collect();
        let new_dirs: Vec<&String> = now
            .iter()
            .filter(|p| !was.contains(p) && !p.contains('/'))
            .collect();
        assert!(new_dirs.is_empty(), "{what}: left {new_dirs:?}");
        let trash: Vec<String> = tree(&a.data_dir.join(".trash"));
        assert!(trash.is_empty(), "{what}: staging left {trash:?}");
    }
    // The good one still imports.
    let (status, body) = import_bytes(&a, &org, good, "?slug=copy&name=Copy").await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["name"], "Copy");
}

#[tokio::test]
async fn export_needs_the_admin_role_or_a_manage_key() {
    let a = TestServer::start();
    let api = a.api();
    let org = api.create_org("perm").await;
    let ws = api.create_workspace(&org, "perm").await;
    let url = |p: &str| format!("/v1/workspaces/{ws}{p}");
    let member = api.user_client(&org, "m@perm.io", "member").await;
    assert_eq!(member.get(&url("/export")).await.status, 403);
    let admin = api.user_client(&org, "a@perm.io", "admin").await;
    assert_eq!(admin.get(&url("/export")).await.status, 200);
    let search_key = api.key_client(&ws, &["search", "ingest"]).await;
    assert_eq!(search_key.get(&url("/export")).await.status, 403);
    let manage_key = api.key_client(&ws, &["manage"]).await;
    assert_eq!(manage_key.get(&url("/export")).await.status, 200);
    let other = api.create_org("other").await;
    let outsider = api.user_client(&other, "o@other.io", "owner").await;
    assert_eq!(outsider.get(&url("/export")).await.status, 404);
    // Import makes a workspace: an org admin's action.
    let (status, _) = {
        let r = reqwest::Client::new()
            .post(format!("{}/v1/orgs/{org}/workspaces/import", a.base))
            .bearer_auth(member_token(&api, &org).await)
            .body(Vec::<u8>::new())
            .send()
            .await
            .expect("import");
        (r.status().as_u16(), ())
    };
    assert_eq!(status, 403);
}

async fn member_token(api: &crate::harness::Api, org: &str) -> String {
    api.create_user(org, "m2@perm.io", "member").await.token
}

/// Property: any small random workspace (documents with random words, metadata, external ids;
/// agents; a chat) exports, imports on another server and exports again to the same entries,
/// and search answers the same in every mode.
#[test]
fn random_workspaces_round_trip() {
    use proptest::prelude::*;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (a, b) = (TestServer::start(), TestServer::start());
    let (org_a, org_b) = rt.block_on(async {
        (
            a.api().create_org("prop-a").await,
            b.api().create_org("prop-b").await,
        )
    });
    let words = [
        "alpha", "beta", "gamma", "delta", "omega", "river", "stone", "cloud", "ember", "frost",
    ];
    let doc = (
        proptest::collection::vec(0..words.len(), 1..40),
        proptest::option::of(0u32..1000),
        proptest::option::of(-50i64..50),
        any::<bool>(),
    );
    let strategy = (
        proptest::collection::vec(doc, 0..5),
        0usize..3,
        any::<bool>(),
        proptest::collection::vec(0..words.len(), 1..3),
    );
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 6,
        ..ProptestConfig::default()
    });
    let n = std::sync::atomic::AtomicUsize::new(0);
    runner
        .run(&strategy, |(docs, agents, chat, query)| {
            let slug = format!("p{}", n.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
            rt.block_on(async {
                let api = a.api();
                let ws = api.create_workspace(&org_a, &slug).await;
                api.use_static_embedder(&ws).await;
                for (i, (ws_words, ext, num, flag)) in docs.iter().enumerate() {
                    let text: Vec<&str> = ws_words.iter().map(|w| words[*w]).collect();
                    let mut body = json!({"title": format!("d{i}"), "text": text.join(" "),
                                          "metadata": {"n": num, "flag": flag}});
                    if let Some(e) = ext {
                        body["external_id"] = json!(format!("x{e}"));
                    }
                    api.add_doc(&ws, body).await;
                }
                for i in 0..agents {
                    let r = api
                        .post(
                            &format!("/v1/workspaces/{ws}/agents"),
                            json!({"name": format!("agent {i}"), "public": i % 2 == 0}),
                        )
                        .await;
                    assert_eq!(r.status, 201, "{:?}", r.body);
                }
                if chat {
                    let r = api
                        .post(
                            &format!("/v1/workspaces/{ws}/chat"),
                            json!({"query": "alpha"}),
                        )
                        .await;
                    assert_eq!(r.status, 200, "{:?}", r.body);
                }
                let first = export_bytes(&a, &ws).await;
                let (status, rec) = import_bytes(&b, &org_b, first.clone(), "").await;
                assert_eq!(status, 201, "{rec}");
                let ws_b = rec["id"].as_str().expect("id").to_string();
                let second = export_bytes(&b, &ws_b).await;
                assert_eq!(entries(&first), entries(&second));
                let q: Vec<&str> = query.iter().map(|w| words[*w]).collect();
                for mode in ["fulltext", "vector", "hybrid"] {
                    let body = json!({"query": q.join(" "), "mode": mode, "limit": 20});
                    let ids = |v: Vec<Value>| {
                        v.iter()
                            .map(|h| json!([h["chunk_id"], h["document_id"]]))
                            .collect::<Vec<_>>()
                    };
                    assert_eq!(
                        ids(a.api().search(&ws, body.clone()).await),
                        ids(b.api().search(&ws_b, body).await),
                        "{mode}"
                    );
                }
            });
            Ok(())
        })
        .expect("round trip");
}

/// An import is a new workspace: it is held by the org's workspace quota (refused with
/// `quota_exceeded`, leaving nothing behind, until the plan has room) and by its documents
/// quota; the export is recorded in the workspace's audit trail, the import in the org's.
#[tokio::test]
async fn import_is_held_by_the_quotas_and_both_ends_are_audited() {
    let s = TestServer::start();
    let api = s.api();
    let org = api.create_org("quota-io").await;
    let ws = api.create_workspace(&org, "source").await;
    api.use_static_embedder(&ws).await;
    for text in ["alpha words", "beta words"] {
        let r = api
            .post(
                &format!("/v1/workspaces/{ws}/documents?wait=true"),
                json!({ "text": text }),
            )
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
    }
    let bytes = export_bytes(&s, &ws).await;
    let limits = |v: Value| {
        let api = api.clone();
        let org = org.clone();
        async move {
            let r = api
                .send(
                    reqwest::Method::PUT,
                    &format!("/v1/admin/orgs/{org}/limits"),
                    Some(v),
                )
                .await;
            assert_eq!(r.status, 200, "{:?}", r.body);
        }
    };
    let count = || async {
        api.get(&format!("/v1/orgs/{org}/workspaces")).await.body["data"]
            .as_array()
            .expect("data")
            .len()
    };
    // No room for a second workspace.
    limits(json!({"workspaces": 1})).await;
    let (status, body) = import_bytes(&s, &org, bytes.clone(), "?slug=copy").await;
    assert_eq!(status, 429, "{body:?}");
    assert_eq!(body["error"]["code"], "quota_exceeded");
    assert_eq!(body["error"]["resource"], "workspaces");
    assert_eq!(count().await, 1);
    // Room for the workspace, not for its two documents.
    limits(json!({"workspaces": 2, "documents": 3})).await;
    let (status, body) = import_bytes(&s, &org, bytes.clone(), "?slug=copy").await;
    assert_eq!(status, 429, "{body:?}");
    assert_eq!(body["error"]["resource"], "documents");
    assert_eq!(count().await, 1);
    // Room for both.
    limits(json!({"workspaces": 2, "documents": 4})).await;
    let (status, body) = import_bytes(&s, &org, bytes, "?slug=copy").await;
    assert_eq!(status, 201, "{body:?}");
    let copy = body["id"].as_str().expect("id").to_string();
    assert_eq!(count().await, 2);

    let actions = |v: &Value| -> Vec<String> {
        v["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|e| e["action"].as_str().unwrap_or("").to_string())
            .collect()
    };
    let trail = api.get(&format!("/v1/workspaces/{ws}/audit")).await;
    assert_eq!(trail.status, 200, "{:?}", trail.body);
    assert_eq!(actions(&trail.body)[0], "workspace.export");
    let trail = api
        .get(&format!("/v1/orgs/{org}/audit?action=workspace.import"))
        .await;
    assert_eq!(trail.status, 200, "{:?}", trail.body);
    let entries = trail.body["data"].as_array().expect("data");
    let ok: Vec<&Value> = entries.iter().filter(|e| e["status"] == 201).collect();
    assert_eq!(ok.len(), 1, "{entries:?}");
    assert_eq!(ok[0]["target"], format!("workspace:{copy}"));
    assert_eq!(
        entries.iter().filter(|e| e["status"] == 429).count(),
        2,
        "{entries:?}"
    );
}
