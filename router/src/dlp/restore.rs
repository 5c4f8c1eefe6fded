//! The response side of DLP, on what the client receives (OpenAI or Anthropic shape): pseudonym
//! tokens become their values again, and output rules (secrets, by default) are redacted. Works
//! on whole bodies and on stream events; in streams each text field (a choice's content, a tool
//! call's arguments, an Anthropic content block) has its own [`Unmasker`], so a token split
//! across events is restored and only a possible token prefix is ever held back.

use serde_json::{Value, json};
use std::collections::HashMap;

use super::actions::Pseudonyms;
pub use super::redact::OutputRules;
use super::redact::StreamRedactor;
use super::unmask::Unmasker;

/// Per-request response processing.
pub struct ResponseGuard {
    pseudonyms: Pseudonyms,
    output: Option<OutputRules>,
    /// Per streamed text field: its un-masker, then its redactor.
    streams: HashMap<String, (Unmasker, StreamRedactor)>,
}

impl ResponseGuard {
    /// `None` when there is nothing to restore and nothing to redact.
    pub fn new(pseudonyms: Pseudonyms, output: Option<OutputRules>) -> Option<Self> {
        let output = output.filter(|o| !o.redact.is_empty());
        if pseudonyms.is_empty() && output.is_none() {
            return None;
        }
        Some(Self {
            pseudonyms,
            output,
            streams: HashMap::new(),
        })
    }

    /// A complete text: restored, then redacted.
    fn whole(&self, text: &str, json_text: bool) -> String {
        self.redact(&super::unmask::restore_with(
            &self.pseudonyms,
            text,
            json_text,
        ))
    }

    fn redact(&self, text: &str) -> String {
        match &self.output {
            Some(out) => out.redact(text),
            None => text.to_owned(),
        }
    }

    /// One piece of a streamed text field; `last` flushes what is held.
    fn piece(&mut self, key: String, text: &str, json_text: bool, last: bool) -> String {
        let (u, r) = self.streams.entry(key).or_insert_with(|| {
            let u = if json_text {
                Unmasker::json()
            } else {
                Unmasker::new()
            };
            (u, StreamRedactor::default())
        });
        let mut out = u.push(&self.pseudonyms, text);
        if last {
            out.push_str(&u.finish(&self.pseudonyms));
        }
        match &self.output {
            Some(rules) => r.push(rules, &out, last),
            None => out,
        }
    }

    /// A non-stream OpenAI (chat or completions) or Anthropic body. Says whether anything
    /// changed, so that an untouched body can go out as the upstream sent it.
    pub fn body(&mut self, body: &mut Value) -> bool {
        let mut changed = false;
        if let Some(choices) = body.get_mut("choices").and_then(Value::as_array_mut) {
            for c in choices {
                if let Some(Value::String(t)) = c.get_mut("text") {
                    changed |= self.replace(t, false);
                }
                let Some(m) = c.get_mut("message") else {
                    continue;
                };
                if let Some(Value::String(t)) = m.get_mut("content") {
                    changed |= self.replace(t, false);
                }
                for call in m
                    .get_mut("tool_calls")
                    .and_then(Value::as_array_mut)
                    .into_iter()
                    .flatten()
                {
                    if let Some(Value::String(a)) = call
                        .get_mut("function")
                        .and_then(|f| f.get_mut("arguments"))
                    {
                        changed |= self.replace(a, true);
                    }
                }
            }
        }
        if let Some(blocks) = body.get_mut("content").and_then(Value::as_array_mut) {
            for b in blocks {
                if let Some(Value::String(t)) = b.get_mut("text") {
                    changed |= self.replace(t, false);
                }
                if let Some(input) = b.get_mut("input") {
                    changed |= self.all_strings(input);
                }
            }
        }
        changed
    }

    /// Restores and redacts a whole text in place; true when it changed.
    fn replace(&self, text: &mut String, json_text: bool) -> bool {
        let new = self.whole(text, json_text);
        let changed = new != *text;
        if changed {
            *text = new;
        }
        changed
    }

    fn all_strings(&self, v: &mut Value) -> bool {
        match v {
            Value::String(s) => self.replace(s, false),
            Value::Array(a) => a.iter_mut().fold(false, |c, x| self.all_strings(x) | c),
            Value::Object(o) => o.values_mut().fold(false, |c, x| self.all_strings(x) | c),
            _ => false,
        }
    }

    /// One OpenAI stream chunk. When a choice finishes, what its fields still hold is flushed
    /// into this chunk.
    pub fn openai_chunk(&mut self, chunk: &mut Value) {
        let Some(choices) = chunk.get_mut("choices").and_then(Value::as_array_mut) else {
            return;
        };
        for c in choices {
            let i = c.get("index").and_then(Value::as_u64).unwrap_or(0);
            let finished = c.get("finish_reason").is_some_and(|f| !f.is_null());
            if let Some(Value::String(t)) = c.get_mut("text") {
                *t = self.piece(format!("t{i}"), t, false, finished);
            }
            let Some(delta) = c.get_mut("delta") else {
                continue;
            };
            let content_key = format!("c{i}");
            if let Some(Value::String(t)) = delta.get_mut("content") {
                *t = self.piece(content_key.clone(), t, false, finished);
            } else if finished && self.streams.contains_key(&content_key) {
                let held = self.piece(content_key, "", false, true);
                if !held.is_empty() {
                    delta["content"] = json!(held);
                }
            }
            let mut seen_tools = Vec::new();
            for call in delta
                .get_mut("tool_calls")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                let k = call.get("index").and_then(Value::as_u64).unwrap_or(0);
                seen_tools.push(k);
                if let Some(Value::String(a)) = call
                    .get_mut("function")
                    .and_then(|f| f.get_mut("arguments"))
                {
                    *a = self.piece(format!("a{i}.{k}"), a, true, finished);
                }
            }
            if finished {
                let prefix = format!("a{i}.");
                let pending: Vec<String> = self
                    .streams
                    .keys()
                    .filter(|key| key.starts_with(&prefix))
                    .filter(|key| !seen_tools.iter().any(|k| **key == format!("{prefix}{k}")))
                    .cloned()
                    .collect();
                for key in pending {
                    let held = self.piece(key.clone(), "", true, true);
                    if held.is_empty() {
                        continue;
                    }
                    let k: u64 = key[prefix.len()..].parse().unwrap_or(0);
                    let entry = json!({"index": k, "function": {"arguments": held}});
                    match delta.get_mut("tool_calls").and_then(Value::as_array_mut) {
                        Some(calls) => calls.push(entry),
                        None => delta["tool_calls"] = json!([entry]),
                    }
                }
            }
        }
    }

    /// Whatever is still held when a stream ends without finish reasons.
    pub fn openai_leftover(&mut self) -> Option<String> {
        let keys: Vec<String> = self
            .streams
            .keys()
            .filter(|k| k.starts_with('c') || k.starts_with('t'))
            .cloned()
            .collect();
        let mut out = String::new();
        for k in keys {
            let json_text = false;
            out.push_str(&self.piece(k, "", json_text, true));
        }
        (!out.is_empty()).then_some(out)
    }

    /// One Anthropic stream event; returns the events to send (a held remainder is sent as an
    /// extra delta before its block stops).
    pub fn anthropic_event(&mut self, event: &str, mut data: Value) -> Vec<(String, Value)> {
        let index = data.get("index").and_then(Value::as_u64).unwrap_or(0);
        match data.get("type").and_then(Value::as_str) {
            Some("content_block_delta") => {
                let delta = &mut data["delta"];
                if let Some(Value::String(t)) = delta.get_mut("text") {
                    *t = self.piece(format!("b{index}"), t, false, false);
                } else if let Some(Value::String(t)) = delta.get_mut("partial_json") {
                    *t = self.piece(format!("j{index}"), t, true, false);
                }
                vec![(event.to_owned(), data)]
            }
            Some("content_block_stop") => {
                let mut out = Vec::new();
                for (key, kind, field, json_text) in [
                    (format!("b{index}"), "text_delta", "text", false),
                    (
                        format!("j{index}"),
                        "input_json_delta",
                        "partial_json",
                        true,
                    ),
                ] {
                    if self.streams.contains_key(&key) {
                        let held = self.piece(key, "", json_text, true);
                        if !held.is_empty() {
                            out.push((
                                "content_block_delta".to_owned(),
                                json!({"type": "content_block_delta", "index": index, "delta": {"type": kind, field: held}}),
                            ));
                        }
                    }
                }
                out.push((event.to_owned(), data));
                out
            }
            _ => vec![(event.to_owned(), data)],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> ResponseGuard {
        let mut p = Pseudonyms::default();
        p.token("EMAIL_ADDRESS", "a\"b@example.com");
        ResponseGuard::new(p, None).unwrap()
    }

    #[test]
    fn openai_stream_split_token_and_tool_arguments() {
        let mut g = guard();
        let mut out = String::new();
        let mut args = String::new();
        for (content, arg, finish) in [
            ("Mail ⟦EMAIL_", "{\"to\":\"⟦EMAIL", Value::Null),
            ("ADDRESS_1⟧ now", "_ADDRESS_1⟧\"}", json!("stop")),
        ] {
            let mut chunk = json!({"choices": [{"index": 0, "delta": {"content": content, "tool_calls": [{"index": 0, "function": {"arguments": arg}}]}, "finish_reason": finish}]});
            g.openai_chunk(&mut chunk);
            out.push_str(chunk["choices"][0]["delta"]["content"].as_str().unwrap());
            args.push_str(
                chunk["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                    .as_str()
                    .unwrap(),
            );
        }
        assert_eq!(out, "Mail a\"b@example.com now");
        let parsed: Value = serde_json::from_str(&args).unwrap();
        assert_eq!(parsed["to"], "a\"b@example.com");
    }

    #[test]
    fn anthropic_block_flushes_before_stop() {
        let mut g = guard();
        let a = g.anthropic_event("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "to ⟦EMAIL_ADDRESS"}}));
        assert_eq!(a[0].1["delta"]["text"], "to ");
        let b = g.anthropic_event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        );
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].1["delta"]["text"], "⟦EMAIL_ADDRESS");
        assert_eq!(b[1].0, "content_block_stop");
    }

    #[test]
    fn whole_body() {
        let mut g = guard();
        let mut body = json!({"choices": [{"message": {"content": "hi ⟦email_address_1⟧"}}]});
        assert!(g.body(&mut body));
        assert_eq!(
            body["choices"][0]["message"]["content"],
            "hi a\"b@example.com"
        );
        // Nothing to restore or redact: reported unchanged, so the relay sends the bytes as
        // they came.
        let mut plain = json!({"choices": [{"message": {"content": "hi there", "tool_calls": [{"function": {"arguments": "{}"}}]}}]});
        let before = plain.clone();
        assert!(!g.body(&mut plain));
        assert_eq!(plain, before);
    }
}
