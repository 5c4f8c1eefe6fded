//! The input document, `cordon.input/v1`: what a policy may know about a request. It carries
//! facts (who, which API and model, how big, what DLP found, which routes are healthy) and never
//! the prompt text. `policies/schema/input.schema.json` is its JSON Schema.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::api::Api;
use crate::dlp::Severity;
use crate::dlp::json::{EntitySummary, for_each_text};

use super::cache::{InputReads, Read};

pub const INPUT_SCHEMA: &str = "cordon.input/v1";

#[derive(Debug, Clone, Serialize)]
pub struct PolicyInput {
    pub schema: &'static str,
    pub request_id: String,
    pub time: TimeFacts,
    pub source: SourceFacts,
    pub user: UserFacts,
    pub request: RequestFacts,
    pub dlp: DlpFacts,
    pub usage: UsageFacts,
    pub route_health: RouteHealth,
    pub mode: Mode,
}

/// When the request arrived, in UTC. Hour and weekday are given so that policies need no time
/// builtins (which differ between engines) for office-hours rules.
#[derive(Debug, Clone, Serialize)]
pub struct TimeFacts {
    pub unix_ms: i64,
    pub rfc3339: String,
    pub hour: u8,
    pub minute: u8,
    /// `monday` .. `sunday`.
    pub weekday: &'static str,
}

impl TimeFacts {
    pub fn at(t: time::OffsetDateTime) -> Self {
        let t = t.to_offset(time::UtcOffset::UTC);
        Self {
            unix_ms: (t.unix_timestamp_nanos() / 1_000_000) as i64,
            rfc3339: t
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            hour: t.hour(),
            minute: t.minute(),
            weekday: match t.weekday() {
                time::Weekday::Monday => "monday",
                time::Weekday::Tuesday => "tuesday",
                time::Weekday::Wednesday => "wednesday",
                time::Weekday::Thursday => "thursday",
                time::Weekday::Friday => "friday",
                time::Weekday::Saturday => "saturday",
                time::Weekday::Sunday => "sunday",
            },
        }
    }

    pub fn now() -> Self {
        Self::at(time::OffsetDateTime::now_utc())
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SourceFacts {
    pub ip: Option<String>,
    /// The verified client certificate's subject on the HTTPS listener, when one was presented.
    pub mtls_principal: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct UserFacts {
    pub authenticated: bool,
    pub id: Option<String>,
    pub auth_method: Option<&'static str>,
    pub api_key_id: Option<String>,
    pub team: Option<String>,
    pub groups: Vec<String>,
    pub roles: Vec<String>,
    pub attributes: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RequestFacts {
    /// `chat`, `completions`, `embeddings` or `messages`.
    pub api: &'static str,
    /// The catalogue name of the requested model (aliases resolved).
    pub model: String,
    /// `private` when the requested model is served on-prem, else `hosted`.
    pub model_route: &'static str,
    pub stream: bool,
    pub max_tokens: Option<u64>,
    /// Names of the tools the client offers the model.
    pub tools: Vec<String>,
    pub messages: MessageFacts,
    /// Characters of model-visible text.
    pub characters: u64,
    /// A rough token estimate: a quarter of the ASCII characters plus one per other character
    /// (CJK text is about a token per character).
    pub estimated_tokens: u64,
    /// Allow-listed request headers (lower-case names), values cut at 256 bytes.
    pub headers: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct MessageFacts {
    pub count: u64,
    /// Distinct roles, sorted (`system`, `user`, `assistant`, `tool`).
    pub roles: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct DlpFacts {
    /// DLP ran on this request.
    pub scanned: bool,
    /// Every part the model reads was scanned (false when parts such as images were not).
    pub complete: bool,
    pub findings: Vec<FindingFacts>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FindingFacts {
    pub entity_type: String,
    pub count: u64,
    /// Rounded to two decimals, so that both engines compare the same number.
    pub max_confidence: f64,
    pub severity: Severity,
    pub locations: Vec<String>,
}

/// Counters the gateway keeps, where known.
#[derive(Debug, Clone, Default, Serialize)]
pub struct UsageFacts {
    /// Requests made with this API key in the current minute, this one included.
    pub key_requests_this_minute: Option<u64>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct RouteHealth {
    pub private: bool,
    pub hosted: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Enforce,
    Shadow,
}

impl DlpFacts {
    pub fn from_summary(scanned: bool, complete: bool, summary: &[EntitySummary]) -> Self {
        Self {
            scanned,
            complete: scanned && complete,
            findings: summary
                .iter()
                .map(|s| FindingFacts {
                    entity_type: s.entity.clone(),
                    count: s.count as u64,
                    max_confidence: (f64::from(s.max_confidence) * 100.0).round() / 100.0,
                    severity: s.severity,
                    locations: s.locations.clone(),
                })
                .collect(),
        }
    }
}

impl RequestFacts {
    /// Reads the facts of a parsed body. Also says whether every model-visible part is text
    /// that DLP can scan (second value).
    pub fn from_body(
        api: Api,
        model: &str,
        stream: bool,
        body: &mut Map<String, Value>,
        headers: BTreeMap<String, String>,
    ) -> (Self, bool) {
        let (mut ascii, mut other) = (0u64, 0u64);
        for_each_text(api, body, &mut |_, text| {
            for c in text.chars() {
                if c.is_ascii() {
                    ascii += 1;
                } else {
                    other += 1;
                }
            }
        });
        let mut messages = MessageFacts::default();
        let mut complete = true;
        let mut roles = std::collections::BTreeSet::new();
        if let Some(Value::Array(ms)) = body.get("messages") {
            messages.count = ms.len() as u64;
            for m in ms {
                if let Some(r) = m.get("role").and_then(Value::as_str) {
                    roles.insert(r.to_owned());
                }
                if let Some(Value::Array(parts)) = m.get("content") {
                    complete &= parts.iter().all(|p| {
                        matches!(
                            p.get("type").and_then(Value::as_str),
                            Some("text" | "tool_result" | "tool_use")
                        )
                    });
                }
            }
        }
        if api == Api::Messages && body.get("system").is_some() {
            roles.insert("system".to_owned());
        }
        messages.roles = roles.into_iter().collect();
        let number = |k: &str| body.get(k).and_then(Value::as_u64);
        let max_tokens = number("max_completion_tokens").or_else(|| number("max_tokens"));
        let tools = match body.get("tools") {
            Some(Value::Array(ts)) => ts
                .iter()
                .filter_map(|t| {
                    t.get("function")
                        .and_then(|f| f.get("name"))
                        .or_else(|| t.get("name"))
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                })
                .collect(),
            _ => Vec::new(),
        };
        (
            Self {
                api: api.as_str(),
                model: model.to_owned(),
                model_route: "hosted",
                stream,
                max_tokens,
                tools,
                messages,
                characters: ascii + other,
                estimated_tokens: ascii.div_ceil(4) + other,
                headers,
            },
            complete,
        )
    }
}

impl PolicyInput {
    /// Appends the decision cache's key for this input: the JSON of every part the bundle
    /// reads ([`InputReads`]), each followed by a NUL byte (which compact JSON never holds), in
    /// the reads' fixed order. Equal keys mean equal inputs as far as the bundle can see.
    pub fn cache_key(&self, reads: &InputReads, out: &mut Vec<u8>) {
        fn put(out: &mut Vec<u8>, v: &impl Serialize) {
            // Writing these types to memory cannot fail.
            let _ = serde_json::to_writer(&mut *out, v);
            out.push(0);
        }
        /// The named sub-fields of a struct; names the input does not have are always undefined
        /// and add nothing.
        macro_rules! pick {
            ($subs:expr, $s:expr, [$($f:ident),* $(,)?]) => {
                for sub in $subs {
                    match sub.as_str() {
                        $(stringify!($f) => put(out, &$s.$f),)*
                        _ => {}
                    }
                }
            };
        }
        for (field, read) in reads.fields() {
            let subs = match read {
                Read::Whole => None,
                Read::Fields(f) => Some(f),
            };
            match (field, subs) {
                ("schema", _) => put(out, &self.schema),
                ("request_id", _) => put(out, &self.request_id),
                ("time", Some(f)) => pick!(f, self.time, [unix_ms, rfc3339, hour, minute, weekday]),
                ("time", None) => put(out, &self.time),
                ("source", _) => put(out, &self.source),
                ("user", Some(f)) => pick!(
                    f,
                    self.user,
                    [
                        authenticated,
                        id,
                        auth_method,
                        api_key_id,
                        team,
                        groups,
                        roles,
                        attributes
                    ]
                ),
                ("user", None) => put(out, &self.user),
                ("request", Some(f)) => pick!(
                    f,
                    self.request,
                    [
                        api,
                        model,
                        model_route,
                        stream,
                        max_tokens,
                        tools,
                        messages,
                        characters,
                        estimated_tokens,
                        headers
                    ]
                ),
                ("request", None) => put(out, &self.request),
                ("dlp", Some(f)) => pick!(f, self.dlp, [scanned, complete, findings]),
                ("dlp", None) => put(out, &self.dlp),
                ("usage", _) => put(out, &self.usage),
                ("route_health", _) => put(out, &self.route_health),
                ("mode", _) => put(out, &self.mode),
                _ => {}
            }
        }
    }
}

/// The allow-listed headers of a request, lower-cased, values cut at 256 bytes.
pub fn allowed_headers<'a>(
    allow: &[String],
    headers: impl Iterator<Item = (&'a str, &'a [u8])>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (name, value) in headers {
        let name = name.to_ascii_lowercase();
        if allow.contains(&name) {
            let v = String::from_utf8_lossy(value);
            let mut end = v.len().min(256);
            while !v.is_char_boundary(end) {
                end -= 1;
            }
            out.insert(name, v[..end].to_owned());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chat_facts_count_text_roles_tools_and_tokens() {
        let mut body = json!({
            "model": "m",
            "max_tokens": 99,
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "你好 abcd"}, {"type": "image_url", "image_url": {"url": "x"}}]},
            ],
            "tools": [{"type": "function", "function": {"name": "lookup"}}]
        });
        let (f, complete) = RequestFacts::from_body(
            Api::ChatCompletions,
            "m",
            false,
            body.as_object_mut().unwrap(),
            BTreeMap::new(),
        );
        assert!(!complete, "the image part was not scanned");
        assert_eq!(f.messages.count, 2);
        assert_eq!(f.messages.roles, ["system", "user"]);
        assert_eq!(f.tools, ["lookup"]);
        assert_eq!(f.max_tokens, Some(99));
        // "be brief" (8) + "你好 abcd" (2 CJK + 5 ASCII)
        assert_eq!(f.characters, 15);
        assert_eq!(f.estimated_tokens, 13usize.div_ceil(4) as u64 + 2);
    }

    #[test]
    fn direct_conversion_equals_the_json_form() {
        let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": [{"name": "t"}]});
        let (request, complete) = RequestFacts::from_body(
            Api::Messages,
            "m",
            true,
            body.as_object_mut().unwrap(),
            [("x-a".to_owned(), "b".to_owned())].into(),
        );
        let input = PolicyInput {
            schema: INPUT_SCHEMA,
            request_id: "r".into(),
            time: TimeFacts::now(),
            source: SourceFacts {
                ip: Some("10.0.0.1".into()),
                mtls_principal: None,
            },
            user: UserFacts {
                authenticated: true,
                id: Some("u".into()),
                auth_method: Some("api_key"),
                api_key_id: None,
                team: None,
                groups: vec!["g".into()],
                roles: vec![],
                attributes: [("department".to_owned(), "hr".to_owned())].into(),
            },
            request,
            dlp: DlpFacts::from_summary(
                true,
                complete,
                &[EntitySummary {
                    entity: "EMAIL_ADDRESS".into(),
                    count: 2,
                    max_confidence: 0.8999,
                    severity: Severity::High,
                    locations: vec!["messages[0].content".into()],
                }],
            ),
            usage: UsageFacts {
                key_requests_this_minute: Some(4),
            },
            route_health: RouteHealth {
                private: false,
                hosted: true,
            },
            mode: Mode::Shadow,
        };
        let via_json = regorus::Value::from(serde_json::to_value(&input).unwrap());
        assert_eq!(input.to_rego(), via_json);
    }

    #[test]
    fn time_facts_are_utc() {
        let t = time::macros::datetime!(2026-11-22 23:30 +08:00);
        let f = TimeFacts::at(t);
        assert_eq!(f.hour, 15);
        assert_eq!(f.weekday, "sunday");
        assert_eq!(f.rfc3339, "2026-11-22T15:30:00Z");
    }

    #[test]
    fn only_allowed_headers_pass_and_long_values_are_cut() {
        let long = "é".repeat(200);
        let h = allowed_headers(
            &["x-cordon-classification".to_owned()],
            [
                ("X-Cordon-Classification", "secret".as_bytes()),
                ("authorization", b"Bearer ck-xyz".as_slice()),
            ]
            .into_iter(),
        );
        assert_eq!(h.len(), 1);
        assert_eq!(h["x-cordon-classification"], "secret");
        let h = allowed_headers(&["x-a".to_owned()], [("x-a", long.as_bytes())].into_iter());
        assert!(h["x-a"].len() <= 256);
    }
}

/// Direct conversion to the engine's value type. Going through `serde_json::Value` allocated
/// every key twice and cost a third of a decision; here keys are shared per thread and each
/// object is built once.
mod rego {
    use std::collections::BTreeMap;

    use regorus::Value;

    use super::*;

    /// A key of the input document: made once per thread and call site, then shared (a
    /// reference-count increment, no hashing, no allocation).
    macro_rules! key {
        ($k:literal) => {{
            thread_local! {
                static KEY: Value = Value::from($k);
            }
            KEY.with(Value::clone)
        }};
    }

    fn obj<const N: usize>(pairs: [(Value, Value); N]) -> Value {
        Value::from(pairs.into_iter().collect::<BTreeMap<_, _>>())
    }

    fn s(v: &str) -> Value {
        Value::from(v)
    }

    fn opt_s(v: Option<&str>) -> Value {
        v.map_or(Value::Null, Value::from)
    }

    fn opt_u(v: Option<u64>) -> Value {
        v.map_or(Value::Null, Value::from)
    }

    fn strings(v: &[String]) -> Value {
        Value::from(
            v.iter()
                .map(|x| Value::from(x.as_str()))
                .collect::<Vec<_>>(),
        )
    }

    fn map(m: &BTreeMap<String, String>) -> Value {
        Value::from(
            m.iter()
                .map(|(k, v)| (Value::from(k.as_str()), Value::from(v.as_str())))
                .collect::<BTreeMap<_, _>>(),
        )
    }

    impl PolicyInput {
        /// The input document as the engine's value (same content as its JSON form).
        pub fn to_rego(&self) -> Value {
            let t = &self.time;
            let u = &self.user;
            let r = &self.request;
            obj([
                (key!("schema"), s(self.schema)),
                (key!("request_id"), s(&self.request_id)),
                (
                    key!("time"),
                    obj([
                        (key!("unix_ms"), Value::from(t.unix_ms)),
                        (key!("rfc3339"), s(&t.rfc3339)),
                        (key!("hour"), Value::from(u64::from(t.hour))),
                        (key!("minute"), Value::from(u64::from(t.minute))),
                        (key!("weekday"), s(t.weekday)),
                    ]),
                ),
                (
                    key!("source"),
                    obj([
                        (key!("ip"), opt_s(self.source.ip.as_deref())),
                        (
                            key!("mtls_principal"),
                            opt_s(self.source.mtls_principal.as_deref()),
                        ),
                    ]),
                ),
                (
                    key!("user"),
                    obj([
                        (key!("authenticated"), Value::Bool(u.authenticated)),
                        (key!("id"), opt_s(u.id.as_deref())),
                        (key!("auth_method"), opt_s(u.auth_method)),
                        (key!("api_key_id"), opt_s(u.api_key_id.as_deref())),
                        (key!("team"), opt_s(u.team.as_deref())),
                        (key!("groups"), strings(&u.groups)),
                        (key!("roles"), strings(&u.roles)),
                        (key!("attributes"), map(&u.attributes)),
                    ]),
                ),
                (
                    key!("request"),
                    obj([
                        (key!("api"), s(r.api)),
                        (key!("model"), s(&r.model)),
                        (key!("model_route"), s(r.model_route)),
                        (key!("stream"), Value::Bool(r.stream)),
                        (key!("max_tokens"), opt_u(r.max_tokens)),
                        (key!("tools"), strings(&r.tools)),
                        (
                            key!("messages"),
                            obj([
                                (key!("count"), Value::from(r.messages.count)),
                                (key!("roles"), strings(&r.messages.roles)),
                            ]),
                        ),
                        (key!("characters"), Value::from(r.characters)),
                        (key!("estimated_tokens"), Value::from(r.estimated_tokens)),
                        (key!("headers"), map(&r.headers)),
                    ]),
                ),
                (
                    key!("dlp"),
                    obj([
                        (key!("scanned"), Value::Bool(self.dlp.scanned)),
                        (key!("complete"), Value::Bool(self.dlp.complete)),
                        (
                            key!("findings"),
                            Value::from(
                                self.dlp
                                    .findings
                                    .iter()
                                    .map(|f| {
                                        obj([
                                            (key!("entity_type"), s(&f.entity_type)),
                                            (key!("count"), Value::from(f.count)),
                                            (key!("max_confidence"), Value::from(f.max_confidence)),
                                            (key!("severity"), s(f.severity.as_str())),
                                            (key!("locations"), strings(&f.locations)),
                                        ])
                                    })
                                    .collect::<Vec<_>>(),
                            ),
                        ),
                    ]),
                ),
                (
                    key!("usage"),
                    obj([(
                        key!("key_requests_this_minute"),
                        opt_u(self.usage.key_requests_this_minute),
                    )]),
                ),
                (
                    key!("route_health"),
                    obj([
                        (key!("private"), Value::Bool(self.route_health.private)),
                        (key!("hosted"), Value::Bool(self.route_health.hosted)),
                    ]),
                ),
                (
                    key!("mode"),
                    s(match self.mode {
                        Mode::Enforce => "enforce",
                        Mode::Shadow => "shadow",
                    }),
                ),
            ])
        }
    }
}
