//! Upstream transport on Pingora's connector: one pooled peer per provider, with its own trust
//! settings (CA bundle, client certificate, SNI and hostname verification) and its own pool
//! group, so one provider's trust never leaks into another's pooled connections.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use pingora::connectors::http::Connector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::client::HttpSession;
use pingora::upstreams::peer::HttpPeer;
use pingora::utils::tls::CertKey;
use pingora::utils::tls::WrappedX509;
use pingora::{Error as PError, ErrorType};

use crate::config::ProviderConfig;
use crate::providers::UpstreamRequest;

/// Why one attempt failed.
#[derive(Debug)]
pub struct AttemptError {
    pub kind: AttemptErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptErrorKind {
    /// TCP or TLS setup failed, or the connection broke before a response header.
    Connect,
    /// TLS verification failed: a configuration problem that a retry cannot fix.
    Tls,
    /// No response header within the first-byte timeout.
    Timeout,
}

impl AttemptErrorKind {
    pub fn label(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Tls => "tls",
            Self::Timeout => "timeout",
        }
    }

    pub fn retryable(self) -> bool {
        self == Self::Connect
    }
}

/// An upstream response whose header has arrived; the body is read with [`Exchange::next_chunk`].
pub struct Exchange {
    session: HttpSession,
    peer: HttpPeer,
    idle: Duration,
}

impl Exchange {
    pub fn header(&self) -> &ResponseHeader {
        // An Exchange exists only after the header was read.
        self.session
            .response_header()
            .expect("exchange holds a read response header")
    }

    /// The next body chunk; `None` at the end. Fails after `timeouts.idle` of silence.
    pub async fn next_chunk(&mut self) -> Result<Option<bytes::Bytes>, Box<PError>> {
        match tokio::time::timeout(self.idle, self.session.read_response_body()).await {
            Ok(read) => read,
            Err(_) => Err(PError::explain(
                ErrorType::ReadTimedout,
                format!(
                    "no data from the upstream for {:?} (timeouts.idle_ms)",
                    self.idle
                ),
            )),
        }
    }
}

pub struct Upstreams {
    connector: Connector,
    peers: HashMap<String, HttpPeer>,
}

impl Upstreams {
    pub fn new(providers: &std::collections::BTreeMap<String, Arc<ProviderConfig>>) -> Self {
        Self {
            connector: Connector::new(None),
            peers: providers
                .iter()
                .map(|(name, p)| (name.clone(), peer(p)))
                .collect(),
        }
    }

    /// Sends one request and waits for the response header.
    pub async fn send(
        &self,
        provider: &ProviderConfig,
        req: &UpstreamRequest,
    ) -> Result<Exchange, AttemptError> {
        let peer = self
            .peers
            .get(&provider.name)
            .ok_or_else(|| AttemptError {
                kind: AttemptErrorKind::Connect,
                message: "no peer configured".into(),
            })?
            .clone();
        let classify = |e| classify(&provider.name, e);
        let (mut session, _reused) = self
            .connector
            .get_http_session(&peer)
            .await
            .map_err(classify)?;
        let header = request_header(provider, req).map_err(classify)?;
        // Timeouts are Tokio's: Pingora's own (`set_read_timeout`) run a timer thread that wakes
        // every 10 ms and showed in the tail latency of the load benchmark.
        let first_byte = provider.timeouts.first_byte;
        let timed_out = || AttemptError {
            kind: AttemptErrorKind::Timeout,
            message: format!("no response header within {first_byte:?} (timeouts.first_byte_ms)"),
        };
        let sent = async {
            session.write_request_header(Box::new(header)).await?;
            session.write_request_body(req.body.clone(), true).await?;
            session.finish_request_body().await
        };
        match tokio::time::timeout(first_byte, sent).await {
            Err(_) => return Err(timed_out()),
            Ok(Err(write_error)) => {
                // A server that refuses the handshake (TLS 1.3 client-certificate checks happen
                // after it) sends an alert that a write only sees as a broken pipe: read once to
                // learn why.
                let read = tokio::time::timeout(
                    Duration::from_millis(500),
                    session.read_response_header(),
                )
                .await;
                return Err(match read {
                    Ok(Err(read_error)) if read_error.to_string().contains("alert") => {
                        classify(read_error)
                    }
                    _ => classify(write_error),
                });
            }
            Ok(Ok(())) => {}
        }
        match tokio::time::timeout(first_byte, session.read_response_header()).await {
            Err(_) => return Err(timed_out()),
            Ok(read) => read.map_err(classify)?,
        }
        Ok(Exchange {
            session,
            peer,
            idle: provider.timeouts.idle,
        })
    }

    /// Returns a fully read connection to the pool.
    pub async fn release(&self, exchange: Exchange) {
        let Exchange {
            mut session, peer, ..
        } = exchange;
        if session.response_done() {
            self.connector
                .release_http_session(session, &peer, Some(Duration::from_secs(60)))
                .await;
        } else {
            session.shutdown().await;
        }
    }
}

fn request_header(
    provider: &ProviderConfig,
    req: &UpstreamRequest,
) -> pingora::Result<RequestHeader> {
    let mut h = RequestHeader::build("POST", req.path.as_bytes(), Some(req.headers.len() + 3))?;
    let e = &provider.endpoint;
    let default_port = if e.tls { 443 } else { 80 };
    let host = match (e.host.contains(':'), e.port == default_port) {
        (true, true) => format!("[{}]", e.host),
        (true, false) => format!("[{}]:{}", e.host, e.port),
        (false, true) => e.host.clone(),
        (false, false) => format!("{}:{}", e.host, e.port),
    };
    h.insert_header("host", host)?;
    h.insert_header("content-length", req.body.len().to_string())?;
    h.insert_header("accept-encoding", "identity")?;
    for (k, v) in &req.headers {
        h.insert_header(*k, v.as_str())?;
    }
    Ok(h)
}

fn peer(p: &ProviderConfig) -> HttpPeer {
    let e = &p.endpoint;
    let mut peer = HttpPeer::new((e.host.as_str(), e.port), e.tls, p.tls.server_name.clone());
    let o = &mut peer.options;
    o.connection_timeout = Some(p.timeouts.connect);
    o.total_connection_timeout = Some(p.timeouts.connect * 2);
    o.idle_timeout = Some(Duration::from_secs(60));
    o.verify_cert = true;
    o.verify_hostname = p.tls.verify_hostname;
    if let Some(ca) = &p.tls.ca {
        let certs: Vec<WrappedX509> = ca
            .iter()
            .map(|der| WrappedX509::new(der.clone(), pingora::utils::tls::parse_x509))
            .collect();
        o.ca = Some(Arc::from(certs.into_boxed_slice()));
    }
    if let (Some(chain), Some(key)) = (&p.tls.client_cert_chain, &p.tls.client_key) {
        peer.client_cert_key = Some(Arc::new(CertKey::new(chain.clone(), key.clone())));
    }
    // Pooled connections are shared only among requests to the same provider with the same
    // trust settings.
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    p.name.hash(&mut hasher);
    format!("{:?}", p.tls).hash(&mut hasher);
    peer.group_key = hasher.finish();
    peer
}

fn classify(provider: &str, e: Box<PError>) -> AttemptError {
    let kind = match e.etype() {
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
            if matches!(e.etype(), ErrorType::ConnectTimedout) {
                AttemptErrorKind::Connect
            } else {
                AttemptErrorKind::Timeout
            }
        }
        ErrorType::InvalidCert | ErrorType::TLSHandshakeFailure | ErrorType::HandshakeError => {
            AttemptErrorKind::Tls
        }
        _ => AttemptErrorKind::Connect,
    };
    let detail = e.to_string();
    let detail = detail.trim();
    // Name the setting that fixes the commonest trust failures.
    let hint = if detail.contains("CertificateRequired") {
        Some(format!(
            "the upstream requires a client certificate; set providers.{provider}.tls.client_cert and client_key"
        ))
    } else if detail.contains("UnknownIssuer") {
        Some(format!(
            "the upstream's certificate is not signed by a trusted CA; set providers.{provider}.tls.ca_file"
        ))
    } else if detail.contains("not valid for name") {
        Some(format!(
            "the upstream's certificate does not match the server name; check providers.{provider}.base_url or tls.server_name"
        ))
    } else if detail.contains("BadCertificate") || detail.contains("UnknownCA") {
        Some(format!(
            "the upstream rejected Cordon's client certificate; check providers.{provider}.tls.client_cert"
        ))
    } else {
        None
    };
    let kind = if hint.is_some() {
        AttemptErrorKind::Tls
    } else {
        kind
    };
    AttemptError {
        kind,
        message: match hint {
            Some(h) => format!("{h} ({detail})"),
            None => detail.to_owned(),
        },
    }
}
