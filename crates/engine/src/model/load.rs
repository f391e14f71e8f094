//! Loading a model from a path: a `.gguf` file or a Hugging Face directory, with optional
//! on-load float conversion (`--dtype`) and quantization (`--quantize`) of the weight matrices.

use std::path::Path;

use super::source::{ModelSource, SourceTensor};
use crate::quant::blocks::{dequantize_row, quantize_row};
use crate::quant::GgmlType;
use crate::{gguf, safetensors_dir, EngineError, Result};

/// Loads the model at `path` (a GGUF file or a Hugging Face directory).
///
/// `dtype` (F32, F16 or BF16) re-encodes every float weight matrix; `quantize` (Q8_0 or Q4_K)
/// quantizes every float 2-D matrix whose row length is whole blocks of that type, token
/// embeddings included. Norms, biases and other 1-D tensors keep their type: they are tiny and
/// the model reads them as f32. Already-quantized tensors are never requantized.
pub fn load_source(
    path: &Path,
    dtype: Option<GgmlType>,
    quantize: Option<GgmlType>,
) -> Result<ModelSource> {
    if let Some(t) = dtype.filter(|t| !is_float(*t)) {
        return Err(EngineError::InvalidRequest(format!(
            "--dtype {} is not a float type (f32, f16, bf16)",
            t.name()
        )));
    }
    if let Some(t) = quantize.filter(|t| !matches!(t, GgmlType::Q8_0 | GgmlType::Q4K)) {
        return Err(EngineError::InvalidRequest(format!(
            "--quantize {} is not supported (q8_0, q4_k)",
            t.name()
        )));
    }
    let mut src = if path.is_dir() {
        if !safetensors_dir::is_hf_dir(path) {
            return Err(EngineError::invalid(format!(
                "{}: a model directory needs config.json and *.safetensors",
                path.display()
            )));
        }
        safetensors_dir::open(path)?
    } else {
        gguf::open(path)?
    };
    if dtype.is_some() || quantize.is_some() {
        let names: Vec<String> = src.tensors.keys().cloned().collect();
        for name in names {
            let t = &src.tensors[&name];
            let target = match (quantize, dtype) {
                (Some(q), _) if is_matrix(t) && t.ty != q && t.dims[0] % q.block_elems() == 0 => q,
                (_, Some(d)) if is_matrix(t) && t.ty != d => d,
                _ => continue,
            };
            let converted = convert(&name, t, target)?;
            src.tensors.insert(name, converted);
        }
        if let Some(q) = quantize {
            src.metadata.insert(
                "sprout.quantized_on_load".into(),
                gguf::Value::String(q.name().into()),
            );
        }
    }
    Ok(src)
}

fn is_float(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16)
}

/// A float tensor of 2 or more dimensions: a weight matrix (norms and biases are 1-D).
fn is_matrix(t: &SourceTensor) -> bool {
    is_float(t.ty) && t.dims.len() >= 2
}

/// Re-encodes a float tensor row by row as `target`, on all cores.
fn convert(name: &str, t: &SourceTensor, target: GgmlType) -> Result<SourceTensor> {
    let cols = t.dims[0];
    let rows: usize = t.dims[1..].iter().product();
    let in_row =
        t.ty.row_bytes(cols)
            .filter(|&b| b * rows == t.data.len())
            .ok_or_else(|| {
                EngineError::invalid(format!(
                    "tensor {name}: {} bytes do not match shape {:?}",
                    t.data.len(),
                    t.dims
                ))
            })?;
    let out_row = target.row_bytes(cols).ok_or_else(|| {
        EngineError::invalid(format!(
            "tensor {name}: rows of {cols} do not fit {}",
            target.name()
        ))
    })?;
    let mut out = vec![0u8; out_row * rows];
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(rows)
        .max(1);
    let rows_per_thread = rows.div_ceil(threads);
    let src = &t.data[..];
    std::thread::scope(|scope| -> Result<()> {
        let jobs: Vec<_> = out
            .chunks_mut(rows_per_thread * out_row)
            .zip(src.chunks(rows_per_thread * in_row))
            .map(|(dst, src)| {
                scope.spawn(move || -> Result<()> {
                    let mut row = vec![0f32; cols];
                    for (d, s) in dst.chunks_exact_mut(out_row).zip(src.chunks_exact(in_row)) {
                        dequantize_row(t.ty, s, &mut row);
                        quantize_row(target, &row, d)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for job in jobs {
            job.join().map_err(|_| {
                EngineError::invalid(format!("tensor {name}: conversion thread panicked"))
            })??;
        }
        Ok(())
    })?;
    Ok(SourceTensor {
        ty: target,
        dims: t.dims.clone(),
        data: out.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::{write_gguf, Value};

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn quantizes_matrices_and_keeps_norms() {
        let w: Vec<f32> = (0..64 * 3)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
            .collect();
        let tensors = vec![
            (
                "blk.0.attn_q.weight".to_string(),
                GgmlType::F32,
                vec![64, 3],
                f32_bytes(&w),
            ),
            (
                "blk.0.odd.weight".to_string(),
                GgmlType::F32,
                vec![3, 64],
                f32_bytes(&w),
            ),
            (
                "blk.0.attn_norm.weight".to_string(),
                GgmlType::F32,
                vec![64],
                f32_bytes(&w[..64]),
            ),
        ];
        let meta = [(
            "general.architecture".to_string(),
            Value::String("llama".into()),
        )];
        let path = std::env::temp_dir().join(format!("sprout-load-{}.gguf", std::process::id()));
        write_gguf(std::fs::File::create(&path).unwrap(), &meta, &tensors).unwrap();
        let src = load_source(&path, Some(GgmlType::F16), Some(GgmlType::Q8_0)).unwrap();
        std::fs::remove_file(&path).ok();
        let q = src.tensor("blk.0.attn_q.weight").unwrap();
        assert_eq!(q.ty, GgmlType::Q8_0);
        assert_eq!(q.data.len(), 3 * 2 * 34);
        let mut row = vec![0f32; 64];
        dequantize_row(q.ty, &q.data[2 * 68..3 * 68], &mut row);
        for (a, b) in row.iter().zip(&w[128..]) {
            assert!((a - b).abs() < 0.02, "{a} vs {b}");
        }
        // 3 columns are not whole Q8_0 blocks: falls back to the dtype conversion.
        assert_eq!(src.tensor("blk.0.odd.weight").unwrap().ty, GgmlType::F16);
        assert_eq!(
            src.tensor("blk.0.attn_norm.weight").unwrap().ty,
            GgmlType::F32
        );
    }

    #[test]
    fn refuses_bad_targets() {
        let p = Path::new("/nonexistent.gguf");
        assert!(matches!(
            load_source(p, Some(GgmlType::Q8_0), None),
            Err(EngineError::InvalidRequest(_))
        ));
        assert!(matches!(
            load_source(p, None, Some(GgmlType::F16)),
            Err(EngineError::InvalidRequest(_))
        ));
    }
}
