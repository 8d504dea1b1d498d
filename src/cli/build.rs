//! `lade build` and `lade plan`: arguments → one validated `BuildRequest` → frontend → plan
//! → exec → outputs.

use super::args::{BuildArgs, CompressionArg, InputArgs, PlanArgs};
use super::progress::Progress;
use super::UsageError;
use crate::context::BuildContext;
use crate::exec::{self, ExecOptions};
use crate::image::Platform;
use crate::layer::Compression;
use crate::output::{self, Target};
use crate::plan::Plan;
use crate::store::Store;
use anyhow::Context as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Everything a build needs, validated.
struct BuildRequest {
    spec: PathBuf,
    platform: Option<Platform>,
    store_root: PathBuf,
    exec: ExecOptions,
    outputs: Vec<Target>,
    tags: Vec<String>,
    iidfile: Option<PathBuf>,
    metadata_file: Option<PathBuf>,
    jobs: Option<usize>,
}

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

fn input_request(
    a: &InputArgs,
) -> Result<(PathBuf, Option<Platform>, PathBuf, ExecOptions), UsageError> {
    let spec = a.spec.clone().ok_or_else(|| UsageError("a build description is needed: --spec lade.toml (Dockerfile builds are not supported yet)".into()))?;
    let platform = a
        .platform
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(|e: crate::image::PlatformParseError| UsageError(e.to_string()))?;
    let compression = match a.compression {
        CompressionArg::Gzip => Compression::Gzip,
        CompressionArg::Zstd => Compression::Zstd,
        CompressionArg::None => Compression::None,
    };
    let store_root = a.cache_dir.clone().unwrap_or_else(Store::default_root);
    Ok((
        spec,
        platform,
        store_root,
        ExecOptions {
            compression,
            source_date_epoch: source_date_epoch()?,
            no_cache: false,
        },
    ))
}

impl BuildRequest {
    fn from_args(a: &BuildArgs) -> Result<BuildRequest, UsageError> {
        let (spec, platform, store_root, mut exec) = input_request(&a.input)?;
        exec.no_cache = a.no_cache;
        let outputs = a
            .outputs
            .iter()
            .map(|o| o.parse::<Target>().map_err(|e| UsageError(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
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
            spec,
            platform,
            store_root,
            exec,
            outputs,
            tags: a.tags.clone(),
            iidfile: a.iidfile.clone(),
            metadata_file: a.metadata_file.clone(),
            jobs: a.jobs,
        })
    }
}

/// Reads and lowers the spec; the context is the spec's directory.
fn load_plan(spec: &Path, platform: Option<&Platform>) -> anyhow::Result<(Plan, BuildContext)> {
    let src = std::fs::read_to_string(spec)
        .with_context(|| format!("cannot read spec {}", spec.display()))?;
    let dir = spec
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dir = dir
        .canonicalize()
        .with_context(|| format!("spec directory {}", dir.display()))?;
    let plan = crate::frontend::spec::lower(&spec.display().to_string(), &src, &dir, platform)?;
    let context = BuildContext::new(&dir, &[])?;
    Ok((plan, context))
}

pub fn run_build(a: &BuildArgs) -> anyhow::Result<ExitCode> {
    let req = BuildRequest::from_args(a)?;
    let progress = Progress::new(a.progress);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(req.jobs.unwrap_or(0))
        .build()
        .context("starting worker threads")?;
    let (plan, context) = load_plan(&req.spec, req.platform.as_ref())?;
    let store = Store::open(&req.store_root)?;
    let image = pool.install(|| exec::build(&plan, &context, &store, &req.exec, &progress))?;

    let mut tags = plan.tags.clone();
    tags.extend(req.tags.iter().cloned());
    tags.dedup();
    for t in &tags {
        output::split_tag(t).map_err(|e| UsageError(format!("{}: {e}", req.spec.display())))?;
    }
    for target in &req.outputs {
        output::write(target, &image, &tags, &store)?;
    }
    if let Some(f) = &req.iidfile {
        let docker = req
            .outputs
            .iter()
            .any(|o| matches!(o, Target::Docker { .. }));
        let id = if docker {
            &image.config_digest
        } else {
            &image.manifest_digest
        };
        output::write_small_file(f, id.to_string().as_bytes())
            .with_context(|| format!("writing {}", f.display()))?;
    }
    if let Some(f) = &req.metadata_file {
        let json = serde_json::to_vec_pretty(&output::metadata_json(&image, &tags))
            .expect("metadata serialises");
        output::write_small_file(f, &json).with_context(|| format!("writing {}", f.display()))?;
    }
    progress.note(&format!("image {}", image.manifest_digest));
    Ok(ExitCode::SUCCESS)
}

pub fn run_plan(a: &PlanArgs) -> anyhow::Result<ExitCode> {
    let (spec, platform, store_root, exec_opts) = input_request(&a.input)?;
    let (plan, context) = load_plan(&spec, platform.as_ref())?;
    let store = Store::open(&store_root)?;
    let keys = exec::cache_keys(&plan, &context, &store, &exec_opts)?;
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
