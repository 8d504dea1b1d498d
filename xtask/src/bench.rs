//! `cargo xtask bench` (placeholder).
use std::process::ExitCode;
pub fn run(_args: &[String]) -> anyhow::Result<ExitCode> {
    Ok(ExitCode::SUCCESS)
}
