//! Tests for the exact cosine index, its file format and its rebuild rules.

use std::sync::atomic::Ordering;

use super::*;
use crate::toy_embedder::TrigramEmbedder;

fn toy_index() -> ExactIndex {
    ExactIndex::new(
        2,
        vec![
            vec![1.0, 0.0],
            vec![0.0, 2.0],
            vec![3.0, 3.0],
            vec![-1.0, 0.0],
        ],
    )
    .unwrap()
}

#[test]
fn vectors_are_normalized_and_checked() {
    let index = toy_index();
    assert_eq!(index.len(), 4);
    assert_eq!(index.dim(), 2);
    assert_eq!(index.vector(1), Some([0.0, 1.0].as_slice()));
    let diagonal = index.vector(2).unwrap();
    assert!((diagonal[0] - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
    assert!(index.vector(4).is_none());
    assert!(matches!(
        ExactIndex::new(2, vec![vec![1.0, 0.0], vec![1.0]]),
        Err(DenseError::Dimension {
            index: 1,
            expected: 2,
            got: 1
        })
    ));
    assert!(matches!(
        ExactIndex::new(2, vec![vec![f32::NAN, 0.0]]),
        Err(DenseError::NonFinite { index: 0 })
    ));
    assert!(matches!(
        ExactIndex::new(0, vec![]),
        Err(DenseError::ZeroDimension)
    ));
    let zero = ExactIndex::new(2, vec![vec![0.0, 0.0]]).unwrap();
    assert_eq!(zero.search(&[1.0, 0.0], 1, None).unwrap(), vec![(0, 0.0)]);
}

#[test]
fn search_ranks_by_cosine_and_honours_k_and_allowed() {
    let index = toy_index();
    let hits = index.search(&[10.0, 1.0], 10, None).unwrap();
    let order: Vec<usize> = hits.iter().map(|hit| hit.0).collect();
    assert_eq!(order, [0, 2, 1, 3]);
    assert!(
        (hits[0].1 - 10.0 / 101f32.sqrt()).abs() < 1e-6,
        "cosine, not raw dot"
    );
    assert_eq!(index.search(&[10.0, 1.0], 2, None).unwrap(), hits[..2]);
    let even = |item: usize| item.is_multiple_of(2);
    let filtered = index.search(&[10.0, 1.0], 10, Some(&even)).unwrap();
    assert_eq!(filtered.iter().map(|hit| hit.0).collect::<Vec<_>>(), [0, 2]);
    assert!(index.search(&[1.0, 0.0], 0, None).unwrap().is_empty());
    assert!(matches!(
        index.search(&[1.0], 3, None),
        Err(DenseError::QueryDimension {
            expected: 2,
            got: 1
        })
    ));
    assert!(index.search(&[f32::INFINITY, 0.0], 3, None).is_err());
}

#[test]
fn save_and_load_round_trip_by_key() {
    let dir = tempfile::tempdir().unwrap();
    let index = toy_index();
    let key = DenseKey {
        catalog_hash: "abc".into(),
        embedder_id: "toy".into(),
    };
    let path = index.save(dir.path(), &key).unwrap();
    assert!(path.starts_with(dir.path()));
    assert_eq!(
        ExactIndex::load(dir.path(), &key).unwrap(),
        Some(index.clone())
    );
    let other = DenseKey {
        embedder_id: "other".into(),
        ..key.clone()
    };
    assert_eq!(
        ExactIndex::load(dir.path(), &other).unwrap(),
        None,
        "no file for that key"
    );
    std::fs::copy(&path, other.file_in(dir.path())).unwrap();
    assert_eq!(
        ExactIndex::load(dir.path(), &other).unwrap(),
        None,
        "a file whose header names another key is not used"
    );

    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
    assert!(matches!(
        ExactIndex::load(dir.path(), &key),
        Err(DenseError::Corrupt { .. })
    ));
    let mut huge = bytes.clone();
    huge[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(&path, &huge).unwrap();
    assert!(matches!(
        ExactIndex::load(dir.path(), &key),
        Err(DenseError::Corrupt { .. })
    ));
    std::fs::write(&path, b"not ours").unwrap();
    assert!(matches!(
        ExactIndex::load(dir.path(), &key),
        Err(DenseError::Corrupt { .. })
    ));
}

#[test]
fn open_or_build_embeds_once_per_catalog_and_embedder() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Catalog::eco();
    let embedder = TrigramEmbedder::new(64);
    let (first, built) = ExactIndex::open_or_build(dir.path(), &catalog, &embedder).unwrap();
    assert!(built);
    assert_eq!(first.len(), catalog.len());
    assert_eq!(
        embedder.documents_embedded.load(Ordering::SeqCst),
        catalog.len()
    );

    let (second, built) = ExactIndex::open_or_build(dir.path(), &catalog, &embedder).unwrap();
    assert!(!built, "same catalog and embedder: loaded, not embedded");
    assert_eq!(second, first);
    assert_eq!(
        embedder.documents_embedded.load(Ordering::SeqCst),
        catalog.len()
    );

    let other = TrigramEmbedder::new(32);
    let (third, built) = ExactIndex::open_or_build(dir.path(), &catalog, &other).unwrap();
    assert!(built, "another embedder id embeds again");
    assert_eq!(third.dim(), 32);

    std::fs::write(
        DenseKey::new(&catalog, &embedder).file_in(dir.path()),
        b"junk",
    )
    .unwrap();
    let (_, built) = ExactIndex::open_or_build(dir.path(), &catalog, &embedder).unwrap();
    assert!(built, "a corrupt file is rebuilt, not trusted");
}

struct ShortEmbedder;

impl Embedder for ShortEmbedder {
    fn id(&self) -> String {
        "short".into()
    }
    fn dim(&self) -> usize {
        2
    }
    fn embed_documents(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, String> {
        Ok(vec![vec![1.0, 0.0]; texts.len().saturating_sub(1)])
    }
    fn embed_query(&self, _text: &str) -> Result<Vec<f32>, String> {
        Err("no queries".into())
    }
}

#[test]
fn an_embedder_returning_too_few_vectors_is_an_error() {
    let error = ExactIndex::embed_catalog(&Catalog::eco(), &ShortEmbedder).unwrap_err();
    assert_eq!(
        error.to_string(),
        "embedder short: returned 31 vectors for 32 documents"
    );
}

#[test]
fn dense_index_is_exact_below_the_threshold_and_forwards_searches() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Catalog::eco();
    assert!(catalog.len() < ANN_MIN_ITEMS);
    let embedder = TrigramEmbedder::new(64);
    let (index, built) = DenseIndex::open_or_build(dir.path(), &catalog, &embedder).unwrap();
    assert!(built);
    let DenseIndex::Exact(exact) = &index else {
        panic!("a small catalog is searched exactly");
    };
    assert!(!DenseKey::new(&catalog, &embedder)
        .graph_file_in(dir.path())
        .exists());
    let query = embedder.embed_query("텀블러").unwrap();
    assert_eq!(
        index.search(&query, 5, None).unwrap(),
        exact.search(&query, 5, None).unwrap()
    );
    assert_eq!((index.len(), index.dim()), (catalog.len(), 64));

    let small = toy_index();
    let ann = DenseIndex::from(AnnIndex::build(&small));
    assert_eq!(
        ann.search(&[10.0, 1.0], 10, None).unwrap(),
        small.search(&[10.0, 1.0], 10, None).unwrap()
    );
}

#[test]
fn indexes_can_be_shared_between_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<ExactIndex>();
    shared::<AnnIndex>();
    shared::<DenseIndex>();
}
