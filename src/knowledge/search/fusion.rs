//! Fusion: a calibrated convex combination of the two lists, weighted per query by how peaked
//! each list is.
//!
//! 1. Each list's raw scores are mapped to [0, 1] by the query's own score distribution (no
//!    labels involved): BM25 is divided by the list's best score (its natural floor, a document
//!    that matches nothing, is 0); a cosine similarity is min-max scaled between the list's best
//!    and the score at rank `depth` (or the last candidate), its floor the depth of the list.
//!    A document absent from a list gets 0 from it.
//! 2. Each list's *peakedness* is `1 − normalized score at rank peak_rank + 1`: near 1 when the
//!    head stands out from the rest (a rare term matched by a few documents, a close semantic
//!    neighbour), near 0 when the list is flat (nothing stands out). A list with at most
//!    `peak_rank` candidates is fully peaked (1).
//! 3. The weights: `w_vector ∝ weight · peak_vector^gamma`, `w_fulltext ∝ (1 − weight) ·
//!    peak_fulltext^gamma`, summing to 1 (an empty list gets 0 and the other 1).
//! 4. `score = w_fulltext · norm_fulltext + w_vector · norm_vector`, in [0, 1]: 1 only for a
//!    document first in both lists, comparable within one query. Ties go to the better rank in
//!    either list, then to the chunk id (deterministic).
//!
//! The constants (`peak_rank`, `gamma`, and the prior `weight` of each built-in embedder's
//! vector list: how good an embedder is next to BM25 is a property of the embedder, not of a
//! query), each chosen by cross-validation over query folds within and across the two
//! evaluation sets (`enclave eval --cv`, README). The peak term
//! is what keeps exact matches: a query's rare terms matched by one document make the full-text
//! list peaked and the vector list (which does not know the terms) flat, so that document
//! leads the page.

use std::collections::HashMap;

use crate::knowledge::ann::AnnParams;
use crate::knowledge::embedders::EmbedderConfig;

/// Fusion parameters (chosen by cross-validation, see the module documentation).
#[derive(Debug, Clone, Copy)]
pub struct Fusion {
    /// Prior weight of the vector list, 0..=1 (the full-text list gets `1 − weight`), for
    /// embedders without their own (OpenAI-compatible, user-provided); [`Fusion::for_embedder`]
    /// puts the built-in embedder's in its place.
    pub weight: f32,
    /// Prior weight of the vector list with the built-in static embedder.
    pub weight_static: f32,
    /// Prior weight of the vector list with the built-in MiniLM embedder.
    pub weight_minilm: f32,
    /// The rank whose normalized score measures a list's peakedness.
    pub peak_rank: usize,
    /// Exponent of the peakedness in the weights (0: fixed weights).
    pub gamma: f32,
    /// Candidates taken from each list (at least `offset + limit`); the normalization reads
    /// only the first `depth`, so pages of one query are scored alike.
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
            // `enclave eval --cv` on both evaluation sets (README, Retrieval quality).
            weight: 0.5,
            weight_static: 0.45,
            weight_minilm: 0.7,
            peak_rank: 20,
            gamma: 1.0,
            depth: 100,
            title_boost: 2.0,
            ann: AnnParams::default(),
            term_set_limit: 1024,
        }
    }
}

impl Fusion {
    /// These parameters with the prior weight of `embedder`'s vector list in `weight`.
    pub fn for_embedder(mut self, embedder: &EmbedderConfig) -> Fusion {
        self.weight = match embedder {
            EmbedderConfig::Static => self.weight_static,
            EmbedderConfig::Minilm => self.weight_minilm,
            _ => self.weight,
        };
        self
    }
}

/// How a list's raw scores map to [0, 1].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scale {
    /// The list's best score (maps to 1).
    pub top: f32,
    /// The score that maps to 0 (and anything below it).
    pub floor: f32,
}

impl Scale {
    /// BM25 (floor 0): the first `depth` scores of a full-text list, best first.
    pub fn bm25(list: &[(i64, f32)]) -> Option<Scale> {
        let top = list.first()?.1;
        Some(Scale { top, floor: 0.0 })
    }

    /// Min-max over the first `depth` scores of a vector list, best first.
    pub fn min_max(list: &[(i64, f32)], depth: usize) -> Option<Scale> {
        let top = list.first()?.1;
        let floor = list[..list.len().min(depth.max(1))]
            .iter()
            .map(|x| x.1)
            .fold(top, f32::min);
        Some(Scale { top, floor })
    }

    /// `s` mapped to [0, 1]. A flat list (top = floor) maps everything at the top to 1.
    pub fn unit(&self, s: f32) -> f32 {
        let span = self.top - self.floor;
        if span.is_nan() || span <= f32::EPSILON {
            return if s >= self.top { 1.0 } else { 0.0 };
        }
        ((s - self.floor) / span).clamp(0.0, 1.0)
    }

    /// `1 − unit(score at rank peak_rank + 1)`; 1 for a list of at most `peak_rank`.
    fn peak(&self, list: &[(i64, f32)], peak_rank: usize) -> f32 {
        match list.get(peak_rank) {
            Some(&(_, s)) => 1.0 - self.unit(s),
            None => 1.0,
        }
    }
}

/// The weights of the two lists in one query (they sum to 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weights {
    pub fulltext: f32,
    pub vector: f32,
}

/// The fusion of one query: the ranked chunks with their fused scores, and what produced them.
#[derive(Debug, Clone)]
pub struct Fused {
    /// (chunk id, score in [0, 1]), best first.
    pub ranked: Vec<(i64, f32)>,
    pub weights: Weights,
    pub fulltext: Option<Scale>,
    pub vector: Option<Scale>,
}

/// The per-query weights of the lists (see the module documentation).
fn weights(
    lexical: &[(i64, f32)],
    semantic: &[(i64, f32)],
    lex: Option<&Scale>,
    sem: Option<&Scale>,
    f: &Fusion,
) -> Weights {
    let prior = f.weight.clamp(0.0, 1.0);
    match (lex, sem) {
        (None, None) => Weights {
            fulltext: 1.0 - prior,
            vector: prior,
        },
        (Some(_), None) => Weights {
            fulltext: 1.0,
            vector: 0.0,
        },
        (None, Some(_)) => Weights {
            fulltext: 0.0,
            vector: 1.0,
        },
        (Some(l), Some(s)) => {
            let pl = l.peak(lexical, f.peak_rank).powf(f.gamma);
            let pv = s.peak(semantic, f.peak_rank).powf(f.gamma);
            let (a, b) = ((1.0 - prior) * pl, prior * pv);
            if a + b > f32::EPSILON && (a + b).is_finite() {
                Weights {
                    fulltext: a / (a + b),
                    vector: b / (a + b),
                }
            } else {
                Weights {
                    fulltext: 1.0 - prior,
                    vector: prior,
                }
            }
        }
    }
}

/// Fuses the full-text list (BM25) and the vector list (cosine similarity), each best first
/// with distinct ids (see the module documentation).
pub fn fuse(lexical: &[(i64, f32)], semantic: &[(i64, f32)], f: &Fusion) -> Fused {
    let depth = f.depth.max(1);
    let lex = Scale::bm25(lexical);
    let sem = Scale::min_max(semantic, depth);
    let w = weights(lexical, semantic, lex.as_ref(), sem.as_ref(), f);
    // (score, best rank in either list)
    let mut scores: HashMap<i64, (f32, usize)> = HashMap::new();
    for (list, scale, weight) in [(lexical, lex, w.fulltext), (semantic, sem, w.vector)] {
        let Some(scale) = scale else { continue };
        for (rank, &(id, s)) in list.iter().enumerate() {
            let e = scores.entry(id).or_insert((0.0, usize::MAX));
            e.0 += weight * scale.unit(s);
            e.1 = e.1.min(rank);
        }
    }
    let mut ranked: Vec<(i64, f32, usize)> = scores
        .into_iter()
        .map(|(id, (s, r))| (id, s.clamp(0.0, 1.0), r))
        .collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.2.cmp(&b.2)).then(a.0.cmp(&b.0)));
    Fused {
        ranked: ranked.into_iter().map(|(id, s, _)| (id, s)).collect(),
        weights: w,
        fulltext: lex,
        vector: sem,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f() -> Fusion {
        Fusion::default()
    }

    #[test]
    fn agreement_wins_and_the_prior_weight_decides_disagreement() {
        let lex = vec![(1, 10.0), (2, 5.0), (3, 1.0)];
        let sem = vec![(2, 0.9), (4, 0.8), (1, 0.1)];
        let fused = fuse(&lex, &sem, &f());
        assert_eq!(fused.ranked[0].0, 2, "{fused:?}");
        let fixed = |weight| Fusion {
            weight,
            gamma: 0.0,
            ..f()
        };
        assert_eq!(fuse(&lex, &sem, &fixed(0.0)).ranked[0].0, 1);
        let only_sem = fuse(&lex, &sem, &fixed(1.0));
        assert_eq!(only_sem.ranked[0].0, 2);
        assert_eq!(only_sem.ranked[1].0, 4);
        assert!(fuse(&[], &[], &f()).ranked.is_empty());
    }

    #[test]
    fn a_peaked_list_outweighs_a_flat_one() {
        // One document matches the query's rare terms; the vector list is flat.
        let lex = vec![(7, 20.0), (1, 1.0), (2, 0.9)];
        let sem: Vec<(i64, f32)> = (100..200).map(|i| (i, 0.5 - i as f32 * 1e-4)).collect();
        let fused = fuse(&lex, &sem, &Fusion { weight: 0.7, ..f() });
        assert_eq!(fused.ranked[0].0, 7, "{:?}", &fused.ranked[..3]);
        assert!(fused.weights.fulltext > fused.weights.vector);
    }

    #[test]
    fn one_list_alone_is_that_list_normalized() {
        let lex = vec![(1, 8.0), (2, 4.0)];
        let fused = fuse(&lex, &[], &f());
        assert_eq!(fused.ranked, vec![(1, 1.0), (2, 0.5)]);
        assert_eq!(fused.weights.fulltext, 1.0);
        let sem = vec![(1, 0.75), (2, 0.5), (3, 0.25)];
        let fused = fuse(&[], &sem, &f());
        assert_eq!(fused.ranked, vec![(1, 1.0), (2, 0.5), (3, 0.0)]);
    }

    /// A ranked list of distinct ids (scores decreasing, in `lo..hi`), as a search list is.
    fn ranked_ids(lo: f32, hi: f32) -> proptest::strategy::BoxedStrategy<Vec<(i64, f32)>> {
        use proptest::prelude::*;
        (
            prop::collection::hash_set(0i64..60, 0..30),
            prop::collection::vec(lo..hi, 30),
        )
            .prop_map(|(set, mut scores)| {
                scores.sort_by(|a, b| b.total_cmp(a));
                set.into_iter().zip(scores).collect::<Vec<_>>()
            })
            .prop_shuffle()
            .prop_map(|mut list| {
                // Shuffled ids, scores still best first.
                let mut scores: Vec<f32> = list.iter().map(|x| x.1).collect();
                scores.sort_by(|a, b| b.total_cmp(a));
                for (x, s) in list.iter_mut().zip(scores) {
                    x.1 = s;
                }
                list
            })
            .boxed()
    }

    fn fusion() -> proptest::strategy::BoxedStrategy<Fusion> {
        use proptest::prelude::*;
        (0.0f32..=1.0, 1usize..30, 0.0f32..3.0, 1usize..40)
            .prop_map(|(weight, peak_rank, gamma, depth)| Fusion {
                weight,
                peak_rank,
                gamma,
                depth,
                ..Fusion::default()
            })
            .boxed()
    }

    proptest::proptest! {
        /// Whatever the lists and constants: every candidate comes out once, best first, with a
        /// score in [0, 1]; the weights sum to 1; the same input gives the same output.
        #[test]
        fn scores_are_in_unit_range_and_deterministic(
            lex in ranked_ids(0.0, 30.0),
            sem in ranked_ids(-1.0, 1.0),
            f in fusion(),
        ) {
            let fused = fuse(&lex, &sem, &f);
            let mut got: Vec<i64> = fused.ranked.iter().map(|x| x.0).collect();
            got.sort_unstable();
            let mut want: Vec<i64> = lex.iter().chain(&sem).map(|x| x.0).collect();
            want.sort_unstable();
            want.dedup();
            proptest::prop_assert_eq!(got, want);
            proptest::prop_assert!(fused.ranked.iter().all(|x| (0.0..=1.0).contains(&x.1)));
            proptest::prop_assert!(fused.ranked.windows(2).all(|w| w[0].1 >= w[1].1));
            let w = fused.weights;
            proptest::prop_assert!((w.fulltext + w.vector - 1.0).abs() < 1e-4, "{:?}", w);
            let again = fuse(&lex, &sem, &f);
            proptest::prop_assert_eq!(fused.ranked, again.ranked);
        }

        /// Monotone in each list's rank: of two documents with the same standing in one list,
        /// the one ranked better in the other list scores at least as high.
        #[test]
        fn monotone_in_each_lists_rank(
            lex in ranked_ids(0.0, 30.0),
            sem in ranked_ids(-1.0, 1.0),
            f in fusion(),
        ) {
            let fused = fuse(&lex, &sem, &f);
            let score: HashMap<i64, f32> = fused.ranked.iter().copied().collect();
            let rank_in = |list: &[(i64, f32)], id: i64| list.iter().position(|x| x.0 == id);
            for (list, other) in [(&lex, &sem), (&sem, &lex)] {
                for (i, a) in list.iter().enumerate() {
                    for b in &list[i + 1..] {
                        // a is ranked above b in `list`; same standing in `other`: compare.
                        let (ra, rb) = (rank_in(other, a.0), rank_in(other, b.0));
                        let same = match (ra, rb) {
                            (None, None) => true,
                            (Some(x), Some(y)) => other[x].1 == other[y].1,
                            _ => false,
                        };
                        if same {
                            proptest::prop_assert!(score[&a.0] >= score[&b.0] - 1e-6);
                        }
                    }
                }
            }
        }
    }
}
