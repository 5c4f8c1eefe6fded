//! The errors a client sees: a status, an OpenAI-style `type` and `code`, and a message that says
//! what was wrong and how to fix it. Rendered in OpenAI's shape, or Anthropic's on `/v1/messages`.

use bytes::Bytes;
use serde_json::json;

/// Which API's error shape the client expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorShape {
    OpenAi,
    Anthropic,
}

/// An error answered to the client. Messages never contain credentials or prompt text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub kind: &'static str,
    pub code: &'static str,
    pub message: String,
    /// The policy's reasons for a denial: (code, message).
    pub reasons: Vec<(String, String)>,
}

impl ApiError {
    pub fn new(
        status: u16,
        kind: &'static str,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            kind,
            code,
            message: message.into(),
            reasons: Vec::new(),
        }
    }

    pub fn with_reasons(mut self, reasons: Vec<(String, String)>) -> Self {
        self.reasons = reasons;
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(400, "invalid_request_error", code, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(401, "authentication_error", "invalid_api_key", message)
    }

    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(403, "permission_error", code, message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(404, "not_found_error", code, message)
    }

    pub fn upstream(status: u16, provider: &str, message: impl std::fmt::Display) -> Self {
        let code = if status == 504 {
            "upstream_timeout"
        } else {
            "upstream_error"
        };
        Self::new(
            status,
            "upstream_error",
            code,
            format!("provider `{provider}`: {message}"),
        )
    }

    /// The key store cannot be reached: authentication fails closed.
    pub fn auth_unavailable() -> Self {
        Self::new(
            503,
            "api_error",
            "auth_unavailable",
            "the key store is unavailable; try again shortly",
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "api_error", "internal_error", message)
    }

    /// The JSON body in the requested shape.
    pub fn body(&self, shape: ErrorShape) -> Bytes {
        let mut value = match shape {
            ErrorShape::OpenAi => json!({
                "error": {
                    "message": self.message,
                    "type": self.kind,
                    "param": null,
                    "code": self.code,
                }
            }),
            ErrorShape::Anthropic => json!({
                "type": "error",
                "error": { "type": self.anthropic_type(), "message": self.message },
            }),
        };
        if !self.reasons.is_empty() {
            value["error"]["reasons"] = self
                .reasons
                .iter()
                .map(|(code, message)| json!({"code": code, "message": message}))
                .collect();
        }
        Bytes::from(value.to_string())
    }

    fn anthropic_type(&self) -> &'static str {
        match self.status {
            400 | 405 | 415 | 422 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            503 | 529 => "overloaded_error",
            _ => "api_error",
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_shape() {
        let e = ApiError::bad_request("invalid_json", "body is not JSON");
        let v: serde_json::Value = serde_json::from_slice(&e.body(ErrorShape::OpenAi)).unwrap();
        assert_eq!(v["error"]["code"], "invalid_json");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["message"], "body is not JSON");
    }

    #[test]
    fn anthropic_shape() {
        let e = ApiError::unauthorized("no key");
        let v: serde_json::Value = serde_json::from_slice(&e.body(ErrorShape::Anthropic)).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "authentication_error");
    }
}
