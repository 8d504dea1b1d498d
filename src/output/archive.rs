//! Image archives (OCI archive and `docker load` format), written as deterministic tarballs
//! with the layer writer: sorted entries, fixed owners and mtimes, so equal images give
//! byte-identical archives.

use super::uptodate::Archive;
use super::{split_tag, Artifact, Dest, OutputError};
use crate::digest::Digest;
use crate::image::BuiltImage;
use crate::image::{canonical_json, media_types, Index};
use crate::layer::{Entry, EntryKind, FileSource};
use crate::path::ImagePath;
use crate::store::Store;
use serde_json::json;
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::Arc;

const REF_NAME: &str = "org.opencontainers.image.ref.name";
const CONTAINERD_NAME: &str = "io.containerd.image.name";

/// A plain 0644 root-owned file of the archive.
pub(super) fn file(path: &str, source: FileSource, size: u64) -> Entry {
    Entry {
        path: ImagePath::from_rel_bytes(path.as_bytes()).expect("archive paths are clean"),
        kind: EntryKind::File {
            source,
            size,
            link_key: None,
        },
        mode: 0o644,
        uid: 0,
        gid: 0,
        mtime: 0,
        xattrs: BTreeMap::new(),
    }
}

fn bytes(path: &str, content: Vec<u8>) -> Entry {
    let size = content.len() as u64;
    file(path, FileSource::Bytes(Arc::new(content)), size)
}

fn blob_path(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algorithm(), d.hex())
}

/// The OCI archive's entries, the image layout (`oci-layout`, `index.json`, every blob); the
/// docker archive adds its own files to them.
pub fn oci_entries(
    artifact: &Artifact,
    tags: &[String],
    store: &Store,
) -> Result<Vec<Entry>, OutputError> {
    let mut manifests = Vec::new();
    let desc = artifact.top();
    for t in tags {
        let (_, tag) = split_tag(t)?;
        let mut d = desc.clone();
        d.annotations = Some(BTreeMap::from([
            (CONTAINERD_NAME.to_string(), t.clone()),
            (REF_NAME.to_string(), tag.to_string()),
        ]));
        manifests.push(d);
    }
    if manifests.is_empty() {
        manifests.push(desc);
    }
    let index = Index {
        schema_version: 2,
        media_type: Some(media_types::OCI_INDEX.into()),
        manifests,
        annotations: None,
    };
    let mut entries = vec![
        bytes("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
        bytes(
            "index.json",
            canonical_json(&index).expect("index serialises"),
        ),
    ];
    for d in artifact.blobs() {
        let size = store.blob_size(d)?;
        entries.push(file(
            &blob_path(d),
            FileSource::Host(store.blob_path(d)),
            size,
        ));
    }
    Ok(entries)
}

/// The image layout plus `manifest.json` and `repositories`, which `docker load` reads.
pub fn docker_entries(
    image: &BuiltImage,
    tags: &[String],
    store: &Store,
) -> Result<Vec<Entry>, OutputError> {
    let mut entries = oci_entries(&Artifact::single(image.clone()), tags, store)?;
    let mut repo_tags = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for t in tags {
        let (repo, tag) = split_tag(t)?;
        repo_tags.push(format!("{repo}:{tag}"));
        repositories
            .entry(repo.to_string())
            .or_default()
            .insert(tag.to_string(), image.config_digest.hex());
    }
    let manifest = json!([{
        "Config": blob_path(&image.config_digest),
        "RepoTags": if repo_tags.is_empty() { serde_json::Value::Null } else { json!(repo_tags) },
        "Layers": image.manifest.layers.iter().map(|l| blob_path(&l.digest)).collect::<Vec<_>>(),
    }]);
    entries.push(bytes(
        "manifest.json",
        canonical_json(&manifest).expect("json"),
    ));
    if !repositories.is_empty() {
        entries.push(bytes(
            "repositories",
            canonical_json(&repositories).expect("json"),
        ));
    }
    Ok(entries)
}

/// A layer writer's error while writing the archive `dest`: a failed write names `dest` (a
/// full disk is the output's), a failed read keeps the file it read.
fn writing(dest: &std::path::Path, e: crate::layer::LayerError) -> OutputError {
    match e {
        crate::layer::LayerError::Write(error) => OutputError::Io {
            path: dest.to_path_buf(),
            error,
        },
        other => other.into(),
    }
}

/// Writes the entries as an uncompressed tar to `sink` (a pipe), named `name` in errors.
pub fn write_to<W: Write>(name: &str, entries: &[Entry], sink: W) -> Result<W, OutputError> {
    let mut w = crate::layer::write_tar(entries.to_vec(), 0, std::io::BufWriter::new(sink))
        .map_err(|e| writing(name.as_ref(), e))?;
    w.flush().map_err(|error| OutputError::Io {
        path: name.into(),
        error,
    })?;
    w.into_inner().map_err(|e| OutputError::Io {
        path: name.into(),
        error: e.into_error(),
    })
}

/// Writes the entries as an uncompressed tar to `dest`, atomically for files. An image
/// archive (`unchanged` given) whose file already holds these entries is left as it is.
pub fn write(dest: &Dest, entries: &[Entry], unchanged: Option<&Store>) -> Result<(), OutputError> {
    match dest {
        Dest::Stdout => {
            let stdout = std::io::stdout();
            if stdout.is_terminal() {
                return Err(OutputError::Terminal);
            }
            let mut w = crate::layer::write_tar(
                entries.to_vec(),
                0,
                std::io::BufWriter::new(stdout.lock()),
            )
            .map_err(|e| writing("<stdout>".as_ref(), e))?;
            w.flush().map_err(|error| OutputError::Io {
                path: "<stdout>".into(),
                error,
            })
        }
        Dest::File(path) => {
            let io = |error| OutputError::Io {
                path: path.clone(),
                error,
            };
            let dir = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => std::path::Path::new("."),
            };
            let archive = unchanged.and_then(|store| Archive::new(store, dir, path, entries));
            if archive.as_ref().is_some_and(|a| a.is_current(path)) {
                tracing::info!("{} is up to date", path.display());
                return Ok(());
            }
            let tmp = crate::store::temp_file_in(dir).map_err(io)?;
            let w = crate::layer::write_tar(entries.to_vec(), 0, std::io::BufWriter::new(tmp))
                .map_err(|e| writing(path, e))?;
            let tmp = w.into_inner().map_err(|e| io(e.into_error()))?;
            if let Some(a) = &archive {
                a.seal(tmp.as_file()).map_err(io)?;
            }
            tmp.persist(path).map_err(|e| io(e.error))?;
            if let Some(a) = &archive {
                a.written(path);
            }
            Ok(())
        }
    }
}
