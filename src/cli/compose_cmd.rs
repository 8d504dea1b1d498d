//! `lade compose build`: a compose file's `build:` sections → `hooks::compose` (model, order,
//! one build per service, waves in parallel) → images in the store, pushed with `--push`.

use super::args::{ProgressMode, RegistryArgs, StoreArgs};
use super::build::{cli_error, client_options, source_date_epoch};
use super::progress::Progress;
use super::UsageError;
use crate::build::{BuildRequest, Description};
use crate::exec::run::{SandboxRunner, SnapshotterChoice};
use crate::exec::{self, ExecOptions};
use crate::hooks::compose::{self, run::RunError};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Debug, Args)]
pub struct ComposeArgs {
    /// The compose file (default: compose.yaml, compose.yml, docker-compose.yaml or
    /// docker-compose.yml in the current directory).
    #[arg(short, long = "file", value_name = "FILE", global = true)]
    pub file: Option<PathBuf>,
    /// The project name (default: the file's `name:`, $COMPOSE_PROJECT_NAME, or its
    /// directory's name); images without `image:` are named PROJECT-SERVICE.
    #[arg(short = 'p', long, value_name = "NAME", global = true)]
    pub project_name: Option<String>,
    #[command(subcommand)]
    pub command: ComposeCommand,
}

#[derive(Debug, Subcommand)]
pub enum ComposeCommand {
    /// Build the services that have a `build:` section (independent ones in parallel), each
    /// image named as its `image:` says.
    Build(ComposeBuildArgs),
}

#[derive(Debug, Args)]
pub struct ComposeBuildArgs {
    /// Services to build (default: all with a `build:` section); the services whose images
    /// they build on are built too.
    #[arg(value_name = "SERVICE")]
    pub services: Vec<String>,
    /// Push every built image to the registry of each of its names.
    #[arg(long)]
    pub push: bool,
    /// Rebuild every layer instead of reusing cached ones.
    #[arg(long)]
    pub no_cache: bool,
    /// Resolve every base image's tag again.
    #[arg(long)]
    pub pull: bool,
    /// Write each service's image names and digest as JSON here (keyed by service, like
    /// `docker buildx bake --metadata-file`).
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

pub fn run(a: &ComposeArgs) -> anyhow::Result<ExitCode> {
    match &a.command {
        ComposeCommand::Build(b) => run_build(a, b),
    }
}

fn compose_file(a: &ComposeArgs) -> Result<PathBuf, UsageError> {
    if let Some(f) = &a.file {
        return Ok(f.clone());
    }
    compose::model::DEFAULT_FILES
        .iter()
        .map(PathBuf::from)
        .find(|f| f.is_file())
        .ok_or_else(|| {
            UsageError(format!(
                "no compose file here ({}): give one with -f",
                compose::model::DEFAULT_FILES.join(", ")
            ))
        })
}

fn run_build(a: &ComposeArgs, b: &ComposeBuildArgs) -> anyhow::Result<ExitCode> {
    let file = compose_file(a)?;
    let env: std::collections::BTreeMap<String, String> = std::env::vars().collect();
    let mut project = compose::load(&file, &env)?;
    if let Some(n) = &a.project_name {
        project.name = compose::model::normalize_project_name(n)
            .ok_or_else(|| UsageError(format!("--project-name {n:?} has no letter or digit")))?;
    }
    let progress = Progress::new(b.progress);
    for w in &project.warnings {
        progress.note(&format!("warning: {w}"));
    }
    let sde = source_date_epoch()?;
    let store_root = b.store.root();
    let registry = client_options(&b.registry);
    let push_jobs = b.registry.push_jobs.max(1);
    let (no_cache, pull) = (b.no_cache, b.pull);
    let runner = Arc::new(SandboxRunner::new(None, SnapshotterChoice::Auto));
    let shared = compose::run::Shared {
        push: b.push,
        runner_with_mounts: Box::new(|secrets, agents| {
            Arc::new(SandboxRunner::new(None, SnapshotterChoice::Auto).with_mounts(secrets, agents))
        }),
        template: Box::new(move || {
            let mut exec = ExecOptions::new(sde);
            exec.no_cache = no_cache;
            if pull {
                exec.pull = exec::PullPolicy::Always;
            }
            exec.runner = Some(runner.clone());
            BuildRequest::new(
                Description::Spec(PathBuf::new()),
                store_root.clone(),
                exec,
                registry.clone(),
                push_jobs,
            )
        }),
    };
    let built = match compose::run::build(&project, &b.services, &shared, &progress) {
        Ok(b) => b,
        Err(RunError::Usage(m)) => return Err(UsageError(m).into()),
        Err(RunError::Build {
            file,
            service,
            source,
        }) => {
            return Err(
                cli_error(*source).context(format!("{file}: services.{service}: build failed"))
            )
        }
        Err(e) => return Err(e.into()),
    };
    if built.is_empty() {
        progress.note("no service has a build section: nothing to build");
    }
    let mut doc = serde_json::Map::new();
    for s in &built {
        for r in &s.pushed {
            progress.note(&format!(
                "service {}: pushed {}",
                s.service,
                r.references.join(", ")
            ));
        }
        doc.insert(
            s.service.clone(),
            serde_json::json!({
                "image.name": s.tags.join(","),
                "containerimage.digest": s.digest.to_string(),
            }),
        );
    }
    if let Some(f) = &b.metadata_file {
        let json = serde_json::to_vec_pretty(&serde_json::Value::Object(doc))?;
        crate::output::write_small_file(f, &json)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", f.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}
