//! Cleaning up after SIGINT/SIGTERM. Temp files live beside destinations (and in the store's
//! `tmp/`) until renamed, and a new OCI layout is built whole in a temp directory; tempfile's
//! `Drop` removes them on an error, but a signal ends the process without unwinding. So every
//! temp file and directory lade creates is registered here, and a thread waiting for the
//! signals removes the registered ones (directories with all they hold) and exits 130 / 143.
//!
//! The signals are blocked in every thread ([`install`] runs before any other thread
//! exists, and threads inherit the mask) and taken with `sigwait` on one thread, so the
//! cleanup is ordinary code, not an async-signal handler. Child processes start with an
//! empty mask (std resets it on spawn).

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use super::owned::OwnedTempDir;

/// Paths of temp files that may exist. A path stays after its file was renamed or removed:
/// removing it again only fails with ENOENT, and the names are random, so no other file
/// has them.
static LIVE: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);

fn live() -> MutexGuard<'static, Option<HashSet<PathBuf>>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Blocks SIGINT and SIGTERM and starts the thread that cleans up and exits on them. Call
/// it first thing in `main`, before any thread is started.
pub fn install() {
    // SAFETY: plain libc signal-set calls on a local set.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return;
        }
        set
    };
    let spawned = std::thread::Builder::new()
        .name("lade-signals".into())
        .spawn(move || loop {
            let mut sig = 0;
            // SAFETY: `set` is a valid signal set; sigwait writes the signal number.
            if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
                cleanup_and_exit(sig);
            }
        });
    if spawned.is_err() {
        // Without the waiting thread the signals must not stay blocked.
        // SAFETY: as above.
        unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
    }
}

/// Set when a signal's cleanup has begun; from then on the process ends only through it.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn cleanup_and_exit(sig: i32) -> ! {
    INTERRUPTED.store(true, Ordering::SeqCst);
    // Actions first (kill a container, unmount a snapshot), so that no path removed below is
    // still in use or mounted. The lock is held until exit: none is added or dropped after.
    let actions = ACTIONS.lock().unwrap_or_else(|e| e.into_inner());
    for (_, action) in actions.iter().rev() {
        action();
    }
    // The lock is held until exit: no temp file can be created after this point.
    let guard = live();
    for p in guard.iter().flatten() {
        remove(p);
    }
    // SAFETY: _exit ends the process at once; nothing after it runs.
    unsafe { libc::_exit(128 + sig) }
}

type Action = Box<dyn Fn() + Send>;

/// Cleanup actions that are more than removing a path, newest last.
static ACTIONS: Mutex<Vec<(u64, Action)>> = Mutex::new(Vec::new());
static NEXT_ACTION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Runs `action` if a signal ends the process while the returned guard lives (before the
/// registered temp paths are removed, newest action first). Dropping the guard unregisters it.
pub fn on_interrupt(action: impl Fn() + Send + 'static) -> ActionGuard {
    let id = NEXT_ACTION.fetch_add(1, Ordering::Relaxed);
    ACTIONS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((id, Box::new(action)));
    ActionGuard(id)
}

/// Keeps a cleanup action of [`on_interrupt`] registered.
#[derive(Debug)]
pub struct ActionGuard(u64);

impl Drop for ActionGuard {
    fn drop(&mut self) {
        ACTIONS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(id, _)| *id != self.0);
    }
}

/// Called by `main` before it prints an error or returns: once a signal's cleanup has begun,
/// the other threads fail on the files it removes, and their error must neither be printed nor
/// end the process (exit code 1, cleanup cut short). This thread then waits for the cleanup's
/// `_exit` with the signal's code.
pub fn wait_if_interrupted() {
    while INTERRUPTED.load(Ordering::SeqCst) {
        std::thread::park();
    }
}

fn remove(path: &Path) {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            // The other threads still run, and one may rename a finished temp file into the
            // directory while it is being removed. None can create another (the registry
            // stays locked), so a few rounds leave it empty.
            for _ in 0..10 {
                if std::fs::remove_dir_all(path).is_ok() || !path.exists() {
                    break;
                }
            }
        }
        Ok(_) => {
            let _ = std::fs::remove_file(path);
        }
        Err(_) => {}
    }
}

/// A new temp directory in `dir` named `<prefix>XXXXXX`, with `mode` (less the umask). It
/// is created and registered with the registry locked, so a signal comes either before it
/// exists or while it is registered; it is flock'ed as [`super::owned`] describes.
pub(crate) fn temp_dir(dir: &Path, prefix: &str, mode: u32) -> io::Result<OwnedTempDir> {
    use std::os::unix::fs::PermissionsExt;
    OwnedTempDir::create(|| {
        let mut reg = live();
        let d = tempfile::Builder::new()
            .prefix(prefix)
            .permissions(std::fs::Permissions::from_mode(mode))
            .tempdir_in(dir)?;
        reg.get_or_insert_with(HashSet::new)
            .insert(d.path().to_path_buf());
        Ok(d)
    })
}

/// Renames a registered temp file or directory to `to` with the registry locked: a signal's
/// cleanup either removed `from` before (and the rename never happens, the process is
/// exiting) or finds it gone, never half removed and then renamed into place.
pub(crate) fn rename_into_place(from: &Path, to: &Path) -> io::Result<()> {
    let _reg = live();
    std::fs::rename(from, to)
}

/// A new temp file in `dir` named `<prefix>XXXXXX<suffix>`, with `mode` (less the umask),
/// registered before it exists so a signal can never leave it behind, and flock'ed through
/// the returned file's descriptor as [`super::owned`] describes.
pub(crate) fn temp_file(
    dir: &Path,
    prefix: &str,
    suffix: &str,
    mode: u32,
) -> io::Result<tempfile::NamedTempFile> {
    use std::os::unix::fs::OpenOptionsExt;
    tempfile::Builder::new()
        .prefix(prefix)
        .suffix(suffix)
        .make_in(dir, |path| {
            let mut reg = live();
            reg.get_or_insert_with(HashSet::new)
                .insert(path.to_path_buf());
            let file = File::options()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(path)?;
            super::owned::lock_new(&file, path)?;
            Ok(file)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_files_are_registered_before_they_exist() {
        let dir = tempfile::tempdir().unwrap();
        let t = temp_file(dir.path(), ".lade-", ".tmp", 0o600).unwrap();
        assert!(live().as_ref().unwrap().contains(t.path()));
        let name = t.path().file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with(".lade-") && name.ends_with(".tmp"),
            "{name}"
        );
    }

    #[test]
    fn temp_dirs_are_registered_and_removed_whole() {
        let dir = tempfile::tempdir().unwrap();
        let t = temp_dir(dir.path(), ".lade-x-", 0o777).unwrap();
        assert!(live().as_ref().unwrap().contains(t.path()));
        std::fs::create_dir_all(t.path().join("a/b")).unwrap();
        std::fs::write(t.path().join("a/b/f"), "x").unwrap();
        remove(t.path());
        assert!(!t.path().exists());
    }

    #[test]
    fn a_renamed_temp_dir_is_not_removed_from_its_new_place() {
        let dir = tempfile::tempdir().unwrap();
        let t = temp_dir(dir.path(), ".lade-y-", 0o777).unwrap();
        std::fs::write(t.path().join("f"), "x").unwrap();
        let dest = dir.path().join("dest");
        rename_into_place(t.path(), &dest).unwrap();
        remove(t.path());
        assert_eq!(std::fs::read(dest.join("f")).unwrap(), b"x");
    }
}
