//! Resolving a layer step: its file sets become layer entries, and their content digests
//! (from the file-digest cache or by hashing) become the step's cache key. Dockerfile sets
//! (COPY/ADD/heredocs/WORKDIR) are placed on the stage's filesystem (`StageFs`) the way
//! BuildKit's file ops are: destinations and parents are looked up there.

use super::sources::Sources;
use super::tree::{Node, NodeKind, StageFs, Tree};
use super::{ExecError, ExecOptions};
use crate::context::BuildContext;
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
    /// The key's inputs by name, to say why the step rebuilt.
    pub(super) why: super::why::StepInputs,
    /// Why the step runs if it misses the cache (set by the stage).
    pub(super) reason: String,
    pub entries: Vec<Entry>,
    /// Directories that entries read from (unpacked ADD archives); removed when dropped.
    pub scratch: Vec<crate::store::OwnedTempDir>,
    /// Archive members keyed from the file-digest cache, read only if the layer is written.
    pub(super) deferred: Vec<Deferred>,
}

/// An entry whose bytes are still in an archive: `entries[index]` holds a placeholder.
pub(super) struct Deferred {
    index: usize,
    archive: std::path::PathBuf,
    name: String,
    origin: crate::plan::Location,
}

/// What resolving keeps besides entries and digests.
#[derive(Default)]
struct Held {
    scratch: Vec<crate::store::OwnedTempDir>,
    deferred: Vec<Deferred>,
}

/// Version of the layer byte format; bump when the writer's output changes for equal input.
const LAYER_FORMAT: &str = "lade-layer-v2";

/// Resolves `step` on top of `fs` (the stage's filesystem so far); the caller records its
/// entries there when a step after it will look.
pub fn resolve(
    step: &LayerStep,
    sources: &Sources,
    cache: &FileDigestCache,
    opts: &ExecOptions,
    fs: &mut StageFs,
) -> Result<ResolvedLayer, ExecError> {
    let mut entries = Vec::new();
    let mut content = Vec::new();
    let mut held = Held::default();
    for set in &step.sources {
        let mut out = Out {
            entries: &mut entries,
            content: &mut content,
            held: &mut held,
        };
        resolve_set(set, &step.location, sources, cache, opts, fs, &mut out)?;
    }
    tracing::debug!(entries = entries.len(), "sources read");
    // The inputs, as the layer will see them: path, type, attributes and content digest of
    // every entry, in order. Host paths and timestamps stay out.
    // Hard-link groups enter as "same file as <first path>", not as host inode numbers
    // (found in order: the first path of a group is the first in the layer).
    let mut first_of_group: std::collections::HashMap<(u64, u64), &ImagePath> =
        std::collections::HashMap::new();
    let groups: Vec<Option<String>> = entries
        .iter()
        .map(|e| match &e.kind {
            EntryKind::File {
                link_key: Some(k), ..
            } => Some(
                first_of_group
                    .entry(*k)
                    .or_insert(&e.path)
                    .display()
                    .to_string(),
            ),
            _ => None,
        })
        .collect();
    // Each entry's bytes of the key and its named input are independent: made in parallel
    // (a COPY of a big tree has tens of thousands), hashed in order.
    let (parts, named): (Vec<Vec<u8>>, Vec<(String, String)>) = entries
        .par_iter()
        .zip(&content)
        .zip(&groups)
        .map(|((e, d), group)| {
            let kind = match &e.kind {
                EntryKind::Dir => "d".to_string(),
                EntryKind::File { size, .. } => {
                    format!("f{size}:{}", group.as_deref().unwrap_or_default())
                }
                EntryKind::Symlink { target } => format!("l{}", String::from_utf8_lossy(target)),
                EntryKind::Hardlink { target } => format!("h{}", target.display()),
                EntryKind::Special { kind, major, minor } => format!("s{kind:?}:{major}:{minor}"),
                EntryKind::Whiteout => "w".into(),
                EntryKind::OpaqueWhiteout => "o".into(),
            };
            let digest = d.as_ref().map(ContentHash::to_string);
            let mut part = Vec::with_capacity(e.path.as_bytes().len() + kind.len() + 100);
            part.extend_from_slice(e.path.as_bytes());
            part.push(0);
            part.extend_from_slice(
                format!("{kind}\0{:o}\0{}\0{}\0{}\0", e.mode, e.uid, e.gid, e.mtime).as_bytes(),
            );
            if let Some(d) = &digest {
                part.extend_from_slice(d.as_bytes());
            }
            part.push(b'\n');
            let short = digest.as_deref().map_or("", |d| &d[..24]);
            let named = (
                e.path.display().to_string(),
                super::why::entry_value(&kind, e.mode, e.uid, e.gid, e.mtime, short),
            );
            (part, named)
        })
        .unzip();
    let mut h = Hasher::new();
    for part in &parts {
        h.update(part);
    }
    let inputs = h.finish();
    let definition = (
        LAYER_FORMAT,
        opts.compression,
        opts.source_date_epoch,
        &step.sources,
    );
    let key = cache_key(&definition, None, &[inputs]);
    let options = super::stage::key_options(opts);
    tracing::debug!("key made");
    Ok(ResolvedLayer {
        name: step.name.clone(),
        why: super::why::layer_inputs(&key, &step.sources, &options, named),
        key,
        reason: String::new(),
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
            location: d.origin.clone(),
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

/// Where a set's entries go (with their content digests, the temp dirs they read from and
/// the archive members read later).
struct Out<'a> {
    entries: &'a mut Vec<Entry>,
    content: &'a mut Vec<Option<ContentHash>>,
    held: &'a mut Held,
}

fn resolve_set(
    set: &FileSet,
    location: &crate::plan::Location,
    sources: &Sources,
    cache: &FileDigestCache,
    opts: &ExecOptions,
    fs: &mut StageFs,
    out: &mut Out,
) -> Result<(), ExecError> {
    let mtime = opts.source_date_epoch;
    let Out {
        entries,
        content,
        held,
    } = out;
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
            tracing::debug!(found = found.len(), "sources walked");
            let digests: Vec<Option<ContentHash>> = found
                .par_iter()
                .map(|c| file_digest(c, cache))
                .collect::<Result<_, _>>()?;
            tracing::debug!("sources hashed");
            let attrs = &Attrs {
                host_modes: attrs.host_modes && !opts.normalize_modes,
                ..attrs.clone()
            };
            // `into` stands for the `from` directory, so it gets the layer's owner and
            // directory mode (or the host's); the parents above it are the writer's plain
            // 0:0 0755 ones.
            if !into.is_root() {
                let host_mode = || {
                    let host = sources.context.resolve(from).ok()?;
                    Some(std::fs::metadata(host).ok()?.mode() & 0o7777)
                };
                let mode = match attrs.dir_mode {
                    Some(m) => m,
                    None if attrs.host_modes => host_mode().unwrap_or(0o755),
                    None => 0o755,
                };
                content.push(None);
                entries.push(Entry {
                    path: into.clone(),
                    kind: EntryKind::Dir,
                    mode,
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
                    location: origin.clone(),
                    message: e.to_string(),
                })?;
            let bad = |m: String| ExecError::Input {
                location: origin.clone(),
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
            chown,
            heredoc,
        } => {
            let (uid, gid) = match chown {
                Some(c) => fs.owner(c, true).map_err(|message| ExecError::Input {
                    location: location.clone(),
                    message: format!("{path}: {message}"),
                })?,
                None => (*uid, *gid),
            };
            let path = match heredoc {
                Some(name) => land(fs, path, name.as_bytes())?,
                None => path.clone(),
            };
            let start = entries.len();
            content.push(Some(ContentHash::of(bytes)));
            entries.push(Entry {
                path,
                kind: EntryKind::File {
                    size: bytes.len() as u64,
                    source: FileSource::Bytes(Arc::new(bytes.clone())),
                    link_key: None,
                },
                mode: *mode,
                uid,
                gid,
                mtime,
                xattrs: BTreeMap::new(),
            });
            if heredoc.is_some() {
                let fresh = Fresh {
                    mode: 0o755,
                    uid,
                    gid,
                    mtime,
                };
                add_parents(entries, content, start, Some(fs), fresh)?;
            }
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
            link,
            origin,
        } => {
            let input = |message: String| ExecError::Input {
                location: origin.clone(),
                message,
            };
            let (uid, gid) = match chown {
                Some(c) => fs.owner(c, true).map_err(input)?,
                None => (0, 0),
            };
            // BuildKit's context transfer keeps every permission bit; `--normalize-modes` maps
            // them to 0644/0755 by the exec bit.
            let attrs = Attrs {
                file_mode: None,
                dir_mode: None,
                uid,
                gid,
                preserve_exec_bit: true,
                host_modes: !opts.normalize_modes,
            };
            let root = sources.root(from);
            let meta = sources.meta(from);
            // BuildKit resolves the destination inside the stage (a symlinked /var/run leads
            // to /run) and copies a file into a destination that is an existing directory.
            // With --link there is nothing below to look at.
            let (dest, dest_exists_as_dir) = if *link || dest.is_root() {
                (dest.clone(), dest.is_root())
            } else {
                let t = fs.tree()?;
                let real =
                    ImagePath::from_rel_bytes(&t.resolve(dest.as_bytes())).unwrap_or_default();
                let is_dir = matches!(t.get(real.as_bytes()), Some(n) if n.kind == NodeKind::Dir);
                (real, is_dir)
            };
            let excluded = crate::context::dockerignore::PatternMatcher::new(exclude)
                .map_err(|e| input(format!("--exclude: {e}")))?;
            let keyword = if *unpack_archives { "ADD" } else { "COPY" };
            let mut matched = Vec::new();
            // (entry, image path, metadata to keep: from the source image or archive)
            let mut found: Vec<(ContextEntry, ImagePath, Option<Node>)> = Vec::new();
            for written in patterns.iter().filter(|_| *parents) {
                found.extend(
                    parents_sources(root, meta, written, &dest, exclude, from)
                        .map_err(|m| input(format!("{keyword} --parents {written}: {m}")))?,
                );
            }
            for written in patterns.iter().filter(|_| !*parents) {
                let pattern = &match meta {
                    Some(t) => through_image_links(t, written),
                    None => written.clone(),
                };
                let matches = root.glob_sources(pattern).map_err(|e| match e {
                    crate::context::ContextError::NotFound { .. } => input(format!(
                        "{keyword} failed: {written:?} not found {}",
                        where_from(from)
                    )),
                    other => input(other.to_string()),
                })?;
                for m in matches {
                    let rel = String::from_utf8_lossy(&m.rel_path).into_owned();
                    if excluded.matches(&rel) {
                        continue;
                    }
                    let m = match m.kind {
                        CtxKind::Symlink { .. } => follow(root, meta, m, pattern).map_err(input)?,
                        _ => m,
                    };
                    matched.push(m);
                }
            }
            let into = *dest_is_dir || dest_exists_as_dir || *parents;
            if !into && matched.len() > 1 {
                return Err(input(format!(
                    "When using {keyword} with more than one source file, the destination must be a directory and end with a /"
                )));
            }
            // `.wh.` members of ADD archives: BuildKit's untar (moby/go-archive, AUFS format,
            // no converter) writes them as plain files, and its exported layer then carries
            // them as whiteouts. They are written here as whiteouts, ahead of the archive's
            // files, so a file of the same name in the archive stays.
            let mut whiteouts: Vec<Entry> = Vec::new();
            let mut copied_dir = false;
            for m in matched {
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
                        copied_dir = true;
                        let base = dest.clone();
                        let real = real_rel(root, &m.host_path);
                        // The destination itself is not the source directory: fsutil's
                        // prepareTargetDir makes it with MkdirAll (a fresh parent: 0755, or
                        // the octal --chmod) and merges the contents into it.
                        for e in root
                            .walk(&String::from_utf8_lossy(&real), exclude)
                            .map_err(|e| input(e.to_string()))?
                        {
                            if e.rel_path.is_empty() {
                                continue;
                            }
                            let path = base.join_bytes(&e.rel_path);
                            let n =
                                meta.and_then(|t| t.get(&real_rel(root, &e.host_path)).cloned());
                            found.push((e, path, n));
                        }
                    }
                    CtxKind::File if archive.is_some() => {
                        // ADD unpacks local tar archives into the destination directory,
                        // keeping the modes, owners and mtimes of the archive (BuildKit's
                        // untar; --chown replaces the owners).
                        let compression = archive.expect("checked by the guard");
                        let rel = String::from_utf8_lossy(&m.rel_path).into_owned();
                        let open = || {
                            std::fs::File::open(&m.host_path)
                                .map_err(|e| input(format!("{}: {e}", m.host_path.display())))
                        };
                        // Registered, so a signal mid-build removes the unpacked tree too.
                        let dir = crate::store::scratch_dir_in(&std::env::temp_dir(), "lade-add-")
                            .map_err(|e| input(e.to_string()))?;
                        crate::layer::extract_layer(
                            compression.decompress(open()?),
                            crate::layer::Compression::None,
                            dir.path(),
                            // Device nodes need root; without it they are skipped with a
                            // warning, as BuildKit rootless does.
                            &crate::layer::ExtractOptions {
                                allow_devices: true,
                                preserve_owner: false,
                                overlay_whiteouts: false,
                            },
                        )
                        .map_err(|e| input(format!("unpacking {rel}: {e}")))?;
                        let mut tree = Tree::default();
                        let members = crate::layer::list_layer(
                            compression.decompress(open()?),
                            crate::layer::Compression::None,
                        )
                        .map_err(|e| input(format!("unpacking {rel}: {e}")))?;
                        whiteouts.extend(members.iter().filter_map(|m| whiteout(m, &dest, mtime)));
                        tree.apply_tar(members);
                        let unpacked = crate::context::BuildContext::new(dir.path(), &[])
                            .map_err(|e| input(e.to_string()))?;
                        for e in unpacked.walk("", &[]).map_err(|e| input(e.to_string()))? {
                            let path = dest.join_bytes(&e.rel_path);
                            let n = tree.get(&e.rel_path).cloned();
                            found.push((e, path, n));
                        }
                        held.scratch.push(dir);
                    }
                    _ => {
                        let path = if into {
                            dest.join_bytes(
                                ImagePath::from_rel_bytes(&m.rel_path)
                                    .unwrap_or_default()
                                    .file_name(),
                            )
                        } else {
                            dest.clone()
                        };
                        let n = meta.and_then(|t| t.get(&real_rel(root, &m.host_path)).cloned());
                        found.push((m, path, n));
                    }
                }
            }
            tracing::debug!(found = found.len(), "sources walked");
            if !*link {
                let from_context = matches!(
                    from,
                    crate::plan::CopyFrom::Context | crate::plan::CopyFrom::Local { .. }
                );
                conflicts(fs.tree()?, &found, from_context)
                    .map_err(|m| input(format!("{keyword} failed: {m}")))?;
            }
            let digests: Vec<Option<ContentHash>> = found
                .par_iter()
                .map(|(c, _, _)| file_digest(c, cache))
                .collect::<Result<_, _>>()?;
            tracing::debug!("sources hashed");
            let start = entries.len();
            for w in whiteouts {
                entries.push(w);
                content.push(None);
            }
            let below = if *link { None } else { Some(fs.tree()?) };
            for ((c, path, kept), d) in found.into_iter().zip(digests) {
                let from_archive = kept.is_some() && matches!(from, crate::plan::CopyFrom::Context);
                // A directory merged into one the stage has keeps that one's mode and owner
                // (fsutil copies file info only onto directories it creates, and restores
                // just the source's timestamp); --chown and --chmod do not touch it. ADD's
                // untar does apply an archive's directory.
                let existing = below
                    .filter(|_| !from_archive && matches!(c.kind, CtxKind::Dir))
                    .and_then(|t| t.get(path.as_bytes()))
                    .filter(|n| n.kind == NodeKind::Dir);
                if let Some(n) = existing {
                    content.push(None);
                    entries.push(Entry {
                        path,
                        kind: EntryKind::Dir,
                        mode: n.mode,
                        uid: n.uid,
                        gid: n.gid,
                        mtime: kept.as_ref().map_or(mtime, |k| k.mtime),
                        xattrs: BTreeMap::new(),
                    });
                    continue;
                }
                let mut e = entry_from_context(c, path, &attrs, mtime);
                if let Some(n) = kept {
                    if !matches!(e.kind, EntryKind::Symlink { .. }) {
                        e.mode = n.mode;
                    }
                    if chown.is_none() {
                        e.uid = n.uid;
                        e.gid = n.gid;
                    }
                    e.mtime = n.mtime;
                }
                // BuildKit's untar takes no --chmod.
                if let (Some(chmod), false) = (chmod, from_archive) {
                    match e.kind {
                        EntryKind::Dir => e.mode = chmod.apply(e.mode, true),
                        EntryKind::File { .. } => e.mode = chmod.apply(e.mode, false),
                        _ => {}
                    }
                }
                entries.push(e);
                content.push(d);
            }
            // Directories BuildKit's MkdirAll creates get the copy's owner, and the --chmod
            // mode when it is octal.
            let fresh = Fresh {
                mode: match chmod {
                    Some(crate::plan::Chmod::Octal(m)) => *m,
                    _ => 0o755,
                },
                uid,
                gid,
                mtime,
            };
            // BuildKit creates the destination even when a --parents wildcard matched nothing,
            // and that of an empty directory (fsutil's prepareTargetDir).
            let empty = if *parents {
                entries.len() == start
            } else {
                copied_dir && !entries[start..].iter().any(|e| e.path == dest)
            };
            if empty && !dest.is_root() && !dest_exists_as_dir {
                entries.push(Entry {
                    path: dest.clone(),
                    kind: EntryKind::Dir,
                    mode: fresh.mode,
                    uid,
                    gid,
                    mtime,
                    xattrs: BTreeMap::new(),
                });
                content.push(None);
            }
            let stage = if *link { None } else { Some(&mut *fs) };
            add_parents(entries, content, start, stage, fresh)?;
        }
        FileSet::Url {
            url,
            path,
            checksum,
            chown,
            chmod,
            file_name,
            origin,
        } => {
            let input = |message: String| ExecError::Input {
                location: origin.clone(),
                message,
            };
            let (uid, gid) = match chown {
                Some(c) => fs.owner(c, true).map_err(input)?,
                None => (0, 0),
            };
            let store = sources.store;
            let digest = match checksum {
                // Pinned and already downloaded: no network.
                Some(d) if store.has_blob(d) => d.clone(),
                _ => super::download::fetch(url, checksum.as_ref(), store).map_err(input)?,
            };
            // The blob's sha256 is already known: its hash stands for the content, so a pinned
            // download is neither fetched nor read to make the key.
            let path = land(fs, path, file_name.as_bytes())?;
            let start = entries.len();
            content.push(Some(ContentHash::of(digest.to_string().as_bytes())));
            entries.push(Entry {
                path,
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
            let fresh = Fresh {
                mode: 0o755,
                uid,
                gid,
                mtime,
            };
            add_parents(entries, content, start, Some(fs), fresh)?;
        }
        FileSet::Workdir { path, user } => {
            let (uid, gid) = match user {
                Some(u) => fs.owner(u, false).map_err(|message| ExecError::Input {
                    location: location.clone(),
                    message: format!("{path}: {message}"),
                })?,
                None => (0, 0),
            };
            let t = fs.tree()?;
            let real = ImagePath::from_rel_bytes(&t.resolve(path.as_bytes())).unwrap_or_default();
            // An existing directory stays as it is (mode, owner): the layer is empty.
            if !matches!(t.get(real.as_bytes()), Some(n) if n.kind == NodeKind::Dir) {
                let start = entries.len();
                content.push(None);
                entries.push(Entry {
                    path: real,
                    kind: EntryKind::Dir,
                    mode: 0o755,
                    uid,
                    gid,
                    mtime,
                    xattrs: BTreeMap::new(),
                });
                let fresh = Fresh {
                    mode: 0o755,
                    uid,
                    gid,
                    mtime,
                };
                add_parents(entries, content, start, Some(fs), fresh)?;
            }
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

/// A `--from` source path with the symlinks of its directories resolved inside the image (an
/// image's links are often absolute, which the context rules refuse); the last component is
/// left to `follow`, so the copy keeps the name as written. Patterns with wildcards are
/// matched as they are.
fn through_image_links(t: &Tree, pattern: &str) -> String {
    if pattern.contains(['*', '?', '[']) {
        return pattern.to_string();
    }
    let Ok(p) = ImagePath::resolve(&ImagePath::root(), pattern) else {
        return pattern.to_string();
    };
    match p.parent() {
        Some(dir) if !dir.is_root() => {
            let real = ImagePath::from_rel_bytes(&t.resolve(dir.as_bytes())).unwrap_or_default();
            real.join_bytes(p.file_name()).display()
        }
        _ => pattern.to_string(),
    }
}

/// Where a COPY source was looked for, for "not found" messages.
fn where_from(from: &crate::plan::CopyFrom) -> String {
    match from {
        crate::plan::CopyFrom::Context => {
            "in the build context (or excluded by .dockerignore)".into()
        }
        crate::plan::CopyFrom::Stage { name, .. } => format!("in stage {name}"),
        crate::plan::CopyFrom::Local { name, dir } => {
            format!("in build context {name} ({})", dir.display())
        }
        crate::plan::CopyFrom::Image { base } => {
            format!("in image {}", super::base::describe(base))
        }
    }
}

/// `COPY --parents` sources as BuildKit's dockerfile2llb lowers them: `pivot/./pattern` (no
/// `/./`: the pivot is the root) copies from each directory the pivot names (wildcards
/// allowed) the entries matching `pattern` as an include pattern (`**` crosses directories,
/// a matching directory takes all below it), each at its path below the pivot, with the
/// directories leading to it. `--exclude` patterns count from the pivot too. A source
/// without wildcards must exist; wildcards that match nothing copy nothing.
fn parents_sources(
    root: &BuildContext,
    meta: Option<&Tree>,
    written: &str,
    dest: &ImagePath,
    exclude: &[String],
    from: &crate::plan::CopyFrom,
) -> Result<Vec<(ContextEntry, ImagePath, Option<Node>)>, String> {
    use crate::context::dockerignore::PatternMatcher;
    let magic = |p: &str| p.contains(['*', '?', '[']);
    let (pivot, pattern) = written.split_once("/./").unwrap_or(("", written));
    let pattern = ImagePath::resolve(&ImagePath::root(), pattern)
        .map_err(|e| e.to_string())?
        .display();
    let pattern = pattern.trim_start_matches('/');
    let pivot = match meta {
        Some(t) => through_image_links(t, pivot),
        None => pivot.to_string(),
    };
    let not_found = |what: &str| format!("{what:?} not found {}", where_from(from));
    if !magic(&pivot) && !magic(pattern) {
        let whole = format!("{}/{pattern}", pivot.trim_end_matches('/'));
        let whole = match meta {
            Some(t) => through_image_links(t, &whole),
            None => whole,
        };
        root.glob_sources(&whole)
            .map_err(|_| not_found(written.trim_start_matches("./")))?;
    }
    let pivots = match root.glob_sources(&pivot) {
        Ok(p) => p,
        Err(crate::context::ContextError::NotFound { .. }) if magic(&pivot) => Vec::new(),
        Err(crate::context::ContextError::NotFound { .. }) => return Err(not_found(&pivot)),
        Err(e) => return Err(e.to_string()),
    };
    let include = (!pattern.is_empty())
        .then(|| PatternMatcher::new(&[pattern.to_string()]))
        .transpose()
        .map_err(|e| e.to_string())?;
    let excluded = PatternMatcher::new(exclude).map_err(|e| format!("--exclude: {e}"))?;
    let mut out = Vec::new();
    for p in pivots {
        let p = match p.kind {
            CtxKind::Symlink { .. } => follow(root, meta, p, written)?,
            _ => p,
        };
        let real = real_rel(root, &p.host_path);
        if !matches!(p.kind, CtxKind::Dir) {
            // A pivot that is a file is copied itself, like any single source.
            let path = dest.join_bytes(
                ImagePath::from_rel_bytes(&p.rel_path)
                    .unwrap_or_default()
                    .file_name(),
            );
            let n = meta.and_then(|t| t.get(&real).cloned());
            out.push((p, path, n));
            continue;
        }
        let all = root
            .walk(&String::from_utf8_lossy(&real), &[])
            .map_err(|e| e.to_string())?;
        let mut keep: std::collections::HashSet<Vec<u8>> = Default::default();
        for e in &all {
            let rel = String::from_utf8_lossy(&e.rel_path);
            let included = include.as_ref().is_none_or(|m| m.matches_or_parent(&rel));
            if included && !excluded.matches_or_parent(&rel) && keep.insert(e.rel_path.clone()) {
                // The directories leading to it come along, with their own metadata.
                let mut a = e.rel_path.as_slice();
                while let Some(i) = a.iter().rposition(|&b| b == b'/') {
                    a = &a[..i];
                    keep.insert(a.to_vec());
                }
            }
        }
        for e in all {
            if keep.contains(&e.rel_path) {
                let path = dest.join_bytes(&e.rel_path);
                let n = meta.and_then(|t| t.get(&real_rel(root, &e.host_path)).cloned());
                out.push((e, path, n));
            }
        }
    }
    Ok(out)
}

/// The whiteout an ADD archive's `.wh.NAME` (or `.wh..wh..opq`) member stands for below `dest`.
fn whiteout(m: &crate::layer::TarEntryInfo, dest: &ImagePath, mtime: u64) -> Option<Entry> {
    let p = m.path.as_bytes();
    let (dir, name) = match p.iter().rposition(|&b| b == b'/') {
        Some(i) => (&p[..i], &p[i + 1..]),
        None => (&b""[..], p),
    };
    let hidden = name.strip_prefix(b".wh.")?;
    let (path, kind) = if hidden == b".wh..opq" {
        (dest.join_bytes(dir), EntryKind::OpaqueWhiteout)
    } else if hidden.is_empty() || hidden.starts_with(b".wh.") {
        return None;
    } else {
        let rel = if dir.is_empty() {
            hidden.to_vec()
        } else {
            [dir, b"/", hidden].concat()
        };
        (dest.join_bytes(&rel), EntryKind::Whiteout)
    };
    Some(Entry {
        path,
        kind,
        mode: m.mode & 0o7777,
        uid: u32::try_from(m.uid).unwrap_or(0),
        gid: u32::try_from(m.gid).unwrap_or(0),
        mtime,
        xattrs: BTreeMap::new(),
    })
}

/// BuildKit's copy (fsutil) merges directories into directories and replaces files, but
/// refuses a directory (or a path through one) where the stage has a non-directory, and a
/// non-directory where it has a directory. Archive members are exempt: ADD's untar replaces
/// whatever is there.
fn conflicts(
    t: &Tree,
    found: &[(ContextEntry, ImagePath, Option<Node>)],
    from_context: bool,
) -> Result<(), String> {
    let mut dirs: std::collections::HashSet<&[u8]> = Default::default();
    for (c, path, kept) in found {
        if kept.is_some() && from_context {
            continue;
        }
        let p = path.as_bytes();
        let is_dir = matches!(c.kind, CtxKind::Dir);
        match t.get(p) {
            Some(n) if n.kind == NodeKind::Dir && !is_dir => {
                return Err(format!(
                    "cannot replace to directory {} with file",
                    path.display()
                ))
            }
            Some(n) if n.kind != NodeKind::Dir && is_dir => {
                return Err(format!("cannot copy to non-directory: {}", path.display()))
            }
            _ => {}
        }
        let mut a = p;
        while let Some(i) = a.iter().rposition(|&b| b == b'/') {
            a = &a[..i];
            if !dirs.insert(a) {
                break;
            }
            if t.get(a).is_some_and(|n| n.kind != NodeKind::Dir) {
                let shown = ImagePath::from_rel_bytes(a).unwrap_or_default().display();
                return Err(format!("cannot copy to non-directory: {shown}"));
            }
        }
    }
    Ok(())
}

/// Where a single file meant for `path` lands on the stage, like a COPY source: symlinks on
/// the way are followed inside the tree, and an existing directory gets it as `name`.
fn land(fs: &mut StageFs, path: &ImagePath, name: &[u8]) -> Result<ImagePath, ExecError> {
    if path.is_root() {
        return Ok(path.join_bytes(name));
    }
    let t = fs.tree()?;
    let real = ImagePath::from_rel_bytes(&t.resolve(path.as_bytes())).unwrap_or_default();
    Ok(match t.get(real.as_bytes()) {
        Some(n) if n.kind == NodeKind::Dir => real.join_bytes(name),
        _ => real,
    })
}

/// How the directories a step creates are written.
#[derive(Clone, Copy)]
struct Fresh {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: u64,
}

/// Gives every entry from `start` on its parent directories in the layer (the writer would
/// otherwise add them 0755 root:root): those the stage already has keep their mode, owner
/// and mtime, as BuildKit's MkdirAll leaves existing directories alone; missing ones are
/// `fresh`. Without a stage (`--link`) every parent is fresh.
fn add_parents(
    entries: &mut Vec<Entry>,
    content: &mut Vec<Option<ContentHash>>,
    start: usize,
    mut stage: Option<&mut StageFs>,
    fresh: Fresh,
) -> Result<(), ExecError> {
    // Each ancestor is looked at once: the walk up from an entry stops at one already seen
    // (whose own ancestors were seen then). Same order as walking every entry to the root.
    let missing: Vec<ImagePath> = {
        let present: std::collections::HashSet<&[u8]> =
            entries.iter().map(|e| e.path.as_bytes()).collect();
        let mut seen: std::collections::HashSet<&[u8]> = std::collections::HashSet::new();
        let mut missing = Vec::new();
        for e in &entries[start..] {
            let mut p = e.path.as_bytes();
            while let Some(i) = p.iter().rposition(|&b| b == b'/') {
                p = &p[..i];
                if !seen.insert(p) {
                    break;
                }
                if !present.contains(p) {
                    missing.push(ImagePath::from_rel_bytes(p).unwrap_or_default());
                }
            }
        }
        missing
    };
    for path in missing {
        let existing = match stage.as_deref_mut() {
            Some(fs) => fs
                .tree()?
                .get(path.as_bytes())
                .filter(|n| n.kind == NodeKind::Dir)
                .cloned(),
            None => None,
        };
        let (mode, uid, gid, mtime) = existing
            .map_or((fresh.mode, fresh.uid, fresh.gid, fresh.mtime), |n| {
                (n.mode, n.uid, n.gid, n.mtime)
            });
        entries.push(Entry {
            path,
            kind: EntryKind::Dir,
            mode,
            uid,
            gid,
            mtime,
            xattrs: BTreeMap::new(),
        });
        content.push(None);
    }
    Ok(())
}

/// The path of `host` below `root`'s directory (raw bytes).
fn real_rel(root: &BuildContext, host: &Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    host.strip_prefix(root.root())
        .map(|p| p.as_os_str().as_bytes().to_vec())
        .unwrap_or_default()
}

/// A top-level COPY source that is a symlink is followed (BuildKit's FollowSymlinks), and
/// must stay inside the context; in an image (`--from`) links resolve inside its root.
/// The entry keeps the name the source was written with.
fn follow(
    root: &BuildContext,
    meta: Option<&Tree>,
    m: ContextEntry,
    pattern: &str,
) -> Result<ContextEntry, String> {
    use std::os::unix::ffi::OsStrExt;
    let rel = String::from_utf8_lossy(&m.rel_path).into_owned();
    let host = match meta {
        Some(t) => root
            .root()
            .join(std::ffi::OsStr::from_bytes(&t.resolve(&m.rel_path))),
        None => root.resolve_followed(&rel).map_err(|e| match e {
            crate::context::ContextError::OutsideContext { .. } => {
                let target = match &m.kind {
                    CtxKind::Symlink { target } => String::from_utf8_lossy(target).into_owned(),
                    _ => String::new(),
                };
                format!(
                    "forbidden path outside the build context: {pattern} (symlink {rel} -> {target})"
                )
            }
            other => other.to_string(),
        })?,
    };
    if std::fs::symlink_metadata(&host).is_err() {
        return Err(format!(
            "{pattern}: symlink {rel} points to a path that does not exist"
        ));
    }
    root.entry(m.rel_path, host).map_err(|e| e.to_string())
}

/// Points a selection error at the spec: a glob that matched nothing at its own line, any
/// other problem at the layer's `from`.
fn locate(
    e: crate::context::ContextError,
    origin: &crate::plan::Location,
    include: &[String],
    include_origins: &[crate::plan::Location],
) -> ExecError {
    use crate::context::ContextError;
    let origin = match &e {
        ContextError::GlobMatchedNothing { pattern } => include
            .iter()
            .position(|p| p == pattern)
            .and_then(|i| include_origins.get(i))
            .unwrap_or(origin),
        _ => origin,
    };
    ExecError::Input {
        location: origin.clone(),
        message: e.to_string(),
    }
}

fn entry_from_context(c: ContextEntry, path: ImagePath, attrs: &Attrs, mtime: u64) -> Entry {
    let (kind, mode) = match c.kind {
        CtxKind::Dir => (
            EntryKind::Dir,
            attrs.dir_mode.unwrap_or(if attrs.host_modes {
                c.mode & 0o7777
            } else {
                0o755
            }),
        ),
        CtxKind::Symlink { target } => (EntryKind::Symlink { target }, 0o777),
        CtxKind::Special { kind, major, minor } => (
            EntryKind::Special {
                kind: match kind {
                    crate::context::SpecialKind::Fifo => crate::layer::SpecialKind::Fifo,
                    crate::context::SpecialKind::CharDevice => {
                        crate::layer::SpecialKind::CharDevice
                    }
                    crate::context::SpecialKind::BlockDevice => {
                        crate::layer::SpecialKind::BlockDevice
                    }
                },
                major,
                minor,
            },
            c.mode & 0o7777,
        ),
        CtxKind::File => {
            let mode = attrs.file_mode.unwrap_or(if attrs.host_modes {
                c.mode & 0o7777
            } else if attrs.preserve_exec_bit && c.mode & 0o111 != 0 {
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
    let io = |error| ExecError::Io {
        path: path.to_path_buf(),
        error,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    ContentHash::of_reader(&mut f, size).map_err(io)
}
