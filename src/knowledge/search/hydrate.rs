//! Results: the ranked chunks read from SQLite (text, title and heading path bounded), and the
//! snippet generator of their highlights.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;

use tantivy::query::Query;
use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, TextAnalyzer, Token,
    TokenFilter, TokenStream, Tokenizer,
};

use super::{Mode, SearchResult, MAX_HIGHLIGHT_CHARS};
use crate::error::{Error, Result};
use crate::knowledge::chunk::MAX_CHUNK_CHARS;
use crate::workspace::Workspace;

/// The highlighter of a query (it reads term statistics from the index). A vector search
/// does without highlights while the index is unavailable rather than fail.
///
/// It computes what Tantivy's `SnippetGenerator::create` and `snippet(..).to_html()` do (the
/// same terms and scores, fragments and marks: a test compares them), with two costs taken
/// out: over the text field's own analyzer (`en_stem`) it adds one step before the stemmer
/// ([`StemGate`]): a token whose first letter starts no query term is not stemmed (the
/// English stemmer keeps a word's first letter, so it could not match); and a token is looked
/// up in the few terms of the query without a lowercased copy and a map walk per token (which
/// were half of the highlights' cost).
pub(super) fn highlighter(
    ws: &Workspace,
    searcher: &tantivy::Searcher,
    q: Option<&dyn Query>,
    mode: Mode,
) -> Result<Option<Highlighter>> {
    let Some(q) = q else {
        return Ok(None);
    };
    let vector_only = mode == Mode::Vector;
    if vector_only && ws.require_index().is_err() {
        return Ok(None);
    }
    let field = ws.fields().text;
    match ws.read_index(|| Ok(gated_highlighter(searcher, q, field)?)) {
        Ok(h) => Ok(Some(h)),
        Err(Error::IndexUnavailable(_)) if vector_only => Ok(None),
        Err(e) => Err(e),
    }
}

/// The terms of `q` in `field` and their scores, as `SnippetGenerator::create` makes them.
fn query_terms(
    searcher: &tantivy::Searcher,
    q: &dyn Query,
    field: tantivy::schema::Field,
) -> tantivy::Result<BTreeMap<String, tantivy::Score>> {
    let mut terms: BTreeSet<&tantivy::Term> = BTreeSet::new();
    q.query_terms(&mut |term, _| {
        if term.field() == field {
            terms.insert(term);
        }
    });
    let mut terms_text: BTreeMap<String, tantivy::Score> = BTreeMap::new();
    for term in terms {
        let value = term.value();
        let Some(text) = value.as_str() else {
            continue;
        };
        let doc_freq = searcher.doc_freq(term)?;
        if doc_freq > 0 {
            terms_text.insert(text.to_string(), 1.0 / (1.0 + doc_freq as tantivy::Score));
        }
    }
    Ok(terms_text)
}

/// The [`Highlighter`] of `q`, over the gated analyzer.
fn gated_highlighter(
    searcher: &tantivy::Searcher,
    q: &dyn Query,
    field: tantivy::schema::Field,
) -> tantivy::Result<Highlighter> {
    let terms_text = query_terms(searcher, q, field)?;
    let analyzer = if terms_text.keys().any(String::is_empty) {
        // Gated tokens become empty: never a term, unless one is.
        searcher.index().tokenizer_for_field(field)?
    } else {
        gated_analyzer(terms_text.keys().filter_map(|t| t.chars().next()).collect())
    };
    Ok(Highlighter::new(terms_text, analyzer, MAX_HIGHLIGHT_CHARS))
}

/// A candidate fragment (Tantivy's `FragmentCandidate`).
struct Fragment {
    score: tantivy::Score,
    start: usize,
    stop: usize,
    highlighted: Vec<Range<usize>>,
}

impl Fragment {
    fn new(start: usize) -> Fragment {
        Fragment {
            score: 0.0,
            start,
            stop: start,
            highlighted: Vec::new(),
        }
    }
}

/// The highlights of one query over result texts: Tantivy's snippet algorithm (fragments of
/// at most `max_chars` bytes of tokens, the best-scored one, earliest on ties; its matched
/// tokens marked with `<mark>`, the rest HTML-escaped as `htmlescape::encode_minimal` does).
pub(super) struct Highlighter {
    terms: Vec<(String, tantivy::Score)>,
    /// Whether a term is empty (then an empty token is one).
    empty_term: bool,
    analyzer: TextAnalyzer,
    max_chars: usize,
}

impl Highlighter {
    fn new(
        terms: BTreeMap<String, tantivy::Score>,
        analyzer: TextAnalyzer,
        max_chars: usize,
    ) -> Highlighter {
        Highlighter {
            empty_term: terms.keys().any(String::is_empty),
            terms: terms.into_iter().collect(),
            analyzer,
            max_chars,
        }
    }

    /// The score of a token: of the term equal to its lowercased text.
    fn score(terms: &[(String, tantivy::Score)], token: &str) -> Option<tantivy::Score> {
        if token.is_ascii() {
            // Lowercasing ASCII is byte by byte: compared in place, without a copy.
            let b = token.as_bytes();
            terms
                .iter()
                .find(|(t, _)| {
                    t.len() == b.len() && t.bytes().zip(b).all(|(x, y)| x == y.to_ascii_lowercase())
                })
                .map(|(_, s)| *s)
        } else {
            let lower = token.to_lowercase();
            terms.iter().find(|(t, _)| *t == lower).map(|(_, s)| *s)
        }
    }

    /// The highlighted fragment of `text` as HTML, or `None` when no term matches.
    pub(super) fn highlight(&mut self, text: &str) -> Option<String> {
        let mut fragments: Vec<Fragment> = Vec::new();
        let mut fragment = Fragment::new(0);
        let (terms, empty_term, max_chars) = (&self.terms, self.empty_term, self.max_chars);
        let mut stream = self.analyzer.token_stream(text);
        while let Some(token) = stream.next() {
            // As Tantivy computes it (offsets only grow: no wrap in practice).
            if token.offset_to.wrapping_sub(fragment.start) > max_chars {
                let next = Fragment::new(token.offset_from);
                let done = std::mem::replace(&mut fragment, next);
                if done.score > 0.0 {
                    fragments.push(done);
                }
            }
            fragment.stop = token.offset_to;
            if token.text.is_empty() && !empty_term {
                // A gated token: no term.
                continue;
            }
            let (from, to) = (token.offset_from, token.offset_to);
            if let Some(score) = Self::score(terms, &token.text) {
                fragment.score += score;
                fragment.highlighted.push(from..to);
            }
        }
        drop(stream);
        if fragment.score > 0.0 {
            fragments.push(fragment);
        }
        let best = fragments.iter().max_by(|left, right| {
            match left
                .score
                .partial_cmp(&right.score)
                .unwrap_or(std::cmp::Ordering::Equal)
            {
                std::cmp::Ordering::Equal => {
                    (right.start, right.stop).cmp(&(left.start, left.stop))
                }
                other => other,
            }
        })?;
        if best.highlighted.is_empty() {
            return None;
        }
        let fragment = text.get(best.start..best.stop)?;
        let mut ranges: Vec<Range<usize>> = best
            .highlighted
            .iter()
            .map(|r| r.start - best.start..r.end - best.start)
            .collect();
        ranges.sort_by_key(|r| (r.start, r.end));
        ranges.dedup();
        let mut merged: Vec<Range<usize>> = Vec::with_capacity(ranges.len());
        for r in ranges {
            match merged.last_mut() {
                Some(last) if last.end > r.start => last.end = last.end.max(r.end),
                _ => merged.push(r),
            }
        }
        let mut html = String::with_capacity(fragment.len() + 16 * merged.len());
        let mut at = 0;
        for r in merged {
            escape_into(&mut html, fragment.get(at..r.start)?);
            html.push_str("<mark>");
            escape_into(&mut html, fragment.get(r.clone())?);
            html.push_str("</mark>");
            at = r.end;
        }
        escape_into(&mut html, fragment.get(at..)?);
        Some(html)
    }
}

/// `htmlescape::encode_minimal`, appended to `out`.
fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("&quot;"),
            '&' => out.push_str("&amp;"),
            '\'' => out.push_str("&#x27;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
}

/// `en_stem` (Tantivy's: simple tokenizer, tokens of 40+ bytes dropped, lowercased, English
/// stemmer) with [`StemGate`] before the stemmer.
fn gated_analyzer(firsts: Vec<char>) -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser)
        .filter(StemGate { firsts })
        .filter(Stemmer::new(Language::English))
        .build()
}

/// Empties a (lowercased) token whose first character starts no term, so the stemmer after it
/// has nothing to do and the token matches nothing; offsets are kept.
#[derive(Clone)]
struct StemGate {
    firsts: Vec<char>,
}

impl TokenFilter for StemGate {
    type Tokenizer<T: Tokenizer> = StemGateFilter<T>;

    fn transform<T: Tokenizer>(self, tokenizer: T) -> StemGateFilter<T> {
        StemGateFilter {
            inner: tokenizer,
            firsts: self.firsts,
        }
    }
}

#[derive(Clone)]
struct StemGateFilter<T> {
    inner: T,
    firsts: Vec<char>,
}

impl<T: Tokenizer> Tokenizer for StemGateFilter<T> {
    type TokenStream<'a> = StemGateStream<'a, T::TokenStream<'a>>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> Self::TokenStream<'a> {
        StemGateStream {
            tail: self.inner.token_stream(text),
            firsts: &self.firsts,
        }
    }
}

struct StemGateStream<'a, S> {
    tail: S,
    firsts: &'a [char],
}

impl<S: TokenStream> TokenStream for StemGateStream<'_, S> {
    fn advance(&mut self) -> bool {
        if !self.tail.advance() {
            return false;
        }
        let token = self.tail.token_mut();
        if !token
            .text
            .chars()
            .next()
            .is_some_and(|c| self.firsts.contains(&c))
        {
            token.text.clear();
        }
        true
    }

    fn token(&self) -> &Token {
        self.tail.token()
    }

    fn token_mut(&mut self) -> &mut Token {
        self.tail.token_mut()
    }
}

/// Longest `title` in a result (the API's limit on titles), in characters.
const MAX_RESULT_TITLE_CHARS: usize = 1000;
/// Longest `heading_path` in a result, in characters.
const MAX_RESULT_PATH_CHARS: usize = 2000;

/// `text` cut to at most `max` characters (at a character boundary).
fn bounded(mut text: String, max: usize) -> String {
    // No character is shorter than a byte: a text of at most `max` bytes is within bounds
    // (the usual case, without walking its characters).
    if text.len() <= max {
        return text;
    }
    if let Some((at, _)) = text.char_indices().nth(max) {
        text.truncate(at);
    }
    text
}

/// Reads the chunks of `ranked` from SQLite, in order; chunks that no longer exist (a stale
/// index entry) are dropped. The join order is forced (`CROSS JOIN`): left to the planner, it
/// walked every indexed document and its chunks (17 ms at 100k chunks instead of 0.03).
pub(super) fn hydrate(ws: &Workspace, ranked: &[(i64, f32)]) -> Result<Vec<SearchResult>> {
    if ranked.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = ranked.iter().map(|r| r.0).collect();
    let json = serde_json::to_string(&ids).map_err(|e| Error::internal(e.to_string()))?;
    let conn = ws.read();
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
                duplicates: Vec::new(),
                explain: None,
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tantivy::snippet::SnippetGenerator;

    fn en_stem() -> TextAnalyzer {
        tantivy::tokenizer::TokenizerManager::default()
            .get(crate::workspace::TEXT_TOKENIZER)
            .expect("en_stem")
    }

    /// The stem of each word under `en_stem`.
    fn stems(text: &str) -> Vec<String> {
        let mut a = en_stem();
        let mut s = a.token_stream(text);
        let mut out = Vec::new();
        while let Some(t) = s.next() {
            out.push(t.text.clone());
        }
        out
    }

    const WORDS: &[&str] = &[
        "running",
        "runs",
        "ran",
        "Runner",
        "dying",
        "lying",
        "tying",
        "skies",
        "skis",
        "idly",
        "gently",
        "ugly",
        "early",
        "only",
        "singly",
        "news",
        "Yearly",
        "yelled",
        "relational",
        "conditional",
        "rational",
        "valenci",
        "hesitanci",
        "digitizer",
        "conformabli",
        "radicalli",
        "differentli",
        "vileli",
        "analogousli",
        "vietnamization",
        "predication",
        "operator",
        "feudalism",
        "decisiveness",
        "hopefulness",
        "callousness",
        "formaliti",
        "sensitiviti",
        "sensibiliti",
        "triplicate",
        "formative",
        "formalize",
        "electriciti",
        "electrical",
        "hopeful",
        "goodness",
        "revival",
        "allowance",
        "inference",
        "airliner",
        "gyroscopic",
        "adjustable",
        "defensible",
        "irritant",
        "replacement",
        "adjustment",
        "dependent",
        "adoption",
        "homologou",
        "communism",
        "activate",
        "angulariti",
        "homologous",
        "effective",
        "bowdlerize",
        "caresses",
        "ponies",
        "ties",
        "caress",
        "cats",
        "feed",
        "agreed",
        "plastered",
        "bled",
        "motoring",
        "sing",
        "conflated",
        "troubled",
        "sized",
        "hopping",
        "tanned",
        "falling",
        "hissing",
        "fizzed",
        "failing",
        "filing",
        "happy",
        "sky",
        "Über",
        "naïve",
        "Ωmega",
        "σοφία",
        "x",
        "ab",
        "e",
        "i",
        "o",
        "u",
        "y",
        "yy",
        "ay",
        "ied",
        "ies",
        "eed",
        "ing",
        "ed",
        "ly",
        "generous",
        "generously",
        "arsenal",
        "communication",
        "universe",
        "university",
        "past",
        "paste",
        "a1b2",
        "2024s",
    ];

    #[test]
    fn the_english_stemmer_keeps_the_first_letter() {
        for w in WORDS {
            let lower = w.to_lowercase();
            for (word, stem) in [(lower.clone(), stems(w))] {
                for s in stem {
                    assert_eq!(
                        s.chars().next(),
                        word.chars().next(),
                        "{w:?} stems to {s:?}"
                    );
                }
            }
        }
    }

    /// Tantivy's generator over `en_stem`, and ours over the gated analyzer, for `terms`.
    fn generators(terms: &[&str]) -> (SnippetGenerator, Highlighter) {
        let field = tantivy::schema::Field::from_field_id(0);
        let terms: BTreeMap<String, tantivy::Score> = terms
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), 1.0 / (2.0 + i as f32)))
            .collect();
        let firsts = terms.keys().filter_map(|t| t.chars().next()).collect();
        (
            SnippetGenerator::new(terms.clone(), en_stem(), field, MAX_HIGHLIGHT_CHARS),
            Highlighter::new(terms, gated_analyzer(firsts), MAX_HIGHLIGHT_CHARS),
        )
    }

    /// Tantivy's highlight as `search` uses it: none when nothing is highlighted.
    fn html(gen: &SnippetGenerator, text: &str) -> Option<String> {
        let mut s = gen.snippet(text);
        if s.highlighted().is_empty() {
            return None;
        }
        s.set_snippet_prefix_postfix("<mark>", "</mark>");
        Some(s.to_html())
    }

    #[test]
    fn gated_highlights_equal_tantivys() {
        let text = "The runner was running; she runs daily. Dying stars and lying skies: \
                    the sky is early, only the news. Generously, the university's universe. \
                    <b>Runs</b> & \"news\" aren't 'early'.";
        let terms: Vec<String> = ["run", "sky", "die", "univers", "news", "earli"]
            .iter()
            .map(|w| stems(w).concat())
            .collect();
        let refs: Vec<&str> = terms.iter().map(String::as_str).collect();
        let (plain, mut ours) = generators(&refs);
        let reference = html(&plain, text);
        assert!(reference.is_some(), "the reference highlights something");
        assert_eq!(reference, ours.highlight(text));
        assert_eq!(html(&plain, "nothing to see"), None);
        assert_eq!(ours.highlight("nothing to see"), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        /// Random texts of inflected words (with characters HTML escapes) and random query
        /// words: the same fragment, marks and escaping as Tantivy's.
        #[test]
        fn gated_highlights_equal_tantivys_on_random_texts(
            words in proptest::collection::vec(0..WORDS.len(), 0..120),
            seps in proptest::collection::vec(prop::sample::select(vec![" ", ", ", ". ", "\n", "-", "'", " & ", " <i>", "\" "]), 120),
            query in proptest::collection::vec(0..WORDS.len(), 1..4),
        ) {
            let text: String = words
                .iter()
                .zip(seps.iter())
                .map(|(w, s)| format!("{}{s}", WORDS[*w]))
                .collect();
            let terms: Vec<String> = query.iter().flat_map(|q| stems(WORDS[*q])).collect();
            let refs: Vec<&str> = terms.iter().map(String::as_str).collect();
            let (plain, mut ours) = generators(&refs);
            prop_assert_eq!(html(&plain, &text), ours.highlight(&text));
        }
    }
}
