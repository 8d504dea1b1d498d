//! Runs a plan: loads base images, resolves each layer step's files against the context,
//! derives content-based cache keys, writes (or reuses) layers in parallel, applies config
//! edits, and assembles the image documents into the store. Knows no output formats.

mod base;
mod config;
mod files;
mod time;

pub use base::{load_base, BaseImage};
pub use files::ResolvedLayer;
pub use time::rfc3339;

use crate::context::BuildContext;
use crate::digest::Digest;
use crate::image::{
    canonical_json, media_types, Descriptor, History, ImageConfig, Manifest, Platform,
};
use crate::layer::{Compression, LayerDigests, LayerOptions};
use crate::plan::{Plan, Step};
use crate::store::Store;
use rayon::prelude::*;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("{origin}: {message}")]
    Input { origin: String, message: String },
    #[error(transparent)]
    Context(#[from] crate::context::ContextError),
    #[error(transparent)]
    Layer(#[from] crate::layer::LayerError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("base image {base}: {message}")]
    Base { base: String, message: String },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} is not supported yet")]
    Unsupported { what: String },
}

/// How layers are written; all of it enters the cache keys.
#[derive(Debug, Clone, Copy)]
pub struct ExecOptions {
    pub compression: Compression,
    /// `SOURCE_DATE_EPOCH`: file mtimes and the config's `created`.
    pub source_date_epoch: u64,
    /// Ignore the step cache (layers are still written to the store).
    pub no_cache: bool,
}

/// What the build of one stage produced; everything it names is in the store.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    pub manifest: Manifest,
    pub manifest_bytes: Vec<u8>,
    pub manifest_digest: Digest,
    pub config: ImageConfig,
    pub config_digest: Digest,
    pub platform: Platform,
    /// One per layer step of the plan (base layers excluded): was it reused from the cache?
    pub cached: Vec<bool>,
}

/// Progress reports from a running build; the CLI turns them into bars or lines.
pub trait Observer: Sync {
    fn step_started(&self, _name: &str) {}
    fn step_finished(&self, _name: &str, _layer: &LayerDigests, _cached: bool) {}
}

/// An observer that reports nothing.
pub struct Quiet;
impl Observer for Quiet {}

/// Builds the plan's target stage.
pub fn build(
    plan: &Plan,
    context: &BuildContext,
    store: &Store,
    opts: &ExecOptions,
    observer: &dyn Observer,
) -> Result<BuiltImage, ExecError> {
    let stage = &plan.stages[plan.target];
    if plan.stages.len() != 1 {
        return Err(ExecError::Unsupported {
            what: "building multi-stage plans".into(),
        });
    }
    let base = load_base(&stage.base, &stage.platform, store)?;
    let file_cache = store.file_digest_cache();

    // Resolve every layer step first (cheap: stat + cached digests), then write the layers
    // that the cache lacks, in parallel; the result does not depend on the order of work.
    let layer_steps: Vec<(usize, &crate::plan::LayerStep)> = stage
        .steps
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            if let Step::Layer(l) = s {
                Some((i, l))
            } else {
                None
            }
        })
        .collect();
    if let Some(run) =
        stage
            .steps
            .iter()
            .find_map(|s| if let Step::Run(r) = s { Some(r) } else { None })
    {
        return Err(ExecError::Input {
            origin: run.origin.clone(),
            message: "RUN is not supported yet".into(),
        });
    }
    let resolved: Vec<ResolvedLayer> = layer_steps
        .par_iter()
        .map(|(_, step)| files::resolve(step, context, &file_cache, opts))
        .collect::<Result<_, _>>()?;
    let layers: Vec<(LayerDigests, bool)> = resolved
        .into_par_iter()
        .map(|r| write_or_reuse(r, store, opts, observer))
        .collect::<Result<_, _>>()?;
    file_cache.save()?;

    assemble(stage, base, &layers, store, opts)
}

/// Resolves a plan's layer steps to their cache keys without writing anything (`lade plan`).
pub fn cache_keys(
    plan: &Plan,
    context: &BuildContext,
    store: &Store,
    opts: &ExecOptions,
) -> Result<Vec<Vec<Option<Digest>>>, ExecError> {
    let file_cache = store.file_digest_cache();
    let keys = plan
        .stages
        .iter()
        .map(|stage| {
            stage
                .steps
                .iter()
                .map(|s| match s {
                    Step::Layer(l) => {
                        files::resolve(l, context, &file_cache, opts).map(|r| Some(r.key))
                    }
                    _ => Ok(None),
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .collect::<Result<Vec<_>, _>>()?;
    file_cache.save()?;
    Ok(keys)
}

fn write_or_reuse(
    r: ResolvedLayer,
    store: &Store,
    opts: &ExecOptions,
    observer: &dyn Observer,
) -> Result<(LayerDigests, bool), ExecError> {
    if !opts.no_cache {
        if let Some(hit) = store
            .step_get::<LayerDigests>(&r.key)
            .filter(|d| store.has_blob(&d.digest))
        {
            observer.step_finished(&r.name, &hit, true);
            return Ok((hit, true));
        }
    }
    observer.step_started(&r.name);
    let name = r.name.clone();
    let key = r.key.clone();
    let writer = store.blob_writer()?;
    let (writer, digests) = crate::layer::write_layer(
        r.entries,
        LayerOptions {
            compression: opts.compression,
            mtime: opts.source_date_epoch,
        },
        writer,
    )?;
    let (digest, _) = writer.commit()?;
    debug_assert_eq!(digest, digests.digest);
    store.step_put(&key, &digests)?;
    observer.step_finished(&name, &digests, false);
    Ok((digests, false))
}

fn assemble(
    stage: &crate::plan::Stage,
    base: BaseImage,
    layers: &[(LayerDigests, bool)],
    store: &Store,
    opts: &ExecOptions,
) -> Result<BuiltImage, ExecError> {
    let created = rfc3339(opts.source_date_epoch);
    let mut image = base.config;
    image.created = Some(created.clone());
    image.os = stage.platform.os.clone();
    image.architecture = stage.platform.architecture.clone();
    image.variant = stage.platform.variant.clone();
    let mut manifest_layers = base.layers;
    let mut built = layers.iter();
    for step in &stage.steps {
        match step {
            Step::Layer(l) => {
                let (d, _) = built.next().expect("one layer per layer step");
                image.rootfs.diff_ids.push(d.diff_id.clone());
                manifest_layers.push(Descriptor::new(
                    d.compression.oci_media_type(),
                    d.digest.clone(),
                    d.size,
                ));
                image.history.push(History {
                    created: Some(created.clone()),
                    created_by: Some(l.created_by.clone()),
                    comment: Some("lade".into()),
                    ..Default::default()
                });
            }
            Step::Config(edit) => config::apply(&mut image, edit),
            Step::Run(_) => unreachable!("rejected before any layer was written"),
        }
    }
    let config_bytes = canonical_json(&image).expect("config serialises");
    let config_digest = store.put_bytes(&config_bytes)?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(media_types::OCI_MANIFEST.into()),
        config: Descriptor::new(
            media_types::OCI_CONFIG,
            config_digest.clone(),
            config_bytes.len() as u64,
        ),
        layers: manifest_layers,
        annotations: None,
    };
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
    })
}
