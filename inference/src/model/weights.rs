//! Reads a Hugging Face model directory's safetensors weights (one file, or shards listed in
//! `model.safetensors.index.json`) into named tensors on the chosen device and dtype.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};

use crate::error::ModelError;

/// The weights of one model, by name, already on their device.
pub struct Weights {
    dir: PathBuf,
    tensors: HashMap<String, Tensor>,
}

impl Weights {
    /// Loads every `*.safetensors` file the directory names: the shards of the index when there
    /// is one, else `model.safetensors`. Floating-point weights become `kind`.
    pub fn load(dir: &Path, device: Device, kind: Kind) -> Result<Self, ModelError> {
        let mut tensors = HashMap::new();
        for file in weight_files(dir)? {
            for (name, t) in Tensor::read_safetensors(&file)? {
                let t = if t.is_floating_point() {
                    t.f_to_device(device)?.f_to_kind(kind)?
                } else {
                    t.f_to_device(device)?
                };
                tensors.insert(name, t);
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            tensors,
        })
    }

    /// Strips `prefix` from every name that has it (checkpoints saved from a wrapping model,
    /// such as `bert.` on a BERT encoder).
    pub fn strip_prefix(&mut self, prefix: &str) {
        if self.tensors.keys().any(|k| k.starts_with(prefix)) {
            self.tensors = std::mem::take(&mut self.tensors)
                .into_iter()
                .map(|(k, v)| match k.strip_prefix(prefix) {
                    Some(s) => (s.to_owned(), v),
                    None => (k, v),
                })
                .collect();
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The weight `name`, checked against `shape`.
    pub fn take(&mut self, name: &str, shape: &[i64]) -> Result<Tensor, ModelError> {
        let t = self
            .tensors
            .remove(name)
            .ok_or_else(|| ModelError::MissingWeight {
                path: self.dir.clone(),
                name: name.to_owned(),
            })?;
        if t.size() != shape {
            return Err(ModelError::WeightShape {
                path: self.dir.clone(),
                name: name.to_owned(),
                found: t.size(),
                expected: shape.to_vec(),
            });
        }
        Ok(t)
    }

    /// The weight `name` when the checkpoint has it (biases).
    pub fn take_optional(
        &mut self,
        name: &str,
        shape: &[i64],
    ) -> Result<Option<Tensor>, ModelError> {
        if self.contains(name) {
            self.take(name, shape).map(Some)
        } else {
            Ok(None)
        }
    }
}

fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, ModelError> {
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        #[derive(serde::Deserialize)]
        struct Index {
            weight_map: HashMap<String, String>,
        }
        let parsed: Index = crate::model::read_json(&index)?;
        let files: BTreeSet<String> = parsed.weight_map.into_values().collect();
        return Ok(files.into_iter().map(|f| dir.join(f)).collect());
    }
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    Err(ModelError::Invalid {
        path: dir.to_path_buf(),
        message: "no model.safetensors or model.safetensors.index.json; save the model with safetensors (save_pretrained does by default)".into(),
    })
}
