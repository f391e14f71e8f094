//! Matrix multiplication of a quantized weight matrix with a batch of f32 activation rows.

use super::WeightMatrix;

/// A pool of worker threads for kernels.
pub struct ThreadPool {
    threads: usize,
}

impl ThreadPool {
    /// A pool that runs work on `threads` threads (the caller's thread included).
    pub fn new(threads: usize) -> Self {
        Self { threads: threads.max(1) }
    }

    /// Number of threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f(i)` for every `i` in `0..n_tasks`, spread over the pool; returns when all are done.
    pub fn run(&self, n_tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        if self.threads == 1 || n_tasks <= 1 {
            (0..n_tasks).for_each(f);
            return;
        }
        let next = std::sync::atomic::AtomicUsize::new(0);
        let work = || loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if i >= n_tasks {
                break;
            }
            f(i);
        };
        std::thread::scope(|s| {
            for _ in 1..self.threads {
                s.spawn(work);
            }
            work();
        });
    }
}

/// `y[t][r] = sum_c w[r][c] * x[t][c]` for `t < n`: `x` is `n × w.cols`, `y` is `n × w.rows`.
pub fn matmul(pool: &ThreadPool, w: &WeightMatrix, x: &[f32], n: usize, y: &mut [f32]) {
    assert_eq!(x.len(), n * w.cols, "activation shape");
    assert_eq!(y.len(), n * w.rows, "output shape");
    // Reference path: dequantize each weight row once, dot it with every activation row.
    const ROWS_PER_TASK: usize = 16;
    let n_tasks = w.rows.div_ceil(ROWS_PER_TASK);
    let y_ptr = SendPtr(y.as_mut_ptr());
    pool.run(n_tasks, &|task| {
        let mut row = vec![0f32; w.cols];
        let r0 = task * ROWS_PER_TASK;
        for r in r0..(r0 + ROWS_PER_TASK).min(w.rows) {
            w.dequantize_row_into(r, &mut row);
            for t in 0..n {
                let xt = &x[t * w.cols..(t + 1) * w.cols];
                let dot: f32 = row.iter().zip(xt).map(|(a, b)| a * b).sum();
                // SAFETY: each task writes a disjoint set of rows r of y; t*rows + r < y.len().
                unsafe { *y_ptr.get().add(t * w.rows + r) = dot };
            }
        }
    });
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: used only to write disjoint elements from pool tasks that end before `matmul` returns.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
impl SendPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}
