//! Policy decision latency for the bundled policies (`policies/`) over realistic requests: each
//! iteration builds the cordon.input/v1 document from the request context (parsed body,
//! principal, DLP summary, headers), evaluates `data.cordon.main.decision` and reads the
//! decision back into its types. The same-run baseline is regorus's tree-walking interpreter on
//! the same inputs. Criterion reports means; after it, a direct run of 20,000 decisions per
//! engine prints p50 / p99. `rvm_decision_cache_hit` is the gateway's path for a request whose
//! policy-visible facts an earlier one shared (`policies/README.md`, "Decision cache").
//! `cargo bench -p cordon-router --bench policy`.

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

// The allocator the `cordon` binary runs with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// One request as the gateway holds it when the policy phase starts.
struct Context {
    /// The body as phase 3 left it (parsing is not part of the policy phase).
    parsed: std::cell::RefCell<api::ParsedRequest>,
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
    let ctx = |model: &str,
               team: &'static str,
               groups: &[&str],
               findings,
               header: Option<(&str, &str)>| Context {
        parsed: api::parse(
            Api::ChatCompletions,
            Some("application/json"),
            &chat(model, &prose),
        )
        .unwrap()
        .into(),
        team,
        groups: groups.iter().map(|g| g.to_string()).collect(),
        findings,
        headers: header
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .into_iter()
            .collect(),
    };
    use Severity::*;
    vec![
        ctx("gpt-4o-mini", "payments", &["staff"], vec![], None),
        ctx(
            "gpt-4o-mini",
            "payments",
            &["staff"],
            vec![
                finding("EMAIL_ADDRESS", Medium, 2),
                finding("PHONE_NUMBER", Medium, 1),
            ],
            None,
        ),
        ctx(
            "gpt-4o-mini",
            "retail",
            &["staff"],
            vec![
                finding("CN_RESIDENT_ID", High, 1),
                finding("CREDIT_CARD", High, 1),
            ],
            None,
        ),
        ctx(
            "gpt-4o-mini",
            "engineering",
            &["staff"],
            vec![finding("SECRET_GITHUB_TOKEN", Critical, 1)],
            None,
        ),
        ctx(
            "gpt-4o",
            "research",
            &["staff", "llm-premium"],
            vec![],
            None,
        ),
        ctx("gpt-4o", "payments", &["staff"], vec![], None),
        ctx(
            "gpt-4o-mini",
            "legal",
            &["staff"],
            vec![finding("EMAIL_ADDRESS", Medium, 1)],
            Some(("x-cordon-classification", "confidential")),
        ),
        ctx("gpt-4o-mini", "vendors", &["contractors"], vec![], None),
    ]
}

/// The gateway's input-building step (see `proxy::decide`), on a context.
fn build_input(c: &Context, i: usize) -> PolicyInput {
    let mut parsed = c.parsed.borrow_mut();
    let parsed = &mut *parsed;
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

/// The bundled policies, or the bundle in CORDON_BENCH_POLICIES (to measure your own).
fn compiled() -> CompiledBundle {
    let dir = std::env::var("CORDON_BENCH_POLICIES")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../policies")).to_owned()
        });
    CompiledBundle::compile(Bundle::load(&dir).unwrap(), 100_000).unwrap()
}

fn vm_decision(b: &CompiledBundle, c: &Context, i: usize) -> Decision {
    b.evaluate(&build_input(c, i))
}

fn interpreter_decision(engine: &mut regorus::Engine, c: &Context, i: usize) -> Decision {
    let input = build_input(c, i);
    engine.set_input(input.to_rego());
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
    // The gateway's path: the same requests (new ids, so new input documents) answered from
    // the decision cache once each has been seen.
    let cached = compiled().with_decision_cache(4096);
    group.bench_function("rvm_decision_cache_hit", |b| {
        b.iter(|| {
            i += 1;
            black_box(vm_decision(&cached, &ctxs[i % ctxs.len()], i))
        })
    });
    // The parts of one rvm decision.
    let inputs: Vec<PolicyInput> = ctxs
        .iter()
        .enumerate()
        .map(|(i, c)| build_input(c, i))
        .collect();
    let values: Vec<regorus::Value> = inputs.iter().map(PolicyInput::to_rego).collect();
    let outputs: Vec<regorus::Value> = values
        .iter()
        .map(|v| bundle.evaluate_value(v.clone()).unwrap())
        .collect();
    group.bench_function("part_input_to_value", |b| {
        b.iter(|| {
            i += 1;
            black_box(inputs[i % inputs.len()].to_rego())
        })
    });
    group.bench_function("part_vm_execute", |b| {
        b.iter(|| {
            i += 1;
            black_box(
                bundle
                    .evaluate_value(values[i % values.len()].clone())
                    .unwrap(),
            )
        })
    });
    group.bench_function("part_decision_readback", |b| {
        b.iter(|| {
            i += 1;
            black_box(decision_from(&outputs[i % outputs.len()]))
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
    let cached = compiled().with_decision_cache(4096);
    let (c50, c99) = percentiles("rvm_decision_cache_hit", |i| {
        black_box(vm_decision(&cached, &ctxs[i % ctxs.len()], i));
    });
    println!(
        "decision cache hit / rvm: p50 {:.2}x, p99 {:.2}x (every context seen before: the gateway's repeat callers)",
        c50 / vm50,
        c99 / vm99
    );
}
