//! Model hyper-parameters, read from GGUF-style metadata (see [`super::source::ModelSource`]).

use super::source::ModelSource;
use crate::{EngineError, Result};

/// The supported architecture families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// Llama 2/3 and Mistral.
    Llama,
    /// Qwen2 / Qwen2.5: llama with q/k/v biases and NeoX RoPE.
    Qwen2,
    /// Gemma 3: sandwich norms, q/k norms, GELU, interleaved sliding-window layers.
    Gemma3,
    /// BERT encoders (all-MiniLM-L6-v2): absolute positions, post-LayerNorm layers with biases,
    /// an ungated GELU MLP, bidirectional attention; no language-model head.
    Bert,
}

/// How RoPE pairs the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs (x[2i], x[2i+1]): llama in GGUF, whose converter permutes q/k rows for it.
    Interleaved,
    /// Halves (x[i], x[i + d/2]): NeoX, Qwen2, Gemma.
    Neox,
}

/// The feed-forward activation (of the gate in gated MLPs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Silu,
    /// GELU's tanh approximation (Gemma).
    GeluTanh,
    /// Exact GELU, `x·Φ(x)` with the error function (BERT's `hidden_act: gelu`).
    GeluErf,
}

/// Everything the forward pass needs to know about a model's shape.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub arch: Arch,
    pub n_layers: usize,
    pub d_model: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub ffn_dim: usize,
    pub vocab_size: usize,
    pub context_tokens: usize,
    /// Epsilon of the norms: RMSNorm's, or LayerNorm's for BERT.
    pub rms_eps: f32,
    pub rope_base: f32,
    pub rope_style: RopeStyle,
    pub activation: Activation,
    /// Gemma 3: window of local attention layers, in tokens.
    pub sliding_window_tokens: Option<usize>,
    /// Gemma 3: every `sliding_pattern`-th layer (1-based) is global, the others local.
    pub sliding_pattern: usize,
    /// Gemma 3: RoPE base of local layers.
    pub rope_local_base: f32,
    /// Scale applied to q·k (1/sqrt(head_dim) unless the model says otherwise).
    pub attn_scale: f32,
    /// Scale applied to token embeddings (sqrt(d_model) for Gemma).
    pub embed_scale: f32,
    /// Every token attends to every token of its sequence (an encoder, e.g. EmbeddingGemma),
    /// not only to earlier ones; a sequence is then fed whole in one step.
    pub bidirectional: bool,
}

impl ModelConfig {
    /// Reads the configuration of `src`, refusing architectures we do not implement.
    pub fn from_source(src: &ModelSource) -> Result<Self> {
        let arch_name = src.architecture()?.to_string();
        let arch = match arch_name.as_str() {
            "llama" | "mistral" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            "gemma3" | "gemma3_text" => Arch::Gemma3,
            "bert" => Arch::Bert,
            other => return Err(EngineError::Unsupported(format!("architecture {other}"))),
        };
        let key = |k: &str| format!("{arch_name}.{k}");
        let get = |k: &str| -> Result<usize> { Ok(src.u64(&key(k))? as usize) };
        let n_layers = get("block_count")?;
        let d_model = get("embedding_length")?;
        let n_heads = get("attention.head_count")?;
        let n_kv_heads = src
            .u64_opt(&key("attention.head_count_kv"))
            .map_or(n_heads, |v| v as usize);
        let ffn_dim = get("feed_forward_length")?;
        if n_heads == 0 || n_kv_heads == 0 || n_heads % n_kv_heads != 0 || n_layers == 0 {
            return Err(EngineError::invalid(format!(
                "bad head counts: {n_heads} heads, {n_kv_heads} kv heads, {n_layers} layers"
            )));
        }
        let head_dim = src
            .u64_opt(&key("attention.key_length"))
            .map_or(d_model / n_heads, |v| v as usize);
        if head_dim == 0 || !head_dim.is_multiple_of(2) || head_dim > 1024 {
            return Err(EngineError::invalid(format!(
                "bad head dimension {head_dim}"
            )));
        }
        let embd = src.tensor("token_embd.weight")?;
        let vocab_size = *embd.dims.get(1).unwrap_or(&0);
        let context_tokens = src.u64_opt(&key("context_length")).unwrap_or(4096) as usize;
        let bert = arch == Arch::Bert;
        let rms_eps = if bert {
            src.f32_opt(&key("attention.layer_norm_epsilon"))
                .unwrap_or(1e-12)
        } else {
            src.f32_opt(&key("attention.layer_norm_rms_epsilon"))
                .unwrap_or(1e-6)
        };
        let default_base = if arch == Arch::Gemma3 {
            1_000_000.0
        } else {
            10_000.0
        };
        let rope_base = src.f32_opt(&key("rope.freq_base")).unwrap_or(default_base);
        let gemma = arch == Arch::Gemma3;
        let query_scalar = src
            .f32_opt(&key("attention.query_pre_attn_scalar"))
            .unwrap_or(head_dim as f32);
        Ok(Self {
            arch,
            n_layers,
            d_model,
            n_heads,
            n_kv_heads,
            head_dim,
            ffn_dim,
            vocab_size,
            context_tokens,
            rms_eps,
            rope_base,
            rope_style: if arch == Arch::Llama {
                RopeStyle::Interleaved
            } else {
                RopeStyle::Neox
            },
            activation: match arch {
                Arch::Gemma3 => Activation::GeluTanh,
                Arch::Bert => Activation::GeluErf,
                Arch::Llama | Arch::Qwen2 => Activation::Silu,
            },
            sliding_window_tokens: if gemma {
                src.u64_opt(&key("attention.sliding_window"))
                    .map(|v| v as usize)
            } else {
                None
            },
            sliding_pattern: src
                .u64_opt(&key("attention.sliding_window_pattern"))
                .map_or(6, |v| v as usize)
                .max(1),
            rope_local_base: src
                .f32_opt(&key("rope.local.freq_base"))
                .unwrap_or(10_000.0),
            attn_scale: 1.0 / query_scalar.sqrt(),
            embed_scale: if gemma { (d_model as f32).sqrt() } else { 1.0 },
            // An encoder unless its file says causal (llama.cpp's `bert.attention.causal`).
            bidirectional: if bert {
                !matches!(
                    src.get(&key("attention.causal")),
                    Some(crate::gguf::Value::Bool(true))
                )
            } else {
                matches!(
                    src.get(&key("attention.bidirectional")),
                    Some(crate::gguf::Value::Bool(true))
                )
            },
        })
    }

    /// Width of the key (and value) vectors of one token: kv heads × head dim.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    /// Whether layer `layer` attends only inside the sliding window.
    pub fn is_local_layer(&self, layer: usize) -> bool {
        self.sliding_window_tokens.is_some() && !(layer + 1).is_multiple_of(self.sliding_pattern)
    }
}
