//! What the user typed, as clap parses it. Nothing outside `cli` reads these types.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "lade",
    version,
    about = "Daemonless, reproducible OCI image builder"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the syntax tree of a Dockerfile.
    Parse(ParseArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ParseFormat {
    /// One JSON object per instruction.
    Json,
    /// BuildKit's parser test dump format.
    Dump,
}

#[derive(Debug, Args)]
pub struct ParseArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "json")]
    pub format: ParseFormat,
    /// The Dockerfile (`-` for standard input).
    pub file: PathBuf,
}
