//! `enclave bench search`: ingestion rate (chunks/s) per embedder mode, and search latency
//! p50/p99 through HTTP on one workspace of many chunks and across many random workspaces.
//!
//! The text is synthetic (Zipf-distributed pseudo-words, so posting lists look like a natural
//! language's); documents go through `Knowledge::add_document` and the job scheduler, exactly the
//! API's path; queries go through the real HTTP server on a loopback port.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use uuid::Uuid;

use crate::app::App;
use crate::config::{Config, ConfigArgs};
use crate::control::NewWorkspace;
use crate::knowledge::service::DocumentInput;
use crate::knowledge::EmbedderConfig;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Chunks in the big workspace.
    #[arg(long, default_value_t = 100_000)]
    pub chunks: usize,
    /// Number of small workspaces for the many-tenant latency run.
    #[arg(long, default_value_t = 1000)]
    pub workspaces: usize,
    /// Documents per small workspace.
    #[arg(long, default_value_t = 10)]
    pub docs_per_workspace: usize,
    /// Queries per latency measurement.
    #[arg(long, default_value_t = 300)]
    pub queries: usize,
    /// Chunks ingested with the transformer for its ingestion rate.
    #[arg(long, default_value_t = 320)]
    pub minilm_chunks: usize,
    /// Embedder of the big workspace (static or minilm).
    #[arg(long, default_value = "static")]
    pub embedder: String,
    /// Only the big-workspace latency runs whose label contains this (e.g. `fulltext`,
    /// `filter`): for profiling one path.
    #[arg(long)]
    pub only: Option<String>,
    /// Keep the data directory (printed) instead of removing it; a later run given the same
    /// `--data-dir` reuses its workspaces and measures latency only.
    #[arg(long)]
    pub keep: bool,
}

/// Words per chunk of the synthetic documents (the chunker's target).
const WORDS_PER_CHUNK: usize = 170;
pub(super) const CHUNKS_PER_DOC: usize = 10;
const GROUPS: [&str; 3] = ["a", "b", "c"];

pub(super) struct Lexicon {
    words: Vec<String>,
    cdf: Vec<f64>,
}

impl Lexicon {
    pub(super) fn new(n: usize, rng: &mut StdRng) -> Self {
        const SYL: &[&str] = &[
            "ka", "lo", "mi", "ren", "to", "sa", "vel", "dor", "an", "is", "qu", "ber", "tan",
            "el", "or", "fi", "nu", "gra", "pe", "sol", "mar", "tri", "zen", "ho", "lu",
        ];
        let mut words = Vec::with_capacity(n);
        let mut seen = std::collections::HashSet::new();
        while words.len() < n {
            let k = rng.random_range(1..=4);
            let w: String = (0..k)
                .map(|_| SYL[rng.random_range(0..SYL.len())])
                .collect();
            if seen.insert(w.clone()) {
                words.push(w);
            }
        }
        let weights: Vec<f64> = (1..=n).map(|r| 1.0 / r as f64).collect();
        let total: f64 = weights.iter().sum();
        let mut acc = 0.0;
        let cdf = weights
            .iter()
            .map(|w| {
                acc += w / total;
                acc
            })
            .collect();
        Lexicon { words, cdf }
    }

    fn word(&self, rng: &mut StdRng) -> &str {
        let x: f64 = rng.random();
        let i = self
            .cdf
            .partition_point(|c| *c < x)
            .min(self.words.len() - 1);
        &self.words[i]
    }

    fn text(&self, rng: &mut StdRng, words: usize) -> String {
        let mut s = String::with_capacity(words * 7);
        for i in 0..words {
            s.push_str(self.word(rng));
            s.push(if i % 15 == 14 { '.' } else { ' ' });
            if i % 15 == 14 {
                s.push(' ');
            }
        }
        s
    }

    pub(super) fn query(&self, rng: &mut StdRng) -> String {
        // Queries favour mid-frequency words, as real ones do.
        let n = rng.random_range(2..=5);
        (0..n)
            .map(|_| self.words[rng.random_range(20..self.words.len().min(3000))].clone())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub(super) fn new_workspace(
    app: &App,
    org: &str,
    name: &str,
    embedder: EmbedderConfig,
) -> anyhow::Result<Uuid> {
    let ws = app
        .tenancy()
        .create_workspace(
            &app.identity().operator_org(org)?,
            NewWorkspace {
                name: name.into(),
                ..Default::default()
            },
        )?
        .id;
    app.knowledge()
        .set_embedder(&app.identity().operator_workspace(ws)?, embedder)?;
    Ok(ws)
}

pub(super) fn add_docs(
    app: &App,
    ws: Uuid,
    lex: &Lexicon,
    rng: &mut StdRng,
    docs: usize,
    chunks_per_doc: usize,
) -> anyhow::Result<()> {
    let permit = app
        .knowledge()
        .ingest_permit(&app.identity().operator_workspace(ws)?)?;
    for i in 0..docs {
        let text: Vec<String> = (0..chunks_per_doc)
            .map(|_| lex.text(rng, WORDS_PER_CHUNK))
            .collect();
        app.knowledge().add_document(
            &permit,
            DocumentInput {
                bytes: text.join("\n\n").into_bytes(),
                title: Some(format!("{} {}", lex.word(rng), lex.word(rng))),
                metadata: Some(json!({"n": i, "group": GROUPS[i % 3]})),
                is_text: true,
                ..Default::default()
            },
        )?;
    }
    Ok(())
}

/// Ingests and runs the jobs; returns chunks/s.
fn ingest_rate(
    app: &App,
    ws: Uuid,
    lex: &Lexicon,
    rng: &mut StdRng,
    chunks: usize,
) -> anyhow::Result<(usize, f64)> {
    let docs = chunks.div_ceil(CHUNKS_PER_DOC).max(1);
    let t = Instant::now();
    add_docs(app, ws, lex, rng, docs, CHUNKS_PER_DOC)?;
    app.knowledge().run_jobs_until_idle(|| {});
    let secs = t.elapsed().as_secs_f64();
    let n = app
        .tenancy()
        .get_workspace(&app.identity().operator_workspace(ws)?)?
        .stats
        .chunks as usize;
    Ok((n, n as f64 / secs))
}

pub(super) struct Server {
    pub(super) base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    pub(super) fn start(app: Arc<App>) -> anyhow::Result<Server> {
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let Ok(listener) = crate::server::bind(([127, 0, 0, 1], 0).into()).await else {
                    return;
                };
                let _ = tx.send(listener.local_addr().ok());
                let _ = crate::server::serve(app, listener, async {
                    let _ = stop_rx.await;
                })
                .await;
            });
        });
        let addr = rx
            .recv()
            .ok()
            .flatten()
            .ok_or_else(|| anyhow::anyhow!("the server did not start"))?;
        Ok(Server {
            base: format!("http://{addr}"),
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs `n` searches through HTTP; returns sorted latencies in ms.
fn latencies(
    client: &reqwest::blocking::Client,
    base: &str,
    token: &str,
    n: usize,
    mut next: impl FnMut() -> (Uuid, serde_json::Value),
) -> anyhow::Result<Vec<f64>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let (ws, body) = next();
        let t = Instant::now();
        let resp = client
            .post(format!("{base}/v1/workspaces/{ws}/search"))
            .bearer_auth(token)
            .json(&body)
            .send()?;
        let status = resp.status();
        let _ = resp.bytes()?;
        out.push(t.elapsed().as_secs_f64() * 1000.0);
        if !status.is_success() {
            anyhow::bail!("search answered {status}");
        }
    }
    out.sort_by(f64::total_cmp);
    Ok(out)
}

/// The workspaces of a kept data directory (`--keep`), for latency runs that reuse them.
#[derive(serde::Serialize, serde::Deserialize)]
struct Manifest {
    big: Uuid,
    small: Vec<Uuid>,
}

const MANIFEST: &str = "bench-search.json";

pub fn run(a: Args, config: &ConfigArgs) -> anyhow::Result<()> {
    let dir = super::data_dir_or_temp(config, "search");
    std::fs::create_dir_all(&dir)?;
    let token = "bench-operator-token-0123456789".to_string();
    let mut cfg = Config::for_data_dir(&dir);
    cfg.admin_token = Some(token.clone());
    let (app, _) = App::open(cfg)?;
    let mut rng = StdRng::seed_from_u64(7);
    let lex = Lexicon::new(30_000, &mut rng);
    let big_embedder = match a.embedder.as_str() {
        "minilm" => EmbedderConfig::Minilm,
        _ => EmbedderConfig::Static,
    };

    // A data directory kept by an earlier `--keep` run is reused as it is: latency only.
    let manifest = dir.join(MANIFEST);
    let (big, n, small) = match std::fs::read(&manifest)
        .ok()
        .and_then(|b| serde_json::from_slice::<Manifest>(&b).ok())
    {
        Some(m) => {
            eprintln!("reusing the workspaces of {}", manifest.display());
            let n = app
                .tenancy()
                .get_workspace(&app.identity().operator_workspace(m.big)?)?
                .stats
                .chunks as usize;
            (m.big, n, m.small)
        }
        None => {
            let org = super::unlimited_org(&app, "bench")?.id.to_string();
            println!(
                "## Ingestion (extraction, chunking, full text, embeddings; through the job scheduler)\n"
            );
            println!("| embedder | chunks | chunks/s |");
            println!("|---|---|---|");
            let ws = new_workspace(&app, &org, "ingest-minilm", EmbedderConfig::Minilm)?;
            let (n, rate) = ingest_rate(&app, ws, &lex, &mut rng, a.minilm_chunks)?;
            println!("| minilm (transformer, 384 d) | {n} | {rate:.0} |");
            let ws = new_workspace(&app, &org, "ingest-static", EmbedderConfig::Static)?;
            let (n, rate) = ingest_rate(&app, ws, &lex, &mut rng, 20_000)?;
            println!("| static (Model2Vec, 256 d) | {n} | {rate:.0} |");

            eprintln!("building a workspace of {} chunks...", a.chunks);
            let big = new_workspace(&app, &org, "big", big_embedder.clone())?;
            let (n, rate) = ingest_rate(&app, big, &lex, &mut rng, a.chunks)?;
            eprintln!("  {n} chunks at {rate:.0} chunks/s");

            eprintln!("building {} small workspaces...", a.workspaces);
            let mut small = Vec::with_capacity(a.workspaces);
            for i in 0..a.workspaces {
                let ws = new_workspace(&app, &org, &format!("small-{i}"), EmbedderConfig::Static)?;
                add_docs(&app, ws, &lex, &mut rng, a.docs_per_workspace, 1)?;
                small.push(ws);
            }
            app.knowledge().run_jobs_until_idle(|| {});
            if a.keep {
                let m = Manifest {
                    big,
                    small: small.clone(),
                };
                std::fs::write(&manifest, serde_json::to_vec(&m)?)?;
            }
            (big, n, small)
        }
    };

    let server = Server::start(app.clone())?;
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    println!(
        "\n## Search latency through HTTP (ms, {} queries each, 2 cores)\n",
        a.queries
    );
    println!("| workspace(s) | mode | p50 | p99 |");
    println!("|---|---|---|---|");
    let big_label = format!("1 × {n} chunks ({})", a.embedder);
    // The first vector query of a process builds the workspace's in-memory codes.
    let first = {
        let mut qrng = StdRng::seed_from_u64(5);
        latencies(&client, &server.base, &token, 1, || {
            (
                big,
                json!({"query": lex.query(&mut qrng), "mode": "vector"}),
            )
        })?
    };
    // Filters: a fixed one (a tenant token's: its allowed set is cached until the data
    // changes), and a new one on every query (computed each time).
    #[derive(Clone, Copy, PartialEq)]
    enum Filtered {
        No,
        Fixed,
        Varying,
    }
    for (mode, filter) in [
        ("fulltext", Filtered::No),
        ("vector", Filtered::No),
        ("hybrid", Filtered::No),
        ("hybrid", Filtered::Fixed),
        ("hybrid", Filtered::Varying),
    ] {
        let label = match filter {
            Filtered::No => mode.to_string(),
            Filtered::Fixed => format!("{mode} + fixed filter (1/3 of docs)"),
            Filtered::Varying => format!("{mode} + new filter each query (~1/3)"),
        };
        if a.only.as_ref().is_some_and(|o| !label.contains(o.as_str())) {
            continue;
        }
        let docs = (n / CHUNKS_PER_DOC).max(1);
        // Warm-up.
        let mut qrng = StdRng::seed_from_u64(11);
        let _ = latencies(&client, &server.base, &token, 10, || {
            (big, json!({"query": lex.query(&mut qrng), "mode": mode}))
        })?;
        let l = latencies(&client, &server.base, &token, a.queries, || {
            let mut body = json!({"query": lex.query(&mut qrng), "mode": mode, "limit": 10});
            match filter {
                Filtered::No => {}
                Filtered::Fixed => body["filter"] = json!({"group": "a"}),
                Filtered::Varying => {
                    let from = qrng.random_range(0..docs);
                    body["filter"] = json!({"n": {"gte": from, "lt": from + docs / 3}});
                }
            }
            (big, body)
        })?;
        println!(
            "| {big_label} | {label} | {:.2} | {:.2} |",
            percentile(&l, 0.5),
            percentile(&l, 0.99)
        );
    }
    println!(
        "\nFirst vector query after the workspace opened (builds its codes from SQLite): {:.1} ms\n",
        first.first().copied().unwrap_or(0.0)
    );
    let small_label = format!(
        "{} random × {} docs (cache {})",
        a.workspaces,
        a.docs_per_workspace,
        app.config().max_open_workspaces
    );
    for mode in ["fulltext", "hybrid"] {
        if a.only.is_some() {
            break;
        }
        let mut qrng = StdRng::seed_from_u64(13);
        let l = latencies(&client, &server.base, &token, a.queries, || {
            let ws = small[qrng.random_range(0..small.len())];
            (
                ws,
                json!({"query": lex.query(&mut qrng), "mode": mode, "limit": 10}),
            )
        })?;
        println!(
            "| {small_label} | {mode} | {:.2} | {:.2} |",
            percentile(&l, 0.5),
            percentile(&l, 0.99)
        );
    }
    // The transformer's query embedding, alone.
    let minilm = app.knowledge().embedders().get(&EmbedderConfig::Minilm)?;
    if let (Some(e), None) = (minilm, &a.only) {
        let mut qrng = StdRng::seed_from_u64(17);
        let mut t = Vec::new();
        for _ in 0..50 {
            let q = lex.query(&mut qrng);
            let s = Instant::now();
            e.embed(&[q.as_str()])?;
            t.push(s.elapsed().as_secs_f64() * 1000.0);
        }
        t.sort_by(f64::total_cmp);
        println!(
            "\nMiniLM query embedding: p50 {:.2} ms, p99 {:.2} ms",
            percentile(&t, 0.5),
            percentile(&t, 0.99)
        );
    }
    drop(server);
    if a.keep {
        println!("\ndata kept in {}", dir.display());
    } else if config.data_dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}
