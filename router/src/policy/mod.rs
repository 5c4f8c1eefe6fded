//! Policy: the security team's Rego, evaluated in-process for every request. A library module
//! with no Pingora in it: the gateway builds a [`PolicyInput`] from the request context, asks
//! the [`PolicySet`] for a [`Decision`] and acts on it.
//!
//! - [`bundle`]: a bundle directory on disk and its version (SHA-256 over its files);
//! - [`engine`]: the bundle compiled to one shared RVM program, a VM per worker thread;
//! - [`input`] and [`decision`]: the documented contract (`policies/README.md`);
//! - [`testing`]: `cordon policy test`, on the interpreter, with coverage;
//! - [`check`]: references to input fields the schema does not define;
//! - [`set`]: the active and shadow bundles, hot reload (file watch and SIGHUP), tests before
//!   every swap.

pub mod bundle;
pub mod cache;
pub mod check;
pub mod decision;
pub mod engine;
pub mod input;
pub mod set;
pub mod testing;

use std::path::PathBuf;

pub use bundle::Bundle;
pub use decision::{Decision, LogLevel, Obligations, Reason, Route, RouteTarget};
pub use engine::{CacheUse, CompiledBundle};
pub use input::{Mode, PolicyInput};
pub use set::{Evaluated, PolicySet, PolicySettings, ShadowOutcome};

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("policy bundle {dir}: {message}")]
    Bundle { dir: PathBuf, message: String },
    #[error("policy bundle {dir} does not compile: {message}")]
    Compile { dir: PathBuf, message: String },
    #[error("policy evaluation failed: {0}")]
    Eval(String),
    #[error("policy bundle {dir}: {failed} of {total} tests failed: {names}")]
    Tests {
        dir: PathBuf,
        failed: usize,
        total: usize,
        names: String,
    },
}
