//! `lade diff`: why two images' digests differ. Config differences first (field by field,
//! `Env` and `Labels` by name), then the flattened file trees (whiteouts applied), each
//! differing entry with the layer that introduced it in each image.
//!
//! - `open`: reading an image from a registry, a layout or an archive.
//! - `tree`: flattening its layers.
//! - `compare`: config and tree comparison.
//! - `render`: the text report (JSON is the serialised [`ImageDiff`]).

mod compare;
pub(crate) mod open;
mod render;
pub(crate) mod tree;

pub use compare::{Change, ConfigChange, FileChange};
pub use open::{open, OpenOptions, OpenedImage};
pub use render::render_text;
pub use tree::FileEntry;

use crate::digest::Digest;
use crate::image::Platform;
use crate::registry::{Client, ClientOptions};
use crate::store::Store;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error("{image}: {message}")]
    Image { image: String, message: String },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Two images to compare, and how to reach them.
pub struct DiffRequest {
    pub a: String,
    pub b: String,
    /// The image of this platform is picked from a multi-platform index.
    pub platform: Platform,
    pub store_root: PathBuf,
    pub registry: ClientOptions,
}

/// One side of the comparison.
#[derive(Debug, Clone, Serialize)]
pub struct ImageSummary {
    pub name: String,
    /// What the name points to (manifest, or index of a multi-platform image).
    pub digest: Digest,
    pub layers: Vec<Digest>,
}

/// The differences between two images; empty lists and `identical` when their digests are
/// equal.
#[derive(Debug, Clone, Serialize)]
pub struct ImageDiff {
    pub a: ImageSummary,
    pub b: ImageSummary,
    pub identical: bool,
    pub config: Vec<ConfigChange>,
    pub files: Vec<FileChange>,
    /// What else differs when config and files do not explain the digests: `history[N]`
    /// entries, then the layer blobs (compression), then the manifest itself (annotations).
    pub other: Vec<ConfigChange>,
}

/// Opens both images of `req` and compares them.
pub fn diff(req: &DiffRequest) -> Result<ImageDiff, DiffError> {
    let store = Store::open(&req.store_root)?;
    let client: std::sync::OnceLock<Result<Arc<Client>, String>> = Default::default();
    let registry = || {
        client
            .get_or_init(|| {
                Client::new(req.registry.clone())
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .clone()
    };
    let opts = OpenOptions {
        platform: &req.platform,
        store: &store,
        registry: &registry,
    };
    let a = open(&req.a, &opts)?;
    let b = open(&req.b, &opts)?;
    compare(&a, &b)
}

fn summary(i: &OpenedImage) -> ImageSummary {
    ImageSummary {
        name: i.name.clone(),
        digest: i.digest.clone(),
        layers: i.layers.iter().map(|l| l.digest.clone()).collect(),
    }
}

/// Compares two opened images (their layers are read only when the digests differ).
pub fn compare(a: &OpenedImage, b: &OpenedImage) -> Result<ImageDiff, DiffError> {
    let mut out = ImageDiff {
        a: summary(a),
        b: summary(b),
        identical: a.digest == b.digest,
        config: Vec::new(),
        files: Vec::new(),
        other: Vec::new(),
    };
    if out.identical {
        return Ok(out);
    }
    out.config = compare::configs(&a.config, &b.config);
    a.fetch_layers()?;
    b.fetch_layers()?;
    let (ta, tb) = rayon::join(|| tree::flatten(a), || tree::flatten(b));
    out.files = compare::trees(&ta?, &tb?);
    if out.config.is_empty() && out.files.is_empty() {
        out.other = compare::histories(&a.config, &b.config);
    }
    if out.config.is_empty() && out.files.is_empty() && out.other.is_empty() {
        let json = |i: &OpenedImage| serde_json::to_value(&i.manifest).unwrap_or_default();
        let field = if out.a.layers != out.b.layers {
            "layers"
        } else if a.manifest_digest != b.manifest_digest {
            "manifest"
        } else {
            "index"
        };
        let value = |i: &OpenedImage, s: &ImageSummary| match field {
            "layers" => serde_json::to_value(&s.layers).unwrap_or_default(),
            "manifest" => json(i),
            _ => serde_json::Value::from(i.digest.to_string()),
        };
        out.other.push(ConfigChange {
            field: field.into(),
            a: Some(value(a, &out.a)),
            b: Some(value(b, &out.b)),
        });
    }
    Ok(out)
}
