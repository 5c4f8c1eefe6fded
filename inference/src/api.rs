//! The OpenAI wire format as this server reads and writes it: request bodies parsed into typed
//! values and checked (every out-of-range or unsupported field is a 400 that names it), and the
//! JSON of responses and stream chunks.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::RequestError;
use crate::sampling::SamplingParams;

/// Parses a JSON request body, naming the field serde stumbled on.
pub fn parse_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, RequestError> {
    serde_json::from_slice(body).map_err(|e| {
        let kind = if e.is_syntax() || e.is_eof() {
            "the body is not valid JSON"
        } else {
            "the body does not match the API"
        };
        RequestError {
            status: 400,
            code: "invalid_request",
            param: None,
            message: format!("{kind}: {e}"),
        }
    })
}

/// Fields shared by chat and completion requests.
#[derive(Debug, Default, Deserialize)]
pub struct GenerationFields {
    #[serde(default)]
    pub stream: bool,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    pub max_tokens: Option<i64>,
    pub max_completion_tokens: Option<i64>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<i64>,
    pub seed: Option<i64>,
    pub repetition_penalty: Option<f32>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub stop: Option<Stop>,
    pub n: Option<i64>,
    pub ignore_eos: Option<bool>,
    pub logprobs: Option<Value>,
    pub echo: Option<bool>,
    pub best_of: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

/// What the engine needs from the shared fields, checked.
pub struct Generation {
    pub params: SamplingParams,
    pub max_tokens: Option<usize>,
    pub stop: Vec<String>,
    pub ignore_eos: bool,
    pub stream: bool,
    pub include_usage: bool,
}

impl GenerationFields {
    pub fn check(self) -> Result<Generation, RequestError> {
        let bad = |param: &'static str, message: String| RequestError::invalid(param, message);
        if let Some(n) = self.n
            && n != 1
        {
            return Err(bad(
                "n",
                format!(
                    "n = {n}: this server returns one choice per prompt; send n = 1 or leave it out"
                ),
            ));
        }
        if let Some(b) = self.best_of
            && b != 1
        {
            return Err(bad(
                "best_of",
                "best_of is not supported; leave it out".into(),
            ));
        }
        if matches!(
            self.logprobs,
            Some(Value::Bool(true)) | Some(Value::Number(_))
        ) {
            return Err(bad(
                "logprobs",
                "logprobs are not supported; leave the field out".into(),
            ));
        }
        if self.echo == Some(true) {
            return Err(bad("echo", "echo is not supported; leave it out".into()));
        }
        let temperature = self.temperature.unwrap_or(1.0);
        if !(0.0..=2.0).contains(&temperature) {
            return Err(bad(
                "temperature",
                format!("{temperature} is outside 0 to 2"),
            ));
        }
        let top_p = self.top_p.unwrap_or(1.0);
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(bad("top_p", format!("{top_p} is outside (0, 1]")));
        }
        let top_k = match self.top_k {
            None | Some(-1) | Some(0) => 0,
            Some(k) if k > 0 => k as usize,
            Some(k) => {
                return Err(bad(
                    "top_k",
                    format!("{k}: use a positive number, or -1 for no limit"),
                ));
            }
        };
        let repetition_penalty = self.repetition_penalty.unwrap_or(1.0);
        if !(repetition_penalty > 0.0 && repetition_penalty.is_finite()) {
            return Err(bad(
                "repetition_penalty",
                format!("{repetition_penalty} must be positive"),
            ));
        }
        let presence_penalty = self.presence_penalty.unwrap_or(0.0);
        if !(-2.0..=2.0).contains(&presence_penalty) {
            return Err(bad(
                "presence_penalty",
                format!("{presence_penalty} is outside -2 to 2"),
            ));
        }
        let frequency_penalty = self.frequency_penalty.unwrap_or(0.0);
        if !(-2.0..=2.0).contains(&frequency_penalty) {
            return Err(bad(
                "frequency_penalty",
                format!("{frequency_penalty} is outside -2 to 2"),
            ));
        }
        let max_tokens = match self.max_completion_tokens.or(self.max_tokens) {
            None => None,
            Some(n) if n >= 1 => Some(n as usize),
            Some(n) => return Err(bad("max_tokens", format!("{n}: ask for at least 1 token"))),
        };
        let stop = match self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s],
            Some(Stop::Many(v)) => v,
        };
        if stop.len() > 4 {
            return Err(bad(
                "stop",
                format!("{} stop sequences: at most 4", stop.len()),
            ));
        }
        Ok(Generation {
            params: SamplingParams {
                temperature,
                top_p,
                top_k,
                seed: self.seed.map(|s| s as u64),
                repetition_penalty,
                presence_penalty,
                frequency_penalty,
            },
            max_tokens,
            stop,
            ignore_eos: self.ignore_eos.unwrap_or(false),
            stream: self.stream,
            include_usage: self.stream_options.is_some_and(|o| o.include_usage),
        })
    }
}

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<Value>,
    #[serde(default)]
    pub tools: Option<Value>,
    #[serde(flatten)]
    pub generation: GenerationFields,
}

/// The messages as the chat template takes them: each an object with a `role`, and content
/// parts flattened to one string (this server's models read text only).
pub fn template_messages(messages: Vec<Value>) -> Result<Vec<Value>, RequestError> {
    if messages.is_empty() {
        return Err(RequestError::invalid(
            "messages",
            "messages is empty; send at least one message",
        ));
    }
    messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let Value::Object(mut m) = m else {
                return Err(RequestError::invalid("messages", format!("messages[{i}] is not an object")));
            };
            if !m.get("role").is_some_and(Value::is_string) {
                return Err(RequestError::invalid("messages", format!("messages[{i}].role is missing or not a string")));
            }
            let text = match m.remove("content") {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s,
                Some(Value::Array(parts)) => {
                    let mut text = String::new();
                    for (j, p) in parts.iter().enumerate() {
                        match (p.get("type").and_then(Value::as_str), p.get("text").and_then(Value::as_str)) {
                            (Some("text"), Some(t)) => text.push_str(t),
                            (kind, _) => {
                                return Err(RequestError::invalid(
                                    "messages",
                                    format!(
                                        "messages[{i}].content[{j}] is of type {}: this model reads text parts only",
                                        kind.unwrap_or("(none)")
                                    ),
                                ));
                            }
                        }
                    }
                    text
                }
                Some(_) => {
                    return Err(RequestError::invalid(
                        "messages",
                        format!("messages[{i}].content must be a string or an array of text parts"),
                    ));
                }
            };
            m.insert("content".into(), Value::String(text));
            Ok(Value::Object(m))
        })
        .collect()
}

#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    pub model: String,
    pub prompt: Prompt,
    #[serde(flatten)]
    pub generation: GenerationFields,
}

/// A prompt as text or token ids, one or several.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenLists(Vec<Vec<u32>>),
}

#[derive(Debug, Deserialize)]
pub struct EmbeddingRequest {
    pub model: String,
    pub input: EmbeddingInput,
    #[serde(default)]
    pub encoding_format: Option<String>,
    #[serde(default)]
    pub dimensions: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingInput {
    Text(String),
    Texts(Vec<String>),
}

impl EmbeddingInput {
    pub fn into_texts(self) -> Result<Vec<String>, RequestError> {
        let texts = match self {
            Self::Text(t) => vec![t],
            Self::Texts(v) => v,
        };
        if texts.is_empty() {
            return Err(RequestError::invalid("input", "input is empty"));
        }
        Ok(texts)
    }
}

pub fn usage(prompt: usize, completion: usize) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    })
}

pub fn error_body(e: &RequestError) -> Value {
    let kind = match e.status {
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        _ => "server_error",
    };
    json!({"error": {"message": e.message, "type": kind, "param": e.param, "code": e.code}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_fields_are_named() {
        let check = |body: &str| {
            parse_body::<ChatRequest>(body.as_bytes())
                .and_then(|r| r.generation.check())
                .err()
                .map(|e| e.param.unwrap_or_default().to_owned())
        };
        let base = r#""model":"m","messages":[]"#;
        assert_eq!(
            check(&format!("{{{base},\"temperature\":3}}")).as_deref(),
            Some("temperature")
        );
        assert_eq!(
            check(&format!("{{{base},\"top_p\":0}}")).as_deref(),
            Some("top_p")
        );
        assert_eq!(check(&format!("{{{base},\"n\":2}}")).as_deref(), Some("n"));
        assert_eq!(
            check(&format!("{{{base},\"max_tokens\":0}}")).as_deref(),
            Some("max_tokens")
        );
        assert_eq!(
            check(&format!(
                "{{{base},\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}}"
            ))
            .as_deref(),
            Some("stop")
        );
        assert_eq!(check(&format!("{{{base},\"seed\":5,\"top_k\":40}}")), None);
    }

    #[test]
    fn content_parts_flatten_and_images_are_refused() {
        let m = template_messages(vec![json!({"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]})]).unwrap();
        assert_eq!(m[0]["content"], "ab");
        let e = template_messages(vec![
            json!({"role":"user","content":[{"type":"image_url","image_url":{}}]}),
        ])
        .unwrap_err();
        assert!(e.message.contains("image_url"));
        assert!(template_messages(vec![]).is_err());
        assert!(template_messages(vec![json!({"content":"x"})]).is_err());
    }
}
