//! Prometheus metrics of the inference server: queue depth, batch size, tokens and their rate,
//! time to first token, requests by model, API and status.

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub queue_depth: IntGaugeVec,
    pub active_sequences: IntGaugeVec,
    pub batch_size: HistogramVec,
    pub prompt_tokens: IntCounterVec,
    pub generated_tokens: IntCounterVec,
    pub tokens_per_second: GaugeVec,
    pub time_to_first_token: HistogramVec,
    pub step_seconds: HistogramVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let model = &["model"];
        let latency = vec![
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ];
        let m = Self {
            requests: IntCounterVec::new(
                Opts::new(
                    "cordon_inference_requests_total",
                    "Requests by model, API and status",
                ),
                &["model", "api", "status"],
            )
            .expect("valid metric"),
            queue_depth: IntGaugeVec::new(
                Opts::new(
                    "cordon_inference_queue_depth",
                    "Requests waiting for a batch slot",
                ),
                model,
            )
            .expect("valid metric"),
            active_sequences: IntGaugeVec::new(
                Opts::new(
                    "cordon_inference_active_sequences",
                    "Sequences in the running batch",
                ),
                model,
            )
            .expect("valid metric"),
            batch_size: HistogramVec::new(
                HistogramOpts::new("cordon_inference_batch_size", "Sequences per forward step")
                    .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]),
                model,
            )
            .expect("valid metric"),
            prompt_tokens: IntCounterVec::new(
                Opts::new(
                    "cordon_inference_prompt_tokens_total",
                    "Prompt tokens processed",
                ),
                model,
            )
            .expect("valid metric"),
            generated_tokens: IntCounterVec::new(
                Opts::new(
                    "cordon_inference_generated_tokens_total",
                    "Tokens generated",
                ),
                model,
            )
            .expect("valid metric"),
            tokens_per_second: GaugeVec::new(
                Opts::new(
                    "cordon_inference_tokens_per_second",
                    "Tokens generated per second over the last forward step",
                ),
                model,
            )
            .expect("valid metric"),
            time_to_first_token: HistogramVec::new(
                HistogramOpts::new(
                    "cordon_inference_time_to_first_token_seconds",
                    "From a request's arrival to its first generated token",
                )
                .buckets(latency.clone()),
                model,
            )
            .expect("valid metric"),
            step_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "cordon_inference_step_seconds",
                    "Duration of one forward step",
                )
                .buckets(latency),
                model,
            )
            .expect("valid metric"),
            registry,
        };
        for c in [
            Box::new(m.requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.queue_depth.clone()),
            Box::new(m.active_sequences.clone()),
            Box::new(m.batch_size.clone()),
            Box::new(m.prompt_tokens.clone()),
            Box::new(m.generated_tokens.clone()),
            Box::new(m.tokens_per_second.clone()),
            Box::new(m.time_to_first_token.clone()),
            Box::new(m.step_seconds.clone()),
        ] {
            m.registry.register(c).expect("metric names are unique");
        }
        m
    }

    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding gathered metric families into a Vec cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
