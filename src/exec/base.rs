//! Base images: scratch, an OCI layout directory, or an OCI archive; their blobs are copied
//! into the store (verified) so the output stage finds every layer there.

use super::ExecError;
use crate::digest::Digest;
use crate::image::{media_types, Descriptor, ImageConfig, Index, Manifest, Platform};
use crate::plan::Base;
use crate::store::Store;
use std::path::Path;

/// The starting point of a stage: its config and layers (all blobs in the store).
#[derive(Debug, Clone)]
pub struct BaseImage {
    pub config: ImageConfig,
    pub layers: Vec<Descriptor>,
}

pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// An image read whole from a layout, archive or registry: its exact manifest bytes too, so
/// it can be pushed or re-exported under the same digest.
#[derive(Debug, Clone)]
pub struct ImportedImage {
    pub manifest_bytes: Vec<u8>,
    pub manifest_digest: Digest,
    pub manifest: Manifest,
    pub config: ImageConfig,
}

pub fn load_base(
    base: &Base,
    platform: &Platform,
    store: &Store,
    registry: Option<&crate::registry::Client>,
) -> Result<BaseImage, ExecError> {
    if matches!(base, Base::Scratch) {
        return Ok(BaseImage {
            config: ImageConfig {
                architecture: platform.architecture.clone(),
                os: platform.os.clone(),
                variant: platform.variant.clone(),
                ..Default::default()
            },
            layers: Vec::new(),
        });
    }
    let imported = import_image(base, platform, store, registry)?;
    let layers = imported
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
    Ok(BaseImage {
        config: imported.config,
        layers,
    })
}

fn describe(base: &Base) -> String {
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
            load_layout(dir, tag.as_deref(), platform, store).map_err(err)
        }
        Base::OciArchive { file, tag } => {
            // Unpack the archive (safely) into a temp dir of the store, then read it as a layout.
            let tmp = tempfile::Builder::new()
                .prefix("archive-")
                .tempdir_in(store.root().join("tmp"))
                .map_err(|e| err(e.to_string()))?;
            let f = std::fs::File::open(file).map_err(|e| err(e.to_string()))?;
            crate::layer::extract_layer(
                std::io::BufReader::new(f),
                crate::layer::Compression::None,
                tmp.path(),
                &crate::layer::ExtractOptions::default(),
            )
            .map_err(|e| err(e.to_string()))?;
            load_layout(tmp.path(), tag.as_deref(), platform, store).map_err(err)
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

fn load_layout(
    dir: &Path,
    tag: Option<&str>,
    platform: &Platform,
    store: &Store,
) -> Result<ImportedImage, String> {
    let read = |rel: &Path| {
        std::fs::read(dir.join(rel)).map_err(|e| format!("{}: {e}", dir.join(rel).display()))
    };
    let index: Index = serde_json::from_slice(&read(Path::new("index.json"))?)
        .map_err(|e| format!("index.json: {e}"))?;
    let desc = select_in_layout_index(&index, tag, platform)?;
    let blob = |d: &Digest| dir.join("blobs").join(d.algorithm()).join(d.hex());
    let import = |d: &Descriptor| -> Result<Vec<u8>, String> {
        let mut f =
            std::fs::File::open(blob(&d.digest)).map_err(|e| format!("blob {}: {e}", d.digest))?;
        store
            .import_blob(&mut f, &d.digest, Some(d.size))
            .map_err(|e| e.to_string())?;
        store.read_blob(&d.digest).map_err(|e| e.to_string())
    };
    let manifest_desc = resolve_index(desc, platform, &import)?;
    let manifest: Manifest = serde_json::from_slice(&import(&manifest_desc)?)
        .map_err(|e| format!("manifest {}: {e}", manifest_desc.digest))?;
    let config: ImageConfig = serde_json::from_slice(&import(&manifest.config)?)
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
        let mut f =
            std::fs::File::open(blob(&l.digest)).map_err(|e| format!("layer {}: {e}", l.digest))?;
        store
            .import_blob(&mut f, &l.digest, Some(l.size))
            .map_err(|e| e.to_string())?;
        oci_layer_type(&l.media_type)?;
    }
    let manifest_bytes = store
        .read_blob(&manifest_desc.digest)
        .map_err(|e| e.to_string())?;
    Ok(ImportedImage {
        manifest_bytes,
        manifest_digest: manifest_desc.digest.clone(),
        manifest,
        config,
    })
}

/// The entry of a layout's `index.json` that `tag` names (or the only one, or the one for
/// `platform`).
fn select_in_layout_index<'i>(
    index: &'i Index,
    tag: Option<&str>,
    platform: &Platform,
) -> Result<&'i Descriptor, String> {
    let candidates: Vec<&Descriptor> = match tag {
        Some(t) => index
            .manifests
            .iter()
            .filter(|d| {
                d.annotations
                    .as_ref()
                    .and_then(|a| a.get(REF_NAME))
                    .is_some_and(|r| r == t)
            })
            .collect(),
        None => index.manifests.iter().collect(),
    };
    Ok(match candidates.as_slice() {
        [] => {
            return Err(format!(
                "no image tagged {:?} in index.json",
                tag.unwrap_or("")
            ))
        }
        [one] => *one,
        many => many
            .iter()
            .copied()
            .find(|d| d.platform.as_ref().is_some_and(|p| platform.matches(p)))
            .ok_or_else(|| {
                format!(
                    "{} images in index.json and none for {platform}; name one with :TAG",
                    many.len()
                )
            })?,
    })
}

/// Follows an index (or Docker manifest list) to the manifest for `platform`.
pub fn resolve_index(
    desc: &Descriptor,
    platform: &Platform,
    import: &dyn Fn(&Descriptor) -> Result<Vec<u8>, String>,
) -> Result<Descriptor, String> {
    match desc.media_type.as_str() {
        media_types::OCI_MANIFEST | media_types::DOCKER_MANIFEST => Ok(desc.clone()),
        media_types::OCI_INDEX | media_types::DOCKER_MANIFEST_LIST => {
            let index: Index = serde_json::from_slice(&import(desc)?)
                .map_err(|e| format!("index {}: {e}", desc.digest))?;
            let m = index
                .manifests
                .iter()
                .find(|m| m.platform.as_ref().is_some_and(|p| platform.matches(p)))
                .ok_or_else(|| format!("no manifest for {platform} in index {}", desc.digest))?;
            resolve_index(m, platform, import)
        }
        media_types::DOCKER_SCHEMA1 | media_types::DOCKER_SCHEMA1_SIGNED => Err(
            "Docker schema 1 manifests are not supported; re-push the image with a current tool"
                .into(),
        ),
        other => Err(format!("unsupported manifest media type {other}")),
    }
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

/// The configuration of a base image, reading only its index, manifest and config (no
/// layers): what the Dockerfile frontend needs while lowering (the base's `Env` for variable
/// expansion, its `OnBuild` triggers), like BuildKit's image meta resolver. Registry images
/// have their manifest and config stored; layers are pulled later by [`load_base`].
pub fn base_config(
    base: &Base,
    platform: &Platform,
    store: &Store,
    registry: Option<&crate::registry::Client>,
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
            let read = |rel: &str| {
                std::fs::read(dir.join(rel))
                    .map_err(|e| format!("{}: {e}", dir.join(rel).display()))
            };
            config_in_layout(&read, tag.as_deref(), platform)
        }
        Base::OciArchive { file, tag } => {
            // Each read scans the archive for one member; nothing is unpacked.
            let read = |rel: &str| -> Result<Vec<u8>, String> {
                let path = crate::path::ImagePath::parse_absolute(&format!("/{rel}"))
                    .map_err(|e| e.to_string())?;
                let f = std::fs::File::open(file).map_err(|e| e.to_string())?;
                crate::layer::read_file_from_layer(
                    std::io::BufReader::new(f),
                    crate::layer::Compression::None,
                    &path,
                )
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("{rel} is not in the archive"))
            };
            config_in_layout(&read, tag.as_deref(), platform)
        }
        Base::Registry { reference } => {
            let client = registry.ok_or_else(|| err("no registry client configured".into()))?;
            let r = crate::registry::Reference::parse(reference).map_err(|e| err(e.to_string()))?;
            let resolved = client
                .resolve(store, &r, platform)
                .map_err(|e| err(e.to_string()))?;
            serde_json::from_slice(&resolved.config_bytes).map_err(|e| format!("config: {e}"))
        }
    };
    config.map_err(err)
}

/// The config of the image a layout (read through `read`, by path relative to its root)
/// holds for `tag` and `platform`; every document read is checked against its digest.
fn config_in_layout(
    read: &dyn Fn(&str) -> Result<Vec<u8>, String>,
    tag: Option<&str>,
    platform: &Platform,
) -> Result<ImageConfig, String> {
    let index: Index =
        serde_json::from_slice(&read("index.json")?).map_err(|e| format!("index.json: {e}"))?;
    let blob = |d: &Descriptor| -> Result<Vec<u8>, String> {
        let bytes = read(&format!(
            "blobs/{}/{}",
            d.digest.algorithm(),
            d.digest.hex()
        ))?;
        if Digest::of(&bytes) != d.digest {
            return Err(format!("blob {} does not match its digest", d.digest));
        }
        Ok(bytes)
    };
    let desc = select_in_layout_index(&index, tag, platform)?;
    let manifest_desc = resolve_index(desc, platform, &blob)?;
    let manifest: Manifest = serde_json::from_slice(&blob(&manifest_desc)?)
        .map_err(|e| format!("manifest {}: {e}", manifest_desc.digest))?;
    serde_json::from_slice(&blob(&manifest.config)?)
        .map_err(|e| format!("config {}: {e}", manifest.config.digest))
}
