//! The llama layer (Llama 2/3, Mistral) — also Qwen2, which only adds q/k/v biases (loaded
//! when present) and rotates with NeoX-style RoPE (a config flag):
//! `x += Wo·attn(rope(Wq·n), rope(Wk·n), Wv·n)` with `n = rmsnorm(x)`, then
//! `x += Wdown·(silu(Wgate·m) ⊙ Wup·m)` with `m = rmsnorm(x)`.

use super::{layers, linear, linear_many, store_kv, LayerWeights, Scratch, StepContext};
use crate::kv::KvPool;

/// Runs layer `l` over all tokens of the step, updating `s.x` in place.
pub(crate) fn layer(
    ctx: &StepContext<'_>,
    kv: &mut KvPool,
    l: usize,
    w: &LayerWeights,
    s: &mut Scratch,
) {
    let c = ctx.cfg;
    let n = ctx.place.positions.len();
    s.xn.resize(s.x.len(), 0.0);
    layers::rms_norm(&s.x, &w.attn_norm, c.rms_eps, &mut s.xn);
    self_attention(ctx, kv, l, w, s, n);
    add_into(&mut s.x, &s.proj);

    layers::rms_norm(&s.x, &w.ffn_norm, c.rms_eps, &mut s.xn);
    feed_forward(ctx, w, s, n);
    add_into(&mut s.x, &s.proj);
}

/// Attention sublayer on the normalized input `s.xn`; result in `s.proj`. Shared with gemma3,
/// which adds per-head q/k norms (present in its weights) before RoPE.
pub(crate) fn self_attention(
    ctx: &StepContext<'_>,
    kv: &mut KvPool,
    l: usize,
    w: &LayerWeights,
    s: &mut Scratch,
    n: usize,
) {
    let c = ctx.cfg;
    linear_many(
        ctx.pool,
        &s.xn,
        n,
        [
            (&w.wq, w.bq.as_deref(), &mut s.q),
            (&w.wk, w.bk.as_deref(), &mut s.k),
            (&w.wv, w.bv.as_deref(), &mut s.v),
        ],
    );
    if let Some(qn) = &w.q_norm {
        layers::rms_norm_in_place(&mut s.q, qn, c.rms_eps);
    }
    if let Some(kn) = &w.k_norm {
        layers::rms_norm_in_place(&mut s.k, kn, c.rms_eps);
    }
    let local = c.is_local_layer(l);
    let rope = if local {
        ctx.rope_local
    } else {
        ctx.rope_global
    };
    let q_width = c.n_heads * c.head_dim;
    let kv_dim = c.kv_dim();
    for t in 0..n {
        rope.apply(t, &mut s.q[t * q_width..(t + 1) * q_width], c.rope_style);
        rope.apply(t, &mut s.k[t * kv_dim..(t + 1) * kv_dim], c.rope_style);
    }
    store_kv(ctx, kv, l, &s.k, &s.v);
    s.attn.resize(n * q_width, 0.0);
    let window = if local { c.sliding_window_tokens } else { None };
    layers::attention(ctx.pool, c, kv, l, &ctx.place, &s.q, window, &mut s.attn);
    linear(ctx.pool, &w.wo, None, &s.attn, n, &mut s.proj);
}

/// Gated feed-forward sublayer on `s.xn`; result in `s.proj`.
pub(crate) fn feed_forward(ctx: &StepContext<'_>, w: &LayerWeights, s: &mut Scratch, n: usize) {
    linear_many(
        ctx.pool,
        &s.xn,
        n,
        [(&w.w_gate, None, &mut s.gate), (&w.w_up, None, &mut s.up)],
    );
    layers::gated_activation(ctx.pool, ctx.cfg.activation, &mut s.gate, &s.up);
    linear(ctx.pool, &w.w_down, None, &s.gate, n, &mut s.proj);
}

/// `x += y`.
pub(crate) fn add_into(x: &mut [f32], y: &[f32]) {
    x.iter_mut().zip(y).for_each(|(a, &b)| *a += b);
}
