//! JSON-aware scanning: only the text a model reads is scanned and rewritten (message contents,
//! content parts, system prompts, tool-call arguments and results, completion prompts, embedding
//! inputs). Each finding carries its JSON location, such as `messages[3].content`. Rewriting
//! replaces strings in place, so the body stays valid JSON.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::actions::{ActionTable, Pseudonyms, apply};
use super::{Finding, Scanner, Severity};
use crate::api::Api;

/// A finding in one text field of a request.
#[derive(Debug, Clone)]
pub struct Located {
    /// Which text field, in visiting order.
    pub field: usize,
    pub location: String,
    pub finding: Finding,
}

/// What policy and audit see of one entity type: never the values.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EntitySummary {
    pub entity: String,
    pub count: usize,
    pub max_confidence: f32,
    pub severity: Severity,
    pub locations: Vec<String>,
}

/// Calls `f(location, text)` for each text field the model reads, in document order.
pub fn for_each_text(
    api: Api,
    body: &mut Map<String, Value>,
    f: &mut dyn FnMut(&str, &mut String),
) {
    match api {
        Api::ChatCompletions => {
            if let Some(Value::Array(messages)) = body.get_mut("messages") {
                for (i, m) in messages.iter_mut().enumerate() {
                    if let Some(c) = m.get_mut("content") {
                        visit_content(c, &format!("messages[{i}].content"), f);
                    }
                    if let Some(Value::Array(calls)) = m.get_mut("tool_calls") {
                        for (j, call) in calls.iter_mut().enumerate() {
                            if let Some(Value::String(args)) = call
                                .get_mut("function")
                                .and_then(|x| x.get_mut("arguments"))
                            {
                                f(
                                    &format!("messages[{i}].tool_calls[{j}].function.arguments"),
                                    args,
                                );
                            }
                        }
                    }
                }
            }
        }
        Api::Messages => {
            if let Some(system) = body.get_mut("system") {
                visit_content(system, "system", f);
            }
            if let Some(Value::Array(messages)) = body.get_mut("messages") {
                for (i, m) in messages.iter_mut().enumerate() {
                    if let Some(c) = m.get_mut("content") {
                        visit_content(c, &format!("messages[{i}].content"), f);
                    }
                }
            }
        }
        Api::Completions => visit_strings_or_list(body.get_mut("prompt"), "prompt", f),
        Api::Embeddings => visit_strings_or_list(body.get_mut("input"), "input", f),
    }
}

fn visit_strings_or_list(v: Option<&mut Value>, name: &str, f: &mut dyn FnMut(&str, &mut String)) {
    match v {
        Some(Value::String(s)) => f(name, s),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter_mut().enumerate() {
                // Arrays of token ids carry no text to scan.
                if let Value::String(s) = item {
                    f(&format!("{name}[{i}]"), s);
                }
            }
        }
        _ => {}
    }
}

/// A content value: a string, or parts/blocks of which text, tool results and tool inputs are
/// read by the model.
fn visit_content(v: &mut Value, loc: &str, f: &mut dyn FnMut(&str, &mut String)) {
    match v {
        Value::String(s) => f(loc, s),
        Value::Array(parts) => {
            for (j, part) in parts.iter_mut().enumerate() {
                let ploc = format!("{loc}[{j}]");
                match part.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        if let Some(Value::String(t)) = part.get_mut("text") {
                            f(&format!("{ploc}.text"), t);
                        }
                    }
                    Some("tool_result") => {
                        if let Some(c) = part.get_mut("content") {
                            visit_content(c, &format!("{ploc}.content"), f);
                        }
                    }
                    Some("tool_use") => {
                        if let Some(input) = part.get_mut("input") {
                            visit_all_strings(input, &format!("{ploc}.input"), f);
                        }
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

fn visit_all_strings(v: &mut Value, loc: &str, f: &mut dyn FnMut(&str, &mut String)) {
    match v {
        Value::String(s) => f(loc, s),
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                visit_all_strings(item, &format!("{loc}[{i}]"), f);
            }
        }
        Value::Object(map) => {
            for (k, item) in map.iter_mut() {
                visit_all_strings(item, &format!("{loc}.{k}"), f);
            }
        }
        _ => {}
    }
}

/// Scans every model-visible text field of a request body.
pub fn scan_request(scanner: &Scanner, api: Api, body: &mut Map<String, Value>) -> Vec<Located> {
    let mut out = Vec::new();
    let mut field = 0;
    for_each_text(api, body, &mut |location, text| {
        for finding in scanner.scan(text) {
            out.push(Located {
                field,
                location: location.to_owned(),
                finding,
            });
        }
        field += 1;
    });
    out
}

/// Applies actions to the fields `findings` came from. Returns the blocked entity types instead
/// when any finding's action is `block`; then the body is left unchanged.
pub fn apply_request(
    api: Api,
    body: &mut Map<String, Value>,
    findings: &[Located],
    table: &ActionTable,
    hash_key: &[u8],
    pseudonyms: &mut Pseudonyms,
) -> Result<(), Vec<String>> {
    let mut blocked: Vec<String> = findings
        .iter()
        .filter(|l| table.action(&l.finding.entity) == super::Action::Block)
        .map(|l| l.finding.entity.to_string())
        .collect();
    if !blocked.is_empty() {
        blocked.sort();
        blocked.dedup();
        return Err(blocked);
    }
    let mut by_field: BTreeMap<usize, Vec<Finding>> = BTreeMap::new();
    for l in findings {
        by_field.entry(l.field).or_default().push(l.finding.clone());
    }
    let mut field = 0;
    for_each_text(api, body, &mut |_, text| {
        if let Some(fs) = by_field.get(&field)
            && let Ok(new) = apply(text, fs, table, hash_key, pseudonyms)
        {
            *text = new;
        }
        field += 1;
    });
    Ok(())
}

/// Per entity type: count, highest confidence, severity and locations.
pub fn summarize(findings: &[Located]) -> Vec<EntitySummary> {
    let mut by_entity: BTreeMap<&str, EntitySummary> = BTreeMap::new();
    for l in findings {
        let s = by_entity
            .entry(&l.finding.entity)
            .or_insert_with(|| EntitySummary {
                entity: l.finding.entity.to_string(),
                count: 0,
                max_confidence: 0.0,
                severity: l.finding.severity,
                locations: Vec::new(),
            });
        s.count += 1;
        s.max_confidence = s.max_confidence.max(l.finding.confidence);
        s.severity = s.severity.max(l.finding.severity);
        if !s.locations.contains(&l.location) {
            s.locations.push(l.location.clone());
        }
    }
    by_entity.into_values().collect()
}
