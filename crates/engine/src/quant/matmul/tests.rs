//! Every ISA path against the scalar reference (dequantize_row + f64 dot), every weight type,
//! odd shapes and batch sizes 1..=17.

use super::*;
use crate::quant::blocks::{dequantize_row, quantize_row, tests::Rng};
use crate::quant::{GgmlType, TensorBytes};
use half::f16;

const ALL: [GgmlType; 15] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q8_1,
    GgmlType::Q2K,
    GgmlType::Q3K,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
    GgmlType::Q8K,
];

/// A random `rows × cols` matrix of type `ty`: quantized normal data where we have a quantizer,
/// else random bytes with finite scales.
pub(crate) fn random_matrix(ty: GgmlType, rows: usize, cols: usize, rng: &mut Rng) -> WeightMatrix {
    let row_bytes = ty.row_bytes(cols).unwrap();
    let mut data = vec![0u8; rows * row_bytes];
    let x: Vec<f32> = (0..cols).map(|_| rng.normal()).collect();
    for r in 0..rows {
        let dst = &mut data[r * row_bytes..(r + 1) * row_bytes];
        let x: Vec<f32> = x
            .iter()
            .map(|v| v * (1.0 + r as f32 * 0.01) + rng.normal() * 0.1)
            .collect();
        if quantize_row(ty, &x, dst).is_ok() {
            continue;
        }
        dst.iter_mut().for_each(|b| *b = rng.below(256) as u8);
        let f16_offsets: &[usize] = match ty {
            GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4K | GgmlType::Q5K | GgmlType::Q8_1 => {
                &[0, 2]
            }
            GgmlType::Q2K => &[80, 82],
            GgmlType::Q3K => &[108],
            _ => &[],
        };
        for block in dst.chunks_exact_mut(ty.block_bytes()) {
            for &o in f16_offsets {
                let v = (rng.normal() * 0.05).abs() + 0.001;
                block[o..o + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
            }
        }
    }
    WeightMatrix::new(ty, rows, cols, TensorBytes::from(data)).unwrap()
}

/// Checks `isa` against f64 sums of dequantized weights; the tolerance is the worst case of
/// activation rounding (half a step of each 32-group's scale) on integer paths.
fn check(isa: Isa, pool: &ThreadPool, w: &WeightMatrix, n: usize, rng: &mut Rng) {
    for broadcast in kernel_choices(isa) {
        check_with(isa, broadcast, pool, w, n, rng);
    }
}

/// The kernel choices to test on `isa`: with AVX2 the measured one and both forced ones (so
/// the broadcast and per-row kernels are each checked at every row count).
fn kernel_choices(isa: Isa) -> Vec<Option<bool>> {
    if isa == Isa::Avx2 {
        vec![None, Some(true), Some(false)]
    } else {
        vec![None]
    }
}

fn check_with(
    isa: Isa,
    broadcast: Option<bool>,
    pool: &ThreadPool,
    w: &WeightMatrix,
    n: usize,
    rng: &mut Rng,
) {
    let x: Vec<f32> = (0..n * w.cols).map(|_| rng.normal()).collect();
    let mut y = vec![f32::NAN; n * w.rows];
    matmul_with(isa, broadcast, pool, w, &x, n, &mut y);
    assert_reference(w, &x, &y, n, &format!("{isa:?} broadcast {broadcast:?}"));
}

/// Checks `y = w·x` against f64 sums of `w`'s dequantized rows; the tolerance is the worst case
/// of activation rounding (half a step of each 32-group's scale) on integer paths.
fn assert_reference(w: &WeightMatrix, x: &[f32], y: &[f32], n: usize, label: &str) {
    let mut row = vec![0f32; w.cols];
    for r in 0..w.rows {
        dequantize_row(w.ty, w.row(r), &mut row);
        for t in 0..n {
            let xt = &x[t * w.cols..(t + 1) * w.cols];
            let exact: f64 = row.iter().zip(xt).map(|(&a, &b)| a as f64 * b as f64).sum();
            let mag: f64 = row
                .iter()
                .zip(xt)
                .map(|(&a, &b)| (a as f64 * b as f64).abs())
                .sum();
            let mut tol = 1e-5 * mag + 1e-5;
            if is_integer(w.ty) {
                for (wg, xg) in row.chunks(32).zip(xt.chunks(32)) {
                    let amax = xg.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
                    tol += wg.iter().map(|v| v.abs() as f64).sum::<f64>() * amax / 254.0 * 1.001;
                }
            }
            let got = y[t * w.rows + r] as f64;
            assert!(
                (got - exact).abs() <= tol,
                "{label} {} {}x{} n={n} r={r} t={t}: {got} vs {exact} (tol {tol})",
                w.ty.name(),
                w.rows,
                w.cols
            );
        }
    }
}

#[test]
fn every_type_every_isa_matches_reference() {
    let mut rng = Rng::new(3);
    let pool = ThreadPool::new(2);
    let mut isas = vec![Isa::Scalar];
    if detected_isa() != Isa::Scalar {
        isas.push(detected_isa());
    }
    for ty in ALL {
        let cols = if ty.block_elems() == 256 { 512 } else { 96 };
        for rows in [1, 17, 33] {
            let w = random_matrix(ty, rows, cols, &mut rng);
            for &isa in &isas {
                for n in [1, 4, 5] {
                    check(isa, &pool, &w, n, &mut rng);
                }
            }
        }
        let w = random_matrix(ty, 7, ty.block_elems().max(32) * 3, &mut rng);
        for &isa in &isas {
            for n in 1..=17 {
                check(isa, &pool, &w, n, &mut rng);
            }
        }
    }
}

/// Widths with whole 128-element chunks plus a tail of 1..3 groups, more rows than one GEMV
/// task, and batches on both sides of the GEMV/GEMM switch.
#[test]
fn chunk_tails_and_task_boundaries_match_reference() {
    let mut rng = Rng::new(11);
    let pool = ThreadPool::new(2);
    let mut isas = vec![Isa::Scalar];
    if detected_isa() != Isa::Scalar {
        isas.push(detected_isa());
    }
    for ty in ALL {
        let widths: &[usize] = if ty.block_elems() == 256 {
            &[256, 768]
        } else {
            &[128, 160, 224, 416]
        };
        for &cols in widths {
            let w = random_matrix(ty, GEMV_ROWS_PER_TASK + 6, cols, &mut rng);
            for &isa in &isas {
                for n in [1, 2, 3, 4, 5, 6, 8, 9] {
                    check(isa, &pool, &w, n, &mut rng);
                }
            }
        }
    }
}

/// The types `WeightMatrix::packed` interleaves.
const PACKABLE: [GgmlType; 5] = [
    GgmlType::Q4_0,
    GgmlType::Q5_0,
    GgmlType::Q8_0,
    GgmlType::Q4K,
    GgmlType::Q6K,
];

/// Matrices packed 8 rows per group (`quant::packed`): every ISA's packed kernel against the
/// reference of the unpacked rows, for one and several groups per task, widths with 1..13
/// blocks, and batches across the GEMV/GEMM switch and the kernel's 64-row chunks.
#[test]
fn packed_matrices_match_reference() {
    let mut rng = Rng::new(17);
    let pool = ThreadPool::new(2);
    let mut isas = vec![Isa::Scalar];
    if detected_isa() != Isa::Scalar {
        isas.push(detected_isa());
    }
    for ty in PACKABLE {
        let shapes = if ty.block_elems() == 256 {
            [
                (8, 256),
                (16, 512),
                (GEMV_ROWS_PER_TASK + 8, 768),
                (24, 256),
            ]
        } else {
            [(8, 32), (16, 96), (GEMV_ROWS_PER_TASK + 8, 416), (24, 224)]
        };
        for (rows, cols) in shapes {
            let w = random_matrix(ty, rows, cols, &mut rng);
            let p = w.packed_unchecked();
            assert!(p.is_packed());
            let batches: Vec<usize> = if rows == 24 {
                vec![63, 64, 65, 130]
            } else {
                (1..=17).collect()
            };
            for &isa in &isas {
                for &n in &batches {
                    let x: Vec<f32> = (0..n * cols).map(|_| rng.normal()).collect();
                    let mut y = vec![f32::NAN; n * rows];
                    matmul_with(isa, None, &pool, &p, &x, n, &mut y);
                    assert_reference(&w, &x, &y, n, &format!("{isa:?} packed"));
                }
            }
        }
    }
}

/// Several matrices of one input in one job (q/k/v of mixed types, all packed, or some not)
/// give exactly what one `matmul` per matrix gives, on every ISA and across the task split.
#[test]
fn matmul_many_equals_one_matmul_per_matrix() {
    let mut rng = Rng::new(23);
    let pool = ThreadPool::new(2);
    let mut isas = vec![Isa::Scalar];
    if detected_isa() != Isa::Scalar {
        isas.push(detected_isa());
    }
    let cols = 256;
    let sets: [&[(GgmlType, usize)]; 3] = [
        &[
            (GgmlType::Q5_0, 136),
            (GgmlType::Q5_0, 16),
            (GgmlType::Q8_0, 16),
        ],
        &[(GgmlType::Q4K, GEMV_ROWS_PER_TASK + 8), (GgmlType::Q6K, 8)],
        &[(GgmlType::Q4_0, 24), (GgmlType::Q5K, 24)],
    ];
    for set in sets {
        let ws: Vec<WeightMatrix> = set
            .iter()
            .map(|&(ty, rows)| {
                let w = random_matrix(ty, rows, cols, &mut rng);
                w.packed().unwrap_or(w)
            })
            .collect();
        let refs: Vec<&WeightMatrix> = ws.iter().collect();
        for &isa in &isas {
            for n in [1, 3, 8, 9, 70] {
                let x: Vec<f32> = (0..n * cols).map(|_| rng.normal()).collect();
                let mut outs: Vec<Vec<f32>> =
                    ws.iter().map(|w| vec![f32::NAN; n * w.rows]).collect();
                let mut ys: Vec<&mut [f32]> = outs.iter_mut().map(|o| &mut o[..]).collect();
                matmul_many_with(isa, &pool, &refs, &x, n, &mut ys);
                for (w, got) in ws.iter().zip(&outs) {
                    let mut want = vec![f32::NAN; n * w.rows];
                    matmul_with(isa, None, &pool, w, &x, n, &mut want);
                    assert!(
                        got.iter()
                            .zip(&want)
                            .all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{isa:?} {} rows {} n {n}",
                        w.ty.name(),
                        w.rows
                    );
                }
            }
        }
    }
}

/// The packed AVX2 kernel does the scalar packed kernel's arithmetic in the same order.
#[test]
fn packed_simd_equals_packed_scalar() {
    if detected_isa() == Isa::Scalar {
        return;
    }
    let mut rng = Rng::new(19);
    let pool = ThreadPool::new(2);
    for ty in PACKABLE {
        let p = random_matrix(ty, 32, 768, &mut rng).packed_unchecked();
        for n in [1, 8, 13, 70] {
            let x: Vec<f32> = (0..n * p.cols).map(|_| rng.normal()).collect();
            let (mut a, mut b) = (vec![0f32; n * p.rows], vec![0f32; n * p.rows]);
            matmul_with(Isa::Scalar, None, &pool, &p, &x, n, &mut a);
            matmul_with(detected_isa(), None, &pool, &p, &x, n, &mut b);
            for (u, v) in a.iter().zip(&b) {
                assert!(
                    (u - v).abs() <= 1e-5 * (1.0 + u.abs()),
                    "{}: {u} vs {v}",
                    ty.name()
                );
            }
        }
    }
}

/// The SIMD path computes the same integer sums as the scalar one, so they agree to f32 rounding.
#[test]
fn simd_equals_scalar() {
    let isa = detected_isa();
    if isa == Isa::Scalar {
        return;
    }
    let mut rng = Rng::new(9);
    let pool = ThreadPool::new(3);
    for ty in ALL {
        let w = random_matrix(ty, 19, 768, &mut rng);
        for n in [1, 3, 8, 13] {
            let x: Vec<f32> = (0..n * w.cols).map(|_| rng.normal()).collect();
            let mut a = vec![0f32; n * w.rows];
            matmul_with(Isa::Scalar, None, &pool, &w, &x, n, &mut a);
            for broadcast in kernel_choices(isa) {
                let mut b = vec![0f32; n * w.rows];
                matmul_with(isa, broadcast, &pool, &w, &x, n, &mut b);
                for (p, q) in a.iter().zip(&b) {
                    assert!(
                        (p - q).abs() <= 1e-4 * (1.0 + p.abs()),
                        "{} broadcast {broadcast:?}: {p} vs {q}",
                        ty.name()
                    );
                }
            }
        }
    }
}

/// A Q8_0 level of −128 (allowed by the format, never written by ggml's quantizer) would
/// overflow the broadcast kernels' `w·sign(x)`: such a matrix takes the per-row kernels, at
/// every row count, even when the broadcast kernels are asked for.
#[test]
fn q8_0_level_minus_128_matches_reference() {
    let mut rng = Rng::new(21);
    let pool = ThreadPool::new(2);
    let mut w = random_matrix(GgmlType::Q8_0, 9, 96, &mut rng);
    assert!(!w.has_level_minus_128());
    let mut data = w.data.to_vec();
    data[2 + 34 * 4 + 5] = 0x80; // row 1 (3 blocks of 34 bytes per row), block 1, level 5
    w = WeightMatrix::new(GgmlType::Q8_0, 9, 96, TensorBytes::from(data)).unwrap();
    assert!(w.has_level_minus_128());
    for n in [1, 8, 9] {
        check(detected_isa(), &pool, &w, n, &mut rng);
    }
    // The packed kernel multiplies |w| (128 fits its unsigned side) by sign(x, w).
    let data = w.data.to_vec();
    let w = WeightMatrix::new(
        GgmlType::Q8_0,
        8,
        96,
        TensorBytes::from(data[..8 * 102].to_vec()),
    )
    .unwrap();
    assert!(w.has_level_minus_128());
    let p = w.packed_unchecked();
    // Found in the packed layout too (the 2..8-row kernel must not take this matrix), and
    // only there: a packed matrix without −128 reports none.
    assert!(p.has_level_minus_128());
    let clean = random_matrix(GgmlType::Q8_0, 8, 96, &mut rng).packed_unchecked();
    assert!(!clean.has_level_minus_128());
    for isa in [Isa::Scalar, detected_isa()] {
        for n in [1, 8, 9] {
            let x: Vec<f32> = (0..n * w.cols).map(|_| rng.normal()).collect();
            let mut y = vec![f32::NAN; n * w.rows];
            matmul_with(isa, None, &pool, &p, &x, n, &mut y);
            assert_reference(&w, &x, &y, n, &format!("{isa:?} packed -128"));
        }
    }
}

#[test]
fn dot_f32_matches_f64_for_odd_lengths() {
    let mut rng = Rng::new(5);
    for len in [0, 1, 7, 8, 9, 31, 33, 100, 1000] {
        let a: Vec<f32> = (0..len).map(|_| rng.normal()).collect();
        let b: Vec<f32> = (0..len).map(|_| rng.normal()).collect();
        let exact: f64 = a.iter().zip(&b).map(|(&x, &y)| x as f64 * y as f64).sum();
        for isa in [Isa::Scalar, detected_isa()] {
            let got = dot_f32_with(isa, &a, &b) as f64;
            assert!(
                (got - exact).abs() < 1e-4 * (1.0 + len as f64),
                "{isa:?} len {len}"
            );
        }
    }
}

#[test]
fn kernel_names_follow_the_isa_and_packing() {
    assert!(kernel_name(GgmlType::F16, 64).starts_with("f32 rows"));
    match detected_isa() {
        Isa::Avx2 => {
            assert_eq!(isa_name(), "avx2+fma+f16c");
            // Packing takes whole groups of 8 rows of the packable types.
            assert!(kernel_name(GgmlType::Q4K, 64).starts_with("rows packed"));
            assert!(kernel_name(GgmlType::Q4K, 63).starts_with("unpacked i8 rows, avx2"));
            assert!(kernel_name(GgmlType::Q5K, 64).starts_with("unpacked i8 rows, avx2"));
        }
        Isa::Scalar => {
            assert!(isa_name().starts_with("scalar"));
            assert!(kernel_name(GgmlType::Q4K, 64).contains("scalar"));
        }
    }
}
