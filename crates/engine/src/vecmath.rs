//! Vectorized f32 work outside the matmuls: attention scores and weighted value sums over a
//! run of cached keys/values, softmax, and the SiLU and GELU gates. AVX2+FMA is chosen at run time
//! (the same detection as the matmul kernels), with a scalar path everywhere else; the tests
//! hold every SIMD function to its scalar twin. Exact (erf) GELU is scalar only.

use crate::quant::matmul::{detected_isa, Isa};

/// `out[j] = scale · q·keys[j·stride .. j·stride + q.len()]` for `j < out.len()`.
pub fn scores(q: &[f32], keys: &[f32], stride: usize, scale: f32, out: &mut [f32]) {
    scores_with(detected_isa(), q, keys, stride, scale, out)
}

/// `acc += Σ_j p[j] · values[j·stride .. j·stride + acc.len()]`.
pub fn accumulate(p: &[f32], values: &[f32], stride: usize, acc: &mut [f32]) {
    accumulate_with(detected_isa(), p, values, stride, acc)
}

/// Replaces `row` by its softmax (max-subtracted, so large scores do not overflow).
pub fn softmax(row: &mut [f32]) {
    softmax_with(detected_isa(), row)
}

/// `gate = silu(gate) · up = gate / (1 + e^-gate) · up`, elementwise.
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    silu_mul_with(detected_isa(), gate, up)
}

/// `gate = gelu(gate) · up` with GELU's tanh form, `0.5·x·(1 + tanh(z))`, z = √(2/π)·(x +
/// 0.044715·x³) (Gemma's gate), elementwise. The SIMD path uses the identity
/// `0.5·(1 + tanh(z)) = 1 / (1 + e^(−2z))`, i.e. the SiLU kernel with another argument.
pub fn gelu_tanh_mul(gate: &mut [f32], up: &[f32]) {
    gelu_tanh_mul_with(detected_isa(), gate, up)
}

/// `x = gelu(x) = x·Φ(x) = 0.5·x·erfc(−x/√2)`, the exact GELU (BERT's `hidden_act: gelu`),
/// elementwise. Scalar, in f64: it is a small part of an encoder layer beside its matmuls.
pub fn gelu_erf(x: &mut [f32]) {
    for v in x {
        let z = *v as f64;
        *v = (0.5 * z * erfc(-z * std::f64::consts::FRAC_1_SQRT_2)) as f32;
    }
}

/// The complementary error function within 1.2e-7 relative error for every x (the Chebyshev
/// fit `erfcc` of Numerical Recipes, 2nd ed., §6.2); through erfc, GELU keeps its relative
/// accuracy where it tends to 0 for large negative x.
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * (-z * z + poly).exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

const SQRT_2_OVER_PI: f32 = 0.797_884_6;

fn gelu_tanh_mul_with(isa: Isa, gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "gate and up widths");
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: Avx2 is only detected with AVX2 and FMA; the lengths are equal.
        Isa::Avx2 => unsafe { x86::gated::<true>(gate, up) },
        _ => {
            for (g, &u) in gate.iter_mut().zip(up) {
                let x = *g;
                *g = 0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x)).tanh()) * u;
            }
        }
    }
}

fn check_runs(width: usize, data: &[f32], stride: usize, n: usize) {
    assert!(
        n == 0 || (n - 1) * stride + width <= data.len(),
        "{n} runs of {width} at stride {stride} exceed {} floats",
        data.len()
    );
}

fn scores_with(isa: Isa, q: &[f32], keys: &[f32], stride: usize, scale: f32, out: &mut [f32]) {
    check_runs(q.len(), keys, stride, out.len());
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: Avx2 is only detected with AVX2 and FMA; the runs were bounds-checked.
        Isa::Avx2 if q.len().is_multiple_of(8) => unsafe {
            x86::scores(q, keys, stride, scale, out)
        },
        _ => {
            for (j, o) in out.iter_mut().enumerate() {
                let k = &keys[j * stride..j * stride + q.len()];
                *o = scale * q.iter().zip(k).map(|(a, b)| a * b).sum::<f32>();
            }
        }
    }
}

fn accumulate_with(isa: Isa, p: &[f32], values: &[f32], stride: usize, acc: &mut [f32]) {
    check_runs(acc.len(), values, stride, p.len());
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `scores_with`.
        Isa::Avx2 if acc.len().is_multiple_of(8) => unsafe {
            x86::accumulate(p, values, stride, acc)
        },
        _ => {
            for (j, &w) in p.iter().enumerate() {
                let v = &values[j * stride..j * stride + acc.len()];
                for (a, &x) in acc.iter_mut().zip(v) {
                    *a += w * x;
                }
            }
        }
    }
}

fn softmax_with(isa: Isa, row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum = match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: Avx2 is only detected with AVX2 and FMA.
        Isa::Avx2 => unsafe { x86::exp_shifted(row, max) },
        _ => row
            .iter_mut()
            .map(|v| {
                *v = (*v - max).exp();
                *v
            })
            .sum(),
    };
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|v| *v *= inv);
}

fn silu_mul_with(isa: Isa, gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "gate and up widths");
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: Avx2 is only detected with AVX2 and FMA; the lengths are equal.
        Isa::Avx2 => unsafe { x86::gated::<false>(gate, up) },
        _ => {
            for (g, &u) in gate.iter_mut().zip(up) {
                *g = *g / (1.0 + (-*g).exp()) * u;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// e^x for eight lanes: x = n·ln2 + r with |r| ≤ ln2/2, e^r by a degree-6 polynomial
    /// (relative error ~2e-7), and 2^n put into the exponent bits. Inputs are clamped to
    /// [-87.3, 88.7] (results stay normal and finite; e^-87.3 ≈ 1.2e-38).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn exp8(x: __m256) -> __m256 {
        let x = _mm256_min_ps(
            _mm256_max_ps(x, _mm256_set1_ps(-87.3)),
            _mm256_set1_ps(88.7),
        );
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
        );
        // ln 2 in two parts so that n·ln2_hi is exact.
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_145_75), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428_606_8e-6), r);
        let c = |v: f32| _mm256_set1_ps(v);
        let mut p = c(1.0 / 720.0);
        p = _mm256_fmadd_ps(p, r, c(1.0 / 120.0));
        p = _mm256_fmadd_ps(p, r, c(1.0 / 24.0));
        p = _mm256_fmadd_ps(p, r, c(1.0 / 6.0));
        p = _mm256_fmadd_ps(p, r, c(0.5));
        p = _mm256_fmadd_ps(p, r, c(1.0));
        p = _mm256_fmadd_ps(p, r, c(1.0));
        // n lies in [-126, 128]: 2^n·p by adding n to p's exponent (p ∈ [0.7, 1.42]).
        let e = _mm256_slli_epi32::<23>(_mm256_cvtps_epi32(n));
        _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), e))
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
    }

    /// # Safety
    /// AVX2+FMA; `q.len()` is a multiple of 8; `keys` holds `out.len()` runs of `q.len()` at
    /// `stride`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn scores(
        q: &[f32],
        keys: &[f32],
        stride: usize,
        scale: f32,
        out: &mut [f32],
    ) {
        let d = q.len();
        let (qp, kp) = (q.as_ptr(), keys.as_ptr());
        let n = out.len();
        let mut j = 0;
        // Four keys at a time: four independent FMA chains, reduced together by `hadd`.
        while j + 4 <= n {
            let mut acc = [_mm256_setzero_ps(); 4];
            for i in (0..d).step_by(8) {
                // SAFETY: i + 8 <= d and key j+3 ends within `keys` (caller contract).
                unsafe {
                    let qv = _mm256_loadu_ps(qp.add(i));
                    for (k, a) in acc.iter_mut().enumerate() {
                        let kv = _mm256_loadu_ps(kp.add((j + k) * stride + i));
                        *a = _mm256_fmadd_ps(qv, kv, *a);
                    }
                }
            }
            let h = _mm256_hadd_ps(
                _mm256_hadd_ps(acc[0], acc[1]),
                _mm256_hadd_ps(acc[2], acc[3]),
            );
            let s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps::<1>(h));
            let s = _mm_mul_ps(s, _mm_set1_ps(scale));
            // SAFETY: j + 4 <= out.len().
            unsafe { _mm_storeu_ps(out.as_mut_ptr().add(j), s) };
            j += 4;
        }
        for (jj, o) in out.iter_mut().enumerate().skip(j) {
            let mut acc = _mm256_setzero_ps();
            for i in (0..d).step_by(8) {
                // SAFETY: as above, for key jj < out.len().
                unsafe {
                    acc = _mm256_fmadd_ps(
                        _mm256_loadu_ps(qp.add(i)),
                        _mm256_loadu_ps(kp.add(jj * stride + i)),
                        acc,
                    );
                }
            }
            *o = scale * hsum(acc);
        }
    }

    /// # Safety
    /// AVX2+FMA; `acc.len()` is a multiple of 8; `values` holds `p.len()` runs of `acc.len()`
    /// at `stride`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn accumulate(p: &[f32], values: &[f32], stride: usize, acc: &mut [f32]) {
        let d = acc.len();
        let (vp, ap) = (values.as_ptr(), acc.as_mut_ptr());
        // 32 dimensions at a time stay in four registers across all the values.
        let mut i = 0;
        while i < d {
            let w = (d - i).min(32) / 8;
            // SAFETY: lanes i..i+8w lie in `acc` and in every value run (caller contract).
            unsafe {
                let mut a: [__m256; 4] = std::array::from_fn(|k| {
                    if k < w {
                        _mm256_loadu_ps(ap.add(i + 8 * k))
                    } else {
                        _mm256_setzero_ps()
                    }
                });
                for (j, &pj) in p.iter().enumerate() {
                    let s = _mm256_set1_ps(pj);
                    let v = vp.add(j * stride + i);
                    for (k, ak) in a.iter_mut().enumerate().take(w) {
                        *ak = _mm256_fmadd_ps(s, _mm256_loadu_ps(v.add(8 * k)), *ak);
                    }
                }
                for (k, ak) in a.iter().enumerate().take(w) {
                    _mm256_storeu_ps(ap.add(i + 8 * k), *ak);
                }
            }
            i += 8 * w;
        }
    }

    /// `row[i] = e^(row[i] - max)`; returns the sum.
    ///
    /// # Safety
    /// AVX2+FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn exp_shifted(row: &mut [f32], max: f32) -> f32 {
        let m = _mm256_set1_ps(max);
        let mut sum = _mm256_setzero_ps();
        let mut chunks = row.chunks_exact_mut(8);
        for c in &mut chunks {
            // SAFETY: `c` has exactly 8 floats.
            unsafe {
                let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(c.as_ptr()), m));
                _mm256_storeu_ps(c.as_mut_ptr(), e);
                sum = _mm256_add_ps(sum, e);
            }
        }
        let mut total = hsum(sum);
        for v in chunks.into_remainder() {
            *v = (*v - max).exp();
            total += *v;
        }
        total
    }

    /// `gate = x / (1 + e^(−a)) · up` with `a = x` (SiLU) or, for `GELU`, `a = 2·√(2/π)·(x +
    /// 0.044715·x³)` (GELU's tanh form: `0.5·(1 + tanh(a/2)) = 1 / (1 + e^(−a))`).
    ///
    /// # Safety
    /// AVX2+FMA; `gate.len() == up.len()`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn gated<const GELU: bool>(gate: &mut [f32], up: &[f32]) {
        let n = gate.len() / 8 * 8;
        let (g, u) = (gate.as_mut_ptr(), up.as_ptr());
        let k = _mm256_set1_ps(2.0 * super::SQRT_2_OVER_PI);
        let c = _mm256_set1_ps(0.044_715);
        for i in (0..n).step_by(8) {
            // SAFETY: i + 8 <= n <= both lengths.
            unsafe {
                let x = _mm256_loadu_ps(g.add(i));
                let a = if GELU {
                    let x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
                    _mm256_mul_ps(k, _mm256_fmadd_ps(c, x3, x))
                } else {
                    x
                };
                let e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), a));
                let y = _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0), e));
                _mm256_storeu_ps(g.add(i), _mm256_mul_ps(y, _mm256_loadu_ps(u.add(i))));
            }
        }
        let (gate, up) = (&mut gate[n..], &up[n..]);
        if GELU {
            super::gelu_tanh_mul_with(super::Isa::Scalar, gate, up);
        } else {
            super::silu_mul_with(super::Isa::Scalar, gate, up);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (s >> 8) as f32 / (1 << 24) as f32 * 4.0 - 2.0
            })
            .collect()
    }

    fn close(a: &[f32], b: &[f32], rel: f32) {
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= rel * (1.0 + x.abs().max(y.abs())),
                "element {i}: {x} vs {y}"
            );
        }
    }

    #[test]
    fn simd_equals_scalar_on_odd_shapes() {
        let isa = detected_isa();
        for (d, stride, n) in [
            (64, 128, 1),
            (64, 128, 7),
            (256, 256, 13),
            (8, 24, 4),
            (12, 12, 5),
        ] {
            let q = data(d, 1);
            let kv = data(stride * n + d, 2);
            let (mut a, mut b) = (vec![0.0; n], vec![0.0; n]);
            scores_with(isa, &q, &kv, stride, 0.125, &mut a);
            scores_with(Isa::Scalar, &q, &kv, stride, 0.125, &mut b);
            close(&a, &b, 1e-5);
            let p = data(n, 3);
            let (mut a, mut b) = (data(d, 4), data(d, 4));
            accumulate_with(isa, &p, &kv, stride, &mut a);
            accumulate_with(Isa::Scalar, &p, &kv, stride, &mut b);
            close(&a, &b, 1e-5);
        }
    }

    #[test]
    fn softmax_and_silu_match_libm() {
        let isa = detected_isa();
        for n in [1, 7, 8, 33, 512] {
            let mut x: Vec<f32> = data(n, 5).iter().map(|v| v * 20.0).collect();
            x[0] = -200.0; // underflows to ~0, never NaN
            let (mut a, mut b) = (x.clone(), x.clone());
            softmax_with(isa, &mut a);
            softmax_with(Isa::Scalar, &mut b);
            close(&a, &b, 1e-6);
            assert!((a.iter().sum::<f32>() - 1.0).abs() < 1e-5);
            let up = data(n, 6);
            let mut x: Vec<f32> = data(n, 7).iter().map(|v| v * 30.0).collect();
            x[n / 2] = 100.0;
            x[0] = -100.0;
            let (mut a, mut b) = (x.clone(), x.clone());
            silu_mul_with(isa, &mut a, &up);
            silu_mul_with(Isa::Scalar, &mut b, &up);
            close(&a, &b, 1e-6);
            let (mut a, mut b) = (x.clone(), x.clone());
            gelu_tanh_mul_with(isa, &mut a, &up);
            gelu_tanh_mul_with(Isa::Scalar, &mut b, &up);
            close(&a, &b, 1e-6);
        }
    }

    #[test]
    fn gelu_erf_matches_known_values() {
        // erfc and Φ to 16 digits (mpmath).
        for (x, want) in [
            (0.0, 1.0),
            (0.5, 0.479_500_122_186_953_5),
            (1.0, 0.157_299_207_050_285_13),
            (2.0, 0.004_677_734_981_047_266),
            (4.0, 1.541_725_790_028_002e-8),
            (-1.0, 1.842_700_792_949_715),
        ] {
            let got = erfc(x);
            assert!(((got - want) / want).abs() < 1.3e-7, "erfc({x}) = {got}");
        }
        let mut x = [1.0f32, -1.0, 3.0, -3.0, 0.0, 10.0, -10.0];
        gelu_erf(&mut x);
        let want = [
            0.841_344_746_068_542_9,
            -0.158_655_253_931_457_05,
            2.995_950_305_905_11,
            -0.004_049_694_094_890_287,
            0.0,
            10.0,
            -7.619_853_024_160_593e-23,
        ];
        for (g, w) in x.iter().zip(want) {
            assert!(
                (*g as f64 - w).abs() <= 2.5e-7 * w.abs(),
                "gelu: {g} vs {w}"
            );
        }
    }

    #[test]
    fn exp_is_accurate_over_its_range() {
        #[cfg(target_arch = "x86_64")]
        if detected_isa() == Isa::Avx2 {
            for i in -870..=886 {
                let x = i as f32 * 0.1;
                // SAFETY: Avx2 is detected.
                let got = unsafe {
                    let v = x86::exp8(std::arch::x86_64::_mm256_set1_ps(x));
                    std::arch::x86_64::_mm256_cvtss_f32(v)
                };
                let want = (x as f64).exp();
                assert!(
                    ((got as f64 - want) / want).abs() < 5e-7,
                    "exp({x}) = {got}, want {want}"
                );
            }
        }
    }
}
