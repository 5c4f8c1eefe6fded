//! Upstream providers, one module each with the same shape: a `NAME`, a `prepare` that turns the
//! client's parsed request into the request this provider expects, and (for providers that
//! speak another protocol) the translation of their answers back. Dispatch is by the config's
//! [`ProviderKind`] enum.

pub mod anthropic;
pub mod azure_openai;
pub mod openai;

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::api::{Api, ParsedRequest};
use crate::catalogue::Target;
use crate::config::ProviderKind;
use crate::error::ApiError;

/// What one attempt sends upstream (always a POST).
#[derive(Debug, Clone)]
pub struct UpstreamRequest {
    /// Path and query, starting with `/`.
    pub path: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
}

/// How the upstream's answer becomes the client's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Translation {
    /// Same protocol on both sides.
    None,
    /// An OpenAI chat request served by Anthropic's Messages API.
    AnthropicToOpenAiChat,
}

/// Token counts reported by the upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// Builds the upstream request for `target` from the client's request.
pub fn prepare(
    target: &Target,
    req: &ParsedRequest,
) -> Result<(UpstreamRequest, Translation), ApiError> {
    let provider = &target.provider;
    match &provider.kind {
        ProviderKind::OpenAi | ProviderKind::Private => {
            openai::prepare(provider, target, req).map(|r| (r, Translation::None))
        }
        ProviderKind::AzureOpenAi { api_version } => {
            azure_openai::prepare(provider, api_version, target, req)
                .map(|r| (r, Translation::None))
        }
        ProviderKind::Anthropic {
            version,
            default_max_tokens,
        } => anthropic::prepare(provider, version, *default_max_tokens, target, req),
    }
}

/// The client's body with the upstream model set and, for streams, usage requested, as the
/// OpenAI-compatible providers take it.
fn openai_body(target: &Target, req: &ParsedRequest) -> Map<String, Value> {
    let mut body = req.body.clone();
    body.insert("model".into(), Value::String(target.upstream_model.clone()));
    if req.stream && req.api != Api::Embeddings {
        let options = body
            .entry("stream_options")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(o) = options {
            o.insert("include_usage".into(), Value::Bool(true));
        }
    }
    body
}

fn to_bytes(body: &Map<String, Value>) -> Bytes {
    // Serialising a map of JSON values cannot fail.
    Bytes::from(serde_json::to_vec(body).unwrap_or_default())
}

/// The refusal for an API a provider does not offer.
fn unsupported(provider: &str, kind: &str, api: Api) -> ApiError {
    ApiError::bad_request(
        "unsupported_api",
        format!(
            "provider `{provider}` ({kind}) does not serve the {} API; choose a model served by a provider that does",
            api.as_str()
        ),
    )
}

/// Usage from an OpenAI-shaped JSON body or chunk.
pub fn openai_usage(v: &Value) -> Option<Usage> {
    let u = v.get("usage")?;
    Some(Usage {
        prompt_tokens: u.get("prompt_tokens").and_then(Value::as_u64).unwrap_or(0),
        completion_tokens: u
            .get("completion_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0),
    })
}

/// The human-readable message inside an upstream error body, in either provider's shape.
pub fn upstream_error_message(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let err = v.get("error")?;
    err.get("message")
        .and_then(Value::as_str)
        .or_else(|| err.as_str())
        .map(|m| m.chars().take(500).collect())
}
