//! The `k` best scored items of a stream, kept in a bounded heap: O(n log k) time and O(k)
//! memory, where collecting and sorting every score costs O(n) memory per query.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// One scored item; ordered so that the heap's top is the *worst* kept item.
#[derive(Debug, Clone, Copy)]
struct Scored {
    index: usize,
    score: f32,
}

impl Scored {
    /// Best first: higher score, then lower index (the order [`TopK::into_best_first`] returns).
    fn best_first(&self, other: &Scored) -> Ordering {
        other
            .score
            .total_cmp(&self.score)
            .then(self.index.cmp(&other.index))
    }
}

impl PartialEq for Scored {
    fn eq(&self, other: &Scored) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Scored {}

impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Scored) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scored {
    /// Worse is greater, so `BinaryHeap::peek` is the item to evict.
    fn cmp(&self, other: &Scored) -> Ordering {
        self.best_first(other)
    }
}

/// Keeps the `k` best `(index, score)` pairs pushed into it.
#[derive(Debug)]
pub(crate) struct TopK {
    k: usize,
    heap: BinaryHeap<Scored>,
}

impl TopK {
    /// An empty selection of at most `k`; `expected` bounds the preallocation (`k` may be huge).
    pub(crate) fn new(k: usize, expected: usize) -> TopK {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k.min(expected)),
        }
    }

    /// Offers one item; kept if fewer than `k` are held or it beats the worst held.
    #[inline]
    pub(crate) fn push(&mut self, index: usize, score: f32) {
        let candidate = Scored { index, score };
        if self.heap.len() < self.k {
            self.heap.push(candidate);
        } else if let Some(mut worst) = self.heap.peek_mut() {
            if candidate < *worst {
                *worst = candidate;
            }
        }
    }

    /// The kept items, best first (score descending, ties by index ascending).
    pub(crate) fn into_best_first(self) -> Vec<(usize, f32)> {
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|scored| (scored.index, scored.score))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_sort(scores: &[f32], k: usize) -> Vec<(usize, f32)> {
        let mut all: Vec<(usize, f32)> = scores.iter().copied().enumerate().collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        all.truncate(k);
        all
    }

    #[test]
    fn the_heap_selects_what_a_full_sort_selects() {
        let mut state = 0x1234_5678_u64;
        for n in [0, 1, 2, 7, 64, 1000] {
            // Few distinct values, so ties (broken by index) are common.
            let scores: Vec<f32> = (0..n)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state % 23) as f32 / 7.0 - 1.5
                })
                .collect();
            for k in [0, 1, 3, 10, 50, n, n + 5, usize::MAX] {
                let mut top = TopK::new(k, n);
                for (index, score) in scores.iter().enumerate() {
                    top.push(index, *score);
                }
                assert_eq!(top.into_best_first(), full_sort(&scores, k), "n {n}, k {k}");
            }
        }
    }

    #[test]
    fn push_order_does_not_matter() {
        let scores = [0.5, -1.0, 0.5, 2.0, 0.0, 2.0, 0.25];
        let mut forward = TopK::new(4, scores.len());
        let mut backward = TopK::new(4, scores.len());
        for (index, score) in scores.iter().enumerate() {
            forward.push(index, *score);
        }
        for (index, score) in scores.iter().enumerate().rev() {
            backward.push(index, *score);
        }
        let expected = vec![(3, 2.0), (5, 2.0), (0, 0.5), (2, 0.5)];
        assert_eq!(forward.into_best_first(), expected);
        assert_eq!(backward.into_best_first(), expected);
    }
}
