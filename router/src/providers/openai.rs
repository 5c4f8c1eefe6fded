//! OpenAI, and any OpenAI-compatible server (vLLM, DeepSeek, DashScope compatible mode, Cordon's
//! private inference server): same paths under the configured base URL, a bearer key.

use super::{UpstreamRequest, openai_body, to_bytes, unsupported};
use crate::api::{Api, ParsedRequest};
use crate::catalogue::Target;
use crate::config::ProviderConfig;
use crate::error::ApiError;

pub const NAME: &str = "openai";

pub fn prepare(
    provider: &ProviderConfig,
    target: &Target,
    req: &ParsedRequest,
) -> Result<UpstreamRequest, ApiError> {
    let path = match req.api {
        Api::ChatCompletions => "/chat/completions",
        Api::Completions => "/completions",
        Api::Embeddings => "/embeddings",
        Api::Messages => return Err(unsupported(&provider.name, NAME, req.api)),
    };
    let mut headers = vec![("content-type", "application/json".to_owned())];
    if let Some(key) = &provider.api_key {
        headers.push(("authorization", format!("Bearer {}", key.expose())));
    }
    Ok(UpstreamRequest {
        path: format!("{}{path}", provider.endpoint.base_path),
        headers,
        body: to_bytes(&openai_body(target, req)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn sets_model_path_and_stream_usage() {
        let config = Config::from_toml(
            r#"
            [server]
            http_listen = "127.0.0.1:1"
            [dlp]
            enabled = false
            [policy]
            enabled = false
            [providers.oa]
            type = "openai"
            base_url = "http://127.0.0.1:9/v1"
            [[models]]
            name = "pub"
            provider = "oa"
            upstream_model = "up"
            "#,
            std::path::Path::new("."),
        )
        .unwrap();
        let target = crate::catalogue::Catalogue::new(&config)
            .targets("pub")
            .remove(0);
        let req = crate::api::parse(
            Api::ChatCompletions,
            Some("application/json"),
            br#"{"model":"pub","messages":[{"role":"user","content":"hi"}],"stream":true}"#,
        )
        .unwrap();
        let up = prepare(&target.provider, &target, &req).unwrap();
        assert_eq!(up.path, "/v1/chat/completions");
        let v: serde_json::Value = serde_json::from_slice(&up.body).unwrap();
        assert_eq!(v["model"], "up");
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert!(!up.headers.iter().any(|(k, _)| *k == "authorization"));
    }
}
