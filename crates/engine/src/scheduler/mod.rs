//! Continuous batching: the engine on its own OS thread, advancing every admitted request by one
//! batched step at a time — decode tokens of running sequences first, then prompt chunks within
//! a token budget — with sequences joining and leaving at every step.
//!
//! Requests arrive already validated ([`GenerationRequest`]) over a channel; results go back
//! through each request's [`EventSink`]. A sink that reports its receiver gone cancels the
//! sequence at the next step and frees its KV blocks. Admission reserves KV for a request's
//! whole budget (prompt + max_tokens), so a running sequence never runs out of blocks; new work
//! waits while the pool (free blocks plus idle cached blocks) cannot cover it.

mod handle;
mod request;
mod sequence;
mod stats;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{mpsc, Arc};
use std::time::Instant;

use crate::engine::{Engine, StepInput};
use crate::prefix_cache::PrefixCache;
use sequence::{Progress, Sequence};

pub use handle::{Generated, Health, HealthProbe, Limits, SchedulerHandle};
pub use request::{
    Accepted, Detokenizer, Event, EventSink, GenerationError, GenerationRequest, RequestId,
    TextStream, TokenConstraint, Usage,
};
pub use stats::{SchedulerStats, BATCH_BUCKETS, MASK_US_BUCKETS};

use handle::{Command, Shared};

/// Sizing of the scheduler.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Sequences advanced together at most; more wait in the queue.
    pub max_running_seqs: usize,
    /// Tokens fed to one step at most (decode and forced tokens first, then prompt chunks).
    pub step_tokens: usize,
    /// Share KV blocks of identical prompt prefixes.
    pub prefix_cache: bool,
    /// A fault to inject, for testing the supervision (never set in production).
    pub fault: Option<Fault>,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            max_running_seqs: 8,
            step_tokens: 256,
            prefix_cache: true,
            fault: None,
        }
    }
}

/// A deliberate failure, for tests of the supervised thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The forward pass of step number `at_step` (counting from 1) panics.
    PanicInStep { at_step: u64 },
    /// The bookkeeping after step number `at_step` panics, leaving state that cannot be trusted.
    PanicOutsideStep { at_step: u64 },
}

/// Panics in a row after which the engine is no longer trusted, even inside steps.
const MAX_CONSECUTIVE_PANICS: u32 = 3;

/// Where the scheduler thread is, so that a caught panic can be judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Admission, bookkeeping, sampling: a panic here leaves state that cannot be trusted.
    Bookkeeping,
    /// Inside the batched forward pass: a panic fails that step's requests only.
    Forward,
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
    shared: Arc<Shared>,
    /// Requests of the step being run.
    in_step: Vec<RequestId>,
    phase: Phase,
    consecutive_panics: u32,
    /// Steps started (a panicked one included), for fault injection.
    steps_started: u64,
}

/// Mask outcomes of a step, by index into the running sequences.
type MaskOutcomes = Vec<(usize, MaskOutcome)>;

/// What a mask computation of one sequence came to.
enum MaskOutcome {
    Ready,
    Failed(String),
    Panicked(String),
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
            shared: sched.shared.clone(),
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
            shared: Arc::new(Shared::default()),
            in_step: Vec::new(),
            phase: Phase::Bookkeeping,
            consecutive_panics: 0,
            steps_started: 0,
        }
    }

    fn limits(&self) -> Limits {
        let kv = self.engine.kv();
        Limits {
            context_tokens: self.engine.model().config.context_tokens,
            kv_capacity_tokens: kv.total_blocks() * kv.block_tokens(),
            kv_block_tokens: kv.block_tokens(),
            vocab_size: self.engine.model().config.vocab_size,
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
            if let Err(reason) = self.supervised_step() {
                self.go_down(reason);
                return;
            }
        }
        self.cache.clear(self.engine.kv_mut());
    }

    /// One step with panics caught: a panic in the forward pass fails that step's requests
    /// and the engine goes on; anywhere else (or too often) the state is not trusted and the
    /// reason is returned.
    fn supervised_step(&mut self) -> Result<(), String> {
        let Err(payload) = catch_unwind(AssertUnwindSafe(|| self.step())) else {
            self.consecutive_panics = 0;
            return Ok(());
        };
        let detail = panic_message(payload.as_ref());
        self.stats.step_panics.fetch_add(1, Relaxed);
        tracing::error!(panic = %detail, phase = ?self.phase, "engine step panicked");
        if self.phase != Phase::Forward {
            return Err(format!("panic outside the forward pass: {detail}"));
        }
        self.phase = Phase::Bookkeeping;
        self.consecutive_panics += 1;
        if self.consecutive_panics >= MAX_CONSECUTIVE_PANICS {
            return Err(format!(
                "{} engine steps in a row panicked, the last with: {detail}",
                self.consecutive_panics
            ));
        }
        for id in std::mem::take(&mut self.in_step) {
            if let Some(i) = self.running.iter().position(|s| s.id == id) {
                let s = self.running.swap_remove(i);
                let e = GenerationError::StepPanicked {
                    detail: detail.clone(),
                };
                self.end(s, Progress::Failed(e));
            }
        }
        self.publish();
        Ok(())
    }

    /// Fails every request and marks the thread down (handles refuse new work, `/ready` fails).
    fn go_down(&mut self, reason: String) {
        tracing::error!(%reason, "the engine is down");
        if let Ok(mut r) = self.shared.down_reason.lock() {
            *r = reason;
        }
        self.shared.down.store(true, Relaxed);
        for mut s in self.running.drain(..).chain(self.waiting.drain(..)) {
            s.fail(GenerationError::EngineDown);
        }
        self.stats.running_seqs.store(0, Relaxed);
        self.stats.waiting_seqs.store(0, Relaxed);
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Submit(id, req) => self.enqueue(id, *req, Instant::now()),
            Command::Cancel(id) => self.cancel(id),
        }
    }

    fn cancel(&mut self, id: RequestId) {
        let s = if let Some(i) = self.running.iter().position(|s| s.id == id) {
            self.running.swap_remove(i)
        } else if let Some(i) = self.waiting.iter().position(|s| s.id == id) {
            match self.waiting.remove(i) {
                Some(s) => s,
                None => return,
            }
        } else {
            return;
        };
        // Counted as cancelled (like a client that went away); the sink still hears why.
        let mut s = s;
        s.fail(GenerationError::Cancelled);
        self.end(s, Progress::Cancelled);
        self.publish();
    }

    fn enqueue(&mut self, id: RequestId, req: GenerationRequest, now: Instant) {
        let (prompt_len, max_tokens) = (req.prompt.len(), req.stop.max_tokens);
        let mut seq = Sequence::new(
            id,
            req,
            self.detok.stream(),
            self.engine.kv().block_tokens(),
            now,
        );
        let invalid = if prompt_len == 0 {
            Err(GenerationError::EmptyPrompt)
        } else if max_tokens == 0 {
            Err(GenerationError::ZeroMaxTokens)
        } else {
            self.limits().check(prompt_len, max_tokens)
        };
        match invalid {
            Err(e) => {
                self.stats.failed.fetch_add(1, Relaxed);
                seq.fail(e);
            }
            Ok(()) => match seq.begin() {
                None => self.waiting.push_back(seq),
                Some(outcome) => self.end(seq, outcome),
            },
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
        if let Some(Fault::PanicOutsideStep { at_step }) = self.cfg.fault {
            if self.steps_started == at_step {
                panic!("injected fault: bookkeeping after step {at_step}");
            }
        }
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
                self.end(s, Progress::Failed(step_failed(&e)));
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
        self.in_step.clear();
        self.in_step
            .extend(plan.iter().map(|(i, _)| self.running[*i].id));
        self.steps_started += 1;
        let fault = self.cfg.fault
            == Some(Fault::PanicInStep {
                at_step: self.steps_started,
            });
        let (result, masks) = step_with_masks(
            &mut self.engine,
            &mut self.running,
            &plan,
            &mut self.phase,
            &self.stats,
            fault,
        );
        let mut ended = Vec::new();
        for (i, outcome) in masks {
            match outcome {
                MaskOutcome::Ready => {}
                MaskOutcome::Failed(detail) => ended.push((
                    i,
                    Progress::Failed(GenerationError::ConstraintDeadEnd { detail }),
                )),
                MaskOutcome::Panicked(detail) => ended.push((
                    i,
                    Progress::Failed(GenerationError::StepPanicked { detail }),
                )),
            }
        }
        let skip: Vec<usize> = ended.iter().map(|e| e.0).collect();
        match result {
            Ok(logits) => self.after_step(&plan, logits, &skip, &mut ended),
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
                    self.phase = Phase::Forward;
                    let one = self.engine.step(&[input]);
                    self.phase = Phase::Bookkeeping;
                    match one {
                        Ok(logits) => self.after_step(&[p], logits, &skip, &mut ended),
                        Err(e) => ended.push((p.0, Progress::Failed(step_failed(&e)))),
                    }
                }
            }
            Err(e) => ended.push((plan[0].0, Progress::Failed(step_failed(&e)))),
        }
        self.in_step.clear();
        // Highest index first, so swap_remove never moves a sequence still to be ended.
        ended.sort_unstable_by_key(|e| std::cmp::Reverse(e.0));
        ended.dedup_by_key(|e| e.0);
        for (i, outcome) in ended {
            let s = self.running.swap_remove(i);
            self.end(s, outcome);
        }
    }

    fn after_step(
        &mut self,
        plan: &[(usize, std::ops::Range<usize>)],
        logits: Vec<Vec<f32>>,
        skip: &[usize],
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
            if range.end != s.tokens.len() {
                continue;
            }
            let Some(mut l) = logits.next() else { continue };
            if skip.contains(i) {
                continue;
            }
            let before = s.tokens.len();
            // A panic while sampling or inside a constraint's callback ends this sequence only.
            let progress =
                catch_unwind(AssertUnwindSafe(|| s.advance(&mut l, self.detok.eos_ids())))
                    .unwrap_or_else(|p| {
                        Progress::Failed(GenerationError::StepPanicked {
                            detail: panic_message(p.as_ref()),
                        })
                    });
            let s = &mut self.running[*i];
            self.stats
                .generated_tokens
                .fetch_add(s.tokens.len().saturating_sub(before) as u64, Relaxed);
            if s.computed > s.tokens.len() {
                // The constraint dropped computed tokens: drop their keys and values too
                // (copy-on-write where the block is shared with the prefix cache).
                let id = s.seq.expect("running sequences are admitted");
                if let Err(e) = self.engine.truncate_sequence(id, s.tokens.len()) {
                    ended.push((*i, Progress::Failed(step_failed(&e))));
                    continue;
                }
                s.computed = s.tokens.len();
            }
            if progress != Progress::Running {
                ended.push((*i, progress));
            }
        }
    }

    /// Sends a request's final event and frees its sequence; a finished one leaves its full
    /// blocks (prompt and answer) in the prefix cache for the next turn.
    fn end(&mut self, mut s: Sequence, outcome: Progress) {
        let finished = matches!(outcome, Progress::Finished(_));
        if s.is_constrained() {
            let forced = s.usage().forced_tokens as u64;
            self.stats.forced_tokens.fetch_add(forced, Relaxed);
            match &outcome {
                Progress::Finished(_) => {
                    self.stats.constrained_answers.fetch_add(1, Relaxed);
                    self.stats.answer_forced_sum.fetch_add(forced, Relaxed);
                }
                Progress::Failed(
                    GenerationError::ConstraintDeadEnd { .. } | GenerationError::Incomplete { .. },
                ) => {
                    self.stats.grammar_errors.fetch_add(1, Relaxed);
                }
                _ => {}
            }
        }
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
                    .insert_finished(&s.tokens[..s.computed], &blocks, self.engine.kv_mut());
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

/// The forward pass of one step, with the masks of its constrained sequences computed on a
/// helper thread meanwhile (each mask depends only on tokens the constraint already accepted).
/// Returns the step's logits and, per sequence index whose mask was computed, its outcome.
fn step_with_masks(
    engine: &mut Engine,
    running: &mut [Sequence],
    plan: &[(usize, std::ops::Range<usize>)],
    phase: &mut Phase,
    stats: &SchedulerStats,
    inject_panic: bool,
) -> (crate::Result<Vec<Vec<f32>>>, MaskOutcomes) {
    let mut range_of: Vec<Option<std::ops::Range<usize>>> = vec![None; running.len()];
    for (i, r) in plan {
        range_of[*i] = Some(r.clone());
    }
    let mut inputs_at: Vec<Option<StepInput<'_>>> = vec![None; running.len()];
    let mut constraints: Vec<(usize, &mut (dyn TokenConstraint + 'static))> = Vec::new();
    for (i, s) in running.iter_mut().enumerate() {
        let Some(r) = range_of[i].clone() else {
            continue;
        };
        let seq = s.seq.expect("running sequences are admitted");
        let (tokens, constraint) = s.split_for_step();
        let want_logits = r.end == tokens.len();
        inputs_at[i] = Some(StepInput {
            seq,
            tokens: &tokens[r],
            want_logits,
        });
        if let (true, Some(c)) = (want_logits, constraint) {
            constraints.push((i, c));
        }
    }
    let inputs: Vec<StepInput<'_>> = plan
        .iter()
        .filter_map(|(i, _)| inputs_at[*i].take())
        .collect();
    let constrained: Vec<usize> = constraints.iter().map(|c| c.0).collect();
    let all_failed = |why: &str| -> Vec<(usize, MaskOutcome)> {
        let out = |&i| (i, MaskOutcome::Failed(why.to_string()));
        constrained.iter().map(out).collect()
    };
    std::thread::scope(|scope| {
        let masks = (!constraints.is_empty()).then(|| {
            std::thread::Builder::new()
                .name("sprout-mask".into())
                .spawn_scoped(scope, move || compute_masks(constraints, stats))
        });
        *phase = Phase::Forward;
        if inject_panic {
            panic!("injected fault: forward pass");
        }
        let result = engine.step(&inputs);
        *phase = Phase::Bookkeeping;
        let outcomes = match masks {
            None => Vec::new(),
            Some(Ok(h)) => h
                .join()
                .unwrap_or_else(|_| all_failed("the mask thread panicked")),
            Some(Err(e)) => all_failed(&format!("no mask thread could be started: {e}")),
        };
        (result, outcomes)
    })
}

fn compute_masks(
    constraints: Vec<(usize, &mut (dyn TokenConstraint + 'static))>,
    stats: &SchedulerStats,
) -> Vec<(usize, MaskOutcome)> {
    constraints
        .into_iter()
        .map(|(i, c)| {
            let t = Instant::now();
            let outcome = match catch_unwind(AssertUnwindSafe(|| c.compute_mask())) {
                Ok(Ok(())) => MaskOutcome::Ready,
                Ok(Err(detail)) => MaskOutcome::Failed(detail),
                Err(p) => MaskOutcome::Panicked(panic_message(p.as_ref())),
            };
            stats.record_mask(t.elapsed().as_micros() as u64);
            (i, outcome)
        })
        .collect()
}

fn step_failed(e: &crate::EngineError) -> GenerationError {
    GenerationError::StepFailed {
        detail: e.to_string(),
    }
}

/// The text of a caught panic.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}
