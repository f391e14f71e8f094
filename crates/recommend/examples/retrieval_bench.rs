//! Retrieval benchmarks (figures for the notes, not tests): embedder load time F32 vs Q8_0,
//! embedding throughput at batch 1 and 32, fused query latency on the eco catalog, and on a
//! synthetic 100k-item catalog its ingest time and BM25 latency; then dense search on synthetic
//! vectors: exact search before (scalar dot, every score collected) and after (SIMD dot,
//! bounded heap), and the HNSW index's build time, latency and recall against exact search.
//!
//! `cargo run --release -p sprout-recommend --example retrieval_bench -- EMBEDDER_DIR [ITEMS]`
//! `cargo run --release -p sprout-recommend --example retrieval_bench -- --dense [--ef 64,128]
//! [--clustered] [SIZE...]`
//! (dense only, 768 dimensions, no embedder; sizes default to 10000 100000; graphs are built up
//! to 200000 items, larger sizes measure exact search only; `--ef ''` builds no graph;
//! `--clustered` skips uniformly random vectors, whose graph takes ~17 minutes at 100k)

use std::sync::Arc;
use std::time::Instant;

use sprout_engine::embedding::{EmbedOptions, EmbeddingModel, Task};
use sprout_engine::quant::GgmlType;
use sprout_recommend::dense::{AnnIndex, AnnParameters, DenseKey};
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
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("--dense") {
        args.next();
        let mut efs = vec![AnnParameters::default().ef_search];
        if args.peek().map(String::as_str) == Some("--ef") {
            args.next();
            let list = args.next().expect("--ef takes a comma-separated list");
            efs = list
                .split(',')
                .filter(|ef| !ef.is_empty())
                .map(|ef| ef.parse().expect("ef is a number"))
                .collect();
        }
        let mut spreads = vec![Spread::Clustered, Spread::Random];
        if args.peek().map(String::as_str) == Some("--clustered") {
            args.next();
            spreads.truncate(1);
        }
        let mut sizes: Vec<usize> = args.map(|a| a.parse().expect("SIZE is a number")).collect();
        if sizes.is_empty() {
            sizes = vec![10_000, 100_000];
        }
        dense_bench(768, &sizes, &efs, &spreads);
        return;
    }
    let dir = std::path::PathBuf::from(
        args.next()
            .expect("usage: retrieval_bench EMBEDDER_DIR [ITEMS] | --dense [--ef LIST] [SIZE...]"),
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
    println!("RSS {:.0} MiB", rss_mib());
    // Clustered only: a graph over 100k random vectors takes ~17 minutes to build here.
    dense_bench(
        embedder.dim(),
        &[10_000, items],
        &[AnnParameters::default().ef_search],
        &[Spread::Clustered],
    );
}

/// Largest size for which graphs are built (a 1M-item graph takes too long on 2 cores).
const ANN_MAX_ITEMS: usize = 200_000;

/// Queries timed per configuration (exact search before the change is slow: fewer).
const QUERIES: usize = 200;
const QUERIES_BEFORE: usize = 30;

/// xorshift64*: reproducible synthetic vectors.
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
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / norm).collect()
    }
}

/// How the synthetic vectors are spread.
#[derive(Clone, Copy)]
enum Spread {
    /// Uniform on the sphere: no structure, HNSW's worst case.
    Random,
    /// 100 random centres, each vector a centre plus noise of norm 0.6 (cosine to its centre
    /// ≈ 0.86, to its cluster's others ≈ 0.74, to other clusters ≈ 0): closer to real embeddings.
    Clustered,
}

impl Spread {
    fn name(self) -> &'static str {
        match self {
            Spread::Random => "random",
            Spread::Clustered => "clustered",
        }
    }

    /// `n` vectors and `queries` more from the same distribution.
    fn vectors(self, n: usize, queries: usize, dim: usize) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
        let mut rng = Rng(0x5eed_0000 + n as u64);
        let centers: Vec<Vec<f32>> = (0..100).map(|_| rng.unit(dim)).collect();
        let mut all: Vec<Vec<f32>> = (0..n + queries)
            .map(|_| match self {
                Spread::Random => rng.unit(dim),
                Spread::Clustered => {
                    let center = &centers[(rng.uniform() * 100.0) as usize % 100];
                    let noise = rng.unit(dim);
                    center.iter().zip(noise).map(|(c, e)| c + 0.6 * e).collect()
                }
            })
            .collect();
        let queries = all.split_off(n);
        (all, queries)
    }
}

/// Exact search as it was before the SIMD kernel and the heap: one dependent chain of float
/// adds per row, every score collected, then a selection.
fn exact_search_before(index: &ExactIndex, query: &[f32], k: usize) -> Vec<(usize, f32)> {
    let norm = query.iter().map(|v| v * v).sum::<f32>().sqrt();
    let query: Vec<f32> = query.iter().map(|v| v / norm).collect();
    let mut scored: Vec<(usize, f32)> = (0..index.len())
        .map(|i| {
            let row = index.vector(i).expect("i < len");
            (i, row.iter().zip(&query).map(|(a, b)| a * b).sum())
        })
        .collect();
    let best_first = |a: &(usize, f32), b: &(usize, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if k < scored.len() {
        scored.select_nth_unstable_by(k, best_first);
        scored.truncate(k);
    }
    scored.sort_by(best_first);
    scored
}

/// p50 and p99 in milliseconds of `run` over every query.
fn latency(queries: &[Vec<f32>], mut run: impl FnMut(&[f32])) -> (f64, f64) {
    let mut lat: Vec<f64> = queries
        .iter()
        .map(|q| {
            let t = Instant::now();
            run(q);
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    (percentile(&mut lat, 0.5), percentile(&mut lat, 0.99))
}

fn recall(truth: &[(usize, f32)], found: &[(usize, f32)]) -> f64 {
    let hit = truth
        .iter()
        .filter(|(item, _)| found.iter().any(|(other, _)| other == item))
        .count();
    hit as f64 / truth.len().max(1) as f64
}

fn dense_bench(dim: usize, sizes: &[usize], efs: &[usize], spreads: &[Spread]) {
    for &n in sizes {
        for &spread in spreads {
            let t = Instant::now();
            let (vectors, queries) = spread.vectors(n, QUERIES, dim);
            let index = ExactIndex::new(dim, vectors).expect("synthetic vectors are valid");
            println!(
                "dense {n} × {dim} {}: made in {:.1} s; RSS {:.0} MiB",
                spread.name(),
                t.elapsed().as_secs_f64(),
                rss_mib()
            );
            let truth: Vec<Vec<(usize, f32)>> = queries
                .iter()
                .map(|q| index.search(q, 50, None).expect("dimensions match"))
                .collect();
            if let Spread::Clustered = spread {
                // Exact search costs the same whatever the values: measured once per size.
                let (b50, b99) = latency(&queries[..QUERIES_BEFORE], |q| {
                    exact_search_before(&index, q, 10);
                });
                let (a50, a99) = latency(&queries, |q| {
                    index.search(q, 10, None).expect("dimensions match");
                });
                let same = queries[..QUERIES_BEFORE].iter().all(|q| {
                    let before = exact_search_before(&index, q, 10);
                    let after = index.search(q, 10, None).expect("dimensions match");
                    before
                        .iter()
                        .zip(&after)
                        .all(|(b, a)| b.0 == a.0 || (b.1 - a.1).abs() < 1e-6)
                });
                println!(
                    "  exact before (scalar, sort): p50 {b50:.2} ms, p99 {b99:.2} ms\n  \
                     exact after (SIMD, heap):    p50 {a50:.2} ms, p99 {a99:.2} ms \
                     ({:.1}x; same top 10: {same})",
                    b50 / a50
                );
            }
            if n > ANN_MAX_ITEMS {
                println!("  graph: not built above {ANN_MAX_ITEMS} items");
                continue;
            }
            for &ef_search in efs {
                let parameters = AnnParameters {
                    ef_search,
                    ..AnnParameters::default()
                };
                let t = Instant::now();
                let ann = AnnIndex::build_with(&index, parameters);
                let built = t.elapsed().as_secs_f64();
                let (p50, p99) = latency(&queries, |q| {
                    ann.search(q, 10, None).expect("dimensions match");
                });
                let mut recall_10 = 0.0;
                let mut recall_50 = 0.0;
                for (q, truth) in queries.iter().zip(&truth) {
                    let hits = ann.search(q, 50, None).expect("dimensions match");
                    recall_50 += recall(truth, &hits);
                    let hits = ann.search(q, 10, None).expect("dimensions match");
                    recall_10 += recall(&truth[..10], &hits);
                }
                let count = queries.len() as f64;
                let half = |item: usize| item.is_multiple_of(2);
                let (h50, _) = latency(&queries, |q| {
                    ann.search(q, 10, Some(&half)).expect("dimensions match");
                });
                let rare = |item: usize| item % 20 == 3;
                let (r50, _) = latency(&queries, |q| {
                    ann.search(q, 10, Some(&rare)).expect("dimensions match");
                });
                let persisted = if parameters == AnnParameters::default() {
                    let dir = tempdir(&format!("graph-{n}"));
                    let key = DenseKey {
                        catalog_hash: format!("synthetic-{n}"),
                        embedder_id: "synthetic".into(),
                    };
                    let t = Instant::now();
                    let path = ann.save(&dir, &key).expect("the temp dir is writable");
                    let saved = t.elapsed().as_secs_f64();
                    let bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
                    let t = Instant::now();
                    let loaded = AnnIndex::load(&dir, &key).expect("just saved");
                    let load = t.elapsed().as_secs_f64();
                    assert!(loaded.is_some_and(|loaded| loaded.len() == n));
                    let _ = std::fs::remove_dir_all(&dir);
                    format!(
                        "; file {:.0} MiB saved in {saved:.1} s, loaded in {load:.1} s",
                        bytes as f64 / (1024.0 * 1024.0)
                    )
                } else {
                    String::new()
                };
                println!(
                    "  graph ef {ef_search}: built in {built:.1} s{persisted}; search k=10 p50 {p50:.2} ms, \
                     p99 {p99:.2} ms; recall@10 {:.3}, recall@50 {:.3}; filtered k=10 p50: \
                     50% allowed {h50:.2} ms, 5% allowed (exact scan) {r50:.2} ms; RSS {:.0} MiB",
                    recall_10 / count,
                    recall_50 / count,
                    rss_mib()
                );
            }
        }
    }
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
