//! Reading a built image for its SBOM: every layer once, flattened (whiteouts applied, as
//! `lade diff` does), keeping the contents of the files package managers record packages in.

use super::AttestError;
use crate::diff::tree::{apply_layer, Tree};
use crate::digest::Digest;
use crate::image::BuiltImage;
use crate::layer::TarEntryInfo;
use crate::store::Store;
use std::collections::BTreeMap;

/// What the SBOM is made from.
pub struct Scanned {
    /// Regular files this build's own layers (not the base's) left in the image, by path
    /// (`/`-prefixed), with their sha256.
    pub placed: Vec<(String, Digest)>,
    /// Package databases and manifests (see [`is_package_record`]) as they are in the final
    /// image, by path.
    pub records: BTreeMap<String, Vec<u8>>,
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

pub fn scan(image: &BuiltImage, store: &Store) -> Result<Scanned, AttestError> {
    let mut tree = Tree::new();
    let mut contents: BTreeMap<(usize, Vec<u8>), Vec<u8>> = BTreeMap::new();
    let keep =
        |info: &TarEntryInfo| is_package_record(&String::from_utf8_lossy(info.path.as_bytes()));
    for (i, layer) in image.manifest.layers.iter().enumerate() {
        let err = |message: String| AttestError::Layer {
            layer: layer.digest.clone(),
            message,
        };
        let compression = crate::diff::open::layer_compression(&layer.media_type).map_err(err)?;
        let blob = store.open_blob(&layer.digest)?;
        let members =
            crate::layer::scan_layer(blob, compression, keep).map_err(|e| err(e.to_string()))?;
        let mut listed = Vec::with_capacity(members.len());
        for (info, digest, kept) in members {
            if let Some(bytes) = kept {
                contents.insert((i, info.path.as_bytes().to_vec()), bytes);
            }
            listed.push((info, digest));
        }
        apply_layer(&mut tree, i, &layer.digest, listed);
    }
    let mut placed = Vec::new();
    let mut records = BTreeMap::new();
    for (path, entry) in &tree {
        if entry.kind != "file" {
            continue;
        }
        let name = String::from_utf8_lossy(path).into_owned();
        if let Some(bytes) = contents.remove(&(entry.layer, path.clone())) {
            records.insert(name.clone(), bytes);
        }
        if entry.layer >= image.base_layers {
            if let Some(d) = &entry.content {
                placed.push((format!("/{name}"), d.clone()));
            }
        }
    }
    Ok(Scanned { placed, records })
}
