//! A persistent pool of kernel threads: workers spin briefly for the next job, then park, so a
//! decode step's hundreds of small matmuls do not pay a thread spawn (or a wake-up) each.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// Spin iterations a worker waits for the next job before parking (~tens of microseconds).
const SPIN_ITERS: u32 = 20_000;

/// The job being run: a borrowed closure, erased to a raw pointer for the workers' lifetime-free
/// view. Valid only between the epoch bump that publishes it and the last worker's `done`.
#[derive(Clone, Copy)]
struct Job {
    f: *const (dyn Fn(usize) + Sync),
    n_tasks: usize,
}

struct Shared {
    epoch: AtomicU64,
    job: UnsafeCell<Job>,
    next: AtomicUsize,
    done: AtomicUsize,
    panicked: AtomicBool,
    shutdown: AtomicBool,
    sleepers: AtomicUsize,
    sleep_lock: Mutex<()>,
    wake: Condvar,
}

// SAFETY: `job` is written only by the thread inside `run` (serialized by `run_lock`) before the
// epoch is bumped, and read by workers only after observing the new epoch; the closure it points
// to is `Sync` and outlives the job because `run` waits for every worker's `done`.
unsafe impl Sync for Shared {}
// SAFETY: as above; the raw pointer is only dereferenced under that protocol.
unsafe impl Send for Shared {}

/// A pool of worker threads for kernels.
pub struct ThreadPool {
    threads: usize,
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    run_lock: Mutex<()>,
}

impl ThreadPool {
    /// A pool that runs work on `threads` threads (the caller's thread included).
    pub fn new(threads: usize) -> Self {
        let threads = threads.max(1);
        let noop: &(dyn Fn(usize) + Sync) = &|_| {};
        let shared = Arc::new(Shared {
            epoch: AtomicU64::new(0),
            job: UnsafeCell::new(Job {
                f: noop as *const _,
                n_tasks: 0,
            }),
            next: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
            sleep_lock: Mutex::new(()),
            wake: Condvar::new(),
        });
        let workers = (1..threads)
            .map(|i| {
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name(format!("sprout-kernel-{i}"))
                    .spawn(move || worker(&shared))
                    .expect("spawning a kernel thread (the OS refused a thread)")
            })
            .collect();
        Self {
            threads,
            shared,
            workers,
            run_lock: Mutex::new(()),
        }
    }

    /// Number of threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f(i)` for every `i` in `0..n_tasks`, spread over the pool; returns when all are done.
    pub fn run(&self, n_tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        if self.workers.is_empty() || n_tasks <= 1 {
            (0..n_tasks).for_each(f);
            return;
        }
        let _serial = self.run_lock.lock().unwrap_or_else(|e| e.into_inner());
        let s = &*self.shared;
        // SAFETY: erases the closure's lifetime; workers stop touching it before we return
        // (we wait for all `done` below), so it never outlives the borrow.
        let f_static: *const (dyn Fn(usize) + Sync) = unsafe { std::mem::transmute(f) };
        // SAFETY: no worker reads `job` until it sees the epoch bump below (SeqCst orders it).
        unsafe {
            *s.job.get() = Job {
                f: f_static,
                n_tasks,
            }
        };
        s.next.store(0, SeqCst);
        s.done.store(0, SeqCst);
        s.epoch.fetch_add(1, SeqCst);
        if s.sleepers.load(SeqCst) > 0 {
            let _g = s.sleep_lock.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        // The caller's own tasks may panic too: wait for the workers before unwinding, since
        // they still hold a pointer to `f`.
        let mine =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| claim_tasks(s, f, n_tasks)));
        let mut spins = 0u32;
        while s.done.load(SeqCst) < self.workers.len() {
            spins += 1;
            if spins < SPIN_ITERS {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        if let Err(payload) = mine {
            s.panicked.store(false, SeqCst);
            std::panic::resume_unwind(payload);
        }
        if s.panicked.swap(false, SeqCst) {
            panic!("a kernel task panicked on a pool thread");
        }
    }
}

fn claim_tasks(s: &Shared, f: &(dyn Fn(usize) + Sync), n_tasks: usize) {
    loop {
        let i = s.next.fetch_add(1, SeqCst);
        if i >= n_tasks {
            break;
        }
        f(i);
    }
}

fn worker(s: &Shared) {
    let mut seen = 0u64;
    loop {
        let mut spins = 0u32;
        loop {
            if s.epoch.load(SeqCst) != seen {
                break;
            }
            spins += 1;
            if spins < SPIN_ITERS {
                std::hint::spin_loop();
                continue;
            }
            s.sleepers.fetch_add(1, SeqCst);
            let mut g = s.sleep_lock.lock().unwrap_or_else(|e| e.into_inner());
            while s.epoch.load(SeqCst) == seen {
                g = s.wake.wait(g).unwrap_or_else(|e| e.into_inner());
            }
            drop(g);
            s.sleepers.fetch_sub(1, SeqCst);
        }
        seen = s.epoch.load(SeqCst);
        if s.shutdown.load(SeqCst) {
            return;
        }
        // SAFETY: the epoch we observed was bumped after `job` was written, and `run` keeps the
        // closure alive until this worker reports `done`.
        let job = unsafe { *s.job.get() };
        // SAFETY: see above: the pointee is alive and Sync.
        let f = unsafe { &*job.f };
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            claim_tasks(s, f, job.n_tasks)
        }));
        if ok.is_err() {
            s.panicked.store(true, SeqCst);
        }
        s.done.fetch_add(1, SeqCst);
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, SeqCst);
        self.shared.epoch.fetch_add(1, SeqCst);
        {
            let _g = self
                .shared
                .sleep_lock
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_every_task_once_across_many_jobs() {
        for threads in [1, 2, 3] {
            let pool = ThreadPool::new(threads);
            for n in [0usize, 1, 2, 7, 100] {
                let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                pool.run(n, &|i| {
                    hits[i].fetch_add(1, SeqCst);
                });
                assert!(
                    hits.iter().all(|h| h.load(SeqCst) == 1),
                    "threads {threads} n {n}"
                );
            }
        }
    }

    #[test]
    fn workers_wake_after_parking() {
        let pool = ThreadPool::new(2);
        std::thread::sleep(std::time::Duration::from_millis(50));
        let sum = AtomicUsize::new(0);
        pool.run(64, &|i| {
            sum.fetch_add(i, SeqCst);
        });
        assert_eq!(sum.load(SeqCst), 63 * 64 / 2);
    }

    #[test]
    fn a_panicking_task_reaches_the_caller() {
        let pool = ThreadPool::new(2);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.run(16, &|i| assert!(i != 3, "task 3 fails"));
        }));
        assert!(r.is_err());
        // The pool still works afterwards.
        let n = AtomicUsize::new(0);
        pool.run(8, &|_| {
            n.fetch_add(1, SeqCst);
        });
        assert_eq!(n.load(SeqCst), 8);
    }
}
