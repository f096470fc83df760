//! Hardening (issue 10): storage faults. A full disk (507, deletions still work, nothing
//! acknowledged is lost), deletions interrupted by a crash, a missing or corrupt full-text index
//! (rebuilt in the background, 503 meanwhile), a corrupt workspace database (contained).

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{metric, Api, Options, Resp, TestServer};
use crate::tmpfs::Tmpfs;

async fn poll<F, Fut>(what: &str, secs: u64, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn fulltext(word: &str) -> Value {
    json!({"query": word, "mode": "fulltext", "limit": 100})
}

/// Ids of the documents a full-text search for `word` finds.
async fn found(api: &Api, ws: &str, word: &str) -> Vec<String> {
    api.search(ws, fulltext(word))
        .await
        .iter()
        .filter_map(|r| r["document_id"].as_str().map(str::to_string))
        .collect()
}

fn doc(word: &str, i: usize) -> Value {
    json!({"text": format!("{word} document number {i} about storage faults"), "title": format!("{word} {i}")})
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_is_507_deletions_work_and_no_acknowledged_document_is_lost() {
    let Some(fs) = Tmpfs::mount("48m") else {
        return;
    };
    let dir = fs.path().join("data");
    let server = TestServer::start_with(Options::on(&dir, 1));
    let api = server.api();
    let ws = api.knowledge_workspace("fulldisk").await;
    let mut acknowledged: Vec<String> = Vec::new();
    for i in 0..3 {
        acknowledged.push(api.add_doc(&ws, doc("before", i)).await);
    }
    poll("the storage reserve", 30, || async {
        dir.join(".reserve").is_file()
    })
    .await;

    // The disk fills up, leaving a little room: some writes get through (blobs, rows), then
    // an index commit or a database write finds no room.
    let filler = fs.fill();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&filler)
        .expect("filler");
    let len = f.metadata().expect("len").len();
    f.set_len(len.saturating_sub(384 << 10))
        .expect("leave room");
    drop(f);
    let mut queued: Vec<(String, String)> = Vec::new();
    let mut full = 0;
    for i in 0..40 {
        let body = json!({"text": format!("during document {i} {}", "padding ".repeat(2000))});
        let r = api
            .post(&format!("/v1/workspaces/{ws}/documents"), body)
            .await;
        match r.status {
            507 => {
                full += 1;
                assert_eq!(r.code(), "insufficient_storage", "{:?}", r.body);
                assert!(
                    r.body["error"]["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("disk is full")),
                    "{:?}",
                    r.body
                );
            }
            202 => queued.push((r.id(), r.body["job_id"].as_str().unwrap_or("").to_string())),
            s => panic!("adding on a full disk answered {s}: {:?}", r.body),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "full disk: {full} refused with 507, {} queued",
        queued.len()
    );
    assert!(full > 0, "a full disk must refuse some writes with 507");
    // Reads keep working.
    let r = api.get(&format!("/v1/workspaces/{ws}/documents")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(found(&api, &ws, "before").await.len(), 3);
    // Deleting works while the disk is full, so an operator can free space through the API.
    let gone = acknowledged.remove(0);
    let r = api
        .delete(&format!("/v1/workspaces/{ws}/documents/{gone}"))
        .await;
    assert_eq!(r.status, 204, "delete on a full disk: {:?}", r.body);
    assert!(!found(&api, &ws, "before").await.contains(&gone));

    // Space returns; more documents come in.
    std::fs::remove_file(filler).expect("free space");
    for i in 0..3 {
        acknowledged.push(api.add_doc(&ws, doc("after", i)).await);
    }
    // The documents queued on the full disk either succeed (then they are acknowledged) or fail.
    for (id, job) in &queued {
        let j = api.wait_job(&ws, job, 120).await;
        match j["status"].as_str() {
            Some("succeeded") => acknowledged.push(id.clone()),
            Some("failed") => {}
            other => panic!("job {job} ended {other:?}: {j:?}"),
        }
    }

    // After a restart, full text finds every acknowledged document.
    server.stop();
    let server = TestServer::start_with(Options::on(&dir, 1));
    let api = server.api();
    let mut all = found(&api, &ws, "before").await;
    all.extend(found(&api, &ws, "after").await);
    all.extend(found(&api, &ws, "during").await);
    for id in &acknowledged {
        assert!(
            all.contains(id),
            "acknowledged document {id} is missing from full text"
        );
    }
    assert!(!all.contains(&gone));
    drop(server);
}

#[tokio::test(flavor = "multi_thread")]
async fn deletions_interrupted_by_a_crash_leave_no_folder_behind() {
    let tmp = tempfile::tempdir().expect("tmp");
    let server = TestServer::start_with(Options::on(tmp.path(), 1));
    let api = server.api();
    let org = api.create_org("crashdel").await;
    let alone = api.create_workspace(&org, "alone").await;
    let other_org = api.create_org("crashdelorg").await;
    let with_org = api.create_workspace(&other_org, "withorg").await;
    // What a crash right after the records were marked deleted leaves: records deleted,
    // folders in place.
    let alone_id = uuid::Uuid::parse_str(&alone).expect("id");
    server
        .app
        .control_plane()
        .mark_workspace_deleted(alone_id)
        .expect("mark");
    let org_id = uuid::Uuid::parse_str(&other_org).expect("id");
    server
        .app
        .control_plane()
        .delete_org(org_id)
        .expect("delete org");
    server.stop();
    let folders = [tmp.path().join(&alone), tmp.path().join(&with_org)];
    assert!(folders.iter().all(|f| f.is_dir()));

    let server = TestServer::start_with(Options::on(tmp.path(), 1));
    poll("the leftover folders to be removed", 30, || async {
        folders.iter().all(|f| !f.exists())
    })
    .await;
    let r = server
        .api()
        .delete(&format!("/v1/workspaces/{alone}"))
        .await;
    assert_eq!(r.status, 404);
}

/// Damages the full-text index of a stopped server's workspace.
fn damage_index(index: &Path, how: &str) {
    match how {
        "missing" => std::fs::remove_dir_all(index).expect("rm index"),
        "meta" => std::fs::write(index.join("meta.json"), b"{ not json").expect("meta"),
        "segment" => {
            let mut hit = 0;
            for e in std::fs::read_dir(index).expect("index dir").flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "term" || x == "idx") {
                    std::fs::write(&p, b"garbage garbage garbage").expect("segment");
                    hit += 1;
                }
            }
            assert!(hit > 0, "no segment file to damage");
        }
        _ => unreachable!(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_or_corrupt_index_is_rebuilt_in_the_background() {
    for how in ["missing", "meta", "segment"] {
        let tmp = tempfile::tempdir().expect("tmp");
        let server = TestServer::start_with(Options::on(tmp.path(), 1));
        let api = server.api();
        let ws = api.knowledge_workspace(&format!("rebuild-{how}")).await;
        let mut ids = Vec::new();
        for i in 0..5 {
            ids.push(api.add_doc(&ws, doc("rebuilt", i)).await);
        }
        server.stop();
        damage_index(&tmp.path().join(&ws).join("index"), how);

        let server = TestServer::start_with(Options::on(tmp.path(), 1));
        let api = server.api();
        // Documents stay listable and ingestible meanwhile.
        let r = api.get(&format!("/v1/workspaces/{ws}/documents")).await;
        assert_eq!(r.status, 200, "{how}: {:?}", r.body);
        assert_eq!(r.body["data"].as_array().map(Vec::len), Some(5));
        let r = api
            .post(&format!("/v1/workspaces/{ws}/search"), fulltext("rebuilt"))
            .await;
        match r.status {
            503 => {
                assert_eq!(r.code(), "unavailable");
                assert!(r.headers.contains_key("retry-after"), "{how}");
            }
            200 => {}
            s => panic!(
                "{how}: search during the rebuild answered {s}: {:?}",
                r.body
            ),
        }
        poll("the rebuilt index", 60, || async {
            let r = api
                .post(&format!("/v1/workspaces/{ws}/search"), fulltext("rebuilt"))
                .await;
            r.status == 200 && r.body["results"].as_array().map(Vec::len) == Some(5)
        })
        .await;
        let mut got = found(&api, &ws, "rebuilt").await;
        got.sort();
        ids.sort();
        assert_eq!(got, ids, "{how}");
        // The rebuild left no writer open.
        let text = api.text("/metrics").await;
        assert_eq!(metric(&text, "enclave_index_writers_open"), 0, "{how}");
        // And ingestion works on the rebuilt index.
        let id = api.add_doc(&ws, doc("later", 0)).await;
        assert_eq!(found(&api, &ws, "later").await, vec![id]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_workspace_database_is_reported_and_contained() {
    let tmp = tempfile::tempdir().expect("tmp");
    let server = TestServer::start_with(Options::on(tmp.path(), 1));
    let api = server.api();
    let bad = api.knowledge_workspace("corruptdb").await;
    let good = api.knowledge_workspace("healthydb").await;
    api.add_doc(&bad, doc("x", 0)).await;
    let kept = api.add_doc(&good, doc("fine", 0)).await;
    server.stop();
    let db = tmp.path().join(&bad).join("workspace.db");
    std::fs::write(&db, vec![0xA5u8; 64 << 10]).expect("garbage");
    for ext in ["workspace.db-wal", "workspace.db-shm"] {
        let _ = std::fs::remove_file(tmp.path().join(&bad).join(ext));
    }

    let server = TestServer::start_with(Options::on(tmp.path(), 1));
    let api = server.api();
    let r = api.get(&format!("/v1/workspaces/{bad}/documents")).await;
    assert_eq!(r.status, 500, "{:?}", r.body);
    let msg = r.body["error"]["message"].as_str().unwrap_or("");
    assert!(msg.contains(&bad), "the error names the workspace: {msg}");
    // Another workspace is not affected.
    assert_eq!(found(&api, &good, "fine").await, vec![kept]);
    let r = api.get(&format!("/v1/workspaces/{good}/documents")).await;
    assert_eq!(r.status, 200);
}

/// How a segment file of a stopped server's index is damaged.
#[derive(Debug, Clone, Copy)]
enum Garble {
    /// The file is removed.
    Delete,
    /// 48 bytes from this fraction (numerator, denominator) of the file are flipped.
    Flip(usize, usize),
}

/// Damages every segment file with extension `ext` under `index`.
fn garble(index: &Path, ext: &str, how: Garble) {
    let mut hit = 0;
    for e in std::fs::read_dir(index).expect("index dir").flatten() {
        let p = e.path();
        if p.extension().is_none_or(|x| x != ext) {
            continue;
        }
        hit += 1;
        match how {
            Garble::Delete => std::fs::remove_file(&p).expect("rm"),
            Garble::Flip(num, den) => {
                let mut bytes = std::fs::read(&p).expect("read");
                let at = bytes.len() * num / den;
                let end = (at + 48).min(bytes.len());
                for b in &mut bytes[at..end] {
                    *b ^= 0x5A;
                }
                std::fs::write(&p, bytes).expect("write");
            }
        }
    }
    assert!(hit > 0, "no .{ext} file to damage");
}

/// Damages that the index opens with but a search (or, for the fast fields, the check on
/// open) cannot read: each answered 500 before (an error or a panic of Tantivy's decoders).
const QUERY_TIME_DAMAGES: [(&str, Garble); 5] = [
    ("pos", Garble::Delete),
    ("term", Garble::Flip(1, 2)),
    ("term", Garble::Flip(3, 4)),
    ("idx", Garble::Flip(0, 1)),
    ("fast", Garble::Flip(0, 1)),
];

/// A full-text search for "rebuilt": `200`, or `503 unavailable` with `Retry-After` while the
/// index is rebuilt, never anything else.
async fn fulltext_during_rebuild(api: &Api, ws: &str, what: &str) -> Resp {
    let r = api
        .post(&format!("/v1/workspaces/{ws}/search"), fulltext("rebuilt"))
        .await;
    assert!(
        matches!(r.status, 503 | 200),
        "{what}: {} {:?}",
        r.status,
        r.body
    );
    if r.status == 503 {
        assert_eq!(r.code(), "unavailable", "{what}");
        assert!(r.headers.contains_key("retry-after"), "{what}");
    }
    r
}

/// The status of a search for "rebuilt document" in `mode`.
async fn search_status(api: &Api, ws: &str, mode: &str) -> u16 {
    let body = json!({"query": "rebuilt document", "mode": mode, "limit": 100});
    let r = api.post(&format!("/v1/workspaces/{ws}/search"), body).await;
    assert!(r.status != 500, "{mode}: {:?}", r.body);
    r.status
}

#[tokio::test(flavor = "multi_thread")]
async fn an_index_damaged_so_that_only_reads_fail_is_rebuilt_and_503_meanwhile() {
    let tmp = tempfile::tempdir().expect("tmp");
    let server = TestServer::start_with(Options::on(tmp.path(), 1));
    let api = server.api();
    let mut cases = Vec::new();
    for (i, (ext, how)) in QUERY_TIME_DAMAGES.iter().enumerate() {
        let ws = api.knowledge_workspace(&format!("readfail-{i}")).await;
        let mut ids = Vec::new();
        for d in 0..20 {
            ids.push(api.add_doc(&ws, doc("rebuilt", d)).await);
        }
        ids.sort();
        cases.push((*ext, *how, ws, ids));
    }
    server.stop();
    for (ext, how, ws, _) in &cases {
        garble(&tmp.path().join(ws).join("index"), ext, *how);
    }

    let server = TestServer::start_with(Options::on(tmp.path(), 1));
    let api = server.api();
    for (ext, how, ws, ids) in &cases {
        let what = format!("{ext} {how:?}");
        let r = api.get(&format!("/v1/workspaces/{ws}/documents")).await;
        assert_eq!(r.status, 200, "{what}: listing {:?}", r.body);
        // Whatever the first read meets (an error, a panic), full text answers 503 until the
        // index is rebuilt; vector search keeps working.
        fulltext_during_rebuild(&api, ws, &what).await;
        assert_eq!(search_status(&api, ws, "vector").await, 200, "{what}");
        poll("the rebuilt index", 60, || async {
            fulltext_during_rebuild(&api, ws, &what).await.status == 200
        })
        .await;
        let mut got = found(&api, ws, "rebuilt").await;
        got.sort();
        assert_eq!(&got, ids, "{what}");
        for mode in ["hybrid", "vector"] {
            assert_eq!(search_status(&api, ws, mode).await, 200, "{what} {mode}");
        }
    }
    let text = api.text("/metrics").await;
    assert_eq!(metric(&text, "enclave_index_writers_open"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn changes_to_an_index_damaged_so_that_only_reads_fail_are_kept() {
    let tmp = tempfile::tempdir().expect("tmp");
    let server = TestServer::start_with(Options::on(tmp.path(), 1));
    let api = server.api();
    let ws = api.knowledge_workspace("changefail").await;
    let mut ids = Vec::new();
    for d in 0..20 {
        ids.push(api.add_doc(&ws, doc("rebuilt", d)).await);
    }
    server.stop();
    garble(
        &tmp.path().join(&ws).join("index"),
        "term",
        Garble::Flip(1, 2),
    );

    let server = TestServer::start_with(Options::on(tmp.path(), 1));
    let api = server.api();
    // The first thing to touch the index is a change: a deletion (applied to every segment
    // at commit), then a new document.
    let gone = ids.remove(0);
    let r = api
        .delete(&format!("/v1/workspaces/{ws}/documents/{gone}"))
        .await;
    assert_eq!(r.status, 204, "{:?}", r.body);
    ids.push(api.add_doc(&ws, doc("rebuilt", 99)).await);
    ids.sort();
    poll("the rebuilt index", 60, || async {
        let r = fulltext_during_rebuild(&api, &ws, "a change").await;
        r.status == 200 && r.body["results"].as_array().map(Vec::len) == Some(ids.len())
    })
    .await;
    let mut got = found(&api, &ws, "rebuilt").await;
    got.sort();
    assert_eq!(got, ids);
}

/// Tantivy's threads in this process (indexing, segment updater and merge threads).
fn tantivy_threads() -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter(|t| {
            let name = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            ["thrd-tantivy", "segment_updater", "merge_thread"]
                .iter()
                .any(|p| name.starts_with(p))
        })
        .count()
}

/// Set in the process that runs [`writers_of_every_path_are_swept`] alone.
const ALONE: &str = "ENCLAVE_TEST_ALONE";

#[test]
fn every_writer_is_closed_when_idle_whoever_opened_it() {
    // Threads are counted per process: the scenario runs alone, in a process of its own.
    let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "hardening_storage::writers_of_every_path_are_swept",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ALONE, "1")
        .output()
        .expect("run the scenario");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 passed"), "{text}");
}

#[ignore = "run alone by every_writer_is_closed_when_idle_whoever_opened_it"]
#[tokio::test(flavor = "multi_thread")]
async fn writers_of_every_path_are_swept() {
    if std::env::var_os(ALONE).is_none() {
        eprintln!("skipped: counts the threads of its process, so runs only alone");
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let server = TestServer::start_with(Options::on(tmp.path(), 1));
    let api = server.api();
    let names = ["ingest", "delete", "repair", "rebuild-open", "rebuild-read"];
    let mut wss = Vec::new();
    for name in names {
        let ws = api.knowledge_workspace(&format!("writers-{name}")).await;
        let mut ids = Vec::new();
        for i in 0..3 {
            ids.push(api.add_doc(&ws, doc("swept", i)).await);
        }
        wss.push((ws, ids));
    }
    server.stop();
    // A repair on open (the index is behind the database), a rebuild on open (no index) and
    // one after a read failed (positions gone).
    let conn =
        rusqlite::Connection::open(tmp.path().join(&wss[2].0).join("workspace.db")).expect("db");
    conn.execute(
        "UPDATE workspace_meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'fts_generation'",
        [],
    )
    .expect("bump");
    drop(conn);
    std::fs::remove_dir_all(tmp.path().join(&wss[3].0).join("index")).expect("rm index");
    garble(
        &tmp.path().join(&wss[4].0).join("index"),
        "pos",
        Garble::Delete,
    );

    let server = TestServer::start_with(Options::on(tmp.path(), 1));
    let api = server.api();
    api.add_doc(&wss[0].0, doc("swept", 9)).await;
    let r = api
        .delete(&format!(
            "/v1/workspaces/{}/documents/{}",
            wss[1].0, wss[1].1[0]
        ))
        .await;
    assert_eq!(r.status, 204, "{:?}", r.body);
    for (ws, _) in &wss[2..] {
        poll("full text of every workspace", 60, || async {
            let r = api
                .post(&format!("/v1/workspaces/{ws}/search"), fulltext("swept"))
                .await;
            r.status == 200 && r.body["results"].as_array().is_some_and(|a| a.len() == 3)
        })
        .await;
    }
    let registry = &server.app.registry();
    assert!(registry.stats().open_writers >= 2, "{:?}", registry.stats());
    assert!(tantivy_threads() > 0);

    registry.close_idle_writers(Duration::ZERO);
    poll("every writer and its threads gone", 30, || async {
        registry.stats().open_writers == 0 && tantivy_threads() == 0
    })
    .await;
}
