//! Extracted layers: each layer blob unpacked once, safely, into `<store>/run/layers/<hex of
//! diff_id>` with whiteouts in overlay form, so the directory can be an overlay lowerdir, and
//! reused by every later RUN. Extraction goes to a temp directory that is renamed into place:
//! two processes may race, one rename wins and the other's copy is dropped.

use super::{LowerLayer, RunError};
use crate::layer::{decompress, extract_layer, Compression, DiffIdReader, ExtractOptions};
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
    // The directory is filed under the diff_id: hash what is extracted, in the same pass, so a
    // layer whose content is not its diff_id never enters the cache. An uncompressed blob
    // whose digest is its diff_id was verified when it entered the store: no second hash.
    let compression = crate::exec::sources::compression_of(&layer.media_type);
    let stream = decompress(std::io::BufReader::new(blob), compression);
    let extract_err = |e| RunError::Sandbox(format!("extracting layer {}: {e}", layer.diff_id));
    let actual = if compression == Compression::None && layer.blob == layer.diff_id {
        extract_layer(stream, Compression::None, tmp.path(), &opts).map_err(extract_err)?;
        layer.diff_id.clone()
    } else {
        let mut r = DiffIdReader::new(stream);
        extract_layer(&mut r, Compression::None, tmp.path(), &opts).map_err(extract_err)?;
        r.finish()
            .map_err(|e| RunError::Sandbox(format!("reading layer {}: {e}", layer.blob)))?
    };
    if actual != layer.diff_id {
        return Err(RunError::Sandbox(format!(
            "layer {} does not match its diff_id: its uncompressed content is {actual}, \
             the image says {}",
            layer.blob, layer.diff_id
        )));
    }
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
