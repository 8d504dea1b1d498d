//! Temp files and directories owned by the process that made them, and the sweep that removes
//! those whose owner is gone.
//!
//! Every temp lade creates is locked with flock(2) on an open descriptor for as long as it
//! lives: a file through its own descriptor, a directory through a descriptor of the directory
//! itself (so nothing extra ends up inside a directory that is later renamed into an output).
//! The kernel drops the lock when the process ends, however it ends, so after a SIGKILL the
//! temps are unlocked and [`sweep`] removes them; a running build's temps stay locked.
//!
//! The race with a creator is closed without timing: the sweeper removes an entry only while
//! it holds the entry's lock, and a creator, once it holds its lock, checks that its path still
//! names the entry it locked. A creator that finds the lock taken (a sweeper has it) or its
//! entry gone starts over with a fresh name, so nothing is ever written into a temp that a
//! sweeper may be removing.

use std::ffi::OsStr;
use std::fs::{File, TryLockError};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Takes the lock of a temp that was just created at `path` through `file`. An error of kind
/// `AlreadyExists` means "try another name" (what `tempfile` does on a name collision).
pub(crate) fn lock_new(file: &File, path: &Path) -> io::Result<()> {
    let lost = || io::Error::new(io::ErrorKind::AlreadyExists, "taken by a stale-temp sweep");
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Err(lost()),
        Err(TryLockError::Error(e)) => return Err(e),
    }
    let held = file.metadata()?;
    match std::fs::symlink_metadata(path) {
        Ok(m) if (m.dev(), m.ino()) == (held.dev(), held.ino()) => Ok(()),
        Ok(_) => Err(lost()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(lost()),
        Err(e) => Err(e),
    }
}

/// A temp directory (removed on drop, like [`tempfile::TempDir`], which it derefs to) whose
/// lock is held until it is dropped or kept.
#[derive(Debug)]
pub struct OwnedTempDir {
    dir: tempfile::TempDir,
    _lock: File,
}

impl OwnedTempDir {
    /// Creates a directory with `create` and locks it, retrying with a new name when a sweep
    /// got to it first.
    pub(crate) fn create(
        mut create: impl FnMut() -> io::Result<tempfile::TempDir>,
    ) -> io::Result<OwnedTempDir> {
        let mut last = None;
        for _ in 0..16 {
            let dir = create()?;
            let lock = match open_dir(dir.path()) {
                Ok(lock) => lock,
                // Swept between its creation and this open: a sweep of another process found
                // it unlocked. Its `TempDir` drop finds nothing to remove.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    last = Some(e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            match lock_new(&lock, dir.path()) {
                Ok(()) => return Ok(OwnedTempDir { dir, _lock: lock }),
                // The sweeper holding it removes it; our drop may race it harmlessly.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.expect("at least one attempt"))
    }

    /// Leaves the directory where it is (it was renamed into place) and releases the lock.
    pub fn keep(self) -> PathBuf {
        self.dir.keep()
    }
}

impl std::ops::Deref for OwnedTempDir {
    type Target = tempfile::TempDir;
    fn deref(&self) -> &tempfile::TempDir {
        &self.dir
    }
}

fn open_dir(path: &Path) -> io::Result<File> {
    File::options()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(path)
}

/// Which entries of a directory are lade temps: files, or directories, by name prefix and
/// suffix.
#[derive(Debug, Clone, Copy)]
pub struct TempNames {
    pub prefix: &'static str,
    pub suffix: &'static str,
    /// Directories (else regular files) of these names.
    pub dirs: bool,
}

impl TempNames {
    fn matches(&self, name: &OsStr, is_dir: bool) -> bool {
        let name = name.as_encoded_bytes();
        is_dir == self.dirs
            && name.len() > self.prefix.len() + self.suffix.len()
            && name.starts_with(self.prefix.as_bytes())
            && name.ends_with(self.suffix.as_bytes())
    }
}

/// Removes the entries of `dir` that one of `names` accepts and whose lock nobody holds:
/// temps of lade processes that no longer run. Returns how many were removed. Best effort:
/// a directory that cannot be read, or an entry that cannot be opened or removed (another
/// user's), is left as it is.
pub fn sweep(dir: &Path, names: &[TempNames]) -> usize {
    sweep_with(dir, names, &|_| Ok(()))
}

/// [`sweep`], running `before_removal` on each stale entry once its lock is held (e.g. to
/// unmount what a killed process left mounted inside it).
pub fn sweep_with(
    dir: &Path,
    names: &[TempNames],
    before_removal: &dyn Fn(&Path) -> io::Result<()>,
) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if !names.iter().any(|n| n.matches(&name, is_dir)) {
            continue;
        }
        let path = entry.path();
        match sweep_one(&path, is_dir, before_removal) {
            Ok(true) => {
                tracing::debug!(path = %path.display(), "removed a stale temp");
                removed += 1;
            }
            Ok(false) => {}
            Err(e) => tracing::debug!(path = %path.display(), "cannot sweep: {e}"),
        }
    }
    removed
}

/// Removes `path` if it is an unlocked directory (`dir`) or regular file, never following a
/// link nor opening a FIFO or device. `Ok(false)`: it is in use, or not what lade made.
fn sweep_one(
    path: &Path,
    dir: bool,
    before_removal: &dyn Fn(&Path) -> io::Result<()>,
) -> io::Result<bool> {
    let m = std::fs::symlink_metadata(path)?;
    let file = if dir && m.is_dir() {
        open_dir(path)?
    } else if !dir && m.is_file() {
        File::options()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)?
    } else {
        return Ok(false);
    };
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Ok(false),
        Err(TryLockError::Error(e)) => return Err(e),
    }
    // The lock is ours until `file` is dropped: its owner is gone, and a creator that made
    // it a moment ago sees the lock taken and uses another name.
    let held = file.metadata()?;
    if (held.dev(), held.ino()) != (m.dev(), m.ino()) {
        return Ok(false);
    }
    before_removal(path)?;
    if held.is_dir() {
        std::fs::remove_dir_all(path)?;
    } else {
        std::fs::remove_file(path)?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: &[TempNames] = &[
        TempNames {
            prefix: ".lade-",
            suffix: ".tmp",
            dirs: false,
        },
        TempNames {
            prefix: ".lade-",
            suffix: "-d",
            dirs: true,
        },
    ];

    #[test]
    fn sweep_removes_unlocked_temps_and_keeps_locked_ones_and_others() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        std::fs::write(p(".lade-stale.tmp"), "x").unwrap();
        std::fs::create_dir_all(p(".lade-stale-d/a/b")).unwrap();
        std::fs::write(p(".lade-stale-d/a/b/f"), "x").unwrap();
        // Names of the wrong kind, or not lade's, are not touched.
        std::fs::create_dir(p(".lade-dir.tmp")).unwrap();
        std::fs::write(p(".lade-file-d"), "x").unwrap();
        std::fs::write(p("kept.tmp"), "x").unwrap();
        std::fs::write(p(".lade-live.tmp"), "x").unwrap();
        let live = File::open(p(".lade-live.tmp")).unwrap();
        live.lock().unwrap();
        std::os::unix::fs::symlink("/etc/hostname", p(".lade-link.tmp")).unwrap();
        assert_eq!(sweep(dir.path(), NAMES), 2);
        assert!(!p(".lade-stale.tmp").exists());
        assert!(!p(".lade-stale-d").exists());
        assert!(p(".lade-dir.tmp").is_dir() && p(".lade-file-d").is_file());
        assert!(p(".lade-live.tmp").exists());
        assert!(p("kept.tmp").exists());
        assert!(p(".lade-link.tmp").symlink_metadata().is_ok());
        drop(live);
        assert_eq!(sweep(dir.path(), NAMES), 1);
        assert!(!p(".lade-live.tmp").exists());
    }

    #[test]
    fn a_fifo_with_a_temp_name_is_left_alone_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join(".lade-fifo.tmp");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert_eq!(sweep(dir.path(), NAMES), 0);
        assert!(fifo.symlink_metadata().is_ok());
    }

    #[test]
    fn an_owned_dir_is_locked_until_dropped() {
        let parent = tempfile::tempdir().unwrap();
        let names = [TempNames {
            prefix: "own-",
            suffix: "",
            dirs: true,
        }];
        let d = OwnedTempDir::create(|| {
            tempfile::Builder::new()
                .prefix("own-")
                .tempdir_in(parent.path())
        })
        .unwrap();
        assert_eq!(sweep(parent.path(), &names), 0);
        assert!(d.path().is_dir());
        let path = d.path().to_path_buf();
        let kept = d.keep();
        assert_eq!(kept, path);
        assert_eq!(sweep(parent.path(), &names), 1);
        assert!(!path.exists());
    }

    #[test]
    fn a_creator_that_loses_its_entry_to_a_sweep_is_told_to_retry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".lade-new.tmp");
        let file = File::create(&path).unwrap();
        // A sweeper took the lock first.
        let sweeper = File::open(&path).unwrap();
        sweeper.lock().unwrap();
        let e = lock_new(&file, &path).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        drop(sweeper);
        // ... or removed it before the creator locked it.
        std::fs::remove_file(&path).unwrap();
        let e = lock_new(&file, &path).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
    }

    #[test]
    fn a_directory_swept_before_its_creator_opened_it_is_made_again() {
        // What a sweep of another process does between `tempdir_in` and the creator's open:
        // the first directory is gone when the creator looks; it takes a new one.
        let parent = tempfile::tempdir().unwrap();
        let mut attempts = 0;
        let d = OwnedTempDir::create(|| {
            attempts += 1;
            let d = tempfile::Builder::new()
                .prefix(".lade-")
                .suffix("-d")
                .tempdir_in(parent.path())?;
            if attempts == 1 {
                std::fs::remove_dir(d.path())?;
            }
            Ok(d)
        })
        .unwrap();
        assert_eq!(attempts, 2);
        assert!(d.path().is_dir());
    }
}
