//! The official Python SDKs (`openai`, `anthropic`) drive Cordon. The interpreter comes from
//! CORDON_PYTHON, which `tests/run.sh` points at its virtualenv.

use crate::harness::{Fixture, Gateway};

fn python() -> String {
    std::env::var("CORDON_PYTHON").expect(
        "CORDON_PYTHON is not set: run the SDK tests through tests/run.sh, which installs the SDKs into a virtualenv",
    )
}

async fn run_script(script: &str) -> String {
    let fx = Fixture::start().await;
    let gw = Gateway::start(&fx.config());
    let path = format!("{}/../tests/python/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = tokio::process::Command::new(python())
        .arg(&path)
        .env("CORDON_BASE_URL", &gw.base)
        .env("CORDON_KEY", &gw.key)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{script} failed\nstdout: {stdout}\nstderr: {}\ngateway log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        gw.log()
    );
    stdout
}

#[tokio::test(flavor = "multi_thread")]
async fn openai_python_sdk() {
    let out = run_script("openai_sdk_check.py").await;
    assert!(out.contains("checks passed"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn anthropic_python_sdk() {
    let out = run_script("anthropic_sdk_check.py").await;
    assert!(out.contains("checks passed"), "{out}");
}
