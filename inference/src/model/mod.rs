//! Model directories in Hugging Face format: `config.json`, safetensors weights, the tokenizer.
//! `config.json`'s `architectures` picks the network: a Llama-style decoder (Llama 2 and 3,
//! TinyLlama, Mistral-style checkpoints, Qwen2) or a BERT sentence encoder.

pub mod bert;
pub mod llama;
pub mod weights;

use std::path::Path;

use serde::de::DeserializeOwned;
use tch::{Device, Kind};

use crate::error::ModelError;

/// Which network a directory holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    Llama,
    Qwen2,
    Bert,
}

impl Architecture {
    /// Reads `architectures` (or, for BERT checkpoints without it, `model_type`).
    pub fn detect(dir: &Path) -> Result<Self, ModelError> {
        #[derive(serde::Deserialize)]
        struct Head {
            #[serde(default)]
            architectures: Vec<String>,
            #[serde(default)]
            model_type: Option<String>,
        }
        let path = dir.join("config.json");
        let head: Head = read_json(&path)?;
        for a in &head.architectures {
            match a.as_str() {
                "LlamaForCausalLM" | "MistralForCausalLM" => return Ok(Self::Llama),
                "Qwen2ForCausalLM" => return Ok(Self::Qwen2),
                "BertModel" | "BertForMaskedLM" | "BertForPreTraining" => return Ok(Self::Bert),
                _ => {}
            }
        }
        if head.architectures.is_empty() && head.model_type.as_deref() == Some("bert") {
            return Ok(Self::Bert);
        }
        Err(ModelError::Architecture {
            path: dir.to_path_buf(),
            found: head.architectures,
        })
    }

    pub fn is_generative(self) -> bool {
        !matches!(self, Self::Bert)
    }
}

/// Where and in which precision a model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub device: Device,
    pub kind: Kind,
}

impl Placement {
    /// CUDA (bf16 where the GPU supports it, else f16) when a GPU is present, CPU (f32)
    /// otherwise.
    pub fn auto() -> Self {
        if tch::Cuda::is_available() {
            Self {
                device: Device::Cuda(0),
                kind: Kind::BFloat16,
            }
        } else {
            Self::cpu()
        }
    }

    pub fn cpu() -> Self {
        Self {
            device: Device::Cpu,
            kind: Kind::Float,
        }
    }
}

pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, ModelError> {
    let text = std::fs::read(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&text).map_err(|source| ModelError::Json {
        path: path.to_path_buf(),
        source,
    })
}
