//! The raw OpenAI request bodies exactly as clients send them, before any checking.

use serde::Deserialize;

/// The body of `POST /v1/chat/completions` and `POST /v1/completions`: one shape, so unknown
/// fields are refused by name; validation requires `messages` or `prompt` per endpoint.
/// Numbers are read wide (f64, i64) so out-of-range values reach validation and get a message
/// naming the field.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRequest {
    #[serde(default)]
    pub model: Option<String>,
    pub messages: Option<Vec<RawMessage>>,
    pub prompt: Option<RawPrompt>,
    pub echo: Option<bool>,
    pub suffix: Option<String>,
    pub best_of: Option<i64>,
    pub max_tokens: Option<i64>,
    pub max_completion_tokens: Option<i64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<i64>,
    pub min_p: Option<f64>,
    pub repetition_penalty: Option<f64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub stop: Option<RawStop>,
    pub seed: Option<i64>,
    pub n: Option<i64>,
    pub ignore_eos: Option<bool>,
    pub stream: Option<bool>,
    pub stream_options: Option<RawStreamOptions>,
    pub response_format: Option<serde_json::Value>,
    /// sprout's extension: `{"type": "regex" | "lark", "value": "..."}`.
    pub grammar: Option<RawGrammar>,
    pub logprobs: Option<serde_json::Value>,
    pub top_logprobs: Option<i64>,
    pub logit_bias: Option<serde_json::Map<String, serde_json::Value>>,
    pub tools: Option<serde_json::Value>,
    pub tool_choice: Option<serde_json::Value>,
    pub parallel_tool_calls: Option<bool>,
    pub user: Option<String>,
    pub store: Option<bool>,
    pub metadata: Option<serde_json::Value>,
}

/// A completion prompt: a string, or a list holding exactly one string.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawPrompt {
    One(String),
    Many(Vec<String>),
}

/// `stop`: one string or several.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawStop {
    One(String),
    Many(Vec<String>),
}

/// `stream_options`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStreamOptions {
    #[serde(default)]
    pub include_usage: Option<bool>,
}

/// One chat message.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<RawContent>,
    #[serde(default)]
    pub name: Option<String>,
}

/// Message content: a string or a list of typed parts.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawContent {
    Text(String),
    Parts(Vec<RawPart>),
}

/// One content part; only text parts are supported.
#[derive(Debug, Deserialize)]
pub struct RawPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

/// sprout's `grammar` extension field.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGrammar {
    #[serde(rename = "type")]
    pub kind: String,
    pub value: String,
}
