//! Resolving a layer step: its file sets become layer entries, and their content digests
//! (from the file-digest cache or by hashing) become the step's cache key.

use super::sources::Sources;
use super::{ExecError, ExecOptions};
use crate::context::{ContextEntry, EntryKind as CtxKind};
use crate::digest::{ContentHash, Digest, Hasher};
use crate::layer::{Entry, EntryKind, FileSource};
use crate::path::ImagePath;
use crate::plan::{cache_key, Attrs, FileSet, LayerStep};
use crate::store::{FileDigestCache, FileStamp};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

/// A layer step ready to be written: its entries and its cache key.
pub struct ResolvedLayer {
    pub name: String,
    pub key: Digest,
    pub entries: Vec<Entry>,
    /// Directories that entries read from (unpacked ADD archives); removed when dropped.
    pub scratch: Vec<tempfile::TempDir>,
    /// Archive members keyed from the file-digest cache, read only if the layer is written.
    pub(super) deferred: Vec<Deferred>,
}

/// An entry whose bytes are still in an archive: `entries[index]` holds a placeholder.
pub(super) struct Deferred {
    index: usize,
    archive: std::path::PathBuf,
    name: String,
    origin: String,
}

/// What resolving keeps besides entries and digests.
#[derive(Default)]
struct Held {
    scratch: Vec<tempfile::TempDir>,
    deferred: Vec<Deferred>,
}

/// Version of the layer byte format; bump when the writer's output changes for equal input.
const LAYER_FORMAT: &str = "lade-layer-v2";

pub fn resolve(
    step: &LayerStep,
    sources: &Sources,
    cache: &FileDigestCache,
    opts: &ExecOptions,
) -> Result<ResolvedLayer, ExecError> {
    let mut entries = Vec::new();
    let mut content = Vec::new();
    let mut held = Held::default();
    for set in &step.sources {
        resolve_set(
            set,
            sources,
            cache,
            opts,
            &mut entries,
            &mut content,
            &mut held,
        )?;
    }
    // The inputs, as the layer will see them: path, type, attributes and content digest of
    // every entry, in order. Host paths and timestamps stay out.
    // Hard-link groups enter as "same file as <first path>", not as host inode numbers.
    let mut first_of_group: std::collections::HashMap<(u64, u64), &ImagePath> =
        std::collections::HashMap::new();
    let mut h = Hasher::new();
    for (e, d) in entries.iter().zip(&content) {
        h.update(e.path.as_bytes());
        h.update(&[0]);
        let kind = match &e.kind {
            EntryKind::Dir => "d".to_string(),
            EntryKind::File { size, link_key, .. } => {
                let group = link_key.map(|k| first_of_group.entry(k).or_insert(&e.path).display());
                format!("f{size}:{}", group.unwrap_or_default())
            }
            EntryKind::Symlink { target } => format!("l{}", String::from_utf8_lossy(target)),
            EntryKind::Hardlink { target } => format!("h{}", target.display()),
            EntryKind::Whiteout => "w".into(),
            EntryKind::OpaqueWhiteout => "o".into(),
        };
        h.update(format!("{kind}\0{:o}\0{}\0{}\0{}\0", e.mode, e.uid, e.gid, e.mtime).as_bytes());
        if let Some(d) = d {
            h.update(d.to_string().as_bytes());
        }
        h.update(b"\n");
    }
    let inputs = h.finish();
    let definition = (
        LAYER_FORMAT,
        opts.compression,
        opts.source_date_epoch,
        &step.sources,
    );
    Ok(ResolvedLayer {
        name: step.name.clone(),
        key: cache_key(&definition, None, &[inputs]),
        entries,
        scratch: held.scratch,
        deferred: held.deferred,
    })
}

/// Reads the archive members [`resolve`] keyed from the cache, before the layer is written.
pub(super) fn materialize(r: &mut ResolvedLayer) -> Result<(), ExecError> {
    let mut open: Option<(
        std::path::PathBuf,
        zip::ZipArchive<std::io::BufReader<std::fs::File>>,
    )> = None;
    for d in std::mem::take(&mut r.deferred) {
        let bad = |m: String| ExecError::Input {
            origin: d.origin.clone(),
            message: format!("{}: {m}", d.archive.display()),
        };
        if open.as_ref().is_none_or(|(p, _)| *p != d.archive) {
            let file = std::fs::File::open(&d.archive).map_err(|e| bad(e.to_string()))?;
            let zip = zip::ZipArchive::new(std::io::BufReader::new(file))
                .map_err(|e| bad(e.to_string()))?;
            open = Some((d.archive.clone(), zip));
        }
        let (_, zip) = open.as_mut().expect("opened above");
        let mut bytes = Vec::new();
        zip.by_name(&d.name)
            .map_err(|e| bad(format!("entry {}: {e}", d.name)))?
            .read_to_end(&mut bytes)
            .map_err(|e| bad(format!("entry {}: {e}", d.name)))?;
        // A size that changed since the key was made fails the writer's size check.
        if let EntryKind::File { source, .. } = &mut r.entries[d.index].kind {
            *source = FileSource::Bytes(Arc::new(bytes));
        }
    }
    Ok(())
}

fn resolve_set(
    set: &FileSet,
    sources: &Sources,
    cache: &FileDigestCache,
    opts: &ExecOptions,
    entries: &mut Vec<Entry>,
    content: &mut Vec<Option<ContentHash>>,
    held: &mut Held,
) -> Result<(), ExecError> {
    let mtime = opts.source_date_epoch;
    match set {
        FileSet::Select {
            from,
            into,
            include,
            exclude,
            attrs,
            origin,
            include_origins,
        } => {
            let found = sources
                .context
                .select(from, include, exclude)
                .map_err(|e| locate(e, origin, include, include_origins))?;
            let digests: Vec<Option<ContentHash>> = found
                .par_iter()
                .map(|c| file_digest(c, cache))
                .collect::<Result<_, _>>()?;
            // `into` stands for the `from` directory, so it gets the layer's owner and
            // directory mode; the parents above it are the writer's plain 0:0 0755 ones.
            if !into.is_root() {
                content.push(None);
                entries.push(Entry {
                    path: into.clone(),
                    kind: EntryKind::Dir,
                    mode: attrs.dir_mode.unwrap_or(0o755),
                    uid: attrs.uid,
                    gid: attrs.gid,
                    mtime,
                    xattrs: BTreeMap::new(),
                });
            }
            for (c, d) in found.into_iter().zip(digests) {
                let path = into.join_bytes(&c.rel_path);
                entries.push(entry_from_context(c, path, attrs, mtime));
                content.push(d);
            }
        }
        FileSet::Zip {
            archive,
            entries: wanted,
            attrs,
            origin,
        } => {
            let host = sources
                .context
                .resolve(archive)
                .map_err(|e| ExecError::Input {
                    origin: origin.clone(),
                    message: e.to_string(),
                })?;
            let bad = |m: String| ExecError::Input {
                origin: origin.clone(),
                message: format!("{archive}: {m}"),
            };
            let md = std::fs::metadata(&host).map_err(|e| bad(e.to_string()))?;
            let stamp = FileStamp {
                size: md.len(),
                mtime_ns: i128::from(md.mtime()) * 1_000_000_000 + i128::from(md.mtime_nsec()),
                ctime_ns: i128::from(md.ctime()) * 1_000_000_000 + i128::from(md.ctime_nsec()),
                ino: md.ino(),
                dev: md.dev(),
            };
            // An unchanged jar is keyed from the cache alone; it is opened (and only the
            // members of layers to write are decompressed) when a layer must be written.
            let mut zip = None;
            for w in wanted {
                let (digest, size, source) = match cache.get_member(&host, &w.name, &stamp) {
                    Some((digest, size)) => {
                        held.deferred.push(Deferred {
                            index: entries.len(),
                            archive: host.clone(),
                            name: w.name.clone(),
                            origin: origin.clone(),
                        });
                        (digest, size, FileSource::Bytes(Arc::new(Vec::new())))
                    }
                    None => {
                        if zip.is_none() {
                            let file =
                                std::fs::File::open(&host).map_err(|e| bad(e.to_string()))?;
                            zip = Some(
                                zip::ZipArchive::new(std::io::BufReader::new(file))
                                    .map_err(|e| bad(e.to_string()))?,
                            );
                        }
                        let mut z = zip
                            .as_mut()
                            .expect("opened above")
                            .by_name(&w.name)
                            .map_err(|e| bad(format!("entry {}: {e}", w.name)))?;
                        let mut bytes = Vec::with_capacity(z.size() as usize);
                        z.read_to_end(&mut bytes)
                            .map_err(|e| bad(format!("entry {}: {e}", w.name)))?;
                        let digest = ContentHash::of(&bytes);
                        let size = bytes.len() as u64;
                        cache.insert_member(&host, &w.name, stamp, digest, size);
                        (digest, size, FileSource::Bytes(Arc::new(bytes)))
                    }
                };
                content.push(Some(digest));
                entries.push(Entry {
                    path: w.path.clone(),
                    kind: EntryKind::File {
                        size,
                        source,
                        link_key: None,
                    },
                    mode: attrs.file_mode.unwrap_or(0o644),
                    uid: attrs.uid,
                    gid: attrs.gid,
                    mtime,
                    xattrs: BTreeMap::new(),
                });
            }
        }
        FileSet::Inline {
            path,
            content: bytes,
            mode,
            uid,
            gid,
        } => {
            content.push(Some(ContentHash::of(bytes)));
            entries.push(Entry {
                path: path.clone(),
                kind: EntryKind::File {
                    size: bytes.len() as u64,
                    source: FileSource::Bytes(Arc::new(bytes.clone())),
                    link_key: None,
                },
                mode: *mode,
                uid: *uid,
                gid: *gid,
                mtime,
                xattrs: BTreeMap::new(),
            });
        }
        FileSet::Copy {
            from,
            sources: patterns,
            dest,
            dest_is_dir,
            exclude,
            parents,
            chown,
            chmod,
            unpack_archives,
            origin,
        } => {
            let input = |message: String| ExecError::Input {
                origin: origin.clone(),
                message,
            };
            let (uid, gid) = owner(chown.as_deref(), sources).map_err(input)?;
            let attrs = Attrs {
                file_mode: None,
                dir_mode: None,
                uid,
                gid,
                preserve_exec_bit: true,
            };
            let root = sources.root(from);
            let excluded = crate::context::dockerignore::PatternMatcher::new(exclude)
                .map_err(|e| input(format!("--exclude: {e}")))?;
            let mut found = Vec::new();
            for pattern in patterns {
                let matches = root.glob_sources(pattern).map_err(|e| match e {
                    crate::context::ContextError::NotFound { .. } if matches!(from, crate::plan::CopyFrom::Context) => {
                        input(format!("COPY failed: {pattern:?} not found in the build context (or excluded by .dockerignore)"))
                    }
                    other => input(other.to_string()),
                })?;
                for m in matches {
                    let rel = String::from_utf8_lossy(&m.rel_path).into_owned();
                    if excluded.matches(&rel) {
                        continue;
                    }
                    // ADD recognises archives by content: look once per regular file.
                    let archive = match m.kind {
                        CtxKind::File if *unpack_archives => {
                            super::archive::archive_kind(&m.host_path).map_err(input)?
                        }
                        _ => None,
                    };
                    match m.kind {
                        CtxKind::Dir => {
                            // A directory's contents are copied, not the directory itself.
                            let base = if *parents {
                                dest.join_bytes(&m.rel_path)
                            } else {
                                dest.clone()
                            };
                            for e in root.walk(&rel, exclude).map_err(|e| input(e.to_string()))? {
                                if e.rel_path.is_empty() {
                                    continue;
                                }
                                let path = base.join_bytes(&e.rel_path);
                                found.push((e, path));
                            }
                        }
                        CtxKind::File if archive.is_some() => {
                            // ADD unpacks local tar archives into the destination directory.
                            let compression = archive.expect("checked by the guard");
                            let dir = tempfile::tempdir().map_err(|e| input(e.to_string()))?;
                            let f = std::fs::File::open(&m.host_path)
                                .map_err(|e| input(format!("{}: {e}", m.host_path.display())))?;
                            crate::layer::extract_layer(
                                compression.decompress(f),
                                crate::layer::Compression::None,
                                dir.path(),
                                &crate::layer::ExtractOptions::default(),
                            )
                            .map_err(|e| input(format!("unpacking {rel}: {e}")))?;
                            let unpacked = crate::context::BuildContext::new(dir.path(), &[])
                                .map_err(|e| input(e.to_string()))?;
                            for e in unpacked.walk("", &[]).map_err(|e| input(e.to_string()))? {
                                let path = dest.join_bytes(&e.rel_path);
                                found.push((e, path));
                            }
                            held.scratch.push(dir);
                        }
                        _ => {
                            let path = if *parents {
                                dest.join_bytes(&m.rel_path)
                            } else if *dest_is_dir {
                                dest.join_bytes(
                                    ImagePath::from_rel_bytes(&m.rel_path)
                                        .unwrap_or_default()
                                        .file_name(),
                                )
                            } else {
                                dest.clone()
                            };
                            found.push((m, path));
                        }
                    }
                }
            }
            let digests: Vec<Option<ContentHash>> = found
                .par_iter()
                .map(|(c, _)| file_digest(c, cache))
                .collect::<Result<_, _>>()?;
            for ((c, path), d) in found.into_iter().zip(digests) {
                let mut e = entry_from_context(c, path, &attrs, mtime);
                if let Some(chmod) = chmod {
                    match e.kind {
                        EntryKind::Dir => e.mode = chmod.apply(e.mode, true),
                        EntryKind::File { .. } => e.mode = chmod.apply(e.mode, false),
                        _ => {}
                    }
                }
                entries.push(e);
                content.push(d);
            }
        }
        FileSet::Url {
            url,
            path,
            checksum,
            chown,
            chmod,
            origin,
        } => {
            let input = |message: String| ExecError::Input {
                origin: origin.clone(),
                message,
            };
            let (uid, gid) = owner(chown.as_deref(), sources).map_err(input)?;
            let store = sources.store;
            let digest = match checksum {
                // Pinned and already downloaded: no network.
                Some(d) if store.has_blob(d) => d.clone(),
                _ => super::download::fetch(url, checksum.as_ref(), store).map_err(input)?,
            };
            // The blob's sha256 is already known: its hash stands for the content, so a pinned
            // download is neither fetched nor read to make the key.
            content.push(Some(ContentHash::of(digest.to_string().as_bytes())));
            entries.push(Entry {
                path: path.clone(),
                kind: EntryKind::File {
                    size: store.blob_size(&digest)?,
                    source: FileSource::Host(store.blob_path(&digest)),
                    link_key: None,
                },
                // Docker writes URL downloads 0600.
                mode: chmod.as_ref().map_or(0o600, |c| c.apply(0o600, false)),
                uid,
                gid,
                mtime,
                xattrs: BTreeMap::new(),
            });
        }
        FileSet::Dir {
            path,
            mode,
            uid,
            gid,
        } => {
            content.push(None);
            entries.push(Entry {
                path: path.clone(),
                kind: EntryKind::Dir,
                mode: *mode,
                uid: *uid,
                gid: *gid,
                mtime,
                xattrs: BTreeMap::new(),
            });
        }
    }
    Ok(())
}

/// The uid:gid of a `--chown` (names looked up in the image's account files), default 0:0.
fn owner(chown: Option<&str>, sources: &Sources) -> Result<(u32, u32), String> {
    chown.map_or(Ok((0, 0)), |c| sources.owner(c))
}

/// Points a selection error at the spec: a glob that matched nothing at its own line, any
/// other problem at the layer's `from`.
fn locate(
    e: crate::context::ContextError,
    origin: &str,
    include: &[String],
    include_origins: &[String],
) -> ExecError {
    use crate::context::ContextError;
    let origin = match &e {
        ContextError::GlobMatchedNothing { pattern } => include
            .iter()
            .position(|p| p == pattern)
            .and_then(|i| include_origins.get(i))
            .map_or(origin, String::as_str),
        _ => origin,
    };
    ExecError::Input {
        origin: origin.to_string(),
        message: e.to_string(),
    }
}

fn entry_from_context(c: ContextEntry, path: ImagePath, attrs: &Attrs, mtime: u64) -> Entry {
    let (kind, mode) = match c.kind {
        CtxKind::Dir => (EntryKind::Dir, attrs.dir_mode.unwrap_or(0o755)),
        CtxKind::Symlink { target } => (EntryKind::Symlink { target }, 0o777),
        CtxKind::File => {
            let mode =
                attrs
                    .file_mode
                    .unwrap_or(if attrs.preserve_exec_bit && c.mode & 0o111 != 0 {
                        0o755
                    } else {
                        0o644
                    });
            let link_key = (c.nlink > 1).then_some((c.dev, c.ino));
            (
                EntryKind::File {
                    source: FileSource::Host(c.host_path),
                    size: c.size,
                    link_key,
                },
                mode,
            )
        }
    };
    Entry {
        path,
        kind,
        mode,
        uid: attrs.uid,
        gid: attrs.gid,
        mtime,
        xattrs: BTreeMap::new(),
    }
}

/// The content digest of a regular file, from the cache when its stat stamp is unchanged.
fn file_digest(
    c: &ContextEntry,
    cache: &FileDigestCache,
) -> Result<Option<ContentHash>, ExecError> {
    if !matches!(c.kind, CtxKind::File) {
        return Ok(None);
    }
    let stamp = FileStamp {
        size: c.size,
        mtime_ns: c.mtime_ns,
        ctime_ns: c.ctime_ns,
        ino: c.ino,
        dev: c.dev,
    };
    if let Some(d) = cache.get(&c.host_path, &stamp) {
        return Ok(Some(d));
    }
    let d = hash_file(&c.host_path, c.size)?;
    cache.insert(&c.host_path, stamp, d);
    Ok(Some(d))
}

fn hash_file(path: &Path, size: u64) -> Result<ContentHash, ExecError> {
    let io = |source| ExecError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    ContentHash::of_reader(&mut f, size).map_err(io)
}
