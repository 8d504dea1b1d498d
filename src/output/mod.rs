//! Writing a built image out: an OCI archive (a tarred image layout), an OCI layout
//! directory, a `docker load` archive, plus the iid and metadata files. Files are written to
//! a temp file beside the destination and renamed, so an interrupted build leaves none.

mod archive;
mod artifact;
mod layout;
mod load;
mod metadata;
mod registry;
mod target;
mod uptodate;

pub use artifact::{Artifact, IndexAnnotations};
pub use load::{load, Engine};
pub use metadata::{metadata_json, write_small_file};
pub use target::{Dest, Target, TargetParseError};

use crate::store::Store;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The I/O error is in the message, not a `source()`: a cause chain shows each OS error
    /// once.
    #[error("writing {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("reading {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Layer(#[from] crate::layer::LayerError),
    #[error("{path}: {message}")]
    Layout { path: PathBuf, message: String },
    #[error("refusing to write an image archive to a terminal; redirect standard output or use dest=FILE")]
    Terminal,
    #[error(transparent)]
    Registry(crate::registry::RegistryError),
    #[error("invalid tag {tag:?}: {message}")]
    Tag { tag: String, message: String },
    #[error("--annotation: {0}")]
    Annotation(String),
    #[error("a registry output needs a registry client")]
    NoRegistryClient,
    #[error("a docker archive holds one image, not {0} platforms (docker load cannot read an index); use type=oci or type=oci-layout, or build one --platform")]
    DockerMultiPlatform(usize),
    #[error("{0} is the image's filesystem, which the build writes, not an image output")]
    NotAnImage(String),
    #[error("cannot run `{command}` to load the image: {error}")]
    LoadStart {
        command: String,
        error: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    LoadFailed {
        command: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

/// Where and how a [`Target::Registry`] output pushes.
pub struct PushTo<'a> {
    pub client: &'a crate::registry::Client,
    pub options: crate::registry::PushOptions,
}

/// Writes `artifact` to `target`. `tags` are full image names (`name[:tag]`); a registry
/// target pushes to each (`push` says how) and returns one report per repository.
pub fn write(
    target: &Target,
    artifact: &Artifact,
    tags: &[String],
    store: &Store,
    push: Option<&PushTo<'_>>,
) -> Result<Vec<crate::registry::PushReport>, OutputError> {
    match target {
        Target::Oci { dest } => {
            archive::write(
                dest,
                &archive::oci_entries(artifact, tags, store)?,
                Some(store),
            )?;
        }
        Target::Docker { dest } => {
            let image = artifact
                .single_image()
                .ok_or(OutputError::DockerMultiPlatform(artifact.images.len()))?;
            archive::write(
                dest,
                &archive::docker_entries(image, tags, store)?,
                Some(store),
            )?;
        }
        Target::OciLayout { dir } => layout::add(dir, artifact, tags, store)?,
        Target::Registry => {
            let push = push.ok_or(OutputError::NoRegistryClient)?;
            return registry::push(artifact, tags, store, push.client, &push.options);
        }
        Target::Local { .. } => return Err(OutputError::NotAnImage("type=local".into())),
        Target::Tar { .. } => return Err(OutputError::NotAnImage("type=tar".into())),
    }
    Ok(Vec::new())
}

/// Writes layer entries (a filesystem export) as an uncompressed tar to `dest`, atomically
/// for a file.
pub fn write_tar(dest: &Dest, entries: &[crate::layer::Entry]) -> Result<(), OutputError> {
    archive::write(dest, entries, None)
}

/// Removes the temps that lade processes no longer running left where `target` writes: a
/// SIGKILL'd build's `.lade-XXXXXX.tmp` beside an archive, or its staging directory beside a
/// new layout and temp blobs inside an existing one. Temps of running builds stay (they are
/// locked); returns how many were removed.
pub fn sweep_stale_temps(target: &Target) -> usize {
    use crate::store::{sweep, TempNames, ATOMIC_TEMP};
    let parent = |p: &std::path::Path| match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    match target {
        Target::Oci {
            dest: Dest::File(path),
        }
        | Target::Docker {
            dest: Dest::File(path),
        }
        | Target::Tar {
            dest: Dest::File(path),
        } => sweep(&parent(path), &[ATOMIC_TEMP]),
        Target::Local { dir } => {
            let staging = TempNames {
                prefix: LOCAL_STAGING_PREFIX,
                suffix: "",
                dirs: true,
            };
            sweep(&parent(dir), &[staging])
        }
        Target::OciLayout { dir } => {
            let staging = TempNames {
                prefix: layout::STAGING_PREFIX,
                suffix: "",
                dirs: true,
            };
            sweep(&parent(dir), &[ATOMIC_TEMP, staging])
                + sweep(dir, &[ATOMIC_TEMP])
                + sweep(&dir.join("blobs").join("sha256"), &[ATOMIC_TEMP])
        }
        Target::Oci { dest: Dest::Stdout }
        | Target::Docker { dest: Dest::Stdout }
        | Target::Tar { dest: Dest::Stdout }
        | Target::Registry => 0,
    }
}

/// The prefix of the directory a `type=local` export is staged in, beside its destination.
pub const LOCAL_STAGING_PREFIX: &str = ".lade-local-";

/// Splits `name[:tag]` into the repository and the tag (default `latest`); a `:` followed by
/// a `/` belongs to a registry port, not a tag.
pub fn split_tag(name: &str) -> Result<(&str, &str), OutputError> {
    let bad = |m: &str| OutputError::Tag {
        tag: name.to_string(),
        message: m.to_string(),
    };
    if name.contains('@') {
        return Err(bad("a digest cannot be used as a tag"));
    }
    let (repo, tag) = match name.rsplit_once(':') {
        Some((r, t)) if !t.contains('/') => (r, t),
        _ => (name, "latest"),
    };
    if repo.is_empty()
        || repo
            .chars()
            .any(|c| c.is_ascii_uppercase() || c.is_whitespace())
    {
        return Err(bad("repository names are lowercase and non-empty"));
    }
    let tag_ok = !tag.is_empty()
        && tag.len() <= 128
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && !tag.starts_with(['.', '-']);
    if !tag_ok {
        return Err(bad(
            "tags are up to 128 characters of [A-Za-z0-9_.-], not starting with . or -",
        ));
    }
    Ok((repo, tag))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_split_like_docker() {
        assert_eq!(split_tag("app").unwrap(), ("app", "latest"));
        assert_eq!(
            split_tag("localhost:5000/app").unwrap(),
            ("localhost:5000/app", "latest")
        );
        assert_eq!(
            split_tag("localhost:5000/app:1.2").unwrap(),
            ("localhost:5000/app", "1.2")
        );
        assert!(split_tag("App:1").is_err());
        assert!(split_tag("app:-x").is_err());
        assert!(split_tag("app@sha256:00").is_err());
    }
}
