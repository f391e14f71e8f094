//! Chat templates of the real models: Qwen's template from its GGUF metadata renders a
//! conversation to the exact ChatML text, and Gemma (whose base GGUF ships no template) gets
//! the builtin Gemma format; both prompts tokenize with their turn markers as single ids.
//!
//! Skips with a note when a model file is missing (SPROUT_TEST_QWEN / SPROUT_TEST_GEMMA).

use std::path::PathBuf;

use sprout_engine::chat_template::{ChatMessage, ChatTemplate};
use sprout_engine::tokenizer::Tokenizer;

fn load(env: &str, default: &str) -> Option<Tokenizer> {
    let path = std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default));
    if !path.exists() {
        assert!(
            std::env::var_os("SPROUT_REQUIRE_MODELS").is_none(),
            "test model missing"
        );
        eprintln!("note: {} not found (set {env}); skipping", path.display());
        return None;
    }
    let source = sprout_engine::gguf::open(&path).expect("model opens");
    Some(Tokenizer::from_metadata(&source.metadata).expect("tokenizer builds"))
}

fn conversation() -> Vec<ChatMessage> {
    vec![
        ChatMessage::new("system", "You recommend fresh produce."),
        ChatMessage::new("user", "What goes well with basil?"),
    ]
}

#[test]
fn qwen_template_from_gguf_renders_chatml() {
    let Some(tok) = load(
        "SPROUT_TEST_QWEN",
        "/work/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    ) else {
        return;
    };
    let source = tok.chat_template().expect("Qwen ships a chat template");
    let template = ChatTemplate::new(source).unwrap();
    let text = template
        .render(&conversation(), true, "", "<|im_end|>")
        .unwrap();
    assert_eq!(
        text,
        "<|im_start|>system\nYou recommend fresh produce.<|im_end|>\n\
         <|im_start|>user\nWhat goes well with basil?<|im_end|>\n\
         <|im_start|>assistant\n"
    );
    // Without a system message Qwen's template supplies its default one.
    let user_only = template
        .render(&conversation()[1..], false, "", "")
        .unwrap();
    assert!(
        user_only.starts_with("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud."),
        "{user_only}"
    );
    assert!(user_only.ends_with("<|im_end|>\n"));

    let ids = tok.encode(&text, true);
    let im_start = tok.token_to_id("<|im_start|>").unwrap();
    assert_eq!(ids.iter().filter(|&&id| id == im_start).count(), 3);
    assert_eq!(tok.decode(&ids), text);
}

#[test]
fn gemma_builtin_template_renders_turns() {
    let Some(tok) = load("SPROUT_TEST_GEMMA", "/work/models/gemma-3-270m-q4_k_m.gguf") else {
        return;
    };
    assert!(
        tok.chat_template().is_none(),
        "the base Gemma 3 270M GGUF ships no template"
    );
    let template = ChatTemplate::from_user_spec("gemma").unwrap();
    let bos = tok.token_text(tok.bos_id().unwrap()).unwrap();
    let text = template
        .render(&conversation(), true, bos, "<eos>")
        .unwrap();
    assert_eq!(
        text,
        "<bos><start_of_turn>user\nYou recommend fresh produce.\n\nWhat goes well with basil?<end_of_turn>\n\
         <start_of_turn>model\n"
    );
    let ids = tok.encode(&text, true);
    assert_eq!(ids[0], tok.bos_id().unwrap());
    assert_eq!(ids[1], tok.token_to_id("<start_of_turn>").unwrap());
    assert!(ids.contains(&tok.token_to_id("<end_of_turn>").unwrap()));
}
