//! Model architectures (llama incl. Mistral, qwen2, gemma3) and their batched forward pass.

pub mod source;
