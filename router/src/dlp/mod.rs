//! Data loss prevention: rule packs compiled into one scanner ([`engine::Scanner`]), findings
//! with original byte offsets, and the actions applied to them (redact, mask, hash,
//! pseudonymise, block). No Pingora here: the gateway calls in from its phases.

pub mod actions;
#[doc(hidden)]
pub mod corpus;
pub mod engine;
pub mod examples;
pub mod json;
pub mod live;
pub mod normalize;
pub mod pack;
pub mod redact;
pub mod restore;
mod starts;
pub mod trigger;
pub mod unmask;
pub mod validators;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use actions::{Action, ActionTable, Pseudonyms};
pub use engine::Scanner;
pub use pack::{Pack, Severity};

/// One piece of sensitive data. Never carries the value: callers slice the input.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub entity: Arc<str>,
    /// UTF-8 byte offsets into the scanned text.
    pub start: usize,
    pub end: usize,
    pub confidence: f32,
    /// `pack/rule`.
    pub rule: Arc<str>,
    pub severity: Severity,
}

#[derive(Debug, thiserror::Error)]
pub enum DlpError {
    #[error("rule pack {path}: {message}")]
    Pack { path: PathBuf, message: String },
    #[error("cannot compile rules: {0}")]
    Compile(String),
    #[error("rule packs in {dir}: {failed} rule example(s) fail, first: {first}")]
    Examples {
        dir: PathBuf,
        failed: usize,
        first: String,
    },
    #[error("request body cannot be scanned: {0}")]
    Body(String),
}

impl DlpError {
    pub fn pack(path: &Path, message: impl Into<String>) -> Self {
        Self::Pack {
            path: path.to_owned(),
            message: message.into(),
        }
    }
}

/// Whether an entity type matches a table key: the type itself, or `PREFIX_*`.
pub fn entity_matches(pattern: &str, entity: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => entity.starts_with(prefix),
        None => pattern == entity,
    }
}

/// Loads packs from `dir`, keeping only `names` when given.
pub fn load_packs(dir: &Path, names: Option<&[String]>) -> Result<Vec<Pack>, DlpError> {
    let packs = Pack::load_dir(dir)?;
    match names {
        None => Ok(packs),
        Some(names) => {
            for n in names {
                if !packs.iter().any(|p| &p.name == n) {
                    return Err(DlpError::pack(dir, format!("no pack named `{n}`")));
                }
            }
            Ok(packs
                .into_iter()
                .filter(|p| names.contains(&p.name))
                .collect())
        }
    }
}

#[cfg(test)]
mod tests;
