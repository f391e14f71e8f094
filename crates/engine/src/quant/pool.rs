//! A persistent pool of kernel threads: workers spin briefly for the next job, then park, so a
//! decode step's hundreds of small matmuls do not pay a thread spawn (or a wake-up) each.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// Spin iterations a worker waits for the next job before parking (~tens of microseconds).
const SPIN_ITERS: u32 = 20_000;

/// The job being run: a borrowed closure, erased to a raw pointer for the workers' lifetime-free
/// view. Valid from the epoch bump that publishes it until `run` sees no joined worker left.
#[derive(Clone, Copy)]
struct Job {
    f: *const (dyn Fn(usize) + Sync),
    n_tasks: usize,
}

/// `state` bit layout: job epoch in the high 32 bits, [`CLOSED`], and the number of workers
/// currently inside the job in the low bits.
const CLOSED: u64 = 1 << 31;
const ACTIVE_MASK: u64 = CLOSED - 1;

fn epoch_of(state: u64) -> u64 {
    state >> 32
}

struct Shared {
    /// Epoch, closed flag and active-worker count in one word, so that joining a job and
    /// closing it are ordered by a single compare-and-swap.
    state: AtomicU64,
    job: UnsafeCell<Job>,
    next: AtomicUsize,
    panicked: AtomicBool,
    shutdown: AtomicBool,
    sleepers: AtomicUsize,
    sleep_lock: Mutex<()>,
    wake: Condvar,
}

// SAFETY: `job` is written only by the thread inside `run` (serialized by `run_lock`) while no
// worker is joined, before the epoch is bumped; workers read it only after joining the new
// epoch (a CAS on `state` that fails once the job is closed), and `run` returns only after
// closing the job and seeing the active count drop to zero. The closure is `Sync`.
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
            state: AtomicU64::new(CLOSED),
            job: UnsafeCell::new(Job {
                f: noop as *const _,
                n_tasks: 0,
            }),
            next: AtomicUsize::new(0),
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
    ///
    /// The caller claims tasks too, and waits only for workers that joined the job: a worker
    /// the OS has not scheduled (the machine is shared) neither delays nor misses anything.
    pub fn run(&self, n_tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        if self.workers.is_empty() || n_tasks <= 1 {
            (0..n_tasks).for_each(f);
            return;
        }
        let _serial = self.run_lock.lock().unwrap_or_else(|e| e.into_inner());
        let s = &*self.shared;
        // SAFETY: erases the closure's lifetime; joined workers stop touching it before we
        // return (we close the job and wait for the active count to reach zero), and
        // unjoined ones never read it.
        let f_static: *const (dyn Fn(usize) + Sync) = unsafe { std::mem::transmute(f) };
        // SAFETY: the previous job is closed with no worker active, so nobody reads `job`.
        unsafe {
            *s.job.get() = Job {
                f: f_static,
                n_tasks,
            }
        };
        s.next.store(0, SeqCst);
        let epoch = epoch_of(s.state.load(SeqCst)).wrapping_add(1) & 0xFFFF_FFFF;
        s.state.store(epoch << 32, SeqCst);
        if s.sleepers.load(SeqCst) > 0 {
            let _g = s.sleep_lock.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        // The caller's own tasks may panic too: close and wait before unwinding, since joined
        // workers still hold a pointer to `f`.
        let mine =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| claim_tasks(s, f, n_tasks)));
        s.state.fetch_or(CLOSED, SeqCst);
        let mut spins = 0u32;
        while s.state.load(SeqCst) & ACTIVE_MASK != 0 {
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

/// Joins the job of `epoch` unless it is closed or superseded; true when joined.
fn join(s: &Shared, epoch: u64) -> bool {
    let mut cur = s.state.load(SeqCst);
    loop {
        if epoch_of(cur) != epoch || cur & CLOSED != 0 {
            return false;
        }
        match s.state.compare_exchange_weak(cur, cur + 1, SeqCst, SeqCst) {
            Ok(_) => return true,
            Err(now) => cur = now,
        }
    }
}

fn worker(s: &Shared) {
    let mut seen = epoch_of(s.state.load(SeqCst));
    loop {
        let mut spins = 0u32;
        loop {
            if epoch_of(s.state.load(SeqCst)) != seen || s.shutdown.load(SeqCst) {
                break;
            }
            spins += 1;
            if spins < SPIN_ITERS {
                std::hint::spin_loop();
                continue;
            }
            s.sleepers.fetch_add(1, SeqCst);
            let mut g = s.sleep_lock.lock().unwrap_or_else(|e| e.into_inner());
            while epoch_of(s.state.load(SeqCst)) == seen && !s.shutdown.load(SeqCst) {
                g = s.wake.wait(g).unwrap_or_else(|e| e.into_inner());
            }
            drop(g);
            s.sleepers.fetch_sub(1, SeqCst);
        }
        if s.shutdown.load(SeqCst) {
            return;
        }
        seen = epoch_of(s.state.load(SeqCst));
        if !join(s, seen) {
            continue;
        }
        // SAFETY: we joined the current epoch, whose job was written before the epoch was
        // published, and `run` keeps the closure alive until our leave below.
        let job = unsafe { *s.job.get() };
        // SAFETY: see above: the pointee is alive and Sync.
        let f = unsafe { &*job.f };
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            claim_tasks(s, f, job.n_tasks)
        }));
        if ok.is_err() {
            s.panicked.store(true, SeqCst);
        }
        s.state.fetch_sub(1, SeqCst);
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, SeqCst);
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

    /// Many short jobs back to back: workers join late, miss closed jobs, or join the next
    /// one; every task still runs exactly once per job.
    #[test]
    fn back_to_back_jobs_run_every_task_once() {
        let pool = ThreadPool::new(3);
        let hits: Vec<AtomicUsize> = (0..9).map(|_| AtomicUsize::new(0)).collect();
        for job in 0..3000usize {
            let n = 2 + job % 8;
            pool.run(n, &|i| {
                hits[i].fetch_add(1, SeqCst);
            });
        }
        let expected = |i: usize| (0..3000usize).filter(|j| 2 + j % 8 > i).count();
        for (i, h) in hits.iter().enumerate() {
            assert_eq!(h.load(SeqCst), expected(i), "task {i}");
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
