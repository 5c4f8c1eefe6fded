//! Cordon's private inference server: OpenAI-compatible chat, completions and embeddings from
//! Llama-, Qwen2- and BERT-architecture models on libtorch, on a GPU where there is one.
//!
//! A request goes: `server` (HTTP, OpenAI wire format) → `chat` (template and tokenizer) →
//! `engine` (the continuous-batching scheduler, one thread per model, which owns the network
//! in `model` and samples with `sampling`) → back as tokens, decoded incrementally.

pub mod api;
pub mod config;
pub mod engine;
pub mod error;
pub mod metrics;
pub mod model;
pub mod sampling;
pub mod server;
pub mod text;
