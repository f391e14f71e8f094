//! The kernel for weight matrices packed 8 rows per group (`quant::packed`, Q4_0/Q5_0): per
//! group and 32-column block, the 8 level vectors (4 columns × 8 rows each) are unpacked once
//! into registers, then every activation row of the batch broadcasts its 4 bytes per vector
//! (`vpbroadcastd` from memory) into one `maddubs` each. Lane r of the i32 sums is weight row
//! r's dot product, so the 8 results of a group store as one vector: no horizontal sums for any
//! batch size, and per activation row and block 8 `maddubs` + 9 integer adds/converts + 2
//! float ops serve 256 multiply-adds.

use super::super::decoded::{QuantizedActs, GROUP};
use super::super::packed::{bias, nibbles_at, ROWS};
use super::super::{GgmlType, WeightMatrix};
use std::arch::x86_64::*;

/// Activation rows accumulated per pass over a group: 64 rows' accumulators (2 KiB) stay in
/// L1 and their activations (64 × cols bytes) in L2 while each block is unpacked once.
const CHUNK: usize = 64;

/// For every group in `groups` and activation row `t < n`, `y[t·w.rows + 8g + r] = Σ_i
/// w[8g + r][i] · x[t][i]`.
///
/// # Safety
/// Requires AVX2, FMA and F16C ([`super::available`]); `w` is packed Q4_0/Q5_0 (its data in
/// the `quant::packed` layout); `acts` holds `n` rows of `w.cols` and `xbias` their
/// `packed::act_bias`; `groups` lies within `w.rows / 8`; `y` points at `n × w.rows` floats,
/// whose elements of these groups nobody else touches during the call.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn matmul_packed(
    w: &WeightMatrix,
    groups: std::ops::Range<usize>,
    acts: &QuantizedActs,
    xbias: &[i32],
    n: usize,
    y: *mut f32,
) {
    let blocks = w.cols / GROUP;
    assert!(
        acts.q.len() >= n * w.cols
            && acts.scale.len() >= n * blocks
            && xbias.len() >= n * blocks
            && groups.end * ROWS <= w.rows
            && w.data.len() == w.rows * blocks * w.ty.block_bytes(),
        "packed matmul shapes"
    );
    // SAFETY (both arms): forwarded from the caller, shapes asserted above.
    unsafe {
        if w.ty == GgmlType::Q5_0 {
            kernel::<true>(w, groups, acts, xbias, n, y)
        } else {
            kernel::<false>(w, groups, acts, xbias, n, y)
        }
    }
}

/// [`matmul_packed`] for Q5_0 (`Q5`) or Q4_0.
///
/// # Safety
/// As [`matmul_packed`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn kernel<const Q5: bool>(
    w: &WeightMatrix,
    groups: std::ops::Range<usize>,
    acts: &QuantizedActs,
    xbias: &[i32],
    n: usize,
    y: *mut f32,
) {
    let cols = w.cols;
    let blocks = cols / GROUP;
    let gbb = ROWS * w.ty.block_bytes();
    let qs_at = nibbles_at(w.ty);
    debug_assert_eq!(bias(w.ty), if Q5 { 16 } else { 8 });
    let ones = _mm256_set1_epi16(1);
    let low4 = _mm256_set1_epi8(0xF);
    let sixteen = _mm256_set1_epi8(16);
    let (aq, asc, xb) = (acts.q.as_ptr(), acts.scale.as_ptr(), xbias.as_ptr());
    let mut acc = [_mm256_setzero_ps(); CHUNK];
    for t0 in (0..n).step_by(CHUNK) {
        let nt = CHUNK.min(n - t0);
        for g in groups.clone() {
            acc[..nt].fill(_mm256_setzero_ps());
            for b in 0..blocks {
                // SAFETY: group g's block b lies in the data (asserted by the caller); the
                // activation reads are row t < n, block b.
                unsafe {
                    let p = w.data.as_ptr().add((g * blocks + b) * gbb);
                    let d = _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i));
                    let fifth = if Q5 {
                        _mm256_loadu_si256(p.add(16) as *const __m256i)
                    } else {
                        _mm256_setzero_si256()
                    };
                    // Bit v of each fifth-bit byte moved to bit 4 (16-bit shifts never carry
                    // a bit into bit 4 of the other byte for shifts below 8).
                    let high = |v: usize| {
                        let s = match v {
                            0 => _mm256_slli_epi16::<4>(fifth),
                            1 => _mm256_slli_epi16::<3>(fifth),
                            2 => _mm256_slli_epi16::<2>(fifth),
                            3 => _mm256_slli_epi16::<1>(fifth),
                            4 => fifth,
                            5 => _mm256_srli_epi16::<1>(fifth),
                            6 => _mm256_srli_epi16::<2>(fifth),
                            _ => _mm256_srli_epi16::<3>(fifth),
                        };
                        _mm256_and_si256(s, sixteen)
                    };
                    let wv: [__m256i; 8] = std::array::from_fn(|v| {
                        let q = _mm256_loadu_si256(p.add(qs_at + 32 * (v / 2)) as *const __m256i);
                        let nib = if v % 2 == 0 {
                            _mm256_and_si256(q, low4)
                        } else {
                            _mm256_and_si256(_mm256_srli_epi16::<4>(q), low4)
                        };
                        if Q5 {
                            _mm256_or_si256(nib, high(v))
                        } else {
                            nib
                        }
                    });
                    for (k, a) in acc.iter_mut().enumerate().take(nt) {
                        let t = t0 + k;
                        let x = aq.add(t * cols + GROUP * b) as *const i32;
                        let m = |v: usize| {
                            _mm256_maddubs_epi16(
                                wv[v],
                                _mm256_set1_epi32(x.add(v).read_unaligned()),
                            )
                        };
                        // One maddubs i16 lane is at most 2·31·127: four (Q5_0) or eight
                        // (Q4_0, levels < 16) of them add up below 32768.
                        let lo = _mm256_add_epi16(
                            _mm256_add_epi16(m(0), m(1)),
                            _mm256_add_epi16(m(2), m(3)),
                        );
                        let hi = _mm256_add_epi16(
                            _mm256_add_epi16(m(4), m(5)),
                            _mm256_add_epi16(m(6), m(7)),
                        );
                        let isum = if Q5 {
                            _mm256_add_epi32(
                                _mm256_madd_epi16(lo, ones),
                                _mm256_madd_epi16(hi, ones),
                            )
                        } else {
                            _mm256_madd_epi16(_mm256_add_epi16(lo, hi), ones)
                        };
                        let i = t * blocks + b;
                        let isum = _mm256_sub_epi32(isum, _mm256_set1_epi32(*xb.add(i)));
                        let s = _mm256_mul_ps(d, _mm256_set1_ps(*asc.add(i)));
                        *a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), s, *a);
                    }
                }
            }
            for (k, a) in acc.iter().enumerate().take(nt) {
                // SAFETY: row t0 + k < n and group g's 8 outputs lie in `y` (caller contract).
                unsafe { _mm256_storeu_ps(y.add((t0 + k) * w.rows + ROWS * g), *a) };
            }
        }
    }
}
