//! Retrieval benchmarks (figures for the notes, not tests): embedder load time F32 vs Q8_0,
//! embedding throughput at batch 1 and 32, fused query latency on the eco catalog, and on a
//! synthetic 100k-item catalog its ingest time, BM25 latency and exact dense search latency,
//! and resident memory with the embedder loaded.
//!
//! `cargo run --release -p sprout-recommend --example retrieval_bench -- EMBEDDER_DIR [ITEMS]`

use std::sync::Arc;
use std::time::Instant;

use sprout_engine::embedding::{EmbedOptions, EmbeddingModel, Task};
use sprout_engine::quant::GgmlType;
use sprout_recommend::{
    Catalog, Embedder, EngineEmbedder, ExactIndex, Item, LexicalIndex, Retriever, TagValue,
};

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn percentile(xs: &mut [f64], p: f64) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[((xs.len() as f64 - 1.0) * p).round() as usize]
}

/// A pseudo-random Korean-looking word of `n` syllables.
fn word(seed: &mut u64, n: usize) -> String {
    (0..n)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            char::from_u32(0xAC00 + (*seed % 11172) as u32).unwrap_or('가')
        })
        .collect()
}

fn synthetic(n: usize) -> Catalog {
    let mut seed = 0x5eed_u64;
    let cats = ["ZERO_WASTE", "PLOGGING", "ENERGY_SAVING", "VEGAN"];
    let items = (0..n)
        .map(|i| {
            let mut it = Item::new(
                format!("syn-{i}"),
                format!("{} {}", word(&mut seed, 3), word(&mut seed, 2)),
            );
            it.description = Some(format!(
                "{} {} {} 합니다.",
                word(&mut seed, 2),
                word(&mut seed, 4),
                word(&mut seed, 3)
            ));
            it.tags.insert(
                "category".into(),
                TagValue::One(cats[i % cats.len()].into()),
            );
            it
        })
        .collect();
    Catalog::from_items("synthetic", items).expect("synthetic items are valid")
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(
        args.next()
            .expect("usage: retrieval_bench EMBEDDER_DIR [ITEMS]"),
    );
    let items: usize = args
        .next()
        .map_or(100_000, |a| a.parse().expect("ITEMS is a number"));
    let rss0 = rss_mib();

    for (name, q) in [("f32", None), ("q8_0", Some(GgmlType::Q8_0))] {
        let t = Instant::now();
        let m = EmbeddingModel::open(
            &dir,
            &EmbedOptions {
                quantize: q,
                threads: Some(2),
            },
        )
        .unwrap();
        println!("load {name}: {:.2} s", t.elapsed().as_secs_f64());
        drop(m);
    }
    let t = Instant::now();
    let model = EmbeddingModel::open(
        &dir,
        &EmbedOptions {
            quantize: Some(GgmlType::Q8_0),
            threads: Some(2),
        },
    )
    .unwrap();
    println!(
        "load q8_0 (again): {:.2} s; RSS {:.0} MiB (before {:.0})",
        t.elapsed().as_secs_f64(),
        rss_mib(),
        rss0
    );
    let embedder = Arc::new(EngineEmbedder::new(model));

    let eco = Catalog::eco();
    let sentences: Vec<String> = eco
        .items()
        .iter()
        .take(64)
        .map(|i| format!("{} {}", i.title, i.description.clone().unwrap_or_default()))
        .collect();
    let refs: Vec<&str> = sentences.iter().map(String::as_str).collect();
    embedder.embed(&refs[..4], Task::Document).unwrap(); // warm-up
    let t = Instant::now();
    for s in &refs {
        embedder.embed(&[s], Task::Document).unwrap();
    }
    let one = refs.len() as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for chunk in refs.chunks(32) {
        embedder.embed(chunk, Task::Document).unwrap();
    }
    let batched = refs.len() as f64 / t.elapsed().as_secs_f64();
    println!("embedding throughput ({} eco sentences, 2 threads): batch 1 {one:.1}/s, batch 32 {batched:.1}/s ({:.2}x)", refs.len(), batched / one);

    let dir_eco = tempdir("eco");
    let t = Instant::now();
    let retriever =
        Retriever::open_or_build(&dir_eco, eco.clone(), Some(embedder.clone())).unwrap();
    println!(
        "eco indexes built in {:.1} s ({} items)",
        t.elapsed().as_secs_f64(),
        eco.len()
    );
    let queries = [
        "분리수거를 잘하고 싶어요",
        "save power at the office",
        "周末去海边捡垃圾",
        "채식 식단 추천",
        "old clothes upcycling",
    ];
    let mut lat = Vec::new();
    for _ in 0..8 {
        for q in queries {
            let t = Instant::now();
            retriever.search(q, 5, &[]).unwrap();
            lat.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    println!(
        "eco fused query (embed + BM25 + exact + RRF): p50 {:.1} ms, p99 {:.1} ms",
        percentile(&mut lat, 0.5),
        percentile(&mut lat, 0.99)
    );

    let t = Instant::now();
    let big = synthetic(items);
    let made = t.elapsed().as_secs_f64();
    let dir_big = tempdir("big");
    let t = Instant::now();
    let lexical = LexicalIndex::open_or_build(&dir_big, &big).unwrap();
    println!(
        "synthetic {items} items: made in {made:.1} s, BM25 index built in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let mut lat = Vec::new();
    let mut seed = 7u64;
    for _ in 0..50 {
        let q = word(&mut seed, 3);
        let t = Instant::now();
        lexical.search(&q, 10, &[]).unwrap();
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    println!(
        "synthetic BM25 query: p50 {:.2} ms, p99 {:.2} ms",
        percentile(&mut lat, 0.5),
        percentile(&mut lat, 0.99)
    );
    // Dense search cost over as many vectors (random unit vectors: embedding 100k documents
    // takes hours on 2 cores; the exact search's cost does not depend on their values).
    let dim = embedder.dim();
    let vectors: Vec<Vec<f32>> = (0..items)
        .map(|i| {
            let v: Vec<f32> = (0..dim)
                .map(|j| (((i * 31 + j * 17) % 97) as f32 - 48.0) / 48.0)
                .collect();
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.into_iter().map(|x| x / n).collect()
        })
        .collect();
    let index = ExactIndex::new(dim, vectors).unwrap();
    let query = embedder.embed_query("분리수거").unwrap();
    let mut lat = Vec::new();
    for _ in 0..30 {
        let t = Instant::now();
        index.search(&query, 10, None).unwrap();
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    println!(
        "exact dense search over {items} × {dim}: p50 {:.1} ms, p99 {:.1} ms; RSS {:.0} MiB",
        percentile(&mut lat, 0.5),
        percentile(&mut lat, 0.99),
        rss_mib()
    );
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "sprout-retrieval-bench-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
