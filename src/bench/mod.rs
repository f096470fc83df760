//! Benchmarks: commands that print a report, never timed tests. Each benchmark lives in its own
//! module and adds one variant to [`BenchCommand`].

mod auth;
mod load;
mod peer;
pub mod report;
mod search;
mod tenants;
mod tier;

use clap::Subcommand;

use crate::config::ConfigArgs;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Many tenants: creation rate, cold/warm open, RSS and fds held open, start time.
    Tenants(tenants::Args),
    /// Embedding models: chunks/s per model, query latency, load time.
    Embed(crate::embed::bench::EmbedBenchArgs),
    /// Authentication: an API-key request against the same request without auth (p50/p99).
    Auth(auth::Args),
    /// Knowledge: ingestion rate per embedder, search latency on a big workspace and across
    /// many small ones, through HTTP.
    Search(search::Args),
    /// Bulk load: documents/s through `POST /documents/batch` at several batch sizes, into one
    /// workspace and spread over many, against one request per document.
    Load(load::Args),
    /// Tiered storage: offload and hydration latency of workspaces of given sizes through an
    /// object store, and the local disk of many workspaces of which few are hot.
    Tier(tier::Args),
    /// Enclave against the shared-PostgreSQL (RLS + pgvector) design on the same corpus, in one
    /// run; prints the comparison table (Enclave side only without a PostgreSQL DSN).
    Peer(peer::Args),
}

pub fn run(cmd: BenchCommand, args: &ConfigArgs) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Tenants(a) => tenants::run(a, args),
        BenchCommand::Auth(a) => auth::run(a, args),
        BenchCommand::Embed(a) => crate::embed::bench::bench(a),
        BenchCommand::Search(a) => search::run(a, args),
        BenchCommand::Load(a) => load::run(a, args),
        BenchCommand::Tier(a) => tier::run(a, args),
        BenchCommand::Peer(a) => peer::run(a, args),
    }
}

/// The benchmark's data directory: `--data-dir` if given, else a new folder under the system's
/// temporary directory named after the benchmark.
fn data_dir_or_temp(config: &ConfigArgs, name: &str) -> std::path::PathBuf {
    match &config.data_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!(
            "enclave-bench-{name}-{}",
            crate::ids::new_id().simple()
        )),
    }
}

/// An org on the enterprise plan, for a benchmark: measurements are not held by a plan's
/// limits.
fn unlimited_org(app: &crate::app::App, name: &str) -> anyhow::Result<crate::control::Org> {
    Ok(app.tenancy().create_org(crate::control::NewOrg {
        name: name.into(),
        plan: Some("enterprise".into()),
        ..Default::default()
    })?)
}

/// Like [`data_dir_or_temp`], for benchmarks that need an empty directory: a given
/// `--data-dir` must be new or empty. Also says whether the folder is the benchmark's own (a
/// temporary one, removed at the end).
fn empty_data_dir(config: &ConfigArgs, name: &str) -> anyhow::Result<(std::path::PathBuf, bool)> {
    if let Some(d) = &config.data_dir {
        anyhow::ensure!(
            !d.exists() || std::fs::read_dir(d)?.next().is_none(),
            "the benchmark needs a new or empty --data-dir ({} is not empty)",
            d.display()
        );
    }
    Ok((data_dir_or_temp(config, name), config.data_dir.is_none()))
}

/// Runs `bench` in an [`empty_data_dir`]; removes the folder afterwards when it is the
/// benchmark's own and `keep` is false, else prints where the data stays.
fn in_empty_data_dir(
    config: &ConfigArgs,
    name: &str,
    keep: bool,
    bench: impl FnOnce(&std::path::Path) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let (data_dir, owned) = empty_data_dir(config, name)?;
    let result = bench(&data_dir);
    if owned && !keep {
        let _ = std::fs::remove_dir_all(&data_dir);
    } else {
        println!("data kept in {}", data_dir.display());
    }
    result
}
