//! Times `quant::matmul::matmul` on qwen2.5-0.5B shapes (896x896, 4864x896 and 896x4864, the attention
//! and FFN matrices, and the 151936x896 Q8_0 output matrix) for each weight type at batch 1 (decode) and 512 (prefill), and prints GFLOP/s
//! (best of five timed batches, so other load on the machine mostly drops out).
//!
//! Run: `cargo run --release -p sprout-engine --example matmul_bench [threads] [n,n,...] [type,...]`
//! (defaults: 2 threads, n = 1,512, every type).

mod common;

use common::matrix;
use sprout_engine::quant::matmul::{matmul, ThreadPool};
use sprout_engine::quant::GgmlType;
use std::time::Instant;

fn main() {
    let threads: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let batches: Vec<usize> = std::env::args()
        .nth(2)
        .map(|s| s.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 512]);
    let only: Option<Vec<String>> = std::env::args()
        .nth(3)
        .map(|s| s.split(',').map(str::to_lowercase).collect());
    let pool = ThreadPool::new(threads);
    println!("threads {threads}");
    println!(
        "{:<6} {:>11} {:>5} {:>10} {:>9}",
        "type", "shape", "n", "ms/call", "GFLOP/s"
    );
    for ty in [
        GgmlType::Q5_0,
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4K,
        GgmlType::Q6K,
        GgmlType::F16,
    ] {
        for (rows, cols) in [(896, 896), (4864, 896), (896, 4864), (151936, 896)] {
            // The output matrix (DRAM-bound at n = 1) only for its real type.
            let wanted = only
                .as_ref()
                .is_none_or(|o| o.iter().any(|t| t == ty.name()));
            if !wanted || ty.row_bytes(cols).is_none() || (rows > 100_000 && ty != GgmlType::Q8_0) {
                continue;
            }
            let w = matrix(ty, rows, cols);
            for &n in &batches {
                let x: Vec<f32> = (0..n * cols)
                    .map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5)
                    .collect();
                let mut y = vec![0f32; n * rows];
                matmul(&pool, &w, &x, n, &mut y);
                let flop = 2.0 * (rows * cols * n) as f64;
                // The best of five timed batches: the shared machine's load only adds time.
                let reps = ((4e8 / flop) as usize).clamp(1, 400);
                let mut secs = f64::INFINITY;
                for _ in 0..5 {
                    let start = Instant::now();
                    for _ in 0..reps {
                        matmul(&pool, &w, &x, n, &mut y);
                    }
                    secs = secs.min(start.elapsed().as_secs_f64() / reps as f64);
                }
                let shape = format!("{rows}x{cols}");
                println!(
                    "{:<6} {:>11} {:>5} {:>10.3} {:>9.1}",
                    ty.name(),
                    shape,
                    n,
                    secs * 1e3,
                    flop / secs / 1e9
                );
            }
        }
    }
}
