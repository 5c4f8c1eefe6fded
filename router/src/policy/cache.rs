//! The decision cache: a decision is a function of the parts of the input document that the
//! bundle reads (data is fixed per bundle), so requests that agree on those parts get the same
//! decision without running the VM again.
//!
//! [`InputReads::of`] finds, from the bundle's tokens, every path under `input` that a policy
//! module names (`input.user.team`, `input.request.headers["x"]`, `import input.time`); the
//! path stops at the first dynamic key (`input.user[k]` reads all of `input.user`). The
//! request's cache key is the JSON of the input at exactly those paths
//! ([`crate::policy::PolicyInput::cache_key`]), compared whole on lookup, so two requests share a
//! decision only when everything the policy could see of them is equal. A bundle that reads
//! `input` whole (`walk(input, ...)`, `object.get(input, ...)`) or calls a builtin whose result
//! is not a function of its arguments (`time.now_ns`, `rand.intn`, `http.send`, ...) is never
//! cached; the reason is shown on `/readyz`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use regorus::unstable::{Lexer, Source, TokenKind};

use super::bundle::Bundle;
use super::decision::Decision;

/// Builtins whose result depends on more than their arguments: the clock, randomness, the
/// network, the runtime. A bundle that calls one is evaluated afresh for every request.
const IMPURE_BUILTINS: &[&[&str]] = &[
    &["time", "now_ns"],
    &["rand", "intn"],
    &["uuid", "rfc4122"],
    &["http", "send"],
    &["net", "lookup_ip_addr"],
    &["opa", "runtime"],
    // Both check expiry against the clock unless told a time.
    &["io", "jwt", "decode_verify"],
    &["crypto", "x509", "parse_and_verify_certificates"],
    &[
        "crypto",
        "x509",
        "parse_and_verify_certificates_with_options",
    ],
];

/// The parts of the input document a bundle reads: each top-level field either whole or by
/// its named sub-fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InputReads {
    fields: BTreeMap<String, Read>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    Whole,
    /// Only these sub-fields (each whole).
    Fields(BTreeSet<String>),
}

impl InputReads {
    /// What the bundle's policy modules read of `input`, or why its decisions cannot be cached.
    pub fn of(bundle: &Bundle) -> Result<Self, String> {
        let mut reads = Self::default();
        for m in &bundle.modules {
            let source = Source::from_contents(m.path.clone(), m.source.clone())
                .map_err(|e| format!("{}: {e}", m.path))?;
            let tokens = tokens(&source).map_err(|e| format!("{}: {e}", m.path))?;
            for i in 0..tokens.len() {
                let (kind, text, line) = &tokens[i];
                if *kind != TokenKind::Ident {
                    continue;
                }
                if let Some(name) = IMPURE_BUILTINS.iter().find(|b| dotted_at(&tokens, i, b)) {
                    return Err(format!(
                        "{}:{line} calls {}, whose result is not a function of the request",
                        m.path,
                        name.join(".")
                    ));
                }
                // `input` as a field name (`x.input`) is not the input document.
                if text != "input" || (i > 0 && is_symbol(&tokens[i - 1], ".")) {
                    continue;
                }
                let path = constant_path(&tokens[i + 1..]);
                if path.is_empty() {
                    return Err(format!(
                        "{}:{line} reads `input` whole; name the fields instead (input.user.team)",
                        m.path
                    ));
                }
                reads.add(&path);
            }
        }
        Ok(reads)
    }

    fn add(&mut self, path: &[String]) {
        let read = self
            .fields
            .entry(path[0].clone())
            .or_insert_with(|| Read::Fields(BTreeSet::new()));
        match (read, path.get(1)) {
            (Read::Whole, _) => {}
            (read, None) => *read = Read::Whole,
            (Read::Fields(f), Some(sub)) => {
                f.insert(sub.clone());
            }
        }
    }

    /// The top-level fields read, in order, with how much of each.
    pub fn fields(&self) -> impl Iterator<Item = (&str, &Read)> {
        self.fields.iter().map(|(k, v)| (k.as_str(), v))
    }
}

/// `input.dlp.findings, input.request.model, input.time, ...`: what a decision depends on.
impl std::fmt::Display for InputReads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut paths = Vec::new();
        for (field, read) in self.fields() {
            match read {
                Read::Whole => paths.push(format!("input.{field}")),
                Read::Fields(subs) => {
                    paths.extend(subs.iter().map(|s| format!("input.{field}.{s}")));
                }
            }
        }
        f.write_str(&paths.join(", "))
    }
}

/// The module's tokens: kind, text (strings unquoted and unescaped) and line.
fn tokens(source: &Source) -> Result<Vec<(TokenKind, String, u32)>, String> {
    let mut lexer = Lexer::new(source);
    let mut out = Vec::new();
    loop {
        let token = lexer.next_token().map_err(|e| e.to_string())?;
        let text = match token.0 {
            TokenKind::Eof => return Ok(out),
            TokenKind::String => serde_json::from_str(&format!("\"{}\"", token.1.text()))
                .map_err(|e| format!("line {}: {e}", token.1.line))?,
            _ => token.1.text().to_owned(),
        };
        out.push((token.0, text, token.1.line));
    }
}

fn is_symbol(token: &(TokenKind, String, u32), symbol: &str) -> bool {
    token.0 == TokenKind::Symbol && token.1 == symbol
}

/// Whether `name` (`["time", "now_ns"]`) is spelled out, dot-separated, from token `i`.
fn dotted_at(tokens: &[(TokenKind, String, u32)], i: usize, name: &[&str]) -> bool {
    name.iter().enumerate().all(|(n, part)| {
        let at = i + 2 * n;
        tokens
            .get(at)
            .is_some_and(|t| t.0 == TokenKind::Ident && t.1 == *part)
            && (n == 0 || tokens.get(at - 1).is_some_and(|t| is_symbol(t, ".")))
    })
}

/// The constant keys that follow `input`: `.name` and `["name"]`, up to the first other token.
fn constant_path(rest: &[(TokenKind, String, u32)]) -> Vec<String> {
    let mut path = Vec::new();
    let mut i = 0;
    loop {
        match (rest.get(i), rest.get(i + 1), rest.get(i + 2)) {
            (Some(dot), Some(name), _) if is_symbol(dot, ".") && name.0 == TokenKind::Ident => {
                path.push(name.1.clone());
                i += 2;
            }
            (Some(open), Some(key), Some(close))
                if is_symbol(open, "[")
                    && matches!(key.0, TokenKind::String | TokenKind::RawString)
                    && is_symbol(close, "]") =>
            {
                path.push(key.1.clone());
                i += 3;
            }
            _ => return path,
        }
    }
}

/// One worker thread's cached decisions for one bundle, keyed by the request's projection of
/// the input. Bounded: when full it starts over, which keeps memory fixed without bookkeeping
/// on every hit.
#[derive(Default)]
pub struct DecisionCache {
    entries: HashMap<Vec<u8>, Decision>,
}

impl DecisionCache {
    pub fn get(&self, key: &[u8]) -> Option<&Decision> {
        self.entries.get(key)
    }

    pub fn insert(&mut self, key: Vec<u8>, decision: Decision, capacity: usize) {
        if self.entries.len() >= capacity {
            self.entries.clear();
        }
        self.entries.insert(key, decision);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reads(src: &str) -> Result<InputReads, String> {
        // The test module reads input whole and calls the clock: tests are not evaluated for
        // requests, so they do not count.
        InputReads::of(&Bundle::of_sources(
            src,
            "package p_test\ntest_x if { x := input; time.now_ns() > 0 }",
        ))
    }

    fn fields(r: &InputReads) -> Vec<(String, Read)> {
        r.fields().map(|(k, v)| (k.to_owned(), v.clone())).collect()
    }

    fn subs(names: &[&str]) -> Read {
        Read::Fields(names.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn paths_stop_at_the_first_dynamic_key() {
        let r = reads(
            r#"package p
            import input.time
            a if input.user.groups[_] == "x"
            b if input.request.headers["x-cordon-classification"] == "secret"
            c if { some f in input.dlp.findings; f.severity == "high" }
            d if input . request . model == `input.route_health`
            e if input["user"].team == data.input.x
            f := object.get(input.user.attributes, "department", "")
            # input.mode in a comment
            g := "input.usage in a string"
            "#,
        )
        .unwrap();
        assert_eq!(
            fields(&r),
            vec![
                ("dlp".into(), subs(&["findings"])),
                ("request".into(), subs(&["headers", "model"])),
                ("time".into(), Read::Whole),
                ("user".into(), subs(&["attributes", "groups", "team"])),
            ]
        );
        // A dynamic key reads the whole field; a later sub-field changes nothing.
        let r = reads("package p\na if input.user[k] == 1\nb if input.user.team == 1").unwrap();
        assert_eq!(fields(&r), vec![("user".into(), Read::Whole)]);
        let r = reads("package p\nb if input.user.team == 1\na if input.user[k] == 1").unwrap();
        assert_eq!(fields(&r), vec![("user".into(), Read::Whole)]);
    }

    #[test]
    fn whole_input_and_impure_builtins_are_not_cached() {
        for (src, says) in [
            (
                "package p\nx := object.get(input, [\"user\", \"team\"], null)",
                "p.rego:2 reads `input` whole",
            ),
            ("package p\nx := walk(input)", "reads `input` whole"),
            ("package p\nimport input\nx := 1", "reads `input` whole"),
            ("package p\nx if input[k]", "reads `input` whole"),
            (
                "package p\nlate if time.now_ns() > 0",
                "p.rego:2 calls time.now_ns",
            ),
            ("package p\nx := rand.intn(\"k\", 9)", "calls rand.intn"),
            ("package p\nx := http.send({})", "calls http.send"),
            (
                "package p\nx := io.jwt.decode_verify(t, {})",
                "calls io.jwt.decode_verify",
            ),
        ] {
            let e = reads(src).unwrap_err();
            assert!(e.contains(says), "{src}: {e}");
        }
        // Names that merely start like them are pure.
        assert!(reads("package p\nx := time.now_nsx\ny := time.parse_ns(\"a\", \"b\")").is_ok());
    }

    #[test]
    fn the_bundled_policies_are_cacheable() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
        let r = InputReads::of(&Bundle::load(&dir).unwrap()).unwrap();
        let read: Vec<_> = r.fields().map(|(k, _)| k).collect();
        assert!(!read.contains(&"request_id"), "{r:?}");
        assert!(read.contains(&"user") && read.contains(&"dlp"), "{r:?}");
        // The request's size varies per request and the bundle does not read it.
        assert_eq!(
            r.fields.get("request"),
            Some(&subs(&["headers", "model", "model_route"]))
        );
        assert_eq!(r.fields.get("time"), Some(&subs(&["hour", "weekday"])));
        assert!(
            r.to_string()
                .contains("input.request.model, input.request.model_route, input.time.hour"),
            "{r}"
        );
    }

    #[test]
    fn a_full_cache_starts_over() {
        let mut c = DecisionCache::default();
        for i in 0..5u8 {
            c.insert(vec![i], Decision::policy_error("x"), 3);
        }
        assert_eq!(c.entries.len(), 2);
        assert!(c.get(&[4]).is_some() && c.get(&[0]).is_none());
    }
}
