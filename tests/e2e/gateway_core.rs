//! The gateway core end to end: the real binary, a real mTLS upstream, real HTTP clients.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Fixture, Gateway, Pki, cordon};

struct Setup {
    fx: Fixture,
    gw: Gateway,
    http: reqwest::Client,
}

async fn setup() -> Setup {
    let fx = Fixture::start().await;
    let gw = Gateway::start(&fx.config());
    Setup {
        fx,
        gw,
        http: reqwest::Client::new(),
    }
}

impl Setup {
    async fn metrics(&self) -> String {
        let resp = self.http.get(self.gw.url("/metrics")).send().await.unwrap();
        resp.text().await.unwrap()
    }

    async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        self.http
            .post(self.gw.url(path))
            .bearer_auth(&self.gw.key)
            .json(&body)
            .send()
            .await
            .unwrap()
    }
}

fn chat(model: &str, stream: bool) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream})
}

/// Reads a whole SSE body and returns the `data:` payloads in order.
async fn sse_data(resp: reqwest::Response) -> Vec<String> {
    let text = resp.text().await.unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn chat_over_mtls_with_model_alias() {
    let s = setup().await;
    let resp = s
        .post("/v1/chat/completions", chat("gpt-alias", false))
        .await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("x-request-id"));
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "echo: hi");
    assert_eq!(v["usage"]["total_tokens"], 18);
    let seen = s.fx.mock.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/v1/chat/completions");
    let sent: Value = serde_json::from_slice(&seen[0].body).unwrap();
    assert_eq!(sent["model"], "gpt-upstream");
    // The client's Cordon key never reaches the provider; the provider's own key does.
    let auth = seen[0].headers["authorization"].to_str().unwrap();
    assert_eq!(auth, format!("Bearer {}", crate::harness::mock::OPENAI_KEY));
    assert!(!auth.contains(&s.gw.key));
}

#[tokio::test(flavor = "multi_thread")]
async fn first_sse_chunk_arrives_while_upstream_holds_the_rest() {
    let s = setup().await;
    let mut resp = s.post("/v1/chat/completions", chat("gated", true)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let first = tokio::time::timeout(Duration::from_secs(10), resp.chunk())
        .await
        .expect("the first chunk must arrive before the upstream sends the rest")
        .unwrap()
        .unwrap();
    let first = String::from_utf8(first.to_vec()).unwrap();
    assert!(first.contains("\"content\":\"Hello\""), "{first}");
    s.fx.mock.open_gate();
    let mut rest = String::new();
    while let Some(c) = resp.chunk().await.unwrap() {
        rest.push_str(std::str::from_utf8(&c).unwrap());
    }
    // The rest of the text, in order, then the finish. (Output redaction may hold a last
    // letter that could begin a secret's keyword until the finish chunk, which carries it.)
    let chunks: Vec<Value> = rest
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, " world", "{rest}");
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop",
        "{rest}"
    );
    assert!(rest.ends_with("data: [DONE]\n\n"), "{rest}");
    // The client did not ask for usage, so the usage chunk Cordon requested is not passed on.
    assert!(!rest.contains("\"usage\""));
    let sent: Value = serde_json::from_slice(&s.fx.mock.requests()[0].body).unwrap();
    assert_eq!(sent["stream_options"]["include_usage"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn stream_usage_reaches_metrics() {
    let s = setup().await;
    let mut body = chat("gpt-test", true);
    body["stream_options"] = json!({"include_usage": true});
    let data = sse_data(s.post("/v1/chat/completions", body).await).await;
    let usage: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 7);
    let metrics = s.metrics().await;
    assert!(
        metrics.contains(
            r#"cordon_tokens_total{direction="out",model="gpt-test",provider="openai"} 7"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"cordon_requests_total{model="gpt-test",route="chat",status="200"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("cordon_request_duration_seconds_bucket"));
}

#[tokio::test(flavor = "multi_thread")]
async fn anthropic_translation_both_ways() {
    let s = setup().await;
    let mut req = chat("claude-test", false);
    req["messages"] = json!([
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "weather "}, {"type": "text", "text": "please"}]},
    ]);
    req["tools"] = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    let v: Value = s
        .post("/v1/chat/completions", req)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "echo: weather please"
    );
    assert_eq!(
        v["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "get_weather"
    );
    assert_eq!(
        v["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
        "{\"city\":\"Paris\"}"
    );
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(v["usage"]["prompt_tokens"], 13);
    assert_eq!(v["usage"]["completion_tokens"], 5);
    let sent: Value = serde_json::from_slice(&s.fx.mock.requests()[0].body).unwrap();
    assert_eq!(sent["system"][0]["text"], "be brief");
    assert_eq!(sent["model"], "claude-upstream");
    assert_eq!(sent["tools"][0]["input_schema"]["type"], "object");

    let mut req = chat("claude-test", true);
    req["stream_options"] = json!({"include_usage": true});
    let data = sse_data(s.post("/v1/chat/completions", req).await).await;
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(data.last().unwrap(), "[DONE]");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Hello world");
    assert!(
        chunks
            .iter()
            .any(|c| c["choices"][0]["finish_reason"] == "stop")
    );
    assert_eq!(chunks.last().unwrap()["usage"]["total_tokens"], 18);
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn native_messages_pass_through() {
    let s = setup().await;
    let body = json!({"model": "claude-test", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
    let resp = s
        .http
        .post(s.gw.url("/v1/messages"))
        .header("x-api-key", &s.gw.key)
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "message");
    assert_eq!(v["content"][0]["text"], "echo: hi");
    let mut stream_body = body.clone();
    stream_body["stream"] = json!(true);
    let resp = s
        .http
        .post(s.gw.url("/v1/messages"))
        .header("x-api-key", &s.gw.key)
        .json(&stream_body)
        .send()
        .await
        .unwrap();
    let text = resp.text().await.unwrap();
    assert!(text.contains("event: message_start"));
    assert!(text.contains("\"text\":\"Hello\""));
    assert!(
        text.trim_end()
            .ends_with("data: {\"type\":\"message_stop\"}"),
        "{text}"
    );
    // An OpenAI-only API on /v1/messages answers in Anthropic's error shape.
    let resp = s
        .http
        .post(s.gw.url("/v1/messages"))
        .header("x-api-key", &s.gw.key)
        .json(&json!({"model": "gpt-test", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "invalid_request_error");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_503_is_retried_then_the_fallback_answers() {
    let s = setup().await;
    let resp = s.post("/v1/chat/completions", chat("flaky", false)).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "echo: hi");
    let paths: Vec<String> = s.fx.mock.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(
        paths,
        [
            "/v1/chat/completions",
            "/v1/chat/completions",
            "/v1/chat/completions",
            "/v1/messages"
        ]
    );
    let metrics = s.metrics().await;
    assert!(
        metrics.contains(r#"cordon_upstream_errors_total{kind="http_503",provider="openai"} 3"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_dying_mid_stream_ends_the_stream_with_an_error_event() {
    let s = setup().await;
    let resp = s.post("/v1/chat/completions", chat("die", true)).await;
    assert_eq!(resp.status(), 200);
    let data = tokio::time::timeout(Duration::from_secs(20), sse_data(resp))
        .await
        .expect("no hang");
    assert!(data[0].contains("Hello"));
    let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "stream_interrupted");
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("openai")
    );
    assert!(!data.iter().any(|d| d == "[DONE]"));
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_failures_are_502_with_a_clear_message() {
    let s = setup().await;
    let cases = [
        (
            "nocert-model",
            "nocert",
            "requires a client certificate; set providers.nocert.tls.client_cert",
        ),
        (
            "wrongca-model",
            "wrongca",
            "not signed by a trusted CA; set providers.wrongca.tls.ca_file",
        ),
        (
            "wronghost-model",
            "wronghost",
            "does not match the server name",
        ),
    ];
    for (model, provider, hint) in cases {
        let resp = s.post("/v1/chat/completions", chat(model, false)).await;
        assert_eq!(resp.status(), 502, "{model}");
        let v: Value = resp.json().await.unwrap();
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(&format!("provider `{provider}`")), "{msg}");
        assert!(msg.contains(hint), "{msg}");
        assert_eq!(v["error"]["code"], "upstream_error");
        assert!(!msg.contains(crate::harness::mock::OPENAI_KEY));
    }
    // Only the request with the client certificate but no trust problem reached the handler:
    // none of the three did.
    assert!(s.fx.mock.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn one_mebibyte_body_arrives_upstream_byte_exact() {
    let s = setup().await;
    let filler: String = (0..1024 * 1024)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let client_body = format!(
        r#"{{"model":"gpt-test","messages":[{{"role":"user","content":"{filler}"}}],"temperature":0.5,"max_tokens":64}}"#
    );
    let resp = s
        .http
        .post(s.gw.url("/v1/chat/completions"))
        .bearer_auth(&s.gw.key)
        .header("content-type", "application/json")
        .body(client_body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let expected = client_body.replacen(r#""model":"gpt-test""#, r#""model":"gpt-upstream""#, 1);
    let seen = &s.fx.mock.requests()[0];
    assert_eq!(seen.body.len(), expected.len());
    assert!(
        seen.body == expected.as_bytes(),
        "upstream body differs from the rewritten client body"
    );
    assert_eq!(
        seen.headers["content-length"],
        expected.len().to_string().as_str()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_inputs_get_clear_4xx_errors() {
    let s = setup().await;
    let url = s.gw.url("/v1/chat/completions");
    let key = &s.gw.key;
    let c = &s.http;
    let huge = vec![b'x'; 5 * 1024 * 1024];
    let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str)> = vec![
        (
            "malformed json",
            c.post(&url)
                .bearer_auth(key)
                .header("content-type", "application/json")
                .body("{\"model\":"),
            400,
            "invalid_json",
        ),
        (
            "invalid utf-8",
            c.post(&url)
                .bearer_auth(key)
                .header("content-type", "application/json")
                .body(vec![b'{', 0xff, 0xfe, b'}']),
            400,
            "invalid_utf8",
        ),
        (
            "huge body",
            c.post(&url)
                .bearer_auth(key)
                .header("content-type", "application/json")
                .body(huge),
            413,
            "body_too_large",
        ),
        (
            "wrong method",
            c.get(&url).bearer_auth(key),
            405,
            "method_not_allowed",
        ),
        (
            "wrong content type",
            c.post(&url)
                .bearer_auth(key)
                .header("content-type", "text/plain")
                .body("{}"),
            415,
            "unsupported_media_type",
        ),
        (
            "missing auth",
            c.post(&url).json(&chat("gpt-test", false)),
            401,
            "invalid_api_key",
        ),
        (
            "unknown key",
            c.post(&url)
                .bearer_auth("ck-000000")
                .json(&chat("gpt-test", false)),
            401,
            "invalid_api_key",
        ),
        (
            "unknown model",
            c.post(&url)
                .bearer_auth(key)
                .json(&chat("no-such-model", false)),
            404,
            "model_not_found",
        ),
        (
            "missing model",
            c.post(&url)
                .bearer_auth(key)
                .json(&json!({"messages": [{"role": "user", "content": "x"}]})),
            400,
            "missing_model",
        ),
        (
            "unknown path",
            c.post(s.gw.url("/v1/nope"))
                .bearer_auth(key)
                .json(&json!({})),
            404,
            "unknown_path",
        ),
    ];
    for (name, req, status, code) in cases {
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{name}");
        let v: Value = resp
            .json()
            .await
            .unwrap_or_else(|e| panic!("{name}: error body is not JSON: {e}"));
        assert_eq!(v["error"]["code"], code, "{name}: {v}");
        assert!(
            !v["error"]["message"].as_str().unwrap().is_empty(),
            "{name}"
        );
    }
    // The gateway is still serving after all of that.
    assert_eq!(
        s.post("/v1/chat/completions", chat("gpt-test", false))
            .await
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn key_scopes_expiry_and_revocation() {
    let s = setup().await;
    let cfg = s.gw.config_path.to_str().unwrap();
    let (ok, out, _) = cordon(&[
        "keys",
        "create",
        "--config",
        cfg,
        "--name",
        "narrow",
        "--model",
        "claude-test",
        "--json",
    ]);
    assert!(ok);
    let narrow: Value = serde_json::from_str(&out).unwrap();
    let narrow_key = narrow["key"].as_str().unwrap();
    let resp = s
        .http
        .post(s.gw.url("/v1/chat/completions"))
        .bearer_auth(narrow_key)
        .json(&chat("gpt-test", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["code"],
        "model_not_allowed"
    );
    let models: Value = s
        .http
        .get(s.gw.url("/v1/models"))
        .bearer_auth(narrow_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["claude-test"]);

    let (ok, out, _) = cordon(&["keys", "list", "--config", cfg]);
    assert!(ok);
    assert!(out.contains("narrow") && out.contains("active"));
    assert!(!out.contains(narrow_key), "list must never show a secret");

    let (ok, _, _) = cordon(&[
        "keys",
        "revoke",
        "--config",
        cfg,
        narrow["id"].as_str().unwrap(),
    ]);
    assert!(ok);
    let resp = s
        .http
        .get(s.gw.url("/v1/models"))
        .bearer_auth(narrow_key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(
        resp.json::<Value>().await.unwrap()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("revoked")
    );
    let (ok, _, err) = cordon(&["keys", "revoke", "--config", cfg, "key_doesnotexist"]);
    assert!(!ok && err.contains("no key with id"));

    let (ok, out, _) = cordon(&[
        "keys",
        "create",
        "--config",
        cfg,
        "--name",
        "old",
        "--expires-in-days",
        "0",
        "--json",
    ]);
    assert!(ok);
    let expired = serde_json::from_str::<Value>(&out).unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let resp = s
        .http
        .get(s.gw.url("/v1/models"))
        .bearer_auth(&expired)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(
        resp.json::<Value>().await.unwrap()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn embeddings_completions_models_and_health() {
    let s = setup().await;
    let v: Value = s
        .post(
            "/v1/embeddings",
            json!({"model": "gpt-test", "input": "hello"}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["data"][0]["embedding"], json!([0.25, -0.5, 1.0]));
    let v: Value = s
        .post(
            "/v1/completions",
            json!({"model": "gpt-test", "prompt": "say"}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["choices"][0]["text"], "completed: say");
    let paths: Vec<String> = s.fx.mock.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/v1/embeddings", "/v1/completions"]);
    let v: Value = s
        .http
        .get(s.gw.url("/v1/models"))
        .bearer_auth(&s.gw.key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["object"], "list");
    assert!(
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == "gpt-test")
    );
    assert_eq!(
        s.http
            .get(s.gw.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let ready = s.http.get(s.gw.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.json::<Value>().await.unwrap()["database"], "ok");
    // Anthropic cannot serve embeddings: a clear 400, not a 502.
    let resp = s
        .post(
            "/v1/embeddings",
            json!({"model": "claude-test", "input": "x"}),
        )
        .await;
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["code"],
        "unsupported_api"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn https_listener_serves_with_the_configured_certificate() {
    let pki = Pki::generate();
    let dir = tempfile::tempdir().unwrap();
    let files = pki.write(dir.path());
    let port = crate::harness::gateway::free_port();
    let server = format!(
        "https_listen = \"127.0.0.1:{port}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        files.server_cert.display(),
        files.server_key.display()
    );
    let _gw = Gateway::start_with("", &server, |d| {
        format!("[data]\ndir = \"{}\"\n", d.display())
    });
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let resp = client
        .get(format!("https://localhost:{port}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[test]
fn check_names_bad_fields_and_accepts_good_config() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[server]\nhttp_listen = \"nope\"\n[providers.x]\ntype = \"openai\"\nbase_url = \"https://h/v1\"\napi_key = \"sk-literal\"\n").unwrap();
    let (ok, _, err) = cordon(&["check", "--config", bad.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains("server.http_listen") && err.contains("providers.x.api_key"),
        "{err}"
    );
    let typo = dir.path().join("typo.toml");
    std::fs::write(&typo, "[limits]\nmax_body_byte = 1\n").unwrap();
    let (ok, _, err) = cordon(&["check", "--config", typo.to_str().unwrap()]);
    assert!(!ok && err.contains("max_body_byte"), "{err}");
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/cordon.example.toml");
    let out = std::process::Command::new(crate::harness::gateway::BIN)
        .args(["check", "--config", example])
        .envs(
            [
                "OPENAI_API_KEY",
                "ANTHROPIC_API_KEY",
                "AZURE_OPENAI_API_KEY",
                "DEEPSEEK_API_KEY",
            ]
            .map(|k| (k, "set-for-check")),
        )
        .env("CORDON_AUDIT_SIGNING_KEY", "ab".repeat(32))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(": ok"));
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_the_server_gracefully() {
    let mut gw = Gateway::start("");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &gw.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(
        gw.wait_exit(Duration::from_secs(20)),
        "gateway did not exit after SIGTERM"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_and_requests_on_postgresql() {
    let url = crate::harness::postgres::fresh_database().await;
    let fx = Fixture::start().await;
    let gw = Gateway::start_with(&fx.config(), "", |d| {
        format!(
            "[data]\ndir = \"{}\"\n[database]\nurl = \"{url}\"\n",
            d.display()
        )
    });
    let http = reqwest::Client::new();
    let resp = http
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(&gw.key)
        .json(&chat("gpt-test", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // The key lives in PostgreSQL, not in a SQLite file.
    assert!(!gw.dir().join("cordon.db").exists());
    let cfg = gw.config_path.to_str().unwrap();
    let (ok, out, _) = cordon(&["keys", "list", "--config", cfg, "--json"]);
    assert!(ok);
    let key: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(key["team"], "qa");
    assert!(
        cordon(&[
            "keys",
            "revoke",
            "--config",
            cfg,
            key["id"].as_str().unwrap()
        ])
        .0
    );
    let resp = http
        .get(gw.url("/v1/models"))
        .bearer_auth(&gw.key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn azure_deployment_path_version_and_key_header() {
    let s = setup().await;
    let v: Value = s
        .post("/v1/chat/completions", chat("azure-test", false))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "azure gpt4o-deployment: hi"
    );
    let seen = &s.fx.mock.requests()[0];
    assert_eq!(
        seen.path,
        "/openai/deployments/gpt4o-deployment/chat/completions?api-version=2024-10-21"
    );
    assert_eq!(seen.headers["api-key"], crate::harness::mock::OPENAI_KEY);
    assert!(!seen.headers.contains_key("authorization"));
}

#[tokio::test(flavor = "multi_thread")]
async fn first_byte_timeout_is_a_504_naming_the_provider() {
    let s = setup().await;
    let started = std::time::Instant::now();
    let resp = s
        .post("/v1/chat/completions", chat("slow-model", false))
        .await;
    assert_eq!(resp.status(), 504);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "upstream_timeout");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("provider `slowprov`")
    );
    // The 3 s upstream delay was cut short by the 300 ms first-byte timeout.
    assert!(started.elapsed() < Duration::from_millis(2500));
}
