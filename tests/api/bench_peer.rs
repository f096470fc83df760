//! `enclave bench peer` at a tiny scale without PostgreSQL: the Enclave side alone loads the
//! synthetic corpus through HTTP, runs every cell (both phases: all open and a small cache) and
//! prints the comparison table with the peer's column marked as not run.

use std::process::Command;

#[test]
fn bench_peer_runs_enclave_side_only_at_a_tiny_scale() {
    let out = Command::new(env!("CARGO_BIN_EXE_enclave"))
        .args([
            "bench",
            "peer",
            "-T",
            "3",
            "-C",
            "12",
            "-Q",
            "12",
            "--clients",
            "2",
            "--cache",
            "2",
            "--wait-idle",
            "100",
        ])
        .env_remove("PEER_ADMIN_DSN")
        .env_remove("PEER_APP_DSN")
        .env("ENCLAVE_LOG", "warn")
        .env("NO_COLOR", "1")
        .output()
        .expect("run enclave bench peer");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench peer failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("PostgreSQL peer: not configured"),
        "{stdout}"
    );
    for row in [
        "full text, 1 client, all open, highlights on",
        "full text, 1 client, all open, highlights off",
        "vector, 1 client, all open",
        "hybrid, 1 client, all open, highlights on",
        "hybrid, 2 clients, QPS, all open",
        "full text, 1 client, cache of 2 open, requests over 3",
        "authenticated no-op, 1 client, cache 2",
        "hybrid, 2 clients, QPS, cache 2",
        "disk after load",
        "load of 36 chunks",
    ] {
        assert!(stdout.contains(row), "missing row {row:?}:\n{stdout}");
    }
    // Every query answered, every result of the tenant asked for, full pages from the vector.
    assert!(
        stdout.contains("foreign rows returned: 0; errors: 0"),
        "{stdout}"
    );
    let vector_row = stdout
        .lines()
        .find(|l| l.contains("| vector ") && l.contains("| enclave "))
        .unwrap_or_default();
    assert!(
        vector_row.contains("| 10.0 ") && vector_row.contains("| 0 "),
        "vector queries return 10 rows: {vector_row}"
    );
}
