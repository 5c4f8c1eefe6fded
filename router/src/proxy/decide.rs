//! Phases 5 and 6: the policy decision and the route it picks.
//!
//! The input document is built from what the earlier phases left (principal, parsed body, DLP
//! summary) and never holds prompt text. A denial is answered with the policy's status and
//! reasons; a `policy_error` is let through only for a model configured with
//! `policy_fail_open`. The route follows the decision: a private-routed request is served only
//! by on-prem providers (the decision's model, the requested model when it is itself on-prem,
//! or the catalogue's `private_counterpart`) and never falls back to a hosted one.

use std::collections::BTreeMap;

use pingora::proxy::Session;

use super::{Gateway, RequestCtx};
use crate::api::ParsedRequest;
use crate::catalogue::Target;
use crate::config::ModelEntry;
use crate::dlp::json::EntitySummary;
use crate::error::ApiError;
use crate::policy::input::{
    DlpFacts, Mode, PolicyInput, RequestFacts, SourceFacts, TimeFacts, UsageFacts, UserFacts,
    allowed_headers,
};
use crate::policy::{Decision, Obligations, Route, RouteTarget};

impl Gateway {
    /// 5. policy. Returns the decision to enforce, or the error a denied request gets.
    pub(super) fn decide(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
        parsed: &mut ParsedRequest,
        entry: &ModelEntry,
        dlp: &[EntitySummary],
    ) -> Result<Decision, ApiError> {
        let Some(policy) = &self.policy else {
            return Ok(Decision {
                allow: true,
                reasons: Vec::new(),
                route: Some(Route {
                    target: RouteTarget::Hosted,
                    model: None,
                    provider: None,
                }),
                dlp_actions: BTreeMap::new(),
                response: None,
                obligations: Obligations::default(),
            });
        };
        let mut input = self.policy_input(session, ctx, parsed, entry, dlp);
        let evaluated = policy.evaluate(&mut input);
        ctx.policy_version = Some(evaluated.version);
        ctx.shadow = evaluated.shadow;
        let decision = evaluated.decision;
        ctx.decision = Some(decision.clone());
        if decision.allow {
            return Ok(decision);
        }
        if decision.is_policy_error() && entry.policy_fail_open {
            self.metrics
                .policy_fail_open
                .with_label_values(&[&entry.name])
                .inc();
            tracing::warn!(request_id = %ctx.request_id, model = %entry.name, "policy error: served anyway (policy_fail_open)");
            ctx.fail_open = true;
            return Ok(Decision {
                allow: true,
                route: Some(Route {
                    target: RouteTarget::Hosted,
                    model: None,
                    provider: None,
                }),
                response: None,
                ..decision
            });
        }
        let denial = decision
            .response
            .clone()
            .unwrap_or(crate::policy::decision::Denial {
                status: 403,
                message: "the request was denied by policy".into(),
            });
        let (kind, code) = if decision.is_policy_error() {
            ("permission_error", "policy_error")
        } else {
            ("permission_error", "policy_denied")
        };
        Err(
            ApiError::new(denial.status, kind, code, denial.message).with_reasons(
                decision
                    .reasons
                    .iter()
                    .map(|r| (r.code.clone(), r.message.clone()))
                    .collect(),
            ),
        )
    }

    fn policy_input(
        &self,
        session: &Session,
        ctx: &RequestCtx,
        parsed: &mut ParsedRequest,
        entry: &ModelEntry,
        dlp: &[EntitySummary],
    ) -> PolicyInput {
        let settings = self.policy.as_ref().map(|p| p.settings());
        let allow: &[String] = settings.map_or(&[], |s| &s.header_allowlist);
        let headers = allowed_headers(
            allow,
            session
                .req_header()
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_bytes())),
        );
        let (mut request, complete) = RequestFacts::from_body(
            parsed.api,
            &entry.name,
            parsed.stream,
            &mut parsed.body,
            headers,
        );
        if self.catalogue.is_on_prem(&entry.name) {
            request.model_route = RouteTarget::Private.as_str();
        }
        let principal = ctx.principal.as_ref();
        let user = match principal {
            Some(p) => UserFacts {
                authenticated: true,
                id: Some(p.key.owner.clone()).filter(|s| !s.is_empty()),
                auth_method: Some(p.method.as_str()),
                api_key_id: Some(p.key.id.clone()),
                team: Some(p.key.team.clone()).filter(|s| !s.is_empty()),
                groups: p.key.groups.clone(),
                roles: p.key.roles.clone(),
                attributes: p.key.attributes.clone(),
            },
            None => UserFacts::default(),
        };
        let source = SourceFacts {
            ip: session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip().to_string()),
            mtls_principal: session
                .digest()
                .and_then(|d| d.ssl_digest.as_ref())
                .and_then(|s| match (&s.organization, &s.serial_number) {
                    (None, None) => None,
                    (o, n) => Some(format!(
                        "O={},serial={}",
                        o.as_deref().unwrap_or(""),
                        n.as_deref().unwrap_or("")
                    )),
                }),
        };
        PolicyInput {
            schema: crate::policy::input::INPUT_SCHEMA,
            request_id: ctx.request_id.clone(),
            time: TimeFacts::now(),
            source,
            usage: UsageFacts {
                key_requests_this_minute: principal.and_then(|p| self.key_usage.hit(&p.key.id)),
            },
            user,
            request,
            dlp: DlpFacts::from_summary(self.config.dlp.rules.is_some(), complete, dlp),
            route_health: self.health.routes(),
            mode: Mode::Enforce,
        }
    }

    /// 6. route: the targets the decision allows, in the order they are tried.
    pub(super) fn route(
        &self,
        ctx: &mut RequestCtx,
        entry: &ModelEntry,
        decision: &Decision,
    ) -> Result<Vec<Target>, ApiError> {
        let route = decision.route.as_ref().ok_or_else(|| {
            ApiError::internal("an allowing decision without a route reached routing")
        })?;
        let named = |model: &str| {
            self.catalogue.entry(model).map(|e| e.name.clone()).ok_or_else(|| {
                ApiError::new(
                    403,
                    "permission_error",
                    "policy_error",
                    format!("the policy routed the request to model `{model}`, which is not in the catalogue"),
                )
            })
        };
        ctx.route = Some(route.target);
        let mut targets = match route.target {
            RouteTarget::Hosted => {
                let model = match &route.model {
                    Some(m) => named(m)?,
                    None => entry.name.clone(),
                };
                let targets = self.catalogue.targets(&model);
                if !targets.is_empty() && targets.iter().all(|t| t.provider.on_prem) {
                    ctx.route = Some(RouteTarget::Private);
                }
                targets
            }
            RouteTarget::Private => {
                let model = match (&route.model, self.catalogue.is_on_prem(&entry.name)) {
                    (Some(m), _) => named(m)?,
                    (None, true) => entry.name.clone(),
                    (None, false) => entry.private_counterpart.clone().ok_or_else(|| {
                        private_unavailable(format!(
                            "policy keeps this request on-prem, and model `{}` has no private counterpart (models[].private_counterpart)",
                            entry.name
                        ))
                    })?,
                };
                let targets: Vec<Target> = self
                    .catalogue
                    .targets(&model)
                    .into_iter()
                    .filter(|t| t.provider.on_prem)
                    .collect();
                if targets.is_empty() {
                    return Err(private_unavailable(format!(
                        "policy keeps this request on-prem, and model `{model}` has no on_prem provider"
                    )));
                }
                targets
            }
        };
        if let Some(p) = &route.provider {
            targets.retain(|t| &t.provider.name == p);
        }
        if route.target == RouteTarget::Private {
            targets.retain(|t| self.health.is_up(&t.provider.name));
            if targets.is_empty() {
                return Err(private_unavailable(
                    "policy keeps this request on-prem, and no private upstream is healthy; try again shortly".into(),
                ));
            }
        }
        if targets.is_empty() {
            return Err(ApiError::new(
                403,
                "permission_error",
                "policy_error",
                "the policy's route leaves no upstream for this model",
            ));
        }
        Ok(targets)
    }
}

pub(super) fn private_unavailable(message: String) -> ApiError {
    ApiError::new(503, "api_error", "private_route_unavailable", message)
}

/// Applies the `max_tokens_cap` obligation: lowers the client's limit, or sets one.
pub(super) fn cap_max_tokens(parsed: &mut ParsedRequest, cap: u64) {
    use crate::api::Api;
    use serde_json::Value;
    if parsed.api == Api::Embeddings {
        return;
    }
    let body = &mut parsed.body;
    let mut capped = false;
    for field in ["max_completion_tokens", "max_tokens"] {
        if let Some(v) = body.get_mut(field) {
            if v.as_u64().is_none_or(|n| n > cap) {
                *v = Value::from(cap);
            }
            capped = true;
        }
    }
    if !capped {
        body.insert("max_tokens".into(), Value::from(cap));
    }
}
