//! Opening an image to compare: a registry reference, `oci:DIR[:TAG]`,
//! `oci-archive:FILE[:TAG]` or `docker-archive:FILE`. Layouts and archives are read in place;
//! a registry image's manifest and config are fetched, its layers (into the store, those
//! already there are not) only when the comparison reads them.

use super::DiffError;
use crate::digest::Digest;
use crate::image::{media_types, ImageLayout, Manifest, Platform};
use crate::layer::Compression;
use crate::registry::{Client, Reference};
use crate::store::Store;
use std::io::Read;
use std::path::PathBuf;

/// Where a layer's blob can be read.
#[derive(Debug, Clone)]
pub(super) enum BlobAt {
    Store(Digest),
    /// A blob of a layout (directory or archive).
    Layout(Digest),
    /// A member of a `docker save` archive (`<hex>/layer.tar`, `blobs/sha256/<hex>`).
    Member(String),
}

/// One layer of an opened image.
#[derive(Debug, Clone)]
pub struct LayerRef {
    /// The blob digest (for a docker archive: the layer's diff_id).
    pub digest: Digest,
    pub(super) at: BlobAt,
    pub(super) compression: Option<Compression>,
}

/// An image opened for comparison.
pub struct OpenedImage {
    /// As the user named it.
    pub name: String,
    /// What the name points to: the manifest, or the index of a multi-platform image (the
    /// digest `lade build` reports and a registry serves).
    pub digest: Digest,
    /// The platform's image manifest (a docker archive has none: the config's digest).
    pub manifest_digest: Digest,
    pub manifest: Option<Manifest>,
    /// The config as stored (every field, also those lade does not model).
    pub config: serde_json::Value,
    pub layers: Vec<LayerRef>,
    layout: Option<ImageLayout>,
    store: Store,
    /// For a registry image: where its layers are fetched from when first read.
    origin: Option<(std::sync::Arc<Client>, Reference)>,
}

impl OpenedImage {
    /// Downloads the layers of a registry image the store lacks (nothing for other images).
    pub(super) fn fetch_layers(&self) -> Result<(), DiffError> {
        let Some((client, reference)) = &self.origin else {
            return Ok(());
        };
        let layers = self.manifest.as_ref().map_or(&[][..], |m| &m.layers[..]);
        client
            .fetch_blobs(&self.store, reference, layers, 4)
            .map_err(|e| DiffError::Image {
                image: self.name.clone(),
                message: e.to_string(),
            })?;
        Ok(())
    }

    /// Opens the blob of `layer`, decompressed.
    pub(super) fn open_layer(
        &self,
        layer: &LayerRef,
    ) -> Result<(Box<dyn Read + Send>, Compression), DiffError> {
        let err = |e: std::io::Error| DiffError::Image {
            image: self.name.clone(),
            message: format!("layer {}: {e}", layer.digest),
        };
        let open = || -> std::io::Result<Box<dyn Read + Send>> {
            Ok(match (&layer.at, &self.layout) {
                (BlobAt::Store(d), _) => Box::new(self.store.open_blob(d).map_err(|e| {
                    std::io::Error::new(std::io::ErrorKind::NotFound, e.to_string())
                })?),
                (BlobAt::Layout(d), Some(l)) => l.open_blob_at(d, 0)?,
                (BlobAt::Member(m), Some(l)) => l.open_at(m, 0)?,
                (_, None) => unreachable!("layout blobs come with their layout"),
            })
        };
        let compression = match layer.compression {
            Some(c) => c,
            None => sniff(&mut open().map_err(err)?).map_err(err)?,
        };
        Ok((open().map_err(err)?, compression))
    }
}

/// A layer's compression from its first bytes (docker archives do not say).
fn sniff(r: &mut dyn Read) -> std::io::Result<Compression> {
    let mut magic = [0u8; 4];
    let mut n = 0;
    while n < magic.len() {
        match r.read(&mut magic[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(match &magic[..n] {
        [0x1f, 0x8b, ..] => Compression::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd] => Compression::Zstd,
        _ => Compression::None,
    })
}

pub(crate) fn layer_compression(media_type: &str) -> Result<Compression, String> {
    Ok(match media_type {
        media_types::OCI_LAYER_GZIP | media_types::DOCKER_LAYER_GZIP => Compression::Gzip,
        media_types::OCI_LAYER_ZSTD => Compression::Zstd,
        media_types::OCI_LAYER_TAR | "application/vnd.docker.image.rootfs.diff.tar" => {
            Compression::None
        }
        other => return Err(format!("unsupported layer media type {other}")),
    })
}

/// How to reach what [`open`] may need.
pub struct OpenOptions<'a> {
    pub platform: &'a Platform,
    pub store: &'a Store,
    /// Made on first use by the caller's closure (only registry images need one).
    pub registry: &'a dyn Fn() -> Result<std::sync::Arc<Client>, String>,
}

/// Opens `name` (see the module doc); relative paths are taken from the working directory.
pub fn open(name: &str, opts: &OpenOptions) -> Result<OpenedImage, DiffError> {
    let err = |message: String| DiffError::Image {
        image: name.to_string(),
        message,
    };
    let split_tag = |rest: &str| -> (PathBuf, Option<String>) {
        match rest.rsplit_once(':') {
            Some((p, t)) if !t.contains('/') && !t.is_empty() => (p.into(), Some(t.to_string())),
            _ => (rest.into(), None),
        }
    };
    let (layout, tag) = if let Some(rest) = name.strip_prefix("oci:") {
        let (dir, tag) = split_tag(rest);
        (ImageLayout::dir(&dir), tag)
    } else if let Some(rest) = name.strip_prefix("oci-archive:") {
        let (file, tag) = split_tag(rest);
        let l = ImageLayout::archive(&file).map_err(|e| err(format!("{}: {e}", file.display())))?;
        (l, tag)
    } else if let Some(file) = name.strip_prefix("docker-archive:") {
        return open_docker_archive(name, file.as_ref(), opts.store);
    } else {
        return open_registry(name, opts);
    };
    let (desc, bytes) = layout.select(tag.as_deref(), opts.platform).map_err(&err)?;
    let (manifest_desc, manifest_bytes) = if desc.media_type == media_types::OCI_INDEX
        || desc.media_type == media_types::DOCKER_MANIFEST_LIST
    {
        layout
            .resolve(tag.as_deref(), opts.platform)
            .map_err(&err)?
    } else {
        (desc.clone(), bytes)
    };
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| err(format!("manifest {}: {e}", manifest_desc.digest)))?;
    let config = layout.read_blob(&manifest.config).map_err(&err)?;
    let config = serde_json::from_slice(&config)
        .map_err(|e| err(format!("config {}: {e}", manifest.config.digest)))?;
    let layers = manifest
        .layers
        .iter()
        .map(|l| {
            Ok(LayerRef {
                digest: l.digest.clone(),
                at: BlobAt::Layout(l.digest.clone()),
                compression: Some(layer_compression(&l.media_type)?),
            })
        })
        .collect::<Result<_, String>>()
        .map_err(&err)?;
    Ok(OpenedImage {
        name: name.to_string(),
        digest: desc.digest,
        manifest_digest: manifest_desc.digest,
        manifest: Some(manifest),
        config,
        layers,
        layout: Some(layout),
        store: opts.store.clone(),
        origin: None,
    })
}

fn open_registry(name: &str, opts: &OpenOptions) -> Result<OpenedImage, DiffError> {
    let err = |message: String| DiffError::Image {
        image: name.to_string(),
        message,
    };
    let r = Reference::parse(name).map_err(|e| err(e.to_string()))?;
    let client = (opts.registry)().map_err(&err)?;
    let image = client
        .resolve(opts.store, &r, opts.platform)
        .map_err(|e| err(e.to_string()))?;
    let config = serde_json::from_slice(&image.config_bytes)
        .map_err(|e| err(format!("config {}: {e}", image.manifest.config.digest)))?;
    let layers = image
        .manifest
        .layers
        .iter()
        .map(|l| {
            Ok(LayerRef {
                digest: l.digest.clone(),
                at: BlobAt::Store(l.digest.clone()),
                compression: Some(layer_compression(&l.media_type)?),
            })
        })
        .collect::<Result<_, String>>()
        .map_err(&err)?;
    Ok(OpenedImage {
        name: name.to_string(),
        digest: image.top_digest,
        manifest_digest: image.manifest_digest,
        manifest: Some(image.manifest),
        config,
        layers,
        layout: None,
        store: opts.store.clone(),
        origin: Some((client, r)),
    })
}

/// A `docker save` archive: `manifest.json` names the config and the layer members.
fn open_docker_archive(
    name: &str,
    file: &std::path::Path,
    store: &Store,
) -> Result<OpenedImage, DiffError> {
    let err = |message: String| DiffError::Image {
        image: name.to_string(),
        message,
    };
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Entry {
        config: String,
        layers: Vec<String>,
    }
    let layout = ImageLayout::archive(file).map_err(|e| err(format!("{}: {e}", file.display())))?;
    let entries: Vec<Entry> = serde_json::from_slice(&layout.read("manifest.json").map_err(&err)?)
        .map_err(|e| err(format!("manifest.json: {e}")))?;
    let entry = match entries.as_slice() {
        [one] => one,
        other => {
            return Err(err(format!(
                "manifest.json lists {} images; lade diff compares archives of one image",
                other.len()
            )))
        }
    };
    let config_bytes = layout.read(&entry.config).map_err(&err)?;
    let config: serde_json::Value =
        serde_json::from_slice(&config_bytes).map_err(|e| err(format!("{}: {e}", entry.config)))?;
    let diff_ids: Vec<Digest> = config["rootfs"]["diff_ids"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d.as_str().and_then(|s| s.parse().ok()))
                .collect()
        })
        .unwrap_or_default();
    if diff_ids.len() != entry.layers.len() {
        return Err(err(format!(
            "the config lists {} diff_ids for {} layers",
            diff_ids.len(),
            entry.layers.len()
        )));
    }
    let layers = entry
        .layers
        .iter()
        .zip(diff_ids)
        .map(|(member, digest)| LayerRef {
            digest,
            at: BlobAt::Member(member.clone()),
            compression: None,
        })
        .collect();
    let config_digest = Digest::of(&config_bytes);
    Ok(OpenedImage {
        name: name.to_string(),
        digest: config_digest.clone(),
        manifest_digest: config_digest,
        manifest: None,
        config,
        layers,
        layout: Some(layout),
        store: store.clone(),
        origin: None,
    })
}
