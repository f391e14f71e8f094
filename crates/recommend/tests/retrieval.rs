//! Retrieval quality on the eco catalog: BM25 alone over the hand-labelled query set.

use sprout_recommend::eval::{check_ids, evaluate, parse_queries};
use sprout_recommend::{Catalog, LexicalIndex};

const QUERIES: &str = include_str!("fixtures/eco_queries.jsonl");

#[test]
fn query_set_is_well_formed() {
    let queries = parse_queries(QUERIES).expect("the query set parses");
    check_ids(&queries, &Catalog::eco()).expect("every relevant id is an eco item");
    let count = |lang: &str| queries.iter().filter(|query| query.lang == lang).count();
    assert!(queries.len() >= 60);
    assert!(count("ko") >= 25 && count("en") >= 15 && count("zh") >= 15);
    assert!(queries
        .iter()
        .all(|query| (1..=5).contains(&query.relevant_ids.len())));
}

#[test]
fn bm25_alone_on_the_eco_query_set() {
    let catalog = Catalog::eco();
    let queries = parse_queries(QUERIES).expect("the query set parses");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let index = LexicalIndex::open_or_build(dir.path(), &catalog).expect("the index builds");
    let report = evaluate(&queries, 5, |query| {
        index
            .search(&query.query, 10, &[])
            .expect("search succeeds")
            .into_iter()
            .map(|(item, _)| catalog.items()[item].id.clone())
            .collect()
    });
    println!("BM25 alone, MRR over the top 10:\n{report}");
    for query in &queries {
        let top: Vec<String> = index
            .search(&query.query, 5, &[])
            .expect("search succeeds")
            .into_iter()
            .map(|(item, _)| catalog.items()[item].id.clone())
            .collect();
        if !query.relevant_ids.iter().any(|id| top.contains(id)) {
            println!("miss@5 [{}] {:?}: got {top:?}", query.lang, query.query);
        }
    }
    // Dense retrieval comes later; this floor only guards against a broken tokenizer or index.
    assert!(report.overall.recall_at_k >= 0.5, "{report}");
}
