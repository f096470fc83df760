//! `enclave bench embed`: throughput and latency of the in-process embedders.
//!
//! Chunks are ~200-word windows over a BEIR `corpus.jsonl` (title + text) when one is given,
//! otherwise generated text; they are embedded in batches of 32, as ingestion does. Queries are
//! the corpus's sibling `queries.jsonl`, or generated short questions, embedded one at a time.
//! MiniLM runs twice in the same process, with f32 and with int8 dense layers, and the two
//! precisions' vectors of the same chunks and queries are compared (cosine).

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;

use super::minilm::Precision;
use super::{Embedder, MiniLm, StaticModel};

#[derive(Debug, Clone, clap::Args)]
pub struct EmbedBenchArgs {
    /// BEIR corpus.jsonl to take chunks (and the sibling queries.jsonl) from.
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    /// Chunks embedded by the transformer (the static model gets 100× as many).
    #[arg(long, default_value_t = 256)]
    pub chunks: usize,
    /// Words per chunk.
    #[arg(long, default_value_t = 200)]
    pub words: usize,
    /// Chunks per `embed` call.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Queries timed one by one.
    #[arg(long, default_value_t = 200)]
    pub queries: usize,
    /// Threads for each embedder.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// With --corpus: also embed the whole corpus with MiniLM in both precisions and print the
    /// brute-force vector nDCG@10 of the sibling qrels/dev.tsv queries for f32, int8 and the
    /// mixes (f32 documents searched with int8 queries and the reverse).
    #[arg(long)]
    pub ndcg: bool,
}

impl Default for EmbedBenchArgs {
    fn default() -> Self {
        EmbedBenchArgs {
            corpus: None,
            chunks: 256,
            words: 200,
            batch: 32,
            queries: 200,
            threads: 2,
            ndcg: false,
        }
    }
}

struct Row {
    model: String,
    load_ms: f64,
    chunks_per_s: f64,
    chunks_per_cpu_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

pub fn bench(args: EmbedBenchArgs) -> anyhow::Result<()> {
    let (chunks, queries) = match &args.corpus {
        Some(path) => load_corpus(path, args.words, args.chunks.max(1))?,
        None => (
            generated_chunks(args.chunks.max(1), args.words),
            generated_queries(),
        ),
    };
    anyhow::ensure!(
        !chunks.is_empty(),
        "the corpus gave no chunk of {} words",
        args.words
    );
    let batch = args.batch.max(1);
    let tok = super::tokenizer()?;
    let mean_tokens = chunks
        .iter()
        .map(|c| {
            let mut v = Vec::new();
            tok.tokenize(c, usize::MAX, &mut v);
            v.len() + 2
        })
        .sum::<usize>() as f64
        / chunks.len() as f64;
    println!(
        "(chunks per CPU-second ≈ single-core rate: under contention from other processes it is \
         steadier than chunks/s; with N free cores, chunks/s approaches N times it.)"
    );
    println!(
        "embedding benchmark: {} chunks of {} words (≈ {:.0} tokens before truncation), batches of {batch}, {} threads, {} queries, kernels: {:?}",
        chunks.len(),
        args.words,
        mean_tokens,
        args.threads,
        queries.len().min(args.queries),
        super::kernels::isa()
    );

    println!(
        "int8 kernel: {:?}; MiniLM default precision: {}",
        super::qgemm::qisa(),
        Precision::from_env().name()
    );

    let mut rows = Vec::new();
    let mut dims = Vec::new();
    for precision in Precision::ALL {
        let load = MiniLm::preload(precision)?;
        let minilm = MiniLm::with_threads(args.threads).with_precision(precision);
        let mut row = measure(
            &minilm,
            load.as_secs_f64() * 1e3,
            &chunks,
            batch,
            &queries,
            args.queries,
        )?;
        row.model = format!("{} ({})", row.model, precision.name());
        rows.push(row);
        dims.push(minilm.dim());
    }
    let load = StaticModel::preload()?;
    let stat = StaticModel::with_threads(args.threads);
    let many: Vec<String> = chunks
        .iter()
        .cycle()
        .take(chunks.len() * 100)
        .cloned()
        .collect();
    rows.push(measure(
        &stat,
        load.as_secs_f64() * 1e3,
        &many,
        batch,
        &queries,
        args.queries,
    )?);
    dims.push(stat.dim());

    println!(
        "\n| model | dims | load (ms) | chunks/s | chunks per CPU-second | query p50 (ms) | query p99 (ms) |\n|---|---|---|---|---|---|---|"
    );
    for (r, dim) in rows.iter().zip(dims) {
        println!(
            "| {} | {dim} | {:.1} | {:.1} | {:.1} | {:.3} | {:.3} |",
            r.model, r.load_ms, r.chunks_per_s, r.chunks_per_cpu_s, r.p50_ms, r.p99_ms
        );
    }
    if let [f, q, ..] = rows.as_slice() {
        println!(
            "\nMiniLM int8 / f32: {:.2}× chunks/s, {:.2}× chunks per CPU-second, query p50 {:.2}×",
            q.chunks_per_s / f.chunks_per_s,
            q.chunks_per_cpu_s / f.chunks_per_cpu_s,
            f.p50_ms / q.p50_ms
        );
    }
    let sample: Vec<&str> = chunks.iter().map(String::as_str).take(256).collect();
    let qsample: Vec<&str> = queries.iter().map(String::as_str).take(256).collect();
    println!("\n| int8 vs f32 cosine | texts | min | mean | max |\n|---|---|---|---|---|");
    for (what, texts) in [("chunks", &sample), ("queries", &qsample)] {
        let (n, min, mean, max) = agreement(texts, args.threads)?;
        println!("| {what} | {n} | {min:.5} | {mean:.5} | {max:.5} |");
    }
    if args.ndcg {
        let corpus = args
            .corpus
            .as_deref()
            .context("--ndcg needs --corpus DIR/corpus.jsonl (a BEIR folder)")?;
        quality(corpus, args.threads)?;
    }
    Ok(())
}

/// Brute-force cosine nDCG@10 (linear gains) of the dev queries for each pair of
/// (document precision, query precision).
fn quality(corpus: &Path, threads: usize) -> anyhow::Result<()> {
    let ids = read_jsonl_field(corpus, &["_id"])?;
    let docs = read_jsonl_field(corpus, &["title", "text"])?;
    let qpath = corpus.with_file_name("queries.jsonl");
    let qids = read_jsonl_field(&qpath, &["_id"])?;
    let qtexts = read_jsonl_field(&qpath, &["text"])?;
    let qrels_path = corpus.with_file_name("qrels").join("dev.tsv");
    let mut qrels: std::collections::HashMap<String, std::collections::HashMap<String, f64>> =
        Default::default();
    for line in std::fs::read_to_string(&qrels_path)
        .with_context(|| format!("reading {}", qrels_path.display()))?
        .lines()
    {
        let cols: Vec<&str> = line.split('\t').collect();
        if let [q, d, g, ..] = cols.as_slice() {
            if let Ok(g) = g.trim().parse::<f64>() {
                qrels
                    .entry(q.to_string())
                    .or_default()
                    .insert(d.to_string(), g);
            }
        }
    }
    let queries: Vec<(&String, &str)> = qids
        .iter()
        .zip(&qtexts)
        .filter(|(id, _)| qrels.contains_key(*id))
        .map(|(id, t)| (id, t.as_str()))
        .collect();
    anyhow::ensure!(
        !queries.is_empty(),
        "no query of {} has qrels",
        qpath.display()
    );
    let refs: Vec<&str> = docs.iter().map(String::as_str).collect();
    let qrefs: Vec<&str> = queries.iter().map(|(_, t)| *t).collect();
    let mut doc_vecs = Vec::new();
    let mut query_vecs = Vec::new();
    for precision in Precision::ALL {
        let model = MiniLm::with_threads(threads).with_precision(precision);
        let t = Instant::now();
        let mut dv = Vec::with_capacity(refs.len());
        for b in refs.chunks(32) {
            dv.extend(model.embed(b)?);
        }
        eprintln!(
            "embedded {} documents with {} in {:.1} s",
            refs.len(),
            precision.name(),
            t.elapsed().as_secs_f64()
        );
        doc_vecs.push(dv);
        query_vecs.push(model.embed(&qrefs)?);
    }
    println!(
        "\n{}: {} queries, {} documents, brute-force cosine\n| documents | queries | nDCG@10 |\n|---|---|---|",
        corpus.display(),
        queries.len(),
        refs.len()
    );
    for (di, dp) in Precision::ALL.iter().enumerate() {
        for (qi, qp) in Precision::ALL.iter().enumerate() {
            let mut total = 0.0;
            for ((qid, _), q) in queries.iter().zip(&query_vecs[qi]) {
                let mut scored: Vec<(f32, usize)> = doc_vecs[di]
                    .iter()
                    .enumerate()
                    .map(|(i, d)| (d.iter().zip(q).map(|(a, b)| a * b).sum(), i))
                    .collect();
                scored.sort_by(|a, b| b.0.total_cmp(&a.0));
                let rels = &qrels[*qid];
                let dcg: f64 = scored
                    .iter()
                    .take(10)
                    .enumerate()
                    .map(|(r, &(_, i))| {
                        rels.get(&ids[i]).copied().unwrap_or(0.0) / (r as f64 + 2.0).log2()
                    })
                    .sum();
                let mut ideal: Vec<f64> = rels.values().copied().collect();
                ideal.sort_by(|a, b| b.total_cmp(a));
                let idcg: f64 = ideal
                    .iter()
                    .take(10)
                    .enumerate()
                    .map(|(r, g)| g / (r as f64 + 2.0).log2())
                    .sum();
                total += if idcg > 0.0 { dcg / idcg } else { 0.0 };
            }
            println!(
                "| {} | {} | {:.4} |",
                dp.name(),
                qp.name(),
                total / queries.len() as f64
            );
        }
    }
    Ok(())
}

/// Cosine between MiniLM's f32 and int8 vectors of the same texts: (count, min, mean, max).
fn agreement(texts: &[&str], threads: usize) -> anyhow::Result<(usize, f64, f64, f64)> {
    let f = MiniLm::with_threads(threads).with_precision(Precision::F32);
    let q = MiniLm::with_threads(threads).with_precision(Precision::Int8);
    let (mut min, mut sum, mut max) = (f64::INFINITY, 0.0, f64::NEG_INFINITY);
    let mut n = 0;
    for b in texts.chunks(32) {
        for (x, y) in f.embed(b)?.iter().zip(q.embed(b)?) {
            // Both are unit vectors: the dot product is the cosine.
            let c: f64 = x.iter().zip(&y).map(|(a, b)| f64::from(*a * *b)).sum();
            min = min.min(c);
            max = max.max(c);
            sum += c;
            n += 1;
        }
    }
    Ok((n, min, sum / n.max(1) as f64, max))
}

fn measure(
    model: &dyn Embedder,
    load_ms: f64,
    chunks: &[String],
    batch: usize,
    queries: &[String],
    n_queries: usize,
) -> anyhow::Result<Row> {
    let refs: Vec<&str> = chunks.iter().map(String::as_str).collect();
    // Warm-up: thread pool, page faults of the weights, allocator.
    model.embed(&refs[..batch.min(refs.len())])?;
    let cpu0 = cpu_seconds();
    let t = Instant::now();
    for b in refs.chunks(batch) {
        model.embed(b)?;
    }
    let chunks_per_s = refs.len() as f64 / t.elapsed().as_secs_f64();
    let chunks_per_cpu_s = refs.len() as f64 / (cpu_seconds() - cpu0).max(1e-9);
    let mut lat = Vec::with_capacity(n_queries);
    for q in queries.iter().cycle().take(n_queries.max(1)) {
        let t = Instant::now();
        model.embed_query(q)?;
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat[((lat.len() - 1) as f64 * p).round() as usize];
    Ok(Row {
        model: model.id().to_string(),
        load_ms,
        chunks_per_s,
        chunks_per_cpu_s,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
    })
}

/// User + system CPU time of the whole process so far (all threads).
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the struct we pass and nothing else.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// ~`words`-word windows over the corpus's title + text, and the sibling queries.
fn load_corpus(
    path: &Path,
    words: usize,
    limit: usize,
) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let texts = read_jsonl_field(path, &["title", "text"])?;
    let mut chunks = Vec::new();
    let mut pending: Vec<String> = Vec::new();
    for t in texts {
        pending.extend(t.split_whitespace().map(str::to_string));
        while pending.len() >= words && chunks.len() < limit {
            let rest = pending.split_off(words);
            chunks.push(pending.join(" "));
            pending = rest;
        }
        if chunks.len() >= limit {
            break;
        }
    }
    let qpath = path.with_file_name("queries.jsonl");
    let queries = if qpath.exists() {
        read_jsonl_field(&qpath, &["text"])?
    } else {
        generated_queries()
    };
    Ok((chunks, queries))
}

fn read_jsonl_field(path: &Path, fields: &[&str]) -> anyhow::Result<Vec<String>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut out = Vec::new();
    for line in std::io::BufReader::new(file).lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("parsing {}", path.display()))?;
        let text: Vec<&str> = fields
            .iter()
            .filter_map(|f| v.get(*f).and_then(|x| x.as_str()))
            .filter(|s| !s.is_empty())
            .collect();
        out.push(text.join(" "));
    }
    Ok(out)
}

const WORDS: &[&str] = &[
    "the",
    "system",
    "stores",
    "documents",
    "and",
    "search",
    "queries",
    "across",
    "many",
    "workspaces",
    "with",
    "embedding",
    "models",
    "running",
    "locally",
    "on",
    "small",
    "servers",
    "while",
    "retrieval",
    "quality",
    "depends",
    "on",
    "chunking",
    "structure",
    "tables",
    "lists",
    "headings",
    "paragraphs",
    "of",
    "technical",
    "manuals",
    "policies",
    "reports",
    "describing",
    "procedures",
    "for",
    "engineers",
    "customers",
    "support",
    "teams",
    "in",
    "2024",
    "budget",
    "network",
    "latency",
    "storage",
    "backup",
    "encryption",
    "keys",
    "rotation",
    "audit",
];

fn generated_chunks(n: usize, words: usize) -> Vec<String> {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    (0..n)
        .map(|_| {
            (0..words)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    WORDS[(state % WORDS.len() as u64) as usize]
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

fn generated_queries() -> Vec<String> {
    [
        "how do I rotate encryption keys",
        "backup storage policy for customers",
        "what is the network latency budget",
        "support procedures for engineers",
        "audit report on search quality",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[cfg(test)]
mod tests {
    /// `cargo test --release --lib embed::bench -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn run_bench() {
        let corpus = std::path::PathBuf::from("../shared/eval/msmarco/corpus.jsonl");
        let args = super::EmbedBenchArgs {
            corpus: corpus.exists().then_some(corpus),
            ..Default::default()
        };
        if let Err(e) = super::bench(args) {
            panic!("{e:#}");
        }
    }
}
