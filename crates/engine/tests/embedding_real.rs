//! EmbeddingGemma-300M on sprout's engine against an independent float64 numpy forward pass
//! (scripts/embeddinggemma_reference.py; fixture embeddinggemma_reference.json names its
//! method and the model's sha256): token ids equal, vectors within cosine 0.999 for the file's
//! F32 weights and for Q8_0, and a batch equals one input at a time.
//!
//! The model directory comes from SPROUT_TEST_EMBEDDER (scripts/test pulls it); without it
//! the tests skip, unless SPROUT_REQUIRE_MODELS is set, when they fail.

use std::path::PathBuf;

use serde_json::Value;
use sprout_engine::embedding::{EmbedOptions, EmbeddingModel};
use sprout_engine::quant::GgmlType;

fn model_dir() -> Option<PathBuf> {
    let p = PathBuf::from(
        std::env::var("SPROUT_TEST_EMBEDDER")
            .unwrap_or_else(|_| "/work/models/embeddinggemma-300m".into()),
    );
    if p.join("model.safetensors").exists() {
        return Some(p);
    }
    assert!(
        std::env::var_os("SPROUT_REQUIRE_MODELS").is_none(),
        "SPROUT_TEST_EMBEDDER: {} missing",
        p.display()
    );
    eprintln!(
        "skipping: {} not found (set SPROUT_TEST_EMBEDDER)",
        p.display()
    );
    None
}

fn fixture() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/embeddinggemma_reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture exists")).expect("JSON")
}

fn cosine(a: &[f32], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * y).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// Every case: ids equal the reference's, cosine ≥ `min_cos`; the worst cosine.
fn check(quantize: Option<GgmlType>, min_cos: f64) -> f64 {
    let Some(dir) = model_dir() else { return 1.0 };
    let mut m = EmbeddingModel::open(
        &dir,
        &EmbedOptions {
            quantize,
            threads: Some(2),
        },
    )
    .expect("the embedder loads");
    assert_eq!(m.dim(), 768);
    let fx = fixture();
    let cases = fx["cases"].as_array().expect("cases");
    assert!(cases.len() >= 20);
    let inputs: Vec<Vec<u32>> = cases
        .iter()
        .map(|c| {
            let text = c["text"].as_str().unwrap();
            let ids = m.tokenize(text, sprout_engine::embedding::Task::Raw);
            let want: Vec<u32> = c["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            assert_eq!(ids, want, "token ids of {text:?}");
            ids
        })
        .collect();
    let batched = m.embed_tokens(&inputs).expect("embeds");
    let mut worst: f64 = 1.0;
    for (c, got) in cases.iter().zip(&batched) {
        let want: Vec<f64> = c["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let cos = cosine(got, &want);
        worst = worst.min(cos);
        assert!(cos >= min_cos, "{:?}: cosine {cos}", c["text"]);
    }
    // One at a time gives the same vectors as the batch.
    for (input, b) in inputs.iter().zip(&batched).take(6) {
        let one = m
            .embed_tokens(std::slice::from_ref(input))
            .unwrap()
            .remove(0);
        let c = cosine(&one, &b.iter().map(|v| *v as f64).collect::<Vec<_>>());
        assert!(c > 0.99999, "batched vs single: cosine {c}");
    }
    eprintln!(
        "{quantize:?}: worst cosine over {} cases {worst:.6}",
        cases.len()
    );
    worst
}

#[test]
fn f32_embeddings_match_the_numpy_reference() {
    check(None, 0.999);
}

#[test]
fn q8_0_embeddings_match_the_numpy_reference() {
    check(Some(GgmlType::Q8_0), 0.999);
}
