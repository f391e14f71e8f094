//! The Gemma 3 layer: sandwich norms around both sublayers, per-head RMSNorm of q and k, GELU
//! (tanh) gating, and sliding-window attention on all but every sixth layer (local layers use
//! their own RoPE base). Embeddings are scaled by sqrt(d_model) before the first layer.
//!
//! `x += postnorm(attn(prenorm(x)))`, then `x += postnorm(ffn(prenorm(x)))`.

use super::llama::{add_into, feed_forward, self_attention};
use super::{layers, LayerWeights, Scratch, StepContext};
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
    layers::rms_norm_in_place(&mut s.proj, post(&w.post_attn_norm), c.rms_eps);
    add_into(&mut s.x, &s.proj);

    layers::rms_norm(&s.x, &w.ffn_norm, c.rms_eps, &mut s.xn);
    feed_forward(ctx, w, s, n);
    layers::rms_norm_in_place(&mut s.proj, post(&w.post_ffn_norm), c.rms_eps);
    add_into(&mut s.x, &s.proj);
}

fn post(norm: &Option<Vec<f32>>) -> &[f32] {
    norm.as_deref()
        .expect("gemma3 post norms are checked at load")
}
