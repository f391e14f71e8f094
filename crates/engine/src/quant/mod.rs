//! Weight formats (ggml block types) and the kernels that multiply them with f32 activations.
//!
//! Layout: `blocks.rs` knows each block format (sizes, scalar dequantize, quantize), `matmul.rs`
//! multiplies a weight matrix with a batch of activation rows, picking an ISA-specific kernel at
//! run time with a scalar reference that tests prove equal.

pub mod amx;
pub mod blocks;
mod decoded;
mod kquants;
pub mod matmul;
mod packed;
mod pool;
#[cfg(target_arch = "x86_64")]
mod x86;

use crate::{EngineError, Result};

/// A ggml tensor element type, numbered as in GGUF.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    Q8K,
    BF16,
}

impl GgmlType {
    /// Maps a GGUF type id to a type; unknown ids are an error, never a panic.
    pub fn from_id(id: u32) -> Result<Self> {
        Ok(match id {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            6 => Self::Q5_0,
            7 => Self::Q5_1,
            8 => Self::Q8_0,
            9 => Self::Q8_1,
            10 => Self::Q2K,
            11 => Self::Q3K,
            12 => Self::Q4K,
            13 => Self::Q5K,
            14 => Self::Q6K,
            15 => Self::Q8K,
            30 => Self::BF16,
            other => {
                return Err(EngineError::Unsupported(format!(
                    "ggml tensor type id {other}"
                )))
            }
        })
    }

    /// The GGUF type id.
    pub fn id(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q4_0 => 2,
            Self::Q4_1 => 3,
            Self::Q5_0 => 6,
            Self::Q5_1 => 7,
            Self::Q8_0 => 8,
            Self::Q8_1 => 9,
            Self::Q2K => 10,
            Self::Q3K => 11,
            Self::Q4K => 12,
            Self::Q5K => 13,
            Self::Q6K => 14,
            Self::Q8K => 15,
            Self::BF16 => 30,
        }
    }

    /// Elements per block.
    pub fn block_elems(self) -> usize {
        match self {
            Self::F32 | Self::F16 | Self::BF16 => 1,
            Self::Q4_0 | Self::Q4_1 | Self::Q5_0 | Self::Q5_1 | Self::Q8_0 | Self::Q8_1 => 32,
            Self::Q2K | Self::Q3K | Self::Q4K | Self::Q5K | Self::Q6K | Self::Q8K => 256,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::BF16 => 2,
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q5_0 => 22,
            Self::Q5_1 => 24,
            Self::Q8_0 => 34,
            Self::Q8_1 => 36,
            Self::Q2K => 84,
            Self::Q3K => 110,
            Self::Q4K => 144,
            Self::Q5K => 176,
            Self::Q6K => 210,
            Self::Q8K => 292,
        }
    }

    /// Bytes of a row of `elems` elements, or None when `elems` is not a whole number of blocks
    /// or the size overflows.
    pub fn row_bytes(self, elems: usize) -> Option<usize> {
        if !elems.is_multiple_of(self.block_elems()) {
            return None;
        }
        (elems / self.block_elems()).checked_mul(self.block_bytes())
    }

    /// The lower-case name used on the command line and in logs (`q4_k`, `f16`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::BF16 => "bf16",
            Self::Q4_0 => "q4_0",
            Self::Q4_1 => "q4_1",
            Self::Q5_0 => "q5_0",
            Self::Q5_1 => "q5_1",
            Self::Q8_0 => "q8_0",
            Self::Q8_1 => "q8_1",
            Self::Q2K => "q2_k",
            Self::Q3K => "q3_k",
            Self::Q4K => "q4_k",
            Self::Q5K => "q5_k",
            Self::Q6K => "q6_k",
            Self::Q8K => "q8_k",
        }
    }

    /// Parses a name as printed by [`GgmlType::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        [
            Self::F32,
            Self::F16,
            Self::BF16,
            Self::Q4_0,
            Self::Q4_1,
            Self::Q5_0,
            Self::Q5_1,
            Self::Q8_0,
            Self::Q8_1,
            Self::Q2K,
            Self::Q3K,
            Self::Q4K,
            Self::Q5K,
            Self::Q6K,
            Self::Q8K,
        ]
        .into_iter()
        .find(|t| t.name().eq_ignore_ascii_case(name))
    }
}

/// The bytes of one tensor: a window into a memory-mapped model file, or an owned buffer
/// (converted or quantized on load). Cloning is cheap.
#[derive(Clone)]
pub enum TensorBytes {
    /// `len` bytes at `offset` inside a mapped file.
    Mapped {
        map: std::sync::Arc<memmap2::Mmap>,
        offset: usize,
        len: usize,
    },
    /// Bytes owned by the process.
    Owned(std::sync::Arc<Vec<u8>>),
}

impl std::ops::Deref for TensorBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            TensorBytes::Mapped { map, offset, len } => &map[*offset..*offset + *len],
            TensorBytes::Owned(v) => v,
        }
    }
}

impl std::fmt::Debug for TensorBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TensorBytes({} bytes)", self.len())
    }
}

impl TensorBytes {
    /// Lets the kernel drop the pages of bytes `range` of this tensor, when it lies in a mapped
    /// file, from the process's memory (they are re-read from the page cache if touched again):
    /// for bytes already copied elsewhere. A no-op for owned bytes or when the kernel refuses.
    pub fn release_pages(&self, range: std::ops::Range<usize>) {
        #[cfg(unix)]
        if let TensorBytes::Mapped { map, offset, len } = self {
            if range.start < range.end && range.end <= *len {
                // SAFETY: MADV_DONTNEED on a read-only private file mapping only drops pages;
                // later reads fault them back in with the file's contents, so every `&[u8]`
                // into the map keeps reading the same bytes.
                let _ = unsafe {
                    map.unchecked_advise_range(
                        memmap2::UncheckedAdvice::DontNeed,
                        offset + range.start,
                        range.len(),
                    )
                };
            }
        }
        #[cfg(not(unix))]
        let _ = range;
    }
}

impl From<Vec<u8>> for TensorBytes {
    fn from(v: Vec<u8>) -> Self {
        TensorBytes::Owned(std::sync::Arc::new(v))
    }
}

/// A 2-D weight matrix in a ggml format: `rows` output features, each stored as one row of
/// `cols` input elements (ggml's `ne[0] = cols`, `ne[1] = rows`).
#[derive(Clone, Debug)]
pub struct WeightMatrix {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub data: TensorBytes,
    /// Whether `data` holds the rows in ggml's order or interleaved for the AVX2 kernels
    /// ([`WeightMatrix::packed`]).
    packed: bool,
    /// Whether a Q8_0/Q8_1 matrix holds the level −128 anywhere, found on first ask
    /// ([`Self::has_level_minus_128`]).
    minus_128: std::sync::OnceLock<bool>,
}

impl WeightMatrix {
    /// Checks that `data` holds exactly `rows` rows of `cols` elements of `ty`.
    pub fn new(ty: GgmlType, rows: usize, cols: usize, data: TensorBytes) -> Result<Self> {
        let row = ty.row_bytes(cols).ok_or_else(|| {
            EngineError::invalid(format!(
                "{cols} columns is not a whole number of {} blocks",
                ty.name()
            ))
        })?;
        let total = row
            .checked_mul(rows)
            .ok_or_else(|| EngineError::invalid("tensor size overflows"))?;
        if total != data.len() {
            return Err(EngineError::invalid(format!(
                "{rows}x{cols} {} tensor needs {total} bytes, has {}",
                ty.name(),
                data.len()
            )));
        }
        Ok(Self {
            ty,
            rows,
            cols,
            data,
            packed: false,
            minus_128: std::sync::OnceLock::new(),
        })
    }

    /// This matrix with its rows interleaved 8 by 8 for the kernels of the detected CPU, when
    /// they have such a kernel for its type and shape (Q4_0/Q5_0/Q8_0/Q4_K/Q6_K with whole
    /// groups of 8 rows, on AVX2; see `quant::packed`); else None. A packed matrix serves
    /// [`matmul`] and [`Self::dequantize_row_into`]; its raw rows ([`Self::row`]) are gone.
    ///
    /// [`matmul`]: matmul::matmul
    pub fn packed(&self) -> Option<WeightMatrix> {
        if self.packed
            || matmul::detected_isa() == matmul::Isa::Scalar
            || !packed::packable(self.ty, self.rows)
        {
            return None;
        }
        Some(self.packed_unchecked())
    }

    /// The packed copy, whatever the CPU (tests run the portable packed kernel too). Packed
    /// 512 rows at a time, each part's source pages released once copied (when mapped from a
    /// file), so that resident memory never holds both copies of a large matrix.
    pub(crate) fn packed_unchecked(&self) -> WeightMatrix {
        const PART_ROWS: usize = 512;
        let (ty, cols) = (self.ty, self.cols);
        let mut data = vec![0u8; packed::packed_len(ty, self.rows, cols)];
        let row_bytes = self.row_bytes();
        let group_bytes = packed::packed_len(ty, packed::ROWS, cols);
        for (k, out) in data
            .chunks_mut(group_bytes * PART_ROWS / packed::ROWS)
            .enumerate()
        {
            let rows = out.len() / group_bytes * packed::ROWS;
            let src = k * PART_ROWS * row_bytes..(k * PART_ROWS + rows) * row_bytes;
            packed::pack_into(ty, rows, cols, &self.data[src.clone()], out);
            self.data.release_pages(src);
        }
        // Again as a whole: reading a part faults in its neighbours' pages around the fault.
        self.data.release_pages(0..self.data.len());
        Self {
            ty: self.ty,
            rows: self.rows,
            cols: self.cols,
            data: data.into(),
            packed: true,
            minus_128: std::sync::OnceLock::new(),
        }
    }

    /// Whether the rows are interleaved ([`Self::packed`]).
    pub fn is_packed(&self) -> bool {
        self.packed
    }

    /// Whether this Q8_0/Q8_1 matrix has a level of −128 (ggml's quantizers write −127..127,
    /// but the format allows −128); false for other types. The broadcast kernels multiply |x|
    /// by `w·sign(x)`, which overflows i8 for w = −128, so such matrices take the per-row
    /// kernels. Scanned once, on first ask (~20 ms for the 145 MB output matrix of a 0.5B model).
    pub fn has_level_minus_128(&self) -> bool {
        *self.minus_128.get_or_init(|| {
            // Levels follow the scales: one f16 per ggml block, 8 per packed group block.
            let (block, at) = match (self.ty, self.packed) {
                (GgmlType::Q8_0, false) => (self.ty.block_bytes(), 2),
                (GgmlType::Q8_0, true) => (packed::group_block_bytes(self.ty), 2 * packed::ROWS),
                (GgmlType::Q8_1, false) => (self.ty.block_bytes(), 4),
                _ => return false,
            };
            self.data
                .chunks_exact(block)
                .any(|b| b[at..].iter().fold(false, |m, &v| m | (v == 0x80)))
        })
    }

    /// Bytes of one row (of the ggml layout: panics on a packed matrix, see [`Self::row`]).
    pub fn row_bytes(&self) -> usize {
        assert!(!self.packed, "row access on a packed weight matrix");
        self.data.len() / self.rows.max(1)
    }

    /// The raw bytes of row `r`. Panics on a packed matrix (an internal misuse: row lookups of
    /// a packed embedding table go through [`Self::dequantize_row_into`]).
    pub fn row(&self, r: usize) -> &[u8] {
        assert!(!self.packed, "row access on a packed weight matrix");
        let n = self.row_bytes();
        &self.data[r * n..(r + 1) * n]
    }

    /// Dequantizes row `r` into `out` (len `cols`), from either layout.
    pub fn dequantize_row_into(&self, r: usize, out: &mut [f32]) {
        if self.packed {
            packed::dequantize_row(self, r, out)
        } else {
            blocks::dequantize_row(self.ty, self.row(r), out)
        }
    }
}
