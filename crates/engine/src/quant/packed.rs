//! Weight matrices repacked at load so that one 256-bit register holds 4 columns of 8 weight
//! rows ("lanes = weight rows"): the AVX2 kernel (`x86::packed`) broadcasts 4 activation bytes
//! (decode batches store them broadcast once per task) and multiplies them with 8 rows at
//! once, each 32-bit lane summing one weight row, with no horizontal sums and no per-product
//! shuffles. Each block of 8 rows is unpacked once per call and used for every activation row
//! of the batch.
//!
//! The bytes are ggml's, reordered: per group of [`ROWS`] rows, per ggml block (32 columns, 256
//! for Q4_K and Q6_K), [`group_block_bytes`] bytes. Every 32 columns of 8 rows are 8 "vectors" of 32
//! bytes, vector `v` holding columns `4v..4v+4` at byte `4r + c` (row `r`, column `4v + c`).
//! - Q4_0 / Q5_0: `[0, 16)` the 8 rows' f16 scales; Q5_0 only, `[16, 48)` the fifth bits (byte
//!   `4r + c`, bit `v` = the fifth bit of row `r`, column `4v + c`); then 4 chunks of 32 bytes:
//!   chunk `k` holds vector `2k` in its low nibbles and vector `2k + 1` in its high ones.
//!   `w = d · (level − bias)`, bias 8 (Q4_0) or 16 (Q5_0).
//! - Q8_0: the 8 scales, then the 8 vectors of signed levels (`w = d · level`).
//! - Q4_K: the 8 rows' `d` and `dmin` (f16), the 6-bit sub-block scales and mins widened to
//!   bytes (`[sub-block][row]`, 64 bytes each: 32 bytes per 8 rows more than ggml's 12-byte
//!   packing, so that the kernel widens them with one instruction), then per 32-column
//!   sub-block 4 nibble chunks as for Q4_0. `w = d · sc · level − dmin · m`.
//! - Q6_K: the 8 rows' `d` (f16), the 16 signed scales per row (`[part of 16][row]`), per
//!   32-column sub-block 4 chunks of the low nibbles as for Q4_0, then per sub-block 2 chunks
//!   of the high 2 bits: chunk `h`, bits `2e..2e+2` of byte `4r + c` belong to vector `4h + e`.
//!   `w = d · sc · (level − 32)`, the scale of column `j` being part `j / 16`'s.

use super::blocks::{f16_at, scale_min_k4};
use super::decoded::{QuantizedActs, GROUP};
use super::{GgmlType, WeightMatrix};

/// Weight rows interleaved per group.
pub(crate) const ROWS: usize = 8;

/// Whether a `rows × _` matrix of `ty` can be packed.
pub(crate) fn packable(ty: GgmlType, rows: usize) -> bool {
    matches!(
        ty,
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 | GgmlType::Q4K | GgmlType::Q6K
    ) && rows > 0
        && rows.is_multiple_of(ROWS)
}

/// Bytes of one ggml block of all 8 rows of a group, packed.
pub(crate) fn group_block_bytes(ty: GgmlType) -> usize {
    ROWS * ty.block_bytes() + if ty == GgmlType::Q4K { Q4K_WIDE } else { 0 }
}

/// Bytes the widened Q4_K scales and mins add per group block (128 instead of 8 × 12).
const Q4K_WIDE: usize = 32;
/// Where a packed Q4_K group block's sub-block scales, mins and nibbles start.
pub(crate) const Q4K_SCALES: usize = 32;
pub(crate) const Q4K_MINS: usize = 96;
pub(crate) const Q4K_NIBBLES: usize = 160;
/// Where a packed Q6_K group block's scales, low nibbles and high bit pairs start.
pub(crate) const Q6K_SCALES: usize = 16;
pub(crate) const Q6K_NIBBLES: usize = 144;
pub(crate) const Q6K_HIGH: usize = 1168;

/// The level offset of Q4_0/Q5_0 (`w = d · (level − bias)`); 0 for the others.
pub(crate) fn bias(ty: GgmlType) -> i32 {
    match ty {
        GgmlType::Q5_0 => 16,
        GgmlType::Q4_0 => 8,
        _ => 0,
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

/// Where the nibble chunks start in a Q4_0/Q5_0 group block.
pub(crate) fn nibbles_at(ty: GgmlType) -> usize {
    if ty == GgmlType::Q5_0 {
        48
    } else {
        16
    }
}

/// Bytes of a packed `rows × cols` matrix of `ty`.
pub(crate) fn packed_len(ty: GgmlType, rows: usize, cols: usize) -> usize {
    rows / ROWS * (cols / ty.block_elems()) * group_block_bytes(ty)
}

/// Repacks `rows` ggml rows of `cols` elements of `ty` (see [`packable`]) into `out`
/// ([`packed_len`] bytes, every one of them written), moving the level vectors of Q4_0, Q5_0
/// and Q8_0 with AVX2 where the CPU has it.
pub(crate) fn pack_into(ty: GgmlType, rows: usize, cols: usize, src: &[u8], out: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    let simd = super::x86::available();
    #[cfg(not(target_arch = "x86_64"))]
    let simd = false;
    pack_with(simd, ty, rows, cols, src, out)
}

/// [`pack_into`], with the AVX2 level moves when `simd` (which the CPU must then have).
fn pack_with(simd: bool, ty: GgmlType, rows: usize, cols: usize, src: &[u8], out: &mut [u8]) {
    let bb = ty.block_bytes();
    let blocks = cols / ty.block_elems();
    let row_bytes = blocks * bb;
    assert!(
        packable(ty, rows)
            && src.len() == rows * row_bytes
            && out.len() == packed_len(ty, rows, cols),
        "pack shape"
    );
    let simd = simd && matches!(ty, GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0);
    let gbb = group_block_bytes(ty);
    for (gi, group) in out.chunks_exact_mut(blocks * gbb).enumerate() {
        for (b, dst) in group.chunks_exact_mut(gbb).enumerate() {
            let block = |r: usize| &src[(ROWS * gi + r) * row_bytes + b * bb..][..bb];
            for r in 0..ROWS {
                let s = block(r);
                match ty {
                    GgmlType::Q8_0 => {
                        dst[2 * r..2 * r + 2].copy_from_slice(&s[..2]);
                        for v in (0..8).filter(|_| !simd) {
                            dst[16 + 32 * v + 4 * r..][..4].copy_from_slice(&s[2 + 4 * v..][..4]);
                        }
                    }
                    GgmlType::Q4K => pack_q4k_row(dst, r, s),
                    GgmlType::Q6K => pack_q6k_row(dst, r, s),
                    _ => pack_q4_q5_row(ty, dst, r, s, !simd),
                }
            }
            #[cfg(target_arch = "x86_64")]
            if simd {
                // SAFETY: `simd` implies the CPU has AVX2; the 8 blocks and `dst` are whole
                // ggml and group blocks of `ty`.
                unsafe { super::x86::packed::pack_levels(ty, std::array::from_fn(block), dst) };
            }
        }
    }
}

/// Row `r`'s share of a Q4_0/Q5_0 group block from its ggml block `s` (the nibbles only when
/// `nibbles`).
fn pack_q4_q5_row(ty: GgmlType, dst: &mut [u8], r: usize, s: &[u8], nibbles: bool) {
    dst[2 * r..2 * r + 2].copy_from_slice(&s[..2]);
    let (qh, qs) = if ty == GgmlType::Q5_0 {
        (u32::from_le_bytes([s[2], s[3], s[4], s[5]]), &s[6..22])
    } else {
        (0, &s[2..18])
    };
    // Row r's 4 bytes of chunk k: nibbles of columns 8k..8k+4 (vector 2k) low, 8k+4..8k+8
    // (2k+1) high. Vector v's nibbles are the low (v < 4) or high nibbles of qs[4(v % 4)..][..4].
    let vector = |v: usize| (word(qs, v % 4) >> (4 * (v / 4))) & 0x0F0F_0F0F;
    let at = nibbles_at(ty);
    for k in (0..4).filter(|_| nibbles) {
        let bytes = vector(2 * k) | vector(2 * k + 1) << 4;
        dst[at + 32 * k + 4 * r..][..4].copy_from_slice(&bytes.to_le_bytes());
    }
    if ty == GgmlType::Q5_0 {
        // Bit 4v + c of qh goes to bit v of byte c: spread each nibble v of qh (columns
        // 4v..4v+4) to bit 0 of bytes 0..4, shifted by v.
        let fifth = (0..8).fold(0u32, |m, v| {
            m | SPREAD[((qh >> (4 * v)) & 0xF) as usize] << v
        });
        dst[16 + 4 * r..][..4].copy_from_slice(&fifth.to_le_bytes());
    }
}

/// Row `r`'s share of a Q4_K group block from its ggml block `s` (`d`, `dmin`, 12 bytes of
/// 6-bit scales and mins, then 128 bytes: columns 64c..64c+32 in the low nibbles of
/// `qs[32c..32c+32]`, the next 32 in their high nibbles).
fn pack_q4k_row(dst: &mut [u8], r: usize, s: &[u8]) {
    dst[2 * r..2 * r + 2].copy_from_slice(&s[..2]);
    dst[16 + 2 * r..16 + 2 * r + 2].copy_from_slice(&s[2..4]);
    for j in 0..8 {
        let (sc, m) = scale_min_k4(j, &s[4..16]);
        dst[Q4K_SCALES + ROWS * j + r] = sc;
        dst[Q4K_MINS + ROWS * j + r] = m;
        // Sub-block j's nibbles: qs[32(j / 2)..][..32] shifted by 4(j % 2).
        put_nibble_chunks(
            &mut dst[Q4K_NIBBLES + 128 * j..][..128],
            r,
            &s[16 + 32 * (j / 2)..][..32],
            4 * (j % 2),
        );
    }
}

/// Word `m` (bytes `4m..4m+4`) of `b`, little-endian.
fn word(b: &[u8], m: usize) -> u32 {
    u32::from_le_bytes([b[4 * m], b[4 * m + 1], b[4 * m + 2], b[4 * m + 3]])
}

/// Row `r`'s 4 bytes of each of the 4 nibble chunks of a 32-column sub-block whose column `l`
/// is the nibble `(bytes[l] >> shift) & 0xF` (chunk k: vector 2k low, 2k + 1 high; vector v is
/// word v of `bytes`).
fn put_nibble_chunks(chunks: &mut [u8], r: usize, bytes: &[u8], shift: usize) {
    let vector = |v: usize| (word(bytes, v) >> shift) & 0x0F0F_0F0F;
    for k in 0..4 {
        let packed = vector(2 * k) | vector(2 * k + 1) << 4;
        chunks[32 * k + 4 * r..][..4].copy_from_slice(&packed.to_le_bytes());
    }
}

/// Row `r`'s share of a Q6_K group block from its ggml block `s` (`ql[128]`, `qh[64]`, 16
/// scales, `d`): column `128h + 32q + l` has its low 4 bits in `ql[64h + 32(q % 2) + l]` (the
/// high nibble when q ≥ 2) and its 2 high bits at bit `2q` of `qh[32h + l]`.
fn pack_q6k_row(dst: &mut [u8], r: usize, s: &[u8]) {
    dst[2 * r..2 * r + 2].copy_from_slice(&s[208..210]);
    for part in 0..16 {
        dst[Q6K_SCALES + ROWS * part + r] = s[192 + part];
    }
    let (ql, qh) = (&s[..128], &s[128..192]);
    for sub in 0..8 {
        // Sub-block (h, q): low nibbles ql[64h + 32(q % 2)..][..32] >> 4(q / 2), high pairs
        // qh[32h..][..32] >> 2q.
        let (h, q) = (sub / 4, sub % 4);
        let low = &ql[64 * h + 32 * (q % 2)..][..32];
        put_nibble_chunks(
            &mut dst[Q6K_NIBBLES + 128 * sub..][..128],
            r,
            low,
            4 * (q / 2),
        );
        let high = &qh[32 * h..][..32];
        for hh in 0..2 {
            let packed = (0..4).fold(0u32, |m, e| {
                m | ((word(high, 4 * hh + e) >> (2 * q)) & 0x0303_0303) << (2 * e)
            });
            dst[Q6K_HIGH + 64 * sub + 32 * hh + 4 * r..][..4]
                .copy_from_slice(&packed.to_le_bytes());
        }
    }
}

/// The level of row `r` (within the group), column `j` (within the ggml block) of a group
/// block (signed for Q8_0).
fn level(ty: GgmlType, gb: &[u8], r: usize, j: usize) -> i32 {
    let (sub, j) = (j / 32, j % 32);
    let (v, c) = (j / 4, j % 4);
    let i = 4 * r + c;
    let nibble = |at: usize| ((gb[at + 32 * (v / 2) + i] >> (4 * (v % 2))) & 0xF) as i32;
    match ty {
        GgmlType::Q8_0 => gb[16 + 32 * v + i] as i8 as i32,
        GgmlType::Q4K => nibble(Q4K_NIBBLES + 128 * sub),
        GgmlType::Q6K => {
            let pair = (gb[Q6K_HIGH + 64 * sub + 32 * (v / 4) + i] >> (2 * (v % 4))) & 3;
            nibble(Q6K_NIBBLES + 128 * sub) | (pair as i32) << 4
        }
        GgmlType::Q5_0 => nibble(nibbles_at(ty)) | (((gb[16 + i] >> v) & 1) << 4) as i32,
        _ => nibble(nibbles_at(ty)),
    }
}

/// Row `r` of a packed matrix as f32, with ggml's arithmetic (equal to `dequantize_row` of the
/// unpacked row): for tied embeddings, whose table is packed for the output projection and
/// still looked up by token.
pub(crate) fn dequantize_row(w: &WeightMatrix, r: usize, out: &mut [f32]) {
    let (per, gbb) = (w.ty.block_elems(), group_block_bytes(w.ty));
    let blocks = w.cols / per;
    let (g, rr) = (r / ROWS, r % ROWS);
    assert!(r < w.rows && out.len() == w.cols, "packed row shape");
    let group = &w.data[g * blocks * gbb..(g + 1) * blocks * gbb];
    for (gb, out) in group.chunks_exact(gbb).zip(out.chunks_exact_mut(per)) {
        let d = f16_at(gb, 2 * rr);
        for (j, o) in out.iter_mut().enumerate() {
            let level = level(w.ty, gb, rr, j);
            *o = match w.ty {
                GgmlType::Q6K => {
                    let sc = gb[Q6K_SCALES + ROWS * (j / 16) + rr] as i8 as f32;
                    d * sc * (level - 32) as f32
                }
                GgmlType::Q4K => {
                    let sub = j / GROUP;
                    let sc = d * gb[Q4K_SCALES + ROWS * sub + rr] as f32;
                    let m = f16_at(gb, 16 + 2 * rr) * gb[Q4K_MINS + ROWS * sub + rr] as f32;
                    sc * level as f32 - m
                }
                _ => d * (level - bias(w.ty)) as f32,
            };
        }
    }
}

/// `bias · Σq` of every 32 columns of every activation row (`[t][block]`): the level offset's
/// share of each block's integer sum, which the kernels subtract. Empty for types without a
/// level offset.
pub(crate) fn act_bias(ty: GgmlType, acts: &QuantizedActs, n: usize, cols: usize) -> Vec<i32> {
    let bias = bias(ty);
    if bias == 0 {
        return Vec::new();
    }
    acts.q[..n * cols]
        .chunks_exact(GROUP)
        .map(|g| bias * g.iter().map(|&v| v as i32).sum::<i32>())
        .collect()
}

/// The portable kernel for packed matrices, with the same arithmetic as the AVX2 one: for the
/// groups in `groups` and every activation row `t < n`, per 32 columns (`q` the activation
/// levels, `xs` their scale), Q4_0/Q5_0/Q8_0 add `(Σ level·q − bias·Σq) · (d · xs)`, Q4_K
/// adds `Σ level·q · (d·sc · xs) − dmin·m · xs·Σq`, and Q6_K, per 16 columns,
/// `Σ level·q · (d·sc · xs) − 32·d·sc · xs·Σq`.
pub(crate) fn matmul_scalar(
    w: &WeightMatrix,
    groups: std::ops::Range<usize>,
    acts: &QuantizedActs,
    xbias: &[i32],
    n: usize,
    store: impl Fn(usize, usize, f32),
) {
    let (per, gbb) = (w.ty.block_elems(), group_block_bytes(w.ty));
    let blocks = w.cols / per;
    let act_groups = w.cols / GROUP;
    for g in groups {
        let group = &w.data[g * blocks * gbb..(g + 1) * blocks * gbb];
        for t in 0..n {
            let mut acc = [0f32; ROWS];
            for (b, gb) in group.chunks_exact(gbb).enumerate() {
                for sub in 0..per / GROUP {
                    let a = t * act_groups + b * per / GROUP + sub;
                    let x = &acts.q[a * GROUP..][..GROUP];
                    let xs = acts.scale[a];
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let dot: i32 = (0..GROUP)
                            .map(|j| level(w.ty, gb, r, GROUP * sub + j) * x[j] as i32)
                            .sum();
                        let d = f16_at(gb, 2 * r);
                        if w.ty == GgmlType::Q6K {
                            // Two parts of 16 columns, each with its own scale.
                            for half in 0..2 {
                                let part = 2 * sub + half;
                                let dot: i32 = (16 * half..16 * half + 16)
                                    .map(|j| level(w.ty, gb, r, GROUP * sub + j) * x[j] as i32)
                                    .sum();
                                let sc = d * gb[Q6K_SCALES + ROWS * part + r] as i8 as f32;
                                *acc = (dot as f32).mul_add(sc * xs, *acc);
                                *acc = (-32.0 * sc).mul_add(acts.sum16[2 * a + half], *acc);
                            }
                        } else if w.ty == GgmlType::Q4K {
                            let sc = d * gb[Q4K_SCALES + ROWS * sub + r] as f32;
                            let m = f16_at(gb, 16 + 2 * r) * gb[Q4K_MINS + ROWS * sub + r] as f32;
                            let xsum = acts.sum16[2 * a] + acts.sum16[2 * a + 1];
                            *acc = (dot as f32).mul_add(sc * xs, *acc);
                            *acc = (-m).mul_add(xsum, *acc);
                        } else {
                            let bias = xbias.get(a).copied().unwrap_or(0);
                            *acc = ((dot - bias) as f32).mul_add(d * xs, *acc);
                        }
                    }
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
    fn packed_rows_dequantize_like_the_ggml_rows() {
        let mut rng = Rng::new(7);
        for ty in [
            GgmlType::Q4_0,
            GgmlType::Q5_0,
            GgmlType::Q8_0,
            GgmlType::Q4K,
            GgmlType::Q6K,
        ] {
            let (rows, cols) = (16, if ty.block_elems() == 256 { 512 } else { 96 });
            let w = random_matrix(ty, rows, cols, &mut rng);
            let p = w.packed_unchecked();
            assert_eq!(
                p.data.len(),
                rows / ROWS * cols / ty.block_elems() * group_block_bytes(ty)
            );
            let (mut want, mut got) = (vec![0f32; cols], vec![f32::NAN; cols]);
            for r in 0..rows {
                dequantize_row(ty, w.row(r), &mut want);
                p.dequantize_row_into(r, &mut got);
                assert_eq!(got, want, "{} row {r}", ty.name());
            }
        }
    }

    /// The AVX2 level moves write the same bytes as the scalar packer.
    #[test]
    fn simd_packing_equals_scalar() {
        #[cfg(target_arch = "x86_64")]
        if crate::quant::x86::available() {
            let mut rng = Rng::new(8);
            for ty in [GgmlType::Q4_0, GgmlType::Q5_0, GgmlType::Q8_0] {
                let (rows, cols) = (24, 96);
                let w = random_matrix(ty, rows, cols, &mut rng);
                let mut a = vec![0u8; packed_len(ty, rows, cols)];
                let mut b = vec![1u8; a.len()];
                pack_with(false, ty, rows, cols, &w.data, &mut a);
                pack_with(true, ty, rows, cols, &w.data, &mut b);
                assert!(a == b, "{}", ty.name());
            }
        }
    }

    #[test]
    fn only_whole_groups_of_supported_types_pack() {
        assert!(packable(GgmlType::Q5_0, 896));
        assert!(packable(GgmlType::Q4_0, 8));
        assert!(packable(GgmlType::Q8_0, 151_936));
        assert!(packable(GgmlType::Q4K, 896));
        assert!(!packable(GgmlType::Q5_0, 12));
        assert!(!packable(GgmlType::Q5_0, 0));
        assert!(packable(GgmlType::Q6K, 896));
        assert!(!packable(GgmlType::Q5K, 896));
    }
}
