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

use super::{credited, Built, EvalArgs};
use crate::knowledge::embedders::EmbedderConfig;
use crate::knowledge::search::{collapse, fuse, Fusion, Mode};
use crate::knowledge::SearchResult;

/// One query's raw candidate lists (chunk id, score), best first, as the fusion reads them:
/// duplicates not collapsed, each list as deep as a hybrid search at limit 100 reads it.
#[derive(Serialize, Deserialize)]
pub(crate) struct QueryLists {
    qid: String,
    lexical: Vec<(i64, f32)>,
    semantic: Vec<(i64, f32)>,
    rels: HashMap<String, u32>,
}

/// A chunk of the lists: its document's external id and its text (what collapsing compares).
#[derive(Serialize, Deserialize)]
pub(crate) struct Chunk {
    external_id: String,
    text: String,
}

/// A set's lists under one embedder.
#[derive(Serialize, Deserialize)]
pub(crate) struct SetLists {
    set: String,
    embedder: String,
    chunks: HashMap<i64, Chunk>,
    queries: Vec<QueryLists>,
}

fn embedder_name(e: &EmbedderConfig) -> &'static str {
    match e {
        EmbedderConfig::Minilm => "minilm",
        EmbedderConfig::Static => "static",
        _ => "other",
    }
}

/// Results per page of the evaluation (nDCG@10 and recall@100 read the first 100).
const LIMIT: usize = 100;

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
    // v2: raw lists and chunk texts (v1 held lists collapsed within each list).
    let cached = args
        .cache
        .as_ref()
        .map(|c| c.join(format!("{set}-{name}-{}.v2.json", args.qrels)));
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
    let mut chunks = HashMap::new();
    for q in &built.queries {
        let mut raw = |mode: Mode| -> anyhow::Result<Vec<(i64, f32)>> {
            // The depth a hybrid search at limit 100 reads from each list (two pages of the
            // uncollapsed candidates).
            let mut out = Vec::new();
            for page in built.raw(&q.text, mode, LIMIT, 2)? {
                out.push((page.chunk_id, page.score));
                if let Some(e) = page.external_id {
                    chunks.entry(page.chunk_id).or_insert(Chunk {
                        external_id: e,
                        text: page.text,
                    });
                }
            }
            Ok(out)
        };
        let lexical = raw(Mode::Fulltext)?;
        let semantic = raw(Mode::Vector)?;
        queries.push(QueryLists {
            qid: q.id.clone(),
            lexical,
            semantic,
            rels: built.qrels.get(&q.id).cloned().unwrap_or_default(),
        });
    }
    built.close();
    queries.sort_by(|a, b| a.qid.cmp(&b.qid));
    let lists = SetLists {
        set,
        embedder: name.into(),
        chunks,
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

/// The duplicate relation among one query's candidates, by the live rule
/// ([`collapse`] of the two texts), so that a replay collapses exactly as a search does.
struct Duplicates {
    /// Each chunk that has duplicates among the candidates, with them.
    partners: HashMap<i64, HashSet<i64>>,
}

/// Lowercased word 3-grams of a text (hashed): two texts can be duplicates only if they share
/// one (or one has fewer than three words); a prefilter that spares most pairs a comparison.
fn trigrams(text: &str) -> Option<HashSet<u64>> {
    use std::hash::{Hash, Hasher};
    let words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    if words.len() < 3 {
        return None;
    }
    Some(
        words
            .windows(3)
            .map(|w| {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                w.hash(&mut h);
                h.finish()
            })
            .collect(),
    )
}

fn as_result(id: i64, c: &Chunk) -> SearchResult {
    SearchResult {
        document_id: c.external_id.clone(),
        external_id: Some(c.external_id.clone()),
        chunk_id: id,
        title: String::new(),
        heading_path: String::new(),
        text: c.text.clone(),
        score: 0.0,
        metadata: serde_json::Value::Null,
        highlights: Vec::new(),
        duplicates: Vec::new(),
        explain: None,
    }
}

impl Duplicates {
    fn of(set: &SetLists, q: &QueryLists, grams: &mut HashMap<i64, Option<HashSet<u64>>>) -> Self {
        let mut ids: Vec<i64> = q.lexical.iter().chain(&q.semantic).map(|x| x.0).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.retain(|id| set.chunks.contains_key(id));
        for id in &ids {
            grams
                .entry(*id)
                .or_insert_with(|| trigrams(&set.chunks[id].text));
        }
        let mut partners: HashMap<i64, HashSet<i64>> = HashMap::new();
        for (i, a) in ids.iter().enumerate() {
            for b in &ids[i + 1..] {
                let maybe = match (&grams[a], &grams[b]) {
                    (Some(x), Some(y)) => !x.is_disjoint(y),
                    _ => true,
                };
                if maybe
                    && collapse(vec![
                        as_result(*a, &set.chunks[a]),
                        as_result(*b, &set.chunks[b]),
                    ])
                    .len()
                        == 1
                {
                    partners.entry(*a).or_default().insert(*b);
                    partners.entry(*b).or_default().insert(*a);
                }
            }
        }
        Duplicates { partners }
    }

    /// `ranked` collapsed as a search collapses it: each kept chunk with the chunks collapsed
    /// onto it (the first kept one each duplicates), up to `limit` kept; as a search, it reads
    /// no candidate once `limit` are kept (a copy ranked below the last is not listed).
    fn collapse(&self, ranked: impl Iterator<Item = i64>, limit: usize) -> Vec<Vec<i64>> {
        let mut kept: Vec<Vec<i64>> = Vec::new();
        for id in ranked {
            if kept.len() >= limit {
                break;
            }
            let first = self
                .partners
                .get(&id)
                .and_then(|p| kept.iter().position(|k| p.contains(&k[0])));
            match first {
                Some(i) => kept[i].push(id),
                None if kept.len() < limit => kept.push(vec![id]),
                None => break,
            }
        }
        kept
    }
}

/// A query's replay context: its duplicate relation and its chunks' documents.
struct Replay<'a> {
    set: &'a SetLists,
    q: &'a QueryLists,
    dups: Duplicates,
}

impl Replay<'_> {
    /// (nDCG@10, recall@100) of a ranking of chunks, collapsed then credited as `enclave eval`
    /// credits a live search's results.
    fn score(&self, ranked: impl Iterator<Item = i64>) -> (f64, f64) {
        let kept = self
            .dups
            .collapse(ranked.filter(|id| self.set.chunks.contains_key(id)), LIMIT);
        let docs: Vec<Vec<&str>> = kept
            .iter()
            .map(|k| {
                k.iter()
                    .map(|id| self.set.chunks[id].external_id.as_str())
                    .collect()
            })
            .collect();
        credited(&docs, &self.q.rels, 10, LIMIT)
    }

    fn hybrid(&self, f: &Fusion) -> (f64, f64) {
        let fused = fuse(&self.q.lexical, &self.q.semantic, f);
        self.score(fused.ranked.iter().map(|x| x.0))
    }

    /// The replayed collapse must be the live one: checked on the product default's ranking.
    fn check(&self, f: &Fusion) -> anyhow::Result<()> {
        let fused = fuse(&self.q.lexical, &self.q.semantic, f);
        let ranked: Vec<i64> = fused
            .ranked
            .iter()
            .map(|x| x.0)
            .filter(|id| self.set.chunks.contains_key(id))
            .collect();
        let replay = self.dups.collapse(ranked.iter().copied(), LIMIT);
        let live: Vec<Vec<i64>> = collapse(
            ranked
                .iter()
                .map(|id| as_result(*id, &self.set.chunks[id]))
                .collect(),
        )
        .into_iter()
        .take(LIMIT)
        .map(|r| {
            std::iter::once(r.chunk_id)
                .chain(r.duplicates.iter().map(|d| d.chunk_id))
                .collect()
        })
        .collect();
        // The live collapse reads every candidate; the replay stops at `LIMIT` kept, so only
        // the kept ones and the duplicates read before the stop are compared.
        let cut = |v: &[Vec<i64>]| -> Vec<Vec<i64>> {
            let stop = replay.iter().flatten().count();
            let read: HashSet<i64> = ranked.iter().take(stop).copied().collect();
            v.iter()
                .map(|k| k.iter().copied().filter(|id| read.contains(id)).collect())
                .collect()
        };
        if cut(&live) != cut(&replay) {
            anyhow::bail!(
                "{} / {} query {}: the replayed collapse differs from the live one",
                self.set.set,
                self.set.embedder,
                self.q.qid
            );
        }
        Ok(())
    }
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
    let shape = |f: &Fusion| (f.peak_rank, f.gamma);
    let mut shapes: Vec<(usize, f32)> = Vec::new();
    for f in grid {
        if !shapes.contains(&shape(f)) {
            shapes.push(shape(f));
        }
    }
    let mut best: (f64, HashMap<String, usize>) = (f64::MIN, HashMap::new());
    for sh in shapes {
        let mut total = 0.0;
        let mut pick = HashMap::new();
        for e in &embedders {
            let tr: Vec<&(usize, Vec<usize>)> = train
                .iter()
                .filter(|(g, _)| &groups[*g].embedder == e)
                .collect();
            let mut top = (0, f64::MIN);
            for (c, f) in grid.iter().enumerate() {
                if shape(f) != sh {
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
    // Per query: hybrid − the input that is better on these queries.
    let diffs: Vec<f64> = qs
        .iter()
        .zip(chosen)
        .map(|(&q, &c)| {
            let other = if ft.0 >= vec.0 {
                g.fulltext[q]
            } else {
                g.vector[q]
            };
            g.hybrid[c][q].0 - other.0
        })
        .collect();
    println!(
        "| {} | {} | {label} | {} | {:.4} | {:.4} | **{:.4}** | {:+.4} | {} | {:.3} | {:.3} | {:.3} | {note} |",
        g.embedder,
        g.set,
        qs.len(),
        ft.0,
        vec.0,
        hy.0,
        hy.0 - best,
        significance(&diffs),
        ft.1,
        vec.1,
        hy.1
    );
    (hy.0 - best, hy.0)
}

/// Paired comparison of per-query differences: wins/losses (ties left out), the two-sided
/// sign test's p, and the 95% interval of the mean difference by a paired bootstrap (10,000
/// resamples of the queries, a fixed seed).
fn significance(diffs: &[f64]) -> String {
    const EPS: f64 = 1e-9;
    let wins = diffs.iter().filter(|d| **d > EPS).count();
    let losses = diffs.iter().filter(|d| **d < -EPS).count();
    let n = wins + losses;
    // P(X ≤ min(w, l)) · 2 for X ~ Binomial(n, 1/2).
    let mut tail = 0.0;
    let mut choose = 1.0f64;
    for k in 0..=wins.min(losses) {
        if k > 0 {
            choose = choose * (n - k + 1) as f64 / k as f64;
        }
        tail += choose;
    }
    let p = if n == 0 {
        1.0
    } else {
        (2.0 * tail / 2f64.powi(n as i32)).min(1.0)
    };
    let mut seed: u64 = 0x5EED;
    let mut next = || {
        seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut means: Vec<f64> = (0..10_000)
        .map(|_| {
            let len = diffs.len().max(1);
            (0..diffs.len())
                .map(|_| diffs[(next() % len as u64) as usize])
                .sum::<f64>()
                / len as f64
        })
        .collect();
    means.sort_by(f64::total_cmp);
    format!(
        "{wins}/{losses}, p={p:.2}, [{:+.3}, {:+.3}]",
        means[250], means[9_749]
    )
}

const HEADER: &str = "| embedder | set | fold | queries | fulltext nDCG@10 | vector nDCG@10 | hybrid nDCG@10 | hybrid − best | vs best: wins/losses, sign p, 95% CI | fulltext R@100 | vector R@100 | hybrid R@100 | constants |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|";

/// Prints the cross-validation tables.
pub(super) fn report(sets: &[SetLists], folds: usize) -> anyhow::Result<()> {
    let grid = grid();
    let default = Fusion::default();
    let mut groups: Vec<Scored> = Vec::new();
    for s in sets {
        let config = match s.embedder.as_str() {
            "minilm" => EmbedderConfig::Minilm,
            _ => EmbedderConfig::Static,
        };
        let product = default.for_embedder(&config);
        let mut grams = HashMap::new();
        let replays: Vec<Replay> = s
            .queries
            .iter()
            .map(|q| Replay {
                set: s,
                q,
                dups: Duplicates::of(s, q, &mut grams),
            })
            .collect();
        for r in &replays {
            r.check(&product)?;
        }
        groups.push(Scored {
            set: s.set.clone(),
            embedder: s.embedder.clone(),
            fulltext: replays
                .iter()
                .map(|r| r.score(r.q.lexical.iter().map(|x| x.0)))
                .collect(),
            vector: replays
                .iter()
                .map(|r| r.score(r.q.semantic.iter().map(|x| x.0)))
                .collect(),
            hybrid: grid
                .iter()
                .map(|f| replays.iter().map(|r| r.hybrid(f)).collect())
                .collect(),
            default: replays.iter().map(|r| r.hybrid(&product)).collect(),
        });
    }
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
            "| {} | {} | all, product default | {n} | {:.4} | {:.4} | **{:.4}** | {:+.4} | | {:.3} | {:.3} | {:.3} | {} |",
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSAGE: &str = "Ownership is a set of rules that govern how a Rust program manages memory. All programs have to manage the way they use a computer's memory while running.";

    /// The replay collapses as the live path does (`search::collapse`), and a duplicate's
    /// document is credited on the result it is collapsed onto.
    #[test]
    fn replay_collapses_after_fusion_and_credits_duplicates() {
        let texts = [
            (1, "d1", PASSAGE.to_string()),
            (2, "d2", PASSAGE.to_uppercase()),
            (
                3,
                "d3",
                "Cargo is Rust's build system and package manager.".to_string(),
            ),
            (
                4,
                "d4",
                format!("Chapter four. {PASSAGE} And more words follow here."),
            ),
            (5, "d5", "Rust memory rules".to_string()),
        ];
        let set = SetLists {
            set: "t".into(),
            embedder: "static".into(),
            chunks: texts
                .iter()
                .map(|(id, e, t)| {
                    (
                        *id,
                        Chunk {
                            external_id: e.to_string(),
                            text: t.clone(),
                        },
                    )
                })
                .collect(),
            queries: Vec::new(),
        };
        // Full text ranks the copy (d2) first, vector the original (d1); d2 is the relevant one.
        let q = QueryLists {
            qid: "q".into(),
            lexical: vec![(2, 9.0), (3, 5.0), (5, 1.0)],
            semantic: vec![(1, 0.9), (4, 0.8), (2, 0.7), (3, 0.2)],
            rels: HashMap::from([("d2".to_string(), 1)]),
        };
        let mut grams = HashMap::new();
        let replay = Replay {
            set: &set,
            q: &q,
            dups: Duplicates::of(&set, &q, &mut grams),
        };
        let f = Fusion::default();
        replay
            .check(&f)
            .expect("the replay collapses as the live path");
        let fused: Vec<i64> = fuse(&q.lexical, &q.semantic, &f)
            .ranked
            .iter()
            .map(|x| x.0)
            .collect();
        let kept = replay.dups.collapse(fused.iter().copied(), LIMIT);
        // 1, 2 and 4 are one passage: one result, the others listed on it.
        assert_eq!(kept.len(), 3, "{kept:?}");
        let group = kept
            .iter()
            .find(|k| k.contains(&1))
            .expect("d1 kept or listed");
        assert!(group.contains(&2) && group.contains(&4), "{kept:?}");
        // The vector list alone: d1 first stands for its copies d4 and d2, so d2 is credited.
        let (n, r) = replay.score(q.semantic.iter().map(|x| x.0));
        assert!((n - 1.0).abs() < 1e-9 && (r - 1.0).abs() < 1e-9, "{n} {r}");
    }
}
