//! `sprout bench serve`: a load tester for any OpenAI-compatible server (sprout, llama.cpp's
//! llama-server): closed loop with `concurrency` clients, or open loop at a Poisson `rate`;
//! reports req/s, errors by status, TTFT, inter-token latency, end-to-end percentiles and
//! output tokens/s.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Base URL, e.g. http://127.0.0.1:9000.
    pub url: String,
    pub model: String,
    pub api_key: Option<String>,
    /// Requests in all (closed loop) unless `duration` is set.
    pub requests: usize,
    pub concurrency: usize,
    /// Requests per second, Poisson arrivals; None runs closed loop.
    pub rate: Option<f64>,
    pub duration: Option<Duration>,
    pub max_tokens: usize,
    pub stream: bool,
    pub ignore_eos: bool,
    /// Request bodies' messages; cycled.
    pub prompts: Vec<String>,
}

/// Built-in prompts when no JSONL file is given.
pub const BUILTIN_PROMPTS: &[&str] = &[
    "Write a short poem about a fern in the morning light.",
    "Explain what a hash map is to a new programmer.",
    "List five houseplants that tolerate low light and say why.",
    "Summarize the plot of a detective story in three sentences.",
];

/// One request's outcome.
#[derive(Debug, Clone, Default)]
struct Sample {
    status: u16,
    ttft_s: Option<f64>,
    itl_s: Vec<f64>,
    e2e_s: f64,
    output_tokens: usize,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn one(http: &reqwest::Client, o: &BenchOptions, prompt: &str) -> Sample {
    let started = Instant::now();
    let mut body = json!({"model": o.model, "messages": [{"role": "user", "content": prompt}],
        "max_tokens": o.max_tokens, "stream": o.stream, "temperature": 0});
    if o.ignore_eos {
        body["ignore_eos"] = json!(true);
    }
    if o.stream {
        body["stream_options"] = json!({"include_usage": true});
    }
    let mut req = http
        .post(format!(
            "{}/v1/chat/completions",
            o.url.trim_end_matches('/')
        ))
        .json(&body);
    if let Some(k) = &o.api_key {
        req = req.bearer_auth(k);
    }
    let mut s = Sample::default();
    let mut resp = match req.send().await {
        Ok(r) => r,
        Err(_) => {
            return Sample {
                e2e_s: started.elapsed().as_secs_f64(),
                ..s
            }
        }
    };
    s.status = resp.status().as_u16();
    if s.status != 200 {
        s.e2e_s = started.elapsed().as_secs_f64();
        return s;
    }
    if o.stream {
        let mut buf = String::new();
        let mut last = None::<Instant>;
        while let Ok(Some(bytes)) = resp.chunk().await {
            buf.push_str(&String::from_utf8_lossy(&bytes));
            while let Some(nl) = buf.find('\n') {
                let line: String = buf.drain(..=nl).collect();
                let Some(data) = line.trim_end().strip_prefix("data: ") else {
                    continue;
                };
                let Ok(v) = serde_json::from_str::<Value>(data) else {
                    continue;
                };
                if let Some(u) = v["usage"]["completion_tokens"].as_u64() {
                    s.output_tokens = u as usize;
                }
                let has_text = v["choices"][0]["delta"]["content"]
                    .as_str()
                    .is_some_and(|t| !t.is_empty());
                if has_text {
                    let now = Instant::now();
                    match last {
                        None => s.ttft_s = Some((now - started).as_secs_f64()),
                        Some(prev) => s.itl_s.push((now - prev).as_secs_f64()),
                    }
                    last = Some(now);
                }
            }
        }
    } else if let Ok(v) = resp.json::<Value>().await {
        s.output_tokens = v["usage"]["completion_tokens"].as_u64().unwrap_or(0) as usize;
    }
    s.e2e_s = started.elapsed().as_secs_f64();
    s
}

/// Called with the number of requests finished so far, after each one finishes (from the
/// client tasks, so it must be cheap: e.g. a progress bar's `set_position`).
pub type OnDone = Arc<dyn Fn(usize) + Send + Sync>;

/// Runs the load and returns the report as JSON; an error only if no HTTP client can be built.
/// `on_done` hears of every finished request (the CLI draws its progress bar from it).
pub async fn run(o: BenchOptions, on_done: Option<OnDone>) -> Result<Value, reqwest::Error> {
    // A fresh connection per request: servers close idle keep-alive connections on their own
    // schedules (llama-server after a few requests), and a request sent on a connection the
    // server just closed would count as a failure of the server under test. Connecting costs
    // microseconds next to a generation.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    let o = Arc::new(o);
    let issued = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let finished = move |done: &AtomicUsize| {
        let n = done.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(f) = &on_done {
            f(n);
        }
    };
    let started = Instant::now();
    let more = {
        let o = o.clone();
        move |n: usize| match o.duration {
            Some(d) => started.elapsed() < d,
            None => n < o.requests,
        }
    };
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(rate) = o.rate.filter(|r| *r > 0.0) {
        // Open loop: exponential inter-arrival times from a small LCG.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut n = 0;
        while more(n) {
            let (http, o, done, finished) =
                (http.clone(), o.clone(), done.clone(), finished.clone());
            let prompt = o.prompts[n % o.prompts.len()].clone();
            tasks.spawn(async move {
                let s = one(&http, &o, &prompt).await;
                finished(&done);
                vec![s]
            });
            n += 1;
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = ((seed >> 11) as f64 / (1u64 << 53) as f64).max(1e-12);
            tokio::time::sleep(Duration::from_secs_f64(-u.ln() / rate)).await;
        }
    } else {
        for _ in 0..o.concurrency.max(1) {
            let (http, o, issued, done, more, finished) = (
                http.clone(),
                o.clone(),
                issued.clone(),
                done.clone(),
                more.clone(),
                finished.clone(),
            );
            tasks.spawn(async move {
                let mut out = Vec::new();
                loop {
                    let n = issued.fetch_add(1, Ordering::Relaxed);
                    if !more(n) {
                        break;
                    }
                    out.push(one(&http, &o, &o.prompts[n % o.prompts.len()]).await);
                    finished(&done);
                }
                out
            });
        }
    }
    let mut samples = Vec::new();
    while let Some(r) = tasks.join_next().await {
        samples.extend(r.unwrap_or_default());
    }
    Ok(report(&samples, started.elapsed().as_secs_f64()))
}

fn report(samples: &[Sample], wall_s: f64) -> Value {
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    for s in samples {
        *by_status
            .entry(if s.status == 0 {
                "connection_error".into()
            } else {
                s.status.to_string()
            })
            .or_default() += 1;
    }
    let ok: Vec<&Sample> = samples.iter().filter(|s| s.status == 200).collect();
    let sorted = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        json!({"p50": percentile(&v, 0.5), "p90": percentile(&v, 0.9), "p99": percentile(&v, 0.99), "n": v.len()})
    };
    let tokens: usize = ok.iter().map(|s| s.output_tokens).sum();
    json!({
        "requests": samples.len(),
        "succeeded": ok.len(),
        "by_status": by_status,
        "wall_s": wall_s,
        "requests_per_s": ok.len() as f64 / wall_s.max(1e-9),
        "output_tokens": tokens,
        "output_tokens_per_s": tokens as f64 / wall_s.max(1e-9),
        "ttft_s": sorted(ok.iter().filter_map(|s| s.ttft_s).collect()),
        "itl_s": sorted(ok.iter().flat_map(|s| s.itl_s.iter().copied()).collect()),
        "e2e_s": sorted(ok.iter().map(|s| s.e2e_s).collect()),
    })
}

/// The report as a Markdown table.
pub fn markdown(r: &Value) -> String {
    let ms = |v: &Value| {
        v.as_f64().map_or("-".to_string(), |x| {
            if x.is_nan() {
                "-".into()
            } else {
                format!("{:.1}", x * 1e3)
            }
        })
    };
    let mut out = format!(
        "| metric | value |\n|---|---|\n| requests (ok) | {} ({}) |\n| by status | {} |\n| req/s | {:.2} |\n| output tokens/s | {:.1} |\n",
        r["requests"], r["succeeded"], r["by_status"], r["requests_per_s"].as_f64().unwrap_or(0.0),
        r["output_tokens_per_s"].as_f64().unwrap_or(0.0)
    );
    for (name, key) in [
        ("TTFT", "ttft_s"),
        ("inter-token", "itl_s"),
        ("end-to-end", "e2e_s"),
    ] {
        let h = &r[key];
        out += &format!(
            "| {name} p50/p90/p99 ms | {} / {} / {} |\n",
            ms(&h["p50"]),
            ms(&h["p90"]),
            ms(&h["p99"])
        );
    }
    out
}

/// The runtime type the CLI drives the load tester on.
pub type Runtime = tokio::runtime::Runtime;

/// A runtime for the load tester (the CLI does not depend on tokio itself).
pub fn runtime() -> std::io::Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_counts_statuses_and_percentiles() {
        let s = |status, e2e_s| Sample {
            status,
            e2e_s,
            output_tokens: 10,
            ..Default::default()
        };
        let r = report(&[s(200, 1.0), s(200, 3.0), s(429, 0.1), s(0, 0.0)], 2.0);
        assert_eq!(
            r["by_status"],
            json!({"200": 2, "429": 1, "connection_error": 1})
        );
        assert_eq!(
            (r["succeeded"].as_u64(), r["output_tokens_per_s"].as_f64()),
            (Some(2), Some(10.0))
        );
        assert_eq!(r["e2e_s"]["p50"].as_f64(), Some(3.0));
        assert!(markdown(&r).contains("| req/s | 1.00 |"));
    }
}
