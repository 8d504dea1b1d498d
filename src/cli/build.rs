//! `lade build` and `lade plan`: arguments → one validated `BuildRequest` → frontend → plan
//! → exec → outputs.

use super::args::{BuildArgs, CompressionArg, InputArgs, PlanArgs, PullArg};
use super::progress::Progress;
use super::UsageError;
use crate::context::BuildContext;
use crate::exec::{self, ExecOptions};
use crate::frontend::dockerfile::lower::BaseConfigs;
use crate::image::{ImageConfig, Platform};
use crate::layer::Compression;
use crate::output::{self, Target};
use crate::plan::{Base, Plan};
use crate::registry::Client;
use crate::store::Store;
use anyhow::Context as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// Which frontend reads what.
enum Description {
    Spec(PathBuf),
    Dockerfile {
        file: Option<PathBuf>,
        context: PathBuf,
        opts: Box<crate::frontend::dockerfile::lower::LowerOptions>,
    },
}

/// Everything a build needs, validated.
struct BuildRequest {
    description: Description,
    /// Empty: the description's platform, else the host's.
    platforms: Vec<Platform>,
    store_root: PathBuf,
    exec: ExecOptions,
    outputs: Vec<Target>,
    tags: Vec<String>,
    iidfile: Option<PathBuf>,
    metadata_file: Option<PathBuf>,
    digest_file: Option<PathBuf>,
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

fn input_request(
    a: &InputArgs,
) -> Result<(Description, Vec<Platform>, PathBuf, ExecOptions), UsageError> {
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
    Ok((
        description,
        platforms,
        store_root,
        ExecOptions {
            compression,
            source_date_epoch: source_date_epoch()?,
            no_cache: false,
            registry: None,
            pull: exec::PullPolicy::default(),
            compress_threads: None,
        },
    ))
}

impl BuildRequest {
    fn from_args(a: &BuildArgs) -> Result<BuildRequest, UsageError> {
        let (description, platforms, store_root, mut exec) = input_request(&a.input)?;
        exec.no_cache = a.no_cache;
        exec.pull = match a.pull {
            PullArg::Newer => exec::PullPolicy::Newer,
            PullArg::Missing => exec::PullPolicy::Missing,
            PullArg::Never => exec::PullPolicy::Never,
            PullArg::Always => exec::PullPolicy::Always,
        };
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
            description,
            platforms,
            store_root,
            exec,
            outputs,
            tags: a.tags.clone(),
            iidfile: a.iidfile.clone(),
            metadata_file: a.metadata_file.clone(),
            digest_file: a.digest_file.clone(),
            jobs: a.jobs,
        })
    }
}

/// Base image configs for the Dockerfile frontend (its `BaseConfigs`): layouts and archives
/// read through the filesystem, registry images through a client made on first use and
/// kept for the rest of the build.
struct BaseConfigReader {
    store: Store,
    registry_args: super::args::RegistryArgs,
    pull: exec::PullPolicy,
    client: std::sync::OnceLock<Result<Arc<Client>, String>>,
}

impl BaseConfigReader {
    fn new(
        store: &Store,
        registry_args: &super::args::RegistryArgs,
        pull: exec::PullPolicy,
    ) -> Arc<BaseConfigReader> {
        Arc::new(BaseConfigReader {
            store: store.clone(),
            registry_args: registry_args.clone(),
            pull,
            client: std::sync::OnceLock::new(),
        })
    }

    fn client(&self) -> Result<Arc<Client>, String> {
        self.client
            .get_or_init(|| {
                super::registry_cmd::client(&self.registry_args).map_err(|e| format!("{e:#}"))
            })
            .clone()
    }

    /// The client, if reading a base made one.
    fn made_client(&self) -> Option<Arc<Client>> {
        self.client.get().and_then(|c| c.as_ref().ok().cloned())
    }
}

impl BaseConfigs for BaseConfigReader {
    fn config(&self, base: &Base, platform: &Platform) -> Result<ImageConfig, String> {
        let client = match base {
            Base::Registry { .. } => Some(self.client()?),
            _ => None,
        };
        exec::base_config(base, platform, &self.store, client.as_deref(), self.pull)
            .map_err(|e| e.to_string())
    }
}

/// A lowered build description.
struct Loaded {
    plan: Plan,
    /// For a spec, the spec's directory.
    context: BuildContext,
    source: SourceText,
}

/// The text of the build description, to show errors found while building at their line.
struct SourceText {
    name: String,
    src: String,
}

impl SourceText {
    /// An error of a plan item written in this description, rendered like lowering errors:
    /// location, source line (cut around the column when long) and caret.
    fn locate(&self, e: exec::ExecError) -> anyhow::Error {
        match e.location() {
            Some((loc, message)) if loc.file == self.name => {
                anyhow::anyhow!(crate::frontend::diag::render(
                    loc, &self.src, &message, None
                ))
            }
            _ => e.into(),
        }
    }
}

/// Reads and lowers the build description; for a spec, the context is the spec's directory.
fn load_plan(
    description: &Description,
    platform: Option<&Platform>,
    progress: Option<&Progress>,
    base_configs: &Arc<BaseConfigReader>,
) -> anyhow::Result<Loaded> {
    match description {
        Description::Spec(spec) => load_spec(spec, platform),
        Description::Dockerfile {
            file,
            context,
            opts,
        } => {
            let mut opts = (**opts).clone();
            opts.base_configs = Some(base_configs.clone());
            opts.platform = platform.cloned();
            load_dockerfile(file.as_deref(), context, &opts, progress)
        }
    }
}

fn load_dockerfile(
    file: Option<&Path>,
    context: &Path,
    opts: &crate::frontend::dockerfile::lower::LowerOptions,
    progress: Option<&Progress>,
) -> anyhow::Result<Loaded> {
    use crate::frontend::dockerfile::{lower, parser};
    let context = context
        .canonicalize()
        .with_context(|| format!("build context {}", context.display()))?;
    if !context.is_dir() {
        return Err(UsageError(format!(
            "build context {} is not a directory",
            context.display()
        ))
        .into());
    }
    let (name, src, ignore_file) = match file {
        Some(f) if f.as_os_str() == "-" => {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                .context("reading the Dockerfile from standard input")?;
            ("<stdin>".to_string(), s, context.join(".dockerignore"))
        }
        Some(f) => {
            let s = std::fs::read_to_string(f)
                .with_context(|| format!("cannot read Dockerfile {}", f.display()))?;
            // BuildKit reads `<Dockerfile>.dockerignore` beside the Dockerfile first.
            let own = PathBuf::from(format!("{}.dockerignore", f.display()));
            (
                f.display().to_string(),
                s,
                if own.is_file() {
                    own
                } else {
                    context.join(".dockerignore")
                },
            )
        }
        None => {
            let f = context.join("Dockerfile");
            let s = std::fs::read_to_string(&f)
                .with_context(|| format!("cannot read Dockerfile {}", f.display()))?;
            let own = context.join("Dockerfile.dockerignore");
            (
                f.display().to_string(),
                s,
                if own.is_file() {
                    own
                } else {
                    context.join(".dockerignore")
                },
            )
        }
    };
    let df = parser::parse(&src).map_err(|e| anyhow::anyhow!("{}", e.render(&name, &src)))?;
    let mut opts = opts.clone();
    opts.context_dir = context.clone();
    let lowered = lower::lower(&name, &src, &df, &opts)?;
    if !lowered.unused_build_args.is_empty() {
        if let Some(p) = progress {
            p.note(&format!(
                "warning: build args not consumed by any ARG: {}",
                lowered.unused_build_args.join(", ")
            ));
        }
    }
    let patterns = match std::fs::read_to_string(&ignore_file) {
        Ok(text) => crate::context::dockerignore::read_ignore_file(&text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", ignore_file.display())),
    };
    let ctx = BuildContext::new(&context, &patterns)?;
    Ok(Loaded {
        plan: lowered.plan,
        context: ctx,
        source: SourceText { name, src },
    })
}

fn load_spec(spec: &Path, platform: Option<&Platform>) -> anyhow::Result<Loaded> {
    let src = std::fs::read_to_string(spec)
        .with_context(|| format!("cannot read spec {}", spec.display()))?;
    let dir = spec
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dir = dir
        .canonicalize()
        .with_context(|| format!("spec directory {}", dir.display()))?;
    let name = spec.display().to_string();
    let plan = crate::frontend::spec::lower(&name, &src, &dir, platform)?;
    let context = BuildContext::new(&dir, &[])?;
    Ok(Loaded {
        plan,
        context,
        source: SourceText { name, src },
    })
}

pub fn run_build(a: &BuildArgs) -> anyhow::Result<ExitCode> {
    let req = BuildRequest::from_args(a)?;
    let progress = Progress::new(a.progress);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(req.jobs.unwrap_or(0))
        .build()
        .context("starting worker threads")?;
    let store = Store::open(&req.store_root)?;
    let base_configs = BaseConfigReader::new(&store, &a.input.registry, req.exec.pull);
    let push = a.push || req.outputs.iter().any(|o| matches!(o, Target::Registry));
    let mut exec_opts = req.exec.clone();
    // --jobs N bounds compression too: N gzip workers per layer, and at most N blocks
    // compressed at once across the layers built in parallel.
    exec_opts.compress_threads = req.jobs;
    if let Some(n) = req.jobs {
        crate::layer::set_compression_limit(n);
    }
    let platforms: Vec<Option<&Platform>> = if req.platforms.is_empty() {
        vec![None]
    } else {
        req.platforms.iter().map(Some).collect()
    };
    let mut images = Vec::new();
    let mut plan_tags = Vec::new();
    for platform in platforms {
        let Loaded {
            plan,
            context,
            source,
        } = load_plan(&req.description, platform, Some(&progress), &base_configs)?;
        if exec_opts.registry.is_none() && (push || uses_registry(&plan)) {
            exec_opts.registry = match base_configs.made_client() {
                Some(c) => Some(c),
                None => Some(super::registry_cmd::client(&a.input.registry)?),
            };
        }
        let image = pool
            .install(|| exec::build(&plan, &context, &store, &exec_opts, &progress))
            .map_err(|e| source.locate(e))?;
        images.push(image);
        plan_tags = plan.tags;
    }
    let artifact = output::Artifact::multi_platform(images, &store)?;

    let mut tags = plan_tags;
    tags.extend(req.tags.iter().cloned());
    tags.dedup();
    for t in &tags {
        output::split_tag(t)
            .map_err(|e| UsageError(format!("tag from the build description: {e}")))?;
    }
    for target in &req.outputs {
        if !matches!(target, Target::Registry) {
            // Files hold every byte: base layers never downloaded are fetched now.
            for image in &artifact.images {
                image.fetch_layers(&store, exec_opts.registry.as_deref(), exec_opts.pull)?;
            }
        }
        output::write(target, &artifact, &tags, &store)?;
    }
    let mut pushed: Vec<String> = Vec::new();
    if push {
        if tags.is_empty() {
            return Err(UsageError(
                "--push needs a name to push to: -t registry/repository:tag".into(),
            )
            .into());
        }
        let client = exec_opts.registry.as_deref().expect("created above");
        // Base layers are mounted from the base's repository on the same registry, else
        // fetched and uploaded.
        let mount_from = artifact.images[0].base_origin.clone();
        // Pushing to another registry than the base's needs the base layers' bytes: fetch
        // them now, as --pull allows (the push would fetch them otherwise, ignoring it).
        if let Some(origin) = &mount_from {
            let elsewhere = tags.iter().any(|t| {
                crate::registry::Reference::parse(t).is_ok_and(|r| r.registry != origin.registry)
            });
            if elsewhere {
                for image in &artifact.images {
                    image.fetch_layers(&store, Some(client), exec_opts.pull)?;
                }
            }
        }
        for r in output::push(
            &artifact,
            &tags,
            &store,
            client,
            &super::registry_cmd::push_options(&a.input.registry, mount_from),
        )? {
            pushed.extend(r.references.iter().cloned());
            progress.note(&format!(
                "pushed {} ({} bytes uploaded, {} blobs uploaded, {} mounted, {} already there)",
                r.references.join(", "),
                r.bytes_uploaded,
                r.blobs_uploaded,
                r.blobs_mounted,
                r.blobs_skipped
            ));
        }
    }
    if let Some(f) = &req.iidfile {
        let docker = req
            .outputs
            .iter()
            .any(|o| matches!(o, Target::Docker { .. }));
        let top = artifact.top().digest;
        let id = match artifact.image() {
            Some(image) if docker => &image.config_digest,
            _ => &top,
        };
        output::write_small_file(f, id.to_string().as_bytes())
            .with_context(|| format!("writing {}", f.display()))?;
    }
    if let Some(f) = &req.digest_file {
        output::write_small_file(f, artifact.top().digest.to_string().as_bytes())
            .with_context(|| format!("writing {}", f.display()))?;
    }
    if let Some(f) = &req.metadata_file {
        let mut doc = output::metadata_json(&artifact, &tags);
        if push {
            doc["lade.pushed"] = serde_json::json!(pushed);
        }
        let json = serde_json::to_vec_pretty(&doc).expect("metadata serialises");
        output::write_small_file(f, &json).with_context(|| format!("writing {}", f.display()))?;
    }
    progress.note(&format!("image {}", artifact.top().digest));
    Ok(ExitCode::SUCCESS)
}

/// Whether building the plan reads images from a registry.
fn uses_registry(plan: &Plan) -> bool {
    use crate::plan::{Base, CopyFrom, FileSet, Step};
    plan.stages.iter().any(|s| {
        matches!(s.base, Base::Registry { .. })
            || s.steps.iter().any(|st| match st {
                Step::Layer(l) => l.sources.iter().any(|f| {
                    matches!(
                        f,
                        FileSet::Copy {
                            from: CopyFrom::Image {
                                base: Base::Registry { .. }
                            },
                            ..
                        }
                    )
                }),
                _ => false,
            })
    })
}

pub fn run_plan(a: &PlanArgs) -> anyhow::Result<ExitCode> {
    let (description, platforms, store_root, exec_opts) = input_request(&a.input)?;
    if platforms.len() > 1 {
        return Err(
            UsageError("lade plan shows one platform's plan: give one --platform".into()).into(),
        );
    }
    let platform = platforms.into_iter().next();
    let store = Store::open(&store_root)?;
    let base_configs = BaseConfigReader::new(&store, &a.input.registry, exec_opts.pull);
    let Loaded {
        plan,
        context,
        source,
    } = load_plan(&description, platform.as_ref(), None, &base_configs)?;
    let keys =
        exec::cache_keys(&plan, &context, &store, &exec_opts).map_err(|e| source.locate(e))?;
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
