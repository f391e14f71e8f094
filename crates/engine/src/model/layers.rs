//! The building blocks shared by every architecture: RMSNorm and LayerNorm, RoPE, gated and
//! plain activations, and attention (causal or bidirectional) over the paged KV cache.

use super::config::{Activation, ModelConfig, RopeStyle};
use crate::kv::{BlockId, KvPool, SeqKv};
use crate::quant::matmul::{SendPtr, ThreadPool};
use crate::vecmath;

/// `out = x / rms(x) * w` for every row of width `w.len()`.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let d = w.len();
    for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let mean_sq = xr.iter().map(|v| v * v).sum::<f32>() / d as f32;
        let inv = 1.0 / (mean_sq + eps).sqrt();
        for ((o, &v), &g) in or.iter_mut().zip(xr).zip(w) {
            *o = v * inv * g;
        }
    }
}

/// In-place RMSNorm of every row of width `w.len()`.
pub fn rms_norm_in_place(x: &mut [f32], w: &[f32], eps: f32) {
    let d = w.len();
    for xr in x.chunks_exact_mut(d) {
        let mean_sq = xr.iter().map(|v| v * v).sum::<f32>() / d as f32;
        let inv = 1.0 / (mean_sq + eps).sqrt();
        for (v, &g) in xr.iter_mut().zip(w) {
            *v *= inv * g;
        }
    }
}

/// In-place LayerNorm of every row of width `w.len()`: `(x − mean) / sqrt(var + eps) · w + b`
/// (BERT's norms; mean and variance summed in f64, as its eps of 1e-12 leaves no slack).
pub fn layer_norm_in_place(x: &mut [f32], w: &[f32], b: &[f32], eps: f32) {
    let d = w.len();
    assert_eq!(b.len(), d, "LayerNorm weight and bias widths");
    for xr in x.chunks_exact_mut(d) {
        let mean = xr.iter().map(|&v| v as f64).sum::<f64>() / d as f64;
        let var = xr.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / d as f64;
        let inv = 1.0 / (var + eps as f64).sqrt();
        for ((v, &g), &b) in xr.iter_mut().zip(w).zip(b) {
            *v = ((*v as f64 - mean) * inv) as f32 * g + b;
        }
    }
}

/// cos/sin of every rotary pair for a list of positions, computed once per step and shared by
/// all layers that use the same base.
pub struct RopeTable {
    half: usize,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl RopeTable {
    /// Tables for `positions` with `head_dim` and frequency `base`.
    pub fn new(positions: &[usize], head_dim: usize, base: f32) -> Self {
        let half = head_dim / 2;
        let mut cos = Vec::with_capacity(positions.len() * half);
        let mut sin = Vec::with_capacity(positions.len() * half);
        let inv_freq: Vec<f64> = (0..half)
            .map(|i| (base as f64).powf(-2.0 * i as f64 / head_dim as f64))
            .collect();
        for &p in positions {
            for f in &inv_freq {
                let theta = p as f64 * f;
                cos.push(theta.cos() as f32);
                sin.push(theta.sin() as f32);
            }
        }
        Self { half, cos, sin }
    }

    /// Rotates every head of token `t` (`x` holds `x.len() / head_dim` heads).
    pub fn apply(&self, t: usize, x: &mut [f32], style: RopeStyle) {
        let half = self.half;
        let cos = &self.cos[t * half..(t + 1) * half];
        let sin = &self.sin[t * half..(t + 1) * half];
        for head in x.chunks_exact_mut(2 * half) {
            match style {
                RopeStyle::Interleaved => {
                    for i in 0..half {
                        let (a, b) = (head[2 * i], head[2 * i + 1]);
                        head[2 * i] = a * cos[i] - b * sin[i];
                        head[2 * i + 1] = a * sin[i] + b * cos[i];
                    }
                }
                RopeStyle::Neox => {
                    for i in 0..half {
                        let (a, b) = (head[i], head[i + half]);
                        head[i] = a * cos[i] - b * sin[i];
                        head[i + half] = a * sin[i] + b * cos[i];
                    }
                }
            }
        }
    }
}

/// Elements of the gated activation per pool task (a multiple of the SIMD width, so splitting
/// changes no result): one task, run inline, for a decode step of one sequence.
const GATE_PIECE: usize = 8192;

/// `gate = act(gate) * up`, elementwise, in pieces over the pool (a serial pass was ~1 % of a
/// batch-8 step and ~2.5 % of a prefill, with the other core waiting).
pub fn gated_activation(pool: &ThreadPool, act: Activation, gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "gate and up shapes");
    let g = SendPtr(gate.as_mut_ptr());
    pool.run(up.len().div_ceil(GATE_PIECE), &|t| {
        let r = t * GATE_PIECE..((t + 1) * GATE_PIECE).min(up.len());
        // SAFETY: tasks take disjoint ranges of `gate`, which outlives `pool.run`.
        let gate = unsafe { std::slice::from_raw_parts_mut(g.get().add(r.start), r.len()) };
        match act {
            Activation::Silu => vecmath::silu_mul(gate, &up[r]),
            Activation::GeluTanh => vecmath::gelu_tanh_mul(gate, &up[r]),
            Activation::GeluErf => {
                vecmath::gelu_erf(gate);
                gate.iter_mut().zip(&up[r]).for_each(|(g, &u)| *g *= u);
            }
        }
    });
}

/// `x = act(x)`, elementwise, in pieces over the pool: the activation of an ungated MLP
/// (BERT's `down(gelu(up·x))`).
pub fn activation(pool: &ThreadPool, act: Activation, x: &mut [f32]) {
    let n = x.len();
    let p = SendPtr(x.as_mut_ptr());
    pool.run(n.div_ceil(GATE_PIECE), &|t| {
        let r = t * GATE_PIECE..((t + 1) * GATE_PIECE).min(n);
        // SAFETY: tasks take disjoint ranges of `x`, which outlives `pool.run`.
        let x = unsafe { std::slice::from_raw_parts_mut(p.get().add(r.start), r.len()) };
        match act {
            Activation::GeluErf => vecmath::gelu_erf(x),
            // No ungated model uses these yet: plain scalar forms.
            Activation::Silu => x.iter_mut().for_each(|v| *v /= 1.0 + (-*v).exp()),
            Activation::GeluTanh => x.iter_mut().for_each(|v| {
                let z = std::f32::consts::FRAC_2_SQRT_PI * std::f32::consts::FRAC_1_SQRT_2;
                *v *= 0.5 * (1.0 + (z * (*v + 0.044_715 * *v * *v * *v)).tanh());
            }),
        }
    });
}

/// Where each token of a step sits: which sequence (index into the step's KV tables) and at
/// which position.
pub struct TokenPlacement<'a> {
    pub seq_of_token: &'a [usize],
    pub positions: &'a [usize],
    pub seqs: &'a [&'a SeqKv],
    /// One past the last position of each sequence after this step (what a bidirectional
    /// model attends up to).
    pub seq_end: &'a [usize],
}

/// Attention of every token of the step over its own sequence's cached keys/values: causal
/// (positions `0..=pos`, or the last `window` of them), or for a bidirectional model the whole
/// sequence (or the positions within `window / 2` on either side). `q` is
/// `T × n_heads·head_dim`; the result goes to `out` with the same shape. The current tokens'
/// keys must already be written.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    pool: &ThreadPool,
    cfg: &ModelConfig,
    kv: &KvPool,
    layer: usize,
    place: &TokenPlacement<'_>,
    q: &[f32],
    window: Option<usize>,
    out: &mut [f32],
) {
    let hd = cfg.head_dim;
    let group = cfg.n_heads / cfg.n_kv_heads;
    let q_width = cfg.n_heads * hd;
    let n_tokens = place.positions.len();
    let block_tokens = kv.block_tokens();
    let out_ptr = SendPtr(out.as_mut_ptr());
    let kv_dim = cfg.n_kv_heads * hd;
    pool.run(n_tokens * cfg.n_kv_heads, &|task| {
        ATTN_SCRATCH.with_borrow_mut(|(scores, acc)| {
            let t = task / cfg.n_kv_heads;
            let g = task % cfg.n_kv_heads;
            let pos = place.positions[t];
            let seq = place.seqs[place.seq_of_token[t]];
            let (first, end) = if cfg.bidirectional {
                let seq_end = place.seq_end[place.seq_of_token[t]];
                match window {
                    Some(w) => (pos.saturating_sub(w / 2), seq_end.min(pos + w / 2 + 1)),
                    None => (0, seq_end),
                }
            } else {
                (window.map_or(0, |w| (pos + 1).saturating_sub(w)), pos + 1)
            };
            let n_ctx = end - first;
            // Reused per thread: no allocation per token once the longest context was seen.
            scores.clear();
            scores.resize(n_ctx * group, 0.0);
            acc.clear();
            acc.resize(group * hd, 0.0);
            let q_heads = &q[t * q_width + g * group * hd..t * q_width + (g + 1) * group * hd];
            for (j, b, s, len) in context_runs(seq, first, end, block_tokens) {
                let keys = &kv.keys_run(layer, b, s, len)[g * hd..];
                for (h, qh) in q_heads.chunks_exact(hd).enumerate() {
                    let out = &mut scores[h * n_ctx + j..h * n_ctx + j + len];
                    vecmath::scores(qh, keys, kv_dim, cfg.attn_scale, out);
                }
            }
            for row in scores.chunks_exact_mut(n_ctx) {
                vecmath::softmax(row);
            }
            for (j, b, s, len) in context_runs(seq, first, end, block_tokens) {
                let values = &kv.values_run(layer, b, s, len)[g * hd..];
                for (h, a) in acc.chunks_exact_mut(hd).enumerate() {
                    vecmath::accumulate(
                        &scores[h * n_ctx + j..h * n_ctx + j + len],
                        values,
                        kv_dim,
                        a,
                    );
                }
            }
            let dst = t * q_width + g * group * hd;
            // SAFETY: each task owns the heads of group `g` of token `t`: a disjoint range of
            // `out`, which outlives `pool.run`; `dst + group·hd <= T * q_width = out.len()`.
            unsafe {
                std::ptr::copy_nonoverlapping(acc.as_ptr(), out_ptr.get().add(dst), group * hd);
            }
        })
    });
}

/// Positions `first..end` of a sequence as runs of consecutive slots of one block:
/// (offset from `first`, block, first slot, length).
fn context_runs(
    seq: &SeqKv,
    first: usize,
    end: usize,
    block_tokens: usize,
) -> impl Iterator<Item = (usize, BlockId, usize, usize)> + '_ {
    let mut p = first;
    std::iter::from_fn(move || {
        (p < end).then(|| {
            let (b, s) = seq.locate(p, block_tokens);
            let len = (block_tokens - s).min(end - p);
            let run = (p - first, b, s, len);
            p += len;
            run
        })
    })
}

thread_local! {
    /// Per-thread attention scores and output accumulators, reused across tokens and steps.
    static ATTN_SCRATCH: std::cell::RefCell<(Vec<f32>, Vec<f32>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gated_activation_in_pieces_equals_one_pass() {
        let n = 3 * GATE_PIECE + 13;
        let up: Vec<f32> = (0..n)
            .map(|i| ((i * 37) % 101) as f32 * 0.02 - 1.0)
            .collect();
        let gate0: Vec<f32> = (0..n).map(|i| ((i * 53) % 97) as f32 * 0.1 - 4.8).collect();
        let pool = ThreadPool::new(2);
        for (act, whole) in [
            (
                Activation::Silu,
                vecmath::silu_mul as fn(&mut [f32], &[f32]),
            ),
            (Activation::GeluTanh, vecmath::gelu_tanh_mul),
        ] {
            let mut want = gate0.clone();
            whole(&mut want, &up);
            let mut got = gate0.clone();
            gated_activation(&pool, act, &mut got, &up);
            assert!(want
                .iter()
                .zip(&got)
                .all(|(a, b)| a.to_bits() == b.to_bits()));
        }
    }

    #[test]
    fn plain_activation_in_pieces_matches_the_scalar_function() {
        let n = 2 * GATE_PIECE + 5;
        let x0: Vec<f32> = (0..n).map(|i| ((i * 53) % 97) as f32 * 0.1 - 4.8).collect();
        let mut got = x0.clone();
        activation(&ThreadPool::new(2), Activation::GeluErf, &mut got);
        let mut want = x0.clone();
        vecmath::gelu_erf(&mut want);
        assert_eq!(got, want);
        let mut silu = x0.clone();
        activation(&ThreadPool::new(1), Activation::Silu, &mut silu);
        for (s, x) in silu.iter().zip(&x0) {
            assert!((s - x / (1.0 + (-x).exp())).abs() < 1e-5);
        }
    }

    #[test]
    fn layer_norm_centres_and_scales() {
        let mut x = [1.0, 2.0, 3.0, 4.0, 10.0, 10.0, 10.0, 10.0];
        layer_norm_in_place(&mut x, &[1.0, 1.0, 2.0, 2.0], &[0.0, 0.5, 0.0, 0.0], 1e-12);
        let s = 1.25f32.sqrt();
        let want = [-1.5 / s, -0.5 / s + 0.5, 1.0 / s, 3.0 / s];
        for (a, b) in x[..4].iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
        assert_eq!(
            &x[4..],
            &[0.0, 0.5, 0.0, 0.0],
            "a constant row becomes the bias"
        );
    }

    #[test]
    fn rms_norm_normalizes() {
        let x = [3.0, 4.0];
        let mut out = [0.0; 2];
        rms_norm(&x, &[1.0, 2.0], 0.0, &mut out);
        let rms = (12.5f32).sqrt();
        assert!((out[0] - 3.0 / rms).abs() < 1e-6 && (out[1] - 8.0 / rms).abs() < 1e-6);
    }

    #[test]
    fn rope_rotates_pairs_by_position() {
        let t = RopeTable::new(&[0, 1], 4, 10_000.0);
        let mut x = [1.0, 0.0, 1.0, 0.0];
        t.apply(0, &mut x, RopeStyle::Interleaved);
        assert_eq!(x, [1.0, 0.0, 1.0, 0.0], "position 0 is the identity");
        let mut x = [1.0, 0.0, 0.0, 0.0];
        t.apply(1, &mut x, RopeStyle::Interleaved);
        assert!((x[0] - 1f32.cos()).abs() < 1e-6 && (x[1] - 1f32.sin()).abs() < 1e-6);
        let mut x = [1.0, 0.0, 0.0, 0.0];
        t.apply(1, &mut x, RopeStyle::Neox);
        assert!((x[0] - 1f32.cos()).abs() < 1e-6 && (x[2] - 1f32.sin()).abs() < 1e-6);
    }
}
