//! `cordon policy check`: compiles a bundle and finds references to input fields that the
//! `cordon.input/v1` schema does not define (a typo such as `input.user.gruops` is otherwise
//! just undefined, and a rule that depends on it silently never fires).

use regex::Regex;
use serde::Serialize;
use serde_json::Value;

use super::bundle::Bundle;

/// The input schema, as documented in `policies/schema/`.
pub const INPUT_SCHEMA_JSON: &str = include_str!("../../../policies/schema/input.schema.json");
pub const DECISION_SCHEMA_JSON: &str =
    include_str!("../../../policies/schema/decision.schema.json");

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SchemaIssue {
    pub file: String,
    pub line: usize,
    /// The reference as written, e.g. `input.user.gruops`.
    pub reference: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    /// `[_]`, `[i]`, `[x.y]`: any key or index.
    Any,
}

/// Every `input...` reference in the bundle's policy files (tests are not checked: their
/// `with input as` documents are written on purpose) that the schema does not define.
pub fn check_input_refs(bundle: &Bundle) -> Vec<SchemaIssue> {
    let schema: Value = serde_json::from_str(INPUT_SCHEMA_JSON).expect("bundled schema is JSON");
    let reference = Regex::new(
        r#"\binput((?:\s*\.\s*[A-Za-z_][A-Za-z0-9_]*|\s*\[\s*"(?:[^"\\]|\\.)*"\s*\]|\s*\[[^\]"]*\])*)"#,
    )
    .expect("static regex");
    let seg =
        Regex::new(r#"\.\s*([A-Za-z_][A-Za-z0-9_]*)|\[\s*"((?:[^"\\]|\\.)*)"\s*\]|\[([^\]"]*)\]"#)
            .expect("static regex");
    let mut issues = Vec::new();
    for m in &bundle.modules {
        for (i, raw_line) in m.source.lines().enumerate() {
            let clean = sanitize(raw_line);
            let line = clean.as_str();
            for c in reference.captures_iter(line) {
                let whole = c.get(0).expect("match").as_str();
                // `input` as part of an identifier such as `input_x` is not a reference.
                if line[c.get(0).expect("match").end()..]
                    .starts_with(|ch: char| ch == '_' || ch.is_ascii_alphanumeric())
                {
                    continue;
                }
                let segs: Vec<Seg> = seg
                    .captures_iter(&c[1])
                    .map(|s| {
                        if let Some(k) = s.get(1).or_else(|| s.get(2)) {
                            Seg::Key(k.as_str().to_owned())
                        } else {
                            let inner = s.get(3).map_or("", |x| x.as_str()).trim();
                            match inner.parse::<u64>() {
                                Ok(_) => Seg::Key(inner.to_owned()),
                                Err(_) => Seg::Any,
                            }
                        }
                    })
                    .collect();
                if let Err(message) = walk(&schema, &segs) {
                    let compact: String = whole.split_whitespace().collect();
                    let issue = SchemaIssue {
                        file: m.path.clone(),
                        line: i + 1,
                        reference: compact,
                        message,
                    };
                    if !issues.contains(&issue) {
                        issues.push(issue);
                    }
                }
            }
        }
    }
    issues
}

/// The line without its `#` comment, with the contents of string literals blanked out, except
/// literal keys in brackets (`["x-cordon-classification"]`), which are part of a reference.
fn sanitize(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut in_str = false;
    let mut keep = false;
    let mut escaped = false;
    for ch in line.chars() {
        if in_str {
            if escaped {
                escaped = false;
            } else if ch == '\\' {
                escaped = true;
            } else if ch == '"' {
                in_str = false;
                out.push('"');
                continue;
            }
            out.push(if keep { ch } else { ' ' });
            continue;
        }
        match ch {
            '#' => break,
            '"' => {
                in_str = true;
                keep = out.trim_end().ends_with('[');
                out.push('"');
            }
            _ => out.push(ch),
        }
    }
    out
}

fn walk(schema: &Value, segs: &[Seg]) -> Result<(), String> {
    let mut node = schema;
    let mut path = String::from("input");
    for seg in segs {
        let props = node.get("properties").and_then(Value::as_object);
        let additional = node.get("additionalProperties");
        let items = node.get("items");
        node = match (seg, props, items) {
            (Seg::Key(k), Some(p), _) if p.contains_key(k) => &p[k],
            (Seg::Key(k), _, Some(items)) if k.parse::<u64>().is_ok() => items,
            (Seg::Any, _, Some(items)) => items,
            (_, _, None) if additional.is_some_and(Value::is_object) => {
                additional.expect("checked")
            }
            // A dynamic key over a closed object iterates its known fields.
            (Seg::Any, Some(_), None) => return Ok(()),
            (Seg::Key(k), Some(p), None) => {
                let known: Vec<&str> = p.keys().map(String::as_str).collect();
                return Err(format!(
                    "`{path}` has no field `{k}` in cordon.input/v1 (it has: {})",
                    known.join(", ")
                ));
            }
            (Seg::Key(k), _, _) => {
                return Err(format!(
                    "`{path}` is not an object in cordon.input/v1, so `{k}` is never defined"
                ));
            }
            (Seg::Any, _, _) => {
                return Err(format!(
                    "`{path}` is not a collection in cordon.input/v1 and cannot be iterated"
                ));
            }
        };
        match seg {
            Seg::Key(k) => {
                path.push('.');
                path.push_str(k);
            }
            Seg::Any => path.push_str("[_]"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issues(src: &str) -> Vec<SchemaIssue> {
        check_input_refs(&Bundle::of_sources(src, "test_x if { input.whatever }"))
    }

    #[test]
    fn defined_references_pass() {
        let ok = issues(
            r#"package p
            a if input.user.groups[_] == "x"
            b if input.request.headers["x-cordon-classification"] == "secret"
            c if { some f in input.dlp.findings; f.severity == "high" }
            d if input.dlp.findings[0].entity_type == "X"
            e if input.user.attributes.department == "hr"
            f if input . route_health . private
            g := input
            # input.not_checked in a comment
            h := "input.inside_a_string # not a comment"
            "#,
        );
        assert!(ok.is_empty(), "{ok:?}");
    }

    #[test]
    fn typos_and_wrong_shapes_are_reported_with_their_line() {
        let bad = issues(
            "package p\n\na if input.user.gruops[_] == \"x\"\nb if input.request.model.name\nc if input.mode[_]\n",
        );
        assert_eq!(bad.len(), 3, "{bad:?}");
        assert_eq!(bad[0].line, 3);
        assert_eq!(bad[0].reference, "input.user.gruops[_]");
        assert!(
            bad[0].message.contains("no field `gruops`"),
            "{}",
            bad[0].message
        );
        assert!(
            bad[1].message.contains("not an object"),
            "{}",
            bad[1].message
        );
        assert!(
            bad[2].message.contains("cannot be iterated"),
            "{}",
            bad[2].message
        );
    }
}
