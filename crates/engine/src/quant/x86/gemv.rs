//! Fused GEMV for the 32-element block types (Q4_0, Q5_0, Q8_0) with up to [`super::TILE`]
//! activation rows: each block is unpacked in registers and multiplied at once, with no scratch row. This
//! is the decode step's path (n = 1 per sequence), where the per-row unpack round trip and
//! per-row dispatch cost as much as the arithmetic on 896-wide rows.

use super::super::decoded::{QuantizedActs, GROUP};
use super::super::{GgmlType, WeightMatrix};
use super::unpack::block32;
use super::{chunk_sums, group_dot, group_dot_unsigned, hsum};
use std::arch::x86_64::*;

/// Whether [`gemv_block32`] handles `ty`.
pub(crate) fn supports(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0)
}

/// For every row `r` in `rows`, `y[k·w.rows + r] = Σ_i w[r][i] * x[k][i]` for `k < n` (≤ [`super::TILE`]).
///
/// # Safety
/// Requires AVX2, FMA and F16C ([`super::available`]); `w.ty` passes [`supports`]; `acts` holds
/// `n` rows of `w.cols` elements; `rows` lies within `w.rows`; `y` points at `n × w.rows`
/// floats, whose elements of `rows` nobody else touches during the call.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn gemv_block32(
    w: &WeightMatrix,
    rows: std::ops::Range<usize>,
    acts: &QuantizedActs,
    n: usize,
    y: *mut f32,
) {
    // SAFETY (all arms): forwarded from the caller.
    unsafe { by_rows!(gemv, n, w.ty == GgmlType::Q8_0, (w, rows, acts, y)) }
}

/// Asks the CPU for the weight row two rows after `row` (rows of `row_bytes`): about the DRAM
/// latency ahead of a 0.5B model's rows. A prefetch hint never faults, even past the data.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn prefetch_ahead(row: *const u8, row_bytes: usize) {
    for line in (0..row_bytes).step_by(64) {
        _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(2 * row_bytes + line) as *const i8);
    }
}

/// Builds `[d0, d1, d2, d3, d0, d1, d2, d3]` from the `f16` scales at the start of four
/// consecutive blocks of `bb` bytes at `p` (the order of the `hadd`-reduced sums).
///
/// # Safety
/// Requires F16C; `p` points at four whole blocks.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scales4(p: *const u8, bb: usize) -> __m256 {
    // SAFETY: each read is the first two bytes of one of the four blocks.
    let h = |i: usize| unsafe { (p.add(i * bb) as *const i16).read_unaligned() };
    let d = _mm_cvtph_ps(_mm_setr_epi16(h(0), h(1), h(2), h(3), 0, 0, 0, 0));
    _mm256_set_m128(d, d)
}

/// [`gemv_block32`] for `N` activation rows; `SIGNED` for Q8_0, else the unsigned levels'
/// bias (8 or 16 per level) is subtracted once per block through the activation sums.
///
/// # Safety
/// As [`gemv_block32`] with `n = N`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gemv<const N: usize, const SIGNED: bool>(
    w: &WeightMatrix,
    rows: std::ops::Range<usize>,
    acts: &QuantizedActs,
    y: *mut f32,
) {
    let (ty, cols) = (w.ty, w.cols);
    let bb = ty.block_bytes();
    let blocks = cols / GROUP;
    let chunks = blocks / 4;
    let row_bytes = blocks * bb;
    assert!(
        acts.q.len() >= N * cols && acts.scale.len() >= N * blocks && rows.end <= w.rows,
        "gemv shapes"
    );
    let data: &[u8] = &w.data;
    let bias = _mm256_set1_ps(if ty == GgmlType::Q4_0 { -8.0 } else { -16.0 });
    let perm = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    assert!(acts.sum16.len() >= N * 2 * blocks, "gemv shapes");
    // Row k of the activations starts k·cols (levels), k·blocks (scales) and 2k·blocks (sums)
    // in. Rows are visited by `row!` below, unrolled with constant k, so that the N
    // accumulators stay in registers (a runtime loop over k kept them on the stack).
    let (aq, asc, asum) = (acts.q.as_ptr(), acts.scale.as_ptr(), acts.sum16.as_ptr());
    for r in rows {
        // SAFETY: row r < w.rows, so its `row_bytes` bytes lie in `data`; prefetching further
        // rows is a hint that never faults.
        let row = unsafe { data.as_ptr().add(r * row_bytes) };
        prefetch_ahead(row, row_bytes);
        let mut acc = [_mm256_setzero_ps(); N];
        for c in 0..chunks {
            // SAFETY: blocks 4c..4c+4 lie in the row; activation elements 128c..128c+128 and
            // scales 4c..4c+4 lie in each of the N rows (asserted above).
            unsafe {
                let p = row.add(4 * c * bb);
                let block = |i: usize| std::slice::from_raw_parts(p.add(i * bb), bb);
                let wv: [__m256i; 4] = std::array::from_fn(|i| block32(ty, block(i)));
                let wa: [__m256i; 4] = std::array::from_fn(|i| {
                    if SIGNED {
                        _mm256_abs_epi8(wv[i])
                    } else {
                        wv[i]
                    }
                });
                let ws = scales4(p, bb);
                let wb = _mm256_mul_ps(ws, bias);
                macro_rules! row {
                    ($k:literal) => {
                        if $k < N {
                            let h =
                                chunk_sums::<SIGNED, true>(&wv, &wa, aq.add($k * cols + 128 * c));
                            if !SIGNED {
                                // Sums per 16 in the same (permuted) order as `h` and `ws`.
                                let sums = _mm256_loadu_ps(asum.add($k * 2 * blocks + 8 * c));
                                let sums = _mm256_permutevar8x32_ps(sums, perm);
                                acc[$k] = _mm256_fmadd_ps(wb, sums, acc[$k]);
                            }
                            let xs = super::broadcast4(asc.add($k * blocks + 4 * c));
                            acc[$k] = _mm256_fmadd_ps(
                                _mm256_cvtepi32_ps(h),
                                _mm256_mul_ps(ws, xs),
                                acc[$k],
                            );
                        }
                    };
                }
                each_row!(row);
            }
        }
        for g in 4 * chunks..blocks {
            // SAFETY: block g lies in the row; elements 32g..32g+32 and scale g in each row.
            unsafe {
                let b = std::slice::from_raw_parts(row.add(g * bb), bb);
                let wv = block32(ty, b);
                let wa = _mm256_abs_epi8(wv);
                let d = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(
                    (row.add(g * bb) as *const u16).read_unaligned() as i32,
                )));
                for (k, acc) in acc.iter_mut().enumerate() {
                    let a = _mm256_loadu_si256(aq.add(k * cols + 32 * g) as *const __m256i);
                    let s = _mm256_set1_ps(d * *asc.add(k * blocks + g));
                    let m = if SIGNED {
                        group_dot(wa, wv, a)
                    } else {
                        group_dot_unsigned(wv, a)
                    };
                    *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(m), s, *acc);
                    if !SIGNED {
                        // Lanes 0 and 4 carry this block's two halves' sums once each.
                        let sums = _mm256_setr_ps(
                            *asum.add(k * 2 * blocks + 2 * g),
                            0.0,
                            0.0,
                            0.0,
                            *asum.add(k * 2 * blocks + 2 * g + 1),
                            0.0,
                            0.0,
                            0.0,
                        );
                        *acc = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_set1_ps(d), bias), sums, *acc);
                    }
                }
            }
        }
        for (k, a) in acc.iter().enumerate() {
            // SAFETY: k < N and r < w.rows: inside `y` (caller contract).
            unsafe { *y.add(k * w.rows + r) = hsum(*a) };
        }
    }
}
