//! Tiered storage (issue 17): workspaces closed for longer than `offload_after` go to an
//! S3-compatible object store (the shared moto server of `moto.rs`; skipped with a message
//! without moto, required under `CI`), come back transparently on the registry's miss path,
//! never while open or with pending jobs, a stale copy is never opened, the local cache is
//! bounded, and kill -9 at every step of an offload or a hydration loses nothing.
//!
//! Idle time passes with the injected clock (`TestServer::advance_clock`); each test runs a
//! sweep itself (`durability::tier::sweep_now`) rather than waiting for the server's.

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use enclave::control::tier::TierState;
use enclave::durability::tier::{self, SweepReport};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::harness::{self, Api, Options, TestServer, TOKEN};

const HOUR: Duration = Duration::from_secs(3600);

/// A server on a fresh bucket `bucket` (`None`: skipped), offloading after an hour.
async fn tier_server(test: &str, bucket: &str, cache_bytes: u64) -> Option<TestServer> {
    crate::moto::bucket(test, bucket).await?;
    let url = format!("s3://{bucket}/tier");
    Some(TestServer::start_with(Options::configured(|c| {
        c.object_store = Some(url);
        c.offload_after_secs = 3600;
        c.local_cache_bytes = cache_bytes;
    })))
}

async fn sweep_async(s: &TestServer) -> SweepReport {
    let app = s.app.clone();
    tokio::task::spawn_blocking(move || tier::sweep_now(&app).expect("tiering is installed"))
        .await
        .expect("sweep")
}

/// Sweeps until `n` workspaces were offloaded in all (a workspace's embedding jobs, which
/// follow its `?wait=true` documents, must finish first: no offload with pending jobs).
async fn offload(s: &TestServer, n: usize) -> SweepReport {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut total = SweepReport::default();
    loop {
        let r = sweep_async(s).await;
        total.offloaded += r.offloaded;
        total.reused += r.reused;
        total.evicted += r.evicted;
        total.local_bytes = r.local_bytes;
        if total.offloaded + total.reused >= n {
            return total;
        }
        assert!(Instant::now() < deadline, "not offloaded: {total:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn state(s: &TestServer, ws: &str) -> Option<(u64, TierState)> {
    let id = Uuid::parse_str(ws).expect("id");
    s.app
        .control_plane()
        .tier_of(id)
        .expect("tier record")
        .map(|r| (r.generation, r.state))
}

fn folder(s: &TestServer, ws: &str) -> std::path::PathBuf {
    s.data_path(ws)
}

async fn titles(api: &Api, ws: &str, query: &str) -> Vec<String> {
    api.search(ws, json!({"query": query, "mode": "fulltext"}))
        .await
        .iter()
        .map(|r| r["title"].as_str().unwrap_or("").to_string())
        .collect()
}

#[tokio::test]
async fn idle_workspaces_are_offloaded_and_hydrated_transparently() {
    let Some(s) = tier_server("tier offload/hydrate", "tier-offload", 0).await else {
        return;
    };
    let api = s.api();
    let (ws, _) = api
        .workspace_with_docs(
            "cold",
            vec![json!({"title": "Glacier", "text": "Penguins waddle across the glacier."})],
        )
        .await;
    // Just used: not offloaded.
    let r = sweep_async(&s).await;
    assert_eq!(r.offloaded, 0, "{r:?}");
    assert_eq!(state(&s, &ws), None);
    assert!(folder(&s, &ws).exists());

    // An hour and more later: closed, uploaded, its local copy evicted (no cache room).
    s.advance_clock(HOUR + Duration::from_secs(60));
    let r = offload(&s, 1).await;
    assert_eq!(r.offloaded, 1, "{r:?}");
    assert_eq!(state(&s, &ws), Some((1, TierState::Offloaded)));
    assert!(!folder(&s, &ws).exists(), "the local folder is gone");
    let rec = s
        .app
        .control_plane()
        .tier_of(Uuid::parse_str(&ws).expect("id"))
        .expect("record")
        .expect("offloaded");
    assert_eq!(rec.documents, 1);
    assert!(rec.bytes > 0);

    // A sibling workspace's upload counts the org's documents and storage (quotas): the
    // offloaded workspace is counted from its record, not hydrated.
    let org = s
        .app
        .control_plane()
        .get_workspace(Uuid::parse_str(&ws).expect("id"))
        .expect("record")
        .org_id
        .to_string();
    let sibling = api.create_workspace(&org, "sibling").await;
    api.use_static_embedder(&sibling).await;
    api.add_doc(
        &sibling,
        json!({"title": "Seal", "text": "A seal on the ice."}),
    )
    .await;
    assert_eq!(tier::installed(&s.app).expect("tier").hydrations(), 0);
    assert!(!folder(&s, &ws).exists());

    // A search hydrates it, transparently.
    assert_eq!(titles(&api, &ws, "penguins").await, vec!["Glacier"]);
    assert!(folder(&s, &ws).exists());
    assert_eq!(state(&s, &ws), Some((1, TierState::Local)));
    let hydrations = tier::installed(&s.app).expect("tier").hydrations();
    assert_eq!(hydrations, 1);
    let metrics = api.text("/metrics").await;
    assert!(
        metrics.contains("enclave_tier_hydrations_total 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("enclave_tier_offloads_total 1\n"),
        "{metrics}"
    );
    let r = api.get(&format!("/v1/workspaces/{ws}/documents")).await;
    assert_eq!(r.body["data"].as_array().map(Vec::len), Some(1));

    // Read, not written: the next offload records generation 1 again, uploading nothing.
    s.advance_clock(HOUR + Duration::from_secs(60));
    let r = offload(&s, 2).await;
    assert_eq!(
        (r.offloaded, r.reused),
        (1, 1),
        "the sibling uploaded, this one reused: {r:?}"
    );
    assert_eq!(state(&s, &ws), Some((1, TierState::Offloaded)));

    // Written after hydration: the next offload is generation 2, with the new document.
    api.add_doc(
        &ws,
        json!({"title": "Iceberg", "text": "An iceberg drifts past the penguins."}),
    )
    .await;
    s.advance_clock(HOUR + Duration::from_secs(60));
    let r = offload(&s, 1).await;
    assert_eq!(r.offloaded, 1, "{r:?}");
    assert_eq!(state(&s, &ws), Some((2, TierState::Offloaded)));
    assert!(!folder(&s, &ws).exists());
    let mut found = titles(&api, &ws, "penguins").await;
    found.sort();
    assert_eq!(found, vec!["Glacier", "Iceberg"]);
}

#[tokio::test]
async fn concurrent_requests_wait_on_one_hydration() {
    let Some(s) = tier_server("tier single flight", "tier-flight", 0).await else {
        return;
    };
    let api = s.api();
    let (ws, _) = api
        .workspace_with_docs(
            "flight",
            vec![json!({"title": "Kite", "text": "A kite flies over the dunes."})],
        )
        .await;
    s.advance_clock(HOUR + Duration::from_secs(60));
    assert_eq!(offload(&s, 1).await.offloaded, 1);
    let searches: Vec<_> = (0..8)
        .map(|_| {
            let (api, ws) = (s.api(), ws.clone());
            tokio::spawn(async move { titles(&api, &ws, "kite").await })
        })
        .collect();
    for t in searches {
        assert_eq!(t.await.expect("search"), vec!["Kite"]);
    }
    assert_eq!(tier::installed(&s.app).expect("tier").hydrations(), 1);
}

#[tokio::test]
async fn never_offloaded_while_open_or_with_pending_jobs() {
    let Some(s) = tier_server("tier open/jobs", "tier-busy", 0).await else {
        return;
    };
    let api = s.api();
    let (ws, _) = api
        .workspace_with_docs(
            "busy",
            vec![json!({"title": "Anchor", "text": "The anchor holds the boat."})],
        )
        .await;
    let id = Uuid::parse_str(&ws).expect("id");
    // Held open by a request (here, a handle): never offloaded, however long.
    let held = s.app.registry().get(id).expect("open");
    s.advance_clock(HOUR * 3);
    let r = sweep_async(&s).await;
    assert_eq!(r.offloaded, 0, "{r:?}");
    assert!(folder(&s, &ws).exists());
    assert_eq!(state(&s, &ws), None);
    drop(held);

    // Pending jobs (no worker runs them on this server): never offloaded either.
    let dir = s.stop().expect("data dir");
    let s = TestServer::start_with(Options::on(dir.path(), 0).with(|c| {
        c.object_store = Some("s3://tier-busy/tier".into());
        c.offload_after_secs = 3600;
        c.local_cache_bytes = 0;
    }));
    let api = s.api();
    api.queue_document(
        &ws,
        json!({"title": "Rope", "text": "A rope ties the boat."}),
    )
    .await;
    s.advance_clock(HOUR * 3);
    let r = sweep_async(&s).await;
    assert_eq!(r.offloaded, 0, "{r:?}");
    assert!(folder(&s, &ws).exists());
    assert_eq!(state(&s, &ws), None);
    drop(s.stop());
    drop(dir);
}

#[tokio::test]
async fn local_cache_bytes_evicts_the_coldest_clean_copies() {
    // A bound measured from the folders themselves: made first, then the server restarted
    // with room for one and a half of them.
    let Some(s) = tier_server("tier cache eviction", "tier-cache", u64::MAX).await else {
        return;
    };
    let api = s.api();
    let mut wss = Vec::new();
    for (i, word) in ["alpha", "bravo", "charlie"].iter().enumerate() {
        let (ws, _) = api
            .workspace_with_docs(
                word,
                vec![json!({"title": word, "text": format!("The {word} document, number {i}.")})],
            )
            .await;
        wss.push(ws);
    }
    // Measured closed (no WAL), as the sweep sees them.
    let mut keep = Vec::new();
    let s = restart_with(s, &mut keep, |_| {}).await;
    let sizes: Vec<u64> = wss
        .iter()
        .map(|ws| enclave::workspace::dir_size(&folder(&s, ws)).expect("size"))
        .collect();
    let bound = sizes.iter().max().copied().unwrap_or(0) * 3 / 2;
    let s = restart_with(s, &mut keep, |c| c.local_cache_bytes = bound).await;
    let api = s.api();
    // Used in order: alpha is the coldest, charlie the hottest.
    for (ws, word) in wss.iter().zip(["alpha", "bravo", "charlie"]) {
        assert_eq!(titles(&api, ws, word).await, vec![word]);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.advance_clock(HOUR + Duration::from_secs(60));
    let r = offload(&s, 3).await;
    assert_eq!(
        (r.offloaded, r.evicted),
        (3, 2),
        "{r:?} (bound {bound}, sizes {sizes:?})"
    );
    assert!(r.local_bytes <= bound, "{r:?}");
    assert!(!folder(&s, &wss[0]).exists());
    assert!(!folder(&s, &wss[1]).exists());
    assert!(folder(&s, &wss[2]).exists(), "the hottest clean copy stays");

    // Alpha comes back (hot, local): charlie's clean copy is now the one over the bound.
    assert_eq!(titles(&api, &wss[0], "alpha").await, vec!["alpha"]);
    let r = sweep_async(&s).await;
    assert_eq!(r.evicted, 1, "{r:?}");
    assert!(
        folder(&s, &wss[0]).exists(),
        "a local (hot) workspace is never evicted"
    );
    assert!(!folder(&s, &wss[2]).exists());
    // Every workspace still answers.
    assert_eq!(titles(&api, &wss[2], "charlie").await, vec!["charlie"]);
    assert_eq!(titles(&api, &wss[1], "bravo").await, vec!["bravo"]);
}

/// The same data directory and bucket under a new server whose config `change` alters.
/// The first server's temp dir goes to `keep` (removed when the test drops it).
async fn restart_with(
    s: TestServer,
    keep: &mut Vec<tempfile::TempDir>,
    change: impl FnOnce(&mut enclave::config::Config),
) -> TestServer {
    let mut config = s.app.config().clone();
    keep.extend(s.stop());
    change(&mut config);
    TestServer::start_with(Options {
        config,
        keep_data_dir: true,
    })
}

#[tokio::test]
async fn a_stale_local_copy_is_never_opened() {
    let Some(s) = tier_server("tier stale copy", "tier-stale", u64::MAX).await else {
        return;
    };
    let api = s.api();
    let (ws, _) = api
        .workspace_with_docs(
            "stale",
            vec![json!({"title": "Old", "text": "The lighthouse keeper's old log."})],
        )
        .await;
    s.advance_clock(HOUR + Duration::from_secs(60));
    assert_eq!(offload(&s, 1).await.offloaded, 1);
    assert_eq!(state(&s, &ws), Some((1, TierState::Offloaded)));
    // Keep generation 1's clean copy aside.
    let aside = tempfile::tempdir().expect("tempdir");
    copy_dir(&folder(&s, &ws), &aside.path().join("g1"));

    // Written: generation 2.
    api.add_doc(
        &ws,
        json!({"title": "New", "text": "The lighthouse keeper's new log."}),
    )
    .await;
    s.advance_clock(HOUR + Duration::from_secs(60));
    assert_eq!(offload(&s, 1).await.offloaded, 1);
    assert_eq!(state(&s, &ws), Some((2, TierState::Offloaded)));

    // Generation 1's copy put back in place (a node that was away, a restored disk): the
    // control plane says 2, so it is discarded and generation 2 downloaded.
    std::fs::remove_dir_all(folder(&s, &ws)).expect("remove");
    copy_dir(&aside.path().join("g1"), &folder(&s, &ws));
    let mut found = titles(&api, &ws, "lighthouse").await;
    found.sort();
    assert_eq!(found, vec!["New", "Old"]);
    assert_eq!(tier::installed(&s.app).expect("tier").hydrations(), 1);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("entry");
        let t = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &t);
        } else {
            std::fs::copy(e.path(), &t).expect("copy");
            // Same modification time (the fingerprint), as a copy kept by a node would have.
            let m = std::fs::metadata(e.path()).expect("meta");
            let f = std::fs::File::options().write(true).open(&t).expect("open");
            f.set_modified(m.modified().expect("mtime"))
                .expect("set mtime");
        }
    }
}

// ---------------------------------------------------------------------------------------
// kill -9 at every step: the real binary with `ENCLAVE_TIER_FAULT` naming the step.

fn spawn(dir: &Path, bucket: &str, fault: Option<&str>) -> (Child, String) {
    let mut cmd = harness::server_command(dir);
    cmd.args([
        "--object-store",
        &format!("s3://{bucket}/tier"),
        "--offload-after",
        "2s",
        "--local-cache-bytes",
        "0",
    ])
    .env_remove(tier::FAULT_ENV);
    if let Some(f) = fault {
        cmd.env(tier::FAULT_ENV, f);
    }
    harness::spawn_server(cmd)
}

fn kill(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Waits for the child to abort at its fault point (it must, within the deadline).
fn wait_exit(child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            assert!(!status.success(), "{what}: exited cleanly");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the fault point was never reached"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the workspace's local folder is gone (offloaded, no cache room).
async fn wait_offloaded(dir: &Path, ws: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while dir.join(ws).exists() {
        assert!(Instant::now() < deadline, "never offloaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn all_titles(api: &Api, ws: &str) -> Vec<String> {
    let r = api
        .get(&format!("/v1/workspaces/{ws}/documents?limit=1000"))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let mut t: Vec<String> = r.body["data"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|d: &Value| d["title"].as_str().unwrap_or("").to_string())
        .collect();
    t.sort();
    t
}

#[tokio::test]
async fn kill_9_during_offload_or_hydration_loses_nothing() {
    if crate::moto::bucket("tier crash", "tier-crash")
        .await
        .is_none()
    {
        return;
    }
    let offload_points = [
        "offload-snapshot",
        "offload-upload",
        "offload-manifest",
        "offload-commit",
    ];
    let hydrate_points = ["hydrate-download", "hydrate-rename"];
    for (round, point) in offload_points.iter().chain(&hydrate_points).enumerate() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("data");
        let offload = round < offload_points.len();
        // Documents written by a server that aborts at `point` once it offloads (or, for
        // hydration points, by a healthy one).
        let (mut child, base) = spawn(&dir, "tier-crash", offload.then_some(*point));
        let api = Api::new(&base, Some(TOKEN));
        let org = api.create_org(&format!("crash-{round}")).await;
        let ws = api.create_workspace(&org, "crash").await;
        api.use_static_embedder(&ws).await;
        let mut expected = Vec::new();
        let client = reqwest::Client::new();
        for i in 0..3 {
            let title = format!("doc {i}");
            let r = client
                .post(format!("{base}/v1/workspaces/{ws}/documents?wait=true"))
                .bearer_auth(TOKEN)
                .json(&json!({"title": title, "text": format!("Crash test document {i} about harbours.")}))
                .send()
                .await;
            if !r.is_ok_and(|r| r.status().as_u16() == 201) {
                // The server aborted at its fault point under this request: not acknowledged.
                break;
            }
            expected.push(title);
        }
        if offload {
            wait_exit(&mut child, point);
        } else {
            wait_offloaded(&dir, &ws).await;
            kill(child);
            // Hydration under a server that aborts at `point`.
            let (mut child, base) = spawn(&dir, "tier-crash", Some(point));
            let _ = reqwest::Client::new()
                .post(format!("{base}/v1/workspaces/{ws}/search"))
                .bearer_auth(TOKEN)
                .json(&json!({"query": "harbours"}))
                .send()
                .await;
            wait_exit(&mut child, point);
        }
        // A healthy server on the same data and bucket has every acknowledged document.
        let (child, base) = spawn(&dir, "tier-crash", None);
        let api = Api::new(&base, Some(TOKEN));
        assert_eq!(
            all_titles(&api, &ws).await,
            expected,
            "after a kill at {point}"
        );
        let r = api
            .post(
                &format!("/v1/workspaces/{ws}/search"),
                json!({"query": "harbours", "mode": "fulltext", "limit": 10}),
            )
            .await;
        assert_eq!(r.status, 200, "{point}: {:?}", r.body);
        assert_eq!(
            r.body["results"].as_array().map(Vec::len),
            Some(expected.len()),
            "{point}: {:?}",
            r.body
        );
        kill(child);
    }
}

/// A folder as the object store (`file:///`), and the command line on a data directory without
/// a server: `workspace export` downloads the offloaded workspace it reads.
#[tokio::test]
async fn a_folder_store_and_the_command_line_hydrate_too() {
    let store = tempfile::tempdir().expect("store");
    let url = format!("file://{}", store.path().display());
    let s = TestServer::start_with(Options::configured(|c| {
        c.object_store = Some(url.clone());
        c.offload_after_secs = 3600;
        c.local_cache_bytes = 0;
    }));
    let api = s.api();
    let (ws, _) = api
        .workspace_with_docs(
            "folder",
            vec![json!({"title": "Compass", "text": "The compass points north."})],
        )
        .await;
    s.advance_clock(HOUR + Duration::from_secs(60));
    assert_eq!(offload(&s, 1).await.offloaded, 1);
    assert!(!folder(&s, &ws).exists());
    let manifests = store.path().join("workspaces").join(&ws).join("manifests");
    assert!(
        manifests.join("000000000001.json").exists(),
        "the manifest is in the folder store"
    );
    let data = s.data_dir.clone();
    let mut keep = Vec::new();
    keep.extend(s.stop());

    let out_file = store.path().join("export.tar");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_enclave"))
        .arg("--data-dir")
        .arg(&data)
        .args(["workspace", "export", &ws, "--out"])
        .arg(&out_file)
        .env("ENCLAVE_ADMIN_TOKEN", TOKEN)
        .env("ENCLAVE_OBJECT_STORE", &url)
        .env("ENCLAVE_LOG", "warn")
        .env_remove(tier::FAULT_ENV)
        .output()
        .expect("run enclave");
    assert!(
        out.status.success(),
        "export: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::metadata(&out_file).expect("archive").len() > 0);
    assert!(data.join(&ws).exists(), "hydrated by the command");
}
