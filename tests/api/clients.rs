//! The official OpenAI and MCP Python clients against a running server
//! (`tests/clients/check_clients.py`). Skipped, with a message, only when python3 or the
//! packages are missing locally; CI (`.ci/run`) installs them, and sets `CI`, which makes a
//! missing package a failure instead.

use std::process::Command;

use serde_json::json;

use crate::harness::TestServer;

fn python_ready() -> Result<(), String> {
    let out = Command::new("python3")
        .args(["-c", "import openai, mcp"])
        .output()
        .map_err(|e| format!("python3 not runnable: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "python packages missing ({}); pip install -r tests/clients/requirements.txt",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[tokio::test]
async fn official_openai_and_mcp_python_clients_work_unchanged() {
    if let Err(why) = python_ready() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the client checks: {why}"
        );
        eprintln!("SKIPPED official_openai_and_mcp_python_clients_work_unchanged: {why}");
        return;
    }
    let s = TestServer::start();
    let op = s.api();
    let org = op.create_org("clients").await;
    let ws = op.create_workspace(&org, "kb").await;
    s.seed_documents(
        &ws,
        &[(
            "Manual",
            json!({}),
            "The omega valve opens at 42 bar of pressure.",
        )],
    )
    .await;
    let key = op.create_key(&ws, &["chat", "search"]).await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/check_clients.py"
    );
    let base = s.base.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args([
                script,
                &base,
                &ws,
                &key.key,
                "omega valve pressure",
                "42 bar",
            ])
            .output()
    })
    .await
    .expect("join")
    .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "client checks failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("clients: 7 passed, 0 failed"), "{stdout}");
}
