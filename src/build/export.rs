//! `-o type=local,dest=DIR` / `-o DIR` and `-o type=tar,dest=FILE|-`: the target stage's
//! filesystem (its layers applied in order, whiteouts honoured) instead of the image, as
//! BuildKit's local and tar exporters write it. With several platforms each gets a
//! subdirectory named like buildx's (`linux_amd64`, `linux_arm_v7`).
//!
//! The layers are applied by the safe extractor (`layer::extract`), so no member or link of an
//! image can create or change anything outside the destination. The tree is built in a staging
//! directory first: a failed build or a hostile layer leaves no half-written output.

use super::BuildError;
use crate::exec;
use crate::image::{BuiltImage, Platform};
use crate::output::{Artifact, Dest, OutputError, LOCAL_STAGING_PREFIX};
use crate::store::Store;
use std::path::{Path, PathBuf};

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BuildError + '_ {
    move |error| {
        OutputError::Io {
            path: path.to_path_buf(),
            error,
        }
        .into()
    }
}

fn parent(p: &Path) -> &Path {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// buildx's directory name for a platform: its parts joined by `_`.
pub fn platform_dir(p: &Platform) -> String {
    p.to_string().replace('/', "_")
}

/// Applies every image of `artifact` into `root` (into a per-platform subdirectory when
/// there are several).
fn fill(root: &Path, artifact: &Artifact, store: &Store) -> Result<(), BuildError> {
    let several = artifact.images.len() > 1;
    for image in &artifact.images {
        let dir = if several {
            let d = root.join(platform_dir(&image.platform));
            std::fs::create_dir(&d).map_err(io(&d))?;
            d
        } else {
            root.to_path_buf()
        };
        apply(image, &dir, store)?;
    }
    Ok(())
}

fn apply(image: &BuiltImage, dir: &Path, store: &Store) -> Result<(), BuildError> {
    exec::extract_all(
        "the built image",
        &image.manifest.layers,
        &image.config,
        dir,
        store,
    )?;
    Ok(())
}

/// Writes the filesystem to the directory `dest`. A missing or empty `dest` is replaced by the
/// staged tree in one rename; into an existing one the staged top-level entries are moved,
/// each replacing what had its name (BuildKit's local exporter also writes over an existing
/// directory, keeping what the image does not have).
pub fn local(dest: &Path, artifact: &Artifact, store: &Store) -> Result<(), BuildError> {
    let parent = parent(dest);
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let staging = crate::store::temp_dir_in(parent, LOCAL_STAGING_PREFIX).map_err(io(parent))?;
    fill(staging.path(), artifact, store)?;
    let empty = match std::fs::read_dir(dest) {
        Ok(mut d) => d.next().is_none(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => return Err(io(dest)(e)),
    };
    if empty && crate::store::rename_into_place(staging.path(), dest).is_ok() {
        let _ = staging.keep();
        return Ok(());
    }
    if !dest.is_dir() {
        return Err(OutputError::Layout {
            path: dest.to_path_buf(),
            message: "exists and is not a directory".into(),
        }
        .into());
    }
    let mut names: Vec<PathBuf> = std::fs::read_dir(staging.path())
        .map_err(io(staging.path()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(io(staging.path()))?;
    names.sort();
    for from in names {
        let to = dest.join(from.file_name().expect("a directory entry has a name"));
        match std::fs::symlink_metadata(&to) {
            // A directory is replaced whole, as anything else: what the image has there is
            // what the export holds. `remove_dir_all` does not follow symlinks.
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&to).map_err(io(&to))?,
            Ok(_) => std::fs::remove_file(&to).map_err(io(&to))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&to)(e)),
        }
        std::fs::rename(&from, &to).map_err(io(&to))?;
    }
    Ok(())
}

/// Writes the filesystem as an uncompressed tar to `dest` (atomically for a file).
pub fn tar(dest: &Dest, artifact: &Artifact, store: &Store) -> Result<(), BuildError> {
    let tmp = store.root().join("tmp");
    let staging =
        crate::store::scratch_dir_in(&tmp, crate::store::STAGE_DIR_PREFIX).map_err(io(&tmp))?;
    fill(staging.path(), artifact, store)?;
    let entries = exec::run::tree_to_entries(
        staging.path(),
        &exec::run::LowerView::new(&[]),
        &exec::run::CopiedDirs::default(),
        &exec::run::DiffOptions::default(),
    )
    .map_err(|e| BuildError::Io {
        what: "reading the exported filesystem".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    crate::output::write_tar(dest, &entries)?;
    Ok(())
}
