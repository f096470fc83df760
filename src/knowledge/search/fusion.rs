//! Fusion: weighted reciprocal-rank fusion, `w/(k+rank_vector) + (1-w)/(k+rank_fulltext)`.
//! The first page is decided by the fusion of the two lists' heads (top `head` of each): a
//! document deep in one list gets no credit from it there, which measured better than fusing
//! whole lists. Candidates beyond the heads follow, ordered by the fusion of the full lists
//! (`depth` each), so recall is that of both lists. Normalised-score (convex) fusion was
//! measured too and lost; the figures are in the README.

use std::collections::HashMap;

use crate::knowledge::ann::AnnParams;

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

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
