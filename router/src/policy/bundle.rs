//! A policy bundle as it sits on disk: Rego modules, their `*_test.rego` tests and `data.json`
//! documents, laid out as OPA lays out a bundle directory. The bundle's version is a SHA-256 over
//! every file that counts, so two gateways with the same files report the same version.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::PolicyError;

/// One Rego file: its path relative to the bundle root, and its text.
#[derive(Debug, Clone)]
pub struct Module {
    pub path: String,
    pub source: String,
}

#[derive(Debug, Clone)]
pub struct Bundle {
    pub dir: PathBuf,
    /// Policy modules, sorted by path; what requests are evaluated against.
    pub modules: Vec<Module>,
    /// `*_test.rego` files, sorted by path; only `cordon policy test` and reloads load them.
    pub tests: Vec<Module>,
    /// Every `data.json` merged at its directory's path, as OPA does (`a/b/data.json` is
    /// `data.a.b`).
    pub data: serde_json::Value,
    /// `sha256:` and the hex digest over every file's relative path and contents.
    pub version: String,
}

impl Bundle {
    /// Reads a bundle directory. Hidden entries and anything that is not `.rego` or `data.json`
    /// (READMEs, schemas, test inputs) are ignored.
    pub fn load(dir: &Path) -> Result<Self, PolicyError> {
        let err = |message: String| PolicyError::Bundle {
            dir: dir.to_owned(),
            message,
        };
        let mut files = Vec::new();
        collect(dir, dir, &mut files).map_err(|e| err(e.to_string()))?;
        files.sort();
        let mut hasher = Sha256::new();
        let mut modules = Vec::new();
        let mut tests = Vec::new();
        let mut data = serde_json::Value::Object(Default::default());
        for rel in &files {
            let text = std::fs::read_to_string(dir.join(rel))
                .map_err(|e| err(format!("cannot read {rel}: {e}")))?;
            hasher.update(rel.as_bytes());
            hasher.update([0]);
            hasher.update(text.as_bytes());
            hasher.update([0]);
            if rel.ends_with(".rego") {
                let m = Module {
                    path: rel.clone(),
                    source: text,
                };
                if rel.ends_with("_test.rego") {
                    tests.push(m);
                } else {
                    modules.push(m);
                }
            } else {
                let value: serde_json::Value = serde_json::from_str(&text)
                    .map_err(|e| err(format!("{rel} is not valid JSON: {e}")))?;
                let prefix: Vec<&str> = rel
                    .rsplit_once('/')
                    .map(|(d, _)| d.split('/').collect())
                    .unwrap_or_default();
                merge_at(&mut data, &prefix, value).map_err(|e| err(format!("{rel}: {e}")))?;
            }
        }
        if modules.is_empty() {
            return Err(err(
                "no .rego policy files found; point policy.dir at a bundle directory".into(),
            ));
        }
        Ok(Self {
            dir: dir.to_owned(),
            modules,
            tests,
            data,
            version: format!("sha256:{}", hex::encode(hasher.finalize())),
        })
    }

    /// The short form of the version shown in headers and logs.
    pub fn short_version(&self) -> &str {
        short_version(&self.version)
    }
}

pub fn short_version(version: &str) -> &str {
    let hex = version.strip_prefix("sha256:").unwrap_or(version);
    &hex[..hex.len().min(12)]
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            collect(root, &path, out)?;
        } else if name.ends_with(".rego") || name == "data.json" {
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .replace('\\', "/");
            out.push(rel);
        }
    }
    Ok(())
}

/// Deep-merges `value` into `data` at `path`; a conflict between two non-objects is an error,
/// as in OPA.
fn merge_at(
    data: &mut serde_json::Value,
    path: &[&str],
    value: serde_json::Value,
) -> Result<(), String> {
    let mut cur = data;
    for seg in path {
        let obj = cur
            .as_object_mut()
            .ok_or_else(|| format!("data path `{seg}` is not an object"))?;
        cur = obj
            .entry((*seg).to_owned())
            .or_insert_with(|| serde_json::Value::Object(Default::default()));
    }
    merge(cur, value, &path.join("."))
}

fn merge(into: &mut serde_json::Value, value: serde_json::Value, at: &str) -> Result<(), String> {
    match (into, value) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(&k) {
                    Some(existing) => {
                        let at = if at.is_empty() {
                            k.clone()
                        } else {
                            format!("{at}.{k}")
                        };
                        merge(existing, v, &at)?
                    }
                    None => {
                        a.insert(k, v);
                    }
                }
            }
            Ok(())
        }
        (_, _) => Err(format!("data.{at} is defined twice")),
    }
}

#[cfg(test)]
impl Bundle {
    /// A bundle of one policy module (`p.rego`) and one test module (`p_test.rego`), for the
    /// unit tests of what reads bundles.
    pub fn of_sources(policy: &str, test: &str) -> Self {
        let module = |path: &str, source: &str| Module {
            path: path.into(),
            source: source.into(),
        };
        Self {
            dir: "test".into(),
            modules: vec![module("p.rego", policy)],
            tests: vec![module("p_test.rego", test)],
            data: serde_json::json!({}),
            version: "sha256:00".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_modules_tests_and_nested_data_and_versions_them() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::create_dir_all(p.join("teams/eu")).unwrap();
        std::fs::create_dir_all(p.join(".git")).unwrap();
        std::fs::write(p.join("main.rego"), "package x\nallow := true\n").unwrap();
        std::fs::write(p.join("main_test.rego"), "package x\ntest_a if allow\n").unwrap();
        std::fs::write(p.join("data.json"), r#"{"a": {"b": 1}}"#).unwrap();
        std::fs::write(p.join("teams/eu/data.json"), r#"{"c": 2}"#).unwrap();
        std::fs::write(p.join(".git/x.rego"), "not loaded").unwrap();
        std::fs::write(p.join("README.md"), "ignored").unwrap();
        let b = Bundle::load(p).unwrap();
        assert_eq!(b.modules.len(), 1);
        assert_eq!(b.tests.len(), 1);
        assert_eq!(
            b.data,
            serde_json::json!({"a": {"b": 1}, "teams": {"eu": {"c": 2}}})
        );
        let v1 = b.version.clone();
        assert_eq!(Bundle::load(p).unwrap().version, v1, "stable");
        std::fs::write(p.join("README.md"), "still ignored").unwrap();
        assert_eq!(Bundle::load(p).unwrap().version, v1);
        std::fs::write(p.join("teams/eu/data.json"), r#"{"c": 3}"#).unwrap();
        assert_ne!(Bundle::load(p).unwrap().version, v1, "data counts");
    }

    #[test]
    fn conflicting_data_and_empty_bundles_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        assert!(
            Bundle::load(p)
                .unwrap_err()
                .to_string()
                .contains("no .rego")
        );
        std::fs::create_dir_all(p.join("a")).unwrap();
        std::fs::write(p.join("main.rego"), "package x\n").unwrap();
        std::fs::write(p.join("data.json"), r#"{"a": {"b": 1}}"#).unwrap();
        std::fs::write(p.join("a/data.json"), r#"{"b": 2}"#).unwrap();
        let e = Bundle::load(p).unwrap_err().to_string();
        assert!(e.contains("data.a.b is defined twice"), "{e}");
    }
}
