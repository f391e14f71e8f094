//! AVX2+FMA kernels: i8×i8 dot products of a decoded weight row with up to eight activation rows
//! at once (the weight vector is loaded once per 32 elements), and an f32 dot product.

use super::decoded::{DecodedRow, QuantizedActs, GROUP, SUB};
use std::arch::x86_64::*;

/// Expands `$row!(k)` for k = 0..8, the most activation rows a kernel tile takes: each kernel's
/// `row!` skips `k >= N`, and constant indices keep its accumulators in registers. (Defined
/// before `mod gemv` and `mod gemv_k`, so in scope there too.)
macro_rules! each_row {
    ($row:ident) => {
        $row!(0);
        $row!(1);
        $row!(2);
        $row!(3);
        $row!(4);
        $row!(5);
        $row!(6);
        $row!(7);
    };
}

/// Calls `$f::<N, FLAG>(args)` for the runtime `$n` (1..=8) and `$flag`: the kernels are
/// instantiated per row count so that their row loops unroll (see `each_row!`).
macro_rules! by_rows {
    ($f:ident, $n:expr, $flag:expr, ($($arg:expr),*)) => {
        match ($n, $flag) {
            (1, true) => $f::<1, true>($($arg),*),
            (2, true) => $f::<2, true>($($arg),*),
            (3, true) => $f::<3, true>($($arg),*),
            (4, true) => $f::<4, true>($($arg),*),
            (5, true) => $f::<5, true>($($arg),*),
            (6, true) => $f::<6, true>($($arg),*),
            (7, true) => $f::<7, true>($($arg),*),
            (8, true) => $f::<8, true>($($arg),*),
            (1, false) => $f::<1, false>($($arg),*),
            (2, false) => $f::<2, false>($($arg),*),
            (3, false) => $f::<3, false>($($arg),*),
            (4, false) => $f::<4, false>($($arg),*),
            (5, false) => $f::<5, false>($($arg),*),
            (6, false) => $f::<6, false>($($arg),*),
            (7, false) => $f::<7, false>($($arg),*),
            (8, false) => $f::<8, false>($($arg),*),
            _ => {}
        }
    };
}

pub(crate) mod bcast;
pub(crate) mod gemv;
pub(crate) mod gemv_k;
pub(crate) mod packed;
mod unpack;
pub(crate) use unpack::decode_fast;

/// The most activation rows any kernel here takes per weight row pass (accumulators kept in
/// registers; see `each_row!` and `by_rows!`).
pub(crate) const TILE: usize = 8;

/// Whether this CPU runs the kernels here.
pub(crate) fn available() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// The four floats at `p` (no alignment needed) in both 128-bit halves.
///
/// # Safety
/// Requires AVX; `p` points at 4 readable floats.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn broadcast4(p: *const f32) -> __m256 {
    // SAFETY: the caller guarantees 4 readable floats at p.
    let x = unsafe { _mm_loadu_ps(p) };
    _mm256_set_m128(x, x)
}

/// Horizontal sum of eight f32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// `out[k] = Σ_i w[i] * x[t0 + k][i]` for `k < nt` (≤ [`TILE`]), weight offsets included.
///
/// # Safety
/// Requires AVX2, FMA and F16C ([`available`]); `acts` holds rows `t0..t0+nt` of `cols`
/// elements, and `w` a row of `cols` elements.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_rows(
    w: &DecodedRow,
    acts: &QuantizedActs,
    cols: usize,
    t0: usize,
    nt: usize,
    out: &mut [f32],
) {
    debug_assert!(w.q.len() >= cols && w.scale.len() >= cols / SUB && nt <= TILE);
    debug_assert!(acts.q.len() >= (t0 + nt) * cols);
    // SAFETY (all arms): forwarded from the caller; N = nt.
    unsafe { by_rows!(dot_tile, nt, w.signed, (w, acts, cols, t0, out)) }
}

/// Sum of the 32 products `w·a` of one group of unsigned levels `w` (< 64) as 8 i32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn group_dot_unsigned(w: __m256i, a: __m256i) -> __m256i {
    // Pairwise i16 sums stay within 2×63×127 < 32768: no saturation.
    _mm256_madd_epi16(_mm256_maddubs_epi16(w, a), _mm256_set1_epi16(1))
}

/// Sum of the 32 products `|w|·sign(a, w)` of one group as 8 i32 lanes: lanes 0..4 hold
/// elements 0..16, lanes 4..8 elements 16..32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn group_dot(wabs: __m256i, w: __m256i, a: __m256i) -> __m256i {
    // |w| (unsigned) × sign-adjusted x (signed): the pairwise i16 sums stay within
    // 2×128×127 < 32768, so maddubs does not saturate.
    _mm256_madd_epi16(
        _mm256_maddubs_epi16(wabs, _mm256_sign_epi8(a, w)),
        _mm256_set1_epi16(1),
    )
}

/// The eight 16-element sums of 128 products of four groups of weight levels `wv` (`wa`: their
/// absolute values, used when `SIGNED`) with the activation levels at `q`, in the order of two
/// `hadd` rounds: first halves of groups 0..4, then second halves. Unsigned levels (< 64) use
/// one round of i16 `hadd` (a sum of 4 products stays below 4·63·127 < 32768) before widening;
/// levels below 32 (`BELOW_32`) two rounds (8 products < 8·31·127); signed levels widen at once.
///
/// # Safety
/// Requires AVX2; `q` points at 128 readable bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn chunk_sums<const SIGNED: bool, const BELOW_32: bool>(
    wv: &[__m256i; 4],
    wa: &[__m256i; 4],
    q: *const i8,
) -> __m256i {
    // SAFETY: the four loads read the 128 bytes at q (caller contract).
    unsafe {
        let a = |g: usize| _mm256_loadu_si256(q.add(32 * g) as *const __m256i);
        let ones = _mm256_set1_epi16(1);
        if SIGNED {
            let m: [__m256i; 4] = std::array::from_fn(|g| group_dot(wa[g], wv[g], a(g)));
            _mm256_hadd_epi32(_mm256_hadd_epi32(m[0], m[1]), _mm256_hadd_epi32(m[2], m[3]))
        } else {
            let m: [__m256i; 4] = std::array::from_fn(|g| _mm256_maddubs_epi16(wv[g], a(g)));
            let (p01, p23) = (_mm256_hadd_epi16(m[0], m[1]), _mm256_hadd_epi16(m[2], m[3]));
            if BELOW_32 {
                _mm256_madd_epi16(_mm256_hadd_epi16(p01, p23), ones)
            } else {
                _mm256_hadd_epi32(_mm256_madd_epi16(p01, ones), _mm256_madd_epi16(p23, ones))
            }
        }
    }
}

/// The kernel of [`dot_rows`] for `N` activation rows (`SIGNED`: levels are i8 and there are
/// no offsets; else levels are unsigned and offsets apply). Per 128 elements and activation row,
/// the four groups' products are reduced to one vector of the eight 16-element sums (order:
/// first halves of groups 0..4, then second halves), converted once and multiplied by weight
/// scales permuted into that order times the activation scales: one convert and one FMA per
/// 128 elements instead of per 32. Rows are visited by `row!`, unrolled with a constant index,
/// so the N accumulators stay in registers.
///
/// # Safety
/// As [`dot_rows`], with `nt = N`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_tile<const N: usize, const SIGNED: bool>(
    w: &DecodedRow,
    acts: &QuantizedActs,
    cols: usize,
    t0: usize,
    out: &mut [f32],
) {
    let groups = cols / GROUP;
    let chunks = groups / 4;
    let perm = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    let mut acc = [_mm256_setzero_ps(); N];
    let wq = w.q.as_ptr();
    let ws = w.scale.as_ptr();
    let wo = w.offset.as_ptr();
    // SAFETY: rows t0..t0+N exist (caller contract): `cols` levels, `groups` scales and
    // `2 * groups` sums each.
    let (aq, asc, asum) = unsafe {
        (
            acts.q.as_ptr().add(t0 * cols),
            acts.scale.as_ptr().add(t0 * groups),
            acts.sum16.as_ptr().add(t0 * 2 * groups),
        )
    };
    for c in 0..chunks {
        // SAFETY: chunk c covers elements 128c..128c+128 <= cols of every row read here, and
        // scales/offsets/sums 8c..8c+8 <= cols/16.
        unsafe {
            let base = 128 * c;
            let wv: [__m256i; 4] =
                std::array::from_fn(
                    |g| _mm256_loadu_si256(wq.add(base + 32 * g) as *const __m256i),
                );
            let wa: [__m256i; 4] = if SIGNED {
                std::array::from_fn(|g| _mm256_abs_epi8(wv[g]))
            } else {
                wv
            };
            let wsc = _mm256_permutevar8x32_ps(_mm256_loadu_ps(ws.add(8 * c)), perm);
            let woff = if !SIGNED {
                _mm256_loadu_ps(wo.add(8 * c))
            } else {
                _mm256_setzero_ps()
            };
            macro_rules! row {
                ($k:literal) => {
                    if $k < N {
                        let h = chunk_sums::<SIGNED, false>(&wv, &wa, aq.add($k * cols + base));
                        let xs = broadcast4(asc.add($k * groups + 4 * c));
                        acc[$k] =
                            _mm256_fmadd_ps(_mm256_cvtepi32_ps(h), _mm256_mul_ps(wsc, xs), acc[$k]);
                        if !SIGNED {
                            let sums = _mm256_loadu_ps(asum.add($k * 2 * groups + 8 * c));
                            acc[$k] = _mm256_fmadd_ps(woff, sums, acc[$k]);
                        }
                    }
                };
            }
            each_row!(row);
        }
    }
    for g in 4 * chunks..groups {
        // SAFETY: group g covers elements 32g..32g+32 <= cols; scales 2g, 2g+1 < cols/16.
        unsafe {
            let wv = _mm256_loadu_si256(wq.add(32 * g) as *const __m256i);
            let wa = _mm256_abs_epi8(wv);
            let wsc = _mm256_set_m128(_mm_set1_ps(*ws.add(2 * g + 1)), _mm_set1_ps(*ws.add(2 * g)));
            for (k, acc) in acc.iter_mut().enumerate() {
                let a = _mm256_loadu_si256(aq.add(k * cols + 32 * g) as *const __m256i);
                let m = if SIGNED {
                    group_dot(wa, wv, a)
                } else {
                    group_dot_unsigned(wv, a)
                };
                let s = _mm256_mul_ps(wsc, _mm256_set1_ps(*asc.add(k * groups + g)));
                *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(m), s, *acc);
            }
        }
    }
    for (k, acc) in acc.iter().enumerate() {
        let mut v = hsum(*acc);
        if !SIGNED {
            for s in 8 * chunks..2 * groups {
                // SAFETY: s < cols/16, within both the offsets and this row's sums.
                v += unsafe { *wo.add(s) * *asum.add(k * 2 * groups + s) };
            }
        }
        out[k] = v;
    }
}

/// Writes rows `rows` (at most [`TILE`], a tile's worth) of the `cols`-wide levels `q` into
/// `dst` in the [`super::decoded::TiledActs`] layout: per 4 columns, the 4 levels of each of
/// the 8 rows (rows past the end are zero). Per 32 columns an 8×8 transpose of 32-bit words.
///
/// # Safety
/// Requires AVX2; `q` holds rows `rows` of `cols` (a multiple of 32) levels; `dst` holds
/// `TILE · cols` bytes.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn interleave_tile(
    q: &[i8],
    rows: std::ops::Range<usize>,
    cols: usize,
    dst: &mut [i8],
) {
    assert!(
        rows.len() <= TILE && q.len() >= rows.end * cols && dst.len() >= TILE * cols,
        "tile shapes"
    );
    for c in 0..cols / 32 {
        // SAFETY: row `rows.start + k` < rows.end has columns 32c..32c+32 within `q`; the
        // eight stores cover dst[256c..256c+256] within TILE · cols.
        unsafe {
            let r: [__m256i; TILE] = std::array::from_fn(|k| {
                if k < rows.len() {
                    let p = q.as_ptr().add((rows.start + k) * cols + 32 * c);
                    _mm256_loadu_si256(p as *const __m256i)
                } else {
                    _mm256_setzero_si256()
                }
            });
            // 8×8 transpose of 32-bit words: out[j] = [r0[j], r1[j], …, r7[j]].
            let a0 = _mm256_unpacklo_epi32(r[0], r[1]);
            let a1 = _mm256_unpackhi_epi32(r[0], r[1]);
            let a2 = _mm256_unpacklo_epi32(r[2], r[3]);
            let a3 = _mm256_unpackhi_epi32(r[2], r[3]);
            let a4 = _mm256_unpacklo_epi32(r[4], r[5]);
            let a5 = _mm256_unpackhi_epi32(r[4], r[5]);
            let a6 = _mm256_unpacklo_epi32(r[6], r[7]);
            let a7 = _mm256_unpackhi_epi32(r[6], r[7]);
            let b0 = _mm256_unpacklo_epi64(a0, a2);
            let b1 = _mm256_unpackhi_epi64(a0, a2);
            let b2 = _mm256_unpacklo_epi64(a1, a3);
            let b3 = _mm256_unpackhi_epi64(a1, a3);
            let b4 = _mm256_unpacklo_epi64(a4, a6);
            let b5 = _mm256_unpackhi_epi64(a4, a6);
            let b6 = _mm256_unpacklo_epi64(a5, a7);
            let b7 = _mm256_unpackhi_epi64(a5, a7);
            let out = [
                _mm256_permute2x128_si256::<0x20>(b0, b4),
                _mm256_permute2x128_si256::<0x20>(b1, b5),
                _mm256_permute2x128_si256::<0x20>(b2, b6),
                _mm256_permute2x128_si256::<0x20>(b3, b7),
                _mm256_permute2x128_si256::<0x31>(b0, b4),
                _mm256_permute2x128_si256::<0x31>(b1, b5),
                _mm256_permute2x128_si256::<0x31>(b2, b6),
                _mm256_permute2x128_si256::<0x31>(b3, b7),
            ];
            let d = dst.as_mut_ptr().add(256 * c) as *mut __m256i;
            for (j, v) in out.iter().enumerate() {
                _mm256_storeu_si256(d.add(j), *v);
            }
        }
    }
}

/// Dot product of two equal-length f32 slices.
///
/// # Safety
/// Requires AVX2 and FMA ([`available`]).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (k, acc) in acc.iter_mut().enumerate() {
            // SAFETY: i + 8k + 8 <= n, in bounds of both slices.
            let (x, y) = unsafe {
                (
                    _mm256_loadu_ps(pa.add(i + 8 * k)),
                    _mm256_loadu_ps(pb.add(i + 8 * k)),
                )
            };
            *acc = _mm256_fmadd_ps(x, y, *acc);
        }
        i += 32;
    }
    while i + 8 <= n {
        // SAFETY: i + 8 <= n.
        let (x, y) = unsafe { (_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i))) };
        acc[0] = _mm256_fmadd_ps(x, y, acc[0]);
        i += 8;
    }
    let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut total = hsum(sum);
    for j in i..n {
        total += a[j] * b[j];
    }
    total
}

/// Quantizes `x` (a multiple of 32 long) into `q` (i8, one `scale` per 32) and `sum16`
/// (`scale · Σq` per 16), like [`super::decoded::QuantizedActs::new`] (rounding half away from zero).
///
/// # Safety
/// Requires AVX2, FMA and F16C ([`available`]); `q.len() == x.len()`, `scale.len() ==
/// x.len() / 32`, `sum16.len() == x.len() / 16`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn quantize_acts(x: &[f32], q: &mut [i8], scale: &mut [f32], sum16: &mut [f32]) {
    assert!(
        q.len() == x.len() && scale.len() * GROUP == x.len() && sum16.len() * SUB == x.len(),
        "activation buffer shapes"
    );
    let sign = _mm256_set1_ps(-0.0);
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for g in 0..scale.len() {
        // SAFETY: group g's 32 inputs and outputs are in bounds (asserted above).
        unsafe {
            let p = x.as_ptr().add(GROUP * g);
            let v: [__m256; 4] = std::array::from_fn(|i| _mm256_loadu_ps(p.add(8 * i)));
            let m = v.iter().fold(_mm256_setzero_ps(), |m, &v| {
                _mm256_max_ps(m, _mm256_andnot_ps(sign, v))
            });
            let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
            let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
            let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
            let d = amax / 127.0;
            let id = _mm256_set1_ps(if d != 0.0 { 1.0 / d } else { 0.0 });
            // Round half away from zero like the scalar `f32::round`: truncate x + ½·sign(x).
            let half = _mm256_set1_ps(0.5);
            let i: [__m256i; 4] = std::array::from_fn(|k| {
                let x = _mm256_mul_ps(v[k], id);
                let x = _mm256_add_ps(x, _mm256_or_ps(half, _mm256_and_ps(sign, x)));
                _mm256_cvttps_epi32(x)
            });
            // packs interleave 128-bit lanes; the permutation restores element order.
            let w16a = _mm256_packs_epi32(i[0], i[1]);
            let w16b = _mm256_packs_epi32(i[2], i[3]);
            let b = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(w16a, w16b), order);
            _mm256_storeu_si256(q.as_mut_ptr().add(GROUP * g) as *mut __m256i, b);
            let half = |a: __m256i, b: __m256i| {
                let s = _mm256_add_epi32(a, b);
                let s = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s));
                let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
                let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
                _mm_cvtsi128_si32(s) as f32
            };
            *scale.get_unchecked_mut(g) = d;
            *sum16.get_unchecked_mut(2 * g) = d * half(i[0], i[1]);
            *sum16.get_unchecked_mut(2 * g + 1) = d * half(i[2], i[3]);
        }
    }
}
