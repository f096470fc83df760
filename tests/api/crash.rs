//! Crash test: the real binary, hundreds of documents queued, SIGKILL at a random moment of
//! ingestion, replacement by `external_id`, workspace deletion, a backup, or re-embedding after
//! an embedder switch; then a restart, and every acknowledged document must be there exactly
//! once, indexed and findable in every mode, its jobs finished or resumed.
//!
//! `ENCLAVE_CRASH_ITERATIONS` sets the number of kills (default 5: one per kind, the last the
//! re-embedding, about 20 s in a debug build); `ENCLAVE_CRASH_SEED` fixes the random moments.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::harness::{Api, TOKEN};

fn spawn(dir: &Path) -> (Child, String) {
    crate::harness::spawn_binary(dir)
}

fn kill(mut child: Child) {
    // SAFETY: a signal to our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGKILL);
    }
    let _ = child.wait();
}

/// What the test holds the server to: external id → the tokens its version may hold (the
/// acknowledged one, and one whose request was cut by the kill, which may or may not have
/// been taken).
type Acked = BTreeMap<String, Vec<String>>;

async fn all_documents(api: &Api, ws: &str) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let r = api
            .get(&format!(
                "/v1/workspaces/{ws}/documents?limit=1000&offset={}",
                out.len()
            ))
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        let page = r.body["data"].as_array().cloned().unwrap_or_default();
        let n = page.len();
        out.extend(page);
        if n < 1000 {
            return out;
        }
    }
}

/// Waits until no document is pending or indexing, then checks every acknowledged one.
async fn check(api: &Api, ws: &str, acked: &Acked) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let docs = loop {
        let docs = all_documents(api, ws).await;
        let busy = docs.iter().filter(|d| {
            d["status"] != "indexed" && d["status"] != "failed"
                || d["embedded_chunks"] != d["chunk_count"]
        });
        if busy.count() == 0 {
            break docs;
        }
        assert!(Instant::now() < deadline, "jobs did not resume and finish");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut by_ext: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for d in &docs {
        if let Some(e) = d["external_id"].as_str() {
            by_ext.entry(e.to_string()).or_default().push(d);
        }
    }
    for (ext, tokens) in acked {
        let found = by_ext.get(ext).map(Vec::len).unwrap_or(0);
        assert_eq!(found, 1, "acknowledged {ext} present {found} times");
        let d = by_ext[ext][0];
        assert_eq!(d["status"], "indexed", "{ext}: {d}");
        let mut report = Vec::new();
        let mut ok = false;
        for token in tokens {
            let mut all = true;
            for mode in ["fulltext", "vector", "hybrid"] {
                let r = api
                    .post(
                        &format!("/v1/workspaces/{ws}/search"),
                        json!({"query": token, "mode": mode, "limit": 3, "filter": {"external_id": ext}}),
                    )
                    .await;
                assert_eq!(r.status, 200, "{:?}", r.body);
                let hits = r.body["results"].as_array().cloned().unwrap_or_default();
                let text = hits
                    .first()
                    .and_then(|h| h["text"].as_str())
                    .unwrap_or("")
                    .to_string();
                all &= text.contains(token.as_str());
                report.push(format!("{token} {mode}: {text:?}"));
            }
            ok |= all;
        }
        assert!(
            ok,
            "{ext}: no version holding one of {tokens:?} is findable in every mode: {report:?}"
        );
    }
}

#[tokio::test]
async fn sigkill_at_random_moments_loses_nothing_acknowledged() {
    let (iterations, seed) = crate::harness::crash_settings("crash test", 5);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let tmp = tempfile::tempdir().expect("tempdir");
    let backups = tempfile::tempdir().expect("tempdir");
    let (child, base) = spawn(tmp.path());
    let api = Api::new(&base, Some(TOKEN));
    let org = api.create_org("crash").await;
    let ws = api.create_workspace(&org, "crash").await;
    api.use_static_embedder(&ws).await;
    let mut acked = Acked::new();
    let mut child = Some(child);
    let mut base = base;
    let mut next = 0usize;
    for it in 0..iterations {
        let api = Api::new(&base, Some(TOKEN));
        let kind = it % 4;
        // After the last iteration the embedder switch (slow: MiniLM in a debug build) comes.
        let kind = if it + 1 == iterations && iterations > 4 {
            4
        } else {
            kind
        };
        let delay = Duration::from_millis(rng.random_range(0..1500));
        let mut doomed: Option<String> = None;
        if kind == 0 {
            // Hundreds queued before the kill (more are sent while it comes).
            for _ in 0..150 {
                let (ext, token) = (format!("e{next}"), format!("zq{next}x"));
                next += 1;
                let r = api
                    .post(
                        &format!("/v1/workspaces/{ws}/documents"),
                        json!({"text": format!("Document {token} about item {ext}."), "external_id": ext}),
                    )
                    .await;
                assert_eq!(r.status, 202, "{:?}", r.body);
                acked.insert(ext, vec![token]);
            }
        }
        let work = async {
            match kind {
                // Ingestion: hundreds of documents queued.
                0 => {
                    for _ in 0..200 {
                        let (ext, token) = (format!("e{next}"), format!("zq{next}x"));
                        next += 1;
                        let r = api
                            .post(
                                &format!("/v1/workspaces/{ws}/documents"),
                                json!({"text": format!("Document {token} about item {ext}."), "external_id": ext}),
                            )
                            .await;
                        if r.status == 202 {
                            acked.insert(ext, vec![token]);
                        }
                    }
                }
                // Replacement by external id of documents already there.
                1 => {
                    let exts: Vec<String> = acked.keys().take(100).cloned().collect();
                    for ext in exts {
                        let token = format!("rv{next}y");
                        next += 1;
                        // Until answered, either version may be the one kept.
                        if let Some(t) = acked.get_mut(&ext) {
                            t.push(token.clone());
                        }
                        let r = api
                            .post(
                                &format!("/v1/workspaces/{ws}/documents"),
                                json!({"text": format!("Replaced {token} for {ext}."), "external_id": ext}),
                            )
                            .await;
                        if let Some(t) = acked.get_mut(&ext) {
                            if r.status == 202 {
                                *t = vec![token];
                            } else {
                                t.retain(|x| *x != token);
                            }
                        }
                    }
                }
                // Workspace deletion (another workspace with documents).
                2 => {
                    let other = api.create_workspace(&org, &format!("doomed{it}")).await;
                    api.use_static_embedder(&other).await;
                    for i in 0..50 {
                        api.post(
                            &format!("/v1/workspaces/{other}/documents"),
                            json!({"text": format!("doomed {i}")}),
                        )
                        .await;
                    }
                    if api.delete(&format!("/v1/workspaces/{other}")).await.status == 204 {
                        doomed = Some(other);
                    }
                }
                // A backup.
                3 => {
                    let r = api
                        .post(
                            "/v1/admin/backups",
                            json!({"to": backups.path().display().to_string()}),
                        )
                        .await;
                    assert_eq!(r.status, 201, "{:?}", r.body);
                }
                // Re-embedding after an embedder switch.
                _ => {
                    let r = api
                        .send(
                            reqwest::Method::PUT,
                            &format!("/v1/workspaces/{ws}/embedder"),
                            Some(json!({"kind": "minilm"})),
                        )
                        .await;
                    assert_eq!(r.status, 200, "{:?}", r.body);
                }
            }
        };
        // The kill lands while the work is under way (or after it, when it was quick).
        tokio::select! {
            _ = work => { tokio::time::sleep(delay / 4).await; }
            _ = tokio::time::sleep(delay) => {}
        }
        kill(child.take().expect("child"));
        let (c, b) = spawn(tmp.path());
        child = Some(c);
        base = b;
        let api = Api::new(&base, Some(TOKEN));
        if let Some(other) = doomed {
            assert_eq!(
                api.get(&format!("/v1/workspaces/{other}")).await.status,
                404
            );
        }
        if kind == 4 {
            // The switch's job resumes (the old space serves searches until it is done).
            let e = api.get(&format!("/v1/workspaces/{ws}/embedder")).await;
            assert_eq!(e.status, 200, "{:?}", e.body);
        } else {
            check(&api, &ws, &acked).await;
        }
        eprintln!("crash test: iteration {it} (kind {kind}) killed after {delay:?}: {} acknowledged documents intact", acked.len());
    }
    // A backup after all that verifies, and no staging is left behind for long.
    let api = Api::new(&base, Some(TOKEN));
    let r = api
        .post(
            "/v1/admin/backups",
            json!({"to": backups.path().display().to_string()}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    kill(child.take().expect("child"));
    let out = Command::new(env!("CARGO_BIN_EXE_enclave"))
        .args(["backup", "verify", "--from"])
        .arg(backups.path())
        .output()
        .expect("verify");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
