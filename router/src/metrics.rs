//! Prometheus metrics: requests by route, model and status; latency; upstream errors; tokens.
//! Rendered as text on `GET /metrics`.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub latency: HistogramVec,
    pub upstream_latency: HistogramVec,
    pub upstream_errors: IntCounterVec,
    pub tokens: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "cordon_requests_total",
                "Requests answered, by route, model and status",
            ),
            &["route", "model", "status"],
        )
        .expect("static metric definition");
        let buckets = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            30.0, 60.0, 120.0,
        ];
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "cordon_request_duration_seconds",
                "Time from request to the last response byte",
            )
            .buckets(buckets.clone()),
            &["route", "model"],
        )
        .expect("static metric definition");
        let upstream_latency = HistogramVec::new(
            HistogramOpts::new(
                "cordon_upstream_first_byte_seconds",
                "Time from sending a request upstream to its response header",
            )
            .buckets(buckets),
            &["provider"],
        )
        .expect("static metric definition");
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                "cordon_upstream_errors_total",
                "Failed upstream attempts, by provider and kind",
            ),
            &["provider", "kind"],
        )
        .expect("static metric definition");
        let tokens = IntCounterVec::new(
            Opts::new("cordon_tokens_total", "Tokens reported by upstream usage"),
            &["model", "provider", "direction"],
        )
        .expect("static metric definition");
        for c in [&requests, &upstream_errors, &tokens] {
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
        }
        for h in [&latency, &upstream_latency] {
            registry
                .register(Box::new(h.clone()))
                .expect("unique metric");
        }
        Self {
            registry,
            requests,
            latency,
            upstream_latency,
            upstream_errors,
            tokens,
        }
    }

    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
