//! `enclave eval --cv`: cross-validation of the fusion constants on stored candidate lists.
//!
//! Each set is ingested once per embedder; its queries' full-text and vector lists (top 100,
//! through the API's search) are kept (`--cache`), and every fusion candidate is replayed on
//! them with the product's own [`fuse`]. Constants are chosen on some queries and reported on
//! others: k folds within a set (tuned on the other k − 1 folds), and across sets (tuned on all
//! of one set, reported per fold of the other), both directions. The tuning objective is the
//! mean nDCG@10 of hybrid over the training groups (set × embedder), each group weighing the
//! same whatever its number of queries; the peak constants are shared by the embedders, the
//! prior weight is each embedder's own.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{ndcg_recall, Built, EvalArgs};
use crate::knowledge::embedders::EmbedderConfig;
use crate::knowledge::search::{fuse, Fusion, Mode};

/// One query's candidate lists: (chunk id, external id, score), best first.
#[derive(Serialize, Deserialize)]
pub(crate) struct QueryLists {
    qid: String,
    lexical: Vec<(i64, String, f32)>,
    semantic: Vec<(i64, String, f32)>,
    rels: HashMap<String, u32>,
}

/// A set's lists under one embedder.
#[derive(Serialize, Deserialize)]
pub(crate) struct SetLists {
    set: String,
    embedder: String,
    queries: Vec<QueryLists>,
}

fn embedder_name(e: &EmbedderConfig) -> &'static str {
    match e {
        EmbedderConfig::Minilm => "minilm",
        EmbedderConfig::Static => "static",
        _ => "other",
    }
}

/// The lists of `dir` under `embedder`: from the cache, or built (and cached).
pub(super) fn lists(
    args: &EvalArgs,
    dir: &Path,
    embedder: EmbedderConfig,
) -> anyhow::Result<SetLists> {
    let set = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "set".into());
    let name = embedder_name(&embedder);
    let cached = args
        .cache
        .as_ref()
        .map(|c| c.join(format!("{set}-{name}-{}.json", args.qrels)));
    if let Some(path) = cached.as_ref().filter(|p| p.exists()) {
        let text = std::fs::read_to_string(path)?;
        let lists: SetLists = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e} (delete it to rebuild)", path.display()))?;
        eprintln!(
            "{set} / {name}: {} queries from {}",
            lists.queries.len(),
            path.display()
        );
        return Ok(lists);
    }
    let built = Built::new(args, dir, embedder)?;
    let mut queries = Vec::new();
    for q in &built.queries {
        queries.push(QueryLists {
            qid: q.id.clone(),
            lexical: built.list(&q.text, Mode::Fulltext)?,
            semantic: built.list(&q.text, Mode::Vector)?,
            rels: built.qrels.get(&q.id).cloned().unwrap_or_default(),
        });
    }
    built.close();
    queries.sort_by(|a, b| a.qid.cmp(&b.qid));
    let lists = SetLists {
        set,
        embedder: name.into(),
        queries,
    };
    if let Some(path) = cached {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, serde_json::to_string(&lists)?)?;
    }
    Ok(lists)
}

/// The candidate constants: prior weight × peak rank × peak exponent. The exponent is kept
/// above 0: the peak term is what lets a strong exact match lead (module `fusion`).
pub(crate) fn grid() -> Vec<Fusion> {
    let mut out = Vec::new();
    for w in 4..=19 {
        for peak_rank in [5, 10, 20] {
            for gamma in [1.0f32, 1.5, 2.0] {
                out.push(Fusion {
                    weight: w as f32 * 0.05,
                    peak_rank,
                    gamma,
                    ..Fusion::default()
                });
            }
        }
    }
    out
}

/// Distinct documents in the order of their best chunk.
fn documents<'a>(chunks: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut seen = HashSet::new();
    chunks.filter(|d| seen.insert(*d)).cloned().collect()
}

/// (nDCG@10, recall@100) of a query's fulltext, vector and hybrid (under `f`) rankings.
fn hybrid(q: &QueryLists, f: &Fusion) -> (f64, f64) {
    let ids = |l: &[(i64, String, f32)]| -> Vec<(i64, f32)> {
        l.iter().map(|(c, _, s)| (*c, *s)).collect()
    };
    let ext: HashMap<i64, &String> = q
        .lexical
        .iter()
        .chain(&q.semantic)
        .map(|(c, e, _)| (*c, e))
        .collect();
    let fused = fuse(&ids(&q.lexical), &ids(&q.semantic), f);
    let ranked = documents(fused.ranked.iter().filter_map(|(c, _)| ext.get(c).copied()));
    ndcg_recall(&ranked, &q.rels, 10, 100)
}

fn single(list: &[(i64, String, f32)], rels: &HashMap<String, u32>) -> (f64, f64) {
    ndcg_recall(&documents(list.iter().map(|x| &x.1)), rels, 10, 100)
}

/// Per query of one group: fulltext, vector, and hybrid under each grid candidate.
struct Scored {
    set: String,
    embedder: String,
    fulltext: Vec<(f64, f64)>,
    vector: Vec<(f64, f64)>,
    /// [candidate][query]
    hybrid: Vec<Vec<(f64, f64)>>,
    /// The product's default constants.
    default: Vec<(f64, f64)>,
}

fn mean(xs: impl Iterator<Item = (f64, f64)>) -> (f64, f64) {
    let (mut a, mut b, mut n) = (0.0, 0.0, 0usize);
    for (x, y) in xs {
        a += x;
        b += y;
        n += 1;
    }
    if n == 0 {
        (0.0, 0.0)
    } else {
        (a / n as f64, b / n as f64)
    }
}

/// Mean nDCG@10 of candidate `c` over `train` ((group, query indices) pairs), each group
/// weighing the same.
fn objective(groups: &[Scored], train: &[&(usize, Vec<usize>)], c: usize) -> f64 {
    let per_group: Vec<f64> = train
        .iter()
        .filter(|(_, qs)| !qs.is_empty())
        .map(|(g, qs)| mean(qs.iter().map(|&q| groups[*g].hybrid[c][q])).0)
        .collect();
    per_group.iter().sum::<f64>() / per_group.len().max(1) as f64
}

/// The best candidate for each embedder over `train`: the peak constants shared by all
/// embedders, the prior weight each embedder's own. Ties go to the first in grid order.
fn tune(
    groups: &[Scored],
    train: &[(usize, Vec<usize>)],
    grid: &[Fusion],
) -> HashMap<String, usize> {
    let mut embedders: Vec<String> = train
        .iter()
        .map(|(g, _)| groups[*g].embedder.clone())
        .collect();
    embedders.sort();
    embedders.dedup();
    let mut shapes: Vec<(usize, f32)> = Vec::new();
    for f in grid {
        if !shapes.contains(&(f.peak_rank, f.gamma)) {
            shapes.push((f.peak_rank, f.gamma));
        }
    }
    let mut best: (f64, HashMap<String, usize>) = (f64::MIN, HashMap::new());
    for shape in shapes {
        let mut total = 0.0;
        let mut pick = HashMap::new();
        for e in &embedders {
            let tr: Vec<&(usize, Vec<usize>)> = train
                .iter()
                .filter(|(g, _)| &groups[*g].embedder == e)
                .collect();
            let mut top = (0, f64::MIN);
            for (c, f) in grid.iter().enumerate() {
                if (f.peak_rank, f.gamma) != shape {
                    continue;
                }
                let o = objective(groups, &tr, c);
                if o > top.1 + 1e-12 {
                    top = (c, o);
                }
            }
            total += top.1;
            pick.insert(e.clone(), top.0);
        }
        if total > best.0 + 1e-12 {
            best = (total, pick);
        }
    }
    best.1
}

fn fold_of(q: usize, folds: usize) -> usize {
    q % folds
}

fn constants(f: &Fusion) -> String {
    format!("w={:.2} k={} γ={}", f.weight, f.peak_rank, f.gamma)
}

/// One table row: fulltext, vector and hybrid over `qs` of group `g`, hybrid per query under
/// `chosen[q]` candidates.
fn row(label: &str, g: &Scored, qs: &[usize], chosen: &[usize], note: &str) -> (f64, f64) {
    let ft = mean(qs.iter().map(|&q| g.fulltext[q]));
    let vec = mean(qs.iter().map(|&q| g.vector[q]));
    let hy = mean(qs.iter().zip(chosen).map(|(&q, &c)| g.hybrid[c][q]));
    let best = ft.0.max(vec.0);
    println!(
        "| {} | {} | {label} | {} | {:.4} | {:.4} | **{:.4}** | {:+.4} | {:.3} | {:.3} | {:.3} | {note} |",
        g.embedder,
        g.set,
        qs.len(),
        ft.0,
        vec.0,
        hy.0,
        hy.0 - best,
        ft.1,
        vec.1,
        hy.1
    );
    (hy.0 - best, hy.0)
}

const HEADER: &str = "| embedder | set | fold | queries | fulltext nDCG@10 | vector nDCG@10 | hybrid nDCG@10 | hybrid − best | fulltext R@100 | vector R@100 | hybrid R@100 | constants |\n|---|---|---|---|---|---|---|---|---|---|---|---|";

/// Prints the cross-validation tables.
pub(super) fn report(sets: &[SetLists], folds: usize) {
    let grid = grid();
    let default = Fusion::default();
    let groups: Vec<Scored> = sets
        .iter()
        .map(|s| Scored {
            set: s.set.clone(),
            embedder: s.embedder.clone(),
            fulltext: s
                .queries
                .iter()
                .map(|q| single(&q.lexical, &q.rels))
                .collect(),
            vector: s
                .queries
                .iter()
                .map(|q| single(&q.semantic, &q.rels))
                .collect(),
            hybrid: grid
                .iter()
                .map(|f| s.queries.iter().map(|q| hybrid(q, f)).collect())
                .collect(),
            default: {
                let config = match s.embedder.as_str() {
                    "minilm" => EmbedderConfig::Minilm,
                    _ => EmbedderConfig::Static,
                };
                let f = default.for_embedder(&config);
                s.queries.iter().map(|q| hybrid(q, &f)).collect()
            },
        })
        .collect();
    let names: Vec<String> = {
        let mut v: Vec<String> = groups.iter().map(|g| g.set.clone()).collect();
        v.dedup();
        v
    };
    let all = |g: &Scored| (0..g.fulltext.len()).collect::<Vec<usize>>();
    let mut worst = f64::MAX;

    println!(
        "## Within each set: {folds} folds (query i is in fold i mod {folds}, queries sorted by id); \
         constants tuned on the other folds of the same set (peak constants shared by the run's embedders, prior weight per embedder)\n"
    );
    println!("{HEADER}");
    for set in &names {
        let members: Vec<usize> = (0..groups.len())
            .filter(|&i| &groups[i].set == set)
            .collect();
        for &gi in &members {
            let g = &groups[gi];
            let n = g.fulltext.len();
            let mut oof = vec![0; n];
            for fold in 0..folds {
                let test: Vec<usize> = (0..n).filter(|&q| fold_of(q, folds) == fold).collect();
                if test.is_empty() {
                    continue;
                }
                let train: Vec<(usize, Vec<usize>)> = members
                    .iter()
                    .map(|&m| {
                        let len = groups[m].fulltext.len();
                        (m, (0..len).filter(|&q| fold_of(q, folds) != fold).collect())
                    })
                    .collect();
                let c = tune(&groups, &train, &grid)[&g.embedder];
                for &q in &test {
                    oof[q] = c;
                }
                let (d, _) = row(
                    &format!("{}", fold + 1),
                    g,
                    &test,
                    &vec![c; test.len()],
                    &constants(&grid[c]),
                );
                worst = worst.min(d);
            }
            row("all (out of fold)", g, &all(g), &oof, "");
        }
    }

    if names.len() >= 2 {
        println!(
            "\n## Across sets: constants tuned on all queries of the other set(s), reported per fold of this one\n"
        );
        println!("{HEADER}");
        for set in &names {
            let train: Vec<(usize, Vec<usize>)> = (0..groups.len())
                .filter(|&i| &groups[i].set != set)
                .map(|i| (i, all(&groups[i])))
                .collect();
            let picks = tune(&groups, &train, &grid);
            for g in groups.iter().filter(|g| &g.set == set) {
                let Some(&c) = picks.get(&g.embedder) else {
                    continue;
                };
                let n = g.fulltext.len();
                for fold in 0..folds {
                    let test: Vec<usize> = (0..n).filter(|&q| fold_of(q, folds) == fold).collect();
                    if test.is_empty() {
                        continue;
                    }
                    let (d, _) = row(
                        &format!("{}", fold + 1),
                        g,
                        &test,
                        &vec![c; test.len()],
                        &format!("tuned on the others: {}", constants(&grid[c])),
                    );
                    worst = worst.min(d);
                }
                row(
                    "all",
                    g,
                    &all(g),
                    &vec![c; n],
                    &format!("tuned on the others: {}", constants(&grid[c])),
                );
            }
        }
    }

    let train: Vec<(usize, Vec<usize>)> = (0..groups.len()).map(|i| (i, all(&groups[i]))).collect();
    let picks = tune(&groups, &train, &grid);
    let mut names: Vec<String> = picks
        .iter()
        .map(|(e, c)| format!("{e}: {}", constants(&grid[*c])))
        .collect();
    names.sort();
    println!(
        "\n## Tuned on everything above (what a product default would take): {}\n",
        names.join("; ")
    );
    println!("{HEADER}");
    for g in &groups {
        let n = g.fulltext.len();
        let c = picks.get(&g.embedder).copied().unwrap_or(0);
        row("all, tuned on all", g, &all(g), &vec![c; n], "in-sample");
        let ft = mean(g.fulltext.iter().copied());
        let vec = mean(g.vector.iter().copied());
        let hy = mean(g.default.iter().copied());
        println!(
            "| {} | {} | all, product default | {n} | {:.4} | {:.4} | **{:.4}** | {:+.4} | {:.3} | {:.3} | {:.3} | {} |",
            g.embedder,
            g.set,
            ft.0,
            vec.0,
            hy.0,
            hy.0 - ft.0.max(vec.0),
            ft.1,
            vec.1,
            hy.1,
            constants(&default.for_embedder(&match g.embedder.as_str() {
                "minilm" => EmbedderConfig::Minilm,
                _ => EmbedderConfig::Static,
            }))
        );
    }
    println!(
        "\nWorst fold (hybrid − the better of fulltext and vector, out of sample): {worst:+.4}"
    );
}
