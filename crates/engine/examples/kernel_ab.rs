//! A/B timing of the AVX2 matmul kernels: the broadcast kernels (`matmul_forced(.., true)`)
//! against the per-row GEMV/GEMM kernels (`false`) and, for types that pack (all five here),
//! the kernel of the packed matrix (`WeightMatrix::packed`), alternated call by call on the same
//! matrix so that the load of this shared machine hits all alike; the best time of each wins.
//! This is how the row-count thresholds in `quant::matmul::use_broadcast` were chosen.
//!
//! Run: `cargo run --release -p sprout-engine --example kernel_ab TYPE ROWS COLS N [THREADS]`,
//! e.g. `... kernel_ab q5_0 4864 896 8` (types: q4_0 q5_0 q8_0 q4_k q6_k).

mod common;

use common::matrix;
use sprout_engine::quant::matmul::{matmul, matmul_forced, ThreadPool};
use sprout_engine::quant::GgmlType;
use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let ty = match args.first().map(String::as_str) {
        Some("q4_0") => GgmlType::Q4_0,
        Some("q5_0") => GgmlType::Q5_0,
        Some("q8_0") => GgmlType::Q8_0,
        Some("q4_k") => GgmlType::Q4K,
        Some("q6_k") => GgmlType::Q6K,
        _ => return usage(),
    };
    let num = |i: usize, default: Option<usize>| {
        args.get(i)
            .map_or(default, |s| s.parse().ok().filter(|&v| v > 0))
    };
    let (Some(rows), Some(cols), Some(n), Some(threads)) =
        (num(1, None), num(2, None), num(3, None), num(4, Some(1)))
    else {
        return usage();
    };
    if ty.row_bytes(cols).is_none() {
        eprintln!("{cols} columns are not whole {} blocks", ty.name());
        return ExitCode::FAILURE;
    }
    let w = matrix(ty, rows, cols);
    let packed = w.packed();
    let pool = ThreadPool::new(threads);
    let x: Vec<f32> = (0..n * cols)
        .map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5)
        .collect();
    let mut y = vec![0f32; n * rows];
    let flop = 2.0 * (rows * cols * n) as f64;
    let calls = (4e9 / flop).clamp(10.0, 400.0) as usize;
    // Per-row kernels, broadcast kernels, and (when the CPU packs this type) the packed one.
    let kinds = if packed.is_some() { 3 } else { 2 };
    let mut best = [f64::INFINITY; 3];
    for call in 0..calls * kinds {
        let kind = call % kinds;
        let start = Instant::now();
        match (kind, &packed) {
            (2, Some(p)) => matmul(&pool, p, &x, n, &mut y),
            _ => matmul_forced(&pool, &w, &x, n, &mut y, kind == 1),
        }
        let t = &mut best[kind];
        *t = t.min(start.elapsed().as_secs_f64());
    }
    let gflops = |k: usize| flop / best[k] / 1e9;
    print!(
        "{} {rows}x{cols} n={n} threads={threads}: per-row {:.1} GFLOP/s, broadcast {:.1} GFLOP/s \
         ({:.3}×)",
        ty.name(),
        gflops(0),
        gflops(1),
        best[0] / best[1]
    );
    if packed.is_some() {
        print!(
            ", packed {:.1} GFLOP/s ({:.3}× the better)",
            gflops(2),
            best[0].min(best[1]) / best[2]
        );
    }
    println!();
    ExitCode::SUCCESS
}

fn usage() -> ExitCode {
    eprintln!("usage: kernel_ab q4_0|q5_0|q8_0|q4_k|q6_k ROWS COLS N [THREADS]");
    ExitCode::FAILURE
}
