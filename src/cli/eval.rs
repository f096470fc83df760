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
    let dcg: f64 = ranked
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, d)| *rels.get(d).unwrap_or(&0) as f64 / (i as f64 + 2.0).log2())
        .sum();
    let mut ideal: Vec<u32> = rels.values().copied().collect();
    ideal.sort_unstable_by(|a, b| b.cmp(a));
    let idcg: f64 = ideal
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, r)| *r as f64 / (i as f64 + 2.0).log2())
        .sum();
    let relevant = rels.values().filter(|r| **r > 0).count();
    let found = ranked
        .iter()
        .take(rk)
        .filter(|d| rels.get(*d).is_some_and(|r| *r > 0))
        .count();
    (
        if idcg > 0.0 { dcg / idcg } else { 0.0 },
        if relevant > 0 {
            found as f64 / relevant as f64
        } else {
            0.0
        },
    )
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
        cv::report(&sets, args.folds.max(2));
        return Ok(());
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
                    let mut seen = std::collections::HashSet::new();
                    let ranked: Vec<String> = resp
                        .results
                        .into_iter()
                        .filter_map(|r| r.external_id)
                        .filter(|d| seen.insert(d.clone()))
                        .collect();
                    let rels = qrels.get(&q.id).cloned().unwrap_or_default();
                    let (n, r) = ndcg_recall(&ranked, &rels, 10, 100);
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
}
