//! Adding an image to an OCI layout directory. Blobs are copied in under temp names and
//! renamed; `index.json` is replaced atomically, so readers never see a manifest whose blobs
//! are missing. A layout that does not exist yet is written whole into a temp directory
//! beside it and renamed into place, so a failed or interrupted build leaves no directory
//! (only blobs with no `index.json` would be left otherwise).

use super::{split_tag, Artifact, OutputError};
use crate::image::{canonical_json, media_types, Index};
use crate::store::Store;
use std::collections::BTreeMap;
use std::path::Path;

/// Name prefix of the directory a new layout is built in, beside its destination.
pub(super) const STAGING_PREFIX: &str = ".lade-layout-";

const REF_NAME: &str = "org.opencontainers.image.ref.name";

fn io(p: &Path) -> impl FnOnce(std::io::Error) -> OutputError {
    let p = p.to_path_buf();
    move |source| OutputError::Io { path: p, source }
}

pub fn add(
    dir: &Path,
    artifact: &Artifact,
    tags: &[String],
    store: &Store,
) -> Result<(), OutputError> {
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        _ => return add_into(dir, artifact, tags, store),
    }
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let staging = crate::store::temp_dir_in(parent, STAGING_PREFIX).map_err(io(parent))?;
    add_into(staging.path(), artifact, tags, store)?;
    // rename(2) also replaces a directory that appeared empty meanwhile; a non-empty one
    // makes it fail, and the staging directory goes with `staging`'s drop.
    crate::store::rename_into_place(staging.path(), dir).map_err(io(dir))?;
    // Moved into place: nothing is left for the drop to remove.
    let _ = staging.keep();
    Ok(())
}

/// Adds the image to the layout `dir`, creating what is missing in it.
fn add_into(
    dir: &Path,
    artifact: &Artifact,
    tags: &[String],
    store: &Store,
) -> Result<(), OutputError> {
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
