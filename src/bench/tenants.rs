//! `enclave bench tenants --workspaces N`: creates N workspaces with a few rows each, then
//! reports creation rate, cold and warm open latency, RSS and file descriptors with K workspaces
//! held open, and server start time with N workspaces on disk.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use uuid::Uuid;

use super::report::{percentile, Table};
use crate::app::App;
use crate::config::{Config, ConfigArgs};
use crate::control::NewWorkspace;
use crate::workspace::{Handle, Registry};

const BENCH_TOKEN: &str = "bench-operator-token-0123456789";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Number of workspaces to create.
    #[arg(long, default_value_t = 1000)]
    pub workspaces: usize,
    /// Workspaces held open at once for the RSS and fd measurement (default: min(1000, N)).
    #[arg(long)]
    pub hold: Option<usize>,
    /// Workspaces opened for the cold and warm open latency (default: min(1000, N)).
    #[arg(long)]
    pub sample: Option<usize>,
    /// Documents (and chunks) written into each workspace.
    #[arg(long, default_value_t = 3)]
    pub rows: usize,
    /// Threads that create workspaces.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Keep the benchmark's data directory instead of removing it.
    #[arg(long)]
    pub keep: bool,
    /// `--max-open-workspaces` of the server started for the start time and the opens
    /// through HTTP.
    #[arg(long, default_value_t = 256)]
    pub cache: usize,
    /// Load each workspace like the issue-16 corpus instead of raw rows: this many documents
    /// of `--words` words, one chunk each, with user-provided vectors of `--dim` dimensions,
    /// through `Knowledge::add_document` and the job scheduler (the API's path).
    #[arg(long, default_value_t = 0)]
    pub docs: usize,
    /// Words per document of `--docs`.
    #[arg(long, default_value_t = 80)]
    pub words: usize,
    /// Dimension of the user-provided vectors of `--docs`.
    #[arg(long, default_value_t = 256)]
    pub dim: usize,
    /// With `--docs`: run the jobs after every this many documents (1: as one HTTP request per
    /// document with `?wait=true` does; each is its own index commit).
    #[arg(long, default_value_t = 1)]
    pub jobs_every: usize,
}

pub fn run(a: Args, config: &ConfigArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.workspaces > 0, "--workspaces must be at least 1");
    super::in_empty_data_dir(config, "tenants", a.keep, |dir| bench(&a, dir))
}

fn bench(a: &Args, data_dir: &Path) -> anyhow::Result<()> {
    let n = a.workspaces;
    let hold = a.hold.unwrap_or(n.min(1000)).min(n);
    let sample = a.sample.unwrap_or(n.min(1000)).min(n);
    crate::server::raise_fd_limit();
    println!(
        "enclave bench tenants: {n} workspaces, {} rows each, data in {}",
        a.rows,
        data_dir.display()
    );

    // 1. Creation.
    let mut config = Config::for_data_dir(data_dir);
    config.admin_token = Some(BENCH_TOKEN.into());
    config.max_open_workspaces = 64;
    let (app, _) = App::open(config)?;
    let org = super::unlimited_org(&app, "Bench")?;
    let org_access = app.identity().operator_org(&org.slug)?;
    let threads = a.threads.max(1);
    let started = Instant::now();
    let ids: Vec<Uuid> = parallel(n, threads, |i| {
        let new = NewWorkspace {
            name: format!("Workspace {i}"),
            slug: Some(format!("ws-{i}")),
            settings: None,
        };
        Ok(app.tenancy().create_workspace(&org_access, new)?.id)
    })?;
    let create_secs = started.elapsed().as_secs_f64();
    println!("  created {n} workspaces in {create_secs:.1} s");
    let started = Instant::now();
    if a.docs > 0 {
        parallel(n, threads, |i| load_corpus(&app, ids[i], i as u64, a))?;
    } else {
        parallel(n, threads, |i| seed(&app.registry().get(ids[i])?, a.rows))?;
    }
    let seed_secs = started.elapsed().as_secs_f64();
    println!("  seeded them in {seed_secs:.1} s");
    app.shutdown();
    drop(app);
    let disk = Footprint::of_workspaces(data_dir, &ids)?;

    // 2. Cold and warm opens, through a registry of our own.
    let picks: Vec<Uuid> = spread(&ids, sample);
    let registry = Registry::new(data_dir, sample.max(1) + 1, Duration::from_secs(30));
    let mut dropped_cache = true;
    let mut cold = Vec::with_capacity(picks.len());
    for id in &picks {
        dropped_cache &= evict_from_page_cache(&crate::workspace::dir_of(data_dir, *id));
        cold.push(timed_open(&registry, *id)?);
        registry.remove(*id);
    }
    drop(registry);
    // A registry of its own: `remove` left tombstones in the first one.
    let registry = Registry::new(data_dir, sample.max(1) + 1, Duration::from_secs(30));
    let mut warm = Vec::with_capacity(picks.len());
    for id in &picks {
        warm.push(timed_open(&registry, *id)?);
        registry.remove(*id);
    }
    drop(registry);

    // 3. RSS and fds with `hold` workspaces open.
    trim_heap();
    let (rss0, fds0, mem0) = (rss_parts(), open_fds(), sqlite_heap());
    let registry = Registry::new(data_dir, hold.max(1), Duration::from_secs(30));
    let mut held: Vec<Handle> = Vec::with_capacity(hold);
    for id in spread(&ids, hold) {
        let h = registry.get(id)?;
        touch(&h)?;
        held.push(h);
    }
    let (rss1, fds1, mem1) = (rss_parts(), open_fds(), sqlite_heap());
    // Reads of one hot store from 8 threads: through its one connection, then through
    // `Workspace::read` (its connection when free, else a read-only one).
    let hot = held.first().map(|h| -> anyhow::Result<(f64, f64)> {
        Ok((reads_per_sec(h, 8, false)?, reads_per_sec(h, 8, true)?))
    });
    let hot = hot.transpose()?;
    drop(held);
    drop(registry);
    trim_heap();
    let rss2 = rss_parts();

    // 4. Server start time with N workspaces on disk, its memory once started, and cold opens
    // through HTTP (the first requests of the first start: every workspace asked is opened).
    let mut starts = Vec::new();
    let mut served: Option<Served> = None;
    for round in 0..5 {
        let (ms, mut child, addr) = server_start(data_dir, a.cache)?;
        starts.push(ms);
        if round == 0 {
            let pid = child.id();
            let rss = (
                super::peer::status_kib(pid, "VmRSS"),
                super::peer::status_kib(pid, "RssAnon"),
            );
            let measured = http_opens(&addr, &ids, sample);
            let rss_after = super::peer::status_kib(pid, "VmRSS");
            stop_child(&mut child);
            let (cold_get, warm_get, cold_search, warm_search) = measured?;
            served = Some(Served {
                rss_kib: rss.0,
                anon_kib: rss.1,
                rss_after_kib: rss_after,
                cold_get,
                warm_get,
                cold_search,
                warm_search,
            });
        } else {
            stop_child(&mut child);
        }
    }

    let ms = |v: f64| format!("{v:.2} ms");
    let per_ws = |a: u64, b: u64| a.saturating_sub(b) as f64 / hold.max(1) as f64;
    let per_ws_rss = per_ws(rss1.total(), rss0.total());
    let per_ws_fds = (fds1.saturating_sub(fds0)) as f64 / hold.max(1) as f64;
    let mut t = Table::new(&["measure", "value", "target"]);
    t.row(&["workspaces on disk".into(), n.to_string(), String::new()]);
    t.row(&[
        "creation rate (empty store + record)".into(),
        format!("{:.0} workspaces/s", n as f64 / create_secs),
        String::new(),
    ]);
    let seeded = if a.docs > 0 {
        format!(
            "loading rate ({} documents x {} words, {}-dim vectors, jobs every {})",
            a.docs, a.words, a.dim, a.jobs_every
        )
    } else {
        format!("seeding rate ({} rows indexed + committed)", a.rows)
    };
    t.row(&[
        seeded,
        format!("{:.0} workspaces/s", n as f64 / seed_secs),
        String::new(),
    ]);
    disk.rows(&mut t, n);
    let cold_label = if dropped_cache {
        "cold open p50 (page cache dropped)"
    } else {
        "cold open p50 (page cache NOT dropped)"
    };
    t.row(&[
        cold_label.into(),
        ms(percentile(&mut cold, 50.0)),
        String::new(),
    ]);
    t.row(&[
        "cold open p99".into(),
        ms(percentile(&mut cold, 99.0)),
        "< 5 ms".into(),
    ]);
    t.row(&[
        "warm open p50".into(),
        ms(percentile(&mut warm, 50.0)),
        String::new(),
    ]);
    t.row(&[
        "warm open p99".into(),
        ms(percentile(&mut warm, 99.0)),
        String::new(),
    ]);
    t.row(&[
        format!("RSS with {hold} open (anonymous / file-mapped)"),
        format!(
            "{:.1} MiB ({:.1} / {:.1})",
            rss1.total() as f64 / 1024.0,
            rss1.anon as f64 / 1024.0,
            rss1.file as f64 / 1024.0
        ),
        if hold == 1000 {
            "anonymous <= 200 MiB".into()
        } else {
            String::new()
        },
    ]);
    t.row(&[
        "RSS per open workspace (anonymous / file-mapped)".into(),
        format!(
            "{per_ws_rss:.0} KiB ({:.0} / {:.0})",
            per_ws(rss1.anon, rss0.anon),
            per_ws(rss1.file, rss0.file)
        ),
        String::new(),
    ]);
    t.row(&[
        "SQLite heap per open workspace (page cache, schema, statements)".into(),
        format!("{:.0} KiB", per_ws(mem1, mem0) / 1024.0),
        format!(
            "page cache <= {} KiB per connection",
            crate::workspace::CACHE_KIB
        ),
    ]);
    t.row(&[
        "RSS after closing all (trimmed; anonymous / file-mapped)".into(),
        format!(
            "{:.1} MiB ({:.1} / {:.1})",
            rss2.total() as f64 / 1024.0,
            rss2.anon as f64 / 1024.0,
            rss2.file as f64 / 1024.0
        ),
        String::new(),
    ]);
    if let Some((serial, pooled)) = hot {
        t.row(&[
            "reads of one store, 8 threads: one connection / read pool".into(),
            format!("{serial:.0} / {pooled:.0} reads/s"),
            "pool scales with cores".into(),
        ]);
    }
    t.row(&[
        format!("open fds with {hold} open"),
        format!("{fds1} ({fds0} before)"),
        String::new(),
    ]);
    t.row(&[
        "fds per open workspace".into(),
        format!("{per_ws_fds:.2}"),
        "<= 3 + constant".into(),
    ]);
    t.row(&[
        "server start p50 (to /healthz)".into(),
        ms(percentile(&mut starts, 50.0)),
        "< 1 s".into(),
    ]);
    t.row(&[
        "server start max".into(),
        ms(starts.iter().cloned().fold(0.0, f64::max)),
        String::new(),
    ]);
    if let Some(mut sv) = served {
        t.row(&[
            "server RSS after start (anonymous)".into(),
            format!(
                "{:.1} MiB ({:.1})",
                sv.rss_kib as f64 / 1024.0,
                sv.anon_kib as f64 / 1024.0
            ),
            "< 50 MiB".into(),
        ]);
        let http = |t: &mut Table, label: &str, v: &mut Vec<f64>, target: &str| {
            t.row(&[
                format!("{label} p50 / p99 through HTTP"),
                format!("{} / {}", ms(percentile(v, 50.0)), ms(percentile(v, 99.0))),
                target.into(),
            ]);
        };
        http(
            &mut t,
            &format!(
                "cold GET /v1/workspaces/{{ws}} ({} distinct, cache {})",
                sv.cold_get.len(),
                a.cache
            ),
            &mut sv.cold_get,
            "p99 < 5 ms",
        );
        http(
            &mut t,
            "warm GET /v1/workspaces/{ws} (the same again)",
            &mut sv.warm_get,
            "",
        );
        http(
            &mut t,
            &format!("cold full-text search ({} distinct)", sv.cold_search.len()),
            &mut sv.cold_search,
            "",
        );
        http(
            &mut t,
            "warm full-text search (the same again)",
            &mut sv.warm_search,
            "",
        );
        t.row(&[
            "server RSS after the HTTP opens".into(),
            format!("{:.1} MiB", sv.rss_after_kib as f64 / 1024.0),
            String::new(),
        ]);
    }
    println!();
    t.print();
    println!("\nopen = registry open (SQLite + migrations check + Tantivy index + reader) and one first read of each.");
    Ok(())
}

/// Runs `job(i)` for every `i < n` on `threads` threads; returns what each call produced.
fn parallel<T: Send>(
    n: usize,
    threads: usize,
    job: impl Fn(usize) -> anyhow::Result<T> + Sync,
) -> anyhow::Result<Vec<T>> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<anyhow::Result<Vec<(usize, T)>>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= n {
                            return Ok(mine);
                        }
                        mine.push((i, job(i)?));
                        if i > 0 && i.is_multiple_of(1000) {
                            eprintln!("  ... {i}");
                        }
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("worker thread panicked")))
            })
            .collect()
    });
    let mut all = Vec::with_capacity(n);
    for r in results {
        all.extend(r?);
    }
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, t)| t).collect())
}

/// Loads workspace `ws` like the issue-16 corpus: a user-provided embedder of `a.dim`
/// dimensions, then `a.docs` one-chunk documents of `a.words` words with their vectors, through
/// `Knowledge::add_document`, running the jobs every `a.jobs_every` documents.
fn load_corpus(app: &App, ws: Uuid, seed: u64, a: &Args) -> anyhow::Result<()> {
    use rand::{Rng, SeedableRng};
    use serde_json::json;
    const WORDS: &[&str] = &[
        "tenant", "index", "vector", "search", "store", "query", "shard", "merge", "segment",
        "commit", "page", "cache", "open", "close", "write", "read", "token", "chunk", "model",
        "embed", "score", "rank", "filter", "field", "term", "phrase", "batch", "job", "queue",
        "disk", "memory", "thread", "lock", "file", "blob", "table", "row", "column", "schema",
        "latency",
    ];
    let ctx = app.identity().operator_workspace(ws)?;
    app.knowledge().set_embedder(
        &ctx,
        crate::knowledge::EmbedderConfig::UserProvided { dimension: a.dim },
    )?;
    let permit = app.knowledge().ingest_permit(&ctx)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for d in 0..a.docs {
        let text: Vec<String> = (0..a.words)
            .map(|w| {
                let word = WORDS[rng.random_range(0..WORDS.len())];
                format!("{word}{}", (w * 7 + d) % 50)
            })
            .collect();
        let mut v: Vec<f32> = (0..a.dim).map(|_| rng.random_range(-1.0..1.0)).collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
        v.iter_mut().for_each(|x| *x /= norm);
        app.knowledge().add_document(
            &permit,
            crate::knowledge::service::DocumentInput {
                bytes: text.join(" ").into_bytes(),
                title: Some(format!("Document {d}")),
                metadata: Some(json!({"n": d})),
                embedding: Some(v),
                is_text: true,
                ..Default::default()
            },
        )?;
        if (d + 1) % a.jobs_every.max(1) == 0 || d + 1 == a.docs {
            app.knowledge().run_jobs_until_idle(|| {});
        }
    }
    Ok(())
}

/// Files and bytes of the workspaces' folders after loading, by kind.
#[derive(Default)]
struct Footprint {
    files: u64,
    max_files: u64,
    /// Apparent sizes (file lengths).
    bytes: u64,
    /// Allocated blocks (what `du` counts).
    allocated: u64,
    by_kind: std::collections::BTreeMap<&'static str, (u64, u64)>,
}

impl Footprint {
    fn of_workspaces(data_dir: &Path, ids: &[Uuid]) -> anyhow::Result<Footprint> {
        use std::os::unix::fs::MetadataExt;
        let mut fp = Footprint::default();
        for id in ids {
            let root = crate::workspace::dir_of(data_dir, *id);
            let mut files = 0;
            let mut stack = vec![root.clone()];
            while let Some(d) = stack.pop() {
                for e in std::fs::read_dir(&d)? {
                    let e = e?;
                    let m = e.metadata()?;
                    if m.is_dir() {
                        stack.push(e.path());
                        continue;
                    }
                    files += 1;
                    fp.bytes += m.len();
                    fp.allocated += m.blocks() * 512;
                    let rel = e.path();
                    let rel = rel.strip_prefix(&root).unwrap_or(&rel);
                    let name = rel.to_string_lossy();
                    let kind = if name.starts_with("index") {
                        "index/"
                    } else if name.starts_with("blobs") {
                        "blobs/"
                    } else if name.ends_with("-wal") {
                        "workspace.db-wal"
                    } else if name.ends_with("-shm") {
                        "workspace.db-shm"
                    } else if name == crate::workspace::DB_FILE {
                        "workspace.db"
                    } else {
                        "other"
                    };
                    let k = fp.by_kind.entry(kind).or_default();
                    k.0 += 1;
                    k.1 += m.len();
                }
            }
            fp.files += files;
            fp.max_files = fp.max_files.max(files);
        }
        Ok(fp)
    }

    fn rows(&self, t: &mut Table, n: usize) {
        let kib = |b: u64| format!("{:.1} KiB", b as f64 / 1024.0 / n.max(1) as f64);
        t.row(&[
            "disk per workspace (apparent / allocated)".into(),
            format!("{} / {}", kib(self.bytes), kib(self.allocated)),
            "<= 340 KiB".into(),
        ]);
        t.row(&[
            "files per workspace (mean / max)".into(),
            format!(
                "{:.1} / {}",
                self.files as f64 / n.max(1) as f64,
                self.max_files
            ),
            "<= 12".into(),
        ]);
        for (kind, (files, bytes)) in &self.by_kind {
            t.row(&[
                format!("  {kind} per workspace"),
                format!(
                    "{:.1} files, {}",
                    *files as f64 / n.max(1) as f64,
                    kib(*bytes)
                ),
                String::new(),
            ]);
        }
    }
}

/// Writes `rows` documents with one chunk each, indexed in Tantivy and committed.
fn seed(ws: &Handle, rows: usize) -> anyhow::Result<()> {
    let now = crate::db::now();
    let mut chunk_ids = Vec::with_capacity(rows);
    {
        let mut conn = ws.conn();
        let tx = conn.transaction()?;
        for r in 0..rows {
            let doc = Uuid::now_v7().to_string();
            tx.execute(
                "INSERT INTO documents (id, title, mime_type, content_hash, byte_size, status, chunk_count, created_at, updated_at)
                 VALUES (?1, ?2, 'text/plain', ?3, 64, 'indexed', 1, ?4, ?4)",
                rusqlite::params![doc, format!("Document {r}"), format!("{:064x}", r), now],
            )?;
            tx.execute(
                "INSERT INTO chunks (document_id, ordinal, text) VALUES (?1, 0, ?2)",
                rusqlite::params![doc, format!("benchmark text number {r} about tenants")],
            )?;
            chunk_ids.push((tx.last_insert_rowid() as u64, doc));
        }
        tx.commit()?;
    }
    for (chunk, doc) in &chunk_ids {
        ws.index_chunk(*chunk, doc, "Document", "", "benchmark text about tenants")?;
    }
    ws.close_writer_if_idle(Duration::ZERO)?;
    Ok(())
}

/// `k` ids spread evenly over `ids`.
fn spread(ids: &[Uuid], k: usize) -> Vec<Uuid> {
    if k == 0 || ids.is_empty() {
        return Vec::new();
    }
    let step = ids.len() as f64 / k as f64;
    (0..k)
        .map(|i| ids[((i as f64 * step) as usize).min(ids.len() - 1)])
        .collect()
}

/// Milliseconds to open a workspace through the registry and read from it once.
fn timed_open(registry: &Registry, id: Uuid) -> anyhow::Result<f64> {
    let t = Instant::now();
    let h = registry.get(id)?;
    let docs: i64 = h
        .conn()
        .query_row("SELECT count(*) FROM documents", [], |r| r.get(0))?;
    let indexed = h.indexed_chunks();
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    anyhow::ensure!(
        docs >= 0 && indexed as i64 >= 0,
        "unreadable workspace {id}"
    );
    Ok(ms)
}

/// Asks the kernel to drop the cached pages of every file under `dir` (clean pages only, so
/// each file is synced first). Returns whether every file accepted the advice.
fn evict_from_page_cache(dir: &Path) -> bool {
    let mut ok = true;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            return false;
        };
        for e in entries.flatten() {
            let p: PathBuf = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let Ok(f) = std::fs::File::open(&p) else {
                ok = false;
                continue;
            };
            let _ = f.sync_data();
            use std::os::fd::AsRawFd;
            // SAFETY: a valid open descriptor; the advice has no memory-safety effect.
            let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
            ok &= rc == 0;
        }
    }
    ok
}

fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Resident memory of this process by kind, KiB (`/proc/self/status`).
#[derive(Clone, Copy, Default)]
struct Rss {
    /// Heap and other private memory (`RssAnon`).
    anon: u64,
    /// Pages of mapped files (`RssFile`: the memory-mapped databases and index files, the
    /// binary), shared with the OS page cache and reclaimable.
    file: u64,
    /// Shared memory (`RssShmem`: SQLite's `-shm` files are mapped, and counted here).
    shmem: u64,
}

impl Rss {
    fn total(&self) -> u64 {
        self.anon + self.file + self.shmem
    }
}

fn rss_parts() -> Rss {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Rss {
        anon: field("RssAnon:"),
        file: field("RssFile:"),
        shmem: field("RssShmem:"),
    }
}

/// Bytes SQLite holds on the heap (page caches, schemas, prepared statements) in this process.
fn sqlite_heap() -> u64 {
    // SAFETY: a plain read of SQLite's memory statistics.
    let used = unsafe { rusqlite::ffi::sqlite3_memory_used() };
    u64::try_from(used).unwrap_or(0)
}

/// Reads per second of `threads` threads for 1 s on one store, each read what a search's
/// hydration and exact vector search do (a KNN over the active space, then 10 chunks' text),
/// through the store's connection (`pooled` false) or [`crate::workspace::Workspace::read`].
fn reads_per_sec(h: &Handle, threads: usize, pooled: bool) -> anyhow::Result<f64> {
    let space = crate::knowledge::vectors::active(&h.conn())?;
    let query: Vec<f32> = (0..space.dim).map(|i| (i % 7) as f32 / 7.0 - 0.4).collect();
    let read = |conn: &rusqlite::Connection| -> anyhow::Result<()> {
        let ids: Vec<i64> = crate::knowledge::vectors::knn(conn, &space, &query, 10)?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        let json = serde_json::to_string(&ids)?;
        let _: i64 = conn
            .prepare_cached(
                "SELECT count(length(c.text)) FROM json_each(?1) j CROSS JOIN chunks c ON c.id = j.value",
            )?
            .query_row([json], |r| r.get(0))?;
        Ok(())
    };
    let stop = Instant::now() + Duration::from_secs(1);
    let done = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| -> anyhow::Result<()> {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> anyhow::Result<()> {
                    while Instant::now() < stop {
                        if pooled {
                            read(&h.read())?;
                        } else {
                            read(&h.conn())?;
                        }
                        done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("reader thread panicked")))?;
        }
        Ok(())
    })?;
    Ok(done.load(std::sync::atomic::Ordering::Relaxed) as f64)
}

/// What a search touches in an open store: its counts, its vectors, its full-text reader.
fn touch(h: &Handle) -> anyhow::Result<()> {
    h.stats()?;
    let conn = h.read();
    let space = crate::knowledge::vectors::active(&conn)?;
    crate::knowledge::vectors::count(&conn, &space)?;
    let _: i64 = conn.query_row("SELECT sum(length(text)) FROM chunks", [], |r| {
        Ok(r.get::<_, Option<i64>>(0)?.unwrap_or(0))
    })?;
    drop(conn);
    let searcher = h.reader().searcher();
    let _ = searcher.search(&tantivy::query::AllQuery, &tantivy::collector::Count)?;
    Ok(())
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// What the first server start measured through HTTP.
struct Served {
    rss_kib: u64,
    anon_kib: u64,
    rss_after_kib: u64,
    cold_get: Vec<f64>,
    warm_get: Vec<f64>,
    cold_search: Vec<f64>,
    warm_search: Vec<f64>,
}

/// Latencies (ms) through a running server of: `GET /v1/workspaces/{ws}` of `sample` distinct
/// workspaces not yet open (a cold open each), each followed at once by the same request again
/// (warm); then a full-text search of `sample` other workspaces, cold then warm.
#[allow(clippy::type_complexity)]
fn http_opens(
    addr: &str,
    ids: &[Uuid],
    sample: usize,
) -> anyhow::Result<(Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>)> {
    let mut http = super::peer::Http::new(addr);
    let mut timed = |method: &str, path: &str, body: Option<&[u8]>| -> anyhow::Result<f64> {
        let t = Instant::now();
        let (status, out) = http.call(method, path, Some(BENCH_TOKEN), body)?;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        anyhow::ensure!(
            status == 200,
            "{method} {path}: {status} {}",
            String::from_utf8_lossy(&out)
        );
        Ok(ms)
    };
    let half = ids.len() / 2;
    let (gets, searches) = if half > 0 {
        (spread(&ids[..half], sample), spread(&ids[half..], sample))
    } else {
        (ids.to_vec(), Vec::new())
    };
    let (mut cold_get, mut warm_get) = (Vec::new(), Vec::new());
    for id in &gets {
        let path = format!("/v1/workspaces/{id}");
        cold_get.push(timed("GET", &path, None)?);
        warm_get.push(timed("GET", &path, None)?);
    }
    let body = br#"{"query": "benchmark tenants", "mode": "fulltext", "limit": 10}"#;
    let (mut cold_search, mut warm_search) = (Vec::new(), Vec::new());
    for id in &searches {
        let path = format!("/v1/workspaces/{id}/search");
        cold_search.push(timed("POST", &path, Some(body))?);
        warm_search.push(timed("POST", &path, Some(body))?);
    }
    Ok((cold_get, warm_get, cold_search, warm_search))
}

fn stop_child(child: &mut std::process::Child) {
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let _ = child.wait();
}

/// Spawns `enclave serve` on `data_dir` (at most `cache` workspaces open); returns the
/// milliseconds until `/healthz` answered 200, the running child and its address.
fn server_start(
    data_dir: &Path,
    cache: usize,
) -> anyhow::Result<(f64, std::process::Child, String)> {
    let exe = std::env::current_exe().context("locating the enclave binary")?;
    let t = Instant::now();
    let mut child = Command::new(exe)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "text",
            "--data-dir",
        ])
        .arg(data_dir)
        .env("ENCLAVE_ADMIN_TOKEN", BENCH_TOKEN)
        .env("ENCLAVE_MAX_OPEN_WORKSPACES", cache.to_string())
        .env("ENCLAVE_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawning enclave serve")?;
    let stderr = child.stderr.take().context("server stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let Some(Ok(line)) = lines.next() else {
            let _ = child.kill();
            anyhow::bail!("the server exited before listening");
        };
        if let Some(rest) = line.split("address=").nth(1) {
            break rest.split_whitespace().next().unwrap_or("").to_string();
        }
    };
    let ms = loop {
        if healthz(&addr) {
            break t.elapsed().as_secs_f64() * 1000.0;
        }
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(30),
            "server did not become healthy"
        );
        std::thread::sleep(Duration::from_micros(200));
    };
    // The log pipe is drained (and closed with the child), so the server never blocks on it.
    std::thread::spawn(move || for _ in lines {});
    Ok((ms, child, addr))
}

fn healthz(addr: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.1 200")
}
