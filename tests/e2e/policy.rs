//! Policy in the gateway, end to end, with the bundled Rego in `policies/`: denials with their
//! reasons, routing by decision (private only on-prem, never a hosted fallback), obligations,
//! fail-closed errors, hot reload (file watch and SIGHUP), shadow mode, and OPA parity.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::gateway::cordon;
use crate::harness::util::{copy_dir, eventually, get_text, metric, readyz, repo};
use crate::harness::{Fixture, Gateway};

const CN_ID: &str = "11010519491231002X";
const EMAIL: &str = "alice.smith@example.com";

async fn post(gw: &Gateway, key: &str, body: Value, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

fn chat(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

/// Edits a bundle's data.json so that gpt-test is restricted to a group nobody is in (the
/// bundle's own tests still pass).
fn restrict_gpt_test(bundle: &Path) {
    let data_path = bundle.join("data.json");
    let mut data: Value =
        serde_json::from_str(&std::fs::read_to_string(&data_path).unwrap()).unwrap();
    data["tables"]["model_access"]["restricted_models"]["gpt-test"] =
        json!({"groups": ["nobody"], "teams": []});
    std::fs::write(&data_path, serde_json::to_string_pretty(&data).unwrap()).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn every_response_carries_the_decision_id() {
    let fx = Fixture::start().await;
    let gw = Gateway::start(&fx.config());
    let resp = post(&gw, &gw.key, chat("gpt-test", "hello"), &[]).await;
    assert_eq!(resp.status(), 200);
    let h = resp.headers();
    assert_eq!(h["x-cordon-decision-id"], h["x-request-id"]);
    assert_eq!(h["x-cordon-route"], "hosted");
    assert!(h.contains_key("x-cordon-policy-version"));
    // Errors too, including ones answered before the policy runs.
    let resp = post(&gw, "ck-wrong", chat("gpt-test", "hello"), &[]).await;
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().contains_key("x-cordon-decision-id"));
    let ready = readyz(&gw).await;
    assert!(
        ready["policy"]["version"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn resident_ids_stay_on_prem_with_their_value() {
    let fx = Fixture::start().await;
    let gw = Gateway::start(&fx.config());
    let text = format!("身份证号{CN_ID}, email {EMAIL}");
    let resp = post(&gw, &gw.key, chat("gpt-test", &text), &[]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-cordon-route"], "private");
    let reqs = fx.mock.requests();
    assert_eq!(reqs.len(), 1);
    let sent: Value = serde_json::from_slice(&reqs[0].body).unwrap();
    // Served by the private counterpart; on the private route personal data is allowed.
    assert_eq!(sent["model"], "private-upstream");
    assert_eq!(sent["messages"][0]["content"], text);
    // A classification header does the same without any finding.
    let resp = post(
        &gw,
        &gw.key,
        chat("gpt-test", "quarterly numbers"),
        &[("x-cordon-classification", "confidential")],
    )
    .await;
    assert_eq!(resp.headers()["x-cordon-route"], "private");
    let sent: Value = serde_json::from_slice(&fx.mock.requests()[1].body).unwrap();
    assert_eq!(sent["model"], "private-upstream");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_private_route_never_falls_back_to_a_hosted_provider() {
    let fx = Fixture::start().await;
    let gw = Gateway::start(&fx.config());
    // The counterpart's on-prem provider is down.
    let resp = post(
        &gw,
        &gw.key,
        chat("gpt-private-down", &format!("id {CN_ID}")),
        &[],
    )
    .await;
    assert_eq!(resp.status(), 503);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "private_route_unavailable");
    // Now it is known to be down: refused without trying.
    let resp = post(
        &gw,
        &gw.key,
        chat("gpt-private-down", &format!("id {CN_ID}")),
        &[],
    )
    .await;
    assert_eq!(resp.status(), 503);
    // A model without a private counterpart cannot take private traffic either.
    let resp = post(&gw, &gw.key, chat("gated", &format!("id {CN_ID}")), &[]).await;
    assert_eq!(resp.status(), 503);
    assert!(
        fx.mock.requests().is_empty(),
        "a private request reached a hosted provider"
    );
    // Without sensitive data the same model goes to its hosted provider.
    let resp = post(&gw, &gw.key, chat("gpt-private-down", "hello"), &[]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(fx.mock.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn denials_carry_the_policy_reasons() {
    let fx = Fixture::start().await;
    let gw = Gateway::start(&fx.config());
    // gpt-4o is restricted to the llm-premium group (policies/data.json).
    let resp = post(&gw, &gw.key, chat("gpt-4o", "hello"), &[]).await;
    assert_eq!(resp.status(), 403);
    let id = resp.headers()["x-cordon-decision-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "policy_denied");
    assert_eq!(v["error"]["type"], "permission_error");
    assert_eq!(v["error"]["reasons"][0]["code"], "model_not_permitted");
    assert!(v["error"]["message"].as_str().unwrap().contains("gpt-4o"));
    assert!(!id.is_empty());
    assert!(fx.mock.requests().is_empty());
    let premium = gw.create_key(&["--group", "llm-premium"]);
    assert_eq!(
        post(&gw, &premium, chat("gpt-4o", "hello"), &[])
            .await
            .status(),
        200
    );
    // Department attribute: HR keeps its data on-prem.
    let hr = gw.create_key(&["--attr", "department=hr"]);
    let resp = post(&gw, &hr, chat("gpt-test", "hello"), &[]).await;
    assert_eq!(resp.headers()["x-cordon-route"], "private");
    let m = get_text(&gw, "/metrics").await;
    assert!(
        metric(&m, "cordon_policy_decisions_total{decision=\"deny\"") >= 1.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn decisions_are_cached_by_what_the_policies_read() {
    let fx = Fixture::start().await;
    let gw = Gateway::start(&fx.config());
    assert_eq!(readyz(&gw).await["policy"]["decision_cache"], "on");
    let hits = async || {
        metric(
            &get_text(&gw, "/metrics").await,
            "cordon_policy_decision_cache_total{result=\"hit\"",
        )
    };
    // gpt-4o is restricted: the same caller is denied again, from the cache, whatever the
    // prompt says (the policies do not read the text's size). The cache is per worker thread
    // (two here), so three requests make at least one hit.
    for text in [
        "hello",
        "a much longer question about the quarterly numbers",
        "hi",
    ] {
        let resp = post(&gw, &gw.key, chat("gpt-4o", text), &[]).await;
        assert_eq!(resp.status(), 403);
    }
    assert!(hits().await >= 1.0);
    // Another caller is another key: a member of the group is let through.
    let premium = gw.create_key(&["--group", "llm-premium"]);
    let resp = post(&gw, &premium, chat("gpt-4o", "hello"), &[]).await;
    assert_eq!(resp.status(), 200);
    // What DLP finds and the classification header are read: each changes the route.
    let resp = post(&gw, &premium, chat("gpt-4o", &format!("id {CN_ID}")), &[]).await;
    assert_eq!(resp.headers()["x-cordon-route"], "private");
    let resp = post(
        &gw,
        &premium,
        chat("gpt-4o", "hello"),
        &[("x-cordon-classification", "confidential")],
    )
    .await;
    assert_eq!(resp.headers()["x-cordon-route"], "private");
    let resp = post(&gw, &premium, chat("gpt-4o", "hello"), &[]).await;
    assert_eq!(resp.headers()["x-cordon-route"], "hosted");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_max_tokens_cap_is_applied() {
    let fx = Fixture::start().await;
    let gw = Gateway::start(&fx.config());
    let mut body = chat("gpt-test", "hello");
    body["max_tokens"] = json!(100000);
    assert_eq!(post(&gw, &gw.key, body, &[]).await.status(), 200);
    assert_eq!(
        post(&gw, &gw.key, chat("gpt-test", "hi"), &[])
            .await
            .status(),
        200
    );
    let mut body = chat("gpt-test", "hello");
    body["max_tokens"] = json!(10);
    assert_eq!(post(&gw, &gw.key, body, &[]).await.status(), 200);
    let caps: Vec<Value> = fx
        .mock
        .requests()
        .iter()
        .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap()["max_tokens"].clone())
        .collect();
    assert_eq!(caps, [json!(4096), json!(4096), json!(10)]);
}

/// A bundle whose decision breaks the contract: `allow` is not a boolean.
fn broken_bundle(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("main.rego"),
        "package cordon.main\n\ndecision := {\"allow\": \"yes\", \"route\": {\"target\": \"hosted\"}}\n",
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn policy_errors_fail_closed_unless_the_model_fails_open() {
    let fx = Fixture::start().await;
    let dir = tempfile::tempdir().unwrap();
    broken_bundle(dir.path());
    let config = fx.config().replace(
        "name = \"gated\"\nprovider = \"openai\"",
        "name = \"gated\"\nprovider = \"openai\"\npolicy_fail_open = true",
    ) + &format!("\n[policy]\ndir = \"{}\"\n", dir.path().display());
    let gw = Gateway::start(&config);
    let resp = post(&gw, &gw.key, chat("gpt-test", "hello"), &[]).await;
    assert_eq!(resp.status(), 403);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "policy_error");
    assert_eq!(v["error"]["reasons"][0]["code"], "policy_error");
    assert!(fx.mock.requests().is_empty());
    let resp = post(&gw, &gw.key, chat("gated", "hello"), &[]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-cordon-policy"], "fail-open");
    let m = get_text(&gw, "/metrics").await;
    assert_eq!(metric(&m, "cordon_policy_fail_open_total"), 1.0, "{m}");
    assert!(metric(&m, "cordon_policy_errors_total") >= 2.0, "{m}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bundles_reload_on_change_and_keep_the_last_good_one() {
    let fx = Fixture::start().await;
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("policies");
    copy_dir(&repo().join("policies"), &bundle);
    let config = fx.config() + &format!("\n[policy]\ndir = \"{}\"\n", bundle.display());
    let gw = Gateway::start(&config);
    let version = |v: &Value| v["policy"]["version"].as_str().unwrap().to_owned();
    let ready = || readyz(&gw);
    let v0 = version(&ready().await);
    assert_eq!(
        post(&gw, &gw.key, chat("gpt-test", "hi"), &[])
            .await
            .status(),
        200
    );

    // Restrict gpt-test in data.json: the watcher reloads and the new table applies.
    restrict_gpt_test(bundle.as_path());
    assert!(
        eventually(async || post(&gw, &gw.key, chat("gpt-test", "hi"), &[])
            .await
            .status()
            == 403)
        .await,
        "the change was not picked up; log:\n{}",
        gw.log()
    );
    let v1 = version(&ready().await);
    assert_ne!(v0, v1);

    // A change that breaks a bundled test is refused; the last good bundle stays in force.
    let limits = bundle.join("cordon/limits.rego");
    let text = std::fs::read_to_string(&limits).unwrap();
    std::fs::write(
        &limits,
        text.replace("data.tables.limits.max_tokens_cap)", "1)"),
    )
    .unwrap();
    assert!(
        eventually(async || ready().await["policy"]["reload_failures"].as_u64() >= Some(1)).await,
        "no failed reload; log:\n{}",
        gw.log()
    );
    let r = ready().await;
    assert_eq!(version(&r), v1);
    assert!(
        r["policy"]["last_reload_error"]
            .as_str()
            .unwrap()
            .contains("test_default_cap"),
        "{r}"
    );
    assert_eq!(
        post(&gw, &gw.key, chat("gpt-test", "hi"), &[])
            .await
            .status(),
        403
    );
    let m = get_text(&gw, "/metrics").await;
    assert!(
        metric(&m, "cordon_policy_reload_failures_total") >= 1.0,
        "{m}"
    );
    assert!(
        m.contains(&format!(
            "cordon_policy_bundle_info{{role=\"active\",version=\"{v1}\"}} 1"
        )),
        "{m}"
    );
    assert!(gw.log().contains("policy reload failed"));
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_when_watching_is_off() {
    let fx = Fixture::start().await;
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("policies");
    copy_dir(&repo().join("policies"), &bundle);
    let config = fx.config()
        + &format!(
            "\n[policy]\ndir = \"{}\"\nwatch = false\n",
            bundle.display()
        );
    let gw = Gateway::start(&config);
    restrict_gpt_test(bundle.as_path());
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        post(&gw, &gw.key, chat("gpt-test", "hi"), &[])
            .await
            .status(),
        200,
        "reloaded without a signal"
    );
    let ok = std::process::Command::new("kill")
        .args(["-HUP", &gw.pid().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    assert!(
        eventually(async || post(&gw, &gw.key, chat("gpt-test", "hi"), &[])
            .await
            .status()
            == 403)
        .await,
        "SIGHUP did not reload; log:\n{}",
        gw.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn shadow_bundles_are_compared_never_enforced() {
    let fx = Fixture::start().await;
    let dir = tempfile::tempdir().unwrap();
    let shadow = dir.path().join("candidate");
    copy_dir(&repo().join("policies"), &shadow);
    // The candidate would restrict gpt-test (and still passes its own tests).
    restrict_gpt_test(shadow.as_path());
    let config = fx.config()
        + &format!(
            "\n[policy]\ndir = \"{}\"\nshadow_dir = \"{}\"\n",
            repo().join("policies").display(),
            shadow.display()
        );
    let gw = Gateway::start(&config);
    for _ in 0..3 {
        assert_eq!(
            post(&gw, &gw.key, chat("gpt-test", "hi"), &[])
                .await
                .status(),
            200
        );
    }
    let m = get_text(&gw, "/metrics").await;
    assert_eq!(
        metric(&m, "cordon_policy_shadow_differences_total"),
        3.0,
        "{m}"
    );
    assert!(
        m.contains("cordon_policy_bundle_info{role=\"shadow\""),
        "{m}"
    );
    let ready = readyz(&gw).await;
    assert!(
        ready["policy"]["shadow_version"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
}

#[test]
fn a_bundle_with_failing_tests_stops_the_gateway_from_starting() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("policies");
    copy_dir(&repo().join("policies"), &bundle);
    std::fs::write(
        bundle.join("cordon/extra_test.rego"),
        "package cordon.extra_test\n\ntest_fails if false\n",
    )
    .unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nhttp_listen = \"127.0.0.1:1\"\n[dlp]\nrules_dir = \"{}\"\n[policy]\ndir = \"{}\"\n",
            repo().join("dlp-rules").display(),
            bundle.display()
        ),
    )
    .unwrap();
    let (ok, _, err) = cordon(&["check", "--config", cfg.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("test_fails"), "{err}");
}

#[test]
fn policy_cli_test_check_and_eval() {
    let policies = repo().join("policies");
    let p = policies.to_str().unwrap();
    let (ok, out, err) = cordon(&["policy", "test", p, "--threshold", "100"]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("data.cordon.main_test.test_secrets_deny_on_the_hosted_route: PASS"),
        "{out}"
    );
    assert!(out.contains("coverage 100.00%  total"), "{out}");

    // A failing test and a typo in an input reference.
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("p");
    copy_dir(&policies, &broken);
    let limits = broken.join("cordon/limits_test.rego");
    let t = std::fs::read_to_string(&limits).unwrap();
    std::fs::write(
        &limits,
        t.replace(
            "limits.cap == 4096 with input as fx.base",
            "limits.cap == 1 with input as fx.base",
        ),
    )
    .unwrap();
    let (ok, out, err) = cordon(&["policy", "test", broken.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        out.contains("data.cordon.limits_test.test_default_cap: FAIL"),
        "{out}"
    );
    assert!(err.contains("1 of"), "{err}");
    let hours = broken.join("cordon/hours.rego");
    let h = std::fs::read_to_string(&hours).unwrap();
    std::fs::write(&hours, h.replace("input.user.groups", "input.user.gruops")).unwrap();
    let (ok, out, _) = cordon(&["policy", "check", broken.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        out.contains("cordon/hours.rego:6: input.user.gruops"),
        "{out}"
    );
    let (ok, out, err) = cordon(&["policy", "check", p]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("decision cache: on; decisions depend on input.dlp.findings"),
        "{out}"
    );
    // A policy that reads the clock is evaluated for every request, and check says where.
    let clock = broken.join("cordon/clock.rego");
    std::fs::write(
        &clock,
        "package cordon.clock\n\nlate if time.now_ns() > 0\n",
    )
    .unwrap();
    std::fs::write(&hours, h).unwrap();
    let (ok, out, err) = cordon(&["policy", "check", broken.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("decision cache: off: cordon/clock.rego:3 calls time.now_ns"),
        "{out}"
    );

    let input = policies.join("testdata/inputs/03_cn_resident_id_private.json");
    let (ok, out, err) = cordon(&[
        "policy",
        "eval",
        "--dir",
        p,
        "--input",
        input.to_str().unwrap(),
        "--explain",
    ]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["decision"]["route"]["target"], "private");
    assert_eq!(v["enforced"]["allow"], true);
    assert!(
        v["explain"]["covered"]["cordon/residency.rego"]
            .as_array()
            .unwrap()
            .len()
            > 3,
        "{v}"
    );
}

/// The same bundle under real OPA (v1.20.2, from opa-golib-python-bindings) decides the same
/// for every input in policies/testdata/inputs and gives the same test results.
#[test]
fn opa_decides_the_same() {
    let python = std::env::var("CORDON_PYTHON").expect(
        "CORDON_PYTHON is not set: run through tests/run.sh, which installs OPA's Python bindings",
    );
    let out = std::process::Command::new(python)
        .arg(repo().join("tests/python/opa_parity.py"))
        .arg(env!("CARGO_BIN_EXE_cordon"))
        .arg(repo().join("policies"))
        .arg(repo().join("policies/testdata/inputs"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("tests compared with OPA"), "{text}");
}
