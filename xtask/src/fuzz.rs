//! `cargo xtask fuzz [--seconds N] [TARGET...]`: runs the cargo-fuzz targets of `fuzz/`, each
//! for a bounded time, one after the other, and reports the crashes libFuzzer saved.
//!
//! cargo-fuzz builds with `-Z` flags (sanitizers, coverage instrumentation), which only a
//! nightly compiler accepts. This machine has the stable toolchain only, so the build runs with
//! `RUSTC_BOOTSTRAP=1`, which lets a stable rustc accept them; it applies to this child build
//! only, never to lade's own builds. cargo-fuzz is installed with `cargo install` when missing.
//! Fuzzing is not part of `cargo xtask test`: the targets' bodies live in `lade::fuzz`, whose
//! unit tests run them on the seed corpus and on every regression input.

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::ExitCode;

/// Every target, in the order they run.
const TARGETS: [&str; 4] = ["dockerfile", "extract", "oci_json", "dockerignore"];

pub fn run(args: &[String]) -> Result<ExitCode> {
    let mut seconds: u64 = 300;
    let mut targets = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => {
                seconds = it
                    .next()
                    .context("--seconds needs a value")?
                    .parse()
                    .context("--seconds: not a number")?
            }
            t if TARGETS.contains(&t) => targets.push(t.to_string()),
            other => bail!(
                "unknown fuzz argument {other:?} (targets: {})",
                TARGETS.join(", ")
            ),
        }
    }
    if targets.is_empty() {
        targets = TARGETS.iter().map(|t| t.to_string()).collect();
    }
    ensure_cargo_fuzz()?;
    let fuzz_dir = crate::repo_root().join("fuzz");
    let mut failed = Vec::new();
    for t in &targets {
        let before = artifacts(&fuzz_dir, t);
        let corpus = fuzz_dir.join("corpus").join(t);
        std::fs::create_dir_all(&corpus)?;
        eprintln!("xtask: fuzzing {t} for {seconds} s");
        let status = crate::cargo()
            .current_dir(&fuzz_dir)
            .env("RUSTC_BOOTSTRAP", "1")
            // The extractor target makes a temp dir per input: keep them off the host's /tmp
            // root, so an escape could only touch fuzzing's own directory.
            .env("TMPDIR", scratch(&fuzz_dir)?)
            .args(["fuzz", "run", t])
            .arg(&corpus)
            .arg(fuzz_dir.join("seeds").join(t))
            .args([
                "--",
                &format!("-max_total_time={seconds}"),
                "-timeout=20",
                "-rss_limit_mb=2048",
                "-max_len=65536",
                "-print_final_stats=1",
            ])
            .status()
            .context("running cargo fuzz")?;
        let found: Vec<String> = artifacts(&fuzz_dir, t)
            .into_iter()
            .filter(|a| !before.contains(a))
            .collect();
        if !status.success() || !found.is_empty() {
            eprintln!("xtask: {t}: libFuzzer failed ({status}); new artifacts: {found:?}");
            failed.push(t.clone());
        }
    }
    if failed.is_empty() {
        eprintln!("xtask: no crash in {}", targets.join(", "));
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "xtask: crashes in {} (inputs under fuzz/artifacts/; add each to fuzz/regressions/TARGET/ once fixed)",
            failed.join(", ")
        );
        Ok(ExitCode::FAILURE)
    }
}

fn ensure_cargo_fuzz() -> Result<()> {
    let present = crate::cargo()
        .args(["fuzz", "--version"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if present {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-fuzz");
    let status = crate::cargo()
        .args(["install", "cargo-fuzz", "--locked"])
        .status()
        .context("cargo install cargo-fuzz")?;
    if !status.success() {
        bail!("cargo install cargo-fuzz failed ({status})");
    }
    Ok(())
}

/// The crash, leak and timeout inputs libFuzzer saved for `target`.
fn artifacts(fuzz_dir: &Path, target: &str) -> Vec<String> {
    std::fs::read_dir(fuzz_dir.join("artifacts").join(target))
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// `fuzz/target/tmp`, created empty.
fn scratch(fuzz_dir: &Path) -> Result<std::path::PathBuf> {
    let dir = fuzz_dir.join("target").join("tmp");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
