//! Tests for the HNSW index: recall against exact search, the filter fallback, the graph file
//! and its rebuild rules.

use std::sync::atomic::Ordering;

use super::*;
use crate::toy_embedder::TrigramEmbedder;

/// xorshift64*: deterministic test data without a rand dependency.
struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Roughly standard normal (Irwin–Hall of 4, rescaled).
    fn normal(&mut self) -> f32 {
        ((0..4).map(|_| self.uniform()).sum::<f32>() - 2.0) * 3f32.sqrt()
    }

    fn unit(&mut self, dim: usize) -> Vec<f32> {
        let v: Vec<f32> = (0..dim).map(|_| self.normal()).collect();
        let norm = dot(&v, &v).sqrt();
        v.into_iter().map(|x| x / norm).collect()
    }
}

/// `centers` random unit centres; each vector is a centre plus isotropic noise of norm `noise`
/// (what real embeddings resemble more than uniform random vectors do).
fn clustered(rng: &mut Rng, n: usize, dim: usize, centers: usize, noise: f32) -> Vec<Vec<f32>> {
    let centers: Vec<Vec<f32>> = (0..centers).map(|_| rng.unit(dim)).collect();
    (0..n)
        .map(|_| {
            let center = &centers[(rng.uniform() * centers.len() as f32) as usize % centers.len()];
            let jitter = rng.unit(dim);
            center
                .iter()
                .zip(jitter)
                .map(|(c, j)| c + noise * j)
                .collect()
        })
        .collect()
}

fn clustered_index(n: usize, dim: usize) -> (ExactIndex, Vec<Vec<f32>>) {
    let mut rng = Rng(0x00c0_ffee);
    let mut all = clustered(&mut rng, n + 50, dim, 100, 0.6);
    let queries = all.split_off(n);
    (ExactIndex::new(dim, all).unwrap(), queries)
}

fn recall(exact: &[(usize, f32)], approximate: &[(usize, f32)]) -> f64 {
    let found = exact
        .iter()
        .filter(|(item, _)| approximate.iter().any(|(other, _)| other == item))
        .count();
    found as f64 / exact.len() as f64
}

#[test]
fn recall_at_10_on_clustered_vectors_is_at_least_095() {
    let (exact, queries) = clustered_index(5_000, 256);
    let ann = AnnIndex::build(&exact);
    assert_eq!((ann.len(), ann.dim()), (5_000, 256));
    let mut total = 0.0;
    for query in &queries {
        let truth = exact.search(query, 10, None).unwrap();
        let hits = ann.search(query, 10, None).unwrap();
        assert_eq!(hits.len(), 10);
        assert!(
            hits.windows(2).all(|pair| pair[0].1 >= pair[1].1),
            "best first"
        );
        for (item, score) in &hits {
            let expected = dot(
                exact.vector(*item).unwrap(),
                &unit_query(256, query).unwrap(),
            );
            assert_eq!(*score, expected, "scores are exact cosines");
        }
        total += recall(&truth, &hits);
    }
    let mean = total / queries.len() as f64;
    assert!(mean >= 0.95, "recall@10 {mean:.3}");
}

#[test]
fn filters_return_only_allowed_items_and_fall_back_to_exact_when_selective() {
    let (exact, queries) = clustered_index(3_000, 64);
    let ann = AnnIndex::build(&exact);
    let query = &queries[0];

    // 2% allowed: below the exact-scan share, so the answer is exact search's, item for item.
    let rare = |item: usize| item % 50 == 7;
    assert_eq!(ann.plan(10, Some(&rare)), Plan::Exact);
    let hits = ann.search(query, 10, Some(&rare)).unwrap();
    assert_eq!(hits, exact.search(query, 10, Some(&rare)).unwrap());
    assert!(hits.iter().all(|(item, _)| rare(*item)));

    // Half allowed: the graph answers, still only allowed items, close to exact.
    let half = |item: usize| item.is_multiple_of(2);
    assert_eq!(ann.plan(10, Some(&half)), Plan::Graph);
    let hits = ann.search(query, 10, Some(&half)).unwrap();
    assert_eq!(hits.len(), 10);
    assert!(hits.iter().all(|(item, _)| half(*item)));
    assert!(recall(&exact.search(query, 10, Some(&half)).unwrap(), &hits) >= 0.8);

    // A quarter allowed with k = 50: more than the graph's candidates can be expected to hold.
    let quarter = |item: usize| item % 4 == 1;
    assert_eq!(ann.plan(50, Some(&quarter)), Plan::Exact);

    // Fewer allowed items than k: exactly those come back.
    let three = |item: usize| [5, 1_500, 2_999].contains(&item);
    let hits = ann.search(query, 10, Some(&three)).unwrap();
    let mut items: Vec<usize> = hits.iter().map(|hit| hit.0).collect();
    items.sort_unstable();
    assert_eq!(items, [5, 1_500, 2_999]);
    let nothing = |_: usize| false;
    assert!(ann.search(query, 10, Some(&nothing)).unwrap().is_empty());
}

#[test]
fn large_k_small_indexes_and_bad_queries() {
    let (exact, queries) = clustered_index(400, 16);
    let ann = AnnIndex::build(&exact);
    let all = ann.search(&queries[0], 1_000, None).unwrap();
    assert_eq!(
        all,
        exact.search(&queries[0], 1_000, None).unwrap(),
        "k > ef: exact"
    );
    assert!(ann.search(&queries[0], 0, None).unwrap().is_empty());
    assert!(matches!(
        ann.search(&[1.0; 3], 5, None),
        Err(DenseError::QueryDimension {
            expected: 16,
            got: 3
        })
    ));
    assert!(ann.search(&[f32::NAN; 16], 5, None).is_err());

    let tiny = ExactIndex::new(2, vec![vec![1.0, 0.0], vec![0.0, 1.0], vec![1.0, 1.0]]).unwrap();
    let tiny_ann = AnnIndex::build(&tiny);
    assert_eq!(
        tiny_ann.search(&[1.0, 0.1], 5, None).unwrap(),
        tiny.search(&[1.0, 0.1], 5, None).unwrap()
    );
    let empty = AnnIndex::build(&ExactIndex::new(4, Vec::new()).unwrap());
    assert!(empty.is_empty());
    assert!(empty.search(&[1.0; 4], 5, None).unwrap().is_empty());
}

fn same_answers(a: &AnnIndex, b: &AnnIndex, queries: &[Vec<f32>]) {
    assert_eq!((a.dim(), a.len()), (b.dim(), b.len()));
    assert_eq!(a.items, b.items);
    for query in queries {
        assert_eq!(
            a.search(query, 10, None).unwrap(),
            b.search(query, 10, None).unwrap()
        );
    }
}

#[test]
fn the_graph_file_round_trips_by_key_and_refuses_damage() {
    let dir = tempfile::tempdir().unwrap();
    let (exact, queries) = clustered_index(1_000, 32);
    let ann = AnnIndex::build(&exact);
    let key = DenseKey {
        catalog_hash: "abc".into(),
        embedder_id: "toy".into(),
    };
    let path = ann.save(dir.path(), &key).unwrap();
    assert_eq!(path, key.graph_file_in(dir.path()));
    assert_ne!(
        path,
        key.file_in(dir.path()),
        "its own file beside the vectors"
    );
    let loaded = AnnIndex::load(dir.path(), &key).unwrap().unwrap();
    same_answers(&ann, &loaded, &queries);
    same_answers(&ann, &AnnIndex::build(&exact), &queries[..5]);

    let other = DenseKey {
        catalog_hash: "def".into(),
        ..key.clone()
    };
    assert!(AnnIndex::load(dir.path(), &other).unwrap().is_none());
    std::fs::copy(&path, other.graph_file_in(dir.path())).unwrap();
    assert!(
        AnnIndex::load(dir.path(), &other).unwrap().is_none(),
        "a file whose header names another key is not used"
    );

    let bytes = std::fs::read(&path).unwrap();
    let mut parameters = bytes.clone();
    parameters[24] ^= 1; // ef_search
    std::fs::write(&path, &parameters).unwrap();
    assert!(
        AnnIndex::load(dir.path(), &key).unwrap().is_none(),
        "built with other parameters: rebuild"
    );
    let mut flipped = bytes.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x40;
    std::fs::write(&path, &flipped).unwrap();
    assert!(matches!(
        AnnIndex::load(dir.path(), &key),
        Err(DenseError::Corrupt {
            reason: "checksum mismatch",
            ..
        })
    ));
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    assert!(matches!(
        AnnIndex::load(dir.path(), &key),
        Err(DenseError::Corrupt { .. })
    ));
    std::fs::write(&path, b"SPRHNSW1").unwrap();
    assert!(matches!(
        AnnIndex::load(dir.path(), &key),
        Err(DenseError::Corrupt {
            reason: "truncated header",
            ..
        })
    ));
    std::fs::write(&path, b"not ours at all").unwrap();
    assert!(matches!(
        AnnIndex::load(dir.path(), &key),
        Err(DenseError::Corrupt { .. })
    ));
}

#[test]
fn open_or_build_builds_once_per_key_and_reuses_the_vectors() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Catalog::eco();
    let embedder = TrigramEmbedder::new(64);
    let (first, built) = AnnIndex::open_or_build(dir.path(), &catalog, &embedder).unwrap();
    assert!(built);
    assert_eq!(first.len(), catalog.len());
    let key = DenseKey::new(&catalog, &embedder);
    assert!(key.file_in(dir.path()).exists() && key.graph_file_in(dir.path()).exists());
    let embedded = embedder.documents_embedded.load(Ordering::SeqCst);
    assert_eq!(embedded, catalog.len());

    let queries: Vec<Vec<f32>> = ["텀블러", "바닷가 쓰레기", "vegan"]
        .iter()
        .map(|text| embedder.embed_query(text).unwrap())
        .collect();
    let (second, built) = AnnIndex::open_or_build(dir.path(), &catalog, &embedder).unwrap();
    assert!(!built, "same key: the graph is loaded");
    same_answers(&first, &second, &queries);

    std::fs::write(key.graph_file_in(dir.path()), b"junk").unwrap();
    let (third, built) = AnnIndex::open_or_build(dir.path(), &catalog, &embedder).unwrap();
    assert!(built, "a corrupt graph is rebuilt");
    same_answers(&first, &third, &queries);
    assert_eq!(
        embedder.documents_embedded.load(Ordering::SeqCst),
        embedded,
        "from the saved vectors, without embedding again"
    );

    let other = TrigramEmbedder::new(32);
    let (fourth, built) = AnnIndex::open_or_build(dir.path(), &catalog, &other).unwrap();
    assert!(built, "another embedder is another key");
    assert_eq!(fourth.dim(), 32);
    assert_eq!(
        other.documents_embedded.load(Ordering::SeqCst),
        catalog.len()
    );
}
