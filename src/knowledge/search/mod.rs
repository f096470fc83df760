//! Search: `fulltext` (Tantivy BM25 over title, heading path and text, English-stemmed, title
//! boosted), `vector` (sqlite-vec KNN, or the in-memory binary codes of [`super::ann`] for large
//! spaces) and `hybrid` (both, fused). Filters resolve in SQLite to the set of allowed chunks,
//! which every mode honours: full text through a term set on `chunk_id` (few chunks) or a
//! fast-field filter on its matches (many), vectors through the codes restricted to the set (or,
//! in a small space, an exact scan of few allowed chunks, a post-filtered deep KNN of many).
//! Results are hydrated from SQLite, the source of truth.
//!
//! One file per stage: `lexical` (the query text: plain words or the query language, its
//! limits and fields; the full-text list), `vector` (the query vector and the vector list),
//! `allowed` (a filter's allowed chunks and their per-workspace cache), `fusion` (the hybrid
//! fusion of the two lists), `hydrate` (results read from SQLite, highlights). This module holds
//! the request and response types and [`search`], which runs the stages.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::caches;
use super::embedders::Embedders;
use super::filter::Filter;
use crate::error::{Error, Result};
use crate::workspace::Workspace;

mod allowed;
mod dedup;
mod fusion;
mod hydrate;
mod lexical;
mod vector;

pub use allowed::{Allowed, AllowedCache};
pub use fusion::{fuse, Fused, Fusion, Scale, Weights};
pub use lexical::{MAX_QUERY_NESTING, SEARCHABLE_FIELDS};

use hydrate::{highlighter, hydrate};
use lexical::{fulltext, lexical_query};
use vector::vector;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Hybrid,
    Fulltext,
    Vector,
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    #[serde(default)]
    pub query: String,
    #[serde(default)]
    pub mode: Option<Mode>,
    pub limit: Option<usize>,
    pub offset: Option<usize>,
    pub filter: Option<Value>,
    /// The query vector, for workspaces whose embedder is `user-provided`.
    pub vector: Option<Vec<f32>>,
    /// Whether to compute highlights (default true).
    pub highlight: Option<bool>,
    /// Prior weight of the vector list in hybrid fusion, 0..=1 (default: the workspace
    /// embedder's, chosen by cross-validation; the full-text list gets the rest). Each query
    /// then shifts it towards the more peaked list.
    pub hybrid_weight: Option<f32>,
    /// Return, per result, where it came from: its rank and raw score in each list and, in
    /// hybrid mode, the normalized scores, the weights and their contributions (default false).
    pub explain: Option<bool>,
    /// Read the query as plain words, without the query language (a chat message is text, not
    /// a query). Not part of the API.
    #[serde(skip)]
    pub plain_words: bool,
    /// Return the ranked candidates as they are, duplicates not collapsed (offline evaluation,
    /// `enclave eval --cv`, replays fusion and collapsing on them). Not part of the API.
    #[serde(skip)]
    pub keep_duplicates: bool,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SearchResult {
    pub document_id: String,
    pub external_id: Option<String>,
    pub chunk_id: i64,
    pub title: String,
    pub heading_path: String,
    pub text: String,
    /// `hybrid`: the fused score in [0, 1] (1 only for a chunk first in both lists), comparable
    /// within one query, not across queries. `fulltext`: the BM25 score (≥ 0, unbounded).
    /// `vector`: the cosine similarity to the query vector (−1 to 1).
    pub score: f32,
    pub metadata: Value,
    pub highlights: Vec<String>,
    /// Other results whose text is the same or nearly the same as this one's (the same passage
    /// in another document, e.g. a page and a print version repeating it), ranked below it and
    /// therefore not returned on their own. Empty when there are none.
    pub duplicates: Vec<Duplicate>,
    /// Present when the request asked for `explain`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explain: Option<Explain>,
}

/// Where a result's score comes from (`explain: true`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Explain {
    /// The chunk in the full-text list; null when it is not among its candidates (or the mode
    /// is `vector`).
    pub fulltext: Option<ListEntry>,
    /// The chunk in the vector list; null when it is not among its candidates (or the mode is
    /// `fulltext`).
    pub vector: Option<ListEntry>,
    /// `hybrid` only: the weights of the two lists for this query (they sum to 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weights: Option<ExplainWeights>,
}

/// A chunk's place in one list.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ListEntry {
    /// 1-based rank in the list (before duplicates are collapsed).
    pub rank: usize,
    /// The raw score: BM25 (full text) or cosine similarity (vector).
    pub score: f32,
    /// `hybrid` only: the raw score mapped to [0, 1] for this query (BM25 divided by the list's
    /// best; the similarity min-max scaled over the list's candidates).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub normalized: Option<f32>,
    /// `hybrid` only: `weight × normalized`, this list's part of the fused score.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contribution: Option<f32>,
}

/// The per-query weights of the two lists in hybrid fusion.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct ExplainWeights {
    pub fulltext: f32,
    pub vector: f32,
}

/// A result collapsed onto a better-scored one with the same or nearly the same text.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Duplicate {
    pub document_id: String,
    pub chunk_id: i64,
    pub title: String,
    pub external_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SearchResponse {
    pub results: Vec<SearchResult>,
    pub mode: Mode,
}

pub const MAX_LIMIT: usize = 100;
/// Longest highlight fragment, in characters of the chunk (before `<mark>` tags).
pub const MAX_HIGHLIGHT_CHARS: usize = 200;
pub const MAX_OFFSET: usize = 1000;
/// Longest query text.
pub const MAX_QUERY_BYTES: usize = 10_000;

/// Runs a search. `extra` is ANDed with the request's filter (a tenant token's filter).
pub fn search(
    ws: &Workspace,
    embedders: &Embedders,
    req: &SearchRequest,
    extra: Option<&Filter>,
    fusion: &Fusion,
) -> Result<SearchResponse> {
    search_with(ws, embedders, req, extra, fusion, None)
}

/// [`search`], given the active vector space (its embedder gives the prior hybrid weight; the
/// vector list searches it) when the caller has it at hand (cached, `caches::SpacesCache`);
/// `None` reads it from SQLite when needed.
pub fn search_with(
    ws: &Workspace,
    embedders: &Embedders,
    req: &SearchRequest,
    extra: Option<&Filter>,
    fusion: &Fusion,
    active: Option<&crate::knowledge::vectors::Space>,
) -> Result<SearchResponse> {
    let mode = req.mode.unwrap_or_default();
    let limit = req.limit.unwrap_or(10);
    let offset = req.offset.unwrap_or(0);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(Error::invalid(format!(
            "limit must be between 1 and {MAX_LIMIT}"
        )));
    }
    if offset > MAX_OFFSET {
        return Err(Error::invalid(format!(
            "offset must be at most {MAX_OFFSET}"
        )));
    }
    if req.query.len() > MAX_QUERY_BYTES {
        return Err(Error::invalid(format!(
            "query is too long (at most {MAX_QUERY_BYTES} bytes)"
        )));
    }
    let mut fusion = *fusion;
    if mode == Mode::Hybrid && req.hybrid_weight.is_none() {
        // The prior weight of this workspace's embedder.
        fusion = match active {
            Some(space) => fusion.for_embedder(&space.config),
            None => fusion.for_embedder(&crate::knowledge::vectors::active(&ws.conn())?.config),
        };
    }
    if let Some(w) = req.hybrid_weight {
        if !(0.0..=1.0).contains(&w) {
            return Err(Error::invalid("hybrid_weight must be between 0 and 1"));
        }
        fusion.weight = w;
    }
    let filter = Filter::and(
        req.filter.as_ref().map(Filter::parse).transpose()?,
        extra.cloned(),
    );
    let want = offset + limit;
    // Duplicates are collapsed (`dedup`), so more candidates than `want` are fetched for the
    // page to be full of distinct results.
    let fetch = (want * 2).max(want + 20);
    let query_text = req.query.trim();
    if query_text.is_empty() && req.vector.is_none() {
        return Err(Error::invalid("query must not be empty"));
    }

    // Chunks allowed by the filter (None: all).
    let allowed: Option<Arc<Allowed>> = filter
        .as_ref()
        .map(|f| caches::of(ws).allowed.get_or_compute(ws, f))
        .transpose()?;
    if allowed.as_ref().is_some_and(|a| a.chunks.is_empty()) {
        return Ok(SearchResponse {
            results: Vec::new(),
            mode,
        });
    }

    if matches!(mode, Mode::Fulltext | Mode::Hybrid) {
        // While the index is rebuilt from SQLite, full text would miss documents: 503.
        ws.require_index()?;
    }
    let searcher = ws.reader().searcher();
    // Parsed before any work, so a refused query costs nothing. A vector search reads the
    // query as text to embed (its words only highlight).
    let plain = req.plain_words || mode == Mode::Vector;
    let text_query = lexical_query(ws, query_text, plain, fusion.title_boost)?;

    let depth = match mode {
        Mode::Hybrid => fusion.depth.max(fetch),
        _ => fetch,
    };
    // Reads of the index go through `read_index`: damaged segment files (which may open fine
    // and fail only here, as an error or a panic of Tantivy's decoders) mark the index for a
    // rebuild from SQLite and answer 503 meanwhile.
    let lexical = match (&text_query, mode) {
        (Some(q), Mode::Hybrid | Mode::Fulltext) => ws.read_index(|| {
            fulltext(
                ws,
                &searcher,
                q.box_clone(),
                allowed.as_deref(),
                depth,
                fusion.term_set_limit,
            )
        })?,
        _ => Vec::new(),
    };
    let semantic = match mode {
        Mode::Hybrid | Mode::Vector => vector(
            ws,
            embedders,
            req,
            allowed.as_deref(),
            depth,
            &fusion,
            active,
        )?,
        Mode::Fulltext => Vec::new(),
    };
    let fused = (mode == Mode::Hybrid).then(|| fuse(&lexical, &semantic, &fusion));
    let ranked: &[(i64, f32)] = match (&fused, mode) {
        (Some(f), _) => &f.ranked,
        (None, Mode::Vector) => &semantic,
        (None, _) => &lexical,
    };
    if req.keep_duplicates {
        let end = want.min(ranked.len());
        let results = hydrate(ws, &ranked[offset.min(end)..end])?;
        return Ok(SearchResponse { results, mode });
    }
    // Hydrated (and fingerprinted) a window at a time, best first, until `want` distinct
    // results are kept: each window is as many candidates as the page still needs (each
    // candidate fills at most one place), so with no duplicates exactly `want` are read. After
    // a window that left places empty (duplicates, or chunks deleted since the index saw them)
    // at least `MIN_WINDOW` are read at once, which bounds the round trips. A result's
    // `duplicates` are thus the candidates collapsed onto it that rank above the page's last
    // result (`dedup`).
    const MIN_WINDOW: usize = 8;
    let mut collapsed = dedup::Collapser::default();
    let mut at = 0;
    while collapsed.len() < want && at < ranked.len() {
        let need = want - collapsed.len();
        let window = if at == 0 { need } else { need.max(MIN_WINDOW) };
        let end = (at + window).min(ranked.len());
        for r in hydrate(ws, &ranked[at..end])? {
            if collapsed.len() == want {
                break;
            }
            collapsed.push(r);
        }
        at = end;
    }
    let mut results: Vec<SearchResult> = collapsed
        .into_results()
        .into_iter()
        .skip(offset)
        .take(limit)
        .collect();
    if req.highlight.unwrap_or(true) {
        if let Some(mut h) = highlighter(ws, &searcher, text_query.as_deref(), mode)? {
            // Each result's text is bounded (`hydrate`), and so is its one fragment
            // (`MAX_HIGHLIGHT_CHARS`).
            for r in &mut results {
                if let Some(html) = h.highlight(&r.text) {
                    r.highlights.push(html);
                }
            }
        }
    }
    if req.explain.unwrap_or(false) {
        let explainer = Explainer::new(&lexical, &semantic, fused.as_ref(), mode);
        for r in &mut results {
            r.explain = Some(explainer.explain(r.chunk_id));
        }
    }
    Ok(SearchResponse { results, mode })
}

/// `results` (best first) collapsed as [`search`] collapses them (for offline replays).
pub fn collapse(results: Vec<SearchResult>) -> Vec<SearchResult> {
    let mut collapsed = dedup::Collapser::default();
    results.into_iter().for_each(|r| collapsed.push(r));
    collapsed.into_results()
}

/// Builds each result's [`Explain`] from the two lists and the fusion.
struct Explainer<'a> {
    lexical: HashMap<i64, (usize, f32)>,
    semantic: HashMap<i64, (usize, f32)>,
    fused: Option<&'a Fused>,
}

impl<'a> Explainer<'a> {
    fn new(
        lexical: &[(i64, f32)],
        semantic: &[(i64, f32)],
        fused: Option<&'a Fused>,
        mode: Mode,
    ) -> Self {
        let index = |list: &[(i64, f32)]| -> HashMap<i64, (usize, f32)> {
            list.iter()
                .enumerate()
                .map(|(i, &(id, s))| (id, (i + 1, s)))
                .collect()
        };
        Explainer {
            lexical: if mode == Mode::Vector {
                HashMap::new()
            } else {
                index(lexical)
            },
            semantic: if mode == Mode::Fulltext {
                HashMap::new()
            } else {
                index(semantic)
            },
            fused,
        }
    }

    fn explain(&self, chunk: i64) -> Explain {
        let entry = |list: &HashMap<i64, (usize, f32)>,
                     scale: Option<Scale>,
                     weight: Option<f32>|
         -> Option<ListEntry> {
            let &(rank, score) = list.get(&chunk)?;
            let normalized = scale.map(|s| s.unit(score));
            Some(ListEntry {
                rank,
                score,
                normalized,
                contribution: normalized.zip(weight).map(|(n, w)| n * w),
            })
        };
        let f = self.fused;
        Explain {
            fulltext: entry(
                &self.lexical,
                f.and_then(|f| f.fulltext),
                f.map(|f| f.weights.fulltext),
            ),
            vector: entry(
                &self.semantic,
                f.and_then(|f| f.vector),
                f.map(|f| f.weights.vector),
            ),
            weights: f.map(|f| ExplainWeights {
                fulltext: f.weights.fulltext,
                vector: f.weights.vector,
            }),
        }
    }
}

/// Shared, for callers that hold embedders in an `Arc`.
pub type SharedEmbedders = Arc<Embedders>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::knowledge::ann::AnnParams;
    use crate::knowledge::embedders::tests::test_models;
    use crate::knowledge::extract::{Format, Limits};
    use crate::knowledge::{ingest, store};
    use serde_json::json;

    pub(super) fn workspace_with(
        docs: &[(&str, Value)],
    ) -> (tempfile::TempDir, Workspace, Embedders, Vec<String>) {
        let tmp = tempfile::tempdir().expect("tmp");
        let id = crate::ids::new_id();
        let dir = crate::workspace::dir_of(tmp.path(), id);
        crate::workspace::create(&dir).expect("create");
        let ws = Workspace::open(&dir, id).expect("open");
        let embedders = Embedders::with_builtin(test_models);
        let mut ids = Vec::new();
        for (text, meta) in docs {
            let added = store::add(
                &ws,
                store::NewDocument {
                    bytes: text.as_bytes().to_vec(),
                    format: Format::Text,
                    title: None,
                    metadata: meta.clone(),
                    external_id: None,
                    source_name: None,
                    embedding: None,
                    is_text: false,
                },
            )
            .expect("add");
            ids.push(added.id);
        }
        while ingest::run_quantum(&ws, &embedders, &Limits::default())
            .expect("quantum")
            .worked
        {}
        (tmp, ws, embedders, ids)
    }

    /// The documents a search returns, sorted.
    pub(super) fn sorted_documents(
        ws: &Workspace,
        emb: &Embedders,
        req: &SearchRequest,
        extra: Option<&Filter>,
        fusion: &Fusion,
    ) -> Vec<String> {
        let mut got: Vec<String> = search(ws, emb, req, extra, fusion)
            .expect("search")
            .results
            .into_iter()
            .map(|r| r.document_id)
            .collect();
        got.sort();
        got
    }

    #[test]
    fn every_mode_honours_filters_and_the_extra_filter() {
        let (_t, ws, emb, ids) = workspace_with(&[
            (
                "apples and pears grow in the orchard",
                json!({"team": "a", "n": 1}),
            ),
            (
                "apples are red, pears are green",
                json!({"team": "b", "n": 2}),
            ),
            ("the orchard sells cider", json!({"team": "a", "n": 3})),
        ]);
        let run = |mode, filter: Option<Value>, extra: Option<Filter>| {
            let req = SearchRequest {
                query: "apples pears orchard".into(),
                mode: Some(mode),
                filter,
                ..Default::default()
            };
            let mut seen = None;
            // Every path: sqlite-vec or the codes, a term set or a fast-field filter.
            for (min_vectors, term_set_limit) in [(10_000, 1024), (0, 0)] {
                let fusion = Fusion {
                    ann: AnnParams {
                        min_vectors,
                        ..AnnParams::default()
                    },
                    term_set_limit,
                    ..Fusion::default()
                };
                let got = sorted_documents(&ws, &emb, &req, extra.as_ref(), &fusion);
                if let Some(prev) = &seen {
                    assert_eq!(prev, &got, "{mode:?}: the paths agree");
                }
                seen = Some(got);
            }
            seen.unwrap_or_default()
        };
        for mode in [Mode::Fulltext, Mode::Vector, Mode::Hybrid] {
            assert_eq!(run(mode, None, None).len(), 3, "{mode:?}");
            assert_eq!(
                run(mode, Some(json!({"team": "a"})), None),
                vec![ids[0].clone(), ids[2].clone()]
            );
            let extra = Filter::parse(&json!({"n": {"gte": 2}})).expect("extra");
            assert_eq!(
                run(mode, Some(json!({"team": "a"})), Some(extra.clone())),
                vec![ids[2].clone()],
                "{mode:?}: the extra filter is ANDed"
            );
            assert_eq!(
                run(mode, None, Some(extra)),
                vec![ids[1].clone(), ids[2].clone()]
            );
        }
    }

    /// A page reads candidates best first until it holds `limit` distinct results, and no
    /// more: its results and their `duplicates` are exactly the ranked candidates down to its
    /// last result (a prefix of the uncollapsed list), whatever the limit; all of them when
    /// the page is left short.
    #[test]
    fn a_page_and_its_duplicates_are_a_prefix_of_the_ranking() {
        const COPY: &str = "Apples ripen in the orchard during the late summer months and the \
                            pickers fill their baskets before the first autumn frost arrives";
        let mut docs: Vec<(String, Value)> = Vec::new();
        for i in 0..4 {
            docs.push((format!("{COPY} {}", ["", "!", "?", "."][i]), json!({})));
            docs.push((
                format!("apples number {i} with words of its own, {} times", i * 7),
                json!({}),
            ));
        }
        let docs: Vec<(&str, Value)> = docs.iter().map(|(t, m)| (t.as_str(), m.clone())).collect();
        let (_t, ws, emb, _ids) = workspace_with(&docs);
        let fusion = Fusion::default();
        let raw = search(
            &ws,
            &emb,
            &SearchRequest {
                query: "apples".into(),
                mode: Some(Mode::Fulltext),
                limit: Some(100),
                keep_duplicates: true,
                ..Default::default()
            },
            None,
            &fusion,
        )
        .expect("raw");
        let ranked: Vec<i64> = raw.results.iter().map(|r| r.chunk_id).collect();
        assert_eq!(ranked.len(), 8);
        let mut saw_duplicates = false;
        for limit in 1..=6 {
            let page = search(
                &ws,
                &emb,
                &SearchRequest {
                    query: "apples".into(),
                    mode: Some(Mode::Fulltext),
                    limit: Some(limit),
                    ..Default::default()
                },
                None,
                &fusion,
            )
            .expect("page");
            assert_eq!(page.results.len(), limit.min(5), "limit {limit}");
            let last = page.results.last().map(|r| r.chunk_id).expect("a result");
            let mut seen: Vec<i64> = page
                .results
                .iter()
                .flat_map(|r| {
                    std::iter::once(r.chunk_id).chain(r.duplicates.iter().map(|d| d.chunk_id))
                })
                .collect();
            saw_duplicates |= page.results.iter().any(|r| !r.duplicates.is_empty());
            seen.sort_unstable();
            // A page left short read every candidate.
            let upto = if page.results.len() < limit {
                ranked.len()
            } else {
                ranked.iter().position(|c| *c == last).expect("ranked") + 1
            };
            let mut prefix = ranked[..upto].to_vec();
            prefix.sort_unstable();
            assert_eq!(seen, prefix, "limit {limit}");
        }
        assert!(saw_duplicates, "the copies collapse");
    }
}

#[cfg(test)]
mod query_props;
