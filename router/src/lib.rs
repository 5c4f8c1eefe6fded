//! Cordon: an on-prem AI gateway. One request flows through the phases in [`proxy`]; the
//! libraries beside it (`api`, `auth`, `catalogue`, `providers`, `relay`, ...) know nothing of
//! Pingora and are tested alone.

#![forbid(unsafe_code)]

pub mod api;
pub mod audit;
pub mod auth;
pub mod catalogue;
pub mod config;
pub mod db;
pub mod dlp;
pub mod error;
pub mod health;
pub mod keys;
pub mod logwriter;
pub mod metrics;
pub mod policy;
pub mod providers;
pub mod proxy;
pub mod relay;
pub mod reload;
pub mod sse;
