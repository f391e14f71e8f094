//! The broadcast kernels: a weight row against a tile of [`TILE`] activation rows regrouped
//! by [`TiledActs`]. Each 4 weight levels are broadcast to all eight 32-bit lanes and
//! multiplied with the same 4 columns of the eight activation rows, so lane k accumulates
//! activation row k's dot product: no horizontal sums, and per 32 columns one convert and one
//! FMA serve all eight rows. [`dot_tile`] takes a row unpacked into L1 ([`DecodedRow`], any
//! integer type; the GEMM path, broadcasts are loads); [`gemv_tile`] unpacks Q4_0/Q5_0/Q8_0/
//! Q4_K/Q6_K blocks in registers (the decode path, broadcasts are in-lane shuffles).
//! Signed levels (Q8_0) in [`gemv_tile`] multiply |x| (tiled once per call) by `sign(w, x)`:
//! pairwise i16 sums stay within 2·127·128 < 32768, but w = −128 would overflow (the caller
//! checks [`WeightMatrix::has_level_minus_128`]); [`dot_tile`] multiplies |w| by `sign(x, w)`.

use super::super::decoded::{DecodedRow, TiledActs, GROUP, SUB, TILE};
use super::super::{GgmlType, WeightMatrix};
use std::arch::x86_64::*;

/// The `$j`-th 4 levels (bytes 4j..4j+4 of each 128-bit lane) of `$v` in all eight lanes.
macro_rules! bcast {
    ($v:expr, $j:literal) => {
        match $j {
            0 => _mm256_shuffle_epi32::<0x00>($v),
            1 => _mm256_shuffle_epi32::<0x55>($v),
            2 => _mm256_shuffle_epi32::<0xAA>($v),
            _ => _mm256_shuffle_epi32::<0xFF>($v),
        }
    };
}

/// `out[k] = Σ_i w[i] · x[8·tile + k][i]` for the eight rows of `tile` (offsets included;
/// padding rows give 0).
///
/// # Safety
/// Requires AVX2, FMA and F16C ([`super::available`]); `w` and `acts` hold rows of `cols`
/// elements (a multiple of 32) and `tile` exists in `acts`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_tile(
    w: &DecodedRow,
    acts: &TiledActs,
    cols: usize,
    tile: usize,
    out: &mut [f32; TILE],
) {
    debug_assert!(w.q.len() >= cols && acts.q.len() >= (tile + 1) * TILE * cols);
    // SAFETY (all arms): forwarded from the caller.
    let acc = unsafe {
        match (w.signed, w.per32) {
            (true, _) => tile_kernel::<true, true>(w, acts, cols, tile),
            (false, true) => tile_kernel::<false, true>(w, acts, cols, tile),
            (false, false) => tile_kernel::<false, false>(w, acts, cols, tile),
        }
    };
    // SAFETY: `out` holds TILE = 8 floats.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), acc) };
}

/// [`dot_tile`] for one layout: `SIGNED` levels (Q8_0: `|w|·sign(x, w)` products, no
/// offsets), or unsigned levels with offsets, per 32 (`PER32`, levels < 32) or per 16 (< 64).
///
/// # Safety
/// As [`dot_tile`]; for `PER32` the row's scales and offsets are equal in each 32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_kernel<const SIGNED: bool, const PER32: bool>(
    w: &DecodedRow,
    acts: &TiledActs,
    cols: usize,
    tile: usize,
) -> __m256 {
    let (groups, subs) = (cols / GROUP, cols / SUB);
    let ones = _mm256_set1_epi16(1);
    // SAFETY: the tile's levels, scales and sums start at these offsets (caller contract);
    // every read below stays within `cols` columns of the row and the tile.
    unsafe {
        let wq = w.q.as_ptr() as *const i32;
        let (ws, wo) = (w.scale.as_ptr(), w.offset.as_ptr());
        let aq = acts.q.as_ptr().add(tile * TILE * cols);
        let asc = acts.scale.as_ptr().add(tile * TILE * groups);
        let as16 = acts.sum16.as_ptr().add(tile * TILE * subs);
        let as32 = acts.sum32.as_ptr().add(tile * TILE * groups);
        // Four weight levels (columns 4i..4i+4) in every lane, and the same four columns of
        // the eight activation rows.
        let wb = |i: usize| _mm256_set1_epi32(wq.add(i).read_unaligned());
        let a = |i: usize| _mm256_loadu_si256(aq.add(32 * i) as *const __m256i);
        // One unit (32 columns if PER32, else 16) added to `acc`, its offset term to `off`.
        let unit = |u: usize, acc: __m256, off: __m256| -> (__m256, __m256) {
            let (p, g, scale_at) = if PER32 {
                let p = if SIGNED {
                    // |w|·sign(x, w): here (unlike in `gemv_rows`) w = −128 is fine, and one
                    // `abs` costs less than a third load per maddubs (|x|) in this load-bound
                    // loop. Pairwise i16 sums stay within 2·128·127 < 32768.
                    let m: [__m256i; 8] = std::array::from_fn(|j| {
                        let (w, x) = (wb(8 * u + j), a(8 * u + j));
                        let p = _mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(x, w));
                        _mm256_madd_epi16(p, ones)
                    });
                    let s01 = _mm256_add_epi32(m[0], m[1]);
                    let s23 = _mm256_add_epi32(m[2], m[3]);
                    let s45 = _mm256_add_epi32(m[4], m[5]);
                    let s67 = _mm256_add_epi32(m[6], m[7]);
                    _mm256_add_epi32(_mm256_add_epi32(s01, s23), _mm256_add_epi32(s45, s67))
                } else {
                    // Levels < 32: an i16 lane of one maddubs is at most 2·31·127, so four
                    // of them add up below 32768.
                    let m: [__m256i; 8] =
                        std::array::from_fn(|j| _mm256_maddubs_epi16(wb(8 * u + j), a(8 * u + j)));
                    let lo = _mm256_add_epi16(
                        _mm256_add_epi16(m[0], m[1]),
                        _mm256_add_epi16(m[2], m[3]),
                    );
                    let hi = _mm256_add_epi16(
                        _mm256_add_epi16(m[4], m[5]),
                        _mm256_add_epi16(m[6], m[7]),
                    );
                    _mm256_add_epi32(_mm256_madd_epi16(lo, ones), _mm256_madd_epi16(hi, ones))
                };
                (p, u, 2 * u)
            } else {
                // Levels < 64: two maddubs lanes add up below 2·2·63·127 < 32768.
                let m: [__m256i; 4] =
                    std::array::from_fn(|j| _mm256_maddubs_epi16(wb(4 * u + j), a(4 * u + j)));
                let p = _mm256_add_epi32(
                    _mm256_madd_epi16(_mm256_add_epi16(m[0], m[1]), ones),
                    _mm256_madd_epi16(_mm256_add_epi16(m[2], m[3]), ones),
                );
                (p, u / 2, u)
            };
            let xs = _mm256_loadu_ps(asc.add(TILE * g));
            let s = _mm256_mul_ps(_mm256_set1_ps(*ws.add(scale_at)), xs);
            let acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), s, acc);
            if SIGNED {
                return (acc, off);
            }
            let sums = _mm256_loadu_ps(if PER32 { as32 } else { as16 }.add(TILE * u));
            (
                acc,
                _mm256_fmadd_ps(_mm256_set1_ps(*wo.add(scale_at)), sums, off),
            )
        };
        let units = if PER32 { groups } else { subs };
        // Two accumulators (even and odd units) and one for the offsets: a single chain
        // of FMAs would wait on each FMA's latency.
        let zero = _mm256_setzero_ps();
        let (mut acc0, mut acc1, mut off) = (zero, zero, zero);
        let mut u = 0;
        while u + 2 <= units {
            (acc0, off) = unit(u, acc0, off);
            (acc1, off) = unit(u + 1, acc1, off);
            u += 2;
        }
        if u < units {
            (acc0, off) = unit(u, acc0, off);
        }
        _mm256_add_ps(_mm256_add_ps(acc0, acc1), off)
    }
}

/// Block type codes for [`gemv_rows`]' const parameter.
const Q4_0: u8 = 0;
const Q5_0: u8 = 1;
const Q8_0: u8 = 2;

/// Whether [`gemv_tile`] handles `ty`.
pub(crate) fn supports_gemv(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 | GgmlType::Q4K | GgmlType::Q6K
    )
}

/// For every row `r` in `rows`, `y[k·w.rows + r] = Σ_i w[r][i] · x[k][i]` for `k < n` (≤
/// [`TILE`], tile 0 of `acts`), the weight blocks unpacked in registers: Q4_0/Q5_0/Q8_0 by
/// [`gemv_rows`], Q4_K/Q6_K by [`kquant_rows`].
///
/// # Safety
/// Requires AVX2, FMA and F16C ([`super::available`]); `w.ty` passes [`supports_gemv`];
/// `acts` holds tile 0 of rows of `w.cols` (with `qabs` for Q8_0); `rows` lies within
/// `w.rows`; `y` points at `n × w.rows` floats, whose elements of `rows` nobody else touches
/// during the call.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn gemv_tile(
    w: &WeightMatrix,
    rows: std::ops::Range<usize>,
    acts: &TiledActs,
    n: usize,
    y: *mut f32,
) {
    assert!(
        n <= TILE && acts.q.len() >= TILE * w.cols && rows.end <= w.rows,
        "gemv shapes"
    );
    // SAFETY (all arms): forwarded from the caller.
    unsafe {
        match w.ty {
            GgmlType::Q4_0 => gemv_rows::<Q4_0>(w, rows, acts, n, y),
            GgmlType::Q5_0 => gemv_rows::<Q5_0>(w, rows, acts, n, y),
            GgmlType::Q8_0 => gemv_rows::<Q8_0>(w, rows, acts, n, y),
            GgmlType::Q6K => kquant_rows::<true>(w, rows, acts, n, y),
            _ => kquant_rows::<false>(w, rows, acts, n, y),
        }
    }
}

/// Writes the first `n` lanes of `v` (the tile's dot products with weight row `r`) into
/// `y[k·rows + r]`.
///
/// # Safety
/// `y` points at `n × rows` floats and `r < rows`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn store_lanes(v: __m256, n: usize, y: *mut f32, rows: usize, r: usize) {
    let mut out = [0f32; TILE];
    // SAFETY: `out` holds TILE floats.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), v) };
    for (k, &v) in out.iter().enumerate().take(n) {
        // SAFETY: k < n and r < rows: inside `y` (caller contract).
        unsafe { *y.add(k * rows + r) = v };
    }
}

/// [`gemv_tile`] for one block type of 32 elements.
///
/// # Safety
/// As [`gemv_tile`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gemv_rows<const TY: u8>(
    w: &WeightMatrix,
    rows: std::ops::Range<usize>,
    acts: &TiledActs,
    n: usize,
    y: *mut f32,
) {
    let bb = w.ty.block_bytes();
    let blocks = w.cols / GROUP;
    let row_bytes = blocks * bb;
    let ones = _mm256_set1_epi16(1);
    let low4 = _mm256_set1_epi8(0xF);
    let bit = _mm256_set1_epi64x(0x8040201008040201u64 as i64);
    let sixteen = _mm256_set1_epi8(16);
    // Bytes 0, 1 of qh for the low half's 16 levels, bytes 2, 3 for the high half's.
    let pick_lo = _mm256_set_epi64x(0x0101010101010101, 0, 0x0101010101010101, 0);
    let pick_hi = _mm256_set_epi64x(
        0x0303030303030303,
        0x0202020202020202,
        0x0303030303030303,
        0x0202020202020202,
    );
    let bias = match TY {
        Q4_0 => -8.0,
        Q5_0 => -16.0,
        _ => 0.0,
    };
    let (aq, asc, as32) = (acts.q.as_ptr(), acts.scale.as_ptr(), acts.sum32.as_ptr());
    let aqa = acts.qabs.as_ptr();
    assert!(
        TY != Q8_0 || acts.qabs.len() >= TILE * w.cols,
        "tiled |x| for Q8_0"
    );
    for r in rows {
        // SAFETY: row r < w.rows, so its bytes lie in the matrix; prefetching further rows is
        // a hint that never faults.
        let row = unsafe { w.data.as_ptr().add(r * row_bytes) };
        super::gemv::prefetch_ahead(row, row_bytes);
        let zero = _mm256_setzero_ps();
        let (mut acc0, mut acc1, mut off) = (zero, zero, zero);
        // Block b's contribution: the integer sums of its 8 activation rows and its scale.
        let block = |b: usize| -> (__m256i, __m256) {
            // SAFETY: block b lies in the row; activation groups 8b..8b+8 and scales b of
            // tile 0 exist (asserted by the caller).
            unsafe {
                let p = row.add(b * bb);
                let half = |at: usize| {
                    _mm256_broadcastsi128_si256(_mm_loadu_si128(p.add(at) as *const __m128i))
                };
                let (lo, hi) = match TY {
                    Q8_0 => (half(2), half(18)),
                    _ => {
                        let qs = half(if TY == Q4_0 { 2 } else { 6 });
                        let lo = _mm256_and_si256(qs, low4);
                        let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(qs), low4);
                        if TY == Q4_0 {
                            (lo, hi)
                        } else {
                            let qh = _mm256_set1_epi32((p.add(2) as *const i32).read_unaligned());
                            let high = |pick: __m256i| {
                                let bytes = _mm256_shuffle_epi8(qh, pick);
                                let set = _mm256_cmpeq_epi8(_mm256_and_si256(bytes, bit), bit);
                                _mm256_and_si256(set, sixteen)
                            };
                            (
                                _mm256_or_si256(lo, high(pick_lo)),
                                _mm256_or_si256(hi, high(pick_hi)),
                            )
                        }
                    }
                };
                let a = |j: usize| _mm256_loadu_si256(aq.add(32 * (8 * b + j)) as *const __m256i);
                let p32 = if TY == Q8_0 {
                    // |x| (tiled once per call) × w·sign(x): pairwise i16 sums stay within
                    // 2·127·128 < 32768; no |w| and its shuffles per block.
                    let ax =
                        |g: usize| _mm256_loadu_si256(aqa.add(32 * (8 * b + g)) as *const __m256i);
                    macro_rules! prod {
                        ($w:expr, $j:literal, $g:expr) => {
                            _mm256_madd_epi16(
                                _mm256_maddubs_epi16(
                                    ax($g),
                                    _mm256_sign_epi8(bcast!($w, $j), a($g)),
                                ),
                                ones,
                            )
                        };
                    }
                    let s0 = _mm256_add_epi32(prod!(lo, 0, 0), prod!(lo, 1, 1));
                    let s1 = _mm256_add_epi32(prod!(lo, 2, 2), prod!(lo, 3, 3));
                    let s2 = _mm256_add_epi32(prod!(hi, 0, 4), prod!(hi, 1, 5));
                    let s3 = _mm256_add_epi32(prod!(hi, 2, 6), prod!(hi, 3, 7));
                    _mm256_add_epi32(_mm256_add_epi32(s0, s1), _mm256_add_epi32(s2, s3))
                } else {
                    // Levels < 32: four maddubs i16 lanes add up below 4·2·31·127 < 32768.
                    let m = |v: __m256i, g: usize| _mm256_maddubs_epi16(v, a(g));
                    let l = _mm256_add_epi16(
                        _mm256_add_epi16(m(bcast!(lo, 0), 0), m(bcast!(lo, 1), 1)),
                        _mm256_add_epi16(m(bcast!(lo, 2), 2), m(bcast!(lo, 3), 3)),
                    );
                    let h = _mm256_add_epi16(
                        _mm256_add_epi16(m(bcast!(hi, 0), 4), m(bcast!(hi, 1), 5)),
                        _mm256_add_epi16(m(bcast!(hi, 2), 6), m(bcast!(hi, 3), 7)),
                    );
                    _mm256_add_epi32(_mm256_madd_epi16(l, ones), _mm256_madd_epi16(h, ones))
                };
                let d = _mm256_set1_ps(_mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(
                    (p as *const u16).read_unaligned() as i32,
                ))));
                (p32, d)
            }
        };
        // Even and odd blocks into separate accumulators (one FMA chain would wait on each
        // FMA's latency), the offsets' activation sums into a third.
        let add = |b: usize, acc: __m256, off: __m256| -> (__m256, __m256) {
            let (p32, d) = block(b);
            // SAFETY: scales and sums of block b in tile 0 exist (asserted by the caller).
            let (xs, sums) = unsafe {
                (
                    _mm256_loadu_ps(asc.add(TILE * b)),
                    _mm256_loadu_ps(as32.add(TILE * b)),
                )
            };
            let acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p32), _mm256_mul_ps(d, xs), acc);
            (
                acc,
                if TY == Q8_0 {
                    off
                } else {
                    _mm256_fmadd_ps(d, sums, off)
                },
            )
        };
        let mut b = 0;
        while b + 2 <= blocks {
            (acc0, off) = add(b, acc0, off);
            (acc1, off) = add(b + 1, acc1, off);
            b += 2;
        }
        if b < blocks {
            (acc0, off) = add(b, acc0, off);
        }
        let v = _mm256_fmadd_ps(_mm256_set1_ps(bias), off, _mm256_add_ps(acc0, acc1));
        // SAFETY: r < w.rows; `y` is n × w.rows (caller contract).
        unsafe { store_lanes(v, n, y, w.rows, r) };
    }
}

/// [`gemv_tile`] for Q4_K and Q6_K (`Q6`) matrices: per 256-element block, the scales and
/// offsets of its sixteen 16-element parts are computed once, then each 32 columns are
/// unpacked in registers (halves duplicated into both 128-bit lanes) and broadcast against the
/// tile.
///
/// # Safety
/// As [`gemv_tile`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn kquant_rows<const Q6: bool>(
    w: &WeightMatrix,
    rows: std::ops::Range<usize>,
    acts: &TiledActs,
    n: usize,
    y: *mut f32,
) {
    let bb = w.ty.block_bytes();
    let blocks = w.cols / 256;
    let row_bytes = blocks * bb;
    let ones = _mm256_set1_epi16(1);
    let low4 = _mm256_set1_epi8(0xF);
    let high2 = _mm256_set1_epi8(0x30);
    let (aq, asc, as16) = (acts.q.as_ptr(), acts.scale.as_ptr(), acts.sum16.as_ptr());
    for r in rows {
        // SAFETY: row r < w.rows, so its bytes lie in the matrix; prefetching further rows is
        // a hint that never faults.
        let row = unsafe { w.data.as_ptr().add(r * row_bytes) };
        super::gemv::prefetch_ahead(row, row_bytes);
        let zero = _mm256_setzero_ps();
        let (mut acc0, mut acc1, mut off) = (zero, zero, zero);
        for blk in 0..blocks {
            // SAFETY: block `blk` lies in the row.
            let b = unsafe { std::slice::from_raw_parts(row.add(blk * bb), bb) };
            let (sc, of) = super::unpack::kquant_scales::<Q6>(b);
            let p = b.as_ptr();
            // SAFETY (the loads): 16 bytes at each offset lie in the block.
            let dup = |at: usize| unsafe {
                _mm256_broadcastsi128_si256(_mm_loadu_si128(p.add(at) as *const __m128i))
            };
            for j in 0..8 {
                // Levels of columns 32j..32j+16 (`lo`) and 32j+16..32j+32 (`hi`) of the block.
                let (lo, hi) = if Q6 {
                    // Half h of 128, quarter q of 32: low 4 bits from ql[64h + 32(q%2) + l]
                    // (high nibble when q ≥ 2), 2 high bits from qh[32h + l] >> 2q.
                    let (h, q) = (j / 4, j % 4);
                    let level = |l: usize| {
                        let ql = dup(64 * h + 32 * (q % 2) + l);
                        let qh = dup(128 + 32 * h + l);
                        let low = match q {
                            0 | 1 => _mm256_and_si256(ql, low4),
                            _ => _mm256_and_si256(_mm256_srli_epi16::<4>(ql), low4),
                        };
                        let high = match q {
                            0 => _mm256_slli_epi16::<4>(qh),
                            1 => _mm256_slli_epi16::<2>(qh),
                            2 => qh,
                            _ => _mm256_srli_epi16::<2>(qh),
                        };
                        _mm256_or_si256(low, _mm256_and_si256(high, high2))
                    };
                    (level(0), level(16))
                } else {
                    // Columns 64c..64c+32 are the low nibbles of qs[32c..32c+32], the next
                    // 32 the high nibbles.
                    let c = j / 2;
                    let (a, b) = (dup(16 + 32 * c), dup(32 + 32 * c));
                    if j % 2 == 0 {
                        (_mm256_and_si256(a, low4), _mm256_and_si256(b, low4))
                    } else {
                        (
                            _mm256_and_si256(_mm256_srli_epi16::<4>(a), low4),
                            _mm256_and_si256(_mm256_srli_epi16::<4>(b), low4),
                        )
                    }
                };
                // The activation block; its groups 8g..8g+8, scale g and sums 2g, 2g+1 of
                // tile 0 exist (asserted by the caller).
                let g = 8 * blk + j;
                // SAFETY: the reads below are those of activation block g.
                unsafe {
                    let a =
                        |k: usize| _mm256_loadu_si256(aq.add(32 * (8 * g + k)) as *const __m256i);
                    macro_rules! m {
                        ($v:expr, $k:literal, $g:expr) => {
                            _mm256_maddubs_epi16(bcast!($v, $k), a($g))
                        };
                    }
                    let xs = _mm256_loadu_ps(asc.add(TILE * g));
                    // Two i16 lanes of maddubs (levels < 64) add up below 2·2·63·127.
                    let half = |l0: __m256i, l1: __m256i| {
                        _mm256_add_epi32(_mm256_madd_epi16(l0, ones), _mm256_madd_epi16(l1, ones))
                    };
                    let plo = half(
                        _mm256_add_epi16(m!(lo, 0, 0), m!(lo, 1, 1)),
                        _mm256_add_epi16(m!(lo, 2, 2), m!(lo, 3, 3)),
                    );
                    let phi = half(
                        _mm256_add_epi16(m!(hi, 0, 4), m!(hi, 1, 5)),
                        _mm256_add_epi16(m!(hi, 2, 6), m!(hi, 3, 7)),
                    );
                    let s16 = |s: usize| _mm256_loadu_ps(as16.add(TILE * (2 * g + s)));
                    if Q6 {
                        let slo = _mm256_mul_ps(_mm256_set1_ps(sc[2 * j]), xs);
                        let shi = _mm256_mul_ps(_mm256_set1_ps(sc[2 * j + 1]), xs);
                        acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(plo), slo, acc0);
                        acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(phi), shi, acc1);
                        off = _mm256_fmadd_ps(_mm256_set1_ps(of[2 * j]), s16(0), off);
                        off = _mm256_fmadd_ps(_mm256_set1_ps(of[2 * j + 1]), s16(1), off);
                    } else {
                        let s = _mm256_mul_ps(_mm256_set1_ps(sc[2 * j]), xs);
                        let p = _mm256_cvtepi32_ps(_mm256_add_epi32(plo, phi));
                        if j % 2 == 0 {
                            acc0 = _mm256_fmadd_ps(p, s, acc0);
                        } else {
                            acc1 = _mm256_fmadd_ps(p, s, acc1);
                        }
                        let sums = _mm256_add_ps(s16(0), s16(1));
                        off = _mm256_fmadd_ps(_mm256_set1_ps(of[2 * j]), sums, off);
                    }
                }
            }
        }
        let v = _mm256_add_ps(_mm256_add_ps(acc0, acc1), off);
        // SAFETY: r < w.rows; `y` is n × w.rows (caller contract).
        unsafe { store_lanes(v, n, y, w.rows, r) };
    }
}
