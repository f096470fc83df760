//! Collapsing of duplicate results: a site's `print.html` repeats every chapter, a folder holds
//! a file and its copy; their identical passages must not fill a page of results nor a chat's
//! context. Results are walked best first; a result whose text duplicates one already kept is
//! not returned on its own but listed in that one's `duplicates`.
//!
//! Two texts are duplicates when
//! - their normalized text is the same (lowercased, every run of non-alphanumeric characters
//!   one space: markup, punctuation and line breaks do not count), or
//! - they are near-duplicates: at least [`NEAR_SHARE`] of the word 3-shingles (every run of
//!   three consecutive normalized words, hashed) of the shorter one are also in the other.
//!   Containment rather than Jaccard similarity, because the same passage cut at different
//!   chunk boundaries in two documents (a chapter alone, and inside `print.html`) is mostly
//!   contained in its counterpart while the two differ in length. Texts of fewer than
//!   [`MIN_SHINGLES`] shingles are only compared exactly (a few shared words are no evidence).
//!
//! The cost is bounded: at most `MAX_CANDIDATES` results are read, each compared with the
//! results kept (at most `offset + limit`), by sorted-shingle merges.

use super::SearchResult;

/// Least share of the shorter text's shingles found in the other for a near-duplicate.
pub const NEAR_SHARE: f64 = 0.8;
/// Fewest shingles for a text to be compared as a near-duplicate.
pub const MIN_SHINGLES: usize = 8;
/// Words per shingle.
const SHINGLE_WORDS: usize = 3;

/// A result's text, reduced for comparison.
struct Fingerprint {
    exact: u64,
    /// Sorted, deduplicated shingle hashes.
    shingles: Vec<u64>,
}

/// FNV-1a over a word's lowercased characters: no allocation per word (this runs on every
/// result of every search; `to_lowercase` and SipHash per word were a tenth of a query's CPU).
fn word_hash(word: &str) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |c: char| {
        for b in (c as u32).to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(PRIME);
        }
    };
    for c in word.chars() {
        if c.is_ascii() {
            eat(c.to_ascii_lowercase());
        } else {
            c.to_lowercase().for_each(&mut eat);
        }
    }
    h
}

/// Mixes `v` into `h` (order matters): a 64-bit finalizer over the running value.
fn mix(h: u64, v: u64) -> u64 {
    let mut x = h.rotate_left(23) ^ v;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

fn fingerprint(text: &str) -> Fingerprint {
    let words: Vec<u64> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(word_hash)
        .collect();
    let mut shingles: Vec<u64> = words
        .windows(SHINGLE_WORDS)
        .map(|w| w.iter().fold(SHINGLE_WORDS as u64, |h, v| mix(h, *v)))
        .collect();
    shingles.sort_unstable();
    shingles.dedup();
    Fingerprint {
        exact: words.iter().fold(words.len() as u64, |h, v| mix(h, *v)),
        shingles,
    }
}

/// Shingles shared by two sorted lists.
fn shared(a: &[u64], b: &[u64]) -> usize {
    let (mut i, mut j, mut n) = (0, 0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                n += 1;
                i += 1;
                j += 1;
            }
        }
    }
    n
}

fn duplicates(a: &Fingerprint, b: &Fingerprint) -> bool {
    if a.exact == b.exact {
        return true;
    }
    let small = a.shingles.len().min(b.shingles.len());
    small >= MIN_SHINGLES && shared(&a.shingles, &b.shingles) as f64 >= NEAR_SHARE * small as f64
}

/// Results fed best first, collapsed: each kept result lists the later ones that duplicate it.
#[derive(Default)]
pub(super) struct Collapser {
    kept: Vec<(SearchResult, Fingerprint)>,
}

impl Collapser {
    /// Adds a result (in rank order): kept, or listed on the kept result it duplicates.
    pub(super) fn push(&mut self, r: SearchResult) {
        let f = fingerprint(&r.text);
        if let Some((first, _)) = self.kept.iter_mut().find(|(_, k)| duplicates(k, &f)) {
            first.duplicates.push(super::Duplicate {
                document_id: r.document_id,
                chunk_id: r.chunk_id,
                title: r.title,
                external_id: r.external_id,
            });
        } else {
            self.kept.push((r, f));
        }
    }

    pub(super) fn len(&self) -> usize {
        self.kept.len()
    }

    pub(super) fn into_results(self) -> Vec<SearchResult> {
        self.kept.into_iter().map(|(r, _)| r).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(id: i64, doc: &str, text: &str) -> SearchResult {
        SearchResult {
            document_id: doc.into(),
            external_id: None,
            chunk_id: id,
            title: format!("T{doc}"),
            heading_path: String::new(),
            text: text.into(),
            score: 1.0 / id as f32,
            metadata: serde_json::Value::Null,
            highlights: Vec::new(),
            duplicates: Vec::new(),
            explain: None,
        }
    }

    const PASSAGE: &str = "Ownership is a set of rules that govern how a Rust program manages memory. All programs have to manage the way they use a computer's memory while running. Some languages have garbage collection that regularly looks for no-longer-used memory as the program runs.";

    #[test]
    fn same_and_nearly_same_texts_collapse_onto_the_best() {
        let mut c = Collapser::default();
        c.push(result(1, "chapter", PASSAGE));
        // The same passage with other markup and case.
        c.push(result(
            2,
            "print",
            &PASSAGE.to_uppercase().replace(". ", ".\n\n* "),
        ));
        // Cut at another boundary, inside a longer chunk.
        c.push(result(
            3,
            "print",
            &format!("Understanding Ownership. {PASSAGE} In other languages, the programmer must explicitly allocate and free the memory."),
        ));
        // Different text.
        c.push(result(
            4,
            "other",
            "Cargo is Rust's build system and package manager.",
        ));
        // Short texts are compared exactly only.
        c.push(result(5, "x", "Rust memory rules"));
        c.push(result(6, "y", "Rust memory rules apply here"));
        assert_eq!(c.len(), 4);
        let kept = c.into_results();
        let ids: Vec<i64> = kept.iter().map(|r| r.chunk_id).collect();
        assert_eq!(ids, [1, 4, 5, 6]);
        let dups: Vec<i64> = kept[0].duplicates.iter().map(|d| d.chunk_id).collect();
        assert_eq!(dups, [2, 3]);
        assert_eq!(kept[0].duplicates[0].document_id, "print");
        assert!(kept[1].duplicates.is_empty());
    }

    #[test]
    fn a_passage_sharing_a_sentence_is_not_a_duplicate() {
        let a = fingerprint(PASSAGE);
        let b = fingerprint(
            "All programs have to manage the way they use a computer's memory while running. Borrowing lets code use a value without taking ownership of it, and the compiler checks every reference.",
        );
        assert!(!duplicates(&a, &b));
    }
}
