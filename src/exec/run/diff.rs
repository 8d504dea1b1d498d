//! What a RUN changed, as layer entries: the walk of an overlay upperdir
//! ([`upper_to_entries`], BuildKit's `util/overlay` differ) and the metadata diff of a copied
//! root against its lowers ([`tree_to_entries`], for the copying snapshotter).
//!
//! Rules shared by both:
//! - A file whose type, mode, owner, size, mtime, xattrs (and symlink target) equal the lower
//!   file's is left out; for an upperdir (where overlayfs copies a file up when it is merely
//!   opened for writing) equal metadata is checked further by content.
//! - A directory is written when it is new, its metadata changed, it is opaque, or anything
//!   below it is written (then with its own metadata, not the writer's default).
//! - Paths in `skip` (mount points lade created for the runtime) are left out, and so are
//!   directories in `skip` with nothing written below them.
//! - mtimes newer than `source_date_epoch` are clamped to it.
//! - FIFOs and device nodes become `Special` entries with their major/minor;
//!   sockets are skipped, as tar does.

use super::lowers::{is_opaque, is_whiteout, xattrs, LowerView};
use super::RunError;
use crate::layer::{Entry, EntryKind, FileSource, SpecialKind};
use crate::path::ImagePath;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::Metadata;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// How to diff.
#[derive(Debug, Clone, Default)]
pub struct DiffOptions {
    /// Relative paths (no leading `/`) of mount points lade created.
    pub skip: HashSet<Vec<u8>>,
    pub source_date_epoch: Option<u64>,
}

struct Differ<'a> {
    lowers: &'a LowerView,
    opts: &'a DiffOptions,
    /// Copying snapshotter: how to tell a directory that was removed and made again
    /// (opaque) from one that was changed in place.
    copied_dirs: Option<&'a CopiedDirs>,
    compare_content: bool,
}

fn join(rel: &[u8], name: &[u8]) -> Vec<u8> {
    let mut v = rel.to_vec();
    if !v.is_empty() {
        v.push(b'/');
    }
    v.extend_from_slice(name);
    v
}

fn err(path: &Path, e: io::Error) -> RunError {
    RunError::Sandbox(format!("diff {}: {e}", path.display()))
}

fn sorted_names(dir: &Path) -> Result<Vec<Vec<u8>>, RunError> {
    let mut names: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .map_err(|e| err(dir, e))?
        .map(|e| e.map(|e| e.file_name().as_bytes().to_vec()))
        .collect::<Result<_, _>>()
        .map_err(|e| err(dir, e))?;
    names.sort();
    Ok(names)
}

/// Entries for an overlay upperdir over `lowers`.
pub fn upper_to_entries(
    upper: &Path,
    lowers: &LowerView,
    opts: &DiffOptions,
) -> Result<Vec<Entry>, RunError> {
    let d = Differ {
        lowers,
        opts,
        copied_dirs: None,
        compare_content: true,
    };
    let mut out = Vec::new();
    d.walk(upper, b"", false, &mut out)?;
    Ok(out)
}

/// The directories of a copied root as they were before the RUN.
#[derive(Debug, Default)]
pub struct CopiedDirs {
    /// Every copied directory carries [`COPIED_MARK`] (a `trusted.*` xattr, which the
    /// container cannot set without CAP_SYS_ADMIN): a directory without it is new.
    pub marked: bool,
    /// Inode of each directory (used when the mark could not be set; inode numbers can be
    /// reused, so this is second best).
    pub inodes: HashMap<Vec<u8>, u64>,
}

/// The xattr the copying snapshotter puts on the directories it copied.
pub const COPIED_MARK: &str = "trusted.lade.copied";

/// Entries for a root filesystem that started as a copy of `lowers`.
pub fn tree_to_entries(
    root: &Path,
    lowers: &LowerView,
    copied_dirs: &CopiedDirs,
    opts: &DiffOptions,
) -> Result<Vec<Entry>, RunError> {
    let d = Differ {
        lowers,
        opts,
        copied_dirs: Some(copied_dirs),
        compare_content: false,
    };
    let mut out = Vec::new();
    d.walk(root, b"", false, &mut out)?;
    Ok(out)
}

impl Differ<'_> {
    /// Appends the entries below `dir` (whose image path is `rel`); returns whether any.
    /// `fresh`: the lowers are hidden here (inside an opaque or new directory).
    fn walk(
        &self,
        dir: &Path,
        rel: &[u8],
        fresh: bool,
        out: &mut Vec<Entry>,
    ) -> Result<bool, RunError> {
        let names = sorted_names(dir)?;
        let mut any = false;
        if self.copied_dirs.is_some() && !fresh {
            // Deletions: what the lowers show here and the tree no longer has.
            let present: BTreeSet<&Vec<u8>> = names.iter().collect();
            for gone in self.lowers.children(rel) {
                if !present.contains(&gone) {
                    let crel = join(rel, &gone);
                    if !self.opts.skip.contains(&crel) {
                        out.push(self.marker(&crel, EntryKind::Whiteout));
                        any = true;
                    }
                }
            }
        }
        for name in names {
            let crel = join(rel, &name);
            let host = dir.join(OsStr::from_bytes(&name));
            let m = std::fs::symlink_metadata(&host).map_err(|e| err(&host, e))?;
            let ft = m.file_type();
            if self.copied_dirs.is_none() && is_whiteout(&m) {
                if !fresh {
                    out.push(self.marker(&crel, EntryKind::Whiteout));
                    any = true;
                }
                continue;
            }
            let lower = if fresh {
                None
            } else {
                self.lowers.lookup(&crel)
            };
            if ft.is_dir() {
                let opaque = match self.copied_dirs {
                    // overlayfs marks some directories opaque that hide nothing (dpkg's new
                    // directories, made over a whiteout of its own temp names): the marker is
                    // kept only where a lower directory exists, as BuildKit's diff does.
                    None => is_opaque(&host) && lower.as_ref().is_some_and(|(_, lm)| lm.is_dir()),
                    Some(c) if c.marked => {
                        lower.as_ref().is_some_and(|(_, lm)| lm.is_dir())
                            && !super::lowers::has_xattr(&host, COPIED_MARK)
                    }
                    Some(c) => matches!(
                        (&lower, c.inodes.get(&crel)),
                        (Some((_, lm)), Some(&ino)) if lm.is_dir() && ino != m.ino()
                    ),
                };
                let lower_dir = lower.as_ref().filter(|(_, lm)| lm.is_dir());
                let sub_fresh = fresh || opaque || lower_dir.is_none();
                let mut sub = Vec::new();
                let below = self.walk(&host, &crel, sub_fresh, &mut sub)?;
                let changed = match lower_dir {
                    None => true,
                    Some((lp, lm)) => opaque || !self.same_meta(&host, &m, lp, lm)?,
                };
                let keep = below || opaque || (changed && !self.opts.skip.contains(&crel));
                if keep {
                    out.push(self.entry(&crel, &host, &m, EntryKind::Dir)?);
                    if opaque {
                        out.push(self.marker(&crel, EntryKind::OpaqueWhiteout));
                    }
                    out.append(&mut sub);
                    any = true;
                }
                continue;
            }
            if self.opts.skip.contains(&crel) {
                continue;
            }
            if ft.is_socket() {
                continue;
            }
            if ft.is_fifo() || ft.is_char_device() || ft.is_block_device() {
                if let Some((lp, lm)) = &lower {
                    let same_kind = lm.file_type().is_fifo() == ft.is_fifo()
                        && lm.file_type().is_char_device() == ft.is_char_device()
                        && lm.rdev() == m.rdev();
                    if same_kind && self.same_meta(&host, &m, lp, lm)? {
                        continue;
                    }
                }
                let kind = if ft.is_fifo() {
                    SpecialKind::Fifo
                } else if ft.is_char_device() {
                    SpecialKind::CharDevice
                } else {
                    SpecialKind::BlockDevice
                };
                let rdev = m.rdev();
                let (major, minor) = if ft.is_fifo() {
                    (0, 0)
                } else {
                    (
                        rustix::fs::major(rdev as rustix::fs::Dev),
                        rustix::fs::minor(rdev as rustix::fs::Dev),
                    )
                };
                out.push(self.entry(
                    &crel,
                    &host,
                    &m,
                    EntryKind::Special { kind, major, minor },
                )?);
                any = true;
                continue;
            }
            if let Some((lp, lm)) = &lower {
                if self.same_file(&host, &m, lp, lm)? {
                    continue;
                }
            }
            let kind = if ft.is_symlink() {
                let target = std::fs::read_link(&host).map_err(|e| err(&host, e))?;
                EntryKind::Symlink {
                    target: target.as_os_str().as_bytes().to_vec(),
                }
            } else {
                EntryKind::File {
                    source: FileSource::Host(host.clone()),
                    size: m.len(),
                    link_key: (m.nlink() > 1).then(|| (m.dev(), m.ino())),
                }
            };
            out.push(self.entry(&crel, &host, &m, kind)?);
            any = true;
        }
        Ok(any)
    }

    fn clamp(&self, mtime: i64) -> u64 {
        let t = mtime.max(0) as u64;
        match self.opts.source_date_epoch {
            Some(sde) => t.min(sde),
            None => t,
        }
    }

    fn marker(&self, rel: &[u8], kind: EntryKind) -> Entry {
        Entry {
            path: ImagePath::from_rel_bytes(rel).unwrap_or_default(),
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            mtime: self.opts.source_date_epoch.unwrap_or(0),
            xattrs: Default::default(),
        }
    }

    fn entry(
        &self,
        rel: &[u8],
        host: &Path,
        m: &Metadata,
        kind: EntryKind,
    ) -> Result<Entry, RunError> {
        Ok(Entry {
            path: ImagePath::from_rel_bytes(rel).unwrap_or_default(),
            kind,
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            mtime: self.clamp(m.mtime()),
            xattrs: xattrs(host).map_err(|e| err(host, e))?,
        })
    }

    /// Type, permissions, owner, mtime and xattrs are equal.
    fn same_meta(
        &self,
        a: &Path,
        am: &Metadata,
        b: &Path,
        bm: &Metadata,
    ) -> Result<bool, RunError> {
        if am.mode() != bm.mode()
            || am.uid() != bm.uid()
            || am.gid() != bm.gid()
            || am.mtime() != bm.mtime()
            || am.mtime_nsec() != bm.mtime_nsec()
        {
            return Ok(false);
        }
        Ok(xattrs(a).map_err(|e| err(a, e))? == xattrs(b).map_err(|e| err(b, e))?)
    }

    fn same_file(
        &self,
        a: &Path,
        am: &Metadata,
        b: &Path,
        bm: &Metadata,
    ) -> Result<bool, RunError> {
        if am.len() != bm.len() || !self.same_meta(a, am, b, bm)? {
            return Ok(false);
        }
        let ft = am.file_type();
        if ft.is_symlink() {
            return Ok(std::fs::read_link(a).ok() == std::fs::read_link(b).ok());
        }
        if ft.is_file() && self.compare_content {
            return same_content(a, b).map_err(|e| err(a, e));
        }
        Ok(true)
    }
}

fn same_content(a: &Path, b: &Path) -> io::Result<bool> {
    let mut fa = std::fs::File::open(a)?;
    let mut fb = std::fs::File::open(b)?;
    let mut ba = vec![0u8; 64 * 1024];
    let mut bb = vec![0u8; 64 * 1024];
    loop {
        let n = read_full(&mut fa, &mut ba)?;
        let m = read_full(&mut fb, &mut bb)?;
        if n != m || ba[..n] != bb[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn whiteout(p: &Path) {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            p,
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0),
            0,
        )
        .expect("mknod (tests run as root)");
    }

    /// What overlayfs sets on a directory that hides the lower ones' contents.
    fn mark_opaque(p: &Path) {
        rustix::fs::setxattr(
            p,
            "trusted.overlay.opaque",
            b"y",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
    }

    fn set_times(p: &Path, secs: i64) {
        let t = rustix::fs::Timespec {
            tv_sec: secs,
            tv_nsec: 0,
        };
        rustix::fs::utimensat(
            rustix::fs::CWD,
            p,
            &rustix::fs::Timestamps {
                last_access: t,
                last_modification: t,
            },
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .unwrap();
    }

    /// `(path, kind, mode)` lines of entries, in order.
    fn lines(entries: &[Entry]) -> Vec<String> {
        entries
            .iter()
            .map(|e| {
                let k = match &e.kind {
                    EntryKind::Dir => "dir",
                    EntryKind::File { .. } => "file",
                    EntryKind::Symlink { .. } => "symlink",
                    EntryKind::Hardlink { .. } => "hardlink",
                    EntryKind::Whiteout => "whiteout",
                    EntryKind::OpaqueWhiteout => "opaque",
                    EntryKind::Special { .. } => "special",
                };
                format!("{} {k} {:o} {}", e.path, e.mode, e.mtime)
            })
            .collect()
    }

    /// A lower with /a/{x,y}, /b/z, /same, /meta, /gone; an upper as overlayfs leaves it.
    fn fixture() -> (tempfile::TempDir, LowerView, std::path::PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let lower = t.path().join("lower");
        let upper = t.path().join("upper");
        for d in ["a", "b", "etc"] {
            std::fs::create_dir_all(lower.join(d)).unwrap();
        }
        for (f, c) in [
            ("a/x", "x"),
            ("a/y", "y"),
            ("b/z", "z"),
            ("same", "s"),
            ("meta", "m"),
            ("gone", "g"),
        ] {
            std::fs::write(lower.join(f), c).unwrap();
            set_times(&lower.join(f), 100);
        }
        // upper: /a made opaque (rm -rf a && mkdir a && touch a/new), /gone whiteout,
        // /same copied up unchanged, /meta chmod'ed, /new created with a future mtime,
        // /etc/hosts a mount point lade created, /proc likewise.
        std::fs::create_dir_all(upper.join("a")).unwrap();
        mark_opaque(&upper.join("a"));
        std::fs::write(upper.join("a/new"), "n").unwrap();
        // /fresh: a new directory overlayfs marked opaque although nothing is below it.
        std::fs::create_dir(upper.join("fresh")).unwrap();
        mark_opaque(&upper.join("fresh"));
        std::fs::write(upper.join("fresh/f"), "f").unwrap();
        whiteout(&upper.join("gone"));
        std::fs::write(upper.join("same"), "s").unwrap();
        set_times(&upper.join("same"), 100);
        std::fs::write(upper.join("meta"), "m").unwrap();
        set_times(&upper.join("meta"), 100);
        std::fs::set_permissions(upper.join("meta"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        std::fs::write(upper.join("new"), "new").unwrap();
        set_times(&upper.join("new"), 9_000_000_000);
        std::fs::create_dir_all(upper.join("etc")).unwrap();
        std::fs::write(upper.join("etc/hosts"), "").unwrap();
        std::fs::create_dir(upper.join("proc")).unwrap();
        // /etc in the upper keeps the lower's times (as lade restores them).
        let lm = std::fs::metadata(lower.join("etc")).unwrap();
        std::fs::set_permissions(upper.join("etc"), lm.permissions()).unwrap();
        let t_ = rustix::fs::Timespec {
            tv_sec: lm.mtime(),
            tv_nsec: lm.mtime_nsec() as _,
        };
        rustix::fs::utimensat(
            rustix::fs::CWD,
            upper.join("etc").as_path(),
            &rustix::fs::Timestamps {
                last_access: t_,
                last_modification: t_,
            },
            rustix::fs::AtFlags::empty(),
        )
        .unwrap();
        let view = LowerView::new(std::slice::from_ref(&lower));
        (t, view, upper)
    }

    #[test]
    fn upper_dir_becomes_exactly_the_changed_entries() {
        let (_t, view, upper) = fixture();
        let opts = DiffOptions {
            skip: [b"etc/hosts".to_vec(), b"proc".to_vec()]
                .into_iter()
                .collect(),
            source_date_epoch: Some(5000),
        };
        let entries = upper_to_entries(&upper, &view, &opts).unwrap();
        let mut l = lines(&entries);
        // Directory mtimes depend on the clock; SOURCE_DATE_EPOCH clamps them to 5000.
        l.sort();
        assert_eq!(
            l,
            [
                "/a dir 755 5000",
                "/a opaque 0 5000",
                "/a/new file 644 5000",
                "/fresh dir 755 5000",
                "/fresh/f file 644 5000",
                "/gone whiteout 0 5000",
                "/meta file 600 100",
                "/new file 644 5000",
            ]
        );
    }

    #[test]
    fn without_epoch_mtimes_are_kept_and_a_content_change_with_equal_metadata_counts() {
        let (_t, view, upper) = fixture();
        // Same size and mtime as the lower file, other bytes: only content tells.
        std::fs::write(upper.join("same"), "S").unwrap();
        set_times(&upper.join("same"), 100);
        let opts = DiffOptions {
            skip: [b"etc/hosts".to_vec(), b"proc".to_vec()]
                .into_iter()
                .collect(),
            source_date_epoch: None,
        };
        let entries = upper_to_entries(&upper, &view, &opts).unwrap();
        let l = lines(&entries);
        assert!(l.contains(&"/new file 644 9000000000".to_string()), "{l:?}");
        assert!(l.contains(&"/same file 644 100".to_string()), "{l:?}");
    }

    #[test]
    fn a_fifo_in_the_upper_is_a_special_entry() {
        let (_t, view, upper) = fixture();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            upper.join("pipe").as_path(),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        let entries = upper_to_entries(&upper, &view, &DiffOptions::default()).unwrap();
        let pipe = entries
            .iter()
            .find(|e| e.path.to_string() == "/pipe")
            .unwrap();
        assert!(
            matches!(
                pipe.kind,
                EntryKind::Special {
                    kind: SpecialKind::Fifo,
                    major: 0,
                    minor: 0
                }
            ),
            "{pipe:?}"
        );
        assert_eq!(pipe.mode, 0o644);
    }

    #[test]
    fn lower_view_applies_whiteouts_and_opaque_dirs_across_layers() {
        let t = tempfile::tempdir().unwrap();
        let (l1, l2) = (t.path().join("l1"), t.path().join("l2"));
        std::fs::create_dir_all(l1.join("d")).unwrap();
        std::fs::write(l1.join("d/old"), "o").unwrap();
        std::fs::write(l1.join("f"), "f").unwrap();
        std::fs::write(l1.join("g"), "g").unwrap();
        std::fs::create_dir_all(l2.join("d")).unwrap();
        mark_opaque(&l2.join("d"));
        std::fs::write(l2.join("d/new"), "n").unwrap();
        whiteout(&l2.join("f"));
        // A symlink in the top layer hides the lower directory and is never followed.
        std::fs::create_dir_all(l1.join("s")).unwrap();
        std::fs::write(l1.join("s/in"), "i").unwrap();
        std::os::unix::fs::symlink("/etc", l2.join("s")).unwrap();
        let v = LowerView::new(&[l1.clone(), l2.clone()]);
        assert!(v.lookup(b"d/old").is_none());
        assert_eq!(v.lookup(b"d/new").unwrap().0, l2.join("d/new"));
        assert!(v.lookup(b"f").is_none());
        assert_eq!(v.lookup(b"g").unwrap().0, l1.join("g"));
        assert!(v.lookup(b"s/in").is_none());
        assert!(v.lookup(b"s/passwd").is_none());
        let names = |rel: &[u8]| {
            v.children(rel)
                .into_iter()
                .map(|n| String::from_utf8(n).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(b"d"), ["new"]);
        assert_eq!(names(b""), ["d", "g", "s"]);
    }
}
