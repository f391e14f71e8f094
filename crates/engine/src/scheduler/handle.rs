//! The scheduler as async code and the CLI see it: submit a request and get its id, cancel by
//! id, read limits, counters and health. Cheap to clone; every method returns at once.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Arc, Mutex};

use super::request::{Event, GenerationError, GenerationRequest, RequestId, Usage};
use super::stats::SchedulerStats;
use crate::generation::FinishReason;

/// What the scheduler thread is told.
pub(crate) enum Command {
    Submit(RequestId, Box<GenerationRequest>),
    Cancel(RequestId),
}

/// Fixed limits of a running scheduler, for validation before submitting.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub context_tokens: usize,
    pub kv_capacity_tokens: usize,
    pub kv_block_tokens: usize,
    pub vocab_size: usize,
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

/// Whether the scheduler thread can be trusted with new work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Serving,
    /// The thread stopped after a fault it could not recover from; the process should exit
    /// so that a supervisor restarts it.
    Down {
        reason: String,
    },
}

/// Reads the scheduler's health without holding it open.
#[derive(Clone)]
pub struct HealthProbe(Arc<Shared>);

impl HealthProbe {
    /// Whether the thread still serves.
    pub fn health(&self) -> Health {
        if self.0.down.load(Relaxed) {
            let reason = self
                .0
                .down_reason
                .lock()
                .map(|r| r.clone())
                .unwrap_or_default();
            Health::Down { reason }
        } else {
            Health::Serving
        }
    }
}

/// Shared between the handles and the thread.
#[derive(Default)]
pub(crate) struct Shared {
    pub closed: AtomicBool,
    pub down: AtomicBool,
    pub down_reason: Mutex<String>,
    pub next_id: AtomicU64,
}

/// The handle async code holds: submits requests, cancels them, reads stats. Cheap to clone.
#[derive(Clone)]
pub struct SchedulerHandle {
    pub(crate) tx: mpsc::Sender<Command>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) stats: Arc<SchedulerStats>,
    pub(crate) limits: Limits,
}

impl SchedulerHandle {
    /// Queues a request; its events arrive on its sink. The id cancels it.
    pub fn submit(&self, req: GenerationRequest) -> Result<RequestId, GenerationError> {
        if self.shared.down.load(Relaxed) {
            return Err(GenerationError::EngineDown);
        }
        if self.shared.closed.load(Relaxed) {
            return Err(GenerationError::ShuttingDown);
        }
        let id = self.shared.next_id.fetch_add(1, Relaxed) + 1;
        self.tx
            .send(Command::Submit(id, Box::new(req)))
            .map_err(|_| GenerationError::EngineDown)?;
        Ok(id)
    }

    /// Ends request `id` wherever it is (queued or running) with [`GenerationError::Cancelled`]
    /// and frees its KV; unknown or finished ids are ignored.
    pub fn cancel(&self, id: RequestId) {
        let _ = self.tx.send(Command::Cancel(id));
    }

    /// Stops taking requests; the thread ends once in-flight ones are done and every handle
    /// is dropped.
    pub fn close(&self) {
        self.shared.closed.store(true, Relaxed);
    }

    /// Whether the thread still serves.
    pub fn health(&self) -> Health {
        self.health_probe().health()
    }

    /// A health reader that does not keep the thread alive (a handle does: the thread runs
    /// while any handle exists).
    pub fn health_probe(&self) -> HealthProbe {
        HealthProbe(self.shared.clone())
    }

    /// Live counters.
    pub fn stats(&self) -> &SchedulerStats {
        &self.stats
    }

    /// Context and KV limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Submits `req` (its `events` are replaced) and waits for it on this thread, calling
    /// `on_text` with each piece; `on_text` returning false cancels. For the CLI.
    pub fn generate_blocking(
        &self,
        mut req: GenerationRequest,
        mut on_text: impl FnMut(&str) -> bool,
    ) -> Result<Generated, GenerationError> {
        let (tx, rx) = mpsc::channel();
        req.events = Box::new(tx);
        let id = self.submit(req)?;
        let mut text = String::new();
        for ev in rx.iter() {
            match ev {
                Event::Text(t) => {
                    text.push_str(&t);
                    if !on_text(&t) {
                        self.cancel(id);
                    }
                }
                Event::Finished { reason, usage } => {
                    return Ok(Generated {
                        text,
                        reason,
                        usage,
                    })
                }
                Event::Failed(e) => return Err(e),
            }
        }
        Err(GenerationError::EngineDown)
    }
}

/// A whole answer, as [`SchedulerHandle::generate_blocking`] returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    pub text: String,
    pub reason: FinishReason,
    pub usage: Usage,
}
