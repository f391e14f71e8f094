//! Quantizers for the K-quant super-block formats (Q4_K, Q6_K): a per-sub-block scale (and min)
//! search, then the scales themselves quantized to 6 or 8 bits against one f16 super-scale.
//!
//! The searches follow ggml's reference quantizers (same candidate scales, same weighting), so
//! files we quantize have the error ggml's would.

use super::blocks::{nearest_int, scale_min_k4, signed_absmax};
use half::f16;

/// Below this magnitude a 16-element group is treated as all zero (as ggml does).
const GROUP_MAX_EPS: f32 = 1e-15;

/// Fits `x ≈ scale * L - min` with `L` in `0..=nmax`, minimizing the `weights`-weighted squared
/// error over `nstep + 1` candidate inverse scales `(nmax + rmin + rdelta*i) / (max - min)`.
/// Returns `(scale, min)` with `min ≥ 0` meaning the offset subtracted; fills `levels`.
fn fit_scale_min(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    levels: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) -> (f32, f32) {
    let n = x.len();
    let mut min = x.iter().copied().fold(x[0], f32::min);
    let max = x.iter().copied().fold(x[0], f32::max);
    let sum_w: f32 = weights.iter().sum();
    let sum_x: f32 = weights.iter().zip(x).map(|(w, v)| w * v).sum();
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        levels.fill(0);
        return (0.0, -min);
    }
    let quant =
        |iscale: f32, min: f32, v: f32| nearest_int(iscale * (v - min)).clamp(0, nmax) as u8;
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_err = 0f32;
    for i in 0..n {
        levels[i] = quant(iscale, min, x[i]);
        let diff = scale * levels[i] as f32 + min - x[i];
        best_err += weights[i] * diff * diff;
    }
    let mut trial = [0u8; 32];
    let trial = &mut trial[..n];
    for step in 0..=nstep {
        iscale = (rmin + rdelta * step as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
        for i in 0..n {
            let l = quant(iscale, min, x[i]);
            trial[i] = l;
            let (w, l) = (weights[i], l as f32);
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let err: f32 = (0..n)
                .map(|i| {
                    let diff = this_scale * trial[i] as f32 + this_min - x[i];
                    weights[i] * diff * diff
                })
                .sum();
            if err < best_err {
                levels.copy_from_slice(trial);
                best_err = err;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// Fits a symmetric `x ≈ scale * (L - nmax)` with `L` in `0..2*nmax`, weighting errors by `x²`,
/// trying 19 scales around `-nmax / max`. Returns the scale; fills `levels`.
fn fit_symmetric(nmax: i32, x: &[f32], levels: &mut [u8]) -> f32 {
    let (max, amax) = signed_absmax(x);
    if amax < GROUP_MAX_EPS {
        levels.fill(0);
        return 0.0;
    }
    let sums = |iscale: f32| {
        let (mut sumlx, mut suml2) = (0f32, 0f32);
        for &v in x {
            let l = nearest_int(iscale * v).clamp(-nmax, nmax - 1) as f32;
            let w = v * v;
            sumlx += w * v * l;
            suml2 += w * l * l;
        }
        (sumlx, suml2)
    };
    let fill = |iscale: f32, levels: &mut [u8]| {
        for (o, &v) in levels.iter_mut().zip(x) {
            *o = (nearest_int(iscale * v).clamp(-nmax, nmax - 1) + nmax) as u8;
        }
    };
    let iscale = -(nmax as f32) / max;
    fill(iscale, levels);
    let (sumlx, suml2) = sums(iscale);
    let mut scale = sumlx / suml2;
    let mut best = scale * sumlx;
    for is in (-9..=9).filter(|&i| i != 0) {
        let iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        let (sumlx, suml2) = sums(iscale);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            fill(iscale, levels);
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// Quantizes 256 values into one Q4_K block (144 bytes).
pub(crate) fn quantize_q4k_block(x: &[f32], b: &mut [u8]) {
    let mut levels = [0u8; 256];
    let (mut scales, mut mins) = ([0f32; 8], [0f32; 8]);
    let mut weights = [0f32; 32];
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let av_x = (xs.iter().map(|v| v * v).sum::<f32>() / 32.0).sqrt();
        for (w, v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        (scales[j], mins[j]) = fit_scale_min(
            15,
            xs,
            &weights,
            &mut levels[32 * j..32 * j + 32],
            -1.0,
            0.1,
            20,
        );
    }
    let max_scale = scales.iter().copied().fold(0f32, f32::max);
    let max_min = mins.iter().copied().fold(0f32, f32::max);
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let packed = &mut [0u8; 12];
    for j in 0..8 {
        let ls = nearest_int(inv_scale * scales[j]).min(63) as u8;
        let lm = nearest_int(inv_min * mins[j]).min(63) as u8;
        if j < 4 {
            packed[j] = ls;
            packed[j + 4] = lm;
        } else {
            packed[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
            packed[j - 4] |= (ls >> 4) << 6;
            packed[j] |= (lm >> 4) << 6;
        }
    }
    let d = f16::from_f32(max_scale / 63.0);
    let dmin = f16::from_f32(max_min / 63.0);
    for j in 0..8 {
        let (sc, m) = scale_min_k4(j, packed);
        let dj = d.to_f32() * sc as f32;
        if dj == 0.0 {
            continue;
        }
        let dm = dmin.to_f32() * m as f32;
        for i in 32 * j..32 * j + 32 {
            levels[i] = nearest_int((x[i] + dm) / dj).clamp(0, 15) as u8;
        }
    }
    b[0..2].copy_from_slice(&d.to_le_bytes());
    b[2..4].copy_from_slice(&dmin.to_le_bytes());
    b[4..16].copy_from_slice(packed);
    for c in 0..4 {
        for l in 0..32 {
            b[16 + 32 * c + l] = levels[64 * c + l] | (levels[64 * c + 32 + l] << 4);
        }
    }
}

/// Quantizes 256 values into one Q6_K block (210 bytes).
pub(crate) fn quantize_q6k_block(x: &[f32], b: &mut [u8]) {
    let mut levels = [0u8; 256];
    let mut scales = [0f32; 16];
    let (mut max_scale, mut max_abs_scale) = (0f32, 0f32);
    for g in 0..16 {
        let s = fit_symmetric(
            32,
            &x[16 * g..16 * g + 16],
            &mut levels[16 * g..16 * g + 16],
        );
        scales[g] = s;
        if s.abs() > max_abs_scale {
            max_abs_scale = s.abs();
            max_scale = s;
        }
    }
    b.fill(0);
    if max_abs_scale < GROUP_MAX_EPS {
        return;
    }
    let iscale = -128.0 / max_scale;
    let d = f16::from_f32(1.0 / iscale);
    let mut sc = [0i8; 16];
    for g in 0..16 {
        sc[g] = nearest_int(iscale * scales[g]).min(127) as i8;
        let dg = d.to_f32() * sc[g] as f32;
        if dg == 0.0 {
            continue;
        }
        for i in 16 * g..16 * g + 16 {
            levels[i] = (nearest_int(x[i] / dg).clamp(-32, 31) + 32) as u8;
        }
    }
    let (ql, rest) = b.split_at_mut(128);
    let (qh, rest) = rest.split_at_mut(64);
    for h in 0..2 {
        let l0 = &levels[128 * h..];
        for l in 0..32 {
            let (a, bb, c, e) = (l0[l], l0[l + 32], l0[l + 64], l0[l + 96]);
            ql[64 * h + l] = (a & 0xF) | ((c & 0xF) << 4);
            ql[64 * h + l + 32] = (bb & 0xF) | ((e & 0xF) << 4);
            qh[32 * h + l] = (a >> 4) | ((bb >> 4) << 2) | ((c >> 4) << 4) | ((e >> 4) << 6);
        }
    }
    for g in 0..16 {
        rest[g] = sc[g] as u8;
    }
    rest[16..18].copy_from_slice(&d.to_le_bytes());
}
