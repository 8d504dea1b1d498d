//! `cargo lade`: the `cargo-lade` binary's arguments → `hooks::cargo` (metadata, `cargo
//! build`, the image plan) → one `BuildRequest` → the usual outputs.

use super::args::{ProgressMode, RegistryArgs, StoreArgs};
use super::build::{cli_error, client_options, source_date_epoch};
use super::progress::Progress;
use super::UsageError;
use crate::build::{BuildRequest, Description};
use crate::exec::ExecOptions;
use crate::hooks::cargo::{self as hook, CargoOptions};
use crate::hooks::elf::LibrarySearch;
use crate::output;
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

/// Build a crate's binary and make an image of it: from scratch with exactly the shared
/// libraries it needs, or on the base named in [package.metadata.lade].
#[derive(Debug, Parser)]
#[command(name = "cargo lade", bin_name = "cargo lade", version)]
pub struct CargoLadeArgs {
    /// The binary target to build (default: the package's only one).
    #[arg(long, value_name = "NAME")]
    pub bin: Option<String>,
    /// The package whose binary to build (default: the current directory's).
    #[arg(short, long, value_name = "SPEC")]
    pub package: Option<String>,
    /// Path to Cargo.toml.
    #[arg(long, value_name = "PATH")]
    pub manifest_path: Option<PathBuf>,
    /// Build with the release profile.
    #[arg(short, long)]
    pub release: bool,
    /// Build for this target triple (e.g. x86_64-unknown-linux-musl for a static binary).
    #[arg(long, value_name = "TRIPLE")]
    pub target: Option<String>,
    /// Take the binary that is there: cargo runs --offline --frozen and must not rebuild
    /// anything stale from the network.
    #[arg(long)]
    pub no_build: bool,
    /// Put the host's CA bundle at /etc/ssl/certs/ca-certificates.crt (also `certs = true`
    /// in [package.metadata.lade]).
    #[arg(long)]
    pub certs: bool,
    /// Name the image (`name[:tag]`); repeatable. Default: BIN:VERSION.
    #[arg(short, long = "tag", value_name = "NAME")]
    pub tags: Vec<String>,
    /// Push the image to the registry of each tag.
    #[arg(long)]
    pub push: bool,
    /// Where to write the image: type=oci|docker,dest=FILE|- or type=oci-layout,dest=DIR.
    #[arg(short, long = "output", value_name = "SPEC")]
    pub outputs: Vec<String>,
    /// Write the image's manifest digest here.
    #[arg(long, value_name = "FILE")]
    pub digest_file: Option<PathBuf>,
    /// Write build metadata as JSON here.
    #[arg(long, value_name = "FILE")]
    pub metadata_file: Option<PathBuf>,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Progress output.
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: ProgressMode,
}

pub fn run(a: &CargoLadeArgs) -> anyhow::Result<ExitCode> {
    let opts = CargoOptions {
        manifest_path: a.manifest_path.clone(),
        package: a.package.clone(),
        bin: a.bin.clone(),
        release: a.release,
        target: a.target.clone(),
        certs: a.certs,
        no_build: a.no_build,
    };
    let (outputs, push) = super::build::outputs(&a.outputs, a.push)?;
    for t in &a.tags {
        output::split_tag(t).map_err(|e| UsageError(e.to_string()))?;
    }
    let pkg = hook::package(&opts).map_err(|e| match e {
        hook::CargoError::Choice(m) => anyhow::Error::from(UsageError(m)),
        other => other.into(),
    })?;
    let bin = hook::bin_name(&pkg, &opts).map_err(|e| UsageError(e.to_string()))?;
    let binary = hook::build_binary(&pkg, &bin, &opts)?;
    let image = hook::plan(&pkg, &bin, &binary, &opts, &LibrarySearch::host())?;
    let progress = Progress::new(a.progress);
    progress.note(&format!(
        "cargo lade: {} ({} files)",
        binary.display(),
        image.files.len()
    ));
    let mut tags = a.tags.clone();
    // A name for the store and archives; a push goes only where the user said.
    if tags.is_empty() && image.plan.tags.is_empty() && !push {
        tags.push(format!("{bin}:{}", pkg.version));
    }
    let req = BuildRequest {
        outputs,
        tags,
        metadata_file: a.metadata_file.clone(),
        digest_file: a.digest_file.clone(),
        ..BuildRequest::new(
            Description::Plan {
                plan: Box::new(image.plan),
                context: image.context,
                name: pkg.manifest_path.display().to_string(),
            },
            a.store.root(),
            ExecOptions::new(source_date_epoch()?),
            client_options(&a.registry),
            a.registry.push_jobs.max(1),
        )
    };
    let result = crate::build::build(&req, &progress).map_err(cli_error)?;
    for r in &result.pushed {
        progress.note(&format!("pushed {}", r.references.join(", ")));
    }
    progress.note(&format!("image {}", result.artifact.top().digest));
    Ok(ExitCode::SUCCESS)
}
