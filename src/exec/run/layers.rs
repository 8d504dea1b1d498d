//! Extracted layers: each layer blob unpacked once, safely, into `<store>/run/layers/<hex of
//! diff_id>` with whiteouts in overlay form, so the directory can be an overlay lowerdir, and
//! reused by every later RUN. Extraction goes to a temp directory that is renamed into place:
//! two processes may race, one rename wins and the other's copy is dropped.

use super::{LowerLayer, RunError};
use crate::digest::Digest;
use crate::layer::{decompress, extract_layer, Compression, DiffIdReader, ExtractOptions};
use crate::store::Store;
use std::io::Read;
use std::path::{Path, PathBuf};

fn layers_dir(store: &Store) -> PathBuf {
    store.root().join("run").join("layers")
}

/// The directory holding `layer` extracted, extracting it first if needed.
pub fn extracted(store: &Store, layer: &LowerLayer) -> Result<PathBuf, RunError> {
    let dest = layers_dir(store).join(layer.diff_id.hex());
    if dest.is_dir() {
        return Ok(dest);
    }
    let blob = store
        .open_blob(&layer.blob)
        .map_err(|e| RunError::Sandbox(e.to_string()))?;
    tracing::debug!(layer = %layer.diff_id, "extracting a layer from its blob");
    let (tmp, actual) = unpack(
        store,
        decompress(
            std::io::BufReader::new(blob),
            crate::exec::sources::compression_of(&layer.media_type),
        ),
    )
    .map_err(|e| RunError::Sandbox(format!("extracting layer {}: {e}", layer.diff_id)))?;
    if actual != layer.diff_id {
        return Err(RunError::Sandbox(format!(
            "layer {} does not match its diff_id: its uncompressed content is {actual}, \
             the image says {}",
            layer.blob, layer.diff_id
        )));
    }
    install(tmp, &dest)
}

/// Unpacks the tar stream `tar` into a fresh temp directory beside the extracted layers.
/// Returns it with the sha256 of the whole stream, hashed in the same pass: the directory is
/// filed under that diff_id, so only what was hashed is what is extracted.
fn unpack(store: &Store, tar: impl Read) -> Result<(crate::store::OwnedTempDir, Digest), String> {
    let dir = layers_dir(store);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let tmp =
        crate::store::scratch_dir_in(&dir, ".x-").map_err(|e| format!("{}: {e}", dir.display()))?;
    let root = rustix::process::geteuid().is_root();
    let opts = ExtractOptions {
        allow_devices: root,
        preserve_owner: root,
        overlay_whiteouts: true,
    };
    let mut r = DiffIdReader::new(tar);
    extract_layer(&mut r, Compression::None, tmp.path(), &opts).map_err(|e| e.to_string())?;
    let diff_id = r.finish().map_err(|e| format!("reading the layer: {e}"))?;
    Ok((tmp, diff_id))
}

/// Moves an unpacked layer to `dest`, its directory under its diff_id.
fn install(tmp: crate::store::OwnedTempDir, dest: &Path) -> Result<PathBuf, RunError> {
    // The temp directory is 0700; a lowerdir's root is the image's `/`.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))
        .map_err(|e| super::executor::sandbox(tmp.path(), e))?;
    match crate::store::rename_into_place(tmp.path(), dest) {
        Ok(()) => {
            let _ = tmp.keep();
            Ok(dest.to_path_buf())
        }
        // Another process renamed its copy first (the destination is a non-empty directory).
        Err(_) if dest.is_dir() => Ok(dest.to_path_buf()),
        Err(e) => Err(super::executor::sandbox(dest, e)),
    }
}

/// A layer being unpacked from its uncompressed tar stream while the stream is written
/// ([`crate::layer::write_layer_teed`]), so a later RUN finds it extracted without reading
/// (and gunzipping) the blob back.
pub struct Unpacking {
    thread: std::thread::JoinHandle<Result<(crate::store::OwnedTempDir, Digest), String>>,
}

/// Starts unpacking a layer into the store: the tar stream goes to the returned writer
/// (through a pipe; the unpacking thread reads the other end until the writer is dropped).
pub fn unpack_while_writing(store: &Store) -> std::io::Result<(crate::layer::Tee, Unpacking)> {
    let (reader, writer) = std::io::pipe()?;
    // A deeper pipe than the default 64 KiB: one pipeline buffer in flight.
    let _ = rustix::pipe::fcntl_setpipe_size(&writer, 1 << 20);
    let store = store.clone();
    let thread = std::thread::Builder::new()
        .name("lade-unpack".into())
        .spawn(move || {
            let mut reader = reader;
            let r = unpack(&store, &mut reader);
            // Drain what is left so the writer never blocks on a reader that gave up.
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
            r
        })?;
    Ok((Box::new(writer), Unpacking { thread }))
}

impl Unpacking {
    /// Waits for the unpacking and files it under `diff_id`, the layer's as its writer
    /// computed it. Call only once the layer was written whole (the writer dropped its end).
    pub fn finish(self, store: &Store, diff_id: &Digest) -> Result<PathBuf, RunError> {
        let (tmp, actual) = self
            .thread
            .join()
            .map_err(|_| RunError::Sandbox("the layer unpacking thread panicked".into()))?
            .map_err(|e| RunError::Sandbox(format!("unpacking layer {diff_id}: {e}")))?;
        if &actual != diff_id {
            return Err(RunError::Sandbox(format!(
                "unpacked layer is {actual}, its writer made {diff_id}"
            )));
        }
        let dest = layers_dir(store).join(diff_id.hex());
        if dest.is_dir() {
            return Ok(dest);
        }
        install(tmp, &dest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::{write_layer, Compression, Entry, EntryKind, FileSource, LayerOptions};
    use crate::path::ImagePath;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    use std::sync::Arc;

    fn entry(path: &str, kind: EntryKind) -> Entry {
        Entry {
            path: ImagePath::parse_absolute(path).unwrap(),
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
            xattrs: [("trusted.overlay.redirect".to_string(), b"/x".to_vec())]
                .into_iter()
                .collect(),
        }
    }

    #[test]
    fn layers_extract_once_with_whiteouts_in_overlay_form() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::open(t.path()).unwrap();
        let entries = vec![
            entry("/gone", EntryKind::Whiteout),
            entry("/d", EntryKind::Dir),
            entry("/d", EntryKind::OpaqueWhiteout),
            entry(
                "/d/f",
                EntryKind::File {
                    source: FileSource::Bytes(Arc::new(b"f".to_vec())),
                    size: 1,
                    link_key: None,
                },
            ),
        ];
        let w = store.blob_writer().unwrap();
        let (w, d) = write_layer(entries, LayerOptions::new(Compression::Gzip, 0), w).unwrap();
        w.commit().unwrap();
        let layer = LowerLayer {
            diff_id: d.diff_id.clone(),
            blob: d.digest,
            media_type: Compression::Gzip.oci_media_type().to_string(),
        };
        let dir = extracted(&store, &layer).unwrap();
        assert_eq!(dir, t.path().join("run/layers").join(d.diff_id.hex()));
        let wh = std::fs::symlink_metadata(dir.join("gone")).unwrap();
        assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
        assert!(crate::exec::run::lowers::is_opaque(&dir.join("d")));
        assert_eq!(std::fs::read(dir.join("d/f")).unwrap(), b"f");
        // The layer's own overlay xattrs are dropped.
        assert!(crate::exec::run::lowers::xattrs(&dir.join("d/f"))
            .unwrap()
            .is_empty());
        let redirect = rustix::fs::lgetxattr(
            dir.join("d/f").as_path(),
            "trusted.overlay.redirect",
            &mut [0u8; 16][..],
        );
        assert!(redirect.is_err());
        // Second call: the same directory, not extracted again.
        let ino = std::fs::metadata(&dir).unwrap().ino();
        assert_eq!(
            std::fs::metadata(extracted(&store, &layer).unwrap())
                .unwrap()
                .ino(),
            ino
        );
    }

    #[test]
    fn a_layer_whose_content_is_not_its_diff_id_is_refused_and_not_cached() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::open(t.path()).unwrap();
        let w = store.blob_writer().unwrap();
        let (w, d) = write_layer(
            vec![entry("/d", EntryKind::Dir)],
            LayerOptions::new(Compression::Gzip, 0),
            w,
        )
        .unwrap();
        w.commit().unwrap();
        let claimed = crate::digest::Digest::of(b"something else");
        let layer = LowerLayer {
            diff_id: claimed.clone(),
            blob: d.digest,
            media_type: Compression::Gzip.oci_media_type().to_string(),
        };
        let err = extracted(&store, &layer).unwrap_err().to_string();
        assert!(err.contains("does not match its diff_id"), "{err}");
        assert!(err.contains(&d.diff_id.to_string()), "{err}");
        assert!(!t.path().join("run/layers").join(claimed.hex()).exists());
    }
}
