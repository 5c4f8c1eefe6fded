//! End-to-end tests across processes: the `cordon` binary against real upstreams on loopback.
//! Built as the `e2e` test of the router crate so that Cargo builds the binary first.

mod harness;

mod audit;
mod dlp;
mod gateway_core;
mod policy;
mod private;
mod sdk;
