//! `cargo xtask dist`: what a package of lade ships besides the binary, generated from the
//! binary's own clap definitions (`lade generate`, hidden): the man pages `man/man1/lade.1`,
//! `lade-build.1`, … and shell completions under `completions/` (bash, zsh, fish, elvish,
//! PowerShell), each checked to parse before it is kept.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// The completion scripts: `lade generate SHELL` → file name, as each shell looks them up.
const COMPLETIONS: [(&str, &str); 5] = [
    ("bash", "lade.bash"),
    ("zsh", "_lade"),
    ("fish", "lade.fish"),
    ("elvish", "lade.elv"),
    ("powershell", "_lade.ps1"),
];

pub fn run(args: &[String]) -> Result<ExitCode> {
    let mut out = crate::repo_root().join("target/dist");
    let mut lade: Option<PathBuf> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--out" => out = it.next().context("--out needs a directory")?.into(),
            "--lade" => lade = Some(it.next().context("--lade needs a path")?.into()),
            other => bail!("dist: unknown option {other:?} (known: --out DIR, --lade PATH)"),
        }
    }
    let lade = match lade {
        Some(l) => l,
        None => {
            crate::proc::run_ok(crate::cargo().current_dir(crate::repo_root()).args([
                "build",
                "--release",
                "--bin",
                "lade",
            ]))?;
            crate::repo_root().join("target/release/lade")
        }
    };
    let files = write(&lade, &out)?;
    for f in &files {
        println!("{}", f.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes the binary, man pages and completions of `lade` under `out` (replacing what an
/// earlier run wrote there) and checks each; returns the files written.
pub fn write(lade: &Path, out: &Path) -> Result<Vec<PathBuf>> {
    let man = out.join("man/man1");
    let completions = out.join("completions");
    for d in [&man, &completions] {
        if d.exists() {
            std::fs::remove_dir_all(d).with_context(|| format!("removing {}", d.display()))?;
        }
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let mut files = Vec::new();
    let bin = out.join("lade");
    std::fs::copy(lade, &bin).with_context(|| format!("copying {}", lade.display()))?;
    files.push(bin.clone());
    crate::proc::run_ok(Command::new(&bin).args(["generate", "man"]).arg(&man))?;
    let mut pages: Vec<PathBuf> = std::fs::read_dir(&man)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    pages.sort();
    if !pages.iter().any(|p| p.ends_with("lade-build.1")) {
        bail!(
            "lade generate man wrote no lade-build.1 in {}",
            man.display()
        );
    }
    for page in &pages {
        check_man_page(page)?;
    }
    files.extend(pages);
    for (shell, name) in COMPLETIONS {
        let script = crate::proc::run_ok(Command::new(&bin).args(["generate", shell]))?.stdout;
        if !String::from_utf8_lossy(&script).contains("build-context") {
            bail!("the {shell} completion does not know `lade build --build-context`");
        }
        let path = completions.join(name);
        std::fs::write(&path, &script).with_context(|| format!("writing {}", path.display()))?;
        if shell == "bash" {
            crate::proc::run_ok(Command::new("bash").arg("-n").arg(&path))
                .context("the bash completion does not parse")?;
        }
        files.push(path);
    }
    Ok(files)
}

/// groff renders the page without a warning (`-ww -z`: all warnings, no output).
fn check_man_page(page: &Path) -> Result<()> {
    let out = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z"])
        .arg(page)
        .output()
        .context("running groff (package groff-base)")?;
    if !out.status.success() || !out.stderr.is_empty() {
        bail!(
            "{} does not render cleanly: {}",
            page.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// The dist of the lade binary `cargo test --workspace` built (target/debug/lade).
    #[test]
    fn dist_writes_man_pages_and_completions_that_parse() {
        let lade = crate::repo_root().join("target/debug/lade");
        assert!(
            lade.exists(),
            "{} is missing: run through `cargo test --workspace` (or `cargo build` first)",
            lade.display()
        );
        let tmp = std::env::temp_dir().join(format!("lade-xtask-dist-{}", std::process::id()));
        let files = super::write(&lade, &tmp).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|f| f.strip_prefix(&tmp).unwrap().display().to_string())
            .collect();
        for expected in [
            "lade",
            "man/man1/lade.1",
            "man/man1/lade-build.1",
            "completions/lade.bash",
            "completions/_lade",
            "completions/lade.fish",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} in {names:?}"
            );
        }
        // man renders the build page with the flags of this branch.
        let shown = std::process::Command::new("man")
            .env("MANWIDTH", "200")
            .arg("-l")
            .arg(tmp.join("man/man1/lade-build.1"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&shown.stdout);
        assert!(text.contains("--annotation"), "{text}");
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
