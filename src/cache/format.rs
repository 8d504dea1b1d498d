//! The exported cache as an OCI artifact: an image manifest whose `artifactType` is lade's,
//! whose config maps each step's cache key to the layer it produced, and whose layers are
//! those layers' blobs (so a registry keeps them alive and can mount them into another
//! repository). Nothing in it depends on paths, mtimes or the machine. Beside the steps it
//! holds the inputs of each step position's build ("why did it rebuild?" records: digests,
//! never values), so a runner with an empty store names what changed since the cache's build.

use crate::digest::Digest;
use crate::exec::why::StepInputs;
use crate::image::{canonical_json, media_types, Descriptor};
use crate::layer::{Compression, LayerDigests};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The manifest's `artifactType`.
pub const ARTIFACT_TYPE: &str = "application/vnd.lade.cache.v1";
/// The config's media type.
pub const CONFIG_TYPE: &str = "application/vnd.lade.cache.config.v1+json";
/// The config's `format`; another value is another lade's cache, ignored whole.
pub const FORMAT: &str = "lade-cache-v1";

/// The config: step key → the layer it produced, and step position → its inputs.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CacheConfig {
    pub format: String,
    pub steps: BTreeMap<Digest, CachedLayer>,
    /// [`crate::exec::why::position`] → the inputs of that step's build (an older lade's
    /// cache has none: its rebuilt steps have no earlier build to name).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub records: BTreeMap<Digest, StepInputs>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedLayer {
    pub digest: Digest,
    #[serde(rename = "diffID")]
    pub diff_id: Digest,
    pub size: u64,
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// What the layer holds (listing, account files), for runners that never fetch it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<crate::exec::LayerNotes>,
}

impl CachedLayer {
    pub fn from_digests(d: &LayerDigests) -> CachedLayer {
        CachedLayer {
            digest: d.digest.clone(),
            diff_id: d.diff_id.clone(),
            size: d.size,
            media_type: d.compression.oci_media_type().to_string(),
            notes: None,
        }
    }

    /// The store's step record, for a media type lade writes.
    pub fn digests(&self) -> Option<LayerDigests> {
        let compression = [Compression::Gzip, Compression::Zstd, Compression::None]
            .into_iter()
            .find(|c| c.oci_media_type() == self.media_type)?;
        Some(LayerDigests {
            digest: self.digest.clone(),
            diff_id: self.diff_id.clone(),
            size: self.size,
            compression,
        })
    }

    fn descriptor(&self) -> Descriptor {
        Descriptor::new(&self.media_type, self.digest.clone(), self.size)
    }
}

/// The manifest, with `artifactType` (the image `Manifest` struct has no such field).
#[derive(Debug, Serialize, Deserialize)]
pub struct CacheManifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType")]
    pub media_type: String,
    #[serde(rename = "artifactType", default)]
    pub artifact_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// The config and manifest documents of `config` (canonical JSON each, `format` set to
/// this lade's), layers by digest.
pub fn documents(config: &CacheConfig) -> (Vec<u8>, Vec<u8>) {
    let config = CacheConfig {
        format: FORMAT.into(),
        ..config.clone()
    };
    let config_bytes = canonical_json(&config).expect("cache config serialises");
    let mut layers: BTreeMap<&Digest, Descriptor> = BTreeMap::new();
    for l in config.steps.values() {
        layers.insert(&l.digest, l.descriptor());
    }
    let manifest = CacheManifest {
        schema_version: 2,
        media_type: media_types::OCI_MANIFEST.into(),
        artifact_type: Some(ARTIFACT_TYPE.into()),
        config: Descriptor::new(
            CONFIG_TYPE,
            Digest::of(&config_bytes),
            config_bytes.len() as u64,
        ),
        layers: layers.into_values().collect(),
    };
    let manifest_bytes = canonical_json(&manifest).expect("cache manifest serialises");
    (config_bytes, manifest_bytes)
}

/// Checks a manifest is lade's cache and returns it.
pub fn parse_manifest(bytes: &[u8]) -> Result<CacheManifest, String> {
    let m: CacheManifest =
        serde_json::from_slice(bytes).map_err(|e| format!("not a cache manifest: {e}"))?;
    if m.artifact_type.as_deref() != Some(ARTIFACT_TYPE) || m.config.media_type != CONFIG_TYPE {
        return Err(format!(
            "not a lade cache (artifactType {}, config {})",
            m.artifact_type.as_deref().unwrap_or("none"),
            m.config.media_type
        ));
    }
    Ok(m)
}

/// Checks the config (its bytes match the manifest's descriptor, the format is this lade's,
/// every step's layer is one of the manifest's layers) and returns it.
pub fn parse_config(manifest: &CacheManifest, bytes: &[u8]) -> Result<CacheConfig, String> {
    if Digest::of(bytes) != manifest.config.digest || bytes.len() as u64 != manifest.config.size {
        return Err("the config does not match its digest".into());
    }
    let config: CacheConfig =
        serde_json::from_slice(bytes).map_err(|e| format!("unreadable config: {e}"))?;
    if config.format != FORMAT {
        return Err(format!(
            "cache format {:?}, this lade reads {FORMAT:?}",
            config.format
        ));
    }
    for (key, l) in &config.steps {
        let listed = manifest
            .layers
            .iter()
            .any(|d| d.digest == l.digest && d.size == l.size && d.media_type == l.media_type);
        if !listed {
            return Err(format!(
                "step {key}: layer {} is not among the manifest's layers",
                l.digest
            ));
        }
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> CacheConfig {
        CacheConfig {
            steps: steps(),
            records: BTreeMap::from([(
                crate::exec::why::position("Dockerfile", 0, Some(1), "linux/amd64"),
                StepInputs::default(),
            )]),
            ..Default::default()
        }
    }

    fn steps() -> BTreeMap<Digest, CachedLayer> {
        let l = CachedLayer {
            digest: Digest::of(b"blob"),
            diff_id: Digest::of(b"tar"),
            size: 4,
            media_type: Compression::Gzip.oci_media_type().into(),
            notes: None,
        };
        BTreeMap::from([(Digest::of(b"k1"), l.clone()), (Digest::of(b"k2"), l)])
    }

    #[test]
    fn documents_round_trip_and_share_blobs() {
        let (config_bytes, manifest) = documents(&config());
        let m = parse_manifest(&manifest).unwrap();
        assert_eq!(m.layers.len(), 1);
        let read = parse_config(&m, &config_bytes).unwrap();
        assert_eq!(read.steps, steps());
        assert_eq!(read.records, config().records);
        // Deterministic.
        assert_eq!(documents(&config()), (config_bytes, manifest));
    }

    #[test]
    fn foreign_or_tampered_documents_are_refused() {
        let (config, manifest) = documents(&config());
        let foreign = String::from_utf8(manifest.clone())
            .unwrap()
            .replace(ARTIFACT_TYPE, "application/vnd.other");
        assert!(parse_manifest(foreign.as_bytes()).is_err());
        let m = parse_manifest(&manifest).unwrap();
        let other_format = String::from_utf8(config.clone())
            .unwrap()
            .replace(FORMAT, "lade-cache-v0");
        assert!(parse_config(&m, other_format.as_bytes()).is_err());
        // A config naming a layer the manifest does not list.
        let mut s = super::tests::config();
        s.steps.get_mut(&Digest::of(b"k1")).unwrap().size = 5;
        let (bad_config, _) = documents(&s);
        let bad = CacheManifest {
            config: Descriptor::new(
                CONFIG_TYPE,
                Digest::of(&bad_config),
                bad_config.len() as u64,
            ),
            ..m
        };
        let e = parse_config(&bad, &bad_config).unwrap_err();
        assert!(e.contains("not among the manifest's layers"), "{e}");
    }
}
