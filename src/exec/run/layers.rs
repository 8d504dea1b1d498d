//! Extracted layers: each layer blob unpacked once, safely, into `<store>/run/layers/<hex of
//! diff_id>` with whiteouts in overlay form, so the directory can be an overlay lowerdir, and
//! reused by every later RUN. Extraction goes to a temp directory that is renamed into place:
//! two processes may race, one rename wins and the other's copy is dropped.

use super::{LowerLayer, RunError};
use crate::layer::{extract_layer, ExtractOptions};
use crate::store::Store;
use std::path::PathBuf;

/// The directory holding `layer` extracted, extracting it first if needed.
pub fn extracted(store: &Store, layer: &LowerLayer) -> Result<PathBuf, RunError> {
    let dir = store.root().join("run").join("layers");
    let dest = dir.join(layer.diff_id.hex());
    if dest.is_dir() {
        return Ok(dest);
    }
    std::fs::create_dir_all(&dir).map_err(|e| super::executor::sandbox(&dir, e))?;
    let tmp =
        crate::store::scratch_dir_in(&dir, ".x-").map_err(|e| super::executor::sandbox(&dir, e))?;
    let blob = store
        .open_blob(&layer.blob)
        .map_err(|e| RunError::Sandbox(e.to_string()))?;
    let root = rustix::process::geteuid().is_root();
    let opts = ExtractOptions {
        allow_devices: root,
        preserve_owner: root,
        overlay_whiteouts: true,
    };
    let compression = crate::exec::sources::compression_of(&layer.media_type);
    extract_layer(
        std::io::BufReader::new(blob),
        compression,
        tmp.path(),
        &opts,
    )
    .map_err(|e| RunError::Sandbox(format!("extracting layer {}: {e}", layer.diff_id)))?;
    // The temp directory is 0700; a lowerdir's root is the image's `/`.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))
        .map_err(|e| super::executor::sandbox(tmp.path(), e))?;
    match crate::store::rename_into_place(tmp.path(), &dest) {
        Ok(()) => {
            let _ = tmp.keep();
            Ok(dest)
        }
        // Another process renamed its copy first (the destination is a non-empty directory).
        Err(_) if dest.is_dir() => Ok(dest),
        Err(e) => Err(super::executor::sandbox(&dest, e)),
    }
}
