//! Model architectures (llama incl. Mistral, qwen2, gemma3; the BERT encoder) and their batched
//! forward pass.
//!
//! One forward step takes the tokens of many sequences at once — prompt chunks and single
//! decode tokens mixed — runs every matrix multiplication over all of them together, and
//! attends per token over that token's own sequence in the paged KV cache.

mod bert;
pub mod config;
mod gemma3;
pub mod layers;
mod llama;
pub mod load;
pub mod source;

use config::{Arch, ModelConfig};
use layers::{RopeTable, TokenPlacement};
use source::{ModelSource, SourceTensor};

use crate::kv::{KvPool, SeqKv};
use crate::quant::blocks::dequantize_row;
use crate::quant::matmul::{matmul, matmul_many, ThreadPool};
use crate::quant::WeightMatrix;
use crate::{EngineError, Result};

/// The weights of one transformer layer. Optional parts exist only in some architectures.
pub(crate) struct LayerWeights {
    pub attn_norm: Vec<f32>,
    pub wq: WeightMatrix,
    pub wk: WeightMatrix,
    pub wv: WeightMatrix,
    pub wo: WeightMatrix,
    pub bq: Option<Vec<f32>>,
    pub bk: Option<Vec<f32>>,
    pub bv: Option<Vec<f32>>,
    pub q_norm: Option<Vec<f32>>,
    pub k_norm: Option<Vec<f32>>,
    pub post_attn_norm: Option<Vec<f32>>,
    pub ffn_norm: Vec<f32>,
    pub w_gate: WeightMatrix,
    pub w_up: WeightMatrix,
    pub w_down: WeightMatrix,
    pub post_ffn_norm: Option<Vec<f32>>,
}

/// A loaded model: configuration and weights (quantized weights stay in their file format).
pub struct Model {
    pub config: ModelConfig,
    weights: Weights,
}

/// The weights of a model, by kind of network.
enum Weights {
    /// A decoder (llama, qwen2, gemma3): its hidden states end in a norm and the LM head.
    Decoder(Box<DecoderWeights>),
    /// A BERT encoder: hidden states only.
    Bert(Box<bert::BertWeights>),
}

/// A decoder's token embedding, layers, final norm and output matrix.
struct DecoderWeights {
    embed: WeightMatrix,
    layers: Vec<LayerWeights>,
    output_norm: Vec<f32>,
    output: WeightMatrix,
}

/// The tokens of one forward step. Token `i` is `tokens[i]` at `positions[i]` of sequence
/// `seqs[seq_of_token[i]]`, whose KV table must already have room for it. Logits are computed
/// only for the token indices in `logit_tokens`.
pub struct StepBatch<'a> {
    pub tokens: &'a [u32],
    pub positions: &'a [usize],
    pub seq_of_token: &'a [usize],
    pub seqs: &'a [&'a SeqKv],
    pub logit_tokens: &'a [usize],
}

/// Reusable activation buffers of the forward pass, grown to the largest step seen.
#[derive(Default)]
pub struct Scratch {
    pub x: Vec<f32>,
    pub xn: Vec<f32>,
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    pub attn: Vec<f32>,
    pub proj: Vec<f32>,
    pub gate: Vec<f32>,
    pub up: Vec<f32>,
    /// The step's logits (`logit_tokens × vocab`), reused so that a decode step does not
    /// allocate, fault in and zero megabytes of fresh memory (8 rows of a 152k vocabulary are
    /// 4.9 MB).
    pub logits: Vec<f32>,
}

fn resize(buf: &mut Vec<f32>, n: usize) {
    buf.clear();
    buf.resize(n, 0.0);
}

/// Everything a layer needs during one step besides its weights.
pub(crate) struct StepContext<'a> {
    pub pool: &'a ThreadPool,
    pub cfg: &'a ModelConfig,
    pub place: TokenPlacement<'a>,
    pub rope_global: &'a RopeTable,
    pub rope_local: &'a RopeTable,
}

impl Model {
    /// Builds the model from a loaded source, checking every tensor's shape.
    pub fn load(src: &ModelSource) -> Result<Self> {
        let config = ModelConfig::from_source(src)?;
        let weights = if config.arch == Arch::Bert {
            let mut w = bert::BertWeights::load(src, &config)?;
            pack_all(w.layer_matrices().collect());
            Weights::Bert(Box::new(w))
        } else {
            Weights::Decoder(Box::new(DecoderWeights::load(src, &config)?))
        };
        Ok(Self { config, weights })
    }

    /// Runs one step and returns the logits of `batch.logit_tokens`, one row of `vocab_size`
    /// each, in that order (held in `scratch` until the next step). The keys and values of
    /// every token are written to `kv`.
    pub fn forward<'s>(
        &self,
        pool: &ThreadPool,
        kv: &mut KvPool,
        batch: &StepBatch<'_>,
        scratch: &'s mut Scratch,
    ) -> Result<&'s [f32]> {
        let Weights::Decoder(w) = &self.weights else {
            return Err(EngineError::Unsupported(format!(
                "{:?} models have no language-model head: they only embed",
                self.config.arch
            )));
        };
        self.run_layers(pool, kv, batch, scratch)?;
        let c = &self.config;
        let (t, d) = (batch.tokens.len(), c.d_model);
        let n_out = batch.logit_tokens.len();
        resize(&mut scratch.xn, n_out * d);
        for (o, &i) in batch.logit_tokens.iter().enumerate() {
            if i >= t {
                return Err(EngineError::InvalidRequest(format!(
                    "logit row {i} outside the step"
                )));
            }
            layers::rms_norm(
                &scratch.x[i * d..(i + 1) * d],
                &w.output_norm,
                c.rms_eps,
                &mut scratch.xn[o * d..(o + 1) * d],
            );
        }
        let need = n_out * c.vocab_size;
        let logits = &mut scratch.logits;
        if logits.capacity() > 4 * need.max(1 << 20) {
            *logits = Vec::new(); // an all-logits prefill's buffer is not kept for decode steps
        }
        if logits.len() < need {
            logits.resize(need, 0.0);
        }
        // Every element is written: no clearing between steps.
        matmul(pool, &w.output, &scratch.xn, n_out, &mut logits[..need]);
        Ok(&logits[..need])
    }

    /// Runs one step and returns the final hidden state of every token of the step,
    /// `T × d_model` (held in `scratch` until the next step): what an embedding model pools. A
    /// decoder's is normed by its output norm; BERT's is its last layer's output as it is.
    pub fn forward_hidden<'s>(
        &self,
        pool: &ThreadPool,
        kv: &mut KvPool,
        batch: &StepBatch<'_>,
        scratch: &'s mut Scratch,
    ) -> Result<&'s [f32]> {
        self.run_layers(pool, kv, batch, scratch)?;
        let c = &self.config;
        let n = batch.tokens.len() * c.d_model;
        match &self.weights {
            Weights::Decoder(w) => {
                resize(&mut scratch.xn, n);
                layers::rms_norm(&scratch.x, &w.output_norm, c.rms_eps, &mut scratch.xn);
                Ok(&scratch.xn[..n])
            }
            Weights::Bert(_) => Ok(&scratch.x[..n]),
        }
    }

    /// Embeds the step's tokens and runs every layer, leaving the residual stream in
    /// `scratch.x`.
    fn run_layers(
        &self,
        pool: &ThreadPool,
        kv: &mut KvPool,
        batch: &StepBatch<'_>,
        scratch: &mut Scratch,
    ) -> Result<()> {
        let c = &self.config;
        let t = batch.tokens.len();
        let d = c.d_model;
        if batch.positions.len() != t || batch.seq_of_token.len() != t {
            return Err(EngineError::InvalidRequest(
                "step batch arrays differ in length".into(),
            ));
        }
        if let Some(&tok) = batch.tokens.iter().find(|&&t| t as usize >= c.vocab_size) {
            return Err(EngineError::InvalidRequest(format!(
                "token id {tok} outside the vocabulary of {}",
                c.vocab_size
            )));
        }
        let mut seq_end = vec![0usize; batch.seqs.len()];
        for (&s, &p) in batch.seq_of_token.iter().zip(batch.positions) {
            if let Some(e) = seq_end.get_mut(s) {
                *e = (*e).max(p + 1);
            }
        }
        let place = TokenPlacement {
            seq_of_token: batch.seq_of_token,
            positions: batch.positions,
            seqs: batch.seqs,
            seq_end: &seq_end,
        };
        let w = match &self.weights {
            Weights::Decoder(w) => w,
            Weights::Bert(w) => {
                if let Some(&p) = batch.positions.iter().find(|&&p| p >= w.positions()) {
                    return Err(EngineError::InvalidRequest(format!(
                        "position {p} beyond the {} position embeddings",
                        w.positions()
                    )));
                }
                // Absolute positions: no rotary tables.
                let none = RopeTable::new(&[], c.head_dim, c.rope_base);
                let ctx = StepContext {
                    pool,
                    cfg: c,
                    place,
                    rope_global: &none,
                    rope_local: &none,
                };
                w.encode(&ctx, kv, batch.tokens, scratch);
                return Ok(());
            }
        };
        resize(&mut scratch.x, t * d);
        for (row, &tok) in scratch.x.chunks_exact_mut(d).zip(batch.tokens) {
            w.embed.dequantize_row_into(tok as usize, row);
            if c.embed_scale != 1.0 {
                row.iter_mut().for_each(|v| *v *= c.embed_scale);
            }
        }
        let rope_global = RopeTable::new(batch.positions, c.head_dim, c.rope_base);
        let rope_local = if c.sliding_window_tokens.is_some() {
            RopeTable::new(batch.positions, c.head_dim, c.rope_local_base)
        } else {
            RopeTable::new(&[], c.head_dim, c.rope_base)
        };
        let ctx = StepContext {
            pool,
            cfg: c,
            place,
            rope_global: &rope_global,
            rope_local: &rope_local,
        };
        for (l, layer) in w.layers.iter().enumerate() {
            match c.arch {
                Arch::Llama | Arch::Qwen2 => llama::layer(&ctx, kv, l, layer, scratch),
                Arch::Gemma3 => gemma3::layer(&ctx, kv, l, layer, scratch),
                Arch::Bert => unreachable!("BERT weights are never a decoder's"),
            }
        }
        Ok(())
    }
}

impl DecoderWeights {
    /// Reads a decoder's tensors, checking every shape against `c`, and packs its matrices.
    fn load(src: &ModelSource, c: &ModelConfig) -> Result<Self> {
        let d = c.d_model;
        let q_dim = c.n_heads * c.head_dim;
        let kv_dim = c.kv_dim();
        let embed = matrix(src, "token_embd.weight", c.vocab_size, d)?;
        let tied = !src.tensors.contains_key("output.weight");
        let output = if tied {
            embed.clone()
        } else {
            matrix(src, "output.weight", c.vocab_size, d)?
        };
        let mut layers = Vec::with_capacity(c.n_layers);
        for l in 0..c.n_layers {
            let n = |s: &str| format!("blk.{l}.{s}");
            let opt_vec = |s: &str, len: usize| -> Result<Option<Vec<f32>>> {
                let name = n(s);
                if src.tensors.contains_key(&name) {
                    vector(src, &name, len).map(Some)
                } else {
                    Ok(None)
                }
            };
            let gemma = c.arch == Arch::Gemma3;
            let layer = LayerWeights {
                attn_norm: vector(src, &n("attn_norm.weight"), d)?,
                wq: matrix(src, &n("attn_q.weight"), q_dim, d)?,
                wk: matrix(src, &n("attn_k.weight"), kv_dim, d)?,
                wv: matrix(src, &n("attn_v.weight"), kv_dim, d)?,
                wo: matrix(src, &n("attn_output.weight"), d, q_dim)?,
                bq: opt_vec("attn_q.bias", q_dim)?,
                bk: opt_vec("attn_k.bias", kv_dim)?,
                bv: opt_vec("attn_v.bias", kv_dim)?,
                q_norm: opt_vec("attn_q_norm.weight", c.head_dim)?,
                k_norm: opt_vec("attn_k_norm.weight", c.head_dim)?,
                post_attn_norm: opt_vec("post_attention_norm.weight", d)?,
                ffn_norm: vector(src, &n("ffn_norm.weight"), d)?,
                w_gate: matrix(src, &n("ffn_gate.weight"), c.ffn_dim, d)?,
                w_up: matrix(src, &n("ffn_up.weight"), c.ffn_dim, d)?,
                w_down: matrix(src, &n("ffn_down.weight"), d, c.ffn_dim)?,
                post_ffn_norm: opt_vec("post_ffw_norm.weight", d)?,
            };
            if gemma
                && (layer.q_norm.is_none()
                    || layer.k_norm.is_none()
                    || layer.post_attn_norm.is_none()
                    || layer.post_ffn_norm.is_none())
            {
                return Err(EngineError::invalid(format!(
                    "gemma3 layer {l} lacks its q/k or post norms"
                )));
            }
            layers.push(layer);
        }
        let mut w = Self {
            output_norm: vector(src, "output_norm.weight", d)?,
            embed,
            layers,
            output,
        };
        w.pack_matrices(tied);
        Ok(w)
    }

    /// Packs the layers' matrices and the output matrix ([`pack_all`]). An embedding table is
    /// packed only when it is also the output matrix (tied): tokens then look their rows up in
    /// the packed layout.
    fn pack_matrices(&mut self, output_tied: bool) {
        let mut todo: Vec<&mut WeightMatrix> = self
            .layers
            .iter_mut()
            .flat_map(|l| {
                [
                    &mut l.wq,
                    &mut l.wk,
                    &mut l.wv,
                    &mut l.wo,
                    &mut l.w_gate,
                    &mut l.w_up,
                    &mut l.w_down,
                ]
            })
            .collect();
        todo.push(if output_tied {
            &mut self.embed
        } else {
            &mut self.output
        });
        pack_all(todo);
        if output_tied {
            self.output = self.embed.clone();
        }
    }
}

/// Replaces every weight matrix that the kernels of this CPU multiply faster with its rows
/// interleaved ([`WeightMatrix::packed`]) by the packed copy, on all cores (packing lets the
/// file pages it read go, so resident memory stays about one copy of the weights).
fn pack_all(todo: Vec<&mut WeightMatrix>) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let queue = std::sync::Mutex::new(todo);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop();
                let Some(m) = next else { break };
                if let Some(packed) = m.packed() {
                    *m = packed;
                }
            });
        }
    });
}

/// Projects `x` (`n` rows) through `w` into `out`, adding `bias` when present.
pub(crate) fn linear(
    pool: &ThreadPool,
    w: &WeightMatrix,
    bias: Option<&[f32]>,
    x: &[f32],
    n: usize,
    out: &mut Vec<f32>,
) {
    linear_many(pool, x, n, [(w, bias, out)]);
}

/// One projection of [`linear_many`]: weights, optional bias, output.
pub(crate) type Projection<'a> = (&'a WeightMatrix, Option<&'a [f32]>, &'a mut Vec<f32>);

/// [`linear`] for several projections of one input (q/k/v, gate/up), run as one matmul job.
pub(crate) fn linear_many<const K: usize>(
    pool: &ThreadPool,
    x: &[f32],
    n: usize,
    mut proj: [Projection<'_>; K],
) {
    // The matmul writes every element: no clearing (a decode step would zero megabytes).
    for (w, _, out) in proj.iter_mut() {
        out.resize(n * w.rows, 0.0);
    }
    let ws: [&WeightMatrix; K] = std::array::from_fn(|i| proj[i].0);
    let mut ys = proj.each_mut().map(|p| &mut p.2[..]);
    matmul_many(pool, &ws, x, n, &mut ys);
    for (w, bias, out) in proj {
        if let Some(b) = bias {
            for row in out.chunks_exact_mut(w.rows) {
                row.iter_mut().zip(b).for_each(|(o, &b)| *o += b);
            }
        }
    }
}

/// Writes the keys and values of every token of the step into their sequences' blocks.
pub(crate) fn store_kv(ctx: &StepContext<'_>, kv: &mut KvPool, layer: usize, k: &[f32], v: &[f32]) {
    let kv_dim = ctx.cfg.kv_dim();
    let bt = kv.block_tokens();
    for (i, &pos) in ctx.place.positions.iter().enumerate() {
        let (b, s) = ctx.place.seqs[ctx.place.seq_of_token[i]].locate(pos, bt);
        kv.write(
            layer,
            b,
            s,
            &k[i * kv_dim..(i + 1) * kv_dim],
            &v[i * kv_dim..(i + 1) * kv_dim],
        );
    }
}

fn tensor_shape<'a>(src: &'a ModelSource, name: &str, dims: &[usize]) -> Result<&'a SourceTensor> {
    let t = src.tensor(name)?;
    if t.dims != dims {
        return Err(EngineError::invalid(format!(
            "tensor {name} has shape {:?}, expected {:?}",
            t.dims, dims
        )));
    }
    Ok(t)
}

fn matrix(src: &ModelSource, name: &str, rows: usize, cols: usize) -> Result<WeightMatrix> {
    let t = tensor_shape(src, name, &[cols, rows])?;
    WeightMatrix::new(t.ty, rows, cols, t.data.clone())
        .map_err(|e| EngineError::invalid(format!("tensor {name}: {e}")))
}

fn vector(src: &ModelSource, name: &str, len: usize) -> Result<Vec<f32>> {
    let t = tensor_shape(src, name, &[len])?;
    if t.ty.row_bytes(len) != Some(t.data.len()) {
        return Err(EngineError::invalid(format!(
            "tensor {name} has the wrong byte size"
        )));
    }
    let mut out = vec![0f32; len];
    dequantize_row(t.ty, &t.data, &mut out);
    Ok(out)
}
