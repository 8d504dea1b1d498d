//! The layer writer: entries → sorted, deduplicated, parents added, hard links grouped →
//! tar stream (hashed: diff_id) → compressor (hashed: digest) → sink. Building the tar and
//! compressing run on two threads joined by a bounded channel of large buffers, so reading
//! files overlaps with compression and memory stays bounded whatever the file sizes.

use super::tarfmt::{self, Header};
use super::{Compression, Entry, EntryKind, FileSource, LayerDigests, LayerError, LayerOptions};
use crate::digest::{Hasher, HashingWriter};
use crate::path::ImagePath;
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::sync::mpsc;

/// Chunk size handed from the tar thread to the compressor.
const CHUNK: usize = 1 << 20;
/// gzip level: the `gzip -6` default, pinned (it is part of every layer digest). The block
/// layout is pinned too (`pgzip::BLOCK`).
const GZIP_LEVEL: u32 = 6;
/// zstd level, pinned; single-threaded so the frame layout is fixed.
const ZSTD_LEVEL: i32 = 3;

pub fn write_layer<W: Write>(
    entries: Vec<Entry>,
    opts: LayerOptions,
    sink: W,
) -> Result<(W, LayerDigests), LayerError> {
    let entries = prepare(entries, opts.mtime)?;
    let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(4);
    std::thread::scope(|s| {
        let producer = s.spawn(move || produce(&entries, tx));
        let consumed = consume(rx, opts.compression, sink);
        let produced = producer.join().expect("tar thread panicked");
        // A failed sink stops the tar thread too; report the sink's error, not the echo.
        let (sink, digest, size) = consumed?;
        let diff_id = produced?;
        let digest = digest.unwrap_or_else(|| diff_id.clone());
        Ok((
            sink,
            LayerDigests {
                digest,
                diff_id,
                size,
                compression: opts.compression,
            },
        ))
    })
}

/// Sorted by path bytes, one entry per path (the last given wins), every parent directory
/// present, hard-link groups resolved, reserved names rejected.
fn prepare(entries: Vec<Entry>, mtime: u64) -> Result<Vec<Entry>, LayerError> {
    let mut by_path: BTreeMap<Vec<u8>, Entry> = BTreeMap::new();
    for e in entries {
        if e.path.is_root() {
            continue;
        }
        let is_marker = matches!(e.kind, EntryKind::Whiteout | EntryKind::OpaqueWhiteout);
        if !is_marker && e.path.file_name().starts_with(b".wh.") {
            return Err(LayerError::WhiteoutName {
                path: e.path.display(),
                name: String::from_utf8_lossy(e.path.file_name()).into_owned(),
            });
        }
        by_path.insert(e.path.as_bytes().to_vec(), e);
    }
    let mut parents = Vec::new();
    for e in by_path.values() {
        let mut p = e.path.parent();
        while let Some(dir) = p.filter(|d| !d.is_root()) {
            if by_path.contains_key(dir.as_bytes()) {
                break;
            }
            p = dir.parent();
            parents.push(dir);
        }
    }
    for dir in parents {
        by_path.entry(dir.as_bytes().to_vec()).or_insert(Entry {
            path: dir,
            kind: EntryKind::Dir,
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime,
            xattrs: BTreeMap::new(),
        });
    }
    // Sort by path bytes, but a directory's children must follow it: "a/b" sorts after "a"
    // already, and "a-x" < "a/" byte-wise matches how tar tools order names.
    let mut out: Vec<Entry> = by_path.into_values().collect();
    let mut first_of: HashMap<(u64, u64), ImagePath> = HashMap::new();
    for e in &mut out {
        if let EntryKind::File {
            link_key: Some(k), ..
        } = &e.kind
        {
            let k = *k;
            match first_of.get(&k) {
                Some(target) => {
                    e.kind = EntryKind::Hardlink {
                        target: target.clone(),
                    }
                }
                None => {
                    first_of.insert(k, e.path.clone());
                }
            }
        }
    }
    Ok(out)
}

/// Writes the tar stream into chunks for the compressor; returns the diff_id.
fn produce(
    entries: &[Entry],
    tx: mpsc::SyncSender<Vec<u8>>,
) -> Result<crate::digest::Digest, LayerError> {
    let mut hasher = Hasher::new();
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK + 64 * 1024);
    // A closed channel means the compressor failed; its error is the one to report.
    let flush = |buf: &mut Vec<u8>, hasher: &mut Hasher| -> Result<(), LayerError> {
        hasher.update(buf);
        let full = std::mem::replace(buf, Vec::with_capacity(CHUNK + 64 * 1024));
        tx.send(full)
            .map_err(|_| LayerError::Write(std::io::Error::other("compressor stopped")))
    };
    for e in entries {
        let mut name = e.path.as_bytes().to_vec();
        let xattrs: Vec<(String, Vec<u8>)> = e
            .xattrs
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let (typeflag, size, link): (u8, u64, Vec<u8>) = match &e.kind {
            EntryKind::Dir => {
                name.push(b'/');
                (b'5', 0, Vec::new())
            }
            EntryKind::File { size, .. } => (b'0', *size, Vec::new()),
            EntryKind::Symlink { target } => (b'2', 0, target.clone()),
            EntryKind::Hardlink { target } => (b'1', 0, target.as_bytes().to_vec()),
            EntryKind::Whiteout => {
                name = whiteout_name(&e.path, None);
                (b'0', 0, Vec::new())
            }
            EntryKind::OpaqueWhiteout => {
                name = whiteout_name(&e.path, Some(b".wh..wh..opq"));
                (b'0', 0, Vec::new())
            }
        };
        tarfmt::encode(
            &Header {
                path: &name,
                typeflag,
                mode: e.mode & 0o7777,
                uid: e.uid,
                gid: e.gid,
                size,
                mtime: e.mtime,
                link: &link,
                xattrs: &xattrs,
            },
            &mut buf,
        );
        if let EntryKind::File { source, size, .. } = &e.kind {
            copy_content(source, *size, &mut buf, &mut |b| flush(b, &mut hasher))?;
            let pad = (512 - (*size % 512) as usize) % 512;
            buf.resize(buf.len() + pad, 0);
        }
        if buf.len() >= CHUNK {
            flush(&mut buf, &mut hasher)?;
        }
    }
    buf.resize(buf.len() + 1024, 0);
    flush(&mut buf, &mut hasher)?;
    Ok(hasher.finish())
}

fn whiteout_name(path: &ImagePath, opaque: Option<&[u8]>) -> Vec<u8> {
    let parent = path.parent().unwrap_or_default();
    let mut name = parent.as_bytes().to_vec();
    if !name.is_empty() {
        name.push(b'/');
    }
    match opaque {
        // The opaque marker lives inside the directory it hides.
        Some(marker) => {
            let mut n = path.as_bytes().to_vec();
            n.push(b'/');
            n.extend_from_slice(marker);
            return n;
        }
        None => {
            name.extend_from_slice(b".wh.");
            name.extend_from_slice(path.file_name());
        }
    }
    name
}

/// Appends exactly `size` bytes of `source` to `buf`, flushing full chunks on the way.
fn copy_content(
    source: &FileSource,
    size: u64,
    buf: &mut Vec<u8>,
    flush: &mut dyn FnMut(&mut Vec<u8>) -> Result<(), LayerError>,
) -> Result<(), LayerError> {
    match source {
        FileSource::Bytes(b) => {
            if b.len() as u64 != size {
                return Err(LayerError::Changed {
                    path: "<generated>".into(),
                    expected: size,
                    actual: b.len() as u64,
                });
            }
            for part in b.chunks(CHUNK) {
                buf.extend_from_slice(part);
                if buf.len() >= CHUNK {
                    flush(buf)?;
                }
            }
            Ok(())
        }
        FileSource::Host(path) => {
            let read_err = |source| LayerError::Read {
                path: path.clone(),
                source,
            };
            let mut f = std::fs::File::open(path).map_err(read_err)?;
            if !f.metadata().map_err(read_err)?.is_file() {
                return Err(read_err(std::io::Error::other("not a regular file")));
            }
            let mut left = size;
            while left > 0 {
                let start = buf.len();
                let want = (CHUNK.saturating_sub(start).max(64 * 1024) as u64).min(left) as usize;
                buf.resize(start + want, 0);
                let n = f.read(&mut buf[start..]).map_err(read_err)?;
                buf.truncate(start + n);
                if n == 0 {
                    return Err(LayerError::Changed {
                        path: path.clone(),
                        expected: size,
                        actual: size - left,
                    });
                }
                left -= n as u64;
                if buf.len() >= CHUNK {
                    flush(buf)?;
                }
            }
            let mut probe = [0u8; 1];
            if f.read(&mut probe).map_err(read_err)? != 0 {
                let actual = f.metadata().map(|m| m.len()).unwrap_or(size + 1);
                return Err(LayerError::Changed {
                    path: path.clone(),
                    expected: size,
                    actual,
                });
            }
            Ok(())
        }
    }
}

/// Compresses the chunks into `sink`, hashing the compressed bytes.
fn consume<W: Write>(
    rx: mpsc::Receiver<Vec<u8>>,
    compression: Compression,
    sink: W,
) -> Result<(W, Option<crate::digest::Digest>, u64), LayerError> {
    let w = LayerError::Write;
    if compression == Compression::None {
        // The blob is the tar itself: its digest is the diff_id, hashed once by the tar thread.
        let mut sink = sink;
        let mut size = 0u64;
        for chunk in rx {
            sink.write_all(&chunk).map_err(w)?;
            size += chunk.len() as u64;
        }
        sink.flush().map_err(w)?;
        return Ok((sink, None, size));
    }
    let out = HashingWriter::new(sink);
    let out = match compression {
        Compression::None => unreachable!("handled above"),
        Compression::Gzip => {
            let mut enc = super::pgzip::ParallelGzip::new(out, GZIP_LEVEL);
            for chunk in rx {
                enc.write_all(&chunk).map_err(w)?;
            }
            enc.finish().map_err(w)?
        }
        Compression::Zstd => {
            let mut enc = zstd::stream::write::Encoder::new(out, ZSTD_LEVEL).map_err(w)?;
            enc.include_checksum(false).map_err(w)?;
            for chunk in rx {
                enc.write_all(&chunk).map_err(w)?;
            }
            enc.finish().map_err(w)?
        }
    };
    let (mut sink, digest, size) = out.finish();
    sink.flush().map_err(w)?;
    Ok((sink, Some(digest), size))
}
