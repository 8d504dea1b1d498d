//! The copying snapshotter, for where overlayfs cannot be mounted: the lowers are copied (never
//! hard-linked: a command writing a file in place would change the shared extracted layer)
//! into a fresh directory, whiteouts and opaque directories applied, and the diff compares the
//! tree with the lowers by metadata (a directory with a new inode was removed and made again:
//! opaque).

use super::diff::{tree_to_entries, CopiedDirs, DiffOptions, COPIED_MARK};
use super::executor::sandbox;
use super::lowers::{is_opaque, is_whiteout, xattrs, LowerView};
use super::snapshot::{snapshot_dir, Snapshot, Snapshotter};
use super::RunError;
use crate::layer::Entry;
use crate::store::Store;
use std::collections::HashMap;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

#[derive(Debug, Default, Clone, Copy)]
pub struct Copy;

pub struct CopySnapshot {
    lowers: LowerView,
    root: PathBuf,
    dirs: CopiedDirs,
    _dir: crate::store::OwnedTempDir,
}

impl Snapshotter for Copy {
    fn name(&self) -> &'static str {
        "copy"
    }

    fn prepare(&self, lowers: &[PathBuf], store: &Store) -> Result<Box<dyn Snapshot>, RunError> {
        let dir = snapshot_dir(store, "copy-")?;
        let root = dir.path().join("root");
        std::fs::create_dir(&root).map_err(|e| sandbox(&root, e))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| sandbox(&root, e))?;
        for l in lowers {
            let mut links = HashMap::new();
            apply(l, &root, &mut links).map_err(|e| sandbox(l, e))?;
        }
        let mut dirs = CopiedDirs {
            marked: mark(&root),
            inodes: HashMap::new(),
        };
        record_dirs(&root, Vec::new(), &mut dirs).map_err(|e| sandbox(&root, e))?;
        Ok(Box::new(CopySnapshot {
            lowers: LowerView::new(lowers),
            root,
            dirs,
            _dir: dir,
        }))
    }
}

impl Snapshot for CopySnapshot {
    fn root(&self) -> &Path {
        &self.root
    }

    fn diff(&self, opts: &DiffOptions) -> Result<Vec<Entry>, RunError> {
        tree_to_entries(&self.root, &self.lowers, &self.dirs, opts)
    }
}

fn mark(dir: &Path) -> bool {
    rustix::fs::lsetxattr(dir, COPIED_MARK, b"", rustix::fs::XattrFlags::empty()).is_ok()
}

fn record_dirs(dir: &Path, rel: Vec<u8>, out: &mut CopiedDirs) -> io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            let mut r = rel.clone();
            if !r.is_empty() {
                r.push(b'/');
            }
            r.extend_from_slice(e.file_name().as_bytes());
            out.inodes.insert(r.clone(), e.metadata()?.ino());
            if out.marked {
                out.marked = mark(&e.path());
            }
            record_dirs(&e.path(), r, out)?;
        }
    }
    Ok(())
}

fn remove_any(p: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Applies the extracted layer `src` onto `dst`. Every directory descended into in `dst` was
/// checked to be a real directory first, so nothing is written through a symlink.
/// Copies the tree `src` into the existing directory `dst` (owners, modes, links kept).
pub(super) fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    apply(src, dst, &mut HashMap::new())
}

fn apply(src: &Path, dst: &Path, links: &mut HashMap<(u64, u64), PathBuf>) -> io::Result<()> {
    for e in std::fs::read_dir(src)? {
        let e = e?;
        let name = e.file_name();
        let (s, d) = (src.join(&name), dst.join(&name));
        let m = std::fs::symlink_metadata(&s)?;
        if is_whiteout(&m) {
            remove_any(&d)?;
            continue;
        }
        let ft = m.file_type();
        if ft.is_dir() {
            match std::fs::symlink_metadata(&d) {
                Ok(dm) if dm.is_dir() => {
                    if is_opaque(&s) {
                        remove_any(&d)?;
                        std::fs::create_dir(&d)?;
                    }
                }
                Ok(_) => {
                    remove_any(&d)?;
                    std::fs::create_dir(&d)?;
                }
                Err(_) => std::fs::create_dir(&d)?,
            }
            apply(&s, &d, links)?;
            set_meta(&s, &d, &m)?;
            continue;
        }
        remove_any(&d)?;
        if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&s)?, &d)?;
        } else if ft.is_file() {
            if m.nlink() > 1 {
                if let Some(first) = links.get(&(m.dev(), m.ino())) {
                    std::fs::hard_link(first, &d)?;
                    continue;
                }
                links.insert((m.dev(), m.ino()), d.clone());
            }
            std::fs::copy(&s, &d)?;
        } else if ft.is_fifo() || ft.is_char_device() || ft.is_block_device() {
            let kind = if ft.is_fifo() {
                rustix::fs::FileType::Fifo
            } else if ft.is_char_device() {
                rustix::fs::FileType::CharacterDevice
            } else {
                rustix::fs::FileType::BlockDevice
            };
            rustix::fs::mknodat(
                rustix::fs::CWD,
                &d,
                kind,
                rustix::fs::Mode::from_raw_mode(0o600),
                m.rdev(),
            )?;
        } else {
            continue;
        }
        set_meta(&s, &d, &m)?;
    }
    Ok(())
}

/// Owner, mode, xattrs and times of `src` onto `dst` (never following a symlink).
fn set_meta(src: &Path, dst: &Path, m: &std::fs::Metadata) -> io::Result<()> {
    use rustix::fs::{AtFlags, Timespec, Timestamps};
    let euid_root = rustix::process::geteuid().is_root();
    if euid_root {
        std::os::unix::fs::lchown(dst, Some(m.uid()), Some(m.gid()))?;
    }
    let symlink = m.file_type().is_symlink();
    if !symlink {
        rustix::fs::chmodat(
            rustix::fs::CWD,
            dst,
            rustix::fs::Mode::from_raw_mode(m.mode() & 0o7777),
            AtFlags::empty(),
        )?;
        for (k, v) in xattrs(src)? {
            let _ = rustix::fs::lsetxattr(dst, k.as_str(), &v, rustix::fs::XattrFlags::empty());
        }
    }
    let t = Timestamps {
        last_access: Timespec {
            tv_sec: m.atime(),
            tv_nsec: m.atime_nsec() as _,
        },
        last_modification: Timespec {
            tv_sec: m.mtime(),
            tv_nsec: m.mtime_nsec() as _,
        },
    };
    rustix::fs::utimensat(rustix::fs::CWD, dst, &t, AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(())
}
