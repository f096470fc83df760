//! `enclave bench tier`: tiered storage through a real object store. For each workspace size
//! (chunks of synthetic text, ingested through the job scheduler): the offload (snapshot,
//! upload, manifest) and the hydration on the registry's miss path (download, checks, rename,
//! open), then a first full-text search; and the local disk of many workspaces of which few
//! are hot, computed from the measured folder sizes.

use std::time::Instant;

use rand::rngs::StdRng;
use rand::SeedableRng;

use super::report::{percentile, Table};
use super::search::{add_docs, new_workspace, Lexicon, CHUNKS_PER_DOC};
use crate::app::App;
use crate::config::{Config, ConfigArgs};
use crate::durability::tier::{self, Offload};
use crate::knowledge::EmbedderConfig;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The object store: s3://bucket/prefix (AWS_* environment) or file:///folder.
    #[arg(long)]
    pub object_store: String,
    /// Workspace sizes in chunks, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "200,100000")]
    pub chunks: Vec<usize>,
    /// Hydrations measured per size.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Workspaces in the disk estimate.
    #[arg(long, default_value_t = 100_000)]
    pub workspaces: u64,
    /// How many of them are hot (kept local) in the disk estimate.
    #[arg(long, default_value_t = 1_000)]
    pub hot: u64,
}

fn mib(b: u64) -> String {
    format!("{:.1}", b as f64 / (1 << 20) as f64)
}

pub fn run(a: Args, config: &ConfigArgs) -> anyhow::Result<()> {
    let dir = super::data_dir_or_temp(config, "tier");
    std::fs::create_dir_all(&dir)?;
    let mut cfg = Config::for_data_dir(&dir);
    cfg.admin_token = Some("bench-operator-token-0123456789".into());
    cfg.object_store = Some(a.object_store.clone());
    // Offload whatever is closed, keep no clean copy: every open is a hydration.
    cfg.offload_after_secs = 0;
    cfg.local_cache_bytes = 0;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (app, _) = App::open(cfg)?;
    let tier = tier::install(&app, rt.handle().clone())?
        .ok_or_else(|| anyhow::anyhow!("no object store"))?;
    let mut rng = StdRng::seed_from_u64(17);
    let lex = Lexicon::new(30_000, &mut rng);
    let org = super::unlimited_org(&app, "bench")?.id.to_string();
    // An empty workspace: the floor of a folder.
    let empty = new_workspace(&app, &org, "empty", EmbedderConfig::Static)?;
    let empty_bytes = crate::workspace::dir_size(&crate::workspace::dir_of(&dir, empty))?;

    println!(
        "## Tiered storage: offload and hydration ({})\n",
        a.object_store
    );
    let mut table = Table::new(&[
        "chunks",
        "folder MiB",
        "offload s",
        "hydrate+open p50 ms",
        "min ms",
        "max ms",
        "first search ms",
        "re-offload (unchanged) ms",
    ]);
    let mut folder_of_smallest = None;
    for &chunks in &a.chunks {
        eprintln!("building a workspace of {chunks} chunks...");
        let ws = new_workspace(&app, &org, &format!("w{chunks}"), EmbedderConfig::Static)?;
        let docs = chunks.div_ceil(CHUNKS_PER_DOC).max(1);
        add_docs(&app, ws, &lex, &mut rng, docs, CHUNKS_PER_DOC)?;
        app.knowledge().run_jobs_until_idle(|| {});
        let wdir = crate::workspace::dir_of(&dir, ws);
        // Closed (its WAL checkpointed away) before it is measured and offloaded.
        app.registry()
            .close_idle_stores(std::time::Duration::ZERO, std::time::Duration::ZERO);
        let folder = crate::workspace::dir_size(&wdir)?;
        if folder_of_smallest.is_none() {
            folder_of_smallest = Some(folder);
        }
        let t = Instant::now();
        match tier.offload(&app, ws)? {
            Offload::Uploaded { .. } => {}
            other => anyhow::bail!("workspace {ws} not offloaded: {other:?}"),
        }
        let offload_s = t.elapsed().as_secs_f64();
        let mut hydrate = Vec::new();
        let mut reoffload = Vec::new();
        let mut first_search = 0.0;
        for round in 0..a.rounds.max(1) {
            // Evict the clean copy (no cache room), then open: a hydration.
            tier.sweep(&app);
            anyhow::ensure!(!wdir.exists(), "the local copy was not evicted");
            let t = Instant::now();
            let handle = app.registry().get(ws)?;
            hydrate.push(t.elapsed().as_secs_f64() * 1000.0);
            drop(handle);
            if round == 0 {
                let t = Instant::now();
                let req: crate::knowledge::search::SearchRequest =
                    serde_json::from_value(serde_json::json!({
                        "query": lex.query(&mut rng),
                        "mode": "fulltext"
                    }))?;
                app.knowledge()
                    .search(&app.identity().operator_workspace(ws)?, &req)?;
                first_search = t.elapsed().as_secs_f64() * 1000.0;
            }
            app.registry()
                .close_idle_stores(std::time::Duration::ZERO, std::time::Duration::ZERO);
            let t = Instant::now();
            let o = tier.offload(&app, ws)?;
            reoffload.push(t.elapsed().as_secs_f64() * 1000.0);
            if !matches!(o, Offload::Reused { .. } | Offload::Uploaded { .. }) {
                anyhow::bail!("workspace {ws} not offloaded again: {o:?}");
            }
        }
        let p50 = percentile(&mut hydrate.clone(), 50.0);
        let min = hydrate.iter().copied().fold(f64::MAX, f64::min);
        let max = hydrate.iter().copied().fold(0.0, f64::max);
        table.row(&[
            chunks.to_string(),
            mib(folder),
            format!("{offload_s:.2}"),
            format!("{p50:.1}"),
            format!("{min:.1}"),
            format!("{max:.1}"),
            format!("{first_search:.1}"),
            format!("{:.1}", percentile(&mut reoffload, 50.0)),
        ]);
    }
    table.print();

    // Local disk: hot workspaces keep their folder; cold ones keep nothing locally (or what
    // `--local-cache-bytes` allows); the control plane holds one row each.
    let typical = folder_of_smallest.unwrap_or(empty_bytes);
    let (n, hot) = (a.workspaces, a.hot.min(a.workspaces));
    println!(
        "\n## Local disk, {n} workspaces of which {hot} hot (computed from the measured folder of \
         the first size: {} MiB; an empty workspace: {} MiB)\n",
        mib(typical),
        mib(empty_bytes)
    );
    let mut disk = Table::new(&["layout", "local GiB"]);
    let gib = |b: u64| format!("{:.1}", b as f64 / (1u64 << 30) as f64);
    disk.row(&["all local".into(), gib(n * typical)]);
    disk.row(&[format!("tiered: {hot} hot, no cache"), gib(hot * typical)]);
    disk.row(&[
        format!("tiered: {hot} hot + 10 GiB cache (default)"),
        gib(hot * typical + (10u64 << 30).min((n - hot) * typical)),
    ]);
    disk.print();
    println!(
        "\nhydrations: {}; data directory: {}",
        tier.hydrations(),
        dir.display()
    );
    app.shutdown();
    drop(rt);
    if config.data_dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}
