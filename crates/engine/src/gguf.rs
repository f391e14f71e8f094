//! GGUF v2/v3 reader and writer. Parsing is defensive: every count, length and offset from the
//! file is checked against the bytes that remain before anything is allocated.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use crate::model::source::{ModelSource, SourceTensor};
use crate::quant::{GgmlType, TensorBytes};
use crate::{EngineError, Result};

mod write;
pub use write::write_gguf;

/// The four bytes every GGUF file starts with.
const MAGIC: &[u8; 4] = b"GGUF";
/// Data alignment when the file has no `general.alignment` key.
pub const DEFAULT_ALIGNMENT: usize = 32;
/// The most dimensions a ggml tensor can have.
const MAX_DIMS: usize = 4;
/// How deep arrays may nest (an array of arrays is depth 2); real files never nest.
const MAX_ARRAY_DEPTH: usize = 2;
/// Smallest encoding of one metadata entry: key length, an empty key, type, a 1-byte value.
const MIN_KV_BYTES: u64 = 8 + 4 + 1;
/// Smallest encoding of one tensor entry: name length, n_dims, one dim, type, offset.
const MIN_TENSOR_BYTES: u64 = 8 + 4 + 8 + 4 + 8;

/// A GGUF metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
}

impl Value {
    /// Any non-negative integer as u64.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }
    /// Any float or integer as f32.
    pub fn as_f32(&self) -> Option<f32> {
        match *self {
            Value::F32(v) => Some(v),
            Value::F64(v) => Some(v as f32),
            Value::I8(v) => Some(v.into()),
            Value::I16(v) => Some(v.into()),
            Value::I32(v) => Some(v as f32),
            Value::I64(v) => Some(v as f32),
            _ => self.as_u64().map(|v| v as f32),
        }
    }
    /// A string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
    /// An array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(v) => Some(v),
            _ => None,
        }
    }

    /// The GGUF value type id.
    fn type_id(&self) -> u32 {
        match self {
            Value::U8(_) => 0,
            Value::I8(_) => 1,
            Value::U16(_) => 2,
            Value::I16(_) => 3,
            Value::U32(_) => 4,
            Value::I32(_) => 5,
            Value::F32(_) => 6,
            Value::Bool(_) => 7,
            Value::String(_) => 8,
            Value::Array(_) => 9,
            Value::U64(_) => 10,
            Value::I64(_) => 11,
            Value::F64(_) => 12,
        }
    }
}

/// Smallest encoded size of one value of type `ty`, so array counts can be checked up front.
fn min_value_bytes(ty: u32) -> Option<u64> {
    Some(match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        10..=12 => 8,
        8 => 8,     // length prefix of an empty string
        9 => 4 + 8, // element type and count of an empty array
        _ => return None,
    })
}

/// Metadata of a GGUF file, by key.
pub type Metadata = BTreeMap<String, Value>;

/// One tensor's entry in a GGUF file, checked against the file's size.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    /// Tensor name (`blk.0.attn_q.weight`).
    pub name: String,
    /// Shape in ggml order: `dims[0]` is the contiguous row length.
    pub dims: Vec<usize>,
    /// Element type.
    pub ty: GgmlType,
    /// Byte offset relative to the start of the data section.
    pub offset: usize,
    /// Size of the tensor's data in bytes.
    pub n_bytes: usize,
}

/// A parsed GGUF file: header, metadata and tensor directory (data stays in the input bytes).
#[derive(Clone, Debug)]
pub struct GgufFile {
    /// Format version (2 or 3).
    pub version: u32,
    /// Metadata key/values.
    pub metadata: Metadata,
    /// Tensor directory in file order.
    pub tensors: Vec<TensorInfo>,
    /// Data alignment in bytes (a power of two).
    pub alignment: usize,
    /// Absolute byte offset of the data section.
    pub data_offset: usize,
}

/// A bounds-checked little-endian cursor over the file's bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> u64 {
        (self.bytes.len() - self.pos) as u64
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if (n as u64) > self.remaining() {
            return Err(EngineError::invalid(format!(
                "truncated GGUF: {what} needs {n} bytes at offset {}, {} remain",
                self.pos,
                self.remaining()
            )));
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// A length-prefixed byte string; the length is checked before it is used.
    fn bytes_string(&mut self, what: &str) -> Result<&'a [u8]> {
        let len = self.u64(what)?;
        if len > self.remaining() {
            return Err(EngineError::invalid(format!(
                "{what}: string length {len} at offset {} runs past the end of the file",
                self.pos - 8
            )));
        }
        self.take(len as usize, what)
    }

    /// A string that must be valid UTF-8 (keys and tensor names).
    fn name(&mut self, what: &str) -> Result<String> {
        let raw = self.bytes_string(what)?;
        String::from_utf8(raw.to_vec())
            .map_err(|_| EngineError::invalid(format!("{what} is not valid UTF-8")))
    }

    /// A count of entries each at least `min_bytes` long, checked against the remaining bytes.
    fn count(&mut self, what: &str, min_bytes: u64) -> Result<usize> {
        let n = self.u64(what)?;
        match n.checked_mul(min_bytes) {
            Some(need) if need <= self.remaining() => Ok(n as usize),
            _ => Err(EngineError::invalid(format!(
                "{what} {n} is impossible: the {} remaining bytes hold at most {}",
                self.remaining(),
                self.remaining() / min_bytes.max(1)
            ))),
        }
    }

    fn value(&mut self, ty: u32, depth: usize, key: &str) -> Result<Value> {
        Ok(match ty {
            0 => Value::U8(self.array::<1>(key)?[0]),
            1 => Value::I8(i8::from_le_bytes(self.array(key)?)),
            2 => Value::U16(u16::from_le_bytes(self.array(key)?)),
            3 => Value::I16(i16::from_le_bytes(self.array(key)?)),
            4 => Value::U32(u32::from_le_bytes(self.array(key)?)),
            5 => Value::I32(i32::from_le_bytes(self.array(key)?)),
            6 => Value::F32(f32::from_le_bytes(self.array(key)?)),
            7 => match self.array::<1>(key)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => {
                    return Err(EngineError::invalid(format!(
                        "metadata {key}: bool byte {b} is not 0 or 1"
                    )))
                }
            },
            // Values are free text (token pieces); a stray invalid byte must not reject the
            // whole model, so it becomes U+FFFD. Keys and tensor names stay strict.
            8 => Value::String(String::from_utf8_lossy(self.bytes_string(key)?).into_owned()),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(EngineError::invalid(format!(
                        "metadata {key}: arrays nested deeper than {MAX_ARRAY_DEPTH}"
                    )));
                }
                let elem_ty = self.u32(key)?;
                let min = min_value_bytes(elem_ty).ok_or_else(|| {
                    EngineError::invalid(format!(
                        "metadata {key}: unknown array element type {elem_ty}"
                    ))
                })?;
                let n = self.count(&format!("metadata {key}: array length"), min)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(elem_ty, depth + 1, key)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(u64::from_le_bytes(self.array(key)?)),
            11 => Value::I64(i64::from_le_bytes(self.array(key)?)),
            12 => Value::F64(f64::from_le_bytes(self.array(key)?)),
            other => {
                return Err(EngineError::invalid(format!(
                    "metadata {key}: unknown value type {other}"
                )))
            }
        })
    }
}

impl GgufFile {
    /// Parses and validates a whole GGUF file held in memory.
    pub fn parse(bytes: &[u8]) -> Result<GgufFile> {
        let mut r = Reader { bytes, pos: 0 };
        if r.take(4, "magic").ok() != Some(MAGIC.as_slice()) {
            return Err(EngineError::invalid("not a GGUF file (bad magic)"));
        }
        let version = r.u32("version")?;
        if version != 2 && version != 3 {
            return Err(EngineError::invalid(format!(
                "GGUF version {version} is not supported (only 2 and 3, little-endian)"
            )));
        }
        let n_tensors = r.u64("tensor count")?;
        let n_kv = r.count("metadata count", MIN_KV_BYTES)?;
        if n_tensors
            .checked_mul(MIN_TENSOR_BYTES)
            .is_none_or(|need| need > r.remaining())
        {
            return Err(EngineError::invalid(format!(
                "tensor count {n_tensors} is impossible for a file of {} bytes",
                bytes.len()
            )));
        }

        let mut metadata = Metadata::new();
        for _ in 0..n_kv {
            let key = r.name("metadata key")?;
            let ty = r.u32("metadata value type")?;
            let value = r.value(ty, 0, &key)?;
            if metadata.insert(key.clone(), value).is_some() {
                return Err(EngineError::invalid(format!(
                    "duplicate metadata key {key}"
                )));
            }
        }
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a.is_power_of_two() && a <= 1 << 30 => a as usize,
                _ => {
                    return Err(EngineError::invalid(format!(
                        "general.alignment {v:?} is not a power of two"
                    )))
                }
            },
        };

        // The check above bounds n_tensors by the file size, so this allocation is bounded too.
        let mut tensors = Vec::with_capacity(n_tensors as usize);
        let mut names = HashSet::new();
        for _ in 0..n_tensors {
            let info = read_tensor_info(&mut r, alignment)?;
            if !names.insert(info.name.clone()) {
                return Err(EngineError::invalid(format!(
                    "duplicate tensor name {}",
                    info.name
                )));
            }
            tensors.push(info);
        }

        let data_offset = r
            .pos
            .checked_next_multiple_of(alignment)
            .ok_or_else(|| EngineError::invalid("data section offset overflows"))?;
        let data_len = bytes.len().saturating_sub(data_offset);
        check_layout(&tensors, data_len)?;
        Ok(GgufFile {
            version,
            metadata,
            tensors,
            alignment,
            data_offset,
        })
    }

    /// Builds a [`ModelSource`] whose tensors are windows into `map`, the bytes this file was
    /// parsed from.
    fn into_mapped_source(self, map: Arc<memmap2::Mmap>) -> ModelSource {
        let tensors = self
            .tensors
            .into_iter()
            .map(|t| {
                let data = TensorBytes::Mapped {
                    map: map.clone(),
                    offset: self.data_offset + t.offset,
                    len: t.n_bytes,
                };
                (
                    t.name,
                    SourceTensor {
                        ty: t.ty,
                        dims: t.dims,
                        data,
                    },
                )
            })
            .collect();
        ModelSource {
            metadata: self.metadata,
            tensors,
        }
    }
}

/// Reads one tensor entry and checks everything that does not need the other entries.
fn read_tensor_info(r: &mut Reader<'_>, alignment: usize) -> Result<TensorInfo> {
    let name = r.name("tensor name")?;
    let n_dims = r.u32("tensor dimension count")? as usize;
    if n_dims == 0 || n_dims > MAX_DIMS {
        return Err(EngineError::invalid(format!(
            "tensor {name}: {n_dims} dimensions (must be 1 to {MAX_DIMS})"
        )));
    }
    let mut dims = Vec::with_capacity(n_dims);
    for _ in 0..n_dims {
        let d = r.u64("tensor dimension")?;
        if d == 0 || d > usize::MAX as u64 {
            return Err(EngineError::invalid(format!(
                "tensor {name}: dimension {d} is invalid"
            )));
        }
        dims.push(d as usize);
    }
    let type_id = r.u32("tensor type")?;
    let ty = GgmlType::from_id(type_id)
        .map_err(|e| EngineError::invalid(format!("tensor {name}: {e}")))?;
    let offset = r.u64("tensor offset")?;
    let n_bytes = tensor_bytes(&name, ty, &dims)?;
    if offset % alignment as u64 != 0 {
        return Err(EngineError::invalid(format!(
            "tensor {name}: offset {offset} is not a multiple of the alignment {alignment}"
        )));
    }
    let offset = usize::try_from(offset).map_err(|_| {
        EngineError::invalid(format!(
            "tensor {name}: offset {offset} past the end of the file"
        ))
    })?;
    Ok(TensorInfo {
        name,
        dims,
        ty,
        offset,
        n_bytes,
    })
}

/// Byte size of a tensor of `ty` and `dims`, refusing partial blocks and overflow.
fn tensor_bytes(name: &str, ty: GgmlType, dims: &[usize]) -> Result<usize> {
    let overflow =
        || EngineError::invalid(format!("tensor {name}: size of shape {dims:?} overflows"));
    let Some((&cols, rest)) = dims.split_first() else {
        return Err(EngineError::invalid(format!(
            "tensor {name}: no dimensions"
        )));
    };
    if cols % ty.block_elems() != 0 {
        return Err(EngineError::invalid(format!(
            "tensor {name}: row of {cols} elements is not a whole number of {} blocks of {}",
            ty.name(),
            ty.block_elems()
        )));
    }
    let row = ty.row_bytes(cols).ok_or_else(overflow)?;
    rest.iter()
        .try_fold(row, |acc, &d| acc.checked_mul(d))
        .ok_or_else(overflow)
}

/// Checks that every tensor lies inside the data section and that no two overlap.
fn check_layout(tensors: &[TensorInfo], data_len: usize) -> Result<()> {
    let mut spans: Vec<(usize, usize, &str)> = Vec::with_capacity(tensors.len());
    for t in tensors {
        let end = t.offset.checked_add(t.n_bytes).filter(|&e| e <= data_len).ok_or_else(|| {
            EngineError::invalid(format!(
                "tensor {}: {} bytes at data offset {} run past the end of the file (data section is {data_len} bytes)",
                t.name, t.n_bytes, t.offset
            ))
        })?;
        spans.push((t.offset, end, &t.name));
    }
    spans.sort_unstable();
    for pair in spans.windows(2) {
        if pair[1].0 < pair[0].1 {
            return Err(EngineError::invalid(format!(
                "tensors {} and {} overlap",
                pair[0].2, pair[1].2
            )));
        }
    }
    Ok(())
}

/// Memory-maps a GGUF file and returns it as a [`ModelSource`] whose tensors point into the map.
pub fn open(path: impl AsRef<Path>) -> Result<ModelSource> {
    let path = path.as_ref();
    let io_err = |source| EngineError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io_err)?;
    // SAFETY: the map is read-only and private to this process. A file truncated or rewritten by
    // another process while mapped is undefined behaviour we accept, as every mmap loader does;
    // model files are not expected to change while being served.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io_err)?;
    let parsed = GgufFile::parse(&map).map_err(|e| match e {
        EngineError::InvalidModel(m) => {
            EngineError::InvalidModel(format!("{}: {m}", path.display()))
        }
        other => other,
    })?;
    Ok(parsed.into_mapped_source(Arc::new(map)))
}

/// Parses GGUF bytes held in memory into a [`ModelSource`] with owned tensor copies (tests and
/// small generated models; real files go through [`open`]).
pub fn source_from_bytes(bytes: &[u8]) -> Result<ModelSource> {
    let parsed = GgufFile::parse(bytes)?;
    let base = parsed.data_offset;
    let tensors = parsed
        .tensors
        .into_iter()
        .map(|t| {
            let data = bytes[base + t.offset..base + t.offset + t.n_bytes]
                .to_vec()
                .into();
            (
                t.name,
                SourceTensor {
                    ty: t.ty,
                    dims: t.dims,
                    data,
                },
            )
        })
        .collect();
    Ok(ModelSource {
        metadata: parsed.metadata,
        tensors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_reads_back_metadata_and_tensors() {
        let meta = vec![
            (
                "general.architecture".to_string(),
                Value::String("llama".into()),
            ),
            ("llama.block_count".to_string(), Value::U32(2)),
            (
                "x.list".to_string(),
                Value::Array(vec![Value::I32(-1), Value::I32(7)]),
            ),
        ];
        let a: Vec<u8> = (0..12u8).collect();
        let b: Vec<u8> = vec![9; 34];
        let tensors = vec![
            ("a".to_string(), GgmlType::F32, vec![3], a.clone()),
            ("b".to_string(), GgmlType::Q8_0, vec![32], b.clone()),
        ];
        let mut buf = Vec::new();
        write_gguf(&mut buf, &meta, &tensors).unwrap();
        let f = GgufFile::parse(&buf).unwrap();
        assert_eq!(f.version, 3);
        assert_eq!(f.alignment, 32);
        assert_eq!(f.data_offset % 32, 0);
        assert_eq!(f.metadata.len(), 3);
        assert_eq!(f.metadata["x.list"], meta[2].1);
        assert_eq!(f.tensors[1].offset, 32);
        let src = source_from_bytes(&buf).unwrap();
        assert_eq!(&src.tensor("a").unwrap().data[..], &a[..]);
        assert_eq!(&src.tensor("b").unwrap().data[..], &b[..]);
    }

    #[test]
    fn writer_rejects_wrong_byte_count() {
        let tensors = vec![("a".to_string(), GgmlType::F32, vec![3], vec![0u8; 8])];
        assert!(write_gguf(Vec::new(), &[], &tensors).is_err());
    }
}
