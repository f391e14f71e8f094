//! Prometheus text-format metrics: requests by route and status, latency histograms (TTFT,
//! inter-token, end-to-end), and the scheduler's live counters (queue, batch, KV, prefix cache).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Mutex;

use sprout_engine::scheduler::{SchedulerStats, BATCH_BUCKETS, MASK_US_BUCKETS};

/// Latency bucket bounds in seconds.
const LATENCY_BUCKETS_S: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// A fixed-bucket histogram.
#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; LATENCY_BUCKETS_S.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, v: f64) {
        for (c, &b) in self.counts.iter_mut().zip(&LATENCY_BUCKETS_S) {
            if v <= b {
                *c += 1;
            }
        }
        self.count += 1;
        self.sum += v;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (c, b) in self.counts.iter().zip(&LATENCY_BUCKETS_S) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {c}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"+Inf\"}} {}\n{name}_sum {}\n{name}_count {}",
            self.count, self.sum, self.count
        );
    }
}

/// Which latency a sample measures.
#[derive(Debug, Clone, Copy)]
pub enum Latency {
    TimeToFirstToken,
    InterToken,
    EndToEnd,
}

#[derive(Debug, Default)]
struct Inner {
    requests: BTreeMap<(String, u16), u64>,
    ttft: Histogram,
    itl: Histogram,
    e2e: Histogram,
}

/// The server's own metrics (the scheduler keeps its counters in [`SchedulerStats`]).
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    /// Counts a finished HTTP request.
    pub fn request(&self, route: &str, status: u16) {
        if let Ok(mut m) = self.inner.lock() {
            *m.requests.entry((route.to_string(), status)).or_default() += 1;
        }
    }

    /// Records a latency in seconds.
    pub fn latency(&self, which: Latency, seconds: f64) {
        if let Ok(mut m) = self.inner.lock() {
            match which {
                Latency::TimeToFirstToken => m.ttft.observe(seconds),
                Latency::InterToken => m.itl.observe(seconds),
                Latency::EndToEnd => m.e2e.observe(seconds),
            }
        }
    }

    /// Renders everything in the Prometheus text format.
    pub fn render(&self, sched: Option<&SchedulerStats>, in_flight: usize) -> String {
        let mut out = String::new();
        if let Ok(m) = self.inner.lock() {
            out += "# HELP sprout_requests_total HTTP requests by route and status.\n# TYPE sprout_requests_total counter\n";
            for ((route, status), n) in &m.requests {
                let _ = writeln!(
                    out,
                    "sprout_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
            m.ttft.render(
                &mut out,
                "sprout_time_to_first_token_seconds",
                "Time from request to first token.",
            );
            m.itl.render(
                &mut out,
                "sprout_inter_token_latency_seconds",
                "Time between streamed text deltas.",
            );
            m.e2e.render(
                &mut out,
                "sprout_request_duration_seconds",
                "Time from request to its last token.",
            );
        }
        let mut gauge = |name: &str, help: &str, kind: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        };
        gauge(
            "sprout_requests_in_flight",
            "Generation requests admitted (running or queued).",
            "gauge",
            in_flight as u64,
        );
        let Some(s) = sched else { return out };
        let g = |a: &std::sync::atomic::AtomicUsize| a.load(Relaxed) as u64;
        let c = |a: &std::sync::atomic::AtomicU64| a.load(Relaxed);
        gauge(
            "sprout_queue_depth",
            "Sequences waiting for admission to the engine.",
            "gauge",
            g(&s.waiting_seqs),
        );
        gauge(
            "sprout_running_sequences",
            "Sequences in the engine.",
            "gauge",
            g(&s.running_seqs),
        );
        gauge(
            "sprout_kv_blocks_total",
            "KV cache blocks.",
            "gauge",
            g(&s.kv_blocks_total),
        );
        gauge(
            "sprout_kv_blocks_free",
            "KV cache blocks not referenced.",
            "gauge",
            g(&s.kv_blocks_free),
        );
        let used = g(&s.kv_blocks_total).saturating_sub(g(&s.kv_blocks_free));
        gauge(
            "sprout_kv_blocks_used",
            "KV cache blocks referenced (by sequences or the prefix cache).",
            "gauge",
            used,
        );
        gauge(
            "sprout_kv_blocks_cached",
            "KV blocks held by the prefix cache.",
            "gauge",
            g(&s.kv_blocks_cached),
        );
        gauge(
            "sprout_engine_steps_total",
            "Batched forward steps.",
            "counter",
            c(&s.steps),
        );
        gauge(
            "sprout_prompt_tokens_total",
            "Prompt tokens of admitted requests.",
            "counter",
            c(&s.prompt_tokens),
        );
        gauge(
            "sprout_prompt_tokens_computed_total",
            "Prompt tokens run through the model.",
            "counter",
            c(&s.prompt_tokens_computed),
        );
        gauge(
            "sprout_prompt_tokens_cached_total",
            "Prompt tokens served by the prefix cache.",
            "counter",
            c(&s.prompt_tokens_cached),
        );
        gauge(
            "sprout_generated_tokens_total",
            "Tokens generated (sampled or forced).",
            "counter",
            c(&s.generated_tokens),
        );
        gauge(
            "sprout_forced_tokens_total",
            "Tokens a grammar appended without sampling (jump-forward); over generated tokens, the share forced.",
            "counter",
            c(&s.forced_tokens),
        );
        gauge(
            "sprout_constrained_answers_total",
            "Constrained answers completed; forced tokens per answer = sprout_answer_forced_tokens_total / this.",
            "counter",
            c(&s.constrained_answers),
        );
        gauge(
            "sprout_answer_forced_tokens_total",
            "Forced tokens of completed constrained answers.",
            "counter",
            c(&s.answer_forced_sum),
        );
        gauge(
            "sprout_grammar_errors_total",
            "Requests ended by their grammar (dead end, or max_tokens before the output was complete).",
            "counter",
            c(&s.grammar_errors),
        );
        gauge(
            "sprout_engine_step_panics_total",
            "Engine steps that panicked (their requests failed).",
            "counter",
            c(&s.step_panics),
        );
        gauge(
            "sprout_prefix_cache_lookup_blocks_total",
            "Full prompt blocks looked up.",
            "counter",
            c(&s.prefix_lookup_blocks),
        );
        gauge(
            "sprout_prefix_cache_hit_blocks_total",
            "Prompt blocks found in the prefix cache.",
            "counter",
            c(&s.prefix_hit_blocks),
        );
        gauge(
            "sprout_prefix_cache_evicted_blocks_total",
            "Blocks evicted from the prefix cache.",
            "counter",
            c(&s.prefix_evicted_blocks),
        );
        gauge(
            "sprout_sequences_finished_total",
            "Sequences that finished.",
            "counter",
            c(&s.finished),
        );
        gauge(
            "sprout_sequences_cancelled_total",
            "Sequences cancelled by a client going away.",
            "counter",
            c(&s.cancelled),
        );
        gauge(
            "sprout_sequences_failed_total",
            "Sequences that failed.",
            "counter",
            c(&s.failed),
        );
        let lookups = c(&s.prefix_lookup_blocks);
        let rate = if lookups == 0 {
            0.0
        } else {
            c(&s.prefix_hit_blocks) as f64 / lookups as f64
        };
        let _ = writeln!(out, "# HELP sprout_prefix_cache_hit_rate Hit blocks / looked-up blocks.\n# TYPE sprout_prefix_cache_hit_rate gauge\nsprout_prefix_cache_hit_rate {rate}");
        let _ = writeln!(out, "# HELP sprout_batch_sequences Sequences per engine step.\n# TYPE sprout_batch_sequences histogram");
        let mut cum = 0;
        for (i, b) in s.batch_seqs_buckets.iter().enumerate() {
            cum += b.load(Relaxed);
            let le = if i + 1 == BATCH_BUCKETS {
                "+Inf".to_string()
            } else {
                (1u64 << i).to_string()
            };
            let _ = writeln!(out, "sprout_batch_sequences_bucket{{le=\"{le}\"}} {cum}");
        }
        let _ = writeln!(
            out,
            "sprout_batch_sequences_sum {}\nsprout_batch_sequences_count {}",
            c(&s.batch_seqs_sum),
            c(&s.steps)
        );
        {
            let name = "sprout_grammar_mask_microseconds";
            let _ = writeln!(
                out,
                "# HELP {name} Time to compute one token mask of a grammar.\n# TYPE {name} histogram"
            );
            let mut cumulative = 0;
            for (b, hi) in s.mask_us_buckets.iter().zip(MASK_US_BUCKETS) {
                cumulative += c(b);
                let _ = writeln!(out, "{name}_bucket{{le=\"{hi}\"}} {cumulative}");
            }
            cumulative += c(&s.mask_us_buckets[MASK_US_BUCKETS.len()]);
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"+Inf\"}} {cumulative}\n{name}_sum {}\n{name}_count {cumulative}",
                c(&s.mask_us_sum)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_buckets() {
        let m = Metrics::default();
        m.request("/v1/chat/completions", 200);
        m.request("/v1/chat/completions", 200);
        m.latency(Latency::TimeToFirstToken, 0.03);
        let s = SchedulerStats::default();
        s.batch_seqs_buckets[0].store(2, Relaxed);
        s.batch_seqs_buckets[2].store(1, Relaxed);
        let text = m.render(Some(&s), 3);
        assert!(
            text.contains("sprout_requests_total{route=\"/v1/chat/completions\",status=\"200\"} 2")
        );
        assert!(text.contains("sprout_time_to_first_token_seconds_bucket{le=\"0.025\"} 0"));
        assert!(text.contains("sprout_time_to_first_token_seconds_bucket{le=\"0.05\"} 1"));
        assert!(text.contains("sprout_batch_sequences_bucket{le=\"4\"} 3"));
        assert!(text.contains("sprout_requests_in_flight 3"));
    }
}
