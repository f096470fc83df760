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
//! The cost is bounded: candidates are read only until the page (`offset + limit` distinct
//! results) is full, each compared with the results kept by sorted-shingle merges. A result's
//! `duplicates` are therefore the candidates collapsed onto it that rank above the page's last
//! result (a copy ranked below it is not looked at).

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

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// One step of the FNV-1a-like word hash: one multiply per (lowercased) character.
fn eat(h: u64, c: char) -> u64 {
    (h ^ u64::from(c as u32)).wrapping_mul(FNV_PRIME)
}

/// Mixes `v` into `h` (order matters): a 64-bit finalizer over the running value.
fn mix(h: u64, v: u64) -> u64 {
    finalize(h.rotate_left(23) ^ v)
}

/// A 64-bit finalizer (murmur3's).
fn finalize(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// The hash of three consecutive words (order matters): one finalizer over the three.
fn shingle(a: u64, b: u64, c: u64) -> u64 {
    finalize(
        a.wrapping_mul(0x9e37_79b9_7f4a_7c15)
            ^ b.rotate_left(21).wrapping_mul(0xc2b2_ae3d_27d4_eb4f)
            ^ c.rotate_left(42).wrapping_mul(0x1656_67b1_9e37_79f9),
    )
}

/// The hash of each word of `text` (its runs of alphanumeric characters, lowercased) in one
/// pass over the characters: no allocation per word, one multiply per character (this runs on
/// every candidate of every search).
fn word_hashes(text: &str, out: &mut Vec<u64>) {
    let mut h = FNV_OFFSET;
    let mut in_word = false;
    for c in text.chars() {
        if c.is_ascii() {
            if c.is_ascii_alphanumeric() {
                h = eat(h, c.to_ascii_lowercase());
                in_word = true;
                continue;
            }
        } else if c.is_alphanumeric() {
            for l in c.to_lowercase() {
                h = eat(h, l);
            }
            in_word = true;
            continue;
        }
        if in_word {
            out.push(h);
            h = FNV_OFFSET;
            in_word = false;
        }
    }
    if in_word {
        out.push(h);
    }
}

fn fingerprint(text: &str) -> Fingerprint {
    let mut words: Vec<u64> = Vec::with_capacity(text.len() / 5 + 1);
    word_hashes(text, &mut words);
    let mut shingles: Vec<u64> = words
        .windows(SHINGLE_WORDS)
        .map(|w| shingle(w[0], w[1], w[2]))
        .collect();
    shingles.sort_unstable();
    shingles.dedup();
    Fingerprint {
        exact: words.iter().fold(words.len() as u64, |h, v| mix(h, *v)),
        shingles,
    }
}

/// Whether at least `need` elements of `small` are also in `large` (both sorted, deduplicated).
/// The merge stops as soon as the answer is known: when `need` are found, or when more of
/// `small` are missed than `small.len() - need` (the usual case of two unrelated texts, after a
/// fraction of the walk).
fn shares_at_least(small: &[u64], large: &[u64], need: usize) -> bool {
    let allowed_misses = small.len().saturating_sub(need);
    let (mut i, mut j, mut found, mut missed) = (0, 0, 0, 0);
    while i < small.len() && j < large.len() {
        match small[i].cmp(&large[j]) {
            std::cmp::Ordering::Less => {
                missed += 1;
                if missed > allowed_misses {
                    return false;
                }
                i += 1;
            }
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                found += 1;
                if found >= need {
                    return true;
                }
                i += 1;
                j += 1;
            }
        }
    }
    found >= need
}

fn duplicates(a: &Fingerprint, b: &Fingerprint) -> bool {
    if a.exact == b.exact {
        return true;
    }
    let (small, large) = if a.shingles.len() <= b.shingles.len() {
        (&a.shingles, &b.shingles)
    } else {
        (&b.shingles, &a.shingles)
    };
    if small.len() < MIN_SHINGLES {
        return false;
    }
    // `shared >= NEAR_SHARE * small`, in integers: the fewest shared shingles that make it.
    let need = (NEAR_SHARE * small.len() as f64).ceil() as usize;
    shares_at_least(small, large, need)
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

    /// The definition, on strings: normalized words, their 3-word shingles as a set, exact
    /// equality of the normalized text or containment of the shorter's shingles.
    fn reference_duplicates(a: &str, b: &str) -> bool {
        use std::collections::BTreeSet;
        let words = |t: &str| -> Vec<String> {
            t.split(|c: char| !c.is_alphanumeric())
                .filter(|w| !w.is_empty())
                .map(|w| w.chars().flat_map(char::to_lowercase).collect())
                .collect()
        };
        let (wa, wb) = (words(a), words(b));
        if wa == wb {
            return true;
        }
        let shingles = |w: &[String]| -> BTreeSet<Vec<String>> {
            w.windows(SHINGLE_WORDS).map(<[String]>::to_vec).collect()
        };
        let (sa, sb) = (shingles(&wa), shingles(&wb));
        let small = sa.len().min(sb.len());
        small >= MIN_SHINGLES && sa.intersection(&sb).count() as f64 >= NEAR_SHARE * small as f64
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(400))]
        /// The one-pass hashing and the early-stopping merge decide as the definition does, on
        /// texts of a few words (repeats, case, punctuation, non-ASCII letters) that overlap.
        #[test]
        fn fingerprints_decide_as_the_definition(
            base in proptest::collection::vec(0usize..12, 0..40),
            edits in proptest::collection::vec((0usize..40, 0usize..12), 0..8),
            cut in 0usize..20,
            seps in proptest::collection::vec(0usize..5, 40),
            upper in proptest::prelude::any::<bool>(),
        ) {
            const WORDS: [&str; 12] = [
                "rust", "Memory", "owner", "ÉCOLE", "naïve", "σοφία", "x1", "2024", "the",
                "a", "borrow", "ß",
            ];
            const SEPS: [&str; 5] = [" ", ", ", ".\n", " -- ", "'"];
            let text = |ws: &[usize]| -> String {
                ws.iter()
                    .enumerate()
                    .map(|(i, w)| format!("{}{}", WORDS[*w], SEPS[seps[i % seps.len()]]))
                    .collect()
            };
            let a = text(&base);
            let mut other = base.clone();
            for (at, w) in &edits {
                if *at < other.len() {
                    other[*at] = *w;
                }
            }
            let other: Vec<usize> = other.into_iter().skip(cut.min(base.len())).collect();
            let mut b = text(&other);
            if upper {
                b = b.to_uppercase();
            }
            let got = duplicates(&fingerprint(&a), &fingerprint(&b));
            proptest::prop_assert_eq!(got, reference_duplicates(&a, &b), "{:?} / {:?}", a, b);
        }
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
