//! Reading a built image for its SBOM: every layer once, flattened (whiteouts applied, as
//! `lade diff` does), keeping the contents of the files package managers record packages in.

use super::AttestError;
use crate::diff::tree::{apply_layer, Tree};
use crate::digest::Digest;
use crate::image::BuiltImage;
use crate::store::Store;
use std::collections::BTreeMap;

/// What the SBOM is made from.
pub struct Scanned {
    /// Regular files this build's own layers (not the base's) left in the image, by path
    /// (relative, no leading `/`), sorted.
    pub placed: Vec<PlacedFile>,
    /// Package databases and manifests (see [`is_package_record`]) as they are in the final
    /// image, by path.
    pub records: BTreeMap<String, Vec<u8>>,
    /// The `cargo auditable` dependency lists (decompressed JSON) of the ELF binaries in the
    /// final image, by path.
    pub auditable: BTreeMap<String, Vec<u8>>,
}

pub struct PlacedFile {
    pub path: String,
    pub sha256: Digest,
    /// Lowercase hex (SPDX 2.3 requires a SHA1 of every file).
    pub sha1: String,
}

/// Files whose contents name packages: dpkg's and apk's databases, Python distributions'
/// metadata, jars (their `pom.properties`), `Cargo.lock` files, and `/etc/os-release`.
pub fn is_package_record(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    path == "var/lib/dpkg/status"
        || path == "lib/apk/db/installed"
        || path == "etc/os-release"
        || path == "usr/lib/os-release"
        || (name == "METADATA" && path.ends_with(".dist-info/METADATA"))
        || name.ends_with(".jar")
        || name == "Cargo.lock"
}

/// A file's contents as the scan needs them: the sha256, for this build's layers the SHA1,
/// and for package records the bytes.
struct Sink {
    sha256: crate::digest::Hasher,
    sha1: Option<sha1::Sha1>,
    bytes: Option<Vec<u8>>,
    /// Any other file while it may be an ELF binary: its bytes so far (dropped at the first
    /// byte that is not the ELF magic's, or past [`super::auditable::MAX_ELF`]).
    elf: Option<Vec<u8>>,
}

impl std::io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.sha256.update(buf);
        if let Some(h) = &mut self.sha1 {
            sha1::Digest::update(h, buf);
        }
        if let Some(b) = &mut self.bytes {
            b.extend_from_slice(buf);
        }
        if let Some(b) = &mut self.elf {
            let magic = super::auditable::ELF_MAGIC;
            let room = super::auditable::MAX_ELF.saturating_sub(b.len());
            if buf.len() > room {
                self.elf = None;
            } else {
                b.extend_from_slice(buf);
                let n = b.len().min(magic.len());
                if b[..n] != magic[..n] {
                    self.elf = None;
                }
            }
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn scan(image: &BuiltImage, store: &Store) -> Result<Scanned, AttestError> {
    let mut tree = Tree::new();
    // (layer, path) → bytes of a package record, SHA1 of a file of this build's layers.
    let mut contents: BTreeMap<(usize, Vec<u8>), Vec<u8>> = BTreeMap::new();
    let mut sha1s: BTreeMap<(usize, Vec<u8>), String> = BTreeMap::new();
    let mut audits: BTreeMap<(usize, Vec<u8>), Vec<u8>> = BTreeMap::new();
    for (i, layer) in image.manifest.layers.iter().enumerate() {
        let err = |message: String| AttestError::Layer {
            layer: layer.digest.clone(),
            message,
        };
        let compression = crate::diff::open::layer_compression(&layer.media_type).map_err(err)?;
        let blob = store.open_blob(&layer.digest)?;
        let own = i >= image.base_layers;
        let mut members = Vec::new();
        crate::layer::for_each_member(blob, compression, |info, file| {
            let Some(file) = file else {
                members.push((info, None));
                return Ok(());
            };
            let path = info.path.as_bytes().to_vec();
            let record = is_package_record(&String::from_utf8_lossy(&path));
            let mut sink = Sink {
                sha256: crate::digest::Hasher::new(),
                sha1: own.then(sha1::Sha1::default),
                bytes: record.then(Vec::new),
                elf: (!record).then(Vec::new),
            };
            std::io::copy(file, &mut sink)?;
            if let Some(bytes) = sink.bytes {
                contents.insert((i, path.clone()), bytes);
            }
            if let Some(json) = sink.elf.as_deref().and_then(super::auditable::dep_section) {
                audits.insert((i, path.clone()), json);
            }
            if let Some(h) = sink.sha1 {
                sha1s.insert((i, path), hex::encode(sha1::Digest::finalize(h)));
            }
            members.push((info, Some(sink.sha256.finish())));
            Ok(())
        })
        .map_err(|e| err(e.to_string()))?;
        apply_layer(&mut tree, i, &layer.digest, members);
    }
    let mut placed = Vec::new();
    let mut records = BTreeMap::new();
    let mut auditable = BTreeMap::new();
    for (path, entry) in &tree {
        if entry.kind != "file" {
            continue;
        }
        let name = String::from_utf8_lossy(path).into_owned();
        let key = (entry.layer, path.clone());
        if let Some(bytes) = contents.remove(&key) {
            records.insert(name.clone(), bytes);
        }
        if let Some(json) = audits.remove(&key) {
            auditable.insert(name.clone(), json);
        }
        if let (Some(sha256), Some(sha1)) = (&entry.content, sha1s.remove(&key)) {
            placed.push(PlacedFile {
                path: name,
                sha256: sha256.clone(),
                sha1,
            });
        }
    }
    Ok(Scanned {
        placed,
        records,
        auditable,
    })
}
