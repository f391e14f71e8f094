use sprout_engine::quant::blocks::quantize_row;
use sprout_engine::quant::matmul::{force_broadcast, matmul, ThreadPool};
use sprout_engine::quant::{GgmlType, TensorBytes, WeightMatrix};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let ty = match args[1].as_str() {
        "q5_0" => GgmlType::Q5_0,
        "q8_0" => GgmlType::Q8_0,
        "q4_0" => GgmlType::Q4_0,
        "q4_k" => GgmlType::Q4K,
        "q6_k" => GgmlType::Q6K,
        _ => panic!(),
    };
    let rows: usize = args[2].parse().unwrap();
    let cols: usize = args[3].parse().unwrap();
    let n: usize = args[4].parse().unwrap();
    let threads: usize = args.get(5).map(|s| s.parse().unwrap()).unwrap_or(1);
    let row_bytes = ty.row_bytes(cols).unwrap();
    let mut data = vec![0u8; rows * row_bytes];
    let mut seed = 1u32;
    let mut x = vec![0f32; cols];
    for dst in data.chunks_exact_mut(row_bytes) {
        for v in x.iter_mut() {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            *v = (seed >> 8) as f32 / (1 << 24) as f32 - 0.5;
        }
        quantize_row(ty, &x, dst).unwrap();
    }
    let w = WeightMatrix::new(ty, rows, cols, TensorBytes::from(data)).unwrap();
    let pool = ThreadPool::new(threads);
    let x: Vec<f32> = (0..n * cols)
        .map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5)
        .collect();
    let mut y = vec![0f32; n * rows];
    let mut best = [f64::INFINITY; 2];
    let flop = 2.0 * (rows * cols * n) as f64;
    for it in 0..(4e9 / flop).clamp(10.0, 400.0) as usize {
        let v = it % 2;
        force_broadcast(Some(v == 1));
        let t = Instant::now();
        matmul(&pool, &w, &x, n, &mut y);
        best[v] = best[v].min(t.elapsed().as_secs_f64());
    }
    println!(
        "{} {rows}x{cols} n={n}: old {:.1} GFLOP/s, new {:.1} GFLOP/s, new/old {:.3}",
        args[1],
        flop / best[0] / 1e9,
        flop / best[1] / 1e9,
        best[0] / best[1]
    );
}
