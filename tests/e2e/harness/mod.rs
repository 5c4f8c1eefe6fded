//! Shared parts of the end-to-end suite: certificates, the mock upstream, the gateway process.

pub mod gateway;
pub mod inference;
pub mod mock;
pub mod pki;
pub mod postgres;
pub mod toggle;
pub mod util;

pub use gateway::{Gateway, cordon};
pub use mock::MockUpstream;
pub use pki::{Pki, PkiFiles};

/// Certificates written to a temporary directory, and a mock upstream that requires them.
pub struct Fixture {
    pub files: PkiFiles,
    pub mock: MockUpstream,
    _dir: tempfile::TempDir,
}

impl Fixture {
    pub async fn start() -> Self {
        let pki = Pki::generate();
        let dir = tempfile::tempdir().unwrap();
        let files = pki.write(dir.path());
        let mock = MockUpstream::start(&pki).await;
        Self {
            files,
            mock,
            _dir: dir,
        }
    }

    /// [`standard_config`] for this fixture.
    pub fn config(&self) -> String {
        standard_config(&self.mock, &self.files)
    }
}

/// The providers and models most tests use: an OpenAI and an Anthropic provider on the mock,
/// both over mTLS with the right certificates, plus the misconfigured ones for TLS failures.
pub fn standard_config(mock: &MockUpstream, files: &PkiFiles) -> String {
    let port = mock.addr.port();
    // Nothing listens here: an on-prem provider that is down.
    let closed = gateway::free_port();
    let tls =
        |ca: &std::path::Path, cert: Option<(&std::path::Path, &std::path::Path)>, extra: &str| {
            let mut s = format!("ca_file = \"{}\"\n", ca.display());
            if let Some((c, k)) = cert {
                s += &format!(
                    "client_cert = \"{}\"\nclient_key = \"{}\"\n",
                    c.display(),
                    k.display()
                );
            }
            s + extra
        };
    let good = tls(&files.ca, Some((&files.client_cert, &files.client_key)), "");
    format!(
        r#"
[providers.openai]
type = "openai"
base_url = "https://localhost:{port}/v1"
api_key = "env:MOCK_OPENAI_KEY"
retry_backoff_ms = 10
[providers.openai.tls]
{good}
[providers.onprem]
type = "openai"
base_url = "https://localhost:{port}/v1"
api_key = "env:MOCK_OPENAI_KEY"
on_prem = true
max_retries = 0
[providers.onprem.tls]
{good}
[providers.onprem_down]
type = "openai"
base_url = "https://localhost:{closed}/v1"
on_prem = true
max_retries = 0
[providers.onprem_down.tls]
{good}
[providers.anthropic]
type = "anthropic"
base_url = "https://localhost:{port}/v1"
api_key = "env:MOCK_ANTHROPIC_KEY"
[providers.anthropic.tls]
{good}
[providers.nocert]
type = "openai"
base_url = "https://localhost:{port}/v1"
api_key = "env:MOCK_OPENAI_KEY"
max_retries = 0
[providers.nocert.tls]
{nocert}
[providers.wrongca]
type = "openai"
base_url = "https://localhost:{port}/v1"
api_key = "env:MOCK_OPENAI_KEY"
max_retries = 0
[providers.wrongca.tls]
{wrongca}
[providers.wronghost]
type = "openai"
base_url = "https://localhost:{port}/v1"
api_key = "env:MOCK_OPENAI_KEY"
max_retries = 0
[providers.wronghost.tls]
{wronghost}

[providers.wrongclient]
type = "openai"
base_url = "https://localhost:{port}/v1"
api_key = "env:MOCK_OPENAI_KEY"
max_retries = 0
[providers.wrongclient.tls]
{wrongclient}

[providers.azure]
type = "azure_openai"
base_url = "https://localhost:{port}"
api_key = "env:MOCK_OPENAI_KEY"
api_version = "2024-10-21"
[providers.azure.tls]
{good}
[providers.slowprov]
type = "openai"
base_url = "https://localhost:{port}/v1"
api_key = "env:MOCK_OPENAI_KEY"
max_retries = 0
[providers.slowprov.timeouts]
first_byte_ms = 300
[providers.slowprov.tls]
{good}

[[models]]
name = "azure-test"
provider = "azure"
upstream_model = "gpt4o-deployment"
[[models]]
name = "slow-model"
provider = "slowprov"
upstream_model = "slow"
[[models]]
name = "echo-stream"
provider = "openai"
[[models]]
name = "leak"
provider = "openai"
[[models]]
name = "claude-echo"
provider = "anthropic"
[[models]]
name = "gpt-test"
aliases = ["gpt-alias"]
provider = "openai"
upstream_model = "gpt-upstream"
private_counterpart = "private-test"
[[models]]
name = "private-test"
provider = "onprem"
upstream_model = "private-upstream"
[[models]]
name = "gpt-4o"
provider = "openai"
[[models]]
name = "gpt-private-down"
provider = "openai"
private_counterpart = "private-down"
[[models]]
name = "private-down"
provider = "onprem_down"
[[models]]
name = "gated"
provider = "openai"
upstream_model = "gated-1"
[[models]]
name = "die"
provider = "openai"
[[models]]
name = "flaky"
provider = "openai"
upstream_model = "fail-503"
fallbacks = ["claude-test"]
[[models]]
name = "claude-test"
provider = "anthropic"
upstream_model = "claude-upstream"
[[models]]
name = "nocert-model"
provider = "nocert"
[[models]]
name = "wrongca-model"
provider = "wrongca"
[[models]]
name = "wronghost-model"
provider = "wronghost"
[[models]]
name = "wrongclient-model"
provider = "wrongclient"
"#,
        nocert = tls(&files.ca, None, ""),
        wrongca = tls(
            &files.other_ca,
            Some((&files.client_cert, &files.client_key)),
            ""
        ),
        wrongclient = tls(
            &files.ca,
            Some((&files.other_client_cert, &files.other_client_key)),
            ""
        ),
        wronghost = tls(
            &files.ca,
            Some((&files.client_cert, &files.client_key)),
            "server_name = \"wrong.example\"\n"
        ),
    )
}
