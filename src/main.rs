//! The `lade` binary: everything lives in the library; this only maps the result to an exit code.
use std::process::ExitCode;

fn main() -> ExitCode {
    lade::cli::main()
}
