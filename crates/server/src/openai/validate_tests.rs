//! Validation tests: every bad field gets a 400 naming it; good bodies pass with defaults.

use super::*;
use crate::openai::error::ApiError;

fn check(body: &str, endpoint: Endpoint) -> Result<ValidRequest, ApiError> {
    validate(parse_body(body.as_bytes())?, endpoint, &["m".to_string()])
}

fn chat(extra: &str) -> Result<ValidRequest, ApiError> {
    check(
        &format!(r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}]{extra}}}"#),
        Endpoint::Chat,
    )
}

fn param_of(e: &ApiError) -> Option<&'static str> {
    match e {
        ApiError::Invalid { param, .. } | ApiError::Unsupported { param, .. } => Some(param),
        _ => None,
    }
}

#[test]
fn good_chat_gets_defaults() {
    let v = chat("").unwrap();
    assert_eq!(
        v.prompt,
        PromptInput::Chat(vec![ChatMessage::new("user", "hi")])
    );
    assert_eq!(
        (v.max_tokens, v.stream, v.sampling.temperature),
        (None, false, 1.0)
    );
    let v = chat(r#","max_completion_tokens":5,"max_tokens":9,"stop":"x","stream":true,"stream_options":{"include_usage":true}"#).unwrap();
    assert_eq!(
        (v.max_tokens, v.stop_strings, v.include_usage),
        (Some(5), vec!["x".to_string()], true)
    );
}

#[test]
fn out_of_range_numbers_name_their_field() {
    for (extra, param) in [
        (r#","max_tokens":0"#, "max_tokens"),
        (r#","max_tokens":-5"#, "max_tokens"),
        (r#","temperature":2.5"#, "temperature"),
        (r#","temperature":-1"#, "temperature"),
        (r#","top_p":0"#, "top_p"),
        (r#","top_k":-1"#, "top_k"),
        (r#","min_p":1.5"#, "min_p"),
        (r#","presence_penalty":3"#, "presence_penalty"),
        (r#","n":2"#, "n"),
        (r#","response_format":{"type":"xml"}"#, "response_format"),
        (
            r#","response_format":{"type":"json_schema","json_schema":{"schema":{}}}"#,
            "response_format",
        ),
        (r#","grammar":{"type":"ebnf","value":"x"}"#, "grammar"),
        (
            r#","response_format":{"type":"json_object"},"grammar":{"type":"regex","value":"a"}"#,
            "grammar",
        ),
        (
            r#","stream_options":{"include_usage":true}"#,
            "stream_options",
        ),
    ] {
        let e = chat(extra).unwrap_err();
        assert_eq!(param_of(&e), Some(param), "{extra}: {e}");
        assert_eq!(e.status().as_u16(), 400);
        assert!(e.to_string().contains(param), "{e}");
    }
}

#[test]
fn wrong_types_unknown_fields_and_bad_json_are_400_naming_the_field() {
    for (body, needle) in [
        (
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":"hot"}"#,
            "temperature",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":"5"}"#,
            "max_tokens",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"bogus":1}"#,
            "bogus",
        ),
        (r#"{"model":"m","messages":"hi"}"#, "messages"),
        (
            r#"{"model":"m","messages":[{"role":"user","content":5}]}"#,
            "messages[0].content",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":NaN}"#,
            "line 1",
        ),
        ("not json", "expected"),
    ] {
        let e = check(body, Endpoint::Chat).unwrap_err();
        assert_eq!(e.status().as_u16(), 400, "{body}");
        assert!(e.to_string().contains(needle), "{body}: {e}");
    }
}

#[test]
fn required_fields_and_models() {
    let e = check(
        r#"{"messages":[{"role":"user","content":"hi"}]}"#,
        Endpoint::Chat,
    )
    .unwrap_err();
    assert_eq!(param_of(&e), Some("model"));
    let e = check(r#"{"model":"m"}"#, Endpoint::Chat).unwrap_err();
    assert_eq!(param_of(&e), Some("messages"));
    let e = check(r#"{"model":"m","messages":[]}"#, Endpoint::Chat).unwrap_err();
    assert_eq!(param_of(&e), Some("messages"));
    let e = check(
        r#"{"model":"other","messages":[{"role":"user","content":"x"}]}"#,
        Endpoint::Chat,
    )
    .unwrap_err();
    assert_eq!(
        (e.status().as_u16(), e.body()["error"]["code"].as_str()),
        (404, Some("model_not_found"))
    );
    let e = check(
        r#"{"model":"m","messages":[{"role":"wizard","content":"x"}]}"#,
        Endpoint::Chat,
    )
    .unwrap_err();
    assert!(e.to_string().contains("wizard"));
    let e = check(r#"{"model":"m","prompt":["a","b"]}"#, Endpoint::Completion).unwrap_err();
    assert_eq!(param_of(&e), Some("prompt"));
    let v = check(
        r#"{"model":"m","prompt":["a"],"seed":-3}"#,
        Endpoint::Completion,
    )
    .unwrap();
    assert_eq!(
        (v.prompt, v.sampling.seed),
        (PromptInput::Text("a".into()), (-3i64) as u64)
    );
}

#[test]
fn grammars_come_from_response_format_or_the_grammar_field() {
    assert_eq!(chat("").unwrap().grammar, None);
    let text = chat(r#","response_format":{"type":"text"}"#).unwrap();
    assert_eq!(text.grammar, None);
    let obj = chat(r#","response_format":{"type":"json_object"}"#).unwrap();
    assert_eq!(obj.grammar, Some(GrammarSpec::JsonObject));
    let schema = chat(
        r#","response_format":{"type":"json_schema","json_schema":{"name":"x","strict":true,"schema":{"type":"object"}}}"#,
    )
    .unwrap();
    assert_eq!(
        schema.grammar,
        Some(GrammarSpec::JsonSchema(
            serde_json::json!({"type": "object"})
        ))
    );
    let rx = chat(r#","grammar":{"type":"regex","value":"[0-9]+"}"#).unwrap();
    assert_eq!(rx.grammar, Some(GrammarSpec::Regex("[0-9]+".into())));
    let lark = chat(r#","grammar":{"type":"lark","value":"start: \"a\""}"#).unwrap();
    assert_eq!(lark.grammar, Some(GrammarSpec::Lark("start: \"a\"".into())));
}
