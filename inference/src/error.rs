//! The server's error types: what went wrong loading a model, and what a request did wrong.

use std::path::PathBuf;

/// Loading a model directory or running it failed.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path}: weight `{name}` is missing")]
    MissingWeight { path: PathBuf, name: String },
    #[error("{path}: weight `{name}` has shape {found:?}, expected {expected:?}")]
    WeightShape {
        path: PathBuf,
        name: String,
        found: Vec<i64>,
        expected: Vec<i64>,
    },
    #[error(
        "{path}: unsupported architecture {found:?}; supported: LlamaForCausalLM, Qwen2ForCausalLM, BertModel"
    )]
    Architecture { path: PathBuf, found: Vec<String> },
    #[error("tokenizer {path}: {message}")]
    Tokenizer { path: PathBuf, message: String },
    #[error("chat template: {0}")]
    Template(String),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

/// What a request got wrong; each becomes a 4xx in the OpenAI error shape.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct RequestError {
    pub status: u16,
    pub code: &'static str,
    pub param: Option<&'static str>,
    pub message: String,
}

impl RequestError {
    pub fn invalid(param: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: 400,
            code: "invalid_request",
            param: Some(param),
            message: message.into(),
        }
    }

    pub fn context_length(prompt: usize, context: usize) -> Self {
        Self {
            status: 400,
            code: "context_length_exceeded",
            param: Some("messages"),
            message: format!(
                "the prompt is {prompt} tokens, but this model's context window is {context} tokens; shorten the prompt"
            ),
        }
    }

    pub fn queue_full(model: &str, depth: usize) -> Self {
        Self {
            status: 429,
            code: "queue_full",
            param: None,
            message: format!(
                "model `{model}` has {depth} requests waiting, its queue's limit; retry after a short wait"
            ),
        }
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            status: 503,
            code: "model_unavailable",
            param: None,
            message: message.into(),
        }
    }
}
