//! DLP in the gateway, end to end: what reaches the provider, what the client gets back, and
//! what the gateway's log keeps.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Fixture, Gateway};

const EMAIL: &str = "alice.smith@example.com";
const PHONE: &str = "13812345678";
const CN_ID: &str = "11010519491231002X";

/// Personal data that the bundled policy lets go to a hosted model, pseudonymised. (A resident
/// id would keep the request on-prem: see the policy tests.)
fn prompt() -> String {
    format!("Email {EMAIL} or call {PHONE}，thanks. Again: {EMAIL}")
}

async fn setup() -> (Fixture, Gateway) {
    let fx = Fixture::start().await;
    let gw = Gateway::start(&fx.config());
    (fx, gw)
}

fn raw_values_absent(body: &[u8]) {
    let text = String::from_utf8_lossy(body);
    for v in [EMAIL, PHONE, CN_ID] {
        assert!(!text.contains(v), "{v} reached the provider: {text}");
    }
}

/// The text an OpenAI stream delivered, and how many events carried some of it.
fn stream_content(sse: &str) -> (String, usize) {
    let mut content = String::new();
    let mut events = 0;
    for data in sse.lines().filter_map(|l| l.strip_prefix("data: ")) {
        if data == "[DONE]" {
            continue;
        }
        let chunk: Value = serde_json::from_str(data).unwrap();
        if let Some(c) = chunk["choices"][0]["delta"]["content"].as_str() {
            content.push_str(c);
            events += 1;
        }
    }
    (content, events)
}

async fn post(gw: &Gateway, path: &str, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(gw.url(path))
        .bearer_auth(&gw.key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn personal_data_is_pseudonymised_upstream_and_restored_for_the_client() {
    let (fx, gw) = setup().await;
    let mock = &fx.mock;
    let body = json!({"model": "gpt-test", "messages": [{"role": "system", "content": "You help."}, {"role": "user", "content": prompt()}]});
    let resp = post(&gw, "/v1/chat/completions", body).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        format!("echo: {}", prompt())
    );

    let sent = &mock.requests()[0].body;
    raw_values_absent(sent);
    let sent: Value = serde_json::from_slice(sent).unwrap();
    assert_eq!(
        sent["messages"][1]["content"],
        "Email ⟦EMAIL_ADDRESS_1⟧ or call ⟦PHONE_NUMBER_1⟧，thanks. Again: ⟦EMAIL_ADDRESS_1⟧"
    );
    // The log names types and counts, never values.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = gw.log();
    assert!(log.contains("EMAIL_ADDRESS:2"), "{log}");
    for v in [EMAIL, PHONE, CN_ID] {
        assert!(!log.contains(v), "{v} reached the log");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_split_across_sse_events_are_restored() {
    let (fx, gw) = setup().await;
    let mock = &fx.mock;
    for model in ["echo-stream", "claude-echo"] {
        let body = json!({"model": model, "stream": true, "messages": [{"role": "user", "content": prompt()}]});
        let resp = post(&gw, "/v1/chat/completions", body).await;
        assert_eq!(resp.status(), 200, "{model}");
        let text = resp.text().await.unwrap();
        let (content, _) = stream_content(&text);
        assert_eq!(content, format!("echo: {}", prompt()), "{model}");
        assert!(
            !text.contains('⟦'),
            "{model}: a token reached the client: {text}"
        );
        assert!(text.ends_with("data: [DONE]\n\n"), "{model}");
    }
    for r in mock.requests() {
        raw_values_absent(&r.body);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn native_messages_are_pseudonymised_and_restored() {
    let (fx, gw) = setup().await;
    let mock = &fx.mock;
    let body = json!({"model": "claude-test", "max_tokens": 50, "system": format!("User phone {PHONE}"), "messages": [{"role": "user", "content": [{"type": "text", "text": prompt()}]}]});
    let resp = reqwest::Client::new()
        .post(gw.url("/v1/messages"))
        .header("x-api-key", &gw.key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["content"][0]["text"], format!("echo: {}", prompt()));
    let sent: Value = serde_json::from_slice(&mock.requests()[0].body).unwrap();
    raw_values_absent(&mock.requests()[0].body);
    // Numbering is unique across the whole request: the system prompt's phone is the same value.
    assert_eq!(sent["system"], "User phone ⟦PHONE_NUMBER_1⟧");
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_are_blocked_without_repeating_them() {
    let (fx, gw) = setup().await;
    let mock = &fx.mock;
    let token = "ghp_0123456789abcdefghijABCDEFGHIJ012345";
    let body = json!({"model": "gpt-test", "messages": [{"role": "user", "content": format!("deploy with {token}")}]});
    let resp = post(&gw, "/v1/chat/completions", body).await;
    assert_eq!(resp.status(), 403);
    let v: Value = resp.json().await.unwrap();
    // The bundled policy denies secrets on the hosted route.
    assert_eq!(v["error"]["code"], "policy_denied");
    assert_eq!(v["error"]["reasons"][0]["code"], "secret_in_prompt");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("SECRET_GITHUB_TOKEN"), "{msg}");
    assert!(!msg.contains(token));
    assert!(
        mock.requests().is_empty(),
        "a blocked request reached the provider"
    );
    // Tool-call arguments are scanned too.
    let body = json!({"model": "gpt-test", "messages": [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "deploy", "arguments": format!("{{\"token\":\"{token}\"}}")}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "ok"},
    ]});
    assert_eq!(post(&gw, "/v1/chat/completions", body).await.status(), 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_in_model_output_are_redacted() {
    let (_fx, gw) = setup().await;
    let body =
        json!({"model": "leak", "messages": [{"role": "user", "content": "what is the key?"}]});
    let v: Value = post(&gw, "/v1/chat/completions", body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "the key is [SECRET_AWS_ACCESS_KEY], keep it safe"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn configured_actions_apply_per_entity_type() {
    let fx = Fixture::start().await;
    let mock = &fx.mock;
    // Without a policy, the [dlp.actions] table alone decides.
    let config = fx.config()
        + "\n[policy]\nenabled = false\n[dlp.actions]\ndefault = \"allow\"\nEMAIL_ADDRESS = \"redact\"\nPHONE_NUMBER = \"mask:4\"\nCN_RESIDENT_ID = \"hash\"\n";
    let gw = Gateway::start(&config);
    let text = format!("Email {EMAIL} or call {PHONE}, 身份证号{CN_ID}，thanks.");
    let body =
        json!({"model": "gpt-test", "input": "x", "messages": [{"role": "user", "content": text}]});
    assert_eq!(post(&gw, "/v1/chat/completions", body).await.status(), 200);
    let sent: Value = serde_json::from_slice(&mock.requests()[0].body).unwrap();
    let content = sent["messages"][0]["content"].as_str().unwrap();
    assert!(
        content.starts_with("Email [EMAIL_ADDRESS] or call *******5678, 身份证号[CN_RESIDENT_ID:"),
        "{content}"
    );
    assert!(!content.contains(CN_ID));
}

#[test]
fn dlp_cli_scan_test_and_mask() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/../dlp-rules");
    let text = "电话13812345678谢谢，邮箱alice@example.com";
    let run = |args: &[&str]| {
        let mut child = Command::new(crate::harness::gateway::BIN)
            .args(["dlp", "--rules", rules])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (out.status.success(), String::from_utf8(out.stdout).unwrap())
    };
    let (ok, out) = run(&["scan", "--json", "-"]);
    assert!(ok);
    let findings: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(findings.len(), 2);
    // Offsets are UTF-8 byte offsets into the input.
    let (s, e) = (
        findings[0]["start"].as_u64().unwrap() as usize,
        findings[0]["end"].as_u64().unwrap() as usize,
    );
    assert_eq!(&text[s..e], "13812345678");
    assert_eq!(findings[0]["entity"], "PHONE_NUMBER");
    assert_eq!(findings[1]["rule"], "global/email");
    assert!(
        !out.contains("alice@example.com"),
        "values are printed only with --show-values"
    );
    let (_, out) = run(&["scan", "--json", "--show-values", "-"]);
    assert!(out.contains("\"value\":\"alice@example.com\""));
    let (ok, out) = run(&[
        "--packs",
        "global",
        "mask",
        "--action",
        "EMAIL_ADDRESS=pseudonymise",
        "-",
    ]);
    assert!(ok);
    // Only the global pack: Chinese mobile numbers are the cn pack's.
    assert_eq!(out, "电话13812345678谢谢，邮箱⟦EMAIL_ADDRESS_1⟧");
    let (ok, out) = run(&["mask", "--action", "EMAIL_ADDRESS=pseudonymise", "-"]);
    assert!(ok);
    assert_eq!(out, "电话[PHONE_NUMBER]谢谢，邮箱⟦EMAIL_ADDRESS_1⟧");
    let (ok, out) = run(&["test"]);
    assert!(ok, "{out}");
    assert!(out.contains(" 0 failed"));
}

/// A secret in the model's stream, three characters per event: redacted whole, never a piece of
/// it sent.
#[tokio::test(flavor = "multi_thread")]
async fn secrets_split_across_stream_events_are_redacted() {
    let fx = Fixture::start().await;
    // Let the secret through on the way in (no policy, secrets allowed) so that the echo model
    // streams it back.
    let config = fx.config() + "\n[policy]\nenabled = false\n[dlp.actions]\ndefault = \"allow\"\n";
    let gw = Gateway::start(&config);
    let key = "AKIAZ5QWERTYUIOPASD7";
    let body = json!({"model": "echo-stream", "stream": true, "messages": [{"role": "user", "content": format!("the key is {key}, keep it safe")}]});
    let resp = post(&gw, "/v1/chat/completions", body).await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    let (content, events) = stream_content(&text);
    assert_eq!(
        content,
        "echo: the key is [SECRET_AWS_ACCESS_KEY], keep it safe"
    );
    for piece in ["AKIA", "Z5Q", "ASD7"] {
        assert!(!text.contains(piece), "{piece} reached the client: {text}");
    }
    // Prose around it was not held back to the end.
    assert!(events > 5, "{events} events: {text}");
}

/// Packs reload when their files change; a pack whose examples fail is refused and the last
/// good packs stay in force.
#[tokio::test(flavor = "multi_thread")]
async fn rule_packs_reload_on_change_and_keep_the_last_good_ones() {
    use crate::harness::util::{copy_dir, eventually, get_text, metric, readyz, repo};
    let fx = Fixture::start().await;
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("dlp-rules");
    copy_dir(&repo().join("dlp-rules"), &rules);
    let config = fx.config()
        + &format!(
            "\n[policy]\nenabled = false\n[dlp]\nrules_dir = \"{}\"\n[dlp.actions]\ndefault = \"allow\"\nCUSTOM_PROJECTS = \"block\"\n",
            rules.display()
        );
    let gw = Gateway::start(&config);
    let version = async || {
        readyz(&gw).await["dlp"]["version"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let v0 = version().await;
    let chat = || json!({"model": "gpt-test", "messages": [{"role": "user", "content": "status of project Bluefin?"}]});
    assert_eq!(
        post(&gw, "/v1/chat/completions", chat()).await.status(),
        200
    );

    // A new pack with a dictionary: the watcher reloads it and the term is blocked.
    std::fs::create_dir_all(rules.join("dictionaries")).unwrap();
    std::fs::write(
        rules.join("dictionaries/projects.txt"),
        "# code names\nBluefin\n",
    )
    .unwrap();
    std::fs::write(
        rules.join("internal.toml"),
        "[pack]\nname = \"internal\"\n\n[[dictionaries]]\nname = \"projects\"\nfile = \"dictionaries/projects.txt\"\n",
    )
    .unwrap();
    assert!(
        eventually(async || post(&gw, "/v1/chat/completions", chat()).await.status() == 403).await,
        "the new pack was not picked up; log:\n{}",
        gw.log()
    );
    let v1 = version().await;
    assert_ne!(v0, v1);
    let v: Value = post(&gw, "/v1/chat/completions", chat())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["error"]["code"], "dlp_block");

    // A rule whose own examples fail is refused: the last good packs stay.
    let global = rules.join("global.toml");
    let text = std::fs::read_to_string(&global).unwrap();
    std::fs::write(
        &global,
        text.replace(
            "[2-9][0-9]{2}[.-][2-9][0-9]{2}[.-][0-9]{4}",
            "[2-9][0-9]{2}[.-][2-9][0-9]{2}[.-][0-9]{5}",
        ),
    )
    .unwrap();
    assert!(
        eventually(async || readyz(&gw).await["dlp"]["reload_failures"].as_u64() >= Some(1)).await,
        "no failed reload; log:\n{}",
        gw.log()
    );
    let r = readyz(&gw).await;
    assert_eq!(r["dlp"]["version"], v1.as_str());
    assert!(
        r["dlp"]["last_reload_error"]
            .as_str()
            .unwrap()
            .contains("phone_nanp"),
        "{r}"
    );
    assert_eq!(
        post(&gw, "/v1/chat/completions", chat()).await.status(),
        403
    );
    let m = get_text(&gw, "/metrics").await;
    assert!(metric(&m, "cordon_dlp_reload_failures_total") >= 1.0, "{m}");
    assert!(metric(&m, "cordon_dlp_reloads_total") >= 1.0, "{m}");
    assert!(m.contains("cordon_dlp_rules_info{rules="), "{m}");
    assert!(gw.log().contains("DLP reload failed"));
}
