//! The HTTP server: loads every configured model, then serves `/v1/chat/completions`,
//! `/v1/completions`, `/v1/embeddings`, `/v1/models`, `/healthz` and `/metrics`. Handlers turn
//! a request into tokens, hand them to the model's scheduler and relay its events, as one JSON
//! answer or as server-sent events.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::api::{self, ChatRequest, CompletionRequest, EmbeddingRequest, Generation, Prompt};
use crate::config::{Config, ModelConfig};
use crate::engine::{Embedder, Event, Finish, GenerateRequest, Generator};
use crate::error::{ModelError, RequestError};
use crate::metrics::Metrics;
use crate::model::Architecture;
use crate::model::bert::Encoder;
use crate::model::llama::Decoder;
use crate::text::TextCodec;

/// A served model.
pub enum Served {
    Generative {
        engine: Generator,
        default_max_tokens: Option<usize>,
    },
    Embedding(Embedder),
}

pub struct AppState {
    pub models: BTreeMap<String, Served>,
    pub metrics: Arc<Metrics>,
}

#[derive(Debug, thiserror::Error)]
#[error("model `{name}`: {source}")]
pub struct LoadError {
    pub name: String,
    #[source]
    pub source: ModelError,
}

impl AppState {
    /// Loads every model of `config` onto its device and starts its thread.
    pub fn load(config: &Config) -> Result<Self, LoadError> {
        if let Some(n) = config.threads {
            tch::set_num_threads(n);
        }
        let metrics = Arc::new(Metrics::new());
        let mut models = BTreeMap::new();
        for m in &config.models {
            let served = load_model(m, config, &metrics).map_err(|source| LoadError {
                name: m.name.clone(),
                source,
            })?;
            models.insert(m.name.clone(), served);
        }
        Ok(Self { models, metrics })
    }

    fn model(&self, name: &str) -> Result<&Served, RequestError> {
        self.models.get(name).ok_or_else(|| RequestError {
            status: 404,
            code: "model_not_found",
            param: Some("model"),
            message: format!(
                "model `{name}` is not served here; served: {}",
                self.models.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        })
    }

    fn generator(&self, name: &str) -> Result<(&Generator, Option<usize>), RequestError> {
        match self.model(name)? {
            Served::Generative {
                engine,
                default_max_tokens,
            } => Ok((engine, *default_max_tokens)),
            Served::Embedding(_) => Err(RequestError::invalid(
                "model",
                format!("model `{name}` is an embedding model; use /v1/embeddings"),
            )),
        }
    }
}

fn load_model(
    m: &ModelConfig,
    config: &Config,
    metrics: &Arc<Metrics>,
) -> Result<Served, ModelError> {
    let arch = Architecture::detect(&m.path)?;
    let codec = Arc::new(TextCodec::load(&m.path)?);
    let io = |e: std::io::Error| ModelError::Invalid {
        path: m.path.clone(),
        message: format!("cannot start the model's thread: {e}"),
    };
    if arch.is_generative() {
        let decoder = Decoder::load(&m.path, config.placement, m.context)?;
        let engine =
            Generator::start(&m.name, decoder, codec, m.limits, metrics.clone()).map_err(io)?;
        Ok(Served::Generative {
            engine,
            default_max_tokens: m.default_max_tokens,
        })
    } else {
        let encoder = Encoder::load(&m.path, config.placement)?;
        Ok(Served::Embedding(
            Embedder::start(&m.name, encoder, codec, m.limits).map_err(io)?,
        ))
    }
}

/// The routes, over loaded models.
pub fn router(state: Arc<AppState>, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(models))
        .route("/healthz", get(health))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

/// An error as the OpenAI API sends it.
struct Failure(RequestError);

impl From<RequestError> for Failure {
    fn from(e: RequestError) -> Self {
        Self(e)
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, axum::Json(api::error_body(&self.0))).into_response()
    }
}

fn body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, RequestError> {
    body.map_err(|e| RequestError {
        status: e.status().as_u16(),
        code: if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            "body_too_large"
        } else {
            "invalid_body"
        },
        param: None,
        message: format!("{}: {}", e.status(), e.body_text()),
    })
}

/// Parses the body as `T`, runs `serve` and counts the outcome by model, API and status.
async fn handle<T, F, Fut>(
    state: Arc<AppState>,
    api: &str,
    raw: Result<Bytes, BytesRejection>,
    serve: F,
) -> Response
where
    T: DeserializeOwned + Named,
    F: FnOnce(Arc<AppState>, T) -> Fut,
    Fut: std::future::Future<Output = Result<Response, RequestError>>,
{
    let parsed = body(raw).and_then(|raw| api::parse_body::<T>(&raw));
    let (model, result) = match parsed {
        Ok(req) => (req.model().to_owned(), serve(state.clone(), req).await),
        Err(e) => (String::new(), Err(e)),
    };
    let response = result.unwrap_or_else(|e| Failure(e).into_response());
    state
        .metrics
        .requests
        .with_label_values(&[&model, api, response.status().as_str()])
        .inc();
    response
}

/// A request body that names its model.
trait Named {
    fn model(&self) -> &str;
}

impl Named for ChatRequest {
    fn model(&self) -> &str {
        &self.model
    }
}

impl Named for CompletionRequest {
    fn model(&self) -> &str {
        &self.model
    }
}

impl Named for EmbeddingRequest {
    fn model(&self) -> &str {
        &self.model
    }
}

async fn chat(State(state): State<Arc<AppState>>, raw: Result<Bytes, BytesRejection>) -> Response {
    handle(state, "chat", raw, chat_inner).await
}

async fn completions(
    State(state): State<Arc<AppState>>,
    raw: Result<Bytes, BytesRejection>,
) -> Response {
    handle(state, "completions", raw, completions_inner).await
}

async fn embeddings(
    State(state): State<Arc<AppState>>,
    raw: Result<Bytes, BytesRejection>,
) -> Response {
    handle(state, "embeddings", raw, embeddings_inner).await
}

async fn chat_inner(state: Arc<AppState>, req: ChatRequest) -> Result<Response, RequestError> {
    let model = req.model.clone();
    let (engine, default_max) = state.generator(&req.model)?;
    let generation = req.generation.check()?;
    let messages = api::template_messages(req.messages)?;
    let prompt_text = engine.codec().render_chat(&messages, req.tools.as_ref())?;
    let prompt = engine.codec().encode(&prompt_text, false)?;
    let job = generate_request(engine, prompt, &generation, default_max);
    let rx = engine.submit(job)?;
    let meta = Meta::new("chatcmpl", &model);
    let response = if generation.stream {
        stream_chat(meta, rx, generation.include_usage)
    } else {
        let (text, finish) = collect(rx).await?;
        axum::Json(json!({
            "id": meta.id,
            "object": "chat.completion",
            "created": meta.created,
            "model": meta.model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": null,
                "finish_reason": finish.reason.as_str(),
            }],
            "usage": api::usage(finish.prompt_tokens, finish.completion_tokens),
        }))
        .into_response()
    };
    Ok(response)
}

async fn completions_inner(
    state: Arc<AppState>,
    req: CompletionRequest,
) -> Result<Response, RequestError> {
    let model = req.model.clone();
    let (engine, default_max) = state.generator(&req.model)?;
    let generation = req.generation.check()?;
    let prompts: Vec<Vec<u32>> = match req.prompt {
        Prompt::Text(t) => vec![engine.codec().encode(&t, true)?],
        Prompt::Texts(ts) => ts
            .iter()
            .map(|t| engine.codec().encode(t, true))
            .collect::<Result<_, _>>()?,
        Prompt::Tokens(ids) => vec![ids],
        Prompt::TokenLists(lists) => lists,
    };
    if prompts.is_empty() {
        return Err(RequestError::invalid("prompt", "prompt is an empty list"));
    }
    let mut receivers = Vec::with_capacity(prompts.len());
    for p in prompts {
        receivers.push(engine.submit(generate_request(engine, p, &generation, default_max))?);
    }
    let meta = Meta::new("cmpl", &model);
    let response = if generation.stream {
        stream_completions(meta, receivers, generation.include_usage)
    } else {
        let mut choices = Vec::new();
        let (mut prompt_tokens, mut completion_tokens) = (0, 0);
        for (index, rx) in receivers.into_iter().enumerate() {
            let (text, finish) = collect(rx).await?;
            prompt_tokens += finish.prompt_tokens;
            completion_tokens += finish.completion_tokens;
            choices.push(json!({
                "index": index,
                "text": text,
                "logprobs": null,
                "finish_reason": finish.reason.as_str(),
            }));
        }
        axum::Json(json!({
            "id": meta.id,
            "object": "text_completion",
            "created": meta.created,
            "model": meta.model,
            "choices": choices,
            "usage": api::usage(prompt_tokens, completion_tokens),
        }))
        .into_response()
    };
    Ok(response)
}

async fn embeddings_inner(
    state: Arc<AppState>,
    req: EmbeddingRequest,
) -> Result<Response, RequestError> {
    let model = req.model.clone();
    let Served::Embedding(embedder) = state.model(&req.model)? else {
        return Err(RequestError::invalid(
            "model",
            format!(
                "model `{}` generates text; use /v1/chat/completions or /v1/completions",
                req.model
            ),
        ));
    };
    if let Some(d) = req.dimensions
        && d as usize != embedder.dimensions()
    {
        return Err(RequestError::invalid(
            "dimensions",
            format!(
                "this model's vectors have {} dimensions; leave `dimensions` out or send {}",
                embedder.dimensions(),
                embedder.dimensions()
            ),
        ));
    }
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(RequestError::invalid(
                "encoding_format",
                format!("`{other}` is not float or base64"),
            ));
        }
    };
    let texts = req.input.into_texts()?;
    let (vectors, tokens) = embedder.embed(&texts).await?;
    let data: Vec<Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(index, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let response = axum::Json(json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }))
    .into_response();
    Ok(response)
}

fn generate_request(
    engine: &Generator,
    prompt: Vec<u32>,
    g: &Generation,
    default_max: Option<usize>,
) -> GenerateRequest {
    let room = engine.context().saturating_sub(prompt.len());
    GenerateRequest {
        max_tokens: g.max_tokens.or(default_max).unwrap_or(room),
        prompt,
        params: g.params.clone(),
        stop: g.stop.clone(),
        ignore_eos: g.ignore_eos,
    }
}

/// Waits for a whole generation.
async fn collect(mut rx: mpsc::UnboundedReceiver<Event>) -> Result<(String, Finish), RequestError> {
    let mut text = String::new();
    while let Some(e) = rx.recv().await {
        match e {
            Event::Text(t) => text.push_str(&t),
            Event::Done(f) => return Ok((text, f)),
            Event::Failed(m) => return Err(inference_failed(m)),
        }
    }
    Err(inference_failed("the model's thread stopped".into()))
}

fn inference_failed(message: String) -> RequestError {
    RequestError {
        status: 500,
        code: "inference_failed",
        param: None,
        message,
    }
}

/// Response id, creation time and model, shared by every chunk of a stream.
#[derive(Clone)]
struct Meta {
    id: String,
    created: u64,
    model: String,
}

impl Meta {
    fn new(prefix: &str, model: &str) -> Self {
        Self {
            id: format!("{prefix}-{}", uuid::Uuid::new_v4().simple()),
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            model: model.to_owned(),
        }
    }
}

type SseSender = mpsc::Sender<Result<SseEvent, Infallible>>;

/// Relays chunks from a task; when the client goes away the task's sends fail, it ends, and
/// dropping the engine's receiver cancels the generation.
fn sse(spawn: impl FnOnce(SseSender) -> tokio::task::JoinHandle<()>) -> Response {
    let (tx, rx) = mpsc::channel(64);
    spawn(tx);
    Sse::new(ReceiverStream::new(rx))
        .keep_alive(KeepAlive::default())
        .into_response()
}

async fn send(tx: &SseSender, v: Value) -> bool {
    tx.send(Ok(SseEvent::default().data(v.to_string())))
        .await
        .is_ok()
}

async fn send_done(tx: &SseSender) {
    let _ = tx.send(Ok(SseEvent::default().data("[DONE]"))).await;
}

async fn send_error(tx: &SseSender, message: String) {
    let _ = send(tx, api::error_body(&inference_failed(message))).await;
}

fn stream_chat(
    meta: Meta,
    mut rx: mpsc::UnboundedReceiver<Event>,
    include_usage: bool,
) -> Response {
    sse(move |tx| {
        tokio::spawn(async move {
            let chunk = |delta: Value, finish: Option<&str>| {
                let mut c = json!({
                    "id": meta.id, "object": "chat.completion.chunk", "created": meta.created,
                    "model": meta.model,
                    "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
                });
                if include_usage {
                    c["usage"] = Value::Null;
                }
                c
            };
            if !send(
                &tx,
                chunk(json!({"role": "assistant", "content": ""}), None),
            )
            .await
            {
                return;
            }
            while let Some(e) = rx.recv().await {
                match e {
                    Event::Text(t) => {
                        if !send(&tx, chunk(json!({"content": t}), None)).await {
                            return;
                        }
                    }
                    Event::Done(f) => {
                        send(&tx, chunk(json!({}), Some(f.reason.as_str()))).await;
                        if include_usage {
                            send(&tx, json!({
                                "id": meta.id, "object": "chat.completion.chunk", "created": meta.created,
                                "model": meta.model, "choices": [],
                                "usage": api::usage(f.prompt_tokens, f.completion_tokens),
                            }))
                            .await;
                        }
                        return send_done(&tx).await;
                    }
                    Event::Failed(m) => return send_error(&tx, m).await,
                }
            }
        })
    })
}

fn stream_completions(
    meta: Meta,
    receivers: Vec<mpsc::UnboundedReceiver<Event>>,
    include_usage: bool,
) -> Response {
    sse(move |tx| {
        tokio::spawn(async move {
            let mut all =
                futures::stream::select_all(receivers.into_iter().enumerate().map(|(i, rx)| {
                    tokio_stream::wrappers::UnboundedReceiverStream::new(rx).map(move |e| (i, e))
                }));
            let chunk = |index: usize, text: &str, finish: Option<&str>| {
                let mut c = json!({
                    "id": meta.id, "object": "text_completion", "created": meta.created,
                    "model": meta.model,
                    "choices": [{"index": index, "text": text, "logprobs": null, "finish_reason": finish}],
                });
                if include_usage {
                    c["usage"] = Value::Null;
                }
                c
            };
            let (mut prompt_tokens, mut completion_tokens) = (0, 0);
            while let Some((i, e)) = all.next().await {
                match e {
                    Event::Text(t) => {
                        if !send(&tx, chunk(i, &t, None)).await {
                            return;
                        }
                    }
                    Event::Done(f) => {
                        prompt_tokens += f.prompt_tokens;
                        completion_tokens += f.completion_tokens;
                        if !send(&tx, chunk(i, "", Some(f.reason.as_str()))).await {
                            return;
                        }
                    }
                    Event::Failed(m) => return send_error(&tx, m).await,
                }
            }
            if include_usage {
                send(
                    &tx,
                    json!({
                        "id": meta.id, "object": "text_completion", "created": meta.created,
                        "model": meta.model, "choices": [],
                        "usage": api::usage(prompt_tokens, completion_tokens),
                    }),
                )
                .await;
            }
            send_done(&tx).await;
        })
    })
}

async fn models(State(state): State<Arc<AppState>>) -> Response {
    let data: Vec<Value> = state
        .models
        .keys()
        .map(|name| json!({"id": name, "object": "model", "created": 0, "owned_by": "cordon-inference"}))
        .collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    axum::Json(json!({"status": "ok", "models": state.models.keys().collect::<Vec<_>>()}))
        .into_response()
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

async fn not_found(uri: axum::http::Uri) -> Response {
    Failure(RequestError {
        status: 404,
        code: "not_found",
        param: None,
        message: format!("no endpoint at {}; see /v1/models, /v1/chat/completions, /v1/completions, /v1/embeddings", uri.path()),
    })
    .into_response()
}

/// Serves until SIGTERM or Ctrl-C; prints `listening on ADDR` once the socket is bound.
pub async fn serve(config: &Config, state: Arc<AppState>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    println!("listening on {}", listener.local_addr()?);
    axum::serve(listener, router(state, config.max_body_bytes))
        .with_graceful_shutdown(shutdown())
        .await
}

async fn shutdown() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
