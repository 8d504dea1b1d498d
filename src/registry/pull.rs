//! Pulling: tag or digest → (index →) manifest for a platform → config and layers into the
//! store, each verified by digest and size while streaming.

use super::auth::Scope;
use super::client::{Client, Failure, Host};
use super::timeout::StallGuard;
use super::{Reference, RegistryError};
use crate::digest::Digest;
use crate::image::{media_types as mt, Descriptor, Index, Manifest, Platform};
use crate::store::{Store, StoreError};
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Accepted manifest types (schema1 is deliberately absent).
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

#[derive(Debug, Clone)]
pub struct PullOptions {
    /// The platform picked from an index / manifest list.
    pub platform: Platform,
    /// Parallel blob downloads.
    pub jobs: usize,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            platform: Platform::host(),
            jobs: 4,
        }
    }
}

/// An image manifest resolved for one platform, with its config in the store (layers not
/// necessarily fetched).
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// The reference as asked, with the digest of what the tag pointed to.
    pub reference: Reference,
    /// The digest the tag points to (an index or the manifest itself).
    pub top_digest: Digest,
    /// Set when the reference pointed to an index / manifest list.
    pub index_digest: Option<Digest>,
    pub manifest_digest: Digest,
    pub manifest_media_type: String,
    /// The manifest exactly as served (its digest is `manifest_digest`).
    pub manifest_bytes: Vec<u8>,
    pub manifest: Manifest,
    pub config_bytes: Vec<u8>,
}

impl ResolvedImage {
    pub fn config(&self) -> &Descriptor {
        &self.manifest.config
    }
    pub fn layers(&self) -> &[Descriptor] {
        &self.manifest.layers
    }
}

/// A pulled image: resolved, and every layer in the store.
#[derive(Debug, Clone)]
pub struct PulledImage {
    pub image: ResolvedImage,
    /// Blobs (config and layers) downloaded now.
    pub blobs_fetched: usize,
    /// Blobs the store already had.
    pub blobs_cached: usize,
    pub bytes_fetched: u64,
}

/// A raw manifest document as served.
pub(crate) struct RawManifest {
    bytes: Vec<u8>,
    media_type: String,
    digest: Digest,
}

impl Client {
    /// Resolves `reference` and downloads config and layers into `store` (blobs already there
    /// are not downloaded again). Manifests (and the index) are stored as blobs too.
    pub fn pull(
        &self,
        store: &Store,
        reference: &Reference,
        opts: &PullOptions,
    ) -> Result<PulledImage, RegistryError> {
        let (image, config_fetched) = self.resolve_inner(store, reference, &opts.platform)?;
        let (fetched, cached, bytes) =
            self.fetch_blobs(store, reference, &image.manifest.layers, opts.jobs)?;
        let config = &image.manifest.config;
        Ok(PulledImage {
            blobs_fetched: fetched + usize::from(config_fetched),
            blobs_cached: cached + usize::from(!config_fetched),
            bytes_fetched: bytes + if config_fetched { config.size } else { 0 },
            image,
        })
    }

    /// The digest a tag (or digest reference) currently points to, via `HEAD` — cheap, for
    /// `--pull=missing|always` decisions. For a multi-platform image this is the index digest.
    pub fn manifest_digest(&self, reference: &Reference) -> Result<Digest, RegistryError> {
        let host = self.host(&reference.registry)?;
        let scope = Scope::pull(&reference.repository);
        let url = self.url(
            &host,
            &format!(
                "{}/manifests/{}",
                reference.repository,
                reference.manifest_ref()
            ),
        );
        let what = format!("manifest {reference}");
        let resp = self.retrying(&|| format!("HEAD {what}"), || {
            self.send(&host, &scope, &|h| {
                h.head(url.clone()).header(ACCEPT, MANIFEST_ACCEPT)
            })
        })?;
        if !resp.status().is_success() {
            return Err(self.status_error(&host, &reference.repository, &what, resp));
        }
        let header = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<Digest>().ok());
        match header {
            Some(d) => Ok(d),
            // Registries without the header: fetch and hash.
            None => Ok(self.get_manifest(&host, reference)?.digest),
        }
    }

    /// The size the registry gives for blob `digest` of `reference`'s repository, via `HEAD`
    /// (no download); `None` when the repository lacks it.
    pub fn blob_size(
        &self,
        reference: &Reference,
        digest: &Digest,
    ) -> Result<Option<u64>, RegistryError> {
        let host = self.host(&reference.registry)?;
        let scope = Scope::pull(&reference.repository);
        let url = self.url(&host, &format!("{}/blobs/{digest}", reference.repository));
        let what = format!("blob {digest} of {}", reference.name());
        let resp = self.retrying(&|| format!("HEAD {what}"), || {
            self.send(&host, &scope, &|h| h.head(url.clone()))
        })?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(self.status_error(&host, &reference.repository, &what, resp));
        }
        Ok(resp
            .headers()
            .get(reqwest::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok()))
    }

    /// Resolves `reference` to the image manifest for `platform` and fetches its config into
    /// `store`, without downloading layers (for pushes that mount base layers, or to read
    /// the base config). Index and manifest bytes are stored as blobs.
    pub fn resolve(
        &self,
        store: &Store,
        reference: &Reference,
        platform: &Platform,
    ) -> Result<ResolvedImage, RegistryError> {
        self.resolve_inner(store, reference, platform)
            .map(|(r, _)| r)
    }

    /// `resolve`, also telling whether the config had to be downloaded.
    fn resolve_inner(
        &self,
        store: &Store,
        reference: &Reference,
        platform: &Platform,
    ) -> Result<(ResolvedImage, bool), RegistryError> {
        let host = self.host(&reference.registry)?;
        let top = self.get_manifest(&host, reference)?;
        store.put_bytes(&top.bytes)?;
        let top_digest = top.digest.clone();
        let (index_digest, raw) = if is_index(&top.media_type) {
            let index: Index =
                serde_json::from_slice(&top.bytes).map_err(|e| RegistryError::InvalidManifest {
                    reference: reference.to_string(),
                    detail: format!("index: {e}"),
                })?;
            let chosen = select_platform(&index, platform).ok_or_else(|| {
                let available: Vec<String> = index
                    .manifests
                    .iter()
                    .filter_map(|d| d.platform.as_ref().map(|p| p.to_string()))
                    .collect();
                RegistryError::NoMatchingPlatform {
                    reference: reference.to_string(),
                    platform: platform.to_string(),
                    available: if available.is_empty() {
                        "none listed".into()
                    } else {
                        available.join(", ")
                    },
                }
            })?;
            let child = reference.with_digest(chosen.digest.clone());
            let raw = self.get_manifest(&host, &child)?;
            if is_index(&raw.media_type) {
                return Err(RegistryError::UnsupportedManifest {
                    reference: reference.to_string(),
                    media_type: raw.media_type,
                    hint: " (nested index)",
                });
            }
            store.put_bytes(&raw.bytes)?;
            (Some(top_digest.clone()), raw)
        } else {
            (None, top)
        };
        let manifest: Manifest =
            serde_json::from_slice(&raw.bytes).map_err(|e| RegistryError::InvalidManifest {
                reference: reference.to_string(),
                detail: e.to_string(),
            })?;
        if manifest.schema_version != 2 {
            return Err(RegistryError::UnsupportedManifest {
                reference: reference.to_string(),
                media_type: format!("schemaVersion {}", manifest.schema_version),
                hint: SCHEMA1_HINT,
            });
        }
        let (config_fetched, _, _) =
            self.fetch_blobs(store, reference, std::slice::from_ref(&manifest.config), 1)?;
        let config_bytes = store.read_blob(&manifest.config.digest)?;
        let image = ResolvedImage {
            reference: reference.clone(),
            top_digest,
            index_digest,
            manifest_digest: raw.digest,
            manifest_media_type: raw.media_type,
            manifest_bytes: raw.bytes,
            manifest,
            config_bytes,
        };
        Ok((image, config_fetched > 0))
    }

    /// The bytes and media type of the manifest `reference` names (verified against its
    /// digest), whatever it describes: for artifacts such as lade's exported cache.
    pub fn raw_manifest(&self, reference: &Reference) -> Result<(Vec<u8>, String), RegistryError> {
        let host = self.host(&reference.registry)?;
        let raw = self.get_manifest(&host, reference)?;
        Ok((raw.bytes, raw.media_type))
    }

    /// Fetches the raw manifest (or index) a reference points to, verified against the
    /// reference's digest or the registry's `Docker-Content-Digest`.
    pub(crate) fn get_manifest(
        &self,
        host: &Host,
        reference: &Reference,
    ) -> Result<RawManifest, RegistryError> {
        let scope = Scope::pull(&reference.repository);
        let url = self.url(
            host,
            &format!(
                "{}/manifests/{}",
                reference.repository,
                reference.manifest_ref()
            ),
        );
        let what = match &reference.digest {
            Some(d) => format!("manifest {d} in {}/{}", host.name, reference.repository),
            None => format!("manifest for {reference}"),
        };
        let (bytes, ct, header_digest) = self.retrying(&|| format!("GET {what}"), || {
            let resp = self.send(host, &scope, &|h| {
                h.get(url.clone()).header(ACCEPT, MANIFEST_ACCEPT)
            })?;
            if !resp.status().is_success() {
                return Err(Failure::Fatal(self.status_error(
                    host,
                    &reference.repository,
                    &what,
                    resp,
                )));
            }
            let ct = resp
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.split(';').next().unwrap_or("").trim().to_string());
            let hd = resp
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let mut bytes = Vec::new();
            // Manifests are small; 4 MiB is the distribution limit.
            StallGuard::new(resp, self.options().timeout)
                .take(4 << 20)
                .read_to_end(&mut bytes)
                .map_err(|e| Failure::Retry {
                    cause: format!("reading manifest: {e}"),
                    after: None,
                })?;
            Ok((bytes, ct, hd))
        })?;
        let digest = Digest::of(&bytes);
        let expected = reference
            .digest
            .clone()
            .or_else(|| header_digest.and_then(|h| h.parse::<Digest>().ok()));
        if let Some(expected) = expected {
            if expected != digest {
                return Err(RegistryError::DigestMismatch {
                    host: host.name.clone(),
                    what: what.clone(),
                    expected,
                    detail: format!("content hashes to {digest}"),
                });
            }
        }
        let media_type = media_type_of(&bytes, ct.as_deref());
        if media_type == mt::DOCKER_SCHEMA1 || media_type == mt::DOCKER_SCHEMA1_SIGNED {
            return Err(RegistryError::UnsupportedManifest {
                reference: reference.to_string(),
                media_type,
                hint: SCHEMA1_HINT,
            });
        }
        if ![
            mt::OCI_INDEX,
            mt::OCI_MANIFEST,
            mt::DOCKER_MANIFEST,
            mt::DOCKER_MANIFEST_LIST,
        ]
        .contains(&media_type.as_str())
        {
            return Err(RegistryError::UnsupportedManifest {
                reference: reference.to_string(),
                media_type,
                hint: "",
            });
        }
        Ok(RawManifest {
            bytes,
            media_type,
            digest,
        })
    }

    /// Downloads blobs of `reference`'s repository into `store` in parallel, skipping those
    /// already there. Returns (fetched, already cached, bytes fetched).
    pub fn fetch_blobs(
        &self,
        store: &Store,
        reference: &Reference,
        blobs: &[Descriptor],
        jobs: usize,
    ) -> Result<(usize, usize, u64), RegistryError> {
        let mut todo: Vec<&Descriptor> = Vec::new();
        let mut cached = 0;
        for d in blobs {
            if store.has_blob(&d.digest) {
                cached += 1;
            } else if !todo.iter().any(|t| t.digest == d.digest) {
                todo.push(d);
            }
        }
        if todo.is_empty() {
            return Ok((0, cached, 0));
        }
        let host = self.host(&reference.registry)?;
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let bytes = AtomicU64::new(0);
        let first_error: Mutex<Option<RegistryError>> = Mutex::new(None);
        let workers = jobs.clamp(1, todo.len());
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| loop {
                    if failed.load(Ordering::Relaxed) {
                        return;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(d) = todo.get(i) else { return };
                    match self.fetch_blob(&host, store, &reference.repository, d) {
                        Ok(()) => {
                            bytes.fetch_add(d.size, Ordering::Relaxed);
                        }
                        Err(e) => {
                            failed.store(true, Ordering::Relaxed);
                            first_error.lock().unwrap().get_or_insert(e);
                            return;
                        }
                    }
                });
            }
        });
        if let Some(e) = first_error.into_inner().unwrap() {
            return Err(e);
        }
        Ok((todo.len(), cached, bytes.into_inner()))
    }

    pub(crate) fn fetch_blob(
        &self,
        host: &Host,
        store: &Store,
        repository: &str,
        d: &Descriptor,
    ) -> Result<(), RegistryError> {
        let scope = Scope::pull(repository);
        let url = self.url(host, &format!("{repository}/blobs/{}", d.digest));
        let what = format!("blob {} of {}/{repository}", d.digest, host.name);
        self.retrying(&|| format!("download of {what}"), || {
            if store.has_blob(&d.digest) {
                return Ok(());
            }
            let resp = self.send(host, &scope, &|h| h.get(url.clone()))?;
            if !resp.status().is_success() {
                return Err(Failure::Fatal(
                    self.status_error(host, repository, &what, resp),
                ));
            }
            // Cap what we read at size+1 so a lying registry cannot fill the disk;
            // the size check then fails.
            let mut reader = WatchReader {
                inner: StallGuard::new(resp, self.options().timeout).take(d.size.saturating_add(1)),
                error: None,
            };
            match store.import_blob(&mut reader, &d.digest, Some(d.size)) {
                Ok(()) => Ok(()),
                Err(_) if reader.error.is_some() => Err(Failure::Retry {
                    cause: reader.error.unwrap_or_default(),
                    after: None,
                }),
                Err(StoreError::DigestMismatch { actual, .. }) => {
                    Err(Failure::Fatal(RegistryError::DigestMismatch {
                        host: host.name.clone(),
                        what: what.clone(),
                        expected: d.digest.clone(),
                        detail: format!("content hashes to {actual}"),
                    }))
                }
                Err(StoreError::SizeMismatch { expected, actual }) => {
                    Err(Failure::Fatal(RegistryError::DigestMismatch {
                        host: host.name.clone(),
                        what: what.clone(),
                        expected: d.digest.clone(),
                        detail: format!(
                            "expected {expected} bytes, got {}",
                            if actual > expected {
                                "more".to_string()
                            } else {
                                actual.to_string()
                            }
                        ),
                    }))
                }
                Err(e) => Err(Failure::Fatal(e.into())),
            }
        })
    }
}

const SCHEMA1_HINT: &str =
    " (Docker schema 1 manifests are deprecated and not supported; re-push the image with a current docker or skopeo)";

/// A reader that remembers whether the network side failed (vs. the store's disk).
struct WatchReader<R> {
    inner: R,
    error: Option<String>,
}

impl<R: Read> Read for WatchReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            self.error = Some(if e.kind() == io::ErrorKind::TimedOut {
                e.to_string()
            } else {
                format!("connection broke while downloading: {e}")
            });
        })
    }
}

fn is_index(media_type: &str) -> bool {
    media_type == mt::OCI_INDEX || media_type == mt::DOCKER_MANIFEST_LIST
}

/// The media type of a manifest document: the `Content-Type` if specific, else `mediaType`
/// in the JSON, else inferred from its shape.
fn media_type_of(bytes: &[u8], content_type: Option<&str>) -> String {
    let v: Option<serde_json::Value> = serde_json::from_slice(bytes).ok();
    let field = v
        .as_ref()
        .and_then(|v| v.get("mediaType"))
        .and_then(|m| m.as_str())
        .map(str::to_string);
    if let Some(ct) = content_type.filter(|ct| {
        !ct.is_empty() && *ct != "application/json" && *ct != "text/plain" && ct.contains("vnd.")
    }) {
        return ct.to_string();
    }
    if let Some(f) = field {
        return f;
    }
    let Some(v) = v else {
        return content_type.unwrap_or("unknown").to_string();
    };
    if v.get("schemaVersion").and_then(|s| s.as_u64()) == Some(1) {
        return mt::DOCKER_SCHEMA1.to_string();
    }
    if v.get("manifests").is_some() {
        mt::OCI_INDEX.to_string()
    } else {
        mt::OCI_MANIFEST.to_string()
    }
}

/// The best entry of an index for `want`: an exact platform match first, then the most
/// compatible one by containerd's rules ([`Platform::best_match`]).
pub(crate) fn select_platform<'a>(index: &'a Index, want: &Platform) -> Option<&'a Descriptor> {
    let candidates = || {
        index
            .manifests
            .iter()
            .filter(|d| d.media_type != "application/vnd.in-toto+json")
    };
    candidates()
        .find(|d| d.platform.as_ref() == Some(want))
        .or_else(|| want.best_match(candidates(), |d| d.platform.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(p: &str) -> Descriptor {
        let mut d = Descriptor::new(mt::OCI_MANIFEST, Digest::of(p.as_bytes()), 1);
        d.platform = Some(p.parse().unwrap());
        d
    }

    #[test]
    fn platform_selection() {
        let index = Index {
            schema_version: 2,
            media_type: Some(mt::OCI_INDEX.into()),
            manifests: vec![
                desc("linux/amd64"),
                desc("linux/arm/v6"),
                desc("linux/arm/v7"),
                desc("linux/arm64/v8"),
            ],
            annotations: None,
        };
        let pick = |p: &str| {
            select_platform(&index, &p.parse().unwrap())
                .map(|d| d.platform.clone().unwrap().to_string())
        };
        assert_eq!(pick("linux/amd64").as_deref(), Some("linux/amd64"));
        assert_eq!(pick("linux/arm/v7").as_deref(), Some("linux/arm/v7"));
        assert_eq!(pick("linux/arm64").as_deref(), Some("linux/arm64/v8"));
        assert_eq!(pick("linux/s390x"), None);
        // arm defaults to v7; an arm/v8 request falls back to v7 before v6; arm64 hosts run
        // 32-bit arm images when nothing better is listed.
        assert_eq!(pick("linux/arm").as_deref(), Some("linux/arm/v7"));
        assert_eq!(pick("linux/arm/v8").as_deref(), Some("linux/arm/v7"));
        let index = Index {
            manifests: vec![
                desc("linux/arm/v5"),
                desc("linux/arm/v6"),
                desc("linux/386"),
            ],
            ..index
        };
        let pick = |p: &str| {
            select_platform(&index, &p.parse().unwrap())
                .map(|d| d.platform.clone().unwrap().to_string())
        };
        assert_eq!(pick("linux/arm/v7").as_deref(), Some("linux/arm/v6"));
        assert_eq!(pick("linux/arm64").as_deref(), Some("linux/arm/v6"));
        assert_eq!(pick("linux/arm/v5").as_deref(), Some("linux/arm/v5"));
        assert_eq!(pick("linux/amd64").as_deref(), Some("linux/386"));
    }

    #[test]
    fn media_type_detection() {
        assert_eq!(
            media_type_of(br#"{"schemaVersion":2,"manifests":[]}"#, None),
            mt::OCI_INDEX
        );
        assert_eq!(
            media_type_of(
                br#"{"schemaVersion":1,"fsLayers":[]}"#,
                Some("application/json")
            ),
            mt::DOCKER_SCHEMA1
        );
        assert_eq!(
            media_type_of(b"{}", Some(mt::DOCKER_MANIFEST)),
            mt::DOCKER_MANIFEST
        );
        assert_eq!(
            media_type_of(
                br#"{"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json"}"#,
                Some("application/json")
            ),
            mt::DOCKER_MANIFEST_LIST
        );
    }
}
