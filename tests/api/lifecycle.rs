use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{Api, Options, TestServer, TOKEN};

#[tokio::test]
async fn restart_keeps_everything() {
    let s = TestServer::start();
    let api = s.api();
    let org = api.create_org("durable").await;
    let ws = api.create_workspace(&org, "kept").await;
    api.patch(&format!("/v1/orgs/{org}"), json!({"settings": {"k": "v"}}))
        .await;
    let data_dir = s.data_dir.clone();
    let tmp = s.stop();

    let s = TestServer::start_with(Options::on(&data_dir, 1));
    let api = s.api();
    let r = api.get(&format!("/v1/orgs/{org}")).await;
    assert_eq!((r.status, &r.body["settings"]["k"]), (200, &json!("v")));
    let r = api.get(&format!("/v1/workspaces/{ws}")).await;
    assert_eq!((r.status, r.body["slug"].as_str()), (200, Some("kept")));
    drop(s);
    drop(tmp);
}

#[tokio::test]
async fn a_generated_operator_token_survives_restarts_as_a_hash() {
    let s = TestServer::start_with(Options::configured(|c| c.admin_token = None));
    let token = s.token.clone();
    assert!(
        token.starts_with("enc_op_"),
        "a token was generated: {token}"
    );
    assert_eq!(s.api().get("/v1/orgs").await.status, 200);
    let data_dir = s.data_dir.clone();
    let tmp = s.stop();

    let s = TestServer::start_with(Options::on(&data_dir, 1).with(|c| c.admin_token = None));
    assert_eq!(s.token, "", "not generated again");
    let api = Api::new(&s.base, Some(&token));
    assert_eq!(
        api.get("/v1/orgs").await.status,
        200,
        "the stored hash still matches"
    );
    drop(s);
    drop(tmp);
}

/// The real binary: starts on a temp dir, serves, stops on SIGTERM with exit code 0 after
/// checkpointing, and a second start sees the data.
#[tokio::test]
async fn the_binary_shuts_down_cleanly_on_sigterm() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let spawn = || crate::harness::spawn_binary(tmp.path());

    let (child, base) = spawn();
    let api = Api::new(&base, Some(TOKEN));
    let org = api.create_org("sig").await;
    let ws = api.create_workspace(&org, "w").await;
    assert_eq!(api.get(&format!("/v1/workspaces/{ws}")).await.status, 200);

    // SAFETY: sending a signal to our own child process.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = wait_exit(child, Duration::from_secs(20));
    assert_eq!(status, Some(0), "clean exit on SIGTERM");
    for wal in ["control.db-wal", &format!("{ws}/workspace.db-wal")] {
        let size = std::fs::metadata(tmp.path().join(wal))
            .map(|m| m.len())
            .unwrap_or(0);
        assert_eq!(size, 0, "{wal} checkpointed on shutdown");
    }

    let (child, base) = spawn();
    let api = Api::new(&base, Some(TOKEN));
    assert_eq!(api.get(&format!("/v1/workspaces/{ws}")).await.status, 200);
    // SAFETY: as above.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    assert_eq!(
        wait_exit(child, Duration::from_secs(20)),
        Some(0),
        "clean exit on Ctrl-C"
    );
}

fn wait_exit(mut child: std::process::Child, limit: Duration) -> Option<i32> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    None
}
