//! Continuous batching: the engine on its own OS thread, advancing every admitted request by one
//! batched step at a time — decode tokens of running sequences first, then prompt chunks within
//! a token budget — with sequences joining and leaving at every step.
//!
//! Requests arrive already validated ([`GenerationRequest`]) over a channel; results go back
//! through each request's [`EventSink`]. A sink that reports its receiver gone cancels the
//! sequence at the next step and frees its KV blocks. Admission reserves KV for a request's
//! whole budget (prompt + max_tokens), so a running sequence never runs out of blocks; new work
//! waits while the pool (free blocks plus idle cached blocks) cannot cover it.

mod sequence;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crate::engine::{Engine, StepInput};
use crate::generation::{FinishReason, StopConditions};
use crate::prefix_cache::PrefixCache;
use crate::sampler::{SamplingParams, TokenMask};
use crate::tokenizer::{StreamDecoder, Tokenizer};
use sequence::{Progress, Sequence};

/// A request checked by its API layer: prompt tokenized, every parameter in range.
pub struct GenerationRequest {
    pub prompt: Vec<u32>,
    pub sampling: SamplingParams,
    pub stop: StopConditions,
    /// Limits which tokens may be sampled and may force tokens after them (grammars).
    pub constraint: Option<Box<dyn TokenConstraint>>,
    /// Ends the request with [`GenerationError::Timeout`] when it runs longer.
    pub timeout: Option<Duration>,
    /// Where the events of this request go.
    pub events: Box<dyn EventSink>,
}

/// Restricts a sequence's tokens (a grammar, later) and may append forced tokens after a
/// sampled one (jump-forward), which the next step feeds all at once.
pub trait TokenConstraint: Send {
    /// Tokens allowed next; None allows all.
    fn allowed(&mut self) -> Option<&TokenMask>;
    /// Records a sampled token; returns tokens forced after it, or why the token is a dead end.
    fn accept(&mut self, token: u32) -> Result<Vec<u32>, String>;
}

/// Token counts of one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Prompt tokens served from the prefix cache instead of being computed.
    pub cached_tokens: usize,
}

/// What a request hears from the scheduler: text deltas, then exactly one final event
/// (unless the client went away first).
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Clean text that is final (stop strings already cut, UTF-8 complete).
    Text(String),
    /// Generation ended normally.
    Finished { reason: FinishReason, usage: Usage },
    /// Generation failed; other requests are unaffected.
    Failed(GenerationError),
}

/// The receiving end of a request, as the scheduler sees it.
pub trait EventSink: Send {
    /// Delivers an event; false when the receiver is gone (the request is then cancelled).
    fn send(&mut self, event: Event) -> bool;
    /// Whether the receiver is gone, checked before every step.
    fn is_closed(&self) -> bool;
}

impl EventSink for mpsc::Sender<Event> {
    fn send(&mut self, event: Event) -> bool {
        mpsc::Sender::send(self, event).is_ok()
    }
    fn is_closed(&self) -> bool {
        false
    }
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GenerationError {
    #[error("the request timed out after {timeout_ms} ms")]
    Timeout { timeout_ms: u64 },
    #[error(
        "the request needs {needed_tokens} tokens of KV cache (prompt + max_tokens) but the server \
         holds {capacity_tokens} in all; shorten the prompt or lower max_tokens"
    )]
    NeverFits {
        needed_tokens: usize,
        capacity_tokens: usize,
    },
    #[error("prompt ({prompt_tokens} tokens) + max_tokens ({max_tokens}) exceeds the context of {context_tokens} tokens")]
    ContextExceeded {
        prompt_tokens: usize,
        max_tokens: usize,
        context_tokens: usize,
    },
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("the model produced invalid logits (NaN)")]
    InvalidLogits,
    #[error("constraint: {0}")]
    Constraint(String),
    #[error("engine failure: {0}")]
    Engine(String),
    #[error("the server is shutting down")]
    ShuttingDown,
}

/// Turns one sequence's token ids into text as they come.
pub trait TextStream: Send {
    /// Adds a token; returns text that became complete.
    fn push(&mut self, id: u32) -> String;
    /// Ends the text, returning what is still pending.
    fn finish(&mut self) -> String;
}

impl TextStream for StreamDecoder {
    fn push(&mut self, id: u32) -> String {
        StreamDecoder::push(self, id)
    }
    fn finish(&mut self) -> String {
        StreamDecoder::finish(self)
    }
}

/// The vocabulary facts the scheduler needs.
pub trait Detokenizer: Send + Sync {
    /// A fresh text stream for one sequence.
    fn stream(&self) -> Box<dyn TextStream>;
    /// End-of-sequence token ids.
    fn eos_ids(&self) -> &[u32];
}

impl Detokenizer for Tokenizer {
    fn stream(&self) -> Box<dyn TextStream> {
        Box::new(StreamDecoder::new(self))
    }
    fn eos_ids(&self) -> &[u32] {
        Tokenizer::eos_ids(self)
    }
}

/// Sizing of the scheduler.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Sequences advanced together at most; more wait in the queue.
    pub max_running_seqs: usize,
    /// Tokens fed to one step at most (decode tokens first, then prompt chunks).
    pub step_tokens: usize,
    /// Share KV blocks of identical prompt prefixes.
    pub prefix_cache: bool,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            max_running_seqs: 8,
            step_tokens: 256,
            prefix_cache: true,
        }
    }
}

/// Fixed limits of a running scheduler, for validation before submitting.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub context_tokens: usize,
    pub kv_capacity_tokens: usize,
    pub kv_block_tokens: usize,
}

impl Limits {
    /// Checks that a request of `prompt_tokens` + `max_tokens` can ever be served.
    pub fn check(&self, prompt_tokens: usize, max_tokens: usize) -> Result<(), GenerationError> {
        if prompt_tokens + max_tokens > self.context_tokens {
            return Err(GenerationError::ContextExceeded {
                prompt_tokens,
                max_tokens,
                context_tokens: self.context_tokens,
            });
        }
        let needed =
            (prompt_tokens + max_tokens).div_ceil(self.kv_block_tokens) * self.kv_block_tokens;
        if needed > self.kv_capacity_tokens {
            return Err(GenerationError::NeverFits {
                needed_tokens: needed,
                capacity_tokens: self.kv_capacity_tokens,
            });
        }
        Ok(())
    }
}

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
}

enum Command {
    Submit(Box<GenerationRequest>),
}

/// The handle async code holds: submits requests, reads stats. Cheap to clone.
#[derive(Clone)]
pub struct SchedulerHandle {
    tx: mpsc::Sender<Command>,
    closed: Arc<AtomicBool>,
    stats: Arc<SchedulerStats>,
    limits: Limits,
}

impl SchedulerHandle {
    /// Queues a request; its events arrive on its sink.
    pub fn submit(&self, req: GenerationRequest) -> Result<(), GenerationError> {
        if self.closed.load(Relaxed) {
            return Err(GenerationError::ShuttingDown);
        }
        self.tx
            .send(Command::Submit(Box::new(req)))
            .map_err(|_| GenerationError::ShuttingDown)
    }

    /// Stops taking requests; the thread ends once in-flight ones are done and every handle
    /// is dropped.
    pub fn close(&self) {
        self.closed.store(true, Relaxed);
    }

    /// Live counters.
    pub fn stats(&self) -> &SchedulerStats {
        &self.stats
    }

    /// Context and KV limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }
}

/// The scheduler state, owned by its thread.
pub struct Scheduler {
    engine: Engine,
    detok: Arc<dyn Detokenizer>,
    cfg: SchedulerConfig,
    cache: PrefixCache,
    waiting: VecDeque<Sequence>,
    running: Vec<Sequence>,
    stats: Arc<SchedulerStats>,
}

impl Scheduler {
    /// Starts the scheduler thread over `engine`.
    pub fn spawn(
        engine: Engine,
        detok: Arc<dyn Detokenizer>,
        cfg: SchedulerConfig,
    ) -> std::io::Result<(SchedulerHandle, std::thread::JoinHandle<()>)> {
        let (tx, rx) = mpsc::channel();
        let sched = Scheduler::new(engine, detok, cfg);
        let handle = SchedulerHandle {
            tx,
            closed: Arc::new(AtomicBool::new(false)),
            stats: sched.stats.clone(),
            limits: sched.limits(),
        };
        let join = std::thread::Builder::new()
            .name("sprout-scheduler".into())
            .spawn(move || sched.run(rx))?;
        Ok((handle, join))
    }

    fn new(engine: Engine, detok: Arc<dyn Detokenizer>, cfg: SchedulerConfig) -> Self {
        let cache = PrefixCache::new(engine.kv().block_tokens());
        let stats = Arc::new(SchedulerStats::default());
        stats
            .kv_blocks_total
            .store(engine.kv().total_blocks(), Relaxed);
        stats
            .kv_blocks_free
            .store(engine.kv().free_blocks(), Relaxed);
        Self {
            engine,
            detok,
            cfg,
            cache,
            waiting: VecDeque::new(),
            running: Vec::new(),
            stats,
        }
    }

    fn limits(&self) -> Limits {
        let kv = self.engine.kv();
        Limits {
            context_tokens: self.engine.model().config.context_tokens,
            kv_capacity_tokens: kv.total_blocks() * kv.block_tokens(),
            kv_block_tokens: kv.block_tokens(),
        }
    }

    fn run(mut self, rx: mpsc::Receiver<Command>) {
        loop {
            if self.waiting.is_empty() && self.running.is_empty() {
                match rx.recv() {
                    Ok(cmd) => self.command(cmd),
                    Err(_) => break,
                }
            }
            while let Ok(cmd) = rx.try_recv() {
                self.command(cmd);
            }
            self.step();
        }
        self.cache.clear(self.engine.kv_mut());
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Submit(req) => self.enqueue(*req, Instant::now()),
        }
    }

    fn enqueue(&mut self, req: GenerationRequest, now: Instant) {
        let (prompt_len, max_tokens) = (req.prompt.len(), req.stop.max_tokens);
        let mut seq = Sequence::new(
            req,
            self.detok.stream(),
            self.engine.kv().block_tokens(),
            now,
        );
        let invalid = if prompt_len == 0 {
            Err(GenerationError::Invalid("the prompt has no tokens".into()))
        } else if max_tokens == 0 {
            Err(GenerationError::Invalid(
                "max_tokens must be at least 1".into(),
            ))
        } else {
            self.limits().check(prompt_len, max_tokens)
        };
        match invalid {
            Err(e) => {
                self.stats.failed.fetch_add(1, Relaxed);
                seq.fail(e);
            }
            Ok(()) => self.waiting.push_back(seq),
        }
        self.publish();
    }

    /// One scheduling round: drop cancelled and timed-out requests, admit waiting ones, run
    /// one batched step and handle its logits.
    pub(crate) fn step(&mut self) {
        self.reap(Instant::now());
        self.admit();
        self.run_step();
        self.publish();
    }

    fn reap(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.running.len() {
            if let Some(outcome) = Self::reap_outcome(&self.running[i], now) {
                let s = self.running.swap_remove(i);
                self.end(s, outcome);
            } else {
                i += 1;
            }
        }
        let mut kept = VecDeque::with_capacity(self.waiting.len());
        while let Some(s) = self.waiting.pop_front() {
            match Self::reap_outcome(&s, now) {
                Some(outcome) => self.end(s, outcome),
                None => kept.push_back(s),
            }
        }
        self.waiting = kept;
    }

    fn reap_outcome(s: &Sequence, now: Instant) -> Option<Progress> {
        if s.is_closed() {
            return Some(Progress::Cancelled);
        }
        match s.deadline {
            Some((at, timeout_ms)) if now >= at => {
                Some(Progress::Failed(GenerationError::Timeout { timeout_ms }))
            }
            _ => None,
        }
    }

    /// Blocks running sequences may still allocate, reserved for them.
    fn reserved_blocks(&self) -> usize {
        let bt = self.engine.kv().block_tokens();
        self.running
            .iter()
            .map(|s| s.max_blocks.saturating_sub(s.computed.div_ceil(bt)))
            .sum()
    }

    fn admit(&mut self) {
        let bt = self.engine.kv().block_tokens();
        while self.running.len() < self.cfg.max_running_seqs.max(1) {
            let Some(front) = self.waiting.front() else {
                break;
            };
            let kv = self.engine.kv();
            let available = (kv.free_blocks() + self.cache.evictable_blocks(kv))
                .saturating_sub(self.reserved_blocks());
            // Keep at least one prompt token to compute: its logits start the generation.
            let hits = if self.cfg.prefix_cache {
                self.cache.lookup(
                    &front.tokens[..front.prompt_len],
                    (front.prompt_len - 1) / bt,
                )
            } else {
                Vec::new()
            };
            let kv = self.engine.kv();
            let idle_hits = hits.iter().filter(|&&b| kv.refcount(b) == 1).count();
            let needed = front.max_blocks - hits.len() + idle_hits;
            if needed > available {
                if self.running.is_empty() {
                    // Nothing will ever free more: the check at submission should prevent this.
                    let s = self.waiting.pop_front().expect("front exists");
                    let capacity_tokens = kv.total_blocks() * bt;
                    let needed_tokens = s.max_blocks * bt;
                    self.end(
                        s,
                        Progress::Failed(GenerationError::NeverFits {
                            needed_tokens,
                            capacity_tokens,
                        }),
                    );
                    continue;
                }
                break;
            }
            let mut s = self.waiting.pop_front().expect("front exists");
            let id = self.engine.add_sequence();
            if let Err(e) = self.engine.adopt_prefix(id, &hits) {
                self.engine.remove_sequence(id);
                self.end(s, Progress::Failed(GenerationError::Engine(e.to_string())));
                continue;
            }
            s.seq = Some(id);
            s.computed = hits.len() * bt;
            if self.cfg.prefix_cache {
                // The head of a cached block that follows the hits (an identical prompt, the
                // previous turn's last partial block) is copied, not recomputed; one prompt
                // token is always left to compute, for its logits. Without a free block it is
                // simply computed.
                let max = s.prompt_len - 1 - s.computed;
                let tokens = &s.tokens[..s.prompt_len];
                if let Some((src, n)) = self.cache.lookup_partial(tokens, hits.len(), max) {
                    if self.engine.adopt_partial(id, src, n).is_ok() {
                        s.computed += n;
                    }
                }
            }
            s.cached_tokens = s.computed;
            self.stats
                .prompt_tokens
                .fetch_add(s.prompt_len as u64, Relaxed);
            self.stats
                .prompt_tokens_cached
                .fetch_add(s.cached_tokens as u64, Relaxed);
            self.running.push(s);
        }
    }

    /// Chooses this step's inputs: (index into running, token range).
    fn plan(&self) -> Vec<(usize, std::ops::Range<usize>)> {
        let mut budget = self.cfg.step_tokens.max(1);
        let mut plan = Vec::new();
        // Decodes (and forced tokens) first, so a long prompt never stalls running streams.
        for (i, s) in self.running.iter().enumerate() {
            if s.prefilled() && s.computed < s.tokens.len() {
                plan.push((i, s.computed..s.tokens.len()));
                budget = budget.saturating_sub(s.tokens.len() - s.computed);
            }
        }
        for (i, s) in self.running.iter().enumerate() {
            if budget == 0 {
                break;
            }
            if !s.prefilled() {
                let end = s.prompt_len.min(s.computed + budget);
                budget -= end - s.computed;
                plan.push((i, s.computed..end));
            }
        }
        plan
    }

    fn run_step(&mut self) {
        let plan = self.plan();
        if plan.is_empty() {
            return;
        }
        let bt = self.engine.kv().block_tokens();
        let needed: usize = plan
            .iter()
            .map(|(i, r)| {
                (r.end.div_ceil(bt)).saturating_sub(self.running[*i].computed.div_ceil(bt))
            })
            .sum();
        let free = self.engine.kv().free_blocks();
        if needed > free {
            self.cache.evict(self.engine.kv_mut(), needed - free);
        }
        let result = {
            let inputs: Vec<StepInput<'_>> = plan
                .iter()
                .map(|(i, r)| {
                    let s = &self.running[*i];
                    StepInput {
                        seq: s.seq.expect("running sequences are admitted"),
                        tokens: &s.tokens[r.clone()],
                        want_logits: r.end == s.tokens.len(),
                    }
                })
                .collect();
            self.engine.step(&inputs)
        };
        let mut ended = Vec::new();
        match result {
            Ok(logits) => self.after_step(&plan, logits, &mut ended),
            Err(e) if plan.len() > 1 => {
                // Find the culprit by running the inputs one at a time; the others go on.
                tracing::warn!(error = %e, "batched step failed; isolating its sequences");
                for p in plan {
                    let s = &self.running[p.0];
                    let input = StepInput {
                        seq: s.seq.expect("running sequences are admitted"),
                        tokens: &s.tokens[p.1.clone()],
                        want_logits: p.1.end == s.tokens.len(),
                    };
                    match self.engine.step(&[input]) {
                        Ok(logits) => self.after_step(&[p], logits, &mut ended),
                        Err(e) => ended.push((
                            p.0,
                            Progress::Failed(GenerationError::Engine(e.to_string())),
                        )),
                    }
                }
            }
            Err(e) => ended.push((
                plan[0].0,
                Progress::Failed(GenerationError::Engine(e.to_string())),
            )),
        }
        // Highest index first, so swap_remove never moves a sequence still to be ended.
        ended.sort_unstable_by_key(|e| std::cmp::Reverse(e.0));
        for (i, outcome) in ended {
            let s = self.running.swap_remove(i);
            self.end(s, outcome);
        }
    }

    fn after_step(
        &mut self,
        plan: &[(usize, std::ops::Range<usize>)],
        logits: Vec<Vec<f32>>,
        ended: &mut Vec<(usize, Progress)>,
    ) {
        let mut logits = logits.into_iter();
        let n = plan.len() as u64;
        self.stats.steps.fetch_add(1, Relaxed);
        self.stats.batch_seqs_sum.fetch_add(n, Relaxed);
        let bucket = (64 - (n.max(1) - 1).leading_zeros() as usize).min(BATCH_BUCKETS - 1);
        self.stats.batch_seqs_buckets[bucket].fetch_add(1, Relaxed);
        for (i, range) in plan {
            let s = &mut self.running[*i];
            let was_prefilled = s.prefilled();
            s.computed = range.end;
            if !was_prefilled {
                let prompt_part = range.end.min(s.prompt_len) - range.start;
                self.stats
                    .prompt_tokens_computed
                    .fetch_add(prompt_part as u64, Relaxed);
            }
            if s.prefilled() && !s.prompt_cached && self.cfg.prefix_cache {
                // Offer the prompt's full blocks now, so requests arriving while this one
                // decodes already share them.
                s.prompt_cached = true;
                let id = s.seq.expect("running sequences are admitted");
                let blocks = self.engine.sequence_blocks(id).unwrap_or_default().to_vec();
                self.cache
                    .insert(&s.tokens[..s.prompt_len], &blocks, self.engine.kv_mut());
            }
            if range.end == s.tokens.len() {
                let Some(mut l) = logits.next() else { continue };
                let before = s.tokens.len();
                let progress = s.advance(&mut l, self.detok.eos_ids());
                self.stats
                    .generated_tokens
                    .fetch_add((s.tokens.len() - before) as u64, Relaxed);
                if progress != Progress::Running {
                    ended.push((*i, progress));
                }
            }
        }
    }

    /// Sends a request's final event and frees its sequence; a finished one leaves its full
    /// blocks (prompt and answer) in the prefix cache for the next turn.
    fn end(&mut self, mut s: Sequence, outcome: Progress) {
        let finished = matches!(outcome, Progress::Finished(_));
        match outcome {
            Progress::Finished(reason) => {
                s.finish(reason);
                self.stats.finished.fetch_add(1, Relaxed);
            }
            Progress::Cancelled => {
                self.stats.cancelled.fetch_add(1, Relaxed);
            }
            Progress::Failed(e) => {
                s.fail(e);
                self.stats.failed.fetch_add(1, Relaxed);
            }
            Progress::Running => debug_assert!(false, "end() of a running sequence"),
        }
        if let Some(id) = s.seq.take() {
            if finished && self.cfg.prefix_cache {
                let blocks = self.engine.sequence_blocks(id).unwrap_or_default().to_vec();
                self.cache
                    .insert(&s.tokens[..s.computed], &blocks, self.engine.kv_mut());
            }
            self.engine.remove_sequence(id);
        }
    }

    fn publish(&self) {
        let st = &self.stats;
        let kv = self.engine.kv();
        st.waiting_seqs.store(self.waiting.len(), Relaxed);
        st.running_seqs.store(self.running.len(), Relaxed);
        st.kv_blocks_free.store(kv.free_blocks(), Relaxed);
        st.kv_blocks_cached
            .store(self.cache.cached_blocks(), Relaxed);
        let c = self.cache.stats();
        st.prefix_lookup_blocks.store(c.lookup_blocks, Relaxed);
        st.prefix_hit_blocks.store(c.hit_blocks, Relaxed);
        st.prefix_evicted_blocks.store(c.evicted_blocks, Relaxed);
    }
}
