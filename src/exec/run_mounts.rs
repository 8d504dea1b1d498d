//! The exec side of `RUN --mount`: what a bind (or a cache's `from`) reads becomes a layer of
//! its own, so the sandbox mounts an extracted, immutable directory and the RUN's cache key
//! takes the source's content digest. The layer is the source copied as `COPY --link
//! [--from=…] SOURCE /m` would copy it (the context's `.dockerignore` applies, symlinks never
//! leave the context or the stage), uncompressed, found again by its content key on the next
//! build. Cache, tmpfs, secret and ssh mounts need nothing here: their plan entry (ids, never
//! contents) is their whole identity.

use super::run::{LowerLayer, BIND_ENTRY};
use super::sources::Sources;
use super::stage::StageCx;
use super::{files, tree, write_or_reuse, ExecError, ExecOptions, Quiet};
use crate::layer::{Compression, LayerDigests};
use crate::path::ImagePath;
use crate::plan::{Base, CopyFrom, FileSet, LayerStep, RunMount, RunStep};

/// For each of `run`'s mounts, the layer of its source (binds, caches with `from`).
pub(super) fn mount_sources(
    run: &RunStep,
    sources: &Sources<'_>,
    cx: &StageCx<'_>,
    platform: &crate::image::Platform,
) -> Result<Vec<Option<LayerDigests>>, ExecError> {
    let mut out = Vec::with_capacity(run.mounts.len());
    for m in &run.mounts {
        let (from, source) = match m {
            RunMount::Bind { from, source, .. } => {
                (from.clone().unwrap_or(CopyFrom::Context), source.as_deref())
            }
            RunMount::Cache {
                from: Some(from),
                source,
                ..
            } => (from.clone(), source.as_deref()),
            _ => {
                out.push(None);
                continue;
            }
        };
        out.push(Some(source_layer(
            run, from, source, sources, cx, platform,
        )?));
    }
    Ok(out)
}

/// The layer holding `source` of `from` at [`BIND_ENTRY`].
fn source_layer(
    run: &RunStep,
    from: CopyFrom,
    source: Option<&str>,
    sources: &Sources<'_>,
    cx: &StageCx<'_>,
    platform: &crate::image::Platform,
) -> Result<LayerDigests, ExecError> {
    let src = match source.map(|s| s.trim_start_matches('/')) {
        None | Some("") => ".".to_string(),
        Some(s) => s.to_string(),
    };
    let step = LayerStep {
        name: format!("RUN --mount source {src}"),
        created_by: String::new(),
        sources: vec![FileSet::Copy {
            from,
            sources: vec![src],
            dest: ImagePath::parse_absolute(&format!("/{BIND_ENTRY}"))
                .expect("a constant absolute path"),
            dest_is_dir: false,
            exclude: Vec::new(),
            parents: false,
            chown: None,
            chmod: None,
            unpack_archives: false,
            link: true,
            origin: run.location.clone(),
        }],
        location: run.location.clone(),
    };
    // Written uncompressed: it only ever feeds a mount, never an image.
    let opts = ExecOptions {
        compression: Compression::None,
        ..cx.opts.clone()
    };
    let empty = super::load_base_with(
        &Base::Scratch,
        platform,
        cx.store,
        opts.registry.as_deref(),
        opts.pull,
    )?;
    let mut fs = tree::StageFs::new(&empty, cx.store, opts.registry.as_deref(), opts.pull);
    let resolved = files::resolve(&step, sources, cx.file_cache, &opts, &mut fs)
        .map_err(|e| e.at(&run.location))?;
    drop(fs);
    // Not a step of the image: quiet, and not exported to a shared cache.
    let opts = ExecOptions {
        cache: None,
        ..opts
    };
    let quiet = StageCx {
        opts: &opts,
        observer: &Quiet,
        ..*cx
    };
    let (digests, _) = write_or_reuse(resolved, &quiet, true).map_err(|e| e.at(&run.location))?;
    Ok(digests)
}

/// The sandbox's view of a source layer.
pub(super) fn lower(d: &LayerDigests) -> LowerLayer {
    LowerLayer {
        diff_id: d.diff_id.clone(),
        blob: d.digest.clone(),
        media_type: d.compression.oci_media_type().to_string(),
    }
}
