//! Reciprocal rank fusion: merging rankings whose scores are not comparable (BM25, cosine).

use std::collections::{HashMap, HashSet};

/// The usual RRF constant (Cormack et al. 2009): damps the weight of the very first ranks.
pub const RRF_K: f32 = 60.0;

/// Fuses rankings by reciprocal rank: each item scores the sum over lists of `1 / (k + rank)`,
/// rank counted from 1; the input scores are ignored (each list must already be best first).
/// An item repeated within one list counts at its first rank. Ties go to the lower
/// item index so the output is deterministic.
pub fn rrf(lists: &[Vec<(usize, f32)>], k: f32) -> Vec<(usize, f32)> {
    let mut fused: HashMap<usize, f32> = HashMap::new();
    for list in lists {
        let mut seen = HashSet::with_capacity(list.len());
        for (position, &(item, _)) in list.iter().enumerate() {
            if seen.insert(item) {
                *fused.entry(item).or_insert(0.0) += 1.0 / (k + (position + 1) as f32);
            }
        }
    }
    let mut ranked: Vec<(usize, f32)> = fused.into_iter().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agreement_wins_over_a_single_first_place() {
        let bm25 = vec![(1, 12.0), (2, 9.0), (3, 1.0)];
        let dense = vec![(2, 0.9), (4, 0.8), (1, 0.1)];
        let fused = rrf(&[bm25, dense], RRF_K);
        let order: Vec<usize> = fused.iter().map(|&(item, _)| item).collect();
        assert_eq!(order, [2, 1, 4, 3]);
        let expected_2 = 1.0 / 62.0 + 1.0 / 61.0;
        assert!((fused[0].1 - expected_2).abs() < 1e-7);
        assert!((fused[2].1 - 1.0 / 62.0).abs() < 1e-7);
    }

    #[test]
    fn scores_are_ignored_only_ranks_count() {
        let a = rrf(&[vec![(7, 1000.0), (8, 0.001)]], RRF_K);
        let b = rrf(&[vec![(7, -1.0), (8, -2.0)]], RRF_K);
        assert_eq!(a, b);
    }

    #[test]
    fn ties_break_by_item_index_and_duplicates_count_once() {
        let fused = rrf(&[vec![(5, 1.0)], vec![(3, 1.0)]], RRF_K);
        assert_eq!(fused.iter().map(|h| h.0).collect::<Vec<_>>(), [3, 5]);
        let once = rrf(&[vec![(1, 1.0), (1, 0.5), (2, 0.1)]], 0.0);
        assert_eq!(once, vec![(1, 1.0), (2, 1.0 / 3.0)]);
    }

    #[test]
    fn empty_input_fuses_to_nothing() {
        assert!(rrf(&[], RRF_K).is_empty());
        assert!(rrf(&[vec![], vec![]], RRF_K).is_empty());
    }
}
