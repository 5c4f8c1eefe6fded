//! The gateway on Pingora: one request, top to bottom.
//!
//! Pingora calls `request_body_filter` only after `upstream_peer` (pingora#780) and its retry
//! buffer holds 64 KiB, but Cordon must read and judge the whole body before it chooses an
//! upstream. So every request is answered inside `request_filter`: the phases below run in
//! order, and the upstream exchange uses Pingora's own connector (pooling, mTLS, per-peer CA)
//! in [`upstream`]. `logging` runs after every request, answered or failed.
//!
//! 1. listener: which endpoint ([`crate::api::Endpoint`])
//! 2. authentication ([`crate::auth`])
//! 3. body: read (bounded) and parse ([`crate::api::parse`])
//! 4. DLP scan of the text the model would read ([`crate::dlp::json`]); findings (types,
//!    counts, locations, never values) go into the context
//! 5. policy decision ([`decide`], [`crate::policy`]): the input document from the phases
//!    above, evaluated by the active bundle (and the shadow one); a denial is answered here
//! 6. route ([`decide`]): the targets the decision allows (private: on-prem only, no hosted
//!    fallback); then the `max_tokens_cap` obligation and the decision's DLP actions are applied
//!    (403 `dlp_block` for blocked types)
//! 7. forward with retries and fallbacks; relay the response as it arrives ([`crate::relay`])
//! 8. logging: metrics (and the audit record, in its own issue)

mod decide;
pub mod server;
pub mod upstream;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::{ProxyHttp, Session};
use serde_json::json;
use tokio::sync::OnceCell;

use crate::api::{self, Api, Endpoint, ParsedRequest};
use crate::audit::writer::AuditLog;
use crate::audit::{AuditFinding, AuditRecord};
use crate::auth::{Authenticator, Principal};
use crate::catalogue::{Catalogue, Target};
use crate::config::Config;
use crate::db::Database;
use crate::dlp::Pseudonyms;
use crate::dlp::json::{EntitySummary, apply_request, scan_request, summarize};
use crate::dlp::restore::ResponseGuard;
use crate::error::{ApiError, ErrorShape};
use crate::health::{InstancePool, KeyUsage, ProviderHealth};
use crate::keys::KeyStore;
use crate::metrics::Metrics;
use crate::policy::{Decision, PolicySet, RouteTarget, ShadowOutcome};
use crate::providers::{self, Usage};
use crate::relay::Relay;
use upstream::{AttemptErrorKind, Balancers, Exchange, Upstreams};

/// Everything the gateway shares across requests.
pub struct Gateway {
    config: Config,
    catalogue: Catalogue,
    upstreams: Upstreams,
    metrics: Arc<Metrics>,
    /// HMAC key of the DLP `hash` action.
    hash_key: Vec<u8>,
    /// Opened on first use, inside the server's runtime.
    auth: OnceCell<(Database, Authenticator)>,
    /// `None` when `policy.enabled = false`.
    policy: Option<Arc<PolicySet>>,
    health: ProviderHealth,
    key_usage: KeyUsage,
    /// `None` when `audit.enabled = false`.
    audit: Option<Arc<AuditLog>>,
    prices: Arc<std::collections::BTreeMap<String, crate::config::Price>>,
}

/// What one request accumulates as it passes the phases; read by `logging`.
pub struct RequestCtx {
    pub request_id: String,
    pub started: Instant,
    pub endpoint: Option<Endpoint>,
    /// The catalogue model (never an arbitrary client string, so metric labels stay bounded).
    pub model: Option<String>,
    pub principal: Option<Principal>,
    pub provider: Option<String>,
    pub upstream_model: Option<String>,
    pub stream: bool,
    pub status: u16,
    pub usage: Option<Usage>,
    pub upstream_first_byte: Option<Duration>,
    pub error_code: Option<&'static str>,
    /// What DLP found in the request, per entity type.
    pub dlp: Vec<EntitySummary>,
    /// The enforced decision (its id is `request_id`), the bundle version that made it, and
    /// the shadow bundle's outcome.
    pub decision: Option<Decision>,
    pub policy_version: Option<String>,
    /// The DLP rule packs in force when the request was scanned.
    pub dlp_version: Option<String>,
    pub shadow: Option<ShadowOutcome>,
    /// The route the request took.
    pub route: Option<RouteTarget>,
    /// Served despite a policy error (`policy_fail_open`).
    pub fail_open: bool,
    /// The DLP action applied to each entity type found.
    pub dlp_applied: std::collections::BTreeMap<String, String>,
    /// The masked prompt, when the decision's obligations ask to keep it.
    pub prompt: Option<String>,
    audit: Option<Arc<AuditLog>>,
    prices: Arc<std::collections::BTreeMap<String, crate::config::Price>>,
    /// The audit record was written.
    audited: bool,
}

impl RequestCtx {
    /// Records the request in the audit log, once. Called just before the last bytes of a
    /// response are written (so that a response a client got always has its record in the
    /// journal), and from `logging` for requests that ended otherwise.
    fn audit_now(&mut self, session: &Session, status: u16) {
        if self.audited
            || matches!(
                self.endpoint,
                Some(Endpoint::Healthz | Endpoint::Readyz | Endpoint::Metrics)
            )
        {
            return;
        }
        if let Some(audit) = self.audit.clone() {
            self.audited = true;
            let record = self.audit_record(session, status);
            audit.record(record);
        }
    }

    /// The audit record of a finished request: what every phase left in the context.
    fn audit_record(&mut self, session: &Session, status: u16) -> AuditRecord {
        let ctx = self;
        let key = ctx.principal.as_ref().map(|p| &p.key);
        let nonempty = |s: &String| Some(s.clone()).filter(|s| !s.is_empty());
        let decision = match &ctx.decision {
            None => "none",
            Some(d) if d.allow => "allow",
            Some(d) if d.is_policy_error() => "error",
            Some(_) => "deny",
        };
        let (tokens_in, tokens_out) = match ctx.usage {
            Some(u) => (Some(u.prompt_tokens), Some(u.completion_tokens)),
            None => (None, None),
        };
        let cost_micros = match (ctx.model.as_deref(), ctx.usage) {
            (Some(m), Some(u)) => ctx
                .prices
                .get(m)
                .map(|p| p.cost_micros(u.prompt_tokens, u.completion_tokens)),
            _ => None,
        };
        AuditRecord {
            id: ctx.request_id.clone(),
            time_ms: (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
                - ctx.started.elapsed().as_millis() as i64,
            user_id: key.and_then(|k| nonempty(&k.owner)),
            api_key_id: key.map(|k| k.id.clone()),
            team: key.and_then(|k| nonempty(&k.team)),
            auth_method: ctx.principal.as_ref().map(|p| p.method.as_str().to_owned()),
            source_ip: session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip().to_string()),
            api: match ctx.endpoint {
                Some(Endpoint::Llm(api)) => api.as_str().to_owned(),
                Some(e) => e.label().to_owned(),
                None => "unknown".to_owned(),
            },
            requested_model: ctx.model.clone(),
            route: ctx.route.map(|r| r.as_str().to_owned()),
            provider: ctx.provider.clone(),
            upstream_model: ctx.upstream_model.clone(),
            policy_version: ctx.policy_version.clone(),
            dlp_version: ctx.dlp_version.clone(),
            decision: decision.to_owned(),
            reason_codes: ctx
                .decision
                .as_ref()
                .map(|d| d.reasons.iter().map(|r| r.code.clone()).collect())
                .unwrap_or_default(),
            dlp_findings: ctx
                .dlp
                .iter()
                .map(|f| AuditFinding {
                    entity_type: f.entity.clone(),
                    count: f.count as u64,
                    locations: f.locations.clone(),
                })
                .collect(),
            dlp_actions: std::mem::take(&mut ctx.dlp_applied),
            obligations: ctx
                .decision
                .as_ref()
                .and_then(|d| serde_json::to_value(&d.obligations).ok()),
            shadow: ctx
                .shadow
                .as_ref()
                .and_then(|s| serde_json::to_value(s).ok()),
            status,
            latency_ms: ctx.started.elapsed().as_millis() as u64,
            upstream_ms: ctx.upstream_first_byte.map(|d| d.as_millis() as u64),
            tokens_in,
            tokens_out,
            cost_micros,
            stream: ctx.stream,
            error_class: ctx.error_code.map(str::to_owned),
            fail_open: ctx.fail_open,
            prompt: ctx.prompt.take(),
        }
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            request_id: request_id(),
            started: Instant::now(),
            endpoint: None,
            model: None,
            principal: None,
            provider: None,
            upstream_model: None,
            stream: false,
            status: 0,
            usage: None,
            upstream_first_byte: None,
            error_code: None,
            dlp: Vec::new(),
            decision: None,
            policy_version: None,
            dlp_version: None,
            shadow: None,
            route: None,
            fail_open: false,
            dlp_applied: Default::default(),
            prompt: None,
            audit: self.audit.clone(),
            prices: self.prices.clone(),
            audited: false,
        }
    }

    /// Never reached: every request is answered in `request_filter`.
    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        Error::e_explain(
            ErrorType::InternalError,
            "cordon answers every request in request_filter",
        )
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let result = if self.audit.as_ref().is_some_and(|a| !a.accepting()) {
            // audit.required: no request is served without a record.
            discard_body(session).await;
            Err(ApiError::new(
                503,
                "api_error",
                "audit_unavailable",
                "the audit log can neither be written nor spooled, and audit.required is set; try again shortly",
            ))
        } else {
            self.handle(session, ctx).await
        };
        if let Err(e) = result {
            let shape = match ctx.endpoint {
                Some(Endpoint::Llm(api)) => api.error_shape(),
                _ => ErrorShape::OpenAi,
            };
            ctx.error_code = Some(e.code);
            respond(
                session,
                ctx,
                e.status,
                "application/json",
                e.body(shape),
                &[],
            )
            .await?;
        }
        Ok(true)
    }

    async fn logging(&self, session: &mut Session, error: Option<&Error>, ctx: &mut RequestCtx) {
        let route = ctx.endpoint.map_or("unknown", Endpoint::label);
        let model = ctx.model.as_deref().unwrap_or("");
        let status = if ctx.status == 0 && error.is_some() {
            500
        } else {
            ctx.status
        };
        let m = &self.metrics;
        m.requests
            .with_label_values(&[route, model, &status.to_string()])
            .inc();
        m.latency
            .with_label_values(&[route, model])
            .observe(ctx.started.elapsed().as_secs_f64());
        if let (Some(u), Some(p)) = (ctx.usage, ctx.provider.as_deref()) {
            m.tokens
                .with_label_values(&[model, p, "in"])
                .inc_by(u.prompt_tokens);
            m.tokens
                .with_label_values(&[model, p, "out"])
                .inc_by(u.completion_tokens);
        }
        tracing::info!(
            request_id = %ctx.request_id,
            route,
            model,
            status,
            key_id = ctx.principal.as_ref().map(|p| p.key.id.as_str()),
            provider = ctx.provider.as_deref(),
            error = ctx.error_code,
            dlp = %ctx.dlp.iter().map(|d| format!("{}:{}", d.entity, d.count)).collect::<Vec<_>>().join(","),
            ms = ctx.started.elapsed().as_millis() as u64,
            "request"
        );
        ctx.audit_now(session, status);
    }
}

impl Gateway {
    pub fn new(
        config: Config,
        hash_key: Vec<u8>,
        policy: Option<Arc<PolicySet>>,
        audit: Option<Arc<AuditLog>>,
        metrics: Arc<Metrics>,
        balancers: Balancers,
    ) -> Self {
        let pools = balancers
            .iter()
            .map(|(name, b)| (name.clone(), b.clone() as Arc<dyn InstancePool>))
            .collect();
        Self {
            catalogue: Catalogue::new(&config),
            upstreams: Upstreams::new(&config.providers, balancers),
            health: ProviderHealth::new(&config.providers, pools),
            key_usage: KeyUsage::default(),
            metrics,
            hash_key,
            auth: OnceCell::new(),
            policy,
            audit,
            prices: Arc::new(config.prices.clone()),
            config,
        }
    }

    async fn handle(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<(), ApiError> {
        // 1. listener
        let req = session.req_header();
        let endpoint = Endpoint::resolve(&req.method, req.uri.path())?;
        ctx.endpoint = Some(endpoint);
        match endpoint {
            Endpoint::Healthz => {
                self.reply_json(session, ctx, 200, json!({"status": "ok"}))
                    .await
            }
            Endpoint::Readyz => self.readyz(session, ctx).await,
            Endpoint::Metrics => {
                if let Some(a) = &self.audit {
                    self.metrics.set_audit(&a.stats);
                }
                let body = Bytes::from(self.metrics.render());
                respond(session, ctx, 200, "text/plain; version=0.0.4", body, &[])
                    .await
                    .map_err(write_failed)
            }
            Endpoint::ListModels => {
                let principal = self.authenticate(session).await?;
                let data: Vec<_> = self
                    .catalogue
                    .names()
                    .filter(|m| principal.key.may_use(&m.name))
                    .map(|m| json!({"id": m.name, "object": "model", "created": 0, "owned_by": m.provider}))
                    .collect();
                ctx.principal = Some(principal);
                self.reply_json(session, ctx, 200, json!({"object": "list", "data": data}))
                    .await
            }
            Endpoint::Llm(api) => self.llm(session, ctx, api).await,
        }
    }

    async fn llm(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        api: Api,
    ) -> Result<(), ApiError> {
        // 2. authentication
        let principal = self.authenticate(session).await?;
        ctx.principal = Some(principal);
        // 3. body
        let body = read_body(session, self.config.limits.max_body_bytes).await?;
        let content_type = session
            .req_header()
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let mut parsed = api::parse(api, content_type, &body)?;
        ctx.stream = parsed.stream;
        // 4. DLP scan, with the rule packs in force now (kept for this request's response)
        let rules = self.config.dlp.rules.as_ref().map(|r| r.current());
        ctx.dlp_version = rules.as_ref().map(|r| r.version.clone());
        let findings = match &rules {
            Some(rules) => scan_request(&rules.scanner, api, &mut parsed.body),
            None => Vec::new(),
        };
        ctx.dlp = summarize(&findings);
        let entry = self.catalogue.entry(&parsed.model).ok_or_else(|| {
            ApiError::not_found(
                "model_not_found",
                format!("model `{}` is not in Cordon's catalogue; GET /v1/models lists the models you may use", parsed.model),
            )
        })?;
        ctx.model = Some(entry.name.clone());
        let principal = ctx.principal.as_ref().map(|p| &p.key);
        if principal.is_some_and(|k| !k.may_use(&entry.name)) {
            return Err(ApiError::forbidden(
                "model_not_allowed",
                format!(
                    "this API key may not use model `{}`; ask for a key that allows it",
                    entry.name
                ),
            ));
        }
        // 5. policy
        let dlp_summary = std::mem::take(&mut ctx.dlp);
        let decided = self.decide(session, ctx, &mut parsed, entry, &dlp_summary);
        ctx.dlp = dlp_summary;
        let decision = decided?;
        // 6. route, then the obligations and DLP actions the decision asks for
        let targets = self.route(ctx, entry, &decision)?;
        if let Some(cap) = decision.obligations.max_tokens_cap {
            decide::cap_max_tokens(&mut parsed, cap);
        }
        let mut pseudonyms = Pseudonyms::default();
        if decision.obligations.retain_prompt {
            ctx.prompt = Some(masked_prompt(api, &parsed.body, &findings));
        }
        if !findings.is_empty() {
            let dlp = &self.config.dlp;
            let mut table = dlp.actions.clone();
            for (entity, action) in &decision.dlp_actions {
                table = table.with(entity, *action);
            }
            for f in &ctx.dlp {
                ctx.dlp_applied
                    .insert(f.entity.clone(), table.action(&f.entity).to_string());
            }
            apply_request(api, &mut parsed.body, &findings, &table, &self.hash_key, &mut pseudonyms).map_err(|blocked| {
                ApiError::forbidden(
                    "dlp_block",
                    format!(
                        "the request contains data that may not leave the organisation: {}; remove it and send the request again",
                        blocked.join(", ")
                    ),
                )
            })?;
        }
        let guard = self.response_guard(pseudonyms, rules.and_then(|r| r.output.clone()));
        // 7. forward
        self.forward(session, ctx, &parsed, &targets, guard).await
    }

    fn response_guard(
        &self,
        pseudonyms: Pseudonyms,
        output: Option<crate::dlp::redact::OutputRules>,
    ) -> Option<ResponseGuard> {
        let dlp = &self.config.dlp;
        let pseudonyms = if dlp.restore_pseudonyms {
            pseudonyms
        } else {
            Pseudonyms::default()
        };
        ResponseGuard::new(pseudonyms, output)
    }

    async fn authenticate(&self, session: &Session) -> Result<Principal, ApiError> {
        let (_, auth) = self.auth().await?;
        auth.authenticate(&session.req_header().headers).await
    }

    async fn auth(&self) -> Result<&(Database, Authenticator), ApiError> {
        self.auth
            .get_or_try_init(|| async {
                let db = Database::open(&self.config.database_url)
                    .await
                    .map_err(|e| {
                        tracing::error!(error = %e, "cannot open the key store");
                        ApiError::auth_unavailable()
                    })?;
                let auth =
                    Authenticator::new(KeyStore::new(db.clone()), self.config.auth.key_cache_ttl);
                Ok((db, auth))
            })
            .await
    }

    async fn readyz(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<(), ApiError> {
        let db_ok = match self.auth().await {
            Ok((db, _)) => db.ping().await.is_ok(),
            Err(_) => false,
        };
        let status = if db_ok { 200 } else { 503 };
        let mut body = json!({
            "status": if db_ok { "ready" } else { "not_ready" },
            "database": if db_ok { "ok" } else { "unreachable" },
        });
        if let Some(p) = &self.policy {
            let active = p.active();
            body["policy"] = json!({
                "version": active.version(),
                "decision_cache": match active.decision_cache() {
                    Ok(()) => "on".to_owned(),
                    Err(why) => format!("off: {why}"),
                },
                "shadow_version": p.shadow().map(|s| s.version().to_owned()),
                "reload_failures": p.reload_failures(),
                "last_reload_error": p.last_reload_error(),
            });
        }
        if let Some(r) = &self.config.dlp.rules {
            let current = r.current();
            body["dlp"] = json!({
                "version": current.version,
                "rules": current.scanner.rules().len(),
                "reload_failures": r.reload_failures(),
                "last_reload_error": r.last_reload_error(),
            });
        }
        self.reply_json(session, ctx, status, body).await
    }

    async fn reply_json(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        status: u16,
        v: serde_json::Value,
    ) -> Result<(), ApiError> {
        respond(
            session,
            ctx,
            status,
            "application/json",
            Bytes::from(v.to_string()),
            &[],
        )
        .await
        .map_err(write_failed)
    }

    /// Tries each target in order, each with its retries, until one answers; then relays the
    /// answer. Nothing is retried once a byte has reached the client.
    async fn forward(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        req: &ParsedRequest,
        targets: &[Target],
        mut guard: Option<ResponseGuard>,
    ) -> Result<(), ApiError> {
        let mut last_error =
            ApiError::upstream(502, "none", "no upstream is configured for this model");
        for target in targets {
            let provider = &target.provider;
            let (up_req, translation) = providers::prepare(target, req)?;
            ctx.provider = Some(provider.name.clone());
            ctx.upstream_model = Some(target.upstream_model.clone());
            for attempt in 0..=provider.retry.max_retries {
                if attempt > 0 {
                    let backoff = provider.retry.backoff * 2u32.saturating_pow(attempt - 1);
                    tokio::time::sleep(backoff.min(Duration::from_secs(10))).await;
                }
                let sent_at = Instant::now();
                let mut exchange = match self.upstreams.send(provider, &up_req).await {
                    Ok(x) => {
                        self.health.mark_ok(&provider.name);
                        x
                    }
                    Err(e) => {
                        self.health.mark_failed(&provider.name);
                        self.metrics
                            .upstream_errors
                            .with_label_values(&[&provider.name, e.kind.label()])
                            .inc();
                        tracing::warn!(provider = %provider.name, attempt, error = %e.message, "upstream attempt failed");
                        let status = if e.kind == AttemptErrorKind::Timeout {
                            504
                        } else {
                            502
                        };
                        last_error = ApiError::upstream(status, &provider.name, &e.message);
                        if e.kind.retryable() {
                            continue;
                        }
                        break;
                    }
                };
                ctx.upstream_first_byte = Some(sent_at.elapsed());
                self.metrics
                    .upstream_latency
                    .with_label_values(&[&provider.name])
                    .observe(sent_at.elapsed().as_secs_f64());
                let status = exchange.header().status.as_u16();
                if status == 429 || status >= 500 {
                    self.metrics
                        .upstream_errors
                        .with_label_values(&[&provider.name, &format!("http_{status}")])
                        .inc();
                    let body = read_error_body(&mut exchange).await;
                    last_error = upstream_status_error(status, &provider.name, &body);
                    self.upstreams.release(exchange).await;
                    continue;
                }
                if status >= 400 {
                    let body = read_error_body(&mut exchange).await;
                    self.upstreams.release(exchange).await;
                    return Err(upstream_status_error(status, &provider.name, &body));
                }
                let created = time::OffsetDateTime::now_utc().unix_timestamp();
                let relay = Relay::new(
                    req.api,
                    req.stream,
                    translation,
                    req.client_wants_stream_usage,
                    created,
                )
                .with_guard(guard.take());
                return self.relay(session, ctx, exchange, relay, status).await;
            }
        }
        if ctx.route == Some(RouteTarget::Private) {
            return Err(decide::private_unavailable(format!(
                "policy keeps this request on-prem, and no private upstream answered: {}",
                last_error.message
            )));
        }
        Err(last_error)
    }

    /// Sends the upstream's answer to the client: streams event by event as they arrive,
    /// non-stream bodies once complete. A failure after the header was sent ends the stream with
    /// an error event.
    async fn relay(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        mut exchange: Exchange,
        mut relay: Relay,
        status: u16,
    ) -> Result<(), ApiError> {
        let provider = ctx.provider.clone().unwrap_or_default();
        if !relay.is_stream() {
            loop {
                match exchange.next_chunk().await {
                    Ok(Some(chunk)) => {
                        relay
                            .push(&chunk)
                            .map_err(|e| ApiError::upstream(502, &provider, e))?;
                    }
                    Ok(None) => break,
                    Err(e) => return Err(ApiError::upstream(502, &provider, e)),
                }
            }
            let body = relay
                .finish()
                .map_err(|e| ApiError::upstream(502, &provider, e))?;
            self.upstreams.release(exchange).await;
            ctx.usage = relay.usage();
            return respond(session, ctx, status, "application/json", body, &[])
                .await
                .map_err(write_failed);
        }

        let mut header = ResponseHeader::build_no_case(status, Some(9)).map_err(write_failed)?;
        for (k, v) in [
            ("content-type", "text/event-stream"),
            ("cache-control", "no-cache"),
            ("transfer-encoding", "chunked"),
        ] {
            header.insert_header(k, v).map_err(write_failed)?;
        }
        decision_headers(&mut header, ctx).map_err(write_failed)?;
        ctx.status = status;
        session
            .write_response_header(Box::new(header), false)
            .await
            .map_err(write_failed)?;
        let failure = loop {
            match exchange.next_chunk().await {
                Ok(Some(chunk)) => match relay.push(&chunk) {
                    Ok(out) if !out.is_empty() => {
                        if let Err(e) = session.write_response_body(Some(out), false).await {
                            // The client went away; nothing more can be sent.
                            ctx.error_code = Some("client_disconnected");
                            ctx.usage = relay.usage();
                            tracing::debug!(error = %e, "client closed the stream");
                            return Ok(());
                        }
                    }
                    Ok(_) => {}
                    Err(e) => break Some(e.to_string()),
                },
                Ok(None) => match relay.finish() {
                    Ok(out) => {
                        if !out.is_empty() {
                            let _ = session.write_response_body(Some(out), false).await;
                        }
                        break (!relay.complete()).then(|| {
                            "the upstream closed the stream before it was complete".to_owned()
                        });
                    }
                    Err(e) => break Some(e.to_string()),
                },
                Err(e) => break Some(e.to_string()),
            }
            if relay.complete() {
                break None;
            }
        };
        ctx.usage = relay.usage();
        if failure.is_some() {
            ctx.error_code = Some("stream_interrupted");
        }
        ctx.audit_now(session, status);
        if let Some(reason) = failure {
            self.metrics
                .upstream_errors
                .with_label_values(&[&provider, "stream_interrupted"])
                .inc();
            ctx.error_code = Some("stream_interrupted");
            tracing::warn!(provider = %provider, error = %reason, "upstream stream failed");
            let event = relay.error_event(&format!("provider `{provider}`: {reason}"));
            let _ = session.write_response_body(Some(event), true).await;
            drop(exchange);
        } else {
            let _ = session.write_response_body(None, true).await;
            self.upstreams.release(exchange).await;
        }
        Ok(())
    }
}

/// A UUIDv7 (time-ordered) from the thread-local generator: `Uuid::now_v7` makes a getrandom
/// system call per id.
fn request_id() -> String {
    use rand::RngCore;
    let mut random = [0u8; 10];
    rand::rng().fill_bytes(&mut random);
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    uuid::Builder::from_unix_timestamp_millis(millis, &random)
        .into_uuid()
        .to_string()
}

/// The model-visible text of a request with every finding redacted, for the audit log.
fn masked_prompt(
    api: Api,
    body: &serde_json::Map<String, serde_json::Value>,
    findings: &[crate::dlp::json::Located],
) -> String {
    let mut copy = body.clone();
    let redact = crate::dlp::ActionTable::new(crate::dlp::Action::Redact);
    // Redaction needs no key and never blocks.
    let _ = apply_request(
        api,
        &mut copy,
        findings,
        &redact,
        &[],
        &mut Pseudonyms::default(),
    );
    let mut texts = Vec::new();
    crate::dlp::json::for_each_text(api, &mut copy, &mut |_, t| texts.push(t.clone()));
    texts.join("\n")
}

/// Reads a request body up to `limit` bytes; 413 above it.
async fn read_body(session: &mut Session, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            413,
            "invalid_request_error",
            "body_too_large",
            format!(
                "the request body is larger than the {limit}-byte limit (limits.max_body_bytes)"
            ),
        )
    };
    let declared = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        discard_body(session).await;
        return Err(too_large());
    }
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(8 * 1024).min(limit));
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if buf.len() + chunk.len() > limit {
                    discard_body(session).await;
                    return Err(too_large());
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(buf.freeze()),
            Err(e) => {
                session.set_keepalive(None);
                return Err(ApiError::bad_request(
                    "body_read_failed",
                    format!("could not read the request body: {e}"),
                ));
            }
        }
    }
}

/// Reads and drops what is left of a refused body, so that a client still sending it gets to
/// read the error instead of a broken pipe. Bounded in bytes and time; the connection is closed
/// afterwards.
async fn discard_body(session: &mut Session) {
    const MAX_DISCARD: usize = 64 * 1024 * 1024;
    session.set_keepalive(None);
    let mut seen = 0;
    let drain = async {
        while let Ok(Some(chunk)) = session.read_request_body().await {
            seen += chunk.len();
            if seen > MAX_DISCARD {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), drain).await;
}

async fn read_error_body(exchange: &mut Exchange) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = exchange.next_chunk().await {
        if body.len() < 64 * 1024 {
            body.extend_from_slice(&chunk);
        }
    }
    body
}

/// The client's view of an upstream that answered with an error status.
fn upstream_status_error(status: u16, provider: &str, body: &[u8]) -> ApiError {
    let detail =
        providers::upstream_error_message(body).unwrap_or_else(|| "no error message".into());
    let message = format!("answered {status}: {detail}");
    match status {
        // The provider refused Cordon's own credentials: the client cannot fix that.
        401 | 403 => ApiError::upstream(
            502,
            provider,
            format!("{message} (check this provider's api_key in Cordon's config)"),
        ),
        429 => ApiError::new(
            429,
            "rate_limit_error",
            "upstream_rate_limited",
            format!("provider `{provider}` {message}"),
        ),
        500.. => ApiError::upstream(502, provider, message),
        _ => ApiError::new(
            status,
            "invalid_request_error",
            "upstream_rejected",
            format!("provider `{provider}` {message}"),
        ),
    }
}

fn write_failed(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(format!("failed to write the response: {e}"))
}

/// The request id (which is also the decision id and the audit record id) and, once known, the
/// route, the policy version and a fail-open mark.
fn decision_headers(header: &mut ResponseHeader, ctx: &RequestCtx) -> Result<()> {
    header.insert_header("x-request-id", ctx.request_id.as_str())?;
    header.insert_header("x-cordon-decision-id", ctx.request_id.as_str())?;
    if let Some(route) = ctx.route {
        header.insert_header("x-cordon-route", route.as_str())?;
    }
    if let Some(v) = &ctx.policy_version {
        header.insert_header(
            "x-cordon-policy-version",
            crate::policy::bundle::short_version(v),
        )?;
    }
    if ctx.fail_open {
        header.insert_header("x-cordon-policy", "fail-open")?;
    }
    Ok(())
}

/// Writes a complete response with a Content-Length.
async fn respond(
    session: &mut Session,
    ctx: &mut RequestCtx,
    status: u16,
    content_type: &str,
    body: Bytes,
    extra: &[(&str, &str)],
) -> Result<()> {
    // Every name Cordon writes is lower-case already, so Pingora need not keep a second,
    // case-preserving map of them: the bytes on the wire are the same.
    let mut header = ResponseHeader::build_no_case(status, Some(7 + extra.len()))?;
    header.insert_header("content-type", content_type)?;
    header.insert_header("content-length", body.len().to_string())?;
    decision_headers(&mut header, ctx)?;
    for (k, v) in extra {
        header.insert_header(k.to_string(), *v)?;
    }
    ctx.status = status;
    ctx.audit_now(session, status);
    let head_only = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(header), head_only)
        .await?;
    if !head_only {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}
