//! Policy decision latency for the bundled policies (`policies/`) over realistic requests: each
//! iteration builds the cordon.input/v1 document from the request context (parsed body,
//! principal, DLP summary, headers), evaluates `data.cordon.main.decision` and reads the
//! decision back into its types. The same-run baseline is regorus's tree-walking interpreter on
//! the same inputs. Criterion reports means; after it, a direct run of 20,000 decisions per
//! engine prints p50 / p99. `cargo bench -p cordon-router --bench policy`.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use cordon_router::api::{self, Api};
use cordon_router::dlp::Severity;
use cordon_router::dlp::json::EntitySummary;
use cordon_router::policy::engine::decision_from;
use cordon_router::policy::input::{
    DlpFacts, Mode, PolicyInput, RequestFacts, RouteHealth, SourceFacts, TimeFacts, UsageFacts,
    UserFacts,
};
use cordon_router::policy::{Bundle, CompiledBundle, Decision};
use criterion::{Criterion, criterion_group};

/// One request as the gateway holds it when the policy phase starts.
struct Context {
    api: Api,
    body: Vec<u8>,
    team: &'static str,
    groups: Vec<String>,
    findings: Vec<EntitySummary>,
    headers: BTreeMap<String, String>,
}

fn finding(entity: &str, severity: Severity, count: usize) -> EntitySummary {
    EntitySummary {
        entity: entity.to_owned(),
        count,
        max_confidence: 0.97,
        severity,
        locations: vec!["messages[1].content".to_owned()],
    }
}

fn contexts() -> Vec<Context> {
    let chat = |model: &str, text: &str| {
        serde_json::to_vec(&serde_json::json!({
            "model": model,
            "max_tokens": 800,
            "messages": [
                {"role": "system", "content": "You are the bank's assistant. Answer briefly."},
                {"role": "user", "content": text},
            ],
            "tools": [{"type": "function", "function": {"name": "lookup_account", "parameters": {}}}],
        }))
        .unwrap()
    };
    let prose = "Please summarise the attached complaint and draft a reply. ".repeat(20);
    vec![
        Context {
            api: Api::ChatCompletions,
            body: chat("gpt-4o-mini", &prose),
            team: "payments",
            groups: vec!["staff".into()],
            findings: vec![],
            headers: BTreeMap::new(),
        },
        Context {
            api: Api::ChatCompletions,
            body: chat("gpt-4o-mini", &prose),
            team: "payments",
            groups: vec!["staff".into()],
            findings: vec![
                finding("EMAIL_ADDRESS", Severity::Medium, 2),
                finding("PHONE_NUMBER", Severity::Medium, 1),
            ],
            headers: BTreeMap::new(),
        },
        Context {
            api: Api::ChatCompletions,
            body: chat("gpt-4o-mini", &prose),
            team: "retail",
            groups: vec!["staff".into()],
            findings: vec![
                finding("CN_RESIDENT_ID", Severity::High, 1),
                finding("CREDIT_CARD", Severity::High, 1),
            ],
            headers: BTreeMap::new(),
        },
        Context {
            api: Api::ChatCompletions,
            body: chat("gpt-4o-mini", &prose),
            team: "engineering",
            groups: vec!["staff".into()],
            findings: vec![finding("SECRET_GITHUB_TOKEN", Severity::Critical, 1)],
            headers: BTreeMap::new(),
        },
        Context {
            api: Api::ChatCompletions,
            body: chat("gpt-4o", &prose),
            team: "research",
            groups: vec!["staff".into(), "llm-premium".into()],
            findings: vec![],
            headers: BTreeMap::new(),
        },
        Context {
            api: Api::ChatCompletions,
            body: chat("gpt-4o", &prose),
            team: "payments",
            groups: vec!["staff".into()],
            findings: vec![],
            headers: BTreeMap::new(),
        },
        Context {
            api: Api::ChatCompletions,
            body: chat("gpt-4o-mini", &prose),
            team: "legal",
            groups: vec!["staff".into()],
            findings: vec![finding("EMAIL_ADDRESS", Severity::Medium, 1)],
            headers: [(
                "x-cordon-classification".to_owned(),
                "confidential".to_owned(),
            )]
            .into(),
        },
        Context {
            api: Api::ChatCompletions,
            body: chat("gpt-4o-mini", &prose),
            team: "vendors",
            groups: vec!["contractors".into()],
            findings: vec![],
            headers: BTreeMap::new(),
        },
    ]
}

/// The gateway's input-building step (see `proxy::decide`), on a context.
fn build_input(c: &Context, i: usize) -> PolicyInput {
    let mut parsed = api::parse(c.api, Some("application/json"), &c.body).unwrap();
    let (request, complete) = RequestFacts::from_body(
        parsed.api,
        &parsed.model,
        parsed.stream,
        &mut parsed.body,
        c.headers.clone(),
    );
    PolicyInput {
        schema: cordon_router::policy::input::INPUT_SCHEMA,
        request_id: format!("0190a5b4-0000-7000-8000-{i:012}"),
        time: TimeFacts::now(),
        source: SourceFacts {
            ip: Some("10.1.2.3".into()),
            mtls_principal: None,
        },
        user: UserFacts {
            authenticated: true,
            id: Some("alice".into()),
            auth_method: Some("api_key"),
            api_key_id: Some("key_0123456789abcdef".into()),
            team: Some(c.team.to_owned()),
            groups: c.groups.clone(),
            roles: vec![],
            attributes: BTreeMap::new(),
        },
        request,
        dlp: DlpFacts::from_summary(true, complete, &c.findings),
        usage: UsageFacts {
            key_requests_this_minute: Some(3),
        },
        route_health: RouteHealth {
            private: true,
            hosted: true,
        },
        mode: Mode::Enforce,
    }
}

fn compiled() -> CompiledBundle {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../policies"));
    CompiledBundle::compile(Bundle::load(dir).unwrap(), 100_000).unwrap()
}

fn vm_decision(b: &CompiledBundle, c: &Context, i: usize) -> Decision {
    b.evaluate(&build_input(c, i))
}

fn interpreter_decision(engine: &mut regorus::Engine, c: &Context, i: usize) -> Decision {
    let input = build_input(c, i);
    engine.set_input(regorus::Value::from(serde_json::to_value(&input).unwrap()));
    decision_from(
        &engine
            .eval_rule("data.cordon.main.decision".to_owned())
            .unwrap(),
    )
}

fn decisions(c: &mut Criterion) {
    let bundle = compiled();
    let ctxs = contexts();
    // Both engines must agree before either is timed.
    let mut engine = bundle.interpreter();
    for (i, ctx) in ctxs.iter().enumerate() {
        let (a, b) = (
            vm_decision(&bundle, ctx, i),
            interpreter_decision(&mut engine, ctx, i),
        );
        assert_eq!(
            (a.allow, a.route.clone(), a.reasons.len()),
            (b.allow, b.route.clone(), b.reasons.len())
        );
        assert!(!a.is_policy_error(), "{:?}", a.reasons);
    }
    let mut group = c.benchmark_group("policy_decision");
    let mut i = 0;
    group.bench_function("rvm", |b| {
        b.iter(|| {
            i += 1;
            black_box(vm_decision(&bundle, &ctxs[i % ctxs.len()], i))
        })
    });
    group.bench_function("interpreter_baseline", |b| {
        b.iter(|| {
            i += 1;
            black_box(interpreter_decision(&mut engine, &ctxs[i % ctxs.len()], i))
        })
    });
    group.bench_function("input_build_only", |b| {
        b.iter(|| {
            i += 1;
            black_box(build_input(&ctxs[i % ctxs.len()], i))
        })
    });
    group.finish();
}

fn percentiles(name: &str, mut f: impl FnMut(usize)) -> (f64, f64) {
    const N: usize = 20_000;
    for i in 0..2_000 {
        f(i);
    }
    let mut t: Vec<u64> = (0..N)
        .map(|i| {
            let s = Instant::now();
            f(i);
            s.elapsed().as_nanos() as u64
        })
        .collect();
    t.sort_unstable();
    let (p50, p99) = (t[N / 2] as f64 / 1e3, t[N * 99 / 100] as f64 / 1e3);
    println!("{name:<22} p50 {p50:>7.2} us   p99 {p99:>7.2} us   ({N} decisions)");
    (p50, p99)
}

criterion_group!(benches, decisions);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    let bundle = compiled();
    let ctxs = contexts();
    let mut engine = bundle.interpreter();
    let (vm50, vm99) = percentiles("rvm", |i| {
        black_box(vm_decision(&bundle, &ctxs[i % ctxs.len()], i));
    });
    let (in50, in99) = percentiles("interpreter_baseline", |i| {
        black_box(interpreter_decision(&mut engine, &ctxs[i % ctxs.len()], i));
    });
    println!(
        "rvm / interpreter: p50 {:.2}x, p99 {:.2}x (targets: rvm p50 <= 15 us, p99 <= 30 us)",
        vm50 / in50,
        vm99 / in99
    );
}
