//! Server-sent events over chunked bytes: an incremental decoder (the `eventsource-stream`
//! parser, fed one network chunk at a time) and an encoder for the events Cordon writes.

use std::convert::Infallible;

use bytes::{Bytes, BytesMut};
use eventsource_stream::{Event, EventStream};
use futures::channel::mpsc;
use futures::{FutureExt, StreamExt};

/// Decodes events as chunks arrive; an event is returned as soon as its blank line is seen.
pub struct SseDecoder {
    tx: Option<mpsc::UnboundedSender<Result<Bytes, Infallible>>>,
    events: EventStream<mpsc::UnboundedReceiver<Result<Bytes, Infallible>>>,
    /// Bytes held until the first complete character: the parser cannot start on an empty or
    /// partial first chunk.
    start: Option<BytesMut>,
}

/// The stream was not valid SSE (for example, not UTF-8).
#[derive(Debug, thiserror::Error)]
#[error("upstream sent a malformed event stream: {0}")]
pub struct SseError(String);

impl Default for SseDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl SseDecoder {
    pub fn new() -> Self {
        let (tx, rx) = mpsc::unbounded();
        Self {
            tx: Some(tx),
            events: EventStream::new(rx),
            start: Some(BytesMut::new()),
        }
    }

    /// Feeds one chunk and returns the events it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Event>, SseError> {
        if let Some(start) = &mut self.start {
            start.extend_from_slice(chunk);
            let ready = start.len() >= 4 || std::str::from_utf8(start).is_ok_and(|s| !s.is_empty());
            if !ready {
                return Ok(Vec::new());
            }
            let first = self.start.take().unwrap_or_default().freeze();
            self.send(first);
        } else if !chunk.is_empty() {
            self.send(Bytes::copy_from_slice(chunk));
        }
        self.drain()
    }

    /// Ends the input and returns any event still held.
    pub fn finish(&mut self) -> Result<Vec<Event>, SseError> {
        if let Some(start) = self.start.take().filter(|s| !s.is_empty()) {
            self.send(start.freeze());
        }
        self.tx = None;
        self.drain()
    }

    fn send(&mut self, chunk: Bytes) {
        if let Some(tx) = &self.tx {
            // The receiver lives in `self.events`, so sending cannot fail.
            let _ = tx.unbounded_send(Ok(chunk));
        }
    }

    fn drain(&mut self) -> Result<Vec<Event>, SseError> {
        let mut out = Vec::new();
        while let Some(Some(next)) = self.events.next().now_or_never() {
            out.push(next.map_err(|e| SseError(e.to_string()))?);
        }
        Ok(out)
    }
}

/// Encodes one event. `event` is omitted when it is `None` or the default `message`.
pub fn encode(event: Option<&str>, data: &str) -> Bytes {
    let mut out = String::with_capacity(data.len() + 16);
    if let Some(name) = event.filter(|e| *e != "message") {
        out.push_str("event: ");
        out.push_str(name);
        out.push('\n');
    }
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks() {
        let mut d = SseDecoder::new();
        assert!(d.push(b"da").unwrap().is_empty());
        assert!(d.push(b"ta: {\"a\":1}\n").unwrap().is_empty());
        let ev = d.push(b"\nevent: x\ndata: 2\n\ndata: [DONE]\n\n").unwrap();
        assert_eq!(ev.len(), 3);
        assert_eq!(ev[0].data, "{\"a\":1}");
        assert_eq!((ev[1].event.as_str(), ev[1].data.as_str()), ("x", "2"));
        assert_eq!(ev[2].data, "[DONE]");
        assert!(d.finish().unwrap().is_empty());
    }

    #[test]
    fn odd_first_chunks_do_not_panic() {
        let mut d = SseDecoder::new();
        assert!(d.push(b"").unwrap().is_empty());
        assert!(d.push("é".as_bytes()[..1].as_ref()).unwrap().is_empty());
        let mut d = SseDecoder::new();
        let _ = d.push(&[0xff, 0xfe, 0xfd, 0xfc]);
    }

    #[test]
    fn encode_round_trip() {
        let mut d = SseDecoder::new();
        let ev = d.push(&encode(Some("ping"), "a\nb")).unwrap();
        assert_eq!(
            (ev[0].event.as_str(), ev[0].data.as_str()),
            ("ping", "a\nb")
        );
    }
}
