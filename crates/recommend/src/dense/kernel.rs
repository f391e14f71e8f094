//! The dot product under every dense score: exact search's row scan and the ANN graph's
//! distance. AVX2+FMA where the CPU has it (detected at run time), otherwise eight independent
//! lanes that LLVM turns into vector code for whatever the target offers.
//!
//! A plain `zip().map().sum()` is one dependent chain of float adds (LLVM may not reorder them),
//! so it runs at one add per add-latency; independent accumulators remove that chain.

/// Lanes of the portable kernel: one 256-bit register of f32.
const LANES: usize = 8;

/// `a · b`; both slices have the same length (callers check dimensions before scoring).
#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len(), "dot of vectors of different lengths");
    #[cfg(target_arch = "x86_64")]
    if avx2_fma_available() {
        // SAFETY: `dot_avx2_fma` needs only the avx2 and fma features, detected just above.
        return unsafe { dot_avx2_fma(a, b) };
    }
    dot_lanes(a, b)
}

/// Whether this CPU runs [`dot_avx2_fma`]; std caches the detection, so this is a load and a test.
#[cfg(target_arch = "x86_64")]
#[inline]
fn avx2_fma_available() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// Eight accumulators over `chunks_exact(8)`: vectorized by LLVM on any target.
pub(crate) fn dot_lanes(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a_chunks.zip(b_chunks) {
        for lane in 0..LANES {
            lanes[lane] += x[lane] * y[lane];
        }
    }
    // Pairwise, as the AVX2 kernel does, so both round alike.
    let quads = [
        lanes[0] + lanes[4],
        lanes[1] + lanes[5],
        lanes[2] + lanes[6],
        lanes[3] + lanes[7],
    ];
    (quads[0] + quads[2]) + (quads[1] + quads[3]) + tail
}

/// Four 8-wide FMA accumulators (32 floats a step) hide the FMA latency; then 8 at a time,
/// then a scalar tail.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn dot_avx2_fma(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let len = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    // SAFETY: every load reads 8 floats at an offset `i` with `i + 8 <= len`, inside both slices;
    // the loads are unaligned (`loadu`), so any slice is fine.
    unsafe {
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 32 <= len {
            for (step, lane) in acc.iter_mut().enumerate() {
                let offset = i + step * 8;
                *lane = _mm256_fmadd_ps(
                    _mm256_loadu_ps(pa.add(offset)),
                    _mm256_loadu_ps(pb.add(offset)),
                    *lane,
                );
            }
            i += 32;
        }
        while i + 8 <= len {
            acc[0] = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(i)),
                _mm256_loadu_ps(pb.add(i)),
                acc[0],
            );
            i += 8;
        }
        let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        // Horizontal sum: 8 → 4 → 2 → 1.
        let quad = _mm_add_ps(_mm256_castps256_ps128(sum), _mm256_extractf128_ps(sum, 1));
        let pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
        let single = _mm_add_ss(pair, _mm_shuffle_ps(pair, pair, 1));
        let mut total = _mm_cvtss_f32(single);
        while i < len {
            total += *pa.add(i) * *pb.add(i);
            i += 1;
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference: every product and sum in f64, in order.
    fn dot_reference(a: &[f32], b: &[f32]) -> f64 {
        a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
    }

    /// Deterministic values in [-1, 1) (xorshift64*).
    fn values(seed: u64, n: usize) -> Vec<f32> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                state ^= state >> 12;
                state ^= state << 25;
                state ^= state >> 27;
                let bits = state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40;
                bits as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    fn unit(mut v: Vec<f32>) -> Vec<f32> {
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= norm.max(f32::MIN_POSITIVE));
        v
    }

    fn lengths() -> impl Iterator<Item = usize> {
        (0..=70).chain([
            95, 96, 97, 127, 128, 129, 255, 256, 257, 383, 384, 767, 768, 769, 1023,
        ])
    }

    #[test]
    fn every_kernel_matches_the_f64_reference_on_unit_vectors() {
        for len in lengths() {
            let a = unit(values(len as u64, len));
            let b = unit(values(len as u64 + 1000, len));
            let expected = dot_reference(&a, &b);
            let mut kernels = vec![("dispatch", dot(&a, &b)), ("lanes", dot_lanes(&a, &b))];
            #[cfg(target_arch = "x86_64")]
            if avx2_fma_available() {
                // SAFETY: the features were just detected.
                kernels.push(("avx2", unsafe { dot_avx2_fma(&a, &b) }));
            }
            for (name, got) in kernels {
                assert!(
                    (got as f64 - expected).abs() < 1e-5,
                    "{name} at length {len}: {got} vs {expected}"
                );
            }
        }
    }

    #[test]
    fn kernels_agree_with_the_reference_on_unnormalized_values() {
        for len in lengths() {
            let a: Vec<f32> = values(7 * len as u64, len)
                .iter()
                .map(|x| x * 9.0)
                .collect();
            let b = values(7 * len as u64 + 1, len);
            let expected = dot_reference(&a, &b);
            let scale: f64 = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (*x as f64 * *y as f64).abs())
                .sum();
            let tolerance = 1e-5 * scale.max(1.0);
            for got in [dot(&a, &b), dot_lanes(&a, &b)] {
                assert!(
                    (got as f64 - expected).abs() <= tolerance,
                    "length {len}: {got} vs {expected}"
                );
            }
        }
        assert_eq!(dot(&[], &[]), 0.0);
        assert_eq!(dot(&[2.0; 3], &[0.5; 3]), 3.0);
    }
}
