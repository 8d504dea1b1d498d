//! Runs a plan: loads base images, resolves each layer step's files against the context,
//! derives content-based cache keys, writes (or reuses) layers in parallel, applies config
//! edits, and assembles the image documents into the store. Knows no output formats.

mod archive;
mod base;
mod config;
mod download;
mod files;
mod pull;
pub mod run;
mod run_mounts;
mod sources;
mod stage;
mod time;
mod tree;
mod verify;
pub(crate) mod why;

pub use base::{
    base_config, import_image, load_base, load_base_with, registry_base_digest, BaseImage,
    ImportedImage,
};
pub use files::ResolvedLayer;
pub use pull::{fetch_layers, PullPolicy};
pub use sources::extract_all;
pub use time::rfc3339;
pub use tree::{layer_notes, seed_layer_notes, LayerNotes};

use crate::context::BuildContext;
use crate::digest::Digest;
use crate::image::{
    canonical_json, media_types, BuiltImage, Descriptor, History, ImageConfig, Manifest,
};
use crate::layer::{Compression, LayerDigests};
use crate::plan::{Plan, Step};
use crate::store::Store;
use rayon::prelude::*;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// A plan item that cannot be carried out as written.
    #[error("{location}: {message}")]
    Input {
        location: crate::plan::Location,
        message: String,
    },
    /// Any other error while executing the plan item written at `location`.
    #[error("{location}: {error}")]
    At {
        location: crate::plan::Location,
        error: Box<ExecError>,
    },
    #[error(transparent)]
    Context(#[from] crate::context::ContextError),
    #[error(transparent)]
    Layer(#[from] crate::layer::LayerError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("base image {base}: {message}")]
    Base { base: String, message: String },
    /// A shared-cache layer that fails its checks when its bytes are needed.
    #[error("{message}")]
    Cache { message: String },
    /// The I/O error is part of the message, not a `source()`: a cause chain printed whole
    /// shows each OS error once.
    #[error("cannot read {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{what} is not supported yet")]
    Unsupported { what: String },
}

impl ExecError {
    /// This error as one of the plan item written at `location`, unless it already names one.
    pub fn at(self, location: &crate::plan::Location) -> ExecError {
        match self {
            located @ (ExecError::Input { .. } | ExecError::At { .. }) => located,
            error => ExecError::At {
                location: location.clone(),
                error: Box::new(error),
            },
        }
    }

    /// Where the failing plan item was written, and the message without it.
    pub fn location(&self) -> Option<(&crate::plan::Location, String)> {
        match self {
            ExecError::Input { location, message } => Some((location, message.clone())),
            ExecError::At { location, error } => Some((location, error.to_string())),
            _ => None,
        }
    }
}

/// How layers are written; all of it enters the cache keys.
#[derive(Clone)]
pub struct ExecOptions {
    pub compression: Compression,
    /// `SOURCE_DATE_EPOCH`: file mtimes and the config's `created`.
    pub source_date_epoch: u64,
    /// Ignore the step cache (layers are still written to the store).
    pub no_cache: bool,
    /// How to reach registries for `FROM`/`COPY --from` images (not part of cache keys: the
    /// pulled content's digests are).
    pub registry: Option<std::sync::Arc<crate::registry::Client>>,
    /// When registry bases are (re-)resolved and may be downloaded.
    pub pull: PullPolicy,
    /// `--jobs`: gzip workers per layer (default: the machine's parallelism). Not part of
    /// cache keys: the bytes do not depend on it.
    pub compress_threads: Option<usize>,
    /// `--normalize-modes`: context files get 0644 (0755 when executable) and directories
    /// 0755 instead of their host bits, so builds do not depend on the checkout's umask. Not
    /// part of cache keys by itself: the modes it gives are.
    pub normalize_modes: bool,
    /// Runs RUN steps; without one a RUN is a located "not supported yet" error.
    pub runner: Option<std::sync::Arc<dyn run::StepRunner>>,
    /// `--cache-from` / `--cache-to`: imported step records behind the store's, and the
    /// steps this build resolved, for export.
    pub cache: Option<std::sync::Arc<crate::cache::Session>>,
    /// `--add-host` and the `security.insecure` entitlement.
    pub run_settings: run::RunSettings,
}

impl ExecOptions {
    /// Gzip layers dated `source_date_epoch`, the step cache on, the default pull policy, no
    /// RUN runner, no shared cache, default RUN settings: `lade build` without flags.
    pub fn new(source_date_epoch: u64) -> ExecOptions {
        ExecOptions {
            compression: Compression::Gzip,
            source_date_epoch,
            no_cache: false,
            registry: None,
            pull: PullPolicy::default(),
            compress_threads: None,
            normalize_modes: false,
            runner: None,
            cache: None,
            run_settings: run::RunSettings::default(),
        }
    }
}

/// Downloads the base layers of `image` the store lacks (for outputs that need every byte).
pub fn fetch_image_layers(
    image: &BuiltImage,
    store: &Store,
    registry: Option<&crate::registry::Client>,
    pull: PullPolicy,
) -> Result<(), ExecError> {
    fetch_layers(
        &image.manifest.layers,
        image.base_origin.as_ref(),
        store,
        registry,
        pull,
    )
}

/// Progress reports from a running build; the CLI turns them into bars or lines.
pub trait Observer: Sync {
    fn step_started(&self, _name: &str) {}
    fn step_finished(&self, _name: &str, _layer: &LayerDigests, _cached: bool) {}
    /// A step misses the cache and runs, for `reason` (the first of its inputs that differs
    /// from the previous build of the same step); comes before its `step_started`.
    fn step_rebuilt(&self, _name: &str, _reason: &str) {}
    /// A line of its own (a warning, what was written where).
    fn note(&self, _line: &str) {}
    /// Output of a running step (a RUN's stdout and stderr), a chunk at a time.
    fn step_output(&self, _name: &str, _chunk: &[u8]) {}
}

/// An observer that reports nothing.
pub struct Quiet;
impl Observer for Quiet {}

/// Builds the plan's target stage and the stages it needs (only those), in waves: every
/// stage whose dependencies are built runs at once, its layer steps in parallel too.
pub fn build(
    plan: &Plan,
    context: &BuildContext,
    store: &Store,
    opts: &ExecOptions,
    observer: &dyn Observer,
) -> Result<BuiltImage, ExecError> {
    let needed = plan.needed_stages();
    let feeds_run = feeds_run(plan, &needed);
    let mut built: Vec<Option<BuiltImage>> = vec![None; plan.stages.len()];
    let file_cache = store.file_digest_cache();
    loop {
        let ready: Vec<usize> = (0..plan.stages.len())
            .filter(|&i| {
                needed[i]
                    && built[i].is_none()
                    && plan.stages[i].deps().iter().all(|&d| built[d].is_some())
            })
            .collect();
        if ready.is_empty() {
            break;
        }
        let results: Vec<(usize, BuiltImage)> = ready
            .par_iter()
            .map(|&i| {
                // Manifest annotations describe the result, not the stages it is built from.
                let annotations = (i == plan.target).then_some(&plan.annotations);
                let cx = stage::StageCx {
                    context,
                    built: &built,
                    store,
                    file_cache: &file_cache,
                    opts,
                    observer,
                    stage_index: i,
                    final_stage: i == plan.target,
                    feeds_run: feeds_run[i],
                };
                stage::build_stage(&plan.stages[i], annotations, &cx)
                    .map(|b| (i, b))
                    .map_err(|e| e.at(&plan.stages[i].location))
            })
            .collect::<Result<_, _>>()?;
        for (i, b) in results {
            built[i] = Some(b);
        }
    }
    tracing::debug!("stages built");
    file_cache.save()?;
    tracing::debug!("file digests saved");
    built[plan.target]
        .take()
        .ok_or_else(|| ExecError::Unsupported {
            what: "a stage graph with a cycle".into(),
        })
}

/// For each stage, whether a needed stage built FROM it (directly or through others) has a
/// RUN, whose lowerdirs are then every layer of this stage.
fn feeds_run(plan: &Plan, needed: &[bool]) -> Vec<bool> {
    let has_run = |s: &crate::plan::Stage| s.steps.iter().any(|s| matches!(s, Step::Run(_)));
    let mut feeds = vec![false; plan.stages.len()];
    // Bases come before the stages built on them in no guaranteed order: repeat until stable.
    loop {
        let mut changed = false;
        for (j, s) in plan.stages.iter().enumerate() {
            if let (true, crate::plan::Base::Stage { index }) = (needed[j], &s.base) {
                if (has_run(s) || feeds[j]) && !std::mem::replace(&mut feeds[*index], true) {
                    changed = true;
                }
            }
        }
        if !changed {
            return feeds;
        }
    }
}

/// Resolves a plan's layer steps to their cache keys without writing anything (`lade plan`).
/// Steps that read other stages, use `--chown`, download URLs, or look at a base image's
/// filesystem (COPY without `--link`, WORKDIR, on a stage not from scratch) have no key: only
/// a build knows their inputs.
pub fn cache_keys(
    plan: &Plan,
    context: &BuildContext,
    store: &Store,
    opts: &ExecOptions,
) -> Result<Vec<Vec<Option<Digest>>>, ExecError> {
    let file_cache = store.file_digest_cache();
    let scratch = BaseImage {
        name: "scratch".into(),
        config: ImageConfig::default(),
        layers: Vec::new(),
        origin: None,
    };
    let keys = plan
        .stages
        .iter()
        .map(|stage| {
            let plain = crate::plan::Stage {
                steps: stage
                    .steps
                    .iter()
                    .filter(|s| !needs_build(stage, s))
                    .cloned()
                    .collect(),
                ..stage.clone()
            };
            let sources =
                sources::Sources::prepare(&plain, context, &[], store, None, PullPolicy::Never)?;
            let mut fs = tree::StageFs::new(&scratch, store, None, PullPolicy::Never);
            stage
                .steps
                .iter()
                .map(|s| match s {
                    Step::Layer(l) if !needs_build(stage, s) => {
                        let r = files::resolve(l, &sources, &file_cache, opts, &mut fs)
                            .map_err(|e| e.at(&l.location))?;
                        fs.record(&r.entries);
                        Ok::<_, ExecError>(Some(r.key))
                    }
                    _ => Ok(None),
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .collect::<Result<Vec<_>, _>>()?;
    file_cache.save()?;
    Ok(keys)
}

/// Whether a step's key needs what only a build has: other stages, the base's accounts
/// (`--chown`), downloads (`ADD <URL>`), or the base's filesystem.
fn needs_build(stage: &crate::plan::Stage, step: &Step) -> bool {
    use crate::plan::FileSet;
    let Step::Layer(l) = step else { return false };
    let on_base = !matches!(stage.base, crate::plan::Base::Scratch);
    l.sources.iter().any(|s| match s {
        FileSet::Copy {
            from, chown, link, ..
        } => {
            !matches!(from, crate::plan::CopyFrom::Context) || chown.is_some() || (on_base && !link)
        }
        FileSet::Url { .. } => true,
        FileSet::Workdir { .. } => on_base,
        FileSet::Inline { chown, heredoc, .. } => chown.is_some() || (on_base && heredoc.is_some()),
        _ => false,
    })
}

fn write_or_reuse(
    mut r: ResolvedLayer,
    cx: &stage::StageCx<'_>,
    unpack: bool,
) -> Result<(LayerDigests, bool), ExecError> {
    let (store, opts, observer) = (cx.store, cx.opts, cx.observer);
    if let Some(hit) = stage::cached(&r.key, &r.name, cx) {
        observer.step_finished(&r.name, &hit, true);
        return Ok((hit, true));
    }
    observer.step_rebuilt(&r.name, &r.reason);
    observer.step_started(&r.name);
    files::materialize(&mut r)?;
    let name = r.name.clone();
    let key = r.key.clone();
    let digests = stage::write_entries(r.entries, opts, store, unpack)?;
    store.step_put(&key, &digests)?;
    stage::note_used(&key, &digests, cx);
    observer.step_finished(&name, &digests, false);
    Ok((digests, false))
}

fn assemble(
    stage: &crate::plan::Stage,
    base: BaseImage,
    layers: &[(LayerDigests, bool)],
    annotations: Option<&std::collections::BTreeMap<String, String>>,
    store: &Store,
    opts: &ExecOptions,
) -> Result<BuiltImage, ExecError> {
    let created = rfc3339(opts.source_date_epoch);
    let base_origin = base.origin;
    let mut image = base.config;
    // The base's ONBUILD triggers ran in the frontend; docker does not pass them on.
    image.config.on_build = None;
    image.created = Some(created.clone());
    image.os = stage.platform.os.clone();
    image.architecture = stage.platform.architecture.clone();
    image.variant = stage.platform.variant.clone();
    let mut manifest_layers = base.layers;
    let base_layers = manifest_layers.len();
    // One layer per layer step and per RUN, in step order.
    let mut built = layers.iter();
    let mut env_index = config::EnvIndex::default();
    for step in &stage.steps {
        match step {
            Step::Layer(_) | Step::Run(_) => {
                let (d, _) = built.next().expect("one layer per layer step and RUN");
                let created_by = match step {
                    Step::Run(r) => &r.created_by,
                    Step::Layer(l) => &l.created_by,
                    Step::Config(_) => unreachable!("matched above"),
                };
                // A RUN that changed nothing adds no layer, only its history entry, as
                // BuildKit's image exporter drops empty layers.
                let empty_layer =
                    matches!(step, Step::Run(_)) && d.diff_id == Digest::of(&[0; 1024]);
                if !empty_layer {
                    image.rootfs.diff_ids.push(d.diff_id.clone());
                    manifest_layers.push(Descriptor::new(
                        d.compression.oci_media_type(),
                        d.digest.clone(),
                        d.size,
                    ));
                }
                image.history.push(History {
                    created: Some(created.clone()),
                    created_by: Some(created_by.clone()),
                    comment: Some("lade".into()),
                    empty_layer,
                    ..Default::default()
                });
            }
            Step::Config(edit) => config::apply(&mut image, edit, &mut env_index),
        }
    }
    let config_bytes = canonical_json(&image).expect("config serialises");
    let config_digest = store.put_bytes(&config_bytes)?;
    let manifest = Manifest::oci(
        Descriptor::new(
            media_types::OCI_CONFIG,
            config_digest.clone(),
            config_bytes.len() as u64,
        ),
        manifest_layers,
        annotations.cloned(),
    );
    let manifest_bytes = canonical_json(&manifest).expect("manifest serialises");
    let manifest_digest = store.put_bytes(&manifest_bytes)?;
    Ok(BuiltImage {
        manifest,
        manifest_bytes,
        manifest_digest,
        config: image,
        config_digest,
        platform: stage.platform.clone(),
        cached: layers.iter().map(|(_, c)| *c).collect(),
        base_origin,
        base_layers,
    })
}
