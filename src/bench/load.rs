//! `enclave bench load`: documents/s of a bulk load through HTTP, the corpus of issue 16 (each
//! document ~80 words, Zipf-distributed over a 20,000-word vocabulary, with its own
//! L2-normalised 256-dimension vector, into workspaces whose embedder is user-provided):
//!
//! - into one workspace, with `POST /documents/batch` at each batch size;
//! - spread over many workspaces (`--docs-per-workspace` each, one batch per request, a batch
//!   never spans workspaces);
//! - one request per document (`POST /documents`, then until every document is indexed by the
//!   job workers), for comparison.
//!
//! The server is the real one on a loopback port; `--clients` threads send the requests. Bodies
//! are built by the client while it runs (its cost shares the machine, as a real loader's
//! would); the workspaces are made before the clock starts. Each rate counts a document when
//! it is stored and searchable (the batch answered; for single documents, when indexed).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

use super::report::Table;
use crate::app::App;
use crate::config::{Config, ConfigArgs};
use crate::control::NewWorkspace;
use crate::knowledge::EmbedderConfig;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Batch sizes of the one-workspace runs (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [100, 500, 1000])]
    pub batch_sizes: Vec<usize>,
    /// Documents loaded into the one workspace, per batch size.
    #[arg(long, default_value_t = 20_000)]
    pub one_docs: usize,
    /// Workspaces of the spread run (0: no spread run).
    #[arg(long, default_value_t = 1000)]
    pub workspaces: usize,
    /// Documents per workspace in the spread run.
    #[arg(long, default_value_t = 200)]
    pub docs_per_workspace: usize,
    /// Documents sent one request each (0: no comparison run).
    #[arg(long, default_value_t = 2000)]
    pub single: usize,
    /// Client threads sending requests at once: twice the 2 cores, so that one request's
    /// fsyncs (SQLite, Tantivy's commit) overlap another's work.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Dimension of the vectors.
    #[arg(long, default_value_t = 256)]
    pub dim: usize,
    /// Keep the data directory (printed) instead of removing it.
    #[arg(long)]
    pub keep: bool,
}

/// The synthetic corpus: a Zipf vocabulary and a pool of vectors (serialized once).
struct Corpus {
    words: Vec<String>,
    cdf: Vec<f64>,
    /// `guide[g]`: the first word whose cumulative probability reaches `g / GUIDE`, so a draw
    /// searches only between two neighbours (the same word as a search of the whole `cdf`,
    /// without its cache misses: the client's cost is part of what is measured).
    guide: Vec<usize>,
    vectors: Vec<String>,
}

/// Buckets of [`Corpus::guide`].
const GUIDE: usize = 1 << 16;

impl Corpus {
    fn new(dim: usize) -> Corpus {
        let mut rng = StdRng::seed_from_u64(42);
        let mut words = Vec::with_capacity(20_000);
        let mut seen = std::collections::HashSet::new();
        while words.len() < 20_000 {
            let n = rng.random_range(3..=10);
            let w: String = (0..n)
                .map(|_| char::from(b'a' + rng.random_range(0..26u8)))
                .collect();
            if seen.insert(w.clone()) {
                words.push(w);
            }
        }
        let total: f64 = (1..=words.len()).map(|r| 1.0 / r as f64).sum();
        let mut acc = 0.0;
        let cdf: Vec<f64> = (1..=words.len())
            .map(|r| {
                acc += 1.0 / r as f64 / total;
                acc
            })
            .collect();
        let guide = (0..=GUIDE)
            .map(|g| cdf.partition_point(|c| *c < g as f64 / GUIDE as f64))
            .collect();
        // 4,096 distinct vectors, reused round-robin (a document's text makes it unique).
        let vectors = (0..4096)
            .map(|_| {
                let v: Vec<f32> = (0..dim).map(|_| normal(&mut rng)).collect();
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                let v: Vec<f32> = v.iter().map(|x| x / norm).collect();
                serde_json::to_string(&v).unwrap_or_default()
            })
            .collect();
        Corpus {
            words,
            cdf,
            guide,
            vectors,
        }
    }

    /// A word drawn from the Zipf distribution.
    fn word(&self, rng: &mut StdRng) -> &str {
        let x: f64 = rng.random();
        let g = ((x * GUIDE as f64) as usize).min(GUIDE - 1);
        let (lo, hi) = (self.guide[g], self.guide[g + 1].min(self.cdf.len()));
        let k = lo + self.cdf[lo..hi].partition_point(|c| *c < x);
        &self.words[k.min(self.words.len() - 1)]
    }

    /// `n` words, space-separated, appended to `s`.
    fn words_into(&self, rng: &mut StdRng, n: usize, s: &mut String) {
        for i in 0..n {
            if i > 0 {
                s.push(' ');
            }
            s.push_str(self.word(rng));
        }
    }

    /// One document's JSON object appended to `s` (`n` numbers it, so every document is
    /// distinct): a title of 6 words, a text of 70 to 90.
    fn document_into(&self, rng: &mut StdRng, n: usize, s: &mut String) {
        s.push_str(r#"{"title":""#);
        self.words_into(rng, 6, s);
        s.push_str(r#"","text":""#);
        let words = rng.random_range(70..=90);
        self.words_into(rng, words, s);
        s.push_str(r#"","metadata":{"n":"#);
        s.push_str(&n.to_string());
        s.push_str(r#"},"embedding":"#);
        s.push_str(&self.vectors[n % self.vectors.len()]);
        s.push('}');
    }

    /// One document's JSON object.
    fn document(&self, rng: &mut StdRng, n: usize) -> String {
        let mut s = String::with_capacity(3800);
        self.document_into(rng, n, &mut s);
        s
    }

    /// A JSON array of `count` documents numbered from `first`.
    fn batch(&self, rng: &mut StdRng, first: usize, count: usize) -> String {
        let mut s = String::with_capacity(count * 3800);
        s.push('[');
        for i in 0..count {
            if i > 0 {
                s.push(',');
            }
            self.document_into(rng, first + i, &mut s);
        }
        s.push(']');
        s
    }
}

/// A standard normal sample (Box–Muller).
fn normal(rng: &mut StdRng) -> f32 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

/// One request: the workspace and how many documents (from which number).
#[derive(Clone, Copy)]
struct Job {
    ws: Uuid,
    first: usize,
    count: usize,
}

/// Sends `jobs` from `clients` threads (each takes the next job); `single`: one
/// `POST /documents` per document instead of batches. Returns the wall time.
fn send(
    base: &str,
    token: &str,
    corpus: &Arc<Corpus>,
    jobs: Vec<Job>,
    clients: usize,
    single: bool,
) -> anyhow::Result<Duration> {
    let jobs = Arc::new(jobs);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let handles: Vec<_> = (0..clients.max(1))
        .map(|c| {
            let (jobs, next, corpus) = (jobs.clone(), next.clone(), corpus.clone());
            let (base, token) = (base.to_string(), token.to_string());
            std::thread::spawn(move || -> anyhow::Result<()> {
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(300))
                    .build()?;
                let mut rng = StdRng::seed_from_u64(1000 + c as u64);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = jobs.get(i).copied() else {
                        return Ok(());
                    };
                    let (url, bodies) = if single {
                        let bodies = (0..job.count)
                            .map(|k| corpus.document(&mut rng, job.first + k))
                            .collect::<Vec<_>>();
                        (format!("{base}/v1/workspaces/{}/documents", job.ws), bodies)
                    } else {
                        (
                            format!("{base}/v1/workspaces/{}/documents/batch", job.ws),
                            vec![corpus.batch(&mut rng, job.first, job.count)],
                        )
                    };
                    for body in bodies {
                        let r = client
                            .post(&url)
                            .bearer_auth(&token)
                            .header("content-type", "application/json")
                            .body(body)
                            .send()?;
                        let status = r.status();
                        let text = r.text()?;
                        if !status.is_success() {
                            anyhow::bail!("{url} answered {status}: {text}");
                        }
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join()
            .map_err(|_| anyhow::anyhow!("a client thread panicked"))??;
    }
    Ok(started.elapsed())
}

/// CPU time this process has used (user + system, every thread: server and clients).
fn cpu_time() -> Duration {
    // SAFETY: getrusage writes the struct it is given; a zeroed rusage is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Workspaces whose vectors are user-provided (`dim`), made through the domain before timing.
fn workspaces(app: &App, org: &str, n: usize, dim: usize, tag: &str) -> anyhow::Result<Vec<Uuid>> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let ws = app
            .tenancy()
            .create_workspace(
                &app.identity().operator_org(org)?,
                NewWorkspace {
                    name: format!("{tag}-{i}"),
                    ..Default::default()
                },
            )?
            .id;
        app.knowledge().set_embedder(
            &app.identity().operator_workspace(ws)?,
            EmbedderConfig::UserProvided { dimension: dim },
        )?;
        out.push(ws);
    }
    Ok(out)
}

/// Documents of `ws` not yet indexed.
fn unindexed(app: &App, ws: Uuid) -> anyhow::Result<i64> {
    let h = app.registry().get(ws)?;
    let n = h.conn().query_row(
        "SELECT count(*) FROM documents WHERE status <> 'indexed'",
        [],
        |r| r.get(0),
    )?;
    Ok(n)
}

pub fn run(a: Args, config: &ConfigArgs) -> anyhow::Result<()> {
    let dir = super::data_dir_or_temp(config, "load");
    std::fs::create_dir_all(&dir)?;
    let token = "bench-operator-token-0123456789".to_string();
    let mut cfg = Config::for_data_dir(&dir);
    cfg.admin_token = Some(token.clone());
    cfg.max_open_workspaces = cfg.max_open_workspaces.max(a.clients * 4);
    let (app, _) = App::open(cfg)?;
    let org = super::unlimited_org(&app, "bench-load")?.id.to_string();
    let corpus = Arc::new(Corpus::new(a.dim));
    let server = super::search::Server::start(app.clone())?;
    println!(
        "## Bulk load through HTTP: documents of ~80 words with a {}-d vector each \
         (user-provided embedder), {} client threads, 2 cores\n",
        a.dim, a.clients
    );
    let mut table = Table::new(&[
        "run",
        "requests",
        "documents",
        "seconds",
        "documents/s",
        "CPU µs/document",
        "documents per CPU-second",
    ]);
    let mut row = |label: String, requests: usize, docs: usize, took: Duration, cpu: Duration| {
        let secs = took.as_secs_f64();
        let cpu = cpu.as_secs_f64();
        eprintln!("{label}: {docs} documents in {secs:.2} s ({cpu:.2} s of CPU)");
        table.row(&[
            label,
            requests.to_string(),
            docs.to_string(),
            format!("{secs:.2}"),
            format!("{:.0}", docs as f64 / secs.max(1e-9)),
            format!("{:.0}", cpu * 1e6 / docs.max(1) as f64),
            format!("{:.0}", docs as f64 / cpu.max(1e-9)),
        ]);
    };
    let mut numbered = 0usize;
    for &size in &a.batch_sizes {
        let size = size.max(1);
        let ws = workspaces(&app, &org, 1, a.dim, &format!("one-{size}"))?[0];
        let jobs: Vec<Job> = (0..a.one_docs.div_ceil(size))
            .map(|b| {
                let first = numbered + b * size;
                Job {
                    ws,
                    first,
                    count: size.min(a.one_docs - b * size),
                }
            })
            .collect();
        numbered += a.one_docs;
        let requests = jobs.len();
        let cpu = cpu_time();
        let took = send(&server.base, &token, &corpus, jobs, a.clients, false)?;
        row(
            format!("1 workspace, batches of {size}"),
            requests,
            a.one_docs,
            took,
            cpu_time().saturating_sub(cpu),
        );
    }
    if a.workspaces > 0 && a.docs_per_workspace > 0 {
        eprintln!("making {} workspaces...", a.workspaces);
        let spread = workspaces(&app, &org, a.workspaces, a.dim, "spread")?;
        let per = a.docs_per_workspace;
        let jobs: Vec<Job> = spread
            .iter()
            .enumerate()
            .map(|(i, ws)| Job {
                ws: *ws,
                first: numbered + i * per,
                count: per,
            })
            .collect();
        numbered += a.workspaces * per;
        let cpu = cpu_time();
        let took = send(&server.base, &token, &corpus, jobs, a.clients, false)?;
        row(
            format!(
                "{} workspaces × {per}, one batch of {per} each",
                a.workspaces
            ),
            a.workspaces,
            a.workspaces * per,
            took,
            cpu_time().saturating_sub(cpu),
        );
    }
    if a.single > 0 {
        let ws = workspaces(&app, &org, 1, a.dim, "single")?[0];
        let per_client = a.single.div_ceil(a.clients.max(1));
        let jobs: Vec<Job> = (0..a.clients.max(1))
            .map(|c| Job {
                ws,
                first: numbered + c * per_client,
                count: per_client.min(a.single.saturating_sub(c * per_client)),
            })
            .collect();
        let started = Instant::now();
        let cpu = cpu_time();
        send(&server.base, &token, &corpus, jobs, a.clients, true)?;
        // Answered 202: counted once the job workers have indexed every one.
        let deadline = Instant::now() + Duration::from_secs(3600);
        while unindexed(&app, ws)? > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        row(
            "1 workspace, one request per document (until indexed)".into(),
            a.single,
            a.single,
            started.elapsed(),
            cpu_time().saturating_sub(cpu),
        );
    }
    drop(server);
    table.print();
    app.shutdown();
    if a.keep {
        println!("\ndata directory kept: {}", dir.display());
    } else if config.data_dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}
