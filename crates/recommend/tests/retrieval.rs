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

/// The real embedder (EmbeddingGemma on sprout's engine) from SPROUT_TEST_EMBEDDER; None skips
/// unless SPROUT_REQUIRE_MODELS is set.
fn real_embedder() -> Option<std::sync::Arc<sprout_recommend::EngineEmbedder>> {
    let dir = std::env::var_os("SPROUT_TEST_EMBEDDER").map(std::path::PathBuf::from);
    let Some(dir) = dir.filter(|d| d.join("model.safetensors").exists()) else {
        assert!(
            std::env::var_os("SPROUT_REQUIRE_MODELS").is_none(),
            "SPROUT_TEST_EMBEDDER is not set to the embedder's directory"
        );
        eprintln!("skipping: set SPROUT_TEST_EMBEDDER");
        return None;
    };
    let opts = sprout_engine::embedding::EmbedOptions {
        quantize: Some(sprout_engine::quant::GgmlType::Q8_0),
        threads: Some(2),
    };
    let model = sprout_engine::embedding::EmbeddingModel::open(&dir, &opts).expect("loads");
    Some(std::sync::Arc::new(sprout_recommend::EngineEmbedder::new(
        model,
    )))
}

#[test]
fn dense_and_fused_retrieval_on_the_eco_query_set() {
    let Some(embedder) = real_embedder() else {
        return;
    };
    let catalog = Catalog::eco();
    let queries = parse_queries(QUERIES).expect("the query set parses");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let retriever = sprout_recommend::Retriever::open_or_build(
        dir.path(),
        catalog.clone(),
        Some(embedder.clone()),
    )
    .expect("indexes build");
    let dense = sprout_recommend::ExactIndex::open_or_build(
        &dir.path().join("dense"),
        &catalog,
        embedder.as_ref(),
    )
    .expect("the dense index reopens")
    .0;
    use sprout_recommend::Embedder;
    let dense_report = evaluate(&queries, 5, |query| {
        let v = embedder.embed_query(&query.query).expect("embeds");
        dense
            .search(&v, 10, None)
            .expect("dense search succeeds")
            .into_iter()
            .map(|(item, _)| catalog.items()[item].id.clone())
            .collect()
    });
    println!("dense alone (EmbeddingGemma Q8_0), MRR over the top 10:\n{dense_report}");
    let fused = evaluate(&queries, 5, |query| {
        retriever
            .search(&query.query, 10, &[])
            .expect("search succeeds")
            .into_iter()
            .map(|hit| catalog.items()[hit.index].id.clone())
            .collect()
    });
    println!("BM25 + dense by reciprocal rank, MRR over the top 10:\n{fused}");
    assert!(fused.overall.recall_at_k >= 0.9, "{fused}");
}

/// Category precision and off-topic detection of the neighbour vote on a multilingual message
/// set (crates/recommend/tests/fixtures/leafresh_messages.jsonl), printed for the notes.
#[test]
fn semantic_category_and_topic_on_the_message_set() {
    let Some(embedder) = real_embedder() else {
        return;
    };
    let catalog = Catalog::eco();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (index, _) =
        sprout_recommend::ExactIndex::open_or_build(dir.path(), &catalog, embedder.as_ref())
            .expect("the dense index builds");
    let index = sprout_recommend::DenseIndex::from(index);
    use sprout_recommend::Embedder;
    let rows: Vec<serde_json::Value> = include_str!("fixtures/leafresh_messages.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    let verdicts: Vec<_> = rows
        .iter()
        .map(|r| {
            let v = embedder
                .embed_query(r["message"].as_str().unwrap())
                .expect("embeds");
            sprout_recommend::classify::classify(&index, &catalog, &v, "category")
        })
        .collect();
    let on: Vec<usize> = (0..rows.len())
        .filter(|&i| !rows[i]["category"].is_null())
        .collect();
    let off: Vec<usize> = (0..rows.len())
        .filter(|&i| rows[i]["category"].is_null())
        .collect();
    let correct = on
        .iter()
        .filter(|&&i| verdicts[i].category.as_deref() == rows[i]["category"].as_str())
        .count();
    let precision = correct as f64 / on.len() as f64;
    println!("category precision {correct}/{} = {precision:.3}", on.len());
    for lang in ["ko", "en", "zh"] {
        let l: Vec<&usize> = on.iter().filter(|&&i| rows[i]["lang"] == lang).collect();
        let c = l
            .iter()
            .filter(|&&&i| verdicts[i].category.as_deref() == rows[i]["category"].as_str())
            .count();
        println!("  {lang}: {c}/{}", l.len());
    }
    for &i in &on {
        if verdicts[i].category.as_deref() != rows[i]["category"].as_str() {
            println!("  wrong: {} → {:?}", rows[i]["message"], verdicts[i]);
        }
    }
    let mut on_near: Vec<f32> = on.iter().map(|&i| verdicts[i].nearest).collect();
    let mut off_near: Vec<f32> = off.iter().map(|&i| verdicts[i].nearest).collect();
    on_near.sort_by(f32::total_cmp);
    off_near.sort_by(f32::total_cmp);
    println!(
        "nearest similarity: on-topic min {:.3} p10 {:.3}; off-topic max {:.3} p90 {:.3}",
        on_near[0],
        on_near[on_near.len() / 10],
        off_near[off_near.len() - 1],
        off_near[off_near.len() * 9 / 10]
    );
    for t in [0.30, 0.35, 0.40, 0.45, 0.50] {
        let caught = off_near.iter().filter(|&&s| s < t).count();
        let lost = on_near.iter().filter(|&&s| s < t).count();
        println!(
            "  threshold {t:.2}: off-topic caught {caught}/{}, on-topic lost {lost}/{}",
            off_near.len(),
            on_near.len()
        );
    }
    assert!(precision >= 0.9, "category precision {precision}");
}
