//! The audit log end to end, on a real PostgreSQL: one record per request (allowed, denied,
//! failed), no raw PII anywhere in the table, append-only storage and the gateway's role,
//! tamper detection by `cordon audit verify`, and nothing lost while the database is away.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::Connection;

use crate::harness::gateway::cordon;
use crate::harness::{Fixture, Gateway};

const EMAIL: &str = "alice.smith@example.com";
const PHONE: &str = "13812345678";
const CN_ID: &str = "11010519491231002X";
const CARD: &str = "4111 1111 1111 1111";
const TOKEN: &str = "ghp_0123456789abcdefghijABCDEFGHIJ012345";

/// A test key for checkpoints (64 hex characters).
const SIGNING_KEY: &str = "1f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100";

/// A gateway whose keys live in `url` and whose audit log goes to `audit_url`.
fn start_audited(fx: &Fixture, url: &str, audit_url: &str, audit_extra: &str) -> Gateway {
    Gateway::start_with(&fx.config(), "", |d| {
        let key = d.join("audit.key");
        std::fs::write(&key, SIGNING_KEY).unwrap();
        format!(
            "[data]\ndir = \"{}\"\n[database]\nurl = \"{url}\"\n[audit]\ndatabase_url = \"{audit_url}\"\nsigning_key = \"file:{}\"\nchain_id = \"gw-test\"\n{audit_extra}\n[prices.gpt-test]\ninput_per_million = 2.5\noutput_per_million = 10.0\n",
            d.display(),
            key.display()
        )
    })
}

fn start(fx: &Fixture, url: &str, audit_extra: &str) -> Gateway {
    start_audited(fx, url, url, audit_extra)
}

async fn post(gw: &Gateway, key: &str, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn chat(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

fn audit_cli(gw: &Gateway, args: &[&str]) -> (bool, String, String) {
    let cfg = gw.config_path.to_str().unwrap();
    let mut all = vec!["audit", "--config", cfg];
    all.extend_from_slice(args);
    cordon(&all)
}

fn records(gw: &Gateway) -> Vec<Value> {
    let (ok, out, err) = audit_cli(gw, &["query", "--json", "--limit", "100000"]);
    assert!(ok, "{err}");
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn wait_for_records(gw: &Gateway, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = records(gw);
        if r.len() >= n || Instant::now() > deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn admin(url: &str) -> sqlx::AnyConnection {
    sqlx::any::install_default_drivers();
    sqlx::AnyConnection::connect(url).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_request_is_recorded_without_raw_pii() {
    let url = crate::harness::postgres::fresh_database().await;
    let fx = Fixture::start().await;
    let gw = start(&fx, &url, "");
    let cfg = gw.config_path.to_str().unwrap();
    let (ok, out, _) = cordon(&[
        "keys",
        "create",
        "--config",
        cfg,
        "--name",
        "f",
        "--team",
        "fraud-investigations",
        "--json",
    ]);
    assert!(ok);
    let fraud = serde_json::from_str::<Value>(&out).unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned();

    let pii = format!("mail {EMAIL}, call {PHONE}");
    assert_eq!(
        post(&gw, &gw.key, chat("gpt-test", &pii)).await.status(),
        200
    );
    assert_eq!(
        post(
            &gw,
            &gw.key,
            chat("gpt-test", &format!("id {CN_ID}, card {CARD}"))
        )
        .await
        .status(),
        200
    );
    assert_eq!(
        post(&gw, &gw.key, chat("gpt-test", &format!("token {TOKEN}")))
            .await
            .status(),
        403
    );
    assert_eq!(post(&gw, &gw.key, chat("gpt-4o", "hi")).await.status(), 403);
    assert_eq!(
        post(&gw, &gw.key, chat("nocert-model", "hi"))
            .await
            .status(),
        502
    );
    assert_eq!(
        post(&gw, "ck-nope", chat("gpt-test", "hi")).await.status(),
        401
    );
    assert_eq!(
        post(
            &gw,
            &fraud,
            chat("gpt-test", &format!("victim {EMAIL} {PHONE}"))
        )
        .await
        .status(),
        200
    );

    let recs = wait_for_records(&gw, 7).await;
    assert_eq!(recs.len(), 7, "{recs:#?}");
    let by = |i: usize, k: &str| recs[i][k].clone();
    // Allowed and pseudonymised, with usage and cost from the price table.
    assert_eq!(by(0, "decision"), "allow");
    assert_eq!(by(0, "route"), "hosted");
    assert_eq!(by(0, "status"), 200);
    assert_eq!(by(0, "team"), "qa");
    assert_eq!(by(0, "dlp_actions")["EMAIL_ADDRESS"], "pseudonymise");
    assert!(by(0, "tokens_in").as_u64().is_some());
    assert!(by(0, "cost_micros").as_i64().is_some());
    assert!(
        by(0, "policy_version")
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    // Kept on-prem.
    assert_eq!(by(1, "route"), "private");
    assert_eq!(by(1, "upstream_model"), "private-upstream");
    // Denied by policy, with reasons.
    assert_eq!(by(2, "decision"), "deny");
    assert_eq!(by(2, "reason_codes"), json!(["secret_in_prompt"]));
    assert_eq!(by(3, "reason_codes"), json!(["model_not_permitted"]));
    // Failed upstream.
    assert_eq!(by(4, "status"), 502);
    assert_eq!(by(4, "error_class"), "upstream_error");
    // Unauthenticated: recorded before any policy ran.
    assert_eq!(by(5, "decision"), "none");
    assert_eq!(by(5, "status"), 401);
    // The retained prompt is masked.
    let prompt = by(6, "prompt");
    assert_eq!(prompt, "victim [EMAIL_ADDRESS] [PHONE_NUMBER]");
    assert!(by(0, "prompt").is_null());
    // The record id is the decision id the client saw.
    let resp = post(&gw, &gw.key, chat("gpt-test", "hello")).await;
    let id = resp.headers()["x-cordon-decision-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let recs = wait_for_records(&gw, 8).await;
    assert_eq!(recs[7]["id"], id);

    // No raw value in any column of either table.
    let mut conn = admin(&url).await;
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT concat_ws('|', chain_id, id, user_id, team, api_key_id, model, route, decision, reason_codes, entity_types, record, prev_hash, hash) FROM audit_log",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let all = rows.join("\n");
    for v in [
        EMAIL,
        PHONE,
        CN_ID,
        CARD,
        TOKEN,
        "4111111111111111",
        &gw.key,
    ] {
        assert!(!all.contains(v), "{v} reached the audit log");
    }
    let (ok, out, err) = audit_cli(&gw, &["verify"]);
    assert!(ok, "{out}{err}");
    // Reports.
    let (ok, out, _) = audit_cli(&gw, &["query", "--decision", "deny"]);
    assert!(ok);
    assert_eq!(out.lines().count(), 3, "{out}");
    let (ok, out, _) = audit_cli(&gw, &["query", "--json", "--entity", "CN_RESIDENT_ID"]);
    assert!(ok);
    assert_eq!(out.lines().count(), 1, "{out}");
    let (ok, out, _) = audit_cli(&gw, &["query", "--json", "--reason", "model_not_permitted"]);
    assert!(ok && out.lines().count() == 1, "{out}");
    let (ok, out, _) = audit_cli(&gw, &["export", "--format", "csv"]);
    assert!(ok);
    assert_eq!(out.lines().count(), 9, "header + 8: {out}");
    assert!(out.starts_with("chain_id,seq,id,time"));
    let (ok, out, _) = audit_cli(&gw, &["stats", "--json"]);
    assert!(ok);
    let stats: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(stats["total"]["requests"], 8);
    assert_eq!(stats["total"]["denials"], 2);
    assert_eq!(stats["by_team"]["qa"]["requests"], 6);
}
