//! The rule packs in force, swapped atomically on reload. A reload (a file change under the rules
//! directory, or SIGHUP) loads and compiles the packs and runs every rule's examples off the
//! request path; only when all of that passes is the new scanner put in force. Otherwise the last
//! good one stays, and the failure is logged and counted. A request keeps the scanner it started
//! with, so its request and response sides always agree.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};

use super::redact::OutputRules;
use super::{DlpError, Pack, Scanner, entity_matches, examples, load_packs};

#[derive(Debug, Clone)]
pub struct RuleSettings {
    pub dir: PathBuf,
    /// Only these packs, when set.
    pub packs: Option<Vec<String>>,
    /// Entity types (or `PREFIX_*`) redacted in model output.
    pub redact: Arc<[String]>,
    /// Reload when files under `dir` change (SIGHUP always reloads).
    pub watch: bool,
}

/// One compiled generation of the packs.
pub struct Compiled {
    pub scanner: Arc<Scanner>,
    /// `None` when no output rule is configured.
    pub output: Option<OutputRules>,
    /// SHA-256 over the pack files, in name order.
    pub version: String,
}

impl Compiled {
    pub fn short_version(&self) -> &str {
        &self.version[..12.min(self.version.len())]
    }
}

pub struct LiveRules {
    settings: RuleSettings,
    current: ArcSwap<Compiled>,
    reloads: AtomicU64,
    failures: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl LiveRules {
    /// Loads, compiles and checks the packs; an error here stops the gateway from starting.
    pub fn load(settings: RuleSettings) -> Result<Self, DlpError> {
        let compiled = compile(&settings)?;
        Ok(Self {
            settings,
            current: ArcSwap::from_pointee(compiled),
            reloads: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last_error: Mutex::new(None),
        })
    }

    pub fn settings(&self) -> &RuleSettings {
        &self.settings
    }

    pub fn current(&self) -> Arc<Compiled> {
        self.current.load_full()
    }

    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }

    pub fn reload_failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    pub fn last_reload_error(&self) -> Option<String> {
        self.last_error.lock().map(|e| e.clone()).unwrap_or(None)
    }

    /// Recompiles and rechecks the packs; swaps them in when everything passes.
    pub fn reload(&self) -> Result<(), DlpError> {
        let result = compile(&self.settings);
        let mut last = self.last_error.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(c) => {
                tracing::info!(
                    version = c.short_version(),
                    rules = c.scanner.rules().len(),
                    "DLP rule packs reloaded"
                );
                self.current.store(Arc::new(c));
                self.reloads.fetch_add(1, Ordering::Relaxed);
                *last = None;
                Ok(())
            }
            Err(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, active = self.current.load().short_version(), "DLP reload failed; the last good rule packs stay in force");
                *last = Some(e.to_string());
                Err(e)
            }
        }
    }

    /// Reloads on SIGHUP and, when `watch` is set, on changes under the rules directory.
    /// `after` runs after each attempt (the gateway updates its metrics there).
    pub fn spawn_reloader(
        self: &Arc<Self>,
        after: impl Fn(&Self, bool) + Send + 'static,
    ) -> std::io::Result<()> {
        let this = self.clone();
        crate::reload::spawn(
            "cordon-dlp-reload",
            vec![self.settings.dir.clone()],
            self.settings.watch,
            move || {
                let ok = this.reload().is_ok();
                after(&this, ok);
            },
        )
    }
}

fn compile(settings: &RuleSettings) -> Result<Compiled, DlpError> {
    let packs = load_packs(&settings.dir, settings.packs.as_deref())?;
    let scanner = Arc::new(Scanner::new(&packs)?);
    let failures = examples::run(&scanner);
    if !failures.is_empty() {
        return Err(DlpError::Examples {
            dir: settings.dir.clone(),
            failed: failures.len(),
            first: failures[0].clone(),
        });
    }
    let output = if settings.redact.is_empty() {
        None
    } else {
        // Model output is scanned only for what is redacted there: a scanner of those rules.
        let redacted = |entity: &str| settings.redact.iter().any(|p| entity_matches(p, entity));
        let output_packs: Vec<Pack> = packs
            .iter()
            .map(|p| Pack {
                rules: p
                    .rules
                    .iter()
                    .filter(|r| redacted(&r.entity))
                    .cloned()
                    .collect(),
                dictionaries: p
                    .dictionaries
                    .iter()
                    .filter(|d| redacted(&d.entity))
                    .cloned()
                    .collect(),
                ..p.clone()
            })
            .collect();
        Some(OutputRules::new(
            Arc::new(Scanner::new(&output_packs)?),
            settings.redact.clone(),
        )?)
    };
    let mut hash = Sha256::new();
    for p in &packs {
        hash.update(p.name.as_bytes());
        hash.update(p.digest.as_bytes());
    }
    Ok(Compiled {
        scanner,
        output,
        version: format!("{:x}", hash.finalize()),
    })
}
