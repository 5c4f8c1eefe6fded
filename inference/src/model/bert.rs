//! BERT sentence encoders (all-MiniLM-L6-v2 and its kind): the encoder, then the pooling and
//! normalisation that the model's sentence-transformers files (`modules.json`,
//! `1_Pooling/config.json`, `sentence_bert_config.json`) configure.

use std::path::Path;

use serde::Deserialize;
use tch::{Kind, Tensor};

use super::Placement;
use super::weights::Weights;
use crate::error::ModelError;

#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    pub intermediate_size: i64,
    pub max_position_embeddings: i64,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: i64,
    #[serde(default = "default_ln_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_act")]
    pub hidden_act: String,
}

fn default_type_vocab() -> i64 {
    2
}
fn default_ln_eps() -> f64 {
    1e-12
}
fn default_act() -> String {
    "gelu".into()
}

/// How token vectors become one sentence vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    Mean,
    Cls,
    Max,
}

struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
}

struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    fn take(w: &mut Weights, name: &str, out: i64, inp: i64) -> Result<Self, ModelError> {
        Ok(Self {
            weight: w.take(&format!("{name}.weight"), &[out, inp])?,
            bias: w.take(&format!("{name}.bias"), &[out])?,
        })
    }

    fn apply(&self, x: &Tensor) -> Result<Tensor, tch::TchError> {
        x.f_linear(&self.weight, Some(&self.bias))
    }
}

impl LayerNorm {
    fn take(w: &mut Weights, name: &str, dim: i64) -> Result<Self, ModelError> {
        Ok(Self {
            weight: w.take(&format!("{name}.weight"), &[dim])?,
            bias: w.take(&format!("{name}.bias"), &[dim])?,
        })
    }
}

struct EncoderLayer {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    out_norm: LayerNorm,
}

/// A loaded sentence encoder.
pub struct Encoder {
    pub config: BertConfig,
    placement: Placement,
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    emb_norm: LayerNorm,
    layers: Vec<EncoderLayer>,
    pub pooling: Pooling,
    pub normalize: bool,
    /// The longest input, in tokens, special tokens included.
    pub max_seq_length: i64,
}

impl Encoder {
    pub fn load(dir: &Path, placement: Placement) -> Result<Self, ModelError> {
        let config: BertConfig = super::read_json(&dir.join("config.json"))?;
        if config.hidden_act != "gelu" {
            return Err(ModelError::Invalid {
                path: dir.join("config.json"),
                message: format!("hidden_act `{}` is not supported (gelu)", config.hidden_act),
            });
        }
        let mut w = Weights::load(dir, placement.device, placement.kind)?;
        w.strip_prefix("bert.");
        let h = config.hidden_size;
        let word = w.take("embeddings.word_embeddings.weight", &[config.vocab_size, h])?;
        let position = w.take(
            "embeddings.position_embeddings.weight",
            &[config.max_position_embeddings, h],
        )?;
        let token_type = w.take(
            "embeddings.token_type_embeddings.weight",
            &[config.type_vocab_size, h],
        )?;
        let emb_norm = LayerNorm::take(&mut w, "embeddings.LayerNorm", h)?;
        let mut layers = Vec::new();
        for i in 0..config.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            layers.push(EncoderLayer {
                query: Linear::take(&mut w, &format!("{p}.attention.self.query"), h, h)?,
                key: Linear::take(&mut w, &format!("{p}.attention.self.key"), h, h)?,
                value: Linear::take(&mut w, &format!("{p}.attention.self.value"), h, h)?,
                attn_out: Linear::take(&mut w, &format!("{p}.attention.output.dense"), h, h)?,
                attn_norm: LayerNorm::take(&mut w, &format!("{p}.attention.output.LayerNorm"), h)?,
                intermediate: Linear::take(
                    &mut w,
                    &format!("{p}.intermediate.dense"),
                    config.intermediate_size,
                    h,
                )?,
                output: Linear::take(
                    &mut w,
                    &format!("{p}.output.dense"),
                    h,
                    config.intermediate_size,
                )?,
                out_norm: LayerNorm::take(&mut w, &format!("{p}.output.LayerNorm"), h)?,
            });
        }
        let st = SentenceTransformerFiles::read(dir)?;
        Ok(Self {
            max_seq_length: st
                .max_seq_length
                .unwrap_or(config.max_position_embeddings)
                .min(config.max_position_embeddings),
            config,
            placement,
            word,
            position,
            token_type,
            emb_norm,
            layers,
            pooling: st.pooling,
            normalize: st.normalize,
        })
    }

    /// Sentence vectors (f32, on the CPU) for a batch of token id sequences, `[batch, hidden]`.
    pub fn embed(&self, inputs: &[Vec<i64>]) -> Result<Tensor, ModelError> {
        let dev = self.placement.device;
        let batch = inputs.len() as i64;
        let longest = inputs.iter().map(Vec::len).max().unwrap_or(0) as i64;
        let mut ids = vec![0i64; (batch * longest) as usize];
        let mut mask = vec![0i64; (batch * longest) as usize];
        for (b, seq) in inputs.iter().enumerate() {
            for (i, &t) in seq.iter().enumerate() {
                ids[b * longest as usize + i] = t;
                mask[b * longest as usize + i] = 1;
            }
        }
        let ids = Tensor::from_slice(&ids)
            .f_view([batch, longest])?
            .f_to_device(dev)?;
        let mask = Tensor::from_slice(&mask)
            .f_view([batch, longest])?
            .f_to_device(dev)?;
        let cfg = &self.config;
        let (h, heads) = (cfg.hidden_size, cfg.num_attention_heads);
        let hd = h / heads;
        let positions = Tensor::f_arange(longest, (Kind::Int64, dev))?;
        let x = Tensor::f_embedding(&self.word, &ids, -1, false, false)?
            .f_add(&Tensor::f_embedding(
                &self.position,
                &positions,
                -1,
                false,
                false,
            )?)?
            .f_add(&self.token_type.get(0))?;
        let mut x = layer_norm(&x, &self.emb_norm, cfg)?;
        // [batch, 1, 1, keys]: padding keys are never attended to.
        let attn_mask = mask.f_to_kind(Kind::Bool)?.f_view([batch, 1, 1, longest])?;
        for layer in &self.layers {
            let split = |t: Tensor| t.f_view([batch, longest, heads, hd])?.f_transpose(1, 2);
            let q = split(layer.query.apply(&x)?)?;
            let k = split(layer.key.apply(&x)?)?;
            let v = split(layer.value.apply(&x)?)?;
            let a = Tensor::f_scaled_dot_product_attention(
                &q,
                &k,
                &v,
                Some(&attn_mask),
                0.0,
                false,
                None,
                false,
            )?
            .f_transpose(1, 2)?
            .f_reshape([batch, longest, h])?;
            x = layer_norm(&layer.attn_out.apply(&a)?.f_add(&x)?, &layer.attn_norm, cfg)?;
            let inter = layer.intermediate.apply(&x)?.f_gelu("none")?;
            x = layer_norm(
                &layer.output.apply(&inter)?.f_add(&x)?,
                &layer.out_norm,
                cfg,
            )?;
        }
        let x = x.f_to_kind(Kind::Float)?;
        let m = mask.f_to_kind(Kind::Float)?.f_unsqueeze(-1)?;
        let pooled = match self.pooling {
            Pooling::Mean => x
                .f_mul(&m)?
                .f_sum_dim_intlist([1i64].as_slice(), false, Kind::Float)?
                .f_div(
                    &m.f_sum_dim_intlist([1i64].as_slice(), false, Kind::Float)?
                        .f_clamp_min(1e-9)?,
                )?,
            Pooling::Cls => x.f_select(1, 0)?,
            Pooling::Max => x
                .f_masked_fill(&m.f_eq(0.0)?, -1e9)?
                .f_amax([1i64].as_slice(), false)?,
        };
        let pooled = if self.normalize {
            let norm = pooled
                .f_norm_scalaropt_dim(2.0, [1i64].as_slice(), true)?
                .f_clamp_min(1e-12)?;
            pooled.f_div(&norm)?
        } else {
            pooled
        };
        Ok(pooled.f_to_device(tch::Device::Cpu)?)
    }
}

fn layer_norm(x: &Tensor, n: &LayerNorm, cfg: &BertConfig) -> Result<Tensor, tch::TchError> {
    x.f_layer_norm(
        [cfg.hidden_size],
        Some(&n.weight),
        Some(&n.bias),
        cfg.layer_norm_eps,
        false,
    )
}

/// What sentence-transformers' files say about pooling, normalisation and input length. A
/// directory without them gets mean pooling without normalisation, as sentence-transformers
/// gives a plain BERT checkpoint.
struct SentenceTransformerFiles {
    pooling: Pooling,
    normalize: bool,
    max_seq_length: Option<i64>,
}

impl SentenceTransformerFiles {
    fn read(dir: &Path) -> Result<Self, ModelError> {
        #[derive(Deserialize)]
        struct Module {
            #[serde(rename = "type")]
            kind: String,
            #[serde(default)]
            path: String,
        }
        #[derive(Deserialize)]
        struct PoolingConfig {
            #[serde(default)]
            pooling_mode_cls_token: bool,
            #[serde(default)]
            pooling_mode_mean_tokens: bool,
            #[serde(default)]
            pooling_mode_max_tokens: bool,
        }
        #[derive(Deserialize)]
        struct SbertConfig {
            max_seq_length: Option<i64>,
        }
        let mut out = Self {
            pooling: Pooling::Mean,
            normalize: false,
            max_seq_length: None,
        };
        let modules = dir.join("modules.json");
        if modules.exists() {
            let modules: Vec<Module> = super::read_json(&modules)?;
            for m in modules {
                if m.kind.ends_with(".Normalize") {
                    out.normalize = true;
                } else if m.kind.ends_with(".Pooling") {
                    let p: PoolingConfig =
                        super::read_json(&dir.join(&m.path).join("config.json"))?;
                    out.pooling = if p.pooling_mode_cls_token {
                        Pooling::Cls
                    } else if p.pooling_mode_max_tokens {
                        Pooling::Max
                    } else if p.pooling_mode_mean_tokens {
                        Pooling::Mean
                    } else {
                        return Err(ModelError::Invalid {
                            path: dir.join(&m.path).join("config.json"),
                            message: "no supported pooling mode (cls, mean or max) is on".into(),
                        });
                    };
                }
            }
        }
        let sbert = dir.join("sentence_bert_config.json");
        if sbert.exists() {
            let c: SbertConfig = super::read_json(&sbert)?;
            out.max_seq_length = c.max_seq_length;
        }
        Ok(out)
    }
}
