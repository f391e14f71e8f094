//! Tests for BM25 search, filters and the persisted index's rebuild rules.

use super::*;
use crate::catalog::CatalogFormat;

fn small() -> Catalog {
    let text = r#"{"id":"sort","title":"분리수거를 생활화하기","tags":{"category":"ZERO_WASTE","locations":["도시","산"]}}
{"id":"cup","title":"减少塑料杯","tags":{"category":"ZERO_WASTE","locations":"도시"}}
{"id":"bike","title":"Bike to work","description":"Ride a bicycle instead of driving.","tags":{"category":"CARBON_FOOTPRINT","locations":["산"]}}
{"id":"walk","title":"Walk short distances","tags":{"category":"CARBON_FOOTPRINT"}}"#;
    Catalog::parse("small", text, CatalogFormat::Jsonl).unwrap()
}

fn ids(catalog: &Catalog, hits: &[(usize, f32)]) -> Vec<String> {
    hits.iter()
        .map(|&(index, _)| catalog.items()[index].id.clone())
        .collect()
}

#[test]
fn korean_and_chinese_words_match_inside_longer_runs() {
    let catalog = small();
    let index = LexicalIndex::build_in_memory(&catalog).unwrap();
    assert!(index.built());
    assert_eq!(index.len(), 4);
    let hits = index.search("분리수거", 10, &[]).unwrap();
    assert_eq!(ids(&catalog, &hits)[0], "sort");
    let hits = index.search("塑料", 10, &[]).unwrap();
    assert_eq!(ids(&catalog, &hits), ["cup"]);
    let hits = index
        .search("Cycling to work by BICYCLES", 10, &[])
        .unwrap();
    assert_eq!(ids(&catalog, &hits)[0], "bike");
    assert!(
        hits.windows(2).all(|pair| pair[0].1 >= pair[1].1),
        "best first"
    );
}

#[test]
fn filters_restrict_by_value_or_list_membership_without_changing_scores() {
    let catalog = small();
    let index = LexicalIndex::build_in_memory(&catalog).unwrap();
    let all = index.search("work walk 분리수거", 10, &[]).unwrap();
    let mountain = index
        .search(
            "work walk 분리수거",
            10,
            &[TagFilter::new("locations", "산")],
        )
        .unwrap();
    let mut mountain_ids = ids(&catalog, &mountain);
    mountain_ids.sort();
    assert_eq!(mountain_ids, ["bike", "sort"]);
    for (index_hit, score) in &mountain {
        let unfiltered = all.iter().find(|(i, _)| i == index_hit).unwrap().1;
        assert_eq!(*score, unfiltered, "a filter does not change BM25 scores");
    }
    let both = [
        TagFilter::new("category", "CARBON_FOOTPRINT"),
        TagFilter::new("locations", "산"),
    ];
    assert_eq!(
        ids(&catalog, &index.search("work walk", 10, &both).unwrap()),
        ["bike"]
    );
    let none = [TagFilter::new("category", "VEGAN")];
    assert!(index.search("work walk", 10, &none).unwrap().is_empty());
}

#[test]
fn empty_queries_and_zero_k_return_nothing_and_k_caps_results() {
    let catalog = small();
    let index = LexicalIndex::build_in_memory(&catalog).unwrap();
    assert!(index.search("", 10, &[]).unwrap().is_empty());
    assert!(index.search("?! the", 10, &[]).unwrap().is_empty());
    assert!(index.search("work", 0, &[]).unwrap().is_empty());
    assert_eq!(
        index
            .search("work walk 분리수거 塑料", 2, &[])
            .unwrap()
            .len(),
        2
    );
    assert!(index.search("zzz", 10, &[]).unwrap().is_empty());
}

#[test]
fn a_second_open_reuses_the_index_and_changes_rebuild_it() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = small();
    let first = LexicalIndex::open_or_build(dir.path(), &catalog).unwrap();
    assert!(first.built());
    let expected = first.search("walk bike", 10, &[]).unwrap();
    drop(first);

    let second = LexicalIndex::open_or_build(dir.path(), &catalog).unwrap();
    assert!(!second.built(), "same catalog and tokenizer: no rebuild");
    assert_eq!(second.search("walk bike", 10, &[]).unwrap(), expected);
    drop(second);

    let mut items = catalog.items().to_vec();
    items[3].title = "Walk everywhere".into();
    let changed = Catalog::from_items("small", items).unwrap();
    let third = LexicalIndex::open_or_build(dir.path(), &changed).unwrap();
    assert!(third.built(), "a changed catalog rebuilds");
    let hits = third.search("everywhere", 10, &[]).unwrap();
    assert_eq!(ids(&changed, &hits), ["walk"]);
    drop(third);

    let manifest_path = dir.path().join(MANIFEST_FILE);
    let manifest = std::fs::read_to_string(&manifest_path).unwrap();
    assert!(manifest.contains(changed.content_hash()));
    std::fs::write(
        &manifest_path,
        manifest.replace(TOKENIZER_VERSION, "old-tokenizer"),
    )
    .unwrap();
    assert!(
        LexicalIndex::open_or_build(dir.path(), &changed)
            .unwrap()
            .built(),
        "tokenizer changed"
    );
    assert!(!LexicalIndex::open_or_build(dir.path(), &changed)
        .unwrap()
        .built());

    std::fs::remove_dir_all(dir.path().join(INDEX_DIR)).unwrap();
    let rebuilt = LexicalIndex::open_or_build(dir.path(), &changed).unwrap();
    assert!(rebuilt.built(), "a manifest without its index rebuilds");
    assert_eq!(rebuilt.search("everywhere", 10, &[]).unwrap().len(), 1);
}

#[test]
fn eco_catalog_answers_in_three_languages() {
    let catalog = Catalog::eco();
    let index = LexicalIndex::build_in_memory(&catalog).unwrap();
    let top = |query: &str| ids(&catalog, &index.search(query, 3, &[]).unwrap());
    assert!(top("텀블러").contains(&"eco-zero-waste-01".to_string()));
    assert!(top("tumbler coffee").contains(&"eco-zero-waste-01".to_string()));
    assert!(top("随行杯").contains(&"eco-zero-waste-01".to_string()));
}

#[test]
fn building_reports_progress_and_reopening_does_not() {
    let text: String = (0..2500)
        .map(|i| format!("{{\"id\":\"i{i}\",\"title\":\"item number {i}\"}}\n"))
        .collect();
    let catalog = Catalog::parse("many", &text, CatalogFormat::Jsonl).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut seen = Vec::new();
    let built =
        LexicalIndex::open_or_build_with_progress(dir.path(), &catalog, &mut |n| seen.push(n))
            .unwrap();
    assert!(built.built());
    assert_eq!(seen, [1000, 2000, 2500]);
    seen.clear();
    let reopened =
        LexicalIndex::open_or_build_with_progress(dir.path(), &catalog, &mut |n| seen.push(n))
            .unwrap();
    assert!(!reopened.built());
    assert!(seen.is_empty(), "{seen:?}");
}
