//! Each rule's own examples, as data in its pack: positives must be found by that rule, negatives
//! must not. `cordon dlp test` and the test suite run them.

use super::Scanner;

/// The outcome for one rule.
pub struct RuleResult {
    pub rule: String,
    pub failures: Vec<String>,
}

/// Runs every rule's examples through the full scanner.
pub fn check(scanner: &Scanner) -> Vec<RuleResult> {
    scanner
        .rules()
        .iter()
        .map(|r| {
            let id = format!("{}/{}", r.pack, r.id);
            let found_by_rule = |text: &str| scanner.scan(text).iter().any(|f| *f.rule == *id);
            let mut failures = Vec::new();
            for p in &r.positive {
                if !found_by_rule(p) {
                    failures.push(format!("positive not found: {p:?}"));
                }
            }
            for n in &r.negative {
                if found_by_rule(n) {
                    failures.push(format!("negative found: {n:?}"));
                }
            }
            RuleResult { rule: id, failures }
        })
        .collect()
}

/// Every failure, one line each.
pub fn run(scanner: &Scanner) -> Vec<String> {
    check(scanner)
        .into_iter()
        .flat_map(|r| {
            r.failures
                .into_iter()
                .map(move |f| format!("{}: {f}", r.rule))
        })
        .collect()
}
