//! The real binary's management commands on a temp data dir: org and workspace creation, then
//! `enclave ingest` of a folder (summary, failures with their reasons, unchanged files skipped,
//! changed files replaced), and the server on that data dir finding what was ingested; commands
//! refused while a server holds the data dir.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{json, Value};

use crate::harness::{Options, TestServer, TOKEN};

/// Runs `enclave --data-dir DIR ARGS...` to completion.
pub fn enclave(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_enclave"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env("ENCLAVE_ADMIN_TOKEN", TOKEN)
        .env("ENCLAVE_LOG", "warn")
        .env("NO_COLOR", "1")
        .output()
        .expect("run enclave")
}

/// Runs a command that must succeed; returns its standard output.
fn enclave_ok(data_dir: &Path, args: &[&str]) -> String {
    let out = enclave(data_dir, args);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "enclave {args:?} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Runs a command that must fail (partially: `ingest` with files that fail); returns its
/// standard output, and checks the error names the failures.
fn enclave_failing(data_dir: &Path, args: &[&str]) -> String {
    let out = enclave(data_dir, args);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "enclave {args:?} succeeded: {stdout}"
    );
    assert!(stderr.contains("files failed"), "{stderr}");
    stdout
}

fn json_of(stdout: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

/// The summary line of `enclave ingest` and its `failed:` lines.
fn summary(stdout: &str) -> (String, Vec<String>) {
    let line = stdout
        .lines()
        .find(|l| l.contains(" files: ") || l.contains(" file: "))
        .unwrap_or_else(|| panic!("no summary in: {stdout}"))
        .to_string();
    let failed = stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("failed: "))
        .map(str::to_string)
        .collect();
    (line, failed)
}

/// An org (slug `slug`) and a workspace in it, made by the command line; the workspace id.
pub fn org_and_workspace(data: &Path, slug: &str) -> String {
    let org = json_of(&enclave_ok(
        data,
        &["org", "create", "--name", slug, "--slug", slug],
    ));
    assert_eq!(org["slug"], slug, "{org}");
    let ws = json_of(&enclave_ok(
        data,
        &["workspace", "create", "--org", slug, "--name", "Docs"],
    ));
    ws["id"].as_str().expect("workspace id").to_string()
}

#[tokio::test]
async fn ingest_a_folder_from_the_command_line() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let ws = org_and_workspace(&data, "cli-org");
    {
        let s = TestServer::start_with(Options::on(&data, 0));
        s.api().use_static_embedder(&ws).await;
        s.stop();
    }

    let docs = tmp.path().join("docs");
    std::fs::create_dir_all(docs.join("sub")).expect("mkdir");
    let write = |rel: &str, bytes: &[u8]| std::fs::write(docs.join(rel), bytes).expect("write");
    write(
        "guide.md",
        b"# Setup\n\nInstall the quokka toolkit before anything else.\n\n## Usage\n\nRun it daily.",
    );
    write("notes.txt", b"Penguins huddle together in winter storms.");
    write("sub/more.txt", b"Walruses rest on floating ice.");
    write(
        "broken.pdf",
        b"%PDF-1.4\nthis is not really a PDF file at all",
    );
    write(
        "photo.png",
        b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR not an image we read",
    );
    write(".hidden.txt", b"never ingested: hidden files are skipped");
    let docs_arg = docs.to_str().expect("utf-8 path");

    let out = enclave_failing(&data, &["ingest", "--workspace", &ws, docs_arg]);
    let (line, failed) = summary(&out);
    assert_eq!(
        line, "5 files: 3 added or updated, 0 unchanged, 1 skipped, 1 failed",
        "{out}"
    );
    assert_eq!(failed.len(), 1, "{out}");
    assert!(
        out.contains("skipped (not documents): 1 image") && out.contains("images: photo.png"),
        "the image is skipped, not failed: {out}"
    );
    let pdf = failed
        .iter()
        .find(|l| l.contains("broken.pdf"))
        .unwrap_or_else(|| panic!("broken.pdf not reported: {out}"));
    let reason = pdf.rsplit("broken.pdf: ").next().unwrap_or("");
    assert!(reason.len() > 5, "a reason for the corrupt PDF: {pdf}");

    // Again: unchanged files are skipped; the failures are tried (and reported) again.
    let out = enclave_failing(&data, &["ingest", "--workspace", &ws, docs_arg]);
    let (line, failed) = summary(&out);
    assert_eq!(
        line, "5 files: 0 added or updated, 3 unchanged, 1 skipped, 1 failed",
        "{out}"
    );
    assert_eq!(failed.len(), 1, "{out}");

    // A changed file replaces its previous version (its path is its external id).
    write(
        "notes.txt",
        b"Penguins slide on their bellies across the ice.",
    );
    let out = enclave_ok(
        &data,
        &[
            "ingest",
            "--workspace",
            &ws,
            docs.join("notes.txt").to_str().expect("path"),
        ],
    );
    assert_eq!(
        summary(&out).0,
        "1 file: 1 added or updated, 0 unchanged, 0 skipped, 0 failed",
        "{out}"
    );

    // Bad input: a clear error and a failing exit status.
    let out = enclave(&data, &["ingest", "--workspace", "../etc", docs_arg]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("workspace"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The server on that data dir finds the documents, with a key made by the CLI.
    let key = json_of(&enclave_ok(
        &data,
        &[
            "key",
            "create",
            "--workspace",
            &ws,
            "--scopes",
            "search,ingest",
        ],
    ));
    let key = key["key"].as_str().expect("key").to_string();
    let s = TestServer::start_with(Options::on(&data, 1));
    let app = s.api().with_token(&key);
    let search = |q: &'static str| {
        let app = app.clone();
        async move {
            let r = app
                .post("/v1/search", json!({"query": q, "mode": "fulltext"}))
                .await;
            assert_eq!(r.status, 200, "{:?}", r.body);
            r.body["results"].as_array().cloned().unwrap_or_default()
        }
    };
    let hits = search("quokka").await;
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert!(hits[0]["external_id"]
        .as_str()
        .unwrap_or("")
        .ends_with("guide.md"));
    assert_eq!(search("walruses").await.len(), 1);
    let hits = search("penguins").await;
    assert_eq!(hits.len(), 1, "only the new version: {hits:?}");
    assert!(hits[0]["text"].as_str().unwrap_or("").contains("bellies"));
    assert!(search("hidden").await.is_empty());
    let hits = app
        .post(
            "/v1/search",
            json!({"query": "quokka toolkit", "mode": "vector"}),
        )
        .await;
    assert_eq!(hits.status, 200, "vectors were computed: {:?}", hits.body);
    assert!(!hits.body["results"].as_array().is_none_or(Vec::is_empty));

    let r = app.get("/v1/documents?status=failed").await;
    let failed: Vec<&str> = r.body["data"]
        .as_array()
        .map(|d| d.iter().filter_map(|x| x["source_name"].as_str()).collect())
        .unwrap_or_default();
    assert!(failed.iter().all(|n| *n == "broken.pdf"), "{failed:?}");
    assert!(!failed.is_empty(), "{:?}", r.body);
    let r = app.get("/v1/documents?status=indexed").await;
    assert_eq!(
        r.body["data"].as_array().map(Vec::len),
        Some(3),
        "{:?}",
        r.body
    );
}

/// One job-running process per data directory: while a server holds it, `enclave ingest` and a
/// second server are refused with a clear error and change nothing; management commands still
/// work beside it; `enclave ingest --server` sends the files through the server's API; once the
/// server stops, `ingest` opens the data directory itself.
#[tokio::test]
async fn a_running_server_keeps_its_data_dir_to_itself() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let ws = org_and_workspace(&data, "lock-org");
    let s = TestServer::start_with(Options::on(&data, 1));
    s.api().use_static_embedder(&ws).await;
    let notes = tmp.path().join("notes.txt");
    std::fs::write(&notes, b"Otters hold hands while they sleep.").expect("write");
    let notes = notes.to_str().expect("utf-8 path");
    for args in [
        vec!["ingest", "--workspace", &ws, notes],
        vec!["serve", "--listen", "127.0.0.1:0"],
    ] {
        let out = enclave(&data, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} ran beside the server");
        assert!(
            stderr.contains("is in use by another enclave process")
                && stderr.contains(&format!("(process {})", std::process::id())),
            "{stderr}"
        );
    }
    let r = s.api().get(&format!("/v1/workspaces/{ws}/documents")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.body["data"].as_array().map(Vec::len),
        Some(0),
        "{:?}",
        r.body
    );
    // Management commands run beside the server, which sees what they did.
    enclave_ok(
        &data,
        &["org", "create", "--name", "Second", "--slug", "second"],
    );
    let r = s.api().get("/v1/orgs/second").await;
    assert_eq!(r.status, 200, "{:?}", r.body);

    // The refusal names the way through the server, and that way works: with an API key that
    // may ingest, through the HTTP API.
    let out = enclave(&data, &["ingest", "--workspace", &ws, notes]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--server URL"));
    let r = s
        .api()
        .post(
            &format!("/v1/workspaces/{ws}/api-keys"),
            json!({"name": "cli", "scopes": ["ingest"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let key = r.body["key"].as_str().expect("key").to_string();
    let broken = tmp.path().join("broken.pdf");
    std::fs::write(&broken, b"%PDF-1.4\nnot a PDF at all").expect("write");
    let photo = tmp.path().join("photo.png");
    std::fs::write(&photo, b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR").expect("write");
    let remote = |paths: &[&str]| {
        let mut args = vec![
            "ingest",
            "--workspace",
            &ws,
            "--server",
            &s.base,
            "--token",
            &key,
        ];
        args.extend_from_slice(paths);
        enclave(&data, &args)
    };
    let paths = [
        notes,
        broken.to_str().expect("utf-8 path"),
        photo.to_str().expect("utf-8 path"),
    ];
    let out = remote(&paths);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!out.status.success(), "a file failed: {stdout}");
    let (line, failed) = summary(&stdout);
    assert_eq!(
        line, "3 files: 1 added or updated, 0 unchanged, 1 skipped, 1 failed",
        "{stdout}"
    );
    assert!(
        stdout.contains("images: photo.png"),
        "the image is skipped before any upload: {stdout}"
    );
    assert!(
        failed
            .iter()
            .any(|l| l.contains("broken.pdf") && l.to_lowercase().contains("pdf")),
        "{failed:?}"
    );
    let hits = s
        .api()
        .post(
            &format!("/v1/workspaces/{ws}/search"),
            json!({"query": "otters", "mode": "fulltext"}),
        )
        .await;
    assert_eq!(
        hits.body["results"].as_array().map(Vec::len),
        Some(1),
        "{:?}",
        hits.body
    );
    let out = remote(&[notes]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{stdout}");
    assert_eq!(
        summary(&stdout).0,
        "1 file: 0 added or updated, 1 unchanged, 0 skipped, 0 failed"
    );
    // What every file would meet ends the run at once with the reason: a refused credential,
    // a workspace the key cannot reach, a URL that is not the server's base, no server at all.
    let other_ws = uuid::Uuid::now_v7().to_string();
    let wrong_base = format!("{}/v1", s.base);
    for (workspace, server, token, reason) in [
        (ws.as_str(), s.base.as_str(), "enc_bogus", "HTTP 401"),
        (other_ws.as_str(), s.base.as_str(), key.as_str(), "HTTP 404"),
        (
            ws.as_str(),
            wrong_base.as_str(),
            key.as_str(),
            "no Enclave server answers",
        ),
        (
            ws.as_str(),
            "http://127.0.0.1:9",
            key.as_str(),
            "cannot reach the server",
        ),
    ] {
        let out = enclave(
            &data,
            &[
                "ingest",
                "--workspace",
                workspace,
                "--server",
                server,
                "--token",
                token,
                notes,
            ],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{reason}");
        assert!(stderr.contains(reason), "{reason}: {stderr}");
    }

    // Once the server stops, ingest opens the data directory itself; what the server stored
    // through the API is the same document (same path, same bytes): unchanged.
    let _kept = s.stop();
    let out = enclave_ok(&data, &["ingest", "--workspace", &ws, notes]);
    assert_eq!(
        summary(&out).0,
        "1 file: 0 added or updated, 1 unchanged, 0 skipped, 0 failed",
        "{out}"
    );
}

#[test]
fn workspaces_by_slug_help_per_command_and_a_closed_pipe() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path();
    let ws = org_and_workspace(data, "slugs");
    // `org/workspace` wherever a workspace id is taken.
    let key = json_of(&enclave_ok(
        data,
        &[
            "key",
            "create",
            "--workspace",
            "slugs/docs",
            "--scopes",
            "search",
        ],
    ));
    assert!(key["key"].as_str().is_some(), "{key}");
    let keys = json_of(&enclave_ok(
        data,
        &["key", "list", "--workspace", "slugs/docs"],
    ));
    assert_eq!(keys.as_array().map(Vec::len), Some(1), "{keys}");
    let by_id = json_of(&enclave_ok(data, &["key", "list", "--workspace", &ws]));
    assert_eq!(keys, by_id);
    let out = enclave(data, &["key", "list", "--workspace", "slugs/nope"]);
    assert!(!out.status.success());

    // An unknown plan names the valid ones.
    let out = enclave(data, &["org", "create", "--name", "x", "--plan", "gold"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("enterprise") && stderr.contains("free"),
        "{stderr}"
    );

    // `org --help` shows its own flags, not the server's.
    let help = enclave_ok(data, &["org", "create", "--help"]);
    assert!(
        help.contains("--plan") && !help.contains("--listen"),
        "{help}"
    );

    // `enclave org list | head -c 1`: the reader leaves early; no panic, no error message.
    let mut child = Command::new(env!("CARGO_BIN_EXE_enclave"))
        .arg("--data-dir")
        .arg(data)
        .args(["org", "list"])
        .env("ENCLAVE_ADMIN_TOKEN", TOKEN)
        .env("ENCLAVE_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    // Closing the read end at once: every write the command makes meets a broken pipe.
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("error"), "{stderr}");
}
