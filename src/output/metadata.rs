//! The `--metadata-file` document (BuildKit's keys plus lade's layer list) and small files
//! like `--iidfile`.

use super::Artifact;
use crate::image::media_types;
use crate::image::BuiltImage;
use serde_json::{json, Value};
use std::path::Path;

pub fn metadata_json(artifact: &Artifact, tags: &[String]) -> Value {
    let mut m = match artifact.image() {
        Some(image) => image_json(image),
        None => json!({
            "containerimage.digest": artifact.top().digest,
            "containerimage.descriptor": artifact.top(),
            "lade.platforms": artifact.images.iter().map(image_json).collect::<Vec<_>>(),
        }),
    };
    m["lade.tags"] = json!(tags);
    if !tags.is_empty() {
        m["image.name"] = json!(tags.join(","));
    }
    m
}

/// One image's keys: its digests, descriptor and layers.
fn image_json(image: &BuiltImage) -> Value {
    let layers: Vec<Value> = image
        .manifest
        .layers
        .iter()
        .zip(&image.config.rootfs.diff_ids)
        .map(|(l, diff_id)| json!({"mediaType": l.media_type, "digest": l.digest, "size": l.size, "diffID": diff_id}))
        .collect();
    json!({
        "containerimage.config.digest": image.config_digest,
        "containerimage.digest": image.manifest_digest,
        "containerimage.descriptor": {
            "mediaType": media_types::OCI_MANIFEST,
            "digest": image.manifest_digest,
            "size": image.manifest_bytes.len(),
            "platform": image.platform,
        },
        "lade.layers": layers,
    })
}

/// Writes a small file atomically (temp file beside it, then rename).
pub fn write_small_file(path: &Path, content: &[u8]) -> std::io::Result<()> {
    let path = if path.parent().is_some_and(|p| p.as_os_str().is_empty()) {
        Path::new(".").join(path)
    } else {
        path.to_path_buf()
    };
    crate::store::write_atomic(&path, content)
}
