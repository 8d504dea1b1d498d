//! [`Snapshotter`]: a writable root over a chain of extracted layers, diffed to layer entries
//! and released on drop (BuildKit's `snapshot.Snapshotter`). [`Overlay`] mounts overlayfs
//! (lowerdirs = the extracted layers, a fresh upperdir); [`Copy`](super::copy::Copy) copies
//! the layers into a fresh directory where overlayfs cannot be mounted.
//!
//! Snapshots live in `<store>/run/snapshots/<random>/` (upper, work, merged), registered with
//! `store::interrupt`: SIGINT unmounts the overlay, then removes the directory.

use super::diff::{upper_to_entries, DiffOptions};
use super::executor::sandbox;
use super::lowers::LowerView;
use super::RunError;
use crate::layer::Entry;
use crate::store::{interrupt, Store};
use std::path::{Path, PathBuf};

/// Prepares writable roots.
pub trait Snapshotter: Send + Sync {
    /// `overlay` or `copy`, for progress and errors.
    fn name(&self) -> &'static str;
    /// A writable root showing `lowers` (extracted layer directories, bottom first).
    fn prepare(&self, lowers: &[PathBuf], store: &Store) -> Result<Box<dyn Snapshot>, RunError>;
}

/// A prepared root. Dropping it releases it (unmount, remove).
pub trait Snapshot: Send + Sync {
    /// Where the process runs.
    fn root(&self) -> &Path;
    /// What changed since `prepare`, as layer entries (host files inside the snapshot: keep
    /// it alive until the layer is written).
    fn diff(&self, opts: &DiffOptions) -> Result<Vec<Entry>, RunError>;
}

/// Removes the snapshots of RUNs whose lade process died without releasing them (SIGKILL):
/// each unlocked `ovl-*`/`copy-*` directory has what is mounted below it detached first, so
/// the removal never walks into a live overlay. Returns how many were removed.
pub fn sweep_stale(store: &Store) -> usize {
    let dir = store.root().join("run").join("snapshots");
    let names = [
        crate::store::TempNames {
            prefix: "ovl-",
            suffix: "",
            dirs: true,
        },
        crate::store::TempNames {
            prefix: "copy-",
            suffix: "",
            dirs: true,
        },
    ];
    crate::store::sweep_with(&dir, &names, &|path| {
        for m in mounts_below(path)?.iter().rev() {
            rustix::mount::unmount(m.as_path(), rustix::mount::UnmountFlags::DETACH)?;
        }
        Ok(())
    })
}

/// Mount points at or below `path`, in mount order (from `/proc/self/mountinfo`).
fn mounts_below(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let path = path.canonicalize()?;
    Ok(info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .filter(|m| m.starts_with(&path))
        .collect())
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
pub(super) fn unescape_mountinfo(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() && s.is_char_boundary(i + 4) {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    use std::os::unix::ffi::OsStringExt;
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

pub(crate) fn snapshot_dir(
    store: &Store,
    prefix: &str,
) -> Result<crate::store::OwnedTempDir, RunError> {
    let dir = store.root().join("run").join("snapshots");
    std::fs::create_dir_all(&dir).map_err(|e| sandbox(&dir, e))?;
    crate::store::scratch_dir_in(&dir, prefix).map_err(|e| sandbox(&dir, e))
}

/// overlayfs through the new mount API (`fsopen`, one `lowerdir+` per layer, so a long chain
/// never meets the page-size limit of the `lowerdir=` option string; Linux ≥ 6.8), falling
/// back to `mount(2)` with `lowerdir=a:b:…` on older kernels.
#[derive(Debug, Default, Clone, Copy)]
pub struct Overlay;

pub struct OverlaySnapshot {
    lowers: LowerView,
    upper: PathBuf,
    merged: PathBuf,
    // Order matters on drop: unmount (and unregister) first, then remove the directory.
    _unmount: Unmount,
    _dir: crate::store::OwnedTempDir,
}

struct Unmount {
    merged: PathBuf,
    _guard: interrupt::ActionGuard,
}

impl Drop for Unmount {
    fn drop(&mut self) {
        if let Err(e) = rustix::mount::unmount(&self.merged, rustix::mount::UnmountFlags::DETACH) {
            tracing::warn!("unmount {}: {e}", self.merged.display());
        }
    }
}

impl Snapshotter for Overlay {
    fn name(&self) -> &'static str {
        "overlay"
    }

    fn prepare(&self, lowers: &[PathBuf], store: &Store) -> Result<Box<dyn Snapshot>, RunError> {
        let dir = snapshot_dir(store, "ovl-")?;
        let (upper, work, merged, empty) = (
            dir.path().join("upper"),
            dir.path().join("work"),
            dir.path().join("merged"),
            dir.path().join("empty"),
        );
        for d in [&upper, &work, &merged, &empty] {
            std::fs::create_dir(d).map_err(|e| sandbox(d, e))?;
        }
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&upper, std::fs::Permissions::from_mode(0o755));
        // overlayfs wants at least one lowerdir; FROM scratch gets an empty one.
        let mut top_first = top_first_once(lowers);
        if top_first.is_empty() {
            top_first.push(empty);
        }
        mount_overlay(&top_first, &upper, &work, &merged)
            .map_err(|e| RunError::Sandbox(format!("overlayfs unavailable: {e}")))?;
        let guard = {
            let merged = merged.clone();
            interrupt::on_interrupt(move || {
                let _ = rustix::mount::unmount(&merged, rustix::mount::UnmountFlags::DETACH);
            })
        };
        Ok(Box::new(OverlaySnapshot {
            lowers: LowerView::new(lowers),
            upper,
            merged: merged.clone(),
            _unmount: Unmount {
                merged,
                _guard: guard,
            },
            _dir: dir,
        }))
    }
}

impl Snapshot for OverlaySnapshot {
    fn root(&self) -> &Path {
        &self.merged
    }

    fn diff(&self, opts: &DiffOptions) -> Result<Vec<Entry>, RunError> {
        upper_to_entries(&self.upper, &self.lowers, opts)
    }
}

/// The lowerdirs, top first, each once: overlayfs refuses a directory given twice (`ELOOP`),
/// and a chain holds the same layer twice when two steps made equal layers (`COPY f /f`
/// again, two RUNs that changed nothing: each has the empty layer below the next RUN). A
/// layer under its own copy adds nothing: whatever it holds or hides, the copy above holds or
/// hides too, and the layers between see the same from above.
fn top_first_once(lowers: &[PathBuf]) -> Vec<PathBuf> {
    let mut seen = std::collections::HashSet::new();
    lowers
        .iter()
        .rev()
        .filter(|l| seen.insert(l.as_path()))
        .cloned()
        .collect()
}

fn mount_overlay(
    top_first: &[PathBuf],
    upper: &Path,
    work: &Path,
    merged: &Path,
) -> std::io::Result<()> {
    use rustix::mount::*;
    // In a user namespace (rootless) overlayfs keeps its whiteout xattrs as `user.overlay.*`,
    // the form the extracted layers have there.
    let userxattr = crate::layer::in_user_namespace();
    let redirect_dir = if userxattr { "nofollow" } else { "off" };
    let new_api = || -> std::io::Result<()> {
        let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)?;
        for l in top_first {
            fsconfig_set_string(&fs, "lowerdir+", l.as_path())?;
        }
        fsconfig_set_string(&fs, "upperdir", upper)?;
        fsconfig_set_string(&fs, "workdir", work)?;
        // No index/metacopy/redirect features: upper files are always whole copies.
        fsconfig_set_string(&fs, "index", "off")?;
        fsconfig_set_string(&fs, "metacopy", "off")?;
        // `userxattr` refuses `off`; `nofollow` creates no redirects either (a renamed
        // directory is copied up whole).
        fsconfig_set_string(&fs, "redirect_dir", redirect_dir)?;
        if userxattr {
            fsconfig_set_flag(&fs, "userxattr")?;
        }
        // The upper is thrown away or turned into a layer right after the RUN: no syncs
        // (without this, unmounting syncs the whole upper filesystem).
        if fsconfig_set_flag(&fs, "volatile").is_err() {
            tracing::debug!("overlayfs without the volatile option");
        }
        fsconfig_create(&fs)?;
        let mnt = fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::empty())?;
        move_mount(
            &mnt,
            "",
            rustix::fs::CWD,
            merged,
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
        )?;
        Ok(())
    };
    match new_api() {
        Ok(()) => Ok(()),
        Err(e) => {
            tracing::debug!("overlay via fsconfig lowerdir+: {e}; trying mount(2)");
            let lower: Vec<String> = top_first.iter().map(|p| p.display().to_string()).collect();
            let data = format!(
                "lowerdir={},upperdir={},workdir={},index=off,metacopy=off,redirect_dir={}{}",
                lower.join(":"),
                upper.display(),
                work.display(),
                redirect_dir,
                if userxattr { ",userxattr" } else { "" }
            );
            let data = std::ffi::CString::new(data)
                .map_err(|_| std::io::Error::other("NUL in a layer path"))?;
            mount(
                "overlay",
                merged,
                "overlay",
                MountFlags::empty(),
                data.as_c_str(),
            )
            .map_err(std::io::Error::from)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(
            unescape_mountinfo(r"/a\040b\011c\134d"),
            PathBuf::from("/a b\tc\\d")
        );
        assert_eq!(unescape_mountinfo(r"/x\04"), PathBuf::from(r"/x\04"));
    }

    #[test]
    fn a_layer_twice_in_the_chain_is_a_lowerdir_once_at_its_top_place() {
        let p = |s: &str| PathBuf::from(s);
        let lowers = [p("base"), p("a"), p("b"), p("a"), p("c")];
        assert_eq!(top_first_once(&lowers), [p("c"), p("a"), p("b"), p("base")]);
    }
}
