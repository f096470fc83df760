//! Full text: the query text (plain words as one flat disjunction, or the query language through
//! the lenient parser after its nesting and fields are checked) and the full-text list of a
//! search, restricted to the allowed chunks.

use std::collections::HashMap;

use tantivy::collector::{FilterCollector, TopDocs};
use tantivy::query::{
    BooleanQuery, BoostQuery, Occur, PhraseQuery, Query, QueryParser, TermQuery, TermSetQuery,
};
use tantivy::query_grammar::{UserInputAst, UserInputLeaf};
use tantivy::schema::IndexRecordOption;
use tantivy::Term;

use super::Allowed;
use crate::error::{Error, Result};
use crate::workspace::Workspace;

/// Most `(` and `NOT` operators in one query. Each can nest the query one level deeper, and the
/// query parser, like every walk over the query it builds, recurses once per level: bounding
/// their count bounds the depth whatever the quoting, so no query can exhaust a thread's stack.
pub const MAX_QUERY_NESTING: usize = 32;
/// The fields a full-text query may name (`title:word`).
pub const SEARCHABLE_FIELDS: [&str; 3] = ["title", "headings", "text"];

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
pub(super) fn lexical_query(
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

pub(super) fn fulltext(
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
            // results). A filter's allowed chunks exclude them already. Only documents that
            // already have chunks count (a queued backlog has none).
            let writing: Vec<String> = {
                let conn = ws.read();
                let mut stmt = conn.prepare_cached(
                    "SELECT d.id FROM documents d WHERE d.status = 'indexing'
                       AND EXISTS (SELECT 1 FROM chunks c WHERE c.document_id = d.id)",
                )?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::knowledge::search::tests::workspace_with;
    use serde_json::json;

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
}
