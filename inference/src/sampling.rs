//! Choosing the next token from a sequence's logits: repetition, presence and frequency
//! penalties, then greedy choice at temperature 0 or sampling with temperature, top-k and
//! top-p from the sequence's own seeded generator, so that a seed gives the same text however
//! the request was batched.

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The knobs of one request, as the OpenAI API (and vLLM's extensions) name them.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    pub temperature: f32,
    pub top_p: f32,
    /// 0 turns it off.
    pub top_k: usize,
    pub seed: Option<u64>,
    /// Hugging Face's: logits of tokens already in the prompt or output are divided (positive)
    /// or multiplied (negative) by it; 1 turns it off.
    pub repetition_penalty: f32,
    /// OpenAI's: subtracted once from the logit of every token already generated.
    pub presence_penalty: f32,
    /// OpenAI's: subtracted from a token's logit for each time it was generated.
    pub frequency_penalty: f32,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            seed: None,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
        }
    }
}

impl SamplingParams {
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            ..Self::default()
        }
    }
}

/// One sequence's sampler: its parameters, its generator and what it has seen.
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    /// Tokens in the prompt or output (for the repetition penalty).
    seen: Vec<u32>,
    /// How often each token was generated (for presence and frequency penalties).
    generated: HashMap<u32, u32>,
}

impl Sampler {
    pub fn new(params: SamplingParams, prompt: &[u32]) -> Self {
        let rng = match params.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        let mut seen = if params.repetition_penalty != 1.0 {
            prompt.to_vec()
        } else {
            Vec::new()
        };
        seen.sort_unstable();
        seen.dedup();
        Self {
            params,
            rng,
            seen,
            generated: HashMap::new(),
        }
    }

    /// Picks the next token from `logits` (which it changes) and records it.
    pub fn next(&mut self, logits: &mut [f32]) -> u32 {
        self.penalise(logits);
        let token = if self.params.temperature <= 1e-5 {
            argmax(logits)
        } else {
            self.sample(logits)
        };
        self.observe(token);
        token
    }

    fn observe(&mut self, token: u32) {
        *self.generated.entry(token).or_default() += 1;
        if self.params.repetition_penalty != 1.0
            && let Err(i) = self.seen.binary_search(&token)
        {
            self.seen.insert(i, token);
        }
    }

    fn penalise(&self, logits: &mut [f32]) {
        let p = &self.params;
        if p.repetition_penalty != 1.0 {
            for &t in &self.seen {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l = if *l > 0.0 {
                        *l / p.repetition_penalty
                    } else {
                        *l * p.repetition_penalty
                    };
                }
            }
        }
        if p.presence_penalty != 0.0 || p.frequency_penalty != 0.0 {
            for (&t, &count) in &self.generated {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l -= p.presence_penalty + p.frequency_penalty * count as f32;
                }
            }
        }
    }

    fn sample(&mut self, logits: &[f32]) -> u32 {
        let p = &self.params;
        let inv_t = 1.0 / p.temperature;
        let mut candidates: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .filter(|(_, l)| l.is_finite())
            .map(|(i, &l)| (i as u32, l * inv_t))
            .collect();
        if candidates.is_empty() {
            return argmax(logits);
        }
        let by_logit_desc =
            |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if p.top_k > 0 && p.top_k < candidates.len() {
            candidates.select_nth_unstable_by(p.top_k - 1, by_logit_desc);
            candidates.truncate(p.top_k);
        }
        candidates.sort_unstable_by(by_logit_desc);
        let max = candidates[0].1;
        let mut total = 0.0f64;
        for c in candidates.iter_mut() {
            c.1 = (c.1 - max).exp();
            total += c.1 as f64;
        }
        if p.top_p < 1.0 {
            let mut mass = 0.0f64;
            let mut keep = candidates.len();
            for (i, c) in candidates.iter().enumerate() {
                mass += c.1 as f64 / total;
                if mass >= p.top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
            candidates.truncate(keep);
            total = candidates.iter().map(|c| c.1 as f64).sum();
        }
        let mut r = self.rng.random::<f64>() * total;
        for &(id, w) in &candidates {
            r -= w as f64;
            if r <= 0.0 {
                return id;
            }
        }
        candidates[candidates.len() - 1].0
    }
}

/// The first index of the largest logit (as `torch.argmax`).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_first_maximum() {
        let mut s = Sampler::new(SamplingParams::greedy(), &[]);
        assert_eq!(s.next(&mut [0.1, 3.0, 3.0, -1.0]), 1);
    }

    #[test]
    fn a_seed_repeats_and_top_k_1_is_greedy() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let run = |seed| {
            let params = SamplingParams {
                seed: Some(seed),
                ..SamplingParams::default()
            };
            let mut s = Sampler::new(params, &[]);
            (0..20)
                .map(|_| s.next(&mut logits.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        let mut k1 = Sampler::new(
            SamplingParams {
                top_k: 1,
                seed: Some(1),
                ..SamplingParams::default()
            },
            &[],
        );
        assert_eq!(k1.next(&mut logits.clone()), argmax(&logits));
    }

    #[test]
    fn top_p_keeps_only_the_nucleus() {
        // Token 2 holds nearly all the mass: a small top_p leaves only it.
        let logits = [0.0, 1.0, 12.0, 2.0];
        let mut s = Sampler::new(
            SamplingParams {
                top_p: 0.5,
                seed: Some(3),
                ..SamplingParams::default()
            },
            &[],
        );
        for _ in 0..50 {
            assert_eq!(s.next(&mut logits.clone()), 2);
        }
    }

    #[test]
    fn penalties_follow_hugging_face_and_openai() {
        let params = SamplingParams {
            repetition_penalty: 2.0,
            presence_penalty: 0.5,
            frequency_penalty: 0.25,
            ..SamplingParams::greedy()
        };
        let mut s = Sampler::new(params, &[0, 1]);
        s.observe(1);
        s.observe(1);
        let mut logits = [4.0, -4.0, 1.0];
        s.penalise(&mut logits);
        assert_eq!(logits[0], 2.0);
        // Prompt and output token 1: -4 * 2, then - (0.5 + 0.25 * 2).
        assert_eq!(logits[1], -9.0);
        assert_eq!(logits[2], 1.0);
    }
}
