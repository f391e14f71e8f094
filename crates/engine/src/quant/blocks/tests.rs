//! Tests of the block formats: hand-packed blocks decode to known values, quantizers round-trip
//! within ggml-like error, bad input is an error, and real GGUF tensors match gguf-py.

use super::*;

/// Deterministic pseudo-random numbers (xorshift) so failures reproduce.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub(crate) fn next_u32(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 32) as u32
    }
    /// Uniform in `0..n`.
    pub(crate) fn below(&mut self, n: u32) -> u32 {
        self.next_u32() % n
    }
    /// Roughly standard normal (sum of uniforms).
    pub(crate) fn normal(&mut self) -> f32 {
        (0..12)
            .map(|_| self.next_u32() as f32 / u32::MAX as f32)
            .sum::<f32>()
            - 6.0
    }
}

fn h(v: f32) -> [u8; 2] {
    f16::from_f32(v).to_le_bytes()
}

fn dequant(ty: GgmlType, b: &[u8]) -> Vec<f32> {
    let mut out = vec![0f32; b.len() / ty.block_bytes() * ty.block_elems()];
    dequantize_row(ty, b, &mut out);
    out
}

#[test]
fn q4_0_and_q4_1_hand_built() {
    let mut b = vec![0u8; 18];
    b[0..2].copy_from_slice(&h(0.5));
    for j in 0..16 {
        b[2 + j] = j as u8 | ((15 - j as u8) << 4);
    }
    let y = dequant(GgmlType::Q4_0, &b);
    for j in 0..16 {
        assert_eq!(y[j], (j as f32 - 8.0) * 0.5);
        assert_eq!(y[j + 16], (7.0 - j as f32) * 0.5);
    }
    let mut b = vec![0u8; 20];
    b[0..2].copy_from_slice(&h(0.25));
    b[2..4].copy_from_slice(&h(-1.0));
    b[4..20].fill(0x3C); // low nibble 12, high 3
    let y = dequant(GgmlType::Q4_1, &b);
    assert!(y[..16].iter().all(|&v| v == 2.0) && y[16..].iter().all(|&v| v == -0.25));
}

#[test]
fn q5_hand_built() {
    let qh: u32 = 0xA5A5_0F0F;
    let mut b = vec![0u8; 22];
    b[0..2].copy_from_slice(&h(1.0));
    b[2..6].copy_from_slice(&qh.to_le_bytes());
    for j in 0..16 {
        b[6 + j] = j as u8 | ((j as u8 ^ 5) << 4);
    }
    let y = dequant(GgmlType::Q5_0, &b);
    for j in 0..32 {
        let nib = if j < 16 {
            j as u32
        } else {
            (j as u32 - 16) ^ 5
        };
        let q = nib | (((qh >> j) & 1) << 4);
        assert_eq!(y[j], q as f32 - 16.0, "element {j}");
    }
    let mut b1 = vec![0u8; 24];
    b1[0..2].copy_from_slice(&h(2.0));
    b1[2..4].copy_from_slice(&h(0.5));
    b1[4..24].copy_from_slice(&b[2..22]);
    let y1 = dequant(GgmlType::Q5_1, &b1);
    for j in 0..32 {
        assert_eq!(y1[j], (y[j] + 16.0) * 2.0 + 0.5);
    }
}

#[test]
fn q8_0_q8_1_q8_k_hand_built() {
    let mut b = vec![0u8; 34];
    b[0..2].copy_from_slice(&h(2.0));
    for j in 0..32 {
        b[2 + j] = (j as i8 - 16) as u8;
    }
    let y = dequant(GgmlType::Q8_0, &b);
    assert!((0..32).all(|j| y[j] == 2.0 * (j as f32 - 16.0)));
    let mut b1 = vec![0u8; 36];
    b1[0..2].copy_from_slice(&h(2.0));
    b1[4..36].copy_from_slice(&b[2..34]);
    assert_eq!(dequant(GgmlType::Q8_1, &b1), y);
    let mut k = vec![0u8; 292];
    k[0..4].copy_from_slice(&0.125f32.to_le_bytes());
    for j in 0..256 {
        k[4 + j] = (j as u8).wrapping_sub(128);
    }
    let y = dequant(GgmlType::Q8K, &k);
    assert!((0..256).all(|j| y[j] == 0.125 * (j as f32 - 128.0)));
}

/// Random 256-element level arrays and scales, packed by a packer written from the layout
/// description; the decoder must produce `value(i)` exactly.
#[test]
fn k_quants_hand_packed() {
    let mut rng = Rng::new(7);
    for _ in 0..20 {
        let levels: Vec<u8> = (0..256).map(|_| rng.below(64) as u8).collect();
        let sc: Vec<u8> = (0..16).map(|_| rng.below(64) as u8).collect();
        let mn: Vec<u8> = (0..16).map(|_| rng.below(64) as u8).collect();
        let (d, dmin) = (0.0625f32, 0.03125f32);

        // Q2_K: 2-bit levels, 4-bit scale and min per 16.
        let mut b = vec![0u8; 84];
        for g in 0..16 {
            b[g] = (sc[g] & 0xF) | ((mn[g] & 0xF) << 4);
        }
        for i in 0..256 {
            b[16 + 32 * (i / 128) + i % 32] |= (levels[i] & 3) << (2 * ((i % 128) / 32));
        }
        b[80..82].copy_from_slice(&h(d));
        b[82..84].copy_from_slice(&h(dmin));
        let y = dequant(GgmlType::Q2K, &b);
        for i in 0..256 {
            let g = i / 16;
            let want =
                d * (sc[g] & 0xF) as f32 * (levels[i] & 3) as f32 - dmin * (mn[g] & 0xF) as f32;
            assert_eq!(y[i], want, "q2_k {i}");
        }

        // Q3_K: 3-bit levels (high bit in hmask), 6-bit signed scales.
        let mut b = vec![0u8; 110];
        for i in 0..256 {
            let l = levels[i] & 7;
            if l > 3 {
                b[i % 32] |= 1 << (i / 32);
            }
            b[32 + 32 * (i / 128) + i % 32] |= (l & 3) << (2 * ((i % 128) / 32));
        }
        for g in 0..16 {
            let s = sc[g];
            if g < 8 {
                b[96 + g] |= s & 0xF;
            } else {
                b[96 + g - 8] |= (s & 0xF) << 4;
            }
            b[96 + 8 + g % 4] |= (s >> 4) << (2 * (g / 4));
        }
        b[108..110].copy_from_slice(&h(d));
        let y = dequant(GgmlType::Q3K, &b);
        for i in 0..256 {
            let want = d * (sc[i / 16] as f32 - 32.0) * ((levels[i] & 7) as f32 - 4.0);
            assert_eq!(y[i], want, "q3_k {i}");
        }

        // Q4_K and Q5_K: 6-bit scale and min per 32.
        let mut packed = [0u8; 12];
        for j in 0..8 {
            let (s, m) = (sc[j], mn[j]);
            if j < 4 {
                packed[j] = s;
                packed[j + 4] = m;
            } else {
                packed[j + 4] = (s & 0xF) | ((m & 0xF) << 4);
                packed[j - 4] |= (s >> 4) << 6;
                packed[j] |= (m >> 4) << 6;
            }
        }
        let mut b4 = vec![0u8; 144];
        let mut b5 = vec![0u8; 176];
        for bb in [&mut b4, &mut b5] {
            bb[0..2].copy_from_slice(&h(d));
            bb[2..4].copy_from_slice(&h(dmin));
            bb[4..16].copy_from_slice(&packed);
        }
        for i in 0..256 {
            let (c, r) = (i / 64, i % 64);
            let shift = 4 * (r / 32);
            b4[16 + 32 * c + r % 32] |= (levels[i] & 0xF) << shift;
            b5[48 + 32 * c + r % 32] |= (levels[i] & 0xF) << shift;
            b5[16 + r % 32] |= ((levels[i] >> 4) & 1) << (2 * c + r / 32);
        }
        let (y4, y5) = (dequant(GgmlType::Q4K, &b4), dequant(GgmlType::Q5K, &b5));
        for i in 0..256 {
            let j = i / 32;
            let (ds, dm) = (d * sc[j] as f32, dmin * mn[j] as f32);
            assert_eq!(y4[i], ds * (levels[i] & 0xF) as f32 - dm, "q4_k {i}");
            assert_eq!(y5[i], ds * (levels[i] & 0x1F) as f32 - dm, "q5_k {i}");
        }

        // Q6_K: 6-bit levels offset by 32, signed 8-bit scale per 16.
        let mut b = vec![0u8; 210];
        for i in 0..256 {
            let (hh, r) = (i / 128, i % 128);
            let (quarter, l) = (r / 32, r % 32);
            let ql_at = 64 * hh + l + 32 * (quarter % 2);
            b[ql_at] |= (levels[i] & 0xF) << (4 * (quarter / 2));
            b[128 + 32 * hh + l] |= (levels[i] >> 4) << (2 * quarter);
        }
        let s6: Vec<i8> = sc.iter().map(|&s| s as i8 - 20).collect();
        for g in 0..16 {
            b[192 + g] = s6[g] as u8;
        }
        b[208..210].copy_from_slice(&h(d));
        let y = dequant(GgmlType::Q6K, &b);
        for i in 0..256 {
            let want = d * s6[i / 16] as f32 * (levels[i] as f32 - 32.0);
            assert_eq!(y[i], want, "q6_k {i}");
        }
    }
}

fn rel_rmse(ty: GgmlType, x: &[f32]) -> f32 {
    let mut q = vec![0u8; ty.row_bytes(x.len()).unwrap()];
    quantize_row(ty, x, &mut q).unwrap();
    let y = dequant(ty, &q);
    let err: f32 = x.iter().zip(&y).map(|(a, b)| (a - b) * (a - b)).sum();
    let norm: f32 = x.iter().map(|a| a * a).sum();
    (err / norm).sqrt()
}

/// Bounds are ~1.25x what ggml's reference quantizers reach on normal data (measured with gguf-py
/// style formulas: step/sqrt(12) over the block's range), so a weaker search fails.
#[test]
fn round_trip_error_is_ggml_like() {
    let mut rng = Rng::new(42);
    let x: Vec<f32> = (0..256 * 64).map(|_| rng.normal()).collect();
    let cases = [
        (GgmlType::F32, 0.0),
        (GgmlType::F16, 2.5e-4),
        (GgmlType::BF16, 2e-3),
        (GgmlType::Q8_0, 0.0058),
        (GgmlType::Q8K, 0.0075),
        (GgmlType::Q6K, 0.0195),
        (GgmlType::Q5_0, 0.047),
        (GgmlType::Q4K, 0.078),
        (GgmlType::Q4_0, 0.093),
    ];
    for (ty, bound) in cases {
        let e = rel_rmse(ty, &x);
        assert!(e <= bound, "{}: relative rmse {e} > {bound}", ty.name());
    }
}

#[test]
fn odd_inputs() {
    for ty in [
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q5_0,
        GgmlType::Q4K,
        GgmlType::Q6K,
        GgmlType::Q8K,
    ] {
        let n = ty.block_elems() * 2;
        // All zeros decode to zeros.
        assert_eq!(rel_rmse_abs(ty, &vec![0.0; n]), 0.0, "{}", ty.name());
        // A single spike survives almost exactly; tiny and huge magnitudes stay finite.
        let mut x = vec![0f32; n];
        x[5] = -3.0;
        let y = round_trip(ty, &x);
        assert!((y[5] + 3.0).abs() < 0.02, "{} spike {}", ty.name(), y[5]);
        assert!(y.iter().enumerate().all(|(i, v)| i == 5 || v.abs() < 0.2));
        for scale in [1e-30f32, 100.0] {
            let x: Vec<f32> = (0..n).map(|i| (i as f32 - 7.0) * scale).collect();
            assert!(
                round_trip(ty, &x).iter().all(|v| v.is_finite()),
                "{} at {scale}",
                ty.name()
            );
        }
        // Wrong lengths are errors, not panics.
        assert!(quantize_row(ty, &vec![0.0; n + 1], &mut vec![0; 1000]).is_err());
        assert!(quantize_row(ty, &vec![0.0; n], &mut [0; 3]).is_err());
    }
    for ty in [
        GgmlType::Q4_1,
        GgmlType::Q5_1,
        GgmlType::Q2K,
        GgmlType::Q3K,
        GgmlType::Q5K,
    ] {
        let mut out = vec![0u8; ty.block_bytes()];
        let err = quantize_row(ty, &vec![0.0; ty.block_elems()], &mut out).unwrap_err();
        assert!(matches!(err, EngineError::Unsupported(_)), "{}", ty.name());
    }
}

fn round_trip(ty: GgmlType, x: &[f32]) -> Vec<f32> {
    let mut q = vec![0u8; ty.row_bytes(x.len()).unwrap()];
    quantize_row(ty, x, &mut q).unwrap();
    dequant(ty, &q)
}

fn rel_rmse_abs(ty: GgmlType, x: &[f32]) -> f32 {
    round_trip(ty, x)
        .iter()
        .zip(x)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

#[test]
#[should_panic(expected = "row length mismatch")]
fn dequantize_checks_length() {
    dequantize_row(GgmlType::Q4_0, &[0u8; 17], &mut [0f32; 32]);
}

/// FNV-1a over the f32 bit patterns, to compare long outputs with a recorded digest.
fn fnv1a(values: &[f32]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in values.iter().flat_map(|v| v.to_le_bytes()) {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// The first four rows of real tensors dequantize bit-identically to gguf-py 0.19.0's
/// `quants.dequantize` (digests recorded from it on qwen2.5-coder-0.5b-instruct-q4_k_m.gguf).
/// Skipped when the model file is not on this machine.
#[test]
fn real_tensors_match_gguf_py() {
    let path = std::env::var("SPROUT_TEST_QWEN")
        .unwrap_or_else(|_| "/work/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf".into());
    if !std::path::Path::new(&path).exists() {
        assert!(
            std::env::var_os("SPROUT_REQUIRE_MODELS").is_none(),
            "{path} missing"
        );
        return;
    }
    let source = crate::gguf::open(&path).expect("model file parses");
    let cases = [
        (
            "output.weight",
            GgmlType::Q8_0,
            896,
            0x0b37_df19_4139_1d12u64,
        ),
        (
            "token_embd.weight",
            GgmlType::Q5_0,
            896,
            0x3ea0_4f60_854f_1b80,
        ),
        (
            "blk.0.ffn_down.weight",
            GgmlType::Q6K,
            4864,
            0x1e6b_3ae3_dc66_9098,
        ),
        (
            "blk.11.ffn_down.weight",
            GgmlType::Q4K,
            4864,
            0xfa21_980b_588f_4ac5,
        ),
    ];
    for (name, ty, cols, digest) in cases {
        let t = source.tensor(name).expect("tensor present");
        assert_eq!(t.ty, ty, "{name}");
        let bytes = ty.row_bytes(cols).unwrap() * 4;
        let y = dequant(ty, &t.data[..bytes]);
        assert_eq!(fnv1a(&y), digest, "{name}");
    }
}
