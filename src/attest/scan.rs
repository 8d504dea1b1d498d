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
struct Sink<'a> {
    sha256: crate::digest::Hasher,
    sha1: Option<sha1::Sha1>,
    bytes: Option<Vec<u8>>,
    /// Any other file while it may be an ELF binary (dropped at the first byte that is not
    /// the ELF magic's).
    elf: Option<ElfCopy<'a>>,
}

/// The bytes of a possible ELF binary: in memory up to [`ELF_IN_MEMORY`], then in an
/// unnamed temp file of the store, so a large binary costs disk, not memory.
struct ElfCopy<'a> {
    head: Vec<u8>,
    spill: Option<std::fs::File>,
    tmp: &'a std::path::Path,
}

/// How much of a binary the scan keeps in memory before it spills to disk.
const ELF_IN_MEMORY: usize = 8 << 20;

impl ElfCopy<'_> {
    /// Keeps `buf`; false once the bytes cannot be an ELF file.
    fn write(&mut self, buf: &[u8]) -> std::io::Result<bool> {
        use std::io::Write;
        let magic = super::auditable::ELF_MAGIC;
        if self.head.len() < magic.len() && self.spill.is_none() {
            let start = [&self.head[..], &buf[..buf.len().min(magic.len())]].concat();
            let n = start.len().min(magic.len());
            if start[..n] != magic[..n] {
                return Ok(false);
            }
        }
        if let Some(f) = &mut self.spill {
            f.write_all(buf)?;
        } else if self.head.len() + buf.len() > ELF_IN_MEMORY {
            let mut f = tempfile::tempfile_in(self.tmp)?;
            f.write_all(&self.head)?;
            f.write_all(buf)?;
            self.head = Vec::new();
            self.spill = Some(f);
        } else {
            self.head.extend_from_slice(buf);
        }
        Ok(true)
    }

    fn dep_section(self) -> Option<Vec<u8>> {
        match &self.spill {
            Some(f) => super::auditable::dep_section_of_file(f),
            None => super::auditable::dep_section(&self.head),
        }
    }
}

impl std::io::Write for Sink<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.sha256.update(buf);
        if let Some(h) = &mut self.sha1 {
            sha1::Digest::update(h, buf);
        }
        if let Some(b) = &mut self.bytes {
            b.extend_from_slice(buf);
        }
        if let Some(elf) = &mut self.elf {
            if !elf.write(buf)? {
                self.elf = None;
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
    let tmp = store.root().join("tmp");
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
                elf: (!record).then(|| ElfCopy {
                    head: Vec::new(),
                    spill: None,
                    tmp: &tmp,
                }),
            };
            std::io::copy(file, &mut sink)?;
            if let Some(bytes) = sink.bytes {
                contents.insert((i, path.clone()), bytes);
            }
            if let Some(json) = sink.elf.and_then(ElfCopy::dep_section) {
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
