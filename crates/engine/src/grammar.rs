//! Grammar-constrained decoding: JSON Schema, regex and Lark grammars compiled by llguidance
//! against the model's own vocabulary, served to the scheduler as a [`TokenConstraint`] whose
//! mask is computed while the forward pass runs and whose forced continuations (jump-forward)
//! are appended without sampling.
//!
//! JSON is compact by default (no free whitespace between tokens), so a schema whose strings
//! and arrays are bounded has a bounded answer. Compilation is done once per grammar text and
//! cached; each request gets a cheap clone of the compiled matcher.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};
use llguidance::{Matcher, ParserFactory};

use crate::sampler::TokenMask;
use crate::scheduler::{Accepted, TokenConstraint};
use crate::tokenizer::Tokenizer;

/// What a request asks its output to match.
#[derive(Debug, Clone, PartialEq)]
pub enum GrammarSpec {
    /// Any JSON object (OpenAI's `json_object` mode).
    JsonObject,
    /// A JSON Schema (draft 2020-12 subset: see llguidance's JSON docs).
    JsonSchema(serde_json::Value),
    /// A regular expression the whole output must match (Rust regex syntax, no lookaround).
    Regex(String),
    /// A Lark grammar (llguidance's dialect; `%json {...}` embeds a schema).
    Lark(String),
}

impl GrammarSpec {
    /// The text that identifies this grammar in the compile cache.
    fn cache_key(&self) -> String {
        match self {
            GrammarSpec::JsonObject => "json_object".into(),
            GrammarSpec::JsonSchema(v) => format!("json_schema:{v}"),
            GrammarSpec::Regex(r) => format!("regex:{r}"),
            GrammarSpec::Lark(l) => format!("lark:{l}"),
        }
    }

    /// Whether the output is JSON (and so can be parsed and validated afterwards).
    pub fn is_json(&self) -> bool {
        matches!(self, GrammarSpec::JsonObject | GrammarSpec::JsonSchema(_))
    }
}

/// Why a grammar could not be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GrammarError {
    #[error("the grammar does not compile: {0}")]
    Compile(String),
    #[error("the model's vocabulary cannot drive a grammar: {0}")]
    Vocabulary(String),
}

/// Grammars compiled against one model's vocabulary, with a small cache of compiled matchers.
pub struct GrammarCompiler {
    factory: Arc<ParserFactory>,
    vocab_size: usize,
    jump_forward: bool,
    cache: Mutex<CompileCache>,
}

/// Compiled grammars kept for reuse, oldest first out.
#[derive(Default)]
struct CompileCache {
    matchers: HashMap<String, Matcher>,
    order: VecDeque<String>,
}

/// Compiled grammars kept at most.
const COMPILE_CACHE_ENTRIES: usize = 64;

/// The vocabulary as llguidance sees it: every token's bytes (control tokens marked), and
/// the tokenizer for forced text.
struct VocabEnv {
    trie: TokTrie,
    tokenizer: Arc<Tokenizer>,
}

impl TokenizerEnv for VocabEnv {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        self.trie
            .tokenize_with_greedy_fallback(s, |t| self.tokenizer.encode_continuation(t))
    }
}

impl GrammarCompiler {
    /// A compiler for a model with `vocab_size` logits whose tokens `tokenizer` describes.
    /// With `jump_forward` false, forced text is sampled token by token instead (the grammar
    /// then allows exactly one token at each such step).
    pub fn new(
        tokenizer: Arc<Tokenizer>,
        vocab_size: usize,
        jump_forward: bool,
    ) -> Result<Self, GrammarError> {
        let eos = tokenizer.eos_ids();
        let Some(&first_eos) = eos.first() else {
            return Err(GrammarError::Vocabulary(
                "the tokenizer names no end-of-sequence token".into(),
            ));
        };
        let n = vocab_size.max(tokenizer.vocab_size());
        let words: Vec<Vec<u8>> = (0..n as u32)
            .map(|id| {
                if (id as usize) >= tokenizer.vocab_size() {
                    // Logit rows without a token: never allowed (a control-token name).
                    return format!("\u{ff}<[{id}]>").into_bytes();
                }
                if tokenizer.is_special(id) {
                    let mut w = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                    w.extend_from_slice(tokenizer.token_text(id).unwrap_or("").as_bytes());
                    w
                } else {
                    tokenizer.token_bytes(id).to_vec()
                }
            })
            .collect();
        let info = TokRxInfo::new(n as u32, first_eos);
        let trie = TokTrie::from(&info, &words).with_eos_tokens(eos);
        drop(words);
        let env: TokEnv = Arc::new(VocabEnv { trie, tokenizer });
        let mut factory =
            ParserFactory::new_simple(&env).map_err(|e| GrammarError::Vocabulary(e.to_string()))?;
        factory.quiet();
        factory.limits_mut().verbose_errors = false;
        Ok(Self {
            factory: Arc::new(factory),
            vocab_size: n,
            jump_forward,
            cache: Mutex::new(CompileCache::default()),
        })
    }

    /// Whether forced continuations are appended without sampling.
    pub fn jump_forward(&self) -> bool {
        self.jump_forward
    }

    /// Compiles `spec` (or takes it from the cache) and returns a fresh constraint for one
    /// request. Compiling can take milliseconds: call it off async threads.
    pub fn constraint(&self, spec: &GrammarSpec) -> Result<GrammarConstraint, GrammarError> {
        let key = spec.cache_key();
        if let Some(m) = self.cached(&key) {
            return Ok(self.wrap(m));
        }
        let grammar = match spec {
            GrammarSpec::JsonObject => {
                TopLevelGrammar::from_json_schema(compact(serde_json::json!({"type": "object"})))
            }
            GrammarSpec::JsonSchema(schema) => {
                if !schema.is_object() {
                    return Err(GrammarError::Compile(
                        "a JSON schema must be an object".into(),
                    ));
                }
                TopLevelGrammar::from_json_schema(compact(schema.clone()))
            }
            GrammarSpec::Regex(r) => TopLevelGrammar::from_regex(r),
            GrammarSpec::Lark(l) => TopLevelGrammar::from_lark(l.clone()),
        };
        let m = Matcher::new(self.factory.create_parser(grammar));
        if let Some(e) = m.get_error() {
            return Err(GrammarError::Compile(clean_error(&e)));
        }
        if let Ok(mut c) = self.cache.lock() {
            if c.order.len() >= COMPILE_CACHE_ENTRIES {
                if let Some(old) = c.order.pop_front() {
                    c.matchers.remove(&old);
                }
            }
            c.order.push_back(key.clone());
            c.matchers.insert(key, m.clone());
        }
        Ok(self.wrap(m))
    }

    fn cached(&self, key: &str) -> Option<Matcher> {
        self.cache.lock().ok()?.matchers.get(key).cloned()
    }

    fn wrap(&self, matcher: Matcher) -> GrammarConstraint {
        GrammarConstraint {
            matcher,
            mask: None,
            vocab_size: self.vocab_size,
            jump_forward: self.jump_forward,
            forced: 0,
            mask_us: 0,
            masks: 0,
        }
    }
}

/// Turns off llguidance's default free whitespace between JSON tokens (unless the schema sets
/// its own `x-guidance` options).
fn compact(mut schema: serde_json::Value) -> serde_json::Value {
    if let Some(obj) = schema.as_object_mut() {
        obj.entry("x-guidance")
            .or_insert_with(|| serde_json::json!({"whitespace_flexible": false}));
    }
    schema
}

/// The first line of an llguidance error, without its debugging tail.
fn clean_error(e: &str) -> String {
    let e = e.replace("\n<non-verbose/>", "");
    e.trim().to_string()
}

/// One request's grammar state: the matcher, the mask for its next token, counters.
pub struct GrammarConstraint {
    matcher: Matcher,
    mask: Option<TokenMask>,
    vocab_size: usize,
    jump_forward: bool,
    forced: usize,
    mask_us: u64,
    masks: u64,
}

impl GrammarConstraint {
    fn error(&self, what: &str, e: impl std::fmt::Display) -> String {
        let e = clean_error(&e.to_string());
        format!("{what}: {e}")
    }
}

impl TokenConstraint for GrammarConstraint {
    fn compute_mask(&mut self) -> Result<(), String> {
        let t = Instant::now();
        let vob = self
            .matcher
            .compute_mask_or_eos()
            .map_err(|e| self.error("mask", e))?;
        self.mask = Some(TokenMask::from_words32(vob.as_slice(), self.vocab_size));
        self.mask_us += t.elapsed().as_micros() as u64;
        self.masks += 1;
        Ok(())
    }

    fn mask(&self) -> Option<&TokenMask> {
        self.mask.as_ref()
    }

    fn accept(&mut self, token: u32) -> Result<Accepted, String> {
        self.mask = None;
        self.matcher
            .consume_token(token)
            .map_err(|e| self.error("token refused", e))?;
        if self.matcher.is_stopped() {
            return Ok(Accepted {
                done: true,
                ..Default::default()
            });
        }
        let mut forced = Vec::new();
        if self.jump_forward {
            forced = self.matcher.compute_ff_tokens();
            if self.matcher.is_error() {
                return Err(self.error(
                    "forced tokens",
                    self.matcher.get_error().unwrap_or_default(),
                ));
            }
            if !forced.is_empty() {
                self.matcher
                    .consume_tokens(&forced)
                    .map_err(|e| self.error("forced tokens refused", e))?;
                self.forced += forced.len();
            }
        }
        Ok(Accepted {
            done: self.matcher.is_stopped(),
            forced,
            ..Default::default()
        })
    }

    fn start(&mut self) -> Result<Vec<u32>, String> {
        if !self.jump_forward {
            return Ok(Vec::new());
        }
        let forced = self.matcher.compute_ff_tokens();
        if let Some(e) = self.matcher.get_error() {
            return Err(self.error("forced tokens", e));
        }
        if !forced.is_empty() {
            self.matcher
                .consume_tokens(&forced)
                .map_err(|e| self.error("forced tokens refused", e))?;
            self.forced += forced.len();
        }
        Ok(forced)
    }

    fn is_complete(&mut self) -> bool {
        self.matcher.is_stopped() || self.matcher.is_accepting().unwrap_or(false)
    }

    fn forced_tokens(&self) -> usize {
        self.forced
    }

    fn mask_time(&self) -> (u64, u64) {
        (self.mask_us, self.masks)
    }
}
