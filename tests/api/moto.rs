//! One moto S3 server (an S3-compatible server in Python) for the whole test binary, started on
//! first use from a thread that lives as long as the process (the child dies with it:
//! `PR_SET_PDEATHSIG`), with the standard AWS environment pointed at it once. Tests that use S3
//! (backups, tiered storage) share it, each in a bucket of its own, so none of them races
//! another's `AWS_ENDPOINT_URL`. Without moto the tests are skipped with a message, except
//! under `CI`, which requires it.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn start() -> Option<String> {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import moto.server"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!("moto is required under CI (pip install 'moto[server]')");
        }
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new("python3");
        cmd.args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
        // SAFETY: prctl is async-signal-safe; the child is killed when this thread ends, which
        // is when the test process ends.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn();
        let _ = tx.send(child.is_ok());
        let _child = child;
        loop {
            std::thread::park();
        }
    });
    if !rx.recv().unwrap_or(false) {
        return None;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let endpoint = format!("http://127.0.0.1:{port}");
    // SAFETY of the environment: set once, before any S3 client of this process reads it; only
    // S3 targets read these variables.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", "test");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
        std::env::set_var("AWS_REGION", "us-east-1");
        std::env::set_var("AWS_ENDPOINT_URL", &endpoint);
        std::env::set_var("AWS_ALLOW_HTTP", "true");
    }
    Some(endpoint)
}

/// The shared moto endpoint, or `None` (after printing why the caller is skipped).
pub fn endpoint(test: &str) -> Option<String> {
    static MOTO: OnceLock<Option<String>> = OnceLock::new();
    let e = MOTO.get_or_init(start).clone();
    if e.is_none() {
        eprintln!("SKIPPED: {test}: moto is not installed (pip install 'moto[server]')");
    }
    e
}

/// A new bucket on the shared moto (moto takes an unsigned PUT); `None` when skipped.
pub async fn bucket(test: &str, name: &str) -> Option<String> {
    let endpoint = endpoint(test)?;
    let r = reqwest::Client::new()
        .put(format!("{endpoint}/{name}"))
        .send()
        .await
        .expect("bucket");
    assert!(r.status().is_success(), "bucket {name}: {}", r.status());
    Some(endpoint)
}
