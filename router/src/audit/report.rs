//! The auditor's reports: rows as a table or JSON lines, exports (CSV, JSON lines) and
//! statistics by user, team and model.

use std::collections::BTreeMap;

use serde::Serialize;

use super::AuditRecord;
use super::store::StoredRow;

/// One record as `query` and `export` show it.
#[derive(Debug, Serialize)]
pub struct Line {
    pub chain_id: String,
    pub seq: i64,
    #[serde(flatten)]
    pub record: AuditRecord,
}

impl Line {
    pub fn of(row: &StoredRow) -> Option<Self> {
        Some(Self {
            chain_id: row.chained.chain_id.clone(),
            seq: row.chained.seq,
            record: serde_json::from_str(&row.chained.record).ok()?,
        })
    }
}

pub const CSV_HEADER: [&str; 23] = [
    "chain_id",
    "seq",
    "id",
    "time",
    "user_id",
    "team",
    "api_key_id",
    "auth_method",
    "source_ip",
    "api",
    "model",
    "route",
    "provider",
    "upstream_model",
    "policy_version",
    "dlp_version",
    "decision",
    "reason_codes",
    "entity_types",
    "status",
    "latency_ms",
    "tokens",
    "cost_micros",
];

pub fn time_text(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

pub fn csv_row(l: &Line) -> Vec<String> {
    let r = &l.record;
    let o = |v: &Option<String>| v.clone().unwrap_or_default();
    vec![
        l.chain_id.clone(),
        l.seq.to_string(),
        r.id.clone(),
        time_text(r.time_ms),
        o(&r.user_id),
        o(&r.team),
        o(&r.api_key_id),
        o(&r.auth_method),
        o(&r.source_ip),
        r.api.clone(),
        o(&r.requested_model),
        o(&r.route),
        o(&r.provider),
        o(&r.upstream_model),
        o(&r.policy_version),
        o(&r.dlp_version),
        r.decision.clone(),
        r.reason_codes.join(";"),
        r.dlp_findings
            .iter()
            .map(|f| format!("{}:{}", f.entity_type, f.count))
            .collect::<Vec<_>>()
            .join(";"),
        r.status.to_string(),
        r.latency_ms.to_string(),
        (r.tokens_in.unwrap_or(0) + r.tokens_out.unwrap_or(0)).to_string(),
        r.cost_micros.unwrap_or(0).to_string(),
    ]
}

/// A short fixed-width line for `query` without `--json`.
pub fn table_row(l: &Line) -> String {
    let r = &l.record;
    format!(
        "{:<20} {:<12} {:<10} {:<16} {:<7} {:<6} {:>3} {:<24} {}",
        time_text(r.time_ms),
        r.user_id.as_deref().unwrap_or("-"),
        r.team.as_deref().unwrap_or("-"),
        r.requested_model.as_deref().unwrap_or("-"),
        r.route.as_deref().unwrap_or("-"),
        r.decision,
        r.status,
        r.reason_codes.join(","),
        r.id
    )
}

pub const TABLE_HEADER: &str = "time                 user         team       model            route   dec.   st. reasons                  id";

#[derive(Debug, Default, Clone, Serialize)]
pub struct Totals {
    pub requests: u64,
    pub denials: u64,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub cost_micros: i64,
}

#[derive(Debug, Default, Serialize)]
pub struct Stats {
    pub total: Totals,
    pub by_user: BTreeMap<String, Totals>,
    pub by_team: BTreeMap<String, Totals>,
    pub by_model: BTreeMap<String, Totals>,
}

impl Stats {
    pub fn add(&mut self, row: &StoredRow) {
        let row = &row.columns;
        let denied = row.decision == "deny" || row.decision == "error";
        let add = |t: &mut Totals| {
            t.requests += 1;
            t.denials += u64::from(denied);
            t.tokens_in += row.tokens_in.unwrap_or(0).max(0) as u64;
            t.tokens_out += row.tokens_out.unwrap_or(0).max(0) as u64;
            t.cost_micros += row.cost_micros.unwrap_or(0);
        };
        add(&mut self.total);
        let key = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        add(self.by_user.entry(key(&row.user_id)).or_default());
        add(self.by_team.entry(key(&row.team)).or_default());
        add(self.by_model.entry(key(&row.model)).or_default());
    }

    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        for (title, map) in [
            ("user", &self.by_user),
            ("team", &self.by_team),
            ("model", &self.by_model),
        ] {
            let _ = writeln!(
                out,
                "{:<24} {:>9} {:>8} {:>12} {:>12} {:>14}",
                title, "requests", "denied", "tokens in", "tokens out", "cost"
            );
            for (k, t) in map {
                let _ = writeln!(out, "{k:<24} {}", totals(t));
            }
            let _ = writeln!(out);
        }
        let _ = writeln!(out, "{:<24} {}", "total", totals(&self.total));
        out
    }
}

fn totals(t: &Totals) -> String {
    format!(
        "{:>9} {:>8} {:>12} {:>12} {:>14.6}",
        t.requests,
        t.denials,
        t.tokens_in,
        t.tokens_out,
        t.cost_micros as f64 / 1e6
    )
}
