//! The private inference server behind the gateway: a `private` provider with two real
//! `cordon-inference` instances, load-balanced round robin and health-checked by Pingora's
//! load balancer; policy sends sensitive traffic there and nowhere else.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::inference::Inference;
use crate::harness::{Fixture, Gateway};

const CN_ID: &str = "11010519491231002X";

fn config(fx: &Fixture, instances: &[&Inference]) -> String {
    let endpoints: Vec<String> = instances
        .iter()
        .map(|i| format!("\"{}/v1\"", i.base))
        .collect();
    format!(
        r#"
[providers.openai]
type = "openai"
base_url = "https://localhost:{port}/v1"
api_key = "env:MOCK_OPENAI_KEY"
[providers.openai.tls]
ca_file = "{ca}"
client_cert = "{cert}"
client_key = "{key}"
[providers.onprem]
type = "private"
endpoints = [{endpoints}]
retry_backoff_ms = 10
[providers.onprem.health_check]
interval_ms = 200
timeout_ms = 500
[[models]]
name = "gpt-test"
provider = "openai"
private_counterpart = "private-chat"
[[models]]
name = "private-chat"
provider = "onprem"
upstream_model = "tiny-qwen"
[[models]]
name = "private-embed"
provider = "onprem"
upstream_model = "minilm"
"#,
        port = fx.mock.addr.port(),
        ca = fx.files.ca.display(),
        cert = fx.files.client_cert.display(),
        key = fx.files.client_key.display(),
        endpoints = endpoints.join(", "),
    )
}

async fn chat(gw: &Gateway, model: &str, text: &str, extra: Value) -> reqwest::Response {
    let mut body = json!({"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 8, "ignore_eos": true, "temperature": 0});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    reqwest::Client::new()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(&gw.key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn sensitive_traffic_is_answered_by_the_private_inference_server() {
    let fx = Fixture::start().await;
    let a = Inference::start();
    let b = Inference::start();
    let gw = Gateway::start(&config(&fx, &[&a, &b]));

    // A resident id sends a hosted-model request to the private counterpart.
    let resp = chat(&gw, "gpt-test", &format!("身份证号{CN_ID}"), json!({})).await;
    assert_eq!(resp.status(), 200, "{}", gw.log());
    assert_eq!(resp.headers()["x-cordon-route"], "private");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["usage"]["completion_tokens"], 8, "{v}");
    assert!(
        !v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .is_empty()
    );
    assert!(
        fx.mock.requests().is_empty(),
        "sensitive data reached the hosted provider"
    );

    // The private model directly, streamed through the gateway.
    let resp = chat(&gw, "private-chat", "hello", json!({"stream": true})).await;
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.unwrap();
    let data: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(data.last(), Some(&"[DONE]"), "{body}");
    assert!(data.len() >= 4, "{body}");

    // Round robin: both instances take requests.
    for _ in 0..6 {
        assert_eq!(
            chat(&gw, "private-chat", "hello", json!({})).await.status(),
            200
        );
    }
    let (sa, sb) = (a.served().await, b.served().await);
    assert_eq!(sa + sb, 8.0);
    assert!(sa >= 2.0 && sb >= 2.0, "a served {sa}, b served {sb}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_instance_is_skipped_and_no_instance_means_503_never_hosted() {
    let fx = Fixture::start().await;
    let a = Inference::start();
    let mut b = Inference::start();
    let gw = Gateway::start(&config(&fx, &[&a, &b]));
    assert_eq!(
        chat(&gw, "private-chat", "warm up", json!({}))
            .await
            .status(),
        200
    );

    b.stop();
    // Whether or not the health check has noticed yet, every request is answered by `a`.
    for i in 0..8 {
        let resp = chat(&gw, "gpt-test", &format!("id {CN_ID}"), json!({})).await;
        assert_eq!(resp.status(), 200, "request {i}: {}", gw.log());
        assert_eq!(resp.headers()["x-cordon-route"], "private");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = a.served().await;
    for _ in 0..4 {
        assert_eq!(
            chat(&gw, "private-chat", "hello", json!({})).await.status(),
            200
        );
    }
    assert_eq!(a.served().await - before, 4.0);

    drop(a);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let resp = chat(&gw, "gpt-test", &format!("id {CN_ID}"), json!({})).await;
    assert_eq!(resp.status(), 503);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "private_route_unavailable", "{v}");
    assert!(
        fx.mock.requests().is_empty(),
        "a private request fell back to the hosted provider"
    );
    // Traffic without sensitive data still goes to the hosted model.
    let resp = chat(&gw, "gpt-test", "hello", json!({})).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(fx.mock.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openai_python_sdk_reaches_the_private_models() {
    let fx = Fixture::start().await;
    let inference = Inference::start();
    let gw = Gateway::start(&config(&fx, &[&inference]));
    let python =
        std::env::var("CORDON_PYTHON").expect("CORDON_PYTHON: run the tests with tests/run.sh");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/python/openai_private_check.py"
    );
    let out = tokio::process::Command::new(python)
        .arg(script)
        .env("CORDON_BASE_URL", &gw.base)
        .env("CORDON_KEY", &gw.key)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("checks passed"),
        "stdout: {stdout}\nstderr: {}\ngateway log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        gw.log()
    );
    assert!(fx.mock.requests().is_empty());
}
