//! Upstream transport on Pingora's connector: one pooled peer per provider, with its own trust
//! settings (CA bundle, client certificate, SNI and hostname verification) and its own pool
//! group, so one provider's trust never leaks into another's pooled connections.
//!
//! A `private` provider with several instances of the inference server gets a [`Balancer`]:
//! Pingora's round-robin load balancer, whose HTTP health check (run as a background service)
//! takes an instance out while its health endpoint fails; an instance that refuses a connection
//! is also skipped until the next check.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pingora::connectors::http::Connector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::client::HttpSession;
use pingora::services::background::{GenBackgroundService, background_service};
use pingora::upstreams::peer::HttpPeer;
use pingora::utils::tls::CertKey;
use pingora::utils::tls::WrappedX509;
use pingora::{Error as PError, ErrorType};
use pingora_load_balancing::LoadBalancer;
use pingora_load_balancing::health_check::HttpHealthCheck;
use pingora_load_balancing::selection::RoundRobin;

use crate::config::{Endpoint, ProviderConfig};
use crate::health::InstancePool;
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
    balancers: Balancers,
}

impl Upstreams {
    pub fn new(
        providers: &std::collections::BTreeMap<String, Arc<ProviderConfig>>,
        balancers: Balancers,
    ) -> Self {
        Self {
            connector: Connector::new(None),
            peers: providers
                .iter()
                .map(|(name, p)| (name.clone(), peer(p, &p.endpoint, None)))
                .collect(),
            balancers,
        }
    }

    /// The peer for the next attempt, and the Host header it takes.
    fn choose(
        &self,
        provider: &ProviderConfig,
    ) -> Result<(HttpPeer, String, Option<SocketAddr>), AttemptError> {
        if let Some(b) = self.balancers.get(&provider.name) {
            return b.choose().ok_or_else(|| AttemptError {
                kind: AttemptErrorKind::Connect,
                message: format!(
                    "none of the {} instances of provider `{}` passes its health check ({})",
                    b.instances.len(),
                    provider.name,
                    provider.health_check.path
                ),
            });
        }
        let peer = self.peers.get(&provider.name).ok_or_else(|| AttemptError {
            kind: AttemptErrorKind::Connect,
            message: "no peer configured".into(),
        })?;
        Ok((peer.clone(), host_header(&provider.endpoint), None))
    }

    /// Sends one request and waits for the response header.
    pub async fn send(
        &self,
        provider: &ProviderConfig,
        req: &UpstreamRequest,
    ) -> Result<Exchange, AttemptError> {
        let (peer, host, instance) = self.choose(provider)?;
        let result = self.exchange(provider, req, peer, host).await;
        if let (Err(e), Some(addr)) = (&result, instance)
            && e.kind != AttemptErrorKind::Tls
            && let Some(b) = self.balancers.get(&provider.name)
        {
            b.skip_until_next_check(addr);
        }
        result
    }

    async fn exchange(
        &self,
        provider: &ProviderConfig,
        req: &UpstreamRequest,
        peer: HttpPeer,
        host: String,
    ) -> Result<Exchange, AttemptError> {
        let classify = |e| classify(&provider.name, e);
        let (mut session, _reused) = self
            .connector
            .get_http_session(&peer)
            .await
            .map_err(classify)?;
        let header = request_header(&host, req).map_err(classify)?;
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

fn host_header(e: &Endpoint) -> String {
    let default_port = if e.tls { 443 } else { 80 };
    match (e.host.contains(':'), e.port == default_port) {
        (true, true) => format!("[{}]", e.host),
        (true, false) => format!("[{}]:{}", e.host, e.port),
        (false, true) => e.host.clone(),
        (false, false) => format!("{}:{}", e.host, e.port),
    }
}

/// The upstream request's header. Names are lower-case (the providers' too), so no
/// case-preserving copy is kept.
fn request_header(host: &str, req: &UpstreamRequest) -> pingora::Result<RequestHeader> {
    let mut h =
        RequestHeader::build_no_case("POST", req.path.as_bytes(), Some(req.headers.len() + 3))?;
    h.insert_header("host", host)?;
    h.insert_header("content-length", req.body.len().to_string())?;
    h.insert_header("accept-encoding", "identity")?;
    for (k, v) in &req.headers {
        h.insert_header(*k, v.as_str())?;
    }
    Ok(h)
}

/// A peer for provider `p` at endpoint `e` (at `addr`, once resolved, for a balanced instance).
fn peer(p: &ProviderConfig, e: &Endpoint, addr: Option<SocketAddr>) -> HttpPeer {
    let mut peer = match addr {
        Some(a) => HttpPeer::new(a, e.tls, p.tls.server_name.clone()),
        None => HttpPeer::new((e.host.as_str(), e.port), e.tls, p.tls.server_name.clone()),
    };
    apply_trust(&mut peer, p);
    peer
}

/// The provider's timeouts and trust settings on `peer`, and a pool group of its own.
fn apply_trust(peer: &mut HttpPeer, p: &ProviderConfig) {
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
}

/// The instances of one `private` provider behind Pingora's round-robin load balancer.
pub struct Balancer {
    lb: Arc<LoadBalancer<RoundRobin>>,
    instances: HashMap<SocketAddr, Instance>,
    epoch: Instant,
    interval: Duration,
}

struct Instance {
    peer: HttpPeer,
    host: String,
    /// Milliseconds since `epoch` until which a failed instance is skipped.
    skip_until: AtomicU64,
}

/// The background service that runs a balancer's health checks.
pub type HealthCheckService = GenBackgroundService<LoadBalancer<RoundRobin>>;

/// Balancers by provider name.
pub type Balancers = HashMap<String, Arc<Balancer>>;

/// A balancer and its health-check service for every provider with several instances (a
/// `private` provider's `endpoints`). Host names are resolved once, here.
pub fn balancers(
    providers: &std::collections::BTreeMap<String, Arc<ProviderConfig>>,
) -> Result<(Balancers, Vec<HealthCheckService>), String> {
    let mut balancers = HashMap::new();
    let mut services = Vec::new();
    for (name, p) in providers.iter().filter(|(_, p)| !p.backends.is_empty()) {
        let mut instances = HashMap::new();
        for (i, e) in p.backends.iter().enumerate() {
            let addrs = (e.host.as_str(), e.port).to_socket_addrs().map_err(|err| {
                format!(
                    "providers.{name}.endpoints[{i}]: cannot resolve {}: {err}",
                    e.host
                )
            })?;
            for addr in addrs {
                instances.insert(
                    addr,
                    Instance {
                        peer: peer(p, e, Some(addr)),
                        host: host_header(e),
                        skip_until: AtomicU64::new(0),
                    },
                );
            }
        }
        let mut lb = LoadBalancer::<RoundRobin>::try_from_iter(instances.keys().copied())
            .map_err(|e| format!("providers.{name}.endpoints: {e}"))?;
        let mut check = HttpHealthCheck::new(&host_header(&p.endpoint), p.endpoint.tls);
        check.req = RequestHeader::build("GET", p.health_check.path.as_bytes(), None)
            .map_err(|e| format!("providers.{name}.health_check.path: {e}"))?;
        check
            .req
            .insert_header("host", host_header(&p.endpoint))
            .map_err(|e| format!("providers.{name}.health_check: {e}"))?;
        apply_trust(&mut check.peer_template, p);
        check.peer_template.sni = p.tls.server_name.clone();
        check.peer_template.options.connection_timeout = Some(p.health_check.timeout);
        check.peer_template.options.read_timeout = Some(p.health_check.timeout);
        lb.set_health_check(Box::new(check));
        lb.health_check_frequency = Some(p.health_check.interval);
        lb.parallel_health_check = true;
        let service = background_service(&format!("health checks of {name}"), lb);
        balancers.insert(
            name.clone(),
            Arc::new(Balancer {
                lb: service.task(),
                instances,
                epoch: Instant::now(),
                interval: p.health_check.interval,
            }),
        );
        services.push(service);
    }
    Ok((balancers, services))
}

impl Balancer {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn selectable(&self, addr: &SocketAddr, healthy: bool) -> bool {
        healthy
            && self
                .instances
                .get(addr)
                .is_some_and(|i| i.skip_until.load(Ordering::Relaxed) <= self.now_ms())
    }

    /// The next healthy instance, round robin.
    fn choose(&self) -> Option<(HttpPeer, String, Option<SocketAddr>)> {
        let backend = self.lb.select_with(b"", 256, |b, healthy| {
            b.addr
                .as_inet()
                .is_some_and(|a| self.selectable(a, healthy))
        })?;
        let addr = *backend.addr.as_inet()?;
        let i = self.instances.get(&addr)?;
        Some((i.peer.clone(), i.host.clone(), Some(addr)))
    }

    fn skip_until_next_check(&self, addr: SocketAddr) {
        if let Some(i) = self.instances.get(&addr) {
            let until = self.now_ms() + self.interval.as_millis() as u64;
            i.skip_until.store(until, Ordering::Relaxed);
            tracing::warn!(instance = %addr, "instance failed; skipped until its next health check");
        }
    }
}

impl InstancePool for Balancer {
    fn any_up(&self) -> bool {
        let backends = self.lb.backends();
        backends.get_backend().iter().any(|b| {
            b.addr
                .as_inet()
                .is_some_and(|a| self.selectable(a, backends.ready(b)))
        })
    }
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
