//! Deterministic layer tarballs: entries in, one streaming pass out (tar → sha256 diff_id →
//! compression → sha256 digest → sink). Also the safe extractor for base-image layers.

use crate::digest::Digest;
use crate::path::ImagePath;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

/// How a layer blob is compressed; fixed settings per variant so output bytes are pinned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    Gzip,
    Zstd,
    None,
}

impl Compression {
    pub fn oci_media_type(self) -> &'static str {
        use crate::image::media_types::*;
        match self {
            Compression::Gzip => OCI_LAYER_GZIP,
            Compression::Zstd => OCI_LAYER_ZSTD,
            Compression::None => OCI_LAYER_TAR,
        }
    }
}

/// Where a regular file's bytes come from.
#[derive(Debug, Clone)]
pub enum FileSource {
    /// A file on the host, read when the layer is written.
    Host(PathBuf),
    /// Bytes lade generated or took from an archive.
    Bytes(Arc<Vec<u8>>),
}

#[derive(Debug, Clone)]
pub enum EntryKind {
    Dir,
    /// A regular file. `link_key` = (dev, ino) when the host file has other hard links: all
    /// entries of a layer sharing a key are written as one file plus hard links to it.
    File {
        source: FileSource,
        size: u64,
        link_key: Option<(u64, u64)>,
    },
    Symlink {
        target: Vec<u8>,
    },
    /// An explicit hard link to another path of the same layer.
    Hardlink {
        target: ImagePath,
    },
    /// Deletes `path` from lower layers (written as `.wh.<name>`).
    Whiteout,
    /// Hides everything lower layers have below the directory `path` (`.wh..wh..opq`).
    OpaqueWhiteout,
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub path: ImagePath,
    pub kind: EntryKind,
    /// Permission bits including setuid/setgid/sticky (`& 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u64,
    /// Extended attributes, written in key order as PAX `SCHILY.xattr.*` records.
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

#[derive(Debug, Clone, Copy)]
pub struct LayerOptions {
    pub compression: Compression,
    /// mtime of directories the writer adds itself (missing parents).
    pub mtime: u64,
}

/// The identity of a written layer blob.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LayerDigests {
    /// sha256 of the compressed blob.
    pub digest: Digest,
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
    /// Size of the compressed blob.
    pub size: u64,
    pub compression: Compression,
}

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("{path}: file name {name:?} is reserved for whiteouts (.wh. prefix) and cannot be put in a layer")]
    WhiteoutName { path: String, name: String },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} changed size while it was being read ({expected} → {actual} bytes)")]
    Changed {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    #[error("writing layer: {0}")]
    Write(#[source] std::io::Error),
    #[error("hard link {path} points to {target}, which is not in the layer")]
    DanglingHardlink { path: String, target: String },
}

/// Writes one layer from `entries` (any order; later duplicates of a path replace earlier
/// ones) to `sink`, sorted by path bytes with missing parent directories added.
pub fn write_layer<W: Write>(
    entries: Vec<Entry>,
    opts: LayerOptions,
    sink: W,
) -> Result<(W, LayerDigests), LayerError> {
    writer::write_layer(entries, opts, sink)
}

mod pgzip;
mod tarfmt;
mod writer;

/// Options for `extract_layer` (placeholder until the layer branch lands).
#[derive(Debug, Clone, Default)]
pub struct ExtractOptions {
    pub allow_devices: bool,
    pub preserve_owner: bool,
}

/// Unpacks a layer blob into `root` (placeholder until the layer branch lands).
pub fn extract_layer<R: std::io::Read>(
    blob: R,
    compression: Compression,
    root: &std::path::Path,
    opts: &ExtractOptions,
) -> Result<(), LayerError> {
    let _ = (blob, compression, root, opts);
    todo!("layer extractor")
}

/// Reads one file's content from a layer blob (placeholder until the layer branch lands).
pub fn read_file_from_layer<R: std::io::Read>(
    blob: R,
    compression: Compression,
    path: &ImagePath,
) -> Result<Option<Vec<u8>>, LayerError> {
    let _ = (blob, compression, path);
    todo!("layer reader")
}
