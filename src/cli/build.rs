//! `lade build` and `lade plan`: arguments → one validated `BuildRequest` → frontend → plan
//! → exec → outputs.

use super::args::{
    BuildArgs, CompressionArg, InputArgs, LockArgs, NetworkArg, PlanArgs, PullArg, RegistryArgs,
    SnapshotterArg,
};
use super::progress::Progress;
use super::UsageError;
use crate::build::{BuildError, BuildRequest, Description};
use crate::exec::run::{ExtraHost, RunSettings, SandboxRunner, SnapshotterChoice};
use crate::exec::{self, ExecOptions};
use crate::image::Platform;
use crate::layer::Compression;
use crate::lock::LockMode;
use crate::output::{self, Target};
use crate::registry::ClientOptions;
use crate::store::Store;
use std::process::ExitCode;
use std::sync::Arc;

fn source_date_epoch() -> Result<u64, UsageError> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.trim().is_empty() => v.trim().parse().map_err(|_| {
            UsageError(format!(
                "SOURCE_DATE_EPOCH={v:?} is not a number of seconds"
            ))
        }),
        _ => Ok(0),
    }
}

fn key_values(
    flag: &str,
    items: &[String],
    from_env: bool,
) -> Result<std::collections::BTreeMap<String, String>, UsageError> {
    let mut m = std::collections::BTreeMap::new();
    for item in items {
        let (k, v) = match item.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None if from_env => match std::env::var(item) {
                Ok(v) => (item.clone(), v),
                Err(_) => continue,
            },
            None => return Err(UsageError(format!("{flag} {item:?}: expected KEY=VALUE"))),
        };
        if k.is_empty() {
            return Err(UsageError(format!("{flag} {item:?}: the name is empty")));
        }
        m.insert(k, v);
    }
    Ok(m)
}

/// `--secret` and `--ssh`, checked (a missing file is found when a step mounts it).
fn secrets_and_agents(
    a: &InputArgs,
) -> Result<(exec::run::Secrets, exec::run::SshAgents), UsageError> {
    let mut secrets = exec::run::Secrets::default();
    for s in &a.secrets {
        secrets.add(s).map_err(UsageError)?;
    }
    let mut agents = exec::run::SshAgents::default();
    for s in &a.ssh {
        agents.add(s).map_err(UsageError)?;
    }
    Ok((secrets, agents))
}

/// The request `lade plan` and `lade build` share: what to build, for which platforms, with
/// which store and registry settings; no outputs.
pub(super) fn input_request(a: &InputArgs) -> Result<BuildRequest, UsageError> {
    // `--platform a,b`: one image per platform, under an index.
    let mut platforms: Vec<Platform> = Vec::new();
    for p in a.platform.iter().flat_map(|p| p.split(',')) {
        let p: Platform = p
            .trim()
            .parse()
            .map_err(|e: crate::image::PlatformParseError| UsageError(e.to_string()))?;
        if platforms.contains(&p) {
            return Err(UsageError(format!("--platform names {p} twice")));
        }
        platforms.push(p);
    }
    let platform = platforms.first().cloned();
    let description = match (&a.spec, &a.context) {
        (Some(spec), _) => Description::Spec(spec.clone()),
        (None, Some(context)) => Description::Dockerfile {
            file: a.file.clone(),
            context: context.clone(),
            opts: Box::new(crate::frontend::dockerfile::lower::LowerOptions {
                build_args: key_values("--build-arg", &a.build_args, true)?,
                target: a.target.clone(),
                platform: platform.clone(),
                labels: key_values("--label", &a.labels, false)?,
                context_dir: context.clone(),
                base_configs: None,
                network: match a.network {
                    NetworkArg::Default => crate::plan::RunNetwork::Default,
                    NetworkArg::Host => crate::plan::RunNetwork::Host,
                    NetworkArg::None => crate::plan::RunNetwork::None,
                },
            }),
        },
        (None, None) => return Err(UsageError("nothing to build: give a context directory (`lade build [-f Dockerfile] DIR`) or `--spec lade.toml`".into())),
    };
    let compression = match a.compression {
        CompressionArg::Gzip => Compression::Gzip,
        CompressionArg::Zstd => Compression::Zstd,
        CompressionArg::None => Compression::None,
    };
    let store_root = a.cache_dir.clone().unwrap_or_else(Store::default_root);
    let (secrets, agents) = secrets_and_agents(a)?;
    let secret_ids = secrets.ids();
    Ok(BuildRequest {
        description,
        platforms,
        store_root,
        exec: ExecOptions {
            compression,
            source_date_epoch: source_date_epoch()?,
            no_cache: false,
            registry: None,
            pull: exec::PullPolicy::default(),
            compress_threads: None,
            normalize_modes: false,
            runner: Some(Arc::new(
                SandboxRunner::new(
                    a.runtime.clone(),
                    match a.snapshotter {
                        SnapshotterArg::Auto => SnapshotterChoice::Auto,
                        SnapshotterArg::Overlay => SnapshotterChoice::Overlay,
                        SnapshotterArg::Copy => SnapshotterChoice::Copy,
                    },
                )
                .with_mounts(secrets, agents),
            )),
            run_settings: RunSettings {
                extra_hosts: a
                    .add_hosts
                    .iter()
                    .map(|h| ExtraHost::parse(h).map_err(UsageError))
                    .collect::<Result<_, _>>()?,
                allow_insecure: false,
            },
        },
        registry: client_options(&a.registry),
        push_jobs: a.registry.push_jobs.max(1),
        outputs: Vec::new(),
        tags: Vec::new(),
        iidfile: None,
        metadata_file: None,
        digest_file: None,
        jobs: None,
        lock: LockMode::default(),
        attest: crate::attest::AttestOptions {
            secret_ids,
            ..Default::default()
        },
    })
}

fn client_options(a: &RegistryArgs) -> ClientOptions {
    ClientOptions {
        insecure_registries: a.insecure_registries.clone(),
        ca_files: a.registry_ca.clone(),
        ..ClientOptions::default()
    }
}

fn build_request(a: &BuildArgs) -> Result<BuildRequest, UsageError> {
    let mut req = input_request(&a.input)?;
    req.lock = if a.lock {
        LockMode::Update
    } else if a.locked {
        LockMode::Locked
    } else {
        LockMode::Use
    };
    req.attest.sbom = a.sbom;
    req.attest.provenance = a.provenance;
    let exec = &mut req.exec;
    exec.no_cache = a.no_cache;
    exec.run_settings.allow_insecure = allows_insecure(&a.allow)?;
    exec.normalize_modes = a.normalize_modes;
    exec.pull = match a.pull {
        PullArg::Newer => exec::PullPolicy::Newer,
        PullArg::Missing => exec::PullPolicy::Missing,
        PullArg::Never => exec::PullPolicy::Never,
        PullArg::Always => exec::PullPolicy::Always,
    };
    let mut outputs = a
        .outputs
        .iter()
        .map(|o| o.parse::<Target>().map_err(|e| UsageError(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    // Files first, then one push (`--push` is `-o type=registry`).
    let push = a.push || outputs.contains(&Target::Registry);
    outputs.retain(|o| *o != Target::Registry);
    if push {
        outputs.push(Target::Registry);
    }
    if outputs
        .iter()
        .filter(|o| {
            matches!(
                o,
                Target::Oci {
                    dest: output::Dest::Stdout
                } | Target::Docker {
                    dest: output::Dest::Stdout
                }
            )
        })
        .count()
        > 1
    {
        return Err(UsageError(
            "only one --output can go to standard output".into(),
        ));
    }
    for t in &a.tags {
        output::split_tag(t).map_err(|e| UsageError(e.to_string()))?;
    }
    if a.jobs == Some(0) {
        return Err(UsageError("--jobs must be at least 1".into()));
    }
    Ok(BuildRequest {
        outputs,
        tags: a.tags.clone(),
        iidfile: a.iidfile.clone(),
        metadata_file: a.metadata_file.clone(),
        digest_file: a.digest_file.clone(),
        jobs: a.jobs,
        ..req
    })
}

/// `--allow` values: whether `security.insecure` is among them. BuildKit's other
/// entitlements have nothing to allow here (`network.host`: RUN steps may use the host's
/// network without it) or no counterpart (`device`), which is said.
fn allows_insecure(allow: &[String]) -> Result<bool, UsageError> {
    let mut insecure = false;
    for e in allow.iter().map(|e| e.trim()) {
        match e {
            "security.insecure" => insecure = true,
            "network.host" => {}
            other => {
                return Err(UsageError(format!(
                    "--allow {other:?}: unknown entitlement (lade knows security.insecure and \
                     network.host)"
                )))
            }
        }
    }
    Ok(insecure)
}

/// A build error for `main`: usage errors keep their exit code 2.
pub(super) fn cli_error(e: BuildError) -> anyhow::Error {
    match e {
        BuildError::Usage(m) => UsageError(m).into(),
        other => other.into(),
    }
}

pub fn run_build(a: &BuildArgs) -> anyhow::Result<ExitCode> {
    let req = build_request(a)?;
    let progress = Progress::new(a.progress);
    let result = crate::build::build(&req, &progress).map_err(cli_error)?;
    for r in &result.pushed {
        progress.note(&format!(
            "pushed {} ({} bytes uploaded, {} blobs uploaded, {} mounted, {} already there)",
            r.references.join(", "),
            r.bytes_uploaded,
            r.blobs_uploaded,
            r.blobs_mounted,
            r.blobs_skipped
        ));
    }
    progress.note(&format!("image {}", result.artifact.top().digest));
    Ok(ExitCode::SUCCESS)
}

/// `lade lock`: writes the lock file and prints its path.
pub fn run_lock(a: &LockArgs) -> anyhow::Result<ExitCode> {
    let req = input_request(&a.input)?;
    let (path, lock) = crate::build::lock(&req, &exec::Quiet).map_err(cli_error)?;
    println!("{}: {} base(s) pinned", path.display(), lock.images.len());
    Ok(ExitCode::SUCCESS)
}

pub fn run_plan(a: &PlanArgs) -> anyhow::Result<ExitCode> {
    let req = input_request(&a.input)?;
    let (plan, keys) = crate::build::plan(&req, &exec::Quiet).map_err(cli_error)?;
    let mut doc = serde_json::to_value(&plan).expect("plan serialises");
    for (stage, stage_keys) in doc["stages"]
        .as_array_mut()
        .expect("stages")
        .iter_mut()
        .zip(keys)
    {
        for (step, key) in stage["steps"]
            .as_array_mut()
            .expect("steps")
            .iter_mut()
            .zip(stage_keys)
        {
            if let Some(k) = key {
                step["cache_key"] = serde_json::json!(k);
            }
        }
    }
    let mut out = serde_json::to_string_pretty(&doc).expect("plan serialises");
    out.push('\n');
    std::io::Write::write_all(&mut std::io::stdout().lock(), out.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}
