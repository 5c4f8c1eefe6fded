//! The client-facing API surface: which paths exist, and parsing a request body into a
//! [`ParsedRequest`] that later phases (DLP, policy, routing) read. Bad input becomes an
//! [`ApiError`] that says what was wrong; nothing here panics on input.

use serde_json::{Map, Value};

use crate::error::{ApiError, ErrorShape};

/// The LLM operations Cordon forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    ChatCompletions,
    Completions,
    Embeddings,
    /// Anthropic's native Messages API.
    Messages,
}

/// Every path the gateway answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Llm(Api),
    ListModels,
    Healthz,
    Readyz,
    Metrics,
}

impl Api {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ChatCompletions => "chat",
            Self::Completions => "completions",
            Self::Embeddings => "embeddings",
            Self::Messages => "messages",
        }
    }

    pub fn error_shape(self) -> ErrorShape {
        match self {
            Self::Messages => ErrorShape::Anthropic,
            _ => ErrorShape::OpenAi,
        }
    }
}

impl Endpoint {
    /// Maps a method and path to an endpoint: 404 for unknown paths, 405 for a known path with
    /// the wrong method.
    pub fn resolve(method: &http::Method, path: &str) -> Result<Self, ApiError> {
        let (endpoint, allowed) = match path.trim_end_matches('/') {
            "/v1/chat/completions" => (Self::Llm(Api::ChatCompletions), http::Method::POST),
            "/v1/completions" => (Self::Llm(Api::Completions), http::Method::POST),
            "/v1/embeddings" => (Self::Llm(Api::Embeddings), http::Method::POST),
            "/v1/messages" => (Self::Llm(Api::Messages), http::Method::POST),
            "/v1/models" => (Self::ListModels, http::Method::GET),
            "/healthz" => (Self::Healthz, http::Method::GET),
            "/readyz" => (Self::Readyz, http::Method::GET),
            "/metrics" => (Self::Metrics, http::Method::GET),
            _ => {
                return Err(ApiError::not_found(
                    "unknown_path",
                    format!(
                        "no endpoint at `{path}`; Cordon serves /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/messages and /v1/models"
                    ),
                ));
            }
        };
        if *method != allowed && !(allowed == http::Method::GET && *method == http::Method::HEAD) {
            return Err(ApiError::new(
                405,
                "invalid_request_error",
                "method_not_allowed",
                format!("{path} takes {allowed}, not {method}"),
            ));
        }
        Ok(endpoint)
    }

    /// The label used for this endpoint in metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::Llm(api) => api.as_str(),
            Self::ListModels => "models",
            Self::Healthz => "healthz",
            Self::Readyz => "readyz",
            Self::Metrics => "metrics",
        }
    }
}

/// A request body that parsed: a JSON object with a model, and what the proxy needs to know
/// about it without looking again.
#[derive(Debug, Clone)]
pub struct ParsedRequest {
    pub api: Api,
    pub body: Map<String, Value>,
    pub model: String,
    pub stream: bool,
    /// The client asked for a usage chunk at the end of a stream.
    pub client_wants_stream_usage: bool,
}

/// Checks the content type, UTF-8 and JSON, then the fields every API needs.
pub fn parse(
    api: Api,
    content_type: Option<&str>,
    bytes: &[u8],
) -> Result<ParsedRequest, ApiError> {
    let media_type = content_type
        .and_then(|ct| ct.split(';').next())
        .map(str::trim)
        .unwrap_or("");
    if !media_type.eq_ignore_ascii_case("application/json") {
        return Err(ApiError::new(
            415,
            "invalid_request_error",
            "unsupported_media_type",
            format!(
                "the request body must be JSON sent with `Content-Type: application/json` (got `{}`)",
                if media_type.is_empty() {
                    "none"
                } else {
                    media_type
                }
            ),
        ));
    }
    // The whole body is validated before JSON parsing reads it as text: with SIMD, since a
    // long prompt in Chinese costs the standard library's check several instructions a byte.
    let text = simdutf8::compat::from_utf8(bytes).map_err(|e| {
        ApiError::bad_request(
            "invalid_utf8",
            format!(
                "the request body is not valid UTF-8 (first bad byte at offset {})",
                e.valid_up_to()
            ),
        )
    })?;
    let value: Value = serde_json::from_str(text).map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            format!("the request body is not valid JSON: {e}"),
        )
    })?;
    let Value::Object(body) = value else {
        return Err(ApiError::bad_request(
            "invalid_json",
            "the request body must be a JSON object",
        ));
    };
    let model = match body.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        Some(Value::String(_)) | None => {
            return Err(ApiError::bad_request(
                "missing_model",
                "the request has no `model`; name one of the models listed by GET /v1/models",
            ));
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_model",
                "`model` must be a string",
            ));
        }
    };
    let stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_stream",
                "`stream` must be true or false",
            ));
        }
    };
    if stream && api == Api::Embeddings {
        return Err(ApiError::bad_request(
            "invalid_stream",
            "embeddings cannot be streamed",
        ));
    }
    let required = match api {
        Api::ChatCompletions | Api::Messages => ("messages", "an array of messages"),
        Api::Completions => ("prompt", "a string or an array of strings"),
        Api::Embeddings => ("input", "a string or an array"),
    };
    match (api, body.get(required.0)) {
        (Api::ChatCompletions | Api::Messages, Some(Value::Array(a))) if !a.is_empty() => {}
        (Api::Completions | Api::Embeddings, Some(Value::String(_) | Value::Array(_))) => {}
        _ => {
            return Err(ApiError::bad_request(
                "missing_field",
                format!("`{}` is required and must be {}", required.0, required.1),
            ));
        }
    }
    let client_wants_stream_usage = body
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(ParsedRequest {
        api,
        body,
        model,
        stream,
        client_wants_stream_usage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON: Option<&str> = Some("application/json");

    /// The offset of the first bad byte is reported exactly, also deep in a long body of
    /// multi-byte characters (read by the vectorised check a block at a time).
    #[test]
    fn invalid_utf8_names_the_first_bad_byte() {
        let mut body = format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":"{}"#,
            "中文".repeat(100)
        )
        .into_bytes();
        let at = body.len();
        body.extend_from_slice(b"\xe4\xb8\"}]}");
        let err = parse(Api::ChatCompletions, JSON, &body).expect_err("invalid UTF-8");
        assert_eq!(err.status, 400);
        assert!(
            err.message.contains(&format!("offset {at}")),
            "{}",
            err.message
        );
    }

    #[test]
    fn table_of_bad_inputs() {
        // (api, content type, body, expected status, expected code)
        type Case<'a> = (Api, Option<&'a str>, &'a [u8], u16, &'a str);
        let cases: &[Case] = &[
            (
                Api::ChatCompletions,
                JSON,
                b"{not json",
                400,
                "invalid_json",
            ),
            (Api::ChatCompletions, JSON, b"[1,2]", 400, "invalid_json"),
            (
                Api::ChatCompletions,
                JSON,
                b"\xff\xfe{}",
                400,
                "invalid_utf8",
            ),
            (
                Api::ChatCompletions,
                Some("text/plain"),
                b"{}",
                415,
                "unsupported_media_type",
            ),
            (
                Api::ChatCompletions,
                None,
                b"{}",
                415,
                "unsupported_media_type",
            ),
            (
                Api::ChatCompletions,
                JSON,
                br#"{"messages":[{"role":"user","content":"x"}]}"#,
                400,
                "missing_model",
            ),
            (
                Api::ChatCompletions,
                JSON,
                br#"{"model":3,"messages":[]}"#,
                400,
                "invalid_model",
            ),
            (
                Api::ChatCompletions,
                JSON,
                br#"{"model":"m"}"#,
                400,
                "missing_field",
            ),
            (
                Api::ChatCompletions,
                JSON,
                br#"{"model":"m","messages":[{"role":"user"}],"stream":"yes"}"#,
                400,
                "invalid_stream",
            ),
            (
                Api::Embeddings,
                JSON,
                br#"{"model":"m","input":"x","stream":true}"#,
                400,
                "invalid_stream",
            ),
            (
                Api::Completions,
                JSON,
                br#"{"model":"m","prompt":5}"#,
                400,
                "missing_field",
            ),
        ];
        for (api, ct, body, status, code) in cases {
            let err = parse(*api, *ct, body).unwrap_err();
            assert_eq!(
                (err.status, err.code),
                (*status, *code),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn good_chat_request() {
        let body = br#"{"model":"gpt","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}"#;
        let p = parse(
            Api::ChatCompletions,
            Some("application/json; charset=utf-8"),
            body,
        )
        .unwrap();
        assert_eq!(p.model, "gpt");
        assert!(p.stream && p.client_wants_stream_usage);
    }

    #[test]
    fn paths_and_methods() {
        assert_eq!(
            Endpoint::resolve(&http::Method::POST, "/v1/chat/completions").unwrap(),
            Endpoint::Llm(Api::ChatCompletions)
        );
        assert_eq!(
            Endpoint::resolve(&http::Method::GET, "/v1/chat/completions")
                .unwrap_err()
                .status,
            405
        );
        assert_eq!(
            Endpoint::resolve(&http::Method::GET, "/nope")
                .unwrap_err()
                .status,
            404
        );
    }
}
