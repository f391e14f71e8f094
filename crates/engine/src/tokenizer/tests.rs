//! Tokenizer tests on small hand-built GGUF vocabularies (the real models are covered by
//! `tests/tokenizer_fixtures.rs`).

use std::collections::BTreeMap;

use super::bpe::byte_to_char_table;
use super::*;

fn strings(items: &[String]) -> Value {
    Value::Array(items.iter().map(|s| Value::String(s.clone())).collect())
}

/// A byte-level BPE vocabulary: the 256 byte characters, a few merges, three special tokens.
fn tiny_bpe() -> Tokenizer {
    let table = byte_to_char_table();
    let mut tokens: Vec<String> = table.iter().map(|c| c.to_string()).collect();
    let merges = ["h e", "l l", "he ll", "hell o", "Ġ w", "o r"];
    for m in merges {
        tokens.push(m.replace(' ', ""));
    }
    let mut types = vec![Value::I32(1); tokens.len()];
    for (text, ty) in [("<|im_start|>", 3), ("<|im_end|>", 3), ("<tool_call>", 4)] {
        tokens.push(text.to_string());
        types.push(Value::I32(ty));
    }
    let mut meta = BTreeMap::new();
    meta.insert(
        "tokenizer.ggml.model".to_string(),
        Value::String("gpt2".into()),
    );
    meta.insert(
        "tokenizer.ggml.pre".to_string(),
        Value::String("qwen2".into()),
    );
    meta.insert("tokenizer.ggml.tokens".to_string(), strings(&tokens));
    meta.insert("tokenizer.ggml.token_type".to_string(), Value::Array(types));
    meta.insert(
        "tokenizer.ggml.merges".to_string(),
        strings(&merges.map(String::from)),
    );
    meta.insert(
        "tokenizer.ggml.add_bos_token".to_string(),
        Value::Bool(false),
    );
    Tokenizer::from_metadata(&meta).unwrap()
}

/// A SentencePiece vocabulary with byte fallback.
fn tiny_spm(add_space_prefix: bool) -> Tokenizer {
    let mut tokens: Vec<(String, f32, i32)> = vec![
        ("<unk>".into(), 0.0, 2),
        ("<s>".into(), 0.0, 3),
        ("</s>".into(), 0.0, 3),
        ("<end_of_turn>".into(), 0.0, 3),
    ];
    tokens.extend((0..=255u8).map(|b| (format!("<0x{b:02X}>"), 0.0, 6)));
    for (t, s) in [
        ("▁", -1.0),
        ("H", -2.0),
        ("i", -2.0),
        ("▁H", -1.5),
        ("Hi", -1.0),
        ("▁Hi", -0.5),
        ("!", -3.0),
    ] {
        tokens.push((t.into(), s, 1));
    }
    let mut meta = BTreeMap::new();
    meta.insert(
        "tokenizer.ggml.model".to_string(),
        Value::String("llama".into()),
    );
    meta.insert(
        "tokenizer.ggml.tokens".to_string(),
        Value::Array(tokens.iter().map(|t| Value::String(t.0.clone())).collect()),
    );
    meta.insert(
        "tokenizer.ggml.scores".to_string(),
        Value::Array(tokens.iter().map(|t| Value::F32(t.1)).collect()),
    );
    meta.insert(
        "tokenizer.ggml.token_type".to_string(),
        Value::Array(tokens.iter().map(|t| Value::I32(t.2)).collect()),
    );
    meta.insert(
        "tokenizer.ggml.add_space_prefix".to_string(),
        Value::Bool(add_space_prefix),
    );
    Tokenizer::from_metadata(&meta).unwrap()
}

fn texts(tok: &Tokenizer, ids: &[u32]) -> Vec<String> {
    ids.iter()
        .map(|&id| tok.token_text(id).unwrap().to_string())
        .collect()
}

#[test]
fn bpe_applies_merges_by_rank() {
    let tok = tiny_bpe();
    let ids = tok.encode("hello world", false);
    assert_eq!(texts(&tok, &ids), ["hello", "Ġw", "or", "l", "d"]);
    assert_eq!(tok.decode(&ids), "hello world");
}

#[test]
fn bpe_special_tokens_need_parse_special_but_user_defined_do_not() {
    let tok = tiny_bpe();
    let start = tok.token_to_id("<|im_start|>").unwrap();
    let end = tok.token_to_id("<|im_end|>").unwrap();
    let call = tok.token_to_id("<tool_call>").unwrap();
    let text = "<|im_start|>hello<tool_call><|im_end|>";
    let parsed = tok.encode(text, true);
    assert_eq!(parsed[0], start);
    assert_eq!(parsed[parsed.len() - 2..], [call, end]);
    let literal = tok.encode(text, false);
    assert!(
        !literal.contains(&start) && !literal.contains(&end),
        "{literal:?}"
    );
    assert!(literal.contains(&call));
    assert_eq!(tok.decode(&literal), text);
    assert!(tok.is_special(start) && !tok.is_special(call));
    // No eos key: llama.cpp's GPT-2 default (id 11) stands, plus the end-of-turn token.
    assert_eq!(tok.eos_ids(), [11, end]);
    assert_eq!(tok.bos_id(), Some(11));
    assert!(!tok.add_bos());
}

#[test]
fn bpe_round_trips_arbitrary_unicode_through_bytes() {
    let tok = tiny_bpe();
    let text = "Grüße, 세계! 🌱\n\tend";
    assert_eq!(tok.decode(&tok.encode(text, false)), text);
    assert_eq!(tok.token_bytes(tok.token_to_id("Ġw").unwrap()), b" w");
}

#[test]
fn spm_adds_the_space_prefix_only_when_asked() {
    let with = tiny_spm(true);
    assert_eq!(texts(&with, &with.encode("Hi!", false)), ["▁Hi", "!"]);
    assert_eq!(with.decode(&with.encode("Hi!", false)), "Hi!");
    let without = tiny_spm(false);
    assert_eq!(texts(&without, &without.encode("Hi!", false)), ["Hi", "!"]);
    // After a special token the prefix space comes back.
    let ids = with.encode("</s>Hi", true);
    assert_eq!(texts(&with, &ids), ["</s>", "▁Hi"]);
    assert_eq!(with.bos_id(), Some(1));
    assert!(with.add_bos());
    assert_eq!(with.eos_ids(), [2, 3]);
}

#[test]
fn spm_falls_back_to_bytes_and_streams_whole_characters() {
    let tok = tiny_spm(true);
    let text = "Hi 한😀";
    let ids = tok.encode(text, false);
    assert!(texts(&tok, &ids).contains(&"<0xED>".to_string()));
    assert_eq!(tok.decode(&ids), text);

    let mut stream = StreamDecoder::new(&tok);
    let mut chunks = Vec::new();
    for &id in &ids {
        chunks.push(stream.push(id));
    }
    chunks.push(stream.finish());
    assert_eq!(chunks.concat(), text);
    // No chunk ever holds a broken character, and the Korean syllable arrives whole.
    assert!(chunks.iter().all(|c| !c.contains('\u{FFFD}')));
    assert!(chunks.contains(&"한".to_string()), "{chunks:?}");
    assert!(chunks.contains(&"😀".to_string()), "{chunks:?}");
}

#[test]
fn stream_replaces_bytes_that_never_complete() {
    let tok = tiny_spm(false);
    let byte = |b: u8| tok.token_to_id(&format!("<0x{b:02X}>")).unwrap();
    let mut stream = StreamDecoder::new(&tok);
    assert_eq!(stream.push(byte(0xED)), "");
    // 'H' cannot continue the sequence: the lead byte is given up as U+FFFD.
    assert_eq!(stream.push(tok.token_to_id("H").unwrap()), "\u{FFFD}H");
    assert_eq!(stream.push(byte(0xF0)), "");
    assert_eq!(stream.finish(), "\u{FFFD}");
    assert_eq!(stream.finish(), "");
}

#[test]
fn bad_metadata_is_an_error_not_a_panic() {
    let mut meta = BTreeMap::new();
    assert!(Tokenizer::from_metadata(&meta).is_err());
    meta.insert(
        "tokenizer.ggml.model".to_string(),
        Value::String("gpt2".into()),
    );
    meta.insert("tokenizer.ggml.tokens".to_string(), strings(&["a".into()]));
    assert!(
        Tokenizer::from_metadata(&meta).is_err(),
        "BPE without merges"
    );
    meta.insert(
        "tokenizer.ggml.model".to_string(),
        Value::String("bert-ish".into()),
    );
    assert!(Tokenizer::from_metadata(&meta).is_err());
    meta.insert(
        "tokenizer.ggml.model".to_string(),
        Value::String("llama".into()),
    );
    meta.insert("tokenizer.ggml.scores".to_string(), Value::Array(vec![]));
    assert!(
        Tokenizer::from_metadata(&meta).is_err(),
        "fewer scores than tokens"
    );
}

#[test]
fn hugging_face_tokenizer_json_with_byte_level_bpe() {
    let dir = std::env::temp_dir().join(format!("sprout-tok-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tokenizer_json = dir.join("tokenizer.json");
    let config_json = dir.join("tokenizer_config.json");
    let byte_level = r#"{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}"#;
    let json = format!(
        r#"{{"version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [{{"id": 5, "content": "<|end|>", "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true}}],
        "normalizer": null, "pre_tokenizer": {byte_level}, "post_processor": null, "decoder": {byte_level},
        "model": {{"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "vocab": {{"h": 0, "i": 1, "hi": 2, "Ġ": 3, "Ġhi": 4}}, "merges": ["h i", "Ġ hi"]}}}}"#
    );
    std::fs::write(&tokenizer_json, json).unwrap();
    std::fs::write(
        &config_json,
        r#"{"eos_token": {"content": "<|end|>"}, "chat_template": "{{ messages }}"}"#,
    )
    .unwrap();
    let tok = Tokenizer::from_file(&tokenizer_json, Some(&config_json)).unwrap();
    std::fs::remove_dir_all(&dir).ok();

    assert_eq!(tok.encode("hi hi", false), [2, 4]);
    assert_eq!(tok.encode("hi<|end|>", true), [2, 5]);
    assert!(!tok.encode("hi<|end|>", false).contains(&5));
    assert_eq!(tok.token_bytes(4), b" hi");
    assert_eq!(tok.decode(&[2, 4, 5]), "hi hi<|end|>");
    assert_eq!((tok.eos_id(), tok.eos_ids()), (Some(5), &[5][..]));
    assert!(tok.is_special(5) && !tok.is_special(4));
    assert_eq!(
        (tok.bos_id(), tok.add_bos(), tok.vocab_size()),
        (None, false, 6)
    );
    assert_eq!(tok.chat_template(), Some("{{ messages }}"));
}
