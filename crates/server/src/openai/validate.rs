//! Raw OpenAI bodies become a [`ValidRequest`] here, or an [`ApiError`] naming the field and
//! the limits; nothing unchecked reaches the scheduler.

use sprout_engine::chat_template::ChatMessage;
use sprout_engine::grammar::GrammarSpec;
use sprout_engine::sampler::SamplingParams;

use super::error::ApiError;
use super::types::{RawContent, RawGrammar, RawPrompt, RawRequest, RawStop};
use crate::pipeline::{GenerationJob, PromptInput};

/// Stop strings accepted per request.
pub const MAX_STOP_STRINGS: usize = 16;
/// Longest stop string, in bytes.
pub const MAX_STOP_BYTES: usize = 512;

/// Which API a body was sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Completion,
}

/// A request whose every field is in range.
#[derive(Debug, Clone)]
pub struct ValidRequest {
    pub endpoint: Endpoint,
    pub model: String,
    pub prompt: PromptInput,
    pub sampling: SamplingParams,
    /// None: the server default, clipped to the context.
    pub max_tokens: Option<usize>,
    pub stop_strings: Vec<String>,
    pub ignore_eos: bool,
    pub stream: bool,
    pub include_usage: bool,
    /// The output must match this (response_format, or sprout's `grammar` extension).
    pub grammar: Option<GrammarSpec>,
}

impl ValidRequest {
    /// The pipeline's view of this request.
    pub fn job(&self) -> GenerationJob {
        GenerationJob {
            prompt: self.prompt.clone(),
            sampling: self.sampling.clone(),
            max_tokens: self.max_tokens,
            stop_strings: self.stop_strings.clone(),
            ignore_eos: self.ignore_eos,
            grammar: self.grammar.clone(),
        }
    }
}

/// Parses a body, naming the offending field on type errors.
pub fn parse_body(bytes: &[u8]) -> Result<RawRequest, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path.is_empty() || path == "." {
            ApiError::InvalidJson(inner.to_string())
        } else {
            ApiError::InvalidJson(format!("{path}: {inner}"))
        }
    })
}

fn invalid(param: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::Invalid {
        param,
        message: message.into(),
    }
}

fn unsupported(param: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::Unsupported {
        param,
        message: message.into(),
    }
}

fn float(
    param: &'static str,
    v: Option<f64>,
    lo: f64,
    hi: f64,
    lo_open: bool,
    default: f32,
) -> Result<f32, ApiError> {
    let Some(v) = v else { return Ok(default) };
    let ok = v.is_finite() && v <= hi && if lo_open { v > lo } else { v >= lo };
    if !ok {
        let open = if lo_open { "(" } else { "[" };
        return Err(invalid(
            param,
            format!("{param} must be in {open}{lo}, {hi}], got {v}"),
        ));
    }
    Ok(v as f32)
}

/// Checks a raw body sent to `endpoint`; `models` are the names this server answers to.
pub fn validate(
    raw: RawRequest,
    endpoint: Endpoint,
    models: &[String],
) -> Result<ValidRequest, ApiError> {
    let model = raw
        .model
        .ok_or_else(|| invalid("model", "model is required"))?;
    if !models.contains(&model) {
        return Err(ApiError::ModelNotFound(model));
    }
    let prompt = match endpoint {
        Endpoint::Chat => {
            if raw.prompt.is_some() {
                return Err(invalid(
                    "prompt",
                    "prompt is not a chat completions field: send messages",
                ));
            }
            let completion_only: [(&'static str, bool); 3] = [
                ("echo", raw.echo.is_some()),
                ("suffix", raw.suffix.is_some()),
                ("best_of", raw.best_of.is_some()),
            ];
            if let Some((name, _)) = completion_only.iter().find(|f| f.1) {
                return Err(invalid(
                    name,
                    format!("{name} is not a chat completions field"),
                ));
            }
            PromptInput::Chat(messages(
                raw.messages
                    .ok_or_else(|| invalid("messages", "messages is required"))?,
            )?)
        }
        Endpoint::Completion => {
            if raw.messages.is_some() {
                return Err(invalid(
                    "messages",
                    "messages is not a completions field: send prompt",
                ));
            }
            if raw.echo == Some(true) {
                return Err(unsupported("echo", "echo is not supported"));
            }
            if raw.suffix.is_some() {
                return Err(unsupported("suffix", "suffix is not supported"));
            }
            if raw.best_of.is_some_and(|b| b != 1) {
                return Err(unsupported("best_of", "only best_of = 1 is supported"));
            }
            match raw
                .prompt
                .ok_or_else(|| invalid("prompt", "prompt is required"))?
            {
                RawPrompt::One(s) => PromptInput::Text(s),
                RawPrompt::Many(mut v) if v.len() == 1 => PromptInput::Text(v.remove(0)),
                RawPrompt::Many(v) => {
                    return Err(unsupported(
                        "prompt",
                        format!("exactly one prompt per request, got {}", v.len()),
                    ))
                }
            }
        }
    };
    if raw.n.is_some_and(|n| n != 1) {
        return Err(invalid(
            "n",
            format!("only n = 1 is supported, got {}", raw.n.unwrap_or(1)),
        ));
    }
    let grammar = grammar_of(raw.response_format.as_ref(), raw.grammar)?;
    if raw
        .logprobs
        .as_ref()
        .is_some_and(|l| !matches!(l, serde_json::Value::Bool(false) | serde_json::Value::Null))
    {
        return Err(unsupported("logprobs", "logprobs are unsupported"));
    }
    if raw.top_logprobs.is_some_and(|n| n != 0) {
        return Err(unsupported("top_logprobs", "logprobs are unsupported"));
    }
    if raw
        .tools
        .as_ref()
        .is_some_and(|t| !t.is_null() && t.as_array().is_none_or(|a| !a.is_empty()))
    {
        return Err(unsupported("tools", "tool calls are unsupported"));
    }
    if raw
        .tool_choice
        .as_ref()
        .is_some_and(|t| !t.is_null() && t.as_str() != Some("none"))
    {
        return Err(unsupported("tool_choice", "tool calls are unsupported"));
    }
    if raw.logit_bias.as_ref().is_some_and(|m| !m.is_empty()) {
        return Err(unsupported("logit_bias", "logit_bias is unsupported"));
    }

    let max_tokens: Option<(&'static str, i64)> = match (raw.max_completion_tokens, raw.max_tokens)
    {
        (Some(v), _) => Some(("max_completion_tokens", v)),
        (None, Some(v)) => Some(("max_tokens", v)),
        (None, None) => None,
    };
    let max_tokens = match max_tokens {
        Some((name, v)) if v < 1 => {
            return Err(invalid(name, format!("{name} must be at least 1, got {v}")))
        }
        Some((_, v)) => Some(usize::try_from(v).unwrap_or(usize::MAX)),
        None => None,
    };
    let top_k = match raw.top_k {
        Some(k) if k < 0 => return Err(invalid("top_k", format!("top_k must be ≥ 0, got {k}"))),
        Some(k) => usize::try_from(k).unwrap_or(usize::MAX),
        None => 0,
    };
    let sampling = SamplingParams {
        temperature: float("temperature", raw.temperature, 0.0, 2.0, false, 1.0)?,
        top_p: float("top_p", raw.top_p, 0.0, 1.0, true, 1.0)?,
        top_k,
        min_p: float("min_p", raw.min_p, 0.0, 1.0, false, 0.0)?,
        repetition_penalty: float(
            "repetition_penalty",
            raw.repetition_penalty,
            0.0,
            10.0,
            true,
            1.0,
        )?,
        presence_penalty: float(
            "presence_penalty",
            raw.presence_penalty,
            -2.0,
            2.0,
            false,
            0.0,
        )?,
        frequency_penalty: float(
            "frequency_penalty",
            raw.frequency_penalty,
            -2.0,
            2.0,
            false,
            0.0,
        )?,
        // Without a seed each request draws its own stream.
        seed: raw.seed.map_or_else(fresh_seed, |s| s as u64),
    };
    sampling
        .validate()
        .map_err(|e| invalid("temperature", e.to_string()))?;

    let stop_strings = match raw.stop {
        None => Vec::new(),
        Some(RawStop::One(s)) => vec![s],
        Some(RawStop::Many(v)) => v,
    };
    if stop_strings.len() > MAX_STOP_STRINGS {
        return Err(invalid(
            "stop",
            format!(
                "at most {MAX_STOP_STRINGS} stop strings, got {}",
                stop_strings.len()
            ),
        ));
    }
    if let Some(s) = stop_strings.iter().find(|s| s.len() > MAX_STOP_BYTES) {
        return Err(invalid(
            "stop",
            format!(
                "stop strings are at most {MAX_STOP_BYTES} bytes, got {}",
                s.len()
            ),
        ));
    }
    let stream = raw.stream.unwrap_or(false);
    let include_usage = raw
        .stream_options
        .as_ref()
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    if raw.stream_options.is_some() && !stream {
        return Err(invalid(
            "stream_options",
            "stream_options is only allowed when stream is true",
        ));
    }
    Ok(ValidRequest {
        endpoint,
        model,
        prompt,
        sampling,
        max_tokens,
        stop_strings,
        ignore_eos: raw.ignore_eos.unwrap_or(false),
        stream,
        include_usage,
        grammar,
    })
}

/// The grammar a request asks for: OpenAI's `response_format` (`text`, `json_object`,
/// `json_schema`) or sprout's `grammar` (`regex`, `lark`), not both. Only the shape is checked
/// here; compiling happens in the pipeline (a grammar that does not compile is a 400 there).
fn grammar_of(
    response_format: Option<&serde_json::Value>,
    grammar: Option<RawGrammar>,
) -> Result<Option<GrammarSpec>, ApiError> {
    let from_format = match response_format {
        None => None,
        Some(rf) => {
            let kind = rf.get("type").and_then(|t| t.as_str());
            match kind {
                Some("text") => None,
                Some("json_object") => Some(GrammarSpec::JsonObject),
                Some("json_schema") => {
                    let Some(js) = rf.get("json_schema").filter(|j| j.is_object()) else {
                        return Err(invalid(
                            "response_format",
                            "response_format json_schema needs a json_schema object with name and schema",
                        ));
                    };
                    if js.get("name").and_then(|n| n.as_str()).is_none() {
                        return Err(invalid(
                            "response_format",
                            "response_format.json_schema.name is required",
                        ));
                    }
                    match js.get("schema") {
                        Some(schema) if schema.is_object() => {
                            Some(GrammarSpec::JsonSchema(schema.clone()))
                        }
                        Some(_) => {
                            return Err(invalid(
                                "response_format",
                                "response_format.json_schema.schema must be a JSON object",
                            ))
                        }
                        None => Some(GrammarSpec::JsonObject),
                    }
                }
                other => {
                    return Err(invalid(
                        "response_format",
                        format!(
                            "response_format.type must be text, json_object or json_schema, got {}",
                            other.map_or("nothing".to_string(), |k| format!("{k:?}"))
                        ),
                    ))
                }
            }
        }
    };
    let from_grammar = match grammar {
        None => None,
        Some(g) => Some(match g.kind.as_str() {
            "regex" => GrammarSpec::Regex(g.value),
            "lark" => GrammarSpec::Lark(g.value),
            other => {
                return Err(invalid(
                    "grammar",
                    format!("grammar.type must be regex or lark, got {other:?}"),
                ))
            }
        }),
    };
    match (from_format, from_grammar) {
        (Some(_), Some(_)) => Err(invalid(
            "grammar",
            "give response_format or grammar, not both",
        )),
        (a, b) => Ok(a.or(b)),
    }
}

fn fresh_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

fn messages(raw: Vec<super::types::RawMessage>) -> Result<Vec<ChatMessage>, ApiError> {
    if raw.is_empty() {
        return Err(invalid(
            "messages",
            "messages must hold at least one message",
        ));
    }
    raw.into_iter()
        .enumerate()
        .map(|(i, m)| {
            let role = match m.role.as_str() {
                "system" | "user" | "assistant" | "tool" => m.role,
                "developer" => "system".to_string(),
                other => {
                    return Err(invalid(
                        "messages",
                        format!("messages[{i}].role {other:?} is not one of system, developer, user, assistant, tool"),
                    ))
                }
            };
            let content = match m.content {
                None => return Err(invalid("messages", format!("messages[{i}].content is required"))),
                Some(RawContent::Text(t)) => t,
                Some(RawContent::Parts(parts)) => {
                    let mut text = String::new();
                    for (j, p) in parts.into_iter().enumerate() {
                        match (p.kind.as_str(), p.text) {
                            ("text", Some(t)) => text.push_str(&t),
                            (kind, _) => {
                                return Err(unsupported(
                                    "messages",
                                    format!("messages[{i}].content[{j}]: only text parts are supported, got {kind:?}"),
                                ))
                            }
                        }
                    }
                    text
                }
            };
            Ok(ChatMessage::new(role, content))
        })
        .collect()
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
