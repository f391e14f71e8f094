//! The real `sprout` binary on the real default model (SPROUT_TEST_QWEN; skipped when absent
//! unless SPROUT_REQUIRE_MODELS is set): a supervised engine under injected faults, and
//! `sprout chat` reusing its first turn's KV in the second, a Leafresh session across a kill -9.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn model() -> Option<PathBuf> {
    let p = PathBuf::from(
        std::env::var("SPROUT_TEST_QWEN")
            .unwrap_or_else(|_| "/work/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf".into()),
    );
    if p.exists() {
        return Some(p);
    }
    assert!(
        std::env::var_os("SPROUT_REQUIRE_MODELS").is_none(),
        "test model {} missing",
        p.display()
    );
    eprintln!("skipping: {} not found (set SPROUT_TEST_QWEN)", p.display());
    None
}

/// A `sprout serve` child on a free port; killed on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(model: &PathBuf, extra: &[&str]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sprout"))
        .args([
            "serve",
            "--port",
            "0",
            "--threads",
            "2",
            "--kv-tokens",
            "4096",
        ])
        .arg("--model")
        .arg(model)
        .args(extra)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("sprout starts");
    let stderr = child.stderr.take().expect("piped");
    let mut lines = BufReader::new(stderr).lines();
    let port = loop {
        let line = lines
            .next()
            .expect("sprout prints where it listens")
            .unwrap();
        if let Some(rest) = line.strip_prefix("sprout listening on http://127.0.0.1:") {
            break rest
                .split_whitespace()
                .next()
                .unwrap()
                .parse()
                .expect("a port");
        }
    };
    // Keep draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let server = Server { child, port };
    let deadline = Instant::now() + Duration::from_secs(120);
    while http(server.port, "GET", "/ready", "").map(|r| r.0) != Some(200) {
        assert!(Instant::now() < deadline, "sprout never became ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    server
}

/// One HTTP/1.1 request (connection closed after it): status and body, None if refused.
fn http(port: u16, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(120))).ok()?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map_or("", |x| x.1).to_string();
    Some((status, body))
}

fn chat(stream: bool, max_tokens: u32) -> String {
    serde_json::json!({"model": "default", "stream": stream, "max_tokens": max_tokens,
        "temperature": 0, "ignore_eos": true,
        "messages": [{"role": "user", "content": "Count from one to twenty."}]})
    .to_string()
}

#[test]
fn a_panic_in_a_step_fails_its_requests_as_events_and_the_server_serves_on() {
    let Some(m) = model() else { return };
    let s = serve(&m, &["--inject-fault", "step:4"]);
    let (status, body) = http(s.port, "POST", "/v1/chat/completions", &chat(true, 16)).unwrap();
    assert_eq!(status, 200);
    assert!(
        body.contains("event: error") && body.contains("the engine step panicked"),
        "{body}"
    );
    assert!(!body.contains("[DONE]"), "{body}");
    let (status, body) = http(s.port, "POST", "/v1/chat/completions", &chat(false, 8)).unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"finish_reason\":\"length\""), "{body}");
    assert_eq!(http(s.port, "GET", "/ready", "").unwrap().0, 200);
    let (_, metrics) = http(s.port, "GET", "/metrics", "").unwrap();
    assert!(
        metrics.contains("sprout_engine_step_panics_total 1"),
        "{metrics}"
    );
}

#[test]
fn a_fault_outside_a_step_turns_ready_503_and_exits_non_zero() {
    let Some(m) = model() else { return };
    let mut s = serve(&m, &["--inject-fault", "outside:3"]);
    let (status, body) = http(s.port, "POST", "/v1/chat/completions", &chat(true, 16)).unwrap();
    assert_eq!(status, 200);
    assert!(
        body.contains("event: error") && body.contains("engine_down"),
        "{body}"
    );
    // /ready says 503 (with the reason) until the process goes.
    let ready = http(s.port, "GET", "/ready", "");
    if let Some((status, body)) = &ready {
        assert_eq!(*status, 503, "{body}");
        assert!(body.contains("injected fault"), "{body}");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let code = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "sprout kept running with its engine down"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!code.success(), "exit status {code:?}");
    assert!(ready.is_some(), "/ready was reachable after the fault");
}

#[test]
fn chat_second_turn_reuses_the_first_turns_kv() {
    let Some(m) = model() else { return };
    let mut child = Command::new(env!("CARGO_BIN_EXE_sprout"))
        .args([
            "chat",
            "--threads",
            "2",
            "--kv-tokens",
            "4096",
            "--max-tokens",
            "24",
            "--stats",
        ])
        .arg("--model")
        .arg(&m)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all("Name three fruits.\nNow name three vegetables.\n\n".as_bytes())
        .unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    // [prompt P tokens: C computed, K cached; G generated]
    let turns: Vec<(usize, usize, usize, usize)> = err
        .lines()
        .filter_map(|l| l.split_once("[prompt ").map(|x| x.1))
        .map(|l| {
            let n: Vec<usize> = l
                .split(|c: char| !c.is_ascii_digit())
                .filter(|t| !t.is_empty())
                .map(|t| t.parse().unwrap())
                .collect();
            (n[0], n[1], n[2], n[3])
        })
        .collect();
    assert_eq!(turns.len(), 2, "{err}");
    let (p1, _, _, g1) = turns[0];
    let (p2, computed2, cached2, _) = turns[1];
    assert_eq!(computed2 + cached2, p2);
    // Everything the first turn held (its prompt and all but its last answer token) is reused;
    // the second turn computes only the new message and the template around it.
    assert!(
        cached2 + 1 >= p1 + g1 - 1,
        "second turn cached {cached2} of the first turn's {} tokens:\n{err}",
        p1 + g1
    );
    assert!(
        computed2 < 30,
        "second turn computed {computed2} tokens:\n{err}"
    );
}

/// The embedder directory (SPROUT_TEST_EMBEDDER), or None to skip.
fn embedder() -> Option<PathBuf> {
    match std::env::var_os("SPROUT_TEST_EMBEDDER").map(PathBuf::from) {
        Some(p) if p.exists() => Some(p),
        _ => {
            assert!(
                std::env::var_os("SPROUT_REQUIRE_MODELS").is_none(),
                "SPROUT_TEST_EMBEDDER missing"
            );
            eprintln!("skipping: set SPROUT_TEST_EMBEDDER");
            None
        }
    }
}

fn leafresh(port: u16, path: &str, body: serde_json::Value) -> serde_json::Value {
    let (status, text) = http(
        port,
        "POST",
        &format!("/ai/chatbot/recommendation/{path}"),
        &body.to_string(),
    )
    .expect("the server answers");
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).expect("a JSON envelope")
}

fn categories(answer: &serde_json::Value) -> Vec<String> {
    answer["data"]["challenges"]
        .as_array()
        .expect("challenges")
        .iter()
        .map(|c| c["category"].as_str().expect("a category").to_string())
        .collect()
}

#[test]
fn a_leafresh_session_survives_a_kill_9_of_the_server() {
    let (Some(m), Some(e)) = (model(), embedder()) else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("sprout-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("sprout.toml");
    std::fs::write(&config, "data_dir = \"data\"\n").unwrap();
    let flags = [
        "--config",
        config.to_str().unwrap(),
        "--embedder",
        e.to_str().unwrap(),
    ];
    let sid = serde_json::json!("restart-session");
    {
        let s = serve(&m, &flags);
        let base = leafresh(
            s.port,
            "base-info",
            serde_json::json!({"sessionId": sid, "location": "산", "workType": "현장직", "category": "플로깅"}),
        );
        assert_eq!(categories(&base), ["PLOGGING"; 3]);
        let vegan = leafresh(
            s.port,
            "free-text",
            serde_json::json!({"sessionId": sid, "message": "비건 챌린지도 추천해줘"}),
        );
        assert_eq!(categories(&vegan), ["VEGAN"; 3]);
        // Dropping the server kills it with SIGKILL: no graceful shutdown.
    }
    assert!(dir.join("data/sessions.sqlite3").exists());
    let s = serve(&m, &flags);
    // "The original category" is the base-info one, which only the stored session knows
    // (without it the default is zero-waste).
    let back = leafresh(
        s.port,
        "free-text",
        serde_json::json!({"sessionId": sid, "message": "원래 카테고리로 다시 추천해줘"}),
    );
    assert_eq!(categories(&back), ["PLOGGING"; 3]);
    // Another session id knows nothing of it.
    let other = leafresh(
        s.port,
        "free-text",
        serde_json::json!({"sessionId": "another-session", "message": "원래 카테고리로 다시 추천해줘"}),
    );
    assert_ne!(categories(&other), ["PLOGGING"; 3]);
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}
