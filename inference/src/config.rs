//! The server's TOML config, read in two stages: raw tables that reject unknown fields, then a
//! validated [`Config`] whose errors name the field to fix.
//!
//! ```toml
//! [server]
//! listen = "127.0.0.1:9000"
//! [device]
//! kind = "auto"        # auto | cpu | cuda | cuda:N
//! dtype = "auto"       # auto (bf16 on CUDA, f32 on CPU) | f32 | f16 | bf16
//! threads = 0          # CPU threads for libtorch; 0 keeps libtorch's default
//! [[models]]
//! name = "private-chat"
//! path = "/srv/models/qwen2-7b-instruct"
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use tch::{Device, Kind};

use crate::engine::Limits;
use crate::model::Placement;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: `{field}`: {message}")]
    Field {
        path: PathBuf,
        field: String,
        message: String,
    },
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    pub placement: Placement,
    /// libtorch's intra-op threads on the CPU; `None` keeps its default (one per core).
    pub threads: Option<i32>,
    pub models: Vec<ModelConfig>,
}

#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub name: String,
    pub path: PathBuf,
    /// Positions a sequence may hold; at most the checkpoint's `max_position_embeddings`.
    pub context: Option<i64>,
    pub limits: Limits,
    /// `max_tokens` for requests that give none; else the rest of the context.
    pub default_max_tokens: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    device: RawDevice,
    #[serde(default)]
    models: Vec<RawModel>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
    max_body_bytes: Option<usize>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDevice {
    kind: Option<String>,
    dtype: Option<String>,
    threads: Option<i32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    name: String,
    path: PathBuf,
    context: Option<i64>,
    max_batch: Option<usize>,
    max_queue: Option<usize>,
    default_max_tokens: Option<usize>,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:9000";

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_toml(&text, path, base)
    }

    /// Parses and validates `text`; relative model paths are taken from `base`.
    pub fn from_toml(text: &str, path: &Path, base: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let field = |field: &str, message: String| ConfigError::Field {
            path: path.to_path_buf(),
            field: field.to_owned(),
            message,
        };
        let listen_text = raw.server.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
        let listen = listen_text.parse().map_err(|_| {
            field(
                "server.listen",
                format!("`{listen_text}` is not an address such as 127.0.0.1:9000"),
            )
        })?;
        let device = match raw.device.kind.as_deref().unwrap_or("auto") {
            "auto" => None,
            "cpu" => Some(Device::Cpu),
            "cuda" => Some(Device::Cuda(0)),
            other => match other.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
                Some(n) => Some(Device::Cuda(n)),
                None => {
                    return Err(field(
                        "device.kind",
                        format!("`{other}` is not one of auto, cpu, cuda, cuda:N"),
                    ));
                }
            },
        };
        if let Some(Device::Cuda(n)) = device
            && !tch::Cuda::is_available()
        {
            return Err(field(
                "device.kind",
                format!(
                    "CUDA device {n} was asked for, but libtorch sees no CUDA device; use auto or cpu"
                ),
            ));
        }
        let mut placement = match device {
            None => Placement::auto(),
            Some(Device::Cpu) => Placement::cpu(),
            Some(d) => Placement {
                device: d,
                kind: Kind::BFloat16,
            },
        };
        match raw.device.dtype.as_deref().unwrap_or("auto") {
            "auto" => {}
            "f32" => placement.kind = Kind::Float,
            "f16" => placement.kind = Kind::Half,
            "bf16" => placement.kind = Kind::BFloat16,
            other => {
                return Err(field(
                    "device.dtype",
                    format!("`{other}` is not one of auto, f32, f16, bf16"),
                ));
            }
        }
        let threads = match raw.device.threads {
            None | Some(0) => None,
            Some(n) if n > 0 => Some(n),
            Some(n) => return Err(field("device.threads", format!("{n} is negative"))),
        };
        if raw.models.is_empty() {
            return Err(field(
                "models",
                "no model is configured; add a [[models]] table with name and path".into(),
            ));
        }
        let mut models = Vec::new();
        for (i, m) in raw.models.into_iter().enumerate() {
            let at = |f: &str| format!("models[{i}].{f}");
            if m.name.trim().is_empty() {
                return Err(field(&at("name"), "is empty".into()));
            }
            if models.iter().any(|o: &ModelConfig| o.name == m.name) {
                return Err(field(
                    &at("name"),
                    format!("`{}` is configured twice", m.name),
                ));
            }
            let path = if m.path.is_absolute() {
                m.path
            } else {
                base.join(m.path)
            };
            if !path.join("config.json").is_file() {
                return Err(field(
                    &at("path"),
                    format!(
                        "{} holds no config.json; point it at a Hugging Face model directory",
                        path.display()
                    ),
                ));
            }
            if let Some(c) = m.context
                && c < 2
            {
                return Err(field(&at("context"), format!("{c} is too small")));
            }
            let limits = Limits {
                max_batch: m.max_batch.unwrap_or(16),
                max_queue: m.max_queue.unwrap_or(256),
            };
            if limits.max_batch == 0 {
                return Err(field(&at("max_batch"), "must be at least 1".into()));
            }
            if limits.max_queue == 0 {
                return Err(field(&at("max_queue"), "must be at least 1".into()));
            }
            models.push(ModelConfig {
                name: m.name,
                path,
                context: m.context,
                limits,
                default_max_tokens: m.default_max_tokens,
            });
        }
        Ok(Self {
            listen,
            max_body_bytes: raw.server.max_body_bytes.unwrap_or(4 << 20),
            placement,
            threads,
            models,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("inference.toml"), Path::new("/nonexistent"))
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse("[server]\nlisten = \"nowhere\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("server.listen"), "{e}");
        let e = parse("[device]\nkind = \"tpu\"\n[[models]]\nname = \"m\"\npath = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("device.kind"), "{e}");
        let e = parse("[[models]]\nname = \"m\"\npath = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("models[0].path") && e.contains("config.json"),
            "{e}"
        );
        let e = parse("[server]\nlisten_on = \"1\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("listen_on"), "{e}");
        let e = parse("").unwrap_err().to_string();
        assert!(e.contains("`models`"), "{e}");
    }
}
