//! Block formats of ggml: scalar dequantization (the reference every kernel is tested against)
//! and quantization (for on-load `--quantize` and for activations).
//!
//! Byte layouts, per block (little-endian, `f16` scales unless noted):
//! - Q4_0 `d qs[16]`, Q4_1 `d m qs[16]`, Q5_0 `d qh[4] qs[16]`, Q5_1 `d m qh[4] qs[16]`,
//!   Q8_0 `d qs[32]`, Q8_1 `d s qs[32]`: 32 elements; nibble `j` low/high holds element `j`/`j+16`.
//! - Q2_K `scales[16] qs[64] d dmin`, Q3_K `hmask[32] qs[64] scales[12] d`,
//!   Q4_K `d dmin scales[12] qs[128]`, Q5_K `d dmin scales[12] qh[32] qs[128]`,
//!   Q6_K `ql[128] qh[64] scales[16] d`, Q8_K `d:f32 qs[256] bsums[16]:i16`: 256 elements.
//!
//! The arithmetic order of every dequantizer mirrors ggml's so results are bit-identical.

use super::GgmlType;
use crate::{EngineError, Result};
use half::{bf16, f16};

use super::kquants::{quantize_q4k_block, quantize_q6k_block};

/// Reads the little-endian `f16` at `b[0..2]` as f32.
#[inline]
pub(crate) fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Decodes the packed 6-bit scale and min of sub-block `j` (0..8) of a Q4_K/Q5_K block.
#[inline]
pub(crate) fn scale_min_k4(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// Unpacks the twelve scale bytes of a Q3_K block into sixteen signed 6-bit scales (-32..32).
#[inline]
pub(crate) fn q3k_scales(s: &[u8]) -> [i8; 16] {
    let mut out = [0i8; 16];
    for (j, o) in out.iter_mut().enumerate() {
        // Low four bits: nibble of bytes 0..8; high two bits: 2-bit field of bytes 8..12.
        let low = if j < 8 { s[j] & 0xF } else { s[j - 8] >> 4 };
        let high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
        *o = ((low | (high << 4)) as i8).wrapping_sub(32);
    }
    out
}

/// Dequantizes one row: `src` holds exactly `dst.len()` elements of type `ty`.
///
/// Panics if `src.len()` does not match; callers validate shapes at load time.
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) {
    assert_eq!(
        Some(src.len()),
        ty.row_bytes(dst.len()),
        "row length mismatch for {}",
        ty.name()
    );
    let blocks = src
        .chunks_exact(ty.block_bytes())
        .zip(dst.chunks_exact_mut(ty.block_elems()));
    match ty {
        GgmlType::F32 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *d = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
            }
        }
        GgmlType::F16 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = f16::from_le_bytes([s[0], s[1]]).to_f32();
            }
        }
        GgmlType::BF16 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = bf16::from_le_bytes([s[0], s[1]]).to_f32();
            }
        }
        GgmlType::Q4_0 => blocks.for_each(|(b, y)| dequant_q4_0(b, y)),
        GgmlType::Q4_1 => blocks.for_each(|(b, y)| dequant_q4_1(b, y)),
        GgmlType::Q5_0 => blocks.for_each(|(b, y)| dequant_q5_0(b, y)),
        GgmlType::Q5_1 => blocks.for_each(|(b, y)| dequant_q5_1(b, y)),
        GgmlType::Q8_0 => blocks.for_each(|(b, y)| dequant_q8(f16_at(b, 0), &b[2..], y)),
        GgmlType::Q8_1 => blocks.for_each(|(b, y)| dequant_q8(f16_at(b, 0), &b[4..], y)),
        GgmlType::Q2K => blocks.for_each(|(b, y)| dequant_q2k(b, y)),
        GgmlType::Q3K => blocks.for_each(|(b, y)| dequant_q3k(b, y)),
        GgmlType::Q4K => blocks.for_each(|(b, y)| dequant_q4k(b, y)),
        GgmlType::Q5K => blocks.for_each(|(b, y)| dequant_q5k(b, y)),
        GgmlType::Q6K => blocks.for_each(|(b, y)| dequant_q6k(b, y)),
        GgmlType::Q8K => blocks.for_each(|(b, y)| {
            dequant_q8(f32::from_le_bytes([b[0], b[1], b[2], b[3]]), &b[4..260], y)
        }),
    }
}

fn dequant_q4_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for (j, &q) in b[2..18].iter().enumerate() {
        y[j] = ((q & 0xF) as i32 - 8) as f32 * d;
        y[j + 16] = ((q >> 4) as i32 - 8) as f32 * d;
    }
}

fn dequant_q4_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    for (j, &q) in b[4..20].iter().enumerate() {
        y[j] = (q & 0xF) as f32 * d + m;
        y[j + 16] = (q >> 4) as f32 * d + m;
    }
}

/// The 5th bits of a Q5 block's 32 elements, packed in a little-endian u32.
fn q5_high(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn dequant_q5_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let qh = q5_high(&b[2..6]);
    for (j, &q) in b[6..22].iter().enumerate() {
        let h0 = ((qh >> j) & 1) << 4;
        let h1 = ((qh >> (j + 16)) & 1) << 4;
        y[j] = (((q & 0xF) as u32 | h0) as i32 - 16) as f32 * d;
        y[j + 16] = (((q >> 4) as u32 | h1) as i32 - 16) as f32 * d;
    }
}

fn dequant_q5_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    let qh = q5_high(&b[4..8]);
    for (j, &q) in b[8..24].iter().enumerate() {
        let h0 = ((qh >> j) & 1) << 4;
        let h1 = ((qh >> (j + 16)) & 1) << 4;
        y[j] = ((q & 0xF) as u32 | h0) as f32 * d + m;
        y[j + 16] = ((q >> 4) as u32 | h1) as f32 * d + m;
    }
}

fn dequant_q8(d: f32, qs: &[u8], y: &mut [f32]) {
    for (o, &q) in y.iter_mut().zip(qs) {
        *o = d * (q as i8) as f32;
    }
}

fn dequant_q2k(b: &[u8], y: &mut [f32]) {
    let (scales, qs) = (&b[0..16], &b[16..80]);
    let (d, min) = (f16_at(b, 80), f16_at(b, 82));
    // Element 128*h + 32*k + l sits in bits 2k of qs[32*h + l], with scale 2*(4h+k) + l/16.
    for h in 0..2 {
        for k in 0..4 {
            for half in 0..2 {
                let sc = scales[8 * h + 2 * k + half];
                let (dl, ml) = (d * (sc & 0xF) as f32, min * (sc >> 4) as f32);
                for l in 0..16 {
                    let q = (qs[32 * h + 16 * half + l] >> (2 * k)) & 3;
                    y[128 * h + 32 * k + 16 * half + l] = dl * q as f32 - ml;
                }
            }
        }
    }
}

fn dequant_q3k(b: &[u8], y: &mut [f32]) {
    let (hmask, qs) = (&b[0..32], &b[32..96]);
    let scales = q3k_scales(&b[96..108]);
    let d_all = f16_at(b, 108);
    for h in 0..2 {
        for k in 0..4 {
            let m = 1u8 << (4 * h + k);
            for half in 0..2 {
                let dl = d_all * scales[8 * h + 2 * k + half] as f32;
                for l in 16 * half..16 * half + 16 {
                    let low = ((qs[32 * h + l] >> (2 * k)) & 3) as i32;
                    let q = low - if hmask[l] & m != 0 { 0 } else { 4 };
                    y[128 * h + 32 * k + l] = dl * q as f32;
                }
            }
        }
    }
}

fn dequant_q4k(b: &[u8], y: &mut [f32]) {
    let (d, min) = (f16_at(b, 0), f16_at(b, 2));
    let (scales, qs) = (&b[4..16], &b[16..144]);
    for c in 0..4 {
        let (sc1, m1) = scale_min_k4(2 * c, scales);
        let (sc2, m2) = scale_min_k4(2 * c + 1, scales);
        let (d1, m1) = (d * sc1 as f32, min * m1 as f32);
        let (d2, m2) = (d * sc2 as f32, min * m2 as f32);
        for l in 0..32 {
            let q = qs[32 * c + l];
            y[64 * c + l] = d1 * (q & 0xF) as f32 - m1;
            y[64 * c + 32 + l] = d2 * (q >> 4) as f32 - m2;
        }
    }
}

fn dequant_q5k(b: &[u8], y: &mut [f32]) {
    let (d, min) = (f16_at(b, 0), f16_at(b, 2));
    let (scales, qh, qs) = (&b[4..16], &b[16..48], &b[48..176]);
    for c in 0..4 {
        let (sc1, m1) = scale_min_k4(2 * c, scales);
        let (sc2, m2) = scale_min_k4(2 * c + 1, scales);
        let (d1, m1) = (d * sc1 as f32, min * m1 as f32);
        let (d2, m2) = (d * sc2 as f32, min * m2 as f32);
        let (u1, u2) = (1u8 << (2 * c), 2u8 << (2 * c));
        for l in 0..32 {
            let q = qs[32 * c + l];
            let lo = (q & 0xF) + if qh[l] & u1 != 0 { 16 } else { 0 };
            let hi = (q >> 4) + if qh[l] & u2 != 0 { 16 } else { 0 };
            y[64 * c + l] = d1 * lo as f32 - m1;
            y[64 * c + 32 + l] = d2 * hi as f32 - m2;
        }
    }
}

fn dequant_q6k(b: &[u8], y: &mut [f32]) {
    let (ql, qh, sc) = (&b[0..128], &b[128..192], &b[192..208]);
    let d = f16_at(b, 208);
    for h in 0..2 {
        let (ql, qh, sc, y) = (
            &ql[64 * h..],
            &qh[32 * h..],
            &sc[8 * h..],
            &mut y[128 * h..],
        );
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            y[l] = d * (sc[is] as i8) as f32 * q1 as f32;
            y[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
            y[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
            y[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
        }
    }
}

/// Rounds half to even, like ggml's `nearest_int` (exact for |x| < 2^22, which all callers are).
#[inline]
pub(crate) fn nearest_int(x: f32) -> i32 {
    x.round_ties_even() as i32
}

/// Quantizes one row of `src` into `dst` (exactly `ty.row_bytes(src.len())` bytes).
///
/// Supported: F32, F16, BF16, Q8_0, Q4_0, Q5_0, Q4_K, Q6_K, Q8_K; others are
/// [`EngineError::Unsupported`]. A length that is not whole blocks is [`EngineError::InvalidRequest`].
pub fn quantize_row(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<()> {
    let want = ty.row_bytes(src.len()).ok_or_else(|| {
        EngineError::InvalidRequest(format!(
            "{} elements is not a whole number of {} blocks",
            src.len(),
            ty.name()
        ))
    })?;
    if dst.len() != want {
        return Err(EngineError::InvalidRequest(format!(
            "{} row of {} elements needs {want} bytes, got {}",
            ty.name(),
            src.len(),
            dst.len()
        )));
    }
    let blocks = src
        .chunks_exact(ty.block_elems())
        .zip(dst.chunks_exact_mut(ty.block_bytes()));
    match ty {
        GgmlType::F32 => blocks.for_each(|(x, b)| b.copy_from_slice(&x[0].to_le_bytes())),
        GgmlType::F16 => {
            blocks.for_each(|(x, b)| b.copy_from_slice(&f16::from_f32(x[0]).to_le_bytes()))
        }
        GgmlType::BF16 => {
            blocks.for_each(|(x, b)| b.copy_from_slice(&bf16::from_f32(x[0]).to_le_bytes()))
        }
        GgmlType::Q8_0 => blocks.for_each(|(x, b)| quantize_q8_0_block(x, b)),
        GgmlType::Q4_0 => blocks.for_each(|(x, b)| quantize_q4_0_block(x, b)),
        GgmlType::Q5_0 => blocks.for_each(|(x, b)| quantize_q5_0_block(x, b)),
        GgmlType::Q4K => blocks.for_each(|(x, b)| quantize_q4k_block(x, b)),
        GgmlType::Q6K => blocks.for_each(|(x, b)| quantize_q6k_block(x, b)),
        GgmlType::Q8K => blocks.for_each(|(x, b)| quantize_q8k_block(x, b)),
        other => {
            return Err(EngineError::Unsupported(format!(
                "quantizing to {}",
                other.name()
            )))
        }
    }
    Ok(())
}

/// The element of largest magnitude, sign kept (the first one on ties), and its magnitude.
#[inline]
pub(crate) fn signed_absmax(x: &[f32]) -> (f32, f32) {
    let (mut max, mut amax) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    (max, amax)
}

/// Q8_0: `d = absmax / 127`, elements rounded half away from zero.
pub(crate) fn quantize_q8_0_block(x: &[f32], b: &mut [u8]) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    b[0..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
    for (q, &v) in b[2..34].iter_mut().zip(x) {
        *q = (v * id).round() as i8 as u8;
    }
}

/// Q4_0: the signed extreme maps to -8, so the full range -8..=7 is used on the larger side.
fn quantize_q4_0_block(x: &[f32], b: &mut [u8]) {
    let (max, _) = signed_absmax(x);
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    b[0..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
    for j in 0..16 {
        // Truncation after +8.5 rounds to nearest; `as u8` saturates NaN/negatives to 0.
        let lo = ((x[j] * id + 8.5) as u8).min(15);
        let hi = ((x[j + 16] * id + 8.5) as u8).min(15);
        b[2 + j] = lo | (hi << 4);
    }
}

/// Q5_0: like Q4_0 over -16..=15, the fifth bits gathered in `qh`.
fn quantize_q5_0_block(x: &[f32], b: &mut [u8]) {
    let (max, _) = signed_absmax(x);
    let d = max / -16.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    b[0..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
    let mut qh = 0u32;
    for j in 0..16 {
        let lo = ((x[j] * id + 16.5) as u8).min(31);
        let hi = ((x[j + 16] * id + 16.5) as u8).min(31);
        b[6 + j] = (lo & 0xF) | ((hi & 0xF) << 4);
        qh |= ((lo as u32 >> 4) << j) | ((hi as u32 >> 4) << (j + 16));
    }
    b[2..6].copy_from_slice(&qh.to_le_bytes());
}

/// Q8_K: f32 scale `max / -127`, plus the sums of each 16 quants (used by K-quant dot products).
pub(crate) fn quantize_q8k_block(x: &[f32], b: &mut [u8]) {
    let (max, amax) = signed_absmax(x);
    if amax == 0.0 {
        b.fill(0);
        return;
    }
    let iscale = -127.0 / max;
    b[0..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
    for (q, &v) in b[4..260].iter_mut().zip(x) {
        *q = nearest_int(iscale * v).min(127) as i8 as u8;
    }
    for g in 0..16 {
        let sum: i16 = b[4 + 16 * g..20 + 16 * g]
            .iter()
            .map(|&q| q as i8 as i16)
            .sum();
        b[260 + 2 * g..262 + 2 * g].copy_from_slice(&sum.to_le_bytes());
    }
}

// Layout tests read best as index arithmetic.
#[cfg(test)]
#[allow(clippy::needless_range_loop)]
pub(crate) mod tests;
