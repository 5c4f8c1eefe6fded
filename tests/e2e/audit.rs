//! The audit log end to end, on a real PostgreSQL: one record per request (allowed, denied,
//! failed), no raw PII anywhere in the table, append-only storage and the gateway's role,
//! tamper detection by `cordon audit verify`, and nothing lost while the database is away.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
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
    let fraud = gw.create_key(&["--team", "fraud-investigations"]);

    let pii = format!("mail {EMAIL}, call {PHONE}");
    // Records are looked up by the decision id each response carried: the logging phase runs
    // after the response, so two quick requests may be recorded in either order.
    let mut ids = Vec::new();
    for (key, body, status) in [
        (&gw.key, chat("gpt-test", &pii), 200),
        (
            &gw.key,
            chat("gpt-test", &format!("id {CN_ID}, card {CARD}")),
            200,
        ),
        (&gw.key, chat("gpt-test", &format!("token {TOKEN}")), 403),
        (&gw.key, chat("gpt-4o", "hi"), 403),
        (&gw.key, chat("nocert-model", "hi"), 502),
        (&"ck-nope".to_owned(), chat("gpt-test", "hi"), 401),
        (
            &fraud,
            chat("gpt-test", &format!("victim {EMAIL} {PHONE}")),
            200,
        ),
    ] {
        let resp = post(&gw, key, body).await;
        assert_eq!(resp.status(), status);
        ids.push(
            resp.headers()["x-cordon-decision-id"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
    }
    let recs = wait_for_records(&gw, 7).await;
    assert_eq!(recs.len(), 7, "{recs:#?}");
    let find = |i: usize| {
        recs.iter()
            .find(|r| r["id"] == ids[i])
            .unwrap_or_else(|| panic!("no record for request {i}: {recs:#?}"))
            .clone()
    };
    let by = |i: usize, k: &str| find(i)[k].clone();
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
    assert_eq!(
        by(0, "dlp_version").as_str().map(str::len),
        Some(64),
        "{:#?}",
        find(0)
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
    assert_eq!(by(6, "prompt"), "victim [EMAIL_ADDRESS] [PHONE_NUMBER]");
    assert!(by(0, "prompt").is_null());
    wait_for_records(&gw, 7).await;
    let resp = post(&gw, &gw.key, chat("gpt-test", "hello")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(wait_for_records(&gw, 8).await.len(), 8);

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

/// Runs `n` requests through a fresh gateway on a fresh database, stops it (so the shutdown
/// checkpoint is written) and returns the database URL and a config to run `cordon audit` with.
async fn recorded_database(n: usize, checkpoint_every: u64) -> (String, tempfile::TempDir) {
    let url = crate::harness::postgres::fresh_database().await;
    let fx = Fixture::start().await;
    let mut gw = start(&fx, &url, &format!("checkpoint_every = {checkpoint_every}"));
    for i in 0..n {
        let status = post(&gw, &gw.key, chat("gpt-test", &format!("request {i}")))
            .await
            .status();
        assert_eq!(status, 200);
    }
    assert_eq!(wait_for_records(&gw, n).await.len(), n);
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &gw.pid().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok && gw.wait_exit(Duration::from_secs(30)), "{}", gw.log());
    // A config for the auditor: the same store and key.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("audit.key"), SIGNING_KEY).unwrap();
    std::fs::write(
        dir.path().join("audit.toml"),
        format!(
            "[database]\nurl = \"{url}\"\n[audit]\nsigning_key = \"file:{}\"\n",
            dir.path().join("audit.key").display()
        ),
    )
    .unwrap();
    (url, dir)
}

fn verify(dir: &tempfile::TempDir) -> (bool, String) {
    let cfg = dir.path().join("audit.toml");
    let (ok, out, err) = cordon(&["audit", "--config", cfg.to_str().unwrap(), "verify"]);
    (ok, format!("{out}{err}"))
}

/// A copy of a database (as the tamperer's playground).
async fn copy_of(url: &str) -> String {
    let (prefix, name) = url.rsplit_once('/').unwrap();
    let copy = format!("{name}_{}", uuid::Uuid::new_v4().simple());
    let mut conn = admin(&format!("{prefix}/test")).await;
    sqlx::query(&format!("CREATE DATABASE {copy} TEMPLATE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    format!("{prefix}/{copy}")
}

/// Runs statements as the database owner with the append-only triggers switched off: what an
/// attacker with administrator rights can do, and what tamper evidence is for.
async fn tamper(url: &str, statements: &[&str]) {
    let mut conn = admin(url).await;
    sqlx::query("ALTER TABLE audit_log DISABLE TRIGGER USER")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("ALTER TABLE audit_checkpoints DISABLE TRIGGER USER")
        .execute(&mut conn)
        .await
        .unwrap();
    for s in statements {
        sqlx::query(s).execute(&mut conn).await.unwrap();
    }
}

fn auditor_config(dir: &tempfile::TempDir, url: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("audit.toml"),
        format!(
            "[database]\nurl = \"{url}\"\n[audit]\nsigning_key = \"file:{}\"\n",
            dir.path().join("audit.key").display()
        ),
    )
    .unwrap();
    d
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_finds_every_kind_of_tampering() {
    let (url, dir) = recorded_database(12, 5).await;
    let (ok, out) = verify(&dir);
    assert!(ok, "{out}");
    // Checkpoints at 5 and 10, and at shutdown (12).
    assert!(
        out.contains("12 records, 3 valid checkpoints, 0 problems"),
        "{out}"
    );

    let cases: [(&str, Vec<String>, &str); 7] = [
        (
            "a modified field",
            vec!["UPDATE audit_log SET record = replace(record, '\"status\":200', '\"status\":201') WHERE seq = 3".into()],
            "seq 3: Altered",
        ),
        (
            "a modified query column",
            vec!["UPDATE audit_log SET team = 'someone-else' WHERE seq = 4".into()],
            "seq 4: Altered: column `team`",
        ),
        (
            "a deleted row",
            vec!["DELETE FROM audit_log WHERE seq = 6".into()],
            "seq 7: Deleted",
        ),
        (
            "an inserted row",
            vec![
                "UPDATE audit_log SET seq = seq + 1000 WHERE seq >= 8".into(),
                "UPDATE audit_log SET seq = seq - 999 WHERE seq >= 1000".into(),
                "INSERT INTO audit_log SELECT chain_id, 8, id || 'x', time_ms, user_id, team, api_key_id, model, route, decision, status, reason_codes, entity_types, tokens_in, tokens_out, cost_micros, record, prev_hash, hash FROM audit_log WHERE seq = 7".into(),
            ],
            "seq 8:",
        ),
        (
            "a swapped pair",
            vec![
                "UPDATE audit_log SET seq = 100 WHERE seq = 9".into(),
                "UPDATE audit_log SET seq = 9 WHERE seq = 10".into(),
                "UPDATE audit_log SET seq = 10 WHERE seq = 100".into(),
            ],
            "seq 9:",
        ),
        (
            "a forged checkpoint",
            vec!["UPDATE audit_checkpoints SET hash = (SELECT hash FROM audit_log WHERE seq = 4) WHERE seq = (SELECT MIN(seq) FROM audit_checkpoints)".into()],
            "Checkpoint",
        ),
        (
            "a cut tail",
            vec!["DELETE FROM audit_log WHERE seq > 10".into()],
            "records were deleted",
        ),
    ];
    for (what, statements, expect) in cases {
        let copy = copy_of(&url).await;
        let refs: Vec<&str> = statements.iter().map(String::as_str).collect();
        tamper(&copy, &refs).await;
        let (ok, out) = verify(&auditor_config(&dir, &copy));
        assert!(!ok, "{what} was not detected:\n{out}");
        assert!(
            out.contains(expect),
            "{what}: expected `{expect}` in:\n{out}"
        );
    }
    // A checkpoint signed by another key is refused too.
    let copy = copy_of(&url).await;
    let other = "00".repeat(32);
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("audit.key"), &other).unwrap();
    std::fs::write(
        d.path().join("audit.toml"),
        format!(
            "[database]\nurl = \"{copy}\"\n[audit]\nsigning_key = \"file:{}\"\n",
            d.path().join("audit.key").display()
        ),
    )
    .unwrap();
    let (ok, out) = verify(&d);
    assert!(!ok && out.contains("another key"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_audit_table_is_append_only_and_the_gateway_role_only_appends() {
    let (url, _dir) = recorded_database(2, 1000).await;
    let mut conn = admin(&url).await;
    // The triggers refuse changes even to the owner.
    for s in [
        "UPDATE audit_log SET status = 500",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
        "UPDATE audit_checkpoints SET seq = 0",
        "DELETE FROM audit_checkpoints",
    ] {
        let e = sqlx::query(s)
            .execute(&mut conn)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("append-only"), "{s}: {e}");
    }
    // The documented role: INSERT and SELECT only (checked with the triggers off, so that the
    // grants alone are what refuses).
    let sql = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/postgres/gateway-role.sql"
    ))
    .unwrap();
    sqlx::raw_sql(&sql).execute(&mut conn).await.unwrap();
    sqlx::query("ALTER TABLE audit_log DISABLE TRIGGER USER")
        .execute(&mut conn)
        .await
        .unwrap();
    let role_url = url.replacen("postgres://postgres@", "postgres://cordon_gateway@", 1);
    let mut gw = admin(&role_url).await;
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_log")
        .fetch_one(&mut gw)
        .await
        .unwrap();
    assert_eq!(n, 2);
    sqlx::query("INSERT INTO audit_log SELECT chain_id, seq + 100, id, time_ms, user_id, team, api_key_id, model, route, decision, status, reason_codes, entity_types, tokens_in, tokens_out, cost_micros, record, prev_hash, hash FROM audit_log WHERE seq = 1")
        .execute(&mut gw)
        .await
        .unwrap();
    for s in [
        "UPDATE audit_log SET status = 500",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
    ] {
        let e = sqlx::query(s)
            .execute(&mut gw)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("permission denied"), "{s}: {e}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_is_lost_while_the_database_is_away() {
    let url = crate::harness::postgres::fresh_database().await;
    // The audit store is reached through a forwarder that the test takes down.
    let toggle = crate::harness::toggle::Toggle::start("127.0.0.1:5432").await;
    let audit_url = url.replacen("127.0.0.1:5432", &format!("127.0.0.1:{}", toggle.port), 1);
    let fx = Fixture::start().await;
    let gw = start_audited(&fx, &url, &audit_url, "checkpoint_every = 10");
    let mut sent = 0;
    for _ in 0..15 {
        assert_eq!(
            post(&gw, &gw.key, chat("gpt-test", "before"))
                .await
                .status(),
            200
        );
        sent += 1;
    }
    assert_eq!(wait_for_records(&gw, sent).await.len(), sent);
    toggle.down();
    // Requests keep being served while the store is unreachable: none waits on it.
    let started = Instant::now();
    for _ in 0..40 {
        assert_eq!(
            post(&gw, &gw.key, chat("gpt-test", "during"))
                .await
                .status(),
            200
        );
        sent += 1;
    }
    assert!(started.elapsed() < Duration::from_secs(20));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let spool = gw.dir().join("audit-spool.jsonl");
    let replaying = gw.dir().join("audit-spool.replaying.jsonl");
    assert!(
        spool.exists() || replaying.exists(),
        "nothing was spooled; log:\n{}",
        gw.log()
    );
    let m = reqwest::get(gw.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(m.contains("cordon_audit_records{state=\"spooled\"}"), "{m}");
    toggle.up();
    for _ in 0..5 {
        assert_eq!(
            post(&gw, &gw.key, chat("gpt-test", "after")).await.status(),
            200
        );
        sent += 1;
    }
    let recs = wait_for_records(&gw, sent).await;
    assert_eq!(recs.len(), sent, "log:\n{}", gw.log());
    // In order, one chain, verifiable.
    let texts: Vec<i64> = recs.iter().map(|r| r["seq"].as_i64().unwrap()).collect();
    assert_eq!(texts, (1..=sent as i64).collect::<Vec<_>>());
    let (ok, out, err) = audit_cli(&gw, &["verify"]);
    assert!(ok, "{out}{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_audit_required_requests_stop_when_records_cannot_be_kept() {
    let url = crate::harness::postgres::fresh_database().await;
    let toggle = crate::harness::toggle::Toggle::start("127.0.0.1:5432").await;
    let audit_url = url.replacen("127.0.0.1:5432", &format!("127.0.0.1:{}", toggle.port), 1);
    let fx = Fixture::start().await;
    let gw = start_audited(&fx, &url, &audit_url, "required = true");
    assert_eq!(
        post(&gw, &gw.key, chat("gpt-test", "hi")).await.status(),
        200
    );
    // The store goes away and the disk is full: the spool file is /dev/full (ENOSPC).
    toggle.down();
    std::os::unix::fs::symlink("/dev/full", gw.dir().join("audit-spool.jsonl")).unwrap();
    let mut refused = None;
    // A write to the vanished store gives up after its 10 s timeout; then the spool refuses.
    for _ in 0..300 {
        let resp = post(&gw, &gw.key, chat("gpt-test", "hi")).await;
        if resp.status() == 503 {
            refused = Some(resp.json::<Value>().await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let v = refused.expect("requests kept being served without an audit record");
    assert_eq!(v["error"]["code"], "audit_unavailable");
    // Back: records can be written again, and requests are served.
    std::fs::remove_file(gw.dir().join("audit-spool.jsonl")).unwrap();
    toggle.up();
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let s = post(&gw, &gw.key, chat("gpt-test", "hi")).await.status();
        if s == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still refusing; log:\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_under_load_loses_no_answered_request() {
    let url = crate::harness::postgres::fresh_database().await;
    let fx = Fixture::start().await;
    let mut gw = start(&fx, &url, "");
    let answered = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (answered, stop) = (answered.clone(), stop.clone());
        let (url, key) = (gw.url("/v1/chat/completions"), gw.key.clone());
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            while !stop.load(Ordering::SeqCst) {
                let Ok(resp) = http
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&chat("gpt-test", "load"))
                    .send()
                    .await
                else {
                    continue;
                };
                let id = resp
                    .headers()
                    .get("x-cordon-decision-id")
                    .map(|v| v.to_str().unwrap().to_owned());
                // Answered means the whole body arrived.
                if resp.status() == 200 && resp.bytes().await.is_ok() {
                    answered.lock().unwrap().push(id.unwrap());
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Killed in the middle of the load: no shutdown, no flush.
    let ids_before_kill = answered.lock().unwrap().len();
    gw.kill9_and_restart();
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    let answered = answered.lock().unwrap().clone();
    assert!(ids_before_kill > 20, "too little load: {ids_before_kill}");
    let recs = wait_for_records(&gw, answered.len()).await;
    let stored: std::collections::HashSet<String> = recs
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    let missing: Vec<&String> = answered.iter().filter(|id| !stored.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} answered requests have no record: {missing:?}\nlog:\n{}",
        missing.len(),
        answered.len(),
        gw.log()
    );
    // And each record once.
    assert_eq!(stored.len(), recs.len(), "a record was stored twice");
    let (ok, out, err) = audit_cli(&gw, &["verify"]);
    assert!(ok, "{out}{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_keep_their_own_chains_in_one_database() {
    let url = crate::harness::postgres::fresh_database().await;
    let fx = Fixture::start().await;
    let a = start(&fx, &url, "");
    let b = Gateway::start_with(&fx.config(), "", |d| {
        let key = d.join("audit.key");
        std::fs::write(&key, SIGNING_KEY).unwrap();
        format!(
            "[data]\ndir = \"{}\"\n[database]\nurl = \"{url}\"\n[audit]\nsigning_key = \"file:{}\"\nchain_id = \"gw-other\"\n",
            d.display(),
            key.display()
        )
    });
    for i in 0..6 {
        let gw = if i % 2 == 0 { &a } else { &b };
        assert_eq!(
            post(gw, &gw.key, chat("gpt-test", "hi")).await.status(),
            200
        );
    }
    let recs = wait_for_records(&a, 6).await;
    assert_eq!(recs.len(), 6);
    let (ok, out, err) = audit_cli(&a, &["verify"]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("chain gw-other: records up to 3")
            && out.contains("chain gw-test: records up to 3"),
        "{out}"
    );
    let (ok, out, _) = audit_cli(&a, &["query", "--json", "--chain", "gw-other"]);
    assert!(ok && out.lines().count() == 3, "{out}");
}
