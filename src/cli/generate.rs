//! `lade generate man DIR` and `lade generate bash|zsh|fish|elvish|powershell` (hidden): the
//! man pages and shell completions from the clap definitions, so they can never drift from
//! the flags. `cargo xtask dist` writes them next to the release binary.

use super::args::{Cli, GenerateArgs, GenerateKind};
use super::UsageError;
use clap::CommandFactory;
use clap_complete::Shell;
use std::io::Write;
use std::process::ExitCode;

pub fn run(a: &GenerateArgs) -> anyhow::Result<ExitCode> {
    let mut cmd = Cli::command();
    let shell = match a.kind {
        GenerateKind::Man => {
            let dir = a
                .dir
                .as_ref()
                .ok_or_else(|| UsageError("lade generate man needs a directory".into()))?;
            std::fs::create_dir_all(dir)?;
            // lade.1 and one page per visible subcommand (lade-build.1, …), which lade.1 names.
            clap_mangen::generate_to(cmd, dir)?;
            return Ok(ExitCode::SUCCESS);
        }
        GenerateKind::Bash => Shell::Bash,
        GenerateKind::Zsh => Shell::Zsh,
        GenerateKind::Fish => Shell::Fish,
        GenerateKind::Elvish => Shell::Elvish,
        GenerateKind::Powershell => Shell::PowerShell,
    };
    if a.dir.is_some() {
        return Err(UsageError("completions go to standard output; give no DIR".into()).into());
    }
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "lade", &mut out);
    std::io::stdout().lock().write_all(&out)?;
    Ok(ExitCode::SUCCESS)
}
