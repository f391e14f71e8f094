//! The batched engine: sequences with paged KV caches, advanced together by one forward step
//! over a mix of prompt chunks and single decode tokens.

use std::collections::HashMap;

use crate::kv::{KvPool, SeqKv};
use crate::model::{Model, Scratch, StepBatch};
use crate::quant::matmul::ThreadPool;
use crate::{EngineError, Result};

/// Identifies a sequence inside one engine.
pub type SeqId = u64;

/// Sizing of the engine's threads and KV pool.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Kernel threads (the calling thread included).
    pub threads: usize,
    /// Tokens per KV block.
    pub kv_block_tokens: usize,
    /// Tokens the KV pool holds over all sequences.
    pub kv_capacity_tokens: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kv_block_tokens: 16,
            kv_capacity_tokens: 8192,
        }
    }
}

/// What one sequence contributes to a step: tokens appended after its current end (a prompt
/// chunk, forced tokens, or one sampled token), and whether to return logits for its last token.
#[derive(Debug, Clone, Copy)]
pub struct StepInput<'a> {
    pub seq: SeqId,
    pub tokens: &'a [u32],
    pub want_logits: bool,
}

/// A model with its KV pool and the sequences living in it.
pub struct Engine {
    model: Model,
    pool: ThreadPool,
    kv: KvPool,
    seqs: HashMap<SeqId, SeqKv>,
    next_id: SeqId,
    scratch: Scratch,
}

impl Engine {
    /// An engine for `model` sized by `cfg`.
    pub fn new(model: Model, cfg: &EngineConfig) -> Self {
        let c = &model.config;
        let block = cfg.kv_block_tokens.max(1);
        let n_blocks = cfg.kv_capacity_tokens.div_ceil(block).max(1);
        Self {
            kv: KvPool::new(c.n_layers, c.kv_dim(), block, n_blocks),
            pool: ThreadPool::new(cfg.threads),
            model,
            seqs: HashMap::new(),
            next_id: 1,
            scratch: Scratch::default(),
        }
    }

    /// The model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The KV pool (for metrics).
    pub fn kv(&self) -> &KvPool {
        &self.kv
    }

    /// The kernel thread pool.
    pub fn thread_pool(&self) -> &ThreadPool {
        &self.pool
    }

    /// Starts an empty sequence.
    pub fn add_sequence(&mut self) -> SeqId {
        let id = self.next_id;
        self.next_id += 1;
        self.seqs.insert(id, SeqKv::default());
        id
    }

    /// Ends a sequence and frees its KV blocks. Unknown ids are ignored.
    pub fn remove_sequence(&mut self, id: SeqId) {
        if let Some(mut s) = self.seqs.remove(&id) {
            s.release(&mut self.kv);
        }
    }

    /// Tokens stored for a sequence.
    pub fn sequence_tokens(&self, id: SeqId) -> Option<usize> {
        self.seqs.get(&id).map(|s| s.tokens)
    }

    /// Number of live sequences.
    pub fn sequence_count(&self) -> usize {
        self.seqs.len()
    }

    /// Drops the tokens of a sequence past `len` (a constraint's backtrack). Blocks past the
    /// new end are released; if the new end falls inside a block shared with another holder
    /// (the prefix cache, another sequence), that block is copied first, so that the tokens
    /// written next never change KV someone else reads.
    pub fn truncate_sequence(&mut self, id: SeqId, len: usize) -> Result<()> {
        let bt = self.kv.block_tokens();
        let s = self.seqs.get_mut(&id).ok_or_else(|| unknown(id))?;
        if len >= s.tokens {
            return Ok(());
        }
        let keep = len.div_ceil(bt);
        let in_block = len % bt;
        let shared_tail = in_block != 0 && self.kv.refcount(s.blocks[keep - 1]) > 1;
        if shared_tail {
            let copy = self.kv.allocate()?;
            let src = std::mem::replace(&mut s.blocks[keep - 1], copy);
            self.kv.copy_slots(src, copy, in_block);
            self.kv.release(src);
        }
        for b in s.blocks.drain(keep..) {
            self.kv.release(b);
        }
        s.tokens = len;
        Ok(())
    }

    /// Runs one forward step over all `inputs` and returns, for each input that wants them, the
    /// logits after its last token (in input order). On error no sequence has advanced.
    pub fn step(&mut self, inputs: &[StepInput<'_>]) -> Result<Vec<Vec<f32>>> {
        self.run_step(inputs, Head::Logits { all: false })
    }

    /// Runs each input as a whole new sequence in one step and returns, per input, the mean
    /// of its tokens' final hidden states (an embedding model's pooling; its sequences are
    /// freed afterwards). A bidirectional model attends over each whole input.
    pub fn pooled_hidden(&mut self, inputs: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        let ids: Vec<SeqId> = inputs.iter().map(|_| self.add_sequence()).collect();
        let step: Vec<StepInput<'_>> = ids
            .iter()
            .zip(inputs)
            .map(|(&seq, tokens)| StepInput {
                seq,
                tokens,
                want_logits: false,
            })
            .collect();
        let result = self.run_step(&step, Head::MeanHidden);
        for id in ids {
            self.remove_sequence(id);
        }
        result
    }

    /// Appends `tokens` to one sequence and returns the logits after every one of them (for
    /// perplexity and scoring; feed long inputs in pieces to bound memory).
    pub fn step_all_logits(&mut self, seq: SeqId, tokens: &[u32]) -> Result<Vec<Vec<f32>>> {
        self.run_step(
            &[StepInput {
                seq,
                tokens,
                want_logits: true,
            }],
            Head::Logits { all: true },
        )
    }

    fn run_step(&mut self, inputs: &[StepInput<'_>], head: Head) -> Result<Vec<Vec<f32>>> {
        let all_logits = head == Head::Logits { all: true };
        let ctx = self.model.config.context_tokens;
        let bt = self.kv.block_tokens();
        let mut needed = 0;
        for (i, inp) in inputs.iter().enumerate() {
            let s = self.seqs.get(&inp.seq).ok_or_else(|| unknown(inp.seq))?;
            if inp.tokens.is_empty() {
                return Err(EngineError::InvalidRequest(format!(
                    "sequence {} has no tokens in the step",
                    inp.seq
                )));
            }
            if inputs[..i].iter().any(|o| o.seq == inp.seq) {
                return Err(EngineError::InvalidRequest(format!(
                    "sequence {} appears twice in one step",
                    inp.seq
                )));
            }
            if s.tokens + inp.tokens.len() > ctx {
                return Err(EngineError::InvalidRequest(format!(
                    "sequence {} would hold {} tokens, beyond the context of {ctx}",
                    inp.seq,
                    s.tokens + inp.tokens.len()
                )));
            }
            needed += s.blocks_needed(inp.tokens.len(), bt);
        }
        if needed > self.kv.free_blocks() {
            return Err(EngineError::KvExhausted {
                needed,
                free: self.kv.free_blocks(),
            });
        }
        for inp in inputs {
            let s = self.seqs.get_mut(&inp.seq).expect("checked above");
            for _ in 0..s.blocks_needed(inp.tokens.len(), bt) {
                s.blocks
                    .push(self.kv.allocate().expect("free blocks counted above"));
            }
        }

        let total: usize = inputs.iter().map(|i| i.tokens.len()).sum();
        let mut tokens = Vec::with_capacity(total);
        let mut positions = Vec::with_capacity(total);
        let mut seq_of_token = Vec::with_capacity(total);
        let mut logit_tokens = Vec::new();
        let mut seqs: Vec<&SeqKv> = Vec::with_capacity(inputs.len());
        for (k, inp) in inputs.iter().enumerate() {
            let s = &self.seqs[&inp.seq];
            tokens.extend_from_slice(inp.tokens);
            positions.extend(s.tokens..s.tokens + inp.tokens.len());
            seq_of_token.extend(std::iter::repeat_n(k, inp.tokens.len()));
            if all_logits {
                logit_tokens.extend(tokens.len() - inp.tokens.len()..tokens.len());
            } else if inp.want_logits {
                logit_tokens.push(tokens.len() - 1);
            }
            seqs.push(s);
        }
        let batch = StepBatch {
            tokens: &tokens,
            positions: &positions,
            seq_of_token: &seq_of_token,
            seqs: &seqs,
            logit_tokens: &logit_tokens,
        };
        let out = match head {
            Head::Logits { .. } => {
                let logits =
                    self.model
                        .forward(&self.pool, &mut self.kv, &batch, &mut self.scratch)?;
                let vocab = self.model.config.vocab_size;
                logits
                    .chunks_exact(vocab.max(1))
                    .map(<[f32]>::to_vec)
                    .collect()
            }
            Head::MeanHidden => {
                let d = self.model.config.d_model;
                let hidden = self.model.forward_hidden(
                    &self.pool,
                    &mut self.kv,
                    &batch,
                    &mut self.scratch,
                )?;
                let mut means = vec![vec![0f64; d]; inputs.len()];
                for (row, &k) in hidden.chunks_exact(d).zip(&seq_of_token) {
                    for (m, &v) in means[k].iter_mut().zip(row) {
                        *m += v as f64;
                    }
                }
                means
                    .into_iter()
                    .zip(inputs)
                    .map(|(m, inp)| {
                        let n = inp.tokens.len() as f64;
                        m.into_iter().map(|v| (v / n) as f32).collect()
                    })
                    .collect()
            }
        };
        for inp in inputs {
            self.seqs.get_mut(&inp.seq).expect("checked above").tokens += inp.tokens.len();
        }
        Ok(out)
    }
}

/// What a step returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Head {
    /// Logits of the inputs that want them (or of every token).
    Logits { all: bool },
    /// The mean final hidden state of each input.
    MeanHidden,
}

fn unknown(id: SeqId) -> EngineError {
    EngineError::InvalidRequest(format!("unknown sequence {id}"))
}

/// Prefix sharing: the hooks the scheduler's prefix cache needs.
impl Engine {
    /// The KV blocks of a sequence, in position order.
    pub fn sequence_blocks(&self, id: SeqId) -> Option<&[crate::kv::BlockId]> {
        self.seqs.get(&id).map(|s| s.blocks.as_slice())
    }

    /// Mutable access to the KV pool, for the prefix cache's `retain`/`release` only.
    pub fn kv_mut(&mut self) -> &mut KvPool {
        &mut self.kv
    }

    /// Starts an empty sequence on already computed full blocks (a cached prefix): each block
    /// gains a reference and the sequence holds `blocks.len() × block_tokens` tokens. The
    /// blocks are never written again, since new tokens go to blocks after them.
    pub fn adopt_prefix(&mut self, id: SeqId, blocks: &[crate::kv::BlockId]) -> Result<()> {
        let bt = self.kv.block_tokens();
        let ctx = self.model.config.context_tokens;
        let s = self.seqs.get_mut(&id).ok_or_else(|| unknown(id))?;
        if s.tokens != 0 {
            return Err(EngineError::InvalidRequest(format!(
                "sequence {id} is not empty: cannot adopt a prefix"
            )));
        }
        if blocks.len() * bt > ctx {
            return Err(EngineError::InvalidRequest(format!(
                "a prefix of {} blocks exceeds the context",
                blocks.len()
            )));
        }
        for &b in blocks {
            Self::check_live(&self.kv, b)?;
        }
        for &b in blocks {
            self.kv.retain(b);
        }
        s.blocks = blocks.to_vec();
        s.tokens = blocks.len() * bt;
        Ok(())
    }

    /// Whether `b` is an allocated block of the pool (one a cache or sequence holds).
    fn check_live(kv: &KvPool, b: crate::kv::BlockId) -> Result<()> {
        if b as usize >= kv.total_blocks() || kv.refcount(b) == 0 {
            return Err(EngineError::InvalidRequest(format!(
                "block {b} is not a live KV block"
            )));
        }
        Ok(())
    }

    /// Appends to sequence `id`, whose tokens fill whole blocks, a copy of the first `n`
    /// tokens of block `src` (a cached block whose head matches the prompt's next tokens):
    /// a fresh block is allocated and those slots' keys and values copied into it, since the
    /// sequence writes its own tokens after them.
    pub fn adopt_partial(&mut self, id: SeqId, src: crate::kv::BlockId, n: usize) -> Result<()> {
        let bt = self.kv.block_tokens();
        let ctx = self.model.config.context_tokens;
        let s = self.seqs.get(&id).ok_or_else(|| unknown(id))?;
        if s.tokens != s.blocks.len() * bt || n == 0 || n >= bt || s.tokens + n > ctx {
            return Err(EngineError::InvalidRequest(format!(
                "sequence {id} cannot take {n} copied tokens after its {} tokens",
                s.tokens
            )));
        }
        Self::check_live(&self.kv, src)?;
        let dst = self.kv.allocate()?;
        self.kv.copy_slots(src, dst, n);
        let Some(s) = self.seqs.get_mut(&id) else {
            self.kv.release(dst);
            return Err(unknown(id));
        };
        s.blocks.push(dst);
        s.tokens += n;
        Ok(())
    }
}
