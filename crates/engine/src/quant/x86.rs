//! AVX2+FMA kernels: i8×i8 dot products of a decoded weight row with up to four activation rows
//! at once (the weight vector is loaded once per 32 elements), and an f32 dot product.

use super::decoded::{DecodedRow, QuantizedActs, GROUP, SUB};
use std::arch::x86_64::*;

/// Activation rows processed per weight row pass (accumulators kept in registers).
pub(crate) const TILE: usize = 4;

/// Whether this CPU runs the kernels here.
pub(crate) fn available() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

/// Horizontal sum of eight f32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// `out[k] = Σ_i w[i] * x[t0 + k][i]` for `k < nt` (≤ [`TILE`]), integer parts only; weight
/// offsets are added by the caller.
///
/// # Safety
/// Requires AVX2 and FMA ([`available`]); `acts` holds rows `t0..t0+nt` of `cols` elements,
/// and `w` a row of `cols` elements.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn dot_rows(
    w: &DecodedRow,
    acts: &QuantizedActs,
    cols: usize,
    t0: usize,
    nt: usize,
    out: &mut [f32],
) {
    let groups = cols / GROUP;
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); TILE];
    let wq = w.q.as_ptr();
    for g in 0..groups {
        // SAFETY: g*32+32 <= cols = w.q.len(); the unaligned load reads exactly those bytes.
        let wv = unsafe { _mm256_loadu_si256(wq.add(g * GROUP) as *const __m256i) };
        let wabs = _mm256_abs_epi8(wv);
        // Lanes 0..4 hold elements 0..16 (scale 2g), lanes 4..8 elements 16..32 (scale 2g+1).
        let ws = _mm256_set_m128(_mm_set1_ps(w.scale[2 * g + 1]), _mm_set1_ps(w.scale[2 * g]));
        for (k, a) in acc.iter_mut().enumerate().take(nt) {
            let t = t0 + k;
            let base = t * cols + g * GROUP;
            // SAFETY: base + 32 <= (t+1)*cols <= acts.q.len().
            let av = unsafe { _mm256_loadu_si256(acts.q.as_ptr().add(base) as *const __m256i) };
            // |w| (unsigned) × sign-adjusted x (signed): the pairwise i16 sums stay within
            // 2×128×127 < 32768, so maddubs does not saturate.
            let p16 = _mm256_maddubs_epi16(wabs, _mm256_sign_epi8(av, wv));
            let p32 = _mm256_madd_epi16(p16, ones);
            let s = _mm256_mul_ps(ws, _mm256_set1_ps(acts.scale[t * (cols / GROUP) + g]));
            *a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p32), s, *a);
        }
    }
    for k in 0..nt {
        out[k] = hsum(acc[k]);
    }
    debug_assert_eq!(w.scale.len(), cols / SUB);
}

/// Dot product of two equal-length f32 slices.
///
/// # Safety
/// Requires AVX2 and FMA ([`available`]).
#[target_feature(enable = "avx2,fma")]
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

/// Unpacks the 32 quants of a Q4_0/Q5_0/Q8_0 block into `q` with AVX2 (the decode path's hot
/// types); returns false for other types, which take the generic decoder.
///
/// # Safety
/// Requires AVX2 and FMA ([`available`]); `b` is one whole block of `ty`, `q` has 32 elements.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn decode_block32(ty: super::GgmlType, b: &[u8], q: &mut [i8]) -> bool {
    use super::GgmlType as T;
    let low4 = _mm_set1_epi8(0xF);
    let v = match ty {
        // SAFETY (all arms): the block has at least the bytes read (18, 22 or 34).
        T::Q8_0 => unsafe { _mm256_loadu_si256(b.as_ptr().add(2) as *const __m256i) },
        T::Q4_0 | T::Q5_0 => {
            let at = if ty == T::Q4_0 { 2 } else { 6 };
            let qs = unsafe { _mm_loadu_si128(b.as_ptr().add(at) as *const __m128i) };
            let lo = _mm_and_si128(qs, low4);
            let hi = _mm_and_si128(_mm_srli_epi16::<4>(qs), low4);
            let nibbles = _mm256_set_m128i(hi, lo);
            if ty == T::Q4_0 {
                _mm256_sub_epi8(nibbles, _mm256_set1_epi8(8))
            } else {
                // Spread bit j of qh to byte j: broadcast the 4 bytes, pick byte j/8 for lane j,
                // test bit j%8, and turn a clear bit into -16 (x - 16 + 16·bit).
                let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]) as i32;
                let bytes = _mm256_shuffle_epi8(
                    _mm256_set1_epi32(qh),
                    _mm256_set_epi64x(
                        0x0303030303030303,
                        0x0202020202020202,
                        0x0101010101010101,
                        0,
                    ),
                );
                let bit = _mm256_set1_epi64x(0x8040201008040201u64 as i64);
                let set = _mm256_cmpeq_epi8(_mm256_and_si256(bytes, bit), bit);
                let minus16 = _mm256_andnot_si256(set, _mm256_set1_epi8(-16));
                _mm256_add_epi8(nibbles, minus16)
            }
        }
        _ => return false,
    };
    // SAFETY: q has 32 elements.
    unsafe { _mm256_storeu_si256(q.as_mut_ptr() as *mut __m256i, v) };
    true
}

/// [`decode`] with AVX2 unpacking for the 32-element types that need no offsets.
///
/// # Safety
/// Requires AVX2 and FMA ([`available`]); `src` is one row of `ty` matching `w`'s length.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn decode_fast(w: &mut DecodedRow, ty: super::GgmlType, src: &[u8]) {
    use super::GgmlType as T;
    if ty == T::Q4K {
        // SAFETY: AVX2 is enabled in this function; `src` is a Q4_K row of `w`'s length.
        return unsafe { decode_q4k(w, src) };
    }
    if !matches!(ty, T::Q4_0 | T::Q5_0 | T::Q8_0) {
        return w.decode(ty, src);
    }
    let bb = ty.block_bytes();
    for (i, b) in src.chunks_exact(bb).enumerate() {
        // SAFETY: AVX2 is enabled here; block and 32-element window are in bounds.
        unsafe { decode_block32(ty, b, &mut w.q[32 * i..32 * i + 32]) };
        let d = super::blocks::f16_at(b, 0);
        w.scale[2 * i] = d;
        w.scale[2 * i + 1] = d;
    }
}

/// Q4_K rows: nibbles split with AVX2, the 6-bit scales and mins decoded in scalar code.
///
/// # Safety
/// Requires AVX2 and FMA ([`available`]); `src` is one Q4_K row matching `w`'s length.
#[target_feature(enable = "avx2,fma")]
unsafe fn decode_q4k(w: &mut DecodedRow, src: &[u8]) {
    let low4 = _mm256_set1_epi8(0xF);
    for (i, b) in src.chunks_exact(144).enumerate() {
        let (d, min) = (super::blocks::f16_at(b, 0), super::blocks::f16_at(b, 2));
        for j in 0..8 {
            let (s, m) = super::blocks::scale_min_k4(j, &b[4..16]);
            let (sc, off) = (d * s as f32, -(min * m as f32));
            w.scale[16 * i + 2 * j..16 * i + 2 * j + 2].fill(sc);
            w.offset[16 * i + 2 * j..16 * i + 2 * j + 2].fill(off);
        }
        for c in 0..4 {
            // SAFETY: bytes 16+32c..48+32c lie in the 144-byte block; the 64 output bytes
            // 256i+64c.. lie in the row's `q`.
            unsafe {
                let qs = _mm256_loadu_si256(b.as_ptr().add(16 + 32 * c) as *const __m256i);
                let lo = _mm256_and_si256(qs, low4);
                let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(qs), low4);
                let out = w.q.as_mut_ptr().add(256 * i + 64 * c);
                _mm256_storeu_si256(out as *mut __m256i, lo);
                _mm256_storeu_si256(out.add(32) as *mut __m256i, hi);
            }
        }
    }
}
