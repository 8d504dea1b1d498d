//! The content-addressed store under `$XDG_CACHE_HOME/lade` (or `--cache-dir`): blobs by
//! sha256, the step cache index (cache key → layer record), and the file-digest cache that
//! lets an unchanged context skip re-reading. Every write is temp file + rename, so two lade
//! processes can share one store and an interrupted write leaves nothing half-done.

mod blobs;
mod filecache;
pub mod interrupt;
mod owned;
mod steps;

pub use blobs::BlobWriter;
pub use filecache::{FileDigestCache, FileStamp};
pub use owned::{sweep, sweep_with, OwnedTempDir, TempNames};

use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The I/O error is in the message, not a `source()`: a cause chain shows each OS error
    /// once.
    #[error("cache directory {path}: {error}")]
    Io { path: PathBuf, error: io::Error },
    #[error("blob {expected} is missing from the store")]
    MissingBlob { expected: crate::digest::Digest },
    #[error("blob content does not match its digest: expected {expected}, got {actual}")]
    DigestMismatch {
        expected: crate::digest::Digest,
        actual: crate::digest::Digest,
    },
    #[error("blob size does not match: expected {expected} bytes, got {actual}")]
    SizeMismatch { expected: u64, actual: u64 },
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |error| StoreError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// A handle on one store directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// The store used when no `--cache-dir` is given: `$LADE_CACHE_DIR`, else
    /// `$XDG_CACHE_HOME/lade`, else `~/.cache/lade`.
    pub fn default_root() -> PathBuf {
        if let Some(d) = std::env::var_os("LADE_CACHE_DIR").filter(|d| !d.is_empty()) {
            return PathBuf::from(d);
        }
        if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
            return PathBuf::from(d).join("lade");
        }
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        home.join(".cache").join("lade")
    }

    pub fn open(root: &Path) -> Result<Store, StoreError> {
        for sub in [
            "blobs/sha256",
            "tmp",
            "steps",
            "files",
            steps::RECORDS_DIR,
            OUTPUTS_DIR,
        ] {
            let p = root.join(sub);
            std::fs::create_dir_all(&p).map_err(io_err(&p))?;
        }
        Ok(Store {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where lade notes the archives it wrote, so an unchanged one is not written again
    /// (`output::uptodate`).
    pub fn outputs_dir(&self) -> PathBuf {
        self.root.join(OUTPUTS_DIR)
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Removes the temps that lade processes no longer running left in the store (a SIGKILL
    /// gives no chance to clean up): blob temps and extracted stages in `tmp/`, atomic-write
    /// temps beside the index files. Locked temps of running builds are left alone.
    pub fn sweep_stale_temps(&self) -> usize {
        let tmp = [
            TempNames {
                prefix: BLOB_TEMP_PREFIX,
                suffix: "",
                dirs: false,
            },
            TempNames {
                prefix: STAGE_DIR_PREFIX,
                suffix: "",
                dirs: true,
            },
        ];
        sweep(&self.tmp_dir(), &tmp)
            + sweep(&self.root.join("steps"), &[ATOMIC_TEMP])
            + sweep(&self.root.join("files"), &[ATOMIC_TEMP])
            + sweep(&self.root.join(steps::RECORDS_DIR), &[ATOMIC_TEMP])
            + sweep(&self.outputs_dir(), &[ATOMIC_TEMP])
    }
}

const OUTPUTS_DIR: &str = "outputs";

/// Name prefix of a blob being written in `<store>/tmp`.
pub(crate) const BLOB_TEMP_PREFIX: &str = ".tmp";
/// Name prefix of a stage's extracted root in `<store>/tmp` (`COPY --from`).
pub const STAGE_DIR_PREFIX: &str = "stage-";
/// Name prefix of the scratch directory an ADDed archive is unpacked into, in `$TMPDIR`
/// (`exec::files` spells it out).
pub const ADD_DIR_PREFIX: &str = "lade-add-";
/// The names of [`temp_file_in`]'s files: `.lade-XXXXXX.tmp`, beside their destination.
pub const ATOMIC_TEMP: TempNames = TempNames {
    prefix: ".lade-",
    suffix: ".tmp",
    dirs: false,
};

/// Removes the stale scratch directories of lade processes no longer running from `$TMPDIR`.
pub fn sweep_stale_scratch() -> usize {
    sweep(
        &std::env::temp_dir(),
        &[TempNames {
            prefix: ADD_DIR_PREFIX,
            suffix: "",
            dirs: true,
        }],
    )
}

/// A temporary file to be renamed over a file users see: created with mode 0666 less the
/// umask, like any file a shell or docker writes (tempfile's default is 0600).
/// Registered with [`interrupt`], so SIGINT/SIGTERM removes it too.
pub fn temp_file_in(dir: &Path) -> io::Result<tempfile::NamedTempFile> {
    interrupt::temp_file(dir, ATOMIC_TEMP.prefix, ATOMIC_TEMP.suffix, 0o666)
}

/// A new temp directory in `dir` (mode 0777 less the umask, like `mkdir`), which SIGINT and
/// SIGTERM remove with everything in it until [`rename_into_place`] moves it.
pub fn temp_dir_in(dir: &Path, prefix: &str) -> io::Result<OwnedTempDir> {
    interrupt::temp_dir(dir, prefix, 0o777)
}

/// A scratch directory for lade alone (mode 0700: unpacked archives and stages may hold
/// files other users must not read), removed like [`temp_dir_in`]'s on a signal.
pub fn scratch_dir_in(dir: &Path, prefix: &str) -> io::Result<OwnedTempDir> {
    interrupt::temp_dir(dir, prefix, 0o700)
}

/// Renames a temp file or directory from this module to its destination, never while a
/// signal's cleanup is removing it.
pub fn rename_into_place(from: &Path, to: &Path) -> io::Result<()> {
    interrupt::rename_into_place(from, to)
}

/// Writes `bytes` to `path` atomically: a temp file beside it, then rename. No fsync: the
/// rename makes a whole file appear or nothing; durability across a power loss is not promised.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = temp_file_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
