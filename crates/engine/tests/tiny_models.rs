//! Tiny random-weight models of every architecture, checked against a plain f32
//! single-sequence reference written here: batched == one-by-one, KV-cache decode == full
//! recompute, KV block boundaries, mixed prefill/decode steps, sliding windows.

use std::collections::BTreeMap;

use sprout_engine::engine::{Engine, EngineConfig, StepInput};
use sprout_engine::gguf::Value;
use sprout_engine::model::source::{ModelSource, SourceTensor};
use sprout_engine::model::Model;
use sprout_engine::quant::GgmlType;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Arch {
    Llama,
    Qwen2,
    Gemma3,
}

struct Dims {
    d: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    ffn: usize,
    vocab: usize,
    layers: usize,
    window: usize,
}

const DIMS: Dims = Dims {
    d: 64,
    heads: 4,
    kv_heads: 2,
    head_dim: 16,
    ffn: 96,
    vocab: 80,
    layers: 3,
    window: 5,
};

/// Deterministic pseudo-random numbers in [-scale, scale).
struct Lcg(u64);
impl Lcg {
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                self.0 = self
                    .0
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
            })
            .collect()
    }
}

/// The f32 weights of a tiny model, by GGUF tensor name; shapes in ggml order.
struct Weights {
    arch: Arch,
    tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
}

impl Weights {
    fn random(arch: Arch, seed: u64) -> Self {
        let mut r = Lcg(seed);
        let mut t = BTreeMap::new();
        let mut put = |name: String, dims: Vec<usize>, scale: f32, offset: f32| {
            let n = dims.iter().product();
            let v = r.vec(n, scale).into_iter().map(|x| x + offset).collect();
            t.insert(name, (dims, v));
        };
        let (q, kv) = (DIMS.heads * DIMS.head_dim, DIMS.kv_heads * DIMS.head_dim);
        put(
            "token_embd.weight".into(),
            vec![DIMS.d, DIMS.vocab],
            0.5,
            0.0,
        );
        put("output_norm.weight".into(), vec![DIMS.d], 0.2, 1.0);
        if arch == Arch::Llama {
            put("output.weight".into(), vec![DIMS.d, DIMS.vocab], 0.3, 0.0);
        }
        for l in 0..DIMS.layers {
            let n = |s: &str| format!("blk.{l}.{s}");
            put(n("attn_norm.weight"), vec![DIMS.d], 0.2, 1.0);
            put(n("attn_q.weight"), vec![DIMS.d, q], 0.25, 0.0);
            put(n("attn_k.weight"), vec![DIMS.d, kv], 0.25, 0.0);
            put(n("attn_v.weight"), vec![DIMS.d, kv], 0.25, 0.0);
            put(n("attn_output.weight"), vec![q, DIMS.d], 0.2, 0.0);
            put(n("ffn_norm.weight"), vec![DIMS.d], 0.2, 1.0);
            put(n("ffn_gate.weight"), vec![DIMS.d, DIMS.ffn], 0.2, 0.0);
            put(n("ffn_up.weight"), vec![DIMS.d, DIMS.ffn], 0.2, 0.0);
            put(n("ffn_down.weight"), vec![DIMS.ffn, DIMS.d], 0.2, 0.0);
            if arch == Arch::Qwen2 {
                put(n("attn_q.bias"), vec![q], 0.3, 0.0);
                put(n("attn_k.bias"), vec![kv], 0.3, 0.0);
                put(n("attn_v.bias"), vec![kv], 0.3, 0.0);
            }
            if arch == Arch::Gemma3 {
                put(n("attn_q_norm.weight"), vec![DIMS.head_dim], 0.2, 1.0);
                put(n("attn_k_norm.weight"), vec![DIMS.head_dim], 0.2, 1.0);
                put(n("post_attention_norm.weight"), vec![DIMS.d], 0.2, 1.0);
                put(n("post_ffw_norm.weight"), vec![DIMS.d], 0.2, 1.0);
            }
        }
        Self { arch, tensors: t }
    }

    fn arch_name(&self) -> &'static str {
        match self.arch {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Gemma3 => "gemma3",
        }
    }

    fn metadata(&self) -> BTreeMap<String, Value> {
        let a = self.arch_name();
        let mut m = BTreeMap::new();
        m.insert("general.architecture".into(), Value::String(a.into()));
        let mut u = |k: &str, v: usize| {
            m.insert(format!("{a}.{k}"), Value::U32(v as u32));
        };
        u("block_count", DIMS.layers);
        u("context_length", 256);
        u("embedding_length", DIMS.d);
        u("feed_forward_length", DIMS.ffn);
        u("attention.head_count", DIMS.heads);
        u("attention.head_count_kv", DIMS.kv_heads);
        u("attention.key_length", DIMS.head_dim);
        if self.arch == Arch::Gemma3 {
            u("attention.sliding_window", DIMS.window);
            // Layers 0 and 1 local, layer 2 global.
            u("attention.sliding_window_pattern", 3);
        }
        m.insert(
            format!("{a}.attention.layer_norm_rms_epsilon"),
            Value::F32(1e-6),
        );
        m.insert(format!("{a}.rope.freq_base"), Value::F32(10_000.0));
        m
    }

    /// A model source with every 2-D matrix stored as `matrix_ty` (1-D tensors stay F32).
    fn source(&self, matrix_ty: GgmlType) -> ModelSource {
        let mut tensors = BTreeMap::new();
        for (name, (dims, data)) in &self.tensors {
            let ty = if dims.len() == 2 {
                matrix_ty
            } else {
                GgmlType::F32
            };
            let mut bytes = vec![0u8; ty.row_bytes(data.len()).unwrap()];
            sprout_engine::quant::blocks::quantize_row(ty, data, &mut bytes).unwrap();
            tensors.insert(
                name.clone(),
                SourceTensor {
                    ty,
                    dims: dims.clone(),
                    data: bytes.into(),
                },
            );
        }
        ModelSource {
            metadata: self.metadata(),
            tensors,
        }
    }

    /// The same weights with every matrix rounded through `ty`, so a reference computed from
    /// them differs from the engine only by the kernels' own arithmetic.
    fn rounded(&self, ty: GgmlType) -> Weights {
        let mut tensors = self.tensors.clone();
        for (dims, data) in tensors.values_mut() {
            if dims.len() == 2 {
                let mut bytes = vec![0u8; ty.row_bytes(data.len()).unwrap()];
                sprout_engine::quant::blocks::quantize_row(ty, data, &mut bytes).unwrap();
                sprout_engine::quant::blocks::dequantize_row(ty, &bytes, data);
            }
        }
        Weights {
            arch: self.arch,
            tensors,
        }
    }

    fn w(&self, name: &str) -> &[f32] {
        &self.tensors[name].1
    }
}

// ---------- the reference: one sequence, everything recomputed, no cache ----------

fn rms(x: &[f32], g: &[f32]) -> Vec<f32> {
    let ms = x.iter().map(|v| (*v as f64) * (*v as f64)).sum::<f64>() / x.len() as f64;
    let inv = 1.0 / (ms + 1e-6).sqrt();
    x.iter()
        .zip(g)
        .map(|(v, g)| (*v as f64 * inv) as f32 * g)
        .collect()
}

/// y = W x where W is stored ggml-style: `rows` rows of `x.len()` elements.
fn mv(w: &[f32], x: &[f32]) -> Vec<f32> {
    w.chunks_exact(x.len())
        .map(|row| {
            row.iter()
                .zip(x)
                .map(|(a, b)| (*a as f64) * (*b as f64))
                .sum::<f64>() as f32
        })
        .collect()
}

fn rope(v: &mut [f32], pos: usize, base: f64, neox: bool) {
    let hd = DIMS.head_dim;
    for head in v.chunks_exact_mut(hd) {
        for i in 0..hd / 2 {
            let theta = pos as f64 * base.powf(-2.0 * i as f64 / hd as f64);
            let (c, s) = (theta.cos() as f32, theta.sin() as f32);
            let (ia, ib) = if neox {
                (i, i + hd / 2)
            } else {
                (2 * i, 2 * i + 1)
            };
            let (a, b) = (head[ia], head[ib]);
            head[ia] = a * c - b * s;
            head[ib] = a * s + b * c;
        }
    }
}

/// Logits after every token of `tokens`, computed from scratch.
fn reference_logits(w: &Weights, tokens: &[u32]) -> Vec<Vec<f32>> {
    let gemma = w.arch == Arch::Gemma3;
    let neox = w.arch != Arch::Llama;
    let n = tokens.len();
    let mut xs: Vec<Vec<f32>> = tokens
        .iter()
        .map(|&t| {
            let row = &w.w("token_embd.weight")[t as usize * DIMS.d..(t as usize + 1) * DIMS.d];
            let s = if gemma { (DIMS.d as f32).sqrt() } else { 1.0 };
            row.iter().map(|v| v * s).collect()
        })
        .collect();
    for l in 0..DIMS.layers {
        let g = |s: &str| w.w(&format!("blk.{l}.{s}"));
        let has = |s: &str| w.tensors.contains_key(&format!("blk.{l}.{s}"));
        let local = gemma && (l + 1) % 3 != 0;
        let mut qs = Vec::new();
        let mut ks = Vec::new();
        let mut vs = Vec::new();
        for (p, x) in xs.iter().enumerate() {
            let h = rms(x, g("attn_norm.weight"));
            let mut q = mv(g("attn_q.weight"), &h);
            let mut k = mv(g("attn_k.weight"), &h);
            let mut v = mv(g("attn_v.weight"), &h);
            if has("attn_q.bias") {
                q.iter_mut()
                    .zip(g("attn_q.bias"))
                    .for_each(|(a, b)| *a += b);
                k.iter_mut()
                    .zip(g("attn_k.bias"))
                    .for_each(|(a, b)| *a += b);
                v.iter_mut()
                    .zip(g("attn_v.bias"))
                    .for_each(|(a, b)| *a += b);
            }
            if gemma {
                q = q
                    .chunks(DIMS.head_dim)
                    .flat_map(|c| rms(c, g("attn_q_norm.weight")))
                    .collect();
                k = k
                    .chunks(DIMS.head_dim)
                    .flat_map(|c| rms(c, g("attn_k_norm.weight")))
                    .collect();
            }
            rope(&mut q, p, 10_000.0, neox);
            rope(&mut k, p, 10_000.0, neox);
            qs.push(q);
            ks.push(k);
            vs.push(v);
        }
        for p in 0..n {
            let mut att = vec![0f32; DIMS.heads * DIMS.head_dim];
            for head in 0..DIMS.heads {
                let kvh = head / (DIMS.heads / DIMS.kv_heads);
                let qh = &qs[p][head * DIMS.head_dim..(head + 1) * DIMS.head_dim];
                let lo = if local {
                    (p + 1).saturating_sub(DIMS.window)
                } else {
                    0
                };
                let scores: Vec<f64> = (lo..=p)
                    .map(|j| {
                        let kj = &ks[j][kvh * DIMS.head_dim..(kvh + 1) * DIMS.head_dim];
                        qh.iter()
                            .zip(kj)
                            .map(|(a, b)| (*a as f64) * (*b as f64))
                            .sum::<f64>()
                            / (DIMS.head_dim as f64).sqrt()
                    })
                    .collect();
                let m = scores.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for (idx, j) in (lo..=p).enumerate() {
                    let vj = &vs[j][kvh * DIMS.head_dim..(kvh + 1) * DIMS.head_dim];
                    for d in 0..DIMS.head_dim {
                        att[head * DIMS.head_dim + d] += (e[idx] / z) as f32 * vj[d];
                    }
                }
            }
            let mut o = mv(g("attn_output.weight"), &att);
            if gemma {
                o = rms(&o, g("post_attention_norm.weight"));
            }
            xs[p].iter_mut().zip(&o).for_each(|(a, b)| *a += b);
        }
        for x in xs.iter_mut() {
            let h = rms(x, g("ffn_norm.weight"));
            let gate = mv(g("ffn_gate.weight"), &h);
            let up = mv(g("ffn_up.weight"), &h);
            let act: Vec<f32> = gate
                .iter()
                .zip(&up)
                .map(|(&a, &u)| {
                    let f = if gemma {
                        0.5 * a
                            * (1.0
                                + ((2.0f32 / std::f32::consts::PI).sqrt()
                                    * (a + 0.044715 * a * a * a))
                                    .tanh())
                    } else {
                        a / (1.0 + (-a).exp())
                    };
                    f * u
                })
                .collect();
            let mut y = mv(g("ffn_down.weight"), &act);
            if gemma {
                y = rms(&y, g("post_ffw_norm.weight"));
            }
            x.iter_mut().zip(&y).for_each(|(a, b)| *a += b);
        }
    }
    let out = if w.tensors.contains_key("output.weight") {
        "output.weight"
    } else {
        "token_embd.weight"
    };
    xs.iter()
        .map(|x| mv(w.w(out), &rms(x, w.w("output_norm.weight"))))
        .collect()
}

// ---------- the checks ----------

fn engine(w: &Weights, ty: GgmlType, block_tokens: usize, threads: usize) -> Engine {
    let model = Model::load(&w.source(ty)).expect("tiny model loads");
    Engine::new(
        model,
        &EngineConfig {
            threads,
            kv_block_tokens: block_tokens,
            kv_capacity_tokens: 512,
        },
    )
}

fn prompt(seed: u32, n: usize) -> Vec<u32> {
    (0..n as u32)
        .map(|i| (i * 37 + seed * 11 + 5) % DIMS.vocab as u32)
        .collect()
}

fn assert_close(a: &[f32], b: &[f32], tol: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1.0);
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * scale,
            "{what}: logit {i}: {x} vs {y} (tol {tol} × {scale})"
        );
    }
}

const ARCHS: [Arch; 3] = [Arch::Llama, Arch::Qwen2, Arch::Gemma3];

#[test]
fn prefill_then_decode_matches_full_recompute() {
    for arch in ARCHS {
        let w = Weights::random(arch, 1);
        let toks = prompt(1, 13);
        let reference = reference_logits(&w, &toks);
        // Block of 4 tokens: the prompt spans several blocks and decode crosses boundaries.
        let mut e = engine(&w, GgmlType::F32, 4, 2);
        let s = e.add_sequence();
        let out = e
            .step(&[StepInput {
                seq: s,
                tokens: &toks[..6],
                want_logits: true,
            }])
            .unwrap();
        assert_close(&out[0], &reference[5], 1e-4, &format!("{arch:?} prefill"));
        for (i, t) in toks.iter().enumerate().skip(6) {
            let out = e
                .step(&[StepInput {
                    seq: s,
                    tokens: &[*t],
                    want_logits: true,
                }])
                .unwrap();
            assert_close(
                &out[0],
                &reference[i],
                1e-4,
                &format!("{arch:?} decode at {i}"),
            );
        }
    }
}

#[test]
fn mixed_batch_equals_one_by_one() {
    for arch in ARCHS {
        let w = Weights::random(arch, 2);
        let prompts: Vec<Vec<u32>> = (0..4).map(|s| prompt(s, 3 + 4 * s as usize)).collect();
        let reference: Vec<_> = prompts.iter().map(|p| reference_logits(&w, p)).collect();
        let mut e = engine(&w, GgmlType::F32, 3, 2);
        let seqs: Vec<_> = prompts.iter().map(|_| e.add_sequence()).collect();
        // Step 1: seq 0 prefills fully; seq 1 prefills its first 2 tokens (no logits wanted).
        let out = e
            .step(&[
                StepInput {
                    seq: seqs[0],
                    tokens: &prompts[0],
                    want_logits: true,
                },
                StepInput {
                    seq: seqs[1],
                    tokens: &prompts[1][..2],
                    want_logits: false,
                },
            ])
            .unwrap();
        assert_eq!(out.len(), 1);
        assert_close(
            &out[0],
            reference[0].last().unwrap(),
            1e-4,
            &format!("{arch:?} step 1"),
        );
        // Step 2: seq 1 finishes its prompt, seq 2 and 3 prefill fully; all want logits.
        let out = e
            .step(&[
                StepInput {
                    seq: seqs[2],
                    tokens: &prompts[2],
                    want_logits: true,
                },
                StepInput {
                    seq: seqs[1],
                    tokens: &prompts[1][2..],
                    want_logits: true,
                },
                StepInput {
                    seq: seqs[3],
                    tokens: &prompts[3],
                    want_logits: true,
                },
            ])
            .unwrap();
        assert_close(
            &out[0],
            reference[2].last().unwrap(),
            1e-4,
            &format!("{arch:?} seq 2"),
        );
        assert_close(
            &out[1],
            reference[1].last().unwrap(),
            1e-4,
            &format!("{arch:?} seq 1"),
        );
        assert_close(
            &out[2],
            reference[3].last().unwrap(),
            1e-4,
            &format!("{arch:?} seq 3"),
        );
        // Step 3: every sequence decodes one more token in one batch, with seq 0 dropping out
        // and its blocks reused by a fresh sequence that prefills alongside.
        e.remove_sequence(seqs[0]);
        let fresh = e.add_sequence();
        let next: Vec<u32> = vec![7, 9, 11];
        let fresh_prompt = prompt(9, 10);
        let out = e
            .step(&[
                StepInput {
                    seq: seqs[1],
                    tokens: &next[0..1],
                    want_logits: true,
                },
                StepInput {
                    seq: fresh,
                    tokens: &fresh_prompt,
                    want_logits: true,
                },
                StepInput {
                    seq: seqs[2],
                    tokens: &next[1..2],
                    want_logits: true,
                },
                StepInput {
                    seq: seqs[3],
                    tokens: &next[2..3],
                    want_logits: true,
                },
            ])
            .unwrap();
        for (k, (p, tok)) in [(1usize, 7u32), (2, 9), (3, 11)].into_iter().enumerate() {
            let mut full = prompts[p].clone();
            full.push(tok);
            let r = reference_logits(&w, &full);
            let idx = if k == 0 { 0 } else { k + 1 };
            assert_close(
                &out[idx],
                r.last().unwrap(),
                1e-4,
                &format!("{arch:?} decode seq {p}"),
            );
        }
        assert_close(
            &out[1],
            reference_logits(&w, &fresh_prompt).last().unwrap(),
            1e-4,
            "fresh",
        );
    }
}

#[test]
fn single_thread_equals_two_threads_exactly() {
    let w = Weights::random(Arch::Qwen2, 3);
    let toks = prompt(3, 20);
    let run = |threads| {
        let mut e = engine(&w, GgmlType::F32, 16, threads);
        let s = e.add_sequence();
        e.step(&[StepInput {
            seq: s,
            tokens: &toks,
            want_logits: true,
        }])
        .unwrap()
        .remove(0)
    };
    assert_eq!(run(1), run(2));
}

#[test]
fn quantized_weights_match_their_dequantized_reference() {
    for arch in ARCHS {
        let w = Weights::random(arch, 4);
        let toks = prompt(4, 9);
        // Kernels may quantize activations (8-bit) for integer dot products: a small error on top.
        for (ty, tol) in [
            (GgmlType::F16, 2e-3),
            (GgmlType::BF16, 2e-3),
            (GgmlType::Q8_0, 5e-2),
            (GgmlType::Q4_0, 5e-2),
            (GgmlType::Q5_0, 5e-2),
        ] {
            let reference = reference_logits(&w.rounded(ty), &toks);
            let mut e = engine(&w, ty, 16, 2);
            let s = e.add_sequence();
            let out = e
                .step(&[StepInput {
                    seq: s,
                    tokens: &toks,
                    want_logits: true,
                }])
                .unwrap();
            assert_close(
                &out[0],
                &reference[8],
                tol,
                &format!("{arch:?} {}", ty.name()),
            );
        }
    }
}

#[test]
fn engine_refuses_bad_steps_without_advancing() {
    let w = Weights::random(Arch::Llama, 5);
    let mut e = engine(&w, GgmlType::F32, 4, 1);
    let s = e.add_sequence();
    let err = e
        .step(&[StepInput {
            seq: s,
            tokens: &[DIMS.vocab as u32],
            want_logits: true,
        }])
        .unwrap_err();
    assert!(err.to_string().contains("outside the vocabulary"), "{err}");
    assert_eq!(e.sequence_tokens(s), Some(0));
    let err = e
        .step(&[StepInput {
            seq: 999,
            tokens: &[1],
            want_logits: true,
        }])
        .unwrap_err();
    assert!(err.to_string().contains("unknown sequence"), "{err}");
    let long = vec![1u32; 257];
    let err = e
        .step(&[StepInput {
            seq: s,
            tokens: &long,
            want_logits: true,
        }])
        .unwrap_err();
    assert!(err.to_string().contains("beyond the context"), "{err}");
    // 512 tokens of KV = 128 blocks of 4: a second sequence cannot take 200 + 200 tokens.
    let a = e.add_sequence();
    e.step(&[StepInput {
        seq: a,
        tokens: &vec![1u32; 200],
        want_logits: false,
    }])
    .unwrap();
    e.step(&[StepInput {
        seq: s,
        tokens: &vec![2u32; 200],
        want_logits: false,
    }])
    .unwrap();
    let b = e.add_sequence();
    let err = e
        .step(&[StepInput {
            seq: b,
            tokens: &vec![3u32; 200],
            want_logits: false,
        }])
        .unwrap_err();
    assert!(err.to_string().contains("KV cache exhausted"), "{err}");
    e.remove_sequence(a);
    e.step(&[StepInput {
        seq: b,
        tokens: &vec![3u32; 200],
        want_logits: false,
    }])
    .unwrap();
}
