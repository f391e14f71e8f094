//! Hugging Face model directories (config.json + *.safetensors, optionally sharded) read as a
//! [`ModelSource`] with the GGUF key and tensor names llama.cpp's converter would produce, so
//! the model code sees one format.
//!
//! Two conversions follow llama.cpp so the forward pass needs no special case: llama q/k rows
//! are permuted for interleaved RoPE, and Gemma 3's RMSNorm weights (stored as `w - 1`) get 1.0
//! added. Other tensors stay as windows into the mapped files. BERT checkpoints (`model_type`
//! bert, the `embeddings.*` / `encoder.layer.N.*` names) get llama.cpp's BERT names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value as Json;

use crate::gguf::Value;
use crate::model::source::{ModelSource, SourceTensor};
use crate::quant::blocks::dequantize_row;
use crate::quant::{GgmlType, TensorBytes};
use crate::{EngineError, Result};

mod bert;

/// Architecture families a Hugging Face `model_type` maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Llama,
    Qwen2,
    Gemma3,
    Bert,
}

impl Family {
    fn from_model_type(model_type: &str) -> Result<Self> {
        match model_type {
            "llama" | "mistral" => Ok(Self::Llama),
            "qwen2" => Ok(Self::Qwen2),
            "gemma3" | "gemma3_text" => Ok(Self::Gemma3),
            "bert" => Ok(Self::Bert),
            other => Err(EngineError::Unsupported(format!(
                "Hugging Face model_type {other}"
            ))),
        }
    }

    fn gguf_name(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Qwen2 => "qwen2",
            Self::Gemma3 => "gemma3",
            Self::Bert => "bert",
        }
    }
}

/// Whether `path` looks like a Hugging Face model directory (has a `config.json`).
pub fn is_hf_dir(path: &Path) -> bool {
    path.is_dir() && path.join("config.json").is_file()
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> EngineError + '_ {
    move |source| EngineError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn read_json(path: &Path) -> Result<Json> {
    let raw = std::fs::read(path).map_err(io_err(path))?;
    serde_json::from_slice(&raw)
        .map_err(|e| EngineError::invalid(format!("{}: {e}", path.display())))
}

/// Loads a Hugging Face model directory.
pub fn open(dir: &Path) -> Result<ModelSource> {
    let config_path = dir.join("config.json");
    let mut config = read_json(&config_path)?;
    // Multimodal Gemma 3 checkpoints keep the language model's settings under text_config.
    if let Some(text) = config.get("text_config").filter(|t| t.is_object()).cloned() {
        let mut text = text;
        if text.get("model_type").is_none() {
            text["model_type"] = Json::String("gemma3_text".into());
        }
        config = text;
    }
    let model_type = config
        .get("model_type")
        .and_then(Json::as_str)
        .ok_or_else(|| {
            EngineError::invalid(format!("{}: model_type missing", config_path.display()))
        })?;
    let family = Family::from_model_type(model_type)?;
    let mut metadata = translate_config(&config, family)?;
    metadata.insert("sprout.source".into(), Value::String("safetensors".into()));
    metadata.insert(
        "sprout.source_dir".into(),
        Value::String(dir.display().to_string()),
    );
    let tokenizer = dir.join("tokenizer.json");
    if tokenizer.is_file() {
        metadata.insert(
            "sprout.tokenizer_json".into(),
            Value::String(tokenizer.display().to_string()),
        );
    }

    let n_heads = uint(&config, "num_attention_heads")?;
    let n_kv_heads = uint_opt(&config, "num_key_value_heads").unwrap_or(n_heads);
    let mut tensors = BTreeMap::new();
    for file in shard_files(dir)? {
        for (name, tensor) in read_shard(&file, family)? {
            let tensor = match family {
                Family::Llama if name.contains(".attn_q.") => permute_rows(&name, tensor, n_heads)?,
                Family::Llama if name.contains(".attn_k.") => {
                    permute_rows(&name, tensor, n_kv_heads)?
                }
                Family::Gemma3 if name.ends_with("norm.weight") => add_one(tensor),
                _ => tensor,
            };
            if tensors.insert(name.clone(), tensor).is_some() {
                return Err(EngineError::invalid(format!(
                    "{}: tensor {name} appears twice",
                    dir.display()
                )));
            }
        }
    }
    if tensors.is_empty() {
        return Err(EngineError::invalid(format!(
            "{}: no safetensors weights found",
            dir.display()
        )));
    }
    Ok(ModelSource { metadata, tensors })
}

fn uint_opt(config: &Json, key: &str) -> Option<u64> {
    config.get(key).and_then(Json::as_u64)
}

fn uint(config: &Json, key: &str) -> Result<u64> {
    uint_opt(config, key).ok_or_else(|| {
        EngineError::invalid(format!("config.json: {key} missing or not an integer"))
    })
}

fn float_opt(config: &Json, key: &str) -> Option<f32> {
    config.get(key).and_then(Json::as_f64).map(|v| v as f32)
}

fn int_value(v: u64) -> Value {
    u32::try_from(v).map_or(Value::U64(v), Value::U32)
}

/// First id of a `bos_token_id`/`eos_token_id` entry (an integer or a list of them).
fn token_id(config: &Json, key: &str) -> Option<u64> {
    match config.get(key)? {
        Json::Array(ids) => ids.first().and_then(Json::as_u64),
        v => v.as_u64(),
    }
}

/// Translates config.json into GGUF metadata keys.
fn translate_config(config: &Json, family: Family) -> Result<BTreeMap<String, Value>> {
    let arch = family.gguf_name();
    let mut m = BTreeMap::new();
    let mut put = |k: &str, v: Value| {
        m.insert(format!("{arch}.{k}"), v);
    };
    let hidden = uint(config, "hidden_size")?;
    let heads = uint(config, "num_attention_heads")?;
    if heads == 0 || hidden == 0 {
        return Err(EngineError::invalid(
            "config.json: hidden_size and num_attention_heads must be positive",
        ));
    }
    let head_dim = uint_opt(config, "head_dim").unwrap_or(hidden / heads);
    put("block_count", int_value(uint(config, "num_hidden_layers")?));
    put("embedding_length", int_value(hidden));
    put(
        "feed_forward_length",
        int_value(uint(config, "intermediate_size")?),
    );
    put("attention.head_count", int_value(heads));
    put(
        "attention.head_count_kv",
        int_value(uint_opt(config, "num_key_value_heads").unwrap_or(heads)),
    );
    put("attention.key_length", int_value(head_dim));
    put("attention.value_length", int_value(head_dim));
    if let Some(v) = uint_opt(config, "max_position_embeddings") {
        put("context_length", int_value(v));
    }
    if let Some(v) = uint_opt(config, "vocab_size") {
        put("vocab_size", int_value(v));
    }
    if let Some(v) = float_opt(config, "rms_norm_eps") {
        put("attention.layer_norm_rms_epsilon", Value::F32(v));
    }
    if let Some(v) = float_opt(config, "rope_theta") {
        put("rope.freq_base", Value::F32(v));
    }
    if let Some(scaling) = config.get("rope_scaling").filter(|s| s.is_object()) {
        let ty = scaling
            .get("rope_type")
            .or_else(|| scaling.get("type"))
            .and_then(Json::as_str);
        if let Some(ty) = ty {
            put("rope.scaling.type", Value::String(ty.to_string()));
        }
        if let Some(f) = float_opt(scaling, "factor") {
            put("rope.scaling.factor", Value::F32(f));
        }
    }
    if family == Family::Gemma3 {
        if let Some(v) = uint_opt(config, "sliding_window") {
            put("attention.sliding_window", int_value(v));
        }
        if let Some(v) = float_opt(config, "rope_local_base_freq") {
            put("rope.local.freq_base", Value::F32(v));
        }
        if let Some(v) = float_opt(config, "query_pre_attn_scalar") {
            put("attention.query_pre_attn_scalar", Value::F32(v));
        }
        if let Some(period) = sliding_period(config)? {
            put("attention.sliding_window_pattern", int_value(period));
        }
        if config
            .get("use_bidirectional_attention")
            .and_then(Json::as_bool)
            == Some(true)
        {
            put("attention.bidirectional", Value::Bool(true));
        }
    }
    if family == Family::Bert {
        bert::translate_config(config, &mut put)?;
    }
    let tied_default = family == Family::Gemma3;
    let tied = config
        .get("tie_word_embeddings")
        .and_then(Json::as_bool)
        .unwrap_or(tied_default);
    m.insert("sprout.tie_word_embeddings".into(), Value::Bool(tied));
    m.insert("general.architecture".into(), Value::String(arch.into()));
    for (hf, gguf) in [
        ("bos_token_id", "tokenizer.ggml.bos_token_id"),
        ("eos_token_id", "tokenizer.ggml.eos_token_id"),
    ] {
        if let Some(id) = token_id(config, hf) {
            m.insert(gguf.into(), int_value(id));
        }
    }
    Ok(m)
}

/// Gemma 3's local/global layer period: `sliding_window_pattern`, or derived from `layer_types`
/// when every `n`-th layer (1-based) is the only kind of full-attention layer.
fn sliding_period(config: &Json) -> Result<Option<u64>> {
    if let Some(n) = uint_opt(config, "sliding_window_pattern") {
        return Ok(Some(n));
    }
    let Some(types) = config.get("layer_types").and_then(Json::as_array) else {
        return Ok(None);
    };
    let full: Vec<bool> = types
        .iter()
        .map(|t| t.as_str() == Some("full_attention"))
        .collect();
    let Some(first) = full.iter().position(|&f| f) else {
        // No global layer at all: a period longer than the model says the same.
        return Ok(Some(full.len() as u64 + 1));
    };
    let period = first + 1;
    if full
        .iter()
        .enumerate()
        .any(|(l, &f)| f != ((l + 1) % period == 0))
    {
        return Err(EngineError::Unsupported(format!(
            "config.json layer_types is not a repeating pattern with every {period}th layer global"
        )));
    }
    Ok(Some(period as u64))
}

/// The safetensors files of a directory: those named by the shard index, else every
/// `*.safetensors` file, in name order.
fn shard_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index_path = dir.join("model.safetensors.index.json");
    if index_path.is_file() {
        let index = read_json(&index_path)?;
        let map = index
            .get("weight_map")
            .and_then(Json::as_object)
            .ok_or_else(|| {
                EngineError::invalid(format!("{}: weight_map missing", index_path.display()))
            })?;
        let mut files = BTreeSet::new();
        for file in map.values() {
            let name = file.as_str().unwrap_or_default();
            // The index is untrusted: a shard must be a plain file name inside the directory.
            if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
                return Err(EngineError::invalid(format!(
                    "{}: bad shard name {file}",
                    index_path.display()
                )));
            }
            files.insert(name.to_string());
        }
        return Ok(files.into_iter().map(|f| dir.join(f)).collect());
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let path = entry.map_err(io_err(dir))?.path();
        if path.extension().is_some_and(|e| e == "safetensors") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Maps one safetensors file and lists the tensors the model uses, by GGUF name, as windows into
/// the map. The others (rotary caches, BERT's integer `position_ids`, poolers, vision towers)
/// are skipped before their dtype is looked at.
fn read_shard(path: &Path, family: Family) -> Result<Vec<(String, SourceTensor)>> {
    let file = std::fs::File::open(path).map_err(io_err(path))?;
    // SAFETY: read-only private map; the file is not expected to change while loaded (as with
    // every mmap loader, a concurrent truncation by another process is outside our control).
    let map = Arc::new(unsafe { memmap2::Mmap::map(&file) }.map_err(io_err(path))?);
    let (header_len, meta) = safetensors::SafeTensors::read_metadata(&map)
        .map_err(|e| EngineError::invalid(format!("{}: {e}", path.display())))?;
    let data_start = 8 + header_len;
    let mut out = Vec::new();
    for (hf_name, info) in meta.tensors() {
        let Some(name) = gguf_tensor_name(&hf_name, family) else {
            tracing::debug!(
                tensor = hf_name,
                "skipping tensor the text model does not use"
            );
            continue;
        };
        let ty = match info.dtype {
            safetensors::Dtype::F32 => GgmlType::F32,
            safetensors::Dtype::F16 => GgmlType::F16,
            safetensors::Dtype::BF16 => GgmlType::BF16,
            other => {
                return Err(EngineError::Unsupported(format!(
                    "{}: tensor {hf_name} has dtype {other:?} (only F32, F16, BF16)",
                    path.display()
                )))
            }
        };
        let mut dims: Vec<usize> = info.shape.iter().rev().copied().collect();
        if dims.is_empty() {
            dims.push(1);
        }
        if dims.contains(&0) || dims.len() > 4 {
            return Err(EngineError::invalid(format!(
                "{}: tensor {hf_name} has shape {:?}",
                path.display(),
                info.shape
            )));
        }
        let (start, end) = info.data_offsets;
        // read_metadata checked that every tensor's bytes lie inside the buffer.
        let data = TensorBytes::Mapped {
            map: map.clone(),
            offset: data_start + start,
            len: end - start,
        };
        out.push((name, SourceTensor { ty, dims, data }));
    }
    Ok(out)
}

/// The GGUF name of a Hugging Face tensor, or None for tensors the text model does not use
/// (rotary caches, vision towers, projectors).
fn gguf_tensor_name(hf: &str, family: Family) -> Option<String> {
    if family == Family::Bert {
        return bert::tensor_name(hf);
    }
    let hf = hf
        .strip_prefix("language_model.")
        .or_else(|| hf.strip_prefix("model.language_model."))
        .map_or(hf, |rest| rest);
    if hf == "lm_head.weight" {
        return Some("output.weight".into());
    }
    let rest = hf.strip_prefix("model.").unwrap_or(hf);
    match rest {
        "embed_tokens.weight" => return Some("token_embd.weight".into()),
        "norm.weight" => return Some("output_norm.weight".into()),
        _ => {}
    }
    let rest = rest.strip_prefix("layers.")?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, suffix) = part.rsplit_once('.')?;
    if suffix != "weight" && suffix != "bias" {
        return None;
    }
    let gemma = family == Family::Gemma3;
    let target = match module {
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "self_attn.q_norm" => "attn_q_norm",
        "self_attn.k_norm" => "attn_k_norm",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        "input_layernorm" => "attn_norm",
        "post_attention_layernorm" if gemma => "post_attention_norm",
        "post_attention_layernorm" => "ffn_norm",
        "pre_feedforward_layernorm" => "ffn_norm",
        "post_feedforward_layernorm" => "post_ffw_norm",
        _ => return None,
    };
    Some(format!("blk.{layer}.{target}.{suffix}"))
}

/// Reorders the output rows of a llama q/k weight (or bias) from Hugging Face's half-split
/// RoPE layout to GGUF's interleaved one: within each head, row `j * half + i` moves to
/// `2 * i + j`, as llama.cpp's converter does.
fn permute_rows(name: &str, t: SourceTensor, n_heads: u64) -> Result<SourceTensor> {
    let (row_elems, rows) = match t.dims[..] {
        [len] => (1, len),
        [cols, rows] => (cols, rows),
        _ => {
            return Err(EngineError::invalid(format!(
                "tensor {name}: q/k must be 1-D or 2-D, is {:?}",
                t.dims
            )))
        }
    };
    let n_heads = n_heads as usize;
    if n_heads == 0 || rows % (2 * n_heads) != 0 {
        return Err(EngineError::invalid(format!(
            "tensor {name}: {rows} rows do not split into {n_heads} heads"
        )));
    }
    let head_rows = rows / n_heads;
    let half = head_rows / 2;
    let row_bytes = t.data.len() / rows;
    debug_assert_eq!(t.ty.row_bytes(row_elems), Some(row_bytes));
    let mut out = vec![0u8; t.data.len()];
    for h in 0..n_heads {
        for j in 0..2 {
            for i in 0..half {
                let src = h * head_rows + j * half + i;
                let dst = h * head_rows + 2 * i + j;
                out[dst * row_bytes..(dst + 1) * row_bytes]
                    .copy_from_slice(&t.data[src * row_bytes..(src + 1) * row_bytes]);
            }
        }
    }
    Ok(SourceTensor {
        data: out.into(),
        ..t
    })
}

/// Gemma 3 norm weights as llama.cpp stores them: `w + 1`, in f32 (adding 1 in bf16 would
/// round the small stored offsets away).
fn add_one(t: SourceTensor) -> SourceTensor {
    let n: usize = t.dims.iter().product();
    let mut vals = vec![0f32; n];
    dequantize_row(t.ty, &t.data, &mut vals);
    let bytes: Vec<u8> = vals.iter().flat_map(|v| (v + 1.0).to_le_bytes()).collect();
    SourceTensor {
        ty: GgmlType::F32,
        dims: t.dims,
        data: bytes.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_names_per_family() {
        let g = |n| gguf_tensor_name(n, Family::Gemma3);
        let l = |n| gguf_tensor_name(n, Family::Llama);
        assert_eq!(
            l("model.layers.3.self_attn.q_proj.weight").as_deref(),
            Some("blk.3.attn_q.weight")
        );
        assert_eq!(
            l("model.layers.0.self_attn.k_proj.bias").as_deref(),
            Some("blk.0.attn_k.bias")
        );
        assert_eq!(
            l("model.layers.1.post_attention_layernorm.weight").as_deref(),
            Some("blk.1.ffn_norm.weight")
        );
        assert_eq!(
            g("model.layers.1.post_attention_layernorm.weight").as_deref(),
            Some("blk.1.post_attention_norm.weight")
        );
        assert_eq!(
            g("model.layers.1.pre_feedforward_layernorm.weight").as_deref(),
            Some("blk.1.ffn_norm.weight")
        );
        assert_eq!(
            g("language_model.model.norm.weight").as_deref(),
            Some("output_norm.weight")
        );
        assert_eq!(l("lm_head.weight").as_deref(), Some("output.weight"));
        assert_eq!(l("model.layers.0.self_attn.rotary_emb.inv_freq"), None);
        assert_eq!(l("vision_tower.blocks.0.weight"), None);
        assert_eq!(l("model.layers.x.mlp.up_proj.weight"), None);
    }

    #[test]
    fn permutes_rows_within_each_head() {
        // 2 heads of 4 rows, one f32 per row: values are the source row numbers.
        let vals: Vec<f32> = (0..8).map(|v| v as f32).collect();
        let t = SourceTensor {
            ty: GgmlType::F32,
            dims: vec![8],
            data: vals
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>()
                .into(),
        };
        let p = permute_rows("q", t, 2).unwrap();
        let mut out = [0f32; 8];
        dequantize_row(GgmlType::F32, &p.data, &mut out);
        assert_eq!(out, [0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]);
    }
}
