//! The kernels for weight matrices packed 8 rows per group (`quant::packed`: Q4_0, Q5_0, Q8_0,
//! Q4_K, Q6_K): per group and 32 columns, the 8 level vectors (4 columns × 8 rows each) are unpacked
//! once into registers, then every activation row of the batch broadcasts its 4 bytes per
//! vector (`vpbroadcastd` from memory) into one `maddubs` each. Lane r of the i32 sums is
//! weight row r's dot product, so a group's 8 results store as one vector: no horizontal sums
//! at any batch size. Per activation row and 32 columns of 8 rows (256 multiply-adds): 8
//! `maddubs`, 4–16 integer adds, a convert and 2–3 float ops (Q8_0 adds 8 `sign`s and 8
//! `madd`s: its signed levels need `|w|·sign(x, w)`, whose pairwise sums cannot be added in i16).
//! A broadcast from memory is not a plain load on Zen 3 (it takes a shuffle pipe), so decode
//! batches of Q4_0/Q5_0/Q4_K/Q6_K store the activations broadcast once per task and multiply
//! from memory instead ([`sweep_decode`]).

use super::super::decoded::{QuantizedActs, GROUP};
use super::super::packed::{
    group_block_bytes, nibbles_at, Q4K_MINS, Q4K_NIBBLES, Q4K_SCALES, Q6K_HIGH, Q6K_NIBBLES,
    Q6K_SCALES, ROWS,
};
use super::super::{GgmlType, WeightMatrix};
use std::arch::x86_64::*;

/// Activation rows accumulated per pass over a group: 64 rows' accumulators (2 KiB) stay in
/// L1 and their activations (64 × cols bytes) in L2 while each block is unpacked once.
const CHUNK: usize = 64;
/// How far ahead of the block being multiplied the weights are prefetched: for a lone
/// activation row (decode) the hardware prefetcher alone leaves a 262k × 640 Q8_0 GEMV ~15 %
/// slower (`kernel_ab q8_0 262144 640 1 2`: 35–39 → 39–47 GFLOP/s); neutral at 8 rows.
const PREFETCH_BYTES: usize = 4096;

/// For every group in `groups` and activation row `t < n`, `y[t·w.rows + 8g + r] = Σ_i
/// w[8g + r][i] · x[t][i]`.
///
/// # Safety
/// Requires AVX2, FMA and F16C ([`super::available`]); `w` is packed (its data in the
/// `quant::packed` layout of its type); `acts` holds `n` rows of `w.cols` and `xbias` their
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
    let act_groups = w.cols / GROUP;
    let blocks = w.cols / w.ty.block_elems();
    assert!(
        w.is_packed()
            && acts.q.len() >= n * w.cols
            && acts.scale.len() >= n * act_groups
            && acts.sum16.len() >= 2 * n * act_groups
            && (xbias.len() >= n * act_groups
                || matches!(w.ty, GgmlType::Q8_0 | GgmlType::Q4K | GgmlType::Q6K))
            && groups.end * ROWS <= w.rows
            && w.data.len() == w.rows / ROWS * blocks * group_block_bytes(w.ty),
        "packed matmul shapes"
    );
    // SAFETY (all arms): forwarded from the caller, shapes asserted above.
    unsafe {
        match w.ty {
            GgmlType::Q5_0 => q4_q5::<true>(w, groups, acts, xbias, n, y),
            GgmlType::Q4_0 => q4_q5::<false>(w, groups, acts, xbias, n, y),
            GgmlType::Q8_0 => q8(w, groups, acts, n, y),
            // A lone K-quant row keeps `sweep`: its 256-column blocks leave too few rows
            // to repay the stored broadcasts (kernel_ab: 3–5 % slower at n = 1).
            GgmlType::Q6K if (2..=DECODE_ROWS).contains(&n) => q6k_decode(w, groups, acts, n, y),
            GgmlType::Q6K => q6k(w, groups, acts, n, y),
            _ if (2..=DECODE_ROWS).contains(&n) => q4k_decode(w, groups, acts, n, y),
            _ => q4k(w, groups, acts, n, y),
        }
    }
}

/// The loop the kernels share: for each chunk of activation rows and each group, zeroed
/// accumulators (one vector of 8 weight rows per activation row), `block(p, b, acc, t0)` for
/// each of the row's `blocks` group blocks (`p` its bytes), then the accumulators stored.
///
/// # Safety
/// As [`matmul_packed`]; `block` reads only within its group block and rows `t0..t0+acc.len()`.
#[inline(always)]
unsafe fn sweep(
    w: &WeightMatrix,
    groups: std::ops::Range<usize>,
    n: usize,
    y: *mut f32,
    mut block: impl FnMut(*const u8, usize, &mut [__m256], usize),
) {
    let blocks = w.cols / w.ty.block_elems();
    let gbb = group_block_bytes(w.ty);
    // SAFETY: an all-zero __m256 is 8 floats of 0.0.
    let zero: __m256 = unsafe { std::mem::zeroed() };
    let mut acc = [zero; CHUNK];
    for t0 in (0..n).step_by(CHUNK) {
        let nt = CHUNK.min(n - t0);
        for g in groups.clone() {
            acc[..nt].fill(zero);
            for b in 0..blocks {
                // SAFETY: group g's block b lies in the data (caller contract).
                let p = unsafe { w.data.as_ptr().add((g * blocks + b) * gbb) };
                for line in (0..gbb).step_by(64) {
                    // SAFETY: prefetching is a hint that never faults, even past the data;
                    // SSE (which provides it) is part of the x86-64 baseline.
                    unsafe {
                        _mm_prefetch::<_MM_HINT_T0>(
                            p.wrapping_add(PREFETCH_BYTES + line) as *const i8
                        )
                    };
                }
                block(p, b, &mut acc[..nt], t0);
            }
            for (k, a) in acc.iter().enumerate().take(nt) {
                // SAFETY: row t0 + k < n and group g's 8 outputs lie in `y` (caller contract).
                unsafe {
                    std::ptr::write_unaligned(
                        y.add((t0 + k) * w.rows + ROWS * g) as *mut __m256,
                        *a,
                    )
                };
            }
        }
    }
}

/// The activation side of 32 columns for the kernels: vector v is the 4 level bytes of columns
/// `4v..4v+4` repeated 8 times, broadcast from the 32 bytes at `x` (see [`stored`] for the
/// decode kernels' already broadcast ones).
///
/// # Safety
/// Requires AVX2; 32 bytes are readable at `x`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn broadcasts(x: *const i8) -> impl Fn(usize) -> __m256i {
    // SAFETY: v < 8: the dword lies in the 32 bytes at x (caller contract).
    move |v: usize| unsafe { _mm256_set1_epi32((x as *const i32).add(v).read_unaligned()) }
}

/// Integer sums of 8 level vectors `wv` (unsigned, < 32) with 32 activation bytes (`xv`, from
/// [`broadcasts`] or [`stored`]): lane r = Σ over the 32 columns of row r. One maddubs i16
/// lane is at most 2·31·127: four of them add up below 32768, eight too when `LT16` (levels
/// < 16).
///
/// # Safety
/// Requires AVX2; `xv` is safe to call for v < 8.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn unsigned_sums<const LT16: bool>(
    wv: &[__m256i; 8],
    xv: impl Fn(usize) -> __m256i,
) -> __m256i {
    {
        let ones = _mm256_set1_epi16(1);
        let m = |v: usize| _mm256_maddubs_epi16(wv[v], xv(v));
        let lo = _mm256_add_epi16(_mm256_add_epi16(m(0), m(1)), _mm256_add_epi16(m(2), m(3)));
        let hi = _mm256_add_epi16(_mm256_add_epi16(m(4), m(5)), _mm256_add_epi16(m(6), m(7)));
        if LT16 {
            _mm256_madd_epi16(_mm256_add_epi16(lo, hi), ones)
        } else {
            _mm256_add_epi32(_mm256_madd_epi16(lo, ones), _mm256_madd_epi16(hi, ones))
        }
    }
}

/// One activation row against a Q4_0 / Q5_0 (`Q5`) group block of levels `wv` and scales `d`:
/// `acc + (Σ level·q − bias·Σq) · (d · xs)`, given `bias·Σq` and `xs` in all lanes. Shared by
/// both kernels, so they do the same arithmetic in the same order.
///
/// # Safety
/// Requires AVX2; as [`unsigned_sums`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_q5_row<const Q5: bool>(
    wv: &[__m256i; 8],
    d: __m256,
    xv: impl Fn(usize) -> __m256i,
    xbias: __m256i,
    xs: __m256,
    acc: __m256,
) -> __m256 {
    // SAFETY: forwarded from the caller.
    let sums = unsafe {
        if Q5 {
            unsigned_sums::<false>(wv, xv)
        } else {
            unsigned_sums::<true>(wv, xv)
        }
    };
    let isum = _mm256_sub_epi32(sums, xbias);
    _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(d, xs), acc)
}

/// One activation row against a Q4_K sub-block (levels `wv`, scales `sc`, mins `m`):
/// `acc + Σ level·q · (sc · xs) − m · xsum`, given `xs` and `xsum` (= xs·Σq) in all lanes.
///
/// # Safety
/// Requires AVX2; as [`unsigned_sums`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4k_row(
    wv: &[__m256i; 8],
    (sc, m): (__m256, __m256),
    xv: impl Fn(usize) -> __m256i,
    xs: __m256,
    xsum: __m256,
    acc: __m256,
) -> __m256 {
    // SAFETY: forwarded from the caller.
    let isum = unsafe { unsigned_sums::<true>(wv, xv) };
    let v = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(sc, xs), acc);
    _mm256_fnmadd_ps(m, xsum, v)
}

/// One activation row against a Q6_K sub-block (levels `wv` < 64; per 16-column half a scale
/// and its offset factor, [`q6k_scales`]): per half `Σ level·q · (sc · xs) + off · sum`,
/// given `xs` and the halves' xs·Σq in all lanes.
///
/// # Safety
/// Requires AVX2; `xv` is safe to call for v < 8.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6k_row(
    wv: &[__m256i; 8],
    (sc_lo, sc_hi, off_lo, off_hi): (__m256, __m256, __m256, __m256),
    xv: impl Fn(usize) -> __m256i,
    xs: __m256,
    (sum_lo, sum_hi): (__m256, __m256),
    acc: __m256,
) -> __m256 {
    let ones = _mm256_set1_epi16(1);
    let m = |v: usize| _mm256_maddubs_epi16(wv[v], xv(v));
    // Levels < 64: two maddubs i16 lanes add up below 2·2·63·127 < 32768.
    let half = |v: usize| {
        _mm256_add_epi32(
            _mm256_madd_epi16(_mm256_add_epi16(m(v), m(v + 1)), ones),
            _mm256_madd_epi16(_mm256_add_epi16(m(v + 2), m(v + 3)), ones),
        )
    };
    let mut v = acc;
    v = _mm256_fmadd_ps(_mm256_cvtepi32_ps(half(0)), _mm256_mul_ps(sc_lo, xs), v);
    v = _mm256_fmadd_ps(off_lo, sum_lo, v);
    v = _mm256_fmadd_ps(_mm256_cvtepi32_ps(half(4)), _mm256_mul_ps(sc_hi, xs), v);
    _mm256_fmadd_ps(off_hi, sum_hi, v)
}

/// The 8 nibble vectors of 4 chunks at `p` (chunk k: vector 2k low, 2k + 1 high).
///
/// # Safety
/// Requires AVX2; 128 bytes are readable at `p`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn nibbles(p: *const u8) -> [__m256i; 8] {
    let low4 = _mm256_set1_epi8(0xF);
    std::array::from_fn(|v| {
        // SAFETY: chunk v / 2 lies in the 128 bytes at p.
        let q = unsafe { _mm256_loadu_si256(p.add(32 * (v / 2)) as *const __m256i) };
        if v % 2 == 0 {
            _mm256_and_si256(q, low4)
        } else {
            _mm256_and_si256(_mm256_srli_epi16::<4>(q), low4)
        }
    })
}

/// Q5_0 (`Q5`) or Q4_0: `(Σ level·q − bias·Σq) · (d · xs)` per block.
///
/// # Safety
/// As [`matmul_packed`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_q5<const Q5: bool>(
    w: &WeightMatrix,
    groups: std::ops::Range<usize>,
    acts: &QuantizedActs,
    xbias: &[i32],
    n: usize,
    y: *mut f32,
) {
    if n <= DECODE_ROWS {
        // SAFETY: forwarded.
        return unsafe { q4_q5_decode::<Q5>(w, groups, acts, xbias, n, y) };
    }
    let (cols, blocks) = (w.cols, w.cols / GROUP);
    let (aq, asc, xb) = (acts.q.as_ptr(), acts.scale.as_ptr(), xbias.as_ptr());
    // SAFETY: every read below is in group block p or in activation row t < n, block b.
    unsafe {
        sweep(w, groups, n, y, |p, b, acc, t0| {
            let d = _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i));
            let wv = q4_q5_levels::<Q5>(w.ty, p);
            for (k, a) in acc.iter_mut().enumerate() {
                let i = (t0 + k) * blocks + b;
                debug_assert_eq!(i * GROUP, (t0 + k) * cols + GROUP * b);
                let (xbias, xs) = (_mm256_set1_epi32(*xb.add(i)), _mm256_set1_ps(*asc.add(i)));
                *a = q4_q5_row::<Q5>(&wv, d, broadcasts(aq.add(i * GROUP)), xbias, xs, *a);
            }
        })
    }
}

/// The 8 level vectors (unsigned, offset by the type's bias) of the Q5_0 (`Q5`) or Q4_0 group
/// block at `p`.
///
/// # Safety
/// Requires AVX2; `p` is one packed group block of `ty`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_q5_levels<const Q5: bool>(ty: GgmlType, p: *const u8) -> [__m256i; 8] {
    // SAFETY: the nibbles and fifth bits lie in the group block (caller contract).
    unsafe {
        let mut wv = nibbles(p.add(nibbles_at(ty)));
        if Q5 {
            let sixteen = _mm256_set1_epi8(16);
            // Bit v of each fifth-bit byte moved to bit 4 (16-bit shifts by less than 8
            // never carry a bit into bit 4 of the other byte).
            let f = _mm256_loadu_si256(p.add(16) as *const __m256i);
            let high = [
                _mm256_slli_epi16::<4>(f),
                _mm256_slli_epi16::<3>(f),
                _mm256_slli_epi16::<2>(f),
                _mm256_slli_epi16::<1>(f),
                f,
                _mm256_srli_epi16::<1>(f),
                _mm256_srli_epi16::<2>(f),
                _mm256_srli_epi16::<3>(f),
            ];
            for (v, h) in wv.iter_mut().zip(high) {
                *v = _mm256_or_si256(*v, _mm256_and_si256(h, sixteen));
            }
        }
        wv
    }
}

/// Activation rows up to which Q4_0, Q5_0, Q4_K and Q6_K take the decode kernels
/// ([`sweep_decode`]; the K-quants from 2 rows on).
const DECODE_ROWS: usize = 8;
/// 32-column groups per chunk of stored activations at most; fewer when 8 rows of them would
/// pass [`CHUNK_BYTES`].
const CHUNK_GROUPS: usize = 8;
/// Stored activations per chunk at most (8 rows), so they stay in L1 while every weight group
/// of the task sweeps them.
const CHUNK_BYTES: usize = 24 << 10;

thread_local! {
    /// Per-thread stored activations of [`sweep_decode`] (no allocation per call).
    static EXPANDED: std::cell::RefCell<Vec<__m256i>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// [`sweep`] for up to [`DECODE_ROWS`] activation rows (decode batches). The broadcasts of the
/// activation levels (a shuffle-unit µop each on Zen 3, as many as the maddubs they feed) are
/// done once per task into a stored chunk of [`CHUNK_GROUPS`] × 32 columns, so every weight
/// group of the task multiplies against plain loads. Columns are swept chunk by chunk, the
/// accumulators carried in `y`. Each activation row and 32 columns get `S` stored vectors:
/// the 8 broadcast dwords of its levels, then per-type values (scale, level sums, |levels|)
/// that `fill(i, slot)` writes into `slot[8..S]` for activation group i (it may read
/// `slot[..8]`, already written); `block(p, j, slot, acc)` multiplies the
/// weight block at `p`, whose first 32 columns are group `j` of the chunk, into `acc`, reading
/// row t's stored vectors of the chunk's group `k` at `slot(t, k)`.
///
/// # Safety
/// As [`matmul_packed`], with `n ≤ DECODE_ROWS`; `fill` writes only `slot[8..S]`.
#[inline(always)]
unsafe fn sweep_decode<const S: usize>(
    w: &WeightMatrix,
    groups: std::ops::Range<usize>,
    acts: &QuantizedActs,
    n: usize,
    y: *mut f32,
    fill: impl Fn(usize, *mut __m256i),
    mut block: impl FnMut(*const u8, usize, &dyn Fn(usize, usize) -> *const __m256i, &mut [__m256]),
) {
    assert!(n <= DECODE_ROWS);
    let act_groups = w.cols / GROUP;
    let per_block = w.ty.block_elems() / GROUP;
    let blocks = w.cols / w.ty.block_elems();
    let gbb = group_block_bytes(w.ty);
    let aq = acts.q.as_ptr();
    EXPANDED.with_borrow_mut(|buf| {
        let need = DECODE_ROWS * CHUNK_GROUPS * S;
        if buf.len() < need {
            // SAFETY: an all-zero __m256i is valid.
            buf.resize(need, unsafe { std::mem::zeroed() });
        }
        let e = buf.as_mut_ptr();
        let slot = |t: usize, k: usize| {
            debug_assert!(t < DECODE_ROWS && k < CHUNK_GROUPS);
            // SAFETY: t < DECODE_ROWS and k < CHUNK_GROUPS: within `buf`.
            unsafe { e.add((t * CHUNK_GROUPS + k) * S) }
        };
        // Whole weight blocks per chunk (K-quant blocks span 8 groups: one block).
        let fit = (CHUNK_BYTES / (DECODE_ROWS * S * 32)).min(CHUNK_GROUPS);
        let chunk = (fit / per_block * per_block).max(per_block);
        // SAFETY: activation reads are in row t < n, group < act_groups; weight reads are in
        // group g's blocks; `y` accesses are this task's groups of rows t < n (caller contract).
        unsafe {
            for c0 in (0..act_groups).step_by(chunk) {
                let cg = chunk.min(act_groups - c0);
                for t in 0..n {
                    for k in 0..cg {
                        let i = t * act_groups + c0 + k;
                        let (x, s) = (broadcasts(aq.add(i * GROUP)), slot(t, k));
                        for v in 0..8 {
                            s.add(v).write(x(v));
                        }
                        fill(i, s);
                    }
                }
                for g in groups.clone() {
                    let out = |t: usize| y.add(t * w.rows + ROWS * g);
                    let mut acc = [_mm256_setzero_ps(); DECODE_ROWS];
                    if c0 > 0 {
                        for (t, a) in acc.iter_mut().enumerate().take(n) {
                            *a = _mm256_loadu_ps(out(t));
                        }
                    }
                    for b in c0 / per_block..(c0 + cg) / per_block {
                        let p = w.data.as_ptr().add((g * blocks + b) * gbb);
                        for line in (0..gbb).step_by(64) {
                            // The same block of the next group, the next one this loop reads
                            // (a hint: never faults).
                            _mm_prefetch::<_MM_HINT_T0>(
                                p.wrapping_add(blocks * gbb + line) as *const i8
                            );
                        }
                        let slot_ptr = |t: usize, k: usize| slot(t, k) as *const __m256i;
                        block(p, b * per_block - c0, &slot_ptr, &mut acc[..n]);
                    }
                    for (t, a) in acc.iter().enumerate().take(n) {
                        _mm256_storeu_ps(out(t), *a);
                    }
                }
            }
        }
    })
}

/// Stores `v` in all 8 lanes of slot vector `k` at `s`.
///
/// # Safety
/// Requires AVX2; `s.add(k)` is a stored slot vector of [`sweep_decode`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn put(s: *mut __m256i, k: usize, v: f32) {
    // SAFETY: forwarded from the caller.
    unsafe { s.add(k).write(_mm256_castps_si256(_mm256_set1_ps(v))) }
}

/// Slot vector `k` at `s` as floats (a value [`put`] stored in all lanes).
///
/// # Safety
/// Requires AVX2; `s.add(k)` is a stored slot vector of [`sweep_decode`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn lanes(s: *const __m256i, k: usize) -> __m256 {
    // SAFETY: forwarded from the caller; the buffer is 32-byte aligned.
    unsafe { _mm256_castsi256_ps(_mm256_load_si256(s.add(k))) }
}

/// The stored activation levels `slot[0..8]` as the activation side of [`unsigned_sums`].
///
/// # Safety
/// Requires AVX2; `s` points at a stored slot of [`sweep_decode`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn stored(s: *const __m256i) -> impl Fn(usize) -> __m256i {
    // SAFETY: v < 8 lies in the slot (caller contract); the buffer is 32-byte aligned.
    move |v: usize| unsafe { _mm256_load_si256(s.add(v)) }
}

/// [`q4_q5`] for up to [`DECODE_ROWS`] activation rows, on [`sweep_decode`]; the same
/// arithmetic in the same order. Stored per 32 columns: the level-offset sum and the scale.
///
/// # Safety
/// As [`matmul_packed`], with `n ≤ DECODE_ROWS`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_q5_decode<const Q5: bool>(
    w: &WeightMatrix,
    groups: std::ops::Range<usize>,
    acts: &QuantizedActs,
    xbias: &[i32],
    n: usize,
    y: *mut f32,
) {
    let (asc, xb) = (acts.scale.as_ptr(), xbias.as_ptr());
    // SAFETY (both closures): i is an activation group of a row < n; slots as sweep_decode
    // provides them.
    unsafe {
        sweep_decode::<10>(
            w,
            groups,
            acts,
            n,
            y,
            |i, s| {
                s.add(8).write(_mm256_set1_epi32(*xb.add(i)));
                put(s, 9, *asc.add(i));
            },
            |p, j, slot, acc| {
                let d = _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i));
                let wv = q4_q5_levels::<Q5>(w.ty, p);
                for (t, a) in acc.iter_mut().enumerate() {
                    let s = slot(t, j);
                    let (xbias, xs) = (_mm256_load_si256(s.add(8)), lanes(s, 9));
                    *a = q4_q5_row::<Q5>(&wv, d, stored(s), xbias, xs, *a);
                }
            },
        )
    }
}

/// [`q4k`] for up to [`DECODE_ROWS`] activation rows, on [`sweep_decode`]; the same
/// arithmetic in the same order. Stored per 32 columns: the scale and the level sum.
///
/// # Safety
/// As [`matmul_packed`], with `n ≤ DECODE_ROWS`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4k_decode(
    w: &WeightMatrix,
    groups: std::ops::Range<usize>,
    acts: &QuantizedActs,
    n: usize,
    y: *mut f32,
) {
    let (asc, as16) = (acts.scale.as_ptr(), acts.sum16.as_ptr());
    // SAFETY (both closures): i is an activation group of a row < n; weight reads are in the
    // group block at p; slots as sweep_decode provides them.
    unsafe {
        sweep_decode::<10>(
            w,
            groups,
            acts,
            n,
            y,
            |i, s| {
                let xsum = *as16.add(2 * i) + *as16.add(2 * i + 1);
                put(s, 8, *asc.add(i));
                put(s, 9, xsum);
            },
            |p, j, slot, acc| {
                for sub in 0..8 {
                    let scales = q4k_scales(p, sub);
                    let wv = nibbles(p.add(Q4K_NIBBLES + 128 * sub));
                    for (t, a) in acc.iter_mut().enumerate() {
                        let s = slot(t, j + sub);
                        *a = q4k_row(&wv, scales, stored(s), lanes(s, 8), lanes(s, 9), *a);
                    }
                }
            },
        )
    }
}

/// [`q6k`] for up to [`DECODE_ROWS`] activation rows, on [`sweep_decode`]; the same
/// arithmetic in the same order. Stored per 32 columns: the scale and the level sums of
/// its two halves.
///
/// # Safety
/// As [`matmul_packed`], with `n ≤ DECODE_ROWS`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6k_decode(
    w: &WeightMatrix,
    groups: std::ops::Range<usize>,
    acts: &QuantizedActs,
    n: usize,
    y: *mut f32,
) {
    let minus32 = _mm256_set1_ps(-32.0);
    let (asc, as16) = (acts.scale.as_ptr(), acts.sum16.as_ptr());
    // SAFETY (both closures): i is an activation group of a row < n; weight reads are in the
    // group block at p; slots as sweep_decode provides them.
    unsafe {
        sweep_decode::<11>(
            w,
            groups,
            acts,
            n,
            y,
            |i, s| {
                put(s, 8, *asc.add(i));
                put(s, 9, *as16.add(2 * i));
                put(s, 10, *as16.add(2 * i + 1));
            },
            |p, j, slot, acc| {
                let d = _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i));
                for sub in 0..8 {
                    let scales = q6k_scales(p, d, minus32, sub);
                    let wv = q6k_levels(p, sub);
                    for (t, a) in acc.iter_mut().enumerate() {
                        let s = slot(t, j + sub);
                        let sums = (lanes(s, 9), lanes(s, 10));
                        *a = q6k_row(&wv, scales, stored(s), lanes(s, 8), sums, *a);
                    }
                }
            },
        )
    }
}

/// Q8_0: `Σ |w|·sign(q, w) · (d · xs)` per block (|−128| = 128 fits maddubs' unsigned side,
/// and pairwise sums stay within 2·128·127 < 32768).
///
/// # Safety
/// As [`matmul_packed`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8(
    w: &WeightMatrix,
    groups: std::ops::Range<usize>,
    acts: &QuantizedActs,
    n: usize,
    y: *mut f32,
) {
    let blocks = w.cols / GROUP;
    let ones = _mm256_set1_epi16(1);
    let (aq, asc) = (acts.q.as_ptr(), acts.scale.as_ptr());
    // SAFETY: every read below is in group block p or in activation row t < n, block b.
    unsafe {
        sweep(w, groups, n, y, |p, b, acc, t0| {
            let d = _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i));
            let wv: [__m256i; 8] =
                std::array::from_fn(|v| _mm256_loadu_si256(p.add(16 + 32 * v) as *const __m256i));
            let wabs = wv.map(|v| _mm256_abs_epi8(v));
            for (k, a) in acc.iter_mut().enumerate() {
                let i = (t0 + k) * blocks + b;
                let x = broadcasts(aq.add(i * GROUP));
                let m = |v: usize| {
                    let p = _mm256_maddubs_epi16(wabs[v], _mm256_sign_epi8(x(v), wv[v]));
                    _mm256_madd_epi16(p, ones)
                };
                let s01 = _mm256_add_epi32(m(0), m(1));
                let s23 = _mm256_add_epi32(m(2), m(3));
                let s45 = _mm256_add_epi32(m(4), m(5));
                let s67 = _mm256_add_epi32(m(6), m(7));
                let isum = _mm256_add_epi32(_mm256_add_epi32(s01, s23), _mm256_add_epi32(s45, s67));
                let s = _mm256_mul_ps(d, _mm256_set1_ps(*asc.add(i)));
                *a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), s, *a);
            }
        })
    }
}

/// Q4_K: per 32-column sub-block, `Σ level·q · (d·sc · xs) − dmin·m · (xs·Σq)`.
///
/// # Safety
/// As [`matmul_packed`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4k(
    w: &WeightMatrix,
    groups: std::ops::Range<usize>,
    acts: &QuantizedActs,
    n: usize,
    y: *mut f32,
) {
    let act_groups = w.cols / GROUP;
    let (aq, asc, as16) = (acts.q.as_ptr(), acts.scale.as_ptr(), acts.sum16.as_ptr());
    // SAFETY: every read below is in group block p or in activation row t < n, its 8 groups
    // of block b.
    unsafe {
        sweep(w, groups, n, y, |p, b, acc, t0| {
            for sub in 0..8 {
                let scales = q4k_scales(p, sub);
                let wv = nibbles(p.add(Q4K_NIBBLES + 128 * sub));
                for (k, a) in acc.iter_mut().enumerate() {
                    let i = (t0 + k) * act_groups + 8 * b + sub;
                    let xs = _mm256_set1_ps(*asc.add(i));
                    let xsum = _mm256_set1_ps(*as16.add(2 * i) + *as16.add(2 * i + 1));
                    *a = q4k_row(&wv, scales, broadcasts(aq.add(i * GROUP)), xs, xsum, *a);
                }
            }
        })
    }
}

/// Q6_K: per 16-column part, `Σ level·q · (d·sc · xs) − 32·d·sc · (xs·Σq)`.
///
/// # Safety
/// As [`matmul_packed`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6k(
    w: &WeightMatrix,
    groups: std::ops::Range<usize>,
    acts: &QuantizedActs,
    n: usize,
    y: *mut f32,
) {
    let act_groups = w.cols / GROUP;
    let minus32 = _mm256_set1_ps(-32.0);
    let (aq, asc, as16) = (acts.q.as_ptr(), acts.scale.as_ptr(), acts.sum16.as_ptr());
    // SAFETY: every read below is in group block p or in activation row t < n, its 8 groups
    // of block b.
    unsafe {
        sweep(w, groups, n, y, |p, b, acc, t0| {
            let d = _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i));
            for sub in 0..8 {
                let scales = q6k_scales(p, d, minus32, sub);
                let wv = q6k_levels(p, sub);
                for (k, a) in acc.iter_mut().enumerate() {
                    let i = (t0 + k) * act_groups + 8 * b + sub;
                    let xs = _mm256_set1_ps(*asc.add(i));
                    let sums = (
                        _mm256_set1_ps(*as16.add(2 * i)),
                        _mm256_set1_ps(*as16.add(2 * i + 1)),
                    );
                    *a = q6k_row(&wv, scales, broadcasts(aq.add(i * GROUP)), xs, sums, *a);
                }
            }
        })
    }
}

/// Q4_K sub-block `sub` of the group block at `p`: its 8 rows' scales (d·sc) and mins
/// (dmin·m).
///
/// # Safety
/// Requires AVX2; `p` is one packed Q4_K group block.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4k_scales(p: *const u8, sub: usize) -> (__m256, __m256) {
    // SAFETY: the scales, mins and their byte tables lie in the group block (caller contract).
    unsafe {
        let d = _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i));
        let dmin = _mm256_cvtph_ps(_mm_loadu_si128(p.add(16) as *const __m128i));
        let widen = |at: usize| {
            let bytes = _mm_loadl_epi64(p.add(at) as *const __m128i);
            _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes))
        };
        (
            _mm256_mul_ps(d, widen(Q4K_SCALES + ROWS * sub)),
            _mm256_mul_ps(dmin, widen(Q4K_MINS + ROWS * sub)),
        )
    }
}

/// Q6_K sub-block `sub` of the group block at `p` (scale `d`): the scales of its two
/// 16-column halves and their level-offset factors (−32 · scale).
///
/// # Safety
/// Requires AVX2; `p` is one packed Q6_K group block.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6k_scales(
    p: *const u8,
    d: __m256,
    minus32: __m256,
    sub: usize,
) -> (__m256, __m256, __m256, __m256) {
    let scale = |part: usize| {
        // SAFETY: the 8 scale bytes of `part` lie in the group block (caller contract).
        let bytes = unsafe { _mm_loadl_epi64(p.add(Q6K_SCALES + ROWS * part) as *const __m128i) };
        _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes)))
    };
    let (lo, hi) = (scale(2 * sub), scale(2 * sub + 1));
    (
        lo,
        hi,
        _mm256_mul_ps(minus32, lo),
        _mm256_mul_ps(minus32, hi),
    )
}

/// The 8 level vectors (< 64) of Q6_K sub-block `sub` of the group block at `p`.
///
/// # Safety
/// Requires AVX2; `p` is one packed Q6_K group block.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6k_levels(p: *const u8, sub: usize) -> [__m256i; 8] {
    let pair = _mm256_set1_epi8(0x30);
    // SAFETY: the sub-block's nibbles and high bits lie in the group block (caller contract).
    unsafe {
        let mut wv = nibbles(p.add(Q6K_NIBBLES + 128 * sub));
        let high =
            |h: usize| _mm256_loadu_si256(p.add(Q6K_HIGH + 64 * sub + 32 * h) as *const __m256i);
        let (h0, h1) = (high(0), high(1));
        // Bits 2e..2e+2 of chunk h moved to bits 4..6 (16-bit shifts by less than 8 never
        // carry into bits 4..6 of the other byte).
        let pairs = [
            _mm256_slli_epi16::<4>(h0),
            _mm256_slli_epi16::<2>(h0),
            h0,
            _mm256_srli_epi16::<2>(h0),
            _mm256_slli_epi16::<4>(h1),
            _mm256_slli_epi16::<2>(h1),
            h1,
            _mm256_srli_epi16::<2>(h1),
        ];
        for (v, h) in wv.iter_mut().zip(pairs) {
            *v = _mm256_or_si256(*v, _mm256_and_si256(h, pair));
        }
        wv
    }
}

/// Moves the levels of 8 rows' ggml blocks (Q4_0/Q5_0 nibbles, Q8_0 bytes) into their packed
/// group block `dst`: an 8 × 8 (Q8_0) or 8 × 4 (nibbles) transpose of 32-bit words, then for
/// nibbles the regrouping into chunks (chunk k: vectors 2k and 2k + 1, vector v being nibble
/// half v / 4 of word v % 4). Scales and fifth bits are the scalar packer's.
///
/// # Safety
/// Requires AVX2; each block is one ggml block of `ty` (Q4_0, Q5_0 or Q8_0) and `dst` one
/// packed group block.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn pack_levels(ty: GgmlType, blocks: [&[u8]; 8], dst: &mut [u8]) {
    assert!(
        blocks.iter().all(|b| b.len() == ty.block_bytes()) && dst.len() == group_block_bytes(ty),
        "pack_levels shapes"
    );
    let out = dst.as_mut_ptr();
    // SAFETY (all loads and stores): within the blocks and `dst`, whose sizes are asserted.
    unsafe {
        if ty == GgmlType::Q8_0 {
            let r: [__m256i; 8] = std::array::from_fn(|i| {
                _mm256_loadu_si256(blocks[i].as_ptr().add(2) as *const __m256i)
            });
            let t: [__m256i; 8] = std::array::from_fn(|i| {
                let (a, b) = (r[i / 2 * 2], r[i / 2 * 2 + 1]);
                if i % 2 == 0 {
                    _mm256_unpacklo_epi32(a, b)
                } else {
                    _mm256_unpackhi_epi32(a, b)
                }
            });
            // u[4h + j]: word j (lane 0) and j + 4 (lane 1) of rows 4h..4h+4.
            let u: [__m256i; 8] = std::array::from_fn(|i| {
                let (h, j) = (i / 4, i % 4);
                let (a, b) = (t[4 * h + j / 2], t[4 * h + 2 + j / 2]);
                if j % 2 == 0 {
                    _mm256_unpacklo_epi64(a, b)
                } else {
                    _mm256_unpackhi_epi64(a, b)
                }
            });
            for j in 0..4 {
                let lo = _mm256_permute2x128_si256::<0x20>(u[j], u[4 + j]);
                let hi = _mm256_permute2x128_si256::<0x31>(u[j], u[4 + j]);
                _mm256_storeu_si256(out.add(16 + 32 * j) as *mut __m256i, lo);
                _mm256_storeu_si256(out.add(16 + 32 * (j + 4)) as *mut __m256i, hi);
            }
            return;
        }
        let qs_at = if ty == GgmlType::Q5_0 { 6 } else { 2 };
        // Rows r and r + 4 side by side, then a 4 × 4 word transpose per lane: w[m] holds word
        // m of rows 0..8 in order.
        let pair: [__m256i; 4] = std::array::from_fn(|r| {
            let lo = _mm_loadu_si128(blocks[r].as_ptr().add(qs_at) as *const __m128i);
            let hi = _mm_loadu_si128(blocks[r + 4].as_ptr().add(qs_at) as *const __m128i);
            _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(lo), hi)
        });
        let t0 = _mm256_unpacklo_epi32(pair[0], pair[1]);
        let t1 = _mm256_unpackhi_epi32(pair[0], pair[1]);
        let t2 = _mm256_unpacklo_epi32(pair[2], pair[3]);
        let t3 = _mm256_unpackhi_epi32(pair[2], pair[3]);
        let w = [
            _mm256_unpacklo_epi64(t0, t2),
            _mm256_unpackhi_epi64(t0, t2),
            _mm256_unpacklo_epi64(t1, t3),
            _mm256_unpackhi_epi64(t1, t3),
        ];
        let low4 = _mm256_set1_epi8(0xF);
        let high4 = _mm256_set1_epi8(0xF0u8 as i8);
        let low = |v: __m256i| _mm256_and_si256(v, low4);
        let chunks = [
            _mm256_or_si256(low(w[0]), _mm256_slli_epi16::<4>(low(w[1]))),
            _mm256_or_si256(low(w[2]), _mm256_slli_epi16::<4>(low(w[3]))),
            _mm256_or_si256(
                low(_mm256_srli_epi16::<4>(w[0])),
                _mm256_and_si256(w[1], high4),
            ),
            _mm256_or_si256(
                low(_mm256_srli_epi16::<4>(w[2])),
                _mm256_and_si256(w[3], high4),
            ),
        ];
        let at = nibbles_at(ty);
        for (k, c) in chunks.into_iter().enumerate() {
            _mm256_storeu_si256(out.add(at + 32 * k) as *mut __m256i, c);
        }
    }
}
