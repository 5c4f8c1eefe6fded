//! The decision document, `data.cordon.main.decision`, read back into types. Anything that does
//! not fit the contract (an undefined decision, a non-boolean `allow`, an unknown route target
//! or DLP action) becomes a denial with reason code `policy_error`: the engine fails closed.

use std::collections::BTreeMap;

use regorus::Value;
use serde::Serialize;

use crate::dlp::Action;

/// Where an allowed request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteTarget {
    /// On-prem: the private inference server, never a hosted provider.
    Private,
    Hosted,
}

impl RouteTarget {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Private => "private",
            Self::Hosted => "hosted",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Route {
    pub target: RouteTarget,
    /// A catalogue model to serve the request with instead of the requested one.
    pub model: Option<String>,
    /// Restricts the targets to this provider.
    pub provider: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reason {
    pub code: String,
    pub message: String,
    /// The rule that gave the reason (free text, e.g. `residency.secrets_block`).
    pub rule: String,
}

/// How much of the request the audit log keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    Metadata,
    Masked,
    Full,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Obligations {
    pub log_level: LogLevel,
    pub retain_prompt: bool,
    pub max_tokens_cap: Option<u64>,
    pub alert: bool,
}

impl Default for Obligations {
    fn default() -> Self {
        Self {
            log_level: LogLevel::Metadata,
            retain_prompt: false,
            max_tokens_cap: None,
            alert: false,
        }
    }
}

/// The answer a denied request gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Denial {
    pub status: u16,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub allow: bool,
    pub reasons: Vec<Reason>,
    /// Present when `allow` is true.
    pub route: Option<Route>,
    #[serde(serialize_with = "actions_as_strings")]
    pub dlp_actions: BTreeMap<String, Action>,
    /// Present when `allow` is false.
    pub response: Option<Denial>,
    pub obligations: Obligations,
}

fn actions_as_strings<S: serde::Serializer>(
    actions: &BTreeMap<String, Action>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_map(actions.iter().map(|(k, v)| (k, v.to_string())))
}

/// The reason code of every decision the engine itself had to make.
pub const POLICY_ERROR: &str = "policy_error";

impl Decision {
    /// The fail-closed denial: the policy could not give a valid decision.
    pub fn policy_error(message: impl Into<String>) -> Self {
        let message = message.into();
        Self {
            allow: false,
            reasons: vec![Reason {
                code: POLICY_ERROR.to_owned(),
                message: message.clone(),
                rule: "cordon.engine".to_owned(),
            }],
            route: None,
            dlp_actions: BTreeMap::new(),
            response: Some(Denial {
                status: 403,
                message: format!(
                    "the request was denied because the policy could not decide: {message}"
                ),
            }),
            obligations: Obligations {
                alert: true,
                ..Obligations::default()
            },
        }
    }

    pub fn is_policy_error(&self) -> bool {
        !self.allow && self.reasons.iter().any(|r| r.code == POLICY_ERROR)
    }

    pub fn reason_codes(&self) -> Vec<&str> {
        self.reasons.iter().map(|r| r.code.as_str()).collect()
    }

    /// Reads a decision document, as the engine produced it, checking it against the contract.
    /// `Err` says what was wrong; callers turn it into [`Decision::policy_error`]. Read straight
    /// from the engine's values: converting to JSON first copied every string of the decision.
    pub fn from_value(v: &Value) -> Result<Self, String> {
        match v {
            Value::Object(_) => {}
            Value::Null | Value::Undefined => {
                return Err("data.cordon.main.decision is undefined".into());
            }
            _ => return Err("data.cordon.main.decision is not an object".into()),
        }
        let allow = match field(v, "allow") {
            Some(Value::Bool(b)) => *b,
            Some(other) => return Err(format!("`allow` is {other}, not a boolean")),
            None => return Err("`allow` is missing".into()),
        };
        let reasons = match field(v, "reasons") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a.iter().map(reason).collect::<Result<_, _>>()?,
            Some(Value::Set(s)) => s.iter().map(reason).collect::<Result<_, _>>()?,
            Some(_) => return Err("`reasons` is not an array".into()),
        };
        let route = match field(v, "route") {
            None | Some(Value::Null) if !allow => None,
            None | Some(Value::Null) => return Err("`route` is missing from an allow".into()),
            Some(r) => Some(route(r)?),
        };
        let mut dlp_actions = BTreeMap::new();
        match field(v, "dlp_actions") {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                for (entity, action) in m.iter() {
                    let Value::String(entity) = entity else {
                        return Err(format!(
                            "dlp_actions has a key {entity} that is not a string"
                        ));
                    };
                    let Value::String(a) = action else {
                        return Err(format!("dlp_actions.{entity} is not a string"));
                    };
                    let parsed = match a.as_ref() {
                        "allow" | "redact" | "mask" | "hash" | "pseudonymise" | "block" => {
                            a.parse::<Action>()
                        }
                        _ => Err(String::new()),
                    };
                    let parsed = parsed.map_err(|_| {
                        format!(
                            "dlp_actions.{entity} is `{a}`: allow, redact, mask, hash, pseudonymise or block"
                        )
                    })?;
                    dlp_actions.insert(entity.to_string(), parsed);
                }
            }
            Some(_) => return Err("`dlp_actions` is not an object".into()),
        }
        let response = if allow {
            None
        } else {
            Some(denial(field(v, "response"), &reasons)?)
        };
        let obligations = match field(v, "obligations") {
            None | Some(Value::Null) => Obligations::default(),
            Some(o) => obligations(o)?,
        };
        Ok(Self {
            allow,
            reasons,
            route,
            dlp_actions,
            response,
            obligations,
        })
    }
}

/// An object's field; `None` when it is missing (or the value is not an object).
fn field<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    match &v[name] {
        Value::Undefined => None,
        f => Some(f),
    }
}

fn string_field(v: &Value, name: &str, what: &str) -> Result<Option<String>, String> {
    match field(v, name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.to_string())),
        Some(_) => Err(format!("{what}.{name} is not a string")),
    }
}

fn reason(v: &Value) -> Result<Reason, String> {
    let code =
        string_field(v, "code", "reasons[]")?.ok_or_else(|| "a reason has no `code`".to_owned())?;
    Ok(Reason {
        message: string_field(v, "message", "reasons[]")?.unwrap_or_default(),
        rule: string_field(v, "rule", "reasons[]")?.unwrap_or_default(),
        code,
    })
}

fn route(v: &Value) -> Result<Route, String> {
    let target = match field(v, "target") {
        Some(Value::String(s)) if s.as_ref() == "private" => RouteTarget::Private,
        Some(Value::String(s)) if s.as_ref() == "hosted" => RouteTarget::Hosted,
        Some(other) => {
            return Err(format!(
                "route.target is {other}: it must be \"private\" or \"hosted\""
            ));
        }
        None => return Err("route.target is missing".into()),
    };
    Ok(Route {
        target,
        model: string_field(v, "model", "route")?,
        provider: string_field(v, "provider", "route")?,
    })
}

fn denial(v: Option<&Value>, reasons: &[Reason]) -> Result<Denial, String> {
    let status = match v.and_then(|r| field(r, "status")) {
        None | Some(Value::Null) => 403,
        // A whole number: an integer, or a float without a fraction (Rego does not tell them
        // apart).
        Some(n @ Value::Number(_)) => match n.as_u64() {
            Ok(s @ 400..=599) => s as u16,
            _ => return Err(format!("response.status {n} is not a 4xx or 5xx status")),
        },
        Some(_) => return Err("response.status is not a number".into()),
    };
    let message = match v {
        Some(r) => string_field(r, "message", "response")?,
        None => None,
    }
    .unwrap_or_else(|| {
        let parts: Vec<&str> = reasons.iter().map(|r| r.message.as_str()).collect();
        if parts.is_empty() {
            "the request was denied by policy".to_owned()
        } else {
            parts.join("; ")
        }
    });
    Ok(Denial { status, message })
}

fn obligations(v: &Value) -> Result<Obligations, String> {
    if !matches!(v, Value::Object(_)) {
        return Err("`obligations` is not an object".into());
    }
    let log_level = match field(v, "log_level") {
        None | Some(Value::Null) => LogLevel::Metadata,
        Some(Value::String(s)) => match s.as_ref() {
            "metadata" => LogLevel::Metadata,
            "masked" => LogLevel::Masked,
            "full" => LogLevel::Full,
            _ => {
                return Err(format!(
                    "obligations.log_level is `{s}`: metadata, masked or full"
                ));
            }
        },
        Some(_) => return Err("obligations.log_level is not a string".into()),
    };
    let flag = |name: &str| match field(v, name) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(format!("obligations.{name} is not a boolean")),
    };
    let max_tokens_cap = match field(v, "max_tokens_cap") {
        None | Some(Value::Null) => None,
        Some(n @ Value::Number(_)) => {
            Some(n.as_u64().ok().filter(|&c| c > 0).ok_or_else(|| {
                format!("obligations.max_tokens_cap {n} is not a positive integer")
            })?)
        }
        Some(_) => return Err("obligations.max_tokens_cap is not a number".into()),
    };
    Ok(Obligations {
        log_level,
        retain_prompt: flag("retain_prompt")?,
        max_tokens_cap,
        alert: flag("alert")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_full_allow_reads_back() {
        let d = Decision::from_value(&Value::from(json!({
            "allow": true,
            "reasons": [{"code": "residency", "message": "personal data", "rule": "residency.pii"}],
            "route": {"target": "private", "model": "private-chat"},
            "dlp_actions": {"EMAIL_ADDRESS": "allow", "SECRET_*": "redact"},
            "obligations": {"log_level": "masked", "retain_prompt": true, "max_tokens_cap": 512, "alert": false}
        })))
        .unwrap();
        assert!(d.allow);
        assert_eq!(d.route.as_ref().unwrap().target, RouteTarget::Private);
        assert_eq!(d.dlp_actions["SECRET_*"], Action::Redact);
        assert_eq!(d.obligations.max_tokens_cap, Some(512));
        assert_eq!(d.obligations.log_level, LogLevel::Masked);
    }

    #[test]
    fn a_denial_gets_a_status_and_message() {
        let d = Decision::from_value(&Value::from(json!({
            "allow": false,
            "reasons": [{"code": "model_access", "message": "team x may not use gpt-4o"}],
        })))
        .unwrap();
        let r = d.response.unwrap();
        assert_eq!(r.status, 403);
        assert_eq!(r.message, "team x may not use gpt-4o");
    }

    #[test]
    fn contract_violations_are_errors() {
        for bad in [
            json!(null),
            json!([]),
            json!({"allow": "yes", "route": {"target": "hosted"}}),
            json!({"allow": 1}),
            json!({"reasons": []}),
            json!({"allow": true}),
            json!({"allow": true, "route": {"target": "moon"}}),
            json!({"allow": true, "route": {}}),
            json!({"allow": true, "route": {"target": "hosted"}, "dlp_actions": {"X": "mask:2"}}),
            json!({"allow": true, "route": {"target": "hosted"}, "dlp_actions": {"X": "shred"}}),
            json!({"allow": true, "route": {"target": "hosted"}, "obligations": {"log_level": "all"}}),
            json!({"allow": true, "route": {"target": "hosted"}, "obligations": {"max_tokens_cap": 1.5}}),
            json!({"allow": false, "response": {"status": 200}}),
            json!({"allow": true, "route": {"target": "hosted"}, "reasons": [{"message": "no code"}]}),
        ] {
            assert!(
                Decision::from_value(&Value::from(bad.clone())).is_err(),
                "accepted {bad}"
            );
        }
    }

    #[test]
    fn policy_error_denies() {
        let d = Decision::policy_error("boom");
        assert!(!d.allow && d.is_policy_error());
        assert_eq!(d.reason_codes(), ["policy_error"]);
    }
}
