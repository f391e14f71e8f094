//! Matrix multiplication of a quantized weight matrix with a batch of f32 activation rows.
//!
//! Activations are quantized once per call (i8, one scale per 32); each weight row is unpacked
//! once per call into i8 levels with a scale and offset per 16 ([`super::decoded`]); then an
//! ISA-specific kernel multiplies it with [`TILE`] activation rows at a time. With AVX2, from
//! a measured row count on ([`use_broadcast`]), the activations are regrouped into tiles of 8
//! rows ([`TiledActs`]) and the broadcast kernels (`x86::bcast`) multiply 4 weight levels with
//! the same 4 columns of all 8 rows at once; below it, per-row kernels (`x86::gemv`,
//! `x86::gemv_k`, `x86::dot_rows`) reduce each row's products horizontally. F32/F16/BF16 (and
//! Q8_K) weights are converted to f32 rows and use an f32 dot product instead.
//! See docs/kernels.md for the measurements behind these choices.

use super::decoded::{is_integer, is_per32, is_signed, DecodedRow, QuantizedActs, GROUP, SUB};
#[cfg(target_arch = "x86_64")]
use super::{decoded::TiledActs, x86, GgmlType};
use super::{packed, WeightMatrix};
use std::cell::RefCell;
use std::sync::OnceLock;

pub use super::pool::ThreadPool;

/// Weight rows unpacked together and swept by each activation tile (fits L2 for 4864 columns).
const ROWS_PER_TASK: usize = 16;
/// Weight rows per task when the whole batch is one activation tile (decode steps).
const GEMV_ROWS_PER_TASK: usize = 64;
/// Packed weight rows per task at most for decode batches (see `packed_job`).
const DECODE_ROWS_PER_TASK: usize = 256;
/// How many rows ahead the GEMV path asks the CPU to fetch weights (DRAM latency ≈ the time
/// to process two rows of a 0.5B model).
const PREFETCH_ROWS: usize = 2;
/// Activation rows per kernel call. Up to this many (a decode step of up to 8 sequences) each
/// weight row is unpacked into L1 (or registers) and used at once for all of them; more rows
/// (prefill) unpack blocks of [`ROWS_PER_TASK`] weight rows and sweep them tile by tile.
const TILE: usize = 8;
#[cfg(target_arch = "x86_64")]
const _: () = assert!(TILE == x86::TILE, "the SIMD kernels take TILE rows");

/// Which instruction set the kernels use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Isa {
    /// Portable Rust, the reference the SIMD paths are tested against.
    Scalar,
    /// AVX2 + FMA + F16C.
    Avx2,
}

/// The best ISA this CPU supports, detected once.
pub(crate) fn detected_isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if x86::available() {
            return Isa::Avx2;
        }
        Isa::Scalar
    })
}

/// The instruction set the kernels use on this CPU, as `sprout doctor` reports it.
pub fn isa_name() -> &'static str {
    match detected_isa() {
        Isa::Avx2 => "avx2+fma+f16c",
        Isa::Scalar => "scalar (portable Rust)",
    }
}

/// The kernels that multiply a weight matrix of type `ty` with `rows` rows on this CPU, once
/// loaded (packed where [`super::WeightMatrix::packed`] packs it), as `sprout doctor` reports
/// them; mirrors the choices of [`matmul_with`].
pub fn kernel_name(ty: super::GgmlType, rows: usize) -> &'static str {
    let isa = detected_isa();
    if !is_integer(ty) {
        return match isa {
            Isa::Avx2 => "f32 rows, avx2 dot product",
            Isa::Scalar => "f32 rows, scalar dot product",
        };
    }
    if isa == Isa::Scalar {
        return "unpacked i8 rows, scalar dot product";
    }
    if packed::packable(ty, rows) {
        return "rows packed 8 by 8, avx2 (every batch size)";
    }
    "unpacked i8 rows, avx2 per-row kernels, broadcast kernels for larger batches"
}

/// Dot product of two equal-length f32 slices (SIMD where the CPU has it).
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    dot_f32_with(detected_isa(), a, b)
}

fn dot_f32_with(isa: Isa, a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: Avx2 is only selected when the CPU reports AVX2 and FMA.
        Isa::Avx2 => unsafe { x86::dot_f32(a, b) },
        _ => {
            // Eight partial sums let the compiler vectorize without reassociation flags.
            let mut acc = [0f32; 8];
            let (ac, ar) = a.split_at(a.len() / 8 * 8);
            let (bc, br) = b.split_at(ac.len());
            for (x, y) in ac.chunks_exact(8).zip(bc.chunks_exact(8)) {
                for i in 0..8 {
                    acc[i] += x[i] * y[i];
                }
            }
            acc.iter().sum::<f32>() + ar.iter().zip(br).map(|(x, y)| x * y).sum::<f32>()
        }
    }
}

/// `y[t][r] = sum_c w[r][c] * x[t][c]` for `t < n`: `x` is `n × w.cols`, `y` is `n × w.rows`.
pub fn matmul(pool: &ThreadPool, w: &WeightMatrix, x: &[f32], n: usize, y: &mut [f32]) {
    matmul_with(detected_isa(), None, pool, w, x, n, y)
}

/// [`matmul`] with the AVX2 integer path forced onto the broadcast kernels (`true`) or the
/// per-row ones (`false`) instead of the measured choice: for A/B timing
/// (`examples/kernel_ab.rs`), not for production use.
#[doc(hidden)]
pub fn matmul_forced(
    pool: &ThreadPool,
    w: &WeightMatrix,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    broadcast: bool,
) {
    matmul_with(detected_isa(), Some(broadcast), pool, w, x, n, y)
}

thread_local! {
    /// Per-thread unpacked weight rows, reused across calls (no allocation per step).
    static DECODED: RefCell<Vec<DecodedRow>> = const { RefCell::new(Vec::new()) };
    /// Per-thread f32 weight row for the float path.
    static ROW_F32: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// [`matmul`] on a chosen ISA (tests compare every ISA with the scalar reference) and, with
/// AVX2, a forced choice of kernels (`broadcast`; `None`: [`use_broadcast`]). Q8_0/Q8_1
/// matrices with a −128 level never take the broadcast kernels
/// ([`WeightMatrix::has_level_minus_128`]).
pub(crate) fn matmul_with(
    isa: Isa,
    broadcast: Option<bool>,
    pool: &ThreadPool,
    w: &WeightMatrix,
    x: &[f32],
    n: usize,
    y: &mut [f32],
) {
    assert_eq!(x.len(), n * w.cols, "activation shape");
    assert_eq!(y.len(), n * w.rows, "output shape");
    if n == 0 || w.rows == 0 {
        return;
    }
    let n_tasks = w.rows.div_ceil(ROWS_PER_TASK);
    let y_ptr = SendPtr(y.as_mut_ptr());
    let rows_of = |task: usize| task * ROWS_PER_TASK..((task + 1) * ROWS_PER_TASK).min(w.rows);
    // SAFETY (both closures): each task writes only y[t*rows + r] for its own rows r, so writes
    // from different tasks never overlap, and `pool.run` returns only after all tasks end.
    let store = |t: usize, r: usize, v: f32| unsafe { *y_ptr.get().add(t * w.rows + r) = v };
    // Integer types have blocks of 32 or 256, so `cols` (whole blocks) is a multiple of GROUP.
    if is_integer(w.ty) {
        let acts = quantize_acts(isa, x);
        if w.is_packed() {
            // Rows interleaved 8 by 8 (`quant::packed`): one kernel for every batch size.
            packed_job(isa, pool, &[w], &acts, n, &[y_ptr]);
            return;
        }
        // GEMV-like calls (n ≤ TILE): longer runs of rows per task keep each thread's weight
        // stream sequential.
        let gemv_tasks = w.rows.div_ceil(GEMV_ROWS_PER_TASK);
        let gemv_rows =
            |task: usize| task * GEMV_ROWS_PER_TASK..((task + 1) * GEMV_ROWS_PER_TASK).min(w.rows);
        #[cfg(not(target_arch = "x86_64"))]
        let _ = broadcast; // only the AVX2 path has broadcast kernels
        #[cfg(target_arch = "x86_64")]
        if isa == Isa::Avx2
            && broadcast.unwrap_or_else(|| use_broadcast(w.ty, n))
            && !w.has_level_minus_128()
        {
            // |x| only for the fused Q8_0 GEMV (see x86::bcast).
            let tiled = TiledActs::new(&acts, n, w.cols, is_signed(w.ty) && n <= TILE);
            if n <= TILE && x86::bcast::supports_gemv(w.ty) {
                pool.run(gemv_tasks, &|task| {
                    // SAFETY: Avx2 is only selected when the CPU has AVX2, FMA and F16C; the
                    // type is supported, `tiled` holds tile 0 of rows of `cols`, the rows
                    // exist, `y` is n × rows and each task writes only its own rows.
                    unsafe { x86::bcast::gemv_tile(w, gemv_rows(task), &tiled, n, y_ptr.get()) }
                });
                return;
            }
            // Other types (and more rows than one tile): unpack ROWS_PER_TASK rows into L1,
            // then sweep them tile by tile.
            pool.run(n_tasks, &|task| {
                DECODED.with_borrow_mut(|decoded| {
                    let rows = rows_of(task);
                    let mut out = [0f32; TILE];
                    let decoded = scratch_rows(decoded, ROWS_PER_TASK, w.cols);
                    for (d, r) in decoded.iter_mut().zip(rows.clone()) {
                        decode_row(isa, d, w, r);
                    }
                    for tile in 0..n.div_ceil(TILE) {
                        let nt = TILE.min(n - tile * TILE);
                        for (d, r) in decoded.iter().zip(rows.clone()) {
                            // SAFETY: Avx2 is only selected when the CPU has AVX2, FMA and
                            // F16C; `d` and `tiled` hold rows of `w.cols`; `tile` < the tile
                            // count of `tiled`.
                            unsafe { x86::bcast::dot_tile(d, &tiled, w.cols, tile, &mut out) };
                            for (k, &v) in out.iter().enumerate().take(nt) {
                                store(tile * TILE + k, r, v);
                            }
                        }
                    }
                })
            });
            return;
        }
        if n <= TILE {
            // GEMV-like: few activation rows, so unpack each row into L1 and use it at once.
            let (n_tasks, rows_of) = (gemv_tasks, gemv_rows);
            #[cfg(target_arch = "x86_64")]
            if isa == Isa::Avx2 && x86::gemv::supports(w.ty) {
                pool.run(n_tasks, &|task| {
                    // SAFETY: Avx2 is only selected when the CPU has AVX2, FMA and F16C; the type
                    // is supported, `acts` holds n <= TILE rows of `cols`, the rows exist, `y`
                    // is n × rows and each task writes only its own rows.
                    unsafe { x86::gemv::gemv_block32(w, rows_of(task), &acts, n, y_ptr.get()) }
                });
                return;
            }
            #[cfg(target_arch = "x86_64")]
            if isa == Isa::Avx2 && x86::gemv_k::supports(w.ty) {
                pool.run(n_tasks, &|task| {
                    // SAFETY: as for `gemv_block32` above.
                    unsafe { x86::gemv_k::gemv_kquant(w, rows_of(task), &acts, n, y_ptr.get()) }
                });
                return;
            }
            pool.run(n_tasks, &|task| {
                DECODED.with_borrow_mut(|decoded| {
                    let d = &mut scratch_rows(decoded, 1, w.cols)[0];
                    let mut out = [0f32; TILE];
                    for r in rows_of(task) {
                        if r + PREFETCH_ROWS < w.rows {
                            prefetch(w.row(r + PREFETCH_ROWS));
                        }
                        decode_row(isa, d, w, r);
                        dot_rows(isa, d, &acts, w.cols, 0, n, &mut out);
                        for (t, &v) in out.iter().enumerate().take(n) {
                            store(t, r, v);
                        }
                    }
                })
            });
            return;
        }
        pool.run(n_tasks, &|task| {
            DECODED.with_borrow_mut(|decoded| {
                let rows = rows_of(task);
                let decoded = scratch_rows(decoded, ROWS_PER_TASK, w.cols);
                for (d, r) in decoded.iter_mut().zip(rows.clone()) {
                    decode_row(isa, d, w, r);
                }
                let mut out = [0f32; TILE];
                for t0 in (0..n).step_by(TILE) {
                    let nt = TILE.min(n - t0);
                    for (d, r) in decoded.iter().zip(rows.clone()) {
                        dot_rows(isa, d, &acts, w.cols, t0, nt, &mut out);
                        for (k, &v) in out.iter().enumerate().take(nt) {
                            store(t0 + k, r, v);
                        }
                    }
                }
            })
        });
    } else {
        pool.run(n_tasks, &|task| {
            ROW_F32.with_borrow_mut(|row| {
                row.resize(w.cols, 0.0);
                for r in rows_of(task) {
                    w.dequantize_row_into(r, row);
                    for t in 0..n {
                        store(
                            t,
                            r,
                            dot_f32_with(isa, row, &x[t * w.cols..(t + 1) * w.cols]),
                        );
                    }
                }
            })
        });
    }
}

/// Hints the CPU to bring `bytes` into cache (a no-op off x86-64).
#[inline]
fn prefetch(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    for line in (0..bytes.len()).step_by(64) {
        // SAFETY: prefetching is a hint that never faults; the address lies inside `bytes`, and
        // SSE (which provides it) is part of the x86-64 baseline.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                bytes.as_ptr().add(line) as *const i8,
            )
        };
    }
}

/// The first `rows` per-thread scratch rows, (re)allocated only when the width changes.
fn scratch_rows(decoded: &mut Vec<DecodedRow>, rows: usize, cols: usize) -> &mut [DecodedRow] {
    if decoded.len() < rows || decoded[0].q.len() != cols {
        *decoded = (0..rows.max(ROWS_PER_TASK))
            .map(|_| DecodedRow::new(cols))
            .collect();
    }
    &mut decoded[..rows]
}

fn decode_row(isa: Isa, d: &mut DecodedRow, w: &WeightMatrix, r: usize) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: Avx2 is only selected when the CPU reports AVX2, FMA and F16C.
        Isa::Avx2 => unsafe { x86::decode_fast(d, w.ty, w.row(r)) },
        _ => d.decode(w.ty, w.row(r)),
    }
    d.signed = is_signed(w.ty);
    d.per32 = is_per32(w.ty);
}

/// Whether `n` activation rows of a `ty` matmul take the broadcast kernels (AVX2): always
/// beyond one tile; within one, from the row count where they beat the per-row GEMV in
/// `kernel_ab` (a tile always costs 8 rows' work, so a few rows are cheaper one by one).
#[cfg(target_arch = "x86_64")]
fn use_broadcast(ty: GgmlType, n: usize) -> bool {
    match ty {
        _ if n > TILE => true,
        GgmlType::Q4_0 | GgmlType::Q5_0 => n >= 6,
        GgmlType::Q8_0 | GgmlType::Q4K => n >= 8,
        _ => false,
    }
}

fn dot_rows(
    isa: Isa,
    d: &DecodedRow,
    acts: &QuantizedActs,
    cols: usize,
    t0: usize,
    nt: usize,
    out: &mut [f32; TILE],
) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: Avx2 is only selected when the CPU reports AVX2, FMA and F16C; shapes were checked
        // by `matmul_with` (rows t0..t0+nt exist, both rows have `cols` elements).
        Isa::Avx2 => unsafe { x86::dot_rows(d, acts, cols, t0, nt, out) },
        _ => dot_rows_scalar(d, acts, cols, t0, nt, out),
    }
}

/// The scalar integer kernel: the same sums as the SIMD ones, in plain Rust (offsets included).
fn dot_rows_scalar(
    d: &DecodedRow,
    acts: &QuantizedActs,
    cols: usize,
    t0: usize,
    nt: usize,
    out: &mut [f32; TILE],
) {
    for (k, o) in out.iter_mut().enumerate().take(nt) {
        let t = t0 + k;
        let xq = &acts.q[t * cols..(t + 1) * cols];
        let mut acc = 0f32;
        for (s, (wq, aq)) in d.q.chunks_exact(SUB).zip(xq.chunks_exact(SUB)).enumerate() {
            let isum: i32 = wq.iter().zip(aq).map(|(&a, &b)| a as i32 * b as i32).sum();
            acc += isum as f32 * (d.scale[s] * acts.scale[t * (cols / GROUP) + s / 2]);
        }
        if !d.signed {
            let per_t = cols / SUB;
            acc += dot_f32_with(
                Isa::Scalar,
                &d.offset,
                &acts.sum16[t * per_t..(t + 1) * per_t],
            );
        }
        *o = acc;
    }
}

/// `ys[i] = x · ws[i]ᵀ` for matrices that share their input (q/k/v, gate/up): when all are
/// packed the input is quantized once and every matrix's row groups run as one pool job (a
/// decode step's k and v projections cost more in dispatch than in arithmetic); otherwise one
/// [`matmul`] each.
pub fn matmul_many(
    pool: &ThreadPool,
    ws: &[&WeightMatrix],
    x: &[f32],
    n: usize,
    ys: &mut [&mut [f32]],
) {
    matmul_many_with(detected_isa(), pool, ws, x, n, ys)
}

/// [`matmul_many`] on a chosen ISA.
pub(crate) fn matmul_many_with(
    isa: Isa,
    pool: &ThreadPool,
    ws: &[&WeightMatrix],
    x: &[f32],
    n: usize,
    ys: &mut [&mut [f32]],
) {
    assert_eq!(ws.len(), ys.len(), "one output per matrix");
    let cols = ws.first().map_or(0, |w| w.cols);
    if n == 0 || !ws.iter().all(|w| w.is_packed() && w.cols == cols) {
        for (w, y) in ws.iter().zip(ys.iter_mut()) {
            matmul_with(isa, None, pool, w, x, n, y);
        }
        return;
    }
    assert_eq!(x.len(), n * cols, "activation shape");
    for (w, y) in ws.iter().zip(ys.iter()) {
        assert_eq!(y.len(), n * w.rows, "output shape");
    }
    let acts = quantize_acts(isa, x);
    let outs: Vec<SendPtr> = ys.iter_mut().map(|y| SendPtr(y.as_mut_ptr())).collect();
    packed_job(isa, pool, ws, &acts, n, &outs);
}

/// Activation rows quantized for the integer kernels.
fn quantize_acts(isa: Isa, x: &[f32]) -> QuantizedActs {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: Avx2 is only selected when the CPU reports AVX2, FMA and F16C.
        Isa::Avx2 => unsafe { QuantizedActs::new_avx2(x) },
        _ => QuantizedActs::new(x),
    }
}

/// Runs packed matrices `ws` (same columns) on one quantized input as a single pool job:
/// tasks of a few row groups each, matrix after matrix; `outs[i]` points at `n × ws[i].rows`
/// floats.
fn packed_job(
    isa: Isa,
    pool: &ThreadPool,
    ws: &[&WeightMatrix],
    acts: &QuantizedActs,
    n: usize,
    outs: &[SendPtr],
) {
    // Groups per task: decode batches take longer runs (the decode kernels store the broadcast
    // activations once per task, `x86::packed::sweep_decode`) while keeping ~4 tasks per thread
    // for balance.
    let per_task = |w: &WeightMatrix| match n <= TILE {
        true => (w.rows / packed::ROWS / (4 * pool.threads())).clamp(
            GEMV_ROWS_PER_TASK / packed::ROWS,
            DECODE_ROWS_PER_TASK / packed::ROWS,
        ),
        false => ROWS_PER_TASK / packed::ROWS,
    };
    // The level-offset sums depend only on the type: computed for its first matrix only.
    let first_of_type = |i: usize| ws[..i].iter().position(|o| o.ty == ws[i].ty).unwrap_or(i);
    let sums: Vec<Vec<i32>> = (0..ws.len())
        .map(|i| match first_of_type(i) == i {
            true => packed::act_bias(ws[i].ty, acts, n, ws[i].cols),
            false => Vec::new(),
        })
        .collect();
    let xbias: Vec<&[i32]> = (0..ws.len()).map(|i| &sums[first_of_type(i)][..]).collect();
    // first[i]: the first task of matrix i.
    let mut first = Vec::with_capacity(ws.len() + 1);
    first.push(0);
    for w in ws {
        let last = *first.last().unwrap_or(&0);
        first.push(last + (w.rows / packed::ROWS).div_ceil(per_task(w)));
    }
    let total = first[ws.len()];
    pool.run(total, &|task| {
        let i = first.partition_point(|&f| f <= task) - 1;
        let (w, y) = (ws[i], outs[i]);
        let (local, per) = (task - first[i], per_task(w));
        let range = local * per..((local + 1) * per).min(w.rows / packed::ROWS);
        match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: Avx2 is only selected when the CPU has AVX2, FMA and F16C; `w` is packed,
            // `acts`/`xbias[i]` hold n rows of its columns, the task's groups exist and each
            // task writes only its own groups' outputs of the n × rows buffer at `y`.
            Isa::Avx2 => unsafe {
                x86::packed::matmul_packed(w, range, acts, xbias[i], n, y.get())
            },
            // SAFETY: as above: disjoint outputs of this task's groups, within n × rows.
            _ => packed::matmul_scalar(w, range, acts, xbias[i], n, |t, r, v| unsafe {
                *y.get().add(t * w.rows + r) = v
            }),
        }
    });
}

/// A raw output pointer handed to pool tasks that each write a disjoint part of one buffer.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub(crate) *mut f32);
// SAFETY: used only to write disjoint elements from pool tasks that end before the buffer's
// owner returns (`ThreadPool::run` joins every task).
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}
impl SendPtr {
    /// The pointer.
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

#[cfg(test)]
pub(crate) mod tests;
