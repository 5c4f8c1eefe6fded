//! Generation throughput of `cordon-inference` on a model directory (run by `generate.sh`,
//! which also measures transformers on the same model and thread count):
//! prefill tokens/s (one 128-token prompt, one forward), single-stream decode tokens/s (64
//! greedy tokens after a 16-token prompt, through the continuous-batching scheduler, as a
//! request would run), and the aggregate decode tokens/s of 1, 4 and 8 concurrent streams.
//!
//! `CORDON_BENCH_MODEL=DIR CORDON_BENCH_THREADS=N cargo bench -p cordon-inference --bench generate`
//! prints one JSON object.

use std::sync::Arc;
use std::time::Instant;

use cordon_inference::engine::{Event, GenerateRequest, Generator, Limits};
use cordon_inference::metrics::Metrics;
use cordon_inference::model::Placement;
use cordon_inference::model::llama::{Decoder, Step};
use cordon_inference::sampling::SamplingParams;
use cordon_inference::text::TextCodec;

const PROMPT: usize = 128;
const DECODE_PROMPT: usize = 16;
const NEW: usize = 64;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn prompt(len: usize, salt: u64) -> Vec<u32> {
    // A fixed pseudo-random prompt (token ids in the vocabulary, no special tokens).
    let mut x = 0x9e3779b97f4a7c15u64 ^ salt;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            3 + (x % 31_000) as u32
        })
        .collect()
}

fn main() {
    let dir = std::env::var("CORDON_BENCH_MODEL")
        .expect("CORDON_BENCH_MODEL: a model directory (generate.sh makes one)");
    let threads: i32 = std::env::var("CORDON_BENCH_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(2);
    tch::set_num_threads(threads);
    let dir = std::path::Path::new(&dir);
    let placement = match std::env::var("CORDON_BENCH_DEVICE").as_deref() {
        Ok("cuda") => Placement::auto(),
        _ => Placement::cpu(),
    };
    let load = || Decoder::load(dir, placement, Some(2048)).expect("load the model");

    let model = load();
    let prefill = {
        let _g = tch::no_grad_guard();
        let ids: Vec<i64> = prompt(PROMPT, 0).into_iter().map(i64::from).collect();
        let mut runs = Vec::new();
        for i in 0..4 {
            let mut cache = model.new_cache(PROMPT as i64).unwrap();
            let t = Instant::now();
            let logits = model
                .forward(
                    &mut [Step {
                        tokens: &ids,
                        cache: &mut cache,
                    }],
                    false,
                )
                .unwrap();
            let _ = Vec::<f32>::try_from(&logits[0]).unwrap();
            if i > 0 {
                runs.push(PROMPT as f64 / t.elapsed().as_secs_f64());
            }
        }
        median(runs)
    };
    drop(model);

    // The tokenizer is only needed for stop handling; the benchmark directory may have none,
    // so generation runs with a codec from the reference tiny model when given, else without
    // one (CORDON_BENCH_TOKENIZER).
    let codec_dir =
        std::env::var("CORDON_BENCH_TOKENIZER").unwrap_or_else(|_| dir.display().to_string());
    let codec = Arc::new(
        TextCodec::load(std::path::Path::new(&codec_dir))
            .expect("tokenizer (CORDON_BENCH_TOKENIZER)"),
    );
    let engine = Generator::start(
        "bench",
        load(),
        codec,
        Limits {
            max_batch: 8,
            max_queue: 64,
        },
        Arc::new(Metrics::new()),
    )
    .unwrap();
    let run_streams = |n: usize| -> f64 {
        let t = Instant::now();
        let receivers: Vec<_> = (0..n)
            .map(|i| {
                engine
                    .submit(GenerateRequest {
                        prompt: prompt(DECODE_PROMPT, i as u64 + 1),
                        params: SamplingParams::greedy(),
                        max_tokens: NEW,
                        stop: vec![],
                        ignore_eos: true,
                    })
                    .unwrap()
            })
            .collect();
        let mut tokens = 0;
        for mut rx in receivers {
            loop {
                match rx.blocking_recv().expect("event") {
                    Event::Done(f) => {
                        tokens += f.completion_tokens;
                        break;
                    }
                    Event::Failed(m) => panic!("{m}"),
                    Event::Text(_) => {}
                }
            }
        }
        assert_eq!(tokens, n * NEW);
        tokens as f64 / t.elapsed().as_secs_f64()
    };
    run_streams(1); // warm-up
    let single = median((0..3).map(|_| run_streams(1)).collect());
    let four = median((0..2).map(|_| run_streams(4)).collect());
    let eight = median((0..2).map(|_| run_streams(8)).collect());
    println!(
        "{}",
        serde_json::json!({
            "threads": threads,
            "prefill_tps": prefill,
            "decode_tps": single,
            "aggregate_tps": {"1": single, "4": four, "8": eight},
        })
    );
}
