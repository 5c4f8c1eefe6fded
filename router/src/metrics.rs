//! Prometheus metrics: requests by route, model and status; latency; upstream errors; tokens.
//! Rendered as text on `GET /metrics`.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub latency: HistogramVec,
    pub upstream_latency: HistogramVec,
    pub upstream_errors: IntCounterVec,
    pub tokens: IntCounterVec,
    /// Decisions by outcome (`allow`/`deny`) and route.
    pub policy_decisions: IntCounterVec,
    /// Evaluations that failed and denied (`policy_error`).
    pub policy_errors: IntCounter,
    /// Policy errors let through because the model is configured to fail open.
    pub policy_fail_open: IntCounterVec,
    pub policy_reloads: IntCounter,
    pub policy_reload_failures: IntCounter,
    pub policy_shadow_differences: IntCounter,
    /// Decisions answered from the decision cache, and evaluations that filled it.
    policy_cache_hits: IntCounter,
    policy_cache_misses: IntCounter,
    /// 1 for each bundle in force, by role (`active`, `shadow`) and version.
    policy_info: Info,
    /// Audit records by state: written, spooled, replayed, failed (since start).
    pub audit: IntGaugeVec,
    /// Of the written records, those written at idle priority (`audit.yield_cpu`), and the
    /// times such a write found no idle CPU.
    audit_idle_records: IntGauge,
    audit_idle_starved: IntGauge,
    pub dlp_reloads: IntCounter,
    pub dlp_reload_failures: IntCounter,
    /// 1 for the DLP rule packs in force, by version.
    dlp_info: Info,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "cordon_requests_total",
                "Requests answered, by route, model and status",
            ),
            &["route", "model", "status"],
        )
        .expect("static metric definition");
        let buckets = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            30.0, 60.0, 120.0,
        ];
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "cordon_request_duration_seconds",
                "Time from request to the last response byte",
            )
            .buckets(buckets.clone()),
            &["route", "model"],
        )
        .expect("static metric definition");
        let upstream_latency = HistogramVec::new(
            HistogramOpts::new(
                "cordon_upstream_first_byte_seconds",
                "Time from sending a request upstream to its response header",
            )
            .buckets(buckets),
            &["provider"],
        )
        .expect("static metric definition");
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                "cordon_upstream_errors_total",
                "Failed upstream attempts, by provider and kind",
            ),
            &["provider", "kind"],
        )
        .expect("static metric definition");
        let tokens = IntCounterVec::new(
            Opts::new("cordon_tokens_total", "Tokens reported by upstream usage"),
            &["model", "provider", "direction"],
        )
        .expect("static metric definition");
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("static metric definition");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let policy_errors = counter(
            "cordon_policy_errors_total",
            "Policy evaluations that failed and denied the request (policy_error)",
        );
        let policy_reloads = counter(
            "cordon_policy_reloads_total",
            "Successful policy bundle reloads",
        );
        let policy_reload_failures = counter(
            "cordon_policy_reload_failures_total",
            "Policy reloads refused (compile error or failing tests); the last good bundle stayed",
        );
        let policy_shadow_differences = counter(
            "cordon_policy_shadow_differences_total",
            "Requests on which the shadow bundle decided differently from the active one",
        );
        let policy_decisions = IntCounterVec::new(
            Opts::new(
                "cordon_policy_decisions_total",
                "Policy decisions, by outcome and route",
            ),
            &["decision", "route"],
        )
        .expect("static metric definition");
        let policy_fail_open = IntCounterVec::new(
            Opts::new(
                "cordon_policy_fail_open_total",
                "Policy errors let through because the model is configured with policy_fail_open",
            ),
            &["model"],
        )
        .expect("static metric definition");
        let policy_cache = IntCounterVec::new(
            Opts::new(
                "cordon_policy_decision_cache_total",
                "Policy decisions by decision cache result: hit (answered from the cache) or miss (evaluated, then cached)",
            ),
            &["result"],
        )
        .expect("static metric definition");
        let policy_cache_hits = policy_cache.with_label_values(&["hit"]);
        let policy_cache_misses = policy_cache.with_label_values(&["miss"]);
        let policy_info = IntGaugeVec::new(
            Opts::new("cordon_policy_bundle_info", "The policy bundles in force"),
            &["role", "version"],
        )
        .expect("static metric definition");
        registry
            .register(Box::new(policy_info.clone()))
            .expect("unique metric");
        let dlp_reloads = counter(
            "cordon_dlp_reloads_total",
            "Successful DLP rule pack reloads",
        );
        let dlp_reload_failures = counter(
            "cordon_dlp_reload_failures_total",
            "DLP reloads refused (invalid pack or failing rule examples); the last good packs stayed",
        );
        let dlp_info = IntGaugeVec::new(
            Opts::new("cordon_dlp_rules_info", "The DLP rule packs in force"),
            &["version", "rules"],
        )
        .expect("static metric definition");
        registry
            .register(Box::new(dlp_info.clone()))
            .expect("unique metric");
        let audit = IntGaugeVec::new(
            Opts::new(
                "cordon_audit_records",
                "Audit records since start: written to the database, spooled to disk, replayed from the spool, failed (neither)",
            ),
            &["state"],
        )
        .expect("static metric definition");
        registry
            .register(Box::new(audit.clone()))
            .expect("unique metric");
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("static metric definition");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let audit_idle_records = gauge(
            "cordon_audit_idle_priority_records",
            "Audit records written at idle CPU priority since start (audit.yield_cpu; also counted as written)",
        );
        let audit_idle_starved = gauge(
            "cordon_audit_idle_priority_starved",
            "Times since start that an idle-priority audit write found no idle CPU, after which the writer used normal priority for 10 s",
        );
        for c in [
            &requests,
            &upstream_errors,
            &tokens,
            &policy_decisions,
            &policy_fail_open,
            &policy_cache,
        ] {
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
        }
        for h in [&latency, &upstream_latency] {
            registry
                .register(Box::new(h.clone()))
                .expect("unique metric");
        }
        Self {
            registry,
            requests,
            latency,
            upstream_latency,
            upstream_errors,
            tokens,
            policy_decisions,
            policy_errors,
            policy_fail_open,
            policy_reloads,
            policy_reload_failures,
            policy_shadow_differences,
            policy_cache_hits,
            policy_cache_misses,
            policy_info: Info::new(policy_info),
            audit,
            audit_idle_records,
            audit_idle_starved,
            dlp_reloads,
            dlp_reload_failures,
            dlp_info: Info::new(dlp_info),
        }
    }

    pub fn count_decision_cache(&self, used: crate::policy::CacheUse) {
        match used {
            crate::policy::CacheUse::Hit => self.policy_cache_hits.inc(),
            crate::policy::CacheUse::Miss => self.policy_cache_misses.inc(),
            crate::policy::CacheUse::Off => {}
        }
    }

    /// Publishes the DLP rule packs in force.
    pub fn set_dlp(&self, rules: &crate::dlp::live::Compiled) {
        self.dlp_info.show(vec![vec![
            rules.short_version().to_owned(),
            rules.scanner.rules().len().to_string(),
        ]]);
    }

    /// Publishes the policy bundles in force: the active one and the shadow one, if any.
    pub fn set_policy_bundles(&self, active: &str, shadow: Option<&str>) {
        let mut shown = vec![vec!["active".to_owned(), active.to_owned()]];
        shown.extend(shadow.map(|v| vec!["shadow".to_owned(), v.to_owned()]));
        self.policy_info.show(shown);
    }

    pub fn set_audit(&self, s: &crate::audit::writer::AuditStats) {
        use std::sync::atomic::Ordering::Relaxed;
        for (state, v) in [
            ("written", &s.written),
            ("spooled", &s.spooled),
            ("replayed", &s.replayed),
            ("failed", &s.failures),
        ] {
            self.audit
                .with_label_values(&[state])
                .set(v.load(Relaxed) as i64);
        }
        self.audit_idle_records
            .set(s.written_idle.load(Relaxed) as i64);
        self.audit_idle_starved.set(s.starved.load(Relaxed) as i64);
    }

    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

/// An info gauge: 1 for each label set in force. A change sets the new label sets before it
/// removes the old ones, so that a scrape in between never finds none (a reset first left a
/// moment with no version at all).
struct Info {
    gauge: IntGaugeVec,
    shown: std::sync::Mutex<Vec<Vec<String>>>,
}

impl Info {
    fn new(gauge: IntGaugeVec) -> Self {
        Self {
            gauge,
            shown: Default::default(),
        }
    }

    fn show(&self, now: Vec<Vec<String>>) {
        fn labels(l: &[String]) -> Vec<&str> {
            l.iter().map(String::as_str).collect()
        }
        let mut shown = self.shown.lock().unwrap_or_else(|e| e.into_inner());
        for l in &now {
            self.gauge.with_label_values(&labels(l)).set(1);
        }
        for old in shown.iter().filter(|old| !now.contains(old)) {
            let _ = self.gauge.remove_label_values(&labels(old));
        }
        *shown = now;
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_bundle_version_replaces_the_old_one() {
        let m = Metrics::new();
        let text = || String::from_utf8(m.render()).unwrap();
        m.set_policy_bundles("v1", Some("s1"));
        assert!(text().contains("cordon_policy_bundle_info{role=\"active\",version=\"v1\"} 1"));
        assert!(text().contains("cordon_policy_bundle_info{role=\"shadow\",version=\"s1\"} 1"));
        m.set_policy_bundles("v2", None);
        let t = text();
        assert!(
            t.contains("cordon_policy_bundle_info{role=\"active\",version=\"v2\"} 1"),
            "{t}"
        );
        assert!(!t.contains("\"v1\"") && !t.contains("\"s1\""), "{t}");
        // Publishing the same versions again keeps them shown.
        m.set_policy_bundles("v2", None);
        assert!(text().contains("version=\"v2\"} 1"));
    }
}
