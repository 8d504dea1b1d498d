//! Base images: scratch, an OCI layout directory, an OCI archive, or a registry image. Blobs
//! of layouts and archives are copied into the store (verified); of a registry image only
//! the manifest and config are fetched, its layers when something reads them
//! ([`super::fetch_layers`]): a push to the same registry mounts them instead.

use super::pull::{resolve_registry, PullPolicy};
use super::ExecError;
use crate::digest::Digest;
use crate::image::{media_types, Descriptor, ImageConfig, ImageLayout, Manifest, Platform};
use crate::plan::Base;
use crate::registry::Reference;
use crate::store::Store;

/// The starting point of a stage: its config and layers.
#[derive(Debug, Clone)]
pub struct BaseImage {
    /// How errors name the image (`oci:DIR:TAG`, a reference, `stage N`).
    pub name: String,
    pub config: ImageConfig,
    pub layers: Vec<Descriptor>,
    /// The registry image these layers come from; those not in the store yet are fetched
    /// from it on first use. `None`: every layer is in the store.
    pub origin: Option<Reference>,
}

/// An image read whole from a layout, archive or registry: its exact manifest bytes too, so
/// it can be pushed or re-exported under the same digest.
#[derive(Debug, Clone)]
pub struct ImportedImage {
    pub manifest_bytes: Vec<u8>,
    pub manifest_digest: Digest,
    pub manifest: Manifest,
    pub config: ImageConfig,
}

/// [`load_base_with`] the default pull policy.
pub fn load_base(
    base: &Base,
    platform: &Platform,
    store: &Store,
    registry: Option<&crate::registry::Client>,
) -> Result<BaseImage, ExecError> {
    load_base_with(base, platform, store, registry, PullPolicy::default())
}

/// A stage's base: registry images resolved as `pull` says (their layers not downloaded),
/// layouts and archives copied into the store.
pub fn load_base_with(
    base: &Base,
    platform: &Platform,
    store: &Store,
    registry: Option<&crate::registry::Client>,
    pull: PullPolicy,
) -> Result<BaseImage, ExecError> {
    if matches!(base, Base::Scratch) {
        return Ok(BaseImage {
            name: describe(base),
            config: ImageConfig {
                architecture: platform.architecture.clone(),
                os: platform.os.clone(),
                variant: platform.variant.clone(),
                ..Default::default()
            },
            layers: Vec::new(),
            origin: None,
        });
    }
    let (imported, origin) = match base {
        Base::Registry { reference } => {
            let (image, r) = resolve_registry(reference, platform, store, registry, pull).map_err(
                |message| ExecError::Base {
                    base: describe(base),
                    message,
                },
            )?;
            (image, Some(r))
        }
        _ => (import_image(base, platform, store, registry)?, None),
    };
    let layers: Vec<Descriptor> = imported
        .manifest
        .layers
        .iter()
        .map(|l| {
            Ok(Descriptor::new(
                oci_layer_type(&l.media_type).map_err(|message| ExecError::Base {
                    base: describe(base),
                    message,
                })?,
                l.digest.clone(),
                l.size,
            ))
        })
        .collect::<Result<_, ExecError>>()?;
    super::verify::check_count(&describe(base), &layers, &imported.config)?;
    Ok(BaseImage {
        name: describe(base),
        config: imported.config,
        layers,
        origin,
    })
}

/// How messages name a base image.
pub(super) fn describe(base: &Base) -> String {
    match base {
        Base::Scratch => "scratch".into(),
        Base::OciLayout { dir, tag } => format!(
            "oci:{}{}",
            dir.display(),
            tag.as_ref().map_or(String::new(), |t| format!(":{t}"))
        ),
        Base::OciArchive { file, tag } => format!(
            "oci-archive:{}{}",
            file.display(),
            tag.as_ref().map_or(String::new(), |t| format!(":{t}"))
        ),
        Base::Registry { reference } => reference.clone(),
        Base::Stage { index } => format!("stage {index}"),
    }
}

/// Reads an image (manifest, config, every layer) into the store.
pub fn import_image(
    base: &Base,
    platform: &Platform,
    store: &Store,
    registry: Option<&crate::registry::Client>,
) -> Result<ImportedImage, ExecError> {
    let err = |message: String| ExecError::Base {
        base: describe(base),
        message,
    };
    match base {
        Base::OciLayout { dir, tag } => {
            let i = load_layout(&ImageLayout::dir(dir), tag.as_deref(), platform, store)
                .map_err(err)?;
            super::verify::check_count(&describe(base), &i.manifest.layers, &i.config)?;
            Ok(i)
        }
        Base::OciArchive { file, tag } => {
            // Read in place: the tar's headers say where each blob lies; nothing is unpacked.
            let layout = ImageLayout::archive(file).map_err(|e| err(e.to_string()))?;
            let i = load_layout(&layout, tag.as_deref(), platform, store).map_err(err)?;
            super::verify::check_count(&describe(base), &i.manifest.layers, &i.config)?;
            Ok(i)
        }
        Base::Registry { reference } => {
            let client = match registry {
                Some(c) => c,
                None => return Err(err("no registry client configured".into())),
            };
            let r = crate::registry::Reference::parse(reference).map_err(|e| err(e.to_string()))?;
            let pulled = client
                .pull(
                    store,
                    &r,
                    &crate::registry::PullOptions {
                        platform: platform.clone(),
                        jobs: 4,
                    },
                )
                .map_err(|e| err(e.to_string()))?;
            let image = pulled.image;
            let config: ImageConfig = serde_json::from_slice(&image.config_bytes)
                .map_err(|e| err(format!("config: {e}")))?;
            super::verify::check_count(&describe(base), &image.manifest.layers, &config)?;
            Ok(ImportedImage {
                manifest_bytes: image.manifest_bytes,
                manifest_digest: image.manifest_digest,
                manifest: image.manifest,
                config,
            })
        }
        Base::Scratch | Base::Stage { .. } => Err(err("not an importable image".into())),
    }
}

/// The image manifest digest a registry base resolves to for `platform`, as the build
/// resolved it (a tag this process already checked is not looked up again).
pub fn registry_base_digest(
    reference: &str,
    platform: &Platform,
    store: &Store,
    registry: Option<&crate::registry::Client>,
    pull: PullPolicy,
) -> Result<Digest, ExecError> {
    resolve_registry(reference, platform, store, registry, pull)
        .map(|(image, _)| image.manifest_digest)
        .map_err(|message| ExecError::Base {
            base: reference.to_string(),
            message,
        })
}

/// The config of a base image, reading only its index, manifest and config (never a layer),
/// for the Dockerfile frontend: the base's ENV for expansion and its ONBUILD triggers.
/// Registry images are resolved as `pull` allows, like the build itself does.
pub fn base_config(
    base: &Base,
    platform: &Platform,
    store: &Store,
    registry: Option<&crate::registry::Client>,
    pull: PullPolicy,
) -> Result<ImageConfig, ExecError> {
    let err = |message: String| ExecError::Base {
        base: describe(base),
        message,
    };
    let config = match base {
        Base::Scratch | Base::Stage { .. } => {
            return Err(err("has no image configuration to read".into()))
        }
        Base::OciLayout { dir, tag } => {
            config_in_layout(&ImageLayout::dir(dir), tag.as_deref(), platform)
        }
        Base::OciArchive { file, tag } => ImageLayout::archive(file)
            .map_err(|e| format!("{}: {e}", file.display()))
            .and_then(|l| config_in_layout(&l, tag.as_deref(), platform)),
        Base::Registry { reference } => {
            resolve_registry(reference, platform, store, registry, pull)
                .map(|(image, _)| image.config)
        }
    };
    config.map_err(err)
}

/// The config of the image a layout holds for `tag` and `platform`; every document read is
/// checked against its descriptor.
fn config_in_layout(
    layout: &ImageLayout,
    tag: Option<&str>,
    platform: &Platform,
) -> Result<ImageConfig, String> {
    let (manifest_desc, manifest_bytes) = layout.resolve(tag, platform)?;
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| format!("manifest {}: {e}", manifest_desc.digest))?;
    serde_json::from_slice(&layout.read_blob(&manifest.config)?)
        .map_err(|e| format!("config {}: {e}", manifest.config.digest))
}

/// Copies an image of a layout (manifest, config, layers) into the store, verified.
fn load_layout(
    layout: &ImageLayout,
    tag: Option<&str>,
    platform: &Platform,
    store: &Store,
) -> Result<ImportedImage, String> {
    let (manifest_desc, manifest_bytes) = layout.resolve(tag, platform)?;
    store
        .put_bytes(&manifest_bytes)
        .map_err(|e| e.to_string())?;
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| format!("manifest {}: {e}", manifest_desc.digest))?;
    let config_bytes = layout.read_blob(&manifest.config)?;
    store.put_bytes(&config_bytes).map_err(|e| e.to_string())?;
    let config: ImageConfig = serde_json::from_slice(&config_bytes)
        .map_err(|e| format!("config {}: {e}", manifest.config.digest))?;
    if !platform.matches(&Platform {
        os: config.os.clone(),
        architecture: config.architecture.clone(),
        variant: config.variant.clone(),
    }) {
        return Err(format!(
            "image is {}/{}, not {platform}",
            config.os, config.architecture
        ));
    }
    for l in &manifest.layers {
        oci_layer_type(&l.media_type)?;
        if store.has_blob(&l.digest) {
            continue;
        }
        let mut r = layout
            .open_blob_at(&l.digest, 0)
            .map_err(|e| format!("layer {}: {e}", l.digest))?;
        store
            .import_blob(&mut r, &l.digest, Some(l.size))
            .map_err(|e| e.to_string())?;
    }
    Ok(ImportedImage {
        manifest_bytes,
        manifest_digest: manifest_desc.digest.clone(),
        manifest,
        config,
    })
}

/// OCI media type for a base layer (Docker's gzip layers are the same bytes).
fn oci_layer_type(mt: &str) -> Result<&'static str, String> {
    Ok(match mt {
        media_types::OCI_LAYER_GZIP | media_types::DOCKER_LAYER_GZIP => media_types::OCI_LAYER_GZIP,
        media_types::OCI_LAYER_ZSTD => media_types::OCI_LAYER_ZSTD,
        media_types::OCI_LAYER_TAR | "application/vnd.docker.image.rootfs.diff.tar" => {
            media_types::OCI_LAYER_TAR
        }
        other => return Err(format!("unsupported layer media type {other}")),
    })
}
