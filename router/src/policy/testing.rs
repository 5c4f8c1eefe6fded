//! `cordon policy test`: runs every `test_*` rule of a bundle's `*_test.rego` files on regorus's
//! interpreter (the VM has no `with`), as `opa test` does, and reports coverage per policy file
//! from regorus's coverage report.

use std::time::{Duration, Instant};

use regex::Regex;
use serde::Serialize;

use super::PolicyError;
use super::bundle::Bundle;
use super::engine::interpreter;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Pass,
    /// The rule was false or undefined.
    Fail,
    /// The rule raised an error.
    Error(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct TestResult {
    /// `data.<package>.<rule>`, as `opa test` names it.
    pub name: String,
    pub file: String,
    pub outcome: Outcome,
    #[serde(serialize_with = "as_micros")]
    pub duration: Duration,
}

fn as_micros<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_micros() as u64)
}

#[derive(Debug, Clone, Serialize)]
pub struct FileCoverage {
    pub path: String,
    pub covered: usize,
    pub not_covered: usize,
    pub percent: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TestReport {
    pub version: String,
    pub results: Vec<TestResult>,
    /// Policy files only (tests are not counted).
    pub coverage: Vec<FileCoverage>,
    /// Covered lines over all policy files, in percent.
    pub coverage_percent: f64,
}

impl TestReport {
    pub fn passed(&self) -> usize {
        self.results
            .iter()
            .filter(|r| r.outcome == Outcome::Pass)
            .count()
    }

    pub fn all_passed(&self) -> bool {
        !self.results.is_empty() && self.passed() == self.results.len()
    }

    /// `opa test -v` style lines, then the coverage table and the summary.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let mut file = "";
        for r in &self.results {
            if r.file != file {
                file = &r.file;
                let _ = writeln!(out, "{file}:");
            }
            let status = match &r.outcome {
                Outcome::Pass => "PASS".to_owned(),
                Outcome::Fail => "FAIL".to_owned(),
                Outcome::Error(e) => format!("ERROR\n    {e}"),
            };
            let _ = writeln!(out, "{}: {status} ({:?})", r.name, r.duration);
        }
        let _ = writeln!(out, "{}", "-".repeat(80));
        for c in &self.coverage {
            let _ = writeln!(
                out,
                "coverage {:>6.2}%  {} ({} of {} lines)",
                c.percent,
                c.path,
                c.covered,
                c.covered + c.not_covered
            );
        }
        let _ = writeln!(out, "coverage {:>6.2}%  total", self.coverage_percent);
        let failed = self.results.len() - self.passed();
        if failed == 0 {
            let _ = writeln!(out, "PASS: {}/{}", self.passed(), self.results.len());
        } else {
            let _ = writeln!(out, "PASS: {}/{}", self.passed(), self.results.len());
            let _ = writeln!(out, "FAIL: {failed}/{}", self.results.len());
        }
        out
    }
}

/// The `test_*` rules of a test file, in file order, with its package.
pub fn discover(source: &str) -> (Option<String>, Vec<String>) {
    let package = Regex::new(r"(?m)^\s*package\s+([A-Za-z0-9_.]+)")
        .expect("static regex")
        .captures(source)
        .map(|c| c[1].to_owned());
    let rule = Regex::new(r"(?m)^(test_[A-Za-z0-9_]*)\b").expect("static regex");
    let mut names: Vec<String> = Vec::new();
    for c in rule.captures_iter(source) {
        if !names.iter().any(|n| *n == c[1]) {
            names.push(c[1].to_owned());
        }
    }
    (package, names)
}

pub fn run_tests(bundle: &Bundle) -> Result<TestReport, PolicyError> {
    let mut engine = interpreter(bundle, true)?;
    engine.set_enable_coverage(true);
    let mut results = Vec::new();
    for file in &bundle.tests {
        let (Some(package), names) = discover(&file.source) else {
            return Err(PolicyError::Compile {
                dir: bundle.dir.clone(),
                message: format!("{}: no package declaration", file.path),
            });
        };
        for name in names {
            let rule = format!("data.{package}.{name}");
            let started = Instant::now();
            let outcome = match engine.eval_rule(rule.clone()) {
                Ok(regorus::Value::Bool(true)) => Outcome::Pass,
                Ok(_) => Outcome::Fail,
                Err(e) => Outcome::Error(format!("{e}")),
            };
            results.push(TestResult {
                name: rule,
                file: file.path.clone(),
                outcome,
                duration: started.elapsed(),
            });
        }
    }
    let report = engine
        .get_coverage_report()
        .map_err(|e| PolicyError::Eval(format!("coverage report: {e}")))?;
    let mut coverage: Vec<FileCoverage> = report
        .files
        .into_iter()
        .filter(|f| !f.path.ends_with("_test.rego"))
        .map(|f| {
            let (c, n) = (f.covered.len(), f.not_covered.len());
            FileCoverage {
                path: f.path,
                covered: c,
                not_covered: n,
                percent: percent(c, n),
            }
        })
        .collect();
    coverage.sort_by(|a, b| a.path.cmp(&b.path));
    let (c, n) = coverage
        .iter()
        .fold((0, 0), |(c, n), f| (c + f.covered, n + f.not_covered));
    Ok(TestReport {
        version: bundle.version.clone(),
        results,
        coverage,
        coverage_percent: percent(c, n),
    })
}

fn percent(covered: usize, not_covered: usize) -> f64 {
    if covered + not_covered == 0 {
        100.0
    } else {
        (covered as f64 * 10_000.0 / (covered + not_covered) as f64).round() / 100.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::bundle::Module;

    #[test]
    fn discovers_tests_in_order() {
        let (p, n) = discover(
            "package a.b_test\n\nimport rego.v1\n\ntest_one if { true }\n# test_no\ntest_two if { false }\ntest_one if { 1 == 1 }\n",
        );
        assert_eq!(p.as_deref(), Some("a.b_test"));
        assert_eq!(n, ["test_one", "test_two"]);
    }

    #[test]
    fn passes_fails_and_errors_are_told_apart() {
        let b = Bundle {
            dir: "t".into(),
            modules: vec![Module {
                path: "p.rego".into(),
                source: "package p\n\nallow if input.x == 1\n\nhalf := input.x / input.y\n".into(),
            }],
            tests: vec![Module {
                path: "p_test.rego".into(),
                source: "package p_test\n\ntest_allow if data.p.allow with input as {\"x\": 1}\n\ntest_fails if data.p.allow with input as {\"x\": 2}\n\ntest_errors if data.p.half == 1 with input as {\"x\": 1, \"y\": \"a\"}\n".into(),
            }],
            data: serde_json::json!({}),
            version: "v".into(),
        };
        let r = run_tests(&b).unwrap();
        let outcomes: Vec<_> = r.results.iter().map(|r| &r.outcome).collect();
        assert_eq!(outcomes[0], &Outcome::Pass);
        assert_eq!(outcomes[1], &Outcome::Fail);
        assert!(
            matches!(outcomes[2], Outcome::Error(_) | Outcome::Fail),
            "{outcomes:?}"
        );
        assert!(!r.all_passed());
        assert_eq!(r.coverage.len(), 1);
        assert!(r.coverage[0].covered > 0);
        let text = r.render();
        assert!(text.contains("data.p_test.test_allow: PASS"), "{text}");
        assert!(text.contains("FAIL: 2/3"), "{text}");
    }
}
