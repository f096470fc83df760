//! Backups: full and incremental to a folder and to S3 (moto), verify, restore into an empty
//! data directory and one workspace into a running server, scheduled backups in /metrics.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{metric, Options, TestServer};

async fn backup(s: &TestServer, to: &str) -> Value {
    let r = s.api().post("/v1/admin/backups", json!({"to": to})).await;
    assert_eq!(r.status, 201, "backup: {:?}", r.body);
    r.body
}

/// Searches until full text answers (a restored index is rebuilt in the background).
async fn settled_search(s: &TestServer, ws: &str, body: Value) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = s
            .api()
            .post(&format!("/v1/workspaces/{ws}/search"), body.clone())
            .await;
        if r.status == 200 {
            return r.body["results"].as_array().cloned().unwrap_or_default();
        }
        assert_eq!(r.status, 503, "search: {:?}", r.body);
        assert!(Instant::now() < deadline, "index never rebuilt");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn fixture(s: &TestServer) -> Vec<(String, String)> {
    let api = s.api();
    let mut out = Vec::new();
    for (slug, text) in [
        (
            "alpha",
            "Alpaca wool keeps the mountain herders warm in winter.",
        ),
        (
            "beta",
            "Beta testers report crashes when the battery is low.",
        ),
    ] {
        // Uploaded as a file, so the workspace has a blob to back up (text sent as JSON keeps
        // none).
        let ws = api.knowledge_workspace(slug).await;
        let meta = json!({"k": slug}).to_string();
        let r = api
            .upload(
                &format!("/v1/workspaces/{ws}/documents?wait=true"),
                &format!("{slug}.txt"),
                Some("text/plain"),
                text.as_bytes().to_vec(),
                &[("title", slug), ("metadata", &meta)],
            )
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        out.push((ws, slug.to_string()));
    }
    out
}

fn hits(v: &[Value]) -> Vec<Value> {
    v.iter()
        .map(|h| json!([h["document_id"], h["chunk_id"], h["text"]]))
        .collect()
}

fn objects(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("objects"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A full backup and restore cycle against `to`; `local` is the backup folder when it is one.
async fn cycle(to: &str, local: Option<&Path>) {
    let a = TestServer::start();
    let wss = fixture(&a).await;
    let q = json!({"query": "alpaca wool", "mode": "hybrid"});
    let before = hits(&a.api().search(&wss[0].0, q.clone()).await);
    assert_eq!(before.len(), 1);
    let first = backup(&a, to).await;
    assert_eq!(first["workspaces"], 2, "{first}");
    assert!(
        first["objects_uploaded"].as_u64().unwrap_or(0) >= 5,
        "{first}"
    );
    // Incremental: nothing of the workspaces is uploaded again.
    let second = backup(&a, to).await;
    assert!(
        second["objects_uploaded"].as_u64().unwrap_or(9) <= 1,
        "only control.db may change: {second}"
    );
    assert!(
        second["bytes_uploaded"].as_u64() < first["bytes_uploaded"].as_u64(),
        "{second}"
    );
    if let Some(dir) = local {
        assert_eq!(
            objects(dir),
            first["objects_uploaded"].as_u64().unwrap_or(0) as usize
                + second["objects_uploaded"].as_u64().unwrap_or(0) as usize
        );
    }
    // Verify: every object's checksum, every database opened.
    let rt = tokio::runtime::Handle::current();
    let (to2, scratch) = (to.to_string(), a.data_dir.clone());
    let report = tokio::task::spawn_blocking(move || {
        let t = enclave::durability::objstore::Target::open(&to2, rt).expect("target");
        enclave::durability::backup::verify(&t, None, &scratch).expect("verify")
    })
    .await
    .expect("join");
    assert!(report.problems.is_empty(), "{report:?}");
    assert_eq!(report.databases_opened, 3);
    a.stop();

    // Restore into an empty data directory, then serve it.
    let restored = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Handle::current();
    let (to2, dir) = (to.to_string(), restored.path().to_path_buf());
    let r = tokio::task::spawn_blocking(move || {
        let t = enclave::durability::objstore::Target::open(&to2, rt).expect("target");
        enclave::durability::backup::restore_data_dir(&t, None, &dir)
    })
    .await
    .expect("join")
    .expect("restore");
    assert_eq!(r.workspaces, 2);
    let b = TestServer::start_with(Options::on(restored.path(), 1));
    assert_eq!(hits(&settled_search(&b, &wss[0].0, q).await), before);
    let beta = settled_search(
        &b,
        &wss[1].0,
        json!({"query": "battery", "mode": "fulltext"}),
    )
    .await;
    assert_eq!(beta.len(), 1);
    // Restoring over a data directory that has one is refused.
    let rt = tokio::runtime::Handle::current();
    let (to2, dir) = (to.to_string(), restored.path().to_path_buf());
    let again = tokio::task::spawn_blocking(move || {
        let t = enclave::durability::objstore::Target::open(&to2, rt).expect("target");
        enclave::durability::backup::restore_data_dir(&t, None, &dir)
    })
    .await
    .expect("join");
    assert!(
        matches!(again, Err(enclave::Error::Conflict(_))),
        "{again:?}"
    );
}

#[tokio::test]
async fn backup_to_a_folder_is_incremental_verifiable_and_restores() {
    let dest = tempfile::tempdir().expect("tempdir");
    let to = dest.path().display().to_string();
    cycle(&to, Some(dest.path())).await;
    // A damaged object is found by verify.
    let objs: Vec<_> = std::fs::read_dir(dest.path().join("objects"))
        .expect("objects")
        .flatten()
        .map(|e| e.path())
        .collect();
    // Every object is damaged: the largest is not always one the last backup refers to (an
    // older control.db may be the largest now that workspace databases are smaller).
    for victim in objs
        .iter()
        .filter(|p| std::fs::metadata(p).map_or(0, |m| m.len()) > 100)
    {
        let mut bytes = std::fs::read(victim).expect("read");
        bytes[100] ^= 0xff;
        std::fs::write(victim, bytes).expect("write");
    }
    let rt = tokio::runtime::Handle::current();
    let scratch = tempfile::tempdir().expect("tempdir");
    let sp = scratch.path().to_path_buf();
    let report = tokio::task::spawn_blocking(move || {
        let t = enclave::durability::objstore::Target::open(&to, rt).expect("target");
        enclave::durability::backup::verify(&t, None, &sp).expect("verify")
    })
    .await
    .expect("join");
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("checksum mismatch")),
        "{report:?}"
    );
}

#[tokio::test]
async fn one_workspace_restores_into_a_running_server() {
    let s = TestServer::start();
    let api = s.api();
    let wss = fixture(&s).await;
    let dest = tempfile::tempdir().expect("tempdir");
    let to = dest.path().display().to_string();
    backup(&s, &to).await;
    let ws = &wss[0].0;
    // Lose a document, then restore the workspace over itself.
    let docs = api.get(&format!("/v1/workspaces/{ws}/documents")).await;
    let doc = docs.body["data"][0]["id"]
        .as_str()
        .expect("doc")
        .to_string();
    assert_eq!(
        api.delete(&format!("/v1/workspaces/{ws}/documents/{doc}"))
            .await
            .status,
        204
    );
    assert!(api
        .search(ws, json!({"query": "alpaca", "mode": "fulltext"}))
        .await
        .is_empty());
    let r = api
        .post("/v1/admin/restore", json!({"from": to, "workspace": ws}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["id"], json!(ws));
    assert_eq!(
        settled_search(&s, ws, json!({"query": "alpaca", "mode": "fulltext"}))
            .await
            .len(),
        1
    );
    // A workspace whose database was destroyed is restored over itself.
    let dbf = s.data_dir.join(ws).join("workspace.db");
    let len = std::fs::metadata(&dbf).expect("db").len() as usize;
    std::fs::write(&dbf, vec![0x5a; len]).expect("garbage");
    // Out of the cache (and admitted again), so the next request opens the damaged file.
    let id = ws.parse().expect("uuid");
    s.app.registry().remove(id);
    s.app.registry().readmit(id);
    let broken = api
        .post(
            &format!("/v1/workspaces/{ws}/search"),
            json!({"query": "alpaca"}),
        )
        .await;
    assert_eq!(broken.status, 500, "{:?}", broken.body);
    let r = api
        .post("/v1/admin/restore", json!({"from": to, "workspace": ws}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        settled_search(&s, ws, json!({"query": "alpaca", "mode": "hybrid"}))
            .await
            .len(),
        1
    );
    // A deleted workspace in its grace period is refused (restore it first, then the backup
    // over it)...
    assert_eq!(
        api.delete(&format!("/v1/workspaces/{ws}")).await.status,
        204
    );
    let r = api
        .post("/v1/admin/restore", json!({"from": to, "workspace": ws}))
        .await;
    assert_eq!(r.status, 409, "{:?}", r.body);
    assert!(
        r.message()
            .contains(&format!("/v1/workspaces/{ws}/restore")),
        "{:?}",
        r.body
    );
    let undone = api
        .post(&format!("/v1/workspaces/{ws}/restore"), json!({}))
        .await;
    assert_eq!(undone.status, 200, "{:?}", undone.body);
    let r = api
        .post("/v1/admin/restore", json!({"from": to, "workspace": ws}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["id"], json!(ws));
    // ...and a purged one comes back as a new workspace.
    assert_eq!(
        api.delete(&format!("/v1/workspaces/{ws}?purge=true"))
            .await
            .status,
        204
    );
    let r = api
        .post("/v1/admin/restore", json!({"from": to, "workspace": ws}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let new_ws = r.body["id"].as_str().expect("id").to_string();
    assert_ne!(&new_ws, ws);
    assert_eq!(
        settled_search(&s, &new_ws, json!({"query": "alpaca", "mode": "vector"}))
            .await
            .len(),
        1
    );
    // Only the operator may.
    let key = api.key_client(&new_ws, &["manage"]).await;
    assert_eq!(
        key.post("/v1/admin/backups", json!({"to": to}))
            .await
            .status,
        403
    );
}

#[tokio::test]
async fn scheduled_backups_report_in_metrics() {
    let dest = tempfile::tempdir().expect("tempdir");
    let s = TestServer::start_with(Options::configured(|c| {
        c.backup_to = Some(dest.path().display().to_string());
        c.backup_interval_secs = 1;
    }));
    fixture(&s).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = s.api().text("/metrics").await;
        if metric(&m, "enclave_backup_last_success_timestamp_seconds") > 0
            && metric(&m, "enclave_backup_last_workspaces") == 2
        {
            assert_eq!(metric(&m, "enclave_backup_failures_total"), 0);
            break;
        }
        assert!(Instant::now() < deadline, "no scheduled backup: {m}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // At most `backup_keep` (7) backups are kept.
    let n = std::fs::read_dir(dest.path().join("backups"))
        .expect("backups")
        .count();
    assert!((1..=7).contains(&n), "{n}");
}

#[tokio::test]
async fn backup_to_s3_through_moto() {
    // The shared moto of the test binary (`moto.rs`), in a bucket of this test's own.
    if crate::moto::bucket("S3 backup test", "enclave-backups")
        .await
        .is_none()
    {
        return;
    }
    cycle("s3://enclave-backups/nightly", None).await;
}

/// The README's commands, through the real binary on a data directory without a server.
#[test]
fn the_cli_exports_imports_backs_up_and_restores() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let run = |dir: &Path, args: &[&str]| -> String {
        let out = crate::cli::enclave(dir, args);
        assert!(
            out.status.success(),
            "enclave {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let id_of = |json: &str| -> String {
        let v: Value = serde_json::from_str(json).expect("json");
        v["id"].as_str().expect("id").to_string()
    };
    let org = id_of(&run(&data, &["org", "create", "--name", "Acme"]));
    let ws = id_of(&run(
        &data,
        &["workspace", "create", "--org", &org, "--name", "Docs"],
    ));
    let doc = tmp.path().join("note.md");
    std::fs::write(&doc, "# Kiln\n\nThe kiln fires porcelain at 1300 degrees.").expect("write");
    run(
        &data,
        &["ingest", "--workspace", &ws, doc.to_str().expect("path")],
    );
    let archive = tmp.path().join("ws.tar");
    run(
        &data,
        &[
            "workspace",
            "export",
            &ws,
            "--out",
            archive.to_str().expect("p"),
        ],
    );
    let copy = id_of(&run(
        &data,
        &[
            "workspace",
            "import",
            "--org",
            &org,
            "--slug",
            "docs-copy",
            archive.to_str().expect("p"),
        ],
    ));
    assert_ne!(copy, ws);
    let bk = tmp.path().join("bk");
    let report: Value =
        serde_json::from_str(&run(&data, &["backup", "--to", bk.to_str().expect("p")]))
            .expect("report");
    assert_eq!(report["workspaces"], 2, "{report}");
    let listed = run(
        &data,
        &["backup", "list", "--from", bk.to_str().expect("p")],
    );
    assert_eq!(listed.lines().count(), 1);
    run(
        &data,
        &["backup", "verify", "--from", bk.to_str().expect("p")],
    );
    let restored = tmp.path().join("restored");
    run(&restored, &["restore", "--from", bk.to_str().expect("p")]);
    let list = run(&restored, &["workspace", "list", "--org", &org]);
    assert!(list.contains(&ws) && list.contains(&copy), "{list}");
    assert!(restored.join(&copy).join("workspace.db").is_file());
}
