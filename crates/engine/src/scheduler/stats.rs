//! Live counters of the scheduler, read by the metrics endpoint.

use std::sync::atomic::{AtomicU64, AtomicUsize};

/// Number of batch-size histogram buckets: sizes ≤ 1, 2, 4, ..., 64, and more.
pub const BATCH_BUCKETS: usize = 8;

/// Live counters of the scheduler, read by the metrics endpoint.
#[derive(Debug, Default)]
pub struct SchedulerStats {
    pub waiting_seqs: AtomicUsize,
    pub running_seqs: AtomicUsize,
    pub kv_blocks_total: AtomicUsize,
    pub kv_blocks_free: AtomicUsize,
    pub kv_blocks_cached: AtomicUsize,
    pub steps: AtomicU64,
    /// Sequences in steps, by bucket (see [`BATCH_BUCKETS`]).
    pub batch_seqs_buckets: [AtomicU64; BATCH_BUCKETS],
    pub batch_seqs_sum: AtomicU64,
    /// Prompt tokens of admitted requests.
    pub prompt_tokens: AtomicU64,
    /// Prompt tokens actually run through the model (the rest came from the prefix cache).
    pub prompt_tokens_computed: AtomicU64,
    pub prompt_tokens_cached: AtomicU64,
    pub generated_tokens: AtomicU64,
    pub prefix_lookup_blocks: AtomicU64,
    pub prefix_hit_blocks: AtomicU64,
    pub prefix_evicted_blocks: AtomicU64,
    pub finished: AtomicU64,
    pub cancelled: AtomicU64,
    pub failed: AtomicU64,
    /// Engine steps that panicked (their requests failed, the engine went on).
    pub step_panics: AtomicU64,
    /// Tokens appended by constraints without sampling.
    pub forced_tokens: AtomicU64,
    /// Requests that ended on a constraint error (dead end, incomplete output).
    pub grammar_errors: AtomicU64,
    /// Grammar masks computed, by time bucket (see [`MASK_US_BUCKETS`]), and their sum.
    pub mask_us_buckets: [AtomicU64; MASK_US_BUCKETS.len() + 1],
    pub mask_us_sum: AtomicU64,
    /// Forced tokens per finished constrained answer: sum and count.
    pub answer_forced_sum: AtomicU64,
    pub constrained_answers: AtomicU64,
}

/// Upper bounds (µs) of the mask-time histogram buckets; one more bucket holds the rest.
pub const MASK_US_BUCKETS: [u64; 8] = [10, 30, 100, 300, 1_000, 3_000, 10_000, 30_000];

impl SchedulerStats {
    /// Records one mask computation of `us` microseconds.
    pub fn record_mask(&self, us: u64) {
        let b = MASK_US_BUCKETS
            .iter()
            .position(|&hi| us <= hi)
            .unwrap_or(MASK_US_BUCKETS.len());
        self.mask_us_buckets[b].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.mask_us_sum
            .fetch_add(us, std::sync::atomic::Ordering::Relaxed);
    }
}
