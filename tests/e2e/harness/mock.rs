//! A mock OpenAI and Anthropic upstream: a real HTTP/1.1 server on a 127.0.0.1 port the OS picks,
//! over TLS that requires a client certificate from the test CA. Its behaviour is chosen by the
//! model named in the request; every request it receives is recorded for assertions.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};
use tokio_rustls::TlsAcceptor;

use super::pki::Pki;

pub const OPENAI_KEY: &str = "sk-test-openai-upstream";
pub const ANTHROPIC_KEY: &str = "sk-ant-test-upstream";

#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

#[derive(Default)]
struct State {
    requests: Mutex<Vec<Recorded>>,
    gate: Notify,
}

pub struct MockUpstream {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

type Body = BoxBody<Bytes, std::io::Error>;

impl MockUpstream {
    pub async fn start(pki: &Pki) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).unwrap())
            .unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
            .build()
            .unwrap();
        let certs = CertificateDer::pem_slice_iter(pki.server_cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(pki.server_key_pem.as_bytes()).unwrap();
        let mut config = rustls::ServerConfig::builder()
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let st = st.clone();
                tokio::spawn(async move {
                    // Handshake failures (no or wrong client certificate) just end the connection.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = service_fn(move |req| handle(req, st.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Self { addr, state, task }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Lets a held-back ("gated") stream continue.
    pub fn open_gate(&self) {
        self.state.gate.notify_one();
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn full(status: u16, v: Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(
            Full::new(Bytes::from(v.to_string()))
                .map_err(|e| match e {})
                .boxed(),
        )
        .unwrap()
}

fn sse(rx: mpsc::Receiver<Result<Bytes, std::io::Error>>) -> Response<Body> {
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item.map(Frame::data), rx))
    });
    Response::builder()
        .status(200)
        .header("content-type", "text/event-stream")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap()
}

fn data(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

fn event(name: &str, v: Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {v}\n\n"))
}

fn last_user_text(body: &Value) -> String {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let last = messages
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .cloned()
        .unwrap_or(Value::Null);
    match &last["content"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

async fn handle(req: Request<Incoming>, state: Arc<State>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let headers = req.headers().clone();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    state.requests.lock().unwrap().push(Recorded {
        path: path_and_query,
        headers: headers.clone(),
        body: body.clone(),
    });
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let model = v["model"].as_str().unwrap_or("").to_owned();

    if path == "/v1/messages" {
        if headers.get("x-api-key").map(|h| h.as_bytes()) != Some(ANTHROPIC_KEY.as_bytes())
            || headers.get("anthropic-version").is_none()
        {
            return Ok(full(
                401,
                json!({"type": "error", "error": {"type": "authentication_error", "message": "bad key"}}),
            ));
        }
        return Ok(anthropic(&v, &model, state).await);
    }
    if let Some(rest) = path.strip_prefix("/openai/deployments/") {
        // Azure OpenAI: the deployment is in the path, the key in `api-key`.
        if headers.get("api-key").map(|h| h.as_bytes()) != Some(OPENAI_KEY.as_bytes()) {
            return Ok(full(
                401,
                json!({"error": {"code": "401", "message": "Access denied due to invalid subscription key."}}),
            ));
        }
        let deployment = rest.split('/').next().unwrap_or("");
        return Ok(full(
            200,
            json!({
                "id": "chatcmpl-az", "object": "chat.completion", "created": 1, "model": deployment,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("azure {deployment}: {}", last_user_text(&v))}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5},
            }),
        ));
    }
    if headers.get("authorization").map(|h| h.as_bytes())
        != Some(format!("Bearer {OPENAI_KEY}").as_bytes())
    {
        return Ok(full(
            401,
            json!({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error", "code": "invalid_api_key"}}),
        ));
    }
    if model == "slow" {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    if model == "fail-503" {
        return Ok(full(
            503,
            json!({"error": {"message": "overloaded", "type": "server_error"}}),
        ));
    }
    let usage = json!({"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18});
    match path.as_str() {
        "/v1/embeddings" => Ok(full(
            200,
            json!({
                "object": "list", "model": model,
                "data": [{"object": "embedding", "index": 0, "embedding": [0.25, -0.5, 1.0]}],
                "usage": {"prompt_tokens": 4, "total_tokens": 4},
            }),
        )),
        "/v1/completions" => Ok(full(
            200,
            json!({
                "id": "cmpl-1", "object": "text_completion", "created": 1, "model": model,
                "choices": [{"index": 0, "text": format!("completed: {}", v["prompt"].as_str().unwrap_or("")), "finish_reason": "stop", "logprobs": null}],
                "usage": usage,
            }),
        )),
        "/v1/chat/completions" if v["stream"] == true => {
            let (tx, rx) = mpsc::channel(16);
            let include_usage = v["stream_options"]["include_usage"] == true;
            let chunk = |delta: Value, finish: Value| {
                json!({
                    "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                })
            };
            let (first, rest) = if model == "echo-stream" {
                // The echo in 3-character pieces, so that tokens are split across events.
                let text: Vec<char> = format!("echo: {}", last_user_text(&v)).chars().collect();
                let mut pieces: Vec<Value> = text
                    .chunks(3)
                    .map(|c| {
                        chunk(
                            json!({"content": c.iter().collect::<String>()}),
                            Value::Null,
                        )
                    })
                    .collect();
                pieces.push(chunk(json!({}), json!("stop")));
                let first = pieces.remove(0);
                (first, pieces)
            } else {
                (
                    chunk(
                        json!({"role": "assistant", "content": "Hello"}),
                        Value::Null,
                    ),
                    vec![
                        chunk(json!({"content": " world"}), Value::Null),
                        chunk(json!({}), json!("stop")),
                    ],
                )
            };
            let usage_chunk = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": model, "choices": [], "usage": usage});
            tokio::spawn(async move {
                let _ = tx.send(Ok(data(&first))).await;
                if model.starts_with("gated") {
                    state.gate.notified().await;
                }
                if model == "die" {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let _ = tx.send(Err(std::io::Error::other("upstream died"))).await;
                    return;
                }
                for c in rest {
                    let _ = tx.send(Ok(data(&c))).await;
                }
                if include_usage {
                    let _ = tx.send(Ok(data(&usage_chunk))).await;
                }
                let _ = tx.send(Ok(Bytes::from_static(b"data: [DONE]\n\n"))).await;
            });
            Ok(sse(rx))
        }
        "/v1/chat/completions" => {
            let message = if model == "leak" {
                json!({"role": "assistant", "content": "the key is AKIAABCDEFGHIJKLMNOP, keep it safe"})
            } else if let Some(tool) = v["tools"][0]["function"]["name"].as_str() {
                json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": tool, "arguments": "{\"city\":\"Paris\"}"}}]})
            } else {
                json!({"role": "assistant", "content": format!("echo: {}", last_user_text(&v))})
            };
            let finish = if message["tool_calls"].is_array() {
                "tool_calls"
            } else {
                "stop"
            };
            Ok(full(
                200,
                json!({
                    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
                    "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": null}],
                    "usage": usage,
                }),
            ))
        }
        _ => Ok(full(
            404,
            json!({"error": {"message": format!("no route {path}"), "type": "invalid_request_error"}}),
        )),
    }
}

async fn anthropic(v: &Value, model: &str, _state: Arc<State>) -> Response<Body> {
    let text = format!("echo: {}", last_user_text(v));
    let tool = v["tools"][0]["name"].as_str().map(str::to_owned);
    if v["stream"] != true {
        let mut content = vec![json!({"type": "text", "text": text})];
        if let Some(name) = &tool {
            content.push(json!({"type": "tool_use", "id": "toolu_1", "name": name, "input": {"city": "Paris"}}));
        }
        return full(
            200,
            json!({
                "id": "msg_1", "type": "message", "role": "assistant", "model": model,
                "content": content,
                "stop_reason": if tool.is_some() { "tool_use" } else { "end_turn" }, "stop_sequence": null,
                "usage": {"input_tokens": 13, "output_tokens": 5},
            }),
        );
    }
    let (tx, rx) = mpsc::channel(16);
    let model = model.to_owned();
    let echo = text.clone();
    tokio::spawn(async move {
        let events = [
            event(
                "message_start",
                json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "model": model, "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 13, "output_tokens": 1}}}),
            ),
            event(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ),
            event("ping", json!({"type": "ping"})),
            event(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            ),
            event(
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 5}}),
            ),
            event("message_stop", json!({"type": "message_stop"})),
        ];
        // The text deltas go in before content_block_stop: the echo in 3-character pieces for
        // `claude-echo`, so that tokens are split across events, else "Hello world".
        let texts: Vec<String> = if model == "claude-echo" {
            echo.chars()
                .collect::<Vec<_>>()
                .chunks(3)
                .map(|c| c.iter().collect())
                .collect()
        } else {
            vec!["Hello".into(), " world".into()]
        };
        let deltas = texts.into_iter().map(|t| {
            event("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}}))
        });
        let stop_at = 3;
        let events: Vec<Bytes> = events[..stop_at]
            .iter()
            .cloned()
            .chain(deltas)
            .chain(events[stop_at..].iter().cloned())
            .collect();
        for e in events {
            let _ = tx.send(Ok(e)).await;
        }
    });
    sse(rx)
}
