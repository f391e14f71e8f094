//! What the kernel examples share (not an example itself: Cargo builds only
//! `examples/*.rs` and `examples/*/main.rs`).

use sprout_engine::quant::blocks::quantize_row;
use sprout_engine::quant::{GgmlType, TensorBytes, WeightMatrix};

/// A deterministic `rows × cols` matrix of `ty` (a type with a quantizer): uniform values in
/// ±0.5, each row slightly shifted.
pub fn matrix(ty: GgmlType, rows: usize, cols: usize) -> WeightMatrix {
    let row_bytes = ty.row_bytes(cols).expect("whole blocks");
    let mut data = vec![0u8; rows * row_bytes];
    let mut seed = 1u32;
    let mut x = vec![0f32; cols];
    for (r, dst) in data.chunks_exact_mut(row_bytes).enumerate() {
        for v in x.iter_mut() {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            *v = (seed >> 8) as f32 / (1 << 24) as f32 - 0.5 + r as f32 * 1e-4;
        }
        quantize_row(ty, &x, dst).expect("supported type");
    }
    WeightMatrix::new(ty, rows, cols, TensorBytes::from(data)).expect("consistent shape")
}
