//! The continuous-batching scheduler: one thread per generative model owns its network and
//! runs forward steps for every sequence in flight. Each step admits waiting requests (their
//! prompts are prefilled in the same step as the others' decode tokens), samples one token per
//! sequence, streams the text it completes, and retires finished or abandoned sequences at
//! once, so a slot never waits for the longest request of a batch. Requests wait in a bounded
//! queue; a full queue refuses at once (429).
//!
//! Sentence encoders get the same shape in [`Embedder`]: a thread and a bounded queue; the
//! inputs of the requests waiting together form one padded batch.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::Instant;

use tch::{Kind, Tensor};
use tokio::sync::{mpsc, oneshot};

use crate::error::RequestError;
use crate::metrics::Metrics;
use crate::model::bert::Encoder;
use crate::model::llama::{Decoder, KvCache, Step};
use crate::sampling::{Sampler, SamplingParams};
use crate::text::{StopMatcher, StreamDecoder, TextCodec};

/// One generation, already tokenised.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    pub prompt: Vec<u32>,
    pub params: SamplingParams,
    /// At most this many tokens are generated (fewer where the context ends first).
    pub max_tokens: usize,
    pub stop: Vec<String>,
    /// Keep generating past end-of-sequence tokens (vLLM's `ignore_eos`).
    pub ignore_eos: bool,
}

/// What a running request hears from the scheduler.
#[derive(Debug, Clone)]
pub enum Event {
    /// Text that is final: it holds no part of a stop sequence.
    Text(String),
    Done(Finish),
    Failed(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Finish {
    pub reason: FinishReason,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Every generated token id, the one that ended the sequence included.
    pub tokens: Vec<u32>,
}

/// Batch and queue bounds of one model.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_batch: usize,
    pub max_queue: usize,
}

struct Job {
    req: GenerateRequest,
    events: mpsc::UnboundedSender<Event>,
    arrived: Instant,
}

/// The handle that request handlers use to reach a generative model's scheduler.
pub struct Generator {
    name: String,
    codec: Arc<TextCodec>,
    context: usize,
    queue: SyncSender<Job>,
    waiting: Arc<AtomicUsize>,
    limits: Limits,
    metrics: Arc<Metrics>,
}

impl Generator {
    /// Starts the scheduler thread, which owns `decoder` until this handle is dropped.
    pub fn start(
        name: &str,
        decoder: Decoder,
        codec: Arc<TextCodec>,
        limits: Limits,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        let (queue, rx) = sync_channel(limits.max_queue.max(1));
        let waiting = Arc::new(AtomicUsize::new(0));
        let context = decoder.context() as usize;
        let scheduler = Scheduler {
            name: name.to_owned(),
            decoder,
            codec: codec.clone(),
            rx,
            waiting: waiting.clone(),
            max_batch: limits.max_batch.max(1),
            metrics: metrics.clone(),
            active: Vec::new(),
        };
        std::thread::Builder::new()
            .name(format!("engine-{name}"))
            .spawn(move || scheduler.run())?;
        Ok(Self {
            name: name.to_owned(),
            codec,
            context,
            queue,
            waiting,
            limits,
            metrics,
        })
    }

    pub fn codec(&self) -> &TextCodec {
        &self.codec
    }

    /// Positions a sequence may hold, prompt and output together.
    pub fn context(&self) -> usize {
        self.context
    }

    /// Queues `req`; its events arrive on the returned channel. Dropping the receiver cancels
    /// the request and frees its slot at the next step.
    pub fn submit(
        &self,
        req: GenerateRequest,
    ) -> Result<mpsc::UnboundedReceiver<Event>, RequestError> {
        if req.prompt.is_empty() {
            return Err(RequestError::invalid("prompt", "the prompt is empty"));
        }
        if req.prompt.len() >= self.context {
            return Err(RequestError::context_length(req.prompt.len(), self.context));
        }
        let (events, rx) = mpsc::unbounded_channel();
        let job = Job {
            req,
            events,
            arrived: Instant::now(),
        };
        let depth = self.waiting.fetch_add(1, Ordering::SeqCst) + 1;
        match self.queue.try_send(job) {
            Ok(()) => {
                self.metrics
                    .queue_depth
                    .with_label_values(&[&self.name])
                    .set(depth as i64);
                Ok(rx)
            }
            Err(e) => {
                self.waiting.fetch_sub(1, Ordering::SeqCst);
                Err(match e {
                    TrySendError::Full(_) => {
                        RequestError::queue_full(&self.name, self.limits.max_queue)
                    }
                    TrySendError::Disconnected(_) => {
                        RequestError::unavailable(format!("model `{}` has stopped", self.name))
                    }
                })
            }
        }
    }
}

/// Why a sequence ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Eos,
    StopSequence,
    Length,
}

/// A sequence in the running batch.
struct Sequence {
    job: Job,
    cache: KvCache,
    /// Tokens the next step feeds: the prompt at first, then the last sampled token.
    pending: Vec<i64>,
    sampler: Sampler,
    stream: StreamDecoder,
    stops: StopMatcher,
    /// All text generated so far, and how much of it was sent.
    text: String,
    sent: usize,
    tokens: Vec<u32>,
    max_tokens: usize,
}

struct Scheduler {
    name: String,
    decoder: Decoder,
    codec: Arc<TextCodec>,
    rx: Receiver<Job>,
    waiting: Arc<AtomicUsize>,
    max_batch: usize,
    metrics: Arc<Metrics>,
    active: Vec<Sequence>,
}

impl Scheduler {
    fn run(mut self) {
        let _no_grad = tch::no_grad_guard();
        loop {
            if self.active.is_empty() {
                match self.rx.recv() {
                    Ok(job) => self.admit(job),
                    Err(_) => return,
                }
            }
            while self.active.len() < self.max_batch {
                match self.rx.try_recv() {
                    Ok(job) => self.admit(job),
                    Err(_) => break,
                }
            }
            // A client that went away frees its slot now.
            self.active.retain(|s| !s.job.events.is_closed());
            self.metrics
                .active_sequences
                .with_label_values(&[&self.name])
                .set(self.active.len() as i64);
            if !self.active.is_empty() {
                self.step();
            }
        }
    }

    fn admit(&mut self, job: Job) {
        let depth = self
            .waiting
            .fetch_sub(1, Ordering::SeqCst)
            .saturating_sub(1);
        self.metrics
            .queue_depth
            .with_label_values(&[&self.name])
            .set(depth as i64);
        let prompt_len = job.req.prompt.len();
        let room = self.decoder.context() as usize - prompt_len;
        let max_tokens = job.req.max_tokens.min(room);
        let cache = match self
            .decoder
            .new_cache((prompt_len + max_tokens.min(64)) as i64)
        {
            Ok(c) => c,
            Err(e) => {
                let _ = job.events.send(Event::Failed(format!(
                    "could not allocate the KV cache: {e}"
                )));
                return;
            }
        };
        self.metrics
            .prompt_tokens
            .with_label_values(&[&self.name])
            .inc_by(prompt_len as u64);
        self.active.push(Sequence {
            pending: job.req.prompt.iter().map(|&t| t as i64).collect(),
            sampler: Sampler::new(job.req.params.clone(), &job.req.prompt),
            stops: StopMatcher::new(job.req.stop.clone()),
            cache,
            stream: StreamDecoder::default(),
            text: String::new(),
            sent: 0,
            tokens: Vec::new(),
            max_tokens,
            job,
        });
    }

    /// One forward step over the whole batch, then one token for each sequence.
    fn step(&mut self) {
        let started = Instant::now();
        let logits = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let mut steps: Vec<Step<'_>> = self
                .active
                .iter_mut()
                .map(|s| Step {
                    tokens: &s.pending,
                    cache: &mut s.cache,
                })
                .collect();
            let rows = self.decoder.forward(&mut steps, false)?;
            let stacked = Tensor::f_stack(&rows, 0)?.f_to_device(tch::Device::Cpu)?;
            let vocab = stacked.size()[1] as usize;
            let flat = Vec::<f32>::try_from(stacked.f_to_kind(Kind::Float)?.f_flatten(0, -1)?)?;
            Ok::<_, crate::error::ModelError>((flat, vocab))
        }));
        let (mut flat, vocab) = match logits {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => return self.fail_all(&format!("the forward step failed: {e}")),
            Err(_) => return self.fail_all("the forward step panicked"),
        };
        let batch = self.active.len();
        let elapsed = started.elapsed().as_secs_f64();
        let labels = [self.name.as_str()];
        self.metrics
            .batch_size
            .with_label_values(&labels)
            .observe(batch as f64);
        self.metrics
            .step_seconds
            .with_label_values(&labels)
            .observe(elapsed);
        self.metrics
            .tokens_per_second
            .with_label_values(&labels)
            .set(batch as f64 / elapsed.max(1e-9));
        self.metrics
            .generated_tokens
            .with_label_values(&labels)
            .inc_by(batch as u64);

        let codec = self.codec.clone();
        let context = self.decoder.context();
        let mut finished = Vec::new();
        for (i, (seq, row)) in self
            .active
            .iter_mut()
            .zip(flat.chunks_mut(vocab))
            .enumerate()
        {
            let token = seq.sampler.next(row);
            if seq.tokens.is_empty() {
                self.metrics
                    .time_to_first_token
                    .with_label_values(&labels)
                    .observe(seq.job.arrived.elapsed().as_secs_f64());
            }
            seq.tokens.push(token);
            seq.pending.clear();
            seq.pending.push(token as i64);
            let end = if !seq.job.req.ignore_eos && codec.eos_ids.contains(&token) {
                Some(End::Eos)
            } else if let Some(delta) = seq.stream.push(&codec, token)
                && seq.add_text(&delta)
            {
                Some(End::StopSequence)
            } else if seq.tokens.len() >= seq.max_tokens || seq.cache.len() >= context {
                Some(End::Length)
            } else {
                None
            };
            if let Some(end) = end {
                seq.finish(&codec, end);
                finished.push(i);
            }
        }
        for i in finished.into_iter().rev() {
            self.active.swap_remove(i);
        }
    }

    fn fail_all(&mut self, message: &str) {
        tracing::error!(model = %self.name, "{message}; failing {} sequences", self.active.len());
        for s in self.active.drain(..) {
            let _ = s.job.events.send(Event::Failed(message.to_owned()));
        }
    }
}

impl Sequence {
    /// Adds decoded text; sends what can no longer be part of a stop sequence. True when a
    /// stop sequence completed (the text is cut before it).
    fn add_text(&mut self, delta: &str) -> bool {
        let from = self.text.len();
        self.text.push_str(delta);
        if let Some(at) = self.stops.find(&self.text, from) {
            self.text.truncate(at);
            self.send_until(at);
            return true;
        }
        let safe = self.stops.safe_len(&self.text);
        self.send_until(safe);
        false
    }

    fn send_until(&mut self, end: usize) {
        if end > self.sent {
            let _ = self
                .job
                .events
                .send(Event::Text(self.text[self.sent..end].to_owned()));
            self.sent = end;
        }
    }

    fn finish(&mut self, codec: &TextCodec, end: End) {
        let mut reason = match end {
            End::Eos | End::StopSequence => FinishReason::Stop,
            End::Length => FinishReason::Length,
        };
        // Text still held by the decoder (an unfinished character) is sent, unless a stop
        // sequence already ended the text: nothing after it may reach the client.
        if end != End::StopSequence
            && let Some(rest) = self.stream.finish(codec)
            && self.add_text(&rest)
        {
            reason = FinishReason::Stop;
        }
        // A partial stop sequence at the very end is ordinary text after all.
        self.send_until(self.text.len());
        let _ = self.job.events.send(Event::Done(Finish {
            reason,
            prompt_tokens: self.job.req.prompt.len(),
            completion_tokens: self.tokens.len(),
            tokens: std::mem::take(&mut self.tokens),
        }));
    }
}

/// The handle for a sentence encoder's thread.
pub struct Embedder {
    name: String,
    codec: Arc<TextCodec>,
    max_seq_length: usize,
    dimensions: usize,
    queue: SyncSender<EmbedJob>,
    limits: Limits,
}

struct EmbedJob {
    inputs: Vec<Vec<i64>>,
    reply: oneshot::Sender<Result<Vec<Vec<f32>>, String>>,
}

impl Embedder {
    pub fn start(
        name: &str,
        encoder: Encoder,
        codec: Arc<TextCodec>,
        limits: Limits,
    ) -> std::io::Result<Self> {
        let (queue, rx) = sync_channel::<EmbedJob>(limits.max_queue.max(1));
        let max_seq_length = encoder.max_seq_length as usize;
        let dimensions = encoder.config.hidden_size as usize;
        let max_batch = limits.max_batch.max(1);
        std::thread::Builder::new()
            .name(format!("embed-{name}"))
            .spawn(move || {
                let _no_grad = tch::no_grad_guard();
                while let Ok(first) = rx.recv() {
                    let mut jobs = vec![first];
                    let mut inputs = jobs[0].inputs.len();
                    while inputs < max_batch {
                        match rx.try_recv() {
                            Ok(j) => {
                                inputs += j.inputs.len();
                                jobs.push(j);
                            }
                            Err(_) => break,
                        }
                    }
                    run_embed_batch(&encoder, jobs);
                }
            })?;
        Ok(Self {
            name: name.to_owned(),
            codec,
            max_seq_length,
            dimensions,
            queue,
            limits,
        })
    }

    pub fn dimensions(&self) -> usize {
        self.dimensions
    }

    /// Tokenises and embeds `texts`, one vector each; the second value counts the tokens.
    pub async fn embed(&self, texts: &[String]) -> Result<(Vec<Vec<f32>>, usize), RequestError> {
        let mut inputs = Vec::with_capacity(texts.len());
        for (i, t) in texts.iter().enumerate() {
            let ids = self.codec.encode(t, true)?;
            if ids.len() > self.max_seq_length {
                return Err(RequestError {
                    status: 400,
                    code: "context_length_exceeded",
                    param: Some("input"),
                    message: format!(
                        "input {i} is {} tokens, but this model takes at most {}; shorten it",
                        ids.len(),
                        self.max_seq_length
                    ),
                });
            }
            inputs.push(ids.into_iter().map(i64::from).collect::<Vec<_>>());
        }
        let tokens = inputs.iter().map(Vec::len).sum();
        let (reply, rx) = oneshot::channel();
        self.queue
            .try_send(EmbedJob { inputs, reply })
            .map_err(|e| match e {
                TrySendError::Full(_) => {
                    RequestError::queue_full(&self.name, self.limits.max_queue)
                }
                TrySendError::Disconnected(_) => {
                    RequestError::unavailable(format!("model `{}` has stopped", self.name))
                }
            })?;
        let vectors = rx
            .await
            .map_err(|_| RequestError::unavailable(format!("model `{}` has stopped", self.name)))?
            .map_err(|e| RequestError {
                status: 500,
                code: "inference_failed",
                param: None,
                message: e,
            })?;
        Ok((vectors, tokens))
    }
}

fn run_embed_batch(encoder: &Encoder, jobs: Vec<EmbedJob>) {
    let all: Vec<Vec<i64>> = jobs.iter().flat_map(|j| j.inputs.iter().cloned()).collect();
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let t = encoder.embed(&all)?;
        let dims = t.size()[1] as usize;
        let flat = Vec::<f32>::try_from(t.f_flatten(0, -1)?)?;
        Ok::<_, crate::error::ModelError>(
            flat.chunks(dims).map(<[f32]>::to_vec).collect::<Vec<_>>(),
        )
    }));
    let mut vectors = match result {
        Ok(Ok(v)) => v.into_iter(),
        Ok(Err(e)) => return fail_embed(jobs, &format!("the encoder failed: {e}")),
        Err(_) => return fail_embed(jobs, "the encoder panicked"),
    };
    for j in jobs {
        let mine = vectors.by_ref().take(j.inputs.len()).collect();
        let _ = j.reply.send(Ok(mine));
    }
}

fn fail_embed(jobs: Vec<EmbedJob>, message: &str) {
    tracing::error!("{message}");
    for j in jobs {
        let _ = j.reply.send(Err(message.to_owned()));
    }
}
