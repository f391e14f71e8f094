//! BERT encoders (sentence-transformers' all-MiniLM-L6-v2 and kin), the whole forward pass:
//!
//! `x = LN(word[t] + position[p] + token_type[0])`, then in every layer
//! `x = LN(x + Wo·attn(Wq·x, Wk·x, Wv·x))` and `x = LN(x + Wdown·gelu(Wup·x))`: post-norm,
//! every projection and norm with a bias, exact (erf) GELU and no gate, attention over the whole
//! input in both directions and without RoPE (positions enter once, at the embedding). The last
//! layer's output is what an embedding model pools: no final norm, no language-model head.
//!
//! Tensor names are llama.cpp's for BERT (`position_embd`, `token_types`, `token_embd_norm`,
//! `attn_output_norm`, `layer_output_norm`); safetensors_dir.rs maps Hugging Face's onto them.

use super::config::ModelConfig;
use super::llama::add_into;
use super::source::ModelSource;
use super::{layers, linear, linear_many, matrix, store_kv, vector, Scratch, StepContext};
use crate::kv::KvPool;
use crate::quant::WeightMatrix;
use crate::{EngineError, Result};

/// A LayerNorm's scale and shift.
struct LayerNorm {
    weight: Vec<f32>,
    bias: Vec<f32>,
}

impl LayerNorm {
    fn load(src: &ModelSource, name: &str, d: usize) -> Result<Self> {
        Ok(Self {
            weight: vector(src, &format!("{name}.weight"), d)?,
            bias: vector(src, &format!("{name}.bias"), d)?,
        })
    }

    fn apply(&self, x: &mut [f32], eps: f32) {
        layers::layer_norm_in_place(x, &self.weight, &self.bias, eps);
    }
}

/// A projection and its bias.
struct Linear {
    w: WeightMatrix,
    b: Vec<f32>,
}

impl Linear {
    fn load(src: &ModelSource, name: &str, rows: usize, cols: usize) -> Result<Self> {
        Ok(Self {
            w: matrix(src, &format!("{name}.weight"), rows, cols)?,
            b: vector(src, &format!("{name}.bias"), rows)?,
        })
    }
}

/// One encoder layer.
struct Layer {
    q: Linear,
    k: Linear,
    v: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    up: Linear,
    down: Linear,
    out_norm: LayerNorm,
}

/// The weights of a BERT encoder.
pub(crate) struct BertWeights {
    word: WeightMatrix,
    position: WeightMatrix,
    /// Row 0 of the token-type table: every input is one segment (sentence A).
    token_type: Vec<f32>,
    embed_norm: LayerNorm,
    layers: Vec<Layer>,
}

impl BertWeights {
    /// Reads every tensor, checking its shape against `c`.
    pub(crate) fn load(src: &ModelSource, c: &ModelConfig) -> Result<Self> {
        let d = c.d_model;
        let q_dim = c.n_heads * c.head_dim;
        if c.n_kv_heads != c.n_heads || q_dim != d {
            return Err(EngineError::invalid(format!(
                "bert: {} heads of {} do not make the width {d} with as many kv heads ({})",
                c.n_heads, c.head_dim, c.n_kv_heads
            )));
        }
        let rows_of = |name: &str| -> Result<usize> {
            Ok(src.tensor(name)?.dims.get(1).copied().unwrap_or(1))
        };
        let positions = rows_of("position_embd.weight")?;
        if positions < c.context_tokens {
            return Err(EngineError::invalid(format!(
                "bert: {positions} position embeddings for a context of {}",
                c.context_tokens
            )));
        }
        let types = matrix(src, "token_types.weight", rows_of("token_types.weight")?, d)?;
        let mut token_type = vec![0f32; d];
        types.dequantize_row_into(0, &mut token_type);
        let mut layers = Vec::with_capacity(c.n_layers);
        for l in 0..c.n_layers {
            let n = |s: &str| format!("blk.{l}.{s}");
            layers.push(Layer {
                q: Linear::load(src, &n("attn_q"), d, d)?,
                k: Linear::load(src, &n("attn_k"), d, d)?,
                v: Linear::load(src, &n("attn_v"), d, d)?,
                attn_out: Linear::load(src, &n("attn_output"), d, d)?,
                attn_norm: LayerNorm::load(src, &n("attn_output_norm"), d)?,
                up: Linear::load(src, &n("ffn_up"), c.ffn_dim, d)?,
                down: Linear::load(src, &n("ffn_down"), d, c.ffn_dim)?,
                out_norm: LayerNorm::load(src, &n("layer_output_norm"), d)?,
            });
        }
        Ok(Self {
            word: matrix(src, "token_embd.weight", c.vocab_size, d)?,
            position: matrix(src, "position_embd.weight", positions, d)?,
            token_type,
            embed_norm: LayerNorm::load(src, "token_embd_norm", d)?,
            layers,
        })
    }

    /// The layers' matrices (packed for the kernels at load; the embedding tables are only
    /// looked up, row by row).
    pub(crate) fn layer_matrices(&mut self) -> impl Iterator<Item = &mut WeightMatrix> {
        self.layers.iter_mut().flat_map(|l| {
            [
                &mut l.q.w,
                &mut l.k.w,
                &mut l.v.w,
                &mut l.attn_out.w,
                &mut l.up.w,
                &mut l.down.w,
            ]
        })
    }

    /// Embeds the step's tokens and runs every layer, leaving the last hidden states in `s.x`.
    /// Token ids and positions must already be checked against the vocabulary and context.
    pub(crate) fn encode(
        &self,
        ctx: &StepContext<'_>,
        kv: &mut KvPool,
        tokens: &[u32],
        s: &mut Scratch,
    ) {
        let c = ctx.cfg;
        let d = c.d_model;
        s.x.clear();
        s.x.resize(tokens.len() * d, 0.0);
        s.xn.resize(d, 0.0);
        for ((row, &tok), &pos) in s.x.chunks_exact_mut(d).zip(tokens).zip(ctx.place.positions) {
            self.word.dequantize_row_into(tok as usize, row);
            self.position.dequantize_row_into(pos, &mut s.xn[..d]);
            for ((x, &p), &t) in row.iter_mut().zip(&s.xn[..d]).zip(&self.token_type) {
                *x += p + t;
            }
        }
        self.embed_norm.apply(&mut s.x, c.rms_eps);
        for (l, w) in self.layers.iter().enumerate() {
            layer(ctx, kv, l, w, s);
        }
    }

    /// Rows of the position table: positions must stay below it.
    pub(crate) fn positions(&self) -> usize {
        self.position.rows
    }
}

/// Runs layer `l` over all tokens of the step, updating `s.x` in place.
fn layer(ctx: &StepContext<'_>, kv: &mut KvPool, l: usize, w: &Layer, s: &mut Scratch) {
    let c = ctx.cfg;
    let n = ctx.place.positions.len();

    // x = LN(x + Wo·attn(Wq·x, Wk·x, Wv·x)), every token seeing its whole input.
    linear_many(
        ctx.pool,
        &s.x,
        n,
        [
            (&w.q.w, Some(w.q.b.as_slice()), &mut s.q),
            (&w.k.w, Some(w.k.b.as_slice()), &mut s.k),
            (&w.v.w, Some(w.v.b.as_slice()), &mut s.v),
        ],
    );
    store_kv(ctx, kv, l, &s.k, &s.v);
    s.attn.resize(n * c.d_model, 0.0);
    layers::attention(ctx.pool, c, kv, l, &ctx.place, &s.q, None, &mut s.attn);
    let o = &w.attn_out;
    linear(
        ctx.pool,
        &o.w,
        Some(o.b.as_slice()),
        &s.attn,
        n,
        &mut s.proj,
    );
    add_into(&mut s.x, &s.proj);
    w.attn_norm.apply(&mut s.x, c.rms_eps);

    // x = LN(x + Wdown·gelu(Wup·x)): an ungated MLP.
    linear(
        ctx.pool,
        &w.up.w,
        Some(w.up.b.as_slice()),
        &s.x,
        n,
        &mut s.up,
    );
    layers::activation(ctx.pool, c.activation, &mut s.up);
    linear(
        ctx.pool,
        &w.down.w,
        Some(w.down.b.as_slice()),
        &s.up,
        n,
        &mut s.proj,
    );
    add_into(&mut s.x, &s.proj);
    w.out_norm.apply(&mut s.x, c.rms_eps);
}
