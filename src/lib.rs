//! lade: a daemonless, reproducible OCI image builder.
//!
//! Data flows one way: `frontend` (Dockerfile, lade.toml) → `plan` → `exec` (with `context`,
//! `layer`, `store`) → `image` → `output` / `registry`. `digest` and `path` are the shared
//! vocabulary every stage speaks.

pub mod attest;
pub mod build;
pub mod cache;
pub mod cli;
pub mod context;
pub mod diff;
pub mod digest;
pub mod exec;
pub mod frontend;
pub mod fuzz;
pub mod hooks;
pub mod image;
pub mod layer;
pub mod lock;
pub mod output;
pub mod path;
pub mod plan;
pub mod registry;
pub mod store;
pub mod verify;
