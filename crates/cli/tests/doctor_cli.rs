//! `sprout doctor` as a user runs it, on a fresh data directory: what it says is missing, the
//! commands it gives to fix it, its JSON, and its exit status when `sprout serve` would fail.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

/// Runs `sprout doctor --home HOME ARGS...` with none of the SPROUT_* settings of the caller.
fn doctor(home: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sprout"));
    cmd.arg("doctor").arg("--home").arg(home).args(args);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SPROUT_") {
            cmd.env_remove(key);
        }
    }
    // dotenvy reads a .env of the working directory: use one that has none.
    cmd.current_dir(home.parent().unwrap_or(home));
    cmd.output().expect("the sprout binary runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor --json printed no JSON ({e}):\n{}\n{}",
            stdout(out),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn fresh_home_says_the_default_model_is_missing_and_how_to_pull_it() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let out = doctor(&home, &[]);
    let text = stdout(&out);
    // Missing models are pulled by `sprout serve` on start: not a failure.
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("missing    qwen2.5-coder-0.5b-instruct-q4_k_m (chat"),
        "{text}"
    );
    assert!(
        text.contains("missing    embeddinggemma-300m (embedder"),
        "{text}"
    );
    let pull = format!("sprout pull default --home {}", home.display());
    assert!(text.contains(&pull), "no `{pull}` in\n{text}");
    assert!(text.contains("sprout pull embeddinggemma --home"), "{text}");
    for section in [
        "cpu ",
        "kernels ",
        "threads ",
        "memory ",
        "data dir ",
        "catalogs",
    ] {
        assert!(text.contains(section), "no {section:?} in\n{text}");
    }
    assert!(text.contains("not created yet"), "{text}");
    assert!(text.contains("eco (built in"), "{text}");
    // Looking creates nothing.
    assert!(!home.exists());
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}

#[test]
fn json_report_has_every_section() {
    let home = tempfile::tempdir().unwrap();
    let out = doctor(home.path(), &["--json", "--no-embedder", "--threads", "3"]);
    assert!(out.status.success());
    let r = json(&out);
    assert_eq!(r["serve_ok"], true);
    assert_eq!(r["data_dir"]["path"], home.path().display().to_string());
    assert_eq!(r["data_dir"]["writable"], true);
    assert_eq!(r["threads"]["serve"], 3);
    assert!(r["threads"]["available"].as_u64().unwrap() >= 1);
    assert!(r["kernels"]["isa"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(r["memory"]["total_bytes"].as_u64().is_some() || !cfg!(target_os = "linux"));
    if cfg!(target_arch = "x86_64") {
        let names: Vec<&str> = r["cpu"]["features"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|f| f["name"].as_str())
            .collect();
        assert!(
            names.contains(&"avx2") && names.contains(&"avx512bf16"),
            "{names:?}"
        );
        assert!(r["cpu"]["amx"]["tile_in_cpuid"].is_boolean());
    }
    let models = r["models"].as_array().unwrap();
    assert_eq!(
        models.len(),
        1,
        "--no-embedder checks the chat model only: {models:?}"
    );
    let chat = &models[0];
    assert_eq!(chat["name"], "qwen2.5-coder-0.5b-instruct-q4_k_m");
    assert_eq!(chat["role"], "chat");
    assert_eq!(chat["status"], "missing");
    assert!(chat["fix"]
        .as_str()
        .unwrap()
        .starts_with("sprout pull default --home "));
    let problems = r["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0]["blocks_serve"], false);
    assert_eq!(r["catalogs"][0]["name"], "eco");
}

#[test]
fn corrupt_model_and_unreadable_catalog_fail_with_the_commands_that_fix_them() {
    let home = tempfile::tempdir().unwrap();
    // MiniLM's smallest file, right size, wrong bytes: a pull would trust its marker.
    let file = home
        .path()
        .join("models/all-minilm-l6-v2/1_Pooling/config.json");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let len = 190;
    std::fs::write(&file, vec![b' '; len]).unwrap();
    let catalog = home.path().join("catalogs/books");
    std::fs::create_dir_all(&catalog).unwrap();
    std::fs::write(catalog.join("items.jsonl"), "not json\n").unwrap();

    let out = doctor(home.path(), &["--embedder", "minilm", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let r = json(&out);
    assert_eq!(r["serve_ok"], false);
    let minilm = r["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "all-minilm-l6-v2")
        .unwrap();
    assert_eq!(minilm["role"], "embedder");
    // The other files are missing too, but the bad hash is what a pull would not repair.
    assert_eq!(minilm["status"], "mismatch", "{minilm}");
    let fix = minilm["fix"].as_str().unwrap();
    assert!(fix.starts_with("rm -rf "), "{fix}");
    assert!(fix.contains("1_Pooling/config.json.sha256"), "{fix}");
    assert!(fix.contains("&& sprout pull minilm --home"), "{fix}");
    let books = r["catalogs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "books")
        .unwrap();
    assert_eq!(books["status"], "unreadable");
    assert!(books["fix"]
        .as_str()
        .unwrap()
        .starts_with("sprout catalog ingest FILE --name books"));

    // The text report marks what blocks serve; the error line says so on stderr.
    let out = doctor(home.path(), &["--embedder", "minilm", "--no-hash"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("[blocks serve]"), "{text}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("`sprout serve` would fail"));
}

#[test]
fn unknown_model_names_the_known_ones() {
    let home = tempfile::tempdir().unwrap();
    let out = doctor(home.path(), &["--model", "llama-70b", "--no-embedder"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("--model llama-70b is neither a file nor a registry model"),
        "{text}"
    );
    assert!(text.contains("see `sprout models`"), "{text}");
}
