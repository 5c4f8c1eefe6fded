//! The response path: turns an upstream response body, chunk by chunk, into what the client
//! receives. Streams are re-emitted event by event as each completes (nothing waits for the end);
//! non-stream bodies are collected, then translated. Usage is captured on the way.

use bytes::{Bytes, BytesMut};
use serde_json::{Value, json};

use crate::api::Api;
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
            usage: None,
            complete: false,
        }
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
                match (translation, parsed) {
                    (Translation::AnthropicToOpenAiChat, Ok(v)) => {
                        self.usage = anthropic::usage(&v);
                        Ok(Bytes::from(
                            anthropic::messages_to_chat(&v, *created).to_string(),
                        ))
                    }
                    (Translation::AnthropicToOpenAiChat, Err(e)) => Err(RelayError::BadJson(e)),
                    (Translation::None, Ok(v)) => {
                        self.usage = if *api == Api::Messages {
                            anthropic::usage(&v)
                        } else {
                            openai_usage(&v)
                        };
                        Ok(body)
                    }
                    (Translation::None, Err(_)) => Ok(body),
                }
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
                    out.extend_from_slice(&encode(Some(&ev.event), &ev.data));
                }
                Mode::AnthropicStream { .. } => {
                    if let Ok(v) = serde_json::from_str::<Value>(&ev.data) {
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
                    out.extend_from_slice(&encode(Some(&ev.event), &ev.data));
                }
                Mode::AnthropicToOpenAi { translator, .. } => {
                    match translator.event(&ev.event, &ev.data) {
                        Translated::Chunks(chunks) => {
                            for c in chunks {
                                out.extend_from_slice(&encode(None, &c.to_string()));
                            }
                        }
                        Translated::Done(chunks) => {
                            for c in chunks {
                                out.extend_from_slice(&encode(None, &c.to_string()));
                            }
                            out.extend_from_slice(&encode(None, "[DONE]"));
                            self.usage = Some(translator.usage());
                            self.complete = true;
                        }
                        Translated::Error(message) => {
                            self.usage = Some(translator.usage());
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
