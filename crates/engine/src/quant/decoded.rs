//! One weight row unpacked for integer dot products: every quantized type becomes 8-bit levels
//! with an f32 scale and offset per 16 elements (`w = scale * q + offset`), and activations
//! become i8 with one scale per 32 (Q8_0-like). One kernel per ISA then serves every block type.
//!
//! Levels are unsigned (0..64) for every type but Q8_0/Q8_1: a signed format's bias (Q5_0's
//! −16, Q6_K's −32) moves into the offset, so the x86 kernel feeds levels straight into
//! `maddubs` (u8 × i8) without the `abs`/`sign` pair that signed levels need.

use super::blocks::{f16_at, q3k_scales, scale_min_k4};
use super::GgmlType;

/// Elements sharing one weight scale/offset.
pub(crate) const SUB: usize = 16;
/// Elements sharing one activation scale.
pub(crate) const GROUP: usize = 32;

/// Whether `ty` is unpacked to i8 levels (else weights are converted to f32).
pub(crate) fn is_integer(ty: GgmlType) -> bool {
    !matches!(
        ty,
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 | GgmlType::Q8K
    )
}

/// Whether `ty` unpacks to signed levels (else unsigned ones with a nonzero offset).
pub(crate) fn is_signed(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::Q8_0 | GgmlType::Q8_1)
}

/// Whether `ty`'s unpacked scales and offsets are equal across each 32 elements and its
/// unsigned levels stay below 32 (the signed types also have one scale per 32).
pub(crate) fn is_per32(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::Q4_0
            | GgmlType::Q4_1
            | GgmlType::Q5_0
            | GgmlType::Q5_1
            | GgmlType::Q8_0
            | GgmlType::Q8_1
            | GgmlType::Q4K
            | GgmlType::Q5K
    )
}

/// A weight row unpacked: `q[i]`, `scale[i / 16]`, `offset[i / 16]`.
pub(crate) struct DecodedRow {
    pub q: Vec<i8>,
    pub scale: Vec<f32>,
    pub offset: Vec<f32>,
    /// Whether levels are signed (Q8_0/Q8_1, no offsets); else unsigned, with offsets.
    pub signed: bool,
    /// Whether scales and offsets hold per 32 elements and unsigned levels are below 32
    /// ([`is_per32`]).
    pub per32: bool,
}

impl DecodedRow {
    /// Scratch for rows of `cols` elements.
    pub fn new(cols: usize) -> Self {
        Self {
            q: vec![0; cols],
            scale: vec![0.0; cols / SUB],
            offset: vec![0.0; cols / SUB],
            signed: false,
            per32: false,
        }
    }

    /// Unpacks one row of an integer type (see [`is_integer`]).
    #[inline(always)]
    pub fn decode(&mut self, ty: GgmlType, src: &[u8]) {
        let blocks = src.chunks_exact(ty.block_bytes());
        let per = ty.block_elems();
        let subs = per / SUB;
        for (i, b) in blocks.enumerate() {
            let q = &mut self.q[i * per..(i + 1) * per];
            let sc = &mut self.scale[i * subs..(i + 1) * subs];
            let off = &mut self.offset[i * subs..(i + 1) * subs];
            decode_block(ty, b, q, sc, off);
        }
    }
}

// Index arithmetic mirrors the block layouts described in blocks.rs.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn decode_block(ty: GgmlType, b: &[u8], q: &mut [i8], sc: &mut [f32], off: &mut [f32]) {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q4_1 => {
            let (d, m, qs) = if ty == GgmlType::Q4_0 {
                (f16_at(b, 0), 0.0, &b[2..18])
            } else {
                (f16_at(b, 0), f16_at(b, 2), &b[4..20])
            };
            for j in 0..16 {
                q[j] = (qs[j] & 0xF) as i8;
                q[j + 16] = (qs[j] >> 4) as i8;
            }
            sc.fill(d);
            off.fill(if ty == GgmlType::Q4_0 { -8.0 * d } else { m });
        }
        GgmlType::Q5_0 | GgmlType::Q5_1 => {
            let (d, m, at) = if ty == GgmlType::Q5_0 {
                (f16_at(b, 0), 0.0, 2)
            } else {
                (f16_at(b, 0), f16_at(b, 2), 4)
            };
            let qh = u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
            let qs = &b[at + 4..at + 20];
            for j in 0..16 {
                let h0 = (((qh >> j) & 1) << 4) as u8;
                let h1 = (((qh >> (j + 16)) & 1) << 4) as u8;
                q[j] = ((qs[j] & 0xF) | h0) as i8;
                q[j + 16] = ((qs[j] >> 4) | h1) as i8;
            }
            sc.fill(d);
            off.fill(if ty == GgmlType::Q5_0 { -16.0 * d } else { m });
        }
        GgmlType::Q8_0 | GgmlType::Q8_1 => {
            let at = if ty == GgmlType::Q8_0 { 2 } else { 4 };
            for (o, &v) in q.iter_mut().zip(&b[at..at + 32]) {
                *o = v as i8;
            }
            sc.fill(f16_at(b, 0));
            off.fill(0.0);
        }
        GgmlType::Q2K => {
            let (scales, qs) = (&b[0..16], &b[16..80]);
            let (d, min) = (f16_at(b, 80), f16_at(b, 82));
            for i in 0..256 {
                q[i] = ((qs[32 * (i / 128) + i % 32] >> (2 * ((i % 128) / 32))) & 3) as i8;
            }
            for g in 0..16 {
                sc[g] = d * (scales[g] & 0xF) as f32;
                off[g] = -(min * (scales[g] >> 4) as f32);
            }
        }
        GgmlType::Q3K => {
            let (hmask, qs) = (&b[0..32], &b[32..96]);
            let s = q3k_scales(&b[96..108]);
            let d = f16_at(b, 108);
            for i in 0..256 {
                let low = ((qs[32 * (i / 128) + i % 32] >> (2 * ((i % 128) / 32))) & 3) as i8;
                let high = (hmask[i % 32] >> (i / 32)) & 1;
                q[i] = low + 4 * high as i8;
            }
            for g in 0..16 {
                sc[g] = d * s[g] as f32;
                off[g] = -4.0 * sc[g];
            }
        }
        GgmlType::Q4K | GgmlType::Q5K => {
            let (d, min) = (f16_at(b, 0), f16_at(b, 2));
            let scales = &b[4..16];
            let (qh, qs) = if ty == GgmlType::Q4K {
                (None, &b[16..144])
            } else {
                (Some(&b[16..48]), &b[48..176])
            };
            for c in 0..4 {
                for l in 0..32 {
                    let v = qs[32 * c + l];
                    let (mut lo, mut hi) = (v & 0xF, v >> 4);
                    if let Some(qh) = qh {
                        lo |= ((qh[l] >> (2 * c)) & 1) << 4;
                        hi |= ((qh[l] >> (2 * c + 1)) & 1) << 4;
                    }
                    q[64 * c + l] = lo as i8;
                    q[64 * c + 32 + l] = hi as i8;
                }
            }
            for j in 0..8 {
                let (s, m) = scale_min_k4(j, scales);
                sc[2 * j] = d * s as f32;
                sc[2 * j + 1] = sc[2 * j];
                off[2 * j] = -(min * m as f32);
                off[2 * j + 1] = off[2 * j];
            }
        }
        GgmlType::Q6K => {
            let (ql, qh, s) = (&b[0..128], &b[128..192], &b[192..208]);
            let d = f16_at(b, 208);
            for i in 0..256 {
                let (h, r) = (i / 128, i % 128);
                let (quarter, l) = (r / 32, r % 32);
                let low = (ql[64 * h + l + 32 * (quarter % 2)] >> (4 * (quarter / 2))) & 0xF;
                let high = (qh[32 * h + l] >> (2 * quarter)) & 3;
                q[i] = (low | (high << 4)) as i8;
            }
            for g in 0..16 {
                sc[g] = d * (s[g] as i8) as f32;
                off[g] = -32.0 * sc[g];
            }
        }
        other => unreachable!("{} is not an integer-decoded type", other.name()),
    }
}

/// Activation rows quantized to i8 with one scale per 32, plus `scale * sum(q)` per 16 (the
/// factor weight offsets multiply).
pub(crate) struct QuantizedActs {
    pub q: Vec<i8>,
    pub scale: Vec<f32>,
    pub sum16: Vec<f32>,
}

impl QuantizedActs {
    /// Quantizes activation rows (their length a multiple of 32), rounding like ggml's Q8_0
    /// reference (half away from zero).
    pub fn new(x: &[f32]) -> Self {
        let mut q = vec![0i8; x.len()];
        let mut scale = vec![0f32; x.len() / GROUP];
        let mut sum16 = vec![0f32; x.len() / SUB];
        for (g, (xs, qs)) in x
            .chunks_exact(GROUP)
            .zip(q.chunks_exact_mut(GROUP))
            .enumerate()
        {
            let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            for (o, &v) in qs.iter_mut().zip(xs) {
                *o = (v * id).round() as i8;
            }
            scale[g] = d;
            for h in 0..2 {
                let s: i32 = qs[16 * h..16 * h + 16].iter().map(|&v| v as i32).sum();
                sum16[2 * g + h] = d * s as f32;
            }
        }
        Self { q, scale, sum16 }
    }

    /// [`Self::new`] with the AVX2 quantizer (same rounding).
    ///
    /// # Safety
    /// Requires AVX2, FMA and F16C (`x86::available`).
    #[cfg(target_arch = "x86_64")]
    pub unsafe fn new_avx2(x: &[f32]) -> Self {
        let mut q = vec![0i8; x.len()];
        let mut scale = vec![0f32; x.len() / GROUP];
        let mut sum16 = vec![0f32; x.len() / SUB];
        // SAFETY: the caller guarantees the CPU features; the buffers have the required sizes.
        unsafe { super::x86::quantize_acts(x, &mut q, &mut scale, &mut sum16) };
        Self { q, scale, sum16 }
    }
}

/// Activation rows regrouped for kernels that broadcast 4 weight levels against the same 4
/// elements of [`TILE`] rows at once (so each 32-bit lane accumulates one activation row and
/// no horizontal sums are needed). Rows are taken [`TILE`] at a time; a last partial tile is
/// padded with zero rows.
pub(crate) struct TiledActs {
    /// `[tile][col / 4][row][4]`: 32 bytes per group of 4 columns.
    pub q: Vec<i8>,
    /// `|q|` in the same layout (kernels for signed weights multiply `|x|` by `w·sign(x)`),
    /// or empty when not asked for.
    pub qabs: Vec<i8>,
    /// `[tile][col / 32][row]`: the activation scales.
    pub scale: Vec<f32>,
    /// `[tile][col / 16][row]`: `scale · Σq` per 16.
    pub sum16: Vec<f32>,
    /// `[tile][col / 32][row]`: `scale · Σq` per 32.
    pub sum32: Vec<f32>,
}

/// Activation rows per tile of [`TiledActs`] (one per 32-bit lane of a 256-bit register).
pub(crate) const TILE: usize = 8;

impl TiledActs {
    /// Regroups `n` quantized rows of `cols` elements (a multiple of 32); `with_abs` also
    /// fills [`Self::qabs`].
    pub fn new(acts: &QuantizedActs, n: usize, cols: usize, with_abs: bool) -> Self {
        #[cfg(target_arch = "x86_64")]
        let simd = super::x86::available();
        #[cfg(not(target_arch = "x86_64"))]
        let simd = false;
        Self::build(acts, n, cols, with_abs, simd)
    }

    /// [`Self::new`], interleaving with AVX2 when `simd` (which the CPU must then have).
    fn build(acts: &QuantizedActs, n: usize, cols: usize, with_abs: bool, simd: bool) -> Self {
        let tiles = n.div_ceil(TILE);
        let (groups, subs) = (cols / GROUP, cols / SUB);
        let mut q = vec![0i8; tiles * TILE * cols];
        let mut scale = vec![0f32; tiles * TILE * groups];
        let mut sum16 = vec![0f32; tiles * TILE * subs];
        let mut sum32 = vec![0f32; tiles * TILE * groups];
        for tile in 0..tiles {
            let rows = tile * TILE..n.min((tile + 1) * TILE);
            let dst = &mut q[tile * TILE * cols..(tile + 1) * TILE * cols];
            #[cfg(not(target_arch = "x86_64"))]
            let _ = simd; // no SIMD interleave off x86-64
            #[cfg(target_arch = "x86_64")]
            if simd {
                // SAFETY: the caller vouches for AVX2; the tile's rows exist in `acts` and
                // `dst` holds TILE rows of `cols` (a multiple of 32).
                unsafe { super::x86::interleave_tile(&acts.q, rows, cols, dst) };
                continue;
            }
            for t in rows {
                let row = &acts.q[t * cols..(t + 1) * cols];
                let k = t % TILE;
                for (c, four) in row.chunks_exact(4).enumerate() {
                    dst[32 * c + 4 * k..32 * c + 4 * k + 4].copy_from_slice(four);
                }
            }
        }
        for t in 0..n {
            let (tile, k) = (t / TILE, t % TILE);
            for g in 0..groups {
                let at = (tile * groups + g) * TILE + k;
                scale[at] = acts.scale[t * groups + g];
                let (s0, s1) = (
                    acts.sum16[t * subs + 2 * g],
                    acts.sum16[t * subs + 2 * g + 1],
                );
                sum32[at] = s0 + s1;
                sum16[(tile * subs + 2 * g) * TILE + k] = s0;
                sum16[(tile * subs + 2 * g + 1) * TILE + k] = s1;
            }
        }
        // |x| ≤ 127: activations are rounded from |x|/scale ≤ 127, never -128.
        let qabs = if with_abs {
            q.iter().map(|v| v.wrapping_abs()).collect()
        } else {
            Vec::new()
        };
        Self {
            q,
            qabs,
            scale,
            sum16,
            sum32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tile layout holds exactly `q[t][c]` at `[t / 8][c / 4][t % 8][c % 4]` (zero for
    /// padding rows), scales and sums at `[t / 8][group][t % 8]`: with 11 rows (one whole and
    /// one partial tile) and 96 columns, scalar and (where present) AVX2 interleaving.
    #[test]
    fn tiles_hold_the_rows_in_their_layout() {
        #[cfg(target_arch = "x86_64")]
        if crate::quant::x86::available() {
            tiles_layout(true);
        }
        tiles_layout(false);
    }

    fn tiles_layout(simd: bool) {
        let (n, cols) = (11, 96);
        let x: Vec<f32> = (0..n * cols)
            .map(|i| ((i * 7919 % 1013) as f32 - 506.0) * 0.01)
            .collect();
        let a = QuantizedActs::new(&x);
        let t = TiledActs::build(&a, n, cols, true, simd);
        assert_eq!(t.q.len(), 2 * TILE * cols);
        for row in 0..2 * TILE {
            for c in 0..cols {
                let at = (row / TILE) * TILE * cols + (c / 4) * 32 + (row % TILE) * 4 + c % 4;
                let want = if row < n { a.q[row * cols + c] } else { 0 };
                assert_eq!(t.q[at], want, "row {row} col {c}");
                assert_eq!(t.qabs[at], want.wrapping_abs(), "row {row} col {c}");
            }
            for g in 0..cols / GROUP {
                let at = ((row / TILE) * (cols / GROUP) + g) * TILE + row % TILE;
                let (scale, sum) = if row < n {
                    let s = &a.sum16[row * cols / SUB + 2 * g..];
                    (a.scale[row * cols / GROUP + g], s[0] + s[1])
                } else {
                    (0.0, 0.0)
                };
                assert_eq!(
                    (t.scale[at], t.sum32[at]),
                    (scale, sum),
                    "row {row} group {g}"
                );
            }
        }
    }

    /// The AVX2 quantizer equals the scalar one, exact halves included.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn avx2_activation_quantizer_matches_scalar() {
        if !crate::quant::x86::available() {
            return;
        }
        let x: Vec<f32> = (0..32 * 37)
            .map(|i| ((i * 7919 % 1013) as f32 - 506.3) * if i % 97 == 0 { 9.1 } else { 0.013 })
            .chain(std::iter::repeat_n(0.0, 32))
            .chain((0..32).map(|i| (i as f32 - 15.0) * 0.5 * 127.0 / 15.5))
            .collect();
        let a = QuantizedActs::new(&x);
        // SAFETY: the features were checked above.
        let b = unsafe { QuantizedActs::new_avx2(&x) };
        assert_eq!(a.q, b.q);
        assert_eq!(a.scale, b.scale);
        for (s, t) in a.sum16.iter().zip(&b.sum16) {
            assert!((s - t).abs() <= 1e-6 * (1.0 + s.abs()), "{s} vs {t}");
        }
    }
}
