//! `cargo lade`: cargo runs `cargo-lade lade ARGS…`; everything lives in the library.
use std::process::ExitCode;

fn main() -> ExitCode {
    lade::cli::cargo_lade_main()
}
