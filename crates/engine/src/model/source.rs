//! A loaded model file, whatever its format: GGUF-style metadata plus named tensors.
//!
//! GGUF files map straight onto this; Hugging Face directories (config.json + safetensors) are
//! translated to the same metadata keys and tensor names, so the model code has one input.

use std::collections::BTreeMap;

use crate::gguf::Value;
use crate::quant::{GgmlType, TensorBytes};
use crate::{EngineError, Result};

/// One tensor: type, shape in ggml order (`dims[0]` is the contiguous row length) and bytes.
#[derive(Clone, Debug)]
pub struct SourceTensor {
    pub ty: GgmlType,
    pub dims: Vec<usize>,
    pub data: TensorBytes,
}

/// Metadata and tensors of a model, with GGUF key and tensor names
/// (`general.architecture`, `qwen2.block_count`, `blk.0.attn_q.weight`, ...).
#[derive(Clone, Debug, Default)]
pub struct ModelSource {
    pub metadata: BTreeMap<String, Value>,
    pub tensors: BTreeMap<String, SourceTensor>,
}

impl ModelSource {
    /// The metadata value under `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    /// A required unsigned integer (any integer width in the file).
    pub fn u64(&self, key: &str) -> Result<u64> {
        self.get(key).and_then(Value::as_u64).ok_or_else(|| {
            EngineError::invalid(format!("metadata key {key} missing or not an integer"))
        })
    }

    /// An optional unsigned integer.
    pub fn u64_opt(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(Value::as_u64)
    }

    /// An optional float.
    pub fn f32_opt(&self, key: &str) -> Option<f32> {
        self.get(key).and_then(Value::as_f32)
    }

    /// An optional string.
    pub fn str_opt(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }

    /// The architecture name (`general.architecture`).
    pub fn architecture(&self) -> Result<&str> {
        self.str_opt("general.architecture")
            .ok_or_else(|| EngineError::invalid("metadata key general.architecture missing"))
    }

    /// The tensor named `name`.
    pub fn tensor(&self, name: &str) -> Result<&SourceTensor> {
        self.tensors
            .get(name)
            .ok_or_else(|| EngineError::invalid(format!("tensor {name} missing")))
    }
}
