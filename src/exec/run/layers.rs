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
    // The directory is filed under the diff_id: hash what is extracted, in the same pass, so a
    // layer whose content is not its diff_id never enters the cache. An uncompressed blob
    // whose digest is its diff_id was verified when it entered the store: no second hash.
    let compression = crate::exec::sources::compression_of(&layer.media_type);
    let verified = compression == Compression::None && layer.blob == layer.diff_id;
    let stream = decompress(std::io::BufReader::new(blob), compression);
    let (tmp, actual) = unpack(store, stream, !verified)
        .map_err(|e| RunError::Sandbox(format!("extracting layer {}: {e}", layer.diff_id)))?;
    let actual = actual.unwrap_or_else(|| layer.diff_id.clone());
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
/// Returns it with, when `hash`, the sha256 of the whole stream, hashed in the same pass: the
/// directory is filed under that diff_id, so only what was hashed is what is extracted.
fn unpack(
    store: &Store,
    tar: impl Read,
    hash: bool,
) -> Result<(crate::store::OwnedTempDir, Option<Digest>), String> {
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
    if !hash {
        extract_layer(tar, Compression::None, tmp.path(), &opts).map_err(|e| e.to_string())?;
        return Ok((tmp, None));
    }
    let mut r = DiffIdReader::new(tar);
    extract_layer(&mut r, Compression::None, tmp.path(), &opts).map_err(|e| e.to_string())?;
    let diff_id = r.finish().map_err(|e| format!("reading the layer: {e}"))?;
    Ok((tmp, Some(diff_id)))
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
/// (and gunzipping) the blob back. The stream is not hashed again: the writer's hash is the
/// diff_id, and the unpacking got every byte of it unless a write to the pipe failed, which
/// [`Unpacking::finish`] refuses.
pub struct Unpacking {
    thread: std::thread::JoinHandle<Result<crate::store::OwnedTempDir, String>>,
    broken: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// The writing end of the pipe, noting a failed write (after which the layer writer drops
/// it and the unpacking sees the stream end early).
struct PipeEnd {
    pipe: std::io::PipeWriter,
    broken: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl std::io::Write for PipeEnd {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let r = self.pipe.write(buf);
        if r.is_err() {
            self.broken.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        r
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.pipe.flush()
    }
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
            let r = unpack(&store, &mut reader, false);
            // Drain what is left so the writer never blocks on a reader that gave up.
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
            r.map(|(tmp, _)| tmp)
        })?;
    let broken = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let end = PipeEnd {
        pipe: writer,
        broken: std::sync::Arc::clone(&broken),
    };
    Ok((Box::new(end), Unpacking { thread, broken }))
}

impl Unpacking {
    /// Waits for the unpacking and files it under `diff_id`, the layer's as its writer
    /// computed it. Call only once the layer was written whole (the writer dropped its end).
    pub fn finish(self, store: &Store, diff_id: &Digest) -> Result<PathBuf, RunError> {
        let tmp = self
            .thread
            .join()
            .map_err(|_| RunError::Sandbox("the layer unpacking thread panicked".into()))?
            .map_err(|e| RunError::Sandbox(format!("unpacking layer {diff_id}: {e}")))?;
        if self.broken.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(RunError::Sandbox(format!(
                "unpacking layer {diff_id}: the layer's stream reached it only in part"
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

        // An uncompressed blob is its own diff_id (verified by the store, not hashed again);
        // claimed with another one it is hashed and refused all the same.
        let w = store.blob_writer().unwrap();
        let (w, d) = write_layer(
            vec![entry("/u", EntryKind::Dir)],
            LayerOptions::new(Compression::None, 0),
            w,
        )
        .unwrap();
        w.commit().unwrap();
        let plain = |diff_id: &crate::digest::Digest| LowerLayer {
            diff_id: diff_id.clone(),
            blob: d.digest.clone(),
            media_type: Compression::None.oci_media_type().to_string(),
        };
        assert!(extracted(&store, &plain(&claimed)).is_err());
        assert!(extracted(&store, &plain(&d.diff_id))
            .unwrap()
            .join("u")
            .is_dir());
    }
}
