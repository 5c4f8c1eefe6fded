//! Audit log throughput on the local PostgreSQL, each figure beside a baseline from the same run:
//! (a) records per second through the writer (queue, chain, multi-row INSERTs), against one
//! INSERT per record over the same connection pool; (b) `verify` over the whole table, against a
//! plain ordered scan of the same rows without hashing.
//! `cargo bench -p cordon-router --bench audit` (RECORDS=1000000 by default; DATABASE_URL,
//! default postgres://postgres@127.0.0.1:5432/test, names the server; a fresh database is made).

use std::time::{Duration, Instant};

use cordon_router::audit::store::{AuditStore, Filter, StoredRow};
use cordon_router::audit::writer::{AuditLog, AuditSettings};
use cordon_router::audit::{AuditFinding, AuditRecord, Chain, verify};
use cordon_router::db::Database;
use ed25519_dalek::SigningKey;
use sqlx::Connection;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn record(i: usize) -> AuditRecord {
    AuditRecord {
        id: format!("0190a5b4-0000-7000-8000-{i:012}"),
        time_ms: 1_795_000_000_000 + i as i64,
        user_id: Some(format!("user{}", i % 500)),
        api_key_id: Some(format!("key_{:016x}", i % 700)),
        team: Some(["risk", "payments", "retail", "research"][i % 4].into()),
        auth_method: Some("api_key".into()),
        source_ip: Some("10.1.2.3".into()),
        api: "chat".into(),
        requested_model: Some(["gpt-4o-mini", "gpt-4o", "private-chat"][i % 3].into()),
        route: Some(
            if i.is_multiple_of(5) {
                "private"
            } else {
                "hosted"
            }
            .into(),
        ),
        provider: Some("openai".into()),
        upstream_model: Some("gpt-4o-mini-2024-07-18".into()),
        policy_version: Some(
            "sha256:0cff38fa31bf6e2f355b24b30bcb2e798e68dcaaff81559cfdbb1a185ee02e9a".into(),
        ),
        dlp_version: Some("0".repeat(64)),
        decision: if i.is_multiple_of(17) {
            "deny"
        } else {
            "allow"
        }
        .into(),
        reason_codes: if i.is_multiple_of(17) {
            vec!["secret_in_prompt".into()]
        } else {
            vec![]
        },
        dlp_findings: vec![AuditFinding {
            entity_type: "EMAIL_ADDRESS".into(),
            count: 2,
            locations: vec!["messages[1].content".into()],
        }],
        dlp_actions: [("EMAIL_ADDRESS".to_owned(), "pseudonymise".to_owned())].into(),
        obligations: Some(
            serde_json::json!({"log_level": "masked", "retain_prompt": false, "max_tokens_cap": 4096, "alert": false}),
        ),
        shadow: None,
        status: 200,
        latency_ms: 840,
        upstream_ms: Some(310),
        tokens_in: Some(512),
        tokens_out: Some(256),
        cost_micros: Some(3840),
        stream: i.is_multiple_of(2),
        error_class: None,
        fail_open: false,
        prompt: None,
    }
}

async fn fresh_database(base: &str) -> String {
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(base)
        .await
        .expect("PostgreSQL");
    let name = format!("cordon_bench_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    format!("{}/{name}", base.rsplit_once('/').unwrap().0)
}

fn main() {
    let records: usize = std::env::var("RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let base = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = rt.block_on(fresh_database(&base));
    let spool = tempfile::tempdir().unwrap();

    // (a) baseline: one INSERT per record, 20,000 records.
    let baseline_n = 20_000.min(records);
    let store = rt.block_on(async { AuditStore::new(Database::open(&url).await.unwrap()) });
    let mut chain = Chain::new("baseline");
    let rows: Vec<StoredRow> = (0..baseline_n)
        .map(|i| {
            let r = record(i);
            StoredRow::of(chain.append(&r), &r)
        })
        .collect();
    let t = Instant::now();
    rt.block_on(async {
        for row in &rows {
            store.append(std::slice::from_ref(row)).await.unwrap();
        }
    });
    let baseline_rate = baseline_n as f64 / t.elapsed().as_secs_f64();

    // (a) the writer.
    let log = AuditLog::start(AuditSettings {
        database_url: url.clone(),
        chain_id: "bench".into(),
        spool_dir: spool.path().to_owned(),
        signing_key: SigningKey::from_bytes(&[3; 32]),
        checkpoint_every: 10_000,
        required: false,
        queue: 65_536,
        yield_cpu: false,
    })
    .unwrap();
    let t = Instant::now();
    for i in 0..records {
        log.record(record(i));
    }
    assert!(log.flush(Duration::from_secs(3600)));
    let writer_secs = t.elapsed().as_secs_f64();
    log.shutdown(Duration::from_secs(60));
    let written = log.stats.written.load(std::sync::atomic::Ordering::Relaxed);
    let spooled = log.stats.spooled.load(std::sync::atomic::Ordering::Relaxed);
    let writer_rate = records as f64 / writer_secs;
    println!(
        "writer:   {records} records in {writer_secs:.2} s = {writer_rate:.0} records/s ({written} stored, {spooled} of them through the spool when the queue was full)"
    );
    println!(
        "baseline: one INSERT per record = {baseline_rate:.0} records/s; writer/baseline {:.1}x (target >= 20,000 records/s)",
        writer_rate / baseline_rate
    );

    // (b) verify the writer's chain against a plain scan.
    let filter = Filter {
        chain_id: Some("bench".into()),
        ..Default::default()
    };
    let t = Instant::now();
    let mut n = 0u64;
    rt.block_on(store.scan(&filter, |_| {
        n += 1;
        true
    }))
    .unwrap();
    let scan_secs = t.elapsed().as_secs_f64();
    let key = SigningKey::from_bytes(&[3; 32]).verifying_key();
    let t = Instant::now();
    let report = rt
        .block_on(verify::verify(&store, &filter, &key, || {}))
        .unwrap();
    let verify_secs = t.elapsed().as_secs_f64();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    println!(
        "verify:   {} records in {verify_secs:.2} s ({} checkpoints); plain scan of the same rows {scan_secs:.2} s; verify/scan {:.2}x (target: 1,000,000 in < 10 s)",
        report.records,
        report.checkpoints,
        verify_secs / scan_secs
    );
    assert_eq!(n, report.records);

    // (c) an outage: records spooled while the store is unreachable, then replayed.
    let outage = (records / 5).max(1);
    let settings = |url: &str| AuditSettings {
        database_url: url.to_owned(),
        chain_id: "outage".into(),
        spool_dir: spool.path().to_owned(),
        signing_key: SigningKey::from_bytes(&[3; 32]),
        checkpoint_every: 10_000,
        required: false,
        queue: 65_536,
        yield_cpu: false,
    };
    let down = AuditLog::start(settings("postgres://postgres@127.0.0.1:1/none")).unwrap();
    let t = Instant::now();
    for i in 0..outage {
        down.record(record(records + i));
    }
    assert!(down.flush(Duration::from_secs(3600)));
    let spool_secs = t.elapsed().as_secs_f64();
    down.shutdown(Duration::from_secs(60));
    let t = Instant::now();
    let up = AuditLog::start(settings(&url)).unwrap();
    assert!(up.flush(Duration::from_secs(3600)));
    up.shutdown(Duration::from_secs(600));
    let replay_secs = t.elapsed().as_secs_f64();
    println!(
        "outage:   {outage} records spooled at {:.0} records/s, replayed at {:.0} records/s",
        outage as f64 / spool_secs,
        outage as f64 / replay_secs
    );
}
