//! End-to-end: the real server on 127.0.0.1 with the real default model (env SPROUT_TEST_QWEN,
//! default /work/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf; skipped with a note when
//! absent). One server serves every check in turn: the machine has few cores and the model
//! loads once. Run single-threaded: `cargo test -p sprout-server --test e2e -- --test-threads 1`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sprout_engine::bundle::{LoadOptions, ModelBundle};
use sprout_engine::engine::{Engine, EngineConfig};
use sprout_engine::scheduler::SchedulerConfig;
use sprout_server::{LoadedModel, ServerConfig};

const KEY: &str = "test-key";
const BODY_LIMIT: usize = 64 * 1024;

fn model_path() -> Option<PathBuf> {
    let p = std::env::var("SPROUT_TEST_QWEN")
        .unwrap_or_else(|_| "/work/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf".into());
    let p = PathBuf::from(p);
    if p.exists() {
        Some(p)
    } else {
        assert!(
            std::env::var_os("SPROUT_REQUIRE_MODELS").is_none(),
            "test model missing"
        );
        eprintln!(
            "skipping: model {} not found (set SPROUT_TEST_QWEN)",
            p.display()
        );
        None
    }
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.base))
            .bearer_auth(KEY)
    }

    async fn chat(&self, body: Value) -> (u16, Value) {
        let r = self
            .post("/v1/chat/completions")
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn raw(&self, body: &str) -> (u16, Value) {
        let r = self
            .post("/v1/chat/completions")
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Starts a streaming chat request that generates `max_tokens` (ignore_eos); asserts 200.
    async fn stream_chat(&self, content: &str, max_tokens: u32) -> reqwest::Response {
        let mut body = chat_body(content, max_tokens);
        body["stream"] = json!(true);
        body["ignore_eos"] = json!(true);
        let resp = self
            .post("/v1/chat/completions")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp
    }

    async fn metric(&self, name: &str) -> f64 {
        let text = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("metric {name} missing"))
    }
}

fn chat_body(content: &str, max_tokens: u32) -> Value {
    json!({"model": "default", "messages": [{"role": "user", "content": content}],
           "max_tokens": max_tokens, "temperature": 0})
}

/// Reads an SSE response to its end; returns the data payloads.
async fn sse_events(resp: reqwest::Response) -> Vec<String> {
    let text = resp.text().await.unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(str::to_string)
        .collect()
}

/// Validates `text` against `schema` with an independent validator (the jsonschema crate).
fn schema_errors(schema: &Value, text: &str) -> Option<String> {
    let v: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return Some(format!("not JSON ({e}): {text:?}")),
    };
    let validator = jsonschema::validator_for(schema).expect("fixture schemas compile");
    validator
        .validate(&v)
        .err()
        .map(|e| format!("{e} at {}: {text}", e.instance_path()))
}

async fn start_server(
    path: PathBuf,
    max_concurrent: usize,
    kv_tokens: usize,
) -> (sprout_server::RunningServer, Client) {
    let config = ServerConfig {
        port: 0,
        api_key: Some(KEY.into()),
        max_concurrent,
        max_queue: 256,
        ..Default::default()
    };
    let sched = SchedulerConfig {
        max_running_seqs: max_concurrent,
        ..Default::default()
    };
    let load = Box::new(move || -> anyhow::Result<LoadedModel> {
        let b = ModelBundle::open(&path, &LoadOptions::default())?;
        let cfg = EngineConfig {
            threads: 2,
            kv_block_tokens: 16,
            kv_capacity_tokens: kv_tokens,
        };
        Ok(LoadedModel {
            names: vec!["default".into()],
            engine: Engine::new(b.model, &cfg),
            prompt: b.prompt,
        })
    });
    let mut server = sprout_server::start(config, sched, load).await.unwrap();
    server.wait_ready().await.unwrap();
    let c = Client {
        http: reqwest::Client::new(),
        base: format!("http://{}", server.addr),
    };
    (server, c)
}

/// One constrained request of the structured-output suite and what became of it.
struct Outcome {
    label: String,
    problem: Option<String>,
    forced_tokens: u64,
}

async fn constrained(
    c: Arc<Client>,
    name: String,
    schema: Value,
    topic: String,
    stream: bool,
    seed: u64,
) -> Outcome {
    let label = format!("{name} / {topic} / stream={stream}");
    let mut body = json!({
        "model": "default",
        "messages": [
            {"role": "system", "content": "You answer with one JSON object that fits the requested shape."},
            {"role": "user", "content": topic},
        ],
        "max_tokens": 900,
        "temperature": if stream { 0.8 } else { 0.0 },
        "seed": seed,
        "response_format": {"type": "json_schema", "json_schema": {"name": name, "strict": true, "schema": schema}},
    });
    if stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    let resp = c
        .post("/v1/chat/completions")
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    if !stream {
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        let text = v["choices"][0]["message"]["content"].as_str().unwrap_or("");
        let problem = if status != 200 {
            Some(format!("status {status}: {v}"))
        } else if v["choices"][0]["finish_reason"] != "stop" {
            Some(format!(
                "finish_reason {}",
                v["choices"][0]["finish_reason"]
            ))
        } else {
            schema_errors(&schema, text)
        };
        let forced = v["usage"]["completion_tokens_details"]["forced_tokens"]
            .as_u64()
            .unwrap_or(0);
        return Outcome {
            label,
            problem,
            forced_tokens: forced,
        };
    }
    let raw = resp.text().await.unwrap();
    let mut text = String::new();
    let mut finish = Value::Null;
    let mut forced = 0;
    let mut problem = (status != 200).then(|| format!("status {status}"));
    let mut event = "";
    for line in raw.lines() {
        if let Some(e) = line.strip_prefix("event: ") {
            event = if e == "error" { "error" } else { "" };
            continue;
        }
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if event == "error" {
            problem = Some(format!("error event: {data}"));
            continue;
        }
        if data == "[DONE]" {
            continue;
        }
        let chunk: Value = serde_json::from_str(data).unwrap();
        if let Some(t) = chunk["choices"][0]["delta"]["content"].as_str() {
            text.push_str(t);
        }
        if !chunk["choices"][0]["finish_reason"].is_null() {
            finish = chunk["choices"][0]["finish_reason"].clone();
        }
        if let Some(f) = chunk["usage"]["completion_tokens_details"]["forced_tokens"].as_u64() {
            forced = f;
        }
    }
    if problem.is_none() && finish != "stop" {
        problem = Some(format!("finish_reason {finish}"));
    }
    if problem.is_none() {
        problem = schema_errors(&schema, &text);
    }
    Outcome {
        label,
        problem,
        forced_tokens: forced,
    }
}

/// 200 constrained generations (10 schemas × 10 topics, once greedy without streaming and once
/// sampled with streaming), 8 at a time: every answer is complete and valid against its
/// schema by an independent validator; then the fail-closed cases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn structured_output_is_always_complete_and_valid() {
    let Some(path) = model_path() else { return };
    let (server, c) = start_server(path, 8, 12288).await;
    let c = Arc::new(c);
    let fx: Value = serde_json::from_str(include_str!("fixtures/structured.json")).unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    let gate = Arc::new(tokio::sync::Semaphore::new(8));
    let mut seed = 0;
    for stream in [false, true] {
        for s in fx["schemas"].as_array().unwrap() {
            for topic in fx["topics"].as_array().unwrap() {
                seed += 1;
                let (c, gate) = (c.clone(), gate.clone());
                let name = s["name"].as_str().unwrap().to_string();
                let (schema, topic) = (s["schema"].clone(), topic.as_str().unwrap().to_string());
                tasks.spawn(async move {
                    let _slot = gate.acquire_owned().await.unwrap();
                    constrained(c, name, schema, topic, stream, seed).await
                });
            }
        }
    }
    let mut outcomes = Vec::new();
    while let Some(o) = tasks.join_next().await {
        outcomes.push(o.unwrap());
    }
    assert_eq!(outcomes.len(), 200);
    let bad: Vec<String> = outcomes
        .iter()
        .filter_map(|o| o.problem.as_ref().map(|p| format!("{}: {p}", o.label)))
        .collect();
    assert!(
        bad.is_empty(),
        "{} of 200 invalid:\n{}",
        bad.len(),
        bad.join("\n")
    );
    let grounded: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.label.starts_with("catalog_grounded"))
        .collect();
    assert!(
        grounded.iter().all(|o| o.forced_tokens >= 30),
        "a chosen catalog item's description is forced text"
    );

    // Fail closed: max_tokens too small is an error, never truncated JSON.
    let schema = &fx["schemas"][0]["schema"];
    let mut body = json!({"model": "default", "max_tokens": 6, "temperature": 0,
        "messages": [{"role": "user", "content": "Recommend eco challenges."}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "leafresh", "schema": schema}}});
    let (status, v) = c.chat(body.clone()).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["code"], "incomplete_output");
    assert_eq!(v["error"]["finish_reason"], "length");
    assert!(v.get("choices").is_none(), "no partial answer: {v}");
    body["stream"] = json!(true);
    let resp = c
        .post("/v1/chat/completions")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let raw = resp.text().await.unwrap();
    assert!(raw.contains("event: error\ndata: {\"error\""), "{raw}");
    assert!(raw.contains("incomplete_output"), "{raw}");
    assert!(
        !raw.contains("[DONE]") && !raw.contains("\"finish_reason\":\"stop\""),
        "{raw}"
    );
    // json_object mode and a regex grammar.
    let (status, v) = c
        .chat(
            json!({"model": "default", "max_tokens": 200, "temperature": 0,
        "messages": [{"role": "user", "content": "Describe a tree as JSON."}],
        "response_format": {"type": "json_object"}}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let obj: Value =
        serde_json::from_str(v["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    assert!(obj.is_object(), "{obj}");
    let (status, v) = c
        .chat(
            json!({"model": "default", "max_tokens": 20, "temperature": 0,
        "messages": [{"role": "user", "content": "What year did the Berlin wall fall?"}],
        "grammar": {"type": "regex", "value": "[12][0-9]{3}"}}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let year = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(
        year.len() == 4 && year.chars().all(|ch| ch.is_ascii_digit()),
        "{year:?}"
    );
    assert!(c.metric("sprout_grammar_mask_microseconds_count").await > 1000.0);
    assert!(c.metric("sprout_forced_tokens_total").await > 0.0);
    assert!(c.metric("sprout_grammar_errors_total").await >= 2.0);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_openai_api_end_to_end() {
    let Some(path) = model_path() else { return };
    let config = ServerConfig {
        port: 0,
        api_key: Some(KEY.into()),
        body_limit_bytes: BODY_LIMIT,
        max_concurrent: 2,
        max_queue: 2,
        ..Default::default()
    };
    let sched = SchedulerConfig {
        max_running_seqs: 2,
        step_tokens: 128,
        prefix_cache: true,
        fault: None,
    };
    let load = Box::new(move || -> anyhow::Result<LoadedModel> {
        let b = ModelBundle::open(&path, &LoadOptions::default())?;
        let cfg = EngineConfig {
            threads: 2,
            kv_block_tokens: 16,
            kv_capacity_tokens: 4096,
        };
        Ok(LoadedModel {
            names: vec!["default".into()],
            engine: Engine::new(b.model, &cfg),
            prompt: b.prompt,
        })
    });
    let mut server = sprout_server::start(config, sched, load).await.unwrap();
    let c = Client {
        http: reqwest::Client::new(),
        base: format!("http://{}", server.addr),
    };
    let health = c
        .http
        .get(format!("{}/health", c.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    server.wait_ready().await.unwrap();
    assert_eq!(
        c.http
            .get(format!("{}/ready", c.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // Auth (RELIABILITY 20).
    let r = c
        .http
        .post(format!("{}/v1/chat/completions", c.base))
        .json(&chat_body("hi", 2))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .http
        .get(format!("{}/v1/models", c.base))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_api_key");

    // Non-streaming and streaming give the same greedy answer.
    let (status, full) = c.chat(chat_body("Write a haiku about the sea.", 8)).await;
    assert_eq!(status, 200, "{full}");
    let answer = full["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!answer.is_empty());
    let usage = &full["usage"];
    assert!(usage["completion_tokens"].as_u64().unwrap() <= 8);
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 5);
    let mut body = chat_body("Write a haiku about the sea.", 8);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let resp = c
        .post("/v1/chat/completions")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let events = sse_events(resp).await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0)?["delta"]["content"].as_str())
        .collect::<String>();
    assert_eq!(streamed, answer);
    let usage_chunk = chunks.last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(
        usage_chunk["usage"]["completion_tokens"],
        full["usage"]["completion_tokens"]
    );
    let fin = &chunks[chunks.len() - 2]["choices"][0]["finish_reason"];
    assert_eq!(fin, &full["choices"][0]["finish_reason"]);

    // Completions endpoint.
    let r = c
        .post("/v1/completions")
        .json(&json!({"model": "default", "prompt": "def add(a, b):", "max_tokens": 4, "temperature": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "text_completion");
    assert!(v["choices"][0]["text"].is_string());

    // Bad inputs (RELIABILITY 1-5, 8): exact statuses and OpenAI error objects.
    let too_long = "word ".repeat(16_000);
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("not JSON", "{nope".into(), 400, "invalid JSON"),
        ("unknown field", r#"{"model":"default","messages":[{"role":"user","content":"x"}],"bogus":1}"#.into(), 400, "bogus"),
        ("wrong type", r#"{"model":"default","messages":[{"role":"user","content":"x"}],"temperature":"hot"}"#.into(), 400, "temperature"),
        ("NaN", r#"{"model":"default","messages":[{"role":"user","content":"x"}],"top_p":NaN}"#.into(), 400, "invalid JSON"),
        ("missing messages", r#"{"model":"default"}"#.into(), 400, "messages"),
        ("max_tokens 0", r#"{"model":"default","messages":[{"role":"user","content":"x"}],"max_tokens":0}"#.into(), 400, "max_tokens"),
        ("temperature", r#"{"model":"default","messages":[{"role":"user","content":"x"}],"temperature":7}"#.into(), 400, "temperature"),
        ("top_k", r#"{"model":"default","messages":[{"role":"user","content":"x"}],"top_k":-2}"#.into(), 400, "top_k"),
        ("absurd max_tokens", r#"{"model":"default","messages":[{"role":"user","content":"x"}],"max_tokens":99999999}"#.into(), 400, "context"),
        ("n=2", r#"{"model":"default","messages":[{"role":"user","content":"x"}],"n":2}"#.into(), 400, "n = 1"),
        ("response_format type", r#"{"model":"default","messages":[{"role":"user","content":"x"}],"response_format":{"type":"yaml"}}"#.into(), 400, "response_format.type"),
        ("schema that does not compile", r#"{"model":"default","messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_schema","json_schema":{"name":"s","schema":{"type":"array","uniqueItems":true}}}}"#.into(), 400, "uniqueItems"),
        ("bad $ref", r##"{"model":"default","messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_schema","json_schema":{"name":"s","schema":{"$ref":"#/$defs/nope"}}}}"##.into(), 400, "nope"),
        ("regex that does not compile", r#"{"model":"default","messages":[{"role":"user","content":"x"}],"grammar":{"type":"regex","value":"(unclosed"}}"#.into(), 400, "grammar does not compile"),
        ("lark that does not compile", r#"{"model":"default","messages":[{"role":"user","content":"x"}],"grammar":{"type":"lark","value":"start: foo"}}"#.into(), 400, "foo"),
        ("empty messages", r#"{"model":"default","messages":[]}"#.into(), 400, "messages"),
        ("lone surrogate", r#"{"model":"default","messages":[{"role":"user","content":"\ud800"}]}"#.into(), 400, "invalid JSON"),
        ("unknown model", r#"{"model":"gpt-9","messages":[{"role":"user","content":"x"}]}"#.into(), 404, "gpt-9"),
        ("body too large", format!(r#"{{"model":"default","messages":[{{"role":"user","content":"{too_long}"}}]}}"#), 413, "limit"),
    ];
    for (name, body, status, needle) in cases {
        let (got, v) = c.raw(&body).await;
        assert_eq!(got, status, "{name}: {v}");
        let msg = v["error"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no error object: {v}"));
        assert!(msg.contains(needle), "{name}: {msg:?} lacks {needle:?}");
        assert!(
            v["error"].get("type").is_some()
                && v["error"].get("param").is_some()
                && v["error"].get("code").is_some()
        );
    }
    let code = c.raw(r#"{"model":"default","messages":[{"role":"user","content":"x"}],"grammar":{"type":"regex","value":"(unclosed"}}"#).await.1;
    assert_eq!(
        (&code["error"]["code"], &code["error"]["param"]),
        (&json!("invalid_grammar"), &json!("grammar"))
    );
    // Prompt longer than the KV budget: refused with the limits, not truncated (RELIABILITY 4).
    let (status, v) = c.chat(chat_body(&"tree ".repeat(5000), 4)).await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("4096"),
        "{v}"
    );
    // Odd but valid inputs get clean answers (RELIABILITY 5, 8).
    for content in ["", "   ", "\u{1}\u{7f} bell", &"😀".repeat(300)] {
        let (status, v) = c.chat(chat_body(content, 2)).await;
        assert_eq!(status, 200, "{content:?}: {v}");
    }
    let mut stops = chat_body("Count: 1, 2, 3, 4, 5, 6", 6);
    stops["stop"] = json!([
        "",
        "ü",
        "\n\n",
        "a very long stop string that never appears in the output at all",
        ","
    ]);
    let (status, v) = c.chat(stops).await;
    assert_eq!(status, 200, "{v}");
    assert!(!v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .contains(','));

    // The server keeps serving after all that.
    let (status, again) = c.chat(chat_body("Write a haiku about the sea.", 8)).await;
    assert_eq!(
        (status, &again["choices"][0]["message"]["content"]),
        (200, &full["choices"][0]["message"]["content"])
    );

    // Prefix cache: a repeated long system prompt is computed once.
    let system = "You are a helpful assistant for a plant shop. ".repeat(12);
    let with_system = |q: &str| {
        json!({"model": "default", "max_tokens": 1, "temperature": 0, "messages": [
            {"role": "system", "content": system}, {"role": "user", "content": q}]})
    };
    let computed0 = c.metric("sprout_prompt_tokens_computed_total").await;
    let (_, first) = c.chat(with_system("Which fern likes shade?")).await;
    let computed1 = c.metric("sprout_prompt_tokens_computed_total").await;
    let (_, second) = c.chat(with_system("Which cactus is easiest?")).await;
    let computed2 = c.metric("sprout_prompt_tokens_computed_total").await;
    let p1 = first["usage"]["prompt_tokens"].as_f64().unwrap();
    let p2 = second["usage"]["prompt_tokens"].as_f64().unwrap();
    let cached_of = |r: &Value| r["usage"]["prompt_tokens_details"]["cached_tokens"].as_f64();
    let (cached1, cached) = (cached_of(&first).unwrap(), cached_of(&second).unwrap());
    assert!(
        cached1 < 16.0,
        "the first request shares at most the chat template's head with earlier ones: {first}"
    );
    assert_eq!(
        computed1 - computed0,
        p1 - cached1,
        "first request computes its whole prompt but that head"
    );
    assert!(
        cached >= 64.0,
        "the shared system prompt came from the cache: {second}"
    );
    assert_eq!(
        computed2 - computed1,
        p2 - cached,
        "only the uncached tail was computed"
    );
    assert!(c.metric("sprout_prefix_cache_hit_blocks_total").await > 0.0);

    // Disconnect mid-stream frees the sequence and its KV (RELIABILITY 10).
    let cancelled0 = c.metric("sprout_sequences_cancelled_total").await;
    let mut resp = c.stream_chat("Tell me a very long story.", 400).await;
    let _ = resp.chunk().await.unwrap();
    let _ = resp.chunk().await.unwrap();
    drop(resp);
    wait_idle(&c).await;
    assert_eq!(
        c.metric("sprout_sequences_cancelled_total").await,
        cancelled0 + 1.0
    );

    // A burst beyond max_concurrent + max_queue gets 429 with Retry-After (RELIABILITY 9).
    let mut held = Vec::new();
    for i in 0..4 {
        held.push(c.stream_chat(&format!("Story number {i}"), 300).await);
    }
    let r = c
        .post("/v1/chat/completions")
        .json(&chat_body("one more", 2))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    // The admitted ones are streaming.
    let first = held[0].chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("data: "));
    drop(held);
    wait_idle(&c).await;
    let (status, _) = c.chat(chat_body("still there?", 2)).await;
    assert_eq!(status, 200);
    let text = c
        .http
        .get(format!("{}/metrics", c.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("sprout_requests_total{route=\"/v1/chat/completions\",status=\"429\"} 1"),
        "{text}"
    );

    // Graceful shutdown: a stream in flight when shutdown begins still ends whole, with its
    // last tokens, finish_reason "length" and [DONE]; new connections are refused meanwhile.
    let mut resp = c.stream_chat("Count slowly from one to fifty.", 24).await;
    let mut text = String::from_utf8_lossy(&resp.chunk().await.unwrap().unwrap()).into_owned();
    let stopping = tokio::spawn(server.shutdown());
    while let Some(bytes) = resp.chunk().await.unwrap() {
        text.push_str(&String::from_utf8_lossy(&bytes));
    }
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert!(text.contains("\"finish_reason\":\"length\""), "{text}");
    let deltas = text.matches("\"content\":").count();
    assert!(deltas >= 20, "only {deltas} content deltas:\n{text}");
    stopping.await.unwrap().unwrap();
    assert!(
        c.http
            .get(format!("{}/health", c.base))
            .send()
            .await
            .is_err(),
        "still accepting connections after shutdown"
    );
}

/// Waits until no sequence runs and every used KV block is an idle prefix-cache block.
async fn wait_idle(c: &Client) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let running = c.metric("sprout_running_sequences").await;
        let queued = c.metric("sprout_queue_depth").await;
        let used = c.metric("sprout_kv_blocks_used").await;
        let cached = c.metric("sprout_kv_blocks_cached").await;
        let in_flight = c.metric("sprout_requests_in_flight").await;
        if running == 0.0 && queued == 0.0 && used == cached && in_flight == 0.0 {
            return;
        }
        assert!(Instant::now() < deadline, "server not idle: running {running}, queued {queued}, used {used}, cached {cached}, in flight {in_flight}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `/v1/embeddings` and hybrid catalog search with the real embedder (SPROUT_TEST_EMBEDDER),
/// no chat model needed; a restart on the same data dir reuses the dense index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_api_and_dense_index_reuse() {
    let Some(dir) = std::env::var_os("SPROUT_TEST_EMBEDDER").map(PathBuf::from) else {
        assert!(
            std::env::var_os("SPROUT_REQUIRE_MODELS").is_none(),
            "SPROUT_TEST_EMBEDDER missing"
        );
        eprintln!("skipping: set SPROUT_TEST_EMBEDDER");
        return;
    };
    let data = std::env::temp_dir().join(format!("sprout-e2e-embed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let start = |data: PathBuf, dir: PathBuf| async move {
        let config = ServerConfig {
            port: 0,
            api_key: Some(KEY.into()),
            data_dir: Some(data),
            embedder: Some(dir),
            ..Default::default()
        };
        let load = Box::new(|| -> anyhow::Result<LoadedModel> {
            anyhow::bail!("no chat model in this test")
        });
        let server = sprout_server::start(config, SchedulerConfig::default(), load)
            .await
            .unwrap();
        let c = Client {
            http: reqwest::Client::new(),
            base: format!("http://{}", server.addr),
        };
        (server, c)
    };
    let (server, c) = start(data.clone(), dir.clone()).await;
    let dense_file = |data: &PathBuf| {
        std::fs::read_dir(data.join("catalogs/eco/index/dense"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.is_file())
            .expect("a dense index file")
    };
    let built = std::fs::metadata(dense_file(&data))
        .unwrap()
        .modified()
        .unwrap();
    let post = |body: Value| c.post("/v1/embeddings").json(&body).send();
    let r = post(json!({"model": "embeddinggemma", "input": ["분리수거 하는 방법", "how to sort recycling", "주식 투자 수익률"]})).await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let vecs: Vec<Vec<f64>> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            d["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect();
    assert_eq!((vecs.len(), vecs[0].len()), (3, 768));
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    assert!((dot(&vecs[0], &vecs[0]) - 1.0).abs() < 1e-4, "unit length");
    assert!(
        dot(&vecs[0], &vecs[1]) > dot(&vecs[0], &vecs[2]) + 0.1,
        "a translation is nearer than an unrelated sentence"
    );
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 10);
    // base64 carries the same little-endian floats; dimensions truncates and renormalizes.
    let r = post(json!({"model": "embeddinggemma", "input": "분리수거 하는 방법", "encoding_format": "base64", "dimensions": 256})).await.unwrap();
    let v: Value = r.json().await.unwrap();
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let short: Vec<f64> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64)
        .collect();
    assert_eq!(short.len(), 256);
    let norm: f64 = vecs[0][..256].iter().map(|x| x * x).sum::<f64>().sqrt();
    for (s, f) in short.iter().zip(&vecs[0][..256]) {
        assert!((s - f / norm).abs() < 1e-5);
    }
    for (body, status) in [
        (json!({"model": "embeddinggemma", "input": []}), 400),
        (
            json!({"model": "embeddinggemma", "input": "x", "dimensions": 100}),
            400,
        ),
        (json!({"model": "nope", "input": "x"}), 404),
    ] {
        assert_eq!(post(body.clone()).await.unwrap().status(), status, "{body}");
    }
    // Hybrid search: a paraphrase with no shared words finds the energy items.
    let r = c
        .http
        .get(format!("{}/v1/catalogs/eco/search", c.base))
        .query(&[
            ("q", "How can I use less electricity at my desk?"),
            ("k", "3"),
        ])
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    let cats: Vec<&str> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["item"]["tags"]["category"].as_str().unwrap())
        .collect();
    assert!(
        cats.iter().filter(|c| **c == "ENERGY_SAVING").count() >= 2,
        "{v}"
    );
    server.shutdown().await.unwrap();
    // A second start finds the dense index on disk and does not rebuild it.
    let (server, _c) = start(data.clone(), dir).await;
    let again = std::fs::metadata(dense_file(&data))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(built, again, "the dense index was rebuilt");
    server.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&data);
}
