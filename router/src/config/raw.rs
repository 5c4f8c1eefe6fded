//! The config file as written: every table rejects fields it does not know, so a typo is an
//! error that names the field instead of a silently ignored setting.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub data: RawData,
    #[serde(default)]
    pub database: RawDatabase,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub auth: RawAuth,
    #[serde(default)]
    pub dlp: RawDlp,
    #[serde(default)]
    pub policy: RawPolicy,
    #[serde(default)]
    pub audit: RawAudit,
    #[serde(default)]
    pub prices: BTreeMap<String, RawPrice>,
    #[serde(default)]
    pub providers: BTreeMap<String, RawProvider>,
    #[serde(default)]
    pub models: Vec<RawModel>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub http_listen: Option<String>,
    pub https_listen: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub threads: Option<usize>,
    pub grace_period_seconds: Option<u64>,
    pub graceful_shutdown_timeout_seconds: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawData {
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDatabase {
    pub url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_body_bytes: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    pub key_cache_ttl_seconds: Option<u64>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawProviderKind {
    Openai,
    AzureOpenai,
    Anthropic,
    Private,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    #[serde(rename = "type")]
    pub kind: RawProviderKind,
    pub base_url: Option<String>,
    /// `private` providers: several instances of the inference server, load-balanced.
    pub endpoints: Option<Vec<String>>,
    pub health_check: Option<RawHealthCheck>,
    pub api_key: Option<String>,
    pub api_version: Option<String>,
    pub anthropic_version: Option<String>,
    pub default_max_tokens: Option<u64>,
    pub max_retries: Option<u32>,
    pub retry_backoff_ms: Option<u64>,
    pub tls: Option<RawTls>,
    pub timeouts: Option<RawTimeouts>,
    pub on_prem: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    pub path: Option<String>,
    pub interval_ms: Option<u64>,
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub server_name: Option<String>,
    pub dangerous_skip_hostname_verification: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    pub connect_ms: Option<u64>,
    pub first_byte_ms: Option<u64>,
    pub idle_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    pub name: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    pub provider: String,
    pub upstream_model: Option<String>,
    #[serde(default)]
    pub fallbacks: Vec<String>,
    pub private_counterpart: Option<String>,
    pub policy_fail_open: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDlp {
    pub enabled: Option<bool>,
    pub rules_dir: Option<PathBuf>,
    pub packs: Option<Vec<String>>,
    pub hash_key: Option<String>,
    pub actions: Option<BTreeMap<String, String>>,
    pub restore_pseudonyms: Option<bool>,
    pub response_redact: Option<Vec<String>>,
    pub watch: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    pub enabled: Option<bool>,
    pub dir: Option<PathBuf>,
    pub shadow_dir: Option<PathBuf>,
    pub max_instructions: Option<usize>,
    pub decision_cache: Option<usize>,
    pub test_before_use: Option<bool>,
    pub watch: Option<bool>,
    pub header_allowlist: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    pub enabled: Option<bool>,
    pub database_url: Option<String>,
    pub chain_id: Option<String>,
    pub signing_key: Option<String>,
    pub checkpoint_every: Option<u64>,
    pub required: Option<bool>,
    pub queue: Option<usize>,
    pub spool_dir: Option<PathBuf>,
    pub yield_cpu: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrice {
    /// Per million input (prompt) tokens.
    pub input_per_million: f64,
    pub output_per_million: f64,
}
