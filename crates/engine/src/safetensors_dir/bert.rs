//! BERT checkpoints (`model_type` bert) as llama.cpp's converter names them: BertModel's
//! `embeddings.*` / `encoder.layer.N.*` tensors and its config.json settings.

use serde_json::Value as Json;

use super::float_opt;
use crate::gguf::Value;
use crate::{EngineError, Result};

/// llama.cpp's name for a tensor of a Hugging Face BertModel (optionally under `bert.`, as in
/// checkpoints with a task head), or None for the pooler, `position_ids` and heads.
pub(super) fn tensor_name(hf: &str) -> Option<String> {
    let hf = hf.strip_prefix("bert.").unwrap_or(hf);
    let (module, suffix) = hf.rsplit_once('.')?;
    // Old TensorFlow-converted checkpoints call LayerNorm's parameters gamma and beta.
    let suffix = match suffix {
        "weight" | "gamma" => "weight",
        "bias" | "beta" => "bias",
        _ => return None,
    };
    let target = match module {
        "embeddings.word_embeddings" => "token_embd".to_string(),
        "embeddings.position_embeddings" => "position_embd".to_string(),
        "embeddings.token_type_embeddings" => "token_types".to_string(),
        "embeddings.LayerNorm" => "token_embd_norm".to_string(),
        _ => {
            let rest = module.strip_prefix("encoder.layer.")?;
            let (layer, part) = rest.split_once('.')?;
            let layer: usize = layer.parse().ok()?;
            let target = match part {
                "attention.self.query" => "attn_q",
                "attention.self.key" => "attn_k",
                "attention.self.value" => "attn_v",
                "attention.output.dense" => "attn_output",
                "attention.output.LayerNorm" => "attn_output_norm",
                "intermediate.dense" => "ffn_up",
                "output.dense" => "ffn_down",
                "output.LayerNorm" => "layer_output_norm",
                _ => return None,
            };
            format!("blk.{layer}.{target}")
        }
    };
    Some(format!("{target}.{suffix}"))
}

/// The BERT settings: LayerNorm epsilon and an encoder's full attention; refuses the variants
/// the forward pass does not implement (relative positions, other activations).
pub(super) fn translate_config(config: &Json, put: &mut impl FnMut(&str, Value)) -> Result<()> {
    let act = config
        .get("hidden_act")
        .and_then(Json::as_str)
        .unwrap_or("gelu");
    if act != "gelu" {
        return Err(EngineError::Unsupported(format!(
            "config.json: BERT with hidden_act {act} (only gelu)"
        )));
    }
    let positions = config
        .get("position_embedding_type")
        .and_then(Json::as_str)
        .unwrap_or("absolute");
    if positions != "absolute" {
        return Err(EngineError::Unsupported(format!(
            "config.json: BERT with {positions} position embeddings (only absolute)"
        )));
    }
    if config.get("is_decoder").and_then(Json::as_bool) == Some(true) {
        return Err(EngineError::Unsupported(
            "config.json: BERT as a decoder".into(),
        ));
    }
    if let Some(eps) = float_opt(config, "layer_norm_eps") {
        put("attention.layer_norm_epsilon", Value::F32(eps));
    }
    put("attention.causal", Value::Bool(false));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_bert_names_to_llama_cpp_ones() {
        let b = tensor_name;
        assert_eq!(
            b("embeddings.word_embeddings.weight").as_deref(),
            Some("token_embd.weight")
        );
        assert_eq!(
            b("bert.embeddings.LayerNorm.gamma").as_deref(),
            Some("token_embd_norm.weight")
        );
        assert_eq!(
            b("encoder.layer.5.attention.output.LayerNorm.bias").as_deref(),
            Some("blk.5.attn_output_norm.bias")
        );
        assert_eq!(
            b("encoder.layer.0.output.dense.weight").as_deref(),
            Some("blk.0.ffn_down.weight")
        );
        assert_eq!(
            b("encoder.layer.0.intermediate.dense.bias").as_deref(),
            Some("blk.0.ffn_up.bias")
        );
        assert_eq!(b("embeddings.position_ids"), None);
        assert_eq!(b("pooler.dense.weight"), None);
        assert_eq!(b("cls.predictions.bias"), None);
    }
}
