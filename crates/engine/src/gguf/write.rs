//! The GGUF v3 writer: tiny generated models for tests and converted models on disk.

use std::io::Write;

use super::{tensor_bytes, Value, DEFAULT_ALIGNMENT, MAGIC, MAX_DIMS};
use crate::quant::GgmlType;

fn invalid_input(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, msg)
}

fn write_string<W: Write>(w: &mut W, s: &str) -> std::io::Result<()> {
    w.write_all(&(s.len() as u64).to_le_bytes())?;
    w.write_all(s.as_bytes())
}

fn write_value<W: Write>(w: &mut W, v: &Value) -> std::io::Result<()> {
    match v {
        Value::U8(x) => w.write_all(&[*x]),
        Value::I8(x) => w.write_all(&x.to_le_bytes()),
        Value::U16(x) => w.write_all(&x.to_le_bytes()),
        Value::I16(x) => w.write_all(&x.to_le_bytes()),
        Value::U32(x) => w.write_all(&x.to_le_bytes()),
        Value::I32(x) => w.write_all(&x.to_le_bytes()),
        Value::U64(x) => w.write_all(&x.to_le_bytes()),
        Value::I64(x) => w.write_all(&x.to_le_bytes()),
        Value::F32(x) => w.write_all(&x.to_le_bytes()),
        Value::F64(x) => w.write_all(&x.to_le_bytes()),
        Value::Bool(x) => w.write_all(&[u8::from(*x)]),
        Value::String(s) => write_string(w, s),
        Value::Array(items) => {
            let elem_ty = items.first().map_or(0, Value::type_id);
            if items.iter().any(|i| i.type_id() != elem_ty) {
                return Err(invalid_input("GGUF arrays must hold one value type".into()));
            }
            w.write_all(&elem_ty.to_le_bytes())?;
            w.write_all(&(items.len() as u64).to_le_bytes())?;
            items.iter().try_for_each(|i| write_value(w, i))
        }
    }
}

/// Writes a GGUF v3 file. The alignment is `general.alignment` when `metadata` has it, else 32.
/// Each tensor is `(name, type, dims in ggml order, bytes)`; the byte count must match the shape.
pub fn write_gguf<W: Write>(
    mut w: W,
    metadata: &[(String, Value)],
    tensors: &[(String, GgmlType, Vec<usize>, Vec<u8>)],
) -> std::io::Result<()> {
    let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some((_, v)) => v.as_u64().filter(|a| a.is_power_of_two()).ok_or_else(|| {
            invalid_input(format!("general.alignment {v:?} is not a power of two"))
        })? as usize,
    };
    let mut header = Vec::new();
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&3u32.to_le_bytes());
    header.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    header.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (key, value) in metadata {
        write_string(&mut header, key)?;
        header.extend_from_slice(&value.type_id().to_le_bytes());
        write_value(&mut header, value)?;
    }
    let mut offset = 0usize;
    let mut offsets = Vec::with_capacity(tensors.len());
    for (name, ty, dims, data) in tensors {
        if dims.is_empty() || dims.len() > MAX_DIMS || dims.contains(&0) {
            return Err(invalid_input(format!(
                "tensor {name}: shape {dims:?} is not 1 to 4 positive dimensions"
            )));
        }
        let expected = tensor_bytes(name, *ty, dims).map_err(|e| invalid_input(e.to_string()))?;
        if expected != data.len() {
            return Err(invalid_input(format!(
                "tensor {name}: shape {dims:?} of {} needs {expected} bytes, got {}",
                ty.name(),
                data.len()
            )));
        }
        write_string(&mut header, name)?;
        header.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        for d in dims {
            header.extend_from_slice(&(*d as u64).to_le_bytes());
        }
        header.extend_from_slice(&ty.id().to_le_bytes());
        header.extend_from_slice(&(offset as u64).to_le_bytes());
        offsets.push(offset);
        offset = (offset + data.len()).next_multiple_of(alignment);
    }
    header.resize(header.len().next_multiple_of(alignment), 0);
    w.write_all(&header)?;
    let mut written = 0usize;
    for ((_, _, _, data), start) in tensors.iter().zip(offsets) {
        w.write_all(&vec![0u8; start - written])?;
        w.write_all(data)?;
        written = start + data.len();
    }
    w.flush()
}
