//! Block formats of ggml: scalar dequantization (the reference every kernel is tested against)
//! and quantization (for on-load `--quantize` and for activations).

use super::GgmlType;
use half::{bf16, f16};

/// Dequantizes one row: `src` holds exactly `dst.len()` elements of type `ty`.
///
/// Panics if `src.len()` does not match; callers validate shapes at load time.
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) {
    assert_eq!(Some(src.len()), ty.row_bytes(dst.len()), "row length mismatch for {}", ty.name());
    match ty {
        GgmlType::F32 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *d = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
            }
        }
        GgmlType::F16 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = f16::from_le_bytes([s[0], s[1]]).to_f32();
            }
        }
        GgmlType::BF16 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = bf16::from_le_bytes([s[0], s[1]]).to_f32();
            }
        }
        other => unimplemented!("dequantize {}", other.name()),
    }
}
