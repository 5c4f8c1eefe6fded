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
}

impl std::fmt::Debug for CompiledBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledBundle")
            .field("dir", &self.bundle.dir)
            .field("version", &self.bundle.version)
            .finish()
    }
}

thread_local! {
    /// This thread's VMs, one per bundle generation it has evaluated recently (active and
    /// shadow, plus the previous ones briefly after a reload).
    static VMS: RefCell<Vec<(u64, RegoVM)>> = const { RefCell::new(Vec::new()) };
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
        let this = Self {
            bundle: Arc::new(bundle),
            program,
            data,
            interpreter: engine,
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
            max_instructions,
        };
        // The data must not collide with rule paths; find out now rather than per request.
        this.new_vm().map_err(compile)?;
        Ok(this)
    }

    pub fn version(&self) -> &str {
        &self.bundle.version
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
        match self.evaluate_value(input.to_rego()) {
            Ok(v) => decision_from(&v),
            Err(e) => Decision::policy_error(e),
        }
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
        VMS.with(|cell| {
            let mut vms = cell.borrow_mut();
            let idx = match vms.iter().position(|(g, _)| *g == self.generation) {
                Some(i) => i,
                None => {
                    if vms.len() >= VMS_PER_THREAD {
                        vms.remove(0);
                    }
                    vms.push((self.generation, self.new_vm()?));
                    vms.len() - 1
                }
            };
            let vm = &mut vms[idx].1;
            vm.set_input(input);
            let outcome =
                std::panic::catch_unwind(AssertUnwindSafe(|| vm.execute_entry_point_by_index(0)));
            match outcome {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => {
                    // A VM stopped mid-way (instruction limit) starts afresh next time.
                    vms.remove(idx);
                    Err(format!("evaluation failed: {e}"))
                }
                Err(_) => {
                    vms.remove(idx);
                    Err("evaluation panicked".to_owned())
                }
            }
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

    #[test]
    fn a_bundle_without_the_entrypoint_does_not_compile() {
        let e = CompiledBundle::compile(bundle("package other\nx := 1"), 1000).unwrap_err();
        assert!(e.to_string().contains("does not compile"), "{e}");
    }
}
