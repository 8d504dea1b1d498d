//! Command-line interface: clap definitions (`args`), the per-command entry points, progress
//! display and exit codes. `main` → `run` → `ExitCode`; errors are printed once, here.

pub mod args;
mod build;
mod cargo_cmd;
mod compose_cmd;
mod diff_cmd;
mod generate;
mod parse_cmd;
mod progress;
mod prune_cmd;
mod registry_cmd;

use args::{Cli, Command};
use clap::Parser;
use std::process::ExitCode;

/// Exit code for a failed build or command (bad input, I/O failure).
pub const EXIT_FAILURE: u8 = 1;
/// Exit code for a usage error (bad flags or arguments).
pub const EXIT_USAGE: u8 = 2;

pub fn main() -> ExitCode {
    // A rootless build's re-executed child enters its user namespace while it has one thread.
    crate::exec::run::userns::join_if_child();
    let cli = Cli::try_parse();
    if matches!(
        &cli,
        Ok(Cli {
            command: Command::Build(_),
            ..
        })
    ) {
        if let Some(code) = crate::exec::run::userns::enter() {
            return code;
        }
    }
    // The signal mask must be in place before any thread starts.
    crate::store::interrupt::install();
    init_logging();
    let cli = match cli {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    finish(run(cli))
}

/// `cargo lade …` (the `cargo-lade` binary): cargo passes `lade` as the first argument.
pub fn cargo_lade_main() -> ExitCode {
    crate::store::interrupt::install();
    init_logging();
    let mut argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv.get(1).is_some_and(|a| a == "lade") {
        argv.remove(1);
    }
    let args = match cargo_cmd::CargoLadeArgs::try_parse_from(argv) {
        Ok(a) => a,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    finish(cargo_cmd::run(&args))
}

/// Waits for an interrupt's cleanup, prints the error once and maps it to the exit code.
fn finish(result: anyhow::Result<ExitCode>) -> ExitCode {
    crate::store::interrupt::wait_if_interrupted();
    match result {
        Ok(code) => code,
        Err(e) => {
            if is_broken_pipe(&e) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {e:#}");
            let usage = e.downcast_ref::<UsageError>().is_some();
            ExitCode::from(if usage { EXIT_USAGE } else { EXIT_FAILURE })
        }
    }
}

/// `LADE_LOG` (e.g. `debug`, `lade::exec=trace`) sets what is logged to stderr, each line with
/// the seconds since the start (where a build spends its time); default: warnings, untimed.
fn init_logging() {
    let fmt = tracing_subscriber::fmt().with_writer(std::io::stderr);
    let _ = match tracing_subscriber::EnvFilter::try_from_env("LADE_LOG") {
        Ok(filter) => fmt
            .with_env_filter(filter)
            .with_timer(tracing_subscriber::fmt::time::uptime())
            .try_init(),
        Err(_) => fmt
            .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
            .without_time()
            .try_init(),
    };
}

/// A request that cannot be carried out as typed (exit code 2, like clap's own errors).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    // Module errors keep their I/O error in the message rather than as a `source()` (so
    // each OS error is printed once): a wrapped EPIPE shows as its text.
    let epipe = std::io::Error::from_raw_os_error(libc::EPIPE).to_string();
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || c.to_string().ends_with(&epipe)
    })
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Build(a) => build::run_build(&a),
        Command::Plan(a) => build::run_plan(&a),
        Command::Parse(a) => parse_cmd::run(&a),
        Command::Push(a) => registry_cmd::run_push(&a),
        Command::Pull(a) => registry_cmd::run_pull(&a),
        Command::Login(a) => registry_cmd::run_login(&a),
        Command::Compose(a) => compose_cmd::run(&a),
        Command::Diff(a) => diff_cmd::run(&a),
        Command::Verify(a) => diff_cmd::run_verify(&a),
        Command::Lock(a) => build::run_lock(&a),
        Command::Prune(a) => prune_cmd::run(&a),
        Command::Generate(a) => generate::run(&a),
    }
}
