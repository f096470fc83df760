//! Search: `fulltext` (Tantivy BM25 over title, heading path and text, English-stemmed, title
//! boosted), `vector` (sqlite-vec KNN, or the in-memory binary codes of [`super::ann`] for large
//! spaces) and `hybrid` (both, fused). Filters resolve in SQLite to the set of allowed chunks,
//! which every mode honours: full text through a term set on `chunk_id` (few chunks) or a
//! fast-field filter on its matches (many), vectors through the codes restricted to the set (or,
//! in a small space, an exact scan of few allowed chunks, a post-filtered deep KNN of many).
//! Results are hydrated from SQLite, the source of truth.
//!
//! Fusion: weighted reciprocal-rank fusion, `w/(k+rank_vector) + (1-w)/(k+rank_fulltext)`.
//! The first page is decided by the fusion of the two lists' heads (top `head` of each): a
//! document deep in one list gets no credit from it there, which measured better than fusing
//! whole lists. Candidates beyond the heads follow, ordered by the fusion of the full lists
//! (`depth` each), so recall is that of both lists. Normalised-score (convex) fusion was
//! measured too and lost; the figures are in the README.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use rusqlite::types::Value as Sql;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tantivy::collector::{FilterCollector, TopDocs};
use tantivy::query::{
    BooleanQuery, BoostQuery, Occur, PhraseQuery, Query, QueryParser, TermQuery, TermSetQuery,
};
use tantivy::query_grammar::{UserInputAst, UserInputLeaf};
use tantivy::schema::IndexRecordOption;
use tantivy::snippet::SnippetGenerator;
use tantivy::Term;

use super::ann::AnnParams;
use super::chunk::MAX_CHUNK_CHARS;
use super::embedders::Embedders;
use super::filter::Filter;
use super::vectors::{self, Space};
use crate::error::{Error, Result};
use crate::workspace::Workspace;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Hybrid,
    Fulltext,
    Vector,
}

#[derive(Debug, Clone, Default, Deserialize)]
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
    /// Weight of the vector list in hybrid fusion, 0..=1 (default tuned).
    pub hybrid_weight: Option<f32>,
    /// Read the query as plain words, without the query language (a chat message is text, not
    /// a query). Not part of the API.
    #[serde(skip)]
    pub plain_words: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct SearchResult {
    pub document_id: String,
    pub external_id: Option<String>,
    pub chunk_id: i64,
    pub title: String,
    pub heading_path: String,
    pub text: String,
    pub score: f32,
    pub metadata: Value,
    pub highlights: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SearchResponse {
    pub results: Vec<SearchResult>,
    pub mode: Mode,
}

/// Fusion parameters (tuned on the evaluation sets).
#[derive(Debug, Clone, Copy)]
pub struct Fusion {
    /// Weight of the vector list.
    pub weight: f32,
    /// The RRF constant.
    pub k: f32,
    /// Head of each list that decides the first page.
    pub head: usize,
    /// Candidates taken from each list (at least `offset + limit`).
    pub depth: usize,
    /// Title boost in the full-text query.
    pub title_boost: f32,
    /// The approximate vector path (`ann`): spaces of at least `ann.min_vectors` vectors are
    /// searched through their in-memory binary codes, smaller ones by sqlite-vec's exact KNN.
    pub ann: AnnParams,
    /// Up to this many allowed chunks, a filtered full-text search restricts its query to them
    /// with a term set; beyond, it filters its matches on the `chunk_id` fast field.
    pub term_set_limit: usize,
}

impl Default for Fusion {
    fn default() -> Self {
        Fusion {
            weight: 0.6,
            k: 60.0,
            head: 10,
            depth: 100,
            title_boost: 2.0,
            ann: AnnParams::default(),
            term_set_limit: 1024,
        }
    }
}

pub const MAX_LIMIT: usize = 100;
/// Longest highlight fragment, in characters of the chunk (before `<mark>` tags).
pub const MAX_HIGHLIGHT_CHARS: usize = 200;
pub const MAX_OFFSET: usize = 1000;
/// Longest query text.
pub const MAX_QUERY_BYTES: usize = 10_000;
/// Most `(` and `NOT` operators in one query. Each can nest the query one level deeper, and the
/// query parser, like every walk over the query it builds, recurses once per level: bounding
/// their count bounds the depth whatever the quoting, so no query can exhaust a thread's stack.
pub const MAX_QUERY_NESTING: usize = 32;
/// The fields a full-text query may name (`title:word`).
pub const SEARCHABLE_FIELDS: [&str; 3] = ["title", "headings", "text"];

/// Runs a search. `extra` is ANDed with the request's filter (a tenant token's filter).
pub fn search(
    ws: &Workspace,
    embedders: &Embedders,
    req: &SearchRequest,
    extra: Option<&Filter>,
    fusion: &Fusion,
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
    let query_text = req.query.trim();
    if query_text.is_empty() && req.vector.is_none() {
        return Err(Error::invalid("query must not be empty"));
    }

    // Chunks allowed by the filter (None: all).
    let allowed: Option<Arc<Allowed>> = filter
        .as_ref()
        .map(|f| ws.allowed_cache().get_or_compute(ws, f))
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
    let f = ws.fields();
    // Parsed before any work, so a refused query costs nothing. A vector search reads the
    // query as text to embed (its words only highlight).
    let plain = req.plain_words || mode == Mode::Vector;
    let text_query = lexical_query(ws, query_text, plain, fusion.title_boost)?;

    let depth = match mode {
        Mode::Hybrid => fusion.depth.max(want),
        _ => want,
    };
    let lexical = match (&text_query, mode) {
        (Some(q), Mode::Hybrid | Mode::Fulltext) => fulltext(
            ws,
            &searcher,
            q.box_clone(),
            allowed.as_deref(),
            depth,
            fusion.term_set_limit,
        )?,
        _ => Vec::new(),
    };
    let semantic = match mode {
        Mode::Hybrid | Mode::Vector => vector(
            ws,
            embedders,
            req,
            query_text,
            allowed.as_deref(),
            depth,
            &fusion,
        )?,
        Mode::Fulltext => Vec::new(),
    };
    let ranked: Vec<(i64, f32)> = match mode {
        Mode::Fulltext => lexical,
        Mode::Vector => semantic,
        Mode::Hybrid => fuse_rrf(&lexical, &semantic, &fusion),
    };
    let page: Vec<(i64, f32)> = ranked.into_iter().skip(offset).take(limit).collect();
    let mut results = hydrate(ws, &page)?;
    if req.highlight.unwrap_or(true) {
        if let Some(q) = &text_query {
            let mut gen = SnippetGenerator::create(&searcher, q.as_ref(), f.text)?;
            // Each result's text is bounded (`hydrate`), and so is its one fragment.
            gen.set_max_num_chars(MAX_HIGHLIGHT_CHARS);
            for r in &mut results {
                let mut s = gen.snippet(&r.text);
                if !s.highlighted().is_empty() {
                    s.set_snippet_prefix_postfix("<mark>", "</mark>");
                    r.highlights.push(s.to_html());
                }
            }
        }
    }
    Ok(SearchResponse { results, mode })
}

/// Whether a query uses the query language (phrases, fields, required or excluded terms).
fn uses_query_syntax(text: &str) -> bool {
    text.contains(['"', ':', '(', ')', '[', ']', '{', '}', '^', '~', '*'])
        || text
            .split_whitespace()
            .any(|w| w.starts_with(['+', '-']) || matches!(w, "AND" | "OR" | "NOT"))
}

/// How many `(` and `NOT` operators `text` holds: an upper bound of the nesting depth the
/// query grammar can reach (it recurses only into a group and after `NOT` + whitespace).
fn nesting_operators(text: &str) -> usize {
    let nots = text
        .match_indices("NOT")
        .filter(|(i, _)| text[i + 3..].starts_with(char::is_whitespace))
        .count();
    text.matches('(').count() + nots
}

/// Refuses query syntax the index cannot answer: a field other than [`SEARCHABLE_FIELDS`]
/// (`document_id:x`, `foo:bar`) and `field:*`. The walk is iterative; the depth is bounded anyway.
fn check_query_fields(ast: &UserInputAst) -> Result<()> {
    let fields = SEARCHABLE_FIELDS.join(", ");
    let named = |f: &Option<String>| -> Result<()> {
        match f {
            Some(f) if !SEARCHABLE_FIELDS.contains(&f.as_str()) => Err(Error::invalid(format!(
                "a full-text query can name only the fields {fields}; {f:?} is not one of them: \
                 drop the \"{f}:\" prefix to search every field (filter on document fields and \
                 metadata with \"filter\")"
            ))),
            _ => Ok(()),
        }
    };
    let mut stack = vec![ast];
    while let Some(node) = stack.pop() {
        match node {
            UserInputAst::Clause(clauses) => stack.extend(clauses.iter().map(|(_, c)| c)),
            UserInputAst::Boost(inner, _) => stack.push(inner),
            UserInputAst::Leaf(leaf) => match leaf.as_ref() {
                UserInputLeaf::Literal(l) => named(&l.field_name)?,
                UserInputLeaf::Range { field, .. }
                | UserInputLeaf::Set { field, .. }
                | UserInputLeaf::Regex { field, .. } => named(field)?,
                UserInputLeaf::Exists { field } => {
                    return Err(Error::invalid(format!(
                        "\"{field}:*\" (field exists) is not supported in a full-text query: \
                         search words or phrases, optionally in one of the fields {fields}"
                    )))
                }
                UserInputLeaf::All => {}
            },
        }
    }
    Ok(())
}

/// The full-text query of `text`: plain words become one flat disjunction of term queries (each
/// word in title, headings and text, the title boosted; a compound such as `state-city` a
/// phrase, as the parser makes it), which Tantivy answers with block-WAND top-k pruning; the
/// query parser's nesting of one disjunction per word rules that out and scans every posting.
/// Scores are the same sums either way. Queries written in the query language (phrases,
/// `field:`, `+`/`-`) go through the lenient parser, after [`MAX_QUERY_NESTING`] and
/// [`check_query_fields`]: what the parser could not answer is `Invalid`, not an index error.
/// With `plain`, every query is read as plain words.
fn lexical_query(
    ws: &Workspace,
    text: &str,
    plain: bool,
    title_boost: f32,
) -> Result<Option<Box<dyn Query>>> {
    if text.is_empty() {
        return Ok(None);
    }
    let f = ws.fields();
    if !plain && uses_query_syntax(text) {
        let nesting = nesting_operators(text);
        if nesting > MAX_QUERY_NESTING {
            return Err(Error::invalid(format!(
                "query has {nesting} parentheses and NOT operators; at most \
                 {MAX_QUERY_NESTING} are allowed (each may nest the query one level deeper)"
            )));
        }
        let (ast, _syntax_errors) = tantivy::query_grammar::parse_query_lenient(text);
        check_query_fields(&ast)?;
        let mut parser = QueryParser::for_index(ws.index(), vec![f.title, f.headings, f.text]);
        parser.set_field_boost(f.title, title_boost);
        return Ok(Some(parser.build_query_from_user_input_ast_lenient(ast).0));
    }
    Ok(plain_query(ws, text, title_boost))
}

/// Plain words as one flat disjunction (see [`lexical_query`]).
fn plain_query(ws: &Workspace, text: &str, title_boost: f32) -> Option<Box<dyn Query>> {
    let f = ws.fields();
    let mut analyzer = ws.index().tokenizer_for_field(f.text).ok()?;
    let fields = [(f.title, title_boost), (f.headings, 1.0), (f.text, 1.0)];
    let boosted = |q: Box<dyn Query>, boost: f32| -> Box<dyn Query> {
        if boost == 1.0 {
            q
        } else {
            Box::new(BoostQuery::new(q, boost))
        }
    };
    let mut words: Vec<&str> = Vec::new();
    let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
    for word in text.split_whitespace() {
        // A word written twice counts once, as the parser makes it; two spellings of one term
        // ("Apple apples") count twice, as they do there.
        if words.contains(&word) {
            continue;
        }
        words.push(word);
        let mut tokens: Vec<String> = Vec::new();
        let mut stream = analyzer.token_stream(word);
        while stream.advance() {
            tokens.push(stream.token().text.clone());
        }
        if tokens.len() > 1 {
            // A compound ("state-city") is a phrase, as the query parser makes it.
            for (field, boost) in fields {
                let terms = tokens
                    .iter()
                    .map(|t| Term::from_field_text(field, t))
                    .collect();
                clauses.push((
                    Occur::Should,
                    boosted(Box::new(PhraseQuery::new(terms)), boost),
                ));
            }
        } else if let Some(t) = tokens.pop() {
            for (field, boost) in fields {
                let q = TermQuery::new(
                    Term::from_field_text(field, &t),
                    IndexRecordOption::WithFreqs,
                );
                clauses.push((Occur::Should, boosted(Box::new(q), boost)));
            }
        }
    }
    if clauses.is_empty() {
        return None;
    }
    Some(Box::new(BooleanQuery::new(clauses)))
}

/// The chunks a filter allows: their ids, and the documents they belong to.
#[derive(Debug)]
pub struct Allowed {
    chunks: Arc<HashSet<u64>>,
    documents: Vec<String>,
}

/// The allowed chunks of a workspace's recent filters, each valid while the workspace's data
/// version is the one it was computed at. A tenant token's filter is the same on every request,
/// so its set is computed once per change of the data, not once per search.
#[derive(Debug)]
pub struct AllowedCache {
    entries: Mutex<lru::LruCache<String, (DataVersion, Arc<Allowed>)>>,
}

/// This connection's write count (the update hook's) and SQLite's `data_version` (which other
/// connections' commits change).
type DataVersion = (u64, i64);

/// Filters remembered per open workspace, and the largest set remembered.
const ALLOWED_CACHE_ENTRIES: usize = 8;
const ALLOWED_CACHE_MAX_CHUNKS: usize = 200_000;

impl Default for AllowedCache {
    fn default() -> Self {
        AllowedCache {
            entries: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(ALLOWED_CACHE_ENTRIES)
                    .unwrap_or(std::num::NonZeroUsize::MIN),
            )),
        }
    }
}

impl AllowedCache {
    fn get_or_compute(&self, ws: &Workspace, f: &Filter) -> Result<Arc<Allowed>> {
        let key = format!("{f:?}");
        let conn = ws.conn();
        // This connection's writes (the hook's count) and other connections' (SQLite's).
        let external: i64 = conn.query_row("PRAGMA data_version", [], |r| r.get(0))?;
        let version = (ws.data_version(), external);
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((v, a)) = entries.get(&key) {
            if *v == version {
                return Ok(a.clone());
            }
        }
        drop(entries);
        let a = Arc::new(allowed_chunks(&conn, f)?);
        if a.chunks.len() <= ALLOWED_CACHE_MAX_CHUNKS {
            let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            entries.put(key, (version, a.clone()));
        }
        Ok(a)
    }
}

fn allowed_chunks(conn: &rusqlite::Connection, f: &Filter) -> Result<Allowed> {
    let mut params: Vec<Sql> = Vec::new();
    let cond = f.to_sql(&mut params);
    // The filter runs once per document in the subquery; written as a join, SQLite evaluated
    // it (a `json_each` per metadata condition) once per chunk: 34 ms instead of 9 for a third
    // of 10,000 documents of 10 chunks.
    let mut stmt = conn.prepare(&format!(
        "SELECT c.document_id, c.id FROM chunks c
         WHERE c.document_id IN (SELECT d.id FROM documents d WHERE d.status = 'indexed' AND ({cond}))
         ORDER BY c.document_id"
    ))?;
    let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
    let mut chunks = HashSet::new();
    let mut documents: Vec<String> = Vec::new();
    while let Some(r) = rows.next()? {
        let doc = r.get_ref(0)?.as_str().map_err(rusqlite::Error::from)?;
        if documents.last().is_none_or(|d| d != doc) {
            documents.push(doc.to_string());
        }
        chunks.insert(r.get::<_, i64>(1)? as u64);
    }
    Ok(Allowed {
        chunks: Arc::new(chunks),
        documents,
    })
}

fn fulltext(
    ws: &Workspace,
    searcher: &tantivy::Searcher,
    q: Box<dyn Query>,
    allowed: Option<&Allowed>,
    k: usize,
    term_set_limit: usize,
) -> Result<Vec<(i64, f32)>> {
    let f = ws.fields();
    let top_docs = TopDocs::with_limit(k.max(1)).order_by_score();
    let top = match allowed {
        None => {
            // A document written over several quanta has chunks in the index before it is
            // `indexed`: keep them out of the top k (hydration would drop them, leaving fewer
            // results). A filter's allowed chunks exclude them already.
            let writing: Vec<String> = {
                let conn = ws.conn();
                let mut stmt =
                    conn.prepare_cached("SELECT id FROM documents WHERE status = 'indexing'")?;
                let rows = stmt.query_map([], |r| r.get(0))?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            if writing.is_empty() {
                searcher.search(&q, &top_docs)?
            } else {
                let terms = writing
                    .iter()
                    .map(|d| Term::from_field_text(f.document_id, d));
                let query = BooleanQuery::new(vec![
                    (Occur::Must, q),
                    (Occur::MustNot, Box::new(TermSetQuery::new(terms))),
                ]);
                searcher.search(&query, &top_docs)?
            }
        }
        Some(a) if a.chunks.len() <= term_set_limit => {
            let terms = a
                .chunks
                .iter()
                .map(|id| Term::from_field_u64(f.chunk_id, *id));
            let query = BooleanQuery::new(vec![
                (Occur::Must, q),
                (Occur::Must, Box::new(TermSetQuery::new(terms))),
            ]);
            searcher.search(&query, &top_docs)?
        }
        Some(a) => {
            let set = a.chunks.clone();
            let filtered = FilterCollector::new(
                "chunk_id".to_string(),
                move |id: u64| set.contains(&id),
                top_docs,
            );
            searcher.search(&q, &filtered)?
        }
    };
    let mut out = Vec::with_capacity(top.len());
    let mut columns = HashMap::new();
    for (score, addr) in top {
        let col = match columns.entry(addr.segment_ord) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(
                searcher
                    .segment_reader(addr.segment_ord)
                    .fast_fields()
                    .u64("chunk_id")?,
            ),
        };
        if let Some(id) = col.first(addr.doc_id) {
            out.push((id as i64, score));
        }
    }
    Ok(out)
}

fn query_vector(
    embedders: &Embedders,
    space: &Space,
    req: &SearchRequest,
    text: &str,
) -> Result<Option<Vec<f32>>> {
    if let Some(v) = &req.vector {
        if v.len() != space.dim {
            return Err(Error::invalid(format!(
                "vector has {} dimensions; this workspace's vectors have {}",
                v.len(),
                space.dim
            )));
        }
        if v.iter().any(|x| !x.is_finite()) {
            return Err(Error::invalid("vector must contain finite numbers"));
        }
        return Ok(Some(super::embedders::normalize(v.clone())));
    }
    if text.is_empty() {
        return Ok(None);
    }
    let Some(e) = embedders.get(&space.config)? else {
        // User-provided vectors and no query vector: no vector list.
        return Ok(None);
    };
    let v = e
        .embed(&[text])?
        .into_iter()
        .next()
        .ok_or_else(|| Error::Provider("the embedder returned no vector".into()))?;
    if v.len() != space.dim || v.iter().all(|x| *x == 0.0) {
        return Ok(None);
    }
    Ok(Some(v))
}

fn vector(
    ws: &Workspace,
    embedders: &Embedders,
    req: &SearchRequest,
    text: &str,
    allowed: Option<&Allowed>,
    k: usize,
    fusion: &Fusion,
) -> Result<Vec<(i64, f32)>> {
    let space = vectors::active(&ws.conn())?;
    let Some(q) = query_vector(embedders, &space, req, text)? else {
        return Ok(Vec::new());
    };
    let conn = ws.conn();
    let chunks = allowed.map(|a| a.chunks.as_ref());
    if let Some(hits) = ws.ann().search(&conn, &space, &q, k, &fusion.ann, chunks)? {
        return Ok(hits);
    }
    let Some(allowed) = allowed else {
        return vectors::knn(&conn, &space, &q, k);
    };
    if allowed.chunks.len() <= vectors::EXACT_SCAN_LIMIT {
        let json = serde_json::to_string(&allowed.documents)
            .map_err(|e| Error::internal(e.to_string()))?;
        return vectors::scan_documents(&conn, &space, &q, &json, k);
    }
    // A small space and many allowed chunks: a deep KNN, post-filtered.
    let hits = vectors::knn(&conn, &space, &q, vectors::MAX_K)?;
    Ok(hits
        .into_iter()
        .filter(|(id, _)| allowed.chunks.contains(&(*id as u64)))
        .take(k)
        .collect())
}

fn rrf(
    lexical: &[(i64, f32)],
    semantic: &[(i64, f32)],
    f: &Fusion,
    depth: usize,
) -> HashMap<i64, f32> {
    let mut scores: HashMap<i64, f32> = HashMap::new();
    for (rank, (id, _)) in lexical.iter().take(depth).enumerate() {
        *scores.entry(*id).or_default() += (1.0 - f.weight) / (f.k + rank as f32 + 1.0);
    }
    for (rank, (id, _)) in semantic.iter().take(depth).enumerate() {
        *scores.entry(*id).or_default() += f.weight / (f.k + rank as f32 + 1.0);
    }
    scores
}

/// Weighted RRF, heads first (see the module documentation). Scores are comparable within one
/// answer only: head candidates score 1 + their head fusion, the others their full fusion.
pub fn fuse_rrf(lexical: &[(i64, f32)], semantic: &[(i64, f32)], f: &Fusion) -> Vec<(i64, f32)> {
    let head = rrf(lexical, semantic, f, f.head.max(1));
    let full = rrf(lexical, semantic, f, usize::MAX);
    let mut out: Vec<(i64, f32)> = full
        .into_iter()
        .map(|(id, s)| (id, head.get(&id).map_or(s, |h| 1.0 + h)))
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    out
}

/// Convex combination of normalised scores. BM25 is divided by the list's best score; cosine
/// similarities are min-max normalised over the candidates.
pub fn fuse(lexical: &[(i64, f32)], semantic: &[(i64, f32)], weight: f32) -> Vec<(i64, f32)> {
    let mut scores: HashMap<i64, f32> = HashMap::new();
    if let Some(max) = lexical
        .iter()
        .map(|x| x.1)
        .reduce(f32::max)
        .filter(|m| *m > 0.0)
    {
        for (id, s) in lexical {
            *scores.entry(*id).or_default() += (1.0 - weight) * s / max;
        }
    }
    let max = semantic.iter().map(|x| x.1).reduce(f32::max);
    let min = semantic.iter().map(|x| x.1).reduce(f32::min);
    if let (Some(max), Some(min)) = (max, min) {
        let span = (max - min).max(1e-6);
        for (id, s) in semantic {
            *scores.entry(*id).or_default() += weight * (s - min) / span;
        }
    }
    let mut out: Vec<(i64, f32)> = scores.into_iter().collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    out
}

/// Longest `title` in a result (the API's limit on titles), in characters.
const MAX_RESULT_TITLE_CHARS: usize = 1000;
/// Longest `heading_path` in a result, in characters.
const MAX_RESULT_PATH_CHARS: usize = 2000;

/// `text` cut to at most `max` characters (at a character boundary).
fn bounded(mut text: String, max: usize) -> String {
    if let Some((at, _)) = text.char_indices().nth(max) {
        text.truncate(at);
    }
    text
}

/// Reads the chunks of `ranked` from SQLite, in order; chunks that no longer exist (a stale
/// index entry) are dropped. The join order is forced (`CROSS JOIN`): left to the planner, it
/// walked every indexed document and its chunks (17 ms at 100k chunks instead of 0.03).
fn hydrate(ws: &Workspace, ranked: &[(i64, f32)]) -> Result<Vec<SearchResult>> {
    if ranked.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = ranked.iter().map(|r| r.0).collect();
    let json = serde_json::to_string(&ids).map_err(|e| Error::internal(e.to_string()))?;
    let conn = ws.conn();
    let mut stmt = conn.prepare_cached(
        "SELECT c.id, c.document_id, d.external_id, d.title, c.heading_path, c.text, d.metadata
         FROM json_each(?1) j
         CROSS JOIN chunks c ON c.id = j.value
         CROSS JOIN documents d ON d.id = c.document_id
         WHERE d.status = 'indexed'",
    )?;
    let mut found: HashMap<i64, SearchResult> = HashMap::new();
    let rows = stmt.query_map([&json], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<String>>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, String>(5)?,
            r.get::<_, String>(6)?,
        ))
    })?;
    for row in rows {
        let (id, doc, ext, title, heading_path, text, meta) = row?;
        found.insert(
            id,
            SearchResult {
                document_id: doc,
                external_id: ext,
                chunk_id: id,
                title: bounded(title, MAX_RESULT_TITLE_CHARS),
                heading_path: bounded(heading_path, MAX_RESULT_PATH_CHARS),
                // Chunks are at most `MAX_CHUNK_CHARS` since chunking enforces it; older ones
                // may be longer: a result (and the highlight computed from it) never is.
                text: bounded(text, MAX_CHUNK_CHARS),
                score: 0.0,
                metadata: crate::db::json_column(&meta)?,
                highlights: Vec::new(),
            },
        );
    }
    Ok(ranked
        .iter()
        .filter_map(|(id, score)| {
            found.remove(id).map(|mut r| {
                r.score = *score;
                r
            })
        })
        .collect())
}

/// Shared, for callers that hold embedders in an `Arc`.
pub type SharedEmbedders = Arc<Embedders>;

#[cfg(test)]
mod tests {
    use super::*;
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
    fn sorted_documents(
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

    #[test]
    fn a_cached_filter_sees_added_changed_and_deleted_documents() {
        let (_t, ws, emb, ids) = workspace_with(&[
            ("apples in the orchard", json!({"team": "a"})),
            ("apples on the market", json!({"team": "b"})),
        ]);
        let run = |mode| -> Vec<String> {
            let req = SearchRequest {
                query: "apples".into(),
                mode: Some(mode),
                filter: Some(json!({"team": "a"})),
                ..Default::default()
            };
            sorted_documents(&ws, &emb, &req, None, &Fusion::default())
        };
        let ingest = || {
            while ingest::run_quantum(&ws, &emb, &Limits::default())
                .expect("quantum")
                .worked
            {}
        };
        for mode in [Mode::Fulltext, Mode::Vector, Mode::Hybrid] {
            assert_eq!(run(mode), vec![ids[0].clone()]);
        }
        let added = store::add(
            &ws,
            store::NewDocument {
                bytes: b"apples and cider".to_vec(),
                format: Format::Text,
                title: None,
                metadata: json!({"team": "a"}),
                external_id: None,
                source_name: None,
                embedding: None,
            },
        )
        .expect("add");
        ingest();
        let mut both = vec![ids[0].clone(), added.id.clone()];
        both.sort();
        for mode in [Mode::Fulltext, Mode::Vector, Mode::Hybrid] {
            assert_eq!(run(mode), both, "{mode:?}: a new document is seen");
        }
        store::delete(&ws, &ids[0]).expect("delete");
        ingest();
        for mode in [Mode::Fulltext, Mode::Vector, Mode::Hybrid] {
            assert_eq!(
                run(mode),
                vec![added.id.clone()],
                "{mode:?}: a deleted one is not"
            );
        }
        // A metadata change moves a document in or out of the filter.
        ws.conn()
            .execute(
                "UPDATE documents SET metadata = '{\"team\": \"b\"}' WHERE id = ?1",
                [&added.id],
            )
            .expect("update");
        assert!(run(Mode::Hybrid).is_empty());
    }

    #[test]
    fn plain_queries_score_as_the_query_parser_does() {
        let (_t, ws, _emb, _) = workspace_with(&[
            ("Apples and pears grow in the orchard", json!({})),
            ("apples are red, pears are green; apple pie", json!({})),
            ("the orchard sells cider and a state-city map", json!({})),
        ]);
        let searcher = ws.reader().searcher();
        let f = ws.fields();
        let mut parser = QueryParser::for_index(ws.index(), vec![f.title, f.headings, f.text]);
        parser.set_field_boost(f.title, 2.0);
        let top = |q: &dyn Query| {
            searcher
                .search(q, &TopDocs::with_limit(10).order_by_score())
                .expect("search")
                .into_iter()
                .map(|(s, a)| ((s * 1e4).round() as i64, a))
                .collect::<Vec<_>>()
        };
        for text in [
            "apples orchard",
            "Pears, cider!",
            "state-city orchard",
            "the apples of the orchard",
            "apples or pears",
            "apples and pears",
            "1 apples 1974!",
        ] {
            assert!(!uses_query_syntax(text));
            let flat = plain_query(&ws, text, 2.0).expect("query");
            let parsed = parser.parse_query_lenient(text).0;
            assert_eq!(top(flat.as_ref()), top(parsed.as_ref()), "{text}");
        }
        assert!(uses_query_syntax("\"apple pie\""));
        assert!(uses_query_syntax("title:apples -pears"));

        // Any plain query over words of the corpus and others, in any case, with punctuation,
        // compounds, numbers and repeats.
        use proptest::prelude::*;
        let word = prop::sample::select(vec![
            "apples",
            "Apple",
            "PEARS",
            "orchard",
            "cider",
            "state-city",
            "map",
            "the",
            "and",
            "of",
            "a",
            "red,",
            "green;",
            "pie!",
            "1974",
            "1",
            "grow",
            "sells",
            "unknown",
            "zebra",
            "pears-apples",
            "e-mail",
            "x",
            "ÉCOLE",
            "naïve",
        ]);
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(200));
        runner
            .run(&prop::collection::vec(word, 1..8), |words| {
                let text = words.join(" ");
                prop_assume!(!uses_query_syntax(&text));
                let Some(flat) = plain_query(&ws, &text, 2.0) else {
                    return Ok(());
                };
                let parsed = parser.parse_query_lenient(&text).0;
                prop_assert_eq!(top(flat.as_ref()), top(parsed.as_ref()), "{}", text);
                Ok(())
            })
            .expect("flat queries score as the parser's");
    }

    #[test]
    fn fusion_rewards_agreement_and_respects_weight() {
        let lex = vec![(1, 10.0), (2, 5.0), (3, 1.0)];
        let sem = vec![(2, 0.9), (4, 0.8), (1, 0.1)];
        let fused = fuse(&lex, &sem, 0.5);
        assert_eq!(fused[0].0, 2, "{fused:?}");
        let only_lex = fuse(&lex, &sem, 0.0);
        assert_eq!(only_lex[0].0, 1);
        let only_sem = fuse(&lex, &sem, 1.0);
        assert_eq!(only_sem[0].0, 2);
        assert_eq!(only_sem[1].0, 4);
        assert!(fuse(&[], &[], 0.5).is_empty());
    }

    #[test]
    fn rrf_heads_decide_the_first_page_and_tails_follow() {
        let f = Fusion {
            weight: 0.6,
            k: 60.0,
            head: 2,
            depth: 100,
            title_boost: 2.0,
            ann: AnnParams::default(),
            term_set_limit: 1024,
        };
        let lex = vec![(1, 9.0), (2, 8.0), (3, 7.0), (9, 1.0)];
        let sem = vec![(3, 0.9), (4, 0.8), (1, 0.7)];
        let fused = fuse_rrf(&lex, &sem, &f);
        let ids: Vec<i64> = fused.iter().map(|x| x.0).collect();
        // Heads: lex {1, 2}, sem {3, 4}; 3 is in both full lists but only one head.
        assert_eq!(&ids[..4], &[3, 4, 1, 2], "{fused:?}");
        assert_eq!(ids.len(), 5);
        assert!(fused.windows(2).all(|w| w[0].1 >= w[1].1));
        assert!(fuse_rrf(&[], &[], &f).is_empty());
    }

    /// A ranked list of distinct ids (scores decreasing), as a search list is.
    fn ranked_ids() -> proptest::strategy::BoxedStrategy<Vec<(i64, f32)>> {
        use proptest::prelude::*;
        prop::collection::hash_set(0i64..60, 0..30)
            .prop_map(|set| set.into_iter().collect::<Vec<_>>())
            .prop_shuffle()
            .prop_map(|ids| {
                let n = ids.len() as f32;
                ids.into_iter()
                    .enumerate()
                    .map(|(i, id)| (id, n - i as f32))
                    .collect()
            })
            .boxed()
    }

    proptest::proptest! {
        /// Whatever the two lists: every candidate comes out once, best first; every member of
        /// either head comes before every other candidate; and with the weight at 0 or 1 the
        /// head of that list comes first in its own order.
        #[test]
        fn fusion_keeps_every_candidate_once_heads_first(
            lex in ranked_ids(),
            sem in ranked_ids(),
            head in 1usize..12,
            weight in proptest::prop_oneof![proptest::strategy::Just(0.0f32), proptest::strategy::Just(1.0f32), 0.0f32..1.0],
        ) {
            let f = Fusion { weight, head, ..Fusion::default() };
            let fused = fuse_rrf(&lex, &sem, &f);
            let ids: Vec<i64> = fused.iter().map(|x| x.0).collect();
            let mut want: Vec<i64> = lex.iter().chain(&sem).map(|x| x.0).collect();
            want.sort_unstable();
            want.dedup();
            let mut got = ids.clone();
            got.sort_unstable();
            proptest::prop_assert_eq!(&got, &want);
            proptest::prop_assert!(fused.windows(2).all(|w| w[0].1 >= w[1].1));
            let heads: HashSet<i64> =
                lex.iter().take(head).chain(sem.iter().take(head)).map(|x| x.0).collect();
            let first_other = ids.iter().position(|id| !heads.contains(id)).unwrap_or(ids.len());
            proptest::prop_assert!(ids[first_other..].iter().all(|id| !heads.contains(id)));
            let lead = |list: &[(i64, f32)]| -> Vec<i64> {
                list.iter().take(head).map(|x| x.0).collect()
            };
            if weight == 1.0 {
                proptest::prop_assert_eq!(&ids[..sem.len().min(head)], &lead(&sem)[..]);
            }
            if weight == 0.0 {
                proptest::prop_assert_eq!(&ids[..lex.len().min(head)], &lead(&lex)[..]);
            }
        }
    }
}

/// The query path against hostile query text: nesting, unbalanced syntax, reserved characters,
/// fields, ranges, boosts. Every query is answered or refused as `Invalid`, never an index
/// error, never a stack overflow (the test threads have the 2 MiB stack of a server thread).
#[cfg(test)]
mod query_props {
    use super::tests::workspace_with;
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn run(ws: &Workspace, emb: &Embedders, query: &str, mode: Mode) -> Result<SearchResponse> {
        let req = SearchRequest {
            query: query.to_string(),
            mode: Some(mode),
            ..Default::default()
        };
        search(ws, emb, &req, None, &Fusion::default())
    }

    fn fixture() -> (tempfile::TempDir, Workspace, Embedders) {
        let (t, ws, emb, _) = workspace_with(&[
            ("apples and pears grow in the orchard", json!({"team": "a"})),
            ("the orchard sells cider (fresh)", json!({"team": "b"})),
        ]);
        (t, ws, emb)
    }

    fn piece() -> impl Strategy<Value = String> {
        let fixed = prop::sample::select(vec![
            "apples",
            "orchard",
            "cider",
            "(",
            ")",
            "[",
            "]",
            "{",
            "}",
            ":",
            "\"",
            "^",
            "~",
            "*",
            "!",
            "+",
            "-",
            "\\",
            "/",
            "'",
            "`",
            "&&",
            "||",
            "AND",
            "OR",
            "NOT",
            "NOT ",
            "IN",
            "TO",
            "title:",
            "text:",
            "headings:",
            "document_id:",
            "chunk_id:",
            "foo:",
            "title:*",
            "document_id:*",
            "chunk_id:*",
            "foo:*",
            "*:*",
            "[a TO z]",
            "{1 TO *}",
            "title:[a TO z]",
            "chunk_id:[1 TO 5]",
            "chunk_id:{* TO 3}",
            "chunk_id:x",
            "title:IN [a b]",
            "chunk_id: IN [1 2]",
            "^2",
            "^0",
            "^-1",
            "^1e40",
            "~2",
            "\"a b\"~3",
            "\"apples",
            "title:/ap.*/",
            "/(/",
            "\\(",
            "é",
            "\u{0}",
            " ",
            "  ",
        ]);
        prop_oneof![
            8 => fixed.prop_map(str::to_string),
            1 => (1usize..80).prop_map(|n| "(".repeat(n)),
            1 => (1usize..80).prop_map(|n| ")".repeat(n)),
            1 => (1usize..40).prop_map(|n| "NOT ".repeat(n)),
        ]
    }

    fn query() -> impl Strategy<Value = String> {
        prop::collection::vec((piece(), prop::bool::ANY), 1..14).prop_map(|ps| {
            ps.into_iter()
                .map(|(p, space)| if space { format!("{p} ") } else { p })
                .collect()
        })
    }

    fn answered_or_invalid(
        r: Result<SearchResponse>,
        q: &str,
    ) -> std::result::Result<(), TestCaseError> {
        match r {
            Ok(_) | Err(Error::Invalid(_)) => Ok(()),
            Err(e) => Err(TestCaseError::fail(format!("{q:?}: {e:?}"))),
        }
    }

    #[test]
    fn nesting_is_bounded_and_named_in_the_refusal() {
        let (_t, ws, emb) = fixture();
        for mode in [Mode::Fulltext, Mode::Hybrid] {
            let at_limit = format!(
                "{}apples{}",
                "(".repeat(MAX_QUERY_NESTING),
                ")".repeat(MAX_QUERY_NESTING)
            );
            let found = run(&ws, &emb, &at_limit, mode).expect("at the limit");
            assert!(!found.results.is_empty(), "{mode:?}");
            let nots = format!("{}apples", "NOT ".repeat(MAX_QUERY_NESTING));
            run(&ws, &emb, &nots, mode).expect("NOT at the limit");
            for deep in [
                "(".repeat(MAX_QUERY_NESTING + 1) + "apples",
                "(".repeat(1000) + "apples" + &")".repeat(1000),
                "NOT ".repeat(2000) + "apples",
                "(\")\" ".repeat(500) + "apples",
                "a:/\"/ ".to_string() + &"(".repeat(3000),
            ] {
                match run(&ws, &emb, &deep, mode) {
                    Err(Error::Invalid(m)) => {
                        assert!(m.contains(&MAX_QUERY_NESTING.to_string()), "{m}")
                    }
                    other => panic!("{mode:?} {deep:.40}: {other:?}"),
                }
            }
        }
        // Vector search embeds the text: syntax means nothing there, and nothing is refused.
        let deep = "(".repeat(1000) + "apples";
        run(&ws, &emb, &deep, Mode::Vector).expect("vector reads words");
    }

    #[test]
    fn unknown_and_unsearchable_fields_are_invalid_requests() {
        let (_t, ws, emb) = fixture();
        for q in [
            "document_id:*",
            "foo:bar",
            "title:*",
            "chunk_id:[1 TO 5]",
            "document_id:x apples",
            "apples AND (foo:bar)",
        ] {
            match run(&ws, &emb, q, Mode::Fulltext) {
                Err(Error::Invalid(m)) => {
                    assert!(m.contains("title, headings, text"), "{q}: {m}")
                }
                other => panic!("{q}: {other:?}"),
            }
        }
        for q in [
            "title:apples",
            "text:\"fresh cider\"",
            "headings:x OR orchard",
            "title:[a TO z]",
        ] {
            run(&ws, &emb, q, Mode::Fulltext).unwrap_or_else(|e| panic!("{q}: {e:?}"));
        }
        // A chat message is words, whatever punctuation it holds.
        let req = SearchRequest {
            query: "Note: (see document_id:* above".into(),
            mode: Some(Mode::Fulltext),
            plain_words: true,
            ..Default::default()
        };
        search(&ws, &emb, &req, None, &Fusion::default()).expect("plain words");
    }

    /// One workspace for every case (a proptest! case would build its own).
    fn check_many(cases: u32, modes: &[Mode]) {
        let (_t, ws, emb) = fixture();
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(cases));
        let outcome = runner.run(&query(), |q| {
            for mode in modes {
                answered_or_invalid(run(&ws, &emb, &q, *mode), &q)?;
            }
            Ok(())
        });
        if let Err(e) = outcome {
            panic!("{e}");
        }
    }

    #[test]
    fn any_query_text_is_answered_or_invalid_in_full_text() {
        check_many(500, &[Mode::Fulltext]);
    }

    #[test]
    fn any_query_text_is_answered_or_invalid_in_every_mode() {
        check_many(40, &[Mode::Hybrid, Mode::Vector]);
    }
}
