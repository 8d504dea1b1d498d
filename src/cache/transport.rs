//! Reading and writing a cache in an OCI image layout directory or a registry repository,
//! and bringing one imported blob into the store, verified.

use super::format::{self, CacheConfig};
use super::Place;
use crate::digest::Digest;
use crate::image::{media_types, Descriptor};
use crate::layer::LayerDigests;
use crate::registry::{Client, PushOptions, RegistryError};
use crate::store::Store;
use std::path::Path;

/// The annotation naming the cache manifest in a layout's `index.json`.
const REF_NAME: &str = "lade-cache";

/// The cache at `place`, verified (see [`format::parse_config`]).
pub fn read(
    place: &Place,
    store: &Store,
    registry: Option<&Client>,
) -> Result<CacheConfig, String> {
    match place {
        Place::Local(dir) => {
            let index_path = dir.join("index.json");
            let index = match std::fs::read(&index_path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err("no cache there yet".into())
                }
                Err(e) => return Err(format!("{}: {e}", index_path.display())),
            };
            let index: serde_json::Value =
                serde_json::from_slice(&index).map_err(|e| format!("index.json: {e}"))?;
            let desc = index["manifests"]
                .as_array()
                .and_then(|m| m.last())
                .ok_or("index.json lists no manifest")?;
            let digest: Digest = desc["digest"]
                .as_str()
                .and_then(|d| d.parse().ok())
                .ok_or("index.json: a manifest without a digest")?;
            let manifest_bytes = read_layout_blob(dir, &digest)?;
            let manifest = format::parse_manifest(&manifest_bytes)?;
            let config = read_layout_blob(dir, &manifest.config.digest)?;
            format::parse_config(&manifest, &config)
        }
        Place::Registry(r) => {
            let client = registry.ok_or("no registry client")?;
            let (bytes, _) = client.raw_manifest(r).map_err(|e| match e {
                RegistryError::NotFound { .. } => "no cache there yet".to_string(),
                e => e.to_string(),
            })?;
            let manifest = format::parse_manifest(&bytes)?;
            client
                .fetch_blobs(store, r, std::slice::from_ref(&manifest.config), 1)
                .map_err(|e| e.to_string())?;
            let config = store
                .read_blob(&manifest.config.digest)
                .map_err(|e| e.to_string())?;
            format::parse_config(&manifest, &config)
        }
    }
}

/// A layout blob whose bytes match its digest.
fn read_layout_blob(dir: &Path, digest: &Digest) -> Result<Vec<u8>, String> {
    let path = dir.join("blobs/sha256").join(digest.hex());
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    if Digest::of(&bytes) != *digest {
        return Err(format!("blob {digest} does not match its digest"));
    }
    Ok(bytes)
}

/// Brings `layer`'s blob from `place` into the store (digest and size checked on the way)
/// and checks its diff_id by decompressing it.
pub fn fetch_verified(
    place: &Place,
    layer: &LayerDigests,
    store: &Store,
    registry: Option<&Client>,
) -> Result<(), String> {
    let desc = Descriptor::new(
        layer.compression.oci_media_type(),
        layer.digest.clone(),
        layer.size,
    );
    match place {
        Place::Local(dir) => {
            let path = dir.join("blobs/sha256").join(layer.digest.hex());
            let mut f =
                std::fs::File::open(&path).map_err(|e| format!("blob {}: {e}", layer.digest))?;
            store
                .import_blob(&mut f, &layer.digest, Some(layer.size))
                .map_err(|e| format!("blob {}: {e}", layer.digest))?;
        }
        Place::Registry(r) => {
            let client = registry.ok_or("no registry client")?;
            client
                .fetch_blobs(store, r, std::slice::from_ref(&desc), 1)
                .map_err(|e| e.to_string())?;
        }
    }
    if store.blob_size(&layer.digest).ok() != Some(layer.size) {
        return Err(format!("blob {} is not {} bytes", layer.digest, layer.size));
    }
    let blob = store.open_blob(&layer.digest).map_err(|e| e.to_string())?;
    let plain = crate::layer::decompress(std::io::BufReader::new(blob), layer.compression);
    let diff_id = crate::layer::DiffIdReader::new(plain)
        .finish()
        .map_err(|e| format!("blob {}: {e}", layer.digest))?;
    if diff_id != layer.diff_id {
        return Err(format!(
            "layer {} has diff_id {diff_id}, the cache says {}",
            layer.digest, layer.diff_id
        ));
    }
    Ok(())
}

/// Writes `cache` at `place`: blobs first, the manifest last.
pub fn write(
    place: &Place,
    cache: &CacheConfig,
    store: &Store,
    registry: Option<&Client>,
) -> Result<(), String> {
    let (config, manifest) = format::documents(cache);
    match place {
        Place::Local(dir) => {
            let blobs = dir.join("blobs/sha256");
            std::fs::create_dir_all(&blobs).map_err(|e| format!("{}: {e}", blobs.display()))?;
            let put = |digest: &Digest, bytes: Option<&[u8]>| -> Result<(), String> {
                let path = blobs.join(digest.hex());
                if path.exists() {
                    return Ok(());
                }
                let mut tmp = crate::store::temp_file_in(&blobs).map_err(|e| e.to_string())?;
                match bytes {
                    Some(b) => std::io::Write::write_all(&mut tmp, b),
                    None => store
                        .open_blob(digest)
                        .map_err(std::io::Error::other)
                        .and_then(|mut f| std::io::copy(&mut f, &mut tmp).map(|_| ())),
                }
                .map_err(|e| format!("blob {digest}: {e}"))?;
                tmp.persist(&path)
                    .map_err(|e| format!("{}: {}", path.display(), e.error))?;
                Ok(())
            };
            for l in cache.steps.values() {
                put(&l.digest, None)?;
            }
            put(&Digest::of(&config), Some(&config))?;
            put(&Digest::of(&manifest), Some(&manifest))?;
            let index = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": media_types::OCI_INDEX,
                "manifests": [{
                    "mediaType": media_types::OCI_MANIFEST,
                    "artifactType": format::ARTIFACT_TYPE,
                    "digest": Digest::of(&manifest),
                    "size": manifest.len(),
                    "annotations": {"org.opencontainers.image.ref.name": REF_NAME},
                }],
            });
            let layout = dir.join("oci-layout");
            crate::store::write_atomic(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)
                .map_err(|e| format!("{}: {e}", layout.display()))?;
            let path = dir.join("index.json");
            let bytes = serde_json::to_vec(&index).expect("index serialises");
            crate::store::write_atomic(&path, &bytes)
                .map_err(|e| format!("{}: {e}", path.display()))
        }
        Place::Registry(r) => {
            let client = registry.ok_or("no registry client")?;
            store.put_bytes(&config).map_err(|e| e.to_string())?;
            let tag = r.tag.clone().unwrap_or_else(|| "latest".into());
            client
                .push_image(
                    store,
                    r,
                    &manifest,
                    media_types::OCI_MANIFEST,
                    &[tag],
                    &PushOptions {
                        blob_origins: super::lazy_origins(),
                        ..PushOptions::default()
                    },
                )
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    }
}
