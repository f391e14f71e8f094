//! Scheduler tests on a tiny random-weight llama driven by token ids: batched results equal
//! solo runs, chunked prefill keeps decodes flowing, cancellation and timeouts free KV, the
//! prefix cache skips recomputation, failures stay with their own request.

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::time::Duration;

use super::*;
use crate::engine::EngineConfig;
use crate::generation::{FinishReason, StopConditions};
use crate::gguf::Value;
use crate::model::source::{ModelSource, SourceTensor};
use crate::model::Model;
use crate::quant::GgmlType;
use crate::sampler::{SamplingParams, TokenMask};

const VOCAB: usize = 64;
const BLOCK: usize = 4;

fn tiny_model() -> Model {
    let (d, ffn, layers, heads, kv_heads, head_dim) = (32, 48, 2, 4, 2, 8);
    let mut seed = 0x5eed_u64;
    let mut rnd = |n: usize, scale: f32, offset: f32| -> Vec<f32> {
        (0..n)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale + offset
            })
            .collect()
    };
    let mut tensors = BTreeMap::new();
    let mut put = |name: String, dims: Vec<usize>, data: Vec<f32>| {
        let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        tensors.insert(
            name,
            SourceTensor {
                ty: GgmlType::F32,
                dims,
                data: bytes.into(),
            },
        );
    };
    put(
        "token_embd.weight".into(),
        vec![d, VOCAB],
        rnd(d * VOCAB, 1.0, 0.0),
    );
    put("output_norm.weight".into(), vec![d], rnd(d, 0.2, 1.0));
    put(
        "output.weight".into(),
        vec![d, VOCAB],
        rnd(d * VOCAB, 1.0, 0.0),
    );
    let (q, kv) = (heads * head_dim, kv_heads * head_dim);
    for l in 0..layers {
        let n = |s: &str| format!("blk.{l}.{s}");
        put(n("attn_norm.weight"), vec![d], rnd(d, 0.2, 1.0));
        put(n("attn_q.weight"), vec![d, q], rnd(d * q, 0.3, 0.0));
        put(n("attn_k.weight"), vec![d, kv], rnd(d * kv, 0.3, 0.0));
        put(n("attn_v.weight"), vec![d, kv], rnd(d * kv, 0.3, 0.0));
        put(n("attn_output.weight"), vec![q, d], rnd(q * d, 0.3, 0.0));
        put(n("ffn_norm.weight"), vec![d], rnd(d, 0.2, 1.0));
        put(n("ffn_gate.weight"), vec![d, ffn], rnd(d * ffn, 0.3, 0.0));
        put(n("ffn_up.weight"), vec![d, ffn], rnd(d * ffn, 0.3, 0.0));
        put(n("ffn_down.weight"), vec![ffn, d], rnd(ffn * d, 0.3, 0.0));
    }
    let mut m = BTreeMap::new();
    m.insert("general.architecture".into(), Value::String("llama".into()));
    for (k, v) in [
        ("block_count", layers),
        ("context_length", 512),
        ("embedding_length", d),
        ("feed_forward_length", ffn),
        ("attention.head_count", heads),
        ("attention.head_count_kv", kv_heads),
    ] {
        m.insert(format!("llama.{k}"), Value::U32(v as u32));
    }
    m.insert(
        "llama.attention.layer_norm_rms_epsilon".into(),
        Value::F32(1e-5),
    );
    m.insert("llama.rope.freq_base".into(), Value::F32(10_000.0));
    Model::load(&ModelSource {
        metadata: m,
        tensors,
    })
    .expect("the tiny model is well-formed")
}

/// Token t reads as "<t>"; token 0 is EOS.
struct Ids;
struct IdStream(usize);
impl TextStream for IdStream {
    fn push(&mut self, id: u32) -> String {
        let t = format!("<{id}>");
        let skip = self.0.min(t.len());
        self.0 -= skip;
        t[skip..].to_string()
    }
    fn skip_bytes(&mut self, bytes: usize) {
        self.0 += bytes;
    }
    fn finish(&mut self) -> String {
        String::new()
    }
}
impl Detokenizer for Ids {
    fn stream(&self) -> Box<dyn TextStream> {
        Box::new(IdStream(0))
    }
    fn eos_ids(&self) -> &[u32] {
        &[0]
    }
}

fn scheduler(kv_tokens: usize, cfg: SchedulerConfig) -> Scheduler {
    let engine_cfg = EngineConfig {
        threads: 1,
        kv_block_tokens: BLOCK,
        kv_capacity_tokens: kv_tokens,
    };
    Scheduler::new(Engine::new(tiny_model(), &engine_cfg), Arc::new(Ids), cfg)
}

fn request(prompt: Vec<u32>, max_tokens: usize) -> (GenerationRequest, mpsc::Receiver<Event>) {
    let (tx, rx) = mpsc::channel();
    let req = GenerationRequest {
        prompt,
        sampling: SamplingParams::default(),
        stop: StopConditions {
            max_tokens,
            stop_strings: vec![],
            ignore_eos: true,
        },
        constraint: None,
        timeout: None,
        events: Box::new(tx),
    };
    (req, rx)
}

fn next_id() -> RequestId {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, Relaxed)
}

fn prompt(seed: u32, len: usize) -> Vec<u32> {
    (0..len as u32)
        .map(|i| 1 + (i * 7 + seed * 13) % (VOCAB as u32 - 1))
        .collect()
}

/// Steps until nothing is left.
fn drain(s: &mut Scheduler) -> usize {
    let mut steps = 0;
    while !(s.running.is_empty() && s.waiting.is_empty()) {
        s.step();
        steps += 1;
        assert!(steps < 10_000, "the scheduler made no progress");
    }
    steps
}

/// All events of a finished request: (text, final event).
fn collect(rx: &mpsc::Receiver<Event>) -> (String, Event) {
    let mut text = String::new();
    for ev in rx.try_iter() {
        match ev {
            Event::Text(t) => text += &t,
            other => return (text, other),
        }
    }
    panic!("no final event; text so far {text:?}");
}

fn solo(p: Vec<u32>, max_tokens: usize) -> (String, Event) {
    let mut s = scheduler(
        512,
        SchedulerConfig {
            prefix_cache: false,
            ..Default::default()
        },
    );
    let (req, rx) = request(p, max_tokens);
    s.enqueue(next_id(), req, Instant::now());
    drain(&mut s);
    collect(&rx)
}

#[test]
fn batched_requests_match_solo_runs() {
    let prompts = [prompt(1, 3), prompt(2, 17), prompt(3, 40)];
    let mut s = scheduler(
        512,
        SchedulerConfig {
            step_tokens: 16,
            prefix_cache: false,
            ..Default::default()
        },
    );
    let rxs: Vec<_> = prompts
        .iter()
        .map(|p| {
            let (req, rx) = request(p.clone(), 6);
            s.enqueue(next_id(), req, Instant::now());
            rx
        })
        .collect();
    drain(&mut s);
    for (p, rx) in prompts.iter().zip(&rxs) {
        let got = collect(rx);
        assert_eq!(got, solo(p.clone(), 6), "prompt of {} tokens", p.len());
        let Event::Finished { reason, usage } = got.1 else {
            panic!("{got:?}")
        };
        assert_eq!(reason, FinishReason::Length);
        assert_eq!(
            usage,
            Usage {
                prompt_tokens: p.len(),
                completion_tokens: 6,
                cached_tokens: 0,
                forced_tokens: 0,
            }
        );
    }
    assert!(
        s.stats.batch_seqs_sum.load(Relaxed) > s.stats.steps.load(Relaxed),
        "steps were batched"
    );
    assert_eq!(
        s.engine.kv().free_blocks(),
        s.engine.kv().total_blocks(),
        "all KV freed"
    );
}

#[test]
fn long_prefill_is_chunked_and_decodes_keep_flowing() {
    let mut s = scheduler(
        512,
        SchedulerConfig {
            step_tokens: 8,
            prefix_cache: false,
            ..Default::default()
        },
    );
    let (short, short_rx) = request(prompt(4, 3), 4);
    s.enqueue(next_id(), short, Instant::now());
    s.step(); // short prefilled, first token out
    let (long, long_rx) = request(prompt(5, 100), 2);
    s.enqueue(next_id(), long, Instant::now());
    // The long prompt needs ≥ 13 steps of 8 tokens; the short request finishes meanwhile.
    for _ in 0..4 {
        s.step();
    }
    assert!(matches!(collect(&short_rx).1, Event::Finished { .. }));
    assert!(
        long_rx.try_recv().is_err(),
        "the long prompt is still being prefilled"
    );
    drain(&mut s);
    assert_eq!(collect(&long_rx), solo(prompt(5, 100), 2));
    assert_eq!(s.stats.prompt_tokens_computed.load(Relaxed), 103);
}

#[test]
fn dropped_receiver_cancels_and_frees_kv() {
    let mut s = scheduler(512, SchedulerConfig::default());
    let (req, rx) = request(prompt(6, 10), 300);
    let (other, other_rx) = request(prompt(7, 5), 5);
    s.enqueue(next_id(), req, Instant::now());
    s.enqueue(next_id(), other, Instant::now());
    s.step();
    s.step();
    drop(rx);
    s.step(); // the next text send fails: cancelled
    assert_eq!(s.stats.cancelled.load(Relaxed), 1);
    drain(&mut s);
    assert_eq!(
        collect(&other_rx),
        solo(prompt(7, 5), 5),
        "the other request is unharmed"
    );
    let kv = s.engine.kv();
    assert_eq!(
        kv.free_blocks() + s.cache.evictable_blocks(kv),
        kv.total_blocks()
    );
    assert_eq!(s.engine.sequence_count(), 0);
}

#[test]
fn timeout_ends_the_request_with_an_error() {
    let mut s = scheduler(512, SchedulerConfig::default());
    let (mut req, rx) = request(prompt(8, 5), 400);
    req.timeout = Some(Duration::ZERO);
    s.enqueue(next_id(), req, Instant::now());
    drain(&mut s);
    assert_eq!(
        collect(&rx).1,
        Event::Failed(GenerationError::Timeout { timeout_ms: 0 })
    );
}

#[test]
fn shared_prefix_is_computed_once() {
    let mut s = scheduler(512, SchedulerConfig::default());
    let system = prompt(9, 22);
    let a = [system.clone(), vec![5, 6, 7]].concat();
    let b = [system.clone(), vec![8, 9]].concat();
    let (ra, rxa) = request(a.clone(), 3);
    s.enqueue(next_id(), ra, Instant::now());
    drain(&mut s);
    let (rb, rxb) = request(b.clone(), 3);
    s.enqueue(next_id(), rb, Instant::now());
    drain(&mut s);
    let (ta, tb) = (collect(&rxa), collect(&rxb));
    assert_eq!(ta, solo(a.clone(), 3));
    assert_eq!(
        tb.0,
        solo(b.clone(), 3).0,
        "cached KV gives the same tokens"
    );
    let Event::Finished { usage, .. } = tb.1 else {
        panic!()
    };
    assert_eq!(
        usage.cached_tokens, 22,
        "the shared 22 tokens: five full blocks adopted, the head of the sixth copied"
    );
    assert_eq!(
        s.stats.prompt_tokens_computed.load(Relaxed),
        (a.len() + b.len() - 22) as u64
    );
    assert_eq!(s.stats.prompt_tokens_cached.load(Relaxed), 22);
    assert!(s.cache.stats().hit_blocks >= 5);
    assert_eq!(s.cache.stats().partial_hit_tokens, 2);
    // A prompt ending inside a cached block computes only its last token.
    let d = a[..23].to_vec();
    let (rd, rxd) = request(d.clone(), 3);
    s.enqueue(next_id(), rd, Instant::now());
    drain(&mut s);
    let td = collect(&rxd);
    assert_eq!(td.0, solo(d, 3).0, "copied KV gives the same tokens");
    let Event::Finished { usage, .. } = td.1 else {
        panic!()
    };
    assert_eq!(usage.cached_tokens, 22);
    // A whole-prompt hit still computes the last token for its logits.
    let (rc, rxc) = request(a.clone(), 3);
    s.enqueue(next_id(), rc, Instant::now());
    drain(&mut s);
    let tc = collect(&rxc);
    assert_eq!(tc.0, ta.0);
    let Event::Finished { usage, .. } = tc.1 else {
        panic!()
    };
    assert_eq!(usage.cached_tokens, 24);
}

#[test]
fn kv_pressure_makes_work_wait_and_never_fitting_work_is_refused() {
    // 40 tokens of KV: each request reserves 20 + 8 = 28 → one at a time.
    let mut s = scheduler(40, SchedulerConfig::default());
    let rxs: Vec<_> = (0..3)
        .map(|i| {
            let (req, rx) = request(prompt(10 + i, 20), 8);
            s.enqueue(next_id(), req, Instant::now());
            rx
        })
        .collect();
    s.step();
    assert_eq!((s.running.len(), s.waiting.len()), (1, 2));
    drain(&mut s);
    for (i, rx) in rxs.iter().enumerate() {
        assert_eq!(collect(rx), solo(prompt(10 + i as u32, 20), 8));
    }
    let (big, rx) = request(prompt(20, 30), 20);
    s.enqueue(next_id(), big, Instant::now());
    assert_eq!(
        collect(&rx).1,
        Event::Failed(GenerationError::NeverFits {
            needed_tokens: 52,
            capacity_tokens: 40
        })
    );
}

/// Allows only even tokens below 60 and forces `k+1, k+2` after every sampled token `k`.
struct EvenThenForce(TokenMask);
impl TokenConstraint for EvenThenForce {
    fn compute_mask(&mut self) -> Result<(), String> {
        Ok(())
    }
    fn mask(&self) -> Option<&TokenMask> {
        Some(&self.0)
    }
    fn accept(&mut self, token: u32) -> Result<Accepted, String> {
        if token % 2 == 1 {
            return Err(format!("odd token {token}"));
        }
        Ok(Accepted {
            forced: vec![token + 1, token + 2],
            ..Default::default()
        })
    }
    fn is_complete(&mut self) -> bool {
        true
    }
}

/// Allows nothing: the sequence fails at its first sample.
struct DeadEnd(TokenMask);
impl TokenConstraint for DeadEnd {
    fn compute_mask(&mut self) -> Result<(), String> {
        Ok(())
    }
    fn mask(&self) -> Option<&TokenMask> {
        Some(&self.0)
    }
    fn accept(&mut self, _: u32) -> Result<Accepted, String> {
        Ok(Accepted::default())
    }
    fn is_complete(&mut self) -> bool {
        false
    }
}

#[test]
fn constraints_mask_force_tokens_and_fail_alone() {
    let mut s = scheduler(512, SchedulerConfig::default());
    let mut even = TokenMask::none(VOCAB);
    (0..60).step_by(2).for_each(|t| even.allow(t));
    let (mut a, rxa) = request(prompt(11, 6), 7);
    a.constraint = Some(Box::new(EvenThenForce(even)));
    let (mut b, rxb) = request(prompt(12, 6), 7);
    b.constraint = Some(Box::new(DeadEnd(TokenMask::none(VOCAB))));
    let (c, rxc) = request(prompt(13, 6), 4);
    for r in [a, b, c] {
        s.enqueue(next_id(), r, Instant::now());
    }
    drain(&mut s);
    let (text, fin) = collect(&rxa);
    let ids: Vec<u32> = text
        .trim_matches(['<', '>'])
        .split("><")
        .map(|t| t.parse().unwrap())
        .collect();
    assert_eq!(ids.len(), 7, "max_tokens counts forced tokens: {text}");
    for triple in ids.chunks(3) {
        assert_eq!(triple[0] % 2, 0);
        let expect: Vec<u32> = (0..triple.len() as u32).map(|k| triple[0] + k).collect();
        assert_eq!(
            triple,
            expect.as_slice(),
            "two forced tokens follow each sampled one: {text}"
        );
    }
    assert!(matches!(
        fin,
        Event::Finished {
            reason: FinishReason::Length,
            ..
        }
    ));
    assert_eq!(
        collect(&rxb).1,
        Event::Failed(GenerationError::ConstraintDeadEnd {
            detail: "no token is allowed here".into()
        })
    );
    assert_eq!(
        collect(&rxc),
        solo(prompt(13, 6), 4),
        "the unconstrained neighbour is unharmed"
    );
}

#[test]
fn eos_and_stop_strings_end_generation() {
    let p = prompt(14, 5);
    let (text, _) = solo(p.clone(), 6);
    // Stop at the text of the third token.
    let third = text.split_inclusive('>').nth(2).unwrap().to_string();
    let mut s = scheduler(512, SchedulerConfig::default());
    let (mut req, rx) = request(p, 6);
    req.stop.stop_strings = vec![third.clone()];
    s.enqueue(next_id(), req, Instant::now());
    drain(&mut s);
    let (got, fin) = collect(&rx);
    assert!(
        text.starts_with(&(got.clone() + &third)),
        "{got:?} then {third:?} in {text:?}"
    );
    assert!(matches!(
        fin,
        Event::Finished {
            reason: FinishReason::Stop,
            ..
        }
    ));

    let (mut bad, rx) = request(vec![], 3);
    bad.stop.max_tokens = 3;
    s.enqueue(next_id(), bad, Instant::now());
    assert!(matches!(
        collect(&rx).1,
        Event::Failed(GenerationError::EmptyPrompt)
    ));
}

#[test]
fn spawned_thread_serves_and_exits_when_handles_drop() {
    let engine_cfg = EngineConfig {
        threads: 1,
        kv_block_tokens: BLOCK,
        kv_capacity_tokens: 256,
    };
    let engine = Engine::new(tiny_model(), &engine_cfg);
    let (handle, join) =
        Scheduler::spawn(engine, Arc::new(Ids), SchedulerConfig::default()).unwrap();
    assert_eq!(handle.limits().kv_capacity_tokens, 256);
    let (req, rx) = request(prompt(15, 4), 3);
    handle.submit(req).unwrap();
    let mut text = String::new();
    let fin = loop {
        match rx.recv_timeout(Duration::from_secs(60)).expect("an event") {
            Event::Text(t) => text += &t,
            other => break other,
        }
    };
    assert_eq!((text, fin), solo(prompt(15, 4), 3));
    handle.close();
    assert_eq!(
        handle.submit(request(prompt(1, 1), 1).0),
        Err(GenerationError::ShuttingDown)
    );
    drop(handle);
    join.join().unwrap();
}

#[test]
fn cancel_by_id_ends_queued_and_running_requests() {
    let mut s = scheduler(
        512,
        SchedulerConfig {
            max_running_seqs: 1,
            ..Default::default()
        },
    );
    let (a, rxa) = request(prompt(21, 6), 50);
    let (b, rxb) = request(prompt(22, 6), 50);
    let (c, rxc) = request(prompt(23, 6), 3);
    let (ida, idb) = (next_id(), next_id());
    s.enqueue(ida, a, Instant::now());
    s.enqueue(idb, b, Instant::now());
    s.enqueue(next_id(), c, Instant::now());
    s.step();
    assert_eq!((s.running.len(), s.waiting.len()), (1, 2));
    s.command(Command::Cancel(ida)); // running
    s.command(Command::Cancel(idb)); // queued
    s.command(Command::Cancel(999_999)); // unknown: ignored
    drain(&mut s);
    assert_eq!(collect(&rxa).1, Event::Failed(GenerationError::Cancelled));
    assert_eq!(collect(&rxb).1, Event::Failed(GenerationError::Cancelled));
    assert_eq!(collect(&rxc), solo(prompt(23, 6), 3));
    assert_eq!(s.engine.sequence_count(), 0);
    assert_eq!(
        s.stats.cancelled.load(Relaxed),
        2,
        "counted as cancelled, not failed"
    );
    assert_eq!(s.stats.failed.load(Relaxed), 0);
}

/// Panics when asked for a mask: a grammar callback that fails.
struct PanickingMask;
impl TokenConstraint for PanickingMask {
    fn compute_mask(&mut self) -> Result<(), String> {
        panic!("grammar callback broke")
    }
    fn mask(&self) -> Option<&TokenMask> {
        None
    }
    fn accept(&mut self, _: u32) -> Result<Accepted, String> {
        Ok(Accepted::default())
    }
    fn is_complete(&mut self) -> bool {
        true
    }
}

#[test]
fn a_panicking_constraint_fails_only_its_own_sequence() {
    let mut s = scheduler(512, SchedulerConfig::default());
    let (mut a, rxa) = request(prompt(24, 5), 4);
    a.constraint = Some(Box::new(PanickingMask));
    let (b, rxb) = request(prompt(25, 5), 4);
    s.enqueue(next_id(), a, Instant::now());
    s.enqueue(next_id(), b, Instant::now());
    drain(&mut s);
    assert_eq!(
        collect(&rxa).1,
        Event::Failed(GenerationError::StepPanicked {
            detail: "grammar callback broke".into()
        })
    );
    assert_eq!(collect(&rxb), solo(prompt(25, 5), 4), "same step, unharmed");
}

#[test]
fn a_panic_in_the_forward_pass_fails_that_steps_requests_and_serving_goes_on() {
    let mut s = scheduler(
        512,
        SchedulerConfig {
            max_running_seqs: 2,
            fault: Some(Fault::PanicInStep { at_step: 2 }),
            ..Default::default()
        },
    );
    let rx: Vec<_> = (0..3)
        .map(|i| {
            let (r, rx) = request(prompt(26 + i, 5), 3);
            s.enqueue(next_id(), r, Instant::now());
            rx
        })
        .collect();
    let mut steps = 0;
    while !(s.running.is_empty() && s.waiting.is_empty()) {
        s.supervised_step().expect("a forward panic is recoverable");
        steps += 1;
        assert!(steps < 100);
    }
    let panicked = Event::Failed(GenerationError::StepPanicked {
        detail: "injected fault: forward pass".into(),
    });
    assert_eq!(collect(&rx[0]).1, panicked);
    assert_eq!(collect(&rx[1]).1, panicked);
    assert_eq!(
        collect(&rx[2]),
        solo(prompt(28, 5), 3),
        "the queued request runs after the fault"
    );
    assert_eq!(s.stats.step_panics.load(Relaxed), 1);
    let kv = s.engine.kv();
    assert_eq!(
        kv.free_blocks() + s.cache.evictable_blocks(kv),
        kv.total_blocks()
    );
}

#[test]
fn a_panic_outside_the_step_takes_the_engine_down() {
    let engine_cfg = EngineConfig {
        threads: 1,
        kv_block_tokens: BLOCK,
        kv_capacity_tokens: 256,
    };
    let cfg = SchedulerConfig {
        fault: Some(Fault::PanicOutsideStep { at_step: 1 }),
        ..Default::default()
    };
    let (handle, join) =
        Scheduler::spawn(Engine::new(tiny_model(), &engine_cfg), Arc::new(Ids), cfg).unwrap();
    assert_eq!(handle.health(), Health::Serving);
    let (req, rx) = request(prompt(29, 4), 20);
    handle.submit(req).unwrap();
    let fin = loop {
        match rx.recv_timeout(Duration::from_secs(60)).expect("an event") {
            Event::Text(_) => {}
            other => break other,
        }
    };
    assert_eq!(fin, Event::Failed(GenerationError::EngineDown));
    join.join().expect("the thread ends without unwinding");
    let Health::Down { reason } = handle.health() else {
        panic!("the handle reports the engine down")
    };
    assert!(reason.contains("injected fault"), "{reason}");
    assert_eq!(
        handle.submit(request(prompt(1, 1), 1).0),
        Err(GenerationError::EngineDown)
    );
}

/// Samples freely, then after every third sampled token drops the last two tokens and forces
/// them again followed by one more (a backtrack that re-tokenizes across the sampled token). Its token list, shared with the test, is the truth to compare against.
struct Backtracker {
    sampled: usize,
    tokens: Arc<std::sync::Mutex<Vec<u32>>>,
}
impl TokenConstraint for Backtracker {
    fn compute_mask(&mut self) -> Result<(), String> {
        Ok(())
    }
    fn mask(&self) -> Option<&TokenMask> {
        None
    }
    fn accept(&mut self, token: u32) -> Result<Accepted, String> {
        let mut tokens = self.tokens.lock().unwrap();
        tokens.push(token);
        self.sampled += 1;
        if !self.sampled.is_multiple_of(3) {
            return Ok(Accepted::default());
        }
        // The same two tokens again (the same text), then one more: their KV is dropped and
        // recomputed, their text is not sent twice.
        let keep = tokens.len() - 2;
        let dropped = tokens.split_off(keep);
        let forced = vec![dropped[0], dropped[1], (dropped[0] + 1) % VOCAB as u32];
        tokens.extend(&forced);
        Ok(Accepted {
            backtrack: 2,
            backtrack_bytes: dropped.iter().map(|d| format!("<{d}>").len()).sum(),
            forced,
            done: false,
        })
    }
    fn is_complete(&mut self) -> bool {
        true
    }
}

#[test]
fn backtracked_tokens_leave_the_kv_cache_and_the_answer() {
    let mut s = scheduler(512, SchedulerConfig::default());
    let p = prompt(30, 7);
    let truth = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (mut r, rx) = request(p.clone(), 13);
    r.constraint = Some(Box::new(Backtracker {
        sampled: 0,
        tokens: truth.clone(),
    }));
    s.enqueue(next_id(), r, Instant::now());
    let mut final_tokens = Vec::new();
    while !(s.running.is_empty() && s.waiting.is_empty()) {
        s.step();
        if let Some(q) = s.running.first() {
            let id = q.seq.unwrap();
            assert_eq!(s.engine.sequence_tokens(id), Some(q.computed));
            assert!(q.computed <= q.tokens.len());
            final_tokens = q.tokens[p.len()..].to_vec();
        }
    }
    let (text, fin) = collect(&rx);
    let Event::Finished { usage, .. } = fin else {
        panic!("{fin:?}")
    };
    // 13 tokens: three rounds of (2 sampled, 1 sampled then -2 +3) = 4 each, then one more.
    assert_eq!(usage.completion_tokens, 13);
    let truth = truth.lock().unwrap().clone();
    assert_eq!(truth.len(), 13);
    assert_eq!(final_tokens[..], truth[..final_tokens.len()]);
    let want: String = truth.iter().map(|t| format!("<{t}>")).collect();
    assert_eq!(text, want, "streamed text holds each kept token once");
    // The KV after the rollbacks equals a plain run over the final tokens: continuing the
    // answer by one more greedy token from scratch gives what the scheduler's KV gives.
    let (solo_text, _) = solo([p.clone(), truth[..12].to_vec()].concat(), 1);
    assert_eq!(solo_text, format!("<{}>", truth[12]));
}

#[test]
fn truncating_into_a_shared_block_copies_it_and_never_changes_the_cached_kv() {
    let engine_cfg = EngineConfig {
        threads: 1,
        kv_block_tokens: BLOCK,
        kv_capacity_tokens: 256,
    };
    let mut e = Engine::new(tiny_model(), &engine_cfg);
    let p = prompt(31, 10);
    let logits_of = |e: &mut Engine, tokens: &[u32]| -> Vec<f32> {
        let id = e.add_sequence();
        let out = e
            .step(&[StepInput {
                seq: id,
                tokens,
                want_logits: true,
            }])
            .unwrap();
        e.remove_sequence(id);
        out.into_iter().next().unwrap()
    };
    // Sequence a holds p; b shares a's first two full blocks (8 tokens), like the prefix cache.
    let a = e.add_sequence();
    e.step(&[StepInput {
        seq: a,
        tokens: &p,
        want_logits: false,
    }])
    .unwrap();
    let shared = e.sequence_blocks(a).unwrap()[..2].to_vec();
    let b = e.add_sequence();
    e.adopt_prefix(b, &shared).unwrap();
    // b rolls back into the second shared block and writes different tokens there.
    e.truncate_sequence(b, 6).unwrap();
    assert_ne!(
        e.sequence_blocks(b).unwrap()[1],
        shared[1],
        "copied, not shared"
    );
    assert_eq!(
        e.kv().refcount(shared[1]),
        1,
        "b let go of the shared block"
    );
    let other = [3u32, 4, 5];
    let got_b = e
        .step(&[StepInput {
            seq: b,
            tokens: &other,
            want_logits: true,
        }])
        .unwrap()
        .remove(0);
    let want_b = logits_of(&mut e, &[&p[..6], &other[..]].concat());
    assert_eq!(
        got_b, want_b,
        "b continues as if it had computed p[..6] itself"
    );
    // a's KV (the shared blocks included) is untouched: its next logits equal a fresh run.
    let got_a = e
        .step(&[StepInput {
            seq: a,
            tokens: &[9],
            want_logits: true,
        }])
        .unwrap()
        .remove(0);
    let want_a = logits_of(&mut e, &[&p[..], &[9]].concat());
    assert_eq!(got_a, want_a);
}
