//! Project tasks: `cargo xtask test` (lint, start the services the integration tests use, run the
//! whole test suite, stop the services) and `cargo xtask bench` (time lade against the physical
//! floor and the reference tools on the standard workloads), `cargo xtask fuzz` (the cargo-fuzz
//! targets of `fuzz/`, each for a bounded time).
mod bench;
mod debian;
mod deps;
mod docker;
mod foreign;
mod fuzz;
mod proc;
mod registry;
mod rootless;
mod signal;
mod test;

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <task> [options]

tasks:
  test [--no-services] [--no-lint] [-- CARGO-TEST-ARGS...]
      cargo fmt --check and cargo clippy (unless --no-lint), then start dockerd and two
      registries (plain, and TLS + basic auth) on 127.0.0.1, run `cargo test --workspace`
      with LADE_TEST_* set, stop everything and exit with cargo's exit code.
      --no-services runs only cargo test (tests that need the services then fail).
  bench [--runs N] [--workloads DIR] [--lade PATH] [--only W1,W2,W3,R0..R2,D0..D3|run|push]
      make the W1-W3 workloads (../shared/bench/make-workloads.sh) and the RUN workloads R0-R2
      (busybox) and D0-D3 (Debian minbase from LADE_BENCH_DEBIAN_LAYOUT=oci:DIR:TAG, skipped
      without), build lade in release (unless --lade) and time it against tar|gzip and tar|pigz,
      its Dockerfile builds and no-op rebuilds against buildah and BuildKit, and (W3) its registry
      push against skopeo; best of N interleaved runs (default 3).
  fuzz [--seconds N] [TARGET...]
      run the cargo-fuzz targets of fuzz/ (dockerfile, extract, oci_json, dockerignore; default
      all), each for N seconds (default 300), one after the other, with RUSTC_BOOTSTRAP=1 (the
      sanitizer flags need it on a stable toolchain); installs cargo-fuzz when missing. Exits 1
      if libFuzzer saved a crash (under fuzz/artifacts/). Not part of `test`.
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> anyhow::Result<ExitCode> {
    let Some((task, rest)) = args.split_first() else {
        eprint!("{USAGE}");
        return Ok(ExitCode::from(2));
    };
    match task.as_str() {
        "test" => test::run(rest),
        "bench" => bench::run(rest),
        "fuzz" => fuzz::run(rest),
        "help" | "-h" | "--help" => {
            print!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        other => {
            eprint!("xtask: unknown task {other:?}\n\n{USAGE}");
            Ok(ExitCode::from(2))
        }
    }
}

/// The workspace root (the directory holding the root Cargo.toml).
pub fn repo_root() -> PathBuf {
    let xtask_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    xtask_dir.parent().map(PathBuf::from).unwrap_or(xtask_dir)
}

/// The cargo that runs this xtask (so a toolchain override applies to the child builds too).
pub fn cargo() -> std::process::Command {
    std::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}
