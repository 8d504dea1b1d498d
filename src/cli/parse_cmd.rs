//! `lade parse`: print a Dockerfile's syntax tree.

use super::args::ParseArgs;
use std::process::ExitCode;

pub fn run(_args: &ParseArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("lade parse is not implemented yet")
}
