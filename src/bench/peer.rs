//! `enclave bench peer`: Enclave against the shared-PostgreSQL design on the same workload, in
//! one run. The corpus is the peer benchmark's (`bench/peer/synth.py`, reimplemented here with
//! the same distribution): T tenants × C chunks of 70–90 Zipf words from a 20,000-word
//! vocabulary, 256-dimension unit vectors. Enclave gets one workspace per tenant with the
//! `user-provided` embedder and one document per chunk (carrying its vector), loaded through
//! HTTP (the batch route when the server has it); the peer gets the schema of
//! `bench/peer/schema.sql` (one `chunks` table, RLS on `tenant_id`, GIN on a `tsvector`, HNSW on
//! the vector) loaded with `COPY`, when a PostgreSQL with pgvector is reachable
//! (`--pg-admin`/`--pg-app` or `PEER_ADMIN_DSN`/`PEER_APP_DSN`).
//!
//! Queries (random tenant, 3 distinct words of Zipf rank > 100 OR-ed, a random unit vector) run
//! through Enclave's HTTP API with the tenant's API key and through the peer's SQL as the RLS
//! role (`BEGIN; set_config('app.tenant_id'); query; COMMIT`). Each cell runs both sides back to
//! back after waiting for an idle machine, and records the CPU other programs used meanwhile.
//! Every returned row is checked against the tenant asked for.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use uuid::Uuid;

use super::report::{percentile, Table};
use crate::config::ConfigArgs;

const BENCH_TOKEN: &str = "bench-operator-token-0123456789";
/// Top-k of every query, candidates per leg of the peer's hybrid, the RRF constant.
const K: usize = 10;
const DEPTH: usize = 20;
const RRF_K: usize = 60;
const CHUNKS_PER_DOC: usize = 10;
/// The peer's schema (applied by the admin DSN before loading; psql's `\set` lines skipped).
const SCHEMA_SQL: &str = include_str!("../../bench/peer/schema.sql");

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Tenants (one Enclave workspace each).
    #[arg(short = 'T', long, default_value_t = 1000)]
    pub tenants: usize,
    /// Chunks per tenant (one Enclave document each).
    #[arg(short = 'C', long, default_value_t = 200)]
    pub chunks: usize,
    /// Queries per cell.
    #[arg(short = 'Q', long, default_value_t = 2000)]
    pub queries: usize,
    /// Concurrent clients of the throughput cells.
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// Open-workspace cache of the cold-tenant phase.
    #[arg(long, default_value_t = 256)]
    pub cache: usize,
    /// Vector dimension.
    #[arg(long, default_value_t = 256)]
    pub dim: usize,
    /// Corpus seed (queries use seed + 1).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Concurrent HTTP connections loading Enclave.
    #[arg(long, default_value_t = 4)]
    pub load_clients: usize,
    /// The peer's owner DSN (loads the schema); without it the peer is skipped.
    #[arg(long, env = "PEER_ADMIN_DSN")]
    pub pg_admin: Option<String>,
    /// The peer's RLS role DSN (queries).
    #[arg(long, env = "PEER_APP_DSN")]
    pub pg_app: Option<String>,
    /// Keep the peer's tables as they are when they already hold T × C chunks of this corpus.
    #[arg(long)]
    pub reuse_peer: bool,
    /// Before each cell, wait until the machine is less busy than this (percent).
    #[arg(long, default_value_t = 25.0)]
    pub wait_idle: f64,
    /// Give up waiting for an idle machine after this many seconds (and say so).
    #[arg(long, default_value_t = 30)]
    pub wait_idle_timeout: u64,
    /// Keep the data directory (printed).
    #[arg(long)]
    pub keep: bool,
}

// ---------------------------------------------------------------------------------------------
// The corpus.

struct Corpus {
    vocab: Vec<String>,
    cdf: Vec<f64>,
    tenants: usize,
    chunks: usize,
    dim: usize,
    seed: u64,
}

struct TenantData {
    /// Chunk texts.
    texts: Vec<String>,
    /// One title per document of `CHUNKS_PER_DOC` chunks.
    titles: Vec<String>,
    vectors: Vec<Vec<f32>>,
}

fn gaussian(rng: &mut StdRng) -> f32 {
    // Box–Muller.
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

fn unit_vector(rng: &mut StdRng, dim: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..dim).map(|_| gaussian(rng)).collect();
    let n = v
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::MIN_POSITIVE);
    v.iter_mut().for_each(|x| *x /= n);
    v
}

impl Corpus {
    fn new(a: &Args) -> Corpus {
        const VOCAB: usize = 20_000;
        let mut rng = StdRng::seed_from_u64(a.seed);
        let mut vocab = Vec::with_capacity(VOCAB);
        let mut seen = std::collections::HashSet::new();
        while vocab.len() < VOCAB {
            let len = rng.random_range(3..=10);
            let w: String = (0..len)
                .map(|_| (b'a' + rng.random_range(0..26u8)) as char)
                .collect();
            if seen.insert(w.clone()) {
                vocab.push(w);
            }
        }
        let total: f64 = (1..=VOCAB).map(|r| 1.0 / r as f64).sum();
        let mut acc = 0.0;
        let cdf = (1..=VOCAB)
            .map(|r| {
                acc += 1.0 / r as f64 / total;
                acc
            })
            .collect();
        Corpus {
            vocab,
            cdf,
            tenants: a.tenants,
            chunks: a.chunks,
            dim: a.dim,
            seed: a.seed,
        }
    }

    fn rank(&self, rng: &mut StdRng) -> usize {
        let x: f64 = rng.random();
        self.cdf
            .partition_point(|c| *c <= x)
            .min(self.vocab.len() - 1)
    }

    fn words(&self, rng: &mut StdRng, n: usize) -> String {
        let mut s = String::with_capacity(n * 7);
        for i in 0..n {
            if i > 0 {
                s.push(' ');
            }
            s.push_str(&self.vocab[self.rank(rng)]);
        }
        s
    }

    fn docs_per_tenant(&self) -> usize {
        self.chunks.div_ceil(CHUNKS_PER_DOC)
    }

    /// Tenant `t`'s chunks, generated from its own stream (so tenants can be made in parallel,
    /// and twice, identically).
    fn tenant(&self, t: usize) -> TenantData {
        let mut rng = StdRng::seed_from_u64(self.seed.wrapping_mul(1_000_003) ^ t as u64);
        let texts = (0..self.chunks)
            .map(|_| {
                let n = rng.random_range(70..=90);
                self.words(&mut rng, n)
            })
            .collect();
        let titles = (0..self.docs_per_tenant())
            .map(|_| self.words(&mut rng, 6))
            .collect();
        let vectors = (0..self.chunks)
            .map(|_| unit_vector(&mut rng, self.dim))
            .collect();
        TenantData {
            texts,
            titles,
            vectors,
        }
    }

    /// The peer's chunk id of tenant `t`'s chunk `k` (and Enclave's `external_id`).
    fn chunk_id(&self, t: usize, k: usize) -> i64 {
        (t * self.chunks + k + 1) as i64
    }

    fn tenant_of_chunk(&self, id: i64) -> usize {
        (id.max(1) as usize - 1) / self.chunks.max(1)
    }
}

struct Query {
    tenant: usize,
    words: Vec<String>,
    vector: Vec<f32>,
}

fn make_queries(c: &Corpus, n: usize, seed: u64) -> Vec<Query> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let tenant = rng.random_range(0..c.tenants);
            let vector = unit_vector(&mut rng, c.dim);
            let mut words: Vec<String> = Vec::new();
            while words.len() < 3 {
                let r = c.rank(&mut rng);
                if r >= 100 && !words.contains(&c.vocab[r]) {
                    words.push(c.vocab[r].clone());
                }
            }
            Query {
                tenant,
                words,
                vector,
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// A minimal HTTP/1.1 keep-alive client (the bench must not measure a client library).

pub(super) struct Http {
    addr: String,
    stream: Option<BufReader<TcpStream>>,
}

impl Http {
    pub(super) fn new(addr: &str) -> Http {
        Http {
            addr: addr.to_string(),
            stream: None,
        }
    }

    fn connect(&mut self) -> anyhow::Result<&mut BufReader<TcpStream>> {
        if self.stream.is_none() {
            let s = TcpStream::connect(&self.addr)
                .with_context(|| format!("connecting to {}", self.addr))?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(Duration::from_secs(120)))?;
            self.stream = Some(BufReader::with_capacity(64 * 1024, s));
        }
        self.stream.as_mut().context("no connection")
    }

    /// One request; `(status, body)`. Retries once on a fresh connection when the kept-alive
    /// one was closed by the server.
    pub(super) fn call(
        &mut self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: Option<&[u8]>,
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        match self.try_call(method, path, bearer, body) {
            Ok(r) => Ok(r),
            Err(_) => {
                self.stream = None;
                self.try_call(method, path, bearer, body)
            }
        }
    }

    fn try_call(
        &mut self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: Option<&[u8]>,
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: bench\r\n");
        if let Some(b) = bearer {
            head.push_str(&format!("Authorization: Bearer {b}\r\n"));
        }
        if let Some(b) = body {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            ));
        }
        head.push_str("\r\n");
        let r = self.connect()?;
        let mut msg = head.into_bytes();
        msg.extend_from_slice(body.unwrap_or_default());
        r.get_mut().write_all(&msg)?;
        let mut line = String::new();
        r.read_line(&mut line)?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line {line:?}"))?;
        let (mut length, mut chunked, mut close) = (None, false, false);
        loop {
            line.clear();
            if r.read_line(&mut line)? == 0 {
                bail!("connection closed in headers");
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
                match k.as_str() {
                    "content-length" => length = v.parse::<usize>().ok(),
                    "transfer-encoding" => chunked = v.eq_ignore_ascii_case("chunked"),
                    "connection" => close = v.eq_ignore_ascii_case("close"),
                    _ => {}
                }
            }
        }
        let mut out = Vec::new();
        if chunked {
            loop {
                line.clear();
                r.read_line(&mut line)?;
                let n = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                    .context("bad chunk size")?;
                if n == 0 {
                    line.clear();
                    r.read_line(&mut line)?;
                    break;
                }
                let at = out.len();
                out.resize(at + n, 0);
                r.read_exact(&mut out[at..])?;
                let mut crlf = [0u8; 2];
                r.read_exact(&mut crlf)?;
            }
        } else if let Some(n) = length {
            out.resize(n, 0);
            r.read_exact(&mut out)?;
        } else {
            r.read_to_end(&mut out)?;
            close = true;
        }
        if close {
            self.stream = None;
        }
        Ok((status, out))
    }

    fn json(
        &mut self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: &Value,
    ) -> anyhow::Result<Value> {
        let bytes = serde_json::to_vec(body)?;
        let (status, out) = self.call(method, path, bearer, Some(&bytes))?;
        if !(200..300).contains(&status) {
            bail!(
                "{method} {path}: {status} {}",
                String::from_utf8_lossy(&out)
            );
        }
        Ok(serde_json::from_slice(&out).unwrap_or(Value::Null))
    }

    fn get_json(&mut self, path: &str, bearer: Option<&str>) -> anyhow::Result<Value> {
        let (status, out) = self.call("GET", path, bearer, None)?;
        if !(200..300).contains(&status) {
            bail!("GET {path}: {status} {}", String::from_utf8_lossy(&out));
        }
        Ok(serde_json::from_slice(&out)?)
    }
}

// ---------------------------------------------------------------------------------------------
// /proc accounting.

/// utime + stime of a process, in clock ticks (0 when it is gone).
fn proc_ticks(pid: u32) -> u64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the command (which may hold spaces) start after the last ')'.
    let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // state is f[0]; utime is field 14 of the line → f[11], stime f[12].
    get(11) + get(12)
}

fn self_ticks() -> u64 {
    proc_ticks(std::process::id())
}

/// (busy, total) ticks of the whole machine.
fn machine_ticks() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(cpu) = s.lines().next() else {
        return (0, 0);
    };
    let v: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}

fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no memory effects.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Waits until the machine is under `pct` busy over half a second, at most `timeout`; returns
/// the busy percentage last seen.
fn wait_idle(pct: f64, timeout: Duration) -> f64 {
    if pct >= 100.0 {
        return 0.0;
    }
    let start = Instant::now();
    loop {
        let (b0, t0) = machine_ticks();
        std::thread::sleep(Duration::from_millis(500));
        let (b1, t1) = machine_ticks();
        let busy = 100.0 * (b1 - b0) as f64 / (t1 - t0).max(1) as f64;
        if busy <= pct || start.elapsed() >= timeout {
            return busy;
        }
    }
}

pub(super) fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim_start_matches(':').split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// (bytes allocated on disk, files) under `dir`.
fn disk_usage(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let (mut bytes, mut files) = (0, 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                bytes += m.blocks() * 512;
                files += 1;
            }
        }
    }
    (bytes, files)
}

// ---------------------------------------------------------------------------------------------
// The Enclave side.

struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(data_dir: &Path, max_open: usize) -> anyhow::Result<Server> {
        let exe = std::env::current_exe().context("locating the enclave binary")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr = format!("127.0.0.1:{port}");
        let child = Command::new(exe)
            .args(["serve", "--listen", &addr, "--data-dir"])
            .arg(data_dir)
            .env("ENCLAVE_ADMIN_TOKEN", BENCH_TOKEN)
            .env("ENCLAVE_MAX_OPEN_WORKSPACES", max_open.to_string())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawning enclave serve")?;
        let mut s = Server { child, addr };
        let t = Instant::now();
        loop {
            if let Ok((200, _)) = Http::new(&s.addr).call("GET", "/healthz", None, None) {
                return Ok(s);
            }
            if let Ok(Some(st)) = s.child.try_wait() {
                bail!("the server exited ({st}) before answering /healthz");
            }
            if t.elapsed() > Duration::from_secs(60) {
                s.stop();
                bail!("the server did not become healthy within 60 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

struct Tenant {
    ws: Uuid,
    key: String,
}

struct LoadReport {
    secs: f64,
    route: &'static str,
}

/// Creates the org, the workspaces (user-provided embedder, one API key each) and loads every
/// tenant's chunks; waits until all are indexed.
fn load_enclave(
    addr: &str,
    c: &Corpus,
    clients: usize,
) -> anyhow::Result<(Vec<Tenant>, LoadReport)> {
    let started = Instant::now();
    let mut admin = Http::new(addr);
    let org = admin.json(
        "POST",
        "/v1/orgs",
        Some(BENCH_TOKEN),
        &json!({"name": "Peer bench", "plan": "enterprise"}),
    )?;
    let org_id = org
        .get("id")
        .and_then(Value::as_str)
        .context("org id")?
        .to_string();
    let batch_route = AtomicUsize::new(0); // 0 unknown, 1 batch, 2 single
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let results: Vec<anyhow::Result<Vec<(usize, Tenant)>>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..clients.max(1))
            .map(|_| {
                s.spawn(|| {
                    let mut http = Http::new(addr);
                    let mut mine = Vec::new();
                    loop {
                        let t = next.fetch_add(1, Ordering::Relaxed);
                        if t >= c.tenants {
                            return Ok(mine);
                        }
                        mine.push((t, load_tenant(&mut http, &org_id, c, t, &batch_route)?));
                        let d = done.fetch_add(1, Ordering::Relaxed) + 1;
                        if d.is_multiple_of(100) {
                            eprintln!(
                                "  enclave: {d}/{} tenants posted ({:.0} s)",
                                c.tenants,
                                started.elapsed().as_secs_f64()
                            );
                        }
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("loader thread panicked")))
            })
            .collect()
    });
    let mut tenants = Vec::with_capacity(c.tenants);
    for r in results {
        tenants.extend(r?);
    }
    tenants.sort_by_key(|(i, _)| *i);
    let tenants: Vec<Tenant> = tenants.into_iter().map(|(_, t)| t).collect();
    // Indexed: every workspace reports all its chunks.
    let deadline = Instant::now() + Duration::from_secs(3600);
    for t in &tenants {
        loop {
            let v = admin.get_json(&format!("/v1/workspaces/{}", t.ws), Some(BENCH_TOKEN))?;
            let chunks = v
                .pointer("/stats/chunks")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            if chunks as usize >= c.chunks {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "workspace {} never indexed",
                t.ws
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let route = if batch_route.load(Ordering::Relaxed) == 1 {
        "batch route"
    } else {
        "one request per document"
    };
    Ok((
        tenants,
        LoadReport {
            secs: started.elapsed().as_secs_f64(),
            route,
        },
    ))
}

/// One document of the load, serialized as it is typed: the vector as `f32`s (shortest
/// form, ~10 characters a number; a `serde_json::Value` would widen them to `f64`s of ~19).
#[derive(serde::Serialize)]
struct LoadDocument<'a> {
    title: &'a str,
    text: &'a str,
    external_id: String,
    embedding: &'a [f32],
}

fn document<'a>(c: &Corpus, d: &'a TenantData, t: usize, k: usize) -> LoadDocument<'a> {
    LoadDocument {
        title: &d.titles[k / CHUNKS_PER_DOC],
        text: &d.texts[k],
        external_id: c.chunk_id(t, k).to_string(),
        embedding: &d.vectors[k],
    }
}

fn load_tenant(
    http: &mut Http,
    org: &str,
    c: &Corpus,
    t: usize,
    batch_route: &AtomicUsize,
) -> anyhow::Result<Tenant> {
    let ws = http.json(
        "POST",
        &format!("/v1/orgs/{org}/workspaces"),
        Some(BENCH_TOKEN),
        &json!({"name": format!("tenant-{t:05}"), "slug": format!("tenant-{t:05}")}),
    )?;
    let ws: Uuid = ws
        .get("id")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .context("workspace id")?;
    http.json(
        "PUT",
        &format!("/v1/workspaces/{ws}/embedder"),
        Some(BENCH_TOKEN),
        &json!({"kind": "user-provided", "dimension": c.dim}),
    )?;
    let key = http.json(
        "POST",
        &format!("/v1/workspaces/{ws}/api-keys"),
        Some(BENCH_TOKEN),
        &json!({"name": "bench", "scopes": ["search", "ingest"]}),
    )?;
    let key = key
        .get("key")
        .or_else(|| key.get("secret"))
        .and_then(Value::as_str)
        .context("api key secret in the answer")?
        .to_string();
    let data = c.tenant(t);
    let docs: Vec<LoadDocument> = (0..c.chunks).map(|k| document(c, &data, t, k)).collect();
    if batch_route.load(Ordering::Relaxed) != 2 {
        let body = serde_json::to_vec(&docs)?;
        let (status, out) = http.call(
            "POST",
            &format!("/v1/workspaces/{ws}/documents/batch"),
            Some(&key),
            Some(&body),
        )?;
        match status {
            200..=299 => {
                batch_route.store(1, Ordering::Relaxed);
                return Ok(Tenant { ws, key });
            }
            404 | 405 => batch_route.store(2, Ordering::Relaxed),
            _ => bail!(
                "POST documents/batch: {status} {}",
                String::from_utf8_lossy(&out)
            ),
        }
    }
    for d in &docs {
        http.json(
            "POST",
            &format!("/v1/workspaces/{ws}/documents"),
            Some(&key),
            &serde_json::to_value(d)?,
        )?;
    }
    Ok(Tenant { ws, key })
}

// ---------------------------------------------------------------------------------------------
// The PostgreSQL side.

#[derive(Default)]
struct PeerLoad {
    copy_secs: f64,
    index_secs: f64,
    total_secs: f64,
}

fn pg_connect(dsn: &str) -> anyhow::Result<postgres::Client> {
    postgres::Client::connect(dsn, postgres::NoTls)
        .with_context(|| format!("connecting to PostgreSQL ({dsn})"))
}

/// The peer's table sizes; `None` when the tables are missing.
fn pg_chunk_count(admin: &mut postgres::Client) -> Option<i64> {
    admin
        .query_one("SELECT count(*) FROM chunks", &[])
        .ok()
        .map(|r| r.get(0))
}

fn escape_copy(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\t' => o.push_str("\\t"),
            '\r' => o.push_str("\\r"),
            c => o.push(c),
        }
    }
    o
}

fn vector_text(v: &[f32]) -> String {
    let mut s = String::with_capacity(v.len() * 12);
    s.push('[');
    for (i, x) in v.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!("{x}"));
    }
    s.push(']');
    s
}

fn load_peer(dsn: &str, c: &Corpus, tenants: &[Uuid], reuse: bool) -> anyhow::Result<PeerLoad> {
    let mut admin = pg_connect(dsn)?;
    let want = (c.tenants * c.chunks) as i64;
    if reuse && pg_chunk_count(&mut admin) == Some(want) {
        // The same tenant ids mean the same corpus: they are Enclave's workspace ids, new per
        // run, so a reused peer keeps its own ids; queries then map tenant index → peer id.
        eprintln!("  peer: reusing {want} chunks already loaded");
        return Ok(PeerLoad::default());
    }
    let started = Instant::now();
    let schema: String = SCHEMA_SQL
        .lines()
        .filter(|l| !l.trim_start().starts_with('\\'))
        .collect::<Vec<_>>()
        .join("\n");
    admin
        .batch_execute(&schema)
        .context("applying the peer schema")?;
    let indexes: Vec<(String, String)> = admin
        .query(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'
             AND tablename IN ('chunks', 'documents') AND indexname NOT LIKE '%pkey'",
            &[],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for (name, _) in &indexes {
        admin.batch_execute(&format!("DROP INDEX {name}"))?;
    }
    {
        let mut w = admin.copy_in("COPY tenants (id, name) FROM STDIN")?;
        for (t, id) in tenants.iter().enumerate() {
            writeln!(w, "{id}\ttenant-{t:05}")?;
        }
        w.finish()?;
    }
    {
        let mut w = admin.copy_in("COPY documents (tenant_id, id, title, body) FROM STDIN")?;
        for (t, id) in tenants.iter().enumerate() {
            let d = c.tenant(t);
            for (j, title) in d.titles.iter().enumerate() {
                let lo = j * CHUNKS_PER_DOC;
                let hi = (lo + CHUNKS_PER_DOC).min(c.chunks);
                let body = d.texts[lo..hi].join("\n\n");
                let doc_id = t * c.docs_per_tenant() + j + 1;
                writeln!(
                    w,
                    "{id}\t{doc_id}\t{}\t{}",
                    escape_copy(title),
                    escape_copy(&body)
                )?;
            }
        }
        w.finish()?;
    }
    {
        let mut w = admin
            .copy_in("COPY chunks (tenant_id, document_id, id, text, embedding) FROM STDIN")?;
        for (t, id) in tenants.iter().enumerate() {
            let d = c.tenant(t);
            for k in 0..c.chunks {
                let doc_id = t * c.docs_per_tenant() + k / CHUNKS_PER_DOC + 1;
                writeln!(
                    w,
                    "{id}\t{doc_id}\t{}\t{}\t{}",
                    c.chunk_id(t, k),
                    escape_copy(&d.texts[k]),
                    vector_text(&d.vectors[k])
                )?;
            }
            if (t + 1) % 200 == 0 {
                eprintln!("  peer: {} tenants copied", t + 1);
            }
        }
        w.finish()?;
    }
    let copy_secs = started.elapsed().as_secs_f64();
    let t = Instant::now();
    for (_, def) in &indexes {
        admin.batch_execute(def)?;
    }
    // One statement each: a multi-statement string is one implicit transaction, which VACUUM
    // refuses.
    admin.batch_execute("VACUUM (ANALYZE)")?;
    admin.batch_execute("CHECKPOINT")?;
    let index_secs = t.elapsed().as_secs_f64();
    Ok(PeerLoad {
        copy_secs,
        index_secs,
        total_secs: started.elapsed().as_secs_f64(),
    })
}

fn pg_prewarm(dsn: &str) -> anyhow::Result<()> {
    let mut admin = pg_connect(dsn)?;
    admin.batch_execute(
        "SELECT pg_prewarm(c.oid::regclass) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'i', 't')
         UNION ALL
         SELECT pg_prewarm(c.reltoastrelid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.reltoastrelid <> 0",
    )?;
    Ok(())
}

fn peer_sql(kind: Kind) -> String {
    match kind {
        Kind::Noop | Kind::Healthz | Kind::WorkspaceRead => {
            "SELECT NULL::bigint AS id, current_setting('app.tenant_id')::uuid AS tenant_id".into()
        }
        Kind::Fts(_) => format!(
            "SELECT c.id, c.tenant_id, ts_rank(c.tsv, q) AS score
             FROM chunks c, to_tsquery('simple', $1) AS q
             WHERE c.tsv @@ q ORDER BY score DESC, c.id LIMIT {K}"
        ),
        Kind::Vec => format!(
            "SELECT c.id, c.tenant_id, c.embedding <=> $2::text::vector AS dist
             FROM chunks c ORDER BY c.embedding <=> $2::text::vector LIMIT {K}"
        ),
        Kind::Hybrid(_) => format!(
            "WITH q AS (SELECT to_tsquery('simple', $1) AS tsq),
             fts AS (
                 SELECT id, tenant_id, row_number() OVER (ORDER BY score DESC, id) AS r
                 FROM (SELECT c.id, c.tenant_id, ts_rank(c.tsv, q.tsq) AS score
                       FROM chunks c, q WHERE c.tsv @@ q.tsq
                       ORDER BY score DESC, c.id LIMIT {DEPTH}) f),
             vec AS (
                 SELECT id, tenant_id, row_number() OVER (ORDER BY dist, id) AS r
                 FROM (SELECT c.id, c.tenant_id, c.embedding <=> $2::text::vector AS dist
                       FROM chunks c ORDER BY c.embedding <=> $2::text::vector LIMIT {DEPTH}) v)
             SELECT coalesce(fts.id, vec.id) AS id, coalesce(fts.tenant_id, vec.tenant_id) AS tenant_id,
                    coalesce(1.0 / ({RRF_K} + fts.r), 0) + coalesce(1.0 / ({RRF_K} + vec.r), 0) AS score
             FROM fts FULL OUTER JOIN vec ON fts.id = vec.id
             ORDER BY score DESC, id LIMIT {K}"
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Cells.

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// Full text, highlights on/off.
    Fts(bool),
    Vec,
    /// Hybrid, highlights on/off.
    Hybrid(bool),
    /// An authenticated request that does nothing (`GET /v1/me` with the tenant's key; the
    /// peer's transaction around `current_setting`).
    Noop,
    /// `GET /healthz`: the HTTP floor (Enclave only).
    Healthz,
    /// `GET /v1/workspaces/{ws}` with the operator token: a record and store read (Enclave only).
    WorkspaceRead,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Fts(true) => "full text, highlights on",
            Kind::Fts(false) => "full text, highlights off",
            Kind::Vec => "vector",
            Kind::Hybrid(true) => "hybrid, highlights on",
            Kind::Hybrid(false) => "hybrid, highlights off",
            Kind::Noop => "authenticated no-op",
            Kind::Healthz => "/healthz (no auth)",
            Kind::WorkspaceRead => "workspace read (GET /v1/workspaces/{ws})",
        }
    }

    fn enclave_only(self) -> bool {
        matches!(self, Kind::Healthz | Kind::WorkspaceRead)
    }

    fn top_k(self) -> bool {
        matches!(self, Kind::Fts(_) | Kind::Vec | Kind::Hybrid(_))
    }
}

#[derive(Clone, Default)]
struct Measured {
    lat_ms: Vec<f64>,
    wall: f64,
    server_ticks: u64,
    rows: usize,
    short: usize,
    foreign: usize,
    errors: usize,
    other_pct: f64,
    busy_before: f64,
}

impl Measured {
    fn p(&self, q: f64) -> f64 {
        percentile(&mut self.lat_ms.clone(), q)
    }
    fn qps(&self) -> f64 {
        self.lat_ms.len() as f64 / self.wall.max(1e-9)
    }
    fn cpu_ms(&self) -> f64 {
        self.server_ticks as f64 / ticks_per_sec() * 1000.0 / self.lat_ms.len().max(1) as f64
    }
}

/// Runs `queries` split over `clients` threads; `run(client, query)` returns the tenants of the
/// rows it got. `server_ticks` reads the server's CPU.
fn measure<C: Send>(
    mut conns: Vec<C>,
    queries: &[Query],
    kind: Kind,
    server_ticks: &dyn Fn(&[C]) -> u64,
    run: &(dyn Fn(&mut C, &Query) -> anyhow::Result<Vec<usize>> + Sync),
    idle: (f64, Duration),
) -> Measured {
    let busy_before = wait_idle(idle.0, idle.1);
    let n = conns.len().max(1);
    let s0 = server_ticks(&conns);
    let me0 = self_ticks();
    let (b0, _) = machine_ticks();
    let t0 = Instant::now();
    let parts: Vec<Measured> = std::thread::scope(|s| {
        let hs: Vec<_> = conns
            .iter_mut()
            .enumerate()
            .map(|(w, conn)| {
                s.spawn(move || {
                    let mut m = Measured::default();
                    for q in queries.iter().skip(w).step_by(n) {
                        let t = Instant::now();
                        match run(conn, q) {
                            Ok(tenants) => {
                                m.lat_ms.push(t.elapsed().as_secs_f64() * 1000.0);
                                m.rows += tenants.len();
                                m.foreign += tenants.iter().filter(|t| **t != q.tenant).count();
                                if kind.top_k() && tenants.len() < K {
                                    m.short += 1;
                                }
                            }
                            Err(e) => {
                                if m.errors == 0 {
                                    eprintln!("  {}: {e:#}", kind.label());
                                }
                                m.errors += 1;
                            }
                        }
                    }
                    m
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let wall = t0.elapsed().as_secs_f64();
    let (b1, _) = machine_ticks();
    let server = server_ticks(&conns).saturating_sub(s0);
    let me = self_ticks().saturating_sub(me0);
    let mut m = Measured {
        wall,
        server_ticks: server,
        busy_before,
        ..Default::default()
    };
    for p in parts {
        m.lat_ms.extend(p.lat_ms);
        m.rows += p.rows;
        m.short += p.short;
        m.foreign += p.foreign;
        m.errors += p.errors;
    }
    let other = (b1 - b0).saturating_sub(server + me) as f64;
    let capacity =
        wall * ticks_per_sec() * std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    m.other_pct = 100.0 * other / capacity.max(1.0);
    m
}

struct EnclaveClient {
    http: Http,
}

fn enclave_query(
    cl: &mut EnclaveClient,
    q: &Query,
    kind: Kind,
    tenants: &[Tenant],
    c: &Corpus,
) -> anyhow::Result<Vec<usize>> {
    let t = &tenants[q.tenant];
    let text = q.words.join(" ");
    let body = match kind {
        Kind::Healthz => {
            let (s, _) = cl.http.call("GET", "/healthz", None, None)?;
            anyhow::ensure!(s == 200, "healthz {s}");
            return Ok(Vec::new());
        }
        Kind::Noop => {
            let (s, out) = cl.http.call("GET", "/v1/me", Some(&t.key), None)?;
            anyhow::ensure!(s == 200, "me {s} {}", String::from_utf8_lossy(&out));
            return Ok(Vec::new());
        }
        Kind::WorkspaceRead => {
            let path = format!("/v1/workspaces/{}", t.ws);
            let (s, out) = cl.http.call("GET", &path, Some(BENCH_TOKEN), None)?;
            anyhow::ensure!(s == 200, "workspace {s} {}", String::from_utf8_lossy(&out));
            return Ok(Vec::new());
        }
        Kind::Fts(h) => json!({"query": text, "mode": "fulltext", "limit": K, "highlight": h}),
        Kind::Vec => json!({"mode": "vector", "vector": q.vector, "limit": K}),
        Kind::Hybrid(h) => {
            json!({"query": text, "mode": "hybrid", "vector": q.vector, "limit": K, "highlight": h})
        }
    };
    let path = format!("/v1/workspaces/{}/search", t.ws);
    let v = cl.http.json("POST", &path, Some(&t.key), &body)?;
    let results = v
        .get("results")
        .and_then(Value::as_array)
        .context("no results in the answer")?;
    Ok(results
        .iter()
        .map(|r| {
            r.get("external_id")
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<i64>().ok())
                .map_or(usize::MAX, |id| c.tenant_of_chunk(id))
        })
        .collect())
}

struct PgClient {
    conn: postgres::Client,
    pid: u32,
    stmt: postgres::Statement,
    set: postgres::Statement,
}

fn pg_clients(dsn: &str, n: usize, kind: Kind) -> anyhow::Result<Vec<PgClient>> {
    (0..n)
        .map(|_| {
            let mut conn = pg_connect(dsn)?;
            conn.batch_execute("SELECT '[1]'::vector")?;
            let pid: i32 = conn.query_one("SELECT pg_backend_pid()", &[])?.get(0);
            let stmt = conn.prepare_typed(
                &peer_sql(kind),
                &[postgres::types::Type::TEXT, postgres::types::Type::TEXT],
            )?;
            let set = conn.prepare("SELECT set_config('app.tenant_id', $1, true)")?;
            Ok(PgClient {
                conn,
                pid: pid as u32,
                stmt,
                set,
            })
        })
        .collect()
}

fn pg_query(
    cl: &mut PgClient,
    q: &Query,
    peer_ids: &[Uuid],
    index: &HashMap<Uuid, usize>,
    kind: Kind,
) -> anyhow::Result<Vec<usize>> {
    let tenant = peer_ids[q.tenant].to_string();
    let tsq = q.words.join(" | ");
    let vec = vector_text(&q.vector);
    let mut tx = cl.conn.transaction()?;
    tx.execute(&cl.set, &[&tenant])?;
    let rows = tx.query(&cl.stmt, &[&tsq, &vec])?;
    tx.commit()?;
    if kind == Kind::Noop {
        return Ok(Vec::new());
    }
    Ok(rows
        .iter()
        .map(|r| {
            let t: Uuid = r.get(1);
            index.get(&t).copied().unwrap_or(usize::MAX)
        })
        .collect())
}

// ---------------------------------------------------------------------------------------------

pub fn run(a: Args, config: &ConfigArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.tenants > 0 && a.chunks > 0,
        "-T and -C must be at least 1"
    );
    anyhow::ensure!(
        a.queries >= a.clients.max(1),
        "-Q must be at least --clients"
    );
    crate::server::raise_fd_limit();
    super::in_empty_data_dir(config, "peer", a.keep, |dir| bench(&a, dir))
}

/// One line of the final table: the peer's and Enclave's figures.
struct Row {
    label: String,
    peer: Option<String>,
    enclave: String,
    ratio: String,
}

fn bench(a: &Args, data_dir: &Path) -> anyhow::Result<()> {
    let c = Corpus::new(a);
    let peer_dsns = match (&a.pg_admin, &a.pg_app) {
        (Some(ad), Some(ap)) => Some((ad.clone(), ap.clone())),
        _ => None,
    };
    println!(
        "enclave bench peer: {} tenants × {} chunks, dim {}, {} queries per cell, data in {}",
        a.tenants,
        a.chunks,
        a.dim,
        a.queries,
        data_dir.display()
    );
    if peer_dsns.is_none() {
        println!("PostgreSQL peer: not configured (--pg-admin/--pg-app or PEER_ADMIN_DSN/PEER_APP_DSN); Enclave side only");
    }
    let idle = (a.wait_idle, Duration::from_secs(a.wait_idle_timeout));
    let all_open = a.tenants + 16;

    // Load Enclave.
    let mut server = Server::start(data_dir, all_open)?;
    let (tenants, eload) = load_enclave(&server.addr, &c, a.load_clients)?;
    println!(
        "enclave: loaded {} chunks in {:.1} s ({})",
        a.tenants * a.chunks,
        eload.secs,
        eload.route
    );
    // Restart: the disk and memory figures are those of a server that loaded nothing itself.
    server.stop();
    let (e_disk, e_files) = disk_usage(data_dir);

    // Load the peer.
    let mut peer_ids: Vec<Uuid> = tenants.iter().map(|t| t.ws).collect();
    let mut pload = None;
    if let Some((admin, _)) = &peer_dsns {
        if a.reuse_peer {
            let mut conn = pg_connect(admin)?;
            let ids: Vec<Uuid> = conn
                .query("SELECT id FROM tenants ORDER BY name", &[])?
                .iter()
                .map(|r| r.get(0))
                .collect();
            if ids.len() == a.tenants {
                peer_ids = ids;
            }
        }
        let l = load_peer(admin, &c, &peer_ids, a.reuse_peer)?;
        println!(
            "peer: loaded in {:.1} s (COPY {:.1} s, indexes + VACUUM ANALYZE {:.1} s)",
            l.total_secs, l.copy_secs, l.index_secs
        );
        pg_prewarm(admin)?;
        pload = Some(l);
    }
    let queries = make_queries(&c, a.queries, a.seed + 1);
    let peer_index: HashMap<Uuid, usize> =
        peer_ids.iter().enumerate().map(|(i, u)| (*u, i)).collect();

    let mut cells: Vec<(String, Kind, usize, Option<Measured>, Measured)> = Vec::new();
    let mut mem_all_open = (0, 0);
    for (phase, max_open) in [("all open", all_open), ("cache", a.cache)] {
        let phase_label = if phase == "cache" {
            format!("cache of {max_open} open")
        } else {
            "all open".to_string()
        };
        let server = Server::start(data_dir, max_open)?;
        // Warm up: every tenant once (fills the cache, pages in the files), both sides.
        {
            let mut cl = EnclaveClient {
                http: Http::new(&server.addr),
            };
            let warm: Vec<Query> = (0..a.tenants)
                .map(|t| Query {
                    tenant: t,
                    words: queries[t % queries.len()].words.clone(),
                    vector: queries[t % queries.len()].vector.clone(),
                })
                .collect();
            for q in &warm {
                enclave_query(&mut cl, q, Kind::Hybrid(true), &tenants, &c)?;
            }
            if let Some((_, app)) = &peer_dsns {
                let mut p = pg_clients(app, 1, Kind::Hybrid(true))?;
                for q in warm.iter().take(200) {
                    pg_query(&mut p[0], q, &peer_ids, &peer_index, Kind::Hybrid(true))?;
                }
            }
        }
        // The cold-tenant phase runs every query of the all-open one (each p50 is compared
        // with its all-open p50), plus the workspace read (a store open and little else).
        let plan: Vec<(Kind, usize)> = if phase == "cache" {
            vec![
                (Kind::Fts(true), 1),
                (Kind::Fts(false), 1),
                (Kind::Vec, 1),
                (Kind::Hybrid(true), 1),
                (Kind::Hybrid(false), 1),
                (Kind::Noop, 1),
                (Kind::Healthz, 1),
                (Kind::WorkspaceRead, 1),
                (Kind::Hybrid(true), a.clients),
            ]
        } else {
            vec![
                (Kind::Fts(true), 1),
                (Kind::Fts(false), 1),
                (Kind::Vec, 1),
                (Kind::Hybrid(true), 1),
                (Kind::Hybrid(false), 1),
                (Kind::Hybrid(true), a.clients),
                (Kind::Noop, 1),
                (Kind::Healthz, 1),
            ]
        };
        for (i, (kind, clients)) in plan.into_iter().enumerate() {
            let run_peer = |k: Kind| -> anyhow::Result<Option<Measured>> {
                let Some((_, app)) = &peer_dsns else {
                    return Ok(None);
                };
                if k.enclave_only() {
                    return Ok(None);
                }
                let conns = pg_clients(app, clients, k)?;
                Ok(Some(measure(
                    conns,
                    &queries,
                    k,
                    &|cs: &[PgClient]| cs.iter().map(|c| proc_ticks(c.pid)).sum(),
                    &|cl: &mut PgClient, q: &Query| pg_query(cl, q, &peer_ids, &peer_index, k),
                    idle,
                )))
            };
            let run_enclave = |k: Kind| -> Measured {
                let conns: Vec<EnclaveClient> = (0..clients)
                    .map(|_| EnclaveClient {
                        http: Http::new(&server.addr),
                    })
                    .collect();
                let pid = server.pid();
                measure(
                    conns,
                    &queries,
                    k,
                    &|_: &[EnclaveClient]| proc_ticks(pid),
                    &|cl: &mut EnclaveClient, q: &Query| enclave_query(cl, q, k, &tenants, &c),
                    idle,
                )
            };
            // Alternate which side goes first, so drift hits both alike.
            let (p, e) = if i % 2 == 0 {
                let p = run_peer(kind)?;
                (p, run_enclave(kind))
            } else {
                let e = run_enclave(kind);
                (run_peer(kind)?, e)
            };
            eprintln!(
                "  {phase_label}: {} × {clients}: enclave p50 {:.3} ms{}",
                kind.label(),
                e.p(50.0),
                p.as_ref()
                    .map(|p| format!(", peer p50 {:.3} ms", p.p(50.0)))
                    .unwrap_or_default()
            );
            cells.push((phase_label.clone(), kind, clients, p, e));
        }
        if phase == "all open" {
            mem_all_open = (
                status_kib(server.pid(), "RssAnon"),
                status_kib(server.pid(), "RssFile") + status_kib(server.pid(), "RssShmem"),
            );
        }
        drop(server);
    }

    // Peer disk and memory.
    let mut peer_disk = None;
    let mut peer_mem = None;
    if let Some((admin, _)) = &peer_dsns {
        let mut conn = pg_connect(admin)?;
        let size: i64 = conn
            .query_one("SELECT pg_database_size(current_database())", &[])?
            .get(0);
        let files: i64 = conn
            .query_one(
                "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = 'public' AND c.relkind IN ('r','i','t')",
                &[],
            )?
            .get(0);
        peer_disk = Some((size as u64, files as u64));
        let sb: String = conn.query_one("SHOW shared_buffers", &[])?.get(0);
        peer_mem = Some(sb);
    }

    // The detailed table.
    println!();
    let mut t = Table::new(&[
        "phase",
        "query",
        "clients",
        "side",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "QPS",
        "server CPU ms/q",
        "rows",
        "short",
        "foreign",
        "errors",
        "busy before %",
        "other CPU %",
    ]);
    for (phase, kind, clients, p, e) in &cells {
        for (side, m) in [("peer", p.as_ref()), ("enclave", Some(e))] {
            let Some(m) = m else { continue };
            let n = m.lat_ms.len().max(1) as f64;
            t.row(&[
                phase.clone(),
                kind.label().into(),
                clients.to_string(),
                side.into(),
                format!("{:.3}", m.p(50.0)),
                format!("{:.3}", m.p(95.0)),
                format!("{:.3}", m.p(99.0)),
                format!("{:.0}", m.qps()),
                format!("{:.3}", m.cpu_ms()),
                format!("{:.1}", m.rows as f64 / n),
                m.short.to_string(),
                m.foreign.to_string(),
                m.errors.to_string(),
                format!("{:.1}", m.busy_before),
                format!("{:.1}", m.other_pct),
            ]);
        }
    }
    t.print();

    // The issue's table.
    let find = |phase: &str, kind: Kind, clients: usize| {
        cells
            .iter()
            .find(|(p, k, c, _, _)| p.starts_with(phase) && *k == kind && *c == clients)
    };
    let mut rows: Vec<Row> = Vec::new();
    let ms = |v: f64| format!("{v:.2} ms");
    let lat_row = |label: String, phase: &str, kind: Kind| -> Option<Row> {
        let (_, _, _, p, e) = find(phase, kind, 1)?;
        let ep = (e.p(50.0), e.p(99.0));
        let pp = p.as_ref().map(|p| (p.p(50.0), p.p(99.0)));
        Some(Row {
            label,
            peer: pp.map(|(a, b)| format!("{} (p99 {})", ms(a), ms(b))),
            enclave: format!("{} (p99 {})", ms(ep.0), ms(ep.1)),
            ratio: pp
                .map(|(a, b)| {
                    format!(
                        "{:.2}× / {:.2}× faster",
                        a / ep.0.max(1e-9),
                        b / ep.1.max(1e-9)
                    )
                })
                .unwrap_or_default(),
        })
    };
    let qps_row = |label: String, phase: &str| -> Option<Row> {
        let (_, _, _, p, e) = find(phase, Kind::Hybrid(true), a.clients)?;
        Some(Row {
            label,
            peer: p.as_ref().map(|p| format!("{:.0}", p.qps())),
            enclave: format!("{:.0}", e.qps()),
            ratio: p
                .as_ref()
                .map(|p| format!("{:.2}× more", e.qps() / p.qps().max(1e-9)))
                .unwrap_or_default(),
        })
    };
    rows.extend(lat_row(
        "full text, 1 client, all open, highlights on".into(),
        "all",
        Kind::Fts(true),
    ));
    rows.extend(lat_row(
        "full text, 1 client, all open, highlights off".into(),
        "all",
        Kind::Fts(false),
    ));
    rows.extend(lat_row(
        "vector, 1 client, all open".into(),
        "all",
        Kind::Vec,
    ));
    rows.extend(lat_row(
        "hybrid, 1 client, all open, highlights on".into(),
        "all",
        Kind::Hybrid(true),
    ));
    rows.extend(qps_row(
        format!("hybrid, {} clients, QPS, all open", a.clients),
        "all",
    ));
    rows.extend(lat_row(
        format!(
            "full text, 1 client, cache of {} open, requests over {}",
            a.cache, a.tenants
        ),
        "cache",
        Kind::Fts(true),
    ));
    if let (Some((_, _, _, p, e)), Some((_, _, _, _, h))) = (
        find("cache", Kind::Noop, 1),
        find("cache", Kind::Healthz, 1),
    ) {
        rows.push(Row {
            label: format!(
                "authenticated no-op, 1 client, cache {} (Enclave: GET /v1/me; /healthz {})",
                a.cache,
                ms(h.p(50.0))
            ),
            peer: p.as_ref().map(|p| ms(p.p(50.0))),
            enclave: format!(
                "{} ({:.2}× /healthz)",
                ms(e.p(50.0)),
                e.p(50.0) / h.p(50.0).max(1e-9)
            ),
            ratio: p
                .as_ref()
                .map(|p| format!("{:.2}× faster", p.p(50.0) / e.p(50.0).max(1e-9)))
                .unwrap_or_default(),
        });
    }
    rows.extend(qps_row(
        format!("hybrid, {} clients, QPS, cache {}", a.clients, a.cache),
        "cache",
    ));
    let mib = |b: u64| format!("{:.0} MiB", b as f64 / (1024.0 * 1024.0));
    rows.push(Row {
        label: "disk after load".into(),
        peer: peer_disk.map(|(b, f)| format!("{} ({f} relations)", mib(b))),
        enclave: format!(
            "{} in {e_files} files ({:.1} per workspace)",
            mib(e_disk),
            e_files as f64 / a.tenants as f64
        ),
        ratio: peer_disk
            .map(|(b, _)| format!("{:.2}×", e_disk as f64 / b.max(1) as f64))
            .unwrap_or_default(),
    });
    rows.push(Row {
        label: "memory after the all-open phase".into(),
        peer: peer_mem.map(|s| format!("{s} shared buffers")),
        enclave: format!(
            "{:.0} MiB anonymous + {:.0} MiB mapped files",
            mem_all_open.0 as f64 / 1024.0,
            mem_all_open.1 as f64 / 1024.0
        ),
        ratio: String::new(),
    });
    rows.push(Row {
        label: format!("load of {} chunks", a.tenants * a.chunks),
        peer: pload
            .as_ref()
            .filter(|l| l.total_secs > 0.0)
            .map(|l| format!("{:.1} s (COPY, then index builds)", l.total_secs)),
        enclave: format!("{:.1} s ({})", eload.secs, eload.route),
        ratio: pload
            .as_ref()
            .filter(|l| l.total_secs > 0.0)
            .map(|l| format!("{:.2}×", eload.secs / l.total_secs))
            .unwrap_or_default(),
    });
    println!();
    let mut t = Table::new(&[
        "measure (p50 unless said)",
        "PostgreSQL RLS peer",
        "Enclave",
        "peer / Enclave",
    ]);
    for r in rows {
        t.row(&[
            r.label,
            r.peer.unwrap_or_else(|| "(not run)".into()),
            r.enclave,
            r.ratio,
        ]);
    }
    t.print();
    let foreign: usize = cells
        .iter()
        .map(|(_, _, _, p, e)| e.foreign + p.as_ref().map_or(0, |p| p.foreign))
        .sum();
    let errors: usize = cells
        .iter()
        .map(|(_, _, _, p, e)| e.errors + p.as_ref().map_or(0, |p| p.errors))
        .sum();
    println!("\nforeign rows returned: {foreign}; errors: {errors}");
    anyhow::ensure!(foreign == 0, "a query returned another tenant's rows");
    anyhow::ensure!(errors == 0, "{errors} queries failed");
    Ok(())
}
