//! `enclave eval --beir DIR`: ingests a BEIR folder (`corpus.jsonl`, `queries.jsonl`,
//! `qrels/dev.tsv`) into a temporary workspace through the same code path as the API
//! (`Knowledge::add_document`, the scheduler, `Knowledge::search`) and prints nDCG@10 and recall@100
//! for each mode.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Deserialize;

use crate::app::App;
use crate::config::Config;
use crate::control::{NewOrg, NewWorkspace};
use crate::knowledge::embedders::EmbedderConfig;
use crate::knowledge::search::{Fusion, Mode, SearchRequest};
use crate::knowledge::service::DocumentInput;

mod cv;

#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// A BEIR-format folder (repeat the flag for several sets).
    #[arg(long, required = true)]
    pub beir: Vec<PathBuf>,
    /// Embedder of the temporary workspace: minilm (default) or static, or both as
    /// `minilm,static`.
    #[arg(long, default_value = "minilm")]
    pub embedder: String,
    /// Also print hybrid results for a sweep of fusion weights and title boosts.
    #[arg(long)]
    pub sweep: bool,
    /// Cross-validate the fusion constants: k folds of each set's queries, and each set tuned
    /// on the others (tune on one, report on the other); prints nDCG@10 and recall@100 per
    /// fold, direction and mode.
    #[arg(long)]
    pub cv: bool,
    /// Folds per set for `--cv`.
    #[arg(long, default_value_t = 4)]
    pub folds: usize,
    /// With `--cv`: keep each set's candidate lists (per embedder) in this folder and reuse them
    /// on later runs, so a run costs seconds instead of an ingestion.
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Write each query's full-text and vector candidates (top 100, with scores) as JSON lines
    /// to this file, for offline fusion tuning.
    #[arg(long)]
    pub dump: Option<PathBuf>,
    /// How the temporary workspace stores its vectors (`int8`, the default, or `f32`): to
    /// measure what int8 storage costs in quality.
    #[arg(long, value_enum, default_value = "int8")]
    pub vector_storage: crate::config::VectorStorage,
    /// Qrels file inside `qrels/` [default: dev.tsv].
    #[arg(long, default_value = "dev.tsv")]
    pub qrels: String,
}

#[derive(Deserialize)]
struct CorpusDoc {
    #[serde(rename = "_id")]
    id: String,
    #[serde(default)]
    title: String,
    text: String,
}

#[derive(Deserialize)]
pub(crate) struct QueryRow {
    #[serde(rename = "_id")]
    pub(crate) id: String,
    pub(crate) text: String,
}

fn read_jsonl<T: for<'de> Deserialize<'de>>(path: &Path) -> anyhow::Result<Vec<T>> {
    let f = std::fs::File::open(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(
            serde_json::from_str(&line)
                .map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), i + 1))?,
        );
    }
    Ok(out)
}

pub(crate) type Qrels = HashMap<String, HashMap<String, u32>>;

fn read_qrels(path: &Path) -> anyhow::Result<Qrels> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let mut q: Qrels = HashMap::new();
    for line in text.lines() {
        let cols: Vec<&str> = line.split('\t').collect();
        if cols.len() < 3 || cols[2].parse::<u32>().is_err() {
            continue; // header or malformed
        }
        let rel: u32 = cols[2].parse().unwrap_or(0);
        q.entry(cols[0].to_string())
            .or_default()
            .insert(cols[1].to_string(), rel);
    }
    Ok(q)
}

/// nDCG@k with linear gains (as trec_eval), and recall@k of the relevant (grade > 0) docs.
pub fn ndcg_recall(
    ranked: &[String],
    rels: &HashMap<String, u32>,
    k: usize,
    rk: usize,
) -> (f64, f64) {
    let results: Vec<Vec<&str>> = ranked.iter().map(|d| vec![d.as_str()]).collect();
    credited(&results, rels, k, rk)
}

/// nDCG@k and recall@rk of results that each stand for one or more documents: a result's own
/// document first, then the documents of the duplicates collapsed onto it (`duplicates`: the
/// same passage elsewhere, which the user sees listed on it).
///
/// The rule: results are read best first; a result's gain is the highest grade among its
/// documents not credited before, and every one of its documents is then credited, so a
/// passage counts once however many copies it stands for, and a document counts once however
/// many results stand for it. A result all of whose documents were credited before is skipped
/// and takes no rank (as a second passage of the same document). recall@rk is the share of the
/// relevant documents credited within the first `rk` ranks. The ideal DCG is that of the
/// judgements (each relevant document at its own rank), so duplicates of one another that are
/// all relevant cannot all be credited at full gain: the rule never rewards a copy.
pub fn credited(
    results: &[Vec<&str>],
    rels: &HashMap<String, u32>,
    k: usize,
    rk: usize,
) -> (f64, f64) {
    let grade = |d: &str| rels.get(d).copied().unwrap_or(0);
    let mut seen: std::collections::HashSet<&str> = std::collections::HashSet::new();
    let (mut dcg, mut found, mut rank) = (0.0, 0usize, 0usize);
    for docs in results {
        if rank >= k.max(rk) {
            break;
        }
        let fresh: Vec<&str> = docs.iter().copied().filter(|d| !seen.contains(d)).collect();
        if fresh.is_empty() {
            continue;
        }
        let gain = fresh.iter().map(|d| grade(d)).max().unwrap_or(0);
        if rank < k {
            dcg += gain as f64 / (rank as f64 + 2.0).log2();
        }
        if rank < rk {
            found += fresh.iter().filter(|d| grade(d) > 0).count();
        }
        seen.extend(fresh);
        rank += 1;
    }
    let mut ideal: Vec<u32> = rels.values().copied().collect();
    ideal.sort_unstable_by(|a, b| b.cmp(a));
    let idcg: f64 = ideal
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, r)| *r as f64 / (i as f64 + 2.0).log2())
        .sum();
    let relevant = rels.values().filter(|r| **r > 0).count();
    (
        if idcg > 0.0 { dcg / idcg } else { 0.0 },
        if relevant > 0 {
            found as f64 / relevant as f64
        } else {
            0.0
        },
    )
}

/// The documents a search result stands for: its own, then its duplicates' (see [`credited`]).
fn result_documents(r: &crate::knowledge::SearchResult) -> Vec<String> {
    r.external_id
        .iter()
        .chain(r.duplicates.iter().filter_map(|d| d.external_id.as_ref()))
        .cloned()
        .collect()
}

pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let embedders: Vec<EmbedderConfig> = args
        .embedder
        .split(',')
        .map(|e| match e.trim() {
            "minilm" => Ok(EmbedderConfig::Minilm),
            "static" => Ok(EmbedderConfig::Static),
            other => anyhow::bail!("unknown embedder {other:?} (minilm or static)"),
        })
        .collect::<anyhow::Result<_>>()?;
    if args.beir.is_empty() {
        anyhow::bail!("give at least one --beir folder");
    }
    if args.cv {
        let mut sets = Vec::new();
        for dir in &args.beir {
            for e in &embedders {
                sets.push(cv::lists(&args, dir, e.clone())?);
            }
        }
        return cv::report(&sets, args.folds.max(2));
    }
    for dir in &args.beir {
        for e in &embedders {
            let built = Built::new(&args, dir, e.clone())?;
            built.table(&args)?;
            built.close();
        }
    }
    Ok(())
}

/// A BEIR set ingested into a temporary workspace.
pub(crate) struct Built {
    app: std::sync::Arc<App>,
    ctx: crate::identity::WorkspaceAccess,
    tmp: PathBuf,
    dir: PathBuf,
    pub(crate) queries: Vec<QueryRow>,
    pub(crate) qrels: Qrels,
}

impl Built {
    pub(crate) fn new(
        args: &EvalArgs,
        dir: &Path,
        embedder: EmbedderConfig,
    ) -> anyhow::Result<Built> {
        let corpus: Vec<CorpusDoc> = read_jsonl(&dir.join("corpus.jsonl"))?;
        let (queries, qrels) = read_queries(args, dir)?;
        let tmp = tempfile_dir()?;
        let mut config = Config::for_data_dir(&tmp);
        config.admin_token = Some("eval-operator-token-0000".into());
        config.vector_storage = args.vector_storage;
        let (app, _) = App::open(config)?;
        let org = app.tenancy().create_org(NewOrg {
            name: "eval".into(),
            // Measurements are not held by a plan's limits.
            plan: Some("enterprise".into()),
            ..Default::default()
        })?;
        let org_access = app.identity().operator_org(&org.id.to_string())?;
        let ws = app
            .tenancy()
            .create_workspace(
                &org_access,
                NewWorkspace {
                    name: "eval".into(),
                    ..Default::default()
                },
            )?
            .id;
        let ctx = app.identity().operator_workspace(ws)?;
        app.knowledge().set_embedder(&ctx, embedder)?;
        let permit = app.knowledge().ingest_permit(&ctx)?;

        eprintln!("ingesting {} documents...", corpus.len());
        let started = Instant::now();
        for d in &corpus {
            app.knowledge().add_document(
                &permit,
                DocumentInput {
                    bytes: d.text.clone().into_bytes(),
                    title: Some(d.title.clone()),
                    external_id: Some(d.id.clone()),
                    is_text: true,
                    ..Default::default()
                },
            )?;
        }
        let bar = indicatif::ProgressBar::new_spinner();
        app.knowledge().run_jobs_until_idle(|| bar.tick());
        bar.finish_and_clear();
        let secs = started.elapsed().as_secs_f64();
        let chunks = app.tenancy().get_workspace(&ctx)?.stats.chunks;
        eprintln!(
            "ingested {} documents ({chunks} chunks) in {secs:.1} s ({:.0} chunks/s)",
            corpus.len(),
            chunks as f64 / secs
        );
        Ok(Built {
            app,
            ctx,
            tmp,
            dir: dir.to_path_buf(),
            queries,
            qrels,
        })
    }

    /// One mode's results for a query: (chunk id, external id, score), best first.
    pub(crate) fn list(&self, query: &str, mode: Mode) -> anyhow::Result<Vec<(i64, String, f32)>> {
        let resp = self.app.knowledge().search(
            &self.ctx,
            &SearchRequest {
                query: query.to_string(),
                mode: Some(mode),
                limit: Some(100),
                highlight: Some(false),
                ..Default::default()
            },
        )?;
        Ok(resp
            .results
            .into_iter()
            .filter_map(|r| r.external_id.map(|e| (r.chunk_id, e, r.score)))
            .collect())
    }

    /// A mode's raw candidates for a query (duplicates not collapsed), `pages` pages of
    /// `limit`, best first.
    pub(crate) fn raw(
        &self,
        query: &str,
        mode: Mode,
        limit: usize,
        pages: usize,
    ) -> anyhow::Result<Vec<crate::knowledge::SearchResult>> {
        let mut out = Vec::new();
        for page in 0..pages {
            let resp = self.app.knowledge().search(
                &self.ctx,
                &SearchRequest {
                    query: query.to_string(),
                    mode: Some(mode),
                    limit: Some(limit),
                    offset: Some(page * limit),
                    highlight: Some(false),
                    keep_duplicates: true,
                    ..Default::default()
                },
            )?;
            let n = resp.results.len();
            out.extend(resp.results);
            if n < limit {
                break;
            }
        }
        Ok(out)
    }

    fn close(self) {
        self.app.shutdown();
        let _ = std::fs::remove_dir_all(&self.tmp);
    }

    /// The table of each mode through the API's code path.
    fn table(&self, args: &EvalArgs) -> anyhow::Result<()> {
        let (app, ctx, queries, qrels) = (&self.app, &self.ctx, &self.queries, &self.qrels);
        if let Some(path) = &args.dump {
            let mut out = String::new();
            for q in queries {
                let mut lists = Vec::new();
                for mode in [Mode::Fulltext, Mode::Vector] {
                    let list: Vec<(String, f32)> = self
                        .list(&q.text, mode)?
                        .into_iter()
                        .map(|(_, e, s)| (e, s))
                        .collect();
                    lists.push(list);
                }
                out.push_str(
                    &serde_json::json!({"qid": q.id, "lexical": lists[0], "semantic": lists[1],
                        "qrels": qrels.get(&q.id)})
                    .to_string(),
                );
                out.push('\n');
            }
            std::fs::write(path, out)?;
        }
        // `codes`: the approximate path of large workspaces (`knowledge::ann`), forced here (the
        // evaluation sets are below its threshold), to show what it costs in quality.
        let mut runs: Vec<(String, Mode, Option<f32>, bool)> = vec![
            ("fulltext".into(), Mode::Fulltext, None, false),
            ("vector".into(), Mode::Vector, None, false),
            ("hybrid".into(), Mode::Hybrid, None, false),
            ("vector (codes)".into(), Mode::Vector, None, true),
            ("hybrid (codes)".into(), Mode::Hybrid, None, true),
        ];
        let boosts: Vec<f32> = if args.sweep {
            for w in [0.3, 0.4, 0.6, 0.7] {
                runs.push((format!("hybrid w={w}"), Mode::Hybrid, Some(w), false));
            }
            vec![1.0, 2.0, 3.0, 5.0]
        } else {
            vec![app
                .knowledge()
                .fusion()
                .read()
                .map(|f| f.title_boost)
                .unwrap_or(2.0)]
        };
        println!("{}: {} queries", self.dir.display(), queries.len());
        println!("| mode | nDCG@10 | recall@100 | p50 ms |");
        println!("|---|---|---|---|");
        for boost in boosts {
            if let Ok(mut f) = app.knowledge().fusion().write() {
                f.title_boost = boost;
            }
            for (name, mode, weight, codes) in runs.clone() {
                if let Ok(mut f) = app.knowledge().fusion().write() {
                    f.ann.min_vectors = if codes {
                        0
                    } else {
                        Fusion::default().ann.min_vectors
                    };
                }
                let name = if args.sweep {
                    format!("{name} title×{boost}")
                } else {
                    name
                };
                let (mut ndcg, mut recall) = (0.0, 0.0);
                let mut times = Vec::new();
                for q in queries {
                    let t = Instant::now();
                    let resp = app.knowledge().search(
                        ctx,
                        &SearchRequest {
                            query: q.text.clone(),
                            mode: Some(mode),
                            limit: Some(100),
                            highlight: Some(false),
                            hybrid_weight: weight,
                            ..Default::default()
                        },
                    )?;
                    times.push(t.elapsed().as_secs_f64() * 1000.0);
                    let docs: Vec<Vec<String>> =
                        resp.results.iter().map(result_documents).collect();
                    let docs: Vec<Vec<&str>> = docs
                        .iter()
                        .map(|d| d.iter().map(String::as_str).collect())
                        .collect();
                    let rels = qrels.get(&q.id).cloned().unwrap_or_default();
                    let (n, r) = credited(&docs, &rels, 10, 100);
                    ndcg += n;
                    recall += r;
                }
                times.sort_by(f64::total_cmp);
                let nq = queries.len().max(1) as f64;
                println!(
                    "| {name} | {:.4} | {:.3} | {:.1} |",
                    ndcg / nq,
                    recall / nq,
                    times.get(times.len() / 2).copied().unwrap_or(0.0)
                );
            }
        }
        Ok(())
    }
}

/// The queries that have judgements, and the judgements.
fn read_queries(args: &EvalArgs, dir: &Path) -> anyhow::Result<(Vec<QueryRow>, Qrels)> {
    let queries: Vec<QueryRow> = read_jsonl(&dir.join("queries.jsonl"))?;
    let qrels = read_qrels(&dir.join("qrels").join(&args.qrels))?;
    let queries = queries
        .into_iter()
        .filter(|q| qrels.contains_key(&q.id))
        .collect();
    Ok((queries, qrels))
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("enclave-eval-{}", crate::ids::new_id().simple()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ndcg_and_recall() {
        let rels = HashMap::from([
            ("a".to_string(), 2),
            ("b".to_string(), 1),
            ("z".to_string(), 0),
        ]);
        let perfect = vec!["a".to_string(), "b".to_string()];
        let (n, r) = ndcg_recall(&perfect, &rels, 10, 100);
        assert!((n - 1.0).abs() < 1e-9 && (r - 1.0).abs() < 1e-9);
        let swapped = vec!["b".to_string(), "a".to_string()];
        let (n, _) = ndcg_recall(&swapped, &rels, 10, 100);
        assert!(n < 1.0 && n > 0.7);
        let (n, r) = ndcg_recall(&["x".to_string()], &rels, 10, 100);
        assert_eq!((n, r), (0.0, 0.0));
    }

    /// A result stands for its duplicates' documents: credited at the best grade among those
    /// not credited before, each document once, a passage once; a result standing only for
    /// documents already credited takes no rank.
    #[test]
    fn duplicates_are_credited_once() {
        let rels = HashMap::from([
            ("a".to_string(), 2),
            ("b".to_string(), 1),
            ("c".to_string(), 1),
        ]);
        let ideal = 2.0 + 1.0 / 3f64.log2() + 1.0 / 4f64.log2();
        // "x" (not relevant) lists a copy in "a": credited as "a".
        let (n, r) = credited(&[vec!["x", "a"], vec!["b"], vec!["c"]], &rels, 10, 100);
        assert!((n - 1.0).abs() < 1e-9 && (r - 1.0).abs() < 1e-9, "{n} {r}");
        // One passage standing for "a" and "b" gains once (2), at one rank; "b" is found.
        let (n, r) = credited(&[vec!["a", "b"], vec!["c"]], &rels, 10, 100);
        let want = (2.0 + 1.0 / 3f64.log2()) / ideal;
        assert!((n - want).abs() < 1e-9 && (r - 1.0).abs() < 1e-9, "{n} {r}");
        // "a" again (a second chunk of it) takes no rank and gains nothing; a result that adds
        // a new document ("y", not relevant) takes a rank, with the gain of "y" only.
        let (n, _) = credited(
            &[vec!["a"], vec!["a"], vec!["b"], vec!["c"]],
            &rels,
            10,
            100,
        );
        assert!((n - 1.0).abs() < 1e-9, "{n}");
        let (n, _) = credited(
            &[vec!["a"], vec!["y", "a"], vec!["b"], vec!["c"]],
            &rels,
            10,
            100,
        );
        let want = (2.0 + 1.0 / 4f64.log2() + 1.0 / 5f64.log2()) / ideal;
        assert!((n - want).abs() < 1e-9, "{n}");
        // Without the duplicates only the result's own document counts.
        let (n, r) = credited(&[vec!["x"], vec!["b"], vec!["c"]], &rels, 10, 100);
        assert!(n < 0.5 && (r - 2.0 / 3.0).abs() < 1e-9, "{n} {r}");
        // recall@rk reads the first rk ranks only.
        let (_, r) = credited(&[vec!["x"], vec!["a", "b"]], &rels, 10, 1);
        assert_eq!(r, 0.0);
    }
}
