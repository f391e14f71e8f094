//! Fused GEMV for Q4_K and Q6_K weights (the default file's ffn_down) with up to
//! [`super::TILE`] activation rows: each 128 elements of a 256-element block are
//! unpacked in registers, with their scales and offsets, and used at once for every row —
//! instead of unpacking the row into a scratch row and reading it back.

use super::super::decoded::{QuantizedActs, GROUP};
use super::super::{blocks::scale_min_k4, GgmlType, WeightMatrix};
use super::gemv::prefetch_ahead;
use super::unpack::{f16c_at, q4k_half, q6k_half};
use super::{chunk_sums, hsum};
use std::arch::x86_64::*;

/// Whether [`gemv_kquant`] handles `ty`.
pub(crate) fn supports(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::Q4K | GgmlType::Q6K)
}

/// For every row `r` in `rows`, `y[k·w.rows + r] = Σ_i w[r][i] * x[k][i]` for `k < n`.
///
/// # Safety
/// Requires AVX2, FMA and F16C; `w.ty` passes [`supports`]; `acts` holds `n` (1..=8) rows of
/// `w.cols` elements; `rows` lies within `w.rows`; `y` points at `n × w.rows` floats, whose
/// elements of `rows` nobody else touches during the call.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn gemv_kquant(
    w: &WeightMatrix,
    rows: std::ops::Range<usize>,
    acts: &QuantizedActs,
    n: usize,
    y: *mut f32,
) {
    // SAFETY (all arms): forwarded from the caller.
    unsafe { by_rows!(gemv, n, w.ty == GgmlType::Q6K, (w, rows, acts, y)) }
}

/// Scales (in the `hadd` order of [`chunk_sums`]) and offsets (natural order, one per 16) of
/// the two 128-element halves of one block: `w = scale·level + offset`.
///
/// # Safety
/// Requires AVX2, FMA and F16C; `b` is one whole block of Q6_K (`Q6`) or Q4_K.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn block_scales<const Q6: bool>(b: &[u8]) -> [(__m256, __m256); 2] {
    let perm = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    if Q6 {
        // Sixteen i8 scales (one per 16 elements) times d; the offset is −32·scale.
        let d = _mm256_set1_ps(f16c_at(b, 208));
        // SAFETY: bytes 192..208 of the 210-byte block.
        let s8 = unsafe { _mm_loadu_si128(b.as_ptr().add(192) as *const __m128i) };
        let half = |s: __m128i| {
            let s = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(s)));
            (
                _mm256_permutevar8x32_ps(s, perm),
                _mm256_mul_ps(_mm256_set1_ps(-32.0), s),
            )
        };
        [half(s8), half(_mm_srli_si128::<8>(s8))]
    } else {
        // Eight 6-bit scales and mins (one per 32 elements): w = d·sc·q − dmin·m.
        let (d, dmin) = (f16c_at(b, 0), f16c_at(b, 2));
        let mut sc = [0f32; 8];
        let mut mn = [0f32; 8];
        for j in 0..8 {
            let (s, m) = scale_min_k4(j, &b[4..16]);
            sc[j] = d * s as f32;
            mn[j] = -(dmin * m as f32);
        }
        let half = |h: usize| {
            let (s, m) = (&sc[4 * h..4 * h + 4], &mn[4 * h..4 * h + 4]);
            (
                // hadd order: first halves of groups 0..4, then second halves.
                _mm256_setr_ps(s[0], s[1], s[2], s[3], s[0], s[1], s[2], s[3]),
                _mm256_setr_ps(m[0], m[0], m[1], m[1], m[2], m[2], m[3], m[3]),
            )
        };
        [half(0), half(1)]
    }
}

/// [`gemv_kquant`] for `N` activation rows of a Q6_K (`Q6`) or Q4_K matrix.
///
/// # Safety
/// As [`gemv_kquant`] with `n = N`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gemv<const N: usize, const Q6: bool>(
    w: &WeightMatrix,
    rows: std::ops::Range<usize>,
    acts: &QuantizedActs,
    y: *mut f32,
) {
    let cols = w.cols;
    let bb = w.ty.block_bytes();
    let blocks = cols / 256;
    let groups = cols / GROUP;
    let row_bytes = blocks * bb;
    assert!(
        acts.q.len() >= N * cols
            && acts.scale.len() >= N * groups
            && acts.sum16.len() >= N * 2 * groups
            && rows.end <= w.rows,
        "gemv shapes"
    );
    let data: &[u8] = &w.data;
    let (aq, asc, asum) = (acts.q.as_ptr(), acts.scale.as_ptr(), acts.sum16.as_ptr());
    for r in rows {
        // SAFETY: row r < w.rows, so its bytes lie in `data`; prefetching is a hint.
        let row = unsafe { data.as_ptr().add(r * row_bytes) };
        prefetch_ahead(row, row_bytes);
        let mut acc = [_mm256_setzero_ps(); N];
        for i in 0..blocks {
            // SAFETY: block i lies in the row; activation elements 256i..256i+256, scales
            // 8i..8i+8 and sums 16i..16i+16 lie in each of the N rows (asserted above).
            unsafe {
                let b = std::slice::from_raw_parts(row.add(i * bb), bb);
                let scales = block_scales::<Q6>(b);
                for (h, &(wsc, woff)) in scales.iter().enumerate() {
                    let wv = if Q6 {
                        q6k_half(b.as_ptr(), h)
                    } else {
                        q4k_half(b.as_ptr(), h)
                    };
                    let c = 2 * i + h; // the 128-element chunk of the row
                    macro_rules! row {
                        ($k:literal) => {
                            if $k < N {
                                let h = chunk_sums::<false, false>(
                                    &wv,
                                    &wv,
                                    aq.add($k * cols + 128 * c),
                                );
                                let xs = super::broadcast4(asc.add($k * groups + 4 * c));
                                acc[$k] = _mm256_fmadd_ps(
                                    _mm256_cvtepi32_ps(h),
                                    _mm256_mul_ps(wsc, xs),
                                    acc[$k],
                                );
                                let sums = _mm256_loadu_ps(asum.add($k * 2 * groups + 8 * c));
                                acc[$k] = _mm256_fmadd_ps(woff, sums, acc[$k]);
                            }
                        };
                    }
                    each_row!(row);
                }
            }
        }
        for (k, a) in acc.iter().enumerate() {
            // SAFETY: k < N and r < w.rows: inside `y` (caller contract).
            unsafe { *y.add(k * w.rows + r) = hsum(*a) };
        }
    }
}
