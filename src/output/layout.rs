//! Adding an image to an OCI layout directory (created when missing). Blobs are copied in
//! under temp names and renamed; `index.json` is replaced atomically, so readers never see
//! a manifest whose blobs are missing.

use super::{split_tag, Artifact, OutputError};
use crate::image::{canonical_json, media_types, Index};
use crate::store::Store;
use std::collections::BTreeMap;
use std::path::Path;

const REF_NAME: &str = "org.opencontainers.image.ref.name";

pub fn add(
    dir: &Path,
    artifact: &Artifact,
    tags: &[String],
    store: &Store,
) -> Result<(), OutputError> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| OutputError::Io { path: p, source }
    };
    let blobs = dir.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs).map_err(io(&blobs))?;
    for d in artifact.blobs() {
        let dest = blobs.join(d.hex());
        if dest.exists() {
            continue;
        }
        let tmp = crate::store::temp_file_in(&blobs).map_err(io(&blobs))?;
        std::fs::copy(store.blob_path(d), tmp.path()).map_err(io(&store.blob_path(d)))?;
        tmp.persist(&dest).map_err(|e| io(&dest)(e.error))?;
    }
    let layout_file = dir.join("oci-layout");
    if !layout_file.exists() {
        crate::store::write_atomic(&layout_file, br#"{"imageLayoutVersion":"1.0.0"}"#)
            .map_err(io(&layout_file))?;
    }
    let index_path = dir.join("index.json");
    let mut index = match std::fs::read(&index_path) {
        Ok(b) => serde_json::from_slice::<Index>(&b).map_err(|e| OutputError::Layout {
            path: index_path.clone(),
            message: e.to_string(),
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Index {
            schema_version: 2,
            media_type: Some(media_types::OCI_INDEX.into()),
            manifests: vec![],
            annotations: None,
        },
        Err(e) => return Err(io(&index_path)(e)),
    };
    let desc = artifact.top();
    if tags.is_empty()
        && !index
            .manifests
            .iter()
            .any(|m| m.digest == desc.digest && m.annotations.is_none())
    {
        index.manifests.push(desc.clone());
    }
    for t in tags {
        let (_, tag) = split_tag(t)?;
        // A tag names one image: drop whatever it named before.
        index.manifests.retain(|m| {
            m.annotations
                .as_ref()
                .and_then(|a| a.get(REF_NAME))
                .is_none_or(|r| r != tag)
        });
        let mut d = desc.clone();
        d.annotations = Some(BTreeMap::from([(REF_NAME.to_string(), tag.to_string())]));
        index.manifests.push(d);
    }
    crate::store::write_atomic(
        &index_path,
        &canonical_json(&index).expect("index serialises"),
    )
    .map_err(io(&index_path))
}
