//! Cordon's networks against transformers and sentence-transformers on the same weights:
//! logits within 1e-4 (f32, CPU), identical greedy continuations with and without the KV cache,
//! batched and alone, the chat template rendered identically, and embeddings with cosine
//! >= 0.9999.

mod common;

use std::sync::Arc;

use cordon_inference::engine::{Event, GenerateRequest, Generator, Limits};
use cordon_inference::metrics::Metrics;
use cordon_inference::model::Placement;
use cordon_inference::model::bert::Encoder;
use cordon_inference::model::llama::{Decoder, Step};
use cordon_inference::sampling::{Sampler, SamplingParams};
use cordon_inference::text::TextCodec;
use serde_json::Value;
use tch::Tensor;

use common::{fixtures, ids};

const MODELS: [&str; 2] = ["llama", "qwen2"];

fn load(name: &str) -> Decoder {
    Decoder::load(&fixtures().model_dir(name), Placement::cpu(), None).expect("load decoder")
}

fn prompts(name: &str) -> Vec<Vec<i64>> {
    fixtures().reference[name]["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| ids(p).into_iter().map(i64::from).collect())
        .collect()
}

fn expected_greedy(name: &str) -> Vec<Vec<u32>> {
    fixtures().reference[name]["greedy"]
        .as_array()
        .unwrap()
        .iter()
        .map(ids)
        .collect()
}

fn argmax(t: &Tensor) -> i64 {
    t.argmax(-1, false).int64_value(&[])
}

#[test]
fn logits_match_transformers_within_1e4() {
    let _g = tch::no_grad_guard();
    for name in MODELS {
        let model = load(name);
        let prompt = &prompts(name)[2];
        let mut cache = model.new_cache(8).unwrap();
        let out = model
            .forward(
                &mut [Step {
                    tokens: prompt,
                    cache: &mut cache,
                }],
                true,
            )
            .unwrap()
            .remove(0);
        let expected: Vec<Vec<f32>> =
            serde_json::from_value(fixtures().reference[name]["logits"].clone()).unwrap();
        let expected = Tensor::from_slice2(&expected);
        assert_eq!(out.size(), expected.size(), "{name}");
        let diff = (&out - &expected).abs().max().double_value(&[]);
        assert!(diff < 1e-4, "{name}: max |logit difference| {diff}");
        // The cache grew past its first capacity (8) and holds every prompt position.
        assert_eq!(cache.len(), prompt.len() as i64);
    }
}

/// Greedy decoding with the KV cache, the sequences of `batch` stepped together.
fn greedy_cached(model: &Decoder, batch: &[Vec<i64>], steps: usize) -> Vec<Vec<u32>> {
    let mut caches: Vec<_> = batch.iter().map(|_| model.new_cache(4).unwrap()).collect();
    let mut pending: Vec<Vec<i64>> = batch.to_vec();
    let mut out = vec![Vec::new(); batch.len()];
    for _ in 0..steps {
        let mut steps: Vec<Step<'_>> = pending
            .iter()
            .zip(caches.iter_mut())
            .map(|(t, c)| Step {
                tokens: t,
                cache: c,
            })
            .collect();
        let logits = model.forward(&mut steps, false).unwrap();
        for (i, l) in logits.iter().enumerate() {
            let next = argmax(l);
            out[i].push(next as u32);
            pending[i] = vec![next];
        }
    }
    out
}

#[test]
fn greedy_generation_is_identical_with_and_without_cache_batched_and_alone() {
    let _g = tch::no_grad_guard();
    for name in MODELS {
        let model = load(name);
        let prompts = prompts(name);
        let expected = expected_greedy(name);
        assert!(expected.iter().all(|e| e.len() == 32));
        // Alone, with the cache.
        for (p, e) in prompts.iter().zip(&expected) {
            assert_eq!(
                &greedy_cached(&model, std::slice::from_ref(p), 32)[0],
                e,
                "{name}: cached, alone"
            );
        }
        // Batched: three prompts of different lengths prefilled and decoded together.
        assert_eq!(
            greedy_cached(&model, &prompts, 32),
            expected,
            "{name}: cached, batched"
        );
        // Without the cache: a fresh full forward over the whole sequence for every token.
        for (p, e) in prompts.iter().zip(&expected) {
            let mut seq = p.clone();
            let mut got = Vec::new();
            for _ in 0..32 {
                let mut cache = model.new_cache(seq.len() as i64).unwrap();
                let l = model
                    .forward(
                        &mut [Step {
                            tokens: &seq,
                            cache: &mut cache,
                        }],
                        false,
                    )
                    .unwrap();
                let next = argmax(&l[0]);
                got.push(next as u32);
                seq.push(next);
            }
            assert_eq!(&got, e, "{name}: no cache");
        }
    }
}

#[test]
fn a_prefill_after_cached_tokens_matches_one_whole_prefill() {
    // Extending a cache by several tokens at once uses the offset causal mask.
    let _g = tch::no_grad_guard();
    let model = load("llama");
    let prompt = &prompts("llama")[2];
    let (head, tail) = prompt.split_at(10);
    let mut cache = model.new_cache(4).unwrap();
    model
        .forward(
            &mut [Step {
                tokens: head,
                cache: &mut cache,
            }],
            false,
        )
        .unwrap();
    let split = model
        .forward(
            &mut [Step {
                tokens: tail,
                cache: &mut cache,
            }],
            true,
        )
        .unwrap()
        .remove(0);
    let mut whole_cache = model.new_cache(4).unwrap();
    let whole = model
        .forward(
            &mut [Step {
                tokens: prompt,
                cache: &mut whole_cache,
            }],
            true,
        )
        .unwrap()
        .remove(0)
        .narrow(0, 10, tail.len() as i64);
    // The two prefills multiply in different blockings, so f32 rounding differs: held to the
    // same 1e-4 as the reference parity above (1e-5 failed by 1.007e-5 on an AMD EPYC host).
    let diff = (&split - &whole).abs().max().double_value(&[]);
    assert!(diff < 1e-4, "max difference {diff}");
}

#[test]
fn the_scheduler_batches_concurrent_requests_to_the_same_tokens() {
    for name in MODELS {
        let dir = fixtures().model_dir(name);
        let codec = Arc::new(TextCodec::load(&dir).unwrap());
        let engine = Generator::start(
            name,
            load(name),
            codec,
            Limits {
                max_batch: 8,
                max_queue: 8,
            },
            Arc::new(Metrics::new()),
        )
        .unwrap();
        let receivers: Vec<_> = prompts(name)
            .iter()
            .map(|p| {
                engine
                    .submit(GenerateRequest {
                        prompt: p.iter().map(|&t| t as u32).collect(),
                        params: SamplingParams::greedy(),
                        max_tokens: 32,
                        stop: vec![],
                        ignore_eos: true,
                    })
                    .unwrap()
            })
            .collect();
        for (mut rx, expected) in receivers.into_iter().zip(expected_greedy(name)) {
            let finish = loop {
                match rx.blocking_recv().expect("event") {
                    Event::Done(f) => break f,
                    Event::Failed(m) => panic!("{m}"),
                    Event::Text(_) => {}
                }
            };
            assert_eq!(finish.tokens, expected, "{name}");
            assert_eq!(finish.completion_tokens, 32);
        }
    }
}

#[test]
fn sampling_with_a_seed_repeats() {
    let _g = tch::no_grad_guard();
    let model = load("qwen2");
    let prompt = &prompts("qwen2")[1];
    let run = |seed| {
        let params = SamplingParams {
            temperature: 0.9,
            top_p: 0.95,
            top_k: 50,
            seed: Some(seed),
            ..SamplingParams::default()
        };
        let mut sampler = Sampler::new(params, &[]);
        let mut cache = model.new_cache(64).unwrap();
        let mut pending = prompt.clone();
        let mut out = Vec::new();
        for _ in 0..16 {
            let l = model
                .forward(
                    &mut [Step {
                        tokens: &pending,
                        cache: &mut cache,
                    }],
                    false,
                )
                .unwrap();
            let mut row = Vec::<f32>::try_from(&l[0]).unwrap();
            let t = sampler.next(&mut row);
            out.push(t);
            pending = vec![t as i64];
        }
        out
    };
    assert_eq!(run(42), run(42));
    assert_ne!(run(42), run(43));
}

#[test]
fn chat_templates_render_as_transformers_renders_them() {
    let messages: Vec<Value> = fixtures().reference["messages"].as_array().unwrap().clone();
    for name in MODELS {
        let codec = TextCodec::load(&fixtures().model_dir(name)).unwrap();
        let rendered = codec.render_chat(&messages, None).unwrap();
        assert_eq!(
            rendered,
            fixtures().reference[name]["chat_rendered"]
                .as_str()
                .unwrap(),
            "{name}"
        );
        assert_eq!(
            codec.encode(&rendered, false).unwrap(),
            ids(&fixtures().reference[name]["chat_ids"]),
            "{name}"
        );
        assert_eq!(codec.eos_ids, vec![1], "{name}");
    }
}

#[test]
fn minilm_embeddings_match_sentence_transformers() {
    let _g = tch::no_grad_guard();
    let reference = &fixtures().reference["minilm"];
    let dir = std::path::PathBuf::from(reference["path"].as_str().unwrap());
    let encoder = Encoder::load(&dir, Placement::cpu()).unwrap();
    let codec = TextCodec::load(&dir).unwrap();
    let sentences: Vec<String> = serde_json::from_value(reference["sentences"].clone()).unwrap();
    let expected: Vec<Vec<f32>> = serde_json::from_value(reference["vectors"].clone()).unwrap();
    // All sentences in one padded batch, and each alone.
    let inputs: Vec<Vec<i64>> = sentences
        .iter()
        .map(|s| {
            codec
                .encode(s, true)
                .unwrap()
                .into_iter()
                .map(i64::from)
                .collect()
        })
        .collect();
    let batched = encoder.embed(&inputs).unwrap();
    for (i, e) in expected.iter().enumerate() {
        let alone = encoder
            .embed(std::slice::from_ref(&inputs[i]))
            .unwrap()
            .get(0);
        for got in [batched.get(i as i64), alone] {
            let got = Vec::<f32>::try_from(&got).unwrap();
            let dot: f32 = got.iter().zip(e).map(|(a, b)| a * b).sum();
            let cos = dot / (norm(&got) * norm(e));
            assert!(cos >= 0.9999, "{:?}: cosine {cos}", sentences[i]);
            assert!((norm(&got) - 1.0).abs() < 1e-4, "normalised");
        }
    }
}

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}
