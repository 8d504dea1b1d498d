//! The Dockerfile frontend, split like BuildKit's: `parser` (syntax only), `shell` (word
//! expansion), and later `instructions` (typed commands) and `lower` (to the plan).

pub mod instructions;
pub mod lower;
pub mod parser;
pub mod run_mount;
pub mod shell;
