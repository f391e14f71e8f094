//! Weight matrices repacked at load so that one 256-bit register holds 4 columns of 8 weight
//! rows ("lanes = weight rows"): the AVX2 kernel (`x86::packed`) broadcasts 4 activation bytes
//! (a load, no shuffle) and multiplies them with 8 rows at once, each 32-bit lane summing one
//! weight row, with no horizontal sums and no per-product shuffles. Each 32-column block of 8
//! rows is unpacked once per call and used for every activation row of the batch.
//!
//! The bytes are ggml's, reordered (the same size): per group of [`ROWS`] rows, per block of 32
//! columns, `8 × bb` bytes (`bb` = the ggml block size):
//! - `[0, 16)`: the 8 rows' f16 scales;
//! - Q5_0 only, `[16, 48)`: the fifth bits: byte `4r + c`, bit `v` = the fifth bit of row `r`,
//!   column `4v + c`;
//! - then 4 chunks of 32 bytes: chunk `k`, byte `4r + c` holds row `r`'s nibble of column
//!   `8k + c` (low) and of column `8k + 4 + c` (high).
//!
//! So "vector" `v` (columns `4v..4v+4` of the 8 rows, byte `4r + c`) is the low (even `v`) or
//! high (odd `v`) nibbles of chunk `v / 2`, with bit `v` of the fifth-bit bytes on top. Levels
//! are unsigned: `w = d · (level − bias)`, bias 8 (Q4_0) or 16 (Q5_0).

use super::decoded::{QuantizedActs, GROUP};
use super::{GgmlType, WeightMatrix};

/// Weight rows interleaved per group.
pub(crate) const ROWS: usize = 8;

/// Whether a `rows × _` matrix of `ty` can be packed.
pub(crate) fn packable(ty: GgmlType, rows: usize) -> bool {
    matches!(ty, GgmlType::Q4_0 | GgmlType::Q5_0) && rows > 0 && rows.is_multiple_of(ROWS)
}

/// The level offset of a packable type (`w = d · (level − bias)`).
pub(crate) fn bias(ty: GgmlType) -> i32 {
    if ty == GgmlType::Q5_0 {
        16
    } else {
        8
    }
}

/// Bit c of the index moved to bit 8c (c < 4).
const SPREAD: [u32; 16] = {
    let mut t = [0u32; 16];
    let mut i = 0;
    while i < 16 {
        let mut c = 0;
        while c < 4 {
            t[i] |= ((i as u32 >> c) & 1) << (8 * c);
            c += 1;
        }
        i += 1;
    }
    t
};

/// Where the nibble chunks start in a group block.
pub(crate) fn nibbles_at(ty: GgmlType) -> usize {
    if ty == GgmlType::Q5_0 {
        48
    } else {
        16
    }
}

/// Repacks `rows` ggml rows of `cols` elements of `ty` (see [`packable`]) into the layout above.
pub(crate) fn pack(ty: GgmlType, rows: usize, cols: usize, src: &[u8]) -> Vec<u8> {
    let bb = ty.block_bytes();
    let blocks = cols / GROUP;
    let row_bytes = blocks * bb;
    assert!(
        packable(ty, rows) && src.len() == rows * row_bytes,
        "pack shape"
    );
    let q5 = ty == GgmlType::Q5_0;
    let qs_at = nibbles_at(ty);
    let mut out = vec![0u8; src.len()];
    for (gi, group) in out.chunks_exact_mut(ROWS * row_bytes).enumerate() {
        for (b, dst) in group.chunks_exact_mut(ROWS * bb).enumerate() {
            for r in 0..ROWS {
                let s = &src[(ROWS * gi + r) * row_bytes + b * bb..][..bb];
                dst[2 * r..2 * r + 2].copy_from_slice(&s[..2]);
                let (qh, qs) = if q5 {
                    (u32::from_le_bytes([s[2], s[3], s[4], s[5]]), &s[6..22])
                } else {
                    (0, &s[2..18])
                };
                // Row r's 4 bytes of chunk k: nibbles of columns 8k..8k+4 (vector 2k) low,
                // 8k+4..8k+8 (2k+1) high. Vector v's nibbles are the low (v < 4) or high
                // nibbles of qs[4(v % 4)..][..4].
                let word = |m: usize| {
                    u32::from_le_bytes([qs[4 * m], qs[4 * m + 1], qs[4 * m + 2], qs[4 * m + 3]])
                };
                let vector = |v: usize| (word(v % 4) >> (4 * (v / 4))) & 0x0F0F_0F0F;
                for k in 0..4 {
                    let bytes = vector(2 * k) | vector(2 * k + 1) << 4;
                    dst[qs_at + 32 * k + 4 * r..][..4].copy_from_slice(&bytes.to_le_bytes());
                }
                if q5 {
                    // Bit 4v + c of qh goes to bit v of byte c: spread each nibble v of qh
                    // (columns 4v..4v+4) to bit 0 of bytes 0..4, shifted by v.
                    let fifth = (0..8).fold(0u32, |m, v| {
                        m | SPREAD[((qh >> (4 * v)) & 0xF) as usize] << v
                    });
                    dst[16 + 4 * r..][..4].copy_from_slice(&fifth.to_le_bytes());
                }
            }
        }
    }
    out
}

/// The level of row `r` (within the group), column `j` (within the block) of a group block.
fn level(ty: GgmlType, gb: &[u8], r: usize, j: usize) -> i32 {
    let (v, c) = (j / 4, j % 4);
    let i = 4 * r + c;
    let nib = (gb[nibbles_at(ty) + 32 * (v / 2) + i] >> (4 * (v % 2))) & 0xF;
    let high = if ty == GgmlType::Q5_0 {
        ((gb[16 + i] >> v) & 1) << 4
    } else {
        0
    };
    (nib | high) as i32
}

/// `bias · Σq` of every 32 columns of every activation row (`[t][block]`): the level offset's
/// share of each block's integer sum, which the kernels subtract.
pub(crate) fn act_bias(ty: GgmlType, acts: &QuantizedActs, n: usize, cols: usize) -> Vec<i32> {
    let bias = bias(ty);
    acts.q[..n * cols]
        .chunks_exact(GROUP)
        .map(|g| bias * g.iter().map(|&v| v as i32).sum::<i32>())
        .collect()
}

/// The portable kernel for packed matrices, with the same arithmetic as the AVX2 one: for the
/// groups in `groups` and every activation row `t < n`, `y[t·rows + row] = Σ_blocks
/// (Σ level·q − bias·Σq) · (d · scale)`.
pub(crate) fn matmul_scalar(
    w: &WeightMatrix,
    groups: std::ops::Range<usize>,
    acts: &QuantizedActs,
    xbias: &[i32],
    n: usize,
    store: impl Fn(usize, usize, f32),
) {
    let blocks = w.cols / GROUP;
    let gbb = ROWS * w.ty.block_bytes();
    for g in groups {
        let group = &w.data[g * blocks * gbb..(g + 1) * blocks * gbb];
        for t in 0..n {
            let mut acc = [0f32; ROWS];
            for (b, gb) in group.chunks_exact(gbb).enumerate() {
                let x = &acts.q[t * w.cols + b * GROUP..][..GROUP];
                let xs = acts.scale[t * blocks + b];
                for (r, a) in acc.iter_mut().enumerate() {
                    let dot: i32 = (0..GROUP)
                        .map(|j| level(w.ty, gb, r, j) * x[j] as i32)
                        .sum();
                    let d = super::blocks::f16_at(gb, 2 * r);
                    *a = ((dot - xbias[t * blocks + b]) as f32).mul_add(d * xs, *a);
                }
            }
            for (r, &v) in acc.iter().enumerate() {
                store(t, ROWS * g + r, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::blocks::dequantize_row;
    use crate::quant::blocks::tests::Rng;
    use crate::quant::matmul::tests::random_matrix;

    /// Every level and scale of the packed layout reads back as the ggml row's.
    #[test]
    fn packed_levels_dequantize_like_the_rows() {
        let mut rng = Rng::new(7);
        for ty in [GgmlType::Q4_0, GgmlType::Q5_0] {
            let (rows, cols) = (16, 96);
            let w = random_matrix(ty, rows, cols, &mut rng);
            let packed = pack(ty, rows, cols, &w.data);
            assert_eq!(packed.len(), w.data.len());
            let gbb = ROWS * ty.block_bytes();
            let mut row = vec![0f32; cols];
            for r in 0..rows {
                dequantize_row(ty, w.row(r), &mut row);
                for (j, &want) in row.iter().enumerate() {
                    let (g, b) = (r / ROWS, j / GROUP);
                    let gb = &packed[(g * cols / GROUP + b) * gbb..][..gbb];
                    let d = crate::quant::blocks::f16_at(gb, 2 * (r % ROWS));
                    let got = d * (level(ty, gb, r % ROWS, j % GROUP) - bias(ty)) as f32;
                    assert_eq!(got, want, "{} row {r} col {j}", ty.name());
                }
            }
        }
    }

    #[test]
    fn only_whole_groups_of_q4_0_and_q5_0_pack() {
        assert!(packable(GgmlType::Q5_0, 896));
        assert!(packable(GgmlType::Q4_0, 8));
        assert!(!packable(GgmlType::Q5_0, 12));
        assert!(!packable(GgmlType::Q5_0, 0));
        assert!(!packable(GgmlType::Q8_0, 896));
    }
}
