//! The bundle compiled for requests: `compile_with_entrypoint` gives the compiled policy, the
//! RVM compiler turns it into one shared `Arc<Program>`, and every worker thread runs it in its
//! own `RegoVM` with an explicit instruction limit. Every failure becomes a `policy_error`
//! denial: nothing here can allow a request the policy did not allow.

use std::cell::RefCell;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use regorus::languages::rego::compiler::Compiler;
use regorus::rvm::program::Program;
use regorus::rvm::vm::RegoVM;
use regorus::{Engine, Value};

use super::PolicyError;
use super::bundle::Bundle;
use super::cache::{DecisionCache, InputReads};
use super::decision::Decision;
use super::input::PolicyInput;

/// The one rule a bundle must define.
pub const ENTRYPOINT: &str = "data.cordon.main.decision";

/// Distinguishes compiled bundles in the per-thread VM cache.
static GENERATION: AtomicU64 = AtomicU64::new(1);

/// A bundle ready to evaluate requests; shared by every worker.
pub struct CompiledBundle {
    pub bundle: Arc<Bundle>,
    program: Arc<Program>,
    data: Value,
    /// An interpreter with the bundle loaded: the baseline and `--explain`.
    interpreter: Engine,
    generation: u64,
    max_instructions: usize,
    /// What the bundle reads of the input (the decision cache's key), or why its decisions
    /// cannot be cached.
    reads: Result<InputReads, String>,
    /// Cached decisions per worker thread; 0 turns the cache off.
    cache_entries: usize,
}

/// Whether a decision came from the decision cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheUse {
    Hit,
    Miss,
    /// The cache is off, the bundle's decisions cannot be cached, or the evaluation failed
    /// (errors are never cached).
    Off,
}

impl std::fmt::Debug for CompiledBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledBundle")
            .field("dir", &self.bundle.dir)
            .field("version", &self.bundle.version)
            .finish()
    }
}

/// One bundle's VM on one worker thread, with the decisions it has cached.
struct Slot {
    generation: u64,
    vm: RegoVM,
    cache: DecisionCache,
}

thread_local! {
    /// This thread's VMs, one per bundle generation it has evaluated recently (active and
    /// shadow, plus the previous ones briefly after a reload).
    static VMS: RefCell<Vec<Slot>> = const { RefCell::new(Vec::new()) };
}

const VMS_PER_THREAD: usize = 4;

/// An engine loaded with a bundle's modules (and tests, when asked) and data.
pub fn interpreter(bundle: &Bundle, with_tests: bool) -> Result<Engine, PolicyError> {
    let compile = |message: String| PolicyError::Compile {
        dir: bundle.dir.clone(),
        message,
    };
    let mut engine = Engine::new();
    let tests = if with_tests { &bundle.tests[..] } else { &[] };
    for m in bundle.modules.iter().chain(tests) {
        engine
            .add_policy(m.path.clone(), m.source.clone())
            .map_err(|e| compile(format!("{e}")))?;
    }
    engine
        .add_data(Value::from(bundle.data.clone()))
        .map_err(|e| compile(format!("data.json: {e}")))?;
    Ok(engine)
}

impl CompiledBundle {
    pub fn compile(bundle: Bundle, max_instructions: usize) -> Result<Self, PolicyError> {
        let dir = bundle.dir.clone();
        let compile = |message: String| PolicyError::Compile {
            dir: dir.clone(),
            message,
        };
        let mut engine = interpreter(&bundle, false)?;
        let entry: regorus::Rc<str> = ENTRYPOINT.into();
        let compiled = engine
            .compile_with_entrypoint(&entry)
            .map_err(|e| compile(format!("{e}")))?;
        let program = Compiler::compile_from_policy(&compiled, &[ENTRYPOINT])
            .map_err(|e| compile(format!("the Rego VM compiler: {e}")))?;
        let data = engine.get_data();
        let reads = InputReads::of(&bundle);
        let this = Self {
            bundle: Arc::new(bundle),
            program,
            data,
            interpreter: engine,
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
            max_instructions,
            reads,
            cache_entries: 0,
        };
        // The data must not collide with rule paths; find out now rather than per request.
        this.new_vm().map_err(compile)?;
        Ok(this)
    }

    /// Keeps up to `entries` decisions per worker thread (0: none), when the bundle's decisions
    /// can be cached at all.
    pub fn with_decision_cache(mut self, entries: usize) -> Self {
        self.cache_entries = entries;
        self
    }

    pub fn version(&self) -> &str {
        &self.bundle.version
    }

    /// `Ok` when decisions are cached; otherwise why not (for `/readyz`).
    pub fn decision_cache(&self) -> Result<(), String> {
        match &self.reads {
            Ok(_) if self.cache_entries > 0 => Ok(()),
            Ok(_) => Err("policy.decision_cache is 0".to_owned()),
            Err(why) => Err(why.clone()),
        }
    }

    fn new_vm(&self) -> Result<RegoVM, String> {
        let mut vm = RegoVM::new();
        vm.load_program(self.program.clone());
        vm.set_data(self.data.clone())
            .map_err(|e| format!("data.json conflicts with the policy: {e}"))?;
        vm.set_max_instructions(self.max_instructions);
        Ok(vm)
    }

    /// Evaluates a request on this thread's VM and reads the decision back. Never fails:
    /// anything that goes wrong is a `policy_error` denial.
    pub fn evaluate(&self, input: &PolicyInput) -> Decision {
        self.evaluate_cached(input).0
    }

    /// [`Self::evaluate`], answered from this thread's decision cache when an earlier request
    /// showed the bundle the same input. Policy errors are never cached.
    pub fn evaluate_cached(&self, input: &PolicyInput) -> (Decision, CacheUse) {
        let key = match &self.reads {
            Ok(reads) if self.cache_entries > 0 => {
                let mut key = Vec::with_capacity(256);
                input.cache_key(reads, &mut key);
                Some(key)
            }
            _ => None,
        };
        self.with_slot(|slot| {
            if let Some(d) = key.as_ref().and_then(|k| slot.cache.get(k)) {
                return Ok((d.clone(), CacheUse::Hit));
            }
            let decision = decision_from(&run(&mut slot.vm, input.to_rego())?);
            let used = match key {
                Some(key) if !decision.is_policy_error() => {
                    slot.cache.insert(key, decision.clone(), self.cache_entries);
                    CacheUse::Miss
                }
                Some(_) => CacheUse::Miss,
                None => CacheUse::Off,
            };
            Ok((decision, used))
        })
        .unwrap_or_else(|e| (Decision::policy_error(e), CacheUse::Off))
    }

    /// Evaluates a JSON input document on the VM: the raw decision (null when undefined or
    /// failed) and the decision as enforced.
    pub fn evaluate_json(&self, input: serde_json::Value) -> (serde_json::Value, Decision) {
        match self.evaluate_value(Value::from(input)) {
            Ok(v) => (
                serde_json::to_value(&v).unwrap_or(serde_json::Value::Null),
                decision_from(&v),
            ),
            Err(e) => (serde_json::Value::Null, Decision::policy_error(e)),
        }
    }

    /// Runs the VM on an input document; returns the raw decision value.
    pub fn evaluate_value(&self, input: Value) -> Result<Value, String> {
        self.with_slot(|slot| run(&mut slot.vm, input))
    }

    /// Runs `f` on this thread's slot for this bundle (made on first use). A slot whose VM
    /// failed is dropped, so that a VM stopped mid-way (instruction limit) starts afresh.
    fn with_slot<T>(&self, f: impl FnOnce(&mut Slot) -> Result<T, String>) -> Result<T, String> {
        VMS.with(|cell| {
            let mut slots = cell.borrow_mut();
            let idx = match slots.iter().position(|s| s.generation == self.generation) {
                Some(i) => i,
                None => {
                    if slots.len() >= VMS_PER_THREAD {
                        slots.remove(0);
                    }
                    slots.push(Slot {
                        generation: self.generation,
                        vm: self.new_vm()?,
                        cache: DecisionCache::default(),
                    });
                    slots.len() - 1
                }
            };
            let outcome = f(&mut slots[idx]);
            if outcome.is_err() {
                slots.remove(idx);
            }
            outcome
        })
    }

    /// An interpreter with this bundle loaded (no tests), for baselines and tools.
    pub fn interpreter(&self) -> Engine {
        self.interpreter.clone()
    }

    /// The same evaluation on regorus's tree-walking interpreter: the benchmark's baseline.
    pub fn evaluate_interpreted(&self, input: &PolicyInput) -> Decision {
        let mut engine = self.interpreter.clone();
        match serde_json::to_value(input) {
            Ok(v) => engine.set_input(Value::from(v)),
            Err(e) => return Decision::policy_error(format!("cannot build the input: {e}")),
        }
        match engine.eval_rule(ENTRYPOINT.to_owned()) {
            Ok(v) => decision_from(&v),
            Err(e) => Decision::policy_error(format!("evaluation failed: {e}")),
        }
    }

    /// Evaluates with the interpreter and reports what contributed: covered lines per file
    /// and the policy's `print` output.
    pub fn explain(&self, input: serde_json::Value) -> Result<Explanation, PolicyError> {
        let mut engine = self.interpreter.clone();
        engine.set_enable_coverage(true);
        engine.set_gather_prints(true);
        engine.set_input(Value::from(input));
        let value = engine
            .eval_rule(ENTRYPOINT.to_owned())
            .map_err(|e| PolicyError::Eval(format!("{e}")))?;
        let report = engine
            .get_coverage_report()
            .map_err(|e| PolicyError::Eval(format!("coverage: {e}")))?;
        let prints = engine
            .take_prints()
            .map_err(|e| PolicyError::Eval(format!("prints: {e}")))?;
        let raw = serde_json::to_value(&value).unwrap_or(serde_json::Value::Null);
        Ok(Explanation {
            decision: decision_from(&value),
            raw,
            covered: report
                .files
                .into_iter()
                .filter(|f| !f.covered.is_empty())
                .map(|f| (f.path, f.covered.into_iter().collect()))
                .collect(),
            prints,
        })
    }
}

/// One evaluation on a VM; a panic inside regorus is an error like any other.
fn run(vm: &mut RegoVM, input: Value) -> Result<Value, String> {
    vm.set_input(input);
    match std::panic::catch_unwind(AssertUnwindSafe(|| vm.execute_entry_point_by_index(0))) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("evaluation failed: {e}")),
        Err(_) => Err("evaluation panicked".to_owned()),
    }
}

/// What `cordon policy eval --explain` shows.
#[derive(Debug, serde::Serialize)]
pub struct Explanation {
    pub decision: Decision,
    /// The decision document as the policy produced it.
    pub raw: serde_json::Value,
    /// File -> line numbers evaluated.
    pub covered: Vec<(String, Vec<u32>)>,
    pub prints: Vec<String>,
}

/// Reads a decision value back into the contract's types (a `policy_error` denial when it does
/// not fit).
pub fn decision_from(v: &Value) -> Decision {
    Decision::from_value(v).unwrap_or_else(Decision::policy_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::bundle::Module;

    fn bundle(src: &str) -> Bundle {
        Bundle {
            dir: "test".into(),
            modules: vec![Module {
                path: "main.rego".into(),
                source: src.into(),
            }],
            tests: vec![],
            data: serde_json::json!({"limits": {"cap": 7}}),
            version: "sha256:00".into(),
        }
    }

    fn eval(src: &str, input: serde_json::Value) -> Decision {
        let c = CompiledBundle::compile(bundle(src), 10_000).unwrap();
        let vm = match c.evaluate_value(Value::from(input.clone())) {
            Ok(v) => decision_from(&v),
            Err(e) => Decision::policy_error(e),
        };
        let mut engine = c.interpreter.clone();
        engine.set_input(Value::from(input));
        let interp = match engine.eval_rule(ENTRYPOINT.to_owned()) {
            Ok(v) => decision_from(&v),
            Err(e) => Decision::policy_error(format!("{e}")),
        };
        assert_eq!(vm.allow, interp.allow, "VM and interpreter agree");
        vm
    }

    #[test]
    fn vm_reads_input_and_data() {
        let d = eval(
            r#"package cordon.main
            decision := {"allow": input.ok, "route": {"target": "hosted"},
                         "obligations": {"max_tokens_cap": data.limits.cap}}"#,
            serde_json::json!({"ok": true}),
        );
        assert!(d.allow);
        assert_eq!(d.obligations.max_tokens_cap, Some(7));
    }

    #[test]
    fn every_failure_is_a_policy_error_denial() {
        // undefined
        let d = eval(
            "package cordon.main\ndecision := {\"allow\": true, \"route\": {\"target\": \"hosted\"}} if input.never",
            serde_json::json!({}),
        );
        assert!(d.is_policy_error(), "{d:?}");
        // non-boolean allow
        let d = eval(
            "package cordon.main\ndecision := {\"allow\": \"yes\"}",
            serde_json::json!({}),
        );
        assert!(d.is_policy_error());
        // unknown route target
        let d = eval(
            "package cordon.main\ndecision := {\"allow\": true, \"route\": {\"target\": \"cloud\"}}",
            serde_json::json!({}),
        );
        assert!(d.is_policy_error());
        // the instruction limit (the interpreter has none, so only the VM is asked)
        let c = CompiledBundle::compile(
            bundle("package cordon.main\nn := count([x | some x in numbers.range(1, 100000)])\ndecision := {\"allow\": n > 0, \"route\": {\"target\": \"hosted\"}}"),
            10_000,
        )
        .unwrap();
        let e = c.evaluate_value(Value::new_object()).unwrap_err();
        assert!(e.contains("nstruction"), "{e}");
    }

    /// A request to the bundled policies; `vary` changes what the policies never read.
    fn request(
        team: &str,
        groups: &[&str],
        model: &str,
        findings: &[&str],
        classification: Option<&str>,
        hour: u8,
        vary: u64,
    ) -> PolicyInput {
        use crate::policy::input::*;
        PolicyInput {
            schema: INPUT_SCHEMA,
            request_id: format!("req-{vary}"),
            time: TimeFacts {
                unix_ms: 1_700_000_000_000 + vary as i64,
                rfc3339: format!("2026-12-01T{hour:02}:00:{:02}Z", vary % 60),
                hour,
                minute: (vary % 60) as u8,
                weekday: "tuesday",
            },
            source: SourceFacts::default(),
            user: UserFacts {
                authenticated: true,
                id: Some("alice".into()),
                auth_method: Some("api_key"),
                api_key_id: Some("k1".into()),
                team: Some(team.into()),
                groups: groups.iter().map(|g| g.to_string()).collect(),
                roles: vec![],
                attributes: Default::default(),
            },
            request: RequestFacts {
                api: "chat",
                model: model.into(),
                model_route: "hosted",
                stream: vary.is_multiple_of(2),
                max_tokens: Some(100 + vary),
                tools: vec![],
                messages: MessageFacts {
                    count: 1 + vary,
                    roles: vec!["user".into()],
                },
                characters: 10 * vary,
                estimated_tokens: 3 * vary,
                headers: classification
                    .map(|c| ("x-cordon-classification".to_owned(), c.to_owned()))
                    .into_iter()
                    .collect(),
            },
            dlp: DlpFacts {
                scanned: true,
                complete: true,
                findings: findings
                    .iter()
                    .map(|e| FindingFacts {
                        entity_type: e.to_string(),
                        count: 1,
                        max_confidence: 0.9,
                        severity: crate::dlp::Severity::High,
                        locations: vec!["messages[0].content".into()],
                    })
                    .collect(),
            },
            usage: UsageFacts::default(),
            route_health: RouteHealth {
                private: true,
                hosted: true,
            },
            mode: Mode::Enforce,
        }
    }

    #[test]
    fn cached_decisions_equal_fresh_ones() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
        let load = || CompiledBundle::compile(Bundle::load(&dir).unwrap(), 100_000).unwrap();
        let cached = load().with_decision_cache(64);
        let fresh = load();
        assert_eq!(cached.decision_cache(), Ok(()));
        assert!(fresh.decision_cache().is_err(), "off unless asked for");
        let mut requests = Vec::new();
        // Every request twice over, with what the policies do not read changed each time; the
        // variations touch each field they do read.
        for vary in 0..3 {
            for (team, groups, model, findings, class, hour) in [
                ("payments", &[][..], "gpt-4o-mini", &[][..], None, 10),
                ("payments", &[], "gpt-4o", &[], None, 10),
                ("payments", &["llm-premium"][..], "gpt-4o", &[], None, 10),
                ("research", &[], "gpt-4o", &[], None, 10),
                ("interns-sandbox", &[], "gpt-4o-mini", &[], None, 10),
                ("legal", &[], "gpt-4o-mini", &[], None, 10),
                (
                    "payments",
                    &[],
                    "gpt-4o-mini",
                    &["EMAIL_ADDRESS"][..],
                    None,
                    10,
                ),
                ("payments", &[], "gpt-4o-mini", &["CREDIT_CARD"], None, 10),
                (
                    "payments",
                    &[],
                    "gpt-4o-mini",
                    &["SECRET_AWS_KEY"],
                    None,
                    10,
                ),
                (
                    "payments",
                    &[],
                    "gpt-4o-mini",
                    &["SECRET_AWS_KEY"],
                    Some("confidential"),
                    10,
                ),
                (
                    "payments",
                    &[],
                    "gpt-4o-mini",
                    &[],
                    Some("confidential"),
                    10,
                ),
                ("payments", &["contractors"], "gpt-4o-mini", &[], None, 10),
                ("payments", &["contractors"], "gpt-4o-mini", &[], None, 22),
                ("interns", &[], "gpt-4o-mini", &[], None, 10),
            ] {
                requests.push(request(team, groups, model, findings, class, hour, vary));
            }
        }
        let mut hits = 0;
        let mut distinct = std::collections::HashSet::new();
        for r in &requests {
            let (d, used) = cached.evaluate_cached(r);
            assert_eq!(d, fresh.evaluate(r), "{r:?}");
            assert!(!d.is_policy_error(), "{d:?}");
            hits += usize::from(used == CacheUse::Hit);
            distinct.insert(format!("{d:?}"));
        }
        // The first round fills the cache, the other two are answered from it.
        assert_eq!(hits, 2 * requests.len() / 3);
        assert!(
            distinct.len() >= 8,
            "the variations reach different decisions"
        );
    }

    #[test]
    fn a_bundle_without_the_entrypoint_does_not_compile() {
        let e = CompiledBundle::compile(bundle("package other\nx := 1"), 1000).unwrap_err();
        assert!(e.to_string().contains("does not compile"), "{e}");
    }
}
