//! Deterministic layer tarballs: entries in, one streaming pass out (tar → sha256 diff_id →
//! compression → sha256 digest → sink). Also the safe extractor for base-image layers.
//!
//! Table of contents:
//! - [`tar`](self::tar): hand-built ustar/PAX headers (the byte format, documented there).
//! - `plan`: entries → sorted tar members (dedup, parents, whiteouts, hard links).
//! - `writer`: the threaded streaming pipeline behind [`write_layer`].
//! - `compress`: pinned gzip (block-parallel) / zstd settings, [`decompress`].
//! - `reader`: tar parsing for layers from any tool; [`list_layer`], [`TarEntryInfo`].
//! - `extract`: [`extract_layer`], safe extraction inside a root.

mod compress;
mod diff_id;
mod extract;
mod plan;
mod reader;
mod tar;
mod writer;

pub use compress::decompress;
pub use diff_id::DiffIdReader;
pub use extract::{in_user_namespace, ExtractOptions};
pub use reader::{TarEntryInfo, TarKind};
// `SpecialKind` is defined below, next to `EntryKind`.
pub use writer::{default_threads, set_compression_limit, Tee};

use crate::digest::Digest;
use crate::path::ImagePath;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
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
    /// A FIFO or device node (ustar typeflag `6`, `3`, `4`); `major`/`minor` are written in
    /// the `devmajor`/`devminor` fields (0 for FIFOs).
    Special {
        kind: SpecialKind,
        major: u32,
        minor: u32,
    },
    /// Deletes `path` from lower layers (written as `.wh.<name>`).
    Whiteout,
    /// Hides everything lower layers have below the directory `path` (`.wh..wh..opq`).
    OpaqueWhiteout,
}

/// The kinds of special file a layer can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpecialKind {
    Fifo,
    CharDevice,
    BlockDevice,
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

impl LayerOptions {
    pub fn new(compression: Compression, mtime: u64) -> Self {
        LayerOptions { compression, mtime }
    }
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
    // I/O errors are in the messages, not `source()`s: a cause chain shows each OS error once.
    #[error("cannot read {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path} changed size while it was being read ({expected} → {actual} bytes)")]
    Changed {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    #[error("writing layer: {0}")]
    Write(std::io::Error),
    #[error("hard link {path} points to {target}, which is not in the layer")]
    DanglingHardlink { path: String, target: String },
    #[error("hard link {path} points to {target}, which is not a regular file")]
    HardlinkToNonFile { path: String, target: String },
    #[error("reading layer blob: {0}")]
    BlobRead(std::io::Error),
    #[error("malformed layer tar: {0}")]
    Malformed(String),
    #[error("unsupported in layers: {0}")]
    Unsupported(String),
    #[error("whiteout {entry:?} hides {target}, which no layer can hold; refusing the layer")]
    BadWhiteout { entry: String, target: &'static str },
    #[error("member {entry} is {what}; the limit is {limit}")]
    PathLimit {
        entry: String,
        what: String,
        limit: String,
    },
    /// Any of the above, naming the layer blob it came from.
    #[error("layer {layer}: {inner}")]
    InLayer {
        layer: String,
        inner: Box<LayerError>,
    },
    #[error("extracting {path}: {error}")]
    Extract { path: String, error: std::io::Error },
}

/// Writes one layer from `entries` (any order; later duplicates of a path replace earlier
/// ones) to `sink`, sorted by path bytes with missing parent directories added.
///
/// Rules (all deterministic; the byte format is described in the `tar` and `compress`
/// submodules):
/// - Members are sorted by tar name bytes (whiteout markers by their `.wh.` names), which
///   puts every directory before its contents. Missing parents are added as directories
///   with mode 0755, uid/gid 0 and `opts.mtime`. The root (empty path) is never a member.
/// - Files sharing a `link_key`, and explicit [`EntryKind::Hardlink`]s, form one group:
///   its first member in sorted order carries the data, the others are hard links to it. A
///   key used by a single entry yields a plain file.
/// - A path component starting with `.wh.` is rejected ([`LayerError::WhiteoutName`]), as
///   are hard links to paths outside the layer, before anything is written.
/// - The tar ends with two 512-byte zero blocks and nothing else (no padding to a 10 KiB
///   record as GNU tar does; every OCI/docker reader accepts this).
/// - Host files are opened and checked (regular file, length == `size`) before their header
///   is produced. A failure *after* data has been produced (unreadable file, file shrunk)
///   returns an error after part of the blob may have reached `sink`: callers write to a
///   temporary blob and discard it on error.
///
/// Threads: gzip blocks are compressed on [`default_threads`] workers; use
/// [`write_layer_with_threads`] to choose. The output never depends on the thread count.
pub fn write_layer<W: Write>(
    entries: Vec<Entry>,
    opts: LayerOptions,
    sink: W,
) -> Result<(W, LayerDigests), LayerError> {
    writer::write_layer_impl(entries, opts, default_threads(), sink, None)
}

/// [`write_layer`] with an explicit number of compression workers (≥ 1; 0 is taken as 1).
/// The bytes are identical for every value.
pub fn write_layer_with_threads<W: Write>(
    entries: Vec<Entry>,
    opts: LayerOptions,
    threads: usize,
    sink: W,
) -> Result<(W, LayerDigests), LayerError> {
    writer::write_layer_impl(entries, opts, threads, sink, None)
}

/// [`write_layer_with_threads`] that also writes the uncompressed tar stream (the bytes the
/// diff_id hashes) to `tee` as it is produced, e.g. to unpack the layer while it is being
/// compressed. `tee` is dropped when the stream ends, so its reader sees end-of-file; a
/// failing `tee` is dropped early and never fails the layer. On error the tee may have seen
/// part of the stream only.
pub fn write_layer_teed<W: Write>(
    entries: Vec<Entry>,
    opts: LayerOptions,
    threads: usize,
    sink: W,
    tee: Tee,
) -> Result<(W, LayerDigests), LayerError> {
    writer::write_layer_impl(entries, opts, threads, sink, Some(tee))
}

/// Writes `entries` as an uncompressed tar (a layer's bytes, `mtime` for the directories it
/// adds) to `sink` without hashing it: for output archives, whose digest nobody needs.
pub fn write_tar<W: Write>(entries: Vec<Entry>, mtime: u64, sink: W) -> Result<W, LayerError> {
    writer::write_tar_impl(entries, mtime, sink)
}

/// Extracts one layer blob into `root` (created if missing), applying whiteouts to what
/// earlier layers extracted there. Safe against hostile layers: nothing is ever created,
/// followed or linked outside `root`; see the `extract` submodule for the rules.
pub fn extract_layer<R: Read>(
    blob: R,
    compression: Compression,
    root: &Path,
    opts: &ExtractOptions,
) -> Result<(), LayerError> {
    extract::extract_tar(decompress(blob, compression), root, opts)
}

/// The members of a layer blob, in archive order (metadata only).
pub fn list_layer<R: Read>(
    blob: R,
    compression: Compression,
) -> Result<Vec<TarEntryInfo>, LayerError> {
    let mut r = reader::TarReader::new(decompress(blob, compression));
    let mut out = Vec::new();
    while let Some(info) = r.next_entry()? {
        out.push(info);
    }
    Ok(out)
}

/// The contents of the regular file `path` in this layer (the last member with that path
/// wins), `None` if the layer has no such member or it is a directory / special file.
/// Whiteouts are not interpreted (this looks at one layer). If the member is a symlink or a
/// hard link, returns [`LayerError::Unsupported`] naming the target, to be read instead
/// (the blob is read once, so earlier members are gone by then).
pub fn read_file_from_layer<R: Read>(
    blob: R,
    compression: Compression,
    path: &ImagePath,
) -> Result<Option<Vec<u8>>, LayerError> {
    extract::read_file(decompress(blob, compression), path)
}

/// The members of a layer blob, in archive order, each regular file with the sha256 of its
/// contents (`lade diff` compares contents without extracting anything).
pub fn list_layer_with_digests<R: Read>(
    blob: R,
    compression: Compression,
) -> Result<Vec<(TarEntryInfo, Option<Digest>)>, LayerError> {
    let mut out = Vec::new();
    for_each_member(blob, compression, |info, contents| {
        let digest = match contents {
            Some(r) => {
                let mut w = crate::digest::HashingWriter::new(std::io::sink());
                std::io::copy(r, &mut w)?;
                Some(w.finish().1)
            }
            None => None,
        };
        out.push((info, digest));
        Ok(())
    })?;
    Ok(out)
}

/// Calls `f` with every member of a layer blob, in archive order, and for a regular file a
/// reader of its contents (what `f` leaves unread is skipped).
pub fn for_each_member<R: Read>(
    blob: R,
    compression: Compression,
    mut f: impl FnMut(TarEntryInfo, Option<&mut dyn Read>) -> std::io::Result<()>,
) -> Result<(), LayerError> {
    let mut r = reader::TarReader::new(decompress(blob, compression));
    while let Some(info) = r.next_entry()? {
        let contents: Option<&mut dyn Read> = if info.kind == TarKind::File {
            Some(&mut r)
        } else {
            None
        };
        f(info, contents).map_err(LayerError::BlobRead)?;
    }
    Ok(())
}
