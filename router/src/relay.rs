//! The response path: turns an upstream response body, chunk by chunk, into what the client
//! receives. Streams are re-emitted event by event as each completes (nothing waits for the end);
//! non-stream bodies are collected, then translated. Usage is captured on the way.

use bytes::{Bytes, BytesMut};
use serde_json::{Value, json};

use crate::api::Api;
use crate::dlp::restore::ResponseGuard;
use crate::providers::anthropic::{self, StreamTranslator, Translated};
use crate::providers::{Translation, Usage, openai_usage};
use crate::sse::{SseDecoder, encode};

/// Upper bound on a buffered (non-stream) upstream answer.
pub const MAX_BUFFERED_RESPONSE: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("upstream response is larger than {MAX_BUFFERED_RESPONSE} bytes")]
    TooLarge,
    #[error(transparent)]
    Sse(#[from] crate::sse::SseError),
    #[error("upstream response is not the JSON the API defines: {0}")]
    BadJson(serde_json::Error),
}

pub struct Relay {
    mode: Mode,
    /// Restores pseudonyms and redacts output rules in what the client receives.
    guard: Option<ResponseGuard>,
    usage: Option<Usage>,
    /// The upstream reached its proper end (`[DONE]`, `message_stop` or a complete body).
    complete: bool,
}

enum Mode {
    Buffered {
        buf: BytesMut,
        api: Api,
        translation: Translation,
        created: i64,
    },
    OpenAiStream {
        decoder: SseDecoder,
        drop_usage_chunk: bool,
    },
    AnthropicStream {
        decoder: SseDecoder,
    },
    AnthropicToOpenAi {
        decoder: SseDecoder,
        translator: StreamTranslator,
    },
}

impl Relay {
    pub fn new(
        api: Api,
        stream: bool,
        translation: Translation,
        client_wants_usage: bool,
        created: i64,
    ) -> Self {
        let mode = match (stream, translation, api) {
            (false, _, _) => Mode::Buffered {
                buf: BytesMut::new(),
                api,
                translation,
                created,
            },
            (true, Translation::AnthropicToOpenAiChat, _) => Mode::AnthropicToOpenAi {
                decoder: SseDecoder::new(),
                translator: StreamTranslator::new(created, client_wants_usage),
            },
            (true, Translation::None, Api::Messages) => Mode::AnthropicStream {
                decoder: SseDecoder::new(),
            },
            (true, Translation::None, _) => Mode::OpenAiStream {
                decoder: SseDecoder::new(),
                drop_usage_chunk: !client_wants_usage,
            },
        };
        Self {
            mode,
            guard: None,
            usage: None,
            complete: false,
        }
    }

    pub fn with_guard(mut self, guard: Option<ResponseGuard>) -> Self {
        self.guard = guard;
        self
    }

    /// An OpenAI-shaped chunk as the client receives it.
    fn openai_event(&mut self, mut chunk: Value) -> Bytes {
        if let Some(g) = &mut self.guard {
            g.openai_chunk(&mut chunk);
        }
        encode(None, &chunk.to_string())
    }

    /// What a guard still holds when an OpenAI stream ends, as one more chunk.
    fn openai_leftover(&mut self) -> Option<Bytes> {
        let text = self.guard.as_mut()?.openai_leftover()?;
        let chunk = json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]});
        Some(encode(None, &chunk.to_string()))
    }

    pub fn is_stream(&self) -> bool {
        !matches!(self.mode, Mode::Buffered { .. })
    }

    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    pub fn complete(&self) -> bool {
        self.complete
    }

    /// Takes one upstream chunk; returns the bytes to send to the client now.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Bytes, RelayError> {
        match &mut self.mode {
            Mode::Buffered { buf, .. } => {
                if buf.len() + chunk.len() > MAX_BUFFERED_RESPONSE {
                    return Err(RelayError::TooLarge);
                }
                buf.extend_from_slice(chunk);
                Ok(Bytes::new())
            }
            _ => {
                let events = self.decoder().push(chunk)?;
                Ok(self.events(events))
            }
        }
    }

    /// The upstream body ended; returns the last bytes for the client.
    pub fn finish(&mut self) -> Result<Bytes, RelayError> {
        match &mut self.mode {
            Mode::Buffered {
                buf,
                api,
                translation,
                created,
            } => {
                let body = std::mem::take(buf).freeze();
                self.complete = true;
                let parsed: Result<Value, _> = serde_json::from_slice(&body);
                let translation = *translation;
                let mut out = match (translation, parsed) {
                    (Translation::AnthropicToOpenAiChat, Ok(v)) => {
                        self.usage = anthropic::usage(&v);
                        anthropic::messages_to_chat(&v, *created)
                    }
                    (Translation::AnthropicToOpenAiChat, Err(e)) => {
                        return Err(RelayError::BadJson(e));
                    }
                    (Translation::None, Ok(v)) => {
                        self.usage = if *api == Api::Messages {
                            anthropic::usage(&v)
                        } else {
                            openai_usage(&v)
                        };
                        v
                    }
                    // Not JSON: nothing to restore or scan field by field.
                    (Translation::None, Err(_)) => return Ok(body),
                };
                let changed = match &mut self.guard {
                    Some(g) => g.body(&mut out),
                    None => false,
                };
                if !changed && translation == Translation::None {
                    // Nothing restored or redacted: the upstream's bytes, as sent.
                    return Ok(body);
                }
                Ok(Bytes::from(out.to_string()))
            }
            _ => {
                let events = self.decoder().finish()?;
                Ok(self.events(events))
            }
        }
    }

    /// The event that tells a streaming client the upstream failed mid-stream.
    pub fn error_event(&self, message: &str) -> Bytes {
        match self.mode {
            Mode::AnthropicStream { .. } => encode(
                Some("error"),
                &json!({"type": "error", "error": {"type": "api_error", "message": message}}).to_string(),
            ),
            _ => encode(
                None,
                &json!({"error": {"message": message, "type": "upstream_error", "param": null, "code": "stream_interrupted"}})
                    .to_string(),
            ),
        }
    }

    fn decoder(&mut self) -> &mut SseDecoder {
        match &mut self.mode {
            Mode::OpenAiStream { decoder, .. }
            | Mode::AnthropicStream { decoder }
            | Mode::AnthropicToOpenAi { decoder, .. } => decoder,
            Mode::Buffered { .. } => unreachable!("buffered responses have no decoder"),
        }
    }

    fn events(&mut self, events: Vec<eventsource_stream::Event>) -> Bytes {
        let mut out = BytesMut::new();
        for ev in events {
            if self.complete {
                break;
            }
            match &mut self.mode {
                Mode::OpenAiStream {
                    drop_usage_chunk, ..
                } => {
                    if ev.data.trim() == "[DONE]" {
                        self.complete = true;
                        if let Some(last) = self.openai_leftover() {
                            out.extend_from_slice(&last);
                        }
                        out.extend_from_slice(&encode(None, "[DONE]"));
                        continue;
                    }
                    let parsed: Option<Value> = serde_json::from_str(&ev.data).ok();
                    if let Some(u) = parsed.as_ref().and_then(openai_usage) {
                        self.usage = Some(u);
                        // The usage-only chunk exists because Cordon asked for it; a client
                        // that did not ask does not get it.
                        let only_usage = parsed
                            .as_ref()
                            .and_then(|v| v.get("choices"))
                            .and_then(Value::as_array)
                            .is_some_and(Vec::is_empty);
                        if *drop_usage_chunk && only_usage {
                            continue;
                        }
                    }
                    match parsed {
                        Some(chunk) if self.guard.is_some() => {
                            let bytes = self.openai_event(chunk);
                            out.extend_from_slice(&bytes);
                        }
                        _ => out.extend_from_slice(&encode(Some(&ev.event), &ev.data)),
                    }
                }
                Mode::AnthropicStream { .. } => {
                    let parsed = serde_json::from_str::<Value>(&ev.data).ok();
                    if let Some(v) = &parsed {
                        match v.get("type").and_then(Value::as_str) {
                            Some("message_start") => {
                                self.usage = v.get("message").and_then(anthropic::usage)
                            }
                            Some("message_delta") => {
                                if let (Some(u), Some(out)) = (
                                    self.usage.as_mut(),
                                    v.get("usage")
                                        .and_then(|u| u.get("output_tokens"))
                                        .and_then(Value::as_u64),
                                ) {
                                    u.completion_tokens = out;
                                }
                            }
                            Some("message_stop") => self.complete = true,
                            _ => {}
                        }
                    }
                    match (parsed, &mut self.guard) {
                        (Some(v), Some(g)) => {
                            for (name, data) in g.anthropic_event(&ev.event, v) {
                                out.extend_from_slice(&encode(Some(&name), &data.to_string()));
                            }
                        }
                        _ => out.extend_from_slice(&encode(Some(&ev.event), &ev.data)),
                    }
                }
                Mode::AnthropicToOpenAi { translator, .. } => {
                    let translated = translator.event(&ev.event, &ev.data);
                    let usage = translator.usage();
                    match translated {
                        Translated::Chunks(chunks) => {
                            for c in chunks {
                                let bytes = self.openai_event(c);
                                out.extend_from_slice(&bytes);
                            }
                        }
                        Translated::Done(chunks) => {
                            self.usage = Some(usage);
                            for c in chunks {
                                let bytes = self.openai_event(c);
                                out.extend_from_slice(&bytes);
                            }
                            if let Some(last) = self.openai_leftover() {
                                out.extend_from_slice(&last);
                            }
                            out.extend_from_slice(&encode(None, "[DONE]"));
                            self.complete = true;
                        }
                        Translated::Error(message) => {
                            self.usage = Some(usage);
                            out.extend_from_slice(&self.error_event(&message));
                            self.complete = true;
                        }
                    }
                }
                Mode::Buffered { .. } => {}
            }
        }
        if let Mode::AnthropicToOpenAi { translator, .. } = &self.mode
            && !translator.finished()
            && self.usage.is_none()
        {
            self.usage = Some(translator.usage()).filter(|u| u.prompt_tokens > 0);
        }
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_stream_drops_unrequested_usage_chunk() {
        let mut r = Relay::new(Api::ChatCompletions, true, Translation::None, false, 0);
        let out = r
            .push(b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":1}}\n\ndata: [DONE]\n\n")
            .unwrap();
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(text.contains("\"content\":\"a\""));
        assert!(!text.contains("usage"));
        assert!(text.ends_with("data: [DONE]\n\n"));
        assert_eq!(
            r.usage(),
            Some(Usage {
                prompt_tokens: 2,
                completion_tokens: 1
            })
        );
        assert!(r.complete());
    }

    #[test]
    fn truncated_stream_is_not_complete() {
        let mut r = Relay::new(Api::ChatCompletions, true, Translation::None, true, 0);
        r.push(b"data: {\"choices\":[]}\n\n").unwrap();
        r.finish().unwrap();
        assert!(!r.complete());
        assert!(
            String::from_utf8(r.error_event("gone").to_vec())
                .unwrap()
                .contains("stream_interrupted")
        );
    }

    #[test]
    fn buffered_translation() {
        let mut r = Relay::new(
            Api::ChatCompletions,
            false,
            Translation::AnthropicToOpenAiChat,
            false,
            5,
        );
        r.push(br#"{"id":"m","model":"c","content":[{"type":"text","text":"hi"}],"stop_reason":"end_turn","#).unwrap();
        r.push(br#""usage":{"input_tokens":1,"output_tokens":2}}"#)
            .unwrap();
        let v: Value = serde_json::from_slice(&r.finish().unwrap()).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "hi");
        assert_eq!(r.usage().unwrap().completion_tokens, 2);
    }
}
