//! Chat templates: the model's Jinja template (GGUF `tokenizer.chat_template`, HF
//! `chat_template`, or a user file) compiled once and rendered in a sandbox — no filesystem
//! or environment access, a fuel budget so every render ends, and a recursion limit.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use minijinja::value::{Kwargs, Value};
use minijinja::{Environment, Error, ErrorKind};
use serde::{Deserialize, Serialize};

use crate::{EngineError, Result};

/// Instructions one render may execute; real templates use a few thousand per message.
const RENDER_FUEL: u64 = 20_000_000;
/// Nesting depth of macros, includes and recursive loops.
const RECURSION_LIMIT: usize = 64;
/// Name of the one template in each environment.
const TEMPLATE_NAME: &str = "chat";

/// ChatML, used when a model ships no template.
const CHATML: &str = "{%- for message in messages %}{{ '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}";

/// `[INST]` format: `<s>[INST] {system}\n\n{user} [/INST] {assistant} </s>`, one `<s>` per user turn.
const MISTRAL: &str = "{%- if messages and messages[0].role == 'system' %}{%- set system = messages[0].content %}{%- set turns = messages[1:] %}{%- else %}{%- set system = '' %}{%- set turns = messages %}{%- endif %}{%- for message in turns %}{%- if message.role == 'user' %}{{ '<s>[INST] ' }}{%- if loop.first and system %}{{ system + '\\n\\n' }}{%- endif %}{{ message.content + ' [/INST]' }}{%- else %}{{ ' ' + message.content + ' </s>' }}{%- endif %}{%- endfor %}";

/// Gemma's turn format; the system prompt joins the first user turn.
const GEMMA: &str = "{{- bos_token }}{%- if messages and messages[0].role == 'system' %}{%- set first_user_prefix = messages[0].content + '\\n\\n' %}{%- set turns = messages[1:] %}{%- else %}{%- set first_user_prefix = '' %}{%- set turns = messages %}{%- endif %}{%- for message in turns %}{%- if (message.role == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{%- endif %}{%- set role = 'model' if message.role == 'assistant' else message.role %}{{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else '') + message.content | trim + '<end_of_turn>\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{%- endif %}";

/// Templates selectable by name.
const BUILTINS: &[(&str, &str)] = &[("chatml", CHATML), ("mistral", MISTRAL), ("gemma", GEMMA)];

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    /// A message from `role` ("system", "user", "assistant", "tool").
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// A compiled chat template, cheap to render and shareable across threads.
pub struct ChatTemplate {
    env: Environment<'static>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").finish_non_exhaustive()
    }
}

fn template_error(e: Error) -> EngineError {
    // minijinja's Display carries the line and the reason; the source chain adds the cause.
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    EngineError::ChatTemplate(msg)
}

impl ChatTemplate {
    /// Compiles a Jinja template written for Hugging Face's `apply_chat_template`.
    pub fn new(source: &str) -> Result<Self> {
        let mut env = Environment::new();
        // Hugging Face renders with trim_blocks and lstrip_blocks; templates are written for it.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_fuel(Some(RENDER_FUEL));
        env.set_recursion_limit(RECURSION_LIMIT);
        // No loader: `include`/`import`/`extends` find nothing, so templates cannot read files.
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", to_json);
        env.add_template_owned(TEMPLATE_NAME, source.to_string())
            .map_err(template_error)?;
        Ok(ChatTemplate { env })
    }

    /// A template shipped with sprout: "chatml", "mistral" or "gemma".
    pub fn builtin(name: &str) -> Option<Self> {
        let (_, src) = BUILTINS
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))?;
        Some(Self::new(src).expect("builtin templates compile"))
    }

    /// ChatML, for models that ship no template.
    pub fn fallback() -> Self {
        Self::builtin("chatml").expect("chatml is a builtin")
    }

    /// The template a user named: a builtin name, or the path of a Jinja file.
    pub fn from_user_spec(spec: &str) -> Result<Self> {
        if let Some(t) = Self::builtin(spec) {
            return Ok(t);
        }
        let path = Path::new(spec);
        let source = std::fs::read_to_string(path).map_err(|source| EngineError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::new(&source)
    }

    /// Renders a conversation; with `add_generation_prompt` the text ends where the
    /// assistant's answer begins.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<String> {
        let tmpl = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(template_error)?;
        let ctx = minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => bos_token,
            eos_token => eos_token,
        };
        tmpl.render(ctx).map_err(template_error)
    }
}

fn raise_exception(message: String) -> std::result::Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

/// Python's `json.dumps` with Hugging Face's defaults: `", "` and `": "` separators,
/// non-ASCII kept, optional `indent`.
fn to_json(value: &Value, kwargs: Kwargs) -> std::result::Result<Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let _: Option<bool> = kwargs.get("ensure_ascii")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    kwargs.assert_all_used()?;
    let json = serde_json::to_value(value)
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    let mut out = String::new();
    write_json(&json, indent, sort_keys.unwrap_or(false), 0, &mut out);
    Ok(Value::from_safe_string(out))
}

fn write_json(
    v: &serde_json::Value,
    indent: Option<usize>,
    sort: bool,
    depth: usize,
    out: &mut String,
) {
    use serde_json::Value as J;
    let newline = |out: &mut String, depth: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * depth));
        }
    };
    let item_sep = if indent.is_some() { "," } else { ", " };
    match v {
        J::Array(items) if !items.is_empty() => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, depth + 1);
                write_json(item, indent, sort, depth + 1, out);
            }
            newline(out, depth);
            out.push(']');
        }
        J::Object(map) if !map.is_empty() => {
            let mut entries: Vec<_> = map.iter().collect();
            if sort {
                entries.sort_by(|a, b| a.0.cmp(b.0));
            }
            out.push('{');
            for (i, (k, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, depth + 1);
                out.push_str(&J::String(k.clone()).to_string());
                out.push_str(": ");
                write_json(item, indent, sort, depth + 1, out);
            }
            newline(out, depth);
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// `strftime_now(format)`: the current UTC time, with the common `strftime` fields.
fn strftime_now(format: String) -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format_time(secs, &format)
}

fn format_time(unix_secs: u64, format: &str) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    let days = (unix_secs / 86_400) as i64;
    let secs_of_day = unix_secs % 86_400;
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let weekday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday.
    let month_name = MONTHS[(month - 1) as usize];
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year.rem_euclid(100))),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('e') => out.push_str(&format!("{day:>2}")),
            Some('B') => out.push_str(month_name),
            Some('b') => out.push_str(&month_name[..3]),
            Some('A') => out.push_str(DAYS[weekday]),
            Some('a') => out.push_str(&DAYS[weekday][..3]),
            Some('H') => out.push_str(&format!("{:02}", secs_of_day / 3600)),
            Some('M') => out.push_str(&format!("{:02}", secs_of_day / 60 % 60)),
            Some('S') => out.push_str(&format!("{:02}", secs_of_day % 60)),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conversation() -> Vec<ChatMessage> {
        vec![
            ChatMessage::new("system", "Be brief."),
            ChatMessage::new("user", "Hi!"),
        ]
    }

    #[test]
    fn chatml_fallback_renders_exactly() {
        let out = ChatTemplate::fallback()
            .render(&conversation(), true, "", "")
            .unwrap();
        assert_eq!(out, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n");
    }

    #[test]
    fn mistral_builtin_uses_the_inst_format() {
        let t = ChatTemplate::from_user_spec("mistral").unwrap();
        assert_eq!(
            t.render(&conversation(), true, "<s>", "</s>").unwrap(),
            "<s>[INST] Be brief.\n\nHi! [/INST]"
        );
        let mut turns = conversation();
        turns.push(ChatMessage::new("assistant", "Hello."));
        turns.push(ChatMessage::new("user", "Bye"));
        assert_eq!(
            t.render(&turns, true, "<s>", "</s>").unwrap(),
            "<s>[INST] Be brief.\n\nHi! [/INST] Hello. </s><s>[INST] Bye [/INST]"
        );
        let no_system = [ChatMessage::new("user", "Hi!")];
        assert_eq!(
            t.render(&no_system, true, "", "").unwrap(),
            "<s>[INST] Hi! [/INST]"
        );
    }

    #[test]
    fn gemma_builtin_merges_system_into_first_turn_and_checks_roles() {
        let t = ChatTemplate::builtin("gemma").unwrap();
        assert_eq!(
            t.render(&conversation(), true, "<bos>", "<eos>").unwrap(),
            "<bos><start_of_turn>user\nBe brief.\n\nHi!<end_of_turn>\n<start_of_turn>model\n"
        );
        let bad = [ChatMessage::new("assistant", "first")];
        let err = t.render(&bad, true, "", "").unwrap_err().to_string();
        assert!(err.contains("Conversation roles must alternate"), "{err}");
    }

    #[test]
    fn endless_loops_run_out_of_fuel() {
        let t = ChatTemplate::new(
            "{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}",
        )
        .unwrap();
        let err = t.render(&[], false, "", "").unwrap_err().to_string();
        assert!(err.contains("fuel"), "{err}");
        let recursive =
            ChatTemplate::new("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}").unwrap();
        assert!(recursive.render(&[], false, "", "").is_err());
    }

    #[test]
    fn templates_cannot_read_files_or_environment() {
        let t = ChatTemplate::new("{% include '/etc/passwd' %}").unwrap();
        let err = t.render(&[], false, "", "").unwrap_err().to_string();
        assert!(err.contains("not found"), "{err}");
        let imported = ChatTemplate::new("{% import 'Cargo.toml' as x %}{{ x }}").unwrap();
        assert!(imported.render(&[], false, "", "").is_err());
        let home = ChatTemplate::new("{{ environ }}{{ env.HOME }}")
            .unwrap()
            .render(&[], false, "", "");
        assert!(
            home.unwrap_or_default().is_empty(),
            "no environment is visible"
        );
        assert!(ChatTemplate::from_user_spec("/nonexistent/template.jinja").is_err());
        assert!(
            ChatTemplate::new("{% for %}").is_err(),
            "syntax errors surface at compile time"
        );
    }

    #[test]
    fn python_methods_tojson_and_raise_exception() {
        let t = ChatTemplate::new(
            "{{ messages[0].content.strip().upper() }}|{{ messages[0].role.startswith('sys') }}|{{ {'a': [1, 'é<'], 'b': none} | tojson }}",
        )
        .unwrap();
        let msgs = [ChatMessage::new("system", "  hi  ")];
        assert_eq!(
            t.render(&msgs, false, "", "").unwrap(),
            "HI|True|{\"a\": [1, \"é<\"], \"b\": null}"
        );
        let t = ChatTemplate::new("{{ raise_exception('no tools here') }}").unwrap();
        assert!(t
            .render(&[], false, "", "")
            .unwrap_err()
            .to_string()
            .contains("no tools here"));
    }

    #[test]
    fn formats_dates_like_strftime() {
        // 2024-02-29 13:05:09 UTC, a Thursday.
        assert_eq!(
            format_time(1_709_211_909, "%d %b %Y %H:%M:%S %A %B %m %y%%"),
            "29 Feb 2024 13:05:09 Thursday February 02 24%"
        );
        let t = ChatTemplate::new("{{ strftime_now('%Y') }}").unwrap();
        assert_eq!(t.render(&[], false, "", "").unwrap().len(), 4);
    }
}
