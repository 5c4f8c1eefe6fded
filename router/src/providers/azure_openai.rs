//! Azure OpenAI: the upstream model is a deployment name in the path, the API version is a
//! query parameter and the key goes in an `api-key` header.

use super::{UpstreamRequest, openai_body, to_bytes, unsupported};
use crate::api::{Api, ParsedRequest};
use crate::catalogue::Target;
use crate::config::ProviderConfig;
use crate::error::ApiError;

pub const NAME: &str = "azure_openai";

pub fn prepare(
    provider: &ProviderConfig,
    api_version: &str,
    target: &Target,
    req: &ParsedRequest,
) -> Result<UpstreamRequest, ApiError> {
    let op = match req.api {
        Api::ChatCompletions => "chat/completions",
        Api::Completions => "completions",
        Api::Embeddings => "embeddings",
        Api::Messages => return Err(unsupported(&provider.name, NAME, req.api)),
    };
    let mut headers = vec![("content-type", "application/json".to_owned())];
    if let Some(key) = &provider.api_key {
        headers.push(("api-key", key.expose().to_owned()));
    }
    Ok(UpstreamRequest {
        path: format!(
            "{}/openai/deployments/{}/{op}?api-version={}",
            provider.endpoint.base_path,
            percent_encode(&target.upstream_model),
            percent_encode(api_version)
        ),
        headers,
        body: to_bytes(&openai_body(target, req)),
    })
}

/// Deployment names and versions are plain identifiers; anything else is escaped rather than
/// trusted into the path.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_path_parts() {
        assert_eq!(percent_encode("gpt-4o_prod"), "gpt-4o_prod");
        assert_eq!(percent_encode("a/b?c"), "a%2Fb%3Fc");
    }
}
