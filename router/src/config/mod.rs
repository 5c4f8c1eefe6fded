//! Typed configuration, read in two stages: raw TOML structs that reject unknown fields, then
//! validated types that cannot hold an invalid state. Every error names the field it is about.

mod raw;
pub mod secret;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub use secret::{Secret, SecretRef};

/// The configuration compiled into the binary: what `cordon serve` runs with no `--config`.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../../deploy/cordon.default.toml");

/// A configuration that failed to load. Each entry names a field (`providers.openai.base_url`).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config is not valid TOML or has an unknown or mistyped field: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("{field}: {message}")]
    Field { field: String, message: String },
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    Many(Vec<ConfigError>),
}

impl ConfigError {
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Field {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub data_dir: PathBuf,
    pub database_url: String,
    pub limits: Limits,
    pub auth: AuthConfig,
    pub dlp: DlpConfig,
    /// `None` when `policy.enabled = false`: then every authenticated request is allowed on the
    /// hosted route with the `[dlp.actions]` table.
    pub policy: Option<crate::policy::PolicySettings>,
    /// `None` when `audit.enabled = false`.
    pub audit: Option<AuditConfig>,
    /// Catalogue model -> price, for the audit log's cost estimate.
    pub prices: BTreeMap<String, Price>,
    pub providers: BTreeMap<String, Arc<ProviderConfig>>,
    pub models: Vec<ModelEntry>,
}

/// The audit log's settings. The signing key is read when the gateway starts (from
/// `audit.signing_key`, or a key kept in the data directory).
#[derive(Debug, Clone)]
pub struct AuditConfig {
    pub database_url: String,
    pub chain_id: String,
    pub signing_key: Option<Secret>,
    pub checkpoint_every: u64,
    pub required: bool,
    pub queue: usize,
    pub spool_dir: PathBuf,
    /// SQLite audit writes use idle CPU time while there is some (`audit::priority`).
    pub yield_cpu: bool,
}

/// Millionths of the currency per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Price {
    pub input_micros_per_million: i64,
    pub output_micros_per_million: i64,
}

impl Price {
    /// Estimated cost in millionths of the currency.
    pub fn cost_micros(&self, tokens_in: u64, tokens_out: u64) -> i64 {
        let c = i128::from(tokens_in) * i128::from(self.input_micros_per_million)
            + i128::from(tokens_out) * i128::from(self.output_micros_per_million);
        (c / 1_000_000) as i64
    }
}

/// The VM's instruction limit per evaluation when `policy.max_instructions` is not set.
pub const DEFAULT_POLICY_MAX_INSTRUCTIONS: usize = 100_000;

/// Decisions cached per worker thread and bundle when `policy.decision_cache` is not set. An
/// entry is a key of a few hundred bytes (the JSON of what the bundle reads) and a decision of
/// about as much again, so a full cache holds a few MiB per worker thread.
pub const DEFAULT_POLICY_DECISION_CACHE: usize = 4096;

/// Request headers a policy sees when `policy.header_allowlist` is not set.
pub const DEFAULT_POLICY_HEADERS: [&str; 3] = [
    "x-cordon-classification",
    "x-cordon-department",
    "user-agent",
];

/// DLP settings, with the rule packs already compiled.
#[derive(Clone)]
pub struct DlpConfig {
    pub enabled: bool,
    /// The rule packs in force (hot-reloaded); `None` when DLP is off.
    pub rules: Option<Arc<crate::dlp::live::LiveRules>>,
    /// The default action table, until policy chooses actions per request.
    pub actions: crate::dlp::ActionTable,
    /// HMAC key for the `hash` action; when not configured, a random key kept in the data
    /// directory (`dlp-hash.key`), so hashes stay stable across restarts.
    pub hash_key: Option<Secret>,
    pub restore_pseudonyms: bool,
}

impl std::fmt::Debug for DlpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DlpConfig")
            .field("enabled", &self.enabled)
            .field(
                "rules",
                &self
                    .rules
                    .as_ref()
                    .map(|r| r.current().scanner.rules().len()),
            )
            .field("actions", &self.actions)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub http_listen: Option<String>,
    pub https: Option<HttpsListener>,
    pub threads: usize,
    pub grace_period_seconds: u64,
    pub graceful_shutdown_timeout_seconds: u64,
}

#[derive(Debug, Clone)]
pub struct HttpsListener {
    pub listen: String,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body_bytes: usize,
}

#[derive(Debug, Clone, Copy)]
pub struct AuthConfig {
    /// How long a looked-up API key is trusted before the store is asked again; revocation
    /// takes effect within this time.
    pub key_cache_ttl: Duration,
}

/// Which wire protocol a provider speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderKind {
    /// OpenAI or any OpenAI-compatible server (vLLM, DeepSeek, DashScope compatible mode).
    OpenAi,
    /// Azure OpenAI: the upstream model is a deployment name.
    AzureOpenAi { api_version: String },
    /// Anthropic's Messages API.
    Anthropic {
        version: String,
        default_max_tokens: u64,
    },
    /// Cordon's private inference server (`cordon-inference`): the OpenAI API, on-prem, one or
    /// more instances load-balanced round robin and health-checked.
    Private,
}

/// One upstream provider, validated and with its secrets and TLS material loaded.
#[derive(Debug)]
pub struct ProviderConfig {
    pub name: String,
    pub kind: ProviderKind,
    /// The first (for most providers, the only) endpoint; its scheme and base path are every
    /// endpoint's.
    pub endpoint: Endpoint,
    /// Every instance of a `private` provider, `endpoint` first; empty for the others.
    pub backends: Vec<Endpoint>,
    pub health_check: HealthCheck,
    pub api_key: Option<Secret>,
    pub tls: UpstreamTls,
    pub timeouts: Timeouts,
    pub retry: RetryPolicy,
    /// Runs inside the organisation (the private inference server): the only kind of provider
    /// a request on the private route may reach.
    pub on_prem: bool,
}

/// Where a provider listens: `https://host:port/base/path`.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path prefix without a trailing slash, e.g. `/v1` or empty.
    pub base_path: String,
}

/// Active health checks of a `private` provider's instances: `GET path` must answer 200.
#[derive(Debug, Clone)]
pub struct HealthCheck {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
}

impl Default for HealthCheck {
    fn default() -> Self {
        Self {
            path: "/healthz".into(),
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
        }
    }
}

/// Trust settings for one upstream. Certificates are DER.
#[derive(Clone, Default)]
pub struct UpstreamTls {
    pub ca: Option<Vec<Vec<u8>>>,
    pub client_cert_chain: Option<Vec<Vec<u8>>>,
    pub client_key: Option<Vec<u8>>,
    /// Server name sent as SNI and verified; defaults to the endpoint's host.
    pub server_name: String,
    pub verify_hostname: bool,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("custom_ca", &self.ca.as_ref().map(Vec::len))
            .field("client_cert", &self.client_cert_chain.is_some())
            .field("server_name", &self.server_name)
            .field("verify_hostname", &self.verify_hostname)
            .finish()
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub first_byte: Duration,
    pub idle: Duration,
}

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts after the first one, on the same provider.
    pub max_retries: u32,
    pub backoff: Duration,
}

/// A public model name (and aliases) served by one provider's upstream model.
#[derive(Debug, Clone)]
pub struct ModelEntry {
    pub name: String,
    pub aliases: Vec<String>,
    pub provider: String,
    pub upstream_model: String,
    /// Other catalogue names tried in order when this one fails before any byte reached the
    /// client.
    pub fallbacks: Vec<String>,
    /// The on-prem model that serves this model's requests when policy routes them privately.
    pub private_counterpart: Option<String>,
    /// When the policy cannot decide (`policy_error`), serve the request anyway (hosted route,
    /// `[dlp.actions]`), counted and marked with `x-cordon-policy: fail-open`. Off by default.
    pub policy_fail_open: bool,
}

impl Config {
    /// Reads and validates a config file. Relative paths inside it are resolved against the
    /// file's directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_toml(&text, base)
    }

    /// The embedded default, with paths relative to the working directory.
    pub fn embedded_default() -> Result<Self, ConfigError> {
        Self::from_toml(EMBEDDED_DEFAULT, Path::new("."))
    }

    pub fn from_toml(text: &str, base_dir: &Path) -> Result<Self, ConfigError> {
        let raw: raw::RawConfig = toml::from_str(text)?;
        Validator {
            base_dir,
            errors: Vec::new(),
        }
        .validate(raw)
    }
}

/// Only the store settings of a config file (or of the embedded default), for the commands that
/// manage keys: they need the database, not the providers' secrets or certificates.
pub fn database_url(path: Option<&Path>) -> Result<String, ConfigError> {
    let (raw, base) = read_raw(path)?;
    let mut v = Validator {
        base_dir: &base,
        errors: Vec::new(),
    };
    let (_, url) = v.store(raw.data, raw.database);
    match v.errors.pop() {
        Some(e) => Err(e),
        None => Ok(url),
    }
}

/// The raw tables of a config file, or of the embedded default, and the directory relative
/// paths resolve against.
fn read_raw(path: Option<&Path>) -> Result<(raw::RawConfig, PathBuf), ConfigError> {
    let (text, base) = match path {
        Some(p) => (
            std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.to_owned(),
                source,
            })?,
            p.parent().unwrap_or(Path::new(".")).to_owned(),
        ),
        None => (EMBEDDED_DEFAULT.to_owned(), PathBuf::from(".")),
    };
    Ok((toml::from_str(&text)?, base))
}

/// Only the audit settings (and the data directory) of a config file or the embedded default,
/// for `cordon audit`: auditors need the store and the key, not the providers' secrets.
pub fn audit_settings(path: Option<&Path>) -> Result<(AuditConfig, PathBuf), ConfigError> {
    let (raw, base) = read_raw(path)?;
    let mut v = Validator {
        base_dir: &base,
        errors: Vec::new(),
    };
    let (data_dir, url) = v.store(raw.data, raw.database);
    let mut audit = raw.audit;
    audit.enabled = Some(true);
    let a = v.audit(audit, &data_dir, &url);
    match (v.errors.pop(), a) {
        (Some(e), _) => Err(e),
        (None, Some(a)) => Ok((a, data_dir)),
        (None, None) => Err(ConfigError::field("audit", "no audit settings")),
    }
}

/// Collects every problem in one pass so that `cordon check` reports them all at once.
struct Validator<'a> {
    base_dir: &'a Path,
    errors: Vec<ConfigError>,
}

impl Validator<'_> {
    fn validate(mut self, raw: raw::RawConfig) -> Result<Config, ConfigError> {
        let server = self.server(raw.server);
        let (data_dir, database_url) = self.store(raw.data, raw.database);
        let limits = Limits {
            max_body_bytes: raw.limits.max_body_bytes.unwrap_or(4 * 1024 * 1024),
        };
        if limits.max_body_bytes == 0 {
            self.err("limits.max_body_bytes", "must be greater than 0");
        }
        let auth = AuthConfig {
            key_cache_ttl: Duration::from_secs(raw.auth.key_cache_ttl_seconds.unwrap_or(5)),
        };
        let dlp = self.dlp(raw.dlp);
        let policy = self.policy(raw.policy);
        let audit = self.audit(raw.audit, &data_dir, &database_url);
        let mut prices = BTreeMap::new();
        for (model, p) in raw.prices {
            let ok = |v: f64| v.is_finite() && v >= 0.0;
            if !ok(p.input_per_million) || !ok(p.output_per_million) {
                self.err(
                    format!("prices.{model}"),
                    "prices must be non-negative numbers",
                );
                continue;
            }
            prices.insert(
                model,
                Price {
                    input_micros_per_million: (p.input_per_million * 1e6).round() as i64,
                    output_micros_per_million: (p.output_per_million * 1e6).round() as i64,
                },
            );
        }
        let declared: HashSet<String> = raw.providers.keys().cloned().collect();
        let providers = raw
            .providers
            .into_iter()
            .filter_map(|(name, p)| {
                let p = self.provider(&name, p)?;
                Some((name, Arc::new(p)))
            })
            .collect::<BTreeMap<_, _>>();
        let models = self.models(raw.models, &declared);
        for (i, m) in models.iter().enumerate() {
            let Some(cp) = &m.private_counterpart else {
                continue;
            };
            let target = models
                .iter()
                .find(|e| &e.name == cp || e.aliases.contains(cp));
            match target {
                None => self.err(
                    format!("models[{i}].private_counterpart"),
                    format!("`{cp}` is not a model name or alias in the catalogue"),
                ),
                Some(t) if !providers.get(&t.provider).is_some_and(|p| p.on_prem) => self.err(
                    format!("models[{i}].private_counterpart"),
                    format!(
                        "`{cp}` is served by provider `{}`, which is not on_prem = true",
                        t.provider
                    ),
                ),
                Some(_) => {}
            }
        }

        match self.errors.len() {
            0 => Ok(Config {
                server,
                data_dir,
                database_url,
                limits,
                auth,
                dlp,
                policy,
                audit,
                prices,
                providers,
                models,
            }),
            1 => Err(self.errors.remove(0)),
            _ => Err(ConfigError::Many(self.errors)),
        }
    }

    fn store(&mut self, data: raw::RawData, database: raw::RawDatabase) -> (PathBuf, String) {
        let data_dir = self.path(data.dir.as_deref().unwrap_or(Path::new("data")));
        let url = match database.url {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => url,
            Some(url) if url.starts_with("sqlite:") => url,
            Some(_) => {
                self.err(
                    "database.url",
                    "must start with postgres://, postgresql:// or sqlite:",
                );
                String::new()
            }
            None => format!("sqlite://{}?mode=rwc", data_dir.join("cordon.db").display()),
        };
        (data_dir, url)
    }

    fn audit(
        &mut self,
        raw: raw::RawAudit,
        data_dir: &Path,
        database_url: &str,
    ) -> Option<AuditConfig> {
        if !raw.enabled.unwrap_or(true) {
            return None;
        }
        let url = match raw.database_url {
            Some(u)
                if u.starts_with("postgres://")
                    || u.starts_with("postgresql://")
                    || u.starts_with("sqlite:") =>
            {
                u
            }
            Some(_) => {
                self.err(
                    "audit.database_url",
                    "must start with postgres://, postgresql:// or sqlite:",
                );
                String::new()
            }
            None => database_url.to_owned(),
        };
        let signing_key = raw.signing_key.as_deref().and_then(|s| {
            SecretRef::parse("audit.signing_key", s)
                .and_then(|r| r.resolve("audit.signing_key"))
                .map_err(|e| self.errors.push(e))
                .ok()
        });
        if let Some(k) = &signing_key
            && crate::audit::signing_key_from_hex(k.expose()).is_err()
        {
            self.err(
                "audit.signing_key",
                "must hold 64 hex characters (a 32-byte Ed25519 seed); `openssl rand -hex 32` makes one",
            );
        }
        let chain_id = raw.chain_id.unwrap_or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "cordon".to_owned())
        });
        if chain_id.is_empty() || chain_id.len() > 128 {
            self.err("audit.chain_id", "must be 1 to 128 characters");
        }
        let checkpoint_every = raw.checkpoint_every.unwrap_or(1000);
        if checkpoint_every == 0 {
            self.err("audit.checkpoint_every", "must be greater than 0");
        }
        Some(AuditConfig {
            database_url: url,
            chain_id,
            signing_key,
            checkpoint_every,
            required: raw.required.unwrap_or(false),
            queue: raw.queue.unwrap_or(16_384).max(1),
            yield_cpu: raw.yield_cpu.unwrap_or(true),
            spool_dir: raw
                .spool_dir
                .map(|d| self.path(&d))
                .unwrap_or_else(|| data_dir.to_owned()),
        })
    }

    fn policy(&mut self, raw: raw::RawPolicy) -> Option<crate::policy::PolicySettings> {
        if !raw.enabled.unwrap_or(true) {
            return None;
        }
        let dir = self.path(raw.dir.as_deref().unwrap_or(Path::new("policies")));
        if !dir.is_dir() {
            self.err(
                "policy.dir",
                format!(
                    "{} is not a directory; point it at a Rego bundle (such as the bundled policies/)",
                    dir.display()
                ),
            );
        }
        let shadow_dir = raw.shadow_dir.map(|d| self.path(&d));
        if let Some(d) = &shadow_dir
            && !d.is_dir()
        {
            self.err(
                "policy.shadow_dir",
                format!("{} is not a directory", d.display()),
            );
        }
        let max_instructions = raw
            .max_instructions
            .unwrap_or(DEFAULT_POLICY_MAX_INSTRUCTIONS);
        if max_instructions == 0 {
            self.err("policy.max_instructions", "must be greater than 0");
        }
        let header_allowlist = raw
            .header_allowlist
            .unwrap_or_else(|| DEFAULT_POLICY_HEADERS.map(str::to_owned).to_vec())
            .into_iter()
            .map(|h| h.to_ascii_lowercase())
            .collect::<Vec<_>>();
        for h in &header_allowlist {
            if matches!(
                h.as_str(),
                "authorization" | "x-api-key" | "cookie" | "proxy-authorization" | "api-key"
            ) {
                self.err(
                    "policy.header_allowlist",
                    format!("`{h}` carries credentials and may not be shown to policies"),
                );
            }
        }
        Some(crate::policy::PolicySettings {
            dir,
            shadow_dir,
            max_instructions,
            decision_cache: raw.decision_cache.unwrap_or(DEFAULT_POLICY_DECISION_CACHE),
            test_before_use: raw.test_before_use.unwrap_or(true),
            watch: raw.watch.unwrap_or(true),
            header_allowlist,
        })
    }

    fn dlp(&mut self, raw: raw::RawDlp) -> DlpConfig {
        use crate::dlp::{Action, ActionTable};
        let enabled = raw.enabled.unwrap_or(true);
        let mut actions = ActionTable::new(Action::Pseudonymise)
            .with("SECRET_*", Action::Block)
            .with("URL_CREDENTIALS", Action::Block)
            .with("IP_ADDRESS", Action::Allow)
            .with("MAC_ADDRESS", Action::Allow);
        if let Some(table) = raw.actions {
            actions = ActionTable::new(Action::Allow);
            for (entity, action) in table {
                match action.parse::<Action>() {
                    Ok(a) if entity == "default" => actions.default = a,
                    Ok(a) => actions = actions.with(&entity, a),
                    Err(e) => self.err(format!("dlp.actions.{entity}"), e),
                }
            }
        }
        let hash_key = raw.hash_key.as_deref().and_then(|s| {
            SecretRef::parse("dlp.hash_key", s)
                .and_then(|r| r.resolve("dlp.hash_key"))
                .map_err(|e| self.errors.push(e))
                .ok()
        });
        let redact: Arc<[String]> = raw
            .response_redact
            .unwrap_or_else(|| vec!["SECRET_*".into()])
            .into();
        let rules = if enabled {
            let dir = self.path(raw.rules_dir.as_deref().unwrap_or(Path::new("dlp-rules")));
            let settings = crate::dlp::live::RuleSettings {
                dir,
                packs: raw.packs,
                redact,
                watch: raw.watch.unwrap_or(true),
            };
            match crate::dlp::live::LiveRules::load(settings) {
                Ok(r) => Some(Arc::new(r)),
                Err(e) => {
                    self.err("dlp.rules_dir", e.to_string());
                    None
                }
            }
        } else {
            None
        };
        DlpConfig {
            enabled,
            rules,
            actions,
            hash_key,
            restore_pseudonyms: raw.restore_pseudonyms.unwrap_or(true),
        }
    }

    fn err(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError::field(field, message));
    }

    fn path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_owned()
        } else {
            self.base_dir.join(p)
        }
    }

    fn server(&mut self, raw: raw::RawServer) -> ServerConfig {
        let https = match (raw.https_listen, raw.tls_cert, raw.tls_key) {
            (None, None, None) => None,
            (Some(listen), Some(cert), Some(key)) => {
                let cert_path = self.path(&cert);
                let key_path = self.path(&key);
                for (field, p) in [
                    ("server.tls_cert", &cert_path),
                    ("server.tls_key", &key_path),
                ] {
                    if !p.is_file() {
                        self.err(field, format!("{} does not exist", p.display()));
                    }
                }
                Some(HttpsListener {
                    listen,
                    cert_path,
                    key_path,
                })
            }
            _ => {
                self.err(
                    "server.https_listen",
                    "https_listen, tls_cert and tls_key must be set together",
                );
                None
            }
        };
        for (field, addr) in [
            ("server.http_listen", raw.http_listen.as_ref()),
            ("server.https_listen", https.as_ref().map(|h| &h.listen)),
        ] {
            if let Some(addr) = addr
                && addr.parse::<std::net::SocketAddr>().is_err()
            {
                self.err(
                    field,
                    format!("`{addr}` is not an address like 127.0.0.1:8080"),
                );
            }
        }
        if raw.http_listen.is_none() && https.is_none() {
            self.err(
                "server.http_listen",
                "at least one listener (http_listen or https_listen) is required",
            );
        }
        let threads = raw.threads.unwrap_or(2);
        if threads == 0 {
            self.err("server.threads", "must be at least 1");
        }
        ServerConfig {
            http_listen: raw.http_listen,
            https,
            threads,
            grace_period_seconds: raw.grace_period_seconds.unwrap_or(5),
            graceful_shutdown_timeout_seconds: raw.graceful_shutdown_timeout_seconds.unwrap_or(5),
        }
    }

    fn provider(&mut self, name: &str, raw: raw::RawProvider) -> Option<ProviderConfig> {
        let f = |k: &str| format!("providers.{name}.{k}");
        let before = self.errors.len();
        let kind = match raw.kind {
            raw::RawProviderKind::Openai => ProviderKind::OpenAi,
            raw::RawProviderKind::AzureOpenai => match raw.api_version.clone() {
                Some(api_version) => ProviderKind::AzureOpenAi { api_version },
                None => {
                    self.err(
                        f("api_version"),
                        "azure_openai needs api_version, e.g. \"2024-10-21\"",
                    );
                    return None;
                }
            },
            raw::RawProviderKind::Anthropic => ProviderKind::Anthropic {
                version: raw
                    .anthropic_version
                    .clone()
                    .unwrap_or_else(|| "2023-06-01".into()),
                default_max_tokens: raw.default_max_tokens.unwrap_or(4096),
            },
            raw::RawProviderKind::Private => ProviderKind::Private,
        };
        let private = kind == ProviderKind::Private;
        if private && raw.on_prem == Some(false) {
            self.err(
                f("on_prem"),
                "a private provider is on-prem by definition; remove on_prem = false",
            );
        }
        if !private && (raw.endpoints.is_some() || raw.health_check.is_some()) {
            self.err(
                f("endpoints"),
                "only private providers take endpoints and health_check; use base_url",
            );
        }
        if raw.api_version.is_some() && !matches!(kind, ProviderKind::AzureOpenAi { .. }) {
            self.err(
                f("api_version"),
                "only azure_openai providers take api_version",
            );
        }
        if (raw.anthropic_version.is_some() || raw.default_max_tokens.is_some())
            && !matches!(kind, ProviderKind::Anthropic { .. })
        {
            self.err(
                f("anthropic_version"),
                "only anthropic providers take anthropic_version and default_max_tokens",
            );
        }
        let urls: Vec<(String, &str)> = match (&raw.base_url, &raw.endpoints) {
            (Some(u), None) => vec![(f("base_url"), u.as_str())],
            (None, Some(list)) if private && !list.is_empty() => list
                .iter()
                .enumerate()
                .map(|(i, u)| (f(&format!("endpoints[{i}]")), u.as_str()))
                .collect(),
            (Some(_), Some(_)) => {
                self.err(f("endpoints"), "give base_url or endpoints, not both");
                vec![]
            }
            _ => {
                self.err(
                    f("base_url"),
                    if private {
                        "a private provider needs base_url or endpoints (a list of URLs such as \"http://10.0.0.5:9000/v1\")"
                    } else {
                        "is missing; set the provider's URL, e.g. \"https://api.openai.com/v1\""
                    },
                );
                vec![]
            }
        };
        let mut backends = Vec::new();
        for (field, url) in urls {
            match parse_endpoint(url) {
                Ok(e) => match backends.first() {
                    Some(first) if !same_scheme_and_path(first, &e) => self.err(
                        field,
                        "every endpoint of a provider must have the same scheme and path",
                    ),
                    _ => backends.push(e),
                },
                Err(msg) => self.err(field, msg),
            }
        }
        let endpoint = backends.first().cloned();
        if !private {
            backends.clear();
        }
        let health_check = self.health_check(&f, raw.health_check.unwrap_or_default());
        let api_key = raw.api_key.as_deref().and_then(|s| {
            SecretRef::parse(&f("api_key"), s)
                .and_then(|r| r.resolve(&f("api_key")))
                .map_err(|e| self.errors.push(e))
                .ok()
        });
        let tls = self.upstream_tls(&f, raw.tls.unwrap_or_default(), endpoint.as_ref());
        let t = raw.timeouts.unwrap_or_default();
        let timeouts = Timeouts {
            connect: Duration::from_millis(t.connect_ms.unwrap_or(5_000)),
            first_byte: Duration::from_millis(t.first_byte_ms.unwrap_or(120_000)),
            idle: Duration::from_millis(t.idle_ms.unwrap_or(60_000)),
        };
        let retry = RetryPolicy {
            max_retries: raw.max_retries.unwrap_or(2),
            backoff: Duration::from_millis(raw.retry_backoff_ms.unwrap_or(200)),
        };
        if self.errors.len() > before {
            return None;
        }
        Some(ProviderConfig {
            name: name.to_owned(),
            kind,
            endpoint: endpoint?,
            backends,
            health_check,
            api_key,
            tls,
            timeouts,
            retry,
            on_prem: private || raw.on_prem.unwrap_or(false),
        })
    }

    fn health_check(
        &mut self,
        f: &dyn Fn(&str) -> String,
        raw: raw::RawHealthCheck,
    ) -> HealthCheck {
        let default = HealthCheck::default();
        let path = raw.path.unwrap_or(default.path);
        if !path.starts_with('/') {
            self.err(
                f("health_check.path"),
                format!("`{path}` must start with /"),
            );
        }
        let ms = |v: Option<u64>, d: Duration| v.map(Duration::from_millis).unwrap_or(d);
        let check = HealthCheck {
            path,
            interval: ms(raw.interval_ms, default.interval),
            timeout: ms(raw.timeout_ms, default.timeout),
        };
        if check.interval.is_zero() || check.timeout.is_zero() {
            self.err(
                f("health_check"),
                "interval_ms and timeout_ms must be positive",
            );
        }
        check
    }

    fn upstream_tls(
        &mut self,
        f: &dyn Fn(&str) -> String,
        raw: raw::RawTls,
        endpoint: Option<&Endpoint>,
    ) -> UpstreamTls {
        let mut tls = UpstreamTls {
            server_name: raw
                .server_name
                .or_else(|| endpoint.map(|e| e.host.clone()))
                .unwrap_or_default(),
            verify_hostname: !raw.dangerous_skip_hostname_verification.unwrap_or(false),
            ..Default::default()
        };
        if let Some(ca) = raw.ca_file {
            let path = self.path(&ca);
            match CertificateDer::pem_file_iter(&path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            {
                Ok(certs) if !certs.is_empty() => {
                    tls.ca = Some(certs.into_iter().map(|c| c.to_vec()).collect())
                }
                Ok(_) => self.err(
                    f("tls.ca_file"),
                    format!("{} holds no certificate", path.display()),
                ),
                Err(e) => self.err(f("tls.ca_file"), format!("{}: {e}", path.display())),
            }
        }
        match (raw.client_cert, raw.client_key) {
            (None, None) => {}
            (Some(cert), Some(key)) => {
                let cert = self.path(&cert);
                let key = self.path(&key);
                match CertificateDer::pem_file_iter(&cert)
                    .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                {
                    Ok(chain) if !chain.is_empty() => {
                        tls.client_cert_chain =
                            Some(chain.into_iter().map(|c| c.to_vec()).collect())
                    }
                    Ok(_) => self.err(
                        f("tls.client_cert"),
                        format!("{} holds no certificate", cert.display()),
                    ),
                    Err(e) => self.err(f("tls.client_cert"), format!("{}: {e}", cert.display())),
                }
                match PrivateKeyDer::from_pem_file(&key) {
                    Ok(k) => tls.client_key = Some(k.secret_der().to_vec()),
                    Err(e) => self.err(f("tls.client_key"), format!("{}: {e}", key.display())),
                }
            }
            _ => self.err(
                f("tls.client_cert"),
                "client_cert and client_key must be set together",
            ),
        }
        if endpoint.is_some_and(|e| !e.tls) && (tls.ca.is_some() || tls.client_cert_chain.is_some())
        {
            self.err(
                f("tls"),
                "TLS settings are given but base_url is not https://",
            );
        }
        tls
    }

    fn models(&mut self, raw: Vec<raw::RawModel>, providers: &HashSet<String>) -> Vec<ModelEntry> {
        let mut seen = HashSet::new();
        let mut out = Vec::with_capacity(raw.len());
        for (i, m) in raw.into_iter().enumerate() {
            let f = |k: &str| format!("models[{i}].{k}");
            for name in std::iter::once(&m.name).chain(&m.aliases) {
                if name.is_empty() {
                    self.err(f("name"), "model names and aliases must not be empty");
                } else if !seen.insert(name.clone()) {
                    self.err(
                        f("name"),
                        format!("`{name}` is defined twice in the catalogue"),
                    );
                }
            }
            if !providers.contains(&m.provider) {
                self.err(
                    f("provider"),
                    format!("no provider named `{}` in [providers]", m.provider),
                );
            }
            out.push(ModelEntry {
                upstream_model: m.upstream_model.unwrap_or_else(|| m.name.clone()),
                name: m.name,
                aliases: m.aliases,
                provider: m.provider,
                fallbacks: m.fallbacks,
                private_counterpart: m.private_counterpart,
                policy_fail_open: m.policy_fail_open.unwrap_or(false),
            });
        }
        for (i, m) in out.iter().enumerate() {
            for fb in &m.fallbacks {
                if !seen.contains(fb) {
                    self.err(
                        format!("models[{i}].fallbacks"),
                        format!("`{fb}` is not a model name or alias in the catalogue"),
                    );
                } else if fb == &m.name || m.aliases.contains(fb) {
                    self.err(
                        format!("models[{i}].fallbacks"),
                        format!("`{fb}` is the model itself"),
                    );
                }
            }
        }
        out
    }
}

fn same_scheme_and_path(a: &Endpoint, b: &Endpoint) -> bool {
    a.tls == b.tls && a.base_path == b.base_path
}

fn parse_endpoint(raw: &str) -> Result<Endpoint, String> {
    let uri: http::Uri = raw
        .parse()
        .map_err(|e| format!("`{raw}` is not a URL: {e}"))?;
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(format!("`{raw}` must start with https:// or http://")),
    };
    let host = uri
        .host()
        .ok_or_else(|| format!("`{raw}` has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    if uri.query().is_some() {
        return Err(format!("`{raw}` must not have a query string"));
    }
    Ok(Endpoint {
        tls,
        port: uri.port_u16().unwrap_or(if tls { 443 } else { 80 }),
        host,
        base_path: uri.path().trim_end_matches('/').to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Relative paths (dlp-rules/, policies/) resolve against the repo root.
    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/..")))
    }

    #[test]
    fn embedded_default_is_valid() {
        // The embedded default resolves dlp-rules/ against the working directory: the repo root.
        let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
        let c = Config::from_toml(EMBEDDED_DEFAULT, root).unwrap();
        assert!(c.dlp.rules.is_some());
        assert!(c.server.http_listen.is_some());
        assert!(c.database_url.starts_with("sqlite://"));
    }

    #[test]
    fn audit_yield_cpu_is_on_unless_turned_off() {
        let c = load("[server]\nhttp_listen = \"127.0.0.1:1\"\n").unwrap();
        assert!(c.audit.unwrap().yield_cpu);
        let c =
            load("[server]\nhttp_listen = \"127.0.0.1:1\"\n[audit]\nyield_cpu = false\n").unwrap();
        assert!(!c.audit.unwrap().yield_cpu);
    }

    #[test]
    fn unknown_field_is_named() {
        let err = load("[server]\nhttp_lisen = \"127.0.0.1:1\"\n").unwrap_err();
        assert!(err.to_string().contains("http_lisen"), "{err}");
    }

    #[test]
    fn errors_name_their_fields() {
        let text = r#"
            [server]
            http_listen = "nonsense"
            [providers.oa]
            type = "openai"
            base_url = "ftp://x"
            api_key = "sk-literal"
            [[models]]
            name = "m"
            provider = "missing"
            fallbacks = ["nowhere"]
        "#;
        let err = load(text).unwrap_err().to_string();
        for field in [
            "server.http_listen",
            "providers.oa.base_url",
            "providers.oa.api_key",
            "models[0].provider",
            "models[0].fallbacks",
        ] {
            assert!(err.contains(field), "{field} missing from: {err}");
        }
    }

    #[test]
    fn duplicate_model_names_are_refused() {
        let text = r#"
            [server]
            http_listen = "127.0.0.1:1"
            [providers.oa]
            type = "openai"
            base_url = "http://127.0.0.1:9/v1"
            [[models]]
            name = "a"
            provider = "oa"
            [[models]]
            name = "b"
            aliases = ["a"]
            provider = "oa"
        "#;
        assert!(
            load(text)
                .unwrap_err()
                .to_string()
                .contains("models[1].name")
        );
    }

    #[test]
    fn private_providers_take_endpoints_and_are_on_prem() {
        let ok = load(
            r#"
            [server]
            http_listen = "127.0.0.1:1"
            [providers.local]
            type = "private"
            endpoints = ["http://127.0.0.1:9000/v1", "http://127.0.0.2:9000/v1"]
            [providers.local.health_check]
            interval_ms = 500
            [[models]]
            name = "m"
            provider = "local"
            "#,
        )
        .unwrap();
        let p = &ok.providers["local"];
        assert!(p.on_prem);
        assert_eq!(p.backends.len(), 2);
        assert_eq!(p.endpoint.base_path, "/v1");
        assert_eq!(p.health_check.path, "/healthz");
        assert_eq!(p.health_check.interval, Duration::from_millis(500));
        let bad = |provider: &str, field: &str| {
            let text = format!(
                "[server]\nhttp_listen = \"127.0.0.1:1\"\n[providers.p]\n{provider}\n[[models]]\nname = \"m\"\nprovider = \"p\"\n"
            );
            let err = load(&text).unwrap_err().to_string();
            assert!(err.contains(field), "{field} missing from: {err}");
        };
        bad(
            "type = \"private\"\nendpoints = [\"http://a:1/v1\", \"http://b:1/other\"]",
            "providers.p.endpoints[1]",
        );
        bad(
            "type = \"private\"\nbase_url = \"http://a:1/v1\"\non_prem = false",
            "providers.p.on_prem",
        );
        bad("type = \"private\"", "providers.p.base_url");
        bad(
            "type = \"openai\"\nendpoints = [\"http://a:1/v1\"]",
            "providers.p.endpoints",
        );
        bad(
            "type = \"private\"\nbase_url = \"http://a:1/v1\"\n[providers.p.health_check]\npath = \"healthz\"",
            "providers.p.health_check.path",
        );
    }

    #[test]
    fn azure_needs_api_version() {
        let text = r#"
            [server]
            http_listen = "127.0.0.1:1"
            [providers.az]
            type = "azure_openai"
            base_url = "https://x.openai.azure.com"
        "#;
        assert!(
            load(text)
                .unwrap_err()
                .to_string()
                .contains("providers.az.api_version")
        );
    }

    #[test]
    fn endpoint_parsing() {
        let e = parse_endpoint("https://api.example.com/v1/").unwrap();
        assert_eq!((e.tls, e.port, e.base_path.as_str()), (true, 443, "/v1"));
        let e = parse_endpoint("http://[::1]:8000").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.base_path.as_str()),
            ("::1", 8000, "")
        );
    }
}
