//! Llama-architecture decoders on libtorch: Llama 2 and 3 (RoPE with llama3 frequency scaling),
//! TinyLlama, Mistral-style checkpoints and Qwen2 (bias on q, k and v), with grouped-query
//! attention, RMSNorm, SwiGLU and tied or untied embeddings.
//!
//! [`Decoder::forward`] runs one step for a batch of sequences of different lengths, as Orca's
//! selective batching does: the tokens of every sequence are packed into one matrix for the
//! projections and the MLP (where the weights are read once for the whole batch), and split
//! per sequence only for attention, against that sequence's own [`KvCache`]. A prefill (many
//! new tokens, empty cache) and a decode step (one new token) can share one call.

use std::path::Path;

use serde::Deserialize;
use tch::{Kind, Tensor};

use super::Placement;
use super::weights::Weights;
use crate::error::ModelError;

/// The fields of `config.json` a decoder needs.
#[derive(Debug, Clone, Deserialize)]
pub struct DecoderConfig {
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub intermediate_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    #[serde(default)]
    pub num_key_value_heads: Option<i64>,
    #[serde(default)]
    pub head_dim: Option<i64>,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    #[serde(default)]
    pub rope_theta: Option<f64>,
    #[serde(default)]
    pub rope_scaling: Option<RopeScaling>,
    /// transformers 5 writes `rope_theta` and the scaling together here.
    #[serde(default)]
    pub rope_parameters: Option<RopeScaling>,
    #[serde(default = "default_positions")]
    pub max_position_embeddings: i64,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default)]
    pub hidden_act: Option<String>,
}

fn default_eps() -> f64 {
    1e-6
}
fn default_positions() -> i64 {
    2048
}

/// `rope_scaling` (or `rope_parameters`) as Llama checkpoints write it.
#[derive(Debug, Clone, Deserialize)]
pub struct RopeScaling {
    #[serde(alias = "type", default = "default_rope_type")]
    pub rope_type: String,
    #[serde(default)]
    pub rope_theta: Option<f64>,
    #[serde(default)]
    pub factor: Option<f64>,
    #[serde(default)]
    pub low_freq_factor: Option<f64>,
    #[serde(default)]
    pub high_freq_factor: Option<f64>,
    #[serde(default)]
    pub original_max_position_embeddings: Option<f64>,
}

fn default_rope_type() -> String {
    "default".into()
}

impl DecoderConfig {
    /// RoPE's base: `rope_parameters.rope_theta`, `rope_theta`, else 10000.
    pub fn rope_theta(&self) -> f64 {
        self.rope_parameters
            .as_ref()
            .and_then(|p| p.rope_theta)
            .or(self.rope_theta)
            .unwrap_or(10_000.0)
    }

    /// The frequency scaling, from `rope_scaling` or `rope_parameters`.
    pub fn rope_scaling(&self) -> Option<&RopeScaling> {
        self.rope_scaling
            .as_ref()
            .or(self.rope_parameters.as_ref())
            .filter(|s| s.rope_type != "default")
    }

    pub fn kv_heads(&self) -> i64 {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub fn head_dim(&self) -> i64 {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    fn validate(&self, dir: &Path) -> Result<(), ModelError> {
        let invalid = |message: String| ModelError::Invalid {
            path: dir.join("config.json"),
            message,
        };
        if self.num_attention_heads <= 0 || self.kv_heads() <= 0 {
            return Err(invalid(
                "num_attention_heads and num_key_value_heads must be positive".into(),
            ));
        }
        if self.num_attention_heads % self.kv_heads() != 0 {
            return Err(invalid(format!(
                "num_attention_heads ({}) must be a multiple of num_key_value_heads ({})",
                self.num_attention_heads,
                self.kv_heads()
            )));
        }
        if self.head_dim() % 2 != 0 {
            return Err(invalid(format!(
                "head_dim ({}) must be even for RoPE",
                self.head_dim()
            )));
        }
        if let Some(act) = &self.hidden_act
            && act != "silu"
        {
            return Err(invalid(format!(
                "hidden_act `{act}` is not supported; Llama and Qwen2 use silu"
            )));
        }
        if let Some(s) = self.rope_scaling()
            && !matches!(s.rope_type.as_str(), "default" | "linear" | "llama3")
        {
            return Err(invalid(format!(
                "rope_scaling type `{}` is not supported (default, linear, llama3)",
                s.rope_type
            )));
        }
        Ok(())
    }
}

/// One sequence's keys and values for every layer, grown in place as tokens are added.
pub struct KvCache {
    layers: Vec<(Tensor, Tensor)>,
    len: i64,
    capacity: i64,
}

impl KvCache {
    /// Tokens already held.
    pub fn len(&self) -> i64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A layer's weights, with q, k and v fused into one projection and gate and up into another
/// (one larger matrix product each instead of three and two).
struct Layer {
    input_norm: Tensor,
    /// `[q; k; v]`, `[(heads + 2 kv_heads) head_dim, hidden]`, with the biases Qwen2 has.
    qkv: Tensor,
    qkv_bias: Option<Tensor>,
    o: Tensor,
    post_norm: Tensor,
    /// `[gate; up]`, `[2 intermediate, hidden]`.
    gate_up: Tensor,
    down: Tensor,
}

/// A loaded decoder.
pub struct Decoder {
    pub config: DecoderConfig,
    placement: Placement,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    lm_head: Tensor,
    /// RoPE tables, [context, head_dim], one row per position.
    cos: Tensor,
    sin: Tensor,
    context: i64,
}

/// One sequence's part of a forward step: the tokens it adds and its cache.
pub struct Step<'a> {
    pub tokens: &'a [i64],
    pub cache: &'a mut KvCache,
}

impl Decoder {
    /// Loads the decoder from `dir`; `context` caps the positions served (at most the
    /// checkpoint's `max_position_embeddings`).
    pub fn load(
        dir: &Path,
        placement: Placement,
        context: Option<i64>,
    ) -> Result<Self, ModelError> {
        let config: DecoderConfig = super::read_json(&dir.join("config.json"))?;
        config.validate(dir)?;
        let mut w = Weights::load(dir, placement.device, placement.kind)?;
        let (h, v, inter) = (
            config.hidden_size,
            config.vocab_size,
            config.intermediate_size,
        );
        let (nh, nkv, hd) = (
            config.num_attention_heads,
            config.kv_heads(),
            config.head_dim(),
        );
        let embed = w.take("model.embed_tokens.weight", &[v, h])?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers as usize);
        for i in 0..config.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let proj = |w: &mut Weights, name: &str, out: i64, inp: i64| {
                w.take(&format!("{p}.{name}.weight"), &[out, inp])
            };
            let bias = |w: &mut Weights, name: &str, out: i64| {
                w.take_optional(&format!("{p}.{name}.bias"), &[out])
            };
            let q = proj(&mut w, "self_attn.q_proj", nh * hd, h)?;
            let k = proj(&mut w, "self_attn.k_proj", nkv * hd, h)?;
            let v = proj(&mut w, "self_attn.v_proj", nkv * hd, h)?;
            let biases = [
                bias(&mut w, "self_attn.q_proj", nh * hd)?,
                bias(&mut w, "self_attn.k_proj", nkv * hd)?,
                bias(&mut w, "self_attn.v_proj", nkv * hd)?,
            ];
            let qkv_bias = if biases.iter().any(Option::is_some) {
                let sizes = [nh * hd, nkv * hd, nkv * hd];
                let parts = biases
                    .into_iter()
                    .zip(sizes)
                    .map(|(b, n)| match b {
                        Some(b) => Ok(b),
                        None => Tensor::f_zeros([n], (placement.kind, placement.device)),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Some(Tensor::f_cat(&parts, 0)?)
            } else {
                None
            };
            let gate = proj(&mut w, "mlp.gate_proj", inter, h)?;
            let up = proj(&mut w, "mlp.up_proj", inter, h)?;
            layers.push(Layer {
                input_norm: w.take(&format!("{p}.input_layernorm.weight"), &[h])?,
                qkv: Tensor::f_cat(&[q, k, v], 0)?,
                qkv_bias,
                o: proj(&mut w, "self_attn.o_proj", h, nh * hd)?,
                post_norm: w.take(&format!("{p}.post_attention_layernorm.weight"), &[h])?,
                gate_up: Tensor::f_cat(&[gate, up], 0)?,
                down: proj(&mut w, "mlp.down_proj", h, inter)?,
            });
        }
        let norm = w.take("model.norm.weight", &[h])?;
        let lm_head = if w.contains("lm_head.weight") && !config.tie_word_embeddings {
            w.take("lm_head.weight", &[v, h])?
        } else {
            embed.shallow_clone()
        };
        let context = context
            .unwrap_or(config.max_position_embeddings)
            .min(config.max_position_embeddings);
        let (cos, sin) = rope_tables(&config, context, placement)?;
        Ok(Self {
            config,
            placement,
            embed,
            layers,
            norm,
            lm_head,
            cos,
            sin,
            context,
        })
    }

    /// The most positions (prompt and output together) a sequence may hold.
    pub fn context(&self) -> i64 {
        self.context
    }

    pub fn placement(&self) -> Placement {
        self.placement
    }

    /// An empty cache with room for `capacity` tokens before it grows.
    pub fn new_cache(&self, capacity: i64) -> Result<KvCache, ModelError> {
        let capacity = capacity.clamp(1, self.context);
        let shape = [self.config.kv_heads(), capacity, self.config.head_dim()];
        let opts = (self.placement.kind, self.placement.device);
        let layers = (0..self.layers.len())
            .map(|_| Ok((Tensor::f_zeros(shape, opts)?, Tensor::f_zeros(shape, opts)?)))
            .collect::<Result<_, tch::TchError>>()?;
        Ok(KvCache {
            layers,
            len: 0,
            capacity,
        })
    }

    /// Runs one step for every sequence in `batch` and returns, per sequence, the logits
    /// (f32) of its last new token, `[vocab]`, or of all its new tokens, `[n, vocab]`, with
    /// `all_positions`. Each cache grows by that sequence's tokens.
    pub fn forward(
        &self,
        batch: &mut [Step<'_>],
        all_positions: bool,
    ) -> Result<Vec<Tensor>, ModelError> {
        let dev = self.placement.device;
        let lens: Vec<i64> = batch.iter().map(|s| s.tokens.len() as i64).collect();
        let starts: Vec<i64> = batch.iter().map(|s| s.cache.len).collect();
        for (&n, &start) in lens.iter().zip(&starts) {
            if n == 0 || start + n > self.context {
                return Err(ModelError::Invalid {
                    path: Default::default(),
                    message: format!(
                        "a step of {n} tokens at position {start} does not fit the context of {}",
                        self.context
                    ),
                });
            }
        }
        for s in batch.iter_mut() {
            self.reserve(s.cache, s.cache.len + s.tokens.len() as i64)?;
        }
        let ids: Vec<i64> = batch
            .iter()
            .flat_map(|s| s.tokens.iter().copied())
            .collect();
        let positions: Vec<i64> = starts
            .iter()
            .zip(&lens)
            .flat_map(|(&s, &n)| s..s + n)
            .collect();
        let ids = Tensor::from_slice(&ids).f_to_device(dev)?;
        let positions = Tensor::from_slice(&positions).f_to_device(dev)?;
        let cos = self.cos.f_index_select(0, &positions)?.f_unsqueeze(1)?;
        let sin = self.sin.f_index_select(0, &positions)?.f_unsqueeze(1)?;

        let cfg = &self.config;
        let (nh, nkv, hd) = (cfg.num_attention_heads, cfg.kv_heads(), cfg.head_dim());
        let total = ids.size()[0];
        let mut x = Tensor::f_embedding(&self.embed, &ids, -1, false, false)?;
        for (li, layer) in self.layers.iter().enumerate() {
            let h = x.f_rms_norm([cfg.hidden_size], Some(&layer.input_norm), cfg.rms_norm_eps)?;
            let qkv = project(&h, &layer.qkv, layer.qkv_bias.as_ref())?;
            let q = qkv.f_narrow(1, 0, nh * hd)?.f_reshape([total, nh, hd])?;
            let k = qkv
                .f_narrow(1, nh * hd, nkv * hd)?
                .f_reshape([total, nkv, hd])?;
            let v = qkv
                .f_narrow(1, (nh + nkv) * hd, nkv * hd)?
                .f_reshape([total, nkv, hd])?;
            let q = apply_rope(&q, &cos, &sin)?;
            let k = apply_rope(&k, &cos, &sin)?;
            let mut outs = Vec::with_capacity(batch.len());
            let mut offset = 0;
            for (s, (&n, &start)) in batch.iter_mut().zip(lens.iter().zip(&starts)) {
                let qi = q.f_narrow(0, offset, n)?.f_transpose(0, 1)?;
                let ki = k.f_narrow(0, offset, n)?.f_transpose(0, 1)?;
                let vi = v.f_narrow(0, offset, n)?.f_transpose(0, 1)?;
                let (kc, vc) = &mut s.cache.layers[li];
                kc.f_narrow(1, start, n)?.f_copy_(&ki)?;
                vc.f_narrow(1, start, n)?.f_copy_(&vi)?;
                let keys = kc.f_narrow(1, 0, start + n)?;
                let values = vc.f_narrow(1, 0, start + n)?;
                let out = attend(&qi, &keys, &values, start, n)?;
                outs.push(out.f_transpose(0, 1)?.f_reshape([n, nh * hd])?);
                offset += n;
            }
            let attn = project(&Tensor::f_cat(&outs, 0)?, &layer.o, None)?;
            x = x.f_add(&attn)?;
            let h = x.f_rms_norm([cfg.hidden_size], Some(&layer.post_norm), cfg.rms_norm_eps)?;
            let gate_up = project(&h, &layer.gate_up, None)?;
            let inter = cfg.intermediate_size;
            let gate = gate_up.f_narrow(1, 0, inter)?.f_silu()?;
            let up = gate_up.f_narrow(1, inter, inter)?;
            let mlp = project(&gate.f_mul(&up)?, &layer.down, None)?;
            x = x.f_add(&mlp)?;
        }
        for (s, &n) in batch.iter_mut().zip(&lens) {
            s.cache.len += n;
        }
        let x = x.f_rms_norm([cfg.hidden_size], Some(&self.norm), cfg.rms_norm_eps)?;
        if all_positions {
            let logits = project(&x, &self.lm_head, None)?.f_to_kind(Kind::Float)?;
            let mut out = Vec::with_capacity(lens.len());
            let mut offset = 0;
            for &n in &lens {
                out.push(logits.f_narrow(0, offset, n)?);
                offset += n;
            }
            return Ok(out);
        }
        let mut last = Vec::with_capacity(lens.len());
        let mut offset = 0;
        for &n in &lens {
            offset += n;
            last.push(offset - 1);
        }
        let last = Tensor::from_slice(&last).f_to_device(dev)?;
        let logits =
            project(&x.f_index_select(0, &last)?, &self.lm_head, None)?.f_to_kind(Kind::Float)?;
        Ok((0..lens.len() as i64).map(|i| logits.get(i)).collect())
    }

    /// Grows `cache` (doubling, at most to the context) until it holds `needed` positions.
    fn reserve(&self, cache: &mut KvCache, needed: i64) -> Result<(), ModelError> {
        if needed <= cache.capacity {
            return Ok(());
        }
        let capacity = (cache.capacity * 2).max(needed).min(self.context);
        let shape = [self.config.kv_heads(), capacity, self.config.head_dim()];
        let opts = (self.placement.kind, self.placement.device);
        for (k, v) in cache.layers.iter_mut() {
            let nk = Tensor::f_zeros(shape, opts)?;
            let nv = Tensor::f_zeros(shape, opts)?;
            nk.f_narrow(1, 0, cache.len)?
                .f_copy_(&k.f_narrow(1, 0, cache.len)?)?;
            nv.f_narrow(1, 0, cache.len)?
                .f_copy_(&v.f_narrow(1, 0, cache.len)?)?;
            *k = nk;
            *v = nv;
        }
        cache.capacity = capacity;
        Ok(())
    }
}

/// `x · Wᵀ (+ b)` for `x` `[rows, in]` and `w` `[out, in]`. For a few rows (a batch of decode
/// steps) MKL is faster computing `(W · xᵀ)ᵀ` than `x · Wᵀ`: on this project's 2-core machine
/// 8 rows through a 5632x2048 matrix took 2.9 ms instead of 3.1 ms, and through the 32000-row
/// output head 25 ms instead of 35 ms; one row and long prompts are faster the usual way.
fn project(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor, tch::TchError> {
    let rows = x.size()[0];
    if !(2..=64).contains(&rows) {
        return x.f_linear(w, b);
    }
    let y = w
        .f_matmul(&x.f_transpose(0, 1)?)?
        .f_transpose(0, 1)?
        .f_contiguous()?;
    match b {
        Some(b) => y.f_add(b),
        None => Ok(y),
    }
}

/// Scaled dot-product attention of `n` new queries at positions `start..start+n` over the
/// cache's `start + n` keys, causal, with grouped-query heads shared by libtorch.
fn attend(q: &Tensor, k: &Tensor, v: &Tensor, start: i64, n: i64) -> Result<Tensor, tch::TchError> {
    if n == 1 {
        // One query sees every key: no mask.
        return Tensor::f_scaled_dot_product_attention(
            q,
            k,
            v,
            None::<&Tensor>,
            0.0,
            false,
            None,
            true,
        );
    }
    if start == 0 {
        return Tensor::f_scaled_dot_product_attention(
            q,
            k,
            v,
            None::<&Tensor>,
            0.0,
            true,
            None,
            true,
        );
    }
    // New tokens after cached ones: query r sees keys 0..=start+r.
    let rows =
        Tensor::f_arange_start(start, start + n, (Kind::Int64, q.device()))?.f_unsqueeze(1)?;
    let cols = Tensor::f_arange(start + n, (Kind::Int64, q.device()))?.f_unsqueeze(0)?;
    let mask = cols.f_le_tensor(&rows)?;
    Tensor::f_scaled_dot_product_attention(q, k, v, Some(&mask), 0.0, false, None, true)
}

/// Rotates query or key heads `[tokens, heads, head_dim]` by their positions' angles, in the
/// half-split layout Hugging Face's Llama uses.
fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor, tch::TchError> {
    let half = x.size()[2] / 2;
    let x1 = x.f_narrow(2, 0, half)?;
    let x2 = x.f_narrow(2, half, half)?;
    let rotated = Tensor::f_cat(&[x2.f_neg()?, x1], 2)?;
    x.f_mul(cos)?.f_add(&rotated.f_mul(sin)?)
}

/// The RoPE cos and sin tables for positions `0..context`, computed in f32 as transformers
/// does, with linear or llama3 frequency scaling.
fn rope_tables(
    cfg: &DecoderConfig,
    context: i64,
    placement: Placement,
) -> Result<(Tensor, Tensor), ModelError> {
    let dim = cfg.head_dim();
    let exponents = Tensor::f_arange_start_step(0, dim, 2, (Kind::Int64, tch::Device::Cpu))?
        .f_to_kind(Kind::Float)?
        .f_div_scalar(dim as f64)?;
    let mut inv_freq = Tensor::f_pow_scalar(cfg.rope_theta(), &exponents)?.f_reciprocal()?;
    let mut positions =
        Tensor::f_arange(context, (Kind::Int64, tch::Device::Cpu))?.f_to_kind(Kind::Float)?;
    if let Some(s) = cfg.rope_scaling() {
        let factor = s.factor.unwrap_or(1.0);
        match s.rope_type.as_str() {
            "linear" => positions = positions.f_div_scalar(factor)?,
            "llama3" => inv_freq = llama3_inv_freq(&inv_freq, s, factor)?,
            _ => {}
        }
    }
    let freqs = positions
        .f_unsqueeze(1)?
        .f_matmul(&inv_freq.f_unsqueeze(0)?)?;
    let emb = Tensor::f_cat(&[&freqs, &freqs], 1)?;
    let to = |t: Tensor| t.f_to_device(placement.device)?.f_to_kind(placement.kind);
    Ok((to(emb.f_cos()?)?, to(emb.f_sin()?)?))
}

fn llama3_inv_freq(
    inv_freq: &Tensor,
    s: &RopeScaling,
    factor: f64,
) -> Result<Tensor, tch::TchError> {
    let low = s.low_freq_factor.unwrap_or(1.0);
    let high = s.high_freq_factor.unwrap_or(4.0);
    let old = s.original_max_position_embeddings.unwrap_or(8192.0);
    let low_wavelen = old / low;
    let high_wavelen = old / high;
    let wavelen = inv_freq
        .f_reciprocal()?
        .f_mul_scalar(2.0 * std::f64::consts::PI)?;
    let scaled = inv_freq.f_div_scalar(factor)?;
    let long = wavelen.f_gt(low_wavelen)?;
    let base = scaled.f_where_self(&long, inv_freq)?;
    let smooth = wavelen
        .f_reciprocal()?
        .f_mul_scalar(old)?
        .f_sub_scalar(low)?
        .f_div_scalar(high - low)?;
    let smoothed = smooth
        .f_neg()?
        .f_add_scalar(1.0)?
        .f_mul(&base.f_div_scalar(factor)?)?
        .f_add(&smooth.f_mul(&base)?)?;
    let medium = wavelen
        .f_ge(high_wavelen)?
        .f_logical_and(&wavelen.f_le(low_wavelen)?)?;
    smoothed.f_where_self(&medium, &base)
}
