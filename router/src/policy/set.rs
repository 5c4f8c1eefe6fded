//! The bundles in force: the active one that decides, and an optional shadow (candidate) that
//! is evaluated beside it and only compared. Reloads (a file change in either directory, or
//! SIGHUP) compile the bundle and run its tests off the request path, and swap it in atomically
//! only when everything passes; otherwise the last good bundle stays and the failure is logged
//! and counted.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, ArcSwapOption};

use super::PolicyError;
use super::bundle::Bundle;
use super::decision::{Decision, RouteTarget};
use super::engine::CompiledBundle;
use super::input::{Mode, PolicyInput};
use super::testing::{Outcome, run_tests};
use crate::metrics::Metrics;

#[derive(Debug, Clone)]
pub struct PolicySettings {
    pub dir: PathBuf,
    /// A candidate bundle evaluated beside the active one, never enforced.
    pub shadow_dir: Option<PathBuf>,
    pub max_instructions: usize,
    /// Run the bundle's tests before a bundle is put in force (at start and on reload).
    pub test_before_use: bool,
    /// Reload when files change (SIGHUP always reloads).
    pub watch: bool,
    /// Request headers a policy may see.
    pub header_allowlist: Vec<String>,
    /// Decisions cached per worker thread and bundle (0: every request is evaluated).
    pub decision_cache: usize,
}

/// What the shadow bundle decided, for the audit record.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ShadowOutcome {
    pub version: String,
    pub allow: bool,
    pub route: Option<RouteTarget>,
    pub reason_codes: Vec<String>,
    /// The shadow decision differs from the enforced one (allow, route, DLP actions or
    /// reasons).
    pub differs: bool,
}

/// One request's decision and the bundle version that made it.
#[derive(Debug, Clone)]
pub struct Evaluated {
    pub decision: Decision,
    pub version: String,
    pub shadow: Option<ShadowOutcome>,
}

pub struct PolicySet {
    settings: PolicySettings,
    active: ArcSwap<CompiledBundle>,
    shadow: ArcSwapOption<CompiledBundle>,
    metrics: Arc<Metrics>,
    reload_failures: AtomicU64,
    last_reload_error: Mutex<Option<String>>,
}

impl PolicySet {
    /// Loads (and, when configured, tests) the active and shadow bundles. A bundle that fails
    /// here stops the gateway from starting: there is no last good bundle yet.
    pub fn load(settings: PolicySettings, metrics: Arc<Metrics>) -> Result<Self, PolicyError> {
        let active = prepare(&settings.dir, &settings)?;
        let shadow = match &settings.shadow_dir {
            Some(dir) => Some(Arc::new(prepare(dir, &settings)?)),
            None => None,
        };
        let this = Self {
            active: ArcSwap::from_pointee(active),
            shadow: ArcSwapOption::new(shadow),
            settings,
            metrics,
            reload_failures: AtomicU64::new(0),
            last_reload_error: Mutex::new(None),
        };
        this.publish_versions();
        Ok(this)
    }

    pub fn settings(&self) -> &PolicySettings {
        &self.settings
    }

    pub fn active(&self) -> Arc<CompiledBundle> {
        self.active.load_full()
    }

    pub fn shadow(&self) -> Option<Arc<CompiledBundle>> {
        self.shadow.load_full()
    }

    pub fn reload_failures(&self) -> u64 {
        self.reload_failures.load(Ordering::Relaxed)
    }

    pub fn last_reload_error(&self) -> Option<String> {
        self.last_reload_error
            .lock()
            .map(|e| e.clone())
            .unwrap_or(None)
    }

    /// Evaluates the active bundle (mode `enforce`) and, when there is one, the shadow bundle
    /// (mode `shadow`) on the same input.
    pub fn evaluate(&self, input: &mut PolicyInput) -> Evaluated {
        let active = self.active.load();
        input.mode = Mode::Enforce;
        let (decision, cached) = active.evaluate_cached(input);
        let m = &self.metrics;
        m.count_decision_cache(cached);
        m.policy_decisions
            .with_label_values(&[
                if decision.allow { "allow" } else { "deny" },
                decision
                    .route
                    .as_ref()
                    .map_or("none", |r| r.target.as_str()),
            ])
            .inc();
        if decision.is_policy_error() {
            m.policy_errors.inc();
            tracing::warn!(
                request_id = %input.request_id,
                version = active.bundle.short_version(),
                error = %decision.reasons.first().map_or("", |r| r.message.as_str()),
                "policy error: request denied"
            );
        }
        let shadow = self.shadow.load().as_ref().map(|shadow| {
            input.mode = Mode::Shadow;
            let (s, cached) = shadow.evaluate_cached(input);
            m.count_decision_cache(cached);
            input.mode = Mode::Enforce;
            let differs = s.allow != decision.allow
                || s.route.as_ref().map(|r| r.target) != decision.route.as_ref().map(|r| r.target)
                || s.dlp_actions != decision.dlp_actions
                || s.reason_codes() != decision.reason_codes();
            if differs {
                m.policy_shadow_differences.inc();
            }
            ShadowOutcome {
                version: shadow.version().to_owned(),
                allow: s.allow,
                route: s.route.as_ref().map(|r| r.target),
                reason_codes: s.reasons.into_iter().map(|r| r.code).collect(),
                differs,
            }
        });
        Evaluated {
            decision,
            version: active.version().to_owned(),
            shadow,
        }
    }

    /// Recompiles and retests both bundles; swaps in each one that passes. Returns the first
    /// failure after counting and logging it; the bundle that failed keeps its last good
    /// version.
    pub fn reload(&self) -> Result<(), PolicyError> {
        let mut first_error = None;
        match prepare(&self.settings.dir, &self.settings) {
            Ok(b) => {
                if b.version() != self.active.load().version() {
                    tracing::info!(version = b.bundle.short_version(), "policy bundle reloaded");
                }
                self.active.store(Arc::new(b));
            }
            Err(e) => first_error = Some(e),
        }
        if let Some(dir) = &self.settings.shadow_dir {
            match prepare(dir, &self.settings) {
                Ok(b) => self.shadow.store(Some(Arc::new(b))),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        self.publish_versions();
        match first_error {
            None => {
                if let Ok(mut last) = self.last_reload_error.lock() {
                    *last = None;
                }
                self.metrics.policy_reloads.inc();
                Ok(())
            }
            Some(e) => {
                self.reload_failures.fetch_add(1, Ordering::Relaxed);
                self.metrics.policy_reload_failures.inc();
                tracing::error!(error = %e, active = self.active.load().bundle.short_version(), "policy reload failed; the last good bundle stays in force");
                if let Ok(mut last) = self.last_reload_error.lock() {
                    *last = Some(e.to_string());
                }
                Err(e)
            }
        }
    }

    fn publish_versions(&self) {
        let shadow = self.shadow.load();
        self.metrics.set_policy_bundles(
            self.active.load().version(),
            shadow.as_ref().map(|s| s.version()),
        );
    }

    /// Reloads on SIGHUP and, when `watch` is set, on changes in the bundle directories
    /// (debounced), on a thread of its own so that compiling and testing never touch the
    /// request path.
    pub fn spawn_reloader(self: &Arc<Self>) -> std::io::Result<()> {
        let this = self.clone();
        let mut dirs = vec![self.settings.dir.clone()];
        dirs.extend(self.settings.shadow_dir.clone());
        crate::reload::spawn(
            "cordon-policy-reload",
            dirs,
            self.settings.watch,
            move || {
                let _ = this.reload();
            },
        )
    }
}

/// Loads, tests (when configured) and compiles one bundle directory.
pub fn prepare(dir: &Path, settings: &PolicySettings) -> Result<CompiledBundle, PolicyError> {
    let bundle = Bundle::load(dir)?;
    if settings.test_before_use && !bundle.tests.is_empty() {
        let report = run_tests(&bundle)?;
        if !report.all_passed() {
            let failed: Vec<&str> = report
                .results
                .iter()
                .filter(|r| r.outcome != Outcome::Pass)
                .map(|r| r.name.as_str())
                .collect();
            return Err(PolicyError::Tests {
                dir: dir.to_owned(),
                failed: failed.len(),
                total: report.results.len(),
                names: failed.join(", "),
            });
        }
    }
    let compiled = CompiledBundle::compile(bundle, settings.max_instructions)?
        .with_decision_cache(settings.decision_cache);
    if let Err(why) = compiled.decision_cache() {
        tracing::info!(dir = %dir.display(), %why, "policy decisions are not cached");
    }
    Ok(compiled)
}
