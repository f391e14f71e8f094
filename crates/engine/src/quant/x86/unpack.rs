//! AVX2 unpacking of weight rows into [`DecodedRow`]s: Q4_0/Q5_0/Q8_0 per 32-element block,
//! Q4_K and Q6_K per 256, with `f16` scales converted by F16C. Other types take the generic
//! (auto-vectorized) decoder.

use super::super::blocks::scale_min_k4;
use super::super::decoded::DecodedRow;
use super::super::GgmlType;
use std::arch::x86_64::*;

/// The little-endian `f16` at `b[at..at + 2]` as f32, converted with F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn f16c_at(b: &[u8], at: usize) -> f32 {
    let bits = u16::from_le_bytes([b[at], b[at + 1]]);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

/// Unpacks the 32 quants of a Q4_0/Q5_0/Q8_0 block (`ty` one of those) into a vector: Q8_0's
/// signed, Q4_0's and Q5_0's unsigned (their bias, 8 or 16, left to the caller).
///
/// # Safety
/// Requires AVX2 ([`super::available`]); `b` is one whole block of `ty`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) unsafe fn block32(ty: GgmlType, b: &[u8]) -> __m256i {
    debug_assert_eq!(b.len(), ty.block_bytes());
    let low4 = _mm_set1_epi8(0xF);
    match ty {
        // SAFETY (all arms): the block has at least the bytes read (18, 22 or 34).
        GgmlType::Q8_0 => unsafe { _mm256_loadu_si256(b.as_ptr().add(2) as *const __m256i) },
        _ => {
            let at = if ty == GgmlType::Q4_0 { 2 } else { 6 };
            let qs = unsafe { _mm_loadu_si128(b.as_ptr().add(at) as *const __m128i) };
            let lo = _mm_and_si128(qs, low4);
            let hi = _mm_and_si128(_mm_srli_epi16::<4>(qs), low4);
            let nibbles = _mm256_set_m128i(hi, lo);
            if ty == GgmlType::Q4_0 {
                nibbles
            } else {
                // Spread bit j of qh to byte j: broadcast the 4 bytes, pick byte j/8 for lane j,
                // test bit j%8, and set bit 4 of the level where it is set.
                let qh = unsafe { (b.as_ptr().add(2) as *const i32).read_unaligned() };
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
                _mm256_or_si256(nibbles, _mm256_and_si256(set, _mm256_set1_epi8(16)))
            }
        }
    }
}

/// The levels (0..16) of elements 128h..128h+128 of the Q4_K block at `b`, as four groups of
/// 32: the low then high nibbles of qs bytes 64h..64h+32, then of 64h+32..64h+64.
///
/// # Safety
/// Requires AVX2; `b` points at a whole 144-byte Q4_K block; `h < 2`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q4k_half(b: *const u8, h: usize) -> [__m256i; 4] {
    let low4 = _mm256_set1_epi8(0xF);
    // SAFETY: bytes 16 + 64h .. 16 + 64h + 64 lie in the block.
    let (qa, qb) = unsafe {
        (
            _mm256_loadu_si256(b.add(16 + 64 * h) as *const __m256i),
            _mm256_loadu_si256(b.add(48 + 64 * h) as *const __m256i),
        )
    };
    [
        _mm256_and_si256(qa, low4),
        _mm256_and_si256(_mm256_srli_epi16::<4>(qa), low4),
        _mm256_and_si256(qb, low4),
        _mm256_and_si256(_mm256_srli_epi16::<4>(qb), low4),
    ]
}

/// The unsigned levels (0..64) of elements 128h..128h+128 of the Q6_K block at `b`, as four
/// groups of 32: element `l + 32·quarter` takes nibble `quarter / 2` of
/// `ql[64h + l + 32·(quarter % 2)]` and bits `2·quarter` of `qh[32h + l]`.
///
/// # Safety
/// Requires AVX2; `b` points at a whole 210-byte Q6_K block; `h < 2`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q6k_half(b: *const u8, h: usize) -> [__m256i; 4] {
    let low4 = _mm256_set1_epi8(0xF);
    let high2 = _mm256_set1_epi8(0x30);
    // SAFETY: ql 64h..64h+64 and qh 128+32h..160+32h lie in the block.
    let (qa, qb, qh) = unsafe {
        (
            _mm256_loadu_si256(b.add(64 * h) as *const __m256i),
            _mm256_loadu_si256(b.add(64 * h + 32) as *const __m256i),
            _mm256_loadu_si256(b.add(128 + 32 * h) as *const __m256i),
        )
    };
    [
        _mm256_or_si256(
            _mm256_and_si256(qa, low4),
            _mm256_and_si256(_mm256_slli_epi16::<4>(qh), high2),
        ),
        _mm256_or_si256(
            _mm256_and_si256(qb, low4),
            _mm256_and_si256(_mm256_slli_epi16::<2>(qh), high2),
        ),
        _mm256_or_si256(
            _mm256_and_si256(_mm256_srli_epi16::<4>(qa), low4),
            _mm256_and_si256(qh, high2),
        ),
        _mm256_or_si256(
            _mm256_and_si256(_mm256_srli_epi16::<4>(qb), low4),
            _mm256_and_si256(_mm256_srli_epi16::<2>(qh), high2),
        ),
    ]
}

/// Unpacks one row of `ty` into `w` (the same result as [`DecodedRow::decode`]).
///
/// # Safety
/// Requires AVX2, FMA and F16C ([`super::available`]); `src` is one row of `ty` of `w`'s length.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn decode_fast(w: &mut DecodedRow, ty: GgmlType, src: &[u8]) {
    match ty {
        // SAFETY (both): AVX2 is enabled here; `src` is a row of `w`'s length.
        GgmlType::Q4K => unsafe { decode_q4k(w, src) },
        GgmlType::Q6K => unsafe { decode_q6k(w, src) },
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => {
            let bb = ty.block_bytes();
            let blocks = src.len() / bb;
            let bias = match ty {
                GgmlType::Q4_0 => -8.0,
                GgmlType::Q5_0 => -16.0,
                _ => 0.0,
            };
            assert!(
                w.q.len() >= 32 * blocks
                    && w.scale.len() >= 2 * blocks
                    && w.offset.len() >= 2 * blocks,
                "row shape"
            );
            for (i, b) in src.chunks_exact(bb).enumerate() {
                // SAFETY: AVX2 is enabled; 32i + 32 <= q.len(), 2i + 2 <= scale.len(), offset.len()
                // (asserted above).
                unsafe {
                    let v = block32(ty, b);
                    _mm256_storeu_si256(w.q.as_mut_ptr().add(32 * i) as *mut __m256i, v);
                    let d = f16c_at(b, 0);
                    *w.scale.get_unchecked_mut(2 * i) = d;
                    *w.scale.get_unchecked_mut(2 * i + 1) = d;
                    *w.offset.get_unchecked_mut(2 * i) = bias * d;
                    *w.offset.get_unchecked_mut(2 * i + 1) = bias * d;
                }
            }
        }
        _ => w.decode(ty, src),
    }
}

/// Scales and offsets per 16 elements of one Q6_K (`Q6`) or Q4_K block: `w = sc·q + off`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn kquant_scales<const Q6: bool>(b: &[u8]) -> ([f32; 16], [f32; 16]) {
    let (mut sc, mut off) = ([0f32; 16], [0f32; 16]);
    if Q6 {
        let d = f16c_at(b, 208);
        for (i, &s) in b[192..208].iter().enumerate() {
            sc[i] = d * (s as i8) as f32;
            off[i] = -32.0 * sc[i];
        }
    } else {
        let (d, dmin) = (f16c_at(b, 0), f16c_at(b, 2));
        for j in 0..8 {
            let (s, m) = scale_min_k4(j, &b[4..16]);
            sc[2 * j] = d * s as f32;
            sc[2 * j + 1] = sc[2 * j];
            off[2 * j] = -(dmin * m as f32);
            off[2 * j + 1] = off[2 * j];
        }
    }
    (sc, off)
}

/// Q4_K rows: nibbles split with AVX2, the 6-bit scales and mins decoded in scalar code.
///
/// # Safety
/// Requires AVX2, FMA and F16C; `src` is one Q4_K row matching `w`'s length.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn decode_q4k(w: &mut DecodedRow, src: &[u8]) {
    assert!(w.q.len() >= src.len() / 144 * 256, "row shape");
    for (i, b) in src.chunks_exact(144).enumerate() {
        let (sc, off) = kquant_scales::<false>(b);
        w.scale[16 * i..16 * i + 16].copy_from_slice(&sc);
        w.offset[16 * i..16 * i + 16].copy_from_slice(&off);
        for h in 0..2 {
            // SAFETY: the block is 144 bytes; the 128 output bytes 256i+128h.. lie in the
            // row's `q` (asserted above).
            unsafe {
                let out = w.q.as_mut_ptr().add(256 * i + 128 * h);
                for (g, v) in q4k_half(b.as_ptr(), h).into_iter().enumerate() {
                    _mm256_storeu_si256(out.add(32 * g) as *mut __m256i, v);
                }
            }
        }
    }
}

/// Q6_K rows: per 128 elements, low nibbles from `ql` and 2-bit highs from `qh` (element
/// `l + 32·quarter` takes nibble `quarter / 2` of `ql[l + 32·(quarter % 2)]` and bits
/// `2·quarter` of `qh[l]`), kept unsigned; the sixteen i8 scales times `d`, offsets −32 × those.
///
/// # Safety
/// Requires AVX2, FMA and F16C; `src` is one Q6_K row matching `w`'s length.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn decode_q6k(w: &mut DecodedRow, src: &[u8]) {
    let minus32 = _mm256_set1_ps(-32.0);
    assert!(w.q.len() >= src.len() / 210 * 256, "row shape");
    for (i, b) in src.chunks_exact(210).enumerate() {
        let d = _mm256_set1_ps(f16c_at(b, 208));
        // SAFETY: all reads lie in the 210-byte block (ql 0..128, qh 128..192, scales
        // 192..208); the writes 256i..256i+256 lie in `q` (asserted above) and 16i..16i+16
        // in `scale` (one scale per 16 elements of the row).
        unsafe {
            let s8 = _mm_loadu_si128(b.as_ptr().add(192) as *const __m128i);
            let s_lo = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(s8));
            let s_hi = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128::<8>(s8)));
            assert!(
                w.scale.len() >= 16 * i + 16 && w.offset.len() >= 16 * i + 16,
                "row shape"
            );
            let (s_lo, s_hi) = (_mm256_mul_ps(d, s_lo), _mm256_mul_ps(d, s_hi));
            let sp = w.scale.as_mut_ptr().add(16 * i);
            _mm256_storeu_ps(sp, s_lo);
            _mm256_storeu_ps(sp.add(8), s_hi);
            let op = w.offset.as_mut_ptr().add(16 * i);
            _mm256_storeu_ps(op, _mm256_mul_ps(minus32, s_lo));
            _mm256_storeu_ps(op.add(8), _mm256_mul_ps(minus32, s_hi));
            for h in 0..2 {
                let parts = q6k_half(b.as_ptr(), h);
                let out = w.q.as_mut_ptr().add(256 * i + 128 * h);
                for (quarter, p) in parts.into_iter().enumerate() {
                    _mm256_storeu_si256(out.add(32 * quarter) as *mut __m256i, p);
                }
            }
        }
    }
}
