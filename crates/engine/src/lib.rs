//! sprout's inference engine: loads GGUF and safetensors models, tokenizes, and advances many
//! sequences at once through one batched forward step over a paged KV cache.
//!
//! No HTTP and no async here: the server talks to the engine through channels from its own threads.

pub mod bundle;
pub mod chat_template;
pub mod embedding;
pub mod engine;
pub mod error;
pub mod generation;
pub mod gguf;
pub mod grammar;
pub mod kv;
pub mod model;
pub mod prefix_cache;
pub mod quant;
pub mod registry;
pub mod safetensors_dir;
pub mod sampler;
pub mod scheduler;
pub mod tokenizer;
pub mod vecmath;

pub use error::{EngineError, Result};
