//! The bundled policies in `policies/`: their own tests pass with full coverage, `policy check`
//! finds no undefined input references, and the VM and the interpreter give the same decision
//! for every input in `policies/testdata/inputs` (OPA parity is checked by the e2e suite).

use std::path::PathBuf;

use cordon_router::policy::{Bundle, CompiledBundle, check, testing};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn bundle() -> Bundle {
    Bundle::load(&repo().join("policies")).unwrap()
}

#[test]
fn bundled_tests_pass_with_full_coverage() {
    let report = testing::run_tests(&bundle()).unwrap();
    assert!(report.results.len() >= 30, "{}", report.render());
    assert!(report.all_passed(), "{}", report.render());
    assert_eq!(report.coverage_percent, 100.0, "{}", report.render());
}

#[test]
fn bundled_policies_reference_only_schema_fields() {
    assert_eq!(check::check_input_refs(&bundle()), vec![]);
}

#[test]
fn vm_and_interpreter_agree_on_the_corpus() {
    let compiled = CompiledBundle::compile(bundle(), 100_000).unwrap();
    let mut n = 0;
    for entry in std::fs::read_dir(repo().join("policies/testdata/inputs")).unwrap() {
        let path = entry.unwrap().path();
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let (vm, enforced) = compiled.evaluate_json(doc.clone());
        let interp = compiled.explain(doc).unwrap();
        assert_eq!(vm, interp.raw, "{}", path.display());
        assert!(
            !enforced.is_policy_error(),
            "{}: {:?}",
            path.display(),
            enforced.reasons
        );
        n += 1;
    }
    assert!(n >= 20);
}
