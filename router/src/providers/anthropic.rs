//! Anthropic's Messages API. Native `/v1/messages` requests pass through with the model
//! replaced; OpenAI chat requests are translated (system prompts, multi-part content, images,
//! tool calls and results, stop sequences) and the answers translated back, streams included.

use serde_json::{Map, Value, json};

use super::{Translation, UpstreamRequest, Usage, to_bytes, unsupported};
use crate::api::{Api, ParsedRequest};
use crate::catalogue::Target;
use crate::config::ProviderConfig;
use crate::error::ApiError;

pub const NAME: &str = "anthropic";

pub fn prepare(
    provider: &ProviderConfig,
    version: &str,
    default_max_tokens: u64,
    target: &Target,
    req: &ParsedRequest,
) -> Result<(UpstreamRequest, Translation), ApiError> {
    let (body, translation) = match req.api {
        Api::Messages => {
            let mut body = req.body.clone();
            body.insert("model".into(), Value::String(target.upstream_model.clone()));
            (body, Translation::None)
        }
        Api::ChatCompletions => (
            chat_to_messages(&req.body, &target.upstream_model, default_max_tokens)?,
            Translation::AnthropicToOpenAiChat,
        ),
        Api::Completions | Api::Embeddings => {
            return Err(unsupported(&provider.name, NAME, req.api));
        }
    };
    let mut headers = vec![
        ("content-type", "application/json".to_owned()),
        ("anthropic-version", version.to_owned()),
    ];
    if let Some(key) = &provider.api_key {
        headers.push(("x-api-key", key.expose().to_owned()));
    }
    Ok((
        UpstreamRequest {
            path: format!("{}/messages", provider.endpoint.base_path),
            headers,
            body: to_bytes(&body),
        },
        translation,
    ))
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_request", message)
}

/// OpenAI chat request -> Messages request.
pub fn chat_to_messages(
    chat: &Map<String, Value>,
    model: &str,
    default_max_tokens: u64,
) -> Result<Map<String, Value>, ApiError> {
    let mut out = Map::new();
    out.insert("model".into(), json!(model));
    let mut system: Vec<Value> = Vec::new();
    let mut messages: Vec<Value> = Vec::new();
    let empty = Vec::new();
    let input = chat
        .get("messages")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    for (i, m) in input.iter().enumerate() {
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(format!("messages[{i}].role is required")))?;
        match role {
            "system" | "developer" => {
                for block in content_blocks(m.get("content"), i)? {
                    if block.get("type").and_then(Value::as_str) == Some("text") {
                        system.push(block);
                    } else {
                        return Err(invalid(format!(
                            "messages[{i}]: system messages may only hold text"
                        )));
                    }
                }
            }
            "user" => push_turn(&mut messages, "user", content_blocks(m.get("content"), i)?),
            "assistant" => {
                let mut blocks = match m.get("content") {
                    None | Some(Value::Null) => Vec::new(),
                    c => content_blocks(c, i)?,
                };
                for call in m
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let f = call.get("function").ok_or_else(|| {
                        invalid(format!("messages[{i}].tool_calls needs function"))
                    })?;
                    let args = f.get("arguments").and_then(Value::as_str).unwrap_or("{}");
                    let input: Value = serde_json::from_str(if args.trim().is_empty() {
                        "{}"
                    } else {
                        args
                    })
                    .map_err(|_| {
                        invalid(format!(
                            "messages[{i}].tool_calls: arguments must be a JSON object string"
                        ))
                    })?;
                    blocks.push(json!({
                        "type": "tool_use",
                        "id": call.get("id").cloned().unwrap_or(json!("")),
                        "name": f.get("name").cloned().unwrap_or(json!("")),
                        "input": input,
                    }));
                }
                push_turn(&mut messages, "assistant", blocks);
            }
            "tool" => {
                let id = m
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        invalid(format!(
                            "messages[{i}].tool_call_id is required for tool messages"
                        ))
                    })?;
                let content = content_blocks(m.get("content"), i)?;
                push_turn(
                    &mut messages,
                    "user",
                    vec![json!({"type": "tool_result", "tool_use_id": id, "content": content})],
                );
            }
            other => {
                return Err(invalid(format!(
                    "messages[{i}].role `{other}` is not one of system, developer, user, assistant, tool"
                )));
            }
        }
    }
    if messages.is_empty() {
        return Err(invalid(
            "the request needs at least one user or assistant message",
        ));
    }
    if !system.is_empty() {
        out.insert("system".into(), Value::Array(system));
    }
    out.insert("messages".into(), Value::Array(messages));
    let max_tokens = chat
        .get("max_completion_tokens")
        .or_else(|| chat.get("max_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(default_max_tokens);
    out.insert("max_tokens".into(), json!(max_tokens));
    for key in ["temperature", "top_p", "stream"] {
        if let Some(v) = chat.get(key).filter(|v| !v.is_null()) {
            out.insert(key.into(), v.clone());
        }
    }
    match chat.get("stop") {
        Some(Value::String(s)) => {
            out.insert("stop_sequences".into(), json!([s]));
        }
        Some(Value::Array(a)) => {
            out.insert("stop_sequences".into(), Value::Array(a.clone()));
        }
        _ => {}
    }
    if let Some(user) = chat.get("user").and_then(Value::as_str) {
        out.insert("metadata".into(), json!({"user_id": user}));
    }
    if let Some(tools) = chat.get("tools").and_then(Value::as_array) {
        let tools = tools
            .iter()
            .map(|t| {
                let f = t
                    .get("function")
                    .ok_or_else(|| invalid("tools[].function is required"))?;
                let mut tool = Map::new();
                tool.insert("name".into(), f.get("name").cloned().unwrap_or(json!("")));
                if let Some(d) = f.get("description") {
                    tool.insert("description".into(), d.clone());
                }
                tool.insert(
                    "input_schema".into(),
                    f.get("parameters")
                        .cloned()
                        .unwrap_or(json!({"type": "object", "properties": {}})),
                );
                Ok(Value::Object(tool))
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        out.insert("tools".into(), Value::Array(tools));
    }
    match chat.get("tool_choice") {
        Some(Value::String(s)) if s == "auto" => {
            out.insert("tool_choice".into(), json!({"type": "auto"}));
        }
        Some(Value::String(s)) if s == "required" => {
            out.insert("tool_choice".into(), json!({"type": "any"}));
        }
        Some(Value::String(s)) if s == "none" => {
            out.insert("tool_choice".into(), json!({"type": "none"}));
        }
        Some(Value::Object(o)) => {
            if let Some(name) = o.get("function").and_then(|f| f.get("name")) {
                out.insert("tool_choice".into(), json!({"type": "tool", "name": name}));
            }
        }
        _ => {}
    }
    Ok(out)
}

/// Consecutive turns of one role are merged: the Messages API expects alternating roles.
fn push_turn(messages: &mut Vec<Value>, role: &str, blocks: Vec<Value>) {
    if let Some(last) = messages.last_mut()
        && last["role"] == role
        && let Some(content) = last.get_mut("content").and_then(Value::as_array_mut)
    {
        content.extend(blocks);
        return;
    }
    messages.push(json!({"role": role, "content": blocks}));
}

/// OpenAI message content (a string or content parts) -> Anthropic content blocks.
fn content_blocks(content: Option<&Value>, i: usize) -> Result<Vec<Value>, ApiError> {
    match content {
        Some(Value::String(s)) => Ok(vec![json!({"type": "text", "text": s})]),
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|p| match p.get("type").and_then(Value::as_str) {
                Some("text") => {
                    Ok(json!({"type": "text", "text": p.get("text").cloned().unwrap_or(json!(""))}))
                }
                Some("image_url") => {
                    let url = p
                        .get("image_url")
                        .and_then(|u| u.get("url").or(Some(u)))
                        .and_then(Value::as_str)
                        .ok_or_else(|| {
                            invalid(format!("messages[{i}]: image_url.url is required"))
                        })?;
                    Ok(image_block(url))
                }
                other => Err(invalid(format!(
                    "messages[{i}]: content part type {} cannot be sent to an Anthropic model",
                    other.unwrap_or("(missing)")
                ))),
            })
            .collect(),
        Some(Value::Null) | None => Ok(Vec::new()),
        Some(_) => Err(invalid(format!(
            "messages[{i}].content must be a string or an array of parts"
        ))),
    }
}

fn image_block(url: &str) -> Value {
    if let Some(rest) = url.strip_prefix("data:")
        && let Some((media_type, data)) = rest.split_once(";base64,")
    {
        return json!({"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}});
    }
    json!({"type": "image", "source": {"type": "url", "url": url}})
}

pub fn finish_reason(stop_reason: Option<&str>) -> Value {
    match stop_reason {
        Some("end_turn") | Some("stop_sequence") | Some("pause_turn") => json!("stop"),
        Some("max_tokens") => json!("length"),
        Some("tool_use") => json!("tool_calls"),
        Some("refusal") => json!("content_filter"),
        Some(_) => json!("stop"),
        None => Value::Null,
    }
}

/// Usage in a Messages response or event.
pub fn usage(v: &Value) -> Option<Usage> {
    let u = v.get("usage")?;
    Some(Usage {
        prompt_tokens: u.get("input_tokens").and_then(Value::as_u64).unwrap_or(0)
            + u.get("cache_read_input_tokens")
                .and_then(Value::as_u64)
                .unwrap_or(0)
            + u.get("cache_creation_input_tokens")
                .and_then(Value::as_u64)
                .unwrap_or(0),
        completion_tokens: u.get("output_tokens").and_then(Value::as_u64).unwrap_or(0),
    })
}

/// A Messages response -> an OpenAI chat completion.
pub fn messages_to_chat(msg: &Value, created: i64) -> Value {
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for block in msg
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("tool_use") => tool_calls.push(json!({
                "id": block.get("id").cloned().unwrap_or(json!("")),
                "type": "function",
                "function": {
                    "name": block.get("name").cloned().unwrap_or(json!("")),
                    "arguments": block.get("input").map(Value::to_string).unwrap_or_else(|| "{}".into()),
                },
            })),
            _ => {}
        }
    }
    let mut message = json!({"role": "assistant", "content": if text.is_empty() && !tool_calls.is_empty() { Value::Null } else { json!(text) }});
    if !tool_calls.is_empty() {
        message["tool_calls"] = Value::Array(tool_calls);
    }
    let u = usage(msg).unwrap_or_default();
    json!({
        "id": format!("chatcmpl-{}", msg.get("id").and_then(Value::as_str).unwrap_or("")),
        "object": "chat.completion",
        "created": created,
        "model": msg.get("model").cloned().unwrap_or(Value::Null),
        "choices": [{
            "index": 0,
            "message": message,
            "finish_reason": finish_reason(msg.get("stop_reason").and_then(Value::as_str)),
        }],
        "usage": {
            "prompt_tokens": u.prompt_tokens,
            "completion_tokens": u.completion_tokens,
            "total_tokens": u.prompt_tokens + u.completion_tokens,
        },
    })
}

/// Translates a Messages event stream into OpenAI chat chunks, one event at a time.
pub struct StreamTranslator {
    id: String,
    model: Value,
    created: i64,
    include_usage: bool,
    usage: Usage,
    /// Content block index -> OpenAI tool call index.
    tool_index: Vec<(u64, usize)>,
    finished: bool,
}

/// What one upstream event becomes.
pub enum Translated {
    /// Zero or more chunk payloads (JSON) to send as `data:` events.
    Chunks(Vec<Value>),
    /// The stream is complete: send these, then `[DONE]`.
    Done(Vec<Value>),
    /// The upstream reported an error mid-stream.
    Error(String),
}

impl StreamTranslator {
    pub fn new(created: i64, include_usage: bool) -> Self {
        Self {
            id: String::new(),
            model: Value::Null,
            created,
            include_usage,
            usage: Usage::default(),
            tool_index: Vec::new(),
            finished: false,
        }
    }

    pub fn usage(&self) -> Usage {
        self.usage
    }

    pub fn finished(&self) -> bool {
        self.finished
    }

    fn chunk(&self, delta: Value, finish: Value) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })
    }

    pub fn event(&mut self, name: &str, data: &str) -> Translated {
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            return Translated::Error(format!("upstream sent an event that is not JSON ({name})"));
        };
        let kind = v.get("type").and_then(Value::as_str).unwrap_or(name);
        match kind {
            "message_start" => {
                let msg = &v["message"];
                self.id = format!(
                    "chatcmpl-{}",
                    msg.get("id").and_then(Value::as_str).unwrap_or("")
                );
                self.model = msg.get("model").cloned().unwrap_or(Value::Null);
                if let Some(u) = usage(msg) {
                    self.usage = u;
                }
                Translated::Chunks(vec![
                    self.chunk(json!({"role": "assistant", "content": ""}), Value::Null),
                ])
            }
            "content_block_start" => {
                let block = &v["content_block"];
                if block.get("type").and_then(Value::as_str) != Some("tool_use") {
                    return Translated::Chunks(Vec::new());
                }
                let index = self.tool_index.len();
                self.tool_index
                    .push((v.get("index").and_then(Value::as_u64).unwrap_or(0), index));
                Translated::Chunks(vec![self.chunk(
                    json!({"tool_calls": [{
                        "index": index,
                        "id": block.get("id").cloned().unwrap_or(json!("")),
                        "type": "function",
                        "function": {"name": block.get("name").cloned().unwrap_or(json!("")), "arguments": ""},
                    }]}),
                    Value::Null,
                )])
            }
            "content_block_delta" => {
                let delta = &v["delta"];
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => Translated::Chunks(vec![self.chunk(
                        json!({"content": delta.get("text").cloned().unwrap_or(json!(""))}),
                        Value::Null,
                    )]),
                    Some("input_json_delta") => {
                        let block = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                        let index = self
                            .tool_index
                            .iter()
                            .find(|(b, _)| *b == block)
                            .map_or(0, |(_, i)| *i);
                        Translated::Chunks(vec![self.chunk(
                            json!({"tool_calls": [{"index": index, "function": {"arguments": delta.get("partial_json").cloned().unwrap_or(json!(""))}}]}),
                            Value::Null,
                        )])
                    }
                    _ => Translated::Chunks(Vec::new()),
                }
            }
            "message_delta" => {
                if let Some(out) = v
                    .get("usage")
                    .and_then(|u| u.get("output_tokens"))
                    .and_then(Value::as_u64)
                {
                    self.usage.completion_tokens = out;
                }
                let reason = v
                    .get("delta")
                    .and_then(|d| d.get("stop_reason"))
                    .and_then(Value::as_str);
                Translated::Chunks(vec![self.chunk(json!({}), finish_reason(reason))])
            }
            "message_stop" => {
                self.finished = true;
                let mut last = Vec::new();
                if self.include_usage {
                    let u = self.usage;
                    last.push(json!({
                        "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                        "model": self.model, "choices": [],
                        "usage": {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens, "total_tokens": u.prompt_tokens + u.completion_tokens},
                    }));
                }
                Translated::Done(last)
            }
            "error" => Translated::Error(
                v.get("error")
                    .and_then(|e| e.get("message"))
                    .and_then(Value::as_str)
                    .unwrap_or("upstream error")
                    .to_owned(),
            ),
            _ => Translated::Chunks(Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn translates_system_tools_and_results() {
        let chat = obj(json!({
            "model": "claude",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "weather?"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            ],
            "tools": [{"type": "function", "function": {"name": "weather", "description": "d", "parameters": {"type": "object"}}}],
            "tool_choice": "required",
            "stop": "END",
            "max_tokens": 50,
            "temperature": 0.5,
        }));
        let m = chat_to_messages(&chat, "claude-up", 4096).unwrap();
        assert_eq!(m["system"][0]["text"], "be brief");
        assert_eq!(
            m["messages"][0]["content"][1]["source"]["media_type"],
            "image/png"
        );
        assert_eq!(m["messages"][1]["content"][0]["type"], "tool_use");
        assert_eq!(m["messages"][1]["content"][0]["input"]["city"], "Paris");
        assert_eq!(m["messages"][2]["content"][0]["tool_use_id"], "call_1");
        assert_eq!(m["tools"][0]["input_schema"]["type"], "object");
        assert_eq!(m["tool_choice"]["type"], "any");
        assert_eq!(m["stop_sequences"][0], "END");
        assert_eq!(m["max_tokens"], 50);
        assert_eq!(m["model"], "claude-up");
    }

    #[test]
    fn response_with_tool_use() {
        let msg = json!({
            "id": "msg_1", "model": "claude-up", "stop_reason": "tool_use",
            "content": [{"type": "text", "text": "checking"}, {"type": "tool_use", "id": "t1", "name": "weather", "input": {"city": "Paris"}}],
            "usage": {"input_tokens": 10, "output_tokens": 5},
        });
        let c = messages_to_chat(&msg, 7);
        assert_eq!(c["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(c["choices"][0]["message"]["content"], "checking");
        assert_eq!(
            c["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
            "{\"city\":\"Paris\"}"
        );
        assert_eq!(c["usage"]["total_tokens"], 15);
    }

    #[test]
    fn stream_translation() {
        let mut t = StreamTranslator::new(1, true);
        let events = [
            (
                "message_start",
                r#"{"type":"message_start","message":{"id":"m1","model":"c","usage":{"input_tokens":3,"output_tokens":0}}}"#,
            ),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#,
            ),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"t","name":"f","input":{}}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"a\":"}}"#,
            ),
            (
                "message_delta",
                r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":4}}"#,
            ),
        ];
        let mut chunks = Vec::new();
        for (name, data) in events {
            match t.event(name, data) {
                Translated::Chunks(c) => chunks.extend(c),
                _ => panic!("unexpected end"),
            }
        }
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(chunks[1]["choices"][0]["delta"]["content"], "Hi");
        assert_eq!(
            chunks[2]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"],
            "f"
        );
        assert_eq!(
            chunks[3]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"],
            "{\"a\":"
        );
        assert_eq!(chunks[4]["choices"][0]["finish_reason"], "stop");
        let Translated::Done(last) = t.event("message_stop", r#"{"type":"message_stop"}"#) else {
            panic!("expected done")
        };
        assert_eq!(last[0]["usage"]["completion_tokens"], 4);
        assert_eq!(last[0]["usage"]["prompt_tokens"], 3);
    }
}
